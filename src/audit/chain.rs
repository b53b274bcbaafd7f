//! The hash chain in an object store: append, find the head, read back.
//!
//! In: AuditEvents and an `ObjectStore` with a prefix. Out: events stored
//! as `<prefix>/events/<seq:020>.json` in canonical JSON, each linking to
//! the hash of the one before, and a [`Head`] per append for callers to
//! anchor elsewhere. An event is created put-if-absent and never rewritten;
//! a writer that loses a sequence number to another reads the winner,
//! links to it and tries the next, so concurrent writers (processes or
//! tasks) end in one chain without gaps or duplicates.
//!
//! `<prefix>/head.json` is a hint, rewritten after each append: a reader
//! checks that the event it names exists and hashes the event itself, and
//! an append moves past the hint by trying the following numbers; a hint
//! that names a missing event (a cut-off tail) is continued from, never
//! refilled, so the gap stays for `verify` to report.

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::canonical::{self, Stored};
use super::context::JobContext;
use super::error::ChainError;
use super::event::AuditEvent;
use super::step::Step;
use super::values::Sha256;
use super::verify::{Anchor, Head, Hint, Report, Verifier};

/// The folder under the prefix that holds the events, `<seq:020>.json` each.
pub const EVENTS_DIR: &str = "events";
/// The head hint under the prefix: `{"seq": N, "sha256": "…"}`.
pub const HEAD_HINT: &str = "head.json";

/// Sequence numbers one append may lose in a row before giving up.
const MAX_ATTEMPTS: u32 = 1000;
/// Events read at once by `verify`.
const READ_AHEAD: usize = 8;

/// A lake's audit chain. Cheap to share; appends from any number of tasks
/// and processes interleave safely.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The newest head this process has written or read.
    known: Mutex<Option<Head>>,
}

fn store_err(path: &Path) -> impl FnOnce(object_store::Error) -> ChainError + '_ {
    move |source| ChainError::Store {
        path: path.to_string(),
        source,
    }
}

