//! The load job: inputs from any source in, rows in Delta tables out, every
//! line accounted for.
//!
//! In: a [`Job`] — built with `with_*` setters and awaited — holding a lake
//! and the [`Input`]s of one source (the `source` modules turn files, exports and
//! feeds into them). Out: a [`LoadReport`]
//! whose manifest is also written to the lake. The job runs, per input, one
//! parallel pass
//!
//! ```text
//!  read + SHA-256 ─▶ decode (simd-json) ─▶ policy ─▶ views ─▶ classify against the key index ─▶ staged rows
//! ```
//! (`pipeline`, `ingest`), checks the input's row accounting, and ends in the
//! commit sequence (`commit`), the only place a job's rows become visible.

mod audit;
mod audit_tables;
mod commit;
mod compartment;
mod ingest;
mod input;
mod keys;
mod landing;
mod picked;
mod pipeline;
mod resolve;
mod rows;
mod tables;
mod view_tables;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

pub use compartment::{observe_stored, survey_inputs, survey_lake};
pub use input::{
    HashingReader, Input, InputBytes, InputReader, InputRole, SourceKind, StandIn, StandInSource,
    UTF8_BOM, sha256_of,
};
pub use picked::PickedRows;
pub use pipeline::StageClock;
pub use rows::{QuarantineRow, QuarantineRows, ResourceRow, ResourceRows, resource_layout};

use crate::audit::Principal;
use crate::code_checks::CodeChecks;
use crate::lake::{Deletion, Lake, LakeError, Lineage, LoadMode};
use crate::ledger::{
    self, AccountingError, ExportRecord, InputRecord, InputStatus, ManifestKind, SyncRecord,
};
use crate::ndjson::BufferPool;
use crate::policy::Policy;
use crate::validation::Validation;
use crate::view::ViewSet;
pub(crate) use audit::JobAudit;
pub use audit::{ANCHOR_KEY, AUDIT_PREFIX};
pub use audit_tables::{AUDIT_TABLE, PROVENANCE_TABLE};
use commit::{Extras, Staged, marker_key};
use keys::SameVersion;
use pipeline::{Decoding, FilePipeline};
use tables::TypeTables;

/// Something a source rejected before it became NDJSON — an OperationOutcome
/// line of an export's error file, an HL7 v2 message that cannot be parsed
/// or mapped — quarantined as it came.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub source: String,
    pub source_sha256: String,
    /// Line (or message number) within `source`, 1-based.
    pub line: u64,
    pub byte_offset: u64,
    /// `_quarantine.reason_code`.
    pub reason_code: &'static str,
    pub reason: String,
    pub raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "reading {path}: {source}; the input is unreadable or its gzip stream is corrupt — nothing from it was committed"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    // Boxed: Delta errors are large and LoadError travels on every `?`.
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error("the policy: {0}")]
    Policy(String),
    #[error("building rows for table {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    #[error(transparent)]
    Accounting(#[from] AccountingError),
    #[error(
        "{0}; the job stopped there (data must not land unaudited): check that the lake's _fhirlake/audit/ is writable and run the job again"
    )]
    Audit(String),
}

impl From<LakeError> for LoadError {
    fn from(error: LakeError) -> Self {
        Self::Lake(Box::new(error))
    }
}

/// Seconds spent per stage (summed over threads for read and decode).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct StageTimings {
    pub read_hash_s: f64,
    pub decode_s: f64,
    pub build_s: f64,
    pub write_s: f64,
    pub commit_s: f64,
}

impl StageTimings {
    fn of(clock: &StageClock) -> Self {
        let seconds = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        Self {
            read_hash_s: seconds(&clock.read_hash),
            decode_s: seconds(&clock.decode),
            build_s: seconds(&clock.build),
            write_s: seconds(&clock.write),
            commit_s: seconds(&clock.commit),
        }
    }
}

/// What a job did: its manifest (also in the lake) and its metrics.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub manifest: ledger::JobManifest,
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

