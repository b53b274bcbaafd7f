//! What each step of a job that moves data tells the audit trail: one type
//! per step, gathered in [`Step`].
//!
//! Every field is a count, a version, a time, a digest or one of the checked
//! types of [`super::values`]; there is no free text, so a step cannot carry
//! a token or a secret. Failures are a [`FailureKind`], not an error message
//! (messages quote URLs and responses).

use chrono::{DateTime, FixedOffset};

use super::values::{
    Code, Location, MessageType, PolicyVersion, ResourceId, ResourceType, Sha256, TableName,
};

/// One step of a job, as the audit trail records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    KickOff(KickOff),
    InputFile(InputFile),
    SyncPage(SyncPage),
    Hl7Batch(Hl7Batch),
    TableCommit(TableCommit),
    Deletions(Deletions),
    Quarantine(Quarantine),
    Finish(Finish),
    Maintenance(Maintenance),
    PolicyChange(PolicyChange),
}

/// The kind of a step, for failures that name where they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    KickOff,
    InputFile,
    SyncPage,
    Hl7Batch,
    TableCommit,
    Deletions,
    Quarantine,
    Finish,
    Optimize,
    Vacuum,
    PolicyChange,
}

impl StepKind {
    /// The `urn:fhirlake:audit-step` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::KickOff => "kickoff",
            Self::InputFile => "input-file",
            Self::SyncPage => "sync-page",
            Self::Hl7Batch => "hl7v2-batch",
            Self::TableCommit => "table-commit",
            Self::Deletions => "deletions",
            Self::Quarantine => "quarantine",
            Self::Finish => "finish",
            Self::Optimize => "optimize",
            Self::Vacuum => "vacuum",
            Self::PolicyChange => "policy-change",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            Self::KickOff => "job kick-off",
            Self::InputFile => "input file read",
            Self::SyncPage => "sync page received",
            Self::Hl7Batch => "HL7 v2 message batch received",
            Self::TableCommit => "Delta table commit",
            Self::Deletions => "deletions applied",
            Self::Quarantine => "lines quarantined",
            Self::Finish => "job finished",
            Self::Optimize => "table optimized",
            Self::Vacuum => "table vacuumed",
            Self::PolicyChange => "policy changed",
        }
    }
}

impl Step {
    /// Which kind of step this is (its subtype code).
    pub fn kind(&self) -> StepKind {
        match self {
            Self::KickOff(_) => StepKind::KickOff,
            Self::InputFile(_) => StepKind::InputFile,
            Self::SyncPage(_) => StepKind::SyncPage,
            Self::Hl7Batch(_) => StepKind::Hl7Batch,
            Self::TableCommit(_) => StepKind::TableCommit,
            Self::Deletions(_) => StepKind::Deletions,
            Self::Quarantine(_) => StepKind::Quarantine,
            Self::Finish(_) => StepKind::Finish,
            Self::Maintenance(m) => match m.operation {
                MaintenanceOp::Optimize { .. } => StepKind::Optimize,
                MaintenanceOp::Vacuum { .. } => StepKind::Vacuum,
            },
            Self::PolicyChange(_) => StepKind::PolicyChange,
        }
    }
}

macro_rules! into_step {
    ($($name:ident),*) => {
        $(impl From<$name> for Step {
            fn from(step: $name) -> Self {
                Step::$name(step)
            }
        })*
    };
}
into_step!(
    KickOff,
    InputFile,
    SyncPage,
    Hl7Batch,
    TableCommit,
    Deletions,
    Quarantine,
    Finish,
    Maintenance,
    PolicyChange
);

/// A job starts: what it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct KickOff {
    pub operation: Operation,
    /// Types asked for (`_type`); empty for all.
    pub resource_types: Vec<ResourceType>,
    /// `_since` as resolved (for `--since auto`, the previous transactionTime).
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
    /// Inputs named, for a load of files.
    pub inputs: Option<u64>,
}

/// What a job was started to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `fhirlake load` of files.
    Load,
    /// A Bulk Data `$export` kick-off.
    BulkExport(ExportLevel),
    /// REST incremental sync.
    Sync,
    /// HL7 v2 messages (MLLP or files).
    Hl7v2,
    /// Rows already loaded, re-evaluated by a new policy (`policy apply`).
    PolicyApply,
}

/// The level of a Bulk export: `/$export`, `/Patient/$export`, `/Group/ID/$export`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLevel {
    System,
    Patient,
    Group(ResourceId),
}

/// One input file read: a Bulk download, or a local/`s3://` file of a load.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    pub kind: FileKind,
    /// The type the file declares (`Patient.000.ndjson`, the manifest's `type`).
    pub resource_type: Option<ResourceType>,
    /// Where it came from (a download URL loses its query here).
    pub source: Location,
    /// Where fhirlake keeps it (`_raw/<job>/output/...`), if it does.
    pub stored_as: Option<Location>,
    pub bytes: u64,
    pub lines: u64,
    pub sha256: Sha256,
    /// When reading started (the event's time is when it ended).
    pub started: Option<DateTime<FixedOffset>>,
}

/// What an input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A Bulk manifest's `output[]` file.
    Output,
    /// An `error[]` file (OperationOutcomes).
    Error,
    /// A `deleted[]` file (Bundles of deletions).
    Deleted,
    /// A file a load was given.
    Local,
    /// A Bulk export `log.ndjson`, recorded and not loaded.
    ExportLog,
}

impl FileKind {
    /// The file entity's `kind` detail.
    pub fn code(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Error => "error",
            Self::Deleted => "deleted",
            Self::Local => "local",
            Self::ExportLog => "export-log",
        }
    }
}

