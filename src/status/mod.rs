//! `fhirlake status`: what the lake holds and how it got there, in one
//! report — jobs, tables with their rows over Delta versions, quarantine by
//! reason, and whether the audit trail verifies. Read-only.

mod html;
mod tables;

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use deltalake::arrow::array::AsArray;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use serde::Serialize;

pub use html::render as render_html;
pub use tables::{TableStatus, Version};

use crate::audit::{AuditLog, EventSummary};
use crate::lake::{Lake, LakeError, QUARANTINE_TABLE, open_table, query};
use crate::ledger::{JobManifest, RowCounts};
use crate::load::AUDIT_PREFIX;
pub use crate::verify::RawFiles;
use crate::verify::{self, VerifyError};

/// Everything `fhirlake status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct LakeStatus {
    /// The lake's URI (never credentials: those are storage options).
    pub lake: String,
    pub generated_at: String,
    pub fhirlake_version: String,
    pub verify: VerifySummary,
    /// Oldest first.
    pub jobs: Vec<JobStatus>,
    /// Where the lake keeps what its policy segregates, when in a second
    /// lake (`--segregated-lake`), and whether it was read for this report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segregated_lake: Option<SegregatedLake>,
    /// Resource tables, then segregated ones, then fhirlake's own.
    pub tables: Vec<TableStatus>,
    pub quarantine: QuarantineStatus,
}

/// A lake's second lake for segregated tables.
#[derive(Debug, Clone, Serialize)]
pub struct SegregatedLake {
    pub uri: String,
    /// Given to this command: its tables are in `tables`.
    pub read: bool,
}

/// `fhirlake verify`'s verdict, in short.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub clean: bool,
    pub events: u64,
    pub anchors: u64,
    pub commits: u64,
    pub manifests: u64,
    pub raw_objects: u64,
    /// Whether kept raw files were re-hashed (`--rehash-raw`).
    pub raw_rehashed: bool,
    /// Each problem as `fhirlake verify` prints it.
    pub problems: Vec<String>,
}

impl VerifySummary {
    /// What became of the kept raw files: re-hashed, or not (`--rehash-raw`).
    pub fn raw_files(&self) -> String {
        if self.raw_rehashed {
            format!("{} raw objects re-hashed", self.raw_objects)
        } else {
            "raw files not re-hashed".to_owned()
        }
    }
}

