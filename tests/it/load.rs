//! `fhirlake load`: counts checked with DuckDB, idempotence, MERGE rules,
//! quarantine, gzip, chunk boundaries, and crash recovery.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use fhirlake::lake::LoadMode;
use fhirlake::ledger::CommitOperation;
use fhirlake::ledger::InputStatus;
use fhirlake::ndjson::{Chunk, ChunkDecoder, LineChunker};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sample_load_matches_input_and_reload_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let inputs = vec![sample_dir("synthea-10"), sample_dir("bds-r4-10")];
    let expected = expected_ids(&inputs);

    let first = load(job(&lake, inputs.clone()).await).await;
    assert_eq!(first.manifest.totals.quarantined, 0);
    for (table, ids) in &expected {
        let record = &first.manifest.tables[table];
        assert_eq!(
            record.rows.inserted as usize,
            ids.len(),
            "{table}: inserted = distinct ids"
        );
        let query = format!("SELECT count(*), count(DISTINCT id) FROM {table}");
        let rows = sql(&lake, &[table], &query).await;
        assert_eq!(rows[0], [json!(ids.len()), json!(ids.len())], "{table}");
        if let Some(rows) = duckdb(&format!(
            "SELECT count(*), count(DISTINCT id) FROM {}",
            scan(&lake_dir, table)
        )) {
            assert_eq!(
                rows[0],
                vec![json!(ids.len()), json!(ids.len())],
                "{table} read by DuckDB"
            );
        }
    }
    // synthea-10's log.ndjson is an export log: recorded, not loaded, and its
    // transactionTime stands in for the missing meta.lastUpdated.
    let log = input_ending(&first.manifest, "log.ndjson");
    assert_eq!(log.status, InputStatus::ExportLog);
    let patient_input = input_ending(&first.manifest, "synthea-10/Patient.000.ndjson");
    let stand_in = patient_input.last_updated_stand_in.as_ref().unwrap();
    assert_eq!(
        (stand_in.source.as_str(), stand_in.value.as_str()),
        ("transaction_time", "2024-08-06T18:12:57Z")
    );
    assert_eq!(patient_input.sha256.len(), 64);
    let manifest_on_disk: Value =
        serde_json::from_slice(&std::fs::read(lake_dir.join(&first.manifest_path)).unwrap())
            .unwrap();
    assert_eq!(manifest_on_disk["job_id"], json!(first.manifest.job_id));

    let versions: BTreeMap<_, _> = expected
        .keys()
        .map(|t| (t.clone(), delta_versions(&lake_dir, t)))
        .collect();
    let second = load(job(&lake, inputs.clone()).await).await;
    assert!(
        second
            .manifest
            .inputs
            .iter()
            .filter(|i| i.status != InputStatus::ExportLog)
            .all(|i| i.status == InputStatus::SkippedAlreadyLoaded)
    );
    assert_eq!(second.manifest.totals.total(), 0);

    let forced = load(job(&lake, inputs).await.with_force(true)).await;
    let total_lines: usize = expected.values().map(|ids| ids.len()).sum();
    assert_eq!(
        forced.manifest.totals.unchanged as usize, total_lines,
        "a forced reload finds every row present"
    );
    assert_eq!(
        forced.manifest.totals.inserted + forced.manifest.totals.updated,
        0
    );
    for (table, before) in versions {
        assert_eq!(
            delta_versions(&lake_dir, &table),
            before,
            "{table}: reload must not commit"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_file_never_overwrites_newer_data() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let newer = write_file(
        &tmp.path().join("a"),
        "Patient.ndjson",
        &[patient("p1", "2024-02-01T00:00:00Z", "2")],
    );
    let stale = write_file(
        &tmp.path().join("b"),
        "Patient.ndjson",
        &[patient("p1", "2024-01-31T23:00:00-02:00", "1")],
    );
    let newest = write_file(
        &tmp.path().join("c"),
        "Patient.ndjson",
        &[patient("p1", "2024-03-01T00:00:00+05:00", "3")],
    );

    load(job(&lake, vec![newer]).await).await;
    // 2024-01-31T23:00-02:00 is 2024-02-01T01:00Z: newer as an instant, though older as a string.
    let r = load(job(&lake, vec![stale]).await).await;
    assert_eq!(
        r.manifest.totals.updated, 1,
        "instants compare in UTC, not as strings"
    );
    let older = write_file(
        &tmp.path().join("d"),
        "Patient.ndjson",
        &[patient("p1", "2023-12-01T00:00:00Z", "0")],
    );
    let r = load(job(&lake, vec![older]).await).await;
    assert_eq!(
        (r.manifest.totals.unchanged, r.manifest.totals.updated),
        (1, 0),
        "a stale file must not overwrite"
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT meta_version_id, count(*) OVER () FROM {}",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(rows, vec![vec![json!("1"), json!(1)]]);
    }
    let r = load(job(&lake, vec![newest]).await).await;
    assert_eq!(r.manifest.totals.updated, 1);
    let commit = r.manifest.tables["patient"].commits.last().unwrap();
    assert_eq!(commit.operation, CommitOperation::Upsert);
    let metrics = commit.merge.as_ref().unwrap();
    assert_eq!(
        (
            metrics.rows_updated,
            metrics.rows_copied,
            metrics.deletion_vectors
        ),
        (1, 0, 1),
        "the old row is marked deleted, no row is rewritten"
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT meta_version_id, meta_last_updated::VARCHAR, count(*) OVER () FROM {}",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(
            rows,
            vec![vec![json!("3"), json!("2024-02-29 19:00:00+00"), json!(1)]]
        );
    }
}

