//! `--since auto` asks for changes since the last export; deletions apply.

use super::*;

#[test]
fn since_auto_asks_for_changes_since_the_last_export_and_deletions_apply() {
    let rt = runtime();
    let patients = sample(&["Patient"]);
    let first_ids: Vec<String> = String::from_utf8_lossy(&patients[0].1)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let server = rt.block_on(BulkServer::start(Config {
        files: patients.clone(),
        get_405: true,
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let history = tmp.path().join("history");
    // The nightly command; the second lake keeps history.
    let nightly = |lake: &PathBuf| {
        let mut command = export(&server, lake);
        command.args([
            "--group", "cohort-1", "--type", "Patient", "--since", "auto",
        ]);
        if lake == &history {
            command.arg("--history");
        }
        command
    };
    for lake in [&lake, &history] {
        let mut command = nightly(lake);
        if lake != &history {
            command.arg("--no-keep-raw");
        }
        let (json, _) = run(&mut command, 0);
        let raw = Path::new(json["job"]["raw_dir"].as_str().unwrap());
        assert_eq!(
            raw.exists(),
            lake == &history,
            "--no-keep-raw removes {raw:?}"
        );
    }
    // GET was refused with 405, so the kick-off went out as POST with a Parameters body.
    let kickoffs = server.requests("/Group/cohort-1/$export");
    assert!(kickoffs.iter().any(|r| r.method == "GET"));
    let post: Value = serde_json::from_slice(&kickoffs.last().unwrap().body).unwrap();
    assert_eq!(post["resourceType"], "Parameters");
    assert!(
        !String::from_utf8_lossy(&kickoffs[1].body).contains("_since"),
        "first export is full"
    );

    // Next night: one patient was deleted on the server.
    let gone = first_ids[3].clone();
    {
        let mut config = server.config.lock().unwrap();
        config.files = Vec::new();
        config.transaction_time = Some("2026-11-21T10:00:00.000Z".into());
        config.deleted_file = Some(
            format!(
                r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"request":{{"method":"DELETE","url":"Patient/{gone}"}}}}]}}"#
            )
            .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
        );
    }
    for lake in [&lake, &history] {
        let (json, _) = run(&mut nightly(lake), 0);
        let job = json["job"]["job_id"].as_str().unwrap();
        let export = &manifest(lake, job)["export"];
        assert_eq!(export["deletions_requested"], 1);
        if lake == &history {
            assert_eq!(export["tombstones"], 1);
        } else {
            assert_eq!(export["rows_deleted"], 1);
        }
    }
    // --since auto sent the first export's transactionTime, not the local clock.
    let last: Value =
        serde_json::from_slice(&server.requests("/$export").last().unwrap().body).unwrap();
    let since = last["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "_since")
        .expect("_since sent");
    assert_eq!(since["valueInstant"], TRANSACTION_TIME);

    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(*) FILTER (WHERE id = '{gone}') FROM {}",
        scan(&lake, "patient")
    )) {
        assert_eq!(rows[0][0].as_i64().unwrap() as usize, first_ids.len() - 1);
        assert_eq!(rows[0][1], 0);
    }
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(*) FILTER (WHERE _deleted) FROM {} WHERE id = '{gone}'",
        scan(&history, "patient")
    )) {
        assert_eq!(rows[0][0], 2, "the version and its tombstone");
        assert_eq!(rows[0][1], 1);
    }
}

#[test]
fn an_export_with_elements_never_replaces_full_rows() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient"]),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let (full, _) = run(export(&server, &lake).args(["--type", "Patient"]), 0);
    let patients = full["load"]["totals"]["inserted"].as_u64().unwrap();
    assert!(patients > 0);
    // The same patients again, asked for as subsets (a server that does not
    // tag them SUBSETTED): none replaces its full row.
    let subsets: Vec<u8> = String::from_utf8_lossy(&sample(&["Patient"])[0].1)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let full: Value = serde_json::from_str(l).unwrap();
            let subset = json!({"resourceType": "Patient", "id": full["id"], "birthDate": full["birthDate"]});
            format!("{subset}\n")
        })
        .collect::<String>()
        .into_bytes();
    let subset_server = rt.block_on(BulkServer::start(Config {
        files: vec![("Patient".into(), subsets)],
        ..Default::default()
    }));
    let (subset, _) = run(
        export(&subset_server, &lake).args(["--type", "Patient", "--elements", "birthDate"]),
        0,
    );
    let totals = &subset["load"]["totals"];
    assert_eq!(
        (totals["inserted"].as_u64(), totals["updated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(totals["filtered"].as_u64(), Some(patients));
    let rows = sql_blocking(
        &open_lake(&lake),
        &["patient"],
        "SELECT count(*), count(gender), sum(CASE WHEN _subsetted THEN 1 ELSE 0 END) FROM patient",
    );
    assert_eq!(rows, [[json!(patients), json!(patients), json!(0)]]);
}

#[test]
fn a_policy_elements_list_is_asked_for_as_elements_when_it_covers_every_type() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient", "Condition"]),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("minimum.toml");
    std::fs::write(
        &policy,
        "name = \"minimum\"\n[tables.Patient]\nelements = [\"gender\", \"birthDate\"]\n",
    )
    .unwrap();
    let kickoff_query = || server.requests("/$export").last().unwrap().query.clone();
    let lake = tmp.path().join("lake");
    run(
        export(&server, &lake)
            .args(["--type", "Patient", "--policy"])
            .arg(&policy),
        0,
    );
    assert!(
        kickoff_query().contains("_elements=Patient.gender%2CPatient.birthDate"),
        "{}",
        kickoff_query()
    );
    // This server sends whole resources anyway: the load cuts them, and the
    // rows count as whole for the lake (the policy's whole).
    let rows = sql_blocking(
        &open_lake(&lake),
        &["patient"],
        "SELECT count(*), count(gender), count(family_name), \
         sum(CASE WHEN _subsetted THEN 1 ELSE 0 END) FROM patient",
    );
    let patients = rows[0][0].as_i64().unwrap();
    assert!(patients > 0);
    assert_eq!(
        rows,
        [[json!(patients), json!(patients), json!(0), json!(0)]]
    );

    // An export that cannot be asked for the policy's elements asks for
    // none and says why on stderr.
    let asks_for_nothing = |lake: &str, types: &[&str]| {
        let (_, out) = run(
            export(&server, &tmp.path().join(lake))
                .args(types)
                .arg("--policy")
                .arg(&policy),
            0,
        );
        assert!(
            !kickoff_query().contains("_elements"),
            "{}",
            kickoff_query()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A type without a list must come whole.
    let stderr = asks_for_nothing("both", &["--type", "Patient,Condition"]);
    assert!(
        stderr.contains("not asking the server for _elements")
            && stderr.contains("lists elements for Patient but not for Condition"),
        "{stderr}"
    );
    // No --type: every type comes whole.
    let stderr = asks_for_nothing("untyped", &[]);
    assert!(
        stderr.contains("lists elements for Patient but the export names no --type"),
        "{stderr}"
    );
}
