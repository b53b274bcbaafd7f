//! The default views over the FHIR R4 and US Core examples give the golden rows.

use std::path::Path;

use serde_json::Value;

use super::parse_lines;
use crate::common::fhirlake;

#[test]
fn default_views_match_golden_rows_on_fhir_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/fixtures/fhir-examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let resource: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let view = root.join("schemas").join(format!(
            "{}.json",
            resource["resourceType"].as_str().unwrap().to_lowercase()
        ));
        let out = fhirlake()
            .args(["view", "run", "--view"])
            .arg(&view)
            .arg("--input")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let expected_path = dir.join("expected").join(format!(
            "{}.ndjson",
            path.file_stem().unwrap().to_string_lossy()
        ));
        let expected = parse_lines(&std::fs::read_to_string(&expected_path).unwrap());
        assert_eq!(
            parse_lines(&String::from_utf8(out.stdout).unwrap()),
            expected,
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "golden fixtures missing");
}
