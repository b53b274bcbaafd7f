//! Incremental loads (issue 14): a series of loads, updates, deletions,
//! compactions and a foreign writer leaves exactly the rows one load of the
//! final data gives; racing writers with overlapping ids stay exact.
//!
//! The expected rows come from a model of the rules (newest
//! `meta.lastUpdated` wins, a stale version never does, a deletion removes
//! rows not newer than it and keeps older versions out), applied line by
//! line in reading order, so in-job duplicates are checked too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use fhirlake::lake::{Deletion, Lake, LoadMode, optimize};
use fhirlake::load::LoadReport;
use serde_json::{Value, json};

use crate::common::{S3, duckdb, job, load, open_lake, python_deltalake, scan, sql, write_file};

fn at(hour: i64) -> DateTime<Utc> {
    "2025-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::hours(hour)
}

fn stamp(hour: i64) -> String {
    at(hour).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn patient(id: &str, hour: i64) -> String {
    json!({"resourceType": "Patient", "id": id, "meta": {"lastUpdated": stamp(hour)},
        "gender": if hour % 2 == 0 { "female" } else { "male" }, "birthDate": "1970-01-01"})
    .to_string()
}

fn observation(id: &str, hour: i64) -> String {
    json!({"resourceType": "Observation", "id": id, "meta": {"lastUpdated": stamp(hour)},
        "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p000"}, "valueQuantity": {"value": hour, "unit": "/min"}})
    .to_string()
}

/// What the lake must hold: per (table, id) the current row, and the
/// deletions remembered.
#[derive(Default)]
struct Model {
    rows: BTreeMap<(String, String), (i64, String)>,
    deleted: BTreeMap<(String, String), i64>,
}

/// Inserted, updated, unchanged.
type Counts = (u64, u64, u64);

impl Model {
    /// Applies lines in reading order; returns the counts the manifest must show.
    fn load(&mut self, lines: &[String]) -> Counts {
        let mut counts = (0, 0, 0);
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            let table = v["resourceType"].as_str().unwrap().to_ascii_lowercase();
            let key = (table, v["id"].as_str().unwrap().to_owned());
            let t: DateTime<Utc> = v["meta"]["lastUpdated"].as_str().unwrap().parse().unwrap();
            let t = t.timestamp_micros();
            match self.rows.get(&key) {
                Some((stored, _)) if *stored >= t => counts.2 += 1,
                Some(_) => {
                    counts.1 += 1;
                    self.rows.insert(key, (t, line.clone()));
                }
                None if self.deleted.get(&key).is_some_and(|d| *d >= t) => counts.2 += 1,
                None => {
                    counts.0 += 1;
                    self.rows.insert(key, (t, line.clone()));
                }
            }
        }
        counts
    }

    /// A server's deletion: rows not newer than it go, and it is remembered.
    fn delete(&mut self, table: &str, id: &str, hour: i64) {
        let key = (table.to_owned(), id.to_owned());
        let t = at(hour).timestamp_micros();
        if self.rows.get(&key).is_some_and(|(stored, _)| *stored <= t) {
            self.rows.remove(&key);
            self.deleted.insert(key, t);
        }
    }

    /// Writes the current rows, one file per table, under `dir`.
    fn write_final(&self, dir: &Path) -> Vec<PathBuf> {
        let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((table, _), (_, line)) in &self.rows {
            by_table.entry(table).or_default().push(line.clone());
        }
        by_table
            .into_iter()
            .map(|(table, lines)| write_file(dir, &format!("{table}.ndjson"), &lines))
            .collect()
    }
}

fn deletion(id: &str, hour: i64) -> Deletion {
    Deletion {
        id: id.to_owned(),
        deleted_at: at(hour).timestamp_micros(),
        record: json!({"request": {"method": "DELETE", "url": format!("Patient/{id}")}})
            .to_string(),
        source: "deleted/Patient.ndjson".into(),
        line: 1,
    }
}

