//! The job's commit: the one place a load's rows become visible, written as
//! the sequence of states it is. Each state is safe to crash after:
//!
//! ```text
//!  rows staged ──▶ resolved ──▶ view tables ──▶ type tables ──▶ quarantine ──▶ curation ──▶ manifest ──▶ loaded
//!  (Parquet,       (per table:   (own-table     (one commit     appended      (`_curation`  (put-if-      markers
//!   uncommitted)    winners,      views first)   each: rows,                   merged,       absent)
//!                   deletions)                   deletion vectors, index run)  rewritten)
//! ```
//!
//! What a crash leaves, and why a re-run converges:
//! - **before the view tables**: only invisible Parquet files and, maybe,
//!   key-index runs no commit names (VACUUM removes both); the re-run loads
//!   everything again.
//! - **after some tables**: those tables hold the job's rows, deletions
//!   applied and rows indexed; the re-run classifies against them, finds
//!   those rows present (unchanged) and writes the rest. View tables commit
//!   before their type table, so a resource whose type row landed always has
//!   its view rows.
//! - **after the quarantine**: the re-run quarantines the same lines again
//!   (under its own job id): quarantine rows are a log, not keyed.
//! - **after the curation queue**: the re-run finds the same problems
//!   again and adds them to the counts a second time (counts are
//!   occurrences seen, not distinct resources).
//! - **after the manifest**: the job is recorded; the markers are only an
//!   index, so the re-run reloads those files, finds every row present and
//!   commits nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

use super::ingest::SUBSET_OF_FULL;
use super::keys::{Class, Recounts, recount_classes};
use super::landing::{Landed, Prepared, TOMBSTONE_INPUT, land, prepare};
use super::pipeline::StageClock;
use super::rows::{QuarantineRow, QuarantineRows};
use super::tables::{TableState, TypeTables};
use super::view_tables::ViewTable;
use super::{Context, LoadError, Rejection, audit_tables};
use crate::code_checks::tx::{self, TerminologyServer};
use crate::code_checks::{self, CURATION_EXAMPLES, CURATION_TABLE, ChunkCodes};
use crate::fhir;
use crate::lake::{Deletion, LoadMode, QUARANTINE_TABLE, TableSink, quarantine_schema};
use crate::ledger::{
    self, CodeCheckRecord, CommitOperation, CommitRecord, ExportRecord, Hl7v2Record, InputRecord,
    InputStatus, JobManifest, LoadedMarker, ManifestKind, RowCounts, SyncRecord, TableRecord,
    TerminologyServerRecord, ValidationRecord,
};
use crate::terminology::{Curation, Metrics};
use crate::validation::table::{VALIDATION_TABLE, ValidationRows, validation_schema};

/// Everything a job has staged and not yet committed.
pub(super) struct Staged {
    pub tables: TypeTables,
    pub view_tables: BTreeMap<String, ViewTable>,
    pub quarantine: QuarantineRows,
    pub inputs: Vec<InputRecord>,
    pub warnings: Vec<String>,
    /// Ids the policy segregated, by resource type: what the main table
    /// holds of them (older versions) is deleted in its commit.
    pub segregated: BTreeMap<String, Vec<Deletion>>,
    /// What the code checks found, merged over the job's chunks.
    pub codes: JobCodes,
    /// What profile validation found: counts, and the findings of the
    /// versions staged (`_validation` rows).
    pub validation: JobValidation,
}

/// The profile validation of a job so far.
#[derive(Default)]
pub(super) struct JobValidation {
    pub record: ValidationRecord,
    pub rows: ValidationRows,
}

/// The code checks' findings of a job: counts for the manifest, records
/// for `_curation`.
pub(super) struct JobCodes {
    pub metrics: Metrics,
    pub curation: Curation,
    /// Resources loaded with at least one problem.
    pub resources_with_issues: u64,
}

impl JobCodes {
    pub fn add(&mut self, chunk: Box<ChunkCodes>) {
        self.metrics.merge(&chunk.metrics);
        let ChunkCodes {
            metrics: _,
            curation,
        } = *chunk;
        self.curation.merge(curation);
    }
}

