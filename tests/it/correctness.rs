//! Adversarial inputs through the CLI, with exact outcomes: SUBSETTED
//! resources, duplicate member names, ids that are not FHIR ids, an
//! unreachable S3 endpoint, and the cases that already held (kept as
//! regression tests).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const SUBSETTED_TAG: &str =
    r#"{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}"#;

fn full_patient(id: &str, at: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"1","lastUpdated":"{at}"}},"gender":"female","name":[{{"family":"Ng","given":["Ada"]}}],"birthDate":"1970-01-02"}}"#
    )
}

fn subset_patient(id: &str, at: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"2","lastUpdated":"{at}","tag":[{SUBSETTED_TAG}]}},"birthDate":"1970-01-02"}}"#
    )
}

/// The quarantine's (line, reason_code, reason) rows, by line.
fn quarantined(lake_dir: &Path) -> Vec<Vec<Value>> {
    sql_blocking(
        &open_lake(lake_dir),
        &["_quarantine"],
        "SELECT line, reason_code, reason FROM _quarantine ORDER BY line",
    )
}

#[test]
fn a_subsetted_version_never_replaces_a_full_row_and_alone_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let full = write_file(
        &tmp.path().join("full"),
        "Patient.ndjson",
        &[full_patient("p1", "2024-01-01T00:00:00Z")],
    );
    load_cli_json(&lake_dir, &full, 0);
    let subset = write_file(
        &tmp.path().join("subset"),
        "Patient.ndjson",
        &[
            subset_patient("p1", "2024-06-01T00:00:00Z"),
            subset_patient("p2", "2024-06-01T00:00:00Z"),
        ],
    );
    let summary = load_cli_json(&lake_dir, &subset, 0);
    let input = &summary["inputs"][0];
    assert_eq!(
        (input["inserted"].clone(), input["filtered"].clone()),
        (json!(1), json!(1))
    );
    let reasons = input["filtered_by"].as_object().unwrap();
    assert!(
        reasons.keys().any(|k| k.starts_with("subsetted")),
        "{reasons:?}"
    );

    let lake = open_lake(&lake_dir);
    let rows = sql_blocking(
        &lake,
        &["patient"],
        "SELECT id, _subsetted, gender, meta_version_id, resource FROM patient ORDER BY id",
    );
    // p1 keeps its full version: resource, view columns and version.
    assert_eq!(
        rows[0][..4],
        [json!("p1"), json!(false), json!("female"), json!("1")]
    );
    assert_eq!(
        rows[0][4],
        json!(full_patient("p1", "2024-01-01T00:00:00Z"))
    );
    // p2 exists only as a subset: loaded, and flagged as one.
    assert_eq!(
        rows[1][..4],
        [json!("p2"), json!(true), Value::Null, json!("2")]
    );

    // A full version of the subset's instant replaces it.
    let complete = write_file(
        &tmp.path().join("complete"),
        "Patient.ndjson",
        &[full_patient("p2", "2024-06-01T00:00:00Z")],
    );
    let summary = load_cli_json(&lake_dir, &complete, 0);
    assert_eq!(summary["totals"]["updated"], json!(1));
    let rows = sql_blocking(
        &lake,
        &["patient"],
        "SELECT _subsetted, gender FROM patient WHERE id = 'p2'",
    );
    assert_eq!(rows, [[json!(false), json!("female")]]);
}

#[test]
fn history_mode_keeps_a_subset_as_a_flagged_version() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let file = write_file(
        tmp.path(),
        "Patient.ndjson",
        &[
            full_patient("p1", "2024-01-01T00:00:00Z"),
            subset_patient("p1", "2024-06-01T00:00:00Z"),
        ],
    );
    run_json(
        fhirlake()
            .args(["load", "--json", "--history", "--lake"])
            .arg(&lake_dir)
            .arg(&file),
        0,
    );
    let rows = sql_blocking(
        &open_lake(&lake_dir),
        &["patient"],
        "SELECT meta_version_id, _subsetted FROM patient ORDER BY meta_last_updated",
    );
    assert_eq!(
        rows,
        [[json!("1"), json!(false)], [json!("2"), json!(true)]]
    );
}

