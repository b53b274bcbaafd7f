//! The per-job manifest and its row-accounting invariant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lake::{LoadMode, UpdateMetrics};
use crate::load::SourceKind;

/// Row outcomes. For every input:
/// `lines = inserted + updated + unchanged + quarantined + filtered`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub quarantined: u64,
    /// Kept out of the lake by the policy stage (written only when some
    /// were, so records without a policy read as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub filtered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RowCounts {
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged + self.quarantined + self.filtered
    }

    pub fn add(&mut self, other: &RowCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.quarantined += other.quarantined;
        self.filtered += other.filtered;
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
pub struct StandInRecord {
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
    pub last_updated_stand_in: Option<StandInRecord>,
    /// For a skipped file: the job that loaded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_by_job: Option<String>,
    /// Which way the input came in (manifests before sources lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceKind>,
    /// Resources the policy filtered out, per reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filtered_by: BTreeMap<String, u64>,
    /// Resources policy rules segregated (into `_segregated/<table>`) or
    /// changed (labelled, redacted) and loaded, per rule; `a,b` when two
    /// rules changed one resource. Denied ones are in `filtered_by`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy_rules: BTreeMap<String, u64>,
}

/// What a Delta commit of a job did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CommitOperation {
    /// New ids or versions appended.
    Append,
    /// Newer versions of stored ids MERGEd (or an own-table view's rows inserted).
    Merge,
    /// Rows removed (replaced view rows, or a server's deletions).
    Delete,
    /// History-mode deletion versions appended.
    Tombstone,
    /// One commit of a type table: new rows appended, and the rows they
    /// supersede (or a server deleted) marked deleted by deletion vectors.
    Upsert,
}

impl std::fmt::Display for CommitOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Append => "append",
            Self::Merge => "merge",
            Self::Delete => "delete",
            Self::Tombstone => "tombstone",
            Self::Upsert => "upsert",
        })
    }
}

/// One Delta commit a job made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitRecord {
    pub version: u64,
    pub operation: CommitOperation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<UpdateMetrics>,
}

/// What kind of job a manifest records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ManifestKind {
    /// `fhirlake load` of files.
    Load,
    /// `fhirlake export`: a Bulk Data export and its load.
    Export,
    /// `fhirlake sync`: REST incremental sync.
    Sync,
    /// HL7 v2 messages converted and loaded.
    Hl7v2,
    /// `fhirlake policy apply`: rows already loaded, re-evaluated by a new policy.
    PolicyApply,
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
    pub kind: ManifestKind,
    pub fhirlake_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub lake: String,
    /// Where the job's segregated tables are (`--segregated-lake`), when
    /// not in the lake itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segregated_lake: Option<String>,
    pub mode: LoadMode,
    pub inputs: Vec<InputRecord>,
    pub tables: BTreeMap<String, TableRecord>,
    pub totals: RowCounts,
    /// The policy in force ("none" without one; manifests before it lack it).
    #[serde(default = "no_policy")]
    pub policy_version: String,
    /// For an export job: the request, the server's files and their fate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportRecord>,
    /// For a sync job: the window, pages and re-reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<super::SyncRecord>,
    /// For an HL7 v2 job: every message and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hl7v2: Option<super::Hl7v2Record>,
    /// What the code checks found (absent with `--no-code-checks`, and in
    /// manifests before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_checks: Option<CodeCheckRecord>,
    /// What profile validation found (`--validate`; absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationRecord>,
    /// The audit chain head after the job's last event (`_fhirlake/audit`),
    /// anchored here so a cut-off chain shows (manifests before it lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::audit::Head>,
}

/// The code checks of a job: what was checked, the problems by kind, the
/// codings concept maps added, and the curation queue after the job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeCheckRecord {
    pub concepts: u64,
    pub codings: u64,
    pub quantities: u64,
    /// Problems found, by kind (`bad_check_digit`, `unknown_system`, ...).
    pub problems: BTreeMap<String, u64>,
    pub resources_with_issues: u64,
    pub bindings_checked: u64,
    pub bindings_not_checkable: u64,
    /// Codings concept maps added, in all and per map.
    pub mappings_applied: u64,
    pub mappings_by_map: BTreeMap<String, u64>,
    /// Distinct (system, code, problem) this job found.
    pub curation_rows: u64,
    /// `_curation` rows open after the job, and those it resolved.
    pub curation_open: u64,
    pub curation_resolved: u64,
    /// Where the job's value sets, maps and bindings came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// What the terminology server (`--tx`) did, when the job had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminology_server: Option<TerminologyServerRecord>,
}