/// Loads one file of `lines` (and deletions) into `lake`, checks the
/// counts against the model's, and applies the deletions to the model.
async fn step(
    lake: &Lake,
    dir: &Path,
    name: &str,
    lines: Vec<String>,
    deletions: Vec<(&str, &str, i64)>,
    model: &mut Model,
) -> LoadReport {
    let path = write_file(dir, &format!("{name}.ndjson"), &lines);
    let expected = model.load(&lines);
    let mut by_type: BTreeMap<String, Vec<Deletion>> = BTreeMap::new();
    for (resource_type, id, hour) in &deletions {
        by_type
            .entry((*resource_type).to_owned())
            .or_default()
            .push(deletion(id, *hour));
        model.delete(&resource_type.to_ascii_lowercase(), id, *hour);
    }
    let report = load(job(lake, vec![path]).await.with_deletions(by_type)).await;
    let totals = &report.manifest.totals;
    assert_eq!(
        (totals.inserted, totals.updated, totals.unchanged),
        expected,
        "{name}: inserted, updated, unchanged as the model counts them"
    );
    report
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + '_ {
    range.map(move |n| format!("{prefix}{n:03}"))
}

/// The series: loads with updates, stale versions and in-job duplicates,
/// deletions (some older than the row, one of an unknown id, one in the
/// job that brings a newer version), OPTIMIZE, ten small loads (the key
/// index merges its runs), a foreign writer's DELETE (the index is rebuilt
/// and keeps what it knew of deletions), then more.
async fn run_series(lake: &Lake, table_url: impl Fn(&str) -> url::Url, dir: &Path) -> Model {
    let mut model = Model::default();
    let mut lines: Vec<String> = ids("p", 0..200).map(|id| patient(&id, 0)).collect();
    lines.extend(ids("o", 0..400).map(|id| observation(&id, 0)));
    step(lake, dir, "day0", lines, vec![], &mut model).await;

    let mut lines: Vec<String> = ids("p", 0..40).map(|id| patient(&id, 2)).collect();
    lines.extend(ids("p", 200..240).map(|id| patient(&id, 1)));
    lines.push(patient("p050", -1));
    lines.extend([patient("p060", 3), patient("p060", 5), patient("p060", 4)]);
    lines.extend(ids("o", 0..50).map(|id| observation(&id, 2)));
    let day1 = step(lake, dir, "day1", lines, vec![], &mut model).await;
    let commit = day1.manifest.tables["patient"].commits.last().unwrap();
    let metrics = commit.merge.as_ref().unwrap();
    assert_eq!(
        metrics.rows_copied, 0,
        "updates mark rows deleted, they rewrite none"
    );

    let mut deletions: Vec<(&str, &str, i64)> = Vec::new();
    let doomed: Vec<String> = ids("p", 10..20).collect();
    for id in &doomed {
        deletions.push(("Patient", id, 6));
    }
    deletions.extend([
        ("Patient", "p045", -5),
        ("Patient", "p999", 6),
        ("Observation", "o100", 6),
    ]);
    let lines = vec![
        patient("p012", 7),
        patient("p013", 5),
        observation("o101", 3),
    ];
    step(lake, dir, "day2", lines, deletions, &mut model).await;

    for table in ["patient", "observation"] {
        let report = optimize(lake, table, None, 0.0).await.unwrap();
        assert!(
            report.purged.rows_dropped > 0,
            "{table}: superseded rows purged"
        );
    }
    let lines = vec![
        patient("p010", 8),
        patient("p011", 4),
        patient("p000", 9),
        observation("o100", 5),
    ];
    step(lake, dir, "day3", lines, vec![], &mut model).await;

    for k in 0..10 {
        let id = format!("p{:03}", 100 + k);
        let lines = vec![patient(&id, 10 + k as i64), patient("p199", 10 + k as i64)];
        step(lake, dir, &format!("small{k}"), lines, vec![], &mut model).await;
    }
    let runs = index_runs(lake, "patient").await;
    assert!(
        runs <= 8,
        "the key index merges its runs: {runs} after 15 loads"
    );

    // Another writer deletes a row: the index no longer matches the log and is rebuilt.
    let table = deltalake::DeltaTable::try_from_url_with_storage_options(
        table_url("patient"),
        lake.storage_options().clone(),
    )
    .await
    .unwrap();
    table.delete().with_predicate("id = 'p120'").await.unwrap();
    model
        .rows
        .remove(&("patient".to_owned(), "p120".to_owned()));
    let lines = vec![
        patient("p121", 30),
        patient("p014", 5),
        patient("p120", 0),
        observation("o000", 30),
    ];
    step(lake, dir, "day4", lines, vec![], &mut model).await;
    model
}

