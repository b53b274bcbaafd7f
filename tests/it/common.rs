//! Shared helpers: fixtures, DuckDB queries, running the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fhirlake::lake::Lake;
use fhirlake::load::{Job, LoadReport};
use serde_json::{Value, json};

pub fn sample_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/bulk")
        .join(name)
}

pub fn open_lake(dir: &Path) -> Lake {
    Lake::open(dir.to_str().unwrap(), Default::default()).unwrap()
}

pub async fn load(job: Job) -> LoadReport {
    job.await.expect("load succeeds")
}

/// A load job of `paths` (files or directories, local or `s3://`).
pub async fn job(lake: &Lake, paths: Vec<PathBuf>) -> Job {
    let inputs = fhirlake::source::discover(&paths, lake.storage_options())
        .await
        .expect("inputs exist");
    Job::new(lake).with_inputs(inputs)
}

/// Runs `query` in-process (DataFusion, as delta-rs reads the tables) over
/// the named tables of `lake`, each registered under its own name; returns
/// the rows as JSON values (integers, floats, booleans and strings as
/// themselves, other types as their display text, nulls as null).
pub async fn sql(lake: &Lake, tables: &[&str], query: &str) -> Vec<Vec<Value>> {
    use deltalake::datafusion::prelude::SessionContext;
    let ctx = SessionContext::new();
    for table in tables {
        let delta = deltalake::DeltaTable::try_from_url_with_storage_options(
            lake.table_url(table),
            lake.storage_options().clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("opening {table}: {e}"));
        let provider = delta.table_provider().await.unwrap();
        ctx.register_table(*table, provider).unwrap();
    }
    let batches = ctx
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| cell(column, row))
                    .collect(),
            );
        }
    }
    rows
}

/// [`sql`] from a synchronous test: a runtime of its own.
pub fn sql_blocking(lake: &Lake, tables: &[&str], query: &str) -> Vec<Vec<Value>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sql(lake, tables, query))
}

fn cell(column: &deltalake::arrow::array::ArrayRef, row: usize) -> Value {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
    if column.is_null(row) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(row)),
        DataType::UInt64 => json!(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => json!(column.as_boolean().value(row)),
        DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json!(column.as_string::<i64>().value(row)),
        DataType::Utf8View => json!(column.as_string_view().value(row)),
        _ => json!(deltalake::arrow::util::display::array_value_to_string(column, row).unwrap()),
    }
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

/// The test venv's Python (`FHIRLAKE_PYTHON`, else ~/.cache/fhirlake-venv).
pub fn python() -> Option<PathBuf> {
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
    duckdb_with_env(sql, &[])
}

