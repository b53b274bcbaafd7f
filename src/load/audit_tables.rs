//! The audit trail as Delta tables analysts can query: `_audit`, one row per
//! AuditEvent a job appended to the chain, and `_provenance`, one FHIR
//! Provenance per job (targets: the table versions it committed; agents:
//! the principal and fhirlake; entities: the source and the manifest with
//! its SHA-256), and for an HL7 v2 job one more per converted message
//! (targets: the resources it became; entity: the message's SHA-256).
//!
//! Both are copies written after the job's manifest: the chain in
//! `_fhirlake/audit` stays the record `verify` checks. A job killed between
//! its manifest and these appends leaves its events out of `_audit` (they
//! are in the chain). The Provenance table is `_provenance`, not
//! `provenance`: that is the type table of Provenance resources a FHIR
//! server exports.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use super::{Context, LoadError};
use crate::audit::{
    EventSummary, MessageEntity, ResourceId, ResourceType, Sha256, TableName, Target,
};
use crate::lake::TableSink;
use crate::ledger::JobManifest;
use crate::ledger::{MessageRecord, MessageStatus};

pub const AUDIT_TABLE: &str = "_audit";
pub const PROVENANCE_TABLE: &str = "_provenance";

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn audit_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("recorded", utc_micros(), true),
        Field::new("job_id", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, true),
        Field::new("outcome", DataType::Utf8, true),
        Field::new("principal", DataType::Utf8, true),
        Field::new("policy", DataType::Utf8, true),
        // The AuditEvent exactly as the chain stores it (canonical JSON).
        Field::new("event", DataType::Utf8, false),
    ]))
}

pub fn provenance_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, false),
        Field::new("recorded", utc_micros(), false),
        Field::new("manifest", DataType::Utf8, false),
        Field::new("manifest_sha256", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
    ]))
}

/// Appends the job's events to `_audit` and its Provenance to
/// `_provenance` (after the manifest, which therefore does not name them).
pub(super) async fn append(
    context: &Context,
    manifest: &JobManifest,
    manifest_sha256: Sha256,
    started_at: DateTime<Utc>,
) -> Result<(), LoadError> {
    let events = context.audit.stored();
    if !events.is_empty() {
        let batch = audit_rows(&context.job_id, &events).map_err(arrow(AUDIT_TABLE))?;
        append_batch(context, AUDIT_TABLE, &audit_schema(), batch).await?;
    }
    let targets: Vec<Target> = manifest
        .tables
        .iter()
        .filter_map(|(name, record)| {
            let version = record.commits.iter().map(|c| c.version).max()?;
            Some(Target::TableVersion {
                table: TableName::new(name).ok()?,
                version,
            })
        })
        .collect();
    let now = Utc::now();
    let (started, recorded) = (started_at.fixed_offset(), now.fixed_offset());
    let audit = context.audit.context();
    let mut columns = ProvenanceColumns::default();
    if let Ok(provenance) = audit.provenance(&targets, started, recorded, manifest_sha256) {
        let json = provenance.into_json();
        columns.push(&context.job_id, now, manifest, &manifest_sha256, &json);
    }
    let messages = manifest.hl7v2.iter().flat_map(|h| &h.log);
    for message in messages.filter(|m| m.status == MessageStatus::Converted) {
        let Some((entity, targets)) = message_targets(message) else {
            continue;
        };
        if let Ok(provenance) =
            audit.message_provenance(&entity, &targets, started, recorded, manifest_sha256)
        {
            let json = provenance.into_json();
            columns.push(&context.job_id, now, manifest, &manifest_sha256, &json);
        }
    }
    if !columns.is_empty() {
        let batch = columns.finish().map_err(arrow(PROVENANCE_TABLE))?;
        append_batch(context, PROVENANCE_TABLE, &provenance_schema(), batch).await?;
    }
    Ok(())
}

