//! The audit trail of real jobs: every load appends its AuditEvents to the
//! lake's chain and anchors the head in each Delta commit and its manifest;
//! `fhirlake verify` finds every kind of tampering and names the object;
//! concurrent loads end in one chain; `fhirlake audit` lists who did what.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::common::{audit_events, fhirlake, python, run_json, sample_dir};

fn hl7v2_messages() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7v2/messages")
}

/// A lake with a Bulk sample load and an HL7 v2 load (raw messages kept).
fn audited_lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&lake)
            .arg(sample_dir("bds-r4-10")),
        0,
    );
    let out = fhirlake()
        .args(["hl7v2", "load", "--json", "--lake"])
        .arg(&lake)
        .arg(hl7v2_messages())
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "hl7v2 load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lake
}

/// `fhirlake verify --json`: its exit code and report.
fn verify(lake: &Path) -> (i32, Value) {
    let out = fhirlake()
        .args(["verify", "--json", "--lake"])
        .arg(lake)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// Every problem `verify` reported, chain and lake, as (kind, its JSON).
fn problems(report: &Value) -> Vec<(String, Value)> {
    report["chain"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["problems"].as_array().unwrap())
        .map(|p| (p["problem"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

fn assert_found(report: &Value, kind: &str, naming: &str) {
    let found = problems(report);
    assert!(
        found
            .iter()
            .any(|(k, p)| k == kind && p.to_string().contains(naming)),
        "expected a {kind} problem naming {naming}, verify found {found:#?}"
    );
}

/// `verify` exits 1 on `lake` and names a `kind` problem mentioning `naming`.
fn assert_detected(lake: &Path, kind: &str, naming: &str) {
    let (code, report) = verify(lake);
    assert_eq!(code, 1, "{report:#}");
    assert_found(&report, kind, naming);
}

fn events_dir(lake: &Path) -> PathBuf {
    lake.join("_fhirlake/audit/events")
}

fn event_files(lake: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir(lake))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn make_writable(path: &Path) {
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).unwrap();
}

/// Every `_delta_log/*.json` of the lake's tables.
fn commit_logs(lake: &Path) -> Vec<PathBuf> {
    let mut logs = Vec::new();
    for table in std::fs::read_dir(lake).unwrap() {
        let log = table.unwrap().path().join("_delta_log");
        if let Ok(entries) = std::fs::read_dir(&log) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    logs.push(path);
                }
            }
        }
    }
    logs.sort();
    logs
}

/// Whether a commit adds or removes data (not a table's creation).
fn changes_data(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|a| a["add"]["dataChange"] == true || a["remove"]["dataChange"] == true)
}

/// A data commit of `table` that anchors the chain.
fn anchored_commit(lake: &Path, table: &str) -> PathBuf {
    commit_logs(lake)
        .into_iter()
        .find(|l| {
            l.to_string_lossy().contains(&format!("/{table}/"))
                && changes_data(l)
                && commit_info(l)["fhirlake"]["audit"].is_object()
        })
        .unwrap()
}

/// Rewrites a commit's `commitInfo.fhirlake` with `edit`.
fn edit_commit_info(log: &Path, edit: impl Fn(&mut serde_json::Map<String, Value>)) {
    make_writable(log);
    let text = std::fs::read_to_string(log).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut action: Value = serde_json::from_str(line).unwrap();
            if let Some(info) = action.get_mut("commitInfo") {
                edit(info.as_object_mut().unwrap());
            }
            action.to_string()
        })
        .collect();
    std::fs::write(log, edited.join("\n") + "\n").unwrap();
}

fn commit_info(log: &Path) -> Value {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|a| a.get("commitInfo").cloned())
        .unwrap()
}

