//! A job step → a FHIR R4 AuditEvent.
//!
//! In: the job's [`JobContext`], one [`Step`] and the time it was recorded.
//! Out: an [`AuditEvent`], JSON ready for the chain, which adds its sequence
//! number and the previous event's hash. Pure: no I/O, no clock (the id is
//! a random UUID).
//!
//! Steps that move data into the lake are DICOM `110107 Import` events with
//! the step as a `urn:fhirlake:audit-step` subtype (plus the FHIR REST
//! interaction for Bulk kick-offs and sync pages); maintenance is `110100
//! Application Activity`, a policy change `110113 Security Alert` /
//! `110129 Security Configuration`. Every event names the job, the policy
//! in force and the manifest as entities; counts and digests are entity
//! details (R4 details are strings).

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::codes::{self, Code};
use super::context::{JobContext, detail, resource_entity, table_entity};
use super::step::{
    CommitOperation, Deletions, ExportLevel, Finish, Hl7Batch, InputFile, JobOutcome, KickOff,
    Maintenance, MaintenanceOp, Operation, PolicyChange, Quarantine, Step, SyncPage, TableCommit,
};
use super::values::{ResourceType, Sha256};

/// One AuditEvent, as built (not yet in the chain).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AuditEvent(Map<String, Value>);

impl AuditEvent {
    /// The event's JSON members.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The event as a JSON value (without the chain link).
    pub fn into_json(self) -> Value {
        Value::Object(self.0)
    }

    /// The event as the chain stores it: with its sequence number and the
    /// previous event's hash (none for the first) in the
    /// `urn:fhirlake:audit-chain` extension.
    pub(crate) fn linked(&self, seq: u64, previous: Option<Sha256>) -> Value {
        let mut link = vec![json!({"url": "sequence", "valueString": seq.to_string()})];
        if let Some(previous) = previous {
            link.push(json!({"url": "previous", "valueString": previous.to_string()}));
        }
        let mut event = self.0.clone();
        event.insert(
            "extension".into(),
            json!([{"url": codes::EXT_CHAIN, "extension": link}]),
        );
        Value::Object(event)
    }
}

/// FHIR `instant`/`dateTime` with its offset, to the millisecond.
pub(crate) fn instant(at: &DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// What a step adds to the common frame.
struct Parts {
    kind: Code,
    subtypes: Vec<Code>,
    action: &'static str,
    started: Option<DateTime<FixedOffset>>,
    outcome: (&'static str, Option<String>),
    manifest_sha256: Option<Sha256>,
    job_details: Vec<Value>,
    entities: Vec<Value>,
}

impl Parts {
    /// An Import (the kind most steps are), with no period and outcome 0.
    fn new(action: &'static str, entities: Vec<Value>) -> Self {
        Self {
            kind: codes::IMPORT,
            subtypes: Vec::new(),
            action,
            started: None,
            outcome: ("0", None),
            manifest_sha256: None,
            job_details: Vec::new(),
            entities,
        }
    }
}

impl JobContext {
    /// The AuditEvent recording `step`, at `recorded`.
    pub fn event(&self, step: &Step, recorded: DateTime<FixedOffset>) -> AuditEvent {
        let parts = match step {
            Step::KickOff(s) => kick_off(s),
            Step::InputFile(s) => input_file(s),
            Step::SyncPage(s) => sync_page(s),
            Step::Hl7Batch(s) => hl7_batch(s),
            Step::TableCommit(s) => table_commit(s),
            Step::Deletions(s) => deletions(s),
            Step::Quarantine(s) => quarantine(s),
            Step::Finish(s) => finish(s, self),
            Step::Maintenance(s) => maintenance(s),
            Step::PolicyChange(s) => policy_change(s, self),
        };
        let kind = step.kind();
        let mut subtype = vec![json!({
            "system": codes::STEP_SYSTEM,
            "code": kind.code(),
            "display": kind.display(),
        })];
        subtype.extend(parts.subtypes.iter().map(Code::coding));

        let mut entities = vec![
            self.job_entity(parts.job_details),
            self.policy_entity(self.policy, "in force"),
        ];
        entities.extend(self.manifest_entity(parts.manifest_sha256));
        entities.extend(parts.entities);

        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": uuid::Uuid::new_v4().simple().to_string(),
            "type": parts.kind.coding(),
            "subtype": subtype,
            "action": parts.action,
            "recorded": instant(&recorded),
            "outcome": parts.outcome.0,
            "agent": self.audit_agents(),
            "source": {
                "observer": self.software_reference(),
                "type": [codes::APPLICATION_SERVER.coding()],
            },
            "entity": entities,
        });
        if let Some(started) = parts.started {
            event["period"] = json!({"start": instant(&started), "end": instant(&recorded)});
        }
        if let Some(description) = parts.outcome.1 {
            event["outcomeDesc"] = json!(description);
        }
        if let Some(lake) = &self.lake {
            event["source"]["site"] = json!(lake.as_str());
        }
        let Value::Object(event) = event else {
            unreachable!("built as an object")
        };
        AuditEvent(event)
    }
}

