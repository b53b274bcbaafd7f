//! A job (or one HL7 v2 message) → a FHIR R4 Provenance.
//!
//! In: the job's [`JobContext`], what it produced ([`Target`]s: Delta table
//! versions, or the resources a message became), when, and the manifest's
//! SHA-256. Out: a Provenance whose agents are the principal (`performer`)
//! and fhirlake with its version (`assembler`), and whose entities are the
//! source server or feed and the manifest with its digest. Pure. Its id is
//! derived from the job and the targets, so building it again gives the
//! same resource (a reload never adds a second copy to a `provenance` table).

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::canonical;
use super::codes;
use super::context::JobContext;
use super::error::InputError;
use super::event::instant;
use super::values::{ResourceId, ResourceType, Sha256, TableName};

/// Something a job produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Delta table at the version the job committed.
    TableVersion { table: TableName, version: u64 },
    /// A resource (e.g. one an HL7 v2 message produced), at a version.
    Resource {
        resource_type: ResourceType,
        id: ResourceId,
        version_id: Option<ResourceId>,
    },
}

impl Target {
    fn reference(&self) -> Value {
        match self {
            Self::TableVersion { table, version } => json!({
                "identifier": {
                    "system": codes::TABLE_VERSION,
                    "value": format!("{table}@v{version}"),
                },
                "display": format!("Delta table {table}, version {version}"),
            }),
            Self::Resource {
                resource_type,
                id,
                version_id: Some(v),
            } => json!({"reference": format!("{resource_type}/{id}/_history/{v}")}),
            Self::Resource {
                resource_type,
                id,
                version_id: None,
            } => json!({"reference": format!("{resource_type}/{id}")}),
        }
    }
}

/// One HL7 v2 message, as the entity a per-message Provenance names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntity {
    /// SHA-256 of the message's bytes as received.
    pub sha256: Sha256,
    /// MSH-9, e.g. `ADT^A01`.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-3|MSH-4.
    pub sender: String,
    /// Where it came from and its number there (`adt.hl7#3`, `mllp://peer#12`).
    pub origin: String,
}

/// One Provenance resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Provenance(Map<String, Value>);

impl Provenance {
    /// The resource's JSON members.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The resource as a JSON value.
    pub fn into_json(self) -> Value {
        Value::Object(self.0)
    }
}

impl JobContext {
    /// The Provenance of this job's `targets` (at least one), produced
    /// between `started` and `recorded`. Needs the context's manifest path;
    /// `manifest_sha256` is the digest of the manifest as written.
    pub fn provenance(
        &self,
        targets: &[Target],
        started: DateTime<FixedOffset>,
        recorded: DateTime<FixedOffset>,
        manifest_sha256: Sha256,
    ) -> Result<Provenance, InputError> {
        self.build_provenance(targets, None, started, recorded, manifest_sha256)
    }

    /// The Provenance of one HL7 v2 `message` of this job: its targets are
    /// the resources it became, and the message (its digest, type, control
    /// id and sender) is an entity beside the feed and the manifest.
    pub fn message_provenance(
        &self,
        message: &MessageEntity,
        targets: &[Target],
        started: DateTime<FixedOffset>,
        recorded: DateTime<FixedOffset>,
        manifest_sha256: Sha256,
    ) -> Result<Provenance, InputError> {
        self.build_provenance(targets, Some(message), started, recorded, manifest_sha256)
    }

