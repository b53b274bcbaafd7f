//! What can stop an export job, each naming the job and what to do.

use std::path::PathBuf;

use super::kickoff::KickoffError;
use super::manifest::ManifestError;
use crate::auth::AuthError;
use crate::http::HttpError;
use crate::lake::LakeError;
use crate::load::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Kickoff(#[from] KickoffError),
    #[error("export job {job_id}: {source}")]
    Http {
        job_id: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "export job {job_id}: the completion manifest from {url} is unusable: {diagnostics}; nothing was downloaded or loaded, and the next run starts a new export"
    )]
    BadManifest {
        job_id: String,
        url: String,
        diagnostics: String,
    },
    #[error("export job {job_id} failed on the server (HTTP {status}): {diagnostics}")]
    Failed {
        job_id: String,
        status: u16,
        diagnostics: String,
    },
    #[error(
        "export job {job_id}: the status URL {url} answered HTTP {status}: the server no longer knows the job; it is marked failed and the next run starts a new export"
    )]
    StatusGone {
        job_id: String,
        url: String,
        status: u16,
    },
    #[error("export job {job_id}: manifest from {url}: {source}")]
    Manifest {
        job_id: String,
        url: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "export job {job_id}: {} file(s) could not be downloaded, so nothing was loaded: {}; re-run the same command to retry them (verified files are kept)",
        failed.len(), failed.join("; ")
    )]
    Downloads { job_id: String, failed: Vec<String> },
    #[error("export job {job_id}: loading the downloaded files: {source}")]
    Load {
        job_id: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error(
        "export job {job_id} cancelled{}; nothing was loaded",
        if *server_job_deleted { " and deleted on the server" } else { " (the server's job was kept: --keep-server-job)" }
    )]
    Cancelled {
        job_id: String,
        server_job_deleted: bool,
    },
    #[error(
        "--resume: no unfinished export of this server, scope and parameters in the lake; run without --resume to start one"
    )]
    NothingToResume,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<LakeError> for ExportError {
    fn from(error: LakeError) -> Self {
        Self::Lake(Box::new(error))
    }
}
