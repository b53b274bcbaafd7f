//! The HTTP client every FHIR server conversation shares (Bulk Data, REST
//! sync, terminology servers), and the only place a request is retried.
//!
//! [`HttpClient::retrying`] is the one loop: before each attempt it asks the
//! host's circuit breaker ([`breaker`]); the caller's attempt says done,
//! retry (with the server's `Retry-After`, else jittered exponential backoff),
//! or unauthorized (a fresh token is fetched once, then it goes again).
//! [`HttpClient::send`] and [`HttpClient::fetch`] are that loop with the
//! standard reading of a response: 429, 5xx and network errors are retried,
//! and `fetch` also retries a body cut mid-way.

mod breaker;
mod pace;
mod redact;
mod retry;

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::json;
use url::Url;

pub use breaker::{BreakerPolicy, Breakers, Clock, Refused, SystemClock};
pub use pace::Pace;
pub use redact::redact_url;
pub use retry::{RetryPolicy, backoff_delay, is_transient, jitter, parse_retry_after};

use crate::auth::{AuthError, TokenSource};
use crate::ledger::{Event, EventLog};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "{what} {url}: {reason} (after {attempts} attempt(s) in {:.1} s); check the server is reachable and healthy, then re-run: the job resumes where it stopped",
        elapsed.as_secs_f64()
    )]
    Gave {
        what: String,
        url: String,
        reason: String,
        attempts: u32,
        elapsed: Duration,
    },
    #[error(
        "{what} {url}: the circuit breaker for {host} is open after {failures} consecutive failures (network errors or 5xx); not calling it again for {:.0} s. Check the server, then re-run: committed work is kept and the next run resumes",
        retry_in.as_secs_f64()
    )]
    CircuitOpen {
        what: String,
        url: String,
        host: String,
        failures: u32,
        retry_in: Duration,
    },
}

/// What one attempt of a request came to.
pub enum Attempt<T> {
    Done(T),
    /// Worth another try: after `retry_after` (the server's header) or a
    /// backoff. `host_failed` says the host looks down (network error, 5xx),
    /// which counts toward its breaker; a 429 does not (the server is up).
    Retry {
        reason: String,
        retry_after: Option<String>,
        host_failed: bool,
    },
    /// The server refused the token: fetch a fresh one once and go again;
    /// if that is not possible, this is the answer.
    Unauthorized(T),
}

/// Which event names a retry in the job's log (one name per kind of call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    Request,
    StatusPoll,
    Download,
}

/// One retry of a request, as the job's event log records it.
pub struct Retried<'a> {
    pub kind: RetryKind,
    pub what: &'a str,
    pub url: String,
    pub reason: &'a str,
    pub attempt: u32,
    pub wait: Duration,
}

impl Event for Retried<'_> {
    fn name(&self) -> &'static str {
        match self.kind {
            RetryKind::Request => "retry",
            RetryKind::StatusPoll => "status_retry",
            RetryKind::Download => "download_retry",
        }
    }

    fn detail(&self) -> serde_json::Value {
        json!({
            "what": self.what,
            "url": self.url,
            "reason": self.reason,
            "attempt": self.attempt,
            "wait_ms": self.wait.as_millis() as u64,
        })
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "retrying ({}) attempt {}",
            self.reason, self.attempt
        ))
    }
}

/// The server rejected the token; a fresh one was fetched.
pub struct TokenRefreshed<'a> {
    pub what: &'a str,
}

impl Event for TokenRefreshed<'_> {
    fn name(&self) -> &'static str {
        "token_refresh"
    }

    fn detail(&self) -> serde_json::Value {
        json!({"reason": format!("{}: 401", self.what)})
    }

    fn describe(&self) -> Option<String> {
        Some("access token rejected; fetching a new one".into())
    }
}

/// A host's breaker opened.
pub struct CircuitOpened<'a> {
    pub host: &'a str,
    pub cool_down: Duration,
}

impl Event for CircuitOpened<'_> {
    fn name(&self) -> &'static str {
        "circuit_open"
    }

    fn detail(&self) -> serde_json::Value {
        json!({"host": self.host, "cool_down_s": self.cool_down.as_secs()})
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "{} keeps failing: circuit breaker open for {} s",
            self.host,
            self.cool_down.as_secs()
        ))
    }
}

/// One request [`HttpClient::send`] makes: what it is for (named in events
/// and errors), its method and URL, and whether the token goes with it.
pub struct Call<'a> {
    pub what: &'a str,
    pub method: Method,
    pub url: &'a Url,
    pub with_token: bool,
}

impl<'a> Call<'a> {
    /// A call with the bearer token (when credentials are configured).
    pub fn new(what: &'a str, method: Method, url: &'a Url) -> Self {
        Self {
            what,
            method,
            url,
            with_token: true,
        }
    }
}

/// A response read whole.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A response header as text (`None`: absent or not visible ASCII).
pub fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// HTTP client, credentials, retry policy and breakers shared by every
/// request of a job.
pub struct HttpClient {
    pub client: reqwest::Client,
    pub tokens: TokenSource,
    pub retry: RetryPolicy,
    pub breakers: Breakers,
}

