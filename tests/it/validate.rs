//! `fhirlake validate` end to end: the bundled Synthea sample against the
//! built-in US Core 6.1.0, and a resource with a required element removed.

use serde_json::Value;

use crate::common::{fhirlake, sample_dir};

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