/// Progress events for a display; the loader never prints.
#[derive(Debug, Clone)]
pub enum Progress {
    Started { files: usize, bytes: u64 },
    File { name: String },
    Bytes(u64),
    Committing,
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// How a source's rows are loaded: the settings sources pass through from
/// their command line to the load job.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub mode: LoadMode,
    pub views: Arc<ViewSet>,
    pub policy: Arc<Policy>,
    /// `None`: no code checks (`--no-code-checks`).
    pub code_checks: Option<Arc<CodeChecks>>,
    /// `None`: no profile validation (without `--validate`).
    pub validation: Option<Arc<Validation>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            mode: LoadMode::Current,
            views: Arc::new(ViewSet::defaults()),
            policy: Arc::new(Policy::none()),
            code_checks: Some(CodeChecks::standard()),
            validation: None,
        }
    }
}

/// A load job, built with `with_*` setters and awaited (delta-rs style).
pub struct Job {
    lake: Lake,
    inputs: Vec<Input>,
    mode: LoadMode,
    same_version: SameVersion,
    as_of: Option<DateTime<Utc>>,
    force: bool,
    chunk_bytes: usize,
    batch_rows: usize,
    views: Arc<ViewSet>,
    policy: Arc<Policy>,
    code_checks: Option<Arc<CodeChecks>>,
    validation: Option<Arc<Validation>>,
    job_id: Option<String>,
    principal: Principal,
    /// An event of this job appended before the load (an export's request
    /// to the server), copied into `_audit` with the load's.
    prior_event: Option<u64>,
    extras: Extras,
    /// Found before the inputs were read (the Encounter survey).
    warnings: Vec<String>,
    progress: Option<ProgressSink>,
}

impl Job {
    pub fn new(lake: &Lake) -> Self {
        Self {
            lake: lake.clone(),
            inputs: Vec::new(),
            mode: LoadMode::Current,
            same_version: SameVersion::Unchanged,
            as_of: None,
            force: false,
            chunk_bytes: 4 << 20,
            batch_rows: 16 * 1024,
            views: Arc::new(ViewSet::defaults()),
            policy: Arc::new(Policy::none()),
            code_checks: Some(CodeChecks::standard()),
            validation: None,
            job_id: None,
            principal: Principal::local_user(),
            prior_event: None,
            extras: Extras::default(),
            warnings: Vec::new(),
            progress: None,
        }
    }

    /// Inputs a source produced.
    pub fn with_inputs(mut self, inputs: Vec<Input>) -> Self {
        self.inputs.extend(inputs);
        self
    }

