//! Shared helpers: fixtures, DuckDB queries, running the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fhirlake::lake::Lake;
use fhirlake::load::{self, LoadPlan, LoadReport};
use serde_json::Value;

pub fn sample_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/bulk")
        .join(name)
}

pub fn open_lake(dir: &Path) -> Lake {
    Lake::open(dir.to_str().unwrap(), Default::default()).unwrap()
}

pub async fn load(lake: &Lake, plan: LoadPlan) -> LoadReport {
    load::run(lake, &plan, None).await.expect("load succeeds")
}

/// Distinct ids per table, computed straight from the NDJSON with serde_json.
pub fn expected_ids(dirs: &[PathBuf]) -> BTreeMap<String, BTreeSet<String>> {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if !name.ends_with(".ndjson") || name == "log.ndjson" {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line).unwrap();
                let table = v["resourceType"].as_str().unwrap().to_ascii_lowercase();
                ids.entry(table)
                    .or_default()
                    .insert(v["id"].as_str().unwrap().to_owned());
            }
        }
    }
    ids
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FHIRLAKE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    let venv = Path::new(&home).join(".cache/fhirlake-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs SQL in DuckDB (delta extension) and returns the rows. `None` means
/// DuckDB is not installed; the test then says so loudly, unless CI requires it.
pub fn duckdb(sql: &str) -> Option<Vec<Vec<Value>>> {
    let Some(python) = python() else {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_DUCKDB").is_err(),
            "DuckDB is required (FHIRLAKE_REQUIRE_DUCKDB) but no Python venv was found; run .ci/run"
        );
        eprintln!(
            "!!! SKIPPING DuckDB check: no ~/.cache/fhirlake-venv (run .ci/run to install it)"
        );
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/duckdb_query.py");
    let out = Command::new(python)
        .arg(script)
        .arg(sql)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "duckdb failed for {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect(),
    )
}

pub fn scan(lake_dir: &Path, table: &str) -> String {
    format!("delta_scan('{}')", lake_dir.join(table).display())
}

/// Number of commits in a table's Delta log.
pub fn delta_versions(lake_dir: &Path, table: &str) -> usize {
    std::fs::read_dir(lake_dir.join(table).join("_delta_log"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
        })
        .unwrap_or(0)
}

pub fn fhirlake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fhirlake"))
}

pub fn patient(id: &str, last_updated: &str, version: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"{version}","lastUpdated":"{last_updated}"}},"gender":"female"}}"#
    )
}

pub fn write_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Runs `fhirlake load --json --lake LAKE INPUT`, asserts the exit code, returns the summary.
pub fn load_cli_json(lake: &Path, input: &Path, expected_code: i32) -> Value {
    let out = fhirlake()
        .args(["load", "--json", "--lake"])
        .arg(lake)
        .arg(input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(expected_code),
        "fhirlake load {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
