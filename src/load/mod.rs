//! A load job: NDJSON files in, rows in Delta tables out, every line accounted for.
//!
//! In: a [`LoadPlan`] and a [`Lake`]. Out: a [`LoadReport`] whose manifest is
//! also written to the lake. The job's states, in order:
//!
//! ```text
//!  discover inputs ─▶ per file: stream, decode, classify against key index,
//!                     write parquet (uncommitted); check row accounting
//!                 ─▶ per table: append commit, then MERGE of updates
//!                 ─▶ _quarantine append ─▶ manifest (put-if-absent) ─▶ loaded markers
//! ```
//! A crash before the manifest leaves committed tables and no record of the
//! job; re-running classifies against what was committed and converges.

mod discover;
mod pipeline;
mod rows;
mod view_tables;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use serde::Serialize;

pub use discover::{DiscoverError, Discovered, discover};
pub use pipeline::StageClock;
use pipeline::{FilePipeline, Piece};
pub use rows::{Lineage, QuarantineRow, QuarantineRows, ResourceRow, ResourceRows, table_schema};
use view_tables::ViewTable;
use writer::TableWriter;

use crate::fhir;
use crate::lake::{
    Deletion, KeyIndex, KeyState, Lake, LakeError, LoadMode, QUARANTINE_TABLE, TableSink,
    TombstoneLineage, UpdateMetrics, apply_deletions, merge_updates, quarantine_schema,
    read_key_index,
};
use crate::ledger::{
    self, AccountingError, CommitRecord, ExportRecord, InputRecord, InputStatus, JobManifest,
    LoadedMarker, RowCounts, StandIn, TableRecord,
};
use crate::ndjson::{BufferPool, DecodedChunk, HashingReader, InputFile, LineKind, RejectReason};
use crate::view::{CompiledView, ViewSet};

/// What to load and how. Built with `with_*` setters; [`LoadPlan::new`] has the defaults.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub inputs: Vec<PathBuf>,
    pub mode: LoadMode,
    /// Stand-in for a missing `meta.lastUpdated`, overriding any export transactionTime.
    pub as_of: Option<DateTime<Utc>>,
    /// Reload files even if their SHA-256 was already loaded.
    pub force: bool,
    pub chunk_bytes: usize,
    pub batch_rows: usize,
    /// Buffered updated rows per table before they are MERGEd mid-job.
    pub update_flush_bytes: usize,
    /// Views whose columns the per-type tables get (default: `schemas/`).
    pub views: Arc<ViewSet>,
    /// Use this job id instead of a new one (an export loads under its own id).
    pub job_id: Option<String>,
    /// Set by an export: recorded in the manifest, which then has kind "export".
    pub export: Option<ExportRecord>,
    /// OperationOutcome lines from an export's `error[]` files, for the quarantine.
    pub server_issues: Vec<ServerIssue>,
    /// Resources an export reports deleted, by resource type.
    pub deletions: BTreeMap<String, Vec<Deletion>>,
}

/// One OperationOutcome line the server reported about the export.
#[derive(Debug, Clone)]
pub struct ServerIssue {
    pub source: String,
    pub source_sha256: String,
    pub line: u64,
    pub byte_offset: u64,
    pub diagnostics: String,
    pub raw: Vec<u8>,
}

impl LoadPlan {
    pub fn new(inputs: Vec<PathBuf>) -> Self {
        Self {
            inputs,
            mode: LoadMode::Current,
            as_of: None,
            force: false,
            chunk_bytes: 4 << 20,
            batch_rows: 16 * 1024,
            update_flush_bytes: 256 << 20,
            views: Arc::new(ViewSet::defaults()),
            job_id: None,
            export: None,
            server_issues: Vec::new(),
            deletions: BTreeMap::new(),
        }
    }

    pub fn with_views(mut self, views: ViewSet) -> Self {
        self.views = Arc::new(views);
        self
    }