pub fn duckdb_with_env(sql: &str, env: &[(&str, String)]) -> Option<Vec<Vec<Value>>> {
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
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

/// kill -9 of a load still running; fails the test if it already finished
/// (the kill would then prove nothing).
pub fn kill_9_while_running(child: &mut std::process::Child) {
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        running,
        "the load finished before it could be killed; grow the dataset"
    );
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

/// Runs a `fhirlake ... --json` command, asserts its exit code, returns its JSON output.
pub fn run_json(command: &mut Command, expected_code: i32) -> Value {
    let out = command.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(expected_code),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fhirlake audit --json --lake LAKE [ARGS]`: one summary per event (it must succeed).
pub fn audit_events(lake: &Path, args: &[&str]) -> Vec<Value> {
    let out = fhirlake()
        .args(["audit", "--json"])
        .args(args)
        .arg("--lake")
        .arg(lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fhirlake audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `fhirlake load --json --lake LAKE INPUT`, asserts the exit code, returns the summary.
pub fn load_cli_json(lake: &Path, input: &Path, expected_code: i32) -> Value {
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(lake)
            .arg(input),
        expected_code,
    )
}

/// The manifest's record of the input whose path ends with `suffix`.
pub fn input_ending<'m>(
    manifest: &'m fhirlake::ledger::JobManifest,
    suffix: &str,
) -> &'m fhirlake::ledger::InputRecord {
    manifest
        .inputs
        .iter()
        .find(|i| i.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no input ending in {suffix}"))
}

/// The SeaweedFS server started by scripts/test.sh, if any.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
}

impl S3 {
    /// `None` (with a loud message) when no S3 server was started, unless CI requires one.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok();
        match (
            var("FHIRLAKE_S3_ENDPOINT"),
            var("FHIRLAKE_S3_BUCKET"),
            var("FHIRLAKE_S3_KEY"),
            var("FHIRLAKE_S3_SECRET"),
        ) {
            (Some(endpoint), Some(bucket), Some(key), Some(secret)) => Some(Self {
                endpoint,
                bucket,
                key,
                secret,
            }),
            _ => {
                assert!(
                    std::env::var("FHIRLAKE_REQUIRE_S3").is_err(),
                    "an S3 server is required (FHIRLAKE_REQUIRE_S3) but FHIRLAKE_S3_* is not set; run scripts/test.sh"
                );
                eprintln!("!!! SKIPPING S3 test: no S3 server (scripts/test.sh starts SeaweedFS)");
                None
            }
        }
    }

    /// A fresh lake URI under a unique prefix.
    pub fn fresh_lake(&self) -> String {
        format!("s3://{}/{}", self.bucket, uuid::Uuid::new_v4().simple())
    }

    /// Standard AWS settings, as storage options (tests share one process, so not env).
    pub fn options(&self) -> std::collections::HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", self.key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn open(&self, uri: &str) -> Lake {
        Lake::open(uri, self.options()).unwrap()
    }

    /// The CLI, configured the standard AWS way (environment).
    pub fn fhirlake(&self) -> Command {
        let mut cmd = fhirlake();
        cmd.envs(self.options());
        cmd
    }

    pub fn duckdb(&self, sql: &str) -> Option<Vec<Vec<Value>>> {
        let endpoint = self.endpoint.trim_start_matches("http://");
        duckdb_with_env(
            sql,
            &[(
                "FHIRLAKE_DUCKDB_S3",
                format!("{},{},{endpoint}", self.key, self.secret),
            )],
        )
    }
}

/// Asserts that a lake killed mid-load and then re-run holds the same rows as
/// a clean run, table by table, with no duplicate ids. `scan(lake, table)` names
/// a table for `query` (local `delta_scan` or S3).
pub fn assert_converged<L: Copy>(
    tables: impl IntoIterator<Item = String>,
    (crashed, clean): (L, L),
    scan: impl Fn(L, &str) -> String,
    query: impl Fn(&str) -> Option<Vec<Vec<Value>>>,
) {
    for table in tables {
        let q = |lake: L| {
            query(&format!(
                "SELECT count(*), count(DISTINCT id), sum(hash(id, resource)) FROM {}",
                scan(lake, &table)
            ))
        };
        let (got, want) = (q(crashed), q(clean));
        assert_eq!(got, want, "{table}: crash + rerun must equal a clean run");
        if let Some(rows) = got {
            assert_eq!(rows[0][0], rows[0][1], "{table}: no duplicate ids");
        }
    }
}

/// [`assert_converged`] in-process: every row of each table (id, version
/// key and resource) equal between the two lakes, and one row per key.
pub fn assert_converged_in_process(tables: &[String], (crashed, clean): (&Lake, &Lake)) {
    for table in tables {
        let query = format!(
            "SELECT id, CAST(meta_last_updated AS VARCHAR), resource FROM \"{table}\" ORDER BY 1, 2"
        );
        let got = sql_blocking(crashed, &[table], &query);
        let want = sql_blocking(clean, &[table], &query);
        assert_eq!(got.len(), want.len(), "{table}: row counts");
        assert!(got == want, "{table}: crash + rerun must equal a clean run");
        let keys: BTreeSet<(String, String)> = got
            .iter()
            .map(|r| (r[0].to_string(), r[1].to_string()))
            .collect();
        assert_eq!(keys.len(), got.len(), "{table}: no duplicate keys");
    }
}

/// Runs `tests/support/deltalake_read.py` (python deltalake) on a table:
/// `None` without the venv (loudly, unless CI requires it).
pub fn python_deltalake(table: &Path, sql: &str) -> Option<Value> {
    let Some(python) = python() else {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_DUCKDB").is_err(),
            "python deltalake is required (FHIRLAKE_REQUIRE_DUCKDB) but no venv was found; run .ci/run"
        );
        eprintln!("!!! SKIPPING python deltalake check: no ~/.cache/fhirlake-venv");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/deltalake_read.py");
    let out = Command::new(python)
        .arg(script)
        .arg(table)
        .arg(sql)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python deltalake failed on {}: {}",
        table.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}
