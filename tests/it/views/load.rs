//! Views in loads: typed columns in the tables, own-table views, schema
//! evolution, quarantined rows, and a crash with an own-table view.

use std::collections::BTreeMap;
use std::path::Path;

use fhirlake::view::ViewSet;
use serde_json::{Value, json};

use crate::common::*;

fn ndjson(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn view_columns_join_observations_to_patients_in_duckdb() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let sample = sample_dir("bds-r4-10");
    load(job(&open_lake(&lake_dir), vec![sample.clone()]).await).await;

    // Independently, from the NDJSON: observations per patient gender, and
    // each patient's latest body weight (LOINC 29463-7).
    let gender: BTreeMap<String, String> = ndjson(&sample.join("Patient.ndjson"))
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["gender"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut per_gender: BTreeMap<String, i64> = BTreeMap::new();
    let mut latest_weight: BTreeMap<String, (String, f64)> = BTreeMap::new();
    for o in ndjson(&sample.join("Observation.ndjson")) {
        let patient = o["subject"]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Patient/")
            .to_owned();
        *per_gender.entry(gender[&patient].clone()).or_default() += 1;
        if o["code"]["coding"][0]["code"] == "29463-7" {
            let when = o["effectiveDateTime"].as_str().unwrap().to_owned();
            let value = o["valueQuantity"]["value"].as_f64().unwrap();
            let entry = latest_weight
                .entry(patient)
                .or_insert((when.clone(), value));
            if when > entry.0 {
                *entry = (when, value);
            }
        }
    }
    let Some(rows) = duckdb(&format!(
        "SELECT p.gender, count(*) FROM {} o JOIN {} p ON o.patient_id = p.id GROUP BY 1 ORDER BY 1",
        scan(&lake_dir, "observation"),
        scan(&lake_dir, "patient")
    )) else {
        return;
    };
    let want: Vec<Vec<Value>> = per_gender
        .iter()
        .map(|(g, n)| vec![json!(g), json!(n)])
        .collect();
    assert_eq!(rows, want);

    let rows = duckdb(&format!(
        "SELECT patient_id, arg_max(value_quantity, effective_date_time_ts) FROM {} \
         WHERE loinc_code = '29463-7' GROUP BY 1 ORDER BY 1",
        scan(&lake_dir, "observation")
    ))
    .unwrap();
    let want: Vec<Vec<Value>> = latest_weight
        .iter()
        .map(|(p, (_, v))| vec![json!(p), json!(v)])
        .collect();
    assert_eq!(rows, want);
    assert!(!want.is_empty());
}

fn view_dir(root: &std::path::Path, columns: Value) -> std::path::PathBuf {
    type_view_dir(root, "Patient", columns)
}

/// A directory holding one view of `resource_type` (its table's view).
fn type_view_dir(
    root: &std::path::Path,
    resource_type: &str,
    columns: Value,
) -> std::path::PathBuf {
    let dir = root.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let name = resource_type.to_lowercase();
    let view = json!({"resourceType": "ViewDefinition", "name": name, "resource": resource_type,
                      "status": "active", "select": [{"column": columns}]});
    std::fs::write(dir.join(format!("{name}.json")), view.to_string()).unwrap();
    dir
}

fn custom_views(dir: &std::path::Path) -> ViewSet {
    let mut views = ViewSet::none();
    views.add_dir(dir).unwrap();
    views
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_view_column_type_fails_before_writing_and_names_the_column() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let file = |dir: &str, id: &str| {
        write_file(
            &tmp.path().join(dir),
            "Patient.ndjson",
            &[patient(id, "2024-01-01T00:00:00Z", "1")],
        )
    };
    let (first, second) = (file("a", "p1"), file("b", "p2"));
    let as_string = view_dir(
        tmp.path(),
        json!([{"name": "version", "path": "meta.versionId", "type": "string"}]),
    );
    let as_integer = view_dir(
        tmp.path(),
        json!([{"name": "version", "path": "1", "type": "integer"}]),
    );
    load(
        job(&lake, vec![first])
            .await
            .with_views(custom_views(&as_string)),
    )
    .await;
    let log = lake_dir.join("patient/_delta_log");
    let commits_before = std::fs::read_dir(&log).unwrap().count();
    let err = job(&lake, vec![second])
        .await
        .with_views(custom_views(&as_integer))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("patient") && err.contains("\"version\"") && err.contains("cannot change"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&log).unwrap().count(), commits_before);
    if let Some(rows) = duckdb(&format!(
        "SELECT id, version FROM {}",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(rows, vec![vec![json!("p1"), json!("1")]]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_a_view_column_evolves_the_table_and_old_rows_read_null() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let first = write_file(
        &tmp.path().join("a"),
        "Patient.ndjson",
        &[patient("p1", "2024-01-01T00:00:00Z", "1")],
    );
    let second = write_file(
        &tmp.path().join("b"),
        "Patient.ndjson",
        &[patient("p2", "2024-01-01T00:00:00Z", "1")],
    );
    let v1 = view_dir(
        tmp.path(),
        json!([{"name": "gender", "path": "gender", "type": "code"}]),
    );
    let v2 = view_dir(
        tmp.path(),
        json!([
            {"name": "gender", "path": "gender", "type": "code"},
            {"name": "version", "path": "meta.versionId", "type": "string"}
        ]),
    );
    load(job(&lake, vec![first]).await.with_views(custom_views(&v1))).await;
    load(job(&lake, vec![second]).await.with_views(custom_views(&v2))).await;
    if let Some(rows) = duckdb(&format!(
        "SELECT id, gender, version FROM {} ORDER BY id",
        scan(&lake_dir, "patient")
    )) {
        assert_eq!(
            rows,
            vec![
                vec![json!("p1"), json!("female"), Value::Null],
                vec![json!("p2"), json!("female"), json!("1")]
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_named_apart_from_its_type_is_its_own_table_and_newer_versions_replace_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let dir = tmp.path().join("views");
    std::fs::create_dir_all(&dir).unwrap();
    let view = json!({"resourceType": "ViewDefinition", "name": "observation_category", "resource": "Observation",
        "status": "active", "select": [{"forEach": "category.coding",
        "column": [{"name": "code", "path": "code", "type": "code"}]}]});
    std::fs::write(dir.join("observation_category.json"), view.to_string()).unwrap();
    let views = || {
        let mut v = ViewSet::defaults();
        v.add_dir(&dir).unwrap();
        v
    };
    let input = sample_dir("bds-r4-10").join("Observation.ndjson");
    let observations = ndjson(&input);
    let codings: usize = observations
        .iter()
        .map(|o| {
            o["category"].as_array().map_or(0, |c| {
                c.iter()
                    .map(|x| x["coding"].as_array().map_or(0, Vec::len))
                    .sum()
            })
        })
        .sum();
    let count = || {
        duckdb(&format!(
            "SELECT count(*) FROM {}",
            scan(&lake_dir, "observation_category")
        ))
    };

    let first = load(job(&lake, vec![input.clone()]).await.with_views(views())).await;
    assert!(first.manifest.tables.contains_key("observation_category"));
    if let Some(rows) = count() {
        assert_eq!(rows, vec![vec![json!(codings)]]);
    }
    load(
        job(&lake, vec![input])
            .await
            .with_views(views())
            .with_force(true),
    )
    .await;
    if let Some(rows) = count() {
        assert_eq!(rows, vec![vec![json!(codings)]], "a reload adds no rows");
    }

    // A newer version of one observation with two category codings replaces its rows;
    // an older one changes nothing.
    let mut changed = observations[0].clone();
    let id = changed["id"].as_str().unwrap().to_owned();
    changed["meta"] = json!({"lastUpdated": "2099-01-01T00:00:00Z"});
    changed["category"] = json!([{"coding": [{"code": "laboratory"}, {"code": "vital-signs"}]}]);
    let mut stale = observations[0].clone();
    stale["meta"] = json!({"lastUpdated": "1999-01-01T00:00:00Z"});
    stale["category"] = json!([{"coding": [{"code": "stale"}]}]);
    let newer = write_file(
        &tmp.path().join("n"),
        "Observation.ndjson",
        &[changed.to_string()],
    );
    let older = write_file(
        &tmp.path().join("o"),
        "Observation.ndjson",
        &[stale.to_string()],
    );
    load(job(&lake, vec![newer]).await.with_views(views())).await;
    load(job(&lake, vec![older]).await.with_views(views())).await;
    if let Some(rows) = duckdb(&format!(
        "SELECT string_agg(code, ',' ORDER BY _row), count(DISTINCT meta_last_updated) FROM {} WHERE id = '{id}'",
        scan(&lake_dir, "observation_category")
    )) {
        assert_eq!(rows, vec![vec![json!("laboratory,vital-signs"), json!(1)]]);
    }
    if let Some(rows) = count() {
        assert_eq!(rows, vec![vec![json!(codings + 1)]]);
    }
}

/// A fresh lake after `fhirlake load --json` of bds-r4-10's file of
/// `resource_type`; bind `_tmp` to keep the lake for the test's length.
struct Quarantined {
    _tmp: tempfile::TempDir,
    lake_dir: std::path::PathBuf,
    input: std::path::PathBuf,
    summary: Value,
}

/// Loads bds-r4-10's `resource_type` file with a view of `columns` for
/// its table; the load must quarantine lines (exit code 1).
fn load_quarantining(resource_type: &str, columns: Value) -> Quarantined {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let views = type_view_dir(tmp.path(), resource_type, columns);
    let input = sample_dir("bds-r4-10").join(format!("{resource_type}.ndjson"));
    let out = fhirlake()
        .args(["load", "--json", "--views"])
        .arg(&views)
        .arg("--lake")
        .arg(&lake_dir)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Quarantined {
        _tmp: tmp,
        lake_dir,
        input,
        summary: serde_json::from_slice(&out.stdout).unwrap(),
    }
}

#[test]
fn rows_a_view_cannot_evaluate_are_quarantined_with_the_view_and_column() {
    // `name.given` is not a collection column: patients with several given names fail it.
    let Quarantined {
        lake_dir,
        input,
        summary,
        _tmp,
    } = load_quarantining(
        "Patient",
        json!([{"name": "given", "path": "name.given", "type": "string"}]),
    );
    let multi_given = ndjson(&input)
        .iter()
        .filter(|p| {
            p["name"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["given"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
                > 1
        })
        .count() as u64;
    assert!(multi_given > 0);
    assert_eq!(summary["totals"]["quarantined"], json!(multi_given));
    assert_eq!(summary["totals"]["inserted"], json!(10 - multi_given));
    if let Some(rows) = duckdb(&format!(
        "SELECT DISTINCT reason_code, resource_type, reason LIKE '%view \"patient\"%column \"given\"%collection%' FROM {}",
        scan(&lake_dir, "_quarantine")
    )) {
        assert_eq!(
            rows,
            vec![vec![json!("view_error"), json!("Patient"), json!(true)]]
        );
    }
}

#[test]
fn values_a_column_type_cannot_hold_are_quarantined_not_nulled() {
    // Declared integer, but most lab values have a fraction.
    let Quarantined {
        lake_dir,
        input,
        summary,
        _tmp,
    } = load_quarantining(
        "Observation",
        json!([{"name": "value", "path": "value.ofType(Quantity).value", "type": "integer"}]),
    );
    let observations = ndjson(&input);
    let value = |o: &Value| o["valueQuantity"]["value"].as_f64();
    let fractional = observations
        .iter()
        .filter(|o| value(o).is_some_and(|v| v.fract() != 0.0))
        .count() as u64;
    let whole = observations
        .iter()
        .filter(|o| value(o).is_some_and(|v| v.fract() == 0.0))
        .count() as u64;
    assert!(fractional > 0 && whole > 0);
    assert_eq!(summary["totals"]["quarantined"], json!(fractional));
    assert_eq!(
        summary["totals"]["inserted"],
        json!(observations.len() as u64 - fractional)
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT DISTINCT reason_code, reason LIKE '%view \"observation\"%column \"value\"%number that is not a whole%type integer%' FROM {}",
        scan(&lake_dir, "_quarantine")
    )) {
        assert_eq!(rows, vec![vec![json!("view_error"), json!(true)]]);
    }
    // The whole values loaded as integers; none became a silent null.
    if let Some(rows) = duckdb(&format!(
        "SELECT count(value), typeof(any_value(value)) FROM {}",
        scan(&lake_dir, "observation")
    )) {
        assert_eq!(rows, vec![vec![json!(whole), json!("BIGINT")]]);
    }
}

#[test]
fn kill_9_with_an_own_table_view_then_rerun_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fhirlake::bench::generate(&sample_dir(""), &data, 40_000_000, 5).unwrap();
    let views = tmp.path().join("views");
    std::fs::create_dir_all(&views).unwrap();
    let view = serde_json::json!({"resourceType": "ViewDefinition", "name": "observation_category",
        "resource": "Observation", "status": "active", "select": [{"forEach": "category.coding",
        "column": [{"name": "code", "path": "code", "type": "code"}]}]});
    std::fs::write(views.join("observation_category.json"), view.to_string()).unwrap();
    let (crashed, clean) = (tmp.path().join("crashed"), tmp.path().join("clean"));
    let load_cmd = |lake: &Path| {
        let mut cmd = fhirlake();
        cmd.args(["load", "--json", "--views"])
            .arg(&views)
            .arg("--lake")
            .arg(lake)
            .arg(&data);
        cmd
    };
    let mut child = load_cmd(&crashed)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    kill_9_while_running(&mut child);
    run_json(&mut load_cmd(&crashed), 0);
    run_json(&mut load_cmd(&clean), 0);
    let tables = ["observation", "patient", "encounter"].map(String::from);
    let (crashed_lake, clean_lake) = (open_lake(&crashed), open_lake(&clean));
    assert_converged_in_process(&tables, (&crashed_lake, &clean_lake));
    let view_rows = "SELECT id, _row, code FROM observation_category ORDER BY 1, 2";
    let got = sql_blocking(&crashed_lake, &["observation_category"], view_rows);
    assert!(!got.is_empty());
    assert_eq!(
        got,
        sql_blocking(&clean_lake, &["observation_category"], view_rows),
        "observation_category after crash + rerun (in-process)"
    );
    assert_converged(tables, (crashed.as_path(), clean.as_path()), scan, duckdb);
    let rows = |lake: &Path| {
        duckdb(&format!(
            "SELECT count(*), count(DISTINCT (id, _row)), sum(hash(id, _row, code)) FROM {}",
            scan(lake, "observation_category")
        ))
    };
    let (got, want) = (rows(&crashed), rows(&clean));
    assert_eq!(got, want, "observation_category after crash + rerun");
    if let Some(r) = got {
        assert_eq!(r[0][0], r[0][1], "no duplicate view rows");
    }
}
