//! Reading stored events back for people: one [`EventSummary`] per event
//! (`fhirlake audit`).

use serde::Serialize;
use serde_json::Value;

use super::codes;

/// The parts of a stored AuditEvent an access review looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    pub seq: u64,
    /// `recorded`, with its offset.
    pub recorded: String,
    pub job: Option<String>,
    /// The `urn:fhirlake:audit-step` code (`kickoff`, `table-commit`, ...).
    pub step: Option<String>,
    /// `0` success, `4` warnings, `8` failure.
    pub outcome: Option<String>,
    /// The requesting agent's identifier (client id, OS user), if known.
    pub principal: Option<String>,
    /// The policy in force (`none` or its SHA-256).
    pub policy: Option<String>,
    /// The event as stored.
    pub event: Value,
}

impl EventSummary {
    pub fn of(seq: u64, event: Value) -> Self {
        let entity = |system: &str| {
            event["entity"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| {
                    let id = &e["what"]["identifier"];
                    (id["system"] == system).then(|| id["value"].as_str().map(str::to_owned))?
                })
        };
        let step = event["subtype"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|c| {
                (c["system"] == codes::STEP_SYSTEM)
                    .then(|| c["code"].as_str().map(str::to_owned))?
            });
        let principal = event["agent"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| {
                (a["requestor"] == true)
                    .then(|| a["who"]["identifier"]["value"].as_str().map(str::to_owned))?
            });
        Self {
            seq,
            recorded: event["recorded"].as_str().unwrap_or_default().to_owned(),
            job: entity(codes::JOB_ID),
            step,
            outcome: event["outcome"].as_str().map(str::to_owned),
            principal,
            policy: entity(codes::POLICY),
            event,
        }
    }
}