    fn build_provenance(
        &self,
        targets: &[Target],
        message: Option<&MessageEntity>,
        started: DateTime<FixedOffset>,
        recorded: DateTime<FixedOffset>,
        manifest_sha256: Sha256,
    ) -> Result<Provenance, InputError> {
        if targets.is_empty() {
            return Err(InputError::new(
                "provenance targets",
                "a Provenance needs at least one target",
                "",
            ));
        }
        let Some(manifest) = &self.manifest else {
            return Err(InputError::new(
                "provenance manifest",
                "the job context has no manifest path (with_manifest)",
                "",
            ));
        };
        let targets: Vec<Value> = targets.iter().map(Target::reference).collect();
        let mut id_source = json!({"job": self.job.as_str(), "targets": targets});
        if let Some(m) = message {
            id_source["message"] = json!(m.sha256.to_string());
        }
        let id = format!(
            "fhirlake-{}",
            &canonical::digest(&id_source).to_string()[..32]
        );
        let produces_tables = targets.iter().any(|t| t.get("identifier").is_some());
        let operation = if produces_tables {
            codes::OP_UPDATE
        } else {
            codes::OP_CREATE
        };

        let mut agents: Vec<Value> = self
            .principal_references()
            .into_iter()
            .map(|who| json!({"type": codes::PERFORMER.concept(), "who": who}))
            .collect();
        agents.push(json!({
            "type": codes::ASSEMBLER.concept(),
            "who": self.software_reference(),
        }));

        let mut entities = Vec::new();
        if let Some(source) = &self.source {
            entities.push(json!({
                "role": "source",
                "what": {
                    "identifier": {"system": codes::SOURCE, "value": source.as_str()},
                    "display": format!("{} source {source}", self.kind.code()),
                },
            }));
        }
        if let Some(m) = message {
            entities.push(json!({
                "extension": [{"url": codes::EXT_SHA256, "valueString": m.sha256.to_string()}],
                "role": "source",
                "what": {
                    "identifier": {"system": codes::HL7V2_MESSAGE, "value": m.sha256.to_string()},
                    "display": format!(
                        "HL7 v2 {} message MSH-10 {} from {} ({})",
                        m.message_type, m.control_id, m.sender, m.origin
                    ),
                },
            }));
        }
        entities.push(json!({
            "extension": [{"url": codes::EXT_SHA256, "valueString": manifest_sha256.to_string()}],
            "role": "source",
            "what": {
                "identifier": {"system": codes::MANIFEST, "value": manifest.as_str()},
                "display": format!("job manifest {manifest} (SHA-256 {manifest_sha256})"),
            },
        }));

        let provenance = json!({
            "resourceType": "Provenance",
            "id": id,
            "target": targets,
            "occurredPeriod": {"start": instant(&started), "end": instant(&recorded)},
            "recorded": instant(&recorded),
            "policy": [format!("{}:{}", codes::POLICY, self.policy)],
            "activity": {
                "coding": [
                    operation.coding(),
                    {"system": codes::JOB_KIND_SYSTEM, "code": self.kind.code()},
                ],
                "text": format!("fhirlake {} job {}", self.kind.code(), self.job),
            },
            "agent": agents,
            "entity": entities,
        });
        let Value::Object(provenance) = provenance else {
            unreachable!("built as an object")
        };
        Ok(Provenance(provenance))
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::JobKind;
    use super::super::fixtures::{self, at, sha};
    use super::super::values::JobId;
    use super::*;

    fn targets() -> Vec<Target> {
        vec![
            Target::TableVersion {
                table: TableName::new("patient").unwrap(),
                version: 8,
            },
            Target::TableVersion {
                table: TableName::new("_quarantine").unwrap(),
                version: 12,
            },
        ]
    }

    fn build(ctx: &JobContext, targets: &[Target]) -> Value {
        ctx.provenance(
            targets,
            at("2026-11-25T01:15:00Z"),
            at("2026-11-25T01:20:00Z"),
            sha("manifest"),
        )
        .unwrap()
        .into_json()
    }

    #[test]
    fn a_job_provenance_names_tables_principal_fhirlake_source_and_manifest() {
        let ctx = fixtures::context(JobKind::Export);
        let p = build(&ctx, &targets());
        assert_eq!(p["resourceType"], "Provenance");
        assert_eq!(p["target"][0]["identifier"]["value"], "patient@v8");
        assert_eq!(p["target"][1]["identifier"]["value"], "_quarantine@v12");
        assert_eq!(p["activity"]["coding"][0]["code"], "UPDATE");
        assert_eq!(p["activity"]["coding"][1]["code"], "export");
        let agents = p["agent"].as_array().unwrap();
        assert_eq!(agents[0]["who"]["identifier"]["value"], "fhirlake-prod");
        assert_eq!(agents[0]["type"]["coding"][0]["code"], "performer");
        assert_eq!(agents[1]["who"]["identifier"]["value"], "svc-fhirlake");
        assert_eq!(agents[2]["type"]["coding"][0]["code"], "assembler");
        assert_eq!(
            agents[2]["who"]["display"],
            format!("fhirlake {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            p["entity"][0]["what"]["identifier"]["value"],
            "https://ehr.example.org/fhir"
        );
        assert_eq!(
            p["entity"][1]["what"]["identifier"]["system"],
            codes::MANIFEST
        );
        assert_eq!(
            p["entity"][1]["extension"][0]["valueString"],
            sha("manifest").to_string()
        );
        assert_eq!(
            p["policy"][0],
            format!("urn:fhirlake:policy:{}", sha("policy v3"))
        );
        assert_eq!(
            p["occurredPeriod"]["start"],
            "2026-11-25T01:15:00.000+00:00"
        );
    }

    #[test]
    fn the_id_is_stable_per_job_and_targets() {
        let ctx = fixtures::context(JobKind::Export);
        let a = build(&ctx, &targets());
        let b = build(&ctx, &targets());
        assert_eq!(a["id"], b["id"]);
        let id = a["id"].as_str().unwrap();
        assert!(id.len() <= 64 && id.starts_with("fhirlake-"));
        let other = build(&ctx, &targets()[..1]);
        assert_ne!(a["id"], other["id"]);
    }

    #[test]
    fn a_message_provenance_names_the_message_beside_feed_and_manifest() {
        let ctx = fixtures::context(JobKind::Hl7v2);
        let message = MessageEntity {
            sha256: sha("MSH|^~\\&|LAB"),
            message_type: "ORU^R01".into(),
            control_id: "MSG00042".into(),
            sender: "LAB|NORTH".into(),
            origin: "lab.hl7#3".into(),
        };
        let target = [Target::Resource {
            resource_type: ResourceType::new("Observation").unwrap(),
            id: ResourceId::new("o1").unwrap(),
            version_id: None,
        }];
        let at1 = at("2026-11-25T01:15:00Z");
        let p = ctx
            .message_provenance(&message, &target, at1, at1, sha("manifest"))
            .unwrap()
            .into_json();
        let entity = p["entity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["what"]["identifier"]["system"] == codes::HL7V2_MESSAGE)
            .unwrap();
        assert_eq!(
            entity["what"]["identifier"]["value"],
            message.sha256.to_string()
        );
        let display = entity["what"]["display"].as_str().unwrap();
        assert!(
            display.contains("ORU^R01")
                && display.contains("MSG00042")
                && display.contains("lab.hl7#3")
        );
        let job_level = ctx
            .provenance(&target, at1, at1, sha("manifest"))
            .unwrap()
            .into_json();
        assert_ne!(p["id"], job_level["id"], "one id per message");
    }

    #[test]
    fn a_message_provenance_targets_the_resources_it_produced() {
        let ctx = JobContext::new(JobId::new("hl7-1").unwrap(), JobKind::Hl7v2).with_manifest(
            super::super::values::Location::new("_fhirlake/manifests/hl7-1.json").unwrap(),
        );
        let p = build(
            &ctx,
            &[
                Target::Resource {
                    resource_type: ResourceType::new("Patient").unwrap(),
                    id: ResourceId::new("p1").unwrap(),
                    version_id: Some(ResourceId::new("3").unwrap()),
                },
                Target::Resource {
                    resource_type: ResourceType::new("Encounter").unwrap(),
                    id: ResourceId::new("e1").unwrap(),
                    version_id: None,
                },
            ],
        );
        assert_eq!(p["target"][0]["reference"], "Patient/p1/_history/3");
        assert_eq!(p["target"][1]["reference"], "Encounter/e1");
        assert_eq!(p["activity"]["coding"][0]["code"], "CREATE");
        assert_eq!(p["policy"][0], "urn:fhirlake:policy:none");
        // Nobody known: fhirlake is the only agent.
        assert_eq!(p["agent"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn no_targets_or_no_manifest_is_refused() {
        let ctx = fixtures::context(JobKind::Export);
        let err = ctx
            .provenance(
                &[],
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z"),
                sha("m"),
            )
            .unwrap_err();
        assert_eq!(err.field, "provenance targets");
        let bare = JobContext::new(JobId::new("j").unwrap(), JobKind::Load);
        let err = bare
            .provenance(
                &targets(),
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z"),
                sha("m"),
            )
            .unwrap_err();
        assert_eq!(err.field, "provenance manifest");
    }
}
