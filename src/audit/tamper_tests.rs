//! Tampering, each caught by `verify` and named: a deleted event in the
//! middle, a cut-off tail (caught by an anchor), an edited event (carefully
//! re-canonicalized, or not), a forged appended event, a wrong anchor,
//! garbage and strays, and all of them at once.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use super::canonical;
use super::chain::AuditLog;
use super::chain_tests::{log, memory, stored, stored_json};
use super::fixtures::sample_event;
use super::values::Sha256;
use super::verify::{Anchor, Head, Problem};

const COMMIT_7: &str = "patient/_delta_log/00000000000000000007.json commitInfo";
const MANIFEST: &str = "_fhirlake/manifests/job-1.json";

/// A chain of `n` events and the heads its appends returned.
async fn chain(n: u64) -> (Arc<dyn ObjectStore>, AuditLog, Vec<Head>) {
    let store = memory();
    let chain = log(&store);
    let mut heads = Vec::new();
    for i in 0..n {
        heads.push(chain.append(&sample_event(i)).await.unwrap());
    }
    (store, chain, heads)
}

async fn overwrite(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) {
    store.put(path, PutPayload::from(bytes)).await.unwrap();
}

/// Changes event `seq`'s row count and stores it canonically, as a careful
/// forger would.
async fn edit(store: &Arc<dyn ObjectStore>, chain: &AuditLog, seq: u64) {
    let path = chain.event_path(seq);
    let mut event = stored_json(store, &path).await;
    let details = event["entity"][3]["detail"].as_array_mut().unwrap();
    let rows = details
        .iter_mut()
        .find(|d| d["type"] == "rowsInserted")
        .unwrap();
    rows["valueString"] = Value::from("999");
    overwrite(store, &path, canonical::canonical(&event)).await;
}

fn path(chain: &AuditLog, seq: u64) -> String {
    chain.event_path(seq).to_string()
}

#[tokio::test]
async fn an_untouched_chain_matches_its_anchors() {
    let (_, chain, heads) = chain(8).await;
    let anchors = [
        Anchor::new(heads[3], MANIFEST),
        Anchor::new(heads[7], COMMIT_7),
    ];
    let report = chain.verify(&anchors).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.events, 8);
    assert_eq!(report.head, Some(heads[7]));
}

#[tokio::test]
async fn a_deleted_event_in_the_middle_is_named() {
    let (store, chain, heads) = chain(8).await;
    store.delete(&chain.event_path(3)).await.unwrap();
    let report = chain
        .verify(&[Anchor::new(heads[3], MANIFEST)])
        .await
        .unwrap();
    assert_eq!(
        report.problems,
        [
            Problem::Missing {
                first: 3,
                last: 3,
                path: path(&chain, 3)
            },
            Problem::AnchorOnMissing {
                location: MANIFEST.into(),
                seq: 3,
                path: path(&chain, 3)
            },
        ]
    );
    assert_eq!(
        report.problems[0].to_string(),
        format!("{}: audit event 3 is missing", path(&chain, 3))
    );
}

#[tokio::test]
async fn a_cut_tail_is_caught_by_an_anchor_and_only_by_one() {
    let (store, chain, heads) = chain(8).await;
    store.delete(&chain.event_path(6)).await.unwrap();
    store.delete(&chain.event_path(7)).await.unwrap();
    store.delete(&chain.hint_path()).await.unwrap();
    // Links alone cannot see it: what is left is a perfect shorter chain.
    assert!(chain.verify(&[]).await.unwrap().is_clean());
    let report = chain
        .verify(&[Anchor::new(heads[7], COMMIT_7)])
        .await
        .unwrap();
    assert_eq!(
        report.problems,
        [Problem::AnchorBeyondEnd {
            location: COMMIT_7.into(),
            seq: 7,
            end: Some(5)
        }]
    );
    assert!(report.problems[0].to_string().starts_with(COMMIT_7));
}

#[tokio::test]
async fn a_cut_tail_with_the_hint_left_is_named_by_the_hint_too() {
    let (store, chain, _) = chain(4).await;
    store.delete(&chain.event_path(3)).await.unwrap();
    let report = chain.verify(&[]).await.unwrap();
    assert_eq!(
        report.problems,
        [Problem::HintBeyondEnd {
            path: chain.hint_path().to_string(),
            seq: 3,
            end: Some(2)
        }]
    );
}

#[tokio::test]
async fn an_edited_event_breaks_the_next_link_and_its_anchor() {
    let (store, chain, heads) = chain(6).await;
    edit(&store, &chain, 2).await;
    let edited = Sha256::of(&stored(&store, &chain.event_path(2)).await);
    let report = chain
        .verify(&[Anchor::new(heads[2], MANIFEST)])
        .await
        .unwrap();
    assert_eq!(
        report.problems,
        [
            Problem::AnchorMismatch {
                location: MANIFEST.into(),
                seq: 2,
                path: path(&chain, 2),
                anchored: heads[2].sha256,
                actual: edited,
            },
            Problem::BrokenLink {
                seq: 3,
                path: path(&chain, 3),
                previous_path: Some(path(&chain, 2)),
                expected: Some(edited),
                found: Some(heads[2].sha256.to_string()),
            },
        ]
    );
}

#[tokio::test]
async fn a_carelessly_edited_event_is_not_canonical() {
    let (store, chain, _) = chain(4).await;
    let p = chain.event_path(1);
    let pretty = serde_json::to_vec_pretty(&stored_json(&store, &p).await).unwrap();
    overwrite(&store, &p, pretty).await;
    let report = chain.verify(&[]).await.unwrap();
    // Same content, so the links hold; the rewrite itself is the problem.
    assert_eq!(
        report.problems,
        [Problem::NotCanonical {
            seq: 1,
            path: path(&chain, 1)
        }]
    );
}

