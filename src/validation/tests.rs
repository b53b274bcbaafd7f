//! Agreement with the IG publisher's validator on US Core's own examples,
//! and mutations of those examples that each must be caught at the right
//! path.

use std::collections::{BTreeSet, HashMap};
use std::io::{Cursor, Read};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::*;

fn profiles() -> &'static Profiles {
    static PROFILES: OnceLock<Profiles> = OnceLock::new();
    PROFILES.get_or_init(|| Profiles::us_core().expect("the built-in package compiles"))
}

/// `package/example/*.json` and `package/other/validation-oo.json` of the
/// built-in package, by file stem.
fn package_files() -> (HashMap<String, Value>, Value) {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(Cursor::new(US_CORE_610)));
    let mut examples = HashMap::new();
    let mut verdicts = Value::Null;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        if let Some(file) = name.strip_prefix("package/example/") {
            entry.read_to_end(&mut bytes).unwrap();
            let stem = file.trim_end_matches(".json").to_string();
            examples.insert(stem, serde_json::from_slice(&bytes).unwrap());
        } else if name == "package/other/validation-oo.json" {
            entry.read_to_end(&mut bytes).unwrap();
            verdicts = serde_json::from_slice(&bytes).unwrap();
        }
    }
    (examples, verdicts)
}

fn example(stem: &str) -> Value {
    package_files()
        .0
        .remove(stem)
        .unwrap_or_else(|| panic!("no example {stem}"))
}

#[test]
fn compiles_every_resource_profile_of_us_core_6_1_0() {
    let profiles = profiles();
    assert_eq!(profiles.len(), 49, "US Core 6.1.0 has 49 resource profiles");
    assert_eq!(
        profiles.default_for("Patient").unwrap().url,
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    );
    assert!(
        profiles.default_for("Observation").is_none(),
        "several, none general"
    );
    let patient = profiles
        .get("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|6.1.0")
        .unwrap();
    let family = patient
        .rules
        .iter()
        .find(|r| r.element == "Patient.identifier.system")
        .unwrap();
    assert_eq!((family.min, family.max), (1, Some(1)));
}

/// The IG publisher's verdict (error / no error) for every example against
/// ours; the README's confusion matrix is this test's output.
#[test]
fn agrees_with_the_reference_validator_on_the_us_core_examples() {
    let (examples, verdicts) = package_files();
    let reference: HashMap<&str, bool> = verdicts["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            let has_error = r["issue"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| matches!(i["severity"].as_str(), Some("error" | "fatal")));
            (r["id"].as_str().unwrap(), has_error)
        })
        .collect();
    let mut matrix = [[0usize; 2]; 2]; // [reference error][ours error]
    let mut disagreements = Vec::new();
    let mut checked_against_a_profile = 0;
    for (stem, resource) in &examples {
        let theirs = *reference
            .get(stem.as_str())
            .unwrap_or_else(|| panic!("{stem}: no reference verdict"));
        let verdict = profiles().validate_value(resource);
        if verdict.profiles.is_empty() {
            println!("  no profile: {stem}");
        } else {
            checked_against_a_profile += 1;
        }
        let ours = !verdict.is_valid();
        matrix[usize::from(theirs)][usize::from(ours)] += 1;
        if theirs != ours {
            disagreements.push(format!("{stem}: {:?}", verdict.findings));
        }
    }
    let total = examples.len();
    let agree = matrix[0][0] + matrix[1][1];
    println!(
        "reference no-error/error vs fhirlake no-error/error: {:?}; agreement {agree}/{total}; checked against a profile {checked_against_a_profile}",
        matrix
    );
    for d in &disagreements {
        println!("  disagreement {d}");
    }
    // The README's confusion matrix: keep the two in step.
    assert_eq!(total, 183);
    assert_eq!(matrix, [[183, 0], [0, 0]], "{disagreements:#?}");
    assert_eq!(
        checked_against_a_profile, 178,
        "examples that met a profile"
    );
    assert!(
        agree * 100 >= total * 95,
        "{agree}/{total} agree: {disagreements:#?}"
    );
}

/// The findings on `resource` as a load finds them (on the arena tree).
fn findings_of(resource: &Value) -> Vec<(String, String)> {
    profiles()
        .validate_value(resource)
        .findings
        .into_iter()
        .map(|f| (f.path, f.message))
        .collect()
}