/// A job's terminology server: what it was asked and answered. Codes are
/// distinct (system, code) pairs; codings are occurrences in resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TerminologyServerRecord {
    /// The base URL (no credentials, no query).
    pub server: String,
    /// Codings judged by an answer (the server's or the lake's cache).
    pub codings_checked: u64,
    /// Codings left unverified: the server did not answer them.
    pub codings_unverified: u64,
    /// Codes answered from `_tx_cache` at the start.
    pub codes_cached: u64,
    /// Codes sent, and what came back.
    pub codes_asked: u64,
    pub codes_valid: u64,
    pub codes_invalid: u64,
    /// The server does not hold the code system: not verified, not wrong.
    pub codes_unsupported: u64,
    /// Codes without an answer (the next job asks them again), a few of them, and why.
    pub codes_unverified: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified_examples: Vec<String>,
    pub requests: u64,
    pub failed_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Answers appended to `_tx_cache` by this job.
    pub cache_rows_written: u64,
}

/// A job's profile validation: the package, the action on failure, and
/// how the resources read fared.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValidationRecord {
    /// `hl7.fhir.us.core@6.1.0`, or the package path given.
    pub package: String,
    /// `flag`, `quarantine` or `segregate`.
    pub on_invalid: String,
    /// Resources judged against at least one profile.
    pub validated: u64,
    pub valid: u64,
    pub invalid: u64,
    /// Resources no profile of the package applies to (`_valid` null).
    pub no_profile: u64,
    /// Invalid resources, by the profile they break.
    pub invalid_by_profile: BTreeMap<String, u64>,
    /// `_validation` rows the job wrote (findings of the versions it stored).
    pub rows_written: u64,
}

impl ValidationRecord {
    /// Counts one resource that breaks `profiles`.
    pub fn count_invalid<'p>(&mut self, profiles: impl IntoIterator<Item = &'p str>) {
        self.validated += 1;
        self.invalid += 1;
        for profile in profiles {
            *self
                .invalid_by_profile
                .entry(profile.to_owned())
                .or_default() += 1;
        }
    }
}

fn no_policy() -> String {
    "none".into()
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
    pub outcome: FileOutcome,
    /// For error files: the OperationOutcome diagnostics they carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// For a remote lake: the copy under `<lake>/_raw/<job>/`, relative to the lake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake_copy: Option<String>,
}

/// What became of one file of an export manifest. Stored as text:
/// `pending`, `downloaded`, `count_mismatch`, `expired (HTTP 410)`, `failed: <why>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Pending,
    Downloaded,
    /// Downloaded, but not the lines the manifest declared (they still load).
    CountMismatch,
    /// The link answered 404/410; a fresh manifest may renew it.
    Expired {
        status: u16,
    },
    Failed {
        reason: String,
    },
}

impl std::fmt::Display for FileOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Downloaded => f.write_str("downloaded"),
            Self::CountMismatch => f.write_str("count_mismatch"),
            Self::Expired { status } => write!(f, "expired (HTTP {status})"),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

impl std::str::FromStr for FileOutcome {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "pending" => Self::Pending,
            "downloaded" => Self::Downloaded,
            "count_mismatch" => Self::CountMismatch,
            other => match other
                .strip_prefix("expired (HTTP ")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.parse().ok())
            {
                Some(status) => Self::Expired { status },
                None => Self::Failed {
                    reason: other.strip_prefix("failed: ").unwrap_or(other).to_owned(),
                },
            },
        })
    }
}

impl Serialize for FileOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text.parse().expect("every text is an outcome"))
    }
}