/// One page of a REST sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPage {
    /// 0-based index of the page within its window.
    pub page: u64,
    /// The page's URL (without its query).
    pub url: Location,
    pub window_since: Option<DateTime<FixedOffset>>,
    pub window_until: Option<DateTime<FixedOffset>>,
    pub resources: Vec<(ResourceType, u64)>,
    pub bytes: u64,
    pub sha256: Sha256,
}

/// A batch of HL7 v2 messages taken in.
#[derive(Debug, Clone, PartialEq)]
pub struct Hl7Batch {
    /// The feed (`mllp://host:port`, a file).
    pub feed: Location,
    pub messages: u64,
    /// Messages answered with a reject (AR/AE) and quarantined.
    pub rejected: u64,
    pub message_types: Vec<(MessageType, u64)>,
    /// Resources the messages produced, per type.
    pub resources: Vec<(ResourceType, u64)>,
    pub bytes: u64,
    pub sha256: Sha256,
}

/// One Delta commit of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableCommit {
    pub table: TableName,
    /// The type whose rows the table holds, if it is a type or view table.
    pub resource_type: Option<ResourceType>,
    pub version: u64,
    pub operation: CommitOperation,
    pub rows: RowChanges,
}

/// As the ledger names Delta commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOperation {
    Append,
    Merge,
    Delete,
    Tombstone,
    Upsert,
}

impl CommitOperation {
    /// The table entity's `operation` detail.
    pub fn code(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Merge => "merge",
            Self::Delete => "delete",
            Self::Tombstone => "tombstone",
            Self::Upsert => "upsert",
        }
    }
}

/// Rows one commit changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowChanges {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// A server's deletions (`deleted[]`) applied to one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletions {
    pub table: TableName,
    pub resource_type: ResourceType,
    /// The commit that applied them; `None` when nothing was to delete.
    pub version: Option<u64>,
    pub requested: u64,
    /// Rows deleted (current mode).
    pub deleted: u64,
    /// Tombstone versions appended (history mode).
    pub tombstones: u64,
    /// SHA-256 of the `deleted[]` files they came from.
    pub sources: Vec<Sha256>,
}

/// Lines quarantined, in one commit of `_quarantine`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    pub version: u64,
    pub rows: u64,
    pub reasons: Vec<(Code, u64)>,
    /// SHA-256 of the files the lines came from.
    pub sources: Vec<Sha256>,
}

/// A job ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub outcome: JobOutcome,
    pub started: DateTime<FixedOffset>,
    /// The manifest's SHA-256, once written.
    pub manifest_sha256: Option<Sha256>,
    /// Every table the job committed to, at its last version.
    pub tables: Vec<TableVersion>,
    pub totals: Totals,
}

/// A table at the version a job left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableVersion {
    pub table: TableName,
    pub version: u64,
}

/// The job's row accounting (lines = inserted + updated + unchanged +
/// quarantined + filtered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub lines: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub quarantined: u64,
    pub filtered: u64,
    pub deleted: u64,
}

/// How a job ended: the AuditEvent outcome 0, 4 (warnings, cancelled) or 8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Exit code 0.
    Succeeded,
    /// Exit code 1: finished, with lines quarantined or files amiss.
    Warnings(Warnings),
    /// Exit code 2.
    Failed(Failure),
    /// Ctrl-C (exit code 130).
    Cancelled,
}

/// What made a finished job exit with code 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warnings {
    pub quarantined: u64,
    /// Files whose declared `count` did not match the lines received.
    pub count_mismatches: u64,
    /// Bulk `error[]` files the server sent.
    pub server_error_files: u64,
}

/// Why and where a job failed, without the error's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The step that failed.
    pub step: Option<StepKind>,
    /// The object it failed on (a table, a file, a server).
    pub object: Option<Location>,
}

/// What failed, as a closed set: no error text (which quotes URLs and
/// responses) reaches a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused, DNS, TLS, timeout.
    Network,
    /// A server answered with this status after the retries.
    Http { status: u16 },
    /// The token request was refused, or a 401/403 persisted.
    Authorization,
    /// The lake's store refused a read or a write.
    Storage,
    /// A Delta commit lost its races too often.
    CommitConflict,
    /// The row accounting did not add up.
    Accounting,
    /// Flags, views or a policy that cannot be used.
    InvalidInput,
    /// A bug.
    Internal,
    /// Stopped by the operator (Ctrl-C) before it finished.
    Cancelled,
}

impl FailureKind {
    /// Words for `outcomeDesc`.
    pub fn describe(self) -> String {
        match self {
            Self::Network => "network failure".into(),
            Self::Http { status } => format!("HTTP status {status}"),
            Self::Authorization => "authorization refused".into(),
            Self::Storage => "storage failure".into(),
            Self::CommitConflict => "Delta commit conflict".into(),
            Self::Accounting => "row accounting mismatch".into(),
            Self::InvalidInput => "invalid input".into(),
            Self::Internal => "internal error".into(),
            Self::Cancelled => "cancelled by the operator".into(),
        }
    }
}

/// `fhirlake optimize` or `vacuum` of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub table: TableName,
    pub operation: MaintenanceOp,
    /// The version it committed (`None` when it had nothing to do).
    pub version: Option<u64>,
}

/// What a maintenance run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceOp {
    Optimize {
        files_removed: u64,
        files_added: u64,
        /// Rows marked deleted that the rewrite dropped for good.
        rows_purged: u64,
    },
    Vacuum {
        files_deleted: u64,
        retention_hours: u64,
    },
}

/// The policy in force changed; the new one is the event's job context's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    pub previous: PolicyVersion,
    /// The policy file.
    pub source: Option<Location>,
}