impl AuditLog {
    /// The chain under `prefix` (fhirlake uses `<lake>/_fhirlake/audit`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            store,
            prefix,
            known: Mutex::new(None),
        }
    }

    /// `<prefix>/events`.
    pub fn events_dir(&self) -> Path {
        self.prefix.clone().join(EVENTS_DIR)
    }

    /// `<prefix>/events/<seq:020>.json`, the name event `seq` has.
    pub fn event_path(&self, seq: u64) -> Path {
        self.events_dir().join(format!("{seq:020}.json"))
    }

    /// `<prefix>/head.json`.
    pub fn hint_path(&self) -> Path {
        self.prefix.clone().join(HEAD_HINT)
    }

    /// Records `step` of the job now (local time, with its offset).
    pub async fn emit(&self, ctx: &JobContext, step: impl Into<Step>) -> Result<Head, ChainError> {
        self.emit_stored(ctx, step).await.map(|(head, _)| head)
    }

    /// [`Self::emit`], also returning the event as stored.
    pub async fn emit_stored(
        &self,
        ctx: &JobContext,
        step: impl Into<Step>,
    ) -> Result<(Head, Vec<u8>), ChainError> {
        let now = chrono::Local::now().fixed_offset();
        self.append_stored(&ctx.event(&step.into(), now)).await
    }

    /// Appends `event` at the end of the chain; returns the new head.
    ///
    /// Idempotent for one `event`: if an earlier try of this append landed
    /// (a timed-out request that the store carried out), the event found at
    /// its sequence number is byte for byte this one and its head is
    /// returned, so retry with the same `AuditEvent`, not a rebuilt one.
    pub async fn append(&self, event: &AuditEvent) -> Result<Head, ChainError> {
        self.append_stored(event).await.map(|(head, _)| head)
    }

    /// [`Self::append`], also returning the event exactly as stored (with
    /// its link), for copies such as the lake's `_audit` table.
    pub async fn append_stored(&self, event: &AuditEvent) -> Result<(Head, Vec<u8>), ChainError> {
        let mut head = match self.remembered() {
            Some(head) => Some(head),
            None => self.find_head().await?,
        };
        let mut path = self.event_path(0);
        for _ in 0..MAX_ATTEMPTS {
            let seq = head.map_or(0, |h| h.seq + 1);
            path = self.event_path(seq);
            let body = canonical::canonical(&event.linked(seq, head.map(|h| h.sha256)));
            let mine = Head {
                seq,
                sha256: Sha256::of(&body),
            };
            let create = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(body.clone()), create)
                .await
            {
                Ok(_) => return Ok((self.appended(mine).await, body)),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    let winner = self.read(&path).await?.ok_or_else(|| {
                        store_err(&path)(object_store::Error::NotFound {
                            path: path.to_string(),
                            source: "taken by another writer, then gone".into(),
                        })
                    })?;
                    // A retried request whose first try landed finds itself.
                    if winner == body {
                        return Ok((self.appended(mine).await, body));
                    }
                    // Another writer has `seq`: link to its event instead.
                    let theirs = Head {
                        seq,
                        sha256: Stored::read(&winner).digest(),
                    };
                    head = Some(theirs);
                    self.remember(theirs);
                }
                Err(e) => return Err(store_err(&path)(e)),
            }
        }
        Err(ChainError::Contended {
            path: path.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn appended(&self, head: Head) -> Head {
        self.remember(head);
        // The event is in the chain; a hint that fails to land only costs
        // the next reader a few probes.
        let _ = self.write_hint(head).await;
        head
    }

    /// The chain's last event now (`None` for an empty chain): found from
    /// the hint, checked, and followed forward to the real end.
    pub async fn head(&self) -> Result<Option<Head>, ChainError> {
        let mut head = match self.remembered() {
            Some(head) => Some(head),
            None => self.find_head().await?,
        };
        loop {
            let next = head.map_or(0, |h| h.seq + 1);
            match self.read_event(next).await? {
                Some(found) => head = Some(found),
                None => break,
            }
        }
        if let Some(head) = head {
            self.remember(head);
        }
        Ok(head)
    }

    /// Reads the whole chain back and checks it against `anchors`.
    pub async fn verify(&self, anchors: &[Anchor]) -> Result<Report, ChainError> {
        let hint = match self.read(&self.hint_path()).await? {
            None => Hint::Absent,
            Some(bytes) => serde_json::from_slice::<Head>(&bytes)
                .map(Hint::Head)
                .unwrap_or(Hint::Unreadable),
        };
        let (events, strays) = self.list_events().await?;
        let mut verifier = Verifier::new(
            self.events_dir().as_ref(),
            self.hint_path().as_ref(),
            anchors,
            hint,
        );
        for stray in &strays {
            verifier.stray(stray.as_ref());
        }
        let mut reads = futures::stream::iter(events)
            .map(|(seq, path)| async move {
                let bytes = self.read(&path).await;
                (seq, path, bytes)
            })
            .buffered(READ_AHEAD);
        while let Some((seq, path, bytes)) = reads.next().await {
            // An event listed and then gone is simply missing.
            if let Some(bytes) = bytes? {
                verifier.event(seq, path.as_ref(), &bytes);
            }
        }
        Ok(verifier.finish())
    }

    /// Event `seq` exactly as stored, with its head (`None`: absent).
    pub async fn stored_event(&self, seq: u64) -> Result<Option<(Head, Vec<u8>)>, ChainError> {
        let bytes = self.read(&self.event_path(seq)).await?;
        Ok(bytes.map(|bytes| {
            let head = Head {
                seq,
                sha256: Sha256::of(&bytes),
            };
            (head, bytes)
        }))
    }

    /// Event `seq` as JSON (`None`: absent, or not JSON).
    pub async fn event(&self, seq: u64) -> Result<Option<serde_json::Value>, ChainError> {
        let bytes = self.read(&self.event_path(seq)).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every stored event in sequence order, as JSON (objects that are not
    /// JSON are skipped: `verify` names them).
    pub async fn events(&self) -> Result<Vec<(u64, serde_json::Value)>, ChainError> {
        let (events, _) = self.list_events().await?;
        let mut reads = futures::stream::iter(events)
            .map(|(seq, path)| async move { (seq, self.read(&path).await) })
            .buffered(READ_AHEAD);
        let mut out = Vec::new();
        while let Some((seq, bytes)) = reads.next().await {
            if let Some(event) = bytes?.and_then(|b| serde_json::from_slice(&b).ok()) {
                out.push((seq, event));
            }
        }
        Ok(out)
    }

    fn remembered(&self) -> Option<Head> {
        *self.known.lock().expect("audit head lock")
    }

    fn remember(&self, head: Head) {
        let mut known = self.known.lock().expect("audit head lock");
        if known.is_none_or(|k| k.seq < head.seq) {
            *known = Some(head);
        }
    }

    /// Where to start appending: the hinted event if it exists, else the
    /// highest listed event, else (the hinted event is gone) the hint itself.
    async fn find_head(&self) -> Result<Option<Head>, ChainError> {
        let hint = self
            .read(&self.hint_path())
            .await?
            .and_then(|bytes| serde_json::from_slice::<Head>(&bytes).ok());
        if let Some(hint) = hint
            && let Some(head) = self.read_event(hint.seq).await?
        {
            return Ok(Some(head));
        }
        let (events, _) = self.list_events().await?;
        match events.last() {
            Some(&(seq, _)) if hint.is_none_or(|h| seq > h.seq) => {
                let path = self.event_path(seq);
                self.read_event(seq).await?.map(Some).ok_or_else(|| {
                    store_err(&path)(object_store::Error::NotFound {
                        path: path.to_string(),
                        source: "listed, then gone".into(),
                    })
                })
            }
            // Nothing listed past the hint, whose event is gone: continue
            // after it (the gap stays for verify), or start an empty chain.
            _ => Ok(hint),
        }
    }

    async fn write_hint(&self, head: Head) -> Result<(), ChainError> {
        let path = self.hint_path();
        let body = serde_json::to_vec(&head).expect("a head serializes");
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(store_err(&path))?;
        Ok(())
    }

    /// Event `seq` as a head (its hash as stored), if it exists.
    async fn read_event(&self, seq: u64) -> Result<Option<Head>, ChainError> {
        let bytes = self.read(&self.event_path(seq)).await?;
        Ok(bytes.map(|bytes| Head {
            seq,
            sha256: Stored::read(&bytes).digest(),
        }))
    }

    async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, ChainError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(
                result.bytes().await.map_err(store_err(path))?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(path)(e)),
        }
    }

    /// The events under the events folder in sequence order, and the other
    /// objects there.
    async fn list_events(&self) -> Result<(Vec<(u64, Path)>, Vec<Path>), ChainError> {
        let dir = self.events_dir();
        let listed: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(store_err(&dir))?;
        let mut events = Vec::with_capacity(listed.len());
        let mut strays = Vec::new();
        for path in listed {
            let parts: Vec<_> = path
                .prefix_match(&dir)
                .map(|rest| rest.collect())
                .unwrap_or_default();
            match parts.as_slice() {
                [name] => match event_seq(name.as_ref()) {
                    Some(seq) => events.push((seq, path)),
                    None => strays.push(path),
                },
                _ => strays.push(path),
            }
        }
        events.sort_unstable_by_key(|(seq, _)| *seq);
        Ok((events, strays))
    }
}

/// `00000000000000000042.json` → 42.
fn event_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
