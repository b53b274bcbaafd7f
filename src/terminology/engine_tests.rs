//! The checker end to end: concepts, quantities, bindings, mappings, metrics.

use super::super::binding::{Binding, BindingStrength};
use super::super::conceptmap::ConceptMapLoader;
use super::super::error::Origin;
use super::super::problem::ProblemKind;
use super::super::valueset::ValueSetLoader;
use super::*;

const LOINC: &str = "http://loinc.org";
const SCT: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";
const LOCAL: &str = "http://hospital.example.org/codes";

fn terminology() -> Terminology {
    let mut vs = ValueSetLoader::new();
    vs.add_json(
        Origin::file("vitals.json"),
        br#"{"resourceType":"ValueSet","url":"http://x/vitals","compose":{"include":[
            {"system":"http://loinc.org","concept":[{"code":"8867-4"},{"code":"8480-6"}]}]}}"#,
    )
    .unwrap();
    vs.add_json(
        Origin::file("open.json"),
        br#"{"resourceType":"ValueSet","url":"http://x/open","compose":{"include":[
            {"system":"http://snomed.info/sct","filter":[{"property":"concept","op":"is-a","value":"404684003"}]}]}}"#,
    )
    .unwrap();
    let mut maps = ConceptMapLoader::new();
    maps.add_json(
        Origin::file("local.json"),
        br#"{"resourceType":"ConceptMap","url":"http://x/local-to-sct","group":[{
            "source":"http://hospital.example.org/codes","target":"http://snomed.info/sct",
            "element":[{"code":"DM2","target":[{"code":"44054006","display":"Diabetes mellitus type 2","equivalence":"equivalent"}]}]}]}"#,
    )
    .unwrap();
    Terminology::builder()
        .with_value_sets(vs.build())
        .with_concept_maps(maps.build())
        .with_binding(Binding::new(
            "Observation.code",
            "http://x/vitals",
            BindingStrength::Extensible,
        ))
        .with_binding(Binding::new(
            "Condition.code",
            "http://x/open",
            BindingStrength::Required,
        ))
        .build()
        .unwrap()
}