#[test]
fn duplicate_member_names_are_quarantined_on_both_parse_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lines = [
        r#"{"resourceType":"Patient","id":"d1","gender":"male","id":"d2"}"#,
        r#"{"resourceType":"Patient","id":"ok","name":[{"family":"A","family":"B"}]}"#,
        r#"{"resourceType":"Patient","id":"fine","meta":{"lastUpdated":"2024-01-01T00:00:00Z"}}"#,
    ]
    .map(String::from);
    // Patient has a view (the tree parser); Claim has none (the simd-json tape).
    let claims: Vec<String> = lines
        .iter()
        .map(|l| l.replace("Patient", "Claim"))
        .collect();
    for (name, lines, table) in [
        ("Patient.ndjson", &lines[..], "patient"),
        ("Claim.ndjson", &claims[..], "claim"),
    ] {
        let file = write_file(&tmp.path().join(table), name, lines);
        let lake = lake_dir.join(table);
        let summary = load_cli_json(&lake, &file, 1);
        assert_eq!(summary["totals"]["inserted"], json!(1), "{table}");
        let rows = quarantined(&lake);
        assert_eq!(rows.len(), 2, "{table}: {rows:?}");
        for (row, member) in rows.iter().zip(["id", "family"]) {
            assert_eq!(row[1], json!("duplicate_key"), "{table}: {row:?}");
            assert!(
                row[2].as_str().unwrap().contains(&format!("{member:?}")),
                "{table}: names the member: {row:?}"
            );
        }
    }
}

#[test]
fn ids_that_are_not_fhir_ids_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let long = "x".repeat(80);
    let lines: Vec<String> = ["../../etc/passwd", long.as_str(), "has space", "good-id.1"]
        .iter()
        .map(|id| format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#))
        .collect();
    let file = write_file(tmp.path(), "Patient.ndjson", &lines);
    let summary = load_cli_json(&lake_dir, &file, 1);
    assert_eq!(summary["totals"]["inserted"], json!(1));
    let rows = quarantined(&lake_dir);
    let codes: Vec<&Value> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(codes, [&json!("invalid_id"); 3]);
    assert!(rows[0][2].as_str().unwrap().contains("../../etc/passwd"));
    // The table holds only the good one; no file name came from an id.
    let ids = sql_blocking(
        &open_lake(&lake_dir),
        &["patient"],
        "SELECT id FROM patient",
    );
    assert_eq!(ids, [[json!("good-id.1")]]);
}

#[test]
fn malformed_references_give_no_join_key() {
    let view = fhirlake::view::CompiledView::parse(
        r#"{"resource":"Observation","select":[{"column":[{"name":"patient_id","path":"subject.getReferenceKey(Patient)"}]}]}"#,
    )
    .unwrap();
    for (reference, key) in [
        ("Patient/p1", json!("p1")),
        ("Patient/has space", Value::Null),
        ("Patient/../../x", Value::Null),
        ("Patient/", Value::Null),
        ("patient/p1", Value::Null),
    ] {
        let text = format!(
            r#"{{"resourceType":"Observation","id":"o","subject":{{"reference":"{reference}"}}}}"#
        );
        let rows = view.rows_for_text(&text).unwrap();
        assert_eq!(rows, [vec![key]], "{reference}");
    }
}

#[test]
fn an_unreachable_s3_endpoint_is_named_and_not_blamed_on_the_store() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(
        tmp.path(),
        "Patient.ndjson",
        &[patient("p1", "2024-01-01T00:00:00Z", "1")],
    );
    let started = Instant::now();
    let out = fhirlake()
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-value")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .args(["load", "--lake", "s3://lake/fhir"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "names the endpoint: {stderr}"
    );
    assert!(
        stderr.contains("check AWS_ENDPOINT_URL"),
        "says what to check: {stderr}"
    );
    assert!(
        !stderr.contains("conditional PUT"),
        "not blamed on the store: {stderr}"
    );
    assert!(
        !stderr.contains("test-secret-value"),
        "no secret in errors: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up in {:?}",
        started.elapsed()
    );
}

/// Loads `lines` (written as given, joined by `separator`) as one file.
fn load_raw(dir: &Path, name: &str, bytes: &[u8], code: i32) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    load_cli_json(&dir.join("lake"), &file, code)
}

