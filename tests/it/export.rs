//! `fhirlake export` against the in-process Bulk Data server (bulk_server.rs):
//! every failure the Bulk Data IG lets a server have, auth verified
//! cryptographically, kill -9 and resume, Ctrl-C, and the lake read by DuckDB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bulk_server::{BulkServer, Config, Smart, TRANSACTION_TIME};
use crate::common::{duckdb, fhirlake, sample_dir, scan};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sample(types: &[&str]) -> Vec<(String, Vec<u8>)> {
    types
        .iter()
        .map(|t| {
            let path = sample_dir("synthea-10").join(format!("{t}.000.ndjson"));
            (t.to_string(), std::fs::read(path).unwrap())
        })
        .collect()
}

fn lines(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
}

fn export(server: &BulkServer, lake: &Path) -> Command {
    let mut command = fhirlake();
    command
        .args([
            "export",
            "--json",
            "--backoff-ms",
            "20",
            "--poll-interval",
            "0",
        ])
        .args(["--server", &server.base])
        .arg("--lake")
        .arg(lake)
        .env_remove("FHIRLAKE_TOKEN");
    command
}

fn run(command: &mut Command, code: i32) -> (Value, Output) {
    let out = command.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{command:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (json, out)
}

/// (count, distinct ids) per table, read by DuckDB.
fn counts(lake: &Path, table: &str) -> Option<(i64, i64)> {
    let rows = duckdb(&format!(
        "SELECT count(*), count(DISTINCT id) FROM {}",
        scan(lake, table)
    ))?;
    Some((rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap()))
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Asserts `needle` appears in no file of the lake (ledger, logs, tables) nor in the output.
fn assert_nowhere(needle: &str, lake: &Path, out: &Output) {
    for path in all_files(lake) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} leaked into {}",
            path.display()
        );
    }
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(needle),
            "{needle:?} printed"
        );
    }
}

