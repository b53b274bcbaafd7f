//! What can stop a sync, each naming the URL or object and what to do.

use crate::http::HttpError;
use crate::lake::LakeError;
use crate::load::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Http(Box<HttpError>),
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error(
        "{url}: HTTP {status}: {detail}; check the server supports this search (its CapabilityStatement), or pass --since-param / fewer parameters"
    )]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: the answer is not a FHIR Bundle: {detail}")]
    Bundle { url: String, detail: String },
    #[error(
        "{url}: a next link leaves the server ({host}); fhirlake only calls the server it was given"
    )]
    ForeignLink { url: String, host: String },
    #[error(
        "{resource_type}: the server does not support searching by {param}; pass --since-param {resource_type}=PARAM (e.g. date) to sync by another date, knowing edits to old resources are then missed"
    )]
    NoWindowParam {
        resource_type: String,
        param: String,
    },
    #[error("{what}: {detail}")]
    Input { what: String, detail: String },
}

impl From<HttpError> for SyncError {
    fn from(e: HttpError) -> Self {
        Self::Http(Box::new(e))
    }
}

impl From<LakeError> for SyncError {
    fn from(e: LakeError) -> Self {
        Self::Lake(Box::new(e))
    }
}

impl From<LoadError> for SyncError {
    fn from(e: LoadError) -> Self {
        Self::Load(Box::new(e))
    }
}