#[test]
fn cases_that_held_stay_held() {
    let tmp = tempfile::tempdir().unwrap();
    let a = patient("a", "2024-01-01T00:00:00Z", "1");
    let b = patient("b", "2024-01-01T00:00:00Z", "1");

    // CRLF line ends, and no final newline.
    let summary = load_raw(
        &tmp.path().join("crlf"),
        "Patient.ndjson",
        format!("{a}\r\n{b}").as_bytes(),
        0,
    );
    assert_eq!(summary["totals"]["inserted"], json!(2));

    // NUL bytes and bad UTF-8 quarantine their lines; the rest loads.
    let bytes = [
        a.as_bytes(),
        b"\n{\"resourceType\":\"Patient\",\"id\":\"n\0\"}\n",
        b"{\"id\":\"\xff\"}\n",
        b.as_bytes(),
    ]
    .concat();
    let summary = load_raw(&tmp.path().join("nul"), "Patient.ndjson", &bytes, 1);
    assert_eq!(
        (
            summary["totals"]["inserted"].clone(),
            summary["totals"]["quarantined"].clone()
        ),
        (json!(2), json!(2))
    );
    let codes: Vec<Value> = quarantined(&tmp.path().join("nul/lake"))
        .iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(codes, [json!("invalid_json"), json!("not_utf8")]);

    // Deep nesting (100,000 levels) is a quarantined line, not a crash.
    let deep = format!(
        r#"{{"resourceType":"Patient","id":"deep","extension":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let summary = load_raw(
        &tmp.path().join("deep"),
        "Patient.ndjson",
        format!("{deep}\n{a}\n").as_bytes(),
        1,
    );
    assert_eq!(summary["totals"]["inserted"], json!(1));

    // A line of 40 MB loads whole.
    let big = format!(
        r#"{{"resourceType":"Patient","id":"big","text":{{"div":"{}"}}}}"#,
        "x".repeat(40 << 20)
    );
    let summary = load_raw(&tmp.path().join("big"), "Patient.ndjson", big.as_bytes(), 0);
    assert_eq!(summary["totals"]["inserted"], json!(1));
    let sizes = sql_blocking(
        &open_lake(&tmp.path().join("big/lake")),
        &["patient"],
        "SELECT length(resource) FROM patient",
    );
    assert_eq!(sizes, [[json!(big.len())]]);

    // The same instant written with other offsets is one version.
    let lines = [
        patient("t", "2024-01-01T10:00:00+02:00", "1"),
        patient("t", "2024-01-01T08:00:00Z", "1"),
        patient("t", "2024-01-01T03:00:00-05:00", "1"),
    ];
    let summary = load_raw(
        &tmp.path().join("offsets"),
        "Patient.ndjson",
        (lines.join("\n") + "\n").as_bytes(),
        0,
    );
    assert_eq!(
        (
            summary["totals"]["inserted"].clone(),
            summary["totals"]["unchanged"].clone()
        ),
        (json!(1), json!(2))
    );

    // A truncated gzip stream is a fatal read error naming the file: nothing commits.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..20_000 {
        writeln!(gz, "{a}").unwrap();
    }
    let gz = gz.finish().unwrap();
    let dir = tmp.path().join("gz");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("Patient.ndjson.gz");
    std::fs::write(&file, &gz[..gz.len() / 2]).unwrap();
    let out = fhirlake()
        .args(["load", "--lake"])
        .arg(dir.join("lake"))
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Patient.ndjson.gz"), "{stderr}");
    assert!(
        !dir.join("lake/patient/_delta_log").exists(),
        "nothing committed"
    );
}

#[test]
fn newer_then_older_versions_across_files_keep_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    write_file(
        &dir,
        "Patient.000.ndjson",
        &[patient("p", "2024-06-01T00:00:00Z", "2")],
    );
    write_file(
        &dir,
        "Patient.001.ndjson",
        &[patient("p", "2024-01-01T00:00:00Z", "1")],
    );
    let summary = load_cli_json(&tmp.path().join("lake"), &dir, 0);
    assert_eq!(
        (
            summary["totals"]["inserted"].clone(),
            summary["totals"]["unchanged"].clone()
        ),
        (json!(1), json!(1))
    );
    let rows = sql_blocking(
        &open_lake(&tmp.path().join("lake")),
        &["patient"],
        "SELECT meta_version_id FROM patient",
    );
    assert_eq!(rows, [[json!("2")]]);
}