fn retry_after(headers: &HeaderMap) -> Option<String> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl HttpClient {
    pub fn new(client: reqwest::Client, tokens: TokenSource, retry: RetryPolicy) -> Self {
        Self {
            client,
            tokens,
            retry,
            breakers: Breakers::new(BreakerPolicy::default()),
        }
    }

    pub fn with_breakers(mut self, breakers: Breakers) -> Self {
        self.breakers = breakers;
        self
    }

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

    /// The one retry loop: runs `attempt` (given the attempt number) until it
    /// is done, the retries run out, or the host's breaker opens.
    pub async fn retrying<T>(
        &self,
        what: &str,
        url: &Url,
        kind: RetryKind,
        events: &EventLog,
        mut attempt: impl AsyncFnMut(u32) -> Result<Attempt<T>, HttpError>,
    ) -> Result<T, HttpError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        let mut refreshed = false;
        let mut tries = 0;
        loop {
            tries += 1;
            if let Err(refused) = self.breakers.admit(&host) {
                return Err(HttpError::CircuitOpen {
                    what: what.to_owned(),
                    url: redact_url(url.as_str()),
                    host,
                    failures: refused.failures,
                    retry_in: refused.retry_in,
                });
            }
            let (reason, retry_after) = match attempt(tries).await? {
                Attempt::Done(value) => {
                    self.breakers.succeeded(&host);
                    return Ok(value);
                }
                Attempt::Unauthorized(value) => {
                    self.breakers.succeeded(&host);
                    if refreshed || !self.tokens.has_credentials() {
                        return Ok(value);
                    }
                    refreshed = true;
                    self.tokens.invalidate().await;
                    TokenRefreshed { what }.emit(events);
                    tries -= 1;
                    continue;
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                    host_failed,
                } => {
                    if host_failed && self.breakers.failed(&host) {
                        let cool_down = self.breakers.policy().cool_down;
                        CircuitOpened {
                            host: &host,
                            cool_down,
                        }
                        .emit(events);
                    } else if !host_failed {
                        self.breakers.succeeded(&host);
                    }
                    (reason, retry_after)
                }
            };
            if tries >= self.retry.attempts {
                return Err(HttpError::Gave {
                    what: what.to_owned(),
                    url: redact_url(url.as_str()),
                    reason,
                    attempts: tries,
                    elapsed: started.elapsed(),
                });
            }
            let wait = self.retry.wait(tries, retry_after.as_deref());
            Retried {
                kind,
                what,
                url: redact_url(url.as_str()),
                reason: &reason,
                attempt: tries,
                wait,
            }
            .emit(events);
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends a request, retrying transient failures. Returns the first
    /// non-transient response (success or not) for the caller to judge.
    pub async fn send(
        &self,
        call: Call<'_>,
        events: &EventLog,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let Call {
            what,
            method,
            url,
            with_token,
        } = call;
        self.retrying(what, url, RetryKind::Request, events, async |_| {
            let request = build(self.client.request(method.clone(), url.clone()));
            let request = self.authorize(request, with_token).await?;
            Ok(match request.send().await {
                Ok(response) => classify(response, with_token),
                Err(e) => Attempt::Retry {
                    reason: e.without_url().to_string(),
                    retry_after: None,
                    host_failed: true,
                },
            })
        })
        .await
    }

    /// Sends a GET and reads its body whole; 429, 5xx and a body cut
    /// mid-way are retried like a network error.
    pub async fn fetch(
        &self,
        kind: RetryKind,
        what: &str,
        url: &Url,
        events: &EventLog,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Fetched, HttpError> {
        self.retrying(what, url, kind, events, async |_| {
            let request = build(self.client.get(url.clone()));
            let request = self.authorize(request, true).await?;
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    return Ok(Attempt::Retry {
                        reason: e.without_url().to_string(),
                        retry_after: None,
                        host_failed: true,
                    });
                }
            };
            let (status, headers) = (response.status(), response.headers().clone());
            Ok(match response.bytes().await {
                Err(e) => Attempt::Retry {
                    reason: format!("body cut: {}", e.without_url()),
                    retry_after: None,
                    host_failed: true,
                },
                Ok(body) => {
                    let fetched = Fetched {
                        status,
                        headers,
                        body,
                    };
                    if status == StatusCode::UNAUTHORIZED {
                        Attempt::Unauthorized(fetched)
                    } else if is_transient(status) {
                        Attempt::Retry {
                            reason: format!("HTTP {status}"),
                            retry_after: retry_after(&fetched.headers),
                            host_failed: status != StatusCode::TOO_MANY_REQUESTS,
                        }
                    } else {
                        Attempt::Done(fetched)
                    }
                }
            })
        })
        .await
    }
}

/// The standard reading of a response: 401 asks for a fresh token, 429 and
/// 5xx are retried (a 429 does not count against the host), the rest is done.
fn classify(response: Response, with_token: bool) -> Attempt<Response> {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED && with_token {
        return Attempt::Unauthorized(response);
    }
    if is_transient(status) {
        return Attempt::Retry {
            reason: format!("HTTP {status}"),
            retry_after: retry_after(response.headers()),
            host_failed: status != StatusCode::TOO_MANY_REQUESTS,
        };
    }
    Attempt::Done(response)
}