/// serde_json's tree, which has no FHIRPath invariants evaluated, gets the
/// same structural verdicts as the arena tree on every example.
#[test]
fn both_trees_get_the_same_structural_verdicts_on_every_example() {
    let (examples, _) = package_files();
    for (stem, resource) in &examples {
        let serde = profiles().validate(resource);
        let arena = profiles().validate_value(resource);
        assert_eq!(serde.profiles, arena.profiles, "{stem}");
        let structural: Vec<&Finding> = arena
            .findings
            .iter()
            .filter(|f| !f.message.starts_with("constraint "))
            .collect();
        assert_eq!(
            serde.findings.iter().collect::<Vec<_>>(),
            structural,
            "{stem}"
        );
    }
}

/// `job`'s verdict on `resource` read as the load path reads it.
fn judge_value(job: &Validation, resource: &Value) -> LineVerdict {
    let text = resource.to_string();
    let arena = bumpalo::Bump::new();
    job.judge(&crate::view::Json::parse(&text, &arena).unwrap())
}

/// US Core 3.1.1 (`--validate us-core@3.1.1`) has no validator verdicts in
/// its package; its own examples conform to it (but one), and a mutation
/// does not.
#[test]
fn us_core_3_1_1_is_built_in_and_its_examples_conform() {
    let job = Validation::named("us-core@3.1.1", OnInvalid::Flag).unwrap();
    assert_eq!(job.profiles.package, "hl7.fhir.us.core@3.1.1");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(Cursor::new(
        &include_bytes!("../../data/us-core/us_core_311.tgz")[..],
    )));
    let mut judged = 0;
    let mut failing = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("package/example/") {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let resource: Value = serde_json::from_slice(&bytes).unwrap();
        match judge_value(&job, &resource) {
            LineVerdict::NoProfile => {}
            LineVerdict::Valid => judged += 1,
            LineVerdict::Invalid(findings) => failing.push((name, findings)),
        }
    }
    assert!(judged > 40, "{judged} examples judged");
    // One example really breaks its type's profile: Encounter-1036 claims
    // no profile and has no `type`, which US Core 3.1.1 Encounter requires.
    let failing: Vec<(&str, &str)> = failing
        .iter()
        .flat_map(|(name, findings)| findings.iter().map(|f| (name.as_str(), f.path.as_str())))
        .collect();
    assert_eq!(
        failing,
        [("package/example/Encounter-1036.json", "Encounter.type")]
    );

    let mut patient = serde_json::from_slice::<Value>(&{
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(Cursor::new(
            &include_bytes!("../../data/us-core/us_core_311.tgz")[..],
        )));
        let mut found = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("Patient-example.json") {
                entry.read_to_end(&mut found).unwrap();
            }
        }
        found
    })
    .unwrap();
    patient.as_object_mut().unwrap().remove("gender");
    let LineVerdict::Invalid(findings) = judge_value(&job, &patient) else {
        panic!("a Patient without gender breaks US Core 3.1.1 Patient");
    };
    assert_eq!(findings[0].path, "Patient.gender");
    assert!(findings[0].profile.ends_with("us-core-patient"));
}

#[test]
fn an_unknown_built_in_version_says_which_there_are() {
    let error = Validation::named("us-core@5.0.1", OnInvalid::Flag).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("6.1.0") && message.contains("3.1.1"),
        "{message}"
    );
}

fn assert_one_finding_at(resource: &Value, path: &str, says: &str) {
    let findings = findings_of(resource);
    assert!(
        findings.iter().any(|(p, m)| p == path && m.contains(says)),
        "expected a finding at {path} saying {says:?}, got {findings:#?}"
    );
}