#[test]
fn jobs_leave_a_chain_anchored_in_every_commit_and_manifest_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let lake = audited_lake(dir.path());
    let (code, report) = verify(&lake);
    assert_eq!(code, 0, "{report:#}");
    assert!(report["checked"]["events"].as_u64().unwrap() > 10);
    assert!(report["checked"]["raw_objects"].as_u64().unwrap() > 0);
    let data_commits: Vec<PathBuf> = commit_logs(&lake)
        .into_iter()
        .filter(|log| changes_data(log))
        .collect();
    assert!(data_commits.len() > 10);
    for log in data_commits {
        let info = commit_info(&log);
        assert!(
            info["fhirlake"]["audit"]["seq"].is_u64(),
            "{} has no audit anchor: {info}",
            log.display()
        );
    }
    let manifests = std::fs::read_dir(lake.join("_fhirlake/manifests")).unwrap();
    for manifest in manifests {
        let path = manifest.unwrap().path();
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        let manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert!(manifest["audit_head"]["seq"].is_u64(), "{manifest:#}");
    }
    // Records of a local lake are read-only (best-effort WORM).
    for event in event_files(&lake) {
        assert!(std::fs::metadata(&event).unwrap().permissions().readonly());
    }

    // The listing: a kick-off and a finish per job, by the OS user.
    let events = audit_events(&lake, &[]);
    let steps = |step: &str| events.iter().filter(|e| e["step"] == step).count();
    assert_eq!((steps("kickoff"), steps("finish")), (2, 2));
    assert!(steps("table-commit") > 5 && steps("input-file") > 5);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    if let Ok(user) = std::env::var("USER") {
        assert!(events.iter().all(|e| e["principal"] == user.as_str()));
    }
    let job = events[0]["job"].as_str().unwrap();
    let mine = audit_events(&lake, &["--job", job]).len();
    assert!(mine > 0 && mine < events.len());

    // Maintenance is audited too, and leaves the lake verifiable.
    let out = fhirlake()
        .args(["optimize", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, report) = verify(&lake);
    assert_eq!(code, 0, "{report:#}");
    let optimized = audit_events(&lake, &[])
        .iter()
        .filter(|e| e["step"] == "optimize")
        .count();
    assert!(
        optimized > 5,
        "one optimize event per table, {optimized} found"
    );
}

#[test]
fn stored_events_of_a_real_load_are_valid_r4_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let lake = audited_lake(dir.path());
    assert_valid_r4(&event_files(&lake));
}

/// `tests/support/validate_fhir.py` finds every resource of `files` valid
/// R4; skipped (loudly) without the validator, unless CI requires it.
fn assert_valid_r4(files: &[PathBuf]) {
    let Some(python) = python() else {
        assert!(std::env::var("FHIRLAKE_REQUIRE_FHIR_VALIDATOR").is_err());
        eprintln!("!!! SKIPPING FHIR validation: no Python venv");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate_fhir.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(files)
        .output()
        .unwrap();
    if out.status.code() == Some(2) {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_FHIR_VALIDATOR").is_err(),
            "the validator cannot run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the lake once, then each tampering on its own copy.
#[test]
fn verify_names_every_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = audited_lake(dir.path());
    let copy = |name: &str| {
        let to = dir.path().join(name);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&pristine)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };

    // One byte of a kept raw message flipped.
    let lake = copy("raw-flipped");
    let raw = std::fs::read_dir(lake.join("_raw/hl7v2"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    make_writable(&raw);
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&raw, bytes).unwrap();
    assert_detected(
        &lake,
        "raw_changed",
        raw.file_name().unwrap().to_str().unwrap(),
    );

    // An event in the middle deleted.
    let lake = copy("middle-deleted");
    let files = event_files(&lake);
    let middle = &files[files.len() / 2];
    std::fs::remove_file(middle).unwrap();
    assert_detected(
        &lake,
        "missing",
        middle.file_name().unwrap().to_str().unwrap(),
    );

    // The last events deleted: the rest is a perfect chain, the anchors show the cut.
    let lake = copy("tail-cut");
    let files = event_files(&lake);
    for file in &files[files.len() - 3..] {
        std::fs::remove_file(file).unwrap();
    }
    assert_detected(&lake, "anchor_beyond_end", "audit_head");

    // A manifest's count edited.
    let lake = copy("manifest-edited");
    let manifest = std::fs::read_dir(lake.join("_fhirlake/manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let m: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            m["kind"] == "load"
        })
        .unwrap();
    make_writable(&manifest);
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let decrement = |n: &mut Value| *n = (n.as_u64().unwrap() - 1).into();
    decrement(&mut m["totals"]["inserted"]);
    decrement(&mut m["tables"]["patient"]["inserted"]);
    decrement(&mut m["tables"]["observation"]["commits"][0]["merge"]["rows_inserted"]);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert_detected(&lake, "totals_mismatch", "inserted");
    assert_detected(&lake, "table_counts_mismatch", "patient");
    assert_detected(&lake, "rows_mismatch", "observation/_delta_log");

    // A forged event appended, linking to a wrong hash.
    let lake = copy("forged");
    let files = event_files(&lake);
    let last = files.last().unwrap();
    let mut event: Value = serde_json::from_slice(&std::fs::read(last).unwrap()).unwrap();
    let seq = files.len() as u64;
    event["extension"][0]["extension"] = serde_json::json!([
        {"url": "sequence", "valueString": seq.to_string()},
        {"url": "previous", "valueString": "00".repeat(32)},
    ]);
    let forged = events_dir(&lake).join(format!("{seq:020}.json"));
    std::fs::write(&forged, serde_json::to_vec(&event).unwrap()).unwrap();
    assert_detected(&lake, "broken_link", &format!("{seq:020}.json"));

    // The anchor removed from one Delta commit.
    let lake = copy("anchor-removed");
    let log = anchored_commit(&lake, "patient");
    edit_commit_info(&log, |info| {
        info["fhirlake"].as_object_mut().unwrap().remove("audit");
    });
    assert_detected(&lake, "anchor_removed", "patient/_delta_log");

    // fhirlake's whole record stripped from a commit.
    let lake = copy("record-stripped");
    let log = anchored_commit(&lake, "encounter");
    let later = commit_logs(&lake)
        .into_iter()
        .rfind(|l| l.to_string_lossy().contains("/encounter/") && changes_data(l))
        .unwrap();
    assert_ne!(log, later, "the encounter table has two data commits");
    edit_commit_info(&later, |info| {
        info.remove("fhirlake");
    });
    assert_detected(&lake, "unaudited_commit", "encounter/_delta_log");

    // And the pristine lake is still clean: each finding came from its tampering.
    assert_eq!(verify(&pristine).0, 0);
}

#[test]
fn concurrent_loads_end_in_one_unbroken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let children: Vec<_> = ["bds-r4-10", "synthea-10"]
        .iter()
        .map(|sample| {
            fhirlake()
                .args(["load", "--json", "--lake"])
                .arg(&lake)
                .arg(sample_dir(sample))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, report) = verify(&lake);
    assert_eq!(code, 0, "{report:#}");
    let events = audit_events(&lake, &[]);
    let jobs: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["job"].as_str()).collect();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        events.iter().filter(|e| e["step"] == "finish").count(),
        2,
        "both jobs finished in the one chain"
    );
}

