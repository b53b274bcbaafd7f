//! Cross-checks over `tests/fixtures/terminology/check-digit-codes.tsv`:
//! every LOINC and SNOMED CT code of the US Core examples and the bundled
//! Synthea data, with the check digit python-stdnum computed
//! (`tests/support/check_digits.py extract`). Here the Rust side must pass
//! every code, compute the same check digit, and reject every code with one
//! digit changed; `check_digits.py verify` asserts the same with stdnum.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::checks::{loinc, snomed};
use super::engine::{Coding, Concept, Quantity};
use super::systems::{LOINC, SNOMED, UCUM};
use super::testdata;
use super::{ProblemKind, Terminology};

struct Row {
    system: String,
    code: String,
    check_digit: u8,
    sources: String,
}

fn rows() -> Vec<Row> {
    let path = testdata::fixture("check-digit-codes.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty());
    assert_eq!(
        lines.next(),
        Some("system\tcode\tcheck_digit\tmethod\tsources")
    );
    lines
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 5, "{line}");
            Row {
                system: f[0].to_string(),
                code: f[1].to_string(),
                check_digit: f[2].parse().expect("a digit"),
                sources: f[4].to_string(),
            }
        })
        .collect()
}

/// Every code with one digit changed (each position, each other digit).
fn mutants(code: &str) -> impl Iterator<Item = String> + '_ {
    code.char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .flat_map(move |(i, c)| {
            ('0'..='9').filter(move |&d| d != c).map(move |d| {
                let mut m = code.to_string();
                m.replace_range(i..i + 1, d.encode_utf8(&mut [0; 4]));
                m
            })
        })
}

fn rust_valid(system: &str, code: &str) -> bool {
    match system {
        LOINC => loinc::check(code).is_ok(),
        SNOMED => snomed::check_concept_id(code, 0).is_ok(),
        other => panic!("{other}"),
    }
}

#[test]
fn every_code_passes_with_stdnums_check_digit_and_every_one_digit_change_fails() {
    let rows = rows();
    for source in ["us-core-examples", "synthea-10", "bds-r4-10"] {
        assert!(
            rows.iter().filter(|r| r.sources.contains(source)).count() > 20,
            "{source}"
        );
    }
    assert!(rows.iter().filter(|r| r.system == LOINC).count() > 150);
    assert!(rows.iter().filter(|r| r.system == SNOMED).count() > 300);
    let mut mutations = 0;
    for row in &rows {
        let (system, code) = (row.system.as_str(), row.code.as_str());
        assert!(rust_valid(system, code), "{code} fails");
        let digit = match system {
            LOINC => loinc::check_digit(code.rsplit_once('-').expect("a hyphen").0),
            _ => snomed::verhoeff_check_digit(&code.as_bytes()[..code.len() - 1]),
        };
        assert_eq!(digit, row.check_digit, "{code}: Rust and stdnum disagree");
        for mutant in mutants(code) {
            mutations += 1;
            assert!(!rust_valid(system, &mutant), "{code} → {mutant} passes");
        }
    }
    assert!(mutations > 30_000, "{mutations}");
}

#[test]
fn the_checker_finds_nothing_in_the_fixture_codes() {
    let term = Terminology::builder().build().unwrap();
    let mut checker = term.checker();
    let rows = rows();
    let mut findings = Vec::new();
    for row in &rows {
        let codings = [Coding::new(&row.system, &row.code)];
        checker.check_concept(
            &Concept {
                path: "Observation.code",
                codings: &codings,
            },
            &mut findings,
        );
    }
    assert!(findings.is_empty(), "{}", findings[0]);
    let m = checker.metrics();
    assert_eq!(m.codings, rows.len() as u64);
    assert_eq!(m.problems_of(ProblemKind::BadCheckDigit), 0);
}

/// Runs `check_digits.py verdicts` on every code and every mutant and
/// compares one by one. Needs a Python with python-stdnum:
/// `FHIRLAKE_STDNUM_PYTHON=/path/to/venv/bin/python cargo test -- --ignored stdnum`.
#[test]
#[ignore = "needs python-stdnum: set FHIRLAKE_STDNUM_PYTHON"]
fn verdicts_agree_with_stdnum_one_by_one() {
    let python = std::env::var("FHIRLAKE_STDNUM_PYTHON").expect("FHIRLAKE_STDNUM_PYTHON");
    let script = testdata::repo().join("tests/support/check_digits.py");
    let mut cases = Vec::new();
    for row in rows() {
        cases.push((row.system.clone(), row.code.clone()));
        cases.extend(mutants(&row.code).map(|m| (row.system.clone(), m)));
    }
    let mut child = Command::new(python)
        .arg(script)
        .arg("verdicts")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut input = String::new();
    for (system, code) in &cases {
        input.push_str(&format!("{system}\t{code}\n"));
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python finishes");
    writer.join().expect("writer").expect("write");
    assert!(out.status.success());
    let verdicts: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    for ((system, code), verdict) in cases.iter().zip(verdicts) {
        assert_eq!(
            rust_valid(system, code),
            verdict == "valid",
            "{code}: stdnum says {verdict}"
        );
    }
}

/// Checks per second over the fixture codes and the shared data's units;
/// prints, asserts nothing about speed.
#[test]
#[ignore = "benchmark: cargo test --release -- --ignored --nocapture bench"]
fn bench_checks_per_second() {
    let term = Terminology::builder().build().unwrap();
    let mut checker = term.checker();
    let rows = rows();
    let units = [
        "mg/dL",
        "mm[Hg]",
        "10*3/uL",
        "kg/m2",
        "mL/min/{1.73_m2}",
        "/min",
        "Cel",
        "%",
    ];
    let mut findings = Vec::new();
    let rounds = 2_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for row in &rows {
            let codings = [Coding::new(&row.system, &row.code)];
            checker.check_concept(
                &Concept {
                    path: "Observation.code",
                    codings: &codings,
                },
                &mut findings,
            );
        }
    }
    let codings = start.elapsed();
    let start = Instant::now();
    for _ in 0..rounds * 50 {
        for unit in units {
            let q = Quantity {
                path: "Observation.valueQuantity",
                system: Some(UCUM),
                code: Some(unit),
            };
            checker.check_quantity(&q, &mut findings);
        }
    }
    let quantities = start.elapsed();
    assert!(findings.is_empty());
    let n = (rounds * rows.len()) as f64;
    let q = (rounds * 50 * units.len()) as f64;
    println!(
        "codings: {:.2} M checks/s ({} codes); UCUM units: {:.2} M checks/s",
        n / codings.as_secs_f64() / 1e6,
        rows.len(),
        q / quantities.as_secs_f64() / 1e6
    );
}
