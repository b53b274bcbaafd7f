//! The code systems and codes audit records use, in one place.
//!
//! Standard codes where one fits: DICOM's audit event and role codes (as
//! FHIR R4's AuditEvent value sets include them), FHIR's
//! `restful-interaction`, `audit-entity-type`, `object-role`,
//! `dicom-audit-lifecycle`, `security-source-type`,
//! `extra-security-role-type` and `provenance-participant-type`, IHE BALP's
//! OAuth user agent. fhirlake's own identifiers and its step codes are
//! `urn:fhirlake:` names, as elsewhere in fhirlake.

use serde_json::{Value, json};

/// One code of a code system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub system: &'static str,
    pub code: &'static str,
    pub display: &'static str,
}

impl Code {
    const fn new(system: &'static str, code: &'static str, display: &'static str) -> Self {
        Self {
            system,
            code,
            display,
        }
    }

    /// As a FHIR `Coding`.
    pub fn coding(&self) -> Value {
        json!({"system": self.system, "code": self.code, "display": self.display})
    }

    /// As a FHIR `CodeableConcept` with this one coding.
    pub fn concept(&self) -> Value {
        json!({"coding": [self.coding()]})
    }
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
pub const IMPORT: Code = Code::new(DCM, "110107", "Import");
pub const APPLICATION_ACTIVITY: Code = Code::new(DCM, "110100", "Application Activity");
pub const SECURITY_ALERT: Code = Code::new(DCM, "110113", "Security Alert");
pub const SECURITY_CONFIGURATION: Code = Code::new(DCM, "110129", "Security Configuration");
pub const APPLICATION: Code = Code::new(DCM, "110150", "Application");
pub const DESTINATION_ROLE: Code = Code::new(DCM, "110152", "Destination Role ID");
pub const SOURCE_ROLE: Code = Code::new(DCM, "110153", "Source Role ID");

const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
pub const REST_OPERATION: Code = Code::new(RESTFUL, "operation", "operation");
pub const REST_SEARCH_TYPE: Code = Code::new(RESTFUL, "search-type", "search-type");

pub const SYSTEM_OBJECT: Code = Code::new(
    "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "2",
    "System Object",
);

const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
pub const ROLE_REPORT: Code = Code::new(OBJECT_ROLE, "3", "Report");
pub const ROLE_DOMAIN_RESOURCE: Code = Code::new(OBJECT_ROLE, "4", "Domain Resource");
pub const ROLE_SECURITY_RESOURCE: Code = Code::new(OBJECT_ROLE, "13", "Security Resource");
pub const ROLE_JOB: Code = Code::new(OBJECT_ROLE, "20", "Job");
pub const ROLE_TABLE: Code = Code::new(OBJECT_ROLE, "22", "Table");
pub const ROLE_QUERY: Code = Code::new(OBJECT_ROLE, "24", "Query");

const LIFECYCLE: &str = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle";
pub const LIFE_IMPORT: Code = Code::new(LIFECYCLE, "2", "Import / Copy from original");
pub const LIFE_AMENDMENT: Code = Code::new(LIFECYCLE, "3", "Amendment");
pub const LIFE_LOGICAL_DELETION: Code = Code::new(LIFECYCLE, "14", "Logical deletion");
pub const LIFE_ERASURE: Code =
    Code::new(LIFECYCLE, "15", "Permanent erasure / Physical destruction");

/// FHIR resource type names as entity types (R4's AuditEventEntityType
/// includes them).
pub const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";

pub const APPLICATION_SERVER: Code = Code::new(
    "http://terminology.hl7.org/CodeSystem/security-source-type",
    "4",
    "Application Server",
);

const EXTRA_ROLE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
pub const HUMAN_USER: Code = Code::new(EXTRA_ROLE, "humanuser", "human user");
pub const DATA_PROCESSOR: Code = Code::new(EXTRA_ROLE, "dataprocessor", "data processor");

pub const OAUTH_USER: Code = Code::new(
    "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes",
    "UserOauthAgent",
    "User OAuth Agent participant",
);

const PARTICIPANT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
pub const PERFORMER: Code = Code::new(PARTICIPANT, "performer", "Performer");
pub const ASSEMBLER: Code = Code::new(PARTICIPANT, "assembler", "Assembler");

const DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
pub const OP_CREATE: Code = Code::new(DATA_OPERATION, "CREATE", "create");
pub const OP_UPDATE: Code = Code::new(DATA_OPERATION, "UPDATE", "revise");

/// fhirlake's step codes (AuditEvent.subtype).
pub const STEP_SYSTEM: &str = "urn:fhirlake:audit-step";
/// fhirlake's job kinds (Provenance.activity, the job entity's detail).
pub const JOB_KIND_SYSTEM: &str = "urn:fhirlake:job-kind";

/// Identifier systems of the things records name.
pub const JOB_ID: &str = "urn:fhirlake:job";
pub const MANIFEST: &str = "urn:fhirlake:manifest";
pub const POLICY: &str = "urn:fhirlake:policy";
pub const TABLE: &str = "urn:fhirlake:delta-table";
pub const TABLE_VERSION: &str = "urn:fhirlake:delta-table-version";
pub const FILE: &str = "urn:fhirlake:file";
pub const SYNC_PAGE: &str = "urn:fhirlake:sync-page";
pub const HL7V2_BATCH: &str = "urn:fhirlake:hl7v2-batch";
/// One HL7 v2 message, identified by the SHA-256 of its bytes.
pub const HL7V2_MESSAGE: &str = "urn:fhirlake:hl7v2-message";
pub const SOURCE: &str = "urn:fhirlake:source";
pub const LAKE: &str = "urn:fhirlake:lake";
pub const SOFTWARE: &str = "urn:fhirlake:software";
pub const OS_USER: &str = "urn:fhirlake:os-user";
/// Client ids whose authorization server is not known.
pub const OAUTH_CLIENT: &str = "urn:fhirlake:oauth-client";

/// Extensions.
pub const EXT_CHAIN: &str = "urn:fhirlake:audit-chain";
pub const EXT_GRANTED_SCOPE: &str = "urn:fhirlake:granted-scope";
pub const EXT_SHA256: &str = "urn:fhirlake:sha256";
