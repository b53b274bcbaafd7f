//! `fhirlake view run`: inputs of every shape, outputs of every format, errors with their line.

use std::path::Path;

use serde_json::Value;

use super::parse_lines;
use crate::common::fhirlake;

#[test]
fn view_run_reads_gzipped_ndjson_and_bundles_like_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let view = root.join("schemas/patient.json");
    let run = |input: &Path| {
        let out = fhirlake()
            .args(["view", "run", "--view"])
            .arg(&view)
            .arg("--input")
            .arg(input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_lines(&String::from_utf8(out.stdout).unwrap())
    };
    let gzip = |from: &Path, name: &str| {
        use std::io::Write;
        let to = tmp.path().join(name);
        let mut encoder =
            flate2::write::GzEncoder::new(std::fs::File::create(&to).unwrap(), Default::default());
        encoder.write_all(&std::fs::read(from).unwrap()).unwrap();
        encoder.finish().unwrap();
        to
    };
    // Named without .gz on purpose: the magic bytes decide, as for `load`.
    for (plain, name) in [
        (root.join("data/bulk/bds-r4-10/Patient.ndjson"), "patients"),
        (
            root.join("tests/fixtures/fhir-examples/Patient-example.json"),
            "example",
        ),
    ] {
        let rows = run(&plain);
        assert!(!rows.is_empty());
        assert_eq!(run(&gzip(&plain, name)), rows, "{name}");
    }
    // A JSON array of resources too.
    let ndjson = root.join("data/bulk/bds-r4-10/Patient.ndjson");
    let array: Vec<Value> = parse_lines(&std::fs::read_to_string(&ndjson).unwrap());
    let array_file = tmp.path().join("patients.json");
    std::fs::write(&array_file, serde_json::to_string_pretty(&array).unwrap()).unwrap();
    assert_eq!(run(&array_file), run(&ndjson));
    // JSON that is no resource is an error, not an empty result.
    for (text, says) in [
        (
            "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"id\":\"b\"}\n",
            "line 2: no resourceType",
        ),
        ("{\n \"id\": \"b\"\n}\n", "no FHIR resource"),
    ] {
        let file = tmp.path().join("bad.json");
        std::fs::write(&file, text).unwrap();
        let out = fhirlake()
            .args(["view", "run", "--view"])
            .arg(&view)
            .arg("--input")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
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
