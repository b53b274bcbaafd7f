//! FHIR Bulk Data Access ($export) client, the pure parts: the export
//! manifest, and what to do with a status-poll response. No I/O: the HTTP
//! loop that will drive these (kick-off, polling, downloads, auth, resume) is
//! a thin layer on top, built separately, and not here yet.

mod manifest;
mod status;

pub use manifest::{Manifest, ManifestError, ManifestFile};
pub use status::{
    PollDecision, PollPolicy, StatusResponse, backoff_delay, decide, parse_retry_after,
};
