//! One type table's commit: its staged rows resolved against the key index
//! (and a server's deletions), then landed as one Delta commit, resolved
//! again after each race it loses.
//!
//! ```text
//!  prepare: tombstone rows (history) ─▶ writer finished (staged files) ─▶ resolve (keys, deletions)
//!  land:    run uploaded ─▶ commit (files + deletion vectors + run named) ─┬─▶ index adopts the run
//!                  ▲                                                        │
//!                  └── lost a race: reload, index catches up, resolve again ┘
//! ```
//! Between the two, the job commits its own-table views, dropping the rows
//! of versions that lost (see `commit`).

use std::collections::HashSet;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::arrow::array::{ArrayRef, StringArray};
use std::sync::Arc;

use super::keys::{Class, JobKey, Recounts, Stored, recount_classes};
use super::pipeline::StageClock;
use super::resolve::{Fresh, KeyDeletion, Resolution, resolve_table};
use super::rows::ResourceRow;
use super::tables::TableState;
use super::{Context, LoadError};
use crate::lake::{ConflictRetry, Deletion, LoadMode, StagedFile, UpdateMetrics, commit_changes};
use crate::ledger::{CommitOperation, CommitRecord, TableRecord};
use crate::view::ViewArrays;

/// The `input` of a job key that is a history-mode tombstone, not an input line.
pub(super) const TOMBSTONE_INPUT: u32 = u32::MAX;

/// A type table resolved, ready to land.
pub(super) struct Prepared {
    state: TableState,
    table: DeltaTable,
    staged: Vec<StagedFile>,
    deletions: Vec<KeyDeletion>,
    resolution: Resolution,
}

impl Prepared {
    /// Whether the job's row of `id` at `last_updated` lost (to a row of
    /// the same job or the table): its own-table view rows must not land.
    pub fn lost(&self, losers: &HashSet<(u128, i64)>, id: &str, last_updated: i64) -> bool {
        losers.contains(&(self.state.index.key_of(id), last_updated))
    }

    pub fn losers(&self) -> HashSet<(u128, i64)> {
        self.resolution.losers.iter().copied().collect()
    }
}

/// What landing a table did.
pub(super) struct Landed {
    pub name: String,
    pub record: TableRecord,
    /// Counting corrections per input line (see `keys`).
    pub recounts: Recounts,
    pub rows_deleted: u64,
    /// History-mode tombstone versions written.
    pub tombstones: u64,
}

/// Finishes the table's staged files and resolves them, with `deletions`
/// (a server's, for this table).
pub(super) async fn prepare(
    context: &Context,
    mut state: TableState,
    deletions: &[Deletion],
) -> Result<Prepared, LoadError> {
    if context.mode == LoadMode::History && !deletions.is_empty() {
        stage_tombstones(context, &mut state, deletions).await?;
    }
    state.write_inserts().await?;
    let started = Instant::now();
    let mut writer = state.writer.take().expect("writer open");
    let (table, staged) = writer.finish().await?;
    let mut key_deletions: Vec<KeyDeletion> = match context.mode {
        LoadMode::Current => deletions
            .iter()
            .map(|d| KeyDeletion {
                key: state.index.key_of(&d.id),
                deleted_at: d.deleted_at,
            })
            .collect(),
        LoadMode::History => Vec::new(),
    };
    key_deletions.sort_by_key(|d| (d.key, d.deleted_at));
    let resolution = resolve_table(
        &state.index,
        &mut state.keys,
        &staged,
        &key_deletions,
        Fresh::AsRead,
        context.same_version,
    )
    .await?;
    StageClock::add(&context.clock.commit, started);
    Ok(Prepared {
        state,
        table,
        staged,
        deletions: key_deletions,
        resolution,
    })
}

