//! Resuming: kill -9 mid-download, Ctrl-C, and a crash between the load and the state update.

use super::*;

#[test]
fn kill_9_mid_download_then_rerun_resumes_the_same_job_without_duplicates() {
    let rt = runtime();
    let files = sample(&["Patient", "Condition", "Encounter", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        throttle: Some(Duration::from_millis(40)),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let mut child = export(&server, &lake)
        .args(["--parallel", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once one file is complete and another is still arriving.
    let started = Instant::now();
    loop {
        let raw: Vec<PathBuf> = all_files(&lake.join("_raw"));
        let done = raw
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "ndjson"));
        let partial = raw
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "part"));
        if done && partial {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no download started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let completed: Vec<PathBuf> = all_files(&lake.join("_raw"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    assert!(!lake.join("patient").exists() || counts(&lake, "patient").is_none_or(|c| c.0 == 0));
    // The kill may land after a file is complete on disk but before the job
    // state records it. Make that the case for every complete file: the
    // resume must adopt them from disk, not fetch them again.
    let state_path = all_files(&lake.join("_fhirlake/jobs"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("the job state was saved after kick-off");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    for file in state["files"].as_array_mut().unwrap() {
        file["outcome"] = "pending".into();
        file["sha256"] = Value::Null;
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    server.config.lock().unwrap().throttle = None;
    let (json, _) = run(&mut export(&server, &lake), 0);
    assert_eq!(json["resumed"], true);
    assert_eq!(
        server.log.lock().unwrap().kickoffs_accepted,
        1,
        "no second kick-off"
    );
    // Files finished before the kill were not fetched again.
    for path in &completed {
        let name = path.file_name().unwrap().to_str().unwrap();
        let index: usize = name[..5].parse().unwrap();
        let fetched = server.requests(&format!("/output/{index}"));
        assert_eq!(fetched.len(), 1, "{name} downloaded once");
    }
    let job = json["job"]["job_id"].as_str().unwrap();
    let manifest = manifest(&lake, job);
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(manifest["totals"]["inserted"], total as u64);
    for (t, body) in &files {
        if let Some((count, distinct)) = counts(&lake, &t.to_ascii_lowercase()) {
            assert_eq!(
                (count as usize, distinct as usize),
                (lines(body), lines(body)),
                "{t}"
            );
        }
    }
    // A third run finds nothing open and starts a new export (since none is running).
    let kinds: Vec<String> = events(&lake, job)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"resume".to_owned()));
    let adopted = kinds.iter().filter(|k| *k == "download_adopted").count();
    assert_eq!(adopted, completed.len(), "{kinds:?}");
}

#[test]
fn ctrl_c_cancels_the_server_job_too() {
    for keep in [false, true] {
        let rt = runtime();
        let server = rt.block_on(BulkServer::start(Config {
            files: sample(&["Patient"]),
            pending_polls: 10_000,
            retry_after: Some("1".into()),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let mut command = export(&server, &lake);
        if keep {
            command.arg("--keep-server-job");
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while server.requests("/status/1").is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "never polled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        let deletes = server.log.lock().unwrap().deletes;
        assert_eq!(
            deletes,
            u32::from(!keep),
            "--keep-server-job {keep}: {stderr}"
        );
        let state = all_files(&lake.join("_fhirlake/jobs"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
        assert_eq!(state["phase"], "cancelled");
        assert_eq!(state["server_job_deleted"], !keep);
    }
}

#[test]
fn a_crash_after_the_load_but_before_the_state_update_finishes_without_reloading() {
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (json, _) = run(export(&server, &lake).arg("--keep-server-job"), 0);
    let job = json["job"]["job_id"].as_str().unwrap().to_owned();
    // Rewind the saved state to "downloads verified, not yet loaded", as a
    // kill between the load's manifest and the next state write leaves it.
    let state_path = lake.join(format!("_fhirlake/jobs/{job}.json"));
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["phase"] = "complete".into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let versions_before = crate::common::delta_versions(&lake, "patient");

    let (json, _) = run(&mut export(&server, &lake), 0);
    assert_eq!(json["resumed"], true);
    assert_eq!(json["job"]["job_id"], job.as_str());
    assert_eq!(json["job"]["phase"], "finished");
    assert_eq!(json["job"]["server_job_deleted"], true);
    assert_eq!(server.log.lock().unwrap().kickoffs_accepted, 1);
    assert_eq!(
        crate::common::delta_versions(&lake, "patient"),
        versions_before,
        "no reload"
    );
    if let Some((count, distinct)) = counts(&lake, "patient") {
        assert_eq!(
            (count as usize, distinct as usize),
            (lines(&files[0].1), lines(&files[0].1))
        );
    }
}
