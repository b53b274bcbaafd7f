//! HL7 v2 into the lake: the fixture feeds load with every message and
//! segment accounted for, replays change nothing, message order never lets
//! an older message win, and the MLLP listener (driven by python-hl7's
//! `mllp_send`) acknowledges only what is durable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fhirlake::hl7v2::MapOptions;
use fhirlake::lake::Lake;
use fhirlake::ledger::MessageStatus;
use fhirlake::load::{LoadOptions, LoadReport};
use fhirlake::source::hl7v2::{FilesJob, discover, load_files};
use serde_json::Value;

use crate::common::{fhirlake, open_lake, python, run_json, sql};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7v2")
}

fn files_job() -> FilesJob {
    FilesJob {
        options: LoadOptions::default(),
        map: MapOptions::default(),
        batch_messages: 50_000,
        progress: None,
    }
}

async fn load_paths(lake: &Lake, paths: &[PathBuf]) -> Vec<LoadReport> {
    let files = discover(paths).unwrap();
    load_files(lake, &files, &files_job()).await.unwrap()
}

/// An ADT message for patient `mrn` of facility `HOSP`, family name `family`.
fn adt(event: &str, control: &str, msh7: &str, mrn: &str, family: &str) -> String {
    [
        format!("MSH|^~\\&|ADT1|HOSP|LAKE|HOSP|{msh7}||ADT^{event}^ADT_A01|{control}|P|2.5.1"),
        format!("EVN|{event}|{msh7}"),
        format!("PID|1||{mrn}^^^HOSP^MR||{family}^ANNA||19800101|F"),
        format!(
            "PV1|1|I|WARD^101^A||||||||||||||||V{mrn}^^^HOSP^VN|||||||||||||||||||||||||{msh7}"
        ),
    ]
    .join("\r")
}

fn write_feed(dir: &Path, name: &str, messages: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, messages.join("\r\n") + "\r\n").unwrap();
    path
}

fn segment_count(paths: &[PathBuf]) -> u64 {
    let mut n = 0;
    for path in discover(paths).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        n += text
            .split(['\r', '\n'])
            .map(|l| l.trim_start_matches('\u{feff}'))
            .filter(|l| l.len() >= 3 && !["FHS", "BHS", "BTS", "FTS"].contains(&&l[..3]))
            .count() as u64;
    }
    n
}

#[tokio::test]
async fn every_fixture_message_and_segment_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open_lake(dir.path());
    let paths = vec![fixtures().join("messages"), fixtures().join("batch")];
    let reports = load_paths(&lake, &paths).await;
    assert_eq!(reports.len(), 1);
    let manifest = &reports[0].manifest;
    let record = manifest.hl7v2.as_ref().expect("an hl7v2 record");
    assert!(record.accounting_holds(), "{:?}", record.messages);
    assert_eq!(
        record.messages.received, 24,
        "22 single messages + 2 in the batch"
    );
    let rejected: Vec<_> = record
        .log
        .iter()
        .filter(|m| m.status == MessageStatus::Rejected)
        .map(|m| (m.source.clone(), m.reason.clone()))
        .collect();
    assert!(
        rejected.is_empty(),
        "the public feeds all map: {rejected:?}"
    );
    let segments: u64 = record.mapped_segments.values().sum::<u64>()
        + record.unmapped_segments.values().sum::<u64>();
    assert_eq!(
        segments,
        segment_count(&paths),
        "every segment mapped or counted"
    );
    assert_eq!(manifest.totals.quarantined, 0);
    assert_eq!(manifest.totals.total(), record.resources);
    // The raw messages are kept, byte for byte.
    let raw = std::fs::read(dir.path().join(&record.raw[0].path)).unwrap();
    let first = &record.log[0];
    let stored = &raw[first.raw_offset as usize..(first.raw_offset + first.raw_bytes) as usize];
    assert_eq!(
        fhirlake_sha256(stored),
        first.sha256,
        "raw object holds the message"
    );
    let patients = sql(&lake, &["patient"], "SELECT count(*) FROM patient").await;
    assert!(patients[0][0].as_i64().unwrap() > 10);
    let headers = sql(
        &lake,
        &["messageheader"],
        "SELECT count(*) FROM messageheader",
    )
    .await;
    // Fixture messages that share sender, MSH-10 and MSH-7 are one message
    // to the lake (replays); every other message has its MessageHeader.
    assert_eq!(headers[0][0], record.messages.converted);
    assert_eq!(
        record.messages.replays,
        record.messages.received - record.messages.converted
    );
}

