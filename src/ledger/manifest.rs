//! The per-job manifest and its row-accounting invariant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lake::{LoadMode, UpdateMetrics};

/// Row outcomes. For every input: `lines = inserted + updated + unchanged + quarantined`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub quarantined: u64,
}

impl RowCounts {
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged + self.quarantined
    }

    pub fn add(&mut self, other: &RowCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.quarantined += other.quarantined;
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputStatus {
    /// Every line was read and accounted for.
    Loaded,
    /// The same bytes (by SHA-256) were fully loaded by an earlier job.
    SkippedAlreadyLoaded,
    /// A Bulk Data export log (`log.ndjson`): read for its transactionTime, not loaded.
    ExportLog,
}

/// Where a stand-in `meta.lastUpdated` came from, for resources without one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StandIn {
    /// "as_of", "transaction_time" or "file_mtime".
    pub source: String,
    pub value: String,
    pub resources: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub status: InputStatus,
    /// Non-blank lines: the lines accounted for.
    pub lines: u64,
    pub blank_lines: u64,
    #[serde(flatten)]
    pub rows: RowCounts,
    /// Per destination table.
    pub tables: BTreeMap<String, RowCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_stand_in: Option<StandIn>,
    /// For a skipped file: the job that loaded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_by_job: Option<String>,
}

/// One Delta commit a job made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitRecord {
    pub version: u64,
    /// "append" (new ids or versions) or "merge" (newer versions of stored ids).
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<UpdateMetrics>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRecord {
    #[serde(flatten)]
    pub rows: RowCounts,
    /// The Delta versions this job committed, in order (empty: nothing changed).
    pub commits: Vec<CommitRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobManifest {
    pub job_id: String,
    pub kind: String,
    pub fhirlake_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub lake: String,
    pub mode: LoadMode,
    pub inputs: Vec<InputRecord>,
    pub tables: BTreeMap<String, TableRecord>,
    pub totals: RowCounts,
    /// For an export job: the request, the server's files and their fate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportRecord>,
}

/// What a `$export` job asked for and received (no credentials: URLs are redacted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportRecord {
    pub server: String,
    pub kickoff_url: String,
    pub kickoff_method: String,
    pub params: Vec<(String, String)>,
    pub status_url: String,
    pub transaction_time: String,
    pub requires_access_token: bool,
    pub files: Vec<ExportFile>,
    /// Resources the server listed as deleted, and what that did.
    pub deletions_requested: u64,
    /// Rows removed (current mode).
    pub rows_deleted: u64,
    /// Tombstone versions written (history mode).
    pub tombstones: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Output,
    Error,
    Deleted,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Output => "output",
            FileKind::Error => "error",
            FileKind::Deleted => "deleted",
        }
    }
}

/// One file of an export manifest and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFile {
    pub kind: FileKind,
    pub resource_type: String,
    /// Position within its kind in the (possibly paged) manifest.
    pub index: usize,
    /// Redacted: never a pre-signed query string.
    pub url: String,
    /// Path of the raw copy, relative to the job's raw folder.
    pub name: String,
    pub declared_count: Option<u64>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// Non-blank lines received (decompressed).
    pub lines: Option<u64>,
    pub content_encoding: Option<String>,
    pub attempts: u32,
    /// pending, downloaded, count_mismatch, expired, failed: ….
    pub outcome: String,
    /// For error files: the OperationOutcome diagnostics they carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// For a remote lake: the copy under `<lake>/_raw/<job>/`, relative to the lake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake_copy: Option<String>,
}

impl ExportFile {
    /// Downloaded completely and checksummed (a count mismatch included: its lines are real).
    pub fn verified(&self) -> bool {
        self.sha256.is_some() && matches!(self.outcome.as_str(), "downloaded" | "count_mismatch")
    }

    /// The manifest declared a `count` and `lines` is not it.
    pub fn count_disagrees(&self, lines: u64) -> bool {
        self.declared_count
            .is_some_and(|declared| declared != lines)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "row accounting failed for {path}: {lines} lines read but {accounted} accounted for \
     (inserted {inserted} + updated {updated} + unchanged {unchanged} + quarantined {quarantined}); \
     this is a fhirlake bug, nothing was recorded as loaded — please report it with the input"
)]
pub struct AccountingError {
    pub path: String,
    pub lines: u64,
    pub accounted: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub quarantined: u64,
}

impl InputRecord {
    /// A record with no lines counted yet.
    pub fn new(path: String, status: InputStatus, sha256: String, bytes: u64) -> Self {
        Self {
            path,
            bytes,
            sha256,
            status,
            lines: 0,
            blank_lines: 0,
            rows: RowCounts::default(),
            tables: BTreeMap::new(),
            last_updated_stand_in: None,
            loaded_by_job: None,
        }
    }

    /// The invariant: every non-blank line is inserted, updated, unchanged or
    /// quarantined, and the per-table counts add up to the file's.
    pub fn check_accounting(&self) -> Result<(), AccountingError> {
        let mut by_table = RowCounts::default();
        for counts in self.tables.values() {
            by_table.add(counts);
        }
        let accounted = self.rows.total();
        if self.status != InputStatus::Loaded || (accounted == self.lines && by_table == self.rows)
        {
            return Ok(());
        }
        Err(AccountingError {
            path: self.path.clone(),
            lines: self.lines,
            accounted,
            inserted: self.rows.inserted,
            updated: self.rows.updated,
            unchanged: self.rows.unchanged,
            quarantined: self.rows.quarantined,
        })
    }
}