fn events(lake: &Path, job: &str) -> Vec<Value> {
    let path = lake.join(format!("_fhirlake/jobs/{job}.events.ndjson"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn manifest(lake: &Path, job: &str) -> Value {
    let path = lake.join(format!("_fhirlake/manifests/{job}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn export_survives_a_flaky_server_and_accounts_for_every_line() {
    let rt = runtime();
    let files = sample(&[
        "Patient",
        "Condition",
        "Encounter",
        "Immunization",
        "AllergyIntolerance",
    ]);
    let error_file = format!(
        "{}\n{}\n",
        r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Observation/o-77 could not be serialized"}]}"#,
        r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"forbidden","diagnostics":"MedicationRequest withheld by policy"}]}"#
    );
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        error_file: Some(error_file.into_bytes()),
        kickoff_429: 1,
        pending_polls: 2,
        status_503: 1,
        status_transient_outcome: 1,
        truncate_once: [1].into(),
        expire_first_links: [2].into(),
        page_size: Some(2),
        gzip: true,
        requires_access_token: false,
        static_token: Some("static-secret-token-123".into()),
        declare_counts: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, out) = run(
        export(&server, &lake)
            .args([
                "--type",
                "Patient,Condition,Encounter,Immunization,AllergyIntolerance",
            ])
            .env("FHIRLAKE_TOKEN", "static-secret-token-123"),
        1, // the server's error file lands in _quarantine
    );
    let job = json["job"]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(json["job"]["phase"], "finished");
    assert_eq!(json["job"]["server_job_deleted"], true);

    let log = server.log.lock().unwrap();
    assert_eq!(log.kickoffs_accepted, 1);
    assert_eq!(log.deletes, 1);
    drop(log);
    // The token goes to kick-off and status, never to files when requiresAccessToken is false.
    for r in server
        .requests("/$export")
        .iter()
        .chain(&server.requests("/status/1"))
    {
        if r.method != "DELETE" || r.headers.contains_key("authorization") {
            assert_eq!(r.headers["authorization"], "Bearer static-secret-token-123");
        }
    }
    let accepted = server.requests("/$export").last().unwrap().clone();
    assert_eq!(accepted.method, "GET");
    assert!(
        accepted.query.contains("_type=Patient%2CCondition"),
        "{}",
        accepted.query
    );
    let file_requests = server.requests("/files/");
    assert!(
        file_requests.len() >= 8,
        "5 outputs + error + a retry + a refresh"
    );
    assert!(
        file_requests
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    assert!(
        file_requests
            .iter()
            .all(|r| r.headers["accept-encoding"].contains("gzip"))
    );
    // The 410 link was replaced by a refreshed manifest's link (generation 1).
    assert!(
        file_requests
            .iter()
            .any(|r| r.path == "/fhir/files/g1/output/2")
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("% complete"), "X-Progress shown: {stderr}");

    // Every line of every file is in its table, once (DuckDB reads the Delta tables).
    for (t, body) in &files {
        let table = t.to_ascii_lowercase();
        if let Some((count, distinct)) = counts(&lake, &table) {
            assert_eq!(count as usize, lines(body), "{table}");
            assert_eq!(distinct, count, "{table}: no duplicates");
        }
    }
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), min(reason) FROM {} WHERE reason_code = 'server_error'",
        scan(&lake, "_quarantine")
    )) {
        assert_eq!(rows[0][0], 2);
        assert!(
            rows[0][1].as_str().unwrap().contains("withheld by policy")
                || rows[0][1]
                    .as_str()
                    .unwrap()
                    .contains("could not be serialized")
        );
    }

    // The ledger: the request, transactionTime, each file's checksum, declared vs received.
    let manifest = manifest(&lake, &job);
    assert_eq!(manifest["kind"], "export");
    let export = &manifest["export"];
    assert_eq!(export["transaction_time"], TRANSACTION_TIME);
    assert_eq!(export["requires_access_token"], false);
    let raw = PathBuf::from(json["job"]["raw_dir"].as_str().unwrap());
    let recorded = export["files"].as_array().unwrap();
    assert_eq!(recorded.len(), 6);
    for file in recorded {
        let on_disk = raw.join(file["name"].as_str().unwrap());
        let sha = fhirlake_sha(&on_disk);
        assert_eq!(file["sha256"], sha, "{on_disk:?}");
        assert_eq!(file["bytes"], std::fs::metadata(&on_disk).unwrap().len());
        assert_eq!(file["content_encoding"], "gzip");
        if file["kind"] == "output" {
            assert_eq!(file["lines"], file["declared_count"]);
            assert_eq!(file["outcome"], "downloaded");
        } else {
            assert_eq!(file["diagnostics"].as_array().unwrap().len(), 2);
        }
        assert!(!file["url"].as_str().unwrap().contains("SECRET-SIGNATURE"));
    }
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(manifest["totals"]["inserted"], total as u64);
    assert_eq!(
        manifest["totals"]["quarantined"], 0,
        "every resource line loaded"
    );
    assert_eq!(
        manifest["tables"]["_quarantine"]["quarantined"], 2,
        "the error file's lines"
    );

    let kinds: Vec<String> = events(&lake, &job)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "retry",
        "kickoff",
        "status",
        "status_retry",
        "manifest_page",
        "download_retry",
        "download_expired",
        "manifest_refresh",
        "download_complete",
        "load_complete",
        "delete_server_job",
        "finished",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected} event in {kinds:?}"
        );
    }
    assert_nowhere("static-secret-token-123", &lake, &out);
    assert_nowhere("SECRET-SIGNATURE", &lake, &out);
}

fn fhirlake_sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn since_auto_asks_for_changes_since_the_last_export_and_deletions_apply() {
    let rt = runtime();
    let patients = sample(&["Patient"]);
    let first_ids: Vec<String> = String::from_utf8_lossy(&patients[0].1)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let server = rt.block_on(BulkServer::start(Config {
        files: patients.clone(),
        get_405: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let history = tmp.path().join("history");
    // The nightly command; the second lake keeps history.
    let nightly = |lake: &PathBuf| {
        let mut command = export(&server, lake);
        command.args([
            "--group", "cohort-1", "--type", "Patient", "--since", "auto",
        ]);
        if lake == &history {
            command.arg("--history");
        }
        command
    };
    for lake in [&lake, &history] {
        let mut command = nightly(lake);
        if lake != &history {
            command.arg("--no-keep-raw");
        }
        let (json, _) = run(&mut command, 0);
        let raw = Path::new(json["job"]["raw_dir"].as_str().unwrap());
        assert_eq!(
            raw.exists(),
            lake == &history,
            "--no-keep-raw removes {raw:?}"
        );
    }
    // GET was refused with 405, so the kick-off went out as POST with a Parameters body.
    let kickoffs = server.requests("/Group/cohort-1/$export");
    assert!(kickoffs.iter().any(|r| r.method == "GET"));
    let post: Value = serde_json::from_slice(&kickoffs.last().unwrap().body).unwrap();
    assert_eq!(post["resourceType"], "Parameters");
    assert!(
        !String::from_utf8_lossy(&kickoffs[1].body).contains("_since"),
        "first export is full"
    );

    // Next night: one patient was deleted on the server.
    let gone = first_ids[3].clone();
    {
        let mut config = server.config.lock().unwrap();
        config.files = Vec::new();
        config.transaction_time = Some("2026-11-21T10:00:00.000Z".into());
        config.deleted_file = Some(
            format!(
                r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"request":{{"method":"DELETE","url":"Patient/{gone}"}}}}]}}"#
            )
            .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
        );
    }
    for lake in [&lake, &history] {
        let (json, _) = run(&mut nightly(lake), 0);
        let job = json["job"]["job_id"].as_str().unwrap();
        let export = &manifest(lake, job)["export"];
        assert_eq!(export["deletions_requested"], 1);
        if lake == &history {
            assert_eq!(export["tombstones"], 1);
        } else {
            assert_eq!(export["rows_deleted"], 1);
        }
    }
    // --since auto sent the first export's transactionTime, not the local clock.
    let last: Value =
        serde_json::from_slice(&server.requests("/$export").last().unwrap().body).unwrap();
    let since = last["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "_since")
        .expect("_since sent");
    assert_eq!(since["valueInstant"], TRANSACTION_TIME);

    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(*) FILTER (WHERE id = '{gone}') FROM {}",
        scan(&lake, "patient")
    )) {
        assert_eq!(rows[0][0].as_i64().unwrap() as usize, first_ids.len() - 1);
        assert_eq!(rows[0][1], 0);
    }
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(*) FILTER (WHERE _deleted) FROM {} WHERE id = '{gone}'",
        scan(&history, "patient")
    )) {
        assert_eq!(rows[0][0], 2, "the version and its tombstone");
        assert_eq!(rows[0][1], 1);
    }
}

