//! `fhirlake status`: the report's numbers are the lake's (checked with
//! DuckDB), the HTML page renders in a real headless Chromium with those
//! numbers on it, and a tampered trail is reported as not verifying.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::{duckdb, fhirlake, patient, python, run_json, sample_dir, scan, write_file};

/// The bundled sample, then an update and a file with a broken line.
fn lake_with_history(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    let load = |input: &Path, code| {
        run_json(
            fhirlake()
                .args(["load", "--json", "--lake"])
                .arg(&lake)
                .arg(input),
            code,
        )
    };
    load(&sample_dir("bds-r4-10"), 0);
    let first = write_file(
        &dir.join("in1"),
        "Patient.ndjson",
        &[patient("status-1", "2026-01-01T00:00:00Z", "1")],
    );
    load(&first, 0);
    let second = write_file(
        &dir.join("in2"),
        "Patient.ndjson",
        &[
            patient("status-1", "2026-02-01T00:00:00Z", "2"),
            patient("status-2", "2026-02-01T00:00:00Z", "1"),
            r#"{"resourceType":"Patient","id":"broken""#.to_owned(),
        ],
    );
    load(&second, 1);
    lake
}

/// `fhirlake status --json [--html FILE]`: exit code and report.
fn status(lake: &Path, html: Option<&Path>) -> (i32, Value) {
    let mut cmd = fhirlake();
    cmd.args(["status", "--json", "--lake"]).arg(lake);
    if let Some(page) = html {
        cmd.arg("--html").arg(page);
    }
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn count(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap()
}

#[test]
fn status_reports_what_duckdb_reads_and_the_page_renders_it_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path());
    let page = dir.path().join("status.html");
    let (code, report) = status(&lake, Some(&page));
    assert_eq!(code, 0, "a clean lake: {report:#}");
    assert_eq!(report["verify"]["clean"], true);

    let tables: BTreeMap<String, &Value> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t))
        .collect();
    let patient = tables["patient"];
    let history: Vec<u64> = patient["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| count(&v["rows"]))
        .collect();
    assert!(
        history.windows(2).filter(|w| w[1] != w[0]).count() >= 2,
        "patient grew in the sample load and again with status-1/-2: {history:?}"
    );
    let versions: Vec<u64> = patient["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| count(&v["version"]))
        .collect();
    assert_eq!(
        versions,
        (0..=count(&patient["version"])).collect::<Vec<_>>(),
        "a row count for every version"
    );
    assert_eq!(report["quarantine"]["rows"], 1);
    assert_eq!(report["quarantine"]["by_reason"][0][0], "invalid_json");
    let jobs = report["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    assert_eq!(
        jobs.iter()
            .map(|j| j["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["success", "success", "warnings"]
    );
    assert_eq!(jobs[2]["rows"]["updated"], 1);
    assert_eq!(jobs[2]["rows"]["inserted"], 1);

    // The numbers are the lake's: DuckDB counts every table.
    let Some(_) = duckdb("SELECT 1") else { return };
    for (name, t) in &tables {
        let rows = duckdb(&format!("SELECT count(*) FROM {}", scan(&lake, name))).unwrap();
        assert_eq!(count(&rows[0][0]), count(&t["rows"]), "rows of {name}");
    }
    let reasons = duckdb(&format!(
        "SELECT reason_code, count(*) FROM {} GROUP BY 1",
        scan(&lake, "_quarantine")
    ))
    .unwrap();
    assert_eq!(reasons.len(), 1);
    assert_eq!(count(&reasons[0][1]), 1);

    // What a person sees in the browser is the same.
    let Some(seen) = browse(&page, &dir.path().join("status.png")) else {
        return;
    };
    assert_eq!(seen["verdict"], "verifies");
    let shown: BTreeMap<String, u64> = seen["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().unwrap().replace(',', "").parse().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<String, u64> = tables
        .iter()
        .map(|(k, t)| (k.clone(), count(&t["rows"])))
        .collect();
    assert_eq!(shown, expected, "table rows as rendered in Chromium");
    assert_eq!(seen["reasons"]["invalid_json"], "1");
    assert_eq!(seen["jobs"].as_array().unwrap().len(), 3);
    let resource_rows: u64 = tables
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(_, t)| count(&t["rows"]))
        .sum();
    assert_eq!(
        seen["cards"]["card-resource-rows"]
            .as_str()
            .unwrap()
            .replace(',', ""),
        resource_rows.to_string()
    );
    let charts = seen["charts"].as_array().unwrap();
    assert_eq!(
        charts.len(),
        tables.len() + 2,
        "a line per table, quarantine and loads"
    );
    for chart in charts {
        assert!(
            count(&chart[1]) > 0 && count(&chart[2]) > 0,
            "every chart is laid out: {chart}"
        );
    }
    let shot = &seen["screenshot"];
    assert_eq!(shot["width"], 1280);
    assert!(
        count(&shot["height"]) >= 600 && count(&shot["bytes"]) > 20_000,
        "{shot}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: found {external}");
    }
}

#[test]
fn a_tampered_trail_shows_as_not_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path());
    let events = lake.join("_fhirlake/audit/events");
    std::fs::remove_file(events.join(format!("{:020}.json", 3))).unwrap();
    let page = dir.path().join("status.html");
    let (code, report) = status(&lake, Some(&page));
    assert_eq!(code, 1);
    assert_eq!(report["verify"]["clean"], false);
    let problems = report["verify"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("00000000000000000003")
                || p.as_str().unwrap().contains("event 3")),
        "names the missing event: {problems:#?}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("does NOT verify"));
}

