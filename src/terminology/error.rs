//! Errors of loading terminology (value sets, concept maps, packages) and
//! of compiling it into a job's [`Terminology`](super::Terminology). Checks
//! themselves never fail: a bad code is a [`Problem`](super::Problem).

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where a resource came from: a file, or a member of a package archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: PathBuf,
    /// The member inside a `.tgz` package (`package/ValueSet-x.json`).
    pub member: Option<String>,
}

impl Origin {
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            member: None,
        }
    }

    pub fn member(archive: impl Into<PathBuf>, member: impl Into<String>) -> Self {
        Self {
            file: archive.into(),
            member: Some(member.into()),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(member) => write!(f, "{} (member {member})", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// What is wrong inside a resource that was read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("`{field}` is missing: a {resource} needs it")]
    Missing {
        resource: &'static str,
        field: &'static str,
    },
    #[error("`{field}` holds `{value}`, which is not one of {expected}")]
    BadValue {
        field: String,
        value: String,
        expected: &'static str,
    },
}

#[derive(Debug, Error)]
pub enum TerminologyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{origin}: cannot read the package archive (a gzip-compressed tar, as FHIR packages are): {source}"
    )]
    Archive {
        origin: Origin,
        source: std::io::Error,
    },
    #[error("{origin}: not valid JSON: {source}")]
    Json {
        origin: Origin,
        source: serde_json::Error,
    },
    #[error("{origin}: not a valid {resource}: {source}")]
    Shape {
        origin: Origin,
        resource: &'static str,
        source: serde_json::Error,
    },
    #[error("{origin}: a {expected} was expected, but the resource is a {found}")]
    WrongResource {
        origin: Origin,
        expected: &'static str,
        found: String,
    },
    #[error("{origin}: {problem}")]
    Malformed { origin: Origin, problem: Malformed },
    #[error(
        "the binding of {element} names value set {value_set}, which is not loaded: load it (--valuesets DIR or a package) or drop the binding"
    )]
    UnboundValueSet { element: String, value_set: String },
    /// A setting the user gave that cannot be used (the message says how to fix it).
    #[error("{0}")]
    Config(String),
}
