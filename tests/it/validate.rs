//! US Core validation end to end: `fhirlake validate` on the bundled
//! Synthea sample and on a resource with a required element removed, and
//! `fhirlake load --validate` flagging, quarantining or segregating the
//! sample's one nonconforming Location.

use serde_json::{Value, json};

use crate::common::{duckdb, fhirlake, load_cli_json, run_json, sample_dir, scan};

fn validate_json(input: &std::path::Path) -> (Option<i32>, Vec<Value>) {
    let out = fhirlake()
        .args(["validate", "--json", "--input"])
        .arg(input)
        .output()
        .unwrap();
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), records)
}

#[test]
fn a_removed_required_element_and_a_broken_line_are_reported_where_they_are() {
    let sample =
        std::fs::read_to_string(sample_dir("synthea-10").join("Patient.000.ndjson")).unwrap();
    let good = sample.lines().next().unwrap();
    let mut no_gender: Value = serde_json::from_str(good).unwrap();
    no_gender.as_object_mut().unwrap().remove("gender");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("patients.ndjson");
    std::fs::write(&input, format!("{good}\n{no_gender}\n{{not json\n")).unwrap();

    let (code, records) = validate_json(&input);
    assert_eq!(code, Some(1), "{records:?}");
    assert_eq!(
        records.len(),
        2,
        "only what does not conform is listed: {records:?}"
    );
    let at = |n: usize| format!("{}:{n}", input.display());
    assert_eq!(records[0]["at"], at(2));
    assert_eq!(records[0]["valid"], false);
    let findings = records[0]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["path"], "Patient.gender");
    assert_eq!(findings[0]["element"], "Patient.gender");
    assert_eq!(
        findings[0]["profile"],
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    );
    assert_eq!(records[1]["at"], at(3));
    assert!(
        records[1]["error"]
            .as_str()
            .unwrap()
            .contains("key must be a string"),
        "{records:?}"
    );

    std::fs::write(&input, format!("{good}\n")).unwrap();
    assert_eq!(validate_json(&input), (Some(0), Vec::new()));
}

/// Synthea's "Patient's Home" Location has no name; US Core Location
/// requires one. Every other resource of the sample conforms.
#[test]
fn the_bundled_sample_conforms_but_for_one_nameless_location() {
    let dir = sample_dir("synthea-10");
    let mut invalid = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "log.ndjson" {
            continue;
        }
        let (code, records) = validate_json(&path);
        assert_eq!(code, Some(if records.is_empty() { 0 } else { 1 }));
        invalid.extend(records);
    }
    assert_eq!(invalid.len(), 1, "{invalid:#?}");
    assert_eq!(invalid[0]["resourceType"], "Location");
    assert!(
        invalid[0]["at"]
            .as_str()
            .unwrap()
            .ends_with("Location.000.ndjson:31")
    );
    assert_eq!(invalid[0]["findings"][0]["path"], "Location.name");
}

/// `fhirlake load --validate us-core [ARGS] --lake LAKE INPUT --json`.
fn load_validated(
    lake: &std::path::Path,
    input: &std::path::Path,
    args: &[&str],
    code: i32,
) -> Value {
    run_json(
        fhirlake()
            .args(["load", "--json", "--validate", "us-core"])
            .args(args)
            .arg("--lake")
            .arg(lake)
            .arg(input),
        code,
    )
}

