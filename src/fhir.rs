//! Small FHIR facts the pipeline needs: which names are R4/R5 resource types,
//! how a resource type maps to a table name, and how a FHIR `instant` becomes
//! UTC microseconds. No I/O.

use chrono::DateTime;

/// FHIR R4 and R5 resource type names, sorted for binary search.
const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "ActorDefinition",
    "AdministrableProductDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "ArtifactAssessment",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BiologicallyDerivedProductDispense",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Citation",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "ClinicalUseDefinition",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "ConditionDefinition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceAssociation",
    "DeviceDefinition",
    "DeviceDispense",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUsage",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "EncounterHistory",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceReport",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "FormularyItem",
    "GenomicStudy",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingSelection",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "Ingredient",
    "InsurancePlan",
    "InventoryItem",
    "InventoryReport",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "ManufacturedItemDefinition",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductDefinition",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionIntake",
    "NutritionOrder",
    "NutritionProduct",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "PackagedProductDefinition",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Permission",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RegulatedAuthorization",
    "RelatedPerson",
    "RequestGroup",
    "RequestOrchestration",
    "Requirements",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTopic",
    "Substance",
    "SubstanceDefinition",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestPlan",
    "TestReport",
    "TestScript",
    "Transport",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// True when `name` is a resource type of FHIR R4 or R5.
pub fn is_known_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// The root elements of a resource type in FHIR R4 and R5, from the base
/// StructureDefinitions (`data/fhir/elements.tsv`; a choice element is
/// listed as `deceased[x]`): what a policy's element names are checked
/// against.
#[derive(Debug)]
pub struct RootElements {
    r4: Vec<&'static str>,
    r5: Vec<&'static str>,
}

impl RootElements {
    /// Whether `name` is a root element in either version: `gender`, or a
    /// choice as `deceased[x]` or `deceased` (how `_elements` names it).
    pub fn has(&self, name: &str) -> bool {
        self.all().any(|element| {
            element == name || (!name.ends_with("[x]") && element.strip_suffix("[x]") == Some(name))
        })
    }

    /// The element closest to a misspelt `name` (at most two edits) and
    /// its distance, for "did you mean".
    pub fn nearest(&self, name: &str) -> Option<(usize, &'static str)> {
        self.all()
            .map(|element| (strsim::levenshtein(element, name), element))
            .filter(|(distance, _)| *distance <= 2)
            .min()
    }

    fn all(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.r4.iter().chain(&self.r5).copied()
    }
}

/// The root elements of `resource_type`, None for a type neither R4 nor R5
/// defines (a server's custom type).
pub fn root_elements(resource_type: &str) -> Option<&'static RootElements> {
    root_elements_by_type().get(resource_type)
}

/// The root elements of every R4 and R5 resource type.
pub fn every_root_elements() -> impl Iterator<Item = &'static RootElements> {
    root_elements_by_type().values()
}

fn root_elements_by_type() -> &'static std::collections::HashMap<&'static str, RootElements> {
    static BY_TYPE: std::sync::LazyLock<std::collections::HashMap<&'static str, RootElements>> =
        std::sync::LazyLock::new(|| {
            include_str!("../data/fhir/elements.tsv")
                .lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let mut columns = line.split('\t');
                    let ty = columns.next()?;
                    let mut list = || -> Vec<&'static str> {
                        let text = columns.next().unwrap_or("");
                        text.split(',').filter(|e| !e.is_empty()).collect()
                    };
                    let (r4, r5) = (list(), list());
                    Some((ty, RootElements { r4, r5 }))
                })
                .collect()
        });
    &BY_TYPE
}

/// True when `name` can safely name a table: a FHIR type-shaped identifier
/// (`[A-Z][A-Za-z0-9]*`, at most 64 bytes). Unknown but well-formed types
/// (a server's custom resource) still load; anything else is quarantined so
/// data can never choose a path outside the lake.
pub fn is_valid_resource_type(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_uppercase()
        && bytes.iter().all(u8::is_ascii_alphanumeric)
}

