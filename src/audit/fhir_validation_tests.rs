//! Every record validates as FHIR R4, checked by
//! `tests/support/validate_fhir.py` (fhir.resources models plus R4's
//! required bindings and invariants; the official R4 JSON schema too when
//! `FHIRLAKE_FHIR_SCHEMA` names it). Python comes from `FHIRLAKE_PYTHON` or
//! `~/.cache/fhirlake-venv`; without a validator the test says so loudly
//! and passes, unless `FHIRLAKE_REQUIRE_FHIR_VALIDATOR` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::chain_tests::{log, memory, stored};
use super::context::JobKind;
use super::fixtures::{self, at, every_step};
use super::principal::Principal;
use super::provenance::Target;
use super::values::{ResourceId, ResourceType, TableName};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FHIRLAKE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    let venv = Path::new(&home).join(".cache/fhirlake-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs the validator on `files`; `None` when it cannot run here.
fn validate(files: &[PathBuf]) -> Option<Output> {
    let required = std::env::var("FHIRLAKE_REQUIRE_FHIR_VALIDATOR").is_ok();
    let Some(python) = python() else {
        assert!(
            !required,
            "FHIRLAKE_REQUIRE_FHIR_VALIDATOR is set but no Python venv was found"
        );
        eprintln!("!!! SKIPPING FHIR validation: no FHIRLAKE_PYTHON or ~/.cache/fhirlake-venv");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate_fhir.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(files)
        .output()
        .expect("python runs");
    if out.status.code() == Some(2) {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(!required, "the FHIR validator cannot run: {why}");
        eprintln!("!!! SKIPPING FHIR validation: {why}");
        return None;
    }
    Some(out)
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn every_stored_event_and_provenance_is_valid_r4() {
    let dir = tempfile::tempdir().unwrap();
    let store = memory();
    let chain = log(&store);
    let contexts = [
        fixtures::context(JobKind::Export),
        fixtures::context(JobKind::Load).with_principal(Principal::LocalUser(
            super::values::Identity::new("jdoe").unwrap(),
        )),
        fixtures::context(JobKind::Hl7v2).with_principal(Principal::Unknown),
        fixtures::context(JobKind::Maintenance),
        fixtures::context(JobKind::Policy),
    ];
    let mut events = Vec::new();
    for ctx in &contexts {
        for step in every_step() {
            let head = chain
                .append(&ctx.event(&step, at("2026-11-25T01:20:00.250+01:00")))
                .await
                .unwrap();
            let bytes = stored(&store, &chain.event_path(head.seq)).await;
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            events.push(value);
        }
    }
    let mut files = vec![write(dir.path(), "events.json", &Value::Array(events))];
    let targets = [
        vec![Target::TableVersion {
            table: TableName::new("patient").unwrap(),
            version: 8,
        }],
        vec![Target::Resource {
            resource_type: ResourceType::new("Patient").unwrap(),
            id: ResourceId::new("p1").unwrap(),
            version_id: Some(ResourceId::new("2").unwrap()),
        }],
    ];
    for (i, ctx) in contexts.iter().enumerate() {
        for (j, t) in targets.iter().enumerate() {
            let p = ctx
                .provenance(
                    t,
                    at("2026-11-25T01:15:00Z"),
                    at("2026-11-25T01:20:00Z"),
                    fixtures::sha("manifest"),
                )
                .unwrap();
            files.push(write(
                dir.path(),
                &format!("provenance-{i}-{j}.json"),
                &p.into_json(),
            ));
        }
    }
    let Some(out) = validate(&files) else { return };
    assert!(
        out.status.success(),
        "invalid FHIR R4:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{} resources, 0 invalid",
        contexts.len() * every_step().len() + 10
    );
    assert!(summary.contains(&expected), "{summary}");
}

#[test]
fn the_validator_refuses_what_r4_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut event = fixtures::sample_event(1).into_json();
    event["action"] = Value::from("X");
    event.as_object_mut().unwrap().remove("recorded");
    event["entity"][0]["detail"] = Value::Array(Vec::new());
    let file = write(dir.path(), "bad.json", &event);
    let Some(out) = validate(&[file]) else { return };
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    for expected in ["action", "recorded", "ele-1"] {
        assert!(
            errors.contains(expected),
            "{expected} not named in:\n{errors}"
        );
    }
}
