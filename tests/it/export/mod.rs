//! `fhirlake export` against the in-process Bulk Data server, by concern.

mod auth;
mod failures;
mod flaky;
mod incremental;
mod resume;
mod s3;
mod summary;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bulk_server::{BulkServer, Config, Smart, TRANSACTION_TIME};
use crate::common::{duckdb, fhirlake, open_lake, sample_dir, scan, sql_blocking};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn sample(types: &[&str]) -> Vec<(String, Vec<u8>)> {
    types
        .iter()
        .map(|t| {
            let path = sample_dir("synthea-10").join(format!("{t}.000.ndjson"));
            (t.to_string(), std::fs::read(path).unwrap())
        })
        .collect()
}

pub fn lines(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
}

pub fn export(server: &BulkServer, lake: &Path) -> Command {
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

pub fn run(command: &mut Command, code: i32) -> (Value, Output) {
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

/// (count, distinct ids) of a table, read in-process (and by DuckDB when
/// it is installed: both must agree).
pub fn counts(lake: &Path, table: &str) -> Option<(i64, i64)> {
    let query = format!("SELECT count(*), count(DISTINCT id) FROM {table}");
    let rows = sql_blocking(&open_lake(lake), &[table], &query);
    let found = (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap());
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(DISTINCT id) FROM {}",
        scan(lake, table)
    )) {
        let by_duckdb = (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap());
        assert_eq!(by_duckdb, found, "{table}: DuckDB and delta-rs disagree");
    }
    Some(found)
}

pub fn all_files(dir: &Path) -> Vec<PathBuf> {
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
pub fn assert_nowhere(needle: &str, lake: &Path, out: &Output) {
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

pub fn events(lake: &Path, job: &str) -> Vec<Value> {
    let path = lake.join(format!("_fhirlake/jobs/{job}.events.ndjson"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn manifest(lake: &Path, job: &str) -> Value {
    let path = lake.join(format!("_fhirlake/manifests/{job}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn fhirlake_sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
