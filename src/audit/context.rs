//! What every record of one job shares: the job, who asked for it, the
//! policy in force, its manifest, where the data came from and went, and the
//! software that did it.
//!
//! In: typed values, set once per job with `with_*`. Out: the FHIR agents
//! and entities common to the job's AuditEvents and its Provenance.

use serde_json::{Value, json};

use super::codes::{self, Code};
use super::principal::{Grant, Principal};
use super::values::{Identity, JobId, Location, PolicyVersion, Sha256};

/// What kind of job a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Load,
    Export,
    Sync,
    Hl7v2,
    Maintenance,
    Policy,
}

impl JobKind {
    /// The `urn:fhirlake:job-kind` code (and the job entity's `kind`).
    pub fn code(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Export => "export",
            Self::Sync => "sync",
            Self::Hl7v2 => "hl7v2",
            Self::Maintenance => "maintenance",
            Self::Policy => "policy",
        }
    }

    /// Whether the job moves data into the lake (its records are DICOM Imports).
    pub fn imports(self) -> bool {
        matches!(self, Self::Load | Self::Export | Self::Sync | Self::Hl7v2)
    }
}

/// The software that writes the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Software {
    pub name: &'static str,
    pub version: &'static str,
}

impl Software {
    /// This build of fhirlake.
    pub const FHIRLAKE: Software = Software {
        name: "fhirlake",
        version: env!("CARGO_PKG_VERSION"),
    };
}

/// The shared part of a job's audit records. Build once per job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    pub(crate) job: JobId,
    pub(crate) kind: JobKind,
    pub(crate) principal: Principal,
    pub(crate) policy: PolicyVersion,
    pub(crate) manifest: Option<Location>,
    pub(crate) source: Option<Location>,
    pub(crate) lake: Option<Location>,
    pub(crate) software: Software,
}

impl JobContext {
    /// A job with no principal known, no policy and no manifest yet.
    pub fn new(job: JobId, kind: JobKind) -> Self {
        Self {
            job,
            kind,
            principal: Principal::Unknown,
            policy: PolicyVersion::None,
            manifest: None,
            source: None,
            lake: None,
            software: Software::FHIRLAKE,
        }
    }

    /// Who asked for the job (default: nobody known).
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }

    /// The policy in force (`PolicyVersion::None` without one).
    pub fn with_policy(mut self, policy: PolicyVersion) -> Self {
        self.policy = policy;
        self
    }

    /// Where the job's manifest is (or will be) written,
    /// `_fhirlake/manifests/<job>.json`.
    pub fn with_manifest(mut self, path: Location) -> Self {
        self.manifest = Some(path);
        self
    }

    /// The FHIR server's base URL, the HL7 v2 feed, or the load's input.
    pub fn with_source(mut self, source: Location) -> Self {
        self.source = Some(source);
        self
    }

    /// The lake written to.
    pub fn with_lake(mut self, lake: Location) -> Self {
        self.lake = Some(lake);
        self
    }

    /// Another name or version than this build of fhirlake (tests, forks).
    pub fn with_software(mut self, software: Software) -> Self {
        self.software = software;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> PolicyVersion {
        self.policy
    }

    /// The job the records belong to.
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// The kind of job.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    pub(crate) fn software_reference(&self) -> Value {
        json!({
            "identifier": {"system": codes::SOFTWARE, "value": self.software.name},
            "display": format!("{} {}", self.software.name, self.software.version),
        })
    }

    /// AuditEvent agents: the principal (the requestor), fhirlake, and the
    /// source and lake when known.
    pub(crate) fn audit_agents(&self) -> Vec<Value> {
        let mut agents = principal_agents(&self.principal);
        agents.push(json!({
            "type": codes::DATA_PROCESSOR.concept(),
            "who": self.software_reference(),
            "requestor": self.principal == Principal::Unknown,
        }));
        if let Some(source) = &self.source {
            agents.push(json!({
                "type": codes::SOURCE_ROLE.concept(),
                "who": {"identifier": {"system": codes::SOURCE, "value": source.as_str()}},
                "requestor": false,
                "network": network(source),
            }));
        }
        if let Some(lake) = &self.lake {
            agents.push(json!({
                "type": codes::DESTINATION_ROLE.concept(),
                "who": {"identifier": {"system": codes::LAKE, "value": lake.as_str()}},
                "requestor": false,
                "network": network(lake),
            }));
        }
        agents
    }

    pub(crate) fn job_entity(&self, details: Vec<Value>) -> Value {
        let mut detail = vec![detail("kind", self.kind.code())];
        detail.extend(details);
        json!({
            "what": {"identifier": {"system": codes::JOB_ID, "value": self.job.as_str()}},
            "type": codes::SYSTEM_OBJECT.coding(),
            "role": codes::ROLE_JOB.coding(),
            "detail": detail,
        })
    }

    pub(crate) fn policy_entity(&self, policy: PolicyVersion, which: &str) -> Value {
        json!({
            "what": {"identifier": {"system": codes::POLICY, "value": policy.to_string()}},
            "type": codes::SYSTEM_OBJECT.coding(),
            "role": codes::ROLE_SECURITY_RESOURCE.coding(),
            "detail": [detail("policy", which)],
        })
    }

    /// The manifest entity, when the job has one; with its SHA-256 once known.
    pub(crate) fn manifest_entity(&self, sha256: Option<Sha256>) -> Option<Value> {
        let path = self.manifest.as_ref()?;
        let mut entity = json!({
            "what": {"identifier": {"system": codes::MANIFEST, "value": path.as_str()}},
            "type": codes::SYSTEM_OBJECT.coding(),
            "role": codes::ROLE_REPORT.coding(),
        });
        if let Some(sha256) = sha256 {
            entity["detail"] = json!([detail("sha256", sha256)]);
        }
        Some(entity)
    }

    /// The identities of the principal as FHIR References (client, then `sub`).
    pub(crate) fn principal_references(&self) -> Vec<Value> {
        match &self.principal {
            Principal::OAuth(grant) => {
                let mut refs = vec![client_reference(grant)];
                if let Some(subject) = &grant.subject {
                    refs.push(subject_reference(grant, subject));
                }
                refs
            }
            Principal::LocalUser(user) => vec![user_reference(user)],
            Principal::Unknown => Vec::new(),
        }
    }
}