#[test]
fn smart_backend_assertions_verify_and_tokens_refresh_during_downloads() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    for (key, jwks, kid, alg) in [
        ("rs384.jwks.json", "rs384.jwks.json", None, "RS384"),
        ("es384.pem", "es384.jwks.json", Some("test-es384"), "ES384"),
    ] {
        let rt = runtime();
        let jwks: Value = serde_json::from_slice(&std::fs::read(keys.join(jwks)).unwrap()).unwrap();
        let server = rt.block_on(BulkServer::start(Config {
            files: sample(&["Patient", "Condition", "Immunization", "Encounter"]),
            requires_access_token: true,
            smart: Some(Smart {
                client_id: "fhirlake-test".into(),
                jwks,
                token_ttl: Duration::from_secs(1),
            }),
            // Slow enough that later files start after the first token expired.
            throttle: Some(Duration::from_millis(25)),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let mut command = export(&server, &lake);
        command
            .args([
                "--auth",
                "smart-backend",
                "--client-id",
                "fhirlake-test",
                "--scope",
                "system/*.rs",
            ])
            .arg("--key")
            .arg(keys.join(key))
            .args(["--parallel", "1"]);
        if let Some(kid) = kid {
            command.args(["--kid", kid]);
        }
        let (json, out) = run(&mut command, 0);
        assert_eq!(json["job"]["phase"], "finished");
        let log = server.log.lock().unwrap();
        assert!(
            log.rejected_assertions.is_empty(),
            "{:?}",
            log.rejected_assertions
        );
        assert!(log.verified_assertions.iter().all(|(a, _)| a == alg));
        assert!(
            log.tokens.len() >= 2,
            "{alg}: the 1 s token was refreshed during the downloads ({} tokens)",
            log.tokens.len()
        );
        assert_eq!(
            log.unauthorized, 0,
            "{alg}: no request went out with an expired token"
        );
        let tokens: Vec<String> = log.tokens.keys().cloned().collect();
        drop(log);
        let files = server.requests("/files/");
        assert!(files.iter().all(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|a| a.starts_with("Bearer tok-"))
        }));
        let token_requests = server.requests("/auth/token");
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&token_requests[0].body)
                .into_owned()
                .collect();
        assert_eq!(form["scope"], "system/*.rs");
        for token in &tokens {
            assert_nowhere(token, &lake, &out);
        }
        assert_nowhere(&form["client_assertion"], &lake, &out);
    }
}

