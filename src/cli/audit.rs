//! `fhirlake verify` and `fhirlake audit`: the lake's history checked, and
//! listed for an access review.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset};
use clap::Args;

use super::{LakeArgs, runtime};
use crate::audit::{
    AuditLog, EventSummary, JobContext, JobId, JobKind, Maintenance, MaintenanceOp, Principal,
    TableName,
};
use crate::load::{AUDIT_PREFIX, JobAudit};
use crate::verify;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Check only this job's manifest (the chain is always walked whole).
    #[arg(long)]
    job: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Only this job's events.
    #[arg(long)]
    job: Option<String>,
    /// Only events recorded at or after this instant (e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only events whose requesting agent is this client id or user.
    #[arg(long)]
    principal: Option<String>,
    /// One JSON object per line: the summary and the stored AuditEvent.
    #[arg(long)]
    json: bool,
}

pub fn run_verify(args: VerifyArgs) -> Result<ExitCode> {
    let lake = args.lake.open()?;
    let report = runtime()?.block_on(verify::verify(&lake, args.job.as_deref()))?;
    let c = &report.checked;
    if c.events == 0 && c.commits == 0 && c.manifests == 0 && report.is_clean() {
        bail!(
            "{}: no audit trail, Delta tables or manifests{} there: nothing to verify; check --lake",
            args.lake.lake,
            args.job
                .as_ref()
                .map(|j| format!(" of job {j}"))
                .unwrap_or_default()
        );
    }
    if let Some(job) = &args.job
        && c.manifests == 0
    {
        bail!(
            "{}: no manifest of job {job}; `fhirlake audit --lake {}` lists the jobs",
            args.lake.lake,
            args.lake.lake
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.chain.problems {
            println!("problem: {problem}");
        }
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        let c = &report.checked;
        let problems = report.chain.problems.len() + report.problems.len();
        println!(
            "{}: {} audit event(s), {} anchor(s), {} Delta commit(s), {} manifest(s), {} raw object(s) ({} bytes) checked; {problems} problem(s)",
            if report.is_clean() {
                "clean"
            } else {
                "NOT CLEAN"
            },
            c.events,
            c.anchors,
            c.commits,
            c.manifests,
            c.raw_objects,
            c.raw_bytes,
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn run_audit(args: AuditArgs) -> Result<ExitCode> {
    let since = match &args.since {
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => Some(t),
            Err(e) => bail!("--since {text:?}: {e}; give an instant such as 2026-12-01T00:00:00Z"),
        },
        None => None,
    };
    let lake = args.lake.open()?;
    let log = AuditLog::new(lake.store().clone(), lake.path(AUDIT_PREFIX));
    let events = runtime()?.block_on(log.events())?;
    let keep = |e: &EventSummary| {
        args.job.as_ref().is_none_or(|j| e.job.as_ref() == Some(j))
            && args
                .principal
                .as_ref()
                .is_none_or(|p| e.principal.as_ref() == Some(p))
            && since.is_none_or(|s| recorded(e).is_some_and(|t| t >= s))
    };
    for summary in events
        .into_iter()
        .map(|(seq, event)| EventSummary::of(seq, event))
        .filter(keep)
    {
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!(
                "{:>6}  {}  {:<14} outcome {}  job {}  by {}  policy {}",
                summary.seq,
                summary.recorded,
                summary.step.as_deref().unwrap_or("?"),
                summary.outcome.as_deref().unwrap_or("?"),
                summary.job.as_deref().unwrap_or("?"),
                summary.principal.as_deref().unwrap_or("unknown"),
                summary.policy.as_deref().unwrap_or("?"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn recorded(e: &EventSummary) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(&e.recorded).ok()
}

/// The audit trail of one `optimize` or `vacuum` run: one event per table.
pub(super) struct MaintenanceAudit(JobAudit);

impl MaintenanceAudit {
    pub fn new(lake: &crate::lake::Lake) -> Result<Self> {
        let id = crate::load::new_job_id(chrono::Utc::now());
        let context = JobContext::new(
            JobId::new(&format!("maintenance-{id}"))?,
            JobKind::Maintenance,
        )
        .with_principal(Principal::local_user());
        Ok(Self(JobAudit::open(lake, context)))
    }

    pub async fn optimized(&self, report: &crate::lake::OptimizeReport) -> Result<()> {
        let changed = report.version_after != report.version_before;
        self.record(
            &report.table,
            MaintenanceOp::Optimize {
                files_removed: report.files_removed + report.purged.files_rewritten,
                files_added: report.files_added,
                rows_purged: report.purged.rows_dropped,
            },
            report.version_after.filter(|_| changed),
        )
        .await
    }

    pub async fn vacuumed(
        &self,
        report: &crate::lake::VacuumReport,
        retain_hours: u64,
    ) -> Result<()> {
        if report.dry_run {
            return Ok(());
        }
        self.record(
            &report.table,
            MaintenanceOp::Vacuum {
                files_deleted: report.files_deleted as u64,
                retention_hours: retain_hours,
            },
            None,
        )
        .await
    }

    async fn record(
        &self,
        table: &str,
        operation: MaintenanceOp,
        version: Option<u64>,
    ) -> Result<()> {
        let Ok(table) = TableName::new(table) else {
            return Ok(());
        };
        let step = Maintenance {
            table,
            operation,
            version,
        };
        self.0.record(step).await?;
        Ok(())
    }
}
