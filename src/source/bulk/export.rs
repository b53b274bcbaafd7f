//! The export job, end to end:
//!
//! ```text
//!  resume an open job for the same request, or kick off (status URL saved at once)
//!   ─▶ poll (Retry-After, X-Progress, transient retries) ─▶ manifest (+ next pages)   [poll]
//!   ─▶ parallel downloads to the raw folder, each verified and saved as it lands       [fetch]
//!      (expired links: one manifest refresh)
//!   ─▶ one load job (output files; error[] lines to quarantine; deleted[] applied)     [handover]
//!   ─▶ DELETE the server's job ─▶ finished
//! ```
//! Every step rewrites `_fhirlake/jobs/<job>.json`, so a run killed anywhere
//! and started again continues where it stopped and never loads a file twice.

use std::future::Future;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use object_store::ObjectStoreExt;
use reqwest::Method;
use tokio::sync::Mutex;
use url::Url;

use super::context::Job;
use super::error::ExportError;
use super::events::{Cancelled, Finished, RawRemoved, Resumed, ServerJobDeleted, SinceAuto};
use super::fetch::fetch_files;
use super::handover::load_files;
use super::job::{ExportRequest, JobState, Phase, Scope, resumable, since_auto};
use super::kickoff::kick_off;
use super::plan::{ExportPlan, ExportReport, Resume, Since};
use crate::audit::{ExportLevel, FailureKind, KickOff, Operation, ResourceId, ResourceType};
use crate::http::{Call, HttpClient, redact_url};
use crate::lake::{Lake, LakeError};
use crate::ledger::ManifestKind;
use crate::ledger::{Echo, Event, EventLog};
use crate::load::JobAudit;

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn new_job_id() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "export-{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        &suffix[..8]
    )
}

/// The request to the server, in the audit chain as the job's first event:
/// who asked which server for which types since when, at the time it was
/// accepted (the download and load events follow at hand-over, hours later
/// for a large export).
async fn record_kickoff(
    lake: &Lake,
    job_id: &str,
    plan: &ExportPlan,
    request: &ExportRequest,
    http: &HttpClient,
) -> Result<JobAudit, ExportError> {
    let load_err = |source| ExportError::Load {
        job_id: job_id.to_owned(),
        source: Box::new(source),
    };
    let audit = JobAudit::new(
        lake,
        job_id,
        ManifestKind::Export,
        plan.load.policy.version(),
        http.tokens.principal(),
    )
    .map_err(load_err)?;
    let level =
        match &request.scope {
            Scope::System => ExportLevel::System,
            Scope::Patient => ExportLevel::Patient,
            Scope::Group(id) => ExportLevel::Group(ResourceId::new(id).map_err(|e| {
                load_err(crate::load::LoadError::Audit(format!("the Group id: {e}")))
            })?),
        };
    let param = |name: &'static str| {
        request
            .params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    audit
        .record(KickOff {
            operation: Operation::BulkExport(level),
            resource_types: param("_type")
                .flat_map(|v| v.split(','))
                .filter_map(|t| ResourceType::new(t.trim()).ok())
                .collect(),
            since: param("_since").find_map(|v| DateTime::parse_from_rfc3339(v).ok()),
            until: None,
            inputs: None,
        })
        .await
        .map_err(load_err)?;
    Ok(audit)
}

/// The failure finish of an export that will not load (best effort: it is
/// failing already).
async fn record_failure(job: &Job<'_>, plan: &ExportPlan, kind: FailureKind) {
    if let Ok(audit) = JobAudit::new(
        job.lake,
        &job.job_id,
        ManifestKind::Export,
        plan.load.policy.version(),
        job.http.tokens.principal(),
    ) {
        let started = job
            .state
            .lock()
            .await
            .started_at
            .parse::<chrono::DateTime<Utc>>()
            .unwrap_or_else(|_| Utc::now());
        audit.failed_as(kind, started).await;
    }
}