impl Staged {
    pub fn new() -> Self {
        Self {
            tables: TypeTables::default(),
            view_tables: BTreeMap::new(),
            quarantine: QuarantineRows::new(quarantine_schema()),
            inputs: Vec::new(),
            warnings: Vec::new(),
            segregated: BTreeMap::new(),
            codes: JobCodes {
                metrics: Metrics::default(),
                curation: Curation::new(CURATION_EXAMPLES),
                resources_with_issues: 0,
            },
            validation: JobValidation::default(),
        }
    }
}

/// What the job brings besides its inputs' rows.
#[derive(Default)]
pub(super) struct Extras {
    pub kind: Option<ManifestKind>,
    pub export: Option<ExportRecord>,
    pub sync: Option<SyncRecord>,
    pub hl7v2: Option<Hl7v2Record>,
    /// Write no loaded-file markers (inputs that are pages or messages,
    /// never seen again as files).
    pub no_markers: bool,
    pub rejections: Vec<Rejection>,
    /// A server's deletions, by resource type; applied in the type tables' commits.
    pub deletions: BTreeMap<String, Vec<Deletion>>,
    /// Rows to take out of segregated tables, by table name (`policy apply`).
    pub segregated_deletions: BTreeMap<String, Vec<Deletion>>,
}

impl Extras {
    /// What the manifest (and the audit trail) call the job.
    pub fn manifest_kind(&self) -> ManifestKind {
        self.kind.unwrap_or(if self.export.is_some() {
            ManifestKind::Export
        } else {
            ManifestKind::Load
        })
    }
}

/// What the commit recorded.
pub(super) struct Committed {
    pub manifest: JobManifest,
    pub manifest_path: String,
    /// What went wrong after the manifest (the job itself is recorded).
    pub warnings: Vec<String>,
}

/// Runs the commit sequence (see the module header).
pub(super) async fn commit(
    context: &Arc<Context>,
    mut staged: Staged,
    mut extras: Extras,
    started_at: DateTime<Utc>,
) -> Result<Committed, LoadError> {
    let deletions = std::mem::take(&mut extras.deletions);
    let requested: u64 = deletions.values().map(|d| d.len() as u64).sum();
    if let Some(export) = extras.export.as_mut() {
        export.deletions_requested += requested;
    }
    if let Some(sync) = extras.sync.as_mut() {
        sync.deletions_requested += requested;
    }
    let mut deletions = deletions;
    for (resource_type, list) in std::mem::take(&mut staged.segregated) {
        deletions.entry(resource_type).or_default().extend(list);
    }
    let segregated_deletions = std::mem::take(&mut extras.segregated_deletions);
    let prepared =
        prepare_type_tables(context, staged.tables, deletions, segregated_deletions).await?;
    let mut tables = BTreeMap::new();
    for view_table in staged.view_tables.values_mut() {
        if let Some(table) = prepared.get(view_table.type_table()) {
            let losers = table.losers();
            if !losers.is_empty() {
                view_table.drop_versions(|id, t| table.lost(&losers, id, t))?;
            }
        }
    }
    commit_view_tables(context, &mut staged.view_tables, &mut tables).await?;
    let view_table_names: Vec<String> = tables.keys().cloned().collect();
    for landed in land_type_tables(context, prepared).await? {
        apply_recounts(&mut staged.inputs, &landed.name, &landed.recounts);
        if let Some(export) = extras.export.as_mut() {
            export.rows_deleted += landed.rows_deleted;
            export.tombstones += landed.tombstones;
        }
        if let Some(sync) = extras.sync.as_mut() {
            sync.rows_deleted += landed.rows_deleted;
            sync.tombstones += landed.tombstones;
        }
        tables.insert(landed.name, landed.record);
    }
    for input in &staged.inputs {
        input.check_accounting()?;
    }
    // Events follow the commits they record (whose commitInfo anchors the
    // chain as it stood before them); the view tables' first.
    for name in view_table_names
        .iter()
        .chain(tables.keys().filter(|n| !view_table_names.contains(n)))
    {
        context.audit.table_commits(name, &tables[name]).await?;
    }
    commit_quarantine(
        context,
        &mut staged.quarantine,
        &extras.rejections,
        &mut tables,
    )
    .await?;
    let code_checks = commit_curation(context, &staged.codes, &mut tables).await?;
    let validation = commit_validation(context, &mut staged.validation, &mut tables).await?;
    let markers = !extras.no_markers;
    let mut manifest = manifest(context, staged.inputs, tables, extras, started_at);
    manifest.code_checks = code_checks;
    manifest.validation = validation;
    // The finish event is the chain head the manifest anchors.
    context.audit.finish(&manifest, started_at).await?;
    manifest.audit_head = context.audit.head();
    let (manifest_path, manifest_sha256) = ledger::write_manifest(&context.lake, &manifest).await?;
    context.lake.seal(&manifest_path);
    if markers {
        write_loaded_markers(context, &manifest).await?;
    }
    let mut warnings = Vec::new();
    let sha256 = crate::audit::Sha256::from_hex(&manifest_sha256).expect("a SHA-256 we computed");
    if let Err(e) = audit_tables::append(context, &manifest, sha256, started_at).await {
        warnings.push(format!(
            "the job is loaded and recorded (manifest {manifest_path}, audit chain), but copying its events to the _audit / _provenance tables failed: {e}"
        ));
    }
    Ok(Committed {
        manifest,
        manifest_path,
        warnings,
    })
}

