use bumpalo::Bump;
use serde_json::Value;

use super::*;
use crate::terminology::ProblemKind;

const MAP: &str = r#"{"resourceType":"ConceptMap","url":"http://hospital.example.org/ConceptMap/lab",
  "group":[{"source":"http://hospital.example.org/lab","target":"http://loinc.org",
  "element":[{"code":"GLU-F","target":[{"code":"1558-6","display":"Fasting glucose","equivalence":"equivalent"}]}]}]}"#;

fn with_map() -> (tempfile::TempDir, CodeChecks) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lab.json"), MAP).unwrap();
    let checks = CodeChecks::load(&CodeCheckOptions {
        concept_maps: vec![dir.path().to_path_buf()],
        ..CodeCheckOptions::default()
    })
    .unwrap();
    (dir, checks)
}

/// Checks one resource; returns the issues, the changed text and the curation rows.
fn check(checks: &CodeChecks, text: &str) -> (u32, Option<String>, Vec<(String, String)>) {
    let arena = Bump::new();
    let json = Json::parse(text, &arena).unwrap();
    let resource_type = json
        .get("resourceType")
        .and_then(Json::as_str)
        .unwrap()
        .to_owned();
    let mut checker = checks.checker();
    let checked = checker.check(&json, &arena, &resource_type, "x");
    let rows = checker
        .finish()
        .curation
        .into_records()
        .into_iter()
        .map(|r| (r.problem, r.path))
        .collect();
    (checked.issues, checked.changed, rows)
}

#[test]
fn finds_problems_in_concepts_arrays_components_lone_codings_and_units() {
    let checks = CodeChecks::standard();
    let text = r#"{"resourceType":"Observation","id":"x",
        "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]},
                    {"coding":[{"system":"http://loinc.org/","code":"8302-2"}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":"8302-3"}]},
        "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
                      "valueQuantity":{"value":120,"system":"http://unitsofmeasure.org","code":"mm[Hg"}}],
        "status":"final"}"#;
    let (issues, changed, rows) = check(&checks, text);
    assert_eq!(issues, 3, "{rows:?}");
    assert!(changed.is_none());
    let mut rows = rows;
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "bad_check_digit".into(),
                "Observation.code.coding[0]".into()
            ),
            (
                "bad_unit".into(),
                "Observation.component[0].valueQuantity".into()
            ),
            (
                "misspelt_system".into(),
                "Observation.category[1].coding[0]".into()
            ),
        ]
    );
    // A lone Coding (Encounter.class) is checked; a primitive `status` is not a coding.
    let encounter = r#"{"resourceType":"Encounter","id":"e","status":"finished",
        "class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},
        "type":[{"coding":[{"system":"http://snomed.info/sct","code":"185347001"}]}]}"#;
    let (issues, _, rows) = check(&checks, encounter);
    assert_eq!((issues, rows.len()), (0, 0), "{rows:?}");
}

