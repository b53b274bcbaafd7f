//! Test inputs: a job context and one of every step, built the way the job
//! would build them, from inputs with secrets planted wherever a careless
//! caller could hand one over (a token response, pre-signed URLs, URL
//! passwords). [`SECRETS`] lists what must never come out.

use chrono::{DateTime, FixedOffset};
use serde_json::json;

use super::context::{JobContext, JobKind};
use super::event::AuditEvent;
use super::principal::{Grant, Principal};
use super::step::*;
use super::values::*;

pub const ACCESS_TOKEN_SIGNATURE: &str = "c2VjcmV0LXNpZ25hdHVyZS1vZi10aGUtdG9rZW4";
pub const SECRETS: &[&str] = &[
    ACCESS_TOKEN_SIGNATURE,
    "r3fr3sh-t0ken-SECRET",
    "id-t0ken-SECRET",
    "hunter2-PASSWORD",
    "X-Amz-Signature",
    "sig-SECRET-deadbeef",
    "AKIA-SECRET-KEY-ID",
    "continuation-SECRET",
    "BEGIN PRIVATE KEY",
];

pub fn at(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).expect("fixture time")
}

pub fn sha(text: &str) -> Sha256 {
    Sha256::of(text.as_bytes())
}

fn loc(text: &str) -> Location {
    Location::new(text).expect("fixture location")
}

/// A signed JWT access token whose signature is a planted secret.
pub fn access_token() -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.{ACCESS_TOKEN_SIGNATURE}",
        b64(json!({"alg": "RS384", "kid": "k1"})),
        b64(
            json!({"sub": "svc-fhirlake", "iss": "https://auth.example.org/realm", "scope": "system/*.rs"})
        )
    )
}

