//! FHIR Bulk Data Access (`$export`) client: kick-off, status polling,
//! manifests, parallel verified downloads, SMART Backend Services auth and
//! resume, feeding the load path. See `export` for the job's steps. Requests go
//! through the shared [`crate::http`] client with [`crate::auth`] credentials.
//!
//! The decisions are pure functions with unit tests (`status`, `manifest`,
//! `kickoff` URL/body, `job` matching); the HTTP layer around them is thin.

mod download;
mod export;
mod job;
mod kickoff;
mod manifest;
mod status;

pub use download::LineCounter;
pub use export::{ExportError, ExportPlan, ExportReport, Resume, Since, run};
pub use job::{ExportRequest, JOBS_DIR, JobState, Phase, Scope};
pub use kickoff::KickoffMethod;
pub use manifest::{Manifest, ManifestError, ManifestFile};
pub use status::{PollDecision, PollPolicy, StatusResponse, decide};