fn counts<'a, T: AsRef<str> + 'a>(
    name: &str,
    items: impl IntoIterator<Item = &'a (T, u64)>,
) -> Vec<Value> {
    items
        .into_iter()
        .map(|(what, n)| detail(&format!("{name} {}", what.as_ref()), n))
        .collect()
}

fn resources(items: &[(ResourceType, u64)], what: &str) -> Vec<Value> {
    items
        .iter()
        .map(|(t, n)| resource_entity(t.as_str(), vec![detail(what, n)]))
        .collect()
}

fn digest_entity(kind: &str, sha256: &Sha256) -> Value {
    json!({
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_DOMAIN_RESOURCE.coding(),
        "detail": [detail("kind", kind), detail("sha256", sha256)],
    })
}

fn kick_off(step: &KickOff) -> Parts {
    let mut details = Vec::new();
    let (name, rest) = match &step.operation {
        Operation::Load => ("load", None),
        Operation::BulkExport(level) => {
            details.push(detail(
                "level",
                match level {
                    ExportLevel::System => "system",
                    ExportLevel::Patient => "patient",
                    ExportLevel::Group(_) => "group",
                },
            ));
            if let ExportLevel::Group(id) = level {
                details.push(detail("group", id));
            }
            ("$export", Some(codes::REST_OPERATION))
        }
        Operation::Sync => ("sync", Some(codes::REST_SEARCH_TYPE)),
        Operation::Hl7v2 => ("hl7v2", None),
        Operation::PolicyApply => ("policy-apply", None),
    };
    if !step.resource_types.is_empty() {
        let types: Vec<&str> = step.resource_types.iter().map(|t| t.as_str()).collect();
        details.push(detail("_type", types.join(",")));
    }
    if let Some(since) = &step.since {
        details.push(detail("_since", instant(since)));
    }
    if let Some(until) = &step.until {
        details.push(detail("_until", instant(until)));
    }
    if let Some(inputs) = step.inputs {
        details.push(detail("inputs", inputs));
    }
    let mut request = json!({
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_QUERY.coding(),
        "name": name,
    });
    if !details.is_empty() {
        request["detail"] = Value::Array(details);
    }
    let mut parts = Parts::new("E", vec![request]);
    parts.subtypes.extend(rest);
    parts
}

