//! The ledger: what every job read, what it did with each line, and which
//! Delta versions hold the result.
//!
//! In: counts and checksums from the load path. Out: JSON objects under
//! `<lake>/_fhirlake/`. Manifests are created put-if-absent and never
//! rewritten; they are written only after the table commits they name.
//! `loaded/<sha256>.json` markers, written after the manifest, let a later
//! job skip a file it has already loaded (the manifest is the record; a
//! marker is only its index, so a lost marker costs a harmless reload).

mod events;
mod hl7v2;
mod manifest;
mod sync;

pub use events::{Echo, Event, EventLog};
pub use hl7v2::{Hl7v2Record, MessageCounts, MessageRecord, MessageStatus, RawObject, SequenceGap};
pub use manifest::{
    AccountingError, CodeCheckRecord, CommitOperation, CommitRecord, ExportFile, ExportRecord,
    FileKind, FileOutcome, InputRecord, InputStatus, JobManifest, ManifestKind, RowCounts,
    StandInRecord, TableRecord, TerminologyServerRecord, ValidationRecord,
};
pub use sync::{PageRecord, SyncRecord, SyncWindow};

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::lake::{Lake, LakeError};

pub const MANIFEST_DIR: &str = "_fhirlake/manifests";
pub const LOADED_DIR: &str = "_fhirlake/loaded";

/// Index entry saying a file (by content) was fully loaded by a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadedMarker {
    pub sha256: String,
    pub job_id: String,
    pub path: String,
}

/// Names the object in a store error.
pub(crate) fn store_err(
    path: &object_store::path::Path,
) -> impl FnOnce(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Store {
        path: path.to_string(),
        source,
    }
}

/// Writes the job's manifest; fails if one with this job id already exists.
/// Writes a job's manifest (put-if-absent); returns its path relative to
/// the lake and the SHA-256 (hex) of the bytes written.
pub async fn write_manifest(
    lake: &Lake,
    manifest: &JobManifest,
) -> Result<(String, String), LakeError> {
    let relative = format!("{MANIFEST_DIR}/{}.json", manifest.job_id);
    let path = lake.path(&relative);
    let body = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    let sha256 = crate::load::sha256_of(&body[..]).expect("hashing memory").0;
    put_new(lake, &path, PutPayload::from(body))
        .await
        .map_err(store_err(&path))?;
    Ok((relative, sha256))
}

/// Writes `body` at `path` only if nothing is there (put-if-absent: a
/// record, a plan, a raw message is never rewritten).
pub(crate) async fn put_new(
    lake: &Lake,
    path: &object_store::path::Path,
    body: PutPayload,
) -> object_store::Result<()> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    lake.store().put_opts(path, body, options).await.map(drop)
}

/// Reads a job's manifest.
pub async fn read_manifest(lake: &Lake, job_id: &str) -> Result<JobManifest, LakeError> {
    let path = lake.path(&format!("{MANIFEST_DIR}/{job_id}.json"));
    let bytes = lake.store().get(&path).await.map_err(store_err(&path))?;
    let bytes = bytes.bytes().await.map_err(store_err(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| LakeError::Store {
        path: path.to_string(),
        source: object_store::Error::Generic {
            store: "manifest",
            source: Box::new(e),
        },
    })
}

/// The marker for a file with this SHA-256, if a job fully loaded it.
/// `key` is `<bytes>-<sha256>`.
pub async fn loaded_marker(lake: &Lake, key: &str) -> Result<Option<LoadedMarker>, LakeError> {
    let path = lake.path(&format!("{LOADED_DIR}/{key}.json"));
    match lake.store().get(&path).await {
        Ok(result) => {
            let bytes = result.bytes().await.map_err(store_err(&path))?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err(&path)(e)),
    }
}

pub async fn write_loaded_marker(
    lake: &Lake,
    key: &str,
    marker: &LoadedMarker,
) -> Result<(), LakeError> {
    let path = lake.path(&format!("{LOADED_DIR}/{key}.json"));
    let body = serde_json::to_vec(marker).expect("marker serializes");
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(store_err(&path))?;
    Ok(())
}