    pub fn with_mode(mut self, mode: LoadMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_as_of(mut self, as_of: Option<DateTime<Utc>>) -> Self {
        self.as_of = as_of;
        self
    }

    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    pub fn with_update_flush_bytes(mut self, bytes: usize) -> Self {
        self.update_flush_bytes = bytes.max(1);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(
        "reading {path}: {source}; the file is unreadable or its gzip stream is corrupt — nothing from it was committed"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // Boxed: Delta errors are large and LoadError travels on every `?`.
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error("building rows for table {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    #[error(transparent)]
    Accounting(#[from] AccountingError),
}

impl From<LakeError> for LoadError {
    fn from(error: LakeError) -> Self {
        Self::Lake(Box::new(error))
    }
}

/// Seconds spent per stage (summed over threads for read and decode).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimings {
    pub read_hash_s: f64,
    pub decode_s: f64,
    pub build_s: f64,
    pub write_s: f64,
    pub commit_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub manifest: JobManifest,
    pub manifest_path: String,
    pub elapsed_s: f64,
    pub bytes_read: u64,
    pub stages: StageTimings,
    pub warnings: Vec<String>,
}

impl LoadReport {
    pub fn quarantined(&self) -> u64 {
        self.manifest.totals.quarantined
    }
}

/// The per-type tables of a job: open ones, and existing ones being opened
/// ahead of their first row. Reading a big table's key index is I/O the
/// loader would otherwise wait on at a file boundary, cores idle.
#[derive(Default)]
struct TypeTables {
    open: BTreeMap<String, TableState>,
    /// `None` from a task: the table does not exist yet.
    opening: HashMap<String, tokio::task::JoinHandle<Result<Option<TableState>, LoadError>>>,
}

impl TypeTables {
    /// Starts opening the table of `resource_type`, unless open or opening.
    /// Only an existing table is opened ahead: creating one waits for its
    /// first row, so a file whose lines all fail leaves no empty table.
    fn open_ahead(
        &mut self,
        lake: &Lake,
        plan: &LoadPlan,
        resource_type: &str,
        clock: &Arc<StageClock>,
    ) {
        let name = fhir::table_name(resource_type);
        if self.open.contains_key(&name) || self.opening.contains_key(&name) {
            return;
        }
        let view = plan.views.for_type(resource_type).cloned();
        let (lake, clock, mode, table) = (lake.clone(), clock.clone(), plan.mode, name.clone());
        let task = tokio::spawn(async move {
            if !lake.has_table(&table).await? {
                return Ok(None);
            }
            TableState::open(&lake, &table, mode, view, &clock)
                .await
                .map(Some)
        });
        self.opening.insert(name, task);
    }

    /// The table `name` of `resource_type`: opened ahead, or now.
    async fn get(
        &mut self,
        lake: &Lake,
        plan: &LoadPlan,
        name: &str,
        resource_type: &str,
        clock: &Arc<StageClock>,
    ) -> Result<&mut TableState, LoadError> {
        if !self.open.contains_key(name) {
            let ahead = match self.opening.remove(name) {
                Some(task) => task.await.expect("table open task panicked")?,
                None => None,
            };
            let state = match ahead {
                Some(state) => state,
                None => {
                    let view = plan.views.for_type(resource_type).cloned();
                    TableState::open(lake, name, plan.mode, view, clock).await?
                }
            };
            self.open.insert(name.to_owned(), state);
        }
        Ok(self.open.get_mut(name).expect("opened above"))
    }

    /// The open tables, once tables opened ahead but never needed (their
    /// file held no valid line of the type) have settled. Their outcome does
    /// not matter to the job: nothing of it went to them.
    async fn into_open(mut self) -> BTreeMap<String, TableState> {
        for (_, task) in self.opening.drain() {
            let _ = task.await;
        }
        std::mem::take(&mut self.open)
    }
}

impl Drop for TypeTables {
    /// A job that fails stops its tables being opened ahead.
    fn drop(&mut self) {
        for task in self.opening.values() {
            task.abort();
        }
    }
}

/// Progress events for a display; the loader never prints.
#[derive(Debug, Clone)]
pub enum Progress {
    Started { files: usize, bytes: u64 },
    File { path: PathBuf },
    Bytes(u64),
    Committing,
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A table being loaded: its sink, key index and buffered rows.
struct TableState {
    name: String,
    schema: SchemaRef,
    view: Option<Arc<CompiledView>>,
    writer: Option<TableWriter>,
    index: KeyIndex,
    inserts: ResourceRows,
    updates: ResourceRows,
    update_batches: Vec<RecordBatch>,
    update_bytes: usize,
    record: TableRecord,
}

impl TableState {
    async fn open(
        lake: &Lake,
        name: &str,
        mode: LoadMode,
        view: Option<Arc<CompiledView>>,
        clock: &Arc<StageClock>,
    ) -> Result<Self, LoadError> {
        let schema = rows::table_schema(view.as_deref());
        let sink = TableSink::open(lake, name, &schema).await?;
        let index = read_key_index(sink.table(), name, mode).await?;
        Ok(Self {
            name: name.to_owned(),
            inserts: ResourceRows::with_view(schema.clone(), view.clone()),
            updates: ResourceRows::with_view(schema.clone(), view.clone()),
            schema,
            view,
            writer: Some(TableWriter::start(sink, clock.clone())),
            index,
            update_batches: Vec::new(),
            update_bytes: 0,
            record: TableRecord::default(),
        })
    }

    fn arrow_err(&self) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> LoadError + '_ {
        move |source| LoadError::Arrow {
            table: self.name.clone(),
            source,
        }
    }

    /// Hands the buffered inserts to the table's writer task; returns the
    /// time spent waiting for room in its queue.
    async fn write_inserts(&mut self) -> Result<std::time::Duration, LoadError> {
        if self.inserts.is_empty() {
            return Ok(std::time::Duration::ZERO);
        }
        // The next batch is sized like this one (files are mostly one type).
        let fresh =
            ResourceRows::with_capacity(self.schema.clone(), self.view.clone(), self.inserts.len());
        let rows = std::mem::replace(&mut self.inserts, fresh);
        self.writer.as_mut().expect("writer open").send(rows).await
    }

    fn stash_updates(&mut self) -> Result<(), LoadError> {
        if !self.updates.is_empty() {
            self.update_bytes += self.updates.bytes();
            let batch = self.updates.finish().map_err(self.arrow_err())?;
            self.update_batches.push(batch);
        }
        Ok(())
    }

    /// Commits the appends, then MERGEs the buffered updates (which may
    /// update rows those appends just added). Reopens the sink if `reopen`.
    async fn commit(
        &mut self,
        lake: &Lake,
        clock: &Arc<StageClock>,
        reopen: bool,
    ) -> Result<(), LoadError> {
        self.write_inserts().await?;
        self.stash_updates()?;
        let started = Instant::now();
        let mut writer = self.writer.take().expect("writer open");
        let (mut table, version) = writer.finish().await?.commit().await?;
        if let Some(version) = version {
            self.record.commits.push(CommitRecord {
                version,
                operation: "append".into(),
                merge: None,
            });
        }
        let updates = std::mem::take(&mut self.update_batches);
        self.update_bytes = 0;
        if !updates.is_empty() {
            let (merged, metrics) = merge_updates(table, &self.name, &self.schema, updates).await?;
            table = merged;
            if let Some(version) = table.version() {
                self.record.commits.push(CommitRecord {
                    version,
                    operation: "merge".into(),
                    merge: Some(metrics),
                });
            }
        }
        if reopen {
            let sink = TableSink::open(lake, &self.name, &self.schema).await?;
            self.writer = Some(TableWriter::start(sink, clock.clone()));
        }
        StageClock::add(&clock.commit, started);
        Ok(())
    }
}

/// A rejected line held until its file's SHA-256 is known.
struct PendingReject {
    line: u64,
    offset: u64,
    reason: RejectReason,
    raw: Vec<u8>,
}

/// Where a stand-in `meta.lastUpdated` comes from for one file.
struct StandInRule {
    source: &'static str,
    micros: i64,
    text: String,
}

fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn stand_in_rule(plan: &LoadPlan, discovered: &Discovered, file: &InputFile) -> StandInRule {
    if let Some(as_of) = plan.as_of {
        let micros = as_of.timestamp_micros();
        return StandInRule {
            source: "as_of",
            micros,
            text: rfc3339(micros),
        };
    }
    let dir = file
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let from_export = discovered
        .transaction_times
        .iter()
        .find(|(d, _)| same_dir(d, &dir))
        .and_then(|(_, t)| fhir::parse_instant_micros(t));
    if let Some(micros) = from_export {
        return StandInRule {
            source: "transaction_time",
            micros,
            text: rfc3339(micros),
        };
    }
    // Last resort: when the file was written. Stable across re-runs of the
    // same file, and recorded in the manifest and on every row it applies to.
    let micros = file.modified.unwrap_or(0);
    StandInRule {
        source: "file_mtime",
        micros,
        text: rfc3339(micros),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn display_path(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn new_job_id(now: DateTime<Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &suffix[..8])
}

/// SHA-256s already loaded into the lake, grouped by file size so a file is
/// hashed up front only when a same-sized loaded file exists.
async fn loaded_by_size(lake: &Lake) -> Result<HashMap<u64, HashSet<String>>, LakeError> {
    let prefix = lake.path(ledger::LOADED_DIR);
    let mut listing = lake.store().list(Some(&prefix));
    let mut by_size: HashMap<u64, HashSet<String>> = HashMap::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|source| LakeError::Store {
            path: prefix.to_string(),
            source,
        })?;
        let Some(name) = meta.location.filename() else {
            continue;
        };
        // Marker names are `<bytes>-<sha256>.json`.
        if let Some((size, sha)) = name.trim_end_matches(".json").split_once('-')
            && let Ok(size) = size.parse()
        {
            by_size.entry(size).or_default().insert(sha.to_owned());
        }
    }
    Ok(by_size)
}

fn hash_file(file: &InputFile) -> std::io::Result<(String, u64)> {
    let mut reader = HashingReader::new(file.open_raw()?);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(reader.finish())
}

/// Runs one load job.
pub async fn run(
    lake: &Lake,
    plan: &LoadPlan,
    progress: Option<ProgressSink>,
) -> Result<LoadReport, LoadError> {
    let started_at = Utc::now();
    let clock_start = Instant::now();
    let job_id = plan
        .job_id
        .clone()
        .unwrap_or_else(|| new_job_id(started_at));
    let lineage = Lineage {
        job_id: job_id.clone(),
        ingested_at: started_at.timestamp_micros(),
    };
    let clock = Arc::new(StageClock::default());
    let notify = |event: Progress| {
        if let Some(p) = &progress {
            p(event);
        }
    };

    let discovered = discover(&plan.inputs, lake.storage_options()).await?;
    lake.ensure_put_if_absent().await?;
    let total_bytes: u64 = discovered.files.iter().map(|f| f.size).sum();
    notify(Progress::Started {
        files: discovered.files.len(),
        bytes: total_bytes,
    });
    let loaded = if plan.force {
        HashMap::new()
    } else {
        loaded_by_size(lake).await?
    };

    let mut warnings = Vec::new();
    let mut inputs = Vec::new();
    let mut tables = TypeTables::default();
    let mut view_tables: BTreeMap<String, ViewTable> = BTreeMap::new();
    let mut view_records: BTreeMap<String, TableRecord> = BTreeMap::new();
    let mut quarantine = QuarantineRows::new(quarantine_schema());
    let mut bytes_read = 0u64;

    for log in &discovered.export_logs {
        let (sha256, bytes) =
            tokio::task::block_in_place(|| hash_file(log)).map_err(|source| LoadError::Read {
                path: log.path.clone(),
                source,
            })?;
        inputs.push(InputRecord::new(
            display_path(&log.path),
            InputStatus::ExportLog,
            sha256,
            bytes,
        ));
    }

    let buffers = BufferPool::default();
    let start_pipeline = |file: &InputFile| {
        let byte_progress: Arc<dyn Fn(u64) + Send + Sync> = match progress.clone() {
            Some(p) => Arc::new(move |n| p(Progress::Bytes(n))),
            None => Arc::new(|_| {}),
        };
        pipeline::start(
            file,
            plan.chunk_bytes,
            buffers.clone(),
            plan.views.clone(),
            clock.clone(),
            byte_progress,
        )
    };
    // The next file is read and decoded while this one's rows are built, so
    // the cores do not idle at file boundaries (bounded: a few chunks).
    let mut prefetched: Option<(usize, FilePipeline)> = None;
    for (index, file) in discovered.files.iter().enumerate() {
        notify(Progress::File {
            path: file.path.clone(),
        });
        let read_err = |source| LoadError::Read {
            path: file.path.clone(),
            source,
        };
        if let Some(shas) = loaded.get(&file.size) {
            // Blocking reads (a file, or an object through this runtime).
            let (sha256, bytes) =
                tokio::task::block_in_place(|| hash_file(file)).map_err(read_err)?;
            if shas.contains(&sha256) {
                let marker = ledger::loaded_marker(lake, &marker_key(bytes, &sha256)).await?;
                notify(Progress::Bytes(bytes));
                let mut skipped = InputRecord::new(
                    display_path(&file.path),
                    InputStatus::SkippedAlreadyLoaded,
                    sha256,
                    bytes,
                );
                skipped.loaded_by_job = marker.map(|m| m.job_id);
                inputs.push(skipped);
                continue;
            }
        }
        let pipeline = match prefetched.take() {
            Some((at, pipeline)) if at == index => pipeline,
            _ => start_pipeline(file),
        };
        if let Some(expected) = file.expected_type {
            tables.open_ahead(lake, plan, expected, &clock);
        }
        if let Some(next) = discovered.files.get(index + 1)
            && !loaded.contains_key(&next.size)
        {
            prefetched = Some((index + 1, start_pipeline(next)));
            if let Some(expected) = next.expected_type {
                tables.open_ahead(lake, plan, expected, &clock);
            }
        }
        let record = load_file(
            lake,
            plan,
            &discovered,
            file,
            pipeline,
            &lineage,
            &clock,
            &mut tables,
            &mut view_tables,
            &mut quarantine,
            &mut warnings,
        )
        .await?;
        bytes_read += record.bytes;
        record.check_accounting()?;
        inputs.push(record);
        // Bound memory: MERGE buffered updates once they grow large (own-table
        // views first: a type table may never commit ahead of them).
        for state in tables.open.values_mut() {
            state.stash_updates()?;
            if state.update_bytes >= plan.update_flush_bytes {
                commit_view_tables(lake, &mut view_tables, &mut view_records).await?;
                state.commit(lake, &clock, true).await?;
            }
        }
    }

    notify(Progress::Committing);
    commit_view_tables(lake, &mut view_tables, &mut view_records).await?;
    let mut table_records = view_records;
    // Type tables commit independently of each other: all at once, so each
    // one's last Parquet encoding and its commit overlap the others'.
    let commits: Vec<_> = tables
        .into_open()
        .await
        .into_iter()
        .map(|(name, mut state)| {
            let (lake, clock) = (lake.clone(), clock.clone());
            tokio::spawn(async move {
                state.commit(&lake, &clock, false).await?;
                Ok::<_, LoadError>((name, state.record))
            })
        })
        .collect();
    let mut first_error = None;
    for commit in commits {
        match commit.await.expect("table commit task panicked") {
            Ok((name, record)) => {
                table_records.insert(name, record);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut export = plan.export.clone();
    // Deletions after the loads, so a row loaded by this job that is older
    // than its deletion goes too.
    for (resource_type, deletions) in &plan.deletions {
        let name = fhir::table_name(resource_type);
        let lineage = TombstoneLineage {
            job_id: &job_id,
            ingested_at: lineage.ingested_at,
        };
        let outcome = apply_deletions(lake, &name, plan.mode, deletions, &lineage).await?;
        if let Some(version) = outcome.version {
            table_records
                .entry(name)
                .or_default()
                .commits
                .push(CommitRecord {
                    version,
                    operation: match plan.mode {
                        LoadMode::Current => "delete".into(),
                        LoadMode::History => "tombstone".into(),
                    },
                    merge: Some(UpdateMetrics {
                        source_rows: deletions.len() as u64,
                        rows_inserted: outcome.tombstones,
                        rows_deleted: outcome.rows_deleted,
                        ..Default::default()
                    }),
                });
        }
        if let Some(export) = export.as_mut() {
            export.deletions_requested += deletions.len() as u64;
            export.rows_deleted += outcome.rows_deleted;
            export.tombstones += outcome.tombstones;
        }
    }
    for issue in &plan.server_issues {
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
            &lineage,
        );
    }
    if !quarantine.is_empty() {
        let started = Instant::now();
        let schema = quarantine_schema();
        let mut sink = TableSink::open(lake, QUARANTINE_TABLE, &schema).await?;
        let batch = quarantine.finish().map_err(|source| LoadError::Arrow {
            table: QUARANTINE_TABLE.into(),
            source,
        })?;
        sink.write(batch).await?;
        let (_, version) = sink.commit().await?;
        let record: &mut TableRecord = table_records
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default();
        if let Some(version) = version {
            record.commits.push(CommitRecord {
                version,
                operation: "append".into(),
                merge: None,
            });
        }
        StageClock::add(&clock.commit, started);
    }
    // Per-table row counts come from the inputs, so the two views agree.
    for input in &inputs {
        for (name, counts) in &input.tables {
            table_records
                .entry(name.clone())
                .or_default()
                .rows
                .add(counts);
        }
    }
    if !plan.server_issues.is_empty() {
        // Not lines of any input: the export's error files, recorded per file in `export`.
        table_records
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default()
            .rows
            .quarantined += plan.server_issues.len() as u64;
    }
    let mut totals = RowCounts::default();
    for input in &inputs {
        totals.add(&input.rows);
    }

    let manifest = JobManifest {
        job_id: job_id.clone(),
        kind: if export.is_some() { "export" } else { "load" }.into(),
        fhirlake_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        lake: lake.root().to_string(),
        mode: plan.mode,
        inputs,
        tables: table_records,
        totals,
        export,
    };
    let manifest_path = ledger::write_manifest(lake, &manifest).await?;
    for input in manifest
        .inputs
        .iter()
        .filter(|i| i.status == InputStatus::Loaded)
    {
        let marker = LoadedMarker {
            sha256: input.sha256.clone(),
            job_id: job_id.clone(),
            path: input.path.clone(),
        };
        ledger::write_loaded_marker(lake, &marker_key(input.bytes, &input.sha256), &marker).await?;
    }

    let nanos = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
    Ok(LoadReport {
        stages: StageTimings {
            read_hash_s: nanos(&clock.read_hash),
            decode_s: nanos(&clock.decode),
            build_s: nanos(&clock.build),
            write_s: nanos(&clock.write),
            commit_s: nanos(&clock.commit),
        },
        manifest,
        manifest_path,
        elapsed_s: clock_start.elapsed().as_secs_f64(),
        bytes_read,
        warnings,
    })
}

/// Commits every own-table view's pending rows (before any type table commits).
async fn commit_view_tables(
    lake: &Lake,
    view_tables: &mut BTreeMap<String, ViewTable>,
    records: &mut BTreeMap<String, TableRecord>,
) -> Result<(), LoadError> {
    for (name, table) in view_tables.iter_mut() {
        table
            .commit(lake, records.entry(name.clone()).or_default())
            .await?;
    }
    Ok(())
}

/// Marker object name for a loaded file: size first, so listing can group by it.
fn marker_key(bytes: u64, sha256: &str) -> String {
    format!("{bytes}-{sha256}")
}

#[allow(clippy::too_many_arguments)]
async fn load_file(
    lake: &Lake,
    plan: &LoadPlan,
    discovered: &Discovered,
    file: &InputFile,
    mut pipeline: FilePipeline,
    lineage: &Lineage,
    clock: &Arc<StageClock>,
    tables: &mut TypeTables,
    view_tables: &mut BTreeMap<String, ViewTable>,
    quarantine: &mut QuarantineRows,
    warnings: &mut Vec<String>,
) -> Result<InputRecord, LoadError> {
    let source = display_path(&file.path);
    let stand_in = stand_in_rule(plan, discovered, file);

    let mut record = InputRecord::new(source.clone(), InputStatus::Loaded, String::new(), 0);
    let mut rejects: Vec<PendingReject> = Vec::new();
    let mut stand_ins = 0u64;
    let mut finished = false;
    let mut table_of_type: (Box<str>, String) = (Box::from(""), String::new());

    while let Some(piece) = pipeline.pieces.recv().await {
        let (
            chunk,
            DecodedChunk {
                lines,
                views,
                resources,
            },
        ) = match piece {
            Piece::Lines(chunk, decoded) => (chunk, decoded),
            Piece::Done { sha256, bytes } => {
                record.sha256 = sha256;
                record.bytes = bytes;
                finished = true;
                break;
            }
            Piece::Failed(source) => {
                return Err(LoadError::Read {
                    path: file.path.clone(),
                    source,
                });
            }
        };
        let started = Instant::now();
        let mut waited = std::time::Duration::ZERO;
        for (n, line) in lines.into_iter().enumerate() {
            let raw = &chunk.data[line.start..line.end];
            let keys = match line.kind {
                LineKind::Blank => {
                    record.blank_lines += 1;
                    continue;
                }
                LineKind::Rejected(reason) => {
                    record.lines += 1;
                    rejects.push(PendingReject {
                        line: line.line,
                        offset: line.offset,
                        reason,
                        raw: raw.to_vec(),
                    });
                    continue;
                }
                LineKind::Resource(keys) => keys,
            };
            record.lines += 1;
            let (last_updated, from) = match keys.last_updated {
                Some(t) => (t, None),
                None => {
                    stand_ins += 1;
                    (stand_in.micros, Some(stand_in.source))
                }
            };
            // Lines of one file are nearly always one type: name the table once per run of it.
            if table_of_type.0 != keys.resource_type {
                table_of_type = (
                    keys.resource_type.clone(),
                    fhir::table_name(&keys.resource_type),
                );
            }
            let name = &table_of_type.1;
            let state = tables
                .get(lake, plan, name, &keys.resource_type, clock)
                .await?;
            if !record.tables.contains_key(name) {
                record.tables.insert(name.clone(), RowCounts::default());
            }
            let counts = record.tables.get_mut(name).expect("inserted above");
            let row = ResourceRow {
                id: &keys.id,
                last_updated,
                version_id: keys.version_id.as_deref(),
                last_updated_from: from,
                resource: (&resources, n),
                resource_bytes: raw.len(),
                source: &source,
                line: line.line,
            };
            let state_of_key = state.index.classify(&keys.id, last_updated);
            if state_of_key != KeyState::Unchanged {
                let extras = plan.views.extras_for(&keys.resource_type);
                for ((table, view), rows) in extras.iter().zip(&line.extra_rows) {
                    view_tables
                        .entry(table.clone())
                        .or_insert_with(|| ViewTable::new(table, view.clone(), lineage.clone()))
                        .push(
                            &keys.id,
                            last_updated,
                            &views[rows.slot],
                            rows.start..rows.start + rows.len,
                            &source,
                            line.line,
                            state_of_key == KeyState::Newer,
                        )
                        .map_err(|source| LoadError::Arrow {
                            table: table.clone(),
                            source,
                        })?;
                }
            }
            let view_row = line.view_row.map(|r| (&views[r.slot], r.start));
            match state_of_key {
                KeyState::New => {
                    counts.inserted += 1;
                    state
                        .inserts
                        .push(&row, view_row, lineage)
                        .map_err(state.arrow_err())?;
                    if state.inserts.len() >= plan.batch_rows {
                        waited += state.write_inserts().await?;
                    }
                }
                KeyState::Newer => {
                    counts.updated += 1;
                    state
                        .updates
                        .push(&row, view_row, lineage)
                        .map_err(state.arrow_err())?;
                }
                KeyState::Unchanged => counts.unchanged += 1,
            }
        }
        // A batch per chunk: its raw resources and view columns are then
        // slices of the chunk's columns, shared with the encoder, not copies.
        for state in tables.open.values_mut() {
            waited += state.write_inserts().await?;
        }
        // Flatten time is this loop's time minus its waits for the writers.
        let own = started.elapsed().saturating_sub(waited).as_nanos() as u64;
        clock.build.fetch_add(own, Ordering::Relaxed);
        pipeline.recycle(chunk);
    }
    if !finished {
        return Err(LoadError::Read {
            path: file.path.clone(),
            source: std::io::Error::other("reader stopped before the end of the file"),
        });
    }

    if !rejects.is_empty() {
        record
            .tables
            .entry(QUARANTINE_TABLE.to_owned())
            .or_default()
            .quarantined = rejects.len() as u64;
        warnings.push(format!("{}: {} line(s) quarantined", source, rejects.len()));
    }
    for reject in &rejects {
        let reason = reject.reason.to_string();
        quarantine.push(
            &QuarantineRow {
                source: &source,
                source_sha256: &record.sha256,
                line: reject.line,
                byte_offset: reject.offset,
                reason_code: reject.reason.code(),
                reason: &reason,
                resource_type: match &reject.reason {
                    RejectReason::TypeMismatch { found, .. } => Some(found),
                    RejectReason::View { resource_type, .. } => Some(resource_type),
                    _ => None,
                },
                resource_id: match &reject.reason {
                    RejectReason::View { id, .. } => Some(id),
                    _ => None,
                },
                raw: &reject.raw,
            },
            lineage,
        );
    }
    for counts in record.tables.values() {
        record.rows.add(counts);
    }
    if stand_ins > 0 {
        record.last_updated_stand_in = Some(StandIn {
            source: stand_in.source.to_owned(),
            value: stand_in.text,
            resources: stand_ins,
        });
    }
    Ok(record)
}
