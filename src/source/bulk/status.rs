//! What a status-poll response means: a pure function from the response to
//! the next action (wait N s / done / retry / fail), so the HTTP loop around
//! it is a few lines and every server behaviour is a unit test.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::manifest::Manifest;
use crate::http::parse_retry_after;

/// The parts of a status response the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct StatusResponse<'a> {
    pub status: u16,
    pub retry_after: Option<&'a str>,
    pub x_progress: Option<&'a str>,
    pub body: &'a [u8],
}

/// How long to wait when the server does not say, and at most.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub default_wait: Duration,
    pub max_wait: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            default_wait: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PollDecision {
    /// Still running: poll again after `after`. A server honouring
    /// `allowPartialManifests` may already offer some files.
    Wait {
        after: Duration,
        progress: Option<String>,
        partial: Option<Manifest>,
    },
    Complete(Manifest),
    /// Transient trouble (429, 5xx, a transient OperationOutcome): retry,
    /// after the server's Retry-After if it sent one, else a jittered backoff.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The export failed; `diagnostics` is the server's explanation.
    Failed {
        status: u16,
        diagnostics: String,
    },
}

/// OperationOutcome issue codes that describe a passing condition.
const TRANSIENT_CODES: &[&str] = &[
    "transient",
    "lock-error",
    "no-store",
    "timeout",
    "throttled",
    "incomplete",
];

/// (all issues transient?, diagnostics text) of an OperationOutcome body.
pub(crate) fn outcome(body: &[u8]) -> Option<(bool, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if value.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
        return None;
    }
    let issues = value.get("issue")?.as_array()?;
    let transient = !issues.is_empty()
        && issues.iter().all(|i| {
            i.get("code")
                .and_then(Value::as_str)
                .is_some_and(|c| TRANSIENT_CODES.contains(&c))
        });
    let text: Vec<String> = issues
        .iter()
        .filter_map(|i| {
            i.get("diagnostics")
                .or_else(|| i.pointer("/details/text"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    i.get("code")
                        .and_then(Value::as_str)
                        .map(|c| format!("issue code {c}"))
                })
        })
        .collect();
    Some((transient, text.join("; ")))
}

pub fn decide(
    response: &StatusResponse<'_>,
    now: DateTime<Utc>,
    policy: &PollPolicy,
) -> PollDecision {
    let server_wait = response
        .retry_after
        .and_then(|v| parse_retry_after(v, now))
        .map(|d| d.min(policy.max_wait));
    let body_text =
        || String::from_utf8_lossy(&response.body[..response.body.len().min(500)]).into_owned();
    match response.status {
        200 => match Manifest::parse(response.body) {
            Ok(manifest) => PollDecision::Complete(manifest),
            Err(e) => PollDecision::Failed {
                status: 200,
                diagnostics: e.to_string(),
            },
        },
        202 => PollDecision::Wait {
            after: server_wait.unwrap_or(policy.default_wait),
            progress: response.x_progress.map(str::to_owned),
            // A 202 with a manifest body is a partial manifest (allowPartialManifests).
            partial: Manifest::parse(response.body).ok(),
        },
        429 => PollDecision::Retry {
            after: server_wait,
            reason: "429 Too Many Requests".into(),
        },
        // An OperationOutcome decides by its issue codes; without one, 5xx is
        // presumed passing and anything else final.
        status => match outcome(response.body) {
            Some((true, diagnostics)) => PollDecision::Retry {
                after: server_wait,
                reason: diagnostics,
            },
            Some((false, diagnostics)) => PollDecision::Failed {
                status,
                diagnostics,
            },
            None if status >= 500 => PollDecision::Retry {
                after: server_wait,
                reason: format!("HTTP {status}: {}", body_text()),
            },
            None => PollDecision::Failed {
                status,
                diagnostics: format!("HTTP {status}: {}", body_text()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2024-01-01T00:00:00Z".parse().unwrap()
    }

    fn decide_on(status: u16, retry_after: Option<&str>, body: &str) -> PollDecision {
        let response = StatusResponse {
            status,
            retry_after,
            x_progress: Some("50% complete"),
            body: body.as_bytes(),
        };
        decide(&response, now(), &PollPolicy::default())
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_and_is_capped() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 00:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 31 Dec 2023 00:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(
            decide_on(202, Some("100000"), ""),
            PollDecision::Wait {
                after: Duration::from_secs(300),
                progress: Some("50% complete".into()),
                partial: None
            }
        );
    }

    #[test]
    fn in_progress_complete_and_partial() {
        assert!(
            matches!(decide_on(202, None, ""), PollDecision::Wait { after, .. } if after == Duration::from_secs(10))
        );
        let manifest = r#"{"transactionTime":"2024-01-01T00:00:00Z","request":"r","requiresAccessToken":true,"output":[{"type":"Patient","url":"u"}]}"#;
        assert!(
            matches!(decide_on(200, None, manifest), PollDecision::Complete(m) if m.output.len() == 1)
        );
        assert!(matches!(
            decide_on(202, Some("5"), manifest),
            PollDecision::Wait {
                partial: Some(_),
                ..
            }
        ));
        assert!(matches!(
            decide_on(200, None, "not json"),
            PollDecision::Failed { status: 200, .. }
        ));
    }

    #[test]
    fn transient_failures_retry_and_fatal_ones_fail_with_diagnostics() {
        assert_eq!(
            decide_on(429, Some("7"), ""),
            PollDecision::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "429 Too Many Requests".into()
            }
        );
        assert!(matches!(
            decide_on(503, None, "busy"),
            PollDecision::Retry { after: None, .. }
        ));
        let transient = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"database busy"}]}"#;
        assert_eq!(
            decide_on(500, None, transient),
            PollDecision::Retry {
                after: None,
                reason: "database busy".into()
            }
        );
        let fatal = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"processing","diagnostics":"export too large"}]}"#;
        assert_eq!(
            decide_on(500, None, fatal),
            PollDecision::Failed {
                status: 500,
                diagnostics: "export too large".into()
            }
        );
        assert_eq!(
            decide_on(400, None, fatal),
            PollDecision::Failed {
                status: 400,
                diagnostics: "export too large".into()
            }
        );
        assert!(matches!(
            decide_on(404, None, "gone"),
            PollDecision::Failed { status: 404, .. }
        ));
    }
}