/// A literal reference without its `/_history/<version>` tail.
pub fn without_history(reference: &str) -> &str {
    // Built once: a `str::split` or `find` pattern builds its searcher per call.
    static HISTORY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("/_history/"));
    match HISTORY.find(reference.as_bytes()) {
        Some(at) => &reference[..at],
        None => reference,
    }
}

/// True when `id` is a FHIR `id`: 1 to 64 of `A-Z a-z 0-9 - .` (so it can
/// never name a path, and joins on it are exact).
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// True when `table` is the table name of a known resource type (`patient`).
pub fn is_known_resource_type_table(table: &str) -> bool {
    RESOURCE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(table))
}

/// The resource type whose table is `table` (`patient` → `Patient`), if known.
pub fn known_type_of_table(table: &str) -> Option<&'static str> {
    RESOURCE_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(table))
        .copied()
}

/// The Delta table that holds resources of this type: its lower-cased name.
pub fn table_name(resource_type: &str) -> String {
    resource_type.to_ascii_lowercase()
}

/// Where a policy puts what it segregates: `_segregated/<table>`.
pub const SEGREGATED_DIR: &str = "_segregated";

/// The table a policy segregates resources of `resource_type` into.
pub fn segregated_table(resource_type: &str) -> String {
    format!("{SEGREGATED_DIR}/{}", table_name(resource_type))
}

/// Whether `table` holds what a policy segregated.
pub fn is_segregated_table(table: &str) -> bool {
    table.starts_with(SEGREGATED_DIR) && table[SEGREGATED_DIR.len()..].starts_with('/')
}

/// The resource type a Bulk Data file name promises, if any:
/// `Patient.ndjson`, `Patient.000.ndjson`, `Patient-1.ndjson`, `Patient.ndjson.gz`.
/// Mixed-type files (`export.ndjson`) promise nothing.
pub fn type_from_file_name(file_name: &str) -> Option<&'static str> {
    let stem_end = file_name.find(['.', '-', '_']).unwrap_or(file_name.len());
    let stem = &file_name[..stem_end];
    RESOURCE_TYPES
        .binary_search(&stem)
        .ok()
        .map(|i| RESOURCE_TYPES[i])
}

/// Parses a FHIR `instant` (RFC 3339 with a mandatory offset) into UTC microseconds.
/// Instants compare as points in time, so `…T10:00:00+02:00` equals `…T08:00:00Z`.
pub fn parse_instant_micros(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// UTC microseconds as a FHIR instant (`2024-01-31T12:00:00Z`, fractions only when set).
pub fn instant_text(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_list_is_sorted_for_binary_search() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn file_names_promise_types() {
        assert_eq!(type_from_file_name("Patient.ndjson"), Some("Patient"));
        assert_eq!(
            type_from_file_name("Observation.000.ndjson"),
            Some("Observation")
        );
        assert_eq!(
            type_from_file_name("Encounter-1.ndjson.gz"),
            Some("Encounter")
        );
        assert_eq!(type_from_file_name("export.ndjson"), None);
        assert_eq!(type_from_file_name("Patients.ndjson"), None);
    }

    #[test]
    fn instants_normalise_to_utc() {
        let a = parse_instant_micros("2024-01-01T10:00:00+02:00").unwrap();
        let b = parse_instant_micros("2024-01-01T08:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            parse_instant_micros("2024-01-01T08:00:00.123456Z").unwrap() - b,
            123_456
        );
        assert!(parse_instant_micros("2024-01-01").is_none());
        assert!(parse_instant_micros("yesterday").is_none());
    }

    #[test]
    fn ids_are_fhir_ids() {
        for id in ["p1", "a-b.c", "0", &"x".repeat(64)] {
            assert!(is_valid_id(id), "{id}");
        }
        for id in [
            "",
            "../../etc/passwd",
            "has space",
            &"x".repeat(65),
            "a_b",
            "é",
        ] {
            assert!(!is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn table_names_are_safe() {
        assert!(is_valid_resource_type("Patient"));
        assert!(!is_valid_resource_type("../etc"));
        assert!(!is_valid_resource_type("patient"));
        assert_eq!(table_name("MedicationRequest"), "medicationrequest");
    }
}