/// An AuditEvent.entity.detail (R4: a name and a string).
pub(crate) fn detail(name: &str, value: impl ToString) -> Value {
    json!({"type": name, "valueString": value.to_string()})
}

fn network(location: &Location) -> Value {
    // R4 AuditEventAgentNetworkType: 1 machine name, 5 URI.
    let kind = if location.as_str().contains("://") {
        "5"
    } else {
        "1"
    };
    json!({"address": location.as_str(), "type": kind})
}

fn issuer_system(grant: &Grant) -> &str {
    grant
        .issuer
        .as_ref()
        .map_or(codes::OAUTH_CLIENT, Location::as_str)
}

fn client_reference(grant: &Grant) -> Value {
    json!({
        "identifier": {"system": issuer_system(grant), "value": grant.client_id.as_str()},
        "display": format!("OAuth client {}", grant.client_id),
    })
}

fn subject_reference(grant: &Grant, subject: &Identity) -> Value {
    json!({
        "identifier": {"system": issuer_system(grant), "value": subject.as_str()},
        "display": format!("token subject {subject}"),
    })
}

fn user_reference(user: &Identity) -> Value {
    json!({
        "identifier": {"system": codes::OS_USER, "value": user.as_str()},
        "display": user.as_str(),
    })
}

/// The requestor agents. With OAuth: the client (DICOM "Application", as
/// IHE BALP records it) carrying the granted scopes, and the token's `sub`
/// when there is one, which is then the requestor.
fn principal_agents(principal: &Principal) -> Vec<Value> {
    match principal {
        Principal::OAuth(grant) => {
            let mut client = json!({
                "type": codes::APPLICATION.concept(),
                "who": client_reference(grant),
                "requestor": grant.subject.is_none(),
            });
            if !grant.scopes.is_empty() {
                client["extension"] = grant
                    .scopes
                    .iter()
                    .map(|s| json!({"url": codes::EXT_GRANTED_SCOPE, "valueString": s.as_str()}))
                    .collect();
            }
            let mut agents = vec![client];
            if let Some(subject) = &grant.subject {
                agents.push(json!({
                    "type": codes::OAUTH_USER.concept(),
                    "who": subject_reference(grant, subject),
                    "requestor": true,
                }));
            }
            agents
        }
        Principal::LocalUser(user) => vec![json!({
            "type": codes::HUMAN_USER.concept(),
            "who": user_reference(user),
            "requestor": true,
        })],
        Principal::Unknown => Vec::new(),
    }
}

/// Resources of one type (R4's AuditEventEntityType includes the FHIR
/// resource types), with their counts in `details`.
pub(crate) fn resource_entity(resource_type: &str, details: Vec<Value>) -> Value {
    let mut entity = json!({
        "type": {"system": codes::RESOURCE_TYPES, "code": resource_type},
        "role": codes::ROLE_DOMAIN_RESOURCE.coding(),
    });
    if !details.is_empty() {
        entity["detail"] = Value::Array(details);
    }
    entity
}

pub(crate) fn table_entity(table: &str, lifecycle: Option<Code>, details: Vec<Value>) -> Value {
    let mut entity = json!({
        "what": {"identifier": {"system": codes::TABLE, "value": table}},
        "type": codes::SYSTEM_OBJECT.coding(),
        "role": codes::ROLE_TABLE.coding(),
    });
    if let Some(lifecycle) = lifecycle {
        entity["lifecycle"] = lifecycle.coding();
    }
    if !details.is_empty() {
        entity["detail"] = Value::Array(details);
    }
    entity
}
