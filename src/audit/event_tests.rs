use serde_json::Value;

use super::super::context::{JobContext, JobKind};
use super::super::fixtures::{self, at, every_step};
use super::super::principal::Principal;
use super::super::step::Step;
use super::super::values::{Identity, JobId, Sha256};
use super::*;

fn build(ctx: &JobContext, step: &Step) -> Value {
    ctx.event(step, at("2026-11-25T01:20:00.250+01:00"))
        .into_json()
}

fn step_of(pred: impl Fn(&Step) -> bool) -> Step {
    every_step().into_iter().find(pred).expect("fixture step")
}

/// The entity whose identifier has this system.
fn entity<'a>(event: &'a Value, system: &str) -> &'a Value {
    event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["what"]["identifier"]["system"] == system)
        .unwrap_or_else(|| panic!("no entity {system} in {event:#}"))
}

fn details(entity: &Value) -> Vec<(String, String)> {
    entity["detail"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| {
                    (
                        x["type"].as_str().unwrap().to_owned(),
                        x["valueString"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn detail_of(entity: &Value, name: &str) -> String {
    details(entity)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no detail {name} in {entity:#}"))
}

/// FHIR ele-1: no element is empty (no "", [], {}).
fn assert_no_empty(value: &Value, path: &str) {
    match value {
        Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
        Value::Array(items) => {
            assert!(!items.is_empty(), "empty array at {path}");
            for (i, item) in items.iter().enumerate() {
                assert_no_empty(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            assert!(!map.is_empty(), "empty object at {path}");
            for (k, v) in map {
                assert_no_empty(v, &format!("{path}.{k}"));
            }
        }
        Value::Null => panic!("null at {path}"),
        Value::Number(_) => panic!("number at {path}: counts are strings in R4 details"),
        Value::Bool(_) => {}
    }
}

#[test]
fn every_step_has_the_common_frame_and_no_empty_element() {
    let ctx = fixtures::context(JobKind::Export);
    for step in every_step() {
        let event = build(&ctx, &step);
        assert_no_empty(&event, "AuditEvent");
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["recorded"], "2026-11-25T01:20:00.250+01:00");
        assert_eq!(event["subtype"][0]["system"], codes::STEP_SYSTEM);
        assert_eq!(event["subtype"][0]["code"], step.kind().code());
        assert_eq!(
            entity(&event, codes::JOB_ID)["what"]["identifier"]["value"],
            "export-20261125T011500.000Z-1a2b3c4d"
        );
        assert_eq!(
            entity(&event, codes::POLICY)["what"]["identifier"]["value"],
            fixtures::sha("policy v3").to_string()
        );
        assert!(
            entity(&event, codes::MANIFEST)["what"]["identifier"]["value"]
                .as_str()
                .unwrap()
                .starts_with("_fhirlake/manifests/")
        );
        assert!(event.get("extension").is_none(), "the chain adds the link");
        assert_eq!(
            event["source"]["observer"]["display"],
            format!("fhirlake {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn the_oauth_principal_is_the_requestor_with_its_granted_scopes() {
    let ctx = fixtures::context(JobKind::Export);
    let event = build(&ctx, &every_step()[0]);
    let agents = event["agent"].as_array().unwrap();
    let client = &agents[0];
    assert_eq!(client["type"]["coding"][0]["code"], "110150");
    assert_eq!(client["who"]["identifier"]["value"], "fhirlake-prod");
    // The token's iss names the authorization server.
    assert_eq!(
        client["who"]["identifier"]["system"],
        "https://auth.example.org/realm"
    );
    let scopes: Vec<&str> = client["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["system/Patient.rs", "system/Observation.rs"]);
    assert_eq!(client["requestor"], false);
    let user = &agents[1];
    assert_eq!(user["type"]["coding"][0]["code"], "UserOauthAgent");
    assert_eq!(user["who"]["identifier"]["value"], "svc-fhirlake");
    assert_eq!(user["requestor"], true);
    let fhirlake = &agents[2];
    assert_eq!(fhirlake["type"]["coding"][0]["code"], "dataprocessor");
    assert_eq!(fhirlake["requestor"], false);
    let source = &agents[3];
    assert_eq!(source["type"]["coding"][0]["code"], "110153");
    assert_eq!(source["network"]["address"], "https://ehr.example.org/fhir");
    assert_eq!(source["network"]["type"], "5");
    let lake = &agents[4];
    assert_eq!(lake["type"]["coding"][0]["code"], "110152");
    assert_eq!(lake["who"]["identifier"]["value"], "s3://lake/fhir");
    assert_eq!(event["source"]["site"], "s3://lake/fhir");
}

#[test]
fn a_local_user_or_nobody_known_is_the_requestor() {
    let job = JobId::new("20261125T011500.000Z-1a2b3c4d").unwrap();
    let step = &every_step()[1];
    let local = JobContext::new(job.clone(), JobKind::Load)
        .with_principal(Principal::LocalUser(Identity::new("jdoe").unwrap()));
    let event = build(&local, step);
    assert_eq!(event["agent"][0]["type"]["coding"][0]["code"], "humanuser");
    assert_eq!(event["agent"][0]["requestor"], true);
    assert_eq!(event["agent"][1]["requestor"], false);
    let nobody = JobContext::new(job, JobKind::Load);
    let event = build(&nobody, step);
    let agents = event["agent"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "only fhirlake: {agents:#?}");
    assert_eq!(agents[0]["requestor"], true);
    // Without a policy or a manifest: "none", and no manifest entity.
    assert_eq!(
        entity(&event, codes::POLICY)["what"]["identifier"]["value"],
        "none"
    );
    assert!(
        event["entity"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["what"]["identifier"]["system"] != codes::MANIFEST)
    );
}

#[test]
fn a_bulk_kick_off_records_the_request() {
    let event = build(&fixtures::context(JobKind::Export), &every_step()[0]);
    assert_eq!(event["type"]["code"], "110107");
    assert_eq!(event["action"], "E");
    assert_eq!(event["subtype"][1]["code"], "operation");
    let request = event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"]["code"] == "24")
        .unwrap();
    assert_eq!(request["name"], "$export");
    assert_eq!(
        details(request),
        [
            ("level".to_owned(), "group".to_owned()),
            ("group".to_owned(), "123".to_owned()),
            ("_type".to_owned(), "Patient,Observation".to_owned()),
            (
                "_since".to_owned(),
                "2026-11-24T01:15:02.123+00:00".to_owned()
            ),
        ]
    );
}

#[test]
fn an_input_file_names_its_digest_and_counts_without_the_query() {
    let step = step_of(|s| matches!(s, Step::InputFile(f) if f.resource_type.is_some()));
    let event = build(&fixtures::context(JobKind::Export), &step);
    assert_eq!(event["action"], "C");
    let file = entity(&event, codes::FILE);
    assert_eq!(
        file["what"]["identifier"]["value"],
        "https://files.example.org/out/Patient.000.ndjson"
    );
    assert_eq!(
        detail_of(file, "sha256"),
        fixtures::sha("patient file").to_string()
    );
    assert_eq!(detail_of(file, "lines"), "10");
    assert_eq!(detail_of(file, "bytes"), "12345");
    let patients = event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"]["system"] == codes::RESOURCE_TYPES)
        .unwrap();
    assert_eq!(patients["type"]["code"], "Patient");
    assert_eq!(event["period"]["start"], "2026-11-25T01:16:00.000+01:00");
    assert_eq!(event["period"]["end"], "2026-11-25T01:20:00.250+01:00");
}

#[test]
fn a_table_commit_names_the_table_version_and_rows() {
    let ctx = fixtures::context(JobKind::Export);
    let upsert = build(
        &ctx,
        &step_of(|s| matches!(s, Step::TableCommit(c) if c.version == 7)),
    );
    assert_eq!(upsert["action"], "U", "rows were updated");
    let table = entity(&upsert, codes::TABLE);
    assert_eq!(table["what"]["identifier"]["value"], "patient");
    assert_eq!(table["role"]["code"], "22");
    assert_eq!(detail_of(table, "deltaVersion"), "7");
    assert_eq!(detail_of(table, "rowsInserted"), "8");
    assert_eq!(detail_of(table, "rowsUpdated"), "2");
    let append = build(
        &ctx,
        &step_of(|s| matches!(s, Step::TableCommit(c) if c.version == 3)),
    );
    assert_eq!(append["action"], "C");
    assert_eq!(entity(&append, codes::TABLE)["lifecycle"]["code"], "2");
}

#[test]
fn deletions_and_quarantine_count_what_they_did() {
    let ctx = fixtures::context(JobKind::Export);
    let deleted = build(&ctx, &step_of(|s| matches!(s, Step::Deletions(_))));
    assert_eq!(deleted["action"], "D");
    let table = entity(&deleted, codes::TABLE);
    assert_eq!(table["lifecycle"]["code"], "14");
    assert_eq!(detail_of(table, "deltaVersion"), "8");
    assert_eq!(detail_of(table, "rowsDeleted"), "2");
    let quarantined = build(&ctx, &step_of(|s| matches!(s, Step::Quarantine(_))));
    let table = entity(&quarantined, codes::TABLE);
    assert_eq!(table["what"]["identifier"]["value"], "_quarantine");
    assert_eq!(detail_of(table, "reason not_utf8"), "1");
    assert_eq!(detail_of(table, "reason server_error"), "3");
}

#[test]
fn a_finish_carries_the_outcome_the_manifest_digest_and_the_tables() {
    let ctx = fixtures::context(JobKind::Export);
    let finishes: Vec<Value> = every_step()
        .iter()
        .filter(|s| matches!(s, Step::Finish(_)))
        .map(|s| build(&ctx, s))
        .collect();
    let outcomes: Vec<&str> = finishes
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["0", "4", "8", "8", "4"]);
    let ok = &finishes[0];
    assert!(ok.get("outcomeDesc").is_none());
    assert_eq!(
        detail_of(entity(ok, codes::MANIFEST), "sha256"),
        fixtures::sha("manifest").to_string()
    );
    let tables: Vec<(String, String)> = ok["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"]["identifier"]["system"] == codes::TABLE)
        .map(|e| {
            (
                e["what"]["identifier"]["value"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                detail_of(e, "deltaVersion"),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("patient".to_owned(), "8".to_owned()),
            ("_quarantine".to_owned(), "12".to_owned())
        ]
    );
    assert_eq!(detail_of(entity(ok, codes::JOB_ID), "quarantined"), "4");
    assert_eq!(ok["period"]["start"], "2026-11-25T01:15:00.000+01:00");
    assert_eq!(
        finishes[2]["outcomeDesc"],
        "failed at input file read: HTTP status 503 (https://files.example.org/out/Observation.000.ndjson)"
    );
    assert_eq!(finishes[3]["outcomeDesc"], "failed: storage failure");
    assert_eq!(finishes[4]["outcomeDesc"], "cancelled");
}

#[test]
fn maintenance_and_policy_changes_are_not_imports() {
    let ctx = fixtures::context(JobKind::Maintenance);
    let vacuum = build(
        &ctx,
        &step_of(|s| matches!(s, Step::Maintenance(m) if m.version.is_none())),
    );
    assert_eq!(vacuum["type"]["code"], "110100");
    assert_eq!(vacuum["action"], "D");
    assert_eq!(entity(&vacuum, codes::TABLE)["lifecycle"]["code"], "15");
    let finish = build(&ctx, &step_of(|s| matches!(s, Step::Finish(_))));
    assert_eq!(finish["type"]["code"], "110100");

    let ctx = fixtures::context(JobKind::Policy);
    let change = build(&ctx, &step_of(|s| matches!(s, Step::PolicyChange(_))));
    assert_eq!(change["type"]["code"], "110113");
    assert_eq!(change["subtype"][1]["code"], "110129");
    let policies: Vec<(String, String)> = change["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"]["identifier"]["system"] == codes::POLICY)
        .map(|e| {
            (
                e["what"]["identifier"]["value"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                detail_of(e, "policy"),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [
            (
                fixtures::sha("policy v3").to_string(),
                "in force".to_owned()
            ),
            ("none".to_owned(), "previous".to_owned())
        ]
    );
}

#[test]
fn the_chain_link_is_an_extension_with_sequence_and_previous() {
    let event =
        fixtures::context(JobKind::Load).event(&every_step()[1], at("2026-01-01T00:00:00Z"));
    let first = event.linked(0, None);
    assert_eq!(
        first["extension"],
        serde_json::json!([{"url": codes::EXT_CHAIN, "extension": [{"url": "sequence", "valueString": "0"}]}])
    );
    let previous = Sha256::of(b"x");
    let later = event.linked(41, Some(previous));
    assert_eq!(later["extension"][0]["extension"][0]["valueString"], "41");
    assert_eq!(
        later["extension"][0]["extension"][1],
        serde_json::json!({"url": "previous", "valueString": previous.to_string()})
    );
    assert_eq!(later["id"], first["id"]);
}
