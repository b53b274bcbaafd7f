//! The export job, end to end:
//!
//! ```text
//!  resume an open job for the same request, or kick off (status URL saved at once)
//!   ─▶ poll (Retry-After, X-Progress, transient retries) ─▶ manifest (+ next pages)
//!   ─▶ parallel downloads to the raw folder, each verified and saved as it lands
//!      (expired links: one manifest refresh)
//!   ─▶ one load job (output files; error[] lines to quarantine; deleted[] applied)
//!   ─▶ DELETE the server's job ─▶ finished
//! ```
//! Every step rewrites `_fhirlake/jobs/<job>.json`, so a run killed anywhere
//! and started again continues where it stopped and never loads a file twice.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use super::download::{DownloadError, Received, completed_earlier, download, sha256_of};
use super::job::{ExportRequest, JobState, Phase, Scope, resumable, since_auto};
use super::kickoff::{KickoffError, KickoffMethod, diagnostics, kick_off};
use super::manifest::{Manifest, ManifestError};
use super::status::{PollDecision, PollPolicy, StatusResponse, decide};
use crate::auth::AuthError;
use crate::fhir;
use crate::http::{HttpClient, HttpError, redact_url};
use crate::lake::{Deletion, Lake, LakeError};
use crate::ledger::{self, ExportFile, ExportRecord, FileKind};
use crate::ledger::{Echo, EventLog};
use crate::load::{self, LoadError, LoadPlan, LoadReport, ServerIssue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    None,
    /// The transactionTime of the last finished export of the same request.
    Auto,
    At(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Resume an open job for the same request if there is one, else start.
    Auto,
    /// Fail unless there is an open job to resume.
    Require,
    /// Always kick off a new job.
    Fresh,
}

pub struct ExportPlan {
    pub server: Url,
    pub scope: Scope,
    /// Kick-off parameters other than `_since`.
    pub params: Vec<(String, String)>,
    pub since: Since,
    pub method: KickoffMethod,
    pub parallel: usize,
    pub keep_raw: bool,
    /// Parent of the job's raw folder (default: `<lake>/_raw`, or the user
    /// cache for a remote lake).
    pub raw_dir: Option<PathBuf>,
    pub poll: PollPolicy,
    pub keep_server_job: bool,
    pub resume: Resume,
    /// Mode and views for the load; inputs are filled in.
    pub load: LoadPlan,
}

#[derive(Debug)]
pub struct ExportReport {
    pub job: JobState,
    pub load: Option<LoadReport>,
    pub resumed: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Kickoff(#[from] KickoffError),
    #[error("export job {job_id}: {source}")]
    Http {
        job_id: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "export job {job_id}: the completion manifest from {url} is unusable: {diagnostics}; nothing was downloaded or loaded, and the next run starts a new export"
    )]
    BadManifest {
        job_id: String,
        url: String,
        diagnostics: String,
    },
    #[error("export job {job_id} failed on the server (HTTP {status}): {diagnostics}")]
    Failed {
        job_id: String,
        status: u16,
        diagnostics: String,
    },
    #[error(
        "export job {job_id}: the status URL {url} answered HTTP {status}: the server no longer knows the job; it is marked failed and the next run starts a new export"
    )]
    StatusGone {
        job_id: String,
        url: String,
        status: u16,
    },
    #[error("export job {job_id}: manifest from {url}: {source}")]
    Manifest {
        job_id: String,
        url: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "export job {job_id}: {} file(s) could not be downloaded, so nothing was loaded: {}; re-run the same command to retry them (verified files are kept)",
        failed.len(), failed.join("; ")
    )]
    Downloads { job_id: String, failed: Vec<String> },
    #[error("export job {job_id}: loading the downloaded files: {source}")]
    Load {
        job_id: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error(
        "export job {job_id} cancelled{}; nothing was loaded",
        if *server_job_deleted { " and deleted on the server" } else { " (the server's job was kept: --keep-server-job)" }
    )]
    Cancelled {
        job_id: String,
        server_job_deleted: bool,
    },
    #[error(
        "--resume: no unfinished export of this server, scope and parameters in the lake; run without --resume to start one"
    )]
    NothingToResume,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<LakeError> for ExportError {
    fn from(error: LakeError) -> Self {
        Self::Lake(Box::new(error))
    }
}