#[test]
fn the_examples_mutated_are_caught_at_the_right_path() {
    let patient = example("Patient-example");
    assert!(
        findings_of(&patient).is_empty(),
        "{:?}",
        findings_of(&patient)
    );

    // A required element removed.
    let mut no_name = patient.clone();
    no_name.as_object_mut().unwrap().remove("name");
    assert_one_finding_at(&no_name, "Patient.name", "required (min 1), found 0");

    // A required child of a repeating element removed, in the second item.
    let mut no_system = patient.clone();
    let identifiers = no_system["identifier"].as_array_mut().unwrap();
    identifiers.push(json!({"value": "12345"}));
    assert_one_finding_at(
        &no_system,
        "Patient.identifier[1].system",
        "required (min 1)",
    );

    // A max cardinality exceeded: Patient.gender is 1..1.
    let mut two_genders = patient.clone();
    two_genders["gender"] = json!(["male", "female"]);
    assert_one_finding_at(&two_genders, "Patient.gender", "at most 1, found 2");

    // A pattern broken: US Core body weight pins Observation.code to LOINC 29463-7.
    let mut weight = example("Observation-weight");
    assert!(
        findings_of(&weight).is_empty(),
        "{:?}",
        findings_of(&weight)
    );
    weight["code"]["coding"][0]["code"] = json!("29463-8");
    assert_one_finding_at(&weight, "Observation.code", "must match the pattern");

    // A code outside a required, enumerated value set.
    let mut status = example("Observation-some-day-smoker");
    status["status"] = json!("preliminary");
    assert_one_finding_at(
        &status,
        "Observation.status",
        "not in the required value set http://hl7.org/fhir/us/core/ValueSet/us-core-observation-smoking-status-status",
    );

    // A reference at the wrong type.
    let mut subject = example("Observation-some-day-smoker");
    subject["subject"]["reference"] = json!("Practitioner/practitioner-1");
    assert_one_finding_at(&subject, "Observation.subject", "refers to a Practitioner");
    // A conditional reference names its type before the query, whatever
    // the identifier's system holds.
    subject["subject"]["reference"] =
        json!("Practitioner?identifier=http://example.org/fhir/Patient/npi|1");
    assert_one_finding_at(&subject, "Observation.subject", "refers to a Practitioner");
    subject["subject"]["reference"] = json!(
        "https://example.org/fhir/Patient?identifier=http://example.org/fhir/Practitioner/mrn|1"
    );
    assert!(
        findings_of(&subject).is_empty(),
        "{:?}",
        findings_of(&subject)
    );

    // A reference inside a choice at the wrong type: medication[x] is a
    // CodeableConcept or a Reference(Medication).
    let mut medication = example("MedicationRequest-medicationrequest-referenced-oral-axid");
    assert!(
        findings_of(&medication).is_empty(),
        "{:?}",
        findings_of(&medication)
    );
    medication["medicationReference"]["reference"] = json!("Patient/example");
    assert_one_finding_at(
        &medication,
        "MedicationRequest.medicationReference",
        "refers to a Patient",
    );

    // A choice of a type the profile does not allow: vital signs take
    // effectiveDateTime or effectivePeriod.
    let mut effective = example("Observation-weight");
    let object = effective.as_object_mut().unwrap();
    let when = object.remove("effectiveDateTime").unwrap();
    object.insert("effectiveInstant".into(), when);
    assert_one_finding_at(
        &effective,
        "Observation.effectiveInstant",
        "type Instant is not allowed",
    );
}

#[test]
fn bundle_entries_are_validated_and_named_by_entry() {
    let mut no_name = example("Patient-example");
    no_name.as_object_mut().unwrap().remove("name");
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": example("Patient-example")},
        {"resource": no_name},
    ]});
    assert_one_finding_at(&bundle, "Bundle.entry[1].resource/Patient.name", "required");
    assert_eq!(findings_of(&bundle).len(), 1);
}

#[test]
fn bindings_the_package_cannot_enumerate_are_listed_not_failed() {
    let unchecked = profiles().unchecked_bindings();
    assert!(
        unchecked
            .iter()
            .any(|(element, vs)| element == "Patient.gender"
                && vs.starts_with("http://hl7.org/fhir/ValueSet/administrative-gender")),
        "{unchecked:?}"
    );
    let mut odd_gender = example("Patient-example");
    odd_gender["gender"] = json!("no-such-code");
    assert!(
        findings_of(&odd_gender).is_empty(),
        "not enumerable here: not judged"
    );
}