/// Runs (or resumes) an export and loads it. `cancelled` resolving (Ctrl-C,
/// say) before the load starts deletes the server's job and stops.
pub async fn run(
    lake: &Lake,
    plan: ExportPlan,
    http: &HttpClient,
    echo: Option<Echo>,
    cancelled: impl Future<Output = ()>,
) -> Result<ExportReport, ExportError> {
    lake.ensure_put_if_absent().await?;
    let jobs = JobState::list(lake).await?;
    let mut request = ExportRequest {
        server: redact_url(plan.server.as_str()),
        scope: plan.scope.clone(),
        params: plan.params.clone(),
    };
    let open = match plan.resume {
        Resume::Fresh => None,
        _ => resumable(&jobs, &request).cloned(),
    };
    if plan.resume == Resume::Require && open.is_none() {
        return Err(ExportError::NothingToResume);
    }
    let resumed = open.is_some();
    let (state, events) = match open {
        Some(state) => {
            let events = EventLog::new(JobState::read_events(lake, &state.job_id).await, echo);
            Resumed {
                job_id: state.job_id.clone(),
                phase: state.phase,
                status_url: redact_url(&state.status_url),
            }
            .emit(&events);
            (state, events)
        }
        None => {
            let since = match &plan.since {
                Since::None => None,
                Since::At(t) => Some(t.clone()),
                Since::Auto => since_auto(&jobs, &request),
            };
            if let Some(since) = &since {
                request.params.push(("_since".into(), since.clone()));
            }
            let events = EventLog::new(Vec::new(), echo);
            let job_id = new_job_id();
            if plan.since == Since::Auto {
                SinceAuto {
                    since: since.clone(),
                }
                .emit(&events);
            }
            let accepted = kick_off(http, &plan.server, &request, plan.method, &events).await?;
            let raw_parent = &plan.raw_dir;
            let mut state = JobState {
                job_id: job_id.clone(),
                request: request.clone(),
                kickoff_url: redact_url(accepted.url.as_str()),
                kickoff_method: accepted.method.to_string(),
                status_url: accepted.status_url.to_string(),
                phase: Phase::KickedOff,
                started_at: now_text(),
                updated_at: now_text(),
                transaction_time: None,
                requires_access_token: None,
                raw_dir: raw_parent.join(&job_id).display().to_string(),
                files: Vec::new(),
                load: None,
                error: None,
                server_job_deleted: false,
                request_event: None,
            };
            // Saved before anything else: from here on a kill resumes this job.
            state.save(lake, &events.to_ndjson()).await?;
            let audit = record_kickoff(lake, &job_id, &plan, &request, http).await?;
            state.request_event = audit.head().map(|h| h.seq);
            state.save(lake, &events.to_ndjson()).await?;
            (state, events)
        }
    };
    let job = Job {
        lake,
        job_id: state.job_id.clone(),
        state: Mutex::new(state),
        events,
        http,
    };

    let fetched = tokio::select! {
        result = fetch_files(&job, &plan) => result,
        _ = cancelled => {
            let error = cancel(&job, plan.keep_server_job).await;
            record_failure(&job, &plan, FailureKind::Cancelled).await;
            return Err(error);
        }
    };
    if let Err(error) = fetched {
        let mut state = job.state.lock().await;
        state.error = Some(error.to_string());
        if matches!(
            error,
            ExportError::Failed { .. }
                | ExportError::StatusGone { .. }
                | ExportError::BadManifest { .. }
        ) {
            state.phase = Phase::Failed;
        }
        let terminal = state.phase == Phase::Failed;
        drop(state);
        job.save().await?;
        // A job that cannot be resumed ends its trail; one a re-run resumes
        // (a download failed) stays open until it does.
        if terminal {
            let kind = match &error {
                ExportError::BadManifest { .. } => FailureKind::InvalidInput,
                ExportError::StatusGone { .. } => FailureKind::Http { status: 410 },
                _ => FailureKind::Http { status: 500 },
            };
            record_failure(&job, &plan, kind).await;
        }
        return Err(error);
    }

    let (load, warnings) = load_files(&job, &plan).await?;
    finish(&job, &plan).await?;
    let state = job.state.into_inner();
    Ok(ExportReport {
        job: state,
        load,
        resumed,
        warnings,
    })
}

/// Ctrl-C: tell the server to drop the job (unless asked not to) and record it.
async fn cancel(job: &Job<'_>, keep_server_job: bool) -> ExportError {
    let (job_id, status_url) = {
        let state = job.state.lock().await;
        (state.job_id.clone(), state.status_url.clone())
    };
    let mut deleted = false;
    if !keep_server_job && let Ok(url) = Url::parse(&status_url) {
        deleted = delete_server_job(job, &url).await;
    }
    Cancelled {
        server_job_deleted: deleted,
    }
    .emit(&job.events);
    {
        let mut state = job.state.lock().await;
        state.phase = Phase::Cancelled;
        state.server_job_deleted = deleted;
    }
    if let Err(e) = job.save().await {
        return e;
    }
    ExportError::Cancelled {
        job_id,
        server_job_deleted: deleted,
    }
}

async fn delete_server_job(job: &Job<'_>, url: &Url) -> bool {
    let result = job
        .http
        .send(
            Call::new("delete job", Method::DELETE, url),
            &job.events,
            |r| r,
        )
        .await;
    let status = result.as_ref().map(|r| r.status().as_u16()).ok();
    ServerJobDeleted {
        url: redact_url(url.as_str()),
        status,
    }
    .emit(&job.events);
    status.is_some_and(|s| (200..300).contains(&s) || s == 404)
}

/// After the load: DELETE the server's job (unless kept) and drop raw files if asked.
async fn finish(job: &Job<'_>, plan: &ExportPlan) -> Result<(), ExportError> {
    let (status_url, raw) = {
        let state = job.state.lock().await;
        (state.status_url.clone(), PathBuf::from(&state.raw_dir))
    };
    let mut deleted = false;
    if !plan.keep_server_job
        && let Ok(url) = Url::parse(&status_url)
    {
        deleted = delete_server_job(job, &url).await;
    }
    {
        let mut state = job.state.lock().await;
        state.server_job_deleted = deleted;
        state.phase = Phase::Finished;
        state.error = None;
    }
    if !plan.keep_raw {
        let copies: Vec<String> = {
            let state = job.state.lock().await;
            state
                .files
                .iter()
                .filter_map(|f| f.lake_copy.clone())
                .collect()
        };
        for copy in copies {
            let location = job.lake.path(&copy);
            job.lake.store().delete(&location).await.map_err(|source| {
                ExportError::Lake(Box::new(LakeError::Store {
                    path: copy.clone(),
                    source,
                }))
            })?;
        }
    }
    if !plan.keep_raw && raw.exists() {
        std::fs::remove_dir_all(&raw).map_err(|source| ExportError::Io {
            path: raw.clone(),
            source,
        })?;
        RawRemoved {
            dir: raw.display().to_string(),
        }
        .emit(&job.events);
    }
    Finished {
        server_job_deleted: deleted,
    }
    .emit(&job.events);
    job.save().await
}