#[test]
fn verify_of_a_path_that_holds_no_lake_is_an_error_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-lake-here");
    let out = fhirlake()
        .args(["verify", "--lake"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-lake-here") && stderr.contains("nothing to verify"),
        "{stderr}"
    );
}

/// An HL7 v2 load writes one Provenance per converted message beside the
/// job's: it targets exactly the resources the message became (all in the
/// lake), names the message by the SHA-256 the manifest logged, and is a
/// valid R4 Provenance.
#[test]
fn each_hl7v2_message_gets_a_provenance_naming_what_it_became() {
    let dir = tempfile::tempdir().unwrap();
    let lake = audited_lake(dir.path());
    let manifests = std::fs::read_dir(lake.join("_fhirlake/manifests"))
        .unwrap()
        .map(|e| {
            serde_json::from_slice::<Value>(&std::fs::read(e.unwrap().path()).unwrap()).unwrap()
        });
    let hl7 = manifests
        .into_iter()
        .find(|m| m.get("hl7v2").is_some())
        .unwrap();
    let converted: Vec<&Value> = hl7["hl7v2"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "converted")
        .collect();
    assert!(converted.len() > 10, "{} converted", converted.len());
    let Some(rows) = super::common::duckdb(&format!(
        "SELECT resource FROM {} WHERE job_id = '{}'",
        super::common::scan(&lake, "_provenance"),
        hl7["job_id"].as_str().unwrap()
    )) else {
        return;
    };
    let resources: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r[0].as_str().unwrap()).unwrap())
        .collect();
    let by_message: std::collections::BTreeMap<String, &Value> = resources
        .iter()
        .filter_map(|p| {
            let entity = p["entity"]
                .as_array()?
                .iter()
                .find(|e| e["what"]["identifier"]["system"] == "urn:fhirlake:hl7v2-message")?;
            Some((
                entity["what"]["identifier"]["value"].as_str()?.to_owned(),
                p,
            ))
        })
        .collect();
    assert_eq!(
        resources.len(),
        converted.len() + 1,
        "one per message, one for the job"
    );
    for message in &converted {
        let sha = message["sha256"].as_str().unwrap();
        let provenance = by_message
            .get(sha)
            .unwrap_or_else(|| panic!("no Provenance for message {message:#}"));
        let targets: Vec<&str> = provenance["target"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["reference"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = message["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(targets, expected, "message {}", message["control_id"]);
    }
    // Every target is a resource the lake holds.
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for message in &converted {
        for r in message["resources"].as_array().unwrap() {
            let (kind, id) = r.as_str().unwrap().split_once('/').unwrap();
            by_type
                .entry(kind.to_lowercase())
                .or_default()
                .push(id.to_owned());
        }
    }
    for (table, ids) in &by_type {
        let wanted: std::collections::BTreeSet<&String> = ids.iter().collect();
        let held = super::common::duckdb(&format!(
            "SELECT DISTINCT id FROM {}",
            super::common::scan(&lake, table)
        ))
        .unwrap();
        let held: std::collections::BTreeSet<String> = held
            .iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<_> = wanted.iter().filter(|id| !held.contains(**id)).collect();
        assert!(
            missing.is_empty(),
            "{table}: targets not in the lake: {missing:?}"
        );
    }
    let file = dir.path().join("provenance.json");
    std::fs::write(&file, serde_json::to_vec(&resources).unwrap()).unwrap();
    assert_valid_r4(&[file]);
}

/// A job whose policy differs from the one the lake's previous load ran
/// under records a policy-change event naming the previous version: a
/// first policy, and a load that left `--policy` out after one.
#[test]
fn a_change_of_policy_between_loads_is_an_audit_event() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let load = |n: u32, policy: Option<&str>| {
        let input = super::common::write_file(
            &dir.path().join(format!("in{n}")),
            "Patient.ndjson",
            &[super::common::patient(
                &format!("pc-{n}"),
                "2026-01-01T00:00:00Z",
                "1",
            )],
        );
        let mut cmd = fhirlake();
        cmd.args(["load", "--json", "--lake"]).arg(&lake).arg(input);
        if let Some(p) = policy {
            cmd.args(["--policy", p]);
        }
        run_json(&mut cmd, 0)
    };
    let changes = || {
        audit_events(&lake, &[])
            .into_iter()
            .filter(|e| e["step"] == "policy-change")
            .collect::<Vec<_>>()
    };
    load(1, None);
    assert!(changes().is_empty(), "no policy before, none now");
    let with_part2 = load(2, Some("part2"));
    let part2 = with_part2["policy_version"].as_str().unwrap().to_owned();
    let first = changes();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["policy"], part2.as_str());
    assert!(first[0]["event"].to_string().contains("\"previous\""));
    load(3, Some("part2"));
    assert_eq!(changes().len(), 1, "the same policy again is no change");
    load(4, None);
    let all = changes();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["policy"], "none");
    assert!(
        all[1]["event"].to_string().contains(&part2),
        "names the policy it replaced: {}",
        all[1]["event"]
    );
    let (code, report) = verify(&lake);
    assert_eq!(code, 0, "{report:#}");
}