fn fhirlake_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn loading_a_feed_twice_changes_nothing_and_counts_replays() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open_lake(dir.path());
    let paths = vec![fixtures().join("messages")];
    let first = load_paths(&lake, &paths).await.remove(0);
    let second = load_paths(&lake, &paths).await.remove(0);
    let record = second.manifest.hl7v2.as_ref().unwrap();
    assert_eq!(record.messages.replays, record.messages.received);
    assert_eq!(record.resources, 0);
    assert_eq!(
        second.manifest.totals.inserted + second.manifest.totals.updated,
        0
    );
    assert!(
        second
            .manifest
            .tables
            .values()
            .all(|t| t.commits.is_empty()),
        "a replayed feed commits nothing: {:?}",
        second.manifest.tables
    );
    assert!(first.manifest.totals.inserted > 0);
}

/// (id, first family name) of every Patient row.
async fn family_names(lake: &Lake) -> Vec<(String, String)> {
    sql(
        lake,
        &["patient"],
        "SELECT id, resource FROM patient ORDER BY id",
    )
    .await
    .into_iter()
    .map(|row| {
        let resource: Value = serde_json::from_str(row[1].as_str().unwrap()).unwrap();
        let family = resource["name"][0]["family"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (row[0].as_str().unwrap().to_owned(), family)
    })
    .collect()
}

#[tokio::test]
async fn an_a08_wins_over_its_a01_in_either_order_and_duplicates_are_replays() {
    let a01 = adt("A01", "M1", "20260101080000+0000", "555", "Before");
    let a08 = adt("A08", "M2", "20260102080000+0000", "555", "After");
    for (name, order) in [("in-order", [&a01, &a08]), ("reversed", [&a08, &a01])] {
        let dir = tempfile::tempdir().unwrap();
        let lake = open_lake(dir.path().join("lake").as_path());
        for (i, message) in order.iter().enumerate() {
            let feed = write_feed(dir.path(), &format!("{i}.hl7"), &[(*message).clone()]);
            load_paths(&lake, &[feed]).await;
        }
        let rows = family_names(&lake).await;
        assert_eq!(rows.len(), 1, "{name}: one Patient row");
        assert_eq!(rows[0].1, "After", "{name}: the A08's data");
    }
    // The same message twice in one feed (a sender's retry) is one write.
    let dir = tempfile::tempdir().unwrap();
    let lake = open_lake(dir.path().join("lake").as_path());
    let feed = write_feed(dir.path(), "retry.hl7", &[a01.clone(), a01.clone()]);
    let report = load_paths(&lake, &[feed]).await.remove(0);
    let record = report.manifest.hl7v2.unwrap();
    assert_eq!((record.messages.converted, record.messages.replays), (1, 1));
}

#[tokio::test]
async fn an_unmappable_message_is_quarantined_whole_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open_lake(dir.path().join("lake").as_path());
    let good = adt("A01", "G1", "20260101080000+0000", "777", "Good");
    let unsupported = "MSH|^~\\&|X|HOSP|LAKE|HOSP|20260101||QRY^A19|Q1|P|2.5\rQRD|1".to_owned();
    let no_identifier = adt("A01", "N1", "20260101080000+0000", "", "Nobody");
    let feed = write_feed(dir.path(), "mixed.hl7", &[good, unsupported, no_identifier]);
    let report = load_paths(&lake, &[feed]).await.remove(0);
    let record = report.manifest.hl7v2.as_ref().unwrap();
    assert_eq!(
        (record.messages.converted, record.messages.rejected),
        (1, 2)
    );
    let rows = sql(
        &lake,
        &["_quarantine"],
        "SELECT line, reason_code, reason FROM _quarantine ORDER BY line",
    )
    .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], 2);
    assert_eq!(rows[0][1], "hl7v2_unmapped");
    assert!(rows[0][2].as_str().unwrap().contains("QRY"), "{rows:?}");
    assert!(rows[1][2].as_str().unwrap().contains("PID"), "{rows:?}");
    assert_eq!(family_names(&lake).await.len(), 1);
}

