//! Status polling until the export completes, then the manifest's further
//! pages. What each status response means is [`super::status::decide`]; the
//! loop here only waits between polls and goes through the shared client,
//! which retries transient failures (429, 5xx, transient OperationOutcomes,
//! network errors, cut bodies) and refreshes the token on a 401.

use chrono::Utc;
use reqwest::Method;
use url::Url;

use super::context::Job;
use super::error::ExportError;
use super::events::{BadManifest, Complete, ExportFailed, InProgress, ManifestPage};
use super::manifest::{Manifest, ManifestError};
use super::status::{PollDecision, PollPolicy, StatusResponse, decide};
use crate::http::{Attempt, Call, RetryKind, redact_url};
use crate::ledger::Event;

/// What one status request (with its retries) came to.
enum Polled {
    Decided(Box<PollDecision>, u16),
    /// 404/410: the server no longer knows the job.
    Gone(u16),
}

/// One status request, retried through the shared client until it says
/// something other than "try again".
async fn poll_once(
    job: &Job<'_>,
    status_url: &Url,
    policy: PollPolicy,
) -> Result<Polled, ExportError> {
    let http = job.http;
    let polled = http
        .retrying(
            "status poll",
            status_url,
            RetryKind::StatusPoll,
            &job.events,
            async |_| {
                let request = http
                    .client
                    .get(status_url.clone())
                    .header("Accept", "application/json");
                let response = match http.authorize(request, true).await?.send().await {
                    Ok(response) => response,
                    Err(e) => {
                        return Ok(Attempt::Retry {
                            reason: e.without_url().to_string(),
                            retry_after: None,
                            host_failed: true,
                        });
                    }
                };
                let status = response.status().as_u16();
                let header = |name: &str| crate::http::header_text(response.headers(), name);
                let (retry_after, progress) = (header("retry-after"), header("x-progress"));
                let body = match response.bytes().await {
                    Ok(body) => body,
                    Err(e) => {
                        return Ok(Attempt::Retry {
                            reason: format!("status body cut: {}", e.without_url()),
                            retry_after: None,
                            host_failed: true,
                        });
                    }
                };
                if status == 401 {
                    let failed = PollDecision::Failed {
                        status,
                        diagnostics: super::kickoff::diagnostics(&body),
                    };
                    return Ok(Attempt::Unauthorized(Polled::Decided(
                        Box::new(failed),
                        status,
                    )));
                }
                if matches!(status, 404 | 410) {
                    return Ok(Attempt::Done(Polled::Gone(status)));
                }
                let response = StatusResponse {
                    status,
                    retry_after: retry_after.as_deref(),
                    x_progress: progress.as_deref(),
                    body: &body,
                };
                Ok(match decide(&response, Utc::now(), &policy) {
                    PollDecision::Retry { reason, .. } => Attempt::Retry {
                        reason,
                        retry_after,
                        host_failed: status >= 500,
                    },
                    decision => Attempt::Done(Polled::Decided(Box::new(decision), status)),
                })
            },
        )
        .await;
    polled.map_err(|source| ExportError::Http {
        job_id: job.job_id.clone(),
        source,
    })
}

/// Polls the status URL until the export completes; returns the whole
/// manifest (partial manifests' pages followed).
pub(super) async fn poll(
    job: &Job<'_>,
    status_url: &Url,
    policy: PollPolicy,
) -> Result<Manifest, ExportError> {
    let job_id = &job.job_id;
    let manifest = loop {
        let (decision, status) = match poll_once(job, status_url, policy).await? {
            Polled::Gone(status) => {
                return Err(ExportError::StatusGone {
                    job_id: job_id.clone(),
                    url: redact_url(status_url.as_str()),
                    status,
                });
            }
            Polled::Decided(decision, status) => (*decision, status),
        };
        match decision {
            PollDecision::Wait {
                after, progress, ..
            } => {
                InProgress {
                    progress,
                    next_poll_ms: after.as_millis() as u64,
                }
                .emit(&job.events);
                tokio::time::sleep(after).await;
            }
            PollDecision::Complete(manifest) => {
                Complete {
                    status,
                    transaction_time: manifest.transaction_time.clone(),
                    output_files: manifest.output.len(),
                    error_files: manifest.error.len(),
                    deleted_files: manifest.deleted.len(),
                }
                .emit(&job.events);
                break manifest;
            }
            PollDecision::Failed {
                status: 200,
                diagnostics,
            } => {
                BadManifest {
                    diagnostics: diagnostics.clone(),
                }
                .emit(&job.events);
                return Err(ExportError::BadManifest {
                    job_id: job_id.clone(),
                    url: redact_url(status_url.as_str()),
                    diagnostics,
                });
            }
            PollDecision::Failed {
                status,
                diagnostics,
            } => {
                ExportFailed {
                    status,
                    diagnostics: diagnostics.clone(),
                }
                .emit(&job.events);
                return Err(ExportError::Failed {
                    job_id: job_id.clone(),
                    status,
                    diagnostics,
                });
            }
            PollDecision::Retry { .. } => unreachable!("retried by the client"),
        }
    };
    follow_pages(job, manifest).await
}

/// Partial manifests: follows `link` next and gathers every page's files.
async fn follow_pages(job: &Job<'_>, mut manifest: Manifest) -> Result<Manifest, ExportError> {
    let job_id = &job.job_id;
    let mut seen = std::collections::HashSet::new();
    let mut next = manifest.next.take();
    while let Some(link) = next {
        if !seen.insert(link.clone()) {
            break;
        }
        let manifest_err = |source| ExportError::Manifest {
            job_id: job_id.clone(),
            url: redact_url(&link),
            source,
        };
        let url = Url::parse(&link).map_err(|e| {
            manifest_err(ManifestError::Malformed {
                field: "link",
                detail: e.to_string(),
            })
        })?;
        let response = job
            .http
            .send(
                Call::new("manifest page", Method::GET, &url),
                &job.events,
                |r| r.header("Accept", "application/json"),
            )
            .await
            .map_err(|source| ExportError::Http {
                job_id: job_id.clone(),
                source,
            })?;
        let body = response.bytes().await.unwrap_or_default();
        let page = Manifest::parse(&body).map_err(manifest_err)?;
        ManifestPage {
            url: redact_url(&link),
            output_files: page.output.len(),
        }
        .emit(&job.events);
        manifest.output.extend(page.output);
        manifest.error.extend(page.error);
        manifest.deleted.extend(page.deleted);
        next = page.next;
    }
    Ok(manifest)
}
