//! FHIR Bulk Data Access (`$export`) client: kick-off, status polling,
//! manifests, parallel verified downloads, SMART Backend Services auth and
//! resume, feeding the load job. See `export` for the job's steps. Requests go
//! through the shared [`crate::http`] client with [`crate::auth`] credentials.
//!
//! The decisions are pure functions with unit tests (`status`, `manifest`,
//! `kickoff` URL/body, `job` matching); the HTTP layer around them is thin.

mod context;
mod download;
mod error;
mod events;
mod export;
mod fetch;
mod handover;
mod job;
mod kickoff;
mod manifest;
mod plan;
mod poll;
mod server_files;
mod status;

pub use download::LineCounter;
pub use error::ExportError;
pub use export::run;
pub use job::{ExportRequest, JOBS_DIR, JobState, Phase, Scope};
pub use kickoff::KickoffMethod;
pub use manifest::{Manifest, ManifestError, ManifestFile};
pub use plan::{ExportPlan, ExportReport, Resume, Since};
pub use server_files::parse_deleted_bundle;
pub use status::{PollDecision, PollPolicy, StatusResponse, decide};