/// Runs in the newest state of a table's key index.
async fn index_runs(lake: &Lake, table: &str) -> usize {
    use object_store::ObjectStoreExt;
    let prefix = lake.path(&format!("_fhirlake/index/{table}"));
    let listing = lake
        .store()
        .list_with_delimiter(Some(&prefix))
        .await
        .unwrap();
    let newest = listing
        .objects
        .iter()
        .filter(|o| {
            o.location
                .filename()
                .is_some_and(|n| n.starts_with("state-"))
        })
        .map(|o| o.location.clone())
        .max()
        .expect("the index records its state");
    let bytes = lake
        .store()
        .get(&newest)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let state: Value = serde_json::from_slice(&bytes).unwrap();
    state["runs"].as_array().unwrap().len()
}

/// Every row of each table, keyed, as the model says, and equal to a
/// from-scratch load of the final data, read in-process.
async fn assert_matches(lake: &Lake, scratch: &Lake, model: &Model) {
    for table in ["patient", "observation"] {
        let query = format!(
            "SELECT id, CAST(meta_last_updated AS VARCHAR), resource FROM {table} ORDER BY id"
        );
        let got = sql(lake, &[table], &query).await;
        let want = sql(scratch, &[table], &query).await;
        let modelled: Vec<&str> = model
            .rows
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, id), _)| id.as_str())
            .collect();
        let got_ids: Vec<&str> = got.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(
            got_ids, modelled,
            "{table}: the ids the model holds, once each"
        );
        assert!(
            got == want,
            "{table}: the incremental lake equals a load of the final data"
        );
    }
}

const CHECKSUM: &str = "count(*), count(DISTINCT id), sum(hash(id, meta_last_updated, resource))";