#[test]
fn status_of_a_mistyped_lake_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fhirlake()
        .args(["status", "--lake"])
        .arg(dir.path().join("nothing-here"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing-here") && err.contains("--lake"),
        "{err}"
    );
}

/// The page as headless Chromium renders it (`tests/support/browse_status.py`);
/// `None` (said loudly) without a browser, unless CI requires one.
fn browse(page: &Path, shot: &Path) -> Option<Value> {
    let chromium = Path::new("/usr/bin/chromium");
    let Some(python) = python().filter(|_| chromium.exists()) else {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_BROWSER").is_err(),
            "Chromium is required (FHIRLAKE_REQUIRE_BROWSER) but /usr/bin/chromium or the venv is missing; run .ci/run"
        );
        eprintln!(
            "!!! SKIPPING the browser check: no /usr/bin/chromium (run .ci/run to install it)"
        );
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/browse_status.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(page)
        .arg(shot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browse_status.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn raw_files_are_rehashed_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = fhirlake()
        .args(["hl7v2", "load", "--json", "--lake"])
        .arg(&lake)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7v2/messages"))
        .output()
        .unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1));
    let raw = std::fs::read_dir(lake.join("_raw/hl7v2"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut perms = std::fs::metadata(&raw).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&raw, perms).unwrap();
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&raw, bytes).unwrap();

    let (code, report) = status(&lake, None);
    assert_eq!(code, 0, "the chain and manifests are intact: {report:#}");
    assert_eq!(report["verify"]["raw_rehashed"], false);
    let out = fhirlake()
        .args(["status", "--json", "--rehash-raw", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["verify"]["problems"].to_string();
    assert!(problems.contains("_raw/hl7v2"), "{problems}");
}

/// The same report of a lake on S3 (SeaweedFS): every table's rows are what
/// DuckDB reads from the bucket, and the trail verifies.
#[test]
fn status_of_an_s3_lake_reports_what_duckdb_reads_there() {
    let Some(s3) = super::common::S3::from_env() else {
        return;
    };
    let lake = s3.fresh_lake();
    let out = s3
        .fhirlake()
        .args(["load", "--json", "--lake", &lake])
        .arg(sample_dir("bds-r4-10"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = tempfile::tempdir().unwrap();
    let page = page.path().join("status.html");
    let report = run_json(
        s3.fhirlake()
            .args(["status", "--json", "--lake", &lake, "--html"])
            .arg(&page),
        0,
    );
    assert_eq!(report["verify"]["clean"], true);
    assert!(!std::fs::read_to_string(&page).unwrap().contains(&s3.secret));
    let tables = report["tables"].as_array().unwrap();
    assert!(tables.len() > 10, "{report:#}");
    for table in tables {
        let name = table["name"].as_str().unwrap();
        let Some(rows) = s3.duckdb(&format!("SELECT count(*) FROM delta_scan('{lake}/{name}')"))
        else {
            return;
        };
        assert_eq!(count(&rows[0][0]), count(&table["rows"]), "{name} on S3");
    }
}
