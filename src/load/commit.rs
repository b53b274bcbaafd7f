//! The job's commit: the one place a load's rows become visible, written as
//! the sequence of states it is. Each state is safe to crash after:
//!
//! ```text
//!  rows staged ──▶ view tables ──▶ type tables ──▶ deletions ──▶ quarantine ──▶ manifest ──▶ loaded
//!  (Parquet,       (own-table      (append, then   applied      appended      (put-if-      markers
//!   uncommitted)    views first)    MERGE of                                   absent)
//!                                   updates)
//! ```
//!
//! What a crash leaves, and why a re-run converges:
//! - **before the view tables**: only invisible Parquet files (VACUUM removes
//!   them); the re-run loads everything again.
//! - **after some tables**: those tables hold the job's rows; the re-run
//!   classifies against them, finds those rows present (unchanged) and writes
//!   the rest. View tables commit before their type table, so a resource whose
//!   type row landed always has its view rows.
//! - **after the deletions**: applying them again deletes nothing more (the
//!   rows are gone; newer ones survive either way).
//! - **after the quarantine**: the re-run quarantines the same lines again
//!   (under its own job id): quarantine rows are a log, not keyed.
//! - **after the manifest**: the job is recorded; the markers are only an
//!   index, so the re-run reloads those files, finds every row present and
//!   commits nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

use super::pipeline::StageClock;
use super::rows::{QuarantineRow, QuarantineRows};
use super::tables::TypeTables;
use super::view_tables::ViewTable;
use super::{Context, LoadError, ServerIssue};
use crate::fhir;
use crate::lake::{
    Deletion, LoadMode, QUARANTINE_TABLE, TableSink, UpdateMetrics, apply_deletions,
    quarantine_schema,
};
use crate::ledger::{
    self, CommitOperation, CommitRecord, ExportRecord, InputRecord, InputStatus, JobManifest,
    LoadedMarker, ManifestKind, RowCounts, TableRecord,
};

/// Everything a job has staged and not yet committed.
pub(super) struct Staged {
    pub tables: TypeTables,
    pub view_tables: BTreeMap<String, ViewTable>,
    /// Commits own-table views made mid-job (before a type table's flush).
    pub view_records: BTreeMap<String, TableRecord>,
    pub quarantine: QuarantineRows,
    pub inputs: Vec<InputRecord>,
    pub warnings: Vec<String>,
}