/// The principal of a SMART Backend Services export, from a token response
/// that carries secrets besides what the grant keeps.
pub fn oauth() -> Principal {
    let response = json!({
        "access_token": access_token(),
        "token_type": "bearer",
        "expires_in": 300,
        "scope": "system/Patient.rs system/Observation.rs",
        "refresh_token": "r3fr3sh-t0ken-SECRET",
        "id_token": "id-t0ken-SECRET",
        "key": "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    });
    Principal::OAuth(Grant::from_token_response(
        Identity::new("fhirlake-prod").unwrap(),
        Some(loc(
            "https://ehr.example.org/auth/token?client_secret=hunter2-PASSWORD",
        )),
        &response,
    ))
}

pub fn context(kind: JobKind) -> JobContext {
    JobContext::new(
        JobId::new("export-20261125T011500.000Z-1a2b3c4d").unwrap(),
        kind,
    )
    .with_principal(oauth())
    .with_policy(PolicyVersion::Sha256(sha("policy v3")))
    .with_manifest(loc(
        "_fhirlake/manifests/export-20261125T011500.000Z-1a2b3c4d.json",
    ))
    .with_source(loc("https://bulk:hunter2-PASSWORD@ehr.example.org/fhir"))
    .with_lake(loc("s3://lake/fhir?X-Amz-Signature=sig-SECRET-deadbeef"))
}

fn presigned(name: &str) -> Location {
    loc(&format!(
        "https://files.example.org/out/{name}?X-Amz-Credential=AKIA-SECRET-KEY-ID&X-Amz-Signature=sig-SECRET-deadbeef"
    ))
}

fn rt(name: &str) -> ResourceType {
    ResourceType::new(name).unwrap()
}

fn table(name: &str) -> TableName {
    TableName::new(name).unwrap()
}

/// One of every step (and of every outcome and maintenance operation).
pub fn every_step() -> Vec<Step> {
    let started = at("2026-11-25T01:15:00.000+01:00");
    let failed = |kind, step, object: Option<Location>| {
        Step::Finish(Finish {
            outcome: JobOutcome::Failed(Failure { kind, step, object }),
            started,
            manifest_sha256: None,
            tables: Vec::new(),
            totals: Totals::default(),
        })
    };
    vec![
        Step::KickOff(KickOff {
            operation: Operation::BulkExport(ExportLevel::Group(ResourceId::new("123").unwrap())),
            resource_types: vec![rt("Patient"), rt("Observation")],
            since: Some(at("2026-11-24T01:15:02.123Z")),
            until: None,
            inputs: None,
        }),
        Step::KickOff(KickOff {
            operation: Operation::Load,
            resource_types: Vec::new(),
            since: None,
            until: None,
            inputs: Some(3),
        }),
        Step::InputFile(InputFile {
            kind: FileKind::Output,
            resource_type: Some(rt("Patient")),
            source: presigned("Patient.000.ndjson"),
            stored_as: Some(loc("_raw/export-1/output/Patient.000.ndjson")),
            bytes: 12_345,
            lines: 10,
            sha256: sha("patient file"),
            started: Some(at("2026-11-25T01:16:00.000+01:00")),
        }),
        Step::InputFile(InputFile {
            kind: FileKind::Local,
            resource_type: None,
            source: loc("/data/bulk/mixed.ndjson.gz"),
            stored_as: None,
            bytes: 99,
            lines: 2,
            sha256: sha("mixed"),
            started: None,
        }),
        Step::SyncPage(SyncPage {
            page: 4,
            url: loc(
                "https://ehr.example.org/fhir/Observation?_since=x&_cursor=continuation-SECRET",
            ),
            window_since: Some(at("2026-11-24T00:00:00Z")),
            window_until: Some(at("2026-11-25T00:00:00Z")),
            resources: vec![(rt("Observation"), 50)],
            bytes: 80_000,
            sha256: sha("page 4"),
        }),
        Step::Hl7Batch(Hl7Batch {
            feed: loc("mllp://0.0.0.0:2575"),
            messages: 12,
            rejected: 1,
            message_types: vec![
                (MessageType::new("ADT^A01").unwrap(), 7),
                (MessageType::new("ORU^R01^ORU_R01").unwrap(), 5),
            ],
            resources: vec![(rt("Patient"), 7), (rt("Observation"), 20)],
            bytes: 9_000,
            sha256: sha("batch"),
        }),
        Step::TableCommit(TableCommit {
            table: table("patient"),
            resource_type: Some(rt("Patient")),
            version: 7,
            operation: CommitOperation::Upsert,
            rows: RowChanges {
                inserted: 8,
                updated: 2,
                deleted: 0,
            },
        }),
        Step::TableCommit(TableCommit {
            table: table("observation_category"),
            resource_type: None,
            version: 3,
            operation: CommitOperation::Append,
            rows: RowChanges {
                inserted: 40,
                ..RowChanges::default()
            },
        }),
        Step::Deletions(Deletions {
            table: table("patient"),
            resource_type: rt("Patient"),
            version: Some(8),
            requested: 3,
            deleted: 2,
            tombstones: 0,
            sources: vec![sha("deleted file")],
        }),
        Step::Quarantine(Quarantine {
            version: 12,
            rows: 4,
            reasons: vec![
                (Code::new("not_utf8").unwrap(), 1),
                (Code::new("server_error").unwrap(), 3),
            ],
            sources: vec![sha("patient file"), sha("error file")],
        }),
        Step::Finish(Finish {
            outcome: JobOutcome::Succeeded,
            started,
            manifest_sha256: Some(sha("manifest")),
            tables: vec![
                TableVersion {
                    table: table("patient"),
                    version: 8,
                },
                TableVersion {
                    table: table("_quarantine"),
                    version: 12,
                },
            ],
            totals: Totals {
                lines: 14,
                inserted: 8,
                updated: 2,
                unchanged: 0,
                quarantined: 4,
                filtered: 0,
                deleted: 2,
            },
        }),
        Step::Finish(Finish {
            outcome: JobOutcome::Warnings(Warnings {
                quarantined: 4,
                count_mismatches: 1,
                server_error_files: 1,
            }),
            started,
            manifest_sha256: Some(sha("manifest")),
            tables: Vec::new(),
            totals: Totals::default(),
        }),
        failed(
            FailureKind::Http { status: 503 },
            Some(StepKind::InputFile),
            Some(presigned("Observation.000.ndjson")),
        ),
        failed(FailureKind::Storage, None, None),
        Step::Finish(Finish {
            outcome: JobOutcome::Cancelled,
            started,
            manifest_sha256: None,
            tables: Vec::new(),
            totals: Totals::default(),
        }),
        Step::Maintenance(Maintenance {
            table: table("patient"),
            operation: MaintenanceOp::Optimize {
                files_removed: 10,
                files_added: 1,
                rows_purged: 2,
            },
            version: Some(9),
        }),
        Step::Maintenance(Maintenance {
            table: table("patient"),
            operation: MaintenanceOp::Vacuum {
                files_deleted: 10,
                retention_hours: 168,
            },
            version: None,
        }),
        Step::PolicyChange(PolicyChange {
            previous: PolicyVersion::None,
            source: Some(loc("/etc/fhirlake/policy.json")),
        }),
    ]
}

/// A distinct event per `n` (a commit of version `n`).
pub fn sample_event(n: u64) -> AuditEvent {
    let step = Step::TableCommit(TableCommit {
        table: table("patient"),
        resource_type: Some(rt("Patient")),
        version: n,
        operation: CommitOperation::Append,
        rows: RowChanges {
            inserted: n + 1,
            ..RowChanges::default()
        },
    });
    context(JobKind::Load).event(&step, at("2026-11-25T01:20:00.000+01:00"))
}
