//! Default views (schemas/) through `fhirlake view run`, against golden rows.

use std::path::Path;

use serde_json::Value;

use crate::common::fhirlake;

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

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

#[test]
fn view_run_writes_csv_and_parquet_and_reports_bad_input_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let view = root.join("schemas/patient.json");
    let input = root.join("data/bulk/bds-r4-10/Patient.ndjson");
    let out = fhirlake()
        .args(["view", "run", "--format", "csv", "--view"])
        .arg(&view)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("id,active,gender,birth_date,"),
        "{}",
        &csv[..80]
    );
    assert_eq!(csv.lines().count(), 11, "header + 10 patients");

    let parquet = tmp.path().join("p.parquet");
    let out = fhirlake()
        .args(["view", "run", "--format", "parquet", "--out"])
        .arg(&parquet)
        .arg("--view")
        .arg(&view)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(rows) = crate::common::duckdb(&format!(
        "SELECT count(*), count(birth_date_date), typeof(any_value(birth_date_date)) FROM '{}'",
        parquet.display()
    )) {
        assert_eq!(
            rows[0],
            vec![Value::from(10), Value::from(10), Value::from("DATE")]
        );
    }

    let bad = tmp.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\n",
    )
    .unwrap();
    let out = fhirlake()
        .args(["view", "run", "--view"])
        .arg(&view)
        .arg("--input")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("bad.ndjson"),
        "{stderr}"
    );
}