#[test]
fn a_mapped_local_code_gains_the_standard_coding_and_keeps_everything_else_exactly() {
    let (_dir, checks) = with_map();
    let text = r#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://hospital.example.org/lab","code":"GLU-F","display":"Gluc \"fasting\" é"}],"text":"Fasting glucose"},"valueQuantity":{"value":5.50,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},"note":[{"text":"a\nb"}],"flag":1E+2}"#;
    let (issues, changed, rows) = check(&checks, text);
    assert_eq!(
        (issues, rows.len()),
        (0, 0),
        "a mapped local code is no problem: {rows:?}"
    );
    let changed = changed.expect("the mapping adds a coding");
    // Numbers as written, escapes round-trip, member order kept.
    assert!(changed.contains(r#""value":5.50"#), "{changed}");
    assert!(changed.contains(r#""flag":1E+2"#), "{changed}");
    let before: Value = serde_json::from_str(text).unwrap();
    let mut after: Value = serde_json::from_str(&changed).unwrap();
    let codings = after["code"]["coding"].as_array_mut().unwrap();
    assert_eq!(codings.len(), 2);
    let added = codings.pop().unwrap();
    assert_eq!(added["system"], "http://loinc.org");
    assert_eq!(added["code"], "1558-6");
    assert_eq!(added["display"], "Fasting glucose");
    assert_eq!(
        added["extension"][0]["valueUri"],
        "http://hospital.example.org/ConceptMap/lab"
    );
    assert_eq!(after, before, "nothing else changed");
    // Applied twice (a reload of the changed text), nothing more is added.
    let (_, again, _) = check(&checks, &changed);
    assert!(again.is_none());
}

#[test]
fn without_the_map_the_local_code_is_an_unknown_system() {
    let text = r#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://hospital.example.org/lab","code":"GLU-F"}]}}"#;
    let (issues, changed, rows) = check(&CodeChecks::standard(), text);
    assert_eq!(issues, 1);
    assert!(changed.is_none());
    assert_eq!(rows[0].0, ProblemKind::UnknownSystem.as_str());
}

#[test]
fn a_binding_needs_its_value_set_and_a_malformed_one_says_how_to_write_it() {
    let e = CodeChecks::load(&CodeCheckOptions {
        bindings: vec!["Observation.code".into()],
        ..CodeCheckOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("ELEMENT=VALUESET_URL"), "{e}");
    let e = CodeChecks::load(&CodeCheckOptions {
        bindings: vec!["Observation.code=http://x/missing".into()],
        ..CodeCheckOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("not loaded"), "{e}");
}

#[test]
fn a_binding_checks_membership_at_the_element_it_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vitals.json"),
        r#"{"resourceType":"ValueSet","url":"http://x/vitals","compose":{"include":[
            {"system":"http://loinc.org","concept":[{"code":"8302-2"},{"code":"29463-7"}]}]}}"#,
    )
    .unwrap();
    let checks = CodeChecks::load(&CodeCheckOptions {
        value_sets: vec![dir.path().to_path_buf()],
        bindings: vec!["Observation.code=http://x/vitals".into()],
        ..CodeCheckOptions::default()
    })
    .unwrap();
    let member = r#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]}}"#;
    assert_eq!(check(&checks, member).0, 0);
    let outside = r#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]}}"#;
    let (issues, _, rows) = check(&checks, outside);
    assert_eq!(issues, 1);
    assert_eq!(
        rows,
        [(
            "not_in_value_set".to_owned(),
            "Observation.code.coding[0]".to_owned()
        )]
    );
}

#[test]
fn a_code_element_adds_a_member_to_the_checked_ones() {
    let text = r#"{"resourceType":"Observation","id":"x",
        "code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},
        "bodySite":{"coding":[{"system":"http://snomed.info/sct","code":"368209004"}]},
        "interpretation":[{"coding":[{"system":"http://loinc.org/","code":"LA6576-8"}]}],
        "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
                      "interpretation":[{"coding":[{"system":"http://loinc.org","code":"8480-7"}]}]}]}"#;
    assert_eq!(
        check(&CodeChecks::standard(), text).0,
        0,
        "not checked by default"
    );
    let checks = CodeChecks::load(&CodeCheckOptions {
        extra_members: vec!["interpretation".into(), "bodySite".into(), "code".into()],
        ..CodeCheckOptions::default()
    })
    .unwrap();
    let (issues, _, rows) = check(&checks, text);
    let mut paths: Vec<String> = rows.into_iter().map(|(_, path)| path).collect();
    paths.sort();
    // A bad SNOMED check digit, a misspelt LOINC system, a bad LOINC check digit.
    assert_eq!(issues, 3, "{paths:?}");
    assert_eq!(
        paths,
        [
            "Observation.bodySite.coding[0]",
            "Observation.component[0].interpretation[0].coding[0]",
            "Observation.interpretation[0].coding[0]",
        ]
    );
    let e = CodeChecks::load(&CodeCheckOptions {
        extra_members: vec!["Observation.bodySite".into()],
        ..CodeCheckOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("member name"), "{e}");
}
