//! `fhirlake verify`: the lake's own history checked end to end.
//!
//! In: a lake. Out: a [`LakeReport`] naming every problem by its object:
//! - the audit chain (`_fhirlake/audit`): every event, link and sequence
//!   number, against the heads anchored outside it — in each Delta commit's
//!   `commitInfo.fhirlake.audit` and each manifest's `audit_head` — so a
//!   cut-off tail shows too (`crate::audit::AuditLog::verify`);
//! - every commit a job wrote after the audit trail existed carries its
//!   anchor (a removed anchor is a problem, a pre-audit lake is not);
//! - each manifest's accounting (every line of every input classified,
//!   totals the sum of the inputs) and its tables against the Delta
//!   versions it names: the commit exists, was written by that job, and
//!   its rows inserted / updated / deleted are what the manifest records;
//! - every raw object the lake keeps (HL7 v2 messages, Bulk downloads)
//!   re-hashed against the SHA-256 its manifest recorded.
//!
//! Read-only: verify never writes to the lake.

mod delta_log;
mod manifests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::audit::{Anchor, AuditLog, ChainError, Report};
use crate::lake::{Lake, LakeError};
use crate::ledger::{JobManifest, MANIFEST_DIR};
use crate::load::AUDIT_PREFIX;
pub use delta_log::{Commit, FileAction, commits};

/// One problem outside the chain itself, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum LakeProblem {
    /// A commit of an audited job without the chain head it should anchor.
    AnchorRemoved { location: String, job_id: String },
    /// A commit that changed data with no job and no anchor, in a table
    /// fhirlake's audited jobs write to (its record was stripped, or another
    /// engine wrote it).
    UnauditedCommit { location: String },
    /// A commit's anchor is there but is not `{seq, sha256}`.
    AnchorUnreadable { location: String },
    /// A manifest that is not JSON or not a manifest.
    ManifestUnreadable { path: String, reason: String },
    /// An input's lines are not all accounted for, or the per-table counts
    /// do not add up to the input's.
    InputAccounting {
        manifest: String,
        input: String,
        detail: String,
    },
    /// The manifest's totals are not the sum of its inputs.
    TotalsMismatch {
        manifest: String,
        field: &'static str,
        totals: u64,
        inputs: u64,
    },
    /// A table's counts are not the sum of what the inputs counted for it.
    TableCountsMismatch {
        manifest: String,
        table: String,
        field: &'static str,
        table_rows: u64,
        inputs: u64,
    },
    /// The manifest names a version the table's log does not have.
    CommitMissing { manifest: String, location: String },
    /// The manifest names a version another job wrote.
    CommitOfOtherJob {
        manifest: String,
        location: String,
        job_id: Option<String>,
    },
    /// Rows the manifest records for a commit, or a table, differ from
    /// what the Delta log says the commit did.
    RowsMismatch {
        manifest: String,
        location: String,
        field: &'static str,
        manifest_rows: u64,
        delta_rows: u64,
    },
    /// A kept raw object whose bytes no longer hash to its manifest's SHA-256.
    RawChanged {
        manifest: String,
        path: String,
        expected: String,
        actual: String,
    },
    /// A kept raw object the manifest names is gone.
    RawMissing { manifest: String, path: String },
}

/// What was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub events: u64,
    pub anchors: u64,
    pub manifests: u64,
    pub commits: u64,
    pub raw_objects: u64,
    pub raw_bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct LakeReport {
    pub checked: Checked,
    /// The chain's problems (events, links, anchors).
    pub chain: Report,
    pub problems: Vec<LakeProblem>,
}