/// History mode: a deletion is a version of its own (`_deleted`), staged
/// like any row, so a re-run finds it stored and writes it once.
async fn stage_tombstones(
    context: &Context,
    state: &mut TableState,
    deletions: &[Deletion],
) -> Result<(), LoadError> {
    let wanted: Vec<(u128, i64)> = deletions
        .iter()
        .map(|d| (state.index.key_of(&d.id), d.deleted_at))
        .collect();
    let hits = state.index.lookup(&wanted).await?;
    let records: ArrayRef = Arc::new(StringArray::from_iter_values(
        deletions.iter().map(|d| d.record.as_str()),
    ));
    let records = ViewArrays::from(vec![records]);
    for (n, ((deletion, (key, deleted_at)), hit)) in
        deletions.iter().zip(wanted).zip(hits).enumerate()
    {
        let row = ResourceRow {
            id: &deletion.id,
            last_updated: deleted_at,
            version_id: None,
            last_updated_from: Some("deleted"),
            resource: (&records, n),
            resource_bytes: deletion.record.len(),
            source: &deletion.source,
            line: deletion.line,
            subsetted: false,
            deleted: true,
            code_issues: None,
            valid: None,
        };
        state
            .inserts
            .push(&row, None, &context.lineage)
            .map_err(state.arrow_err())?;
        let job_key = JobKey {
            key,
            version: deleted_at,
            order: context.next_order(),
            last_updated: deleted_at,
            seq: state.staged_rows,
            input: TOMBSTONE_INPUT,
            subsetted: false,
            counted: 0,
            stored: hit.map(|h| (Stored::from(&h), h.file, h.row)),
        }
        .with_counted(Class::New);
        state.staged_rows += 1;
        state.tombstones += 1;
        state
            .keys
            .push(job_key)
            .map_err(|e| super::ingest::spill_error(&state.name, e))?;
    }
    Ok(())
}

/// Lands a prepared table: one commit, resolved again after each lost race.
pub(super) async fn land(context: &Context, prepared: Prepared) -> Result<Landed, LoadError> {
    let Prepared {
        mut state,
        mut table,
        staged,
        deletions,
        mut resolution,
    } = prepared;
    let started = Instant::now();
    let name = state.name.clone();
    let files: Vec<String> = staged.iter().map(|f| f.add.path.clone()).collect();
    let mut retry = ConflictRetry::new(&name);
    loop {
        if resolution.changes.is_empty() {
            break;
        }
        let next = table.version().map_or(0, |v| v as i64 + 1);
        let Resolution { changes, run, .. } = &mut resolution;
        let run = run.take().expect("a resolution's run is uploaded once");
        changes.run = Some(state.index.upload_run(run, &files, (next, next)).await?);
        changes.job_id = context.job_id.clone();
        changes.anchor = context.audit.anchor();
        match commit_changes(&mut table, &name, changes).await {
            Ok(version) => {
                if let Some(version) = version {
                    state.record.commits.push(CommitRecord {
                        version,
                        operation: CommitOperation::Upsert,
                        merge: Some(changes.metrics.clone()),
                    });
                }
                state.index.catch_up(&table).await?;
                state.index.compact().await?;
                break;
            }
            Err(error) => {
                retry.after(&mut table, error).await?;
                let fresh = match state.index.catch_up(&table).await? {
                    true => Fresh::All,
                    false => Fresh::Since(state.runs_read),
                };
                resolution = resolve_table(
                    &state.index,
                    &mut state.keys,
                    &staged,
                    &deletions,
                    fresh,
                    context.same_version,
                )
                .await?;
            }
        }
    }
    StageClock::add(&context.clock.commit, started);
    let metrics: &UpdateMetrics = &resolution.changes.metrics;
    let tombstones = match context.mode {
        LoadMode::History => history_tombstones(&state, &resolution.recounts),
        LoadMode::Current => 0,
    };
    Ok(Landed {
        rows_deleted: metrics.rows_deleted,
        tombstones,
        recounts: std::mem::take(&mut resolution.recounts),
        record: std::mem::take(&mut state.record),
        name,
    })
}

/// Tombstones staged minus those that found their version stored.
fn history_tombstones(state: &TableState, recounts: &Recounts) -> u64 {
    let lost: u64 = recounts
        .iter()
        .filter(|(key, _)| {
            let (input, _, to) = recount_classes(key);
            input == TOMBSTONE_INPUT && to == Class::Unchanged
        })
        .map(|(_, n)| n)
        .sum();
    state.tombstones.saturating_sub(lost)
}