#[test]
fn convert_prints_the_bundle_a_message_becomes() {
    let file = fixtures().join("messages/ms-ADT-A01-01.hl7");
    let bundle = run_json(fhirlake().args(["hl7v2", "convert"]).arg(&file), 0);
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "message");
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries[0]["resource"]["resourceType"], "MessageHeader");
    assert!(
        entries
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Patient")
    );
}

#[test]
fn load_cli_reports_messages_and_exits_1_on_a_rejected_message() {
    let dir = tempfile::tempdir().unwrap();
    let feed = write_feed(
        dir.path(),
        "feed.hl7",
        &[
            adt("A01", "C1", "20260101080000+0000", "1", "One"),
            "MSH|^~\\&|X|HOSP|LAKE|HOSP|20260101||QRY^A19|Q1|P|2.5".into(),
        ],
    );
    let jobs = run_json(
        fhirlake()
            .args(["hl7v2", "load", "--json", "--lake"])
            .arg(dir.path().join("lake"))
            .arg(&feed),
        1,
    );
    assert_eq!(jobs[0]["kind"], "hl7v2");
    assert_eq!(jobs[0]["hl7v2"]["messages"]["converted"], 1);
    assert_eq!(jobs[0]["hl7v2"]["messages"]["rejected"], 1);
}

// ---------------------------------------------------------------- MLLP

