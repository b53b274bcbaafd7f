//! `--segregated-lake`: what a policy segregates goes to a second lake,
//! never into the main one, and a job that forgets the flag is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{expected_segregated, part2_fixture, segregated_rows};
use crate::common::{duckdb, fhirlake, run_json, scan};

fn load(lake: &Path, restricted: Option<&Path>, extra: &[&str]) -> std::process::Output {
    let mut command = fhirlake();
    command
        .args(["load", "--json", "--policy", "part2", "--lake"])
        .arg(lake);
    if let Some(restricted) = restricted {
        command.arg("--segregated-lake").arg(restricted);
    }
    command.args(extra).arg(part2_fixture()).output().unwrap()
}

/// Every relative path under `dir` that names a segregated table.
fn segregated_paths(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().display().to_string();
            if relative.contains("_segregated") {
                found.push(relative);
            } else if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_lake_takes_every_segregated_row_and_the_main_lake_none() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, restricted) = (dir.path().join("lake"), dir.path().join("restricted"));
    let out = load(&lake, Some(&restricted), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = expected_segregated();
    let expected_total: usize = expected.values().map(BTreeMap::len).sum();

    // Nothing segregated in the main lake: no table, no key index, no path.
    assert_eq!(segregated_paths(&lake), Vec::<String>::new());
    assert!(!segregated_paths(&restricted).is_empty());
    // The manifest says where they went (the URI, nothing else).
    let manifests = lake.join("_fhirlake/manifests");
    let manifest = std::fs::read_dir(&manifests)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest.path()).unwrap()).unwrap();
    let recorded = manifest["segregated_lake"].as_str().unwrap();
    assert!(
        recorded.starts_with("file://") && recorded.ends_with("/restricted/"),
        "{recorded}"
    );
    for input in summary["inputs"].as_array().unwrap() {
        assert_eq!(
            input["lines"].as_u64(),
            Some(super::counted_lines(input)),
            "{input}"
        );
    }

    // A job that writes without the second lake is refused before it reads
    // anything; reading commands work without it and see only the main lake.
    let refused = load(&lake, None, &["--force"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!("give --segregated-lake {recorded}")),
        "{}",
        stderr(&refused)
    );
    let dry_run = fhirlake()
        .args([
            "policy",
            "apply",
            "--dry-run",
            "--policy",
            "part2",
            "--lake",
        ])
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(dry_run.status.code(), Some(2), "{}", stderr(&dry_run));
    let status = run_json(
        fhirlake().args(["status", "--json", "--lake"]).arg(&lake),
        0,
    );
    assert_eq!(segregated_rows(&status), 0);
    // ... and says where the rest is.
    assert_eq!(status["segregated_lake"]["uri"], recorded);
    assert_eq!(status["segregated_lake"]["read"], false);
    let status = run_json(
        fhirlake()
            .args(["status", "--json", "--lake"])
            .arg(&lake)
            .arg("--segregated-lake")
            .arg(&restricted),
        0,
    );
    assert_eq!(segregated_rows(&status), expected_total as u64);
    for with in [false, true] {
        let mut verify = fhirlake();
        verify.args(["verify", "--lake"]).arg(&lake);
        if with {
            verify.arg("--segregated-lake").arg(&restricted);
        }
        let out = verify.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // With the flag a re-run converges; another second lake is refused.
    let again = load(&lake, Some(&restricted), &["--force"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["changed"], false, "{}", again["totals"]);
    let other = load(&lake, Some(&dir.path().join("other")), &["--force"]);
    assert_eq!(other.status.code(), Some(2));
    assert!(stderr(&other).contains("not file://"), "{}", stderr(&other));

    // Analysts' readers see plain Delta tables in the second lake.
    let Some(_) = duckdb("select 1") else { return };
    for (table, rules) in &expected {
        let in_main = duckdb(&format!("select count(*) from {}", scan(&lake, table))).unwrap();
        let held = duckdb(&format!(
            "select id, json_extract_string(resource, '$.meta.tag[0].code') from {} order by id",
            scan(&restricted, &format!("_segregated/{table}"))
        ))
        .unwrap();
        let found: BTreeMap<String, String> = held
            .iter()
            .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
            .collect();
        assert_eq!(&found, rules, "{table}");
        let ids = super::sql_list(rules.keys());
        let leaked = duckdb(&format!(
            "select count(*) from {} where id in ({ids})",
            scan(&lake, table)
        ))
        .unwrap();
        assert_eq!(leaked[0][0], 0, "{table} ({in_main:?} rows in main)");
    }
}

#[test]
fn a_lake_segregating_inside_itself_cannot_switch_and_credentials_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    assert!(load(&lake, None, &[]).status.success());
    let restricted = dir.path().join("restricted");
    let out = load(&lake, Some(&restricted), &["--force"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already holds segregated tables itself (_segregated/"),
        "{}",
        stderr(&out)
    );
    assert!(!restricted.join("_segregated").exists());

    // A malformed credentials file names its line, never a value in it.
    let credentials = dir.path().join("restricted.env");
    std::fs::write(
        &credentials,
        "# restricted bucket\nAWS_SECRET_ACCESS_KEY s3cr3t\n",
    )
    .unwrap();
    let out = fhirlake()
        .args(["load", "--policy", "part2", "--lake"])
        .arg(dir.path().join("fresh"))
        .arg("--segregated-lake")
        .arg(&restricted)
        .arg("--segregated-credentials")
        .arg(&credentials)
        .arg(part2_fixture())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("restricted.env line 2: expected KEY=VALUE"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

/// On S3, each lake under an identity that may use only its own bucket:
/// the main lake's credentials (the environment) could not write a single
/// segregated object, so every one of them was written with the file's.
#[test]
fn on_s3_the_second_lake_is_written_with_its_own_credentials_only() {
    let Some(s3) = crate::common::S3::from_env() else {
        return;
    };
    let var = |name: &str| std::env::var(name).expect("scripts/s3-server.sh sets it");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let lake = format!("s3://{}/{id}", s3.bucket);
    let restricted = format!("s3://{}/{id}", var("FHIRLAKE_S3_RESTRICTED_BUCKET"));
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("restricted.env");
    std::fs::write(
        &credentials,
        format!(
            "# the restricted bucket's identity\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            var("FHIRLAKE_S3_RESTRICTED_KEY"),
            var("FHIRLAKE_S3_RESTRICTED_SECRET")
        ),
    )
    .unwrap();
    let load = |credentials: Option<&Path>| {
        let mut command = s3.fhirlake();
        command
            .env("AWS_ACCESS_KEY_ID", var("FHIRLAKE_S3_MAIN_ONLY_KEY"))
            .env("AWS_SECRET_ACCESS_KEY", var("FHIRLAKE_S3_MAIN_ONLY_SECRET"))
            .args(["load", "--json", "--policy", "part2", "--lake", &lake])
            .args(["--segregated-lake", &restricted]);
        if let Some(file) = credentials {
            command.arg("--segregated-credentials").arg(file);
        }
        command.arg(part2_fixture()).output().unwrap()
    };
    // Without its own credentials the second lake is refused before the
    // main lake records it or anything is read.
    let denied = load(None);
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("check the credentials"),
        "{}",
        stderr(&denied)
    );
    let out = load(Some(&credentials));
    assert!(out.status.success(), "{}", stderr(&out));
    let again = load(Some(&credentials));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["changed"], false, "{}", again["totals"]);

    let admin = |uri: &str| s3.open(uri);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let main_tables = runtime
        .block_on(fhirlake::lake::list_tables(&admin(&lake)))
        .unwrap();
    assert!(
        main_tables.iter().all(|t| !t.starts_with("_segregated")),
        "{main_tables:?}"
    );
    let held = runtime
        .block_on(fhirlake::lake::list_tables(&admin(&restricted)))
        .unwrap();
    let expected = expected_segregated();
    for table in expected.keys() {
        assert!(held.contains(&format!("_segregated/{table}")), "{held:?}");
    }
    let Some(_) = s3.duckdb("select 1") else {
        return;
    };
    let rows = s3
        .duckdb(&format!(
            "select count(*) from delta_scan('{restricted}/_segregated/condition')"
        ))
        .unwrap();
    assert_eq!(rows[0][0], expected["condition"].len() as i64);
}

#[test]
fn hl7v2_says_its_raw_messages_stay_in_the_main_lake() {
    let dir = tempfile::tempdir().unwrap();
    let messages = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7v2/messages");
    let out = fhirlake()
        .args(["hl7v2", "load", "--policy", "part2", "--lake"])
        .arg(dir.path().join("lake"))
        .arg("--segregated-lake")
        .arg(dir.path().join("restricted"))
        .arg(&messages)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("hl7v2: warning: raw copies of the input are kept in the main lake's _raw/"),
        "{}",
        stderr(&out)
    );
    assert!(segregated_paths(&dir.path().join("lake")).is_empty());
}