/// Shared by the job's tasks: the state and where to save it.
struct Job<'a> {
    lake: &'a Lake,
    state: Mutex<JobState>,
    events: EventLog,
    http: &'a HttpClient,
}

impl Job<'_> {
    async fn save(&self) -> Result<(), ExportError> {
        let mut state = self.state.lock().await;
        state.save(self.lake, &self.events.to_ndjson()).await?;
        Ok(())
    }

    async fn id(&self) -> String {
        self.state.lock().await.job_id.clone()
    }
}

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

fn default_raw_parent(lake: &Lake) -> PathBuf {
    if lake.root().scheme() == "file"
        && let Ok(path) = lake.root().to_file_path()
    {
        return path.join("_raw");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("fhirlake").join("raw")
}

pub async fn run(
    lake: &Lake,
    plan: ExportPlan,
    http: &HttpClient,
    echo: Option<Echo>,
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
            events.record(
                "resume",
                json!({"job_id": state.job_id, "phase": state.phase, "status_url": redact_url(&state.status_url)}),
            );
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
                events.record(
                    "since_auto",
                    json!({"since": since, "from": if since.is_some() { "previous export transactionTime" } else { "no previous export: full export" }}),
                );
            }
            let accepted = kick_off(http, &plan.server, &request, plan.method, &events).await?;
            let raw_parent = plan
                .raw_dir
                .clone()
                .unwrap_or_else(|| default_raw_parent(lake));
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
            };
            // Saved before anything else: from here on a kill resumes this job.
            state.save(lake, &events.to_ndjson()).await?;
            (state, events)
        }
    };
    let job = Job {
        lake,
        state: Mutex::new(state),
        events,
        http,
    };

    let fetched = tokio::select! {
        result = fetch_files(&job, &plan) => result,
        _ = tokio::signal::ctrl_c() => {
            return Err(cancel(&job, plan.keep_server_job).await);
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
        drop(state);
        job.save().await?;
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
    job.events
        .record("cancel", json!({"server_job_deleted": deleted}));
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
        .send("delete job", Method::DELETE, url, true, &job.events, |r| r)
        .await;
    let status = result.as_ref().map(|r| r.status().as_u16()).ok();
    job.events.record(
        "delete_server_job",
        json!({"url": redact_url(url.as_str()), "status": status}),
    );
    status.is_some_and(|s| (200..300).contains(&s) || s == 404)
}

/// Polls to completion (unless every file is already verified), then downloads.
async fn fetch_files(job: &Job<'_>, plan: &ExportPlan) -> Result<(), ExportError> {
    let (phase, all_verified, status_url) = {
        let state = job.state.lock().await;
        (
            state.phase,
            !state.files.is_empty() && state.files.iter().all(ExportFile::verified),
            state.status_url.clone(),
        )
    };
    if phase == Phase::Loaded {
        return Ok(());
    }
    let status_url = Url::parse(&status_url).map_err(|e| ExportError::Io {
        path: PathBuf::from(&status_url),
        source: std::io::Error::other(e),
    })?;
    // Files an earlier run verified are trusted only if still on disk unchanged.
    let on_disk = verify_on_disk(job).await?;
    if phase == Phase::Complete && all_verified && on_disk {
        return Ok(());
    }
    let manifest = poll(job, &status_url, plan.poll).await?;
    let mut urls = adopt_manifest(job, &manifest).await;
    job.save().await?;

    let expired = download_round(job, plan, &urls).await?;
    if !expired.is_empty() {
        // Links expired (404/410): one fresh manifest, then one more try.
        job.events
            .record("manifest_refresh", json!({"expired_files": expired.len()}));
        let manifest = poll(job, &status_url, plan.poll).await?;
        urls = adopt_manifest(job, &manifest).await;
        let still = download_round(job, plan, &urls).await?;
        let mut state = job.state.lock().await;
        for file in state.files.iter_mut() {
            if still.contains(&(file.kind, file.index)) {
                file.outcome = "failed: expired (HTTP 404/410) after a manifest refresh".into();
            }
        }
    }
    job.save().await?;
    let state = job.state.lock().await;
    let failed: Vec<String> = state
        .files
        .iter()
        .filter(|f| !f.verified())
        .map(|f| format!("{} ({})", f.url, f.outcome))
        .collect();
    if !failed.is_empty() {
        return Err(ExportError::Downloads {
            job_id: state.job_id.clone(),
            failed,
        });
    }
    Ok(())
}

/// Checks verified files are still on disk with their SHA-256; resets those that are not.
async fn verify_on_disk(job: &Job<'_>) -> Result<bool, ExportError> {
    let mut state = job.state.lock().await;
    let raw = PathBuf::from(&state.raw_dir);
    let mut all = true;
    for file in state.files.iter_mut().filter(|f| f.verified()) {
        let path = raw.join(&file.name);
        let expected = file.sha256.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_of(&path).ok())
            .await
            .ok()
            .flatten();
        if actual != expected {
            // Not what was received: gone, or changed since. Remove it so the
            // download starts over instead of adopting it.
            let _ = tokio::fs::remove_file(raw.join(&file.name)).await;
            file.outcome = "pending".into();
            file.sha256 = None;
            all = false;
        }
    }
    Ok(all)
}