fn duplicates_file(dir: &std::path::Path) -> std::path::PathBuf {
    write_file(
        dir,
        "Patient.ndjson",
        &[
            patient("p1", "2024-01-01T00:00:00Z", "1"),
            patient("p1", "2024-01-01T00:00:00Z", "1"),
            patient("p2", "2024-01-01T00:00:00Z", "1"),
            patient("p2", "2024-01-02T00:00:00Z", "2"),
            patient("p3", "2024-01-02T00:00:00Z", "2"),
            patient("p3", "2024-01-01T00:00:00Z", "1"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_ids_in_one_file_collapse_to_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let file = duplicates_file(tmp.path());
    let r = load(job(&lake, vec![file]).await).await;
    let t = r.manifest.totals;
    assert_eq!(
        (t.inserted, t.updated, t.unchanged, t.quarantined),
        (3, 1, 2, 0)
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT id, meta_version_id FROM {} ORDER BY id",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(
            rows,
            vec![
                vec![json!("p1"), json!("1")],
                vec![json!("p2"), json!("2")],
                vec![json!("p3"), json!("2")]
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_mode_keeps_every_version() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let file = duplicates_file(tmp.path());
    let r = load(
        job(&lake, vec![file.clone()])
            .await
            .with_mode(LoadMode::History),
    )
    .await;
    assert_eq!(
        (r.manifest.totals.inserted, r.manifest.totals.unchanged),
        (5, 1)
    );
    let again = load(
        job(&lake, vec![file])
            .await
            .with_mode(LoadMode::History)
            .with_force(true),
    )
    .await;
    assert_eq!(
        (
            again.manifest.totals.inserted,
            again.manifest.totals.unchanged
        ),
        (0, 6)
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT id, string_agg(meta_version_id, ',' ORDER BY meta_last_updated) FROM {} GROUP BY id ORDER BY id",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(
            rows,
            vec![
                vec![json!("p1"), json!("1")],
                vec![json!("p2"), json!("1,2")],
                vec![json!("p3"), json!("1,2")]
            ]
        );
    }
}

#[test]
fn quarantine_records_file_line_offset_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lines = vec![
        patient("ok1", "2024-01-01T00:00:00Z", "1"),
        r#"{"resourceType":"Patient","id":"#.to_owned(),
        String::new(),
        r#"{"id":"x"}"#.to_owned(),
        r#"{"resourceType":"Observation","id":"o1","meta":{"lastUpdated":"2024-01-01T00:00:00Z"}}"#
            .to_owned(),
        r#"{"resourceType":"Patient"}"#.to_owned(),
        r#"{"resourceType":"Patient","id":"p9","meta":{"lastUpdated":"last tuesday"}}"#.to_owned(),
        patient("ok2", "2024-01-01T00:00:00Z", "1"),
    ];
    let file = write_file(tmp.path(), "Patient.000.ndjson", &lines);
    let offsets: Vec<u64> = lines
        .iter()
        .scan(0u64, |at, l| {
            let start = *at;
            *at += l.len() as u64 + 1;
            Some(start)
        })
        .collect();

    // Quarantined lines give exit code 1.
    let summary = load_cli_json(&lake_dir, &file, 1);
    assert_eq!(
        summary["totals"],
        json!({"inserted": 2, "updated": 0, "unchanged": 0, "quarantined": 5})
    );
    let input = &summary["inputs"][0];
    assert_eq!(
        (input["lines"].as_u64(), input["blank_lines"].as_u64()),
        (Some(7), Some(1))
    );

    if let Some(rows) = duckdb(&format!(
        "SELECT line, byte_offset, reason_code, source, decode(raw) FROM {} ORDER BY line",
        scan(&lake_dir, "_quarantine")
    )) {
        let source = std::fs::canonicalize(&file).unwrap().display().to_string();
        let expected: Vec<Vec<Value>> = [
            (2, "invalid_json"),
            (4, "missing_resource_type"),
            (5, "type_mismatch"),
            (6, "missing_id"),
            (7, "bad_last_updated"),
        ]
        .iter()
        .map(|&(line, code)| {
            vec![
                json!(line),
                json!(offsets[line - 1]),
                json!(code),
                json!(source),
                json!(lines[line - 1]),
            ]
        })
        .collect();
        assert_eq!(rows, expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_input_loads_like_plain_and_hashes_stored_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = sample_dir("bds-r4-10").join("Encounter.ndjson");
    let gz_path = tmp.path().join("Encounter.ndjson.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    encoder.finish().unwrap();

    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let as_of = Some("2024-01-01T00:00:00Z".parse().unwrap());
    let r_plain = load(job(&open_lake(&a), vec![plain]).await.with_as_of(as_of)).await;
    let r_gz = load(
        job(&open_lake(&b), vec![gz_path.clone()])
            .await
            .with_as_of(as_of),
    )
    .await;
    assert_eq!(r_plain.manifest.totals, r_gz.manifest.totals);
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&gz_path).unwrap()));
    assert_eq!(r_gz.manifest.inputs[0].sha256, sha);
    let query = "SELECT id, resource, _line FROM encounter ORDER BY id";
    let plain_rows = sql(&open_lake(&a), &["encounter"], query).await;
    assert!(!plain_rows.is_empty());
    assert_eq!(plain_rows, sql(&open_lake(&b), &["encounter"], query).await);
}

/// A reader that returns at most `piece` bytes per call.
struct Pieces<'a>(&'a [u8], usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(out.len()).min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Decodes `data` cut into `target`-byte chunks read `piece` bytes at a
/// time. With `renumber`, lines are numbered after decoding, as the load
/// pipeline does, instead of by the chunker.
fn decode_all(data: &[u8], target: usize, piece: usize, renumber: bool) -> Vec<(u64, u64, String)> {
    let mut chunker = LineChunker::new(target);
    if renumber {
        chunker = chunker.without_line_numbers();
    }
    let mut reader = Pieces(data, piece);
    let chunks: Vec<Chunk> =
        std::iter::from_fn(|| chunker.next_chunk(&mut reader).unwrap()).collect();
    let mut decoder = ChunkDecoder::default();
    let mut next_line = 1;
    chunks
        .iter()
        .flat_map(|c| {
            let mut decoded = decoder.decode(c, Some("Observation"));
            if renumber {
                decoded.number_from(next_line);
                next_line += decoded.lines.len() as u64;
            }
            decoded.lines.into_iter().map(move |l| {
                (
                    l.line,
                    l.offset,
                    format!(
                        "{:?} {}",
                        l.kind,
                        String::from_utf8_lossy(&c.data[l.start..l.end])
                    ),
                )
            })
        })
        .collect()
}

#[test]
fn decoding_is_independent_of_chunk_and_read_sizes() {
    let data = std::fs::read(sample_dir("bds-r4-10").join("Observation.ndjson")).unwrap();
    let data = &data[..200_000.min(data.len())]; // ends mid-line on purpose
    let reference = decode_all(data, 1 << 20, data.len(), false);
    assert!(reference.len() > 100);
    for target in [1, 3, 5, 4096, 65_536] {
        for piece in [1, 3, 5, 4096] {
            if target == 1 && piece == 1 {
                continue; // same as (1, 3) but slow in debug builds
            }
            for renumber in [false, true] {
                assert_eq!(
                    decode_all(data, target, piece, renumber),
                    reference,
                    "chunk {target}, read {piece}, renumbered {renumber}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_chunks_and_batches_give_identical_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let input = vec![
        sample_dir("bds-r4-10").join("Encounter.ndjson"),
        sample_dir("bds-r4-10").join("Patient.ndjson"),
    ];
    let as_of = Some("2024-01-01T00:00:00Z".parse().unwrap());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    load(job(&open_lake(&a), input.clone()).await.with_as_of(as_of)).await;
    load(
        job(&open_lake(&b), input)
            .await
            .with_as_of(as_of)
            .with_chunk_bytes(5)
            .with_batch_rows(7),
    )
    .await;
    for table in ["encounter", "patient"] {
        let query = format!(
            "SELECT id, CAST(meta_last_updated AS VARCHAR), resource, _line FROM {table} ORDER BY id"
        );
        let whole = sql(&open_lake(&a), &[table], &query).await;
        assert!(!whole.is_empty(), "{table}");
        assert_eq!(
            whole,
            sql(&open_lake(&b), &[table], &query).await,
            "{table}"
        );
    }
}

#[test]
fn kill_9_mid_load_then_rerun_converges_to_a_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = fhirlake::bench::generate(&sample_dir(""), &data, 40_000_000, 7).unwrap();
    assert!(dataset.bytes > 30_000_000);
    let crashed = tmp.path().join("crashed");
    let clean = tmp.path().join("clean");

    let mut child = fhirlake()
        .args(["load", "--lake"])
        .arg(&crashed)
        .arg(&data)
        .spawn()
        .unwrap();
    // Wait until data files are being written, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    let has_parquet = || {
        walk(&crashed)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet"))
    };
    while !has_parquet() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Tables commit concurrently from here on, in about half a second
    // (debug build): kill a little into it.
    std::thread::sleep(Duration::from_millis(50));
    kill_9_while_running(&mut child);

    let summary = load_cli_json(&crashed, &data, 0);
    for input in summary["inputs"].as_array().unwrap() {
        let sum: u64 = ["inserted", "updated", "unchanged", "quarantined"]
            .iter()
            .map(|k| input[k].as_u64().unwrap())
            .sum();
        assert_eq!(
            sum,
            input["lines"].as_u64().unwrap(),
            "accounting after a crash: {input}"
        );
    }
    let out = fhirlake()
        .args(["load", "--lake"])
        .arg(&clean)
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let tables: Vec<String> = summary["tables"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(tables.len() > 10);
    let type_tables: Vec<String> = tables
        .iter()
        .filter(|t| !t.starts_with('_'))
        .cloned()
        .collect();
    assert_converged_in_process(&type_tables, (&open_lake(&crashed), &open_lake(&clean)));
    assert_converged(tables, (crashed.as_path(), clean.as_path()), scan, duckdb);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_lines_all_fail_creates_no_table() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_file(
        tmp.path(),
        "Observation.000.ndjson",
        &[
            "{not json".to_owned(),
            r#"{"resourceType":"Observation"}"#.to_owned(),
        ],
    );
    let good = write_file(
        tmp.path(),
        "Patient.000.ndjson",
        &[patient("p1", "2024-01-01T00:00:00Z", "1")],
    );
    let lake = open_lake(&tmp.path().join("lake"));
    assert!(!lake.has_table("patient").await.unwrap());
    // Tables of the coming files are opened ahead of their rows, but only
    // tables that exist: the observation table is never created.
    let report = load(job(&lake, vec![bad, good]).await).await;
    assert_eq!(
        (report.manifest.totals.inserted, report.quarantined()),
        (1, 2)
    );
    assert!(lake.has_table("patient").await.unwrap());
    assert!(lake.has_table("_quarantine").await.unwrap());
    assert!(!lake.has_table("observation").await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_type_file_routes_each_line_by_its_resource_type() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let observation = r#"{"resourceType":"Observation","id":"o1","meta":{"lastUpdated":"2024-01-01T00:00:00Z"},"status":"final"}"#;
    let file = write_file(
        tmp.path(),
        "export.ndjson",
        &[
            patient("p1", "2024-01-01T00:00:00Z", "1"),
            observation.to_owned(),
        ],
    );
    let r = load(job(&open_lake(&lake_dir), vec![file]).await).await;
    assert_eq!(r.manifest.tables["patient"].rows.inserted, 1);
    assert_eq!(r.manifest.tables["observation"].rows.inserted, 1);
    assert_eq!(r.manifest.inputs[0].tables.len(), 2);
}

#[test]
fn fatal_errors_name_the_path_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-export");
    let out = fhirlake()
        .args(["load", "--lake"])
        .arg(tmp.path().join("lake"))
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("check the path exists"), "{stderr}");
    // Nothing was written for a job that failed before loading.
    assert!(!tmp.path().join("lake/_fhirlake/manifests").exists());
}