fn input_file(step: &InputFile) -> Parts {
    let mut details = vec![
        detail("kind", step.kind.code()),
        detail("sha256", step.sha256),
        detail("bytes", step.bytes),
        detail("lines", step.lines),
    ];
    if let Some(stored) = &step.stored_as {
        details.push(detail("storedAs", stored));
    }
    let mut entities = vec![json!({
        "what": {"identifier": {"system": codes::FILE, "value": step.source.as_str()}},
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_DOMAIN_RESOURCE.coding(),
        "lifecycle": codes::LIFE_IMPORT.coding(),
        "detail": details,
    })];
    if let Some(t) = &step.resource_type {
        entities.push(resource_entity(
            t.as_str(),
            vec![detail("lines", step.lines)],
        ));
    }
    let mut parts = Parts::new("C", entities);
    parts.started = step.started;
    parts
}

fn sync_page(step: &SyncPage) -> Parts {
    let mut details = vec![
        detail("page", step.page),
        detail("sha256", step.sha256),
        detail("bytes", step.bytes),
    ];
    if let Some(since) = &step.window_since {
        details.push(detail("windowSince", instant(since)));
    }
    if let Some(until) = &step.window_until {
        details.push(detail("windowUntil", instant(until)));
    }
    let mut entities = vec![json!({
        "what": {"identifier": {"system": codes::SYNC_PAGE, "value": step.url.as_str()}},
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_QUERY.coding(),
        "lifecycle": codes::LIFE_IMPORT.coding(),
        "detail": details,
    })];
    entities.extend(resources(&step.resources, "resources"));
    let mut parts = Parts::new("C", entities);
    parts.subtypes.push(codes::REST_SEARCH_TYPE);
    parts
}

fn hl7_batch(step: &Hl7Batch) -> Parts {
    let mut details = vec![
        detail("sha256", step.sha256),
        detail("bytes", step.bytes),
        detail("messages", step.messages),
        detail("rejected", step.rejected),
    ];
    details.extend(counts("messages", &step.message_types));
    let mut entities = vec![json!({
        "what": {"identifier": {"system": codes::HL7V2_BATCH, "value": step.feed.as_str()}},
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_DOMAIN_RESOURCE.coding(),
        "lifecycle": codes::LIFE_IMPORT.coding(),
        "detail": details,
    })];
    entities.extend(resources(&step.resources, "resources"));
    Parts::new("C", entities)
}

fn table_commit(step: &TableCommit) -> Parts {
    let rows = step.rows;
    let (action, lifecycle) = match step.operation {
        CommitOperation::Delete | CommitOperation::Tombstone => ("D", codes::LIFE_LOGICAL_DELETION),
        _ if rows.updated > 0 || rows.deleted > 0 => ("U", codes::LIFE_AMENDMENT),
        _ => ("C", codes::LIFE_IMPORT),
    };
    let mut entities = vec![table_entity(
        step.table.as_str(),
        Some(lifecycle),
        vec![
            detail("deltaVersion", step.version),
            detail("operation", step.operation.code()),
            detail("rowsInserted", rows.inserted),
            detail("rowsUpdated", rows.updated),
            detail("rowsDeleted", rows.deleted),
        ],
    )];
    if let Some(t) = &step.resource_type {
        let total = rows.inserted + rows.updated + rows.deleted;
        entities.push(resource_entity(t.as_str(), vec![detail("rows", total)]));
    }
    Parts::new(action, entities)
}

fn deletions(step: &Deletions) -> Parts {
    let mut details = vec![
        detail("requested", step.requested),
        detail("rowsDeleted", step.deleted),
        detail("tombstones", step.tombstones),
    ];
    if let Some(version) = step.version {
        details.insert(0, detail("deltaVersion", version));
    }
    let mut entities = vec![
        table_entity(
            step.table.as_str(),
            Some(codes::LIFE_LOGICAL_DELETION),
            details,
        ),
        resource_entity(
            step.resource_type.as_str(),
            vec![detail("deleted", step.deleted + step.tombstones)],
        ),
    ];
    entities.extend(step.sources.iter().map(|s| digest_entity("deleted", s)));
    Parts::new("D", entities)
}

