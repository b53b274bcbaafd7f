//! A flaky server (429s, 5xx, cut bodies, expired links, partial manifests) and a
//! count that never matches: the export completes and accounts for every line.

use super::*;

#[test]
fn export_survives_a_flaky_server_and_accounts_for_every_line() {
    let rt = runtime();
    let files = sample(&[
        "Patient",
        "Condition",
        "Encounter",
        "Immunization",
        "AllergyIntolerance",
    ]);
    let error_file = format!(
        "{}\n{}\n",
        r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Observation/o-77 could not be serialized"}]}"#,
        r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"forbidden","diagnostics":"MedicationRequest withheld by policy"}]}"#
    );
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        error_file: Some(error_file.into_bytes()),
        kickoff_429: 1,
        pending_polls: 2,
        status_503: 1,
        status_transient_outcome: 1,
        truncate_once: [1].into(),
        expire_first_links: [2].into(),
        page_size: Some(2),
        gzip: true,
        requires_access_token: false,
        static_token: Some("static-secret-token-123".into()),
        declare_counts: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, out) = run(
        export(&server, &lake)
            .args([
                "--type",
                "Patient,Condition,Encounter,Immunization,AllergyIntolerance",
            ])
            .env("FHIRLAKE_TOKEN", "static-secret-token-123"),
        1, // the server's error file lands in _quarantine
    );
    let job = json["job"]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(json["job"]["phase"], "finished");
    assert_eq!(json["job"]["server_job_deleted"], true);

    let log = server.log.lock().unwrap();
    assert_eq!(log.kickoffs_accepted, 1);
    assert_eq!(log.deletes, 1);
    drop(log);
    // The token goes to kick-off and status, never to files when requiresAccessToken is false.
    for r in server
        .requests("/$export")
        .iter()
        .chain(&server.requests("/status/1"))
    {
        if r.method != "DELETE" || r.headers.contains_key("authorization") {
            assert_eq!(r.headers["authorization"], "Bearer static-secret-token-123");
        }
    }
    let accepted = server.requests("/$export").last().unwrap().clone();
    assert_eq!(accepted.method, "GET");
    assert!(
        accepted.query.contains("_type=Patient%2CCondition"),
        "{}",
        accepted.query
    );
    let file_requests = server.requests("/files/");
    assert!(
        file_requests.len() >= 8,
        "5 outputs + error + a retry + a refresh"
    );
    assert!(
        file_requests
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    assert!(
        file_requests
            .iter()
            .all(|r| r.headers["accept-encoding"].contains("gzip"))
    );
    // The 410 link was replaced by a refreshed manifest's link (generation 1).
    assert!(
        file_requests
            .iter()
            .any(|r| r.path == "/fhir/files/g1/output/2")
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("% complete"), "X-Progress shown: {stderr}");

    // Every line of every file is in its table, once (DuckDB reads the Delta tables).
    for (t, body) in &files {
        let table = t.to_ascii_lowercase();
        if let Some((count, distinct)) = counts(&lake, &table) {
            assert_eq!(count as usize, lines(body), "{table}");
            assert_eq!(distinct, count, "{table}: no duplicates");
        }
    }
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), min(reason) FROM {} WHERE reason_code = 'server_error'",
        scan(&lake, "_quarantine")
    )) {
        assert_eq!(rows[0][0], 2);
        assert!(
            rows[0][1].as_str().unwrap().contains("withheld by policy")
                || rows[0][1]
                    .as_str()
                    .unwrap()
                    .contains("could not be serialized")
        );
    }

    // The ledger: the request, transactionTime, each file's checksum, declared vs received.
    let manifest = manifest(&lake, &job);
    assert_eq!(manifest["kind"], "export");
    let export = &manifest["export"];
    assert_eq!(export["transaction_time"], TRANSACTION_TIME);
    assert_eq!(export["requires_access_token"], false);
    let raw = PathBuf::from(json["job"]["raw_dir"].as_str().unwrap());
    let recorded = export["files"].as_array().unwrap();
    assert_eq!(recorded.len(), 6);
    for file in recorded {
        let on_disk = raw.join(file["name"].as_str().unwrap());
        let sha = fhirlake_sha(&on_disk);
        assert_eq!(file["sha256"], sha, "{on_disk:?}");
        assert_eq!(file["bytes"], std::fs::metadata(&on_disk).unwrap().len());
        assert_eq!(file["content_encoding"], "gzip");
        if file["kind"] == "output" {
            assert_eq!(file["lines"], file["declared_count"]);
            assert_eq!(file["outcome"], "downloaded");
        } else {
            assert_eq!(file["diagnostics"].as_array().unwrap().len(), 2);
        }
        assert!(!file["url"].as_str().unwrap().contains("SECRET-SIGNATURE"));
    }
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(manifest["totals"]["inserted"], total as u64);
    assert_eq!(
        manifest["totals"]["quarantined"], 0,
        "every resource line loaded"
    );
    assert_eq!(
        manifest["tables"]["_quarantine"]["quarantined"], 2,
        "the error file's lines"
    );

    let kinds: Vec<String> = events(&lake, &job)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "retry",
        "kickoff",
        "status",
        "status_retry",
        "manifest_page",
        "download_retry",
        "download_expired",
        "manifest_refresh",
        "download_complete",
        "load_complete",
        "delete_server_job",
        "finished",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected} event in {kinds:?}"
        );
    }
    assert_nowhere("static-secret-token-123", &lake, &out);
    assert_nowhere("SECRET-SIGNATURE", &lake, &out);
}

#[test]
fn a_declared_count_that_never_matches_is_retried_then_reported_and_the_lines_still_load() {
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        declare_counts: true,
        overcount: [0].into(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, out) = run(&mut export(&server, &lake), 1);
    assert_eq!(
        server.requests("/output/0").len(),
        3,
        "retried twice, then accepted"
    );
    assert_eq!(server.requests("/output/1").len(), 1);
    let file = &json["job"]["files"][0];
    assert_eq!(file["outcome"], "count_mismatch");
    assert_eq!(
        file["lines"].as_u64().unwrap() + 1,
        file["declared_count"].as_u64().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the manifest declared"));
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    let job = json["job"]["job_id"].as_str().unwrap();
    assert_eq!(manifest(&lake, job)["totals"]["inserted"], total as u64);
}