impl LakeReport {
    pub fn is_clean(&self) -> bool {
        self.chain.is_clean() && self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Verifies the whole lake; with `job`, only that job's manifest (the chain
/// and the anchors are always checked whole: a link needs its neighbours).
pub async fn verify(lake: &Lake, job: Option<&str>) -> Result<LakeReport, VerifyError> {
    let commits = delta_log::commits(lake).await?;
    verify_commits(lake, job, &commits, RawFiles::Rehash).await
}

/// Whether [`verify_commits`] re-reads every kept raw object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFiles {
    Rehash,
    /// Skip them: the rest of the check reads only small objects.
    Skip,
}

/// [`verify`] over the commits [`commits`] read already.
pub async fn verify_commits(
    lake: &Lake,
    job: Option<&str>,
    commits: &BTreeMap<(String, u64), Commit>,
    raw: RawFiles,
) -> Result<LakeReport, VerifyError> {
    let (manifests, mut problems) = read_manifests(lake).await?;
    let mut anchors = Vec::new();
    for commit in commits.values() {
        if let Some(head) = commit.anchor {
            anchors.push(Anchor::new(head, format!("{} commitInfo", commit.location)));
        }
        if commit.anchor_unreadable {
            problems.push(LakeProblem::AnchorUnreadable {
                location: commit.location.clone(),
            });
        }
    }
    for (path, manifest) in &manifests {
        if let Some(head) = manifest.audit_head {
            anchors.push(Anchor::new(head, format!("{path} audit_head")));
        }
    }
    problems.extend(removed_anchors(commits, &manifests));
    let log = AuditLog::new(lake.store().clone(), lake.path(AUDIT_PREFIX));
    let chain = log.verify(&anchors).await?;
    let mut checked = Checked {
        events: chain.events,
        anchors: anchors.len() as u64,
        commits: commits.len() as u64,
        ..Checked::default()
    };
    for (path, manifest) in manifests
        .iter()
        .filter(|(_, m)| job.is_none_or(|j| m.job_id == j))
    {
        checked.manifests += 1;
        problems.extend(manifests::check(
            path,
            manifest,
            commits,
            lake.segregated_lake().is_none(),
        ));
        if raw == RawFiles::Skip {
            continue;
        }
        let (raw_problems, objects, bytes) = manifests::check_raw(lake, path, manifest).await?;
        problems.extend(raw_problems);
        checked.raw_objects += objects;
        checked.raw_bytes += bytes;
    }
    Ok(LakeReport {
        checked,
        chain,
        problems,
    })
}

/// Every manifest, by its path; the ones that cannot be read as problems.
pub async fn read_manifests(
    lake: &Lake,
) -> Result<(BTreeMap<String, JobManifest>, Vec<LakeProblem>), LakeError> {
    let mut manifests = BTreeMap::new();
    let mut problems = Vec::new();
    for path in lake.list_objects(&lake.path(MANIFEST_DIR)).await? {
        if !path.as_ref().ends_with(".json") {
            continue;
        }
        let Some(bytes) = lake.read_object(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<JobManifest>(&bytes) {
            Ok(manifest) => {
                manifests.insert(path.to_string(), manifest);
            }
            Err(e) => problems.push(LakeProblem::ManifestUnreadable {
                path: path.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    Ok((manifests, problems))
}

/// Data commits that lack their anchor: of an audited job (its manifest
/// anchors a head, or another of its commits carries one, for a job that
/// crashed before its manifest), or of no known job after the table's
/// first anchored commit.
fn removed_anchors(
    commits: &BTreeMap<(String, u64), Commit>,
    manifests: &BTreeMap<String, JobManifest>,
) -> Vec<LakeProblem> {
    let mut audited: BTreeSet<&str> = manifests
        .values()
        .filter(|m| m.audit_head.is_some())
        .map(|m| m.job_id.as_str())
        .collect();
    audited.extend(
        commits
            .values()
            .filter(|c| c.anchor.is_some())
            .filter_map(|c| c.job_id.as_deref()),
    );
    let mut first_anchored: BTreeMap<&str, u64> = BTreeMap::new();
    for c in commits.values().filter(|c| c.anchor.is_some()) {
        first_anchored.entry(&c.table).or_insert(c.version);
    }
    commits
        .values()
        .filter(|c| c.data_change && c.anchor.is_none() && !c.anchor_unreadable)
        .filter_map(|c| match c.job_id.as_deref() {
            Some(job) if audited.contains(job) => Some(LakeProblem::AnchorRemoved {
                location: c.location.clone(),
                job_id: job.to_owned(),
            }),
            Some(_) => None,
            None => first_anchored
                .get(c.table.as_str())
                .is_some_and(|&first| first < c.version)
                .then(|| LakeProblem::UnauditedCommit {
                    location: c.location.clone(),
                }),
        })
        .collect()
}

impl std::fmt::Display for LakeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AnchorRemoved { location, job_id } => write!(
                f,
                "{location}: a commit of job {job_id} without its audit anchor (commitInfo.fhirlake.audit was removed)"
            ),
            Self::UnauditedCommit { location } => write!(
                f,
                "{location}: changed data with no fhirlake job and no audit anchor, after audited commits of the table (its commitInfo was stripped, or another engine wrote it)"
            ),
            Self::AnchorUnreadable { location } => {
                write!(
                    f,
                    "{location}: commitInfo.fhirlake.audit is not {{seq, sha256}}"
                )
            }
            Self::ManifestUnreadable { path, reason } => {
                write!(f, "{path}: not a readable manifest: {reason}")
            }
            Self::InputAccounting {
                manifest,
                input,
                detail,
            } => write!(f, "{manifest}: input {input}: {detail}"),
            Self::TotalsMismatch {
                manifest,
                field,
                totals,
                inputs,
            } => write!(
                f,
                "{manifest}: totals.{field} is {totals}, its inputs add up to {inputs}"
            ),
            Self::TableCountsMismatch {
                manifest,
                table,
                field,
                table_rows,
                inputs,
            } => write!(
                f,
                "{manifest}: tables.{table}.{field} is {table_rows}, its inputs counted {inputs}"
            ),
            Self::CommitMissing { manifest, location } => {
                write!(
                    f,
                    "{manifest}: names {location}, which the table's log does not have"
                )
            }
            Self::CommitOfOtherJob {
                manifest,
                location,
                job_id,
            } => write!(
                f,
                "{manifest}: names {location}, which job {} wrote",
                job_id.as_deref().unwrap_or("?")
            ),
            Self::RowsMismatch {
                manifest,
                location,
                field,
                manifest_rows,
                delta_rows,
            } => write!(
                f,
                "{manifest}: {manifest_rows} rows {field} recorded, the Delta log ({location}) says {delta_rows}"
            ),
            Self::RawChanged {
                manifest,
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: SHA-256 {actual}, its manifest {manifest} recorded {expected}: the kept raw bytes changed"
            ),
            Self::RawMissing { manifest, path } => {
                write!(f, "{path}: named by {manifest}, not in the lake")
            }
        }
    }
}
