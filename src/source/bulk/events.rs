//! The export job's events, one type each (see [`crate::ledger::Event`]).
//! Every URL in them is redacted by the caller.

use serde_json::{Value, json};

use super::job::Phase;
use crate::ledger::Event;

/// Implements [`Event`] for a struct whose fields are the record's fields.
macro_rules! event {
    ($ty:ident, $name:literal, |$e:ident| $detail:expr, |$d:ident| $describe:expr) => {
        impl Event for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn detail(&self) -> Value {
                let $e = self;
                $detail
            }
            fn describe(&self) -> Option<String> {
                let $d = self;
                $describe
            }
        }
    };
}

pub struct KickedOff {
    pub method: String,
    pub url: String,
}
event!(
    KickedOff,
    "kickoff",
    |e| json!({"method": e.method, "url": e.url, "status": 202}),
    |e| Some(format!("kick-off accepted ({} {})", e.method, e.url))
);

pub struct KickoffRefused {
    pub method: String,
    pub url: String,
    pub status: u16,
}
event!(
    KickoffRefused,
    "kickoff_refused",
    |e| json!({"method": e.method, "url": e.url, "status": e.status}),
    |_e| None
);

pub struct SinceAuto {
    pub since: Option<String>,
}
event!(
    SinceAuto,
    "since_auto",
    |e| json!({"since": e.since, "from": if e.since.is_some() { "previous export transactionTime" } else { "no previous export: full export" }}),
    |_e| None
);

pub struct Resumed {
    pub job_id: String,
    pub phase: Phase,
    pub status_url: String,
}
event!(
    Resumed,
    "resume",
    |e| json!({"job_id": e.job_id, "phase": e.phase, "status_url": e.status_url}),
    |e| Some(format!(
        "resuming job {} (phase {})",
        e.job_id,
        json!(e.phase).as_str().unwrap_or_default()
    ))
);

pub struct InProgress {
    pub progress: Option<String>,
    pub next_poll_ms: u64,
}
event!(
    InProgress,
    "status",
    |e| json!({"status": 202, "progress": e.progress, "next_poll_ms": e.next_poll_ms}),
    |e| Some(format!(
        "export in progress{} — next poll in {:.1} s",
        e.progress
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        e.next_poll_ms as f64 / 1000.0
    ))
);

pub struct Complete {
    pub status: u16,
    pub transaction_time: String,
    pub output_files: usize,
    pub error_files: usize,
    pub deleted_files: usize,
}
event!(
    Complete,
    "status",
    |e| json!({"status": e.status, "transaction_time": e.transaction_time, "output_files": e.output_files, "error_files": e.error_files, "deleted_files": e.deleted_files}),
    |e| Some(format!(
        "export complete: {} output, {} error, {} deleted file(s), transactionTime {}",
        e.output_files, e.error_files, e.deleted_files, e.transaction_time
    ))
);

pub struct BadManifest {
    pub diagnostics: String,
}
event!(
    BadManifest,
    "bad_manifest",
    |e| json!({"diagnostics": e.diagnostics}),
    |_e| None
);

pub struct ExportFailed {
    pub status: u16,
    pub diagnostics: String,
}
event!(
    ExportFailed,
    "failed",
    |e| json!({"status": e.status, "diagnostics": e.diagnostics}),
    |_e| None
);

pub struct ManifestPage {
    pub url: String,
    pub output_files: usize,
}
event!(
    ManifestPage,
    "manifest_page",
    |e| json!({"url": e.url, "output_files": e.output_files}),
    |_e| None
);

pub struct DownloadStarted {
    pub url: String,
    pub resource_type: String,
    pub attempt: u32,
}
event!(
    DownloadStarted,
    "download_start",
    |e| json!({"url": e.url, "type": e.resource_type, "attempt": e.attempt}),
    |_e| None
);

pub struct Downloaded {
    pub url: String,
    pub resource_type: String,
    pub bytes: u64,
    pub sha256: String,
    pub lines: u64,
    pub declared_count: Option<u64>,
    pub content_encoding: Option<String>,
}
event!(
    Downloaded,
    "download_complete",
    |e| json!({"url": e.url, "type": e.resource_type, "bytes": e.bytes, "sha256": e.sha256, "lines": e.lines, "declared_count": e.declared_count, "content_encoding": e.content_encoding}),
    |e| Some(format!(
        "downloaded {} ({} lines, {} bytes)",
        e.resource_type, e.lines, e.bytes
    ))
);

pub struct DownloadAdopted {
    pub url: String,
    pub resource_type: String,
    pub sha256: String,
    pub lines: u64,
}
event!(
    DownloadAdopted,
    "download_adopted",
    |e| json!({"url": e.url, "type": e.resource_type, "sha256": e.sha256, "lines": e.lines}),
    |_e| None
);

pub struct LinkExpired {
    pub url: String,
    pub status: u16,
}
event!(
    LinkExpired,
    "download_expired",
    |e| json!({"url": e.url, "status": e.status}),
    |e| Some(format!("link expired ({}): {}", e.status, e.url))
);

pub struct ManifestRefresh {
    pub expired_files: usize,
}
event!(
    ManifestRefresh,
    "manifest_refresh",
    |e| json!({"expired_files": e.expired_files}),
    |_e| Some("fetching a fresh manifest for expired links".into())
);

pub struct RawUploaded {
    pub object: String,
}
event!(
    RawUploaded,
    "raw_uploaded",
    |e| json!({"object": e.object}),
    |_e| None
);

pub struct LoadStarted {
    pub job_id: String,
}
event!(
    LoadStarted,
    "load_start",
    |e| json!({"job_id": e.job_id}),
    |_e| Some("loading into the lake".into())
);

pub struct LoadCompleted {
    pub manifest: String,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub quarantined: u64,
}
event!(
    LoadCompleted,
    "load_complete",
    |e| json!({"manifest": e.manifest, "inserted": e.inserted, "updated": e.updated, "unchanged": e.unchanged, "quarantined": e.quarantined}),
    |_e| None
);

pub struct ServerJobDeleted {
    pub url: String,
    pub status: Option<u16>,
}
event!(
    ServerJobDeleted,
    "delete_server_job",
    |e| json!({"url": e.url, "status": e.status}),
    |_e| None
);

pub struct Cancelled {
    pub server_job_deleted: bool,
}
event!(
    Cancelled,
    "cancel",
    |e| json!({"server_job_deleted": e.server_job_deleted}),
    |_e| Some("cancelled".into())
);

pub struct RawRemoved {
    pub dir: String,
}
event!(RawRemoved, "raw_removed", |e| json!({"dir": e.dir}), |_e| {
    None
});

pub struct Finished {
    pub server_job_deleted: bool,
}
event!(
    Finished,
    "finished",
    |e| json!({"server_job_deleted": e.server_job_deleted}),
    |_e| None
);
