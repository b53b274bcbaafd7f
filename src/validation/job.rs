//! Profile validation as a load stage (`--validate`): which package, what
//! to do with a resource that breaks its profile, and the verdict of one
//! line in the shape the load path carries it.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use super::{Finding, Profiles, Tree};
use crate::terminology::TerminologyError;

/// The US Core 3.1.1 package, compiled into the binary (`us-core@3.1.1`).
const US_CORE_311: &[u8] = include_bytes!("../../data/us-core/us_core_311.tgz");

/// What a load does with a resource that breaks its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Load it with `_valid = false` (its findings in `_validation`).
    #[default]
    Flag,
    /// Keep it out of the table: the line goes to `_quarantine` with the findings.
    Quarantine,
    /// Load it into `_segregated/<table>`, never the main table.
    Segregate,
}

impl OnInvalid {
    pub fn as_str(self) -> &'static str {
        match self {
            OnInvalid::Flag => "flag",
            OnInvalid::Quarantine => "quarantine",
            OnInvalid::Segregate => "segregate",
        }
    }
}

/// A job's validation: the compiled package and the action on failure.
#[derive(Debug)]
pub struct Validation {
    pub profiles: Profiles,
    pub on_invalid: OnInvalid,
}

/// One resource's verdict as the load path keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    /// No profile of the package applies (`_valid` null).
    NoProfile,
    Valid,
    Invalid(Vec<Finding>),
}

impl LineVerdict {
    /// The `_valid` column.
    pub fn valid(&self) -> Option<bool> {
        match self {
            LineVerdict::NoProfile => None,
            LineVerdict::Valid => Some(true),
            LineVerdict::Invalid(_) => Some(false),
        }
    }

    pub fn findings(&self) -> &[Finding] {
        match self {
            LineVerdict::Invalid(findings) => findings,
            _ => &[],
        }
    }
}

impl Validation {
    /// `us-core` (6.1.0, built in), `us-core@6.1.0`, `us-core@3.1.1` (built
    /// in), or the path of a package `.tgz`, directory or JSON file.
    pub fn named(spec: &str, on_invalid: OnInvalid) -> Result<Arc<Validation>, TerminologyError> {
        Ok(Arc::new(Validation {
            profiles: Profiles::named(spec)?,
            on_invalid,
        }))
    }

    /// The verdict on one parsed resource.
    pub fn judge<'v>(&self, resource: impl Tree<'v>) -> LineVerdict {
        let verdict = self.profiles.validate(resource);
        if verdict.profiles.is_empty() {
            LineVerdict::NoProfile
        } else if verdict.is_valid() {
            LineVerdict::Valid
        } else {
            LineVerdict::Invalid(verdict.findings)
        }
    }
}

impl Profiles {
    /// `us-core` (6.1.0, built in), `us-core@6.1.0`, `us-core@3.1.1` (built
    /// in), or the path of a package `.tgz`, directory or JSON file.
    pub fn named(spec: &str) -> Result<Profiles, TerminologyError> {
        match spec {
            "us-core" | "us-core@6.1.0" => Profiles::us_core(),
            "us-core@3.1.1" => Profiles::compile_package(
                "hl7.fhir.us.core@3.1.1",
                Cursor::new(US_CORE_311),
                Path::new("us_core_311.tgz (built in)"),
            ),
            other if other.starts_with("us-core@") => Err(TerminologyError::Config(format!(
                "{other}: the built-in US Core versions are 6.1.0 (us-core) and 3.1.1 \
                 (us-core@3.1.1); give the path of another version's package .tgz"
            ))),
            path => Profiles::load(Path::new(path)),
        }
    }
}
