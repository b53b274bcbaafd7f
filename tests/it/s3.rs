//! Lakes on S3, against the real SeaweedFS server that scripts/test.sh starts.

use std::collections::BTreeSet;
use std::time::Duration;

use fhirlake::ledger::{self, InputStatus};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

fn scan_s3(lake: &str, table: &str) -> String {
    format!("delta_scan('{lake}/{table}')")
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_lake_loads_reads_back_in_duckdb_and_reloads_as_no_op() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let lake = s3.open(&uri);
    let inputs = vec![sample_dir("synthea-10")];
    let expected = expected_ids(&inputs);

    let first = load(job(&lake, inputs.clone()).await).await;
    for (table, ids) in &expected {
        assert_eq!(
            first.manifest.tables[table].rows.inserted as usize,
            ids.len()
        );
        if let Some(rows) = s3.duckdb(&format!(
            "SELECT count(*), count(DISTINCT id) FROM {}",
            scan_s3(&uri, table)
        )) {
            assert_eq!(
                rows[0],
                vec![json!(ids.len()), json!(ids.len())],
                "{table} from S3"
            );
        }
    }
    // A few values, computed independently from the NDJSON.
    let mut genders = std::collections::BTreeMap::<String, u64>::new();
    for line in std::fs::read_to_string(sample_dir("synthea-10").join("Patient.000.ndjson"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        *genders
            .entry(v["gender"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    if let Some(rows) = s3.duckdb(&format!(
        "SELECT resource->>'$.gender', count(*) FROM {} GROUP BY 1 ORDER BY 1",
        scan_s3(&uri, "patient")
    )) {
        let want: Vec<Vec<Value>> = genders
            .iter()
            .map(|(g, n)| vec![json!(g), json!(n)])
            .collect();
        assert_eq!(rows, want);
    }
    // The manifest is in the bucket and reads back.
    let stored = ledger::read_manifest(&lake, &first.manifest.job_id)
        .await
        .unwrap();
    assert_eq!(stored, first.manifest);

    let again = load(job(&lake, inputs).await).await;
    assert!(
        again
            .manifest
            .inputs
            .iter()
            .all(|i| i.status != InputStatus::Loaded)
    );
    assert_eq!(again.manifest.totals.total(), 0);
}

#[test]
fn two_concurrent_loads_into_the_same_tables_both_land() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let (a, b) = (sample_dir("synthea-10"), sample_dir("bds-r4-10"));
    let spawn = |input: &std::path::Path| {
        s3.fhirlake()
            .args(["load", "--json", "--lake", &uri])
            .arg(input)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "both concurrent loads succeed");
    }
    let mut expected = expected_ids(&[a]);
    for (table, ids) in expected_ids(&[b]) {
        expected.entry(table).or_default().extend(ids);
    }
    for (table, ids) in &expected {
        if let Some(rows) = s3.duckdb(&format!(
            "SELECT count(*), count(DISTINCT id) FROM {}",
            scan_s3(&uri, table)
        )) {
            assert_eq!(
                rows[0],
                vec![json!(ids.len()), json!(ids.len())],
                "{table}: same as a sequential run"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_without_put_if_absent_is_refused_before_writing() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let out = s3
        .fhirlake()
        .args([
            "load",
            "--lake",
            &uri,
            "--storage-option",
            "aws_conditional_put=disabled",
        ])
        .arg(sample_dir("synthea-10"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create an object only if it is absent"),
        "{stderr}"
    );
    let lake = s3.open(&uri);
    let written: Vec<_> = lake.store().list(None).collect().await;
    assert!(written.is_empty(), "nothing may be written: {written:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_created_once_and_never_replaced() {
    let Some(s3) = S3::from_env() else { return };
    let lake = s3.open(&s3.fresh_lake());
    let report = load(job(&lake, vec![sample_dir("bds-r4-10").join("Patient.ndjson")]).await).await;
    let mut forged = report.manifest.clone();
    forged.totals.inserted = 999;
    let err = ledger::write_manifest(&lake, &forged).await.unwrap_err();
    assert!(err.to_string().contains("_fhirlake/manifests"), "{err}");
    assert_eq!(
        ledger::read_manifest(&lake, &report.manifest.job_id)
            .await
            .unwrap(),
        report.manifest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_compacts_and_vacuum_removes_replaced_files_on_s3() {
    let Some(s3) = S3::from_env() else { return };
    let uri = s3.fresh_lake();
    let lake = s3.open(&uri);
    let tmp = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let line = patient(&format!("p{n}"), "2024-01-01T00:00:00Z", "1");
        let file = write_file(&tmp.path().join(n.to_string()), "Patient.ndjson", &[line]);
        load(job(&lake, vec![file]).await).await;
    }
    let report = fhirlake::lake::optimize(&lake, "patient", None, 0.2)
        .await
        .unwrap();
    assert_eq!((report.files_removed, report.files_added), (3, 1));
    let vacuumed = run_json(
        s3.fhirlake().args([
            "vacuum",
            "--json",
            "--retain",
            "0",
            "--allow-short-retention",
            "--table",
            "patient",
            "--lake",
            &uri,
        ]),
        0,
    );
    assert_eq!(vacuumed[0]["files_deleted"], json!(3));
    assert!(
        vacuumed[0]["index_objects_deleted"].as_u64().unwrap() > 0,
        "older key-index states and merged runs go: {vacuumed}"
    );
    // The index left is whole: a newer version updates, a known one is unchanged.
    let lines = [
        patient("p1", "2024-02-01T00:00:00Z", "2"),
        patient("p2", "2024-01-01T00:00:00Z", "1"),
    ];
    let file = write_file(&tmp.path().join("after"), "Patient.ndjson", &lines);
    let after = load(job(&lake, vec![file]).await).await;
    assert_eq!(
        (
            after.manifest.totals.updated,
            after.manifest.totals.unchanged
        ),
        (1, 1)
    );
    if let Some(rows) = s3.duckdb(&format!(
        "SELECT string_agg(id || ':' || meta_version_id, ',' ORDER BY id) FROM {}",
        scan_s3(&uri, "patient")
    )) {
        assert_eq!(rows, vec![vec![json!("p0:1,p1:2,p2:1")]]);
    }
}

#[test]
fn kill_9_during_an_s3_load_then_rerun_converges() {
    let Some(s3) = S3::from_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fhirlake::bench::generate(&sample_dir(""), &data, 30_000_000, 11).unwrap();
    let (crashed, clean) = (s3.fresh_lake(), s3.fresh_lake());

    let mut child = s3
        .fhirlake()
        .args(["load", "--lake", &crashed])
        .arg(&data)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill_9_while_running(&mut child);

    for uri in [&crashed, &clean] {
        let summary = run_json(
            s3.fhirlake()
                .args(["load", "--json", "--lake", uri])
                .arg(&data),
            0,
        );
        for input in summary["inputs"].as_array().unwrap() {
            let sum: u64 = ["inserted", "updated", "unchanged", "quarantined"]
                .iter()
                .map(|k| input[k].as_u64().unwrap())
                .sum();
            assert_eq!(sum, input["lines"].as_u64().unwrap(), "accounting: {input}");
        }
    }
    let tables: BTreeSet<String> =
        expected_ids(&[sample_dir("synthea-10"), sample_dir("bds-r4-10")])
            .into_keys()
            .collect();
    let listed: Vec<String> = tables.iter().cloned().collect();
    assert_converged_in_process(&listed, (&s3.open(&crashed), &s3.open(&clean)));
    assert_converged(tables, (crashed.as_str(), clean.as_str()), scan_s3, |sql| {
        s3.duckdb(sql)
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_already_in_a_bucket_loads_from_s3_urls() {
    let Some(s3) = S3::from_env() else { return };
    let bucket_root = s3.open(&format!("s3://{}", s3.bucket));
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let sample = sample_dir("synthea-10");
    for entry in std::fs::read_dir(&sample).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let mut bytes = std::fs::read(&path).unwrap();
        let key = if name == "Patient.000.ndjson" {
            // One object gzipped, to stream-decompress from S3 too.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &bytes).unwrap();
            bytes = gz.finish().unwrap();
            format!("{prefix}/export/{name}.gz")
        } else {
            format!("{prefix}/export/{name}")
        };
        use object_store::ObjectStoreExt;
        bucket_root
            .store()
            .put(&bucket_root.path(&key), bytes.into())
            .await
            .unwrap();
    }
    let input = std::path::PathBuf::from(format!("s3://{}/{prefix}/export", s3.bucket));
    let lake_uri = s3.fresh_lake();
    let lake = s3.open(&lake_uri);
    let report = load(job(&lake, vec![input.clone()]).await).await;
    for (table, ids) in expected_ids(&[sample]) {
        assert_eq!(
            report.manifest.tables[&table].rows.inserted as usize,
            ids.len(),
            "{table}"
        );
    }
    let patient = input_ending(&report.manifest, "Patient.000.ndjson.gz");
    assert!(patient.path.starts_with("s3://"), "{}", patient.path);
    let stand_in = patient.last_updated_stand_in.as_ref().unwrap();
    assert_eq!(
        stand_in.source, "transaction_time",
        "log.ndjson in the bucket was read"
    );
    let log = input_ending(&report.manifest, "log.ndjson");
    assert_eq!(log.status, InputStatus::ExportLog);

    let again = load(job(&lake, vec![input]).await).await;
    assert!(
        again
            .manifest
            .inputs
            .iter()
            .all(|i| i.status != InputStatus::Loaded)
    );
}
