//! Appending: numbering and links, put-if-absent, the head hint in every
//! state (stale, missing, forged, past a cut tail), and concurrent writers
//! on an in-memory and a local-file store.

use std::collections::BTreeSet;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use super::canonical;
use super::chain::AuditLog;
use super::context::JobKind;
use super::fixtures::{self, sample_event};
use super::step::{KickOff, Operation};
use super::values::Sha256;
use super::verify::{Head, Problem};

pub(super) fn memory() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

pub(super) fn log(store: &Arc<dyn ObjectStore>) -> AuditLog {
    AuditLog::new(store.clone(), Path::from("lake/_fhirlake/audit"))
}

pub(super) async fn stored(store: &Arc<dyn ObjectStore>, path: &Path) -> Vec<u8> {
    store
        .get(path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

pub(super) async fn stored_json(store: &Arc<dyn ObjectStore>, path: &Path) -> Value {
    serde_json::from_slice(&stored(store, path).await).unwrap()
}

fn link(event: &Value) -> (String, Option<String>) {
    let parts = event["extension"][0]["extension"].as_array().unwrap();
    let sequence = parts[0]["valueString"].as_str().unwrap().to_owned();
    let previous = parts
        .get(1)
        .map(|p| p["valueString"].as_str().unwrap().to_owned());
    (sequence, previous)
}

#[tokio::test]
async fn appends_are_numbered_linked_canonical_and_return_the_head() {
    let store = memory();
    let chain = log(&store);
    let mut heads = Vec::new();
    for n in 0..3 {
        heads.push(chain.append(&sample_event(n)).await.unwrap());
    }
    assert_eq!(heads.iter().map(|h| h.seq).collect::<Vec<_>>(), [0, 1, 2]);
    for (i, head) in heads.iter().enumerate() {
        let path = chain.event_path(head.seq);
        assert_eq!(
            path.as_ref(),
            format!("lake/_fhirlake/audit/events/{:020}.json", i)
        );
        let bytes = stored(&store, &path).await;
        assert_eq!(head.sha256, Sha256::of(&bytes));
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(canonical::canonical(&value), bytes, "stored canonical");
        let (sequence, previous) = link(&value);
        assert_eq!(sequence, i.to_string());
        assert_eq!(
            previous,
            i.checked_sub(1).map(|p| heads[p].sha256.to_string())
        );
    }
    let hint: Head = serde_json::from_slice(&stored(&store, &chain.hint_path()).await).unwrap();
    assert_eq!(hint, heads[2]);
    let report = chain.verify(&[]).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.events, 3);
    assert_eq!(report.head, Some(heads[2]));
}

#[tokio::test]
async fn emit_records_a_step_with_the_local_time_and_offset() {
    let store = memory();
    let chain = log(&store);
    let ctx = fixtures::context(JobKind::Load);
    let head = chain
        .emit(
            &ctx,
            KickOff {
                operation: Operation::Load,
                resource_types: Vec::new(),
                since: None,
                until: None,
                inputs: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(head.seq, 0);
    let event = stored_json(&store, &chain.event_path(0)).await;
    assert_eq!(event["subtype"][0]["code"], "kickoff");
    let recorded = event["recorded"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(recorded).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60);
    assert!(recorded.ends_with(&at.offset().to_string()), "{recorded}");
}

#[tokio::test]
async fn a_taken_sequence_number_is_never_rewritten() {
    let store = memory();
    let first = log(&store);
    first.append(&sample_event(0)).await.unwrap();
    let original = stored(&store, &first.event_path(0)).await;
    // A writer that knows nothing (no hint) must not overwrite event 0.
    store.delete(&first.hint_path()).await.unwrap();
    let second = log(&store);
    assert_eq!(second.append(&sample_event(1)).await.unwrap().seq, 1);
    assert_eq!(stored(&store, &first.event_path(0)).await, original);
    // Nor may one whose remembered head is stale: it loses seq 2 and takes 3.
    let third = log(&store);
    assert_eq!(third.append(&sample_event(2)).await.unwrap().seq, 2);
    assert_eq!(second.append(&sample_event(3)).await.unwrap().seq, 3);
    assert!(second.verify(&[]).await.unwrap().is_clean());
}

#[tokio::test]
async fn an_append_that_already_landed_is_not_made_twice() {
    let store = memory();
    let chain = log(&store);
    let mut heads = Vec::new();
    for n in 0..3 {
        heads.push(chain.append(&sample_event(n)).await.unwrap());
    }
    // The first try of appending `event` stored it, but its answer was lost.
    let event = sample_event(3);
    let landed = canonical::canonical(&event.linked(3, Some(heads[2].sha256)));
    store
        .put(&chain.event_path(3), PutPayload::from(landed.clone()))
        .await
        .unwrap();
    let retried = chain.append(&event).await.unwrap();
    assert_eq!(
        retried,
        Head {
            seq: 3,
            sha256: Sha256::of(&landed)
        }
    );
    assert_eq!(chain.head().await.unwrap(), Some(retried));
    // A different event at that number is another writer's: link past it.
    let other = log(&store);
    assert_eq!(other.append(&sample_event(4)).await.unwrap().seq, 4);
    assert!(chain.verify(&[]).await.unwrap().is_clean());
}

#[tokio::test]
async fn a_stale_or_missing_hint_costs_probes_not_correctness() {
    let store = memory();
    let a = log(&store);
    let mut heads = Vec::new();
    for n in 0..5 {
        heads.push(a.append(&sample_event(n)).await.unwrap());
    }
    let hint_path = a.hint_path();
    store
        .put(
            &hint_path,
            PutPayload::from(serde_json::to_vec(&heads[1]).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(log(&store).append(&sample_event(5)).await.unwrap().seq, 5);
    store.delete(&hint_path).await.unwrap();
    assert_eq!(log(&store).head().await.unwrap().unwrap().seq, 5);
    assert_eq!(log(&store).append(&sample_event(6)).await.unwrap().seq, 6);
    store
        .put(&hint_path, PutPayload::from_static(b"not a hint"))
        .await
        .unwrap();
    assert_eq!(log(&store).append(&sample_event(7)).await.unwrap().seq, 7);
    let report = a.verify(&[]).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.events, 8);
}

#[tokio::test]
async fn a_forged_hint_does_not_fork_the_chain() {
    let store = memory();
    let a = log(&store);
    for n in 0..3 {
        a.append(&sample_event(n)).await.unwrap();
    }
    let forged = Head {
        seq: 2,
        sha256: Sha256::of(b"forged"),
    };
    store
        .put(
            &a.hint_path(),
            PutPayload::from(serde_json::to_vec(&forged).unwrap()),
        )
        .await
        .unwrap();
    let b = log(&store);
    let head = b.append(&sample_event(3)).await.unwrap();
    assert_eq!(head.seq, 3);
    let real = Sha256::of(&stored(&store, &a.event_path(2)).await);
    let event = stored_json(&store, &a.event_path(3)).await;
    assert_eq!(link(&event).1, Some(real.to_string()));
    assert!(b.verify(&[]).await.unwrap().is_clean());
}

#[tokio::test]
async fn a_cut_tail_is_continued_after_never_refilled() {
    let store = memory();
    let a = log(&store);
    let mut heads = Vec::new();
    for n in 0..5 {
        heads.push(a.append(&sample_event(n)).await.unwrap());
    }
    store.delete(&a.event_path(3)).await.unwrap();
    store.delete(&a.event_path(4)).await.unwrap();
    let b = log(&store);
    let head = b.append(&sample_event(5)).await.unwrap();
    assert_eq!(head.seq, 5, "the hint said 4: the gap stays");
    let event = stored_json(&store, &a.event_path(5)).await;
    assert_eq!(link(&event).1, Some(heads[4].sha256.to_string()));
    let report = b.verify(&[]).await.unwrap();
    assert_eq!(
        report.problems,
        [Problem::Missing {
            first: 3,
            last: 4,
            path: a.event_path(3).to_string()
        }]
    );
    assert_eq!(report.head.map(|h| h.seq), Some(5));
}

#[tokio::test]
async fn head_follows_the_chain_past_what_it_knew() {
    let store = memory();
    let a = log(&store);
    let b = log(&store);
    assert_eq!(b.head().await.unwrap(), None);
    for n in 0..3 {
        a.append(&sample_event(n)).await.unwrap();
    }
    assert_eq!(b.head().await.unwrap().map(|h| h.seq), Some(2));
    for n in 3..5 {
        a.append(&sample_event(n)).await.unwrap();
    }
    let head = b.head().await.unwrap().unwrap();
    assert_eq!(head.seq, 4);
    assert_eq!(
        head.sha256,
        Sha256::of(&stored(&store, &a.event_path(4)).await)
    );
}

/// `writers` tasks, each with its own `AuditLog` (like separate processes)
/// or all sharing one, append `each` events at once.
async fn race(store: Arc<dyn ObjectStore>, writers: u64, each: u64, shared: bool) {
    let one = Arc::new(log(&store));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let chain = if shared {
            one.clone()
        } else {
            Arc::new(log(&store))
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..each {
                let event = sample_event(w * 1000 + i);
                let id = event.as_json()["id"].as_str().unwrap().to_owned();
                mine.push((chain.append(&event).await.unwrap().seq, id));
            }
            mine
        }));
    }
    let mut seqs = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for task in tasks {
        for (seq, id) in task.await.unwrap() {
            assert!(seqs.insert(seq), "seq {seq} returned twice");
            ids.insert(id);
        }
    }
    let total = writers * each;
    assert_eq!(seqs, (0..total).collect::<BTreeSet<_>>(), "no gaps");
    let chain = log(&store);
    let report = chain.verify(&[]).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.events, total);
    let mut stored_ids = BTreeSet::new();
    for seq in 0..total {
        let event = stored_json(&store, &chain.event_path(seq)).await;
        stored_ids.insert(event["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(stored_ids, ids, "every event stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_make_one_chain_in_memory() {
    race(memory(), 8, 12, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_sharing_one_log_make_one_chain() {
    race(memory(), 6, 10, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_make_one_chain_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    race(store, 4, 10, false).await;
    let events = dir.path().join("lake/_fhirlake/audit/events");
    let mut names: Vec<String> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 40);
    assert_eq!(names[0], "00000000000000000000.json");
    assert_eq!(names[39], "00000000000000000039.json");
}
