//! Getting the manifest's files: polling to completion, then parallel
//! verified downloads into the job's raw folder, each recorded in the job
//! state as it lands; expired links get one manifest refresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use url::Url;

use super::context::Job;
use super::download::{DownloadError, Received, Try, completed_earlier, download_once, sha256_of};
use super::error::ExportError;
use super::events::{
    DownloadAdopted, DownloadStarted, Downloaded, LinkExpired, ManifestRefresh, RawUploaded,
};
use super::job::Phase;
use super::manifest::Manifest;
use super::plan::ExportPlan;
use super::poll::poll;
use crate::fhir;
use crate::http::{Attempt, RetryKind, redact_url};
use crate::ledger::{Event, ExportFile, FileKind, FileOutcome};

/// Polls to completion (unless every file is already verified), then downloads.
pub(super) async fn fetch_files(job: &Job<'_>, plan: &ExportPlan) -> Result<(), ExportError> {
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
        ManifestRefresh {
            expired_files: expired.len(),
        }
        .emit(&job.events);
        let manifest = poll(job, &status_url, plan.poll).await?;
        urls = adopt_manifest(job, &manifest).await;
        let still = download_round(job, plan, &urls).await?;
        let mut state = job.state.lock().await;
        for file in state.files.iter_mut() {
            if still.contains(&(file.kind, file.index)) {
                file.outcome = FileOutcome::Failed {
                    reason: "expired (HTTP 404/410) after a manifest refresh".into(),
                };
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
            file.outcome = FileOutcome::Pending;
            file.sha256 = None;
            all = false;
        }
    }
    Ok(all)
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
                outcome: FileOutcome::Pending,
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
                        let reason = "the manifest has no usable URL".into();
                        set_outcome(job, &file, FileOutcome::Failed { reason }).await;
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

async fn set_outcome(job: &Job<'_>, file: &ExportFile, outcome: FileOutcome) {
    let mut state = job.state.lock().await;
    if let Some(f) = state.file_mut(file.kind, file.index) {
        f.outcome = outcome;
    }
}

/// One file, retried through the shared client (cut bodies, network
/// errors, 429/5xx, and a count that disagrees with the manifest up to three
/// times). `Ok(Some(key))`: the link expired.
async fn download_one(
    job: &Job<'_>,
    file: &ExportFile,
    url: &Url,
    with_token: bool,
    raw: &Path,
) -> Result<Option<(FileKind, usize)>, ExportError> {
    let shown = redact_url(url.as_str());
    let stem = raw.join(file_stem(file.kind, file.index, &file.resource_type));
    if let Some(received) = adoptable(&stem, file).await {
        DownloadAdopted {
            url: shown.clone(),
            resource_type: file.resource_type.clone(),
            sha256: received.sha256.clone(),
            lines: received.lines,
        }
        .emit(&job.events);
        record_download(job, file, received, 0, raw, &shown).await?;
        return Ok(None);
    }
    let mut attempts = 0;
    let http = job.http;
    let result = http
        .retrying(
            "download",
            url,
            RetryKind::Download,
            &job.events,
            async |attempt| {
                attempts = attempt;
                DownloadStarted {
                    url: shown.clone(),
                    resource_type: file.resource_type.clone(),
                    attempt,
                }
                .emit(&job.events);
                let tried: Try = download_once(http, url, with_token, &stem).await?;
                Ok(match tried {
                    Attempt::Done(Ok(received))
                        if file.count_disagrees(received.lines)
                            && attempt < http.retry.attempts.min(3) =>
                    {
                        Attempt::Retry {
                            reason: format!(
                                "{} lines received, the manifest declares {}",
                                received.lines,
                                file.declared_count.unwrap_or_default()
                            ),
                            retry_after: None,
                            host_failed: false,
                        }
                    }
                    other => other,
                })
            },
        )
        .await;
    match result {
        Ok(Ok(received)) => {
            record_download(job, file, received, attempts, raw, &shown).await?;
            Ok(None)
        }
        Ok(Err(DownloadError::Expired { status, .. })) => {
            LinkExpired { url: shown, status }.emit(&job.events);
            set_outcome(job, file, FileOutcome::Expired { status }).await;
            Ok(Some((file.kind, file.index)))
        }
        Ok(Err(e)) => {
            let reason = e.to_string();
            set_outcome(job, file, FileOutcome::Failed { reason }).await;
            Ok(None)
        }
        Err(crate::http::HttpError::Gave { reason, .. }) => {
            set_outcome(job, file, FileOutcome::Failed { reason }).await;
            Ok(None)
        }
        Err(source) => Err(ExportError::Http {
            job_id: job.job_id.clone(),
            source,
        }),
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
    Downloaded {
        url: shown.to_owned(),
        resource_type: file.resource_type.clone(),
        bytes: received.bytes,
        sha256: received.sha256.clone(),
        lines: received.lines,
        declared_count: file.declared_count,
        content_encoding: received.content_encoding.clone(),
    }
    .emit(&job.events);
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
                FileOutcome::CountMismatch
            } else {
                FileOutcome::Downloaded
            };
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
    let relative = format!("_raw/{}/{name}", job.job_id);
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
    RawUploaded {
        object: relative.clone(),
    }
    .emit(&job.events);
    Ok(Some(relative))
}