#[test]
fn a_resource_naming_no_profile_meets_the_one_its_code_or_category_implies() {
    let inferred = |resource: &Value| profiles().validate(resource).profiles;
    let us_core = |name: &str| format!("http://hl7.org/fhir/us/core/StructureDefinition/{name}");
    let mut weight = example("Observation-weight");
    weight.as_object_mut().unwrap().remove("meta");
    assert_eq!(
        inferred(&weight),
        [us_core("us-core-body-weight")],
        "its code pattern"
    );
    // A vital sign no vital-sign profile pins (pain severity): the general
    // vital-signs profile, by its category (its code binding includes a base
    // FHIR value set this package does not enumerate: the code cannot tell);
    // not pulse oximetry, which pins its codes by slices.
    weight["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "72514-3"}]});
    assert_eq!(
        inferred(&weight),
        [us_core("us-core-vital-signs")],
        "its category"
    );
    // A survey answer: the screening-assessment profile (survey category,
    // a preferred code binding).
    let mut phq = example("Observation-PHQ9-item-example-44250-9");
    phq.as_object_mut().unwrap().remove("meta");
    assert_eq!(
        inferred(&phq),
        [us_core("us-core-observation-screening-assessment")]
    );
    // Social history that is not smoking status: smoking status binds its
    // code (extensible) to its own codes, so an alcohol-use answer is not held to it.
    let alcohol = json!({"resourceType": "Observation", "status": "amended",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "social-history"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "74013-4"}]},
        "subject": {"reference": "Patient/1"}, "effectivePeriod": {"start": "2024-01-01"}});
    assert!(inferred(&alcohol).is_empty(), "{:?}", inferred(&alcohol));
    // Devices: US Core's one Device profile is for implantable devices only.
    let device = json!({"resourceType": "Device", "id": "pump"});
    assert!(inferred(&device).is_empty());
}

#[test]
fn a_profile_named_at_another_version_is_not_applied() {
    let mut patient = example("Patient-example");
    patient.as_object_mut().unwrap().remove("name");
    let url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient";
    patient["meta"] = json!({"profile": [format!("{url}|3.1.1")]});
    let verdict = profiles().validate_value(&patient);
    assert!(
        verdict.profiles.is_empty() && verdict.findings.is_empty(),
        "{verdict:?}"
    );
    patient["meta"] = json!({"profile": [format!("{url}|6.1.0")]});
    assert_one_finding_at(&patient, "Patient.name", "required");
}

#[test]
fn type_slices_and_extension_only_primitives_are_checked_item_by_item() {
    // Body weight's valueQuantity must carry a UCUM system and a code.
    let mut weight = example("Observation-weight");
    weight["valueQuantity"]["system"] = json!("http://example.org/units");
    weight["valueQuantity"]
        .as_object_mut()
        .unwrap()
        .remove("code");
    assert_one_finding_at(&weight, "Observation.valueQuantity.system", "fixed value");
    assert_one_finding_at(
        &weight,
        "Observation.valueQuantity.code",
        "required (min 1)",
    );
    // A repeating primitive counts a value and an extension at other
    // positions as two items.
    let values = json!({"given": [null, "b"]});
    let extensions = json!([{"extension": []}, null]);
    assert_eq!(
        super::check::present_count(values.get("given"), Some(&extensions)),
        2
    );
}

#[test]
fn error_invariants_are_compiled_and_those_the_engine_cannot_run_listed() {
    let mut compiled: Vec<(String, String)> = Vec::new();
    for url in [
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-diagnosticreport-note",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitioner",
    ] {
        let profile = profiles().get(url).unwrap();
        for i in &profile.root_invariants {
            compiled.push((profile.resource_type.clone(), i.key.clone()));
        }
        for rule in &profile.rules {
            for i in &rule.invariants {
                compiled.push((rule.element.clone(), i.key.clone()));
            }
        }
    }
    let has = |element: &str, key: &str| compiled.iter().any(|(e, k)| e == element && k == key);
    for (element, key) in [
        ("Patient.name", "us-core-6"),
        ("Patient", "dom-2"),
        ("DiagnosticReport", "us-core-10"),
        ("Condition", "con-4"),
    ] {
        assert!(
            has(element, key),
            "{element} {key} not compiled: {compiled:?}"
        );
    }
    assert!(!compiled.iter().any(|(_, k)| k == "ele-1" || k == "ext-1"));
    let unsupported = profiles().unsupported_invariants();
    let keys: BTreeSet<&str> = unsupported.iter().map(|u| u.key.as_str()).collect();
    for key in ["dom-3", "txt-1", "provenance-1"] {
        assert!(keys.contains(key), "{key} should be listed: {keys:?}");
    }
    eprintln!("{} unsupported: {unsupported:#?}", unsupported.len());
}

