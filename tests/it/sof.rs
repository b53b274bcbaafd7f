//! The SQL-on-FHIR v2 conformance suite, with the reference runner's rules:
//! rows compared order-insensitively, values strictly typed (1 ≠ "1"),
//! `expectError` must fail, `expectCount` compares counts. Writes the
//! report in the suite's test-report format to `target/sof-report.json`.

use std::collections::BTreeMap;
use std::path::Path;

use fhirlake::view::{CompiledView, Json, Row};
use serde_json::{Value, json};

fn run_view(view: &Value, resources: &[Value]) -> Result<(Vec<String>, Vec<Row>), String> {
    let compiled = CompiledView::compile(view).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for resource in resources {
        let text = resource.to_string();
        let arena = bumpalo::Bump::new();
        let json = Json::parse(&text, &arena).map_err(|e| e.to_string())?;
        rows.extend(compiled.rows(&json).map_err(|e| e.to_string())?);
    }
    Ok((
        compiled.columns.iter().map(|c| c.name.clone()).collect(),
        rows,
    ))
}

/// Numbers compare by value (JavaScript `===` on numbers): 1 and 1.0 are equal.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9e15 {
                json!(f as i64)
            } else {
                json!(f)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        other => other.clone(),
    }
}

fn sorted_rows(rows: impl Iterator<Item = Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .map(|r| {
            let sorted: BTreeMap<String, Value> = r
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect();
            serde_json::to_string(&sorted).unwrap()
        })
        .collect();
    out.sort();
    out
}

fn check(test: &Value, resources: &[Value]) -> Result<(), String> {
    let outcome = run_view(&test["view"], resources);
    if test.get("expectError").is_some() {
        return match outcome {
            Err(_) => Ok(()),
            Ok((_, rows)) => Err(format!("expected an error, got {} rows", rows.len())),
        };
    }
    let (columns, rows) = outcome?;
    if let Some(count) = test.get("expectCount") {
        return if rows.len() as u64 == count.as_u64().unwrap() {
            Ok(())
        } else {
            Err(format!("expected {count} rows, got {}", rows.len()))
        };
    }
    if let Some(expected_columns) = test.get("expectColumns") {
        let expected: Vec<String> = serde_json::from_value(expected_columns.clone()).unwrap();
        if expected != columns {
            return Err(format!("columns {columns:?}, expected {expected:?}"));
        }
    }
    let got = sorted_rows(
        rows.into_iter()
            .map(|row| Value::Object(columns.iter().cloned().zip(row).collect())),
    );
    let want = sorted_rows(test["expect"].as_array().unwrap().iter().cloned());
    if got == want {
        Ok(())
    } else {
        Err(format!("rows differ:\n got  {got:?}\n want {want:?}"))
    }
}

#[test]
fn sql_on_fhir_v2_conformance_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sql-on-fhir");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().ends_with("schema.json")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "the suite files are missing from {}",
        dir.display()
    );
    let mut report = serde_json::Map::new();
    let mut failures = Vec::new();
    let (mut passed, mut total) = (0, 0);
    for file in &files {
        let suite: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let resources = suite["resources"].as_array().cloned().unwrap_or_default();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut results = Vec::new();
        for test in suite["tests"].as_array().unwrap() {
            let title = test["title"].as_str().unwrap_or("?").to_owned();
            total += 1;
            let result = match check(test, &resources) {
                Ok(()) => {
                    passed += 1;
                    json!({"passed": true})
                }
                Err(reason) => {
                    failures.push(format!("{name} / {title}: {reason}"));
                    json!({"passed": false, "error": reason})
                }
            };
            results.push(json!({"name": title, "result": result}));
        }
        report.insert(name, json!({"tests": results}));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        target.join("sof-report.json"),
        serde_json::to_vec_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
    eprintln!(
        "SQL-on-FHIR v2 suite: {passed}/{total} passed; report in {}",
        target.join("sof-report.json").display()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