impl Staged {
    pub fn new() -> Self {
        Self {
            tables: TypeTables::default(),
            view_tables: BTreeMap::new(),
            view_records: BTreeMap::new(),
            quarantine: QuarantineRows::new(quarantine_schema()),
            inputs: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Bounds memory: MERGEs a table's buffered updates once they grow large
    /// (own-table views first: a type table never commits ahead of them).
    pub async fn flush_large_updates(&mut self, context: &Context) -> Result<(), LoadError> {
        for state in self.tables.open.values_mut() {
            state.stash_updates()?;
            if state.update_bytes >= context.update_flush_bytes {
                commit_view_tables(context, &mut self.view_tables, &mut self.view_records).await?;
                state.commit(context, true).await?;
            }
        }
        Ok(())
    }
}

/// What the job brings besides its inputs' rows.
#[derive(Default)]
pub(super) struct Extras {
    pub kind: Option<ManifestKind>,
    pub export: Option<ExportRecord>,
    pub server_issues: Vec<ServerIssue>,
    pub deletions: BTreeMap<String, Vec<Deletion>>,
}

/// What the commit recorded.
pub(super) struct Committed {
    pub manifest: JobManifest,
    pub manifest_path: String,
}

/// Runs the commit sequence (see the module header).
pub(super) async fn commit(
    context: &Arc<Context>,
    mut staged: Staged,
    mut extras: Extras,
    started_at: DateTime<Utc>,
) -> Result<Committed, LoadError> {
    commit_view_tables(context, &mut staged.view_tables, &mut staged.view_records).await?;
    let mut tables = std::mem::take(&mut staged.view_records);
    tables.extend(commit_type_tables(context, staged.tables).await?);
    apply_server_deletions(context, &mut extras, &mut tables).await?;
    commit_quarantine(
        context,
        &mut staged.quarantine,
        &extras.server_issues,
        &mut tables,
    )
    .await?;
    let manifest = manifest(context, staged.inputs, tables, extras, started_at);
    let manifest_path = ledger::write_manifest(&context.lake, &manifest).await?;
    write_loaded_markers(context, &manifest).await?;
    Ok(Committed {
        manifest,
        manifest_path,
    })
}

/// Commits every own-table view's pending rows (before any type table commits).
pub(super) async fn commit_view_tables(
    context: &Context,
    view_tables: &mut BTreeMap<String, ViewTable>,
    records: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    for (name, table) in view_tables.iter_mut() {
        table
            .commit(&context.lake, records.entry(name.clone()).or_default())
            .await?;
    }
    Ok(())
}

/// Type tables commit independently of each other: all at once, so each
/// one's last Parquet encoding and its commit overlap the others'.
async fn commit_type_tables(
    context: &Arc<Context>,
    tables: TypeTables,
) -> Result<BTreeMap<String, TableRecord>, LoadError> {
    let commits: Vec<_> = tables
        .into_open()
        .await
        .into_iter()
        .map(|(name, mut state)| {
            let context = context.clone();
            tokio::spawn(async move {
                state.commit(&context, false).await?;
                Ok::<_, LoadError>((name, state.record))
            })
        })
        .collect();
    let mut records = BTreeMap::new();
    let mut first_error = None;
    for commit in commits {
        match commit.await.expect("table commit task panicked") {
            Ok((name, record)) => {
                records.insert(name, record);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// A server's deletions, after the loads: a row this job loaded that is
/// older than its deletion goes too.
async fn apply_server_deletions(
    context: &Context,
    extras: &mut Extras,
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    for (resource_type, deletions) in &extras.deletions {
        let name = fhir::table_name(resource_type);
        let outcome = apply_deletions(
            &context.lake,
            &name,
            context.mode,
            deletions,
            &context.lineage,
        )
        .await?;
        if let Some(version) = outcome.version {
            tables.entry(name).or_default().commits.push(CommitRecord {
                version,
                operation: match context.mode {
                    LoadMode::Current => CommitOperation::Delete,
                    LoadMode::History => CommitOperation::Tombstone,
                },
                merge: Some(UpdateMetrics {
                    source_rows: deletions.len() as u64,
                    rows_inserted: outcome.tombstones,
                    rows_deleted: outcome.rows_deleted,
                    ..Default::default()
                }),
            });
        }
        if let Some(export) = extras.export.as_mut() {
            export.deletions_requested += deletions.len() as u64;
            export.rows_deleted += outcome.rows_deleted;
            export.tombstones += outcome.tombstones;
        }
    }
    Ok(())
}

/// Appends the rejected lines, and the server's own error lines, to `_quarantine`.
async fn commit_quarantine(
    context: &Context,
    quarantine: &mut QuarantineRows,
    server_issues: &[ServerIssue],
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    for issue in server_issues {
        quarantine.push(
            &QuarantineRow {
                source: &issue.source,
                source_sha256: &issue.source_sha256,
                line: issue.line,
                byte_offset: issue.byte_offset,
                reason_code: "server_error",
                reason: &issue.diagnostics,
                resource_type: None,
                resource_id: None,
                raw: &issue.raw,
            },
            &context.lineage,
        );
    }
    if quarantine.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let mut sink = TableSink::open(&context.lake, QUARANTINE_TABLE, &quarantine_schema()).await?;
    let batch = quarantine.finish().map_err(|source| LoadError::Arrow {
        table: QUARANTINE_TABLE.into(),
        source,
    })?;
    sink.write(batch).await?;
    let (_, version) = sink.commit().await?;
    if let Some(version) = version {
        tables
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default()
            .commits
            .push(CommitRecord {
                version,
                operation: CommitOperation::Append,
                merge: None,
            });
    }
    StageClock::add(&context.clock.commit, started);
    Ok(())
}

/// The job's manifest. Per-table row counts come from the inputs, so the
/// two views of the job agree.
fn manifest(
    context: &Context,
    inputs: Vec<InputRecord>,
    mut tables: BTreeMap<String, TableRecord>,
    extras: Extras,
    started_at: DateTime<Utc>,
) -> JobManifest {
    for input in &inputs {
        for (name, counts) in &input.tables {
            tables.entry(name.clone()).or_default().rows.add(counts);
        }
    }
    if !extras.server_issues.is_empty() {
        // Not lines of any input: the export's error files, recorded per file in `export`.
        tables
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default()
            .rows
            .quarantined += extras.server_issues.len() as u64;
    }
    let mut totals = RowCounts::default();
    for input in &inputs {
        totals.add(&input.rows);
    }
    let kind = extras.kind.unwrap_or(if extras.export.is_some() {
        ManifestKind::Export
    } else {
        ManifestKind::Load
    });
    JobManifest {
        job_id: context.job_id.clone(),
        kind,
        fhirlake_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        lake: context.lake.root().to_string(),
        mode: context.mode,
        inputs,
        tables,
        totals,
        policy_version: context.policy.version().to_owned(),
        export: extras.export,
    }
}

/// Marker object name for a loaded input: size first, so listing can group by it.
pub(super) fn marker_key(bytes: u64, sha256: &str) -> String {
    format!("{bytes}-{sha256}")
}

async fn write_loaded_markers(context: &Context, manifest: &JobManifest) -> Result<(), LoadError> {
    for input in manifest
        .inputs
        .iter()
        .filter(|i| i.status == InputStatus::Loaded)
    {
        let marker = LoadedMarker {
            sha256: input.sha256.clone(),
            job_id: context.job_id.clone(),
            path: input.path.clone(),
        };
        let key = marker_key(input.bytes, &input.sha256);
        ledger::write_loaded_marker(&context.lake, &key, &marker).await?;
    }
    Ok(())
}