/// python-hl7's `mllp_send`, or `None` (loudly) when the venv lacks it.
fn mllp_send() -> Option<Command> {
    let found = python().filter(|p| {
        Command::new(p)
            .args(["-c", "import hl7.client"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let Some(python) = found else {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_DUCKDB").is_err(),
            "python-hl7 is required in CI but the venv lacks it; run .ci/run"
        );
        eprintln!("!!! SKIPPING MLLP test: no python-hl7 in ~/.cache/fhirlake-venv");
        return None;
    };
    let mut command = Command::new(python);
    command.args(["-m", "hl7.client"]);
    Some(command)
}

struct Listener {
    child: Child,
    port: u16,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Listener {
    fn start(lake: &Path, extra: &[&str]) -> Listener {
        let mut child = fhirlake()
            .args([
                "hl7v2",
                "listen",
                "--mllp",
                "127.0.0.1:0",
                "--commit-interval",
                "100ms",
            ])
            .args(extra)
            .arg("--lake")
            .arg(lake)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = stderr
            .recv_timeout(Duration::from_secs(60))
            .expect("the listener says where it listens");
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Listener {
            child,
            port,
            stderr,
        }
    }

    fn send(&self, feed: &Path) -> (bool, String) {
        let out = mllp_send()
            .expect("checked by the caller")
            .args(["--loose", "--file"])
            .arg(feed)
            .args(["--port", &self.port.to_string(), "127.0.0.1"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn stop(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        (
            status.code().unwrap_or(-1),
            self.stderr.try_iter().collect(),
        )
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(code, control id)` of every MSA segment in mllp_send's output.
fn acks(output: &str) -> Vec<(String, String)> {
    output
        .split(['\r', '\n'])
        .filter_map(|segment| {
            let fields: Vec<&str> = segment.split('|').collect();
            (fields.first().map(|f| f.trim_start_matches('\u{b}')) == Some("MSA")).then(|| {
                (
                    fields[1].to_owned(),
                    fields.get(2).unwrap_or(&"").to_string(),
                )
            })
        })
        .collect()
}

fn feed_of(n: usize, first: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| {
            adt(
                "A01",
                &format!("C{i:05}"),
                "20260101080000+0000",
                &format!("P{i}"),
                &format!("Family{i}"),
            )
        })
        .collect()
}

#[test]
fn mllp_acknowledges_each_message_once_it_is_in_the_lake() {
    if mllp_send().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let listener = Listener::start(&lake_dir, &[]);
    let messages = feed_of(10, 0);
    let feed = write_feed(dir.path(), "feed.hl7", &messages);
    let (ok, out) = listener.send(&feed);
    assert!(ok, "{out}");
    let acks = acks(&out);
    assert_eq!(acks.len(), 10, "{out}");
    for (i, (code, control)) in acks.iter().enumerate() {
        assert_eq!(code, "AA");
        assert_eq!(control, &format!("C{i:05}"), "MSA-2 echoes MSH-10");
    }
    // A sender's retry of the whole feed: acknowledged, not written again.
    let (ok, again) = listener.send(&feed);
    assert!(ok && again.matches("MSA|AA|").count() == 10, "{again}");
    let (code, log) = listener.stop();
    assert_eq!(code, 0, "SIGTERM exits 0: {log:?}");
    assert!(log.iter().any(|l| l.contains("10 replays")), "{log:?}");
    let lake = open_lake(&lake_dir);
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(sql(
        &lake,
        &["patient", "messageheader"],
        "SELECT (SELECT count(*) FROM patient) AS a, (SELECT count(DISTINCT id) FROM patient) AS b, (SELECT count(*) FROM messageheader) AS c",
    ));
    assert_eq!(
        rows[0],
        vec![Value::from(10), Value::from(10), Value::from(10)]
    );
}

#[test]
fn a_listener_killed_mid_feed_loses_nothing_acknowledged_and_duplicates_nothing_resent() {
    if mllp_send().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let messages = feed_of(60, 0);
    let feed = write_feed(dir.path(), "feed.hl7", &messages);
    let mut listener = Listener::start(&lake_dir, &[]);
    let mut sender = mllp_send()
        .unwrap()
        .args(["--loose", "--file"])
        .arg(&feed)
        .args(["--port", &listener.port.to_string(), "127.0.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill -9 once some messages are acknowledged, long before all are.
    let mut stdout = sender.stdout.take().unwrap();
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    while acks(&String::from_utf8_lossy(&seen)).len() < 8 {
        let n = stdout.read(&mut chunk).unwrap();
        assert!(n > 0 && started.elapsed() < Duration::from_secs(120));
        seen.extend_from_slice(&chunk[..n]);
    }
    listener.child.kill().unwrap();
    listener.child.wait().unwrap();
    stdout.read_to_end(&mut seen).unwrap();
    let _ = sender.wait();
    let acked: Vec<String> = acks(&String::from_utf8_lossy(&seen))
        .into_iter()
        .filter(|(code, _)| code == "AA")
        .map(|(_, control)| control)
        .collect();
    assert!(acked.len() < 60, "the kill came mid-feed");
    // Everything acknowledged is in the lake already.
    let lake = open_lake(&lake_dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let held = runtime.block_on(sql(
        &lake,
        &["messageheader"],
        "SELECT count(*) FROM messageheader",
    ));
    assert!(held[0][0].as_u64().unwrap() >= acked.len() as u64);
    // Resend what was not acknowledged, as a sender does.
    let unacked: Vec<String> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| !acked.contains(&format!("C{i:05}")))
        .map(|(_, m)| m.clone())
        .collect();
    let rest = write_feed(dir.path(), "rest.hl7", &unacked);
    let listener = Listener::start(&lake_dir, &[]);
    let (ok, out) = listener.send(&rest);
    assert!(ok, "{out}");
    assert_eq!(out.matches("MSA|AA|").count(), unacked.len());
    assert_eq!(listener.stop().0, 0);
    let rows = runtime.block_on(sql(
        &lake,
        &["patient", "messageheader"],
        "SELECT (SELECT count(*) FROM patient) AS a, (SELECT count(DISTINCT id) FROM patient) AS b, (SELECT count(*) FROM messageheader) AS c",
    ));
    assert_eq!(
        rows[0],
        vec![Value::from(60), Value::from(60), Value::from(60)],
        "each message exactly once"
    );
}

#[test]
fn an_oversize_frame_gets_a_nak_and_other_connections_are_served() {
    if mllp_send().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let listener = Listener::start(&lake_dir, &["--max-message-bytes", "2048"]);
    let mut big = adt("A01", "BIG1", "20260101080000+0000", "9", "Big").into_bytes();
    big.extend(std::iter::repeat_n(b'X', 4096));
    let mut stream = TcpStream::connect(("127.0.0.1", listener.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut framed = vec![0x0b];
    framed.extend(&big);
    framed.extend([0x1c, 0x0d]);
    stream.write_all(&framed).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert_eq!(
        acks(&reply),
        vec![("AR".to_owned(), "BIG1".to_owned())],
        "NAK echoing MSH-10, then the connection closes: {reply:?}"
    );
    let feed = write_feed(dir.path(), "small.hl7", &feed_of(2, 0));
    let (ok, out) = listener.send(&feed);
    assert!(ok && out.matches("MSA|AA|").count() == 2, "{out}");
    assert_eq!(listener.stop().0, 0);
}