    /// Mode, views and policy at once.
    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.mode = options.mode;
        self.views = options.views;
        self.policy = options.policy;
        self.code_checks = options.code_checks;
        self.validation = options.validation;
        self
    }

    pub fn with_mode(mut self, mode: LoadMode) -> Self {
        self.mode = mode;
        self
    }

    /// A row of the version a table stores replaces it (and a tombstone of
    /// that instant) instead of counting as unchanged: `policy apply`.
    pub fn with_same_version_replacing(mut self) -> Self {
        self.same_version = SameVersion::Replaces;
        self
    }

    /// Stand-in for a missing `meta.lastUpdated`, overriding any the source gives.
    pub fn with_as_of(mut self, as_of: Option<DateTime<Utc>>) -> Self {
        self.as_of = as_of;
        self
    }

    /// Reload inputs even if their SHA-256 was already loaded.
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

    /// Views whose columns the per-type tables get (default: `schemas/`).
    pub fn with_views(mut self, views: impl Into<Arc<ViewSet>>) -> Self {
        self.views = views.into();
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The code checks every kept resource passes (default: shapes, check
    /// digits, known systems, UCUM); `None` turns them off.
    pub fn with_code_checks(mut self, checks: Option<Arc<CodeChecks>>) -> Self {
        self.code_checks = checks;
        self
    }

    /// Validates every kept resource against its profile (default: off).
    pub fn with_validation(mut self, validation: Option<Arc<Validation>>) -> Self {
        self.validation = validation;
        self
    }

    /// Use this job id instead of a new one (an export loads under its own id).
    pub fn with_job_id(mut self, job_id: String) -> Self {
        self.job_id = Some(job_id);
        self
    }

    /// Who asked for the job, for its audit events (default: nobody known).
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }

    /// What the manifest calls the job (default: load, or export with an export record).
    pub fn with_kind(mut self, kind: ManifestKind) -> Self {
        self.extras.kind = Some(kind);
        self
    }

    /// An export's record, for the manifest.
    /// The job's event `seq` in the chain, appended before the load began.
    pub fn with_prior_event(mut self, seq: Option<u64>) -> Self {
        self.prior_event = seq;
        self
    }

    pub fn with_export(mut self, export: ExportRecord) -> Self {
        self.extras.export = Some(export);
        self
    }

    /// A sync's record (window, pages), for the manifest.
    pub fn with_sync(mut self, sync: SyncRecord) -> Self {
        self.extras.sync = Some(sync);
        self
    }

    /// An HL7 v2 job's record (messages, segments, raw objects), for the manifest.
    pub fn with_hl7v2(mut self, record: crate::ledger::Hl7v2Record) -> Self {
        self.extras.hl7v2 = Some(record);
        self
    }

    /// Inputs that will never be seen again as files (pages, messages):
    /// neither looked up nor recorded as loaded files.
    pub fn without_loaded_markers(mut self) -> Self {
        self.extras.no_markers = true;
        self.force = true;
        self
    }

    /// What the source rejected (a server's error lines, unmappable
    /// messages), for the quarantine.
    pub fn with_rejections(mut self, rejections: Vec<Rejection>) -> Self {
        self.extras.rejections.extend(rejections);
        self
    }

    /// Resources a server reports deleted, by resource type; applied after the loads.
    pub fn with_deletions(mut self, deletions: BTreeMap<String, Vec<Deletion>>) -> Self {
        for (resource_type, list) in deletions {
            self.extras
                .deletions
                .entry(resource_type)
                .or_default()
                .extend(list);
        }
        self
    }

    /// Rows to take out of segregated tables (`_segregated/<table>` names):
    /// those a new policy no longer segregates (`policy apply`).
    pub fn with_segregated_deletions(mut self, deletions: BTreeMap<String, Vec<Deletion>>) -> Self {
        for (table, list) in deletions {
            self.extras
                .segregated_deletions
                .entry(table)
                .or_default()
                .extend(list);
        }
        self
    }

    pub fn with_progress(mut self, progress: Option<ProgressSink>) -> Self {
        self.progress = progress;
        self
    }
}

impl IntoFuture for Job {
    type Output = Result<LoadReport, LoadError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self))
    }
}

/// What every part of a running job reads.
pub(crate) struct Context {
    pub lake: Lake,
    pub job_id: String,
    pub lineage: Lineage,
    pub mode: LoadMode,
    /// What a row of a version the table already stores does.
    pub same_version: SameVersion,
    pub as_of: Option<StandIn>,
    pub batch_rows: usize,
    /// Reading order of the job's resource rows (see `keys`).
    order: std::sync::atomic::AtomicU64,
    pub views: Arc<ViewSet>,
    pub policy: Arc<Policy>,
    pub code_checks: Option<Arc<CodeChecks>>,
    pub validation: Option<Arc<Validation>>,
    pub clock: Arc<StageClock>,
    /// The job's audit trail.
    pub audit: JobAudit,
}