#[test]
fn invariants_that_fail_are_findings_at_the_element() {
    // us-core-6: a name needs family or given, or a data-absent-reason.
    let mut patient = example("Patient-example");
    patient["name"] = json!([{"use": "official", "text": "Amy Shaw"}]);
    assert_one_finding_at(&patient, "Patient.name[0]", "constraint us-core-6 failed");

    // us-core-10: a final report note needs effective[x] (us-core-8 for a lab
    // report); the profile also requires effective[x] itself (min 1).
    let mut report = example("DiagnosticReport-chest-xray-report");
    let object = report.as_object_mut().unwrap();
    object.retain(|k, _| !k.starts_with("effective"));
    let findings = findings_of(&report);
    assert!(
        findings
            .iter()
            .any(|(p, m)| p == "DiagnosticReport" && m.contains("constraint us-core-10 failed")),
        "{findings:#?}"
    );

    // dom-2: no nested contained resources.
    let mut contained = example("Patient-example");
    contained["contained"] = json!([{"resourceType": "Organization", "id": "o1", "contained": [{"resourceType": "Organization", "id": "o2"}]}]);
    assert_one_finding_at(&contained, "Patient", "constraint dom-2 failed");
}

#[test]
fn slices_discriminated_by_value_count_and_constrain_their_items() {
    // identifier:NPI (pattern on system): its invariants run on the NPI
    // identifier only; 9941339100 passes the check digit, 9941339101 does not.
    let practitioner = example("Practitioner-practitioner-1");
    assert!(findings_of(&practitioner).is_empty());
    let mut bad_npi = practitioner.clone();
    bad_npi["identifier"][0]["value"] = json!("9941339101");
    assert_one_finding_at(
        &bad_npi,
        "Practitioner.identifier[0]",
        "constraint us-core-17 failed",
    );
    // The same value under another system is not in the slice.
    let mut other = practitioner;
    other["identifier"][0]["system"] = json!("http://example.org/staff");
    other["identifier"][0]["value"] = json!("9941339101");
    assert!(
        !findings_of(&other)
            .iter()
            .any(|(_, m)| m.contains("us-core-17")),
        "{:#?}",
        findings_of(&other)
    );

    // extension:race (value on url) allows one.
    let mut patient = example("Patient-example");
    let race = patient["extension"][0].clone();
    patient["extension"].as_array_mut().unwrap().push(race);
    assert_one_finding_at(&patient, "Patient.extension", "allows at most 1, found 2");

    // component:systolic (pattern on code) is required by the blood pressure profile.
    let mut pressure = example("Observation-blood-pressure");
    assert!(findings_of(&pressure).is_empty());
    pressure["component"].as_array_mut().unwrap().remove(0);
    assert_one_finding_at(
        &pressure,
        "Observation.component",
        "Observation.component:systolic is required (min 1), found 0",
    );

    // category:VSCat (values on coding.code and coding.system, in one coding):
    // a vital sign must carry the vital-signs category.
    let mut weight = example("Observation-blood-pressure");
    assert!(weight["meta"]["profile"].is_array(), "names its profile");
    weight["category"][0]["coding"][0]["code"] = json!("laboratory");
    assert_one_finding_at(
        &weight,
        "Observation.category",
        "Observation.category:VSCat is required (min 1), found 0",
    );
    // category:us-core (a `$this` pattern stated as a required binding): a
    // problem-list Condition needs a category from us-core-problem-or-health-concern.
    let ulcer = example("Condition-condition-duodenal-ulcer");
    assert!(findings_of(&ulcer).is_empty(), "{:#?}", findings_of(&ulcer));
    let mut diagnosis = ulcer.clone();
    diagnosis["category"][0]["coding"][0]["code"] = json!("encounter-diagnosis");
    assert_one_finding_at(
        &diagnosis,
        "Condition.category",
        "Condition.category:us-core is required (min 1), found 0",
    );
    let mut second = ulcer;
    let concern = json!({"coding": [{
        "system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
        "code": "health-concern"
    }]});
    second["category"].as_array_mut().unwrap().push(concern);
    assert!(
        findings_of(&second).is_empty(),
        "two categories, both in the set: {:#?}",
        findings_of(&second)
    );

    // The code under another system is not the slice either.
    let mut other_system = example("Observation-blood-pressure");
    other_system["category"][0]["coding"][0]["system"] = json!("http://example.org/categories");
    assert_one_finding_at(
        &other_system,
        "Observation.category",
        "Observation.category:VSCat is required (min 1), found 0",
    );
}
