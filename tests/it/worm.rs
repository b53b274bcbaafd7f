//! WORM retention on a real S3 server with Object Lock (SeaweedFS): a job's
//! audit events and manifests are locked as they are written, an
//! independent client (boto3) cannot delete or replace them, the lake keeps
//! the setting for later jobs, and a bucket without Object Lock is refused
//! before anything is written.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// `tests/support/s3_object_lock.py` with the server's credentials.
fn object_lock(s3: &S3, args: &[&str]) -> Value {
    let python = python().expect("the venv: S3 tests run from scripts/test.sh");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3_object_lock.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("FHIRLAKE_S3_ENDPOINT", &s3.endpoint)
        .env("FHIRLAKE_S3_KEY", &s3.key)
        .env("FHIRLAKE_S3_SECRET", &s3.secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3_object_lock.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Object keys under `lake` (an `s3://bucket/prefix` URI) whose path relative
/// to the lake starts with `under`.
fn keys(s3: &S3, lake: &str, under: &str) -> Vec<String> {
    let opened = s3.open(lake);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix = lake.split_once("://").unwrap().1.split_once('/').unwrap().1;
    rt.block_on(opened.list_objects(&opened.path(under)))
        .unwrap()
        .into_iter()
        .map(|p| format!("{prefix}/{p}"))
        .collect()
}

/// `fhirlake verify` on `lake` exits `code`.
fn assert_verify(s3: &S3, lake: &str, code: i32) {
    let out = s3
        .fhirlake()
        .args(["verify", "--lake", lake])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn load(s3: &S3, lake: &str, extra: &[&str]) -> std::process::Output {
    s3.fhirlake()
        .args(["load", "--json", "--lake", lake])
        .args(extra)
        .arg(sample_dir("bds-r4-10"))
        .output()
        .unwrap()
}

#[test]
fn records_are_locked_as_written_and_an_independent_client_cannot_remove_them() {
    let Some(s3) = S3::from_env() else { return };
    let bucket = format!("worm-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = object_lock(&s3, &["create-bucket", &bucket]);
    assert_eq!(config["ObjectLockEnabled"], "Enabled");
    let lake = format!("s3://{bucket}/lake");

    let out = load(&s3, &lake, &["--worm-retention", "1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("S3 Object Lock (Governance, 1 days)"),
        "{stderr}"
    );
    assert!(!stderr.contains(&s3.secret), "no secret in the output");

    assert_verify(&s3, &lake, 0);
    let events = keys(&s3, &lake, "_fhirlake/audit/events");
    let manifests = keys(&s3, &lake, "_fhirlake/manifests");
    assert!(
        events.len() > 5 && manifests.len() == 1,
        "{events:?} {manifests:?}"
    );
    let data = keys(&s3, &lake, "patient")
        .into_iter()
        .find(|k| k.ends_with(".parquet"))
        .unwrap();
    let attacked = [&events[0], &events[events.len() - 1], &manifests[0], &data];
    let mut args = vec!["attack", bucket.as_str()];
    args.extend(attacked.iter().map(|k| k.as_str()));
    let results = object_lock(&s3, &args);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    for record in &results.as_array().unwrap()[..3] {
        assert_eq!(record["retention"]["mode"], "GOVERNANCE", "{record:#}");
        let until =
            chrono::DateTime::parse_from_rfc3339(record["retention"]["until"].as_str().unwrap())
                .unwrap()
                .date_naive();
        assert!(
            until >= tomorrow - chrono::Duration::days(1) && until <= tomorrow,
            "{record:#}"
        );
        assert_eq!(
            record["delete_version"], "AccessDenied",
            "a locked version cannot be deleted: {record:#}"
        );
        assert_eq!(
            record["original_kept"], true,
            "overwrites and deletes leave the locked version: {record:#}"
        );
    }
    let parquet = &results[3];
    assert_eq!(
        parquet["retention"],
        Value::Null,
        "data files are not locked (vacuum must delete them): {parquet:#}"
    );
    assert_eq!(parquet["delete_version"], "deleted");

    // The versions the attack wrote over the locked records are caught.
    assert_verify(&s3, &lake, 1);
}

/// The lake keeps its WORM setting: a later job without the flag locks its
/// records too, and a job that lengthens the retention lengthens the setting.
#[test]
fn the_worm_setting_carries_to_later_jobs_and_only_grows() {
    let Some(s3) = S3::from_env() else { return };
    let bucket = format!("worm-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    object_lock(&s3, &["create-bucket", &bucket]);
    let lake = format!("s3://{bucket}/lake");
    let dir = tempfile::tempdir().unwrap();
    let job = |n: u32, flags: &[&str]| {
        let input = write_file(
            &dir.path().join(format!("in{n}")),
            "Patient.ndjson",
            &[patient(&format!("worm-{n}"), "2026-02-01T00:00:00Z", "1")],
        );
        let out = s3
            .fhirlake()
            .args(["load", "--json", "--lake", &lake])
            .args(flags)
            .arg(input)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let manifest = serde_json::from_slice::<Value>(&out.stdout).unwrap()["manifest_path"]
            .as_str()
            .map(str::to_owned);
        (stderr, manifest)
    };
    let newest_manifest = |before: &[String]| {
        keys(&s3, &lake, "_fhirlake/manifests")
            .into_iter()
            .find(|k| !before.contains(k))
            .unwrap()
    };
    let until_days = |key: &str| {
        let record = &object_lock(&s3, &["attack", &bucket, key])[0];
        assert_eq!(record["delete_version"], "AccessDenied", "{record:#}");
        let until =
            chrono::DateTime::parse_from_rfc3339(record["retention"]["until"].as_str().unwrap())
                .unwrap();
        (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours()
    };
    job(1, &["--worm-retention", "1"]);
    let seen = keys(&s3, &lake, "_fhirlake/manifests");
    let (stderr, _) = job(2, &[]);
    assert!(
        stderr.contains("S3 Object Lock (Governance, 1 days)"),
        "{stderr}"
    );
    let second = newest_manifest(&seen);
    assert!(
        (20..=24).contains(&until_days(&second)),
        "locked for a day without the flag"
    );
    job(3, &["--worm-retention", "3"]);
    let seen = keys(&s3, &lake, "_fhirlake/manifests");
    let (stderr, _) = job(4, &["--worm-retention", "1"]);
    assert!(
        stderr.contains("(Governance, 3 days)"),
        "a flag cannot shorten the setting: {stderr}"
    );
    let fourth = newest_manifest(&seen);
    assert!((68..=72).contains(&until_days(&fourth)));
}

#[test]
fn a_bucket_without_object_lock_is_refused_before_anything_is_written() {
    let Some(s3) = S3::from_env() else { return };
    let lake = s3.fresh_lake();
    let out = load(
        &s3,
        &lake,
        &["--worm-retention", "30", "--worm-mode", "compliance"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&s3.bucket)
            && err.contains("no Object Lock")
            && err.contains("Nothing was written"),
        "{err}"
    );
    assert!(!err.contains(&s3.secret) && !err.contains(&s3.key), "{err}");
    assert!(
        keys(&s3, &lake, "").is_empty(),
        "nothing written under {lake}"
    );
}

#[test]
fn a_local_lake_cannot_be_locked_and_says_what_it_does_instead() {
    let dir = tempfile::tempdir().unwrap();
    let out = fhirlake()
        .args(["load", "--worm-retention", "30", "--lake"])
        .arg(dir.path().join("lake"))
        .arg(sample_dir("bds-r4-10"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs an S3 lake") && err.contains("read-only"),
        "{err}"
    );
}
