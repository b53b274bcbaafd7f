//! The HTTP client every FHIR server conversation shares (Bulk Data now, REST
//! sync later): one request, retried the way a long unattended job needs: network errors, 429 and 5xx wait (the server's Retry-After,
//! capped, else jittered exponential backoff); a 401 fetches a fresh token once.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use chrono::{DateTime, Utc};

use crate::auth::{AuthError, TokenSource};
use crate::ledger::EventLog;

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff with full jitter: `unit` is a random number in [0, 1).
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
    exp.min(cap).mul_f64(unit.clamp(0.0, 1.0))
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per request (the first included).
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Longest Retry-After honoured; longer ones are cut to this.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff_delay(attempt, self.base, self.cap, jitter())
    }

    /// The wait before retry `attempt`: the server's Retry-After (capped), else backoff.
    pub fn wait(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        retry_after
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
            .map(|d| d.min(self.max_wait))
            .unwrap_or_else(|| self.backoff(attempt))
    }
}

/// A number in [0, 1) for jitter; no RNG crate needed for this.
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// A URL safe to log: query parameters other than Bulk Data's own are
/// replaced (pre-signed download URLs carry credentials there).
pub fn redact_url(url: &str) -> String {
    const SAFE: &[&str] = &[
        "_outputFormat",
        "_since",
        "_until",
        "_type",
        "_elements",
        "_typeFilter",
        "patient",
        "includeAssociatedData",
        "allowPartialManifests",
        "organizeOutputBy",
        "_format",
    ];
    let Ok(mut parsed) = Url::parse(url) else {
        return url.split('?').next().unwrap_or_default().to_owned();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.is_empty() {
        parsed.set_query(None);
        return parsed.to_string();
    }
    let kept: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            if SAFE.contains(&k.as_str()) {
                format!("{k}={v}")
            } else {
                format!("{k}=<redacted>")
            }
        })
        .collect();
    parsed.set_query(None);
    format!("{parsed}?{}", kept.join("&"))
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "{what} {url}: {reason} (after {attempts} attempt(s)); check the server is reachable and healthy, then re-run: the job resumes where it stopped"
    )]
    Gave {
        what: String,
        url: String,
        reason: String,
        attempts: u32,
    },
}

/// HTTP client, credentials and retry policy shared by every request of a job.
pub struct HttpClient {
    pub client: reqwest::Client,
    pub tokens: TokenSource,
    pub retry: RetryPolicy,
}

/// Whether a status is worth retrying as is.
pub fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

impl HttpClient {
    /// Adds the bearer token when `with_token` and credentials are configured.
    pub async fn authorize(
        &self,
        request: RequestBuilder,
        with_token: bool,
    ) -> Result<RequestBuilder, AuthError> {
        if !with_token {
            return Ok(request);
        }
        Ok(match self.tokens.bearer().await? {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        })
    }

    /// Sends a request, retrying transient failures. Returns the first
    /// non-transient response (success or not) for the caller to judge.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        with_token: bool,
        events: &EventLog,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = build(self.client.request(method.clone(), url.clone()));
            let request = self.authorize(request, with_token).await?;
            let (reason, retry_after) = match request.send().await {
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && with_token
                        && self.tokens.has_credentials()
                        && !refreshed =>
                {
                    refreshed = true;
                    self.tokens.invalidate().await;
                    events.record(
                        "token_refresh",
                        serde_json::json!({"reason": format!("{what}: 401")}),
                    );
                    attempt -= 1;
                    continue;
                }
                Ok(response) if is_transient(response.status()) => {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    (format!("HTTP {}", response.status()), retry_after)
                }
                Ok(response) => return Ok(response),
                Err(e) => (e.without_url().to_string(), None),
            };
            if attempt >= self.retry.attempts {
                return Err(HttpError::Gave {
                    what: what.to_owned(),
                    url: redact_url(url.as_str()),
                    reason,
                    attempts: attempt,
                });
            }
            let wait = self.retry.wait(attempt, retry_after.as_deref());
            events.record(
                "retry",
                serde_json::json!({
                    "what": what,
                    "url": redact_url(url.as_str()),
                    "reason": reason,
                    "attempt": attempt,
                    "wait_ms": wait.as_millis() as u64,
                }),
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_download_urls_lose_their_credentials() {
        let url =
            "https://bucket.s3.amazonaws.com/f/1.ndjson?X-Amz-Signature=abc&X-Amz-Credential=AKIA";
        let shown = redact_url(url);
        assert!(!shown.contains("abc") && !shown.contains("AKIA"), "{shown}");
        assert!(shown.starts_with("https://bucket.s3.amazonaws.com/f/1.ndjson?"));
        let kickoff = "https://ehr/fhir/Group/1/$export?_type=Patient&_since=2024-01-01T00:00:00Z";
        assert!(redact_url(kickoff).contains("_type=Patient"));
        assert!(!redact_url("https://user:pw@ehr/fhir").contains("pw"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, base, cap, 1.0), base);
        assert_eq!(backoff_delay(3, base, cap, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(20, base, cap, 1.0), cap);
        assert_eq!(backoff_delay(20, base, cap, 0.5), cap / 2);
    }

    #[test]
    fn jitter_is_a_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