/// One status response, read whole.
struct StatusReply {
    status: u16,
    retry_after: Option<String>,
    progress: Option<String>,
    body: bytes::Bytes,
}

/// GETs the status URL. `Ok(Err(reason))`: a network failure or a cut body,
/// worth another try.
async fn get_status(
    job: &Job<'_>,
    status_url: &Url,
) -> Result<Result<StatusReply, String>, AuthError> {
    let request = job
        .http
        .client
        .get(status_url.clone())
        .header("Accept", "application/json");
    let response = match job.http.authorize(request, true).await?.send().await {
        Ok(response) => response,
        Err(e) => return Ok(Err(e.without_url().to_string())),
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, retry_after, progress) = (
        response.status().as_u16(),
        header("retry-after"),
        header("x-progress"),
    );
    Ok(match response.bytes().await {
        Ok(body) => Ok(StatusReply {
            status,
            retry_after,
            progress,
            body,
        }),
        Err(e) => Err(format!("status body cut: {}", e.without_url())),
    })
}

async fn poll(
    job: &Job<'_>,
    status_url: &Url,
    policy: PollPolicy,
) -> Result<Manifest, ExportError> {
    let job_id = job.id().await;
    let mut transient = 0u32;
    let mut refreshed = false;
    let manifest = loop {
        let StatusReply {
            status,
            retry_after,
            progress,
            body,
        } = match get_status(job, status_url).await? {
            Ok(reply) => reply,
            Err(reason) => {
                transient += 1;
                wait_transient(job, &job_id, status_url, transient, None, reason).await?;
                continue;
            }
        };
        if status == 401 && job.http.tokens.has_credentials() && !refreshed {
            refreshed = true;
            job.http.tokens.invalidate().await;
            continue;
        }
        if matches!(status, 404 | 410) {
            return Err(ExportError::StatusGone {
                job_id,
                url: redact_url(status_url.as_str()),
                status,
            });
        }
        let decision = decide(
            &StatusResponse {
                status,
                retry_after: retry_after.as_deref(),
                x_progress: progress.as_deref(),
                body: &body,
            },
            Utc::now(),
            &policy,
        );
        match decision {
            PollDecision::Wait {
                after, progress, ..
            } => {
                transient = 0;
                refreshed = false;
                job.events.record(
                    "status",
                    json!({"status": status, "progress": progress, "next_poll_ms": after.as_millis() as u64}),
                );
                tokio::time::sleep(after).await;
            }
            PollDecision::Complete(manifest) => {
                job.events.record(
                    "status",
                    json!({"status": status, "transaction_time": manifest.transaction_time, "output_files": manifest.output.len(), "error_files": manifest.error.len(), "deleted_files": manifest.deleted.len()}),
                );
                break manifest;
            }
            PollDecision::Retry { after, reason } => {
                transient += 1;
                wait_transient(job, &job_id, status_url, transient, after, reason).await?;
            }
            PollDecision::Failed {
                status: 200,
                diagnostics,
            } => {
                job.events
                    .record("bad_manifest", json!({"diagnostics": diagnostics}));
                return Err(ExportError::BadManifest {
                    job_id,
                    url: redact_url(status_url.as_str()),
                    diagnostics,
                });
            }
            PollDecision::Failed {
                status,
                diagnostics,
            } => {
                job.events.record(
                    "failed",
                    json!({"status": status, "diagnostics": diagnostics}),
                );
                return Err(ExportError::Failed {
                    job_id,
                    status,
                    diagnostics,
                });
            }
        }
    };
    follow_pages(job, &job_id, manifest).await
}

