//! FHIR Bulk Data Access (`$export`) client: kick-off, status polling,
//! manifests, parallel verified downloads, SMART Backend Services auth and
//! resume, feeding the load path. See `export` for the job's steps.
//!
//! The decisions are pure functions with unit tests (`status`, `manifest`,
//! `kickoff` URL/body, `job` matching); the HTTP layer around them is thin.

mod auth;
mod download;
mod events;
mod export;
mod http;
mod job;
mod kickoff;
mod manifest;
mod status;

pub use auth::{AuthError, Credentials, Secret, SigningKey, SmartClient, TokenSource};
pub use download::LineCounter;
pub use events::{Echo, EventLog};
pub use export::{ExportError, ExportPlan, ExportReport, Resume, Since, run};
pub use http::{BulkHttp, HttpError, RetryPolicy, redact_url};
pub use job::{ExportRequest, JOBS_DIR, JobState, Phase, Scope};
pub use kickoff::KickoffMethod;
pub use manifest::{Manifest, ManifestError, ManifestFile};
pub use status::{
    PollDecision, PollPolicy, StatusResponse, backoff_delay, decide, parse_retry_after,
};