#[tokio::test]
async fn a_forged_appended_event_with_a_wrong_previous_hash_is_named() {
    let (store, chain, heads) = chain(5).await;
    let forged = sample_event(99).linked(5, Some(Sha256::of(b"made up")));
    overwrite(&store, &chain.event_path(5), canonical::canonical(&forged)).await;
    let report = chain.verify(&[]).await.unwrap();
    assert_eq!(
        report.problems,
        [Problem::BrokenLink {
            seq: 5,
            path: path(&chain, 5),
            previous_path: Some(path(&chain, 4)),
            expected: Some(heads[4].sha256),
            found: Some(Sha256::of(b"made up").to_string()),
        }]
    );
}

#[tokio::test]
async fn a_copied_event_has_the_wrong_sequence_number_and_link() {
    let (store, chain, heads) = chain(5).await;
    let copy = stored(&store, &chain.event_path(2)).await;
    overwrite(&store, &chain.event_path(5), copy).await;
    let report = chain.verify(&[]).await.unwrap();
    assert_eq!(
        report.problems,
        [
            Problem::SequenceMismatch {
                seq: 5,
                path: path(&chain, 5),
                found: Some("2".into())
            },
            Problem::BrokenLink {
                seq: 5,
                path: path(&chain, 5),
                previous_path: Some(path(&chain, 4)),
                expected: Some(heads[4].sha256),
                found: Some(heads[1].sha256.to_string()),
            },
        ]
    );
}

#[tokio::test]
async fn a_wrong_anchor_is_named_by_its_location() {
    let (_, chain, heads) = chain(5).await;
    let wrong = Anchor {
        seq: 3,
        sha256: Sha256::of(b"not event 3"),
        location: COMMIT_7.into(),
    };
    let report = chain.verify(std::slice::from_ref(&wrong)).await.unwrap();
    assert_eq!(
        report.problems,
        [Problem::AnchorMismatch {
            location: COMMIT_7.into(),
            seq: 3,
            path: path(&chain, 3),
            anchored: wrong.sha256,
            actual: heads[3].sha256,
        }]
    );
    assert!(report.problems[0].to_string().starts_with(COMMIT_7));
}

#[tokio::test]
async fn garbage_strays_and_a_rewritten_genesis_are_named() {
    let (store, chain, _) = chain(5).await;
    overwrite(&store, &chain.event_path(3), b"\x00garbage".to_vec()).await;
    let dir = chain.events_dir();
    overwrite(&store, &dir.clone().join("notes.txt"), b"x".to_vec()).await;
    overwrite(
        &store,
        &dir.clone().join("old").join("00000000000000000001.json"),
        b"{}".to_vec(),
    )
    .await;
    let mut genesis = stored_json(&store, &chain.event_path(0)).await;
    genesis["extension"][0]["extension"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"url": "previous", "valueString": "00"}));
    overwrite(&store, &chain.event_path(0), canonical::canonical(&genesis)).await;
    let report = chain.verify(&[]).await.unwrap();
    let named: Vec<(&str, String)> = report
        .problems
        .iter()
        .map(|p| match p {
            Problem::Stray { path } => ("stray", path.clone()),
            Problem::Unreadable { path, .. } => ("unreadable", path.clone()),
            Problem::BrokenLink { path, .. } => ("link", path.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut strays: Vec<String> = named
        .iter()
        .filter(|(k, _)| *k == "stray")
        .map(|(_, p)| p.clone())
        .collect();
    strays.sort();
    assert_eq!(
        strays,
        [
            format!("{dir}/notes.txt"),
            format!("{dir}/old/00000000000000000001.json")
        ]
    );
    let rest: Vec<(&str, String)> = named.into_iter().filter(|(k, _)| *k != "stray").collect();
    assert_eq!(
        rest,
        [
            ("link", path(&chain, 0)),
            ("link", path(&chain, 1)),
            ("unreadable", path(&chain, 3)),
            ("link", path(&chain, 4)),
        ]
    );
}

#[tokio::test]
async fn every_problem_is_reported_not_just_the_first() {
    let (store, chain, heads) = chain(10).await;
    store.delete(&chain.event_path(2)).await.unwrap();
    edit(&store, &chain, 5).await;
    let forged = sample_event(99).linked(10, Some(Sha256::of(b"made up")));
    overwrite(&store, &chain.event_path(10), canonical::canonical(&forged)).await;
    let anchors = [
        Anchor::new(heads[2], "a"),
        Anchor::new(heads[7], "b"),
        Anchor {
            seq: 8,
            sha256: Sha256::of(b"x"),
            location: "c".into(),
        },
        Anchor {
            seq: 11,
            sha256: Sha256::of(b"y"),
            location: "d".into(),
        },
    ];
    let report = chain.verify(&anchors).await.unwrap();
    let kinds: Vec<String> = report
        .problems
        .iter()
        .map(|p| {
            let v = serde_json::to_value(p).unwrap();
            let seq = v.get("seq").or(v.get("first")).unwrap().clone();
            format!("{} {seq}", v["problem"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "missing 2",
            "broken_link 6",
            "anchor_mismatch 8",
            "broken_link 10",
            "anchor_on_missing 2",
            "anchor_beyond_end 11",
        ]
    );
    assert_eq!(report.events, 10);
    assert_eq!(report.head.map(|h| h.seq), Some(10));
}