impl Context {
    /// The next resource row's place in reading order.
    pub fn next_order(&self) -> u64 {
        self.order
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// `policy` with the Consents of its lake table (`[consent] table`), as they
/// are in `lake` now; the policy itself when it reads none.
pub async fn with_lake_consents(lake: &Lake, policy: &Policy) -> Result<Policy, LoadError> {
    let Some(table) = policy.lake_consents() else {
        return Ok(policy.clone());
    };
    let consents = crate::lake::current_resources(lake, table).await?;
    policy
        .with_lake_consents(
            &format!("lake table {table}"),
            &(consents.join("\n") + "\n"),
        )
        .map_err(|e| LoadError::Policy(e.to_string()))
}

/// A new job id: the start time, sortable, and a random suffix.
pub fn new_job_id(now: DateTime<Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &suffix[..8])
}

async fn run(mut job: Job) -> Result<LoadReport, LoadError> {
    let started_at = Utc::now();
    let job_id = job.job_id.take().unwrap_or_else(|| new_job_id(started_at));
    // Consents from the lake's own table: read now, so the job enforces
    // what earlier jobs loaded, and its policy version covers them.
    if job.policy.lake_consents().is_some() {
        job.policy = Arc::new(with_lake_consents(&job.lake, &job.policy).await?);
    }
    // Encounter compartments: which Encounters the policy takes must be
    // known before the first resource that references one is decided.
    if job.policy.has_compartment_rules() {
        let (policy, warning) =
            compartment::with_compartments(&job.lake, &job.inputs, &job.policy).await?;
        job.policy = Arc::new(policy);
        // `policy apply` moves those compartments itself.
        if job.extras.manifest_kind() != ManifestKind::PolicyApply {
            job.warnings.extend(warning);
        }
    }
    let kind = job.extras.manifest_kind();
    let audit = JobAudit::new(
        &job.lake,
        &job_id,
        kind,
        job.policy.version(),
        std::mem::replace(&mut job.principal, Principal::Unknown),
    )?;
    if let Some(seq) = job.prior_event {
        audit.adopt(seq).await?;
    }
    let context = Arc::new(Context {
        lineage: Lineage {
            job_id: job_id.clone(),
            ingested_at: started_at.timestamp_micros(),
        },
        job_id,
        lake: job.lake.clone(),
        mode: job.mode,
        same_version: job.same_version,
        as_of: job
            .as_of
            .map(|t| StandIn::new(StandInSource::AsOf, t.timestamp_micros())),
        batch_rows: job.batch_rows,
        order: std::sync::atomic::AtomicU64::new(0),
        views: job.views.clone(),
        policy: job.policy.clone(),
        code_checks: job.code_checks.clone(),
        validation: job.validation.clone(),
        clock: Arc::new(StageClock::default()),
        audit,
    });
    let result = run_audited(job, &context, kind, started_at).await;
    if let Err(error) = &result {
        context.audit.failed(error, started_at).await;
    }
    result
}

async fn run_audited(
    mut job: Job,
    context: &Arc<Context>,
    kind: ManifestKind,
    started_at: DateTime<Utc>,
) -> Result<LoadReport, LoadError> {
    let clock_start = Instant::now();
    let inputs = std::mem::take(&mut job.inputs);
    job.lake.ensure_put_if_absent().await?;
    // The segregated lake's credentials are checked before anything is read.
    if let Some(segregated) = job.lake.segregated_lake() {
        segregated.ensure_put_if_absent().await?;
    }
    if let Some(server) = context.code_checks.as_deref().and_then(|c| c.server()) {
        server.preload(&job.lake).await?;
    }
    context.audit.kick_off(kind, inputs.len()).await?;
    context.audit.policy_change().await?;
    let notify = |event| {
        if let Some(p) = &job.progress {
            p(event);
        }
    };
    notify(Progress::Started {
        files: inputs.len(),
        bytes: inputs.iter().map(|i| i.size).sum(),
    });
    let loaded = match job.force {
        true => HashMap::new(),
        false => loaded_by_size(&job.lake).await?,
    };
    let mut staged = Staged::new();
    let mut feed = Feed::new(context, &job, &inputs, &loaded);
    for (index, input) in inputs.iter().enumerate() {
        notify(Progress::File {
            name: input.name.clone(),
        });
        let read_at = Utc::now();
        if let Some(record) = already_recorded(&job.lake, input, &loaded).await? {
            notify(Progress::Bytes(record.bytes));
            context.audit.input(&record, input, read_at).await?;
            staged.inputs.push(record);
            continue;
        }
        let pipeline = feed.pipeline(index, &mut staged.tables);
        let record = ingest::ingest(context, &mut staged, input, pipeline).await?;
        record.check_accounting()?;
        context.audit.input(&record, input, read_at).await?;
        staged.inputs.push(record);
    }
    notify(Progress::Committing);
    let mut warnings = std::mem::take(&mut job.warnings);
    warnings.append(&mut staged.warnings);
    let committed = commit::commit(context, staged, job.extras, started_at).await?;
    warnings.extend(committed.warnings);
    let bytes_read = committed
        .manifest
        .inputs
        .iter()
        .filter(|i| i.status == InputStatus::Loaded)
        .map(|i| i.bytes)
        .sum();
    Ok(LoadReport {
        stages: StageTimings::of(&context.clock),
        manifest: committed.manifest,
        manifest_path: committed.manifest_path,
        elapsed_s: clock_start.elapsed().as_secs_f64(),
        bytes_read,
        warnings,
    })
}

/// Starts each input's read-and-decode pipeline, the next one while the
/// current one's rows are built, so the cores do not idle at input
/// boundaries (bounded: a few chunks); opens the next inputs' tables ahead.
struct Feed<'a> {
    context: &'a Arc<Context>,
    inputs: &'a [Input],
    loaded: &'a HashMap<u64, HashSet<String>>,
    decoding: Decoding,
    progress: Option<ProgressSink>,
    prefetched: Option<(usize, FilePipeline)>,
}