/// A converted message as a Provenance entity, and the resources it became
/// (`None` when it became none, or its record does not parse).
fn message_targets(message: &MessageRecord) -> Option<(MessageEntity, Vec<Target>)> {
    let targets: Vec<Target> = message
        .resources
        .iter()
        .filter_map(|reference| {
            let (resource_type, id) = reference.split_once('/')?;
            Some(Target::Resource {
                resource_type: ResourceType::new(resource_type).ok()?,
                id: ResourceId::new(id).ok()?,
                version_id: None,
            })
        })
        .collect();
    if targets.is_empty() {
        return None;
    }
    let entity = MessageEntity {
        sha256: Sha256::from_hex(&message.sha256).ok()?,
        message_type: message.message_type.clone(),
        control_id: message.control_id.clone(),
        sender: message.sender.clone(),
        origin: format!("{}#{}", message.source, message.number),
    };
    Some((entity, targets))
}

fn arrow(table: &'static str) -> impl Fn(deltalake::arrow::error::ArrowError) -> LoadError {
    move |source| LoadError::Arrow {
        table: table.into(),
        source,
    }
}

async fn append_batch(
    context: &Context,
    table: &str,
    schema: &SchemaRef,
    batch: RecordBatch,
) -> Result<(), LoadError> {
    let mut sink = TableSink::open(&context.lake, table, schema)
        .await?
        .with_commit_info(context.audit.commit_info(&context.job_id));
    sink.write(batch).await?;
    sink.commit().await?;
    Ok(())
}

fn audit_rows(
    job_id: &str,
    events: &[(crate::audit::Head, Vec<u8>)],
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut seq = Int64Builder::new();
    let mut sha256 = StringBuilder::new();
    let mut recorded = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut job = StringBuilder::new();
    let mut step = StringBuilder::new();
    let mut outcome = StringBuilder::new();
    let mut principal = StringBuilder::new();
    let mut policy = StringBuilder::new();
    let mut event = StringBuilder::new();
    for (head, body) in events {
        let text = String::from_utf8_lossy(body);
        let json = serde_json::from_str(&text).unwrap_or_default();
        let summary = EventSummary::of(head.seq, json);
        seq.append_value(head.seq as i64);
        sha256.append_value(head.sha256.to_string());
        recorded.append_option(
            DateTime::parse_from_rfc3339(&summary.recorded)
                .ok()
                .map(|t| t.timestamp_micros()),
        );
        job.append_value(job_id);
        step.append_option(summary.step.as_deref());
        outcome.append_option(summary.outcome.as_deref());
        principal.append_option(summary.principal.as_deref());
        policy.append_option(summary.policy.as_deref());
        event.append_value(&text);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        Arc::new(sha256.finish()),
        Arc::new(recorded.finish()),
        Arc::new(job.finish()),
        Arc::new(step.finish()),
        Arc::new(outcome.finish()),
        Arc::new(principal.finish()),
        Arc::new(policy.finish()),
        Arc::new(event.finish()),
    ];
    RecordBatch::try_new(audit_schema(), columns)
}

#[derive(Default)]
struct ProvenanceColumns {
    id: StringBuilder,
    job_id: StringBuilder,
    recorded: TimestampMicrosecondBuilder,
    manifest: StringBuilder,
    manifest_sha256: StringBuilder,
    resource: StringBuilder,
}

impl ProvenanceColumns {
    fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    fn push(
        &mut self,
        job_id: &str,
        recorded: DateTime<Utc>,
        manifest: &JobManifest,
        sha256: &Sha256,
        resource: &serde_json::Value,
    ) {
        self.id
            .append_value(resource["id"].as_str().unwrap_or_default());
        self.job_id.append_value(job_id);
        self.recorded.append_value(recorded.timestamp_micros());
        self.manifest.append_value(format!(
            "{}/{}.json",
            crate::ledger::MANIFEST_DIR,
            manifest.job_id
        ));
        self.manifest_sha256.append_value(sha256.to_string());
        self.resource.append_value(resource.to_string());
    }

    fn finish(&mut self) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.job_id.finish()),
            Arc::new(self.recorded.finish().with_timezone("UTC")),
            Arc::new(self.manifest.finish()),
            Arc::new(self.manifest_sha256.finish()),
            Arc::new(self.resource.finish()),
        ];
        RecordBatch::try_new(provenance_schema(), columns)
    }
}