fn quarantine(step: &Quarantine) -> Parts {
    let mut details = vec![
        detail("deltaVersion", step.version),
        detail("rowsInserted", step.rows),
    ];
    details.extend(
        step.reasons
            .iter()
            .map(|(code, n)| detail(&format!("reason {}", code.as_str()), n)),
    );
    let mut entities = vec![table_entity(
        "_quarantine",
        Some(codes::LIFE_IMPORT),
        details,
    )];
    entities.extend(step.sources.iter().map(|s| digest_entity("source", s)));
    Parts::new("C", entities)
}

fn finish(step: &Finish, ctx: &JobContext) -> Parts {
    let totals = step.totals;
    let job_details = vec![
        detail("lines", totals.lines),
        detail("inserted", totals.inserted),
        detail("updated", totals.updated),
        detail("unchanged", totals.unchanged),
        detail("quarantined", totals.quarantined),
        detail("filtered", totals.filtered),
        detail("deleted", totals.deleted),
    ];
    let outcome = match &step.outcome {
        JobOutcome::Succeeded => ("0", None),
        JobOutcome::Warnings(w) => (
            "4",
            Some(format!(
                "finished with warnings: {} lines quarantined, {} count mismatches, {} server error files",
                w.quarantined, w.count_mismatches, w.server_error_files
            )),
        ),
        JobOutcome::Failed(failure) => {
            let mut text = String::from("failed");
            if let Some(step) = failure.step {
                text.push_str(&format!(" at {}", step.display()));
            }
            text.push_str(&format!(": {}", failure.kind.describe()));
            if let Some(object) = &failure.object {
                text.push_str(&format!(" ({object})"));
            }
            ("8", Some(text))
        }
        JobOutcome::Cancelled => ("4", Some("cancelled".to_owned())),
    };
    let entities = step
        .tables
        .iter()
        .map(|t| {
            table_entity(
                t.table.as_str(),
                None,
                vec![detail("deltaVersion", t.version)],
            )
        })
        .collect();
    let mut parts = Parts::new("E", entities);
    if !ctx.kind.imports() {
        parts.kind = codes::APPLICATION_ACTIVITY;
    }
    parts.started = Some(step.started);
    parts.outcome = outcome;
    parts.manifest_sha256 = step.manifest_sha256;
    parts.job_details = job_details;
    parts
}

fn maintenance(step: &Maintenance) -> Parts {
    let (action, lifecycle, mut details) = match step.operation {
        MaintenanceOp::Optimize {
            files_removed,
            files_added,
            rows_purged,
        } => (
            "U",
            codes::LIFE_AMENDMENT,
            vec![
                detail("filesRemoved", files_removed),
                detail("filesAdded", files_added),
                detail("rowsPurged", rows_purged),
            ],
        ),
        MaintenanceOp::Vacuum {
            files_deleted,
            retention_hours,
        } => (
            "D",
            codes::LIFE_ERASURE,
            vec![
                detail("filesDeleted", files_deleted),
                detail("retentionHours", retention_hours),
            ],
        ),
    };
    if let Some(version) = step.version {
        details.insert(0, detail("deltaVersion", version));
    }
    let mut parts = Parts::new(
        action,
        vec![table_entity(step.table.as_str(), Some(lifecycle), details)],
    );
    parts.kind = codes::APPLICATION_ACTIVITY;
    parts
}

fn policy_change(step: &PolicyChange, ctx: &JobContext) -> Parts {
    let mut previous = ctx.policy_entity(step.previous, "previous");
    previous["lifecycle"] = codes::LIFE_AMENDMENT.coding();
    if let Some(source) = &step.source {
        previous["detail"]
            .as_array_mut()
            .expect("policy entity has details")
            .push(detail("source", source));
    }
    let mut parts = Parts::new("U", vec![previous]);
    parts.kind = codes::SECURITY_ALERT;
    parts.subtypes.push(codes::SECURITY_CONFIGURATION);
    parts
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