impl ExportFile {
    /// Downloaded completely and checksummed (a count mismatch included: its lines are real).
    pub fn verified(&self) -> bool {
        self.sha256.is_some()
            && matches!(
                self.outcome,
                FileOutcome::Downloaded | FileOutcome::CountMismatch
            )
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
     (inserted {} + updated {} + unchanged {} + quarantined {} + filtered {}; per table {}); \
     this is a fhirlake bug, nothing was recorded as loaded — please report it with the input",
    rows.inserted, rows.updated, rows.unchanged, rows.quarantined, rows.filtered, by_table.total()
)]
pub struct AccountingError {
    pub path: String,
    pub lines: u64,
    pub accounted: u64,
    pub rows: RowCounts,
    pub by_table: RowCounts,
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
            source: None,
            filtered_by: BTreeMap::new(),
            policy_rules: BTreeMap::new(),
        }
    }

    /// The invariant: every non-blank line is inserted, updated, unchanged,
    /// quarantined or filtered; the per-table counts add up to the file's,
    /// and the filter reasons to its filtered count.
    pub fn check_accounting(&self) -> Result<(), AccountingError> {
        let mut by_table = RowCounts::default();
        for counts in self.tables.values() {
            by_table.add(counts);
        }
        let accounted = self.rows.total();
        let by_reason: u64 = self.filtered_by.values().sum();
        if self.status != InputStatus::Loaded
            || (accounted == self.lines && by_table == self.rows && by_reason == self.rows.filtered)
        {
            return Ok(());
        }
        Err(AccountingError {
            path: self.path.clone(),
            lines: self.lines,
            accounted,
            rows: self.rows,
            by_table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lines: u64, tables: &[(&str, RowCounts)]) -> InputRecord {
        let mut record = InputRecord::new("f.ndjson".into(), InputStatus::Loaded, "sha".into(), 9);
        record.lines = lines;
        for (name, counts) in tables {
            record.tables.insert((*name).to_owned(), *counts);
            record.rows.add(counts);
        }
        record
    }

    fn counts(
        inserted: u64,
        updated: u64,
        unchanged: u64,
        quarantined: u64,
        filtered: u64,
    ) -> RowCounts {
        RowCounts {
            inserted,
            updated,
            unchanged,
            quarantined,
            filtered,
        }
    }

    #[test]
    fn every_line_must_be_inserted_updated_unchanged_quarantined_or_filtered() {
        let mut ok = record(
            10,
            &[
                ("patient", counts(3, 1, 2, 0, 2)),
                ("_quarantine", counts(0, 0, 0, 2, 0)),
            ],
        );
        ok.filtered_by.insert("part2".into(), 2);
        assert_eq!(ok.check_accounting(), Ok(()));

        // One line too many read: the invariant names the file and the sums.
        let mut short = ok.clone();
        short.lines = 11;
        let error = short.check_accounting().unwrap_err();
        assert_eq!((error.lines, error.accounted), (11, 10));
        assert!(error.to_string().contains("f.ndjson"), "{error}");

        // The file's counts must be the sum of its tables'.
        let mut skewed = ok.clone();
        skewed.rows.inserted += 1;
        skewed.rows.unchanged -= 1;
        assert!(skewed.check_accounting().is_err());

        // Filter reasons must add up to the filtered count.
        let mut reasons = ok.clone();
        reasons.filtered_by.insert("research".into(), 1);
        assert!(reasons.check_accounting().is_err());

        // Skipped files carry no line counts and pass.
        let mut skipped = short;
        skipped.status = InputStatus::SkippedAlreadyLoaded;
        assert_eq!(skipped.check_accounting(), Ok(()));
    }

    #[test]
    fn file_outcomes_read_back_as_written() {
        for outcome in [
            FileOutcome::Pending,
            FileOutcome::Downloaded,
            FileOutcome::CountMismatch,
            FileOutcome::Expired { status: 410 },
            FileOutcome::Failed {
                reason: "expired (HTTP 404/410) after a manifest refresh".into(),
            },
        ] {
            let text = serde_json::to_string(&outcome).unwrap();
            assert_eq!(
                serde_json::from_str::<FileOutcome>(&text).unwrap(),
                outcome,
                "{text}"
            );
        }
        assert_eq!(
            serde_json::to_string(&FileOutcome::Expired { status: 410 }).unwrap(),
            "\"expired (HTTP 410)\""
        );
    }
}