#[test]
fn kill_9_mid_download_then_rerun_resumes_the_same_job_without_duplicates() {
    let rt = runtime();
    let files = sample(&["Patient", "Condition", "Encounter", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        throttle: Some(Duration::from_millis(40)),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let mut child = export(&server, &lake)
        .args(["--parallel", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once one file is complete and another is still arriving.
    let started = Instant::now();
    loop {
        let raw: Vec<PathBuf> = all_files(&lake.join("_raw"));
        let done = raw
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "ndjson"));
        let partial = raw
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "part"));
        if done && partial {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no download started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let completed: Vec<PathBuf> = all_files(&lake.join("_raw"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    assert!(!lake.join("patient").exists() || counts(&lake, "patient").is_none_or(|c| c.0 == 0));
    // The kill may land after a file is complete on disk but before the job
    // state records it. Make that the case for every complete file: the
    // resume must adopt them from disk, not fetch them again.
    let state_path = all_files(&lake.join("_fhirlake/jobs"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("the job state was saved after kick-off");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    for file in state["files"].as_array_mut().unwrap() {
        file["outcome"] = "pending".into();
        file["sha256"] = Value::Null;
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    server.config.lock().unwrap().throttle = None;
    let (json, _) = run(&mut export(&server, &lake), 0);
    assert_eq!(json["resumed"], true);
    assert_eq!(
        server.log.lock().unwrap().kickoffs_accepted,
        1,
        "no second kick-off"
    );
    // Files finished before the kill were not fetched again.
    for path in &completed {
        let name = path.file_name().unwrap().to_str().unwrap();
        let index: usize = name[..5].parse().unwrap();
        let fetched = server.requests(&format!("/output/{index}"));
        assert_eq!(fetched.len(), 1, "{name} downloaded once");
    }
    let job = json["job"]["job_id"].as_str().unwrap();
    let manifest = manifest(&lake, job);
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(manifest["totals"]["inserted"], total as u64);
    for (t, body) in &files {
        if let Some((count, distinct)) = counts(&lake, &t.to_ascii_lowercase()) {
            assert_eq!(
                (count as usize, distinct as usize),
                (lines(body), lines(body)),
                "{t}"
            );
        }
    }
    // A third run finds nothing open and starts a new export (since none is running).
    let kinds: Vec<String> = events(&lake, job)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"resume".to_owned()));
    let adopted = kinds.iter().filter(|k| *k == "download_adopted").count();
    assert_eq!(adopted, completed.len(), "{kinds:?}");
}

#[test]
fn a_fatal_operation_outcome_ends_the_job_with_its_diagnostics_and_no_tables() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient"]),
        fatal: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (_, out) = run(&mut export(&server, &lake), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the Group is too large"), "{stderr}");
    assert!(!lake.join("patient").exists());
    let jobs: Vec<PathBuf> = all_files(&lake.join("_fhirlake/jobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let state: Value = serde_json::from_slice(&std::fs::read(&jobs[0]).unwrap()).unwrap();
    assert_eq!(state["phase"], "failed");
}

#[test]
fn a_bad_manifest_is_a_clear_fatal_error_and_nothing_is_loaded() {
    for (body, expected) in [
        ("<html>gateway</html>", "not JSON"),
        (
            r#"{"request":"x","requiresAccessToken":false,"output":[]}"#,
            "transactionTime",
        ),
        (
            r#"{"transactionTime":"2026-11-20T10:00:00Z","request":"x","requiresAccessToken":false,"output":"all of it"}"#,
            "\"output\" is malformed",
        ),
    ] {
        let rt = runtime();
        let server = rt.block_on(BulkServer::start(Config {
            bad_manifest: Some(body.into()),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let (_, out) = run(&mut export(&server, &lake), 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{body}: {stderr}");
        assert!(
            stderr.contains("export job export-"),
            "names the job: {stderr}"
        );
        assert!(stderr.contains("completion manifest"), "{stderr}");
        assert!(!lake.join("_fhirlake/manifests").exists(), "nothing loaded");
    }
}

#[test]
fn ctrl_c_cancels_the_server_job_too() {
    for keep in [false, true] {
        let rt = runtime();
        let server = rt.block_on(BulkServer::start(Config {
            files: sample(&["Patient"]),
            pending_polls: 10_000,
            retry_after: Some("1".into()),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let mut command = export(&server, &lake);
        if keep {
            command.arg("--keep-server-job");
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while server.requests("/status/1").is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "never polled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        let deletes = server.log.lock().unwrap().deletes;
        assert_eq!(
            deletes,
            u32::from(!keep),
            "--keep-server-job {keep}: {stderr}"
        );
        let state = all_files(&lake.join("_fhirlake/jobs"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
        assert_eq!(state["phase"], "cancelled");
        assert_eq!(state["server_job_deleted"], !keep);
    }
}

#[test]
fn export_into_an_s3_lake_keeps_its_job_state_there_for_since_auto() {
    let Some(s3) = crate::common::S3::from_env() else {
        return;
    };
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let uri = s3.fresh_lake();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let mut command = s3.fhirlake();
        command
            .args([
                "export",
                "--json",
                "--poll-interval",
                "0",
                "--since",
                "auto",
            ])
            .args(["--server", &server.base, "--lake", &uri])
            .arg("--raw-dir")
            .arg(tmp.path());
        let (json, _) = run(&mut command, 0);
        jobs.push(json["job"]["job_id"].as_str().unwrap().to_owned());
    }
    let lake = s3.open(&uri);
    let first = rt
        .block_on(fhirlake::ledger::read_manifest(&lake, &jobs[0]))
        .unwrap();
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(first.totals.inserted as usize, total);
    let second = rt
        .block_on(fhirlake::ledger::read_manifest(&lake, &jobs[1]))
        .unwrap();
    // Each raw file also went to <lake>/_raw/<job>/ in the bucket, byte for byte.
    let export = first.export.as_ref().unwrap();
    for file in &export.files {
        let copy = file.lake_copy.as_deref().expect("uploaded to the lake");
        assert!(
            copy.starts_with(&format!("_raw/{}/output/", jobs[0])),
            "{copy}"
        );
        let bytes = rt.block_on(async {
            use object_store::ObjectStoreExt;
            lake.store()
                .get(&lake.path(copy))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        use sha2::Digest;
        assert_eq!(Some(hex::encode(sha2::Sha256::digest(&bytes))), file.sha256);
    }
    // The same bytes again: skipped by SHA-256, never loaded twice.
    assert_eq!(second.totals.total(), 0);
    assert!(
        second
            .inputs
            .iter()
            .all(|i| i.status == fhirlake::ledger::InputStatus::SkippedAlreadyLoaded)
    );
    assert_eq!(second.inputs.len(), 2);
    // The second run found the first one's state in the bucket.
    let last = server.requests("/$export").last().unwrap().clone();
    assert!(
        last.query.contains("_since=2026-11-20T10%3A00%3A00.000Z"),
        "{}",
        last.query
    );
}

#[test]
fn a_declared_count_that_never_matches_is_retried_then_reported_and_the_lines_still_load() {
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        declare_counts: true,
        overcount: [0].into(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, out) = run(&mut export(&server, &lake), 1);
    assert_eq!(
        server.requests("/output/0").len(),
        3,
        "retried twice, then accepted"
    );
    assert_eq!(server.requests("/output/1").len(), 1);
    let file = &json["job"]["files"][0];
    assert_eq!(file["outcome"], "count_mismatch");
    assert_eq!(
        file["lines"].as_u64().unwrap() + 1,
        file["declared_count"].as_u64().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the manifest declared"));
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    let job = json["job"]["job_id"].as_str().unwrap();
    assert_eq!(manifest(&lake, job)["totals"]["inserted"], total as u64);
}

#[test]
fn the_text_summary_names_the_job_its_files_and_tables() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient"]),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let out = fhirlake()
        .args(["export", "--poll-interval", "0", "--server", &server.base])
        .arg("--lake")
        .arg(&lake)
        .env_remove("FHIRLAKE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(stdout.starts_with("export export-"), "{stdout}");
    assert!(stdout.contains(&format!("transactionTime {TRANSACTION_TIME}")));
    assert!(stdout.contains("1 file(s)"));
    assert!(stdout.contains("patient"), "per-table summary: {stdout}");
    // A second run without --fresh finds nothing open and starts a new export.
    let again = fhirlake()
        .args([
            "export",
            "--poll-interval",
            "0",
            "--resume",
            "--server",
            &server.base,
        ])
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no unfinished export"));
}

#[test]
fn a_crash_after_the_load_but_before_the_state_update_finishes_without_reloading() {
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, _) = run(export(&server, &lake).arg("--keep-server-job"), 0);
    let job = json["job"]["job_id"].as_str().unwrap().to_owned();
    // Rewind the saved state to "downloads verified, not yet loaded", as a
    // kill between the load's manifest and the next state write leaves it.
    let state_path = lake.join(format!("_fhirlake/jobs/{job}.json"));
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["phase"] = "complete".into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let versions_before = crate::common::delta_versions(&lake, "patient");

    let (json, _) = run(&mut export(&server, &lake), 0);
    assert_eq!(json["resumed"], true);
    assert_eq!(json["job"]["job_id"], job.as_str());
    assert_eq!(json["job"]["phase"], "finished");
    assert_eq!(json["job"]["server_job_deleted"], true);
    assert_eq!(server.log.lock().unwrap().kickoffs_accepted, 1);
    assert_eq!(
        crate::common::delta_versions(&lake, "patient"),
        versions_before,
        "no reload"
    );
    if let Some((count, distinct)) = counts(&lake, "patient") {
        assert_eq!(
            (count as usize, distinct as usize),
            (lines(&files[0].1), lines(&files[0].1))
        );
    }
}