/// The three sources into one lake: a Bulk export, a REST sync and an HL7 v2
/// load. The trail verifies, every job is in it from kick-off to finish,
/// and `fhirlake status` lists them with their kinds.
#[test]
fn an_export_a_sync_and_an_hl7v2_load_into_one_lake_verify() {
    let rt = crate::export::runtime();
    let bulk = rt.block_on(crate::bulk_server::BulkServer::start(
        crate::bulk_server::Config {
            files: crate::export::sample(&["Patient", "Encounter"]),
            ..Default::default()
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    crate::export::run(&mut crate::export::export(&bulk, &lake), 0);

    let rest = crate::fhir_server::FhirServer::start_blocking(Default::default());
    rest.seed_from_ndjson(sample_dir("bds-r4-10"));
    rest.advance(std::time::Duration::from_secs(600));
    let sync = fhirlake()
        .args(["sync", "--json", "--server", &rest.base, "--lake"])
        .arg(&lake)
        .args(["--backoff-ms", "5", "--type", "Patient,Observation"])
        .output()
        .unwrap();
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );

    let hl7 = fhirlake()
        .args(["hl7v2", "load", "--json", "--lake"])
        .arg(&lake)
        .arg(hl7v2_messages())
        .output()
        .unwrap();
    assert!(
        hl7.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&hl7.stderr)
    );

    let (code, report) = verify(&lake);
    assert_eq!(code, 0, "{report:#}");
    let status = run_json(
        fhirlake().args(["status", "--json", "--lake"]).arg(&lake),
        0,
    );
    let kinds: Vec<&str> = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    for kind in ["export", "sync", "hl7v2"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(
        status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["outcome"] == "success" || j["outcome"] == "warnings"),
        "{status:#}"
    );
    let events = audit_events(&lake, &[]);
    // `_audit` holds every event of the chain, the export's request to the
    // server (appended before its load began) included.
    let copied = super::common::sql_blocking(
        &super::common::open_lake(&lake),
        &["_audit"],
        "SELECT count(*) FROM _audit",
    );
    assert_eq!(copied[0][0], events.len() as i64, "every event copied");
    for job in status["jobs"].as_array().unwrap() {
        let steps: Vec<&str> = events
            .iter()
            .filter(|e| e["job"] == job["job_id"])
            .map(|e| e["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps.first(), Some(&"kickoff"), "{job}: {steps:?}");
        assert_eq!(steps.last(), Some(&"finish"), "{job}: {steps:?}");
    }
}