fn kinds(findings: &[Finding<'_>]) -> Vec<(Option<usize>, ProblemKind)> {
    findings
        .iter()
        .map(|f| (f.index, f.problem.kind()))
        .collect()
}

#[test]
fn a_clean_concept_finds_nothing_and_allocates_no_findings() {
    let term = terminology();
    let mut checker = term.checker();
    let codings = [Coding::new(LOINC, "8867-4"), Coding::new(SCT, "364075005")];
    let mut findings = Vec::new();
    for _ in 0..3 {
        checker.check_concept(
            &Concept {
                path: "Observation.code",
                codings: &codings,
            },
            &mut findings,
        );
    }
    assert!(findings.is_empty());
    assert_eq!(findings.capacity(), 0);
    let m = checker.metrics();
    assert_eq!((m.concepts, m.codings, m.bindings_checked), (3, 6, 3));
    assert_eq!(m.problems.iter().sum::<u64>(), 0);
}

#[test]
fn each_problem_with_its_coding() {
    let term = terminology();
    let mut checker = term.checker();
    let codings = [
        Coding::new("http://loinc.org/", "8867-5"),
        Coding {
            system: None,
            code: Some("x"),
            display: None,
        },
        Coding {
            system: Some(SCT),
            code: None,
            display: Some("text only"),
        },
        Coding::new(SCT, "38341004"),
        Coding {
            system: None,
            code: None,
            display: Some("ignored"),
        },
    ];
    let mut findings = Vec::new();
    checker.check_concept(
        &Concept {
            path: "Observation.component[0].code",
            codings: &codings,
        },
        &mut findings,
    );
    assert_eq!(
        kinds(&findings),
        [
            (Some(0), ProblemKind::MisspeltSystem),
            (Some(0), ProblemKind::BadCheckDigit),
            (Some(1), ProblemKind::NoSystem),
            (Some(2), ProblemKind::NoCode),
            (Some(3), ProblemKind::BadCheckDigit),
        ]
    );
    assert_eq!(
        findings[0].to_string(),
        "Observation.component[0].code.coding[0] `http://loinc.org/|8867-5`: code system `http://loinc.org/` is misspelt (trailing slash): use `http://loinc.org`"
    );
    assert_eq!(
        findings[1].problem.to_string(),
        "LOINC check digit is 5, but the digits before the hyphen give 4: a digit is mistyped"
    );
    assert_eq!(checker.metrics().problems_of(ProblemKind::BadCheckDigit), 2);
}

#[test]
fn local_codes_are_problems_only_alone() {
    let term = terminology();
    let mut checker = term.checker();
    let mut findings = Vec::new();
    let alone = [Coding::new("http://acme.org/codes", "A1")];
    checker.check_concept(
        &Concept {
            path: "Condition.category",
            codings: &alone,
        },
        &mut findings,
    );
    assert_eq!(kinds(&findings), [(Some(0), ProblemKind::UnknownSystem)]);
    findings.clear();
    let beside = [
        Coding::new("http://acme.org/codes", "A1"),
        Coding::new(SCT, "44054006"),
    ];
    checker.check_concept(
        &Concept {
            path: "Condition.category",
            codings: &beside,
        },
        &mut findings,
    );
    assert!(findings.is_empty());
}

#[test]
fn mapped_local_codes_add_a_coding_or_report_no_mapping() {
    let term = terminology();
    let mut checker = term.checker();
    let mut findings = Vec::new();
    let mapped = [Coding::new(LOCAL, "DM2")];
    let concept = Concept {
        path: "Condition.category",
        codings: &mapped,
    };
    checker.check_concept(&concept, &mut findings);
    assert!(findings.is_empty(), "{findings:?}");
    let mut added = Vec::new();
    assert_eq!(checker.map_concept(&concept, &mut added), 1);
    assert_eq!((&*added[0].system, &*added[0].code), (SCT, "44054006"));
    // Already holding the target: nothing to add.
    let both = [Coding::new(LOCAL, "DM2"), Coding::new(SCT, "44054006")];
    assert_eq!(
        checker.map_concept(
            &Concept {
                path: "Condition.category",
                codings: &both
            },
            &mut added
        ),
        0
    );
    let unmapped = [Coding::new(LOCAL, "DM9")];
    checker.check_concept(
        &Concept {
            path: "Condition.category",
            codings: &unmapped,
        },
        &mut findings,
    );
    assert_eq!(kinds(&findings), [(Some(0), ProblemKind::NoMapping)]);
    let m = checker.into_metrics();
    assert_eq!(
        (m.mappings_applied, m.mappings_by_map.as_slice()),
        (1, &[1][..])
    );
    let report = m.report(&term);
    assert_eq!(
        report.mappings_by_map.get("http://x/local-to-sct"),
        Some(&1)
    );
    assert_eq!(report.problems.get("no_mapping"), Some(&1));
}

#[test]
fn bindings_take_any_coding_and_report_what_cannot_be_checked() {
    let term = terminology();
    let mut checker = term.checker();
    let mut findings = Vec::new();
    let other = [Coding::new(LOINC, "2339-0"), Coding::new(SCT, "271649006")];
    checker.check_concept(
        &Concept {
            path: "Observation.code",
            codings: &other,
        },
        &mut findings,
    );
    assert_eq!(
        kinds(&findings),
        [
            (Some(0), ProblemKind::NotInValueSet),
            (Some(1), ProblemKind::NotInValueSet)
        ]
    );
    assert_eq!(
        findings[0].problem.to_string(),
        "not in value set http://x/vitals (extensible binding)"
    );
    findings.clear();
    let one_in = [Coding::new(SCT, "271649006"), Coding::new(LOINC, "8480-6")];
    checker.check_concept(
        &Concept {
            path: "Observation.code",
            codings: &one_in,
        },
        &mut findings,
    );
    assert!(findings.is_empty());
    let sct = [Coding::new(SCT, "44054006")];
    checker.check_concept(
        &Concept {
            path: "Condition.code",
            codings: &sct,
        },
        &mut findings,
    );
    assert!(findings.is_empty(), "a filter cannot say no");
    let m = checker.metrics();
    assert_eq!((m.bindings_checked, m.bindings_not_checkable), (3, 1));
}

#[test]
fn quantities() {
    let term = terminology();
    let mut checker = term.checker();
    let mut findings = Vec::new();
    let q = |system, code| Quantity {
        path: "Observation.valueQuantity",
        system,
        code,
    };
    for ok in [
        q(Some(UCUM), Some("mm[Hg]")),
        q(Some(UCUM), None),
        q(None, None),
    ] {
        checker.check_quantity(&ok, &mut findings);
    }
    assert!(findings.is_empty());
    checker.check_quantity(&q(Some(UCUM), Some("mcg")), &mut findings);
    checker.check_quantity(&q(None, Some("mg")), &mut findings);
    checker.check_quantity(
        &q(Some("http://unitsofmeasure.org/"), Some("ml/hr")),
        &mut findings,
    );
    checker.check_quantity(
        &q(Some("http://acme.org/units"), Some("tablet")),
        &mut findings,
    );
    assert_eq!(
        kinds(&findings),
        [
            (None, ProblemKind::BadUnit),
            (None, ProblemKind::NoSystem),
            (None, ProblemKind::MisspeltSystem),
            (None, ProblemKind::BadUnit),
            (None, ProblemKind::UnknownSystem),
        ]
    );
    assert_eq!(
        findings[0].to_string(),
        "Observation.valueQuantity `http://unitsofmeasure.org|mcg`: UCUM unit `mcg`: `mcg` (byte 0) is not a UCUM unit (UCUM writes `ug`)"
    );
    assert_eq!(
        checker.metrics().quantities,
        5,
        "codes without a unit code are not counted"
    );
}

#[test]
fn metrics_merge_across_threads() {
    let term = terminology();
    let (mut a, mut b) = (term.checker(), term.checker());
    let mut findings = Vec::new();
    let bad = [Coding::new(LOINC, "8867-5")];
    a.check_concept(
        &Concept {
            path: "Observation.category",
            codings: &bad,
        },
        &mut findings,
    );
    b.check_concept(
        &Concept {
            path: "Observation.category",
            codings: &bad,
        },
        &mut findings,
    );
    let mut total = a.into_metrics();
    total.merge(&b.into_metrics());
    assert_eq!(total.problems_of(ProblemKind::BadCheckDigit), 2);
    assert_eq!(total.concepts, 2);
    let json = serde_json::to_value(total.report(&term)).unwrap();
    assert_eq!(json["problems"]["bad_check_digit"], 2);
}

#[test]
fn known_systems_come_from_the_job() {
    let term = Terminology::builder()
        .with_known_system("http://acme.org/codes")
        .build()
        .unwrap();
    let mut checker = term.checker();
    let mut findings = Vec::new();
    let codings = [Coding::new("http://acme.org/codes", "A1")];
    checker.check_concept(
        &Concept {
            path: "Condition.code",
            codings: &codings,
        },
        &mut findings,
    );
    assert!(findings.is_empty());
    assert_eq!(
        term.classify_system("http://acme.org/codes"),
        SystemVerdict::Known(super::super::CodeRules::None)
    );
}

#[test]
fn a_binding_to_a_missing_value_set_fails_the_build() {
    let err = Terminology::builder()
        .with_binding(Binding::new(
            "Observation.code",
            "http://x/nowhere",
            BindingStrength::Required,
        ))
        .build()
        .unwrap_err();
    assert!(matches!(err, TerminologyError::UnboundValueSet { .. }));
}
