//! Fatal server answers: a failed export and an unusable manifest load nothing.

use super::*;

#[test]
fn a_fatal_operation_outcome_ends_the_job_with_its_diagnostics_and_no_tables() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient"]),
        fatal: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (_, out) = run(&mut export(&server, &lake), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the Group is too large"), "{stderr}");
    assert!(!lake.join("patient").exists());
    let jobs: Vec<PathBuf> = all_files(&lake.join("_fhirlake/jobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let state: Value = serde_json::from_slice(&std::fs::read(&jobs[0]).unwrap()).unwrap();
    assert_eq!(state["phase"], "failed");
    // Its trail: the request to the server, then a failure finish.
    let events = crate::common::audit_events(&lake, &[]);
    let steps: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["step"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("kickoff", "0"), ("finish", "8")], "{events:#?}");
    assert_eq!(events[0]["job"], state["job_id"]);
    assert_eq!(events[1]["job"], state["job_id"]);
}

#[test]
fn a_bad_manifest_is_a_clear_fatal_error_and_nothing_is_loaded() {
    for (body, expected) in [
        ("<html>gateway</html>", "not JSON"),
        (
            r#"{"request":"x","requiresAccessToken":false,"output":[]}"#,
            "transactionTime",
        ),
        (
            r#"{"transactionTime":"2026-11-20T10:00:00Z","request":"x","requiresAccessToken":false,"output":"all of it"}"#,
            "\"output\" is malformed",
        ),
    ] {
        let rt = runtime();
        let server = rt.block_on(BulkServer::start(Config {
            bad_manifest: Some(body.into()),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let (_, out) = run(&mut export(&server, &lake), 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{body}: {stderr}");
        assert!(
            stderr.contains("export job export-"),
            "names the job: {stderr}"
        );
        assert!(stderr.contains("completion manifest"), "{stderr}");
        assert!(!lake.join("_fhirlake/manifests").exists(), "nothing loaded");
    }
}