/// Waits before retry `attempt` of a status poll, or gives up after the
/// policy's attempts.
async fn wait_transient(
    job: &Job<'_>,
    job_id: &str,
    url: &Url,
    attempt: u32,
    after: Option<Duration>,
    reason: String,
) -> Result<(), ExportError> {
    let retry = job.http.retry;
    if attempt >= retry.attempts {
        return Err(ExportError::Http {
            job_id: job_id.to_owned(),
            source: HttpError::Gave {
                what: "status poll".into(),
                url: redact_url(url.as_str()),
                reason,
                attempts: attempt,
            },
        });
    }
    let wait = after
        .map(|d| d.min(retry.max_wait))
        .unwrap_or_else(|| retry.backoff(attempt));
    job.events.record(
        "status_retry",
        json!({"reason": reason, "attempt": attempt, "wait_ms": wait.as_millis() as u64}),
    );
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Partial manifests: follows `link` next and gathers every page's files.
async fn follow_pages(
    job: &Job<'_>,
    job_id: &str,
    mut manifest: Manifest,
) -> Result<Manifest, ExportError> {
    let mut seen = std::collections::HashSet::new();
    let mut next = manifest.next.take();
    while let Some(link) = next {
        if !seen.insert(link.clone()) {
            break;
        }
        let url = Url::parse(&link).map_err(|e| ExportError::Manifest {
            job_id: job_id.to_owned(),
            url: redact_url(&link),
            source: ManifestError::Malformed {
                field: "link",
                detail: e.to_string(),
            },
        })?;
        let response = job
            .http
            .send("manifest page", Method::GET, &url, true, &job.events, |r| {
                r.header("Accept", "application/json")
            })
            .await
            .map_err(|source| ExportError::Http {
                job_id: job_id.to_owned(),
                source,
            })?;
        let body = response.bytes().await.unwrap_or_default();
        let page = Manifest::parse(&body).map_err(|source| ExportError::Manifest {
            job_id: job_id.to_owned(),
            url: redact_url(&link),
            source,
        })?;
        job.events.record(
            "manifest_page",
            json!({"url": redact_url(&link), "output_files": page.output.len()}),
        );
        manifest.output.extend(page.output);
        manifest.error.extend(page.error);
        manifest.deleted.extend(page.deleted);
        next = page.next;
    }
    Ok(manifest)
}

type Urls = HashMap<(FileKind, usize), Url>;

/// Takes the manifest's files into the job state (keeping what earlier runs
/// verified) and returns the real download URLs, which are never saved.
async fn adopt_manifest(job: &Job<'_>, manifest: &Manifest) -> Urls {
    let mut state = job.state.lock().await;
    state.transaction_time = Some(manifest.transaction_time.clone());
    state.requires_access_token = Some(manifest.requires_access_token);
    if state.phase == Phase::KickedOff {
        state.phase = Phase::Complete;
    }
    let mut urls = HashMap::new();
    let mut files = Vec::new();
    for (kind, list) in [
        (FileKind::Output, &manifest.output),
        (FileKind::Error, &manifest.error),
        (FileKind::Deleted, &manifest.deleted),
    ] {
        for (index, offered) in list.iter().enumerate() {
            let url = match Url::parse(&offered.url) {
                Ok(url) => Some(url),
                Err(_) => Url::parse(&state.status_url)
                    .ok()
                    .and_then(|base| base.join(&offered.url).ok()),
            };
            if let Some(url) = url {
                urls.insert((kind, index), url);
            }
            let previous = state
                .files
                .iter()
                .find(|f| {
                    f.kind == kind && f.index == index && f.resource_type == offered.resource_type
                })
                .cloned();
            let stem = file_stem(kind, index, &offered.resource_type);
            files.push(previous.unwrap_or(ExportFile {
                kind,
                resource_type: offered.resource_type.clone(),
                index,
                url: redact_url(&offered.url),
                name: stem,
                declared_count: offered.count,
                bytes: None,
                sha256: None,
                lines: None,
                content_encoding: None,
                attempts: 0,
                outcome: "pending".into(),
                diagnostics: Vec::new(),
                lake_copy: None,
            }));
        }
    }
    state.files = files;
    urls
}

/// Where a manifest file is stored under the job's raw folder, without its
/// extension (`.part` while arriving, `.ndjson[.gz]` when complete).
fn file_stem(kind: FileKind, index: usize, resource_type: &str) -> String {
    format!(
        "{}/{:05}-{}",
        kind.dir(),
        index,
        fhir::table_name(resource_type)
    )
}

/// Downloads every unverified file, `parallel` at a time. Returns the files
/// whose links had expired.
async fn download_round(
    job: &Job<'_>,
    plan: &ExportPlan,
    urls: &Urls,
) -> Result<Vec<(FileKind, usize)>, ExportError> {
    let (pending, raw, with_token) = {
        let state = job.state.lock().await;
        let pending: Vec<ExportFile> = state
            .files
            .iter()
            .filter(|f| !f.verified())
            .cloned()
            .collect();
        (
            pending,
            PathBuf::from(&state.raw_dir),
            state.requires_access_token.unwrap_or(true),
        )
    };
    let results: Vec<Result<Option<(FileKind, usize)>, ExportError>> =
        futures::stream::iter(pending)
            .map(|file| {
                let raw = raw.clone();
                async move {
                    let Some(url) = urls.get(&(file.kind, file.index)) else {
                        set_outcome(job, &file, "failed: the manifest has no usable URL".into())
                            .await;
                        return Ok(None);
                    };
                    download_one(job, &file, url, with_token, &raw).await
                }
            })
            .buffer_unordered(plan.parallel.max(1))
            .collect()
            .await;
    let mut expired = Vec::new();
    for result in results {
        if let Some(key) = result? {
            expired.push(key);
        }
    }
    Ok(expired)
}

async fn set_outcome(job: &Job<'_>, file: &ExportFile, outcome: String) {
    let mut state = job.state.lock().await;
    if let Some(f) = state.file_mut(file.kind, file.index) {
        f.outcome = outcome;
    }
}

/// One file with retries. `Ok(Some(key))`: the link expired.
async fn download_one(
    job: &Job<'_>,
    file: &ExportFile,
    url: &Url,
    with_token: bool,
    raw: &Path,
) -> Result<Option<(FileKind, usize)>, ExportError> {
    let retry = job.http.retry;
    let shown = redact_url(url.as_str());
    let stem = raw.join(file_stem(file.kind, file.index, &file.resource_type));
    if let Some(received) = adoptable(&stem, file).await {
        job.events.record(
            "download_adopted",
            json!({"url": shown, "type": file.resource_type, "sha256": received.sha256, "lines": received.lines}),
        );
        record_download(job, file, received, 0, raw, &shown).await?;
        return Ok(None);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        job.events.record(
            "download_start",
            json!({"url": shown, "type": file.resource_type, "attempt": attempt}),
        );
        let result = download(job.http, url, with_token, &stem, &job.events).await;
        let retry_reason = match result {
            Ok(received) => {
                if file.count_disagrees(received.lines) && attempt < retry.attempts.min(3) {
                    format!(
                        "{} lines received, the manifest declares {}",
                        received.lines,
                        file.declared_count.unwrap_or_default()
                    )
                } else {
                    record_download(job, file, received, attempt, raw, &shown).await?;
                    return Ok(None);
                }
            }
            Err(DownloadError::Expired { status, .. }) => {
                job.events
                    .record("download_expired", json!({"url": shown, "status": status}));
                set_outcome(job, file, format!("expired (HTTP {status})")).await;
                return Ok(Some((file.kind, file.index)));
            }
            Err(DownloadError::Retryable { reason, .. }) => reason,
            Err(e @ (DownloadError::Refused { .. } | DownloadError::Io { .. })) => {
                set_outcome(job, file, format!("failed: {e}")).await;
                return Ok(None);
            }
        };
        if attempt >= retry.attempts {
            set_outcome(job, file, format!("failed: {retry_reason}")).await;
            return Ok(None);
        }
        let wait = retry.backoff(attempt);
        job.events.record(
            "download_retry",
            json!({"url": shown, "reason": retry_reason, "attempt": attempt, "wait_ms": wait.as_millis() as u64}),
        );
        tokio::time::sleep(wait).await;
    }
}

/// A complete file left by a run that died between finishing the download and
/// saving the job state; kept when its line count agrees with the manifest.
async fn adoptable(stem: &Path, file: &ExportFile) -> Option<Received> {
    let stem = stem.to_path_buf();
    let received = tokio::task::spawn_blocking(move || completed_earlier(&stem).ok().flatten())
        .await
        .ok()
        .flatten()?;
    (!file.count_disagrees(received.lines)).then_some(received)
}

/// Records a verified file in the job state (and the lake, for a remote lake)
/// and saves the state.
async fn record_download(
    job: &Job<'_>,
    file: &ExportFile,
    received: Received,
    attempts: u32,
    raw: &Path,
    shown: &str,
) -> Result<(), ExportError> {
    let mismatch = file.count_disagrees(received.lines);
    let name = received
        .path
        .strip_prefix(raw)
        .unwrap_or(&received.path)
        .display()
        .to_string();
    let lake_copy = copy_to_lake(job, &received.path, &name).await?;
    job.events.record(
        "download_complete",
        json!({"url": shown, "type": file.resource_type, "bytes": received.bytes, "sha256": received.sha256, "lines": received.lines, "declared_count": file.declared_count, "content_encoding": received.content_encoding}),
    );
    {
        let mut state = job.state.lock().await;
        if let Some(f) = state.file_mut(file.kind, file.index) {
            f.name = name;
            f.url = shown.to_owned();
            f.bytes = Some(received.bytes);
            f.sha256 = Some(received.sha256);
            f.lines = Some(received.lines);
            f.content_encoding = received.content_encoding;
            f.attempts += attempts;
            f.outcome = if mismatch {
                "count_mismatch"
            } else {
                "downloaded"
            }
            .into();
            f.lake_copy = lake_copy;
        }
    }
    job.save().await
}

/// For a remote lake, uploads a verified raw file to `<lake>/_raw/<job>/<name>`
/// (multipart for large files); a local lake already holds it there.
async fn copy_to_lake(
    job: &Job<'_>,
    path: &Path,
    name: &str,
) -> Result<Option<String>, ExportError> {
    if job.lake.root().scheme() == "file" {
        return Ok(None);
    }
    let relative = format!("_raw/{}/{name}", job.id().await);
    let location = job.lake.path(&relative);
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut writer = object_store::buffered::BufWriter::new(job.lake.store().clone(), location);
    tokio::io::copy(&mut file, &mut writer).await.map_err(io)?;
    tokio::io::AsyncWriteExt::shutdown(&mut writer)
        .await
        .map_err(io)?;
    job.events
        .record("raw_uploaded", json!({"object": relative}));
    Ok(Some(relative))
}

/// Reads a raw file's lines (gzip by name).
fn read_lines(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    std::io::BufReader::new(reader).split(b'\n').collect()
}

/// error[] files: each line becomes a quarantine row naming the server's diagnostics.
fn server_issues(raw: &Path, file: &mut ExportFile) -> std::io::Result<Vec<ServerIssue>> {
    let path = raw.join(&file.name);
    let mut issues = Vec::new();
    let mut offset = 0u64;
    for (i, line) in read_lines(&path)?.into_iter().enumerate() {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = diagnostics(&line);
        file.diagnostics.push(text.clone());
        issues.push(ServerIssue {
            source: path.display().to_string(),
            source_sha256: file.sha256.clone().unwrap_or_default(),
            line: i as u64 + 1,
            byte_offset: line_offset,
            diagnostics: format!("server error for export ({}): {text}", file.resource_type),
            raw: line,
        });
    }
    Ok(issues)
}

/// deleted[] files: Bundles whose entries say `DELETE Type/id`.
fn deletions(
    raw: &Path,
    file: &ExportFile,
    transaction_time: i64,
    by_type: &mut BTreeMap<String, Vec<Deletion>>,
    issues: &mut Vec<ServerIssue>,
) -> std::io::Result<()> {
    let path = raw.join(&file.name);
    let source = path.display().to_string();
    let mut offset = 0u64;
    for (i, line) in read_lines(&path)?.into_iter().enumerate() {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = parse_deleted_bundle(&line, transaction_time);
        match parsed {
            Ok(found) => {
                for (resource_type, id, deleted_at, record) in found {
                    by_type.entry(resource_type).or_default().push(Deletion {
                        id,
                        deleted_at,
                        record,
                        source: source.clone(),
                        line: i as u64 + 1,
                    });
                }
            }
            Err(reason) => issues.push(ServerIssue {
                source: source.clone(),
                source_sha256: file.sha256.clone().unwrap_or_default(),
                line: i as u64 + 1,
                byte_offset: line_offset,
                diagnostics: format!("deleted[] line not applied: {reason}"),
                raw: line,
            }),
        }
    }
    Ok(())
}

type Deleted = (String, String, i64, String);

/// (type, id, deleted at, entry JSON) for each DELETE entry of a Bundle line.
pub fn parse_deleted_bundle(line: &[u8], transaction_time: i64) -> Result<Vec<Deleted>, String> {
    let bundle: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err("not a Bundle".into());
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("the Bundle has no entry")?;
    let mut found = Vec::new();
    for entry in entries {
        let request = entry.get("request").ok_or("an entry has no request")?;
        if request.get("method").and_then(Value::as_str) != Some("DELETE") {
            return Err("an entry's request.method is not DELETE".into());
        }
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or("an entry has no request.url")?;
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(h) = segments.iter().position(|s| *s == "_history") {
            segments.truncate(h);
        }
        let (resource_type, id) = match segments.as_slice() {
            [.., t, id] if t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => (*t, *id),
            _ => return Err(format!("request.url {url:?} is not Type/id")),
        };
        let deleted_at = entry
            .pointer("/response/lastModified")
            .and_then(Value::as_str)
            .and_then(fhir::parse_instant_micros)
            .unwrap_or(transaction_time);
        found.push((
            resource_type.to_owned(),
            id.to_owned(),
            deleted_at,
            entry.to_string(),
        ));
    }
    Ok(found)
}

/// Loads the verified files as one load job under the export's id.
async fn load_files(
    job: &Job<'_>,
    plan: &ExportPlan,
) -> Result<(Option<LoadReport>, Vec<String>), ExportError> {
    let mut state = job.state.lock().await;
    let job_id = state.job_id.clone();
    if state.phase == Phase::Loaded {
        return Ok((None, Vec::new()));
    }
    // Killed after the load wrote its manifest but before the state said so.
    if ledger::read_manifest(job.lake, &job_id).await.is_ok() {
        state.phase = Phase::Loaded;
        drop(state);
        job.save().await?;
        return Ok((None, Vec::new()));
    }
    let raw = PathBuf::from(&state.raw_dir);
    let transaction_time = state.transaction_time.clone().unwrap_or_default();
    let tt_micros = fhir::parse_instant_micros(&transaction_time).unwrap_or(0);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let mut issues = Vec::new();
    let mut deleted = BTreeMap::new();
    let mut warnings = Vec::new();
    for file in state.files.iter_mut() {
        match file.kind {
            FileKind::Output => {
                if file.outcome == "count_mismatch" {
                    warnings.push(format!(
                        "{}: {} lines received, the manifest declared {}",
                        file.url,
                        file.lines.unwrap_or_default(),
                        file.declared_count.unwrap_or_default()
                    ));
                }
            }
            FileKind::Error => {
                file.diagnostics.clear();
                issues.extend(server_issues(&raw, file).map_err(io(&raw.join(&file.name)))?);
            }
            FileKind::Deleted => {
                deletions(&raw, file, tt_micros, &mut deleted, &mut issues)
                    .map_err(io(&raw.join(&file.name)))?;
            }
        }
    }
    if !issues.is_empty() {
        warnings.push(format!(
            "{} OperationOutcome line(s) from the server's error files are in _quarantine",
            issues.len()
        ));
    }
    let output_dir = raw.join(FileKind::Output.dir());
    let has_output = state.files.iter().any(|f| f.kind == FileKind::Output);
    if has_output {
        // The load takes transactionTime from here as the stand-in for a
        // missing meta.lastUpdated. URLs redacted: this file stays on disk.
        let manifest = json!({
            "transactionTime": transaction_time,
            "request": state.kickoff_url,
            "requiresAccessToken": state.requires_access_token,
            "output": state.files.iter().filter(|f| f.kind == FileKind::Output)
                .map(|f| json!({"type": f.resource_type, "url": f.url, "count": f.declared_count}))
                .collect::<Vec<_>>(),
        });
        let path = output_dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json"))
            .map_err(io(&path))?;
    }
    let record = ExportRecord {
        server: state.request.server.clone(),
        kickoff_url: state.kickoff_url.clone(),
        kickoff_method: state.kickoff_method.clone(),
        params: state.request.params.clone(),
        status_url: redact_url(&state.status_url),
        transaction_time: transaction_time.clone(),
        requires_access_token: state.requires_access_token.unwrap_or(true),
        files: state.files.clone(),
        ..Default::default()
    };
    drop(state);

    let mut load_plan = plan.load.clone();
    load_plan.inputs = if has_output {
        vec![output_dir]
    } else {
        Vec::new()
    };
    load_plan.job_id = Some(job_id.clone());
    load_plan.export = Some(record);
    load_plan.server_issues = issues;
    load_plan.deletions = deleted;
    job.events.record("load_start", json!({"job_id": job_id}));
    let report = load::run(job.lake, &load_plan, None)
        .await
        .map_err(|source| ExportError::Load {
            job_id: job_id.clone(),
            source: Box::new(source),
        })?;
    let totals = &report.manifest.totals;
    job.events.record(
        "load_complete",
        json!({"manifest": report.manifest_path, "inserted": totals.inserted, "updated": totals.updated, "unchanged": totals.unchanged, "quarantined": totals.quarantined}),
    );
    {
        let mut state = job.state.lock().await;
        state.phase = Phase::Loaded;
        state.load = Some(BTreeMap::from([
            ("inserted".to_owned(), totals.inserted),
            ("updated".to_owned(), totals.updated),
            ("unchanged".to_owned(), totals.unchanged),
            ("quarantined".to_owned(), totals.quarantined),
        ]));
        if let Some(export) = &report.manifest.export {
            state.files = export.files.clone();
        }
    }
    job.save().await?;
    warnings.extend(report.warnings.iter().cloned());
    Ok((Some(report), warnings))
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
        job.events
            .record("raw_removed", json!({"dir": raw.display().to_string()}));
    }
    job.events
        .record("finished", json!({"server_job_deleted": deleted}));
    job.save().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_bundles_name_type_id_and_time() {
        let line = br#"{"resourceType":"Bundle","type":"transaction","entry":[
            {"request":{"method":"DELETE","url":"Patient/p1"}},
            {"request":{"method":"DELETE","url":"https://ehr/fhir/Observation/o9/_history/3"},
             "response":{"status":"204","lastModified":"2024-05-01T00:00:00Z"}}]}"#;
        let found = parse_deleted_bundle(line, 7).unwrap();
        assert_eq!(found[0].0, "Patient");
        assert_eq!(found[0].1, "p1");
        assert_eq!(found[0].2, 7);
        assert_eq!(found[1].0, "Observation");
        assert_eq!(found[1].1, "o9");
        assert_eq!(
            found[1].2,
            fhir::parse_instant_micros("2024-05-01T00:00:00Z").unwrap()
        );
        assert!(parse_deleted_bundle(br#"{"resourceType":"Patient"}"#, 0).is_err());
        let put = br#"{"resourceType":"Bundle","entry":[{"request":{"method":"PUT","url":"Patient/1"}}]}"#;
        assert!(parse_deleted_bundle(put, 0).is_err());
    }
}