/// Commits every own-table view's rows (before any type table commits).
async fn commit_view_tables(
    context: &Context,
    view_tables: &mut BTreeMap<String, ViewTable>,
    records: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    let info = context.audit.commit_info(&context.job_id);
    for (name, table) in view_tables.iter_mut() {
        table
            .commit(
                &context.lake,
                records.entry(name.clone()).or_default(),
                &info,
            )
            .await?;
    }
    Ok(())
}

/// Resolves every type table the job wrote to or a server deleted from, all
/// at once (each one's last Parquet encoding overlaps the others').
async fn prepare_type_tables(
    context: &Arc<Context>,
    tables: TypeTables,
    mut deletions: BTreeMap<String, Vec<Deletion>>,
    segregated_deletions: BTreeMap<String, Vec<Deletion>>,
) -> Result<BTreeMap<String, Prepared>, LoadError> {
    let mut open = tables.into_open().await;
    // Tables only deletions touch: a table never loaded has nothing to
    // delete in current mode; in history mode its tombstones create it.
    for (resource_type, list) in &deletions {
        let name = fhir::table_name(resource_type);
        if list.is_empty() || open.contains_key(&name) {
            continue;
        }
        if context.mode == LoadMode::Current && !context.lake.has_table(&name).await? {
            continue;
        }
        let view = context.views.for_type(resource_type).cloned();
        open.insert(name.clone(), TableState::open(context, &name, view).await?);
    }
    // Segregated tables keep no view columns.
    for (name, list) in &segregated_deletions {
        if list.is_empty() || open.contains_key(name) || !context.lake.has_table(name).await? {
            continue;
        }
        open.insert(name.clone(), TableState::open(context, name, None).await?);
    }
    let mut by_table: BTreeMap<String, Vec<Deletion>> = segregated_deletions;
    for (resource_type, list) in std::mem::take(&mut deletions) {
        by_table
            .entry(fhir::table_name(&resource_type))
            .or_default()
            .extend(list);
    }
    let tasks: Vec<_> = open
        .into_iter()
        .map(|(name, state)| {
            let context = context.clone();
            let deletions = by_table.remove(&name).unwrap_or_default();
            tokio::spawn(async move {
                let prepared = prepare(&context, state, &deletions).await?;
                Ok::<_, LoadError>((name, prepared))
            })
        })
        .collect();
    let mut prepared = BTreeMap::new();
    for result in join_all_first_error(tasks).await? {
        prepared.insert(result.0, result.1);
    }
    Ok(prepared)
}

/// Lands every prepared type table, independently of each other, at once.
async fn land_type_tables(
    context: &Arc<Context>,
    prepared: BTreeMap<String, Prepared>,
) -> Result<Vec<Landed>, LoadError> {
    let tasks: Vec<_> = prepared
        .into_values()
        .map(|table| {
            let context = context.clone();
            tokio::spawn(async move { land(&context, table).await })
        })
        .collect();
    join_all_first_error(tasks).await
}