#[tokio::test(flavor = "multi_thread")]
async fn incremental_loads_updates_deletes_and_compactions_equal_one_load_of_the_final_data() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let model = run_series(&lake, |t| lake.table_url(t), &tmp.path().join("in")).await;

    let scratch_dir = tmp.path().join("scratch");
    let scratch = open_lake(&scratch_dir);
    let files = model.write_final(&tmp.path().join("final"));
    load(job(&scratch, files).await).await;
    assert_matches(&lake, &scratch, &model).await;
    for table in ["patient", "observation"] {
        let q = |dir: &Path| duckdb(&format!("SELECT {CHECKSUM} FROM {}", scan(dir, table)));
        if let Some(got) = q(&lake_dir) {
            assert_eq!(
                Some(got),
                q(&scratch_dir),
                "{table}: DuckDB reads the same rows"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_series_on_s3_equals_one_load_of_the_final_data() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let lake = s3.open(&uri);
    let tmp = tempfile::tempdir().unwrap();
    let model = run_series(&lake, |t| lake.table_url(t), &tmp.path().join("in")).await;

    let scratch_uri = s3.fresh_lake();
    let scratch = s3.open(&scratch_uri);
    let files = model.write_final(&tmp.path().join("final"));
    load(job(&scratch, files).await).await;
    assert_matches(&lake, &scratch, &model).await;
    for table in ["patient", "observation"] {
        let q = |uri: &str| {
            s3.duckdb(&format!(
                "SELECT {CHECKSUM} FROM delta_scan('{uri}/{table}')"
            ))
        };
        if let Some(got) = q(&uri) {
            assert_eq!(
                Some(got),
                q(&scratch_uri),
                "{table}: DuckDB reads the same rows"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_mode_keeps_every_version_once_across_loads_and_tombstones() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = open_lake(&tmp.path().join("lake"));
    let days: Vec<Vec<String>> = vec![
        ids("p", 0..50).map(|id| patient(&id, 0)).collect(),
        ids("p", 0..20)
            .map(|id| patient(&id, 1))
            .chain([patient("p000", 0), patient("p001", 2), patient("p001", 2)])
            .collect(),
        vec![patient("p002", 3), patient("p003", 1)],
    ];
    let deletions = || {
        BTreeMap::from([(
            "Patient".to_owned(),
            vec![deletion("p004", 5), deletion("p005", 5)],
        )])
    };
    for (n, lines) in days.iter().enumerate() {
        let path = write_file(&tmp.path().join(format!("d{n}")), "Patient.ndjson", lines);
        let mut job = job(&lake, vec![path]).await.with_mode(LoadMode::History);
        if n == 1 {
            job = job.with_deletions(deletions());
        }
        load(job).await;
    }
    // The same deletions again: each tombstone is a version already stored.
    let again = write_file(
        &tmp.path().join("d3"),
        "Patient.ndjson",
        &[patient("p049", 0)],
    );
    let report = load(
        job(&lake, vec![again])
            .await
            .with_mode(LoadMode::History)
            .with_deletions(deletions()),
    )
    .await;
    assert_eq!(report.manifest.totals.unchanged, 1);

    let scratch = open_lake(&tmp.path().join("scratch"));
    let all: Vec<PathBuf> = (0..3)
        .map(|n| tmp.path().join(format!("d{n}/Patient.ndjson")))
        .collect();
    load(
        job(&scratch, all)
            .await
            .with_mode(LoadMode::History)
            .with_deletions(deletions()),
    )
    .await;
    let query = "SELECT id, CAST(meta_last_updated AS VARCHAR), resource, _deleted FROM patient ORDER BY 1, 2";
    let got = sql(&lake, &["patient"], query).await;
    assert_eq!(got, sql(&scratch, &["patient"], query).await);
    // 50 + 20 versions + p001@2 + p002@3 + 2 tombstones (p003@1 was already there).
    assert_eq!(got.len(), 50 + 20 + 2 + 2, "each version once");
    let tombstones = got.iter().filter(|r| r[3] == json!(true)).count();
    assert_eq!(tombstones, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_key_index_is_rebuilt_from_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let mut model = Model::default();
    let dir = tmp.path().join("in");
    let lines: Vec<String> = ids("p", 0..30).map(|id| patient(&id, 0)).collect();
    step(&lake, &dir, "a", lines, vec![], &mut model).await;
    std::fs::remove_dir_all(lake_dir.join("_fhirlake/index/patient")).unwrap();
    let lines: Vec<String> = ids("p", 20..40).map(|id| patient(&id, 1)).collect();
    step(&lake, &dir, "b", lines, vec![], &mut model).await;
    let rows = sql(
        &lake,
        &["patient"],
        "SELECT count(*), count(DISTINCT id) FROM patient",
    )
    .await;
    assert_eq!(rows, vec![vec![json!(40), json!(40)]]);
    assert!(index_runs(&lake, "patient").await >= 1);
}

/// Racing `fhirlake load` processes on SeaweedFS, each holding every shared
/// id at a different time: for each id exactly one holds the newest.
#[test]
fn racing_loads_of_overlapping_ids_keep_one_row_per_id_the_newest() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let tmp = tempfile::tempdir().unwrap();
    const WRITERS: usize = 4;
    const SHARED: usize = 300;
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    let files: Vec<PathBuf> = (0..WRITERS)
        .map(|w| {
            let mut lines = Vec::new();
            for n in 0..SHARED {
                let id = format!("s{n:04}");
                let hour = ((n + w) % WRITERS) as i64;
                let best = newest.entry(id.clone()).or_insert(hour);
                *best = (*best).max(hour);
                lines.push(patient(&id, hour));
            }
            for n in 0..50 {
                let id = format!("w{w}-{n:03}");
                newest.insert(id.clone(), 0);
                lines.push(patient(&id, 0));
            }
            write_file(&tmp.path().join(format!("w{w}")), "Patient.ndjson", &lines)
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            s3.fhirlake()
                .args(["load", "--json", "--lake", &uri])
                .arg(file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut inserted = 0;
    let mut total = 0;
    let mut summaries = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "every racing load succeeds: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        let totals = &summary["totals"];
        inserted += totals["inserted"].as_u64().unwrap();
        total += ["inserted", "updated", "unchanged"]
            .iter()
            .map(|k| totals[*k].as_u64().unwrap())
            .sum::<u64>();
        summaries.push(json!({"totals": totals, "tables": summary["tables"]}));
    }
    let lake = s3.open(&uri);
    let rows = crate::common::sql_blocking(
        &lake,
        &["patient"],
        "SELECT id, CAST(meta_last_updated AS VARCHAR) FROM patient ORDER BY id",
    );
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = newest
        .iter()
        .map(|(id, hour)| {
            (
                id.clone(),
                at(*hour).format("%Y-%m-%dT%H:%M:%S").to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per id");
    for ((id, t), (want_id, want_t)) in got.iter().zip(&want) {
        assert_eq!(id, want_id);
        assert!(
            t.starts_with(want_t),
            "{id}: the newest version wins ({t} vs {want_t})"
        );
    }
    if let Some(rows) = s3.duckdb(&format!(
        "SELECT count(*), count(DISTINCT id) FROM delta_scan('{uri}/patient')"
    )) {
        assert_eq!(rows, vec![vec![json!(newest.len()), json!(newest.len())]]);
    }
    assert_eq!(
        inserted,
        newest.len() as u64,
        "each id is inserted by exactly one writer: {summaries:#?}"
    );
    assert_eq!(
        total,
        (WRITERS * (SHARED + 50)) as u64,
        "every line counted once"
    );
}

/// The reader matrix of the README: after updates (deletion vectors), python
/// deltalake refuses `to_pandas()` but reads the rows exactly through its
/// QueryBuilder; DuckDB and DataFusion read them too.
#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_updated_tables_through_its_query_builder() {
    let tmp = tempfile::tempdir().unwrap();
    let lake_dir = tmp.path().join("lake");
    let lake = open_lake(&lake_dir);
    let mut model = Model::default();
    let dir = tmp.path().join("in");
    let lines: Vec<String> = ids("p", 0..20).map(|id| patient(&id, 0)).collect();
    step(&lake, &dir, "a", lines, vec![], &mut model).await;
    let lines: Vec<String> = ids("p", 0..5).map(|id| patient(&id, 1)).collect();
    step(&lake, &dir, "b", lines, vec![], &mut model).await;
    let query = "SELECT count(*), count(DISTINCT id), sum(CASE WHEN gender = 'male' THEN 1 ELSE 0 END) FROM t";
    let Some(read) = python_deltalake(&lake_dir.join("patient"), query) else {
        return;
    };
    assert!(
        read["to_pandas"]
            .as_str()
            .unwrap()
            .contains("deletionVectors"),
        "to_pandas refuses tables with deletion vectors: {read}"
    );
    assert_eq!(
        read["rows"],
        json!([[20, 20, 5]]),
        "QueryBuilder applies them"
    );
    let native = sql(
        &lake,
        &["patient"],
        "SELECT count(*), count(DISTINCT id), sum(CASE WHEN gender = 'male' THEN 1 ELSE 0 END) FROM patient",
    )
    .await;
    assert_eq!(native, vec![vec![json!(20), json!(20), json!(5)]]);
}
