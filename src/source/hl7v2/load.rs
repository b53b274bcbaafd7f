//! A [`Feed`] into the lake: replays looked up, the raw messages kept under
//! `_raw/`, then one load job (views, policy, MERGE, quarantine, manifest
//! `kind: "hl7v2"`) like every other source.
//!
//! Order, and what a crash leaves: the raw object is written first
//! (put-if-absent, named by job and content; an orphan is harmless), then
//! the job commits. A crash before the job's commit leaves nothing a re-run
//! (or the sender's retry) would not write again; after it, the re-run finds
//! every MessageHeader present and counts the messages as replays.

use chrono::Utc;
use object_store::PutPayload;

use super::feed::{Acks, Feed, JobParts};
use crate::lake::Lake;
use crate::ledger::{ManifestKind, store_err};
use crate::load::{Job, LoadError, LoadOptions, LoadReport, ProgressSink, new_job_id};

/// Loads the feed's messages. The [`Acks`] come back whatever happened:
/// on an error no message may be acknowledged `AA`.
pub async fn load_feed(
    lake: &Lake,
    mut feed: Feed,
    options: &LoadOptions,
    progress: Option<ProgressSink>,
) -> (Acks, Result<LoadReport, LoadError>) {
    let replays = match lake.ensure_put_if_absent().await {
        Ok(()) => feed.find_replays(lake, options.mode).await,
        Err(e) => Err(e),
    };
    let job_id = new_job_id(Utc::now());
    let (parts, acks) = feed.split(&job_id);
    if let Err(e) = replays {
        return (acks, Err(e.into()));
    }
    (acks, commit(lake, parts, job_id, options, progress).await)
}

async fn commit(
    lake: &Lake,
    parts: JobParts,
    job_id: String,
    options: &LoadOptions,
    progress: Option<ProgressSink>,
) -> Result<LoadReport, LoadError> {
    let path = lake.path(&parts.raw_path);
    let put = crate::ledger::put_new(lake, &path, PutPayload::from(parts.raw)).await;
    match put {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(store_err(&path)(e).into()),
    }
    Job::new(lake)
        .with_options(options.clone())
        .with_job_id(job_id)
        .with_kind(ManifestKind::Hl7v2)
        .without_loaded_markers()
        .with_inputs(vec![parts.input])
        .with_rejections(parts.rejections)
        .with_hl7v2(parts.record)
        .with_progress(progress)
        .await
}