/// Waits for every task (none is left running) and returns their results,
/// or the first error.
async fn join_all_first_error<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, LoadError>>>,
) -> Result<Vec<T>, LoadError> {
    let mut done = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await.expect("table commit task panicked") {
            Ok(value) => done.push(value),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Moves the counts of rows that resolving found to be other than they
/// were counted when read (a job's own duplicates, a concurrent writer).
fn apply_recounts(inputs: &mut [InputRecord], table: &str, recounts: &Recounts) {
    for (key, n) in recounts {
        let (input, from, to) = recount_classes(key);
        if input == TOMBSTONE_INPUT {
            continue;
        }
        let record = &mut inputs[input as usize];
        for counts in [
            record.tables.entry(table.to_owned()).or_default(),
            &mut record.rows,
        ] {
            *count_of(counts, from) -= n;
            *count_of(counts, to) += n;
        }
        for (class, delta) in [(from, -(*n as i64)), (to, *n as i64)] {
            if class == Class::SubsetOfFull {
                let reason = record
                    .filtered_by
                    .entry(SUBSET_OF_FULL.to_owned())
                    .or_default();
                *reason = reason.saturating_add_signed(delta);
                if *reason == 0 {
                    record.filtered_by.remove(SUBSET_OF_FULL);
                }
            }
        }
    }
}

fn count_of(counts: &mut RowCounts, class: Class) -> &mut u64 {
    match class {
        Class::New => &mut counts.inserted,
        Class::Newer => &mut counts.updated,
        Class::Unchanged => &mut counts.unchanged,
        Class::SubsetOfFull => &mut counts.filtered,
    }
}

/// Appends the rejected lines, and what the source rejected, to `_quarantine`.
async fn commit_quarantine(
    context: &Context,
    quarantine: &mut QuarantineRows,
    rejections: &[Rejection],
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    for issue in rejections {
        quarantine.push(
            &QuarantineRow {
                source: &issue.source,
                source_sha256: &issue.source_sha256,
                line: issue.line,
                byte_offset: issue.byte_offset,
                reason_code: issue.reason_code,
                reason: &issue.reason,
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
    let batch = quarantine.finish().map_err(|source| LoadError::Arrow {
        table: QUARANTINE_TABLE.into(),
        source,
    })?;
    if let Some(version) = append(context, QUARANTINE_TABLE, &quarantine_schema(), batch).await? {
        context
            .audit
            .quarantine(version, quarantine.reasons(), &quarantine.sources())
            .await?;
        record_append(tables, QUARANTINE_TABLE, version);
    }
    StageClock::add(&context.clock.commit, started);
    Ok(())
}

/// Appends `batch` to the log table `name` (created on first use) in one
/// commit stamped with the job; the version, `None` if nothing was committed.
async fn append(
    context: &Context,
    name: &str,
    schema: &deltalake::arrow::datatypes::SchemaRef,
    batch: deltalake::arrow::record_batch::RecordBatch,
) -> Result<Option<u64>, LoadError> {
    let mut sink = TableSink::open(&context.lake, name, schema)
        .await?
        .with_commit_info(context.audit.commit_info(&context.job_id));
    sink.write(batch).await?;
    Ok(sink.commit().await?.1)
}

/// Records an append commit of `name` in the job's table records.
fn record_append<'t>(
    tables: &'t mut BTreeMap<String, TableRecord>,
    name: &str,
    version: u64,
) -> &'t TableRecord {
    let table = tables.entry(name.to_owned()).or_default();
    table.commits.push(CommitRecord {
        version,
        operation: CommitOperation::Append,
        merge: None,
    });
    table
}

/// Appends the findings of the versions the job stored to `_validation`
/// (after the type tables, like the quarantine: a crash between them
/// leaves rows whose findings a reload does not write again, as it finds
/// them unchanged; `fhirlake validate` re-derives them); returns the
/// manifest's record.
async fn commit_validation(
    context: &Context,
    validation: &mut JobValidation,
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<Option<ValidationRecord>, LoadError> {
    let Some(job) = &context.validation else {
        return Ok(None);
    };
    let mut record = std::mem::take(&mut validation.record);
    record.package = job.profiles.package.clone();
    record.on_invalid = job.on_invalid.as_str().to_owned();
    record.rows_written = validation.rows.len() as u64;
    if validation.rows.is_empty() {
        return Ok(Some(record));
    }
    let started = Instant::now();
    let batch = validation
        .rows
        .finish()
        .map_err(|source| LoadError::Arrow {
            table: VALIDATION_TABLE.into(),
            source,
        })?;
    if let Some(version) = append(context, VALIDATION_TABLE, &validation_schema(), batch).await? {
        let table = record_append(tables, VALIDATION_TABLE, version).clone();
        context
            .audit
            .table_commits(VALIDATION_TABLE, &table)
            .await?;
    }
    StageClock::add(&context.clock.commit, started);
    Ok(Some(record))
}

/// Merges the job's code problems into `_curation` (after the type tables:
/// a crash before it loses only this job's queue entries, which a reload
/// finds again); returns the manifest's record of the checks.
async fn commit_curation(
    context: &Context,
    codes: &JobCodes,
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<Option<CodeCheckRecord>, LoadError> {
    let Some(checks) = &context.code_checks else {
        return Ok(None);
    };
    let started = Instant::now();
    let info = context.audit.commit_info(&context.job_id);
    let update =
        code_checks::table::merge_into_lake(&context.lake, &codes.curation, checks, info).await?;
    if let Some(version) = update.version {
        let record = tables.entry(CURATION_TABLE.to_owned()).or_default();
        record.commits.push(CommitRecord {
            version,
            operation: CommitOperation::Merge,
            merge: None,
        });
        let record = record.clone();
        context.audit.table_commits(CURATION_TABLE, &record).await?;
    }
    let terminology_server = match checks.server() {
        Some(server) => Some(commit_tx_cache(context, server, &codes.metrics, tables).await?),
        None => None,
    };
    StageClock::add(&context.clock.commit, started);
    let report = codes.metrics.report(checks.terminology());
    Ok(Some(CodeCheckRecord {
        concepts: report.concepts,
        codings: report.codings,
        quantities: report.quantities,
        problems: report
            .problems
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect(),
        resources_with_issues: codes.resources_with_issues,
        bindings_checked: report.bindings_checked,
        bindings_not_checkable: report.bindings_not_checkable,
        mappings_applied: report.mappings_applied,
        mappings_by_map: report.mappings_by_map,
        curation_rows: codes.curation.len() as u64,
        curation_open: update.open as u64,
        curation_resolved: update.resolved_now as u64,
        sources: checks.sources().to_vec(),
        terminology_server,
    }))
}

/// Appends the terminology server's new answers to `_tx_cache` (after the
/// queue: a crash before it only makes the next job ask them again);
/// returns the manifest's record of the server.
async fn commit_tx_cache(
    context: &Context,
    server: &TerminologyServer,
    metrics: &Metrics,
    tables: &mut BTreeMap<String, TableRecord>,
) -> Result<TerminologyServerRecord, LoadError> {
    let answers = server.take_fresh();
    if !answers.is_empty() {
        let batch = tx::to_batch(server.label(), &context.job_id, &answers).map_err(|source| {
            LoadError::Arrow {
                table: tx::TX_CACHE_TABLE.into(),
                source,
            }
        })?;
        let schema = tx::tx_cache_schema();
        if let Some(version) = append(context, tx::TX_CACHE_TABLE, &schema, batch).await? {
            let table = record_append(tables, tx::TX_CACHE_TABLE, version).clone();
            context
                .audit
                .table_commits(tx::TX_CACHE_TABLE, &table)
                .await?;
        }
    }
    let stats = server.stats();
    Ok(TerminologyServerRecord {
        server: server.label().to_owned(),
        codings_checked: metrics.server_checked,
        codings_unverified: metrics.server_unverified,
        codes_cached: stats.cached,
        codes_asked: stats.asked,
        codes_valid: stats.valid,
        codes_invalid: stats.invalid,
        codes_unsupported: stats.unsupported,
        codes_unverified: stats.unverified,
        unverified_examples: stats.unverified_examples,
        requests: stats.requests,
        failed_requests: stats.failed_requests,
        error: stats.error,
        cache_rows_written: answers.len() as u64,
    })
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
    if !extras.rejections.is_empty() {
        // Not lines of any input: an export's error files, HL7 v2 messages (recorded in `export` / `hl7v2`).
        tables
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default()
            .rows
            .quarantined += extras.rejections.len() as u64;
    }
    let mut totals = RowCounts::default();
    for input in &inputs {
        totals.add(&input.rows);
    }
    let kind = extras.manifest_kind();
    JobManifest {
        job_id: context.job_id.clone(),
        kind,
        fhirlake_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        lake: context.lake.root().to_string(),
        segregated_lake: context.lake.segregated_lake().map(|l| l.root().to_string()),
        mode: context.mode,
        inputs,
        tables,
        totals,
        policy_version: context.policy.version().to_owned(),
        export: extras.export,
        sync: extras.sync,
        hl7v2: extras.hl7v2,
        code_checks: None,
        validation: None,
        audit_head: None,
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