/// One job, from its audit events and (when it finished) its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job_id: String,
    /// `load`, `export`, `sync`, `hl7v2` (from the manifest),
    /// `maintenance`, or `unknown` for a job that left no manifest.
    pub kind: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// `success`, `warnings` (some lines quarantined), `failed`, or
    /// `unfinished` (no finish event: still running, or killed).
    pub outcome: String,
    pub principal: Option<String>,
    pub policy: Option<String>,
    /// Inputs read (files, pages, message batches); 0 without a manifest.
    pub inputs: usize,
    /// Row outcomes from the manifest.
    pub rows: Option<RowCounts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QuarantineStatus {
    pub rows: u64,
    /// Rows by `reason_code`, most first.
    pub by_reason: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Chain(#[from] crate::audit::ChainError),
}

/// Reads the lake's logs, manifests, audit chain and quarantine; with
/// `raw`, [`RawFiles::Rehash`], also re-hashes every kept raw file (which
/// reads what the lake keeps of its sources: gigabytes for Bulk exports).
pub async fn collect(lake: &Lake, raw: RawFiles) -> Result<LakeStatus, StatusError> {
    let commits = verify::commits(lake).await?;
    let report = verify::verify_commits(lake, None, &commits, raw).await?;
    let (manifests, _) = verify::read_manifests(lake).await?;
    let log = AuditLog::new(lake.store().clone(), lake.path(AUDIT_PREFIX));
    let events = log
        .events()
        .await?
        .into_iter()
        .map(|(seq, event)| EventSummary::of(seq, event));
    let mut tables = Vec::new();
    for (name, table_commits) in tables::by_table(&commits) {
        tables.push(tables::status(lake, name, &table_commits).await?);
    }
    tables.sort_by_key(|t| (t.group(), t.name.clone()));
    let c = &report.checked;
    let segregated_lake = lake
        .recorded_segregated_lake()
        .await?
        .map(|uri| SegregatedLake {
            uri,
            read: lake.segregated_lake().is_some(),
        });
    Ok(LakeStatus {
        lake: lake.root().to_string(),
        segregated_lake,
        generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        fhirlake_version: env!("CARGO_PKG_VERSION").to_owned(),
        verify: VerifySummary {
            clean: report.is_clean(),
            events: c.events,
            anchors: c.anchors,
            commits: c.commits,
            manifests: c.manifests,
            raw_objects: c.raw_objects,
            raw_rehashed: raw == RawFiles::Rehash,
            problems: report
                .chain
                .problems
                .iter()
                .map(ToString::to_string)
                .chain(report.problems.iter().map(ToString::to_string))
                .collect(),
        },
        jobs: jobs(events, manifests.into_values()),
        quarantine: quarantine(lake, &tables).await?,
        tables,
    })
}

/// Jobs in the order they started: every job the chain knows, with its
/// manifest's counts where there is one (a manifest without events, from
/// before the audit trail, is listed too).
fn jobs(
    events: impl Iterator<Item = EventSummary>,
    manifests: impl Iterator<Item = JobManifest>,
) -> Vec<JobStatus> {
    let mut jobs: BTreeMap<String, JobStatus> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for event in events {
        let Some(id) = event.job.clone() else {
            continue;
        };
        let job = jobs.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            JobStatus::new(id)
        });
        job.started.get_or_insert_with(|| event.recorded.clone());
        job.principal = job.principal.take().or(event.principal);
        job.policy = job.policy.take().or(event.policy);
        match event.step.as_deref() {
            Some("finish") => {
                job.finished = Some(event.recorded);
                job.outcome = match event.outcome.as_deref() {
                    Some("0") => "success",
                    Some("4") => "warnings",
                    _ => "failed",
                }
                .to_owned();
            }
            Some("optimize" | "vacuum") => {
                job.kind = "maintenance".to_owned();
                job.finished = Some(event.recorded);
                job.outcome = "success".to_owned();
            }
            _ => {}
        }
    }
    for manifest in manifests {
        let id = manifest.job_id.clone();
        let job = jobs.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            JobStatus::new(id)
        });
        job.kind = serde_json::to_value(manifest.kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        job.started.get_or_insert(manifest.started_at);
        if job.finished.is_none() {
            job.finished = Some(manifest.finished_at);
            job.outcome = "success".to_owned();
        }
        job.policy.get_or_insert(manifest.policy_version);
        job.inputs = manifest.inputs.len();
        job.rows = Some(manifest.totals);
    }
    let mut listed: Vec<JobStatus> = order
        .into_iter()
        .filter_map(|id| jobs.remove(&id))
        .collect();
    // Events and manifests write instants in different forms: compare times.
    let instant = |j: &JobStatus| {
        j.started
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    listed.sort_by_key(instant);
    listed
}

impl JobStatus {
    fn new(job_id: String) -> Self {
        Self {
            job_id,
            kind: "unknown".to_owned(),
            started: None,
            finished: None,
            outcome: "unfinished".to_owned(),
            principal: None,
            policy: None,
            inputs: 0,
            rows: None,
        }
    }
}

/// `_quarantine` rows by reason (none when the table does not exist).
async fn quarantine(lake: &Lake, tables: &[TableStatus]) -> Result<QuarantineStatus, LakeError> {
    if !tables.iter().any(|t| t.name == QUARANTINE_TABLE) {
        return Ok(QuarantineStatus::default());
    }
    let table = open_table(lake, QUARANTINE_TABLE).await?;
    let batches = query(
        &table,
        QUARANTINE_TABLE,
        "SELECT reason_code, count(*) AS n FROM t GROUP BY reason_code ORDER BY n DESC, reason_code",
    )
    .await?;
    let mut status = QuarantineStatus::default();
    for batch in batches {
        let reasons = cast(batch.column(0), &DataType::Utf8).map_err(|e| LakeError::Arrow {
            table: QUARANTINE_TABLE.to_owned(),
            source: e,
        })?;
        let counts = batch.column(1).as_primitive::<Int64Type>();
        for (i, reason) in reasons.as_string::<i32>().iter().enumerate() {
            let n = u64::try_from(counts.value(i)).unwrap_or(0);
            status.rows += n;
            status.by_reason.push((reason.unwrap_or("").to_owned(), n));
        }
    }
    Ok(status)
}
