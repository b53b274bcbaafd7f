//! No token, key or secret in any record: every step, under every kind of
//! principal, built from inputs with secrets planted (a token response, a
//! bearer JWT, pre-signed URLs, URL passwords), appended to a chain; then
//! every stored byte is searched.

use chrono::DateTime;

use super::chain_tests::{log, memory, stored};
use super::context::{JobContext, JobKind};
use super::fixtures::{self, SECRETS, access_token, at, every_step};
use super::principal::Principal;
use super::provenance::Target;
use super::values::TableName;

fn contexts() -> Vec<JobContext> {
    let base = fixtures::context(JobKind::Export);
    vec![
        base.clone(),
        base.clone()
            .with_principal(Principal::from_bearer_token(&access_token())),
        base.with_principal(Principal::Unknown),
        fixtures::context(JobKind::Maintenance),
        fixtures::context(JobKind::Policy),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} holds {secret:?}:\n{text}");
    }
    assert!(!text.contains(&access_token()), "{what} holds the token");
}

#[tokio::test]
async fn no_stored_record_holds_a_secret() {
    let store = memory();
    let chain = log(&store);
    let mut appended = 0;
    for ctx in contexts() {
        for step in every_step() {
            let event = ctx.event(&step, at("2026-11-25T01:20:00Z"));
            assert_clean("an event", &serde_json::to_string(&event).unwrap());
            chain.append(&event).await.unwrap();
            appended += 1;
        }
        let provenance = ctx
            .provenance(
                &[Target::TableVersion {
                    table: TableName::new("patient").unwrap(),
                    version: 1,
                }],
                DateTime::parse_from_rfc3339("2026-11-25T01:15:00Z").unwrap(),
                at("2026-11-25T01:20:00Z"),
                fixtures::sha("manifest"),
            )
            .unwrap();
        assert_clean("a provenance", &serde_json::to_string(&provenance).unwrap());
    }
    let mut bytes = stored(&store, &chain.hint_path()).await;
    for seq in 0..appended {
        bytes.extend(stored(&store, &chain.event_path(seq)).await);
    }
    assert_clean("the stored chain", &String::from_utf8_lossy(&bytes));
    // And the identities the secrets came with did make it in.
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("fhirlake-prod") && text.contains("svc-fhirlake"));
    assert!(text.contains("https://files.example.org/out/Patient.000.ndjson"));
}