impl<'a> Feed<'a> {
    fn new(
        context: &'a Arc<Context>,
        job: &Job,
        inputs: &'a [Input],
        loaded: &'a HashMap<u64, HashSet<String>>,
    ) -> Self {
        Self {
            context,
            inputs,
            loaded,
            decoding: Decoding {
                chunk_bytes: job.chunk_bytes,
                buffers: BufferPool::default(),
                views: context.views.clone(),
                policy: context.policy.clone(),
                code_checks: context.code_checks.clone(),
                validation: context.validation.clone(),
                clock: context.clock.clone(),
            },
            progress: job.progress.clone(),
            prefetched: None,
        }
    }

    fn start(&self, input: &Input) -> FilePipeline {
        let bytes: Arc<dyn Fn(u64) + Send + Sync> = match self.progress.clone() {
            Some(p) => Arc::new(move |n| p(Progress::Bytes(n))),
            None => Arc::new(|_| {}),
        };
        pipeline::start(input, &self.decoding, bytes)
    }

    /// The pipeline of input `index`; starts the next input's, and opens
    /// the tables both promise.
    fn pipeline(&mut self, index: usize, tables: &mut TypeTables) -> FilePipeline {
        let input = &self.inputs[index];
        let pipeline = match self.prefetched.take() {
            Some((at, pipeline)) if at == index => pipeline,
            _ => self.start(input),
        };
        if let Some(expected) = input.expected_type {
            tables.open_ahead(self.context, expected);
        }
        if let Some(next) = self.inputs.get(index + 1)
            && next.role == InputRole::Resources
            && !self.loaded.contains_key(&next.size)
        {
            self.prefetched = Some((index + 1, self.start(next)));
            if let Some(expected) = next.expected_type {
                tables.open_ahead(self.context, expected);
            }
        }
        pipeline
    }
}

/// SHA-256s already loaded into the lake, grouped by size so an input is
/// hashed up front only when a same-sized loaded input exists.
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

/// The SHA-256 of `input`'s stored bytes: the one its source knows, or read now.
fn hash_input(input: &Input) -> Result<(String, u64), LoadError> {
    if let Some(sha256) = &input.sha256 {
        return Ok((sha256.clone(), input.size));
    }
    // Blocking reads (a file, or an object through this runtime).
    tokio::task::block_in_place(|| crate::load::sha256_of(input.open_raw()?)).map_err(|source| {
        LoadError::Read {
            path: input.name.clone(),
            source,
        }
    })
}

/// The record of an input that is not loaded: an export log, or bytes
/// (by SHA-256) a job already fully loaded into this lake.
async fn already_recorded(
    lake: &Lake,
    input: &Input,
    loaded: &HashMap<u64, HashSet<String>>,
) -> Result<Option<InputRecord>, LoadError> {
    if input.role == InputRole::ExportLog {
        let (sha256, bytes) = hash_input(input)?;
        let record = InputRecord::new(input.name.clone(), InputStatus::ExportLog, sha256, bytes);
        return Ok(Some(record));
    }
    let Some(shas) = loaded.get(&input.size) else {
        return Ok(None);
    };
    let (sha256, bytes) = hash_input(input)?;
    if !shas.contains(&sha256) {
        return Ok(None);
    }
    let marker = ledger::loaded_marker(lake, &marker_key(bytes, &sha256)).await?;
    let mut skipped = InputRecord::new(
        input.name.clone(),
        InputStatus::SkippedAlreadyLoaded,
        sha256,
        bytes,
    );
    skipped.loaded_by_job = marker.map(|m| m.job_id);
    skipped.source = Some(input.kind);
    Ok(Some(skipped))
}