/// The id on line `n` of `file`.
fn id_on_line(file: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line: Value = serde_json::from_str(text.lines().nth(n - 1).unwrap()).unwrap();
    line["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_validated_load_flags_the_nameless_location_and_records_its_finding_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let input = sample_dir("synthea-10").join("Location.000.ndjson");
    let nameless = id_on_line(&input, 31);

    let out = load_validated(&lake, &input, &[], 0);
    let v = &out["validation"];
    assert_eq!(v["package"], "hl7.fhir.us.core@6.1.0");
    assert_eq!(v["on_invalid"], "flag");
    assert_eq!(
        (
            &v["validated"],
            &v["valid"],
            &v["invalid"],
            &v["no_profile"]
        ),
        (&json!(44), &json!(43), &json!(1), &json!(0)),
        "{v}"
    );
    assert_eq!(v["rows_written"], 1);
    assert_eq!(out["totals"]["inserted"], 44);

    let location = scan(&lake, "location");
    let findings = scan(&lake, "_validation");
    let Some(rows) = duckdb(&format!(
        "SELECT v.table_name, v.id, v.rule, v.path, v.severity, v.profile, v._line, l._valid \
         FROM {findings} v JOIN {location} l USING (id, meta_last_updated)"
    )) else {
        return;
    };
    assert_eq!(
        rows,
        [[
            json!("location"),
            json!(nameless),
            json!("Location.name"),
            json!("Location.name"),
            json!("error"),
            json!("http://hl7.org/fhir/us/core/StructureDefinition/us-core-location"),
            json!(31),
            json!(false),
        ]]
    );
    let flags = duckdb(&format!(
        "SELECT _valid, count(*) FROM {location} GROUP BY 1 ORDER BY 1"
    ))
    .unwrap();
    assert_eq!(flags, [[json!(false), json!(1)], [json!(true), json!(43)]]);

    // Reloaded, every row is unchanged: no finding is written twice.
    let again = load_validated(&lake, &input, &["--force"], 0);
    assert_eq!(again["totals"]["unchanged"], 44);
    assert_eq!(again["validation"]["invalid"], 1);
    assert_eq!(again["validation"]["rows_written"], 0);
    let count = duckdb(&format!("SELECT count(*) FROM {findings}")).unwrap();
    assert_eq!(count, [[json!(1)]]);
    // The `_validation` commits are in the manifests and the audit chain.
    let verify = fhirlake()
        .arg("verify")
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Without --validate, rows load with `_valid` null next to the flagged ones.
    let other = dir.path().join("other.ndjson");
    std::fs::write(
        &other,
        crate::common::patient("p1", "2024-01-01T00:00:00Z", "1") + "\n",
    )
    .unwrap();
    load_cli_json(&lake, &other, 0);
    let patient = scan(&lake, "patient");
    assert_eq!(
        duckdb(&format!("SELECT _valid FROM {patient}")).unwrap(),
        [[Value::Null]]
    );
}

#[test]
fn on_invalid_quarantine_or_segregate_keeps_the_resource_out_of_the_main_table() {
    let input = sample_dir("synthea-10").join("Location.000.ndjson");
    let nameless = id_on_line(&input, 31);

    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("quarantined");
    let out = load_validated(&lake, &input, &["--on-invalid", "quarantine"], 1);
    assert_eq!(out["totals"]["inserted"], 43);
    assert_eq!(out["totals"]["quarantined"], 1);
    assert_eq!(out["validation"]["invalid"], 1);
    assert_eq!(out["validation"]["rows_written"], 0);
    let quarantine = scan(&lake, "_quarantine");
    let Some(rows) = duckdb(&format!(
        "SELECT line, reason_code, resource_type, resource_id, reason FROM {quarantine}"
    )) else {
        return;
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..4],
        [
            json!(31),
            json!("invalid_profile"),
            json!("Location"),
            json!(nameless)
        ]
    );
    let reason = rows[0][4].as_str().unwrap();
    assert!(
        reason.contains("us-core-location")
            && reason.contains("Location.name: Location.name is required"),
        "{reason}"
    );
    let location = scan(&lake, "location");
    let held = duckdb(&format!(
        "SELECT count(*) FROM {location} WHERE id = '{nameless}'"
    ))
    .unwrap();
    assert_eq!(held, [[json!(0)]]);

    let lake = dir.path().join("segregated");
    let out = load_validated(&lake, &input, &["--on-invalid", "segregate"], 0);
    assert_eq!(out["totals"]["inserted"], 44);
    let segregated = scan(&lake, "_segregated/location");
    let rows = duckdb(&format!("SELECT id, _valid FROM {segregated}")).unwrap();
    assert_eq!(rows, [[json!(nameless), json!(false)]]);
    let location = scan(&lake, "location");
    let rows = duckdb(&format!(
        "SELECT count(*), bool_and(_valid) FROM {location}"
    ))
    .unwrap();
    assert_eq!(rows, [[json!(43), json!(true)]]);
    let findings = scan(&lake, "_validation");
    let rows = duckdb(&format!("SELECT table_name, id FROM {findings}")).unwrap();
    assert_eq!(rows, [[json!("_segregated/location"), json!(nameless)]]);
}

#[test]
fn an_unknown_package_stops_the_load_before_the_lake_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let input = sample_dir("synthea-10").join("Location.000.ndjson");
    let out = fhirlake()
        .args(["load", "--validate", "us-core@5.0.1", "--lake"])
        .arg(&lake)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("us-core@3.1.1"), "{stderr}");
    assert!(!lake.exists(), "nothing written");
}
