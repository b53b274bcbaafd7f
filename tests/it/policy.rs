//! The policy stage end to end: the shipped `part2` and `research` policies
//! and site policies, loaded through the CLI and read back with DuckDB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{duckdb, fhirlake, open_lake, run_json, sample_dir, scan};

mod segregated_lake;

fn part2_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy/part2")
}

/// table → id → the rule that must segregate it (written by make.py).
fn expected_segregated() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(part2_fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_with_policy(lake: &Path, input: &Path, policy: &str) -> Value {
    run_json(
        fhirlake()
            .args(["load", "--json", "--policy", policy, "--lake"])
            .arg(lake)
            .arg(input),
        0,
    )
}

/// The id of the first resource of an NDJSON file.
fn first_id(ndjson: &Path) -> String {
    let text = std::fs::read_to_string(ndjson).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["id"].as_str().unwrap().to_owned()
}

/// lines = inserted + updated + unchanged + quarantined + filtered, the
/// right-hand side for one input of a job summary.
fn counted_lines(input: &Value) -> u64 {
    [
        "inserted",
        "updated",
        "unchanged",
        "quarantined",
        "filtered",
    ]
    .iter()
    .map(|k| input[*k].as_u64().unwrap_or(0))
    .sum()
}

/// `fhirlake verify` passes on the lake.
fn assert_verifies(lake: &Path) {
    let out = fhirlake()
        .args(["verify", "--lake"])
        .arg(lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Rows of the `_segregated/` tables a `status --json` report counts.
fn segregated_rows(status: &Value) -> u64 {
    status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("_segregated/"))
        .map(|t| t["rows"].as_u64().unwrap())
        .sum()
}

fn ids_of(rows: &[Vec<Value>]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect()
}

fn sql_list(ids: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    ids.into_iter()
        .map(|id| format!("'{}'", id.as_ref().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn part2_keeps_sensitive_records_out_of_the_main_tables_and_accounts_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let summary = load_with_policy(&lake, &part2_fixture(), "part2");
    let expected = expected_segregated();

    // Every line is accounted for, and the per-rule counts match the fixture.
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    for input in summary["inputs"].as_array().unwrap() {
        let rows = &input["lines"].as_u64().unwrap();
        let counted = counted_lines(input);
        assert_eq!(*rows, counted, "{input}");
        for (rule, n) in input["policy_rules"].as_object().into_iter().flatten() {
            *by_rule.entry(rule.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for rules in expected.values() {
        for rule in rules.values() {
            *wanted.entry(rule.clone()).or_default() += 1;
        }
    }
    assert_eq!(by_rule, wanted);
    let policy_sha = hex_sha256(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/policy/part2.toml"))
            .unwrap(),
    );
    assert_eq!(summary["policy_version"], policy_sha.as_str());

    // The status report counts them as segregated, table by table.
    let page = dir.path().join("status.html");
    let status = run_json(
        fhirlake()
            .args(["status", "--json", "--lake"])
            .arg(&lake)
            .arg("--html")
            .arg(&page),
        0,
    );
    let segregated = segregated_rows(&status);
    let expected_total: usize = expected.values().map(BTreeMap::len).sum();
    assert_eq!(segregated, expected_total as u64);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(&format!(
            "id=\"card-segregated-rows\"><span class=\"value\">{segregated}</span>"
        )),
        "the page's card"
    );

    let Some(_) = duckdb("select 1") else { return };
    for (table, rules) in &expected {
        let ids = sql_list(rules.keys());
        let in_main = duckdb(&format!(
            "select id from {} where id in ({ids})",
            scan(&lake, table)
        ))
        .unwrap();
        assert!(
            in_main.is_empty(),
            "{table}: {in_main:?} reached the main table"
        );
        let segregated = duckdb(&format!(
            "select id, json_extract_string(resource, '$.meta.tag[0].code'), \
                    json_extract_string(resource, '$.meta.tag[0].system'), _line \
             from {} order by id",
            scan(&lake, &format!("_segregated/{table}"))
        ))
        .unwrap();
        let found: BTreeMap<String, String> = segregated
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_owned(),
                    r[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(&found, rules, "{table}");
        for row in &segregated {
            assert_eq!(row[2], "urn:fhirlake:policy-rule");
            assert!(row[3].as_i64().unwrap() > 0, "lineage: {row:?}");
        }
    }
    // What stayed: the Synthea records, nicotine dependence, the unlabelled DS4P examples.
    let kept = duckdb(&format!(
        "select count(*) from {}",
        scan(&lake, "condition")
    ))
    .unwrap();
    assert_eq!(kept[0][0], 45 - 4);
    let kept = ids_of(
        &duckdb(&format!(
            "select id from {} order by id",
            scan(&lake, "observation")
        ))
        .unwrap(),
    );
    assert_eq!(
        kept,
        [
            "example-extension-display",
            "example-extension-sec-label-related-artifact-provenance",
            "heart-rate"
        ]
        .map(String::from)
        .into()
    );
    assert!(
        ids_of(&duckdb(&format!("select id from {}", scan(&lake, "condition"))).unwrap())
            .contains("nicotine")
    );
    // Coded Part 2 records are labelled as CMS labels them.
    let labels = duckdb(&format!(
        "select resource from {} where id = 'sud-icd10'",
        scan(&lake, "_segregated/condition")
    ))
    .unwrap();
    let stored: Value = serde_json::from_str(labels[0][0].as_str().unwrap()).unwrap();
    let codes: Vec<&str> = stored["meta"]["security"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["42CFRPart2", "R"]);

    // The lake verifies, segregated tables included; a re-run changes nothing.
    assert_verifies(&lake);
    let again = run_json(
        fhirlake()
            .args(["load", "--json", "--force", "--policy", "part2", "--lake"])
            .arg(&lake)
            .arg(part2_fixture()),
        0,
    );
    assert_eq!(again["changed"], false, "{}", again["totals"]);
    let total = duckdb(&format!(
        "select count(*) from {}",
        scan(&lake, "_segregated/condition")
    ))
    .unwrap();
    assert_eq!(total[0][0], 4);
}

#[test]
fn policy_check_explains_which_rule_matched_and_why() {
    let out = fhirlake()
        .args(["policy", "check", "--policy", "part2", "--input"])
        .arg(part2_fixture().join("Condition.ndjson"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Condition/sud-icd10  SEGREGATED"), "{text}");
    assert!(
        text.contains(
            "part2-codes (segregate): code F11.20 (http://hl7.org/fhir/sid/icd-10-cm) at Condition.code, \
             in value set cms-bfd-samhsa"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "fail-closed (segregate): rule `part2-codes` cannot evaluate it: code `F11.20`"
        ),
        "{text}"
    );
    assert!(
        text.contains("45 resources: 41 kept, 4 segregated"),
        "{text}"
    );
    assert!(
        !text.contains("Condition/nicotine"),
        "unmatched resources are listed only with --all: {text}"
    );

    let out = fhirlake()
        .args([
            "policy", "check", "--json", "--all", "--policy", "part2", "--input",
        ])
        .arg(part2_fixture().join("Patient.ndjson"))
        .output()
        .unwrap();
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 16);
    let p002 = records.iter().find(|r| r["id"] == "P002").unwrap();
    assert_eq!(p002["outcome"], "segregate");
    assert!(
        p002["rules"][0]["why"]
            .as_str()
            .unwrap()
            .contains("in an inline label"),
        "{p002}"
    );
}

/// The strings that identify Synthea's people: names, telecoms, addresses,
/// identifiers other than the resource id, mothers' maiden names.
fn identifying_strings(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // A practitioner's address and telecom are the practice's.
    for (file, person) in [
        ("Patient.000.ndjson", true),
        ("Practitioner.000.ndjson", false),
    ] {
        for line in std::fs::read_to_string(dir.join(file)).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let mut add = |v: &Value| {
                if let Some(s) = v.as_str()
                    && s.len() >= 5
                    && s != r["id"]
                {
                    found.insert(s.to_owned());
                }
            };
            for name in r["name"].as_array().into_iter().flatten() {
                add(&name["family"]);
                name["given"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(&mut add);
            }
            if person {
                for t in r["telecom"].as_array().into_iter().flatten() {
                    add(&t["value"]);
                }
                for a in r["address"].as_array().into_iter().flatten() {
                    a["line"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .for_each(&mut add);
                }
            }
            // A practitioner's NPI is public, and references name them by it.
            for i in r["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|_| person)
            {
                add(&i["value"]);
            }
            for e in r["extension"].as_array().into_iter().flatten() {
                add(&e["valueString"]);
            }
        }
    }
    found
}

/// Rows of any Parquet file of the lake whose text holds one of `needles`.
fn rows_holding(lake: &Path, needles: &BTreeSet<String>) -> Option<i64> {
    let pattern: String = needles
        .iter()
        .map(|n| {
            n.chars()
                .map(|c| match c {
                    '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
                    | '\\' => format!("\\{c}"),
                    c => c.to_string(),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|");
    let rows = duckdb(&format!(
        "select count(*) from read_parquet('{}/**/*.parquet', union_by_name = true) t \
         where regexp_matches(t::varchar, '{}')",
        lake.display(),
        pattern.replace('\'', "''")
    ))?;
    rows[0][0].as_i64()
}

#[test]
fn the_research_profile_leaves_no_direct_identifier_anywhere_in_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let synthea = sample_dir("synthea-10");
    let needles = identifying_strings(&synthea);
    assert!(needles.len() > 100, "{needles:?}");
    // The search finds them in a lake loaded without the profile ...
    let plain = dir.path().join("plain");
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&plain)
            .arg(&synthea),
        0,
    );
    let Some(before) = rows_holding(&plain, &needles) else {
        return;
    };
    assert!(before > 1000, "{before}");
    // ... and in no row of any file of a lake loaded with it.
    let lake = dir.path().join("research");
    let summary = load_with_policy(&lake, &synthea, "research");
    assert_eq!(rows_holding(&lake, &needles), Some(0));
    let patients = summary["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"].as_str().unwrap().ends_with("Patient.000.ndjson"))
        .unwrap();
    assert_eq!(
        patients["policy_rules"]["minimum-necessary-people,minimum-necessary"], 13,
        "{patients}"
    );
    // What research needs stays: birth dates, gender, race; the views see the redacted resource.
    let rows = duckdb(&format!(
        "select count(birth_date), count(gender), count(race_code), count(family_name), count(ssn), count(city), \
                count(*) filter (where json_extract_string(resource, '$.meta.security[0].code') = 'REDACTED') \
         from {}",
        scan(&lake, "patient")
    ))
    .unwrap();
    assert_eq!(rows[0], [13, 13, 13, 0, 0, 0, 13].map(Value::from));
}

#[test]
fn a_site_policy_denies_redacts_and_labels_by_its_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("site.toml");
    std::fs::write(
        &policy,
        r#"
name = "site"
[valuesets.intimate-partner-abuse]
codes = ["http://snomed.info/sct|706893006"]

[[rule]]
name = "sdv-label"
action = "label"
codes = ["intimate-partner-abuse"]
add_labels = ["SDV"]

[[rule]]
name = "no-immunizations"
action = "deny"
types = ["Immunization"]

[[rule]]
name = "no-contact"
action = "redact"
types = ["Patient"]
paths = ["telecom", "address"]
"#,
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let summary = load_with_policy(&lake, &sample_dir("synthea-10"), policy.to_str().unwrap());
    let immunizations = summary["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["path"]
                .as_str()
                .unwrap()
                .ends_with("Immunization.000.ndjson")
        })
        .unwrap();
    assert_eq!(immunizations["filtered"], 161);
    assert_eq!(immunizations["filtered_by"]["no-immunizations"], 161);
    assert!(
        !lake.join("immunization").exists(),
        "denied resources are not stored"
    );

    // Redact removes exactly the listed paths: the stored JSON is the input
    // without them, plus the REDACTED label.
    let Some(rows) = duckdb(&format!(
        "select id, resource, city from {} order by id",
        scan(&lake, "patient")
    )) else {
        return;
    };
    let inputs: BTreeMap<String, Value> =
        std::fs::read_to_string(sample_dir("synthea-10").join("Patient.000.ndjson"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["id"].as_str().unwrap().to_owned(), v)
            })
            .collect();
    assert_eq!(rows.len(), 13);
    for row in rows {
        let stored: Value = serde_json::from_str(row[1].as_str().unwrap()).unwrap();
        let mut wanted = inputs[row[0].as_str().unwrap()].clone();
        let object = wanted.as_object_mut().unwrap();
        object.remove("telecom");
        object.remove("address");
        object["meta"]["security"] = serde_json::json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}]);
        assert_eq!(stored, wanted);
        assert_eq!(
            row[2],
            Value::Null,
            "the view column is read from the redacted resource"
        );
    }
    // Labelled resources stay in the main table with the label added.
    let labelled = duckdb(&format!(
        "select count(*) from {} where json_extract_string(resource, '$.code.coding[0].code') = '706893006' \
           and json_extract_string(resource, '$.meta.security[0].code') = 'SDV'",
        scan(&lake, "condition")
    ))
    .unwrap();
    let abuse = std::fs::read_to_string(sample_dir("synthea-10").join("Condition.000.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"706893006\""))
        .count();
    assert_eq!(abuse, 22);
    assert_eq!(labelled[0][0], abuse as i64);
}

#[test]
fn a_policy_file_with_a_mistake_stops_the_load_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mistakes = [
        (
            "[[rule]]\nname = \"x\"\naction = \"deny\"\nlables = [\"R\"]\n",
            "lables",
        ),
        // A misspelt element would remove the real one: refused, with the fix.
        (
            "[tables.Patient]\nelements = [\"gender\", \"birthdate\"]\n",
            "`birthdate` is not an element of Patient in FHIR R4 or R5 (did you mean `birthDate`?)",
        ),
    ];
    for (n, (text, named)) in mistakes.into_iter().enumerate() {
        let policy = dir.path().join(format!("bad-{n}.toml"));
        std::fs::write(&policy, text).unwrap();
        let lake = dir.path().join(format!("lake-{n}"));
        let out = fhirlake()
            .args(["load", "--policy"])
            .arg(&policy)
            .arg("--lake")
            .arg(&lake)
            .arg(sample_dir("synthea-10"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("policy {}", policy.display())) && err.contains(named),
            "{err}"
        );
        assert!(!lake.exists());
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_newer_version_the_policy_segregates_takes_the_older_one_out_of_the_main_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let condition = |updated: &str, code: &str| {
        format!(
            r#"{{"resourceType":"Condition","id":"c1","meta":{{"lastUpdated":"{updated}"}},"code":{{"coding":[{{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"{code}"}}]}},"recordedDate":"2021-01-01"}}"#
        )
    };
    let other = r#"{"resourceType":"Condition","id":"c2","meta":{"lastUpdated":"2021-01-01T00:00:00Z"},"code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"J45.909"}]}}"#;
    let first = crate::common::write_file(
        &dir.path().join("a"),
        "Condition.ndjson",
        &[condition("2021-01-01T00:00:00Z", "R69"), other.to_owned()],
    );
    load_with_policy(&lake, &first, "part2");
    let second = crate::common::write_file(
        &dir.path().join("b"),
        "Condition.ndjson",
        &[condition("2021-06-01T00:00:00Z", "F11.20")],
    );
    let summary = load_with_policy(&lake, &second, "part2");
    assert_eq!(summary["inputs"][0]["policy_rules"]["part2-codes"], 1);
    let Some(main) = duckdb(&format!(
        "select id from {} order by id",
        scan(&lake, "condition")
    )) else {
        return;
    };
    assert_eq!(ids_of(&main), ["c2".to_owned()].into());
    let segregated = duckdb(&format!(
        "select id from {}",
        scan(&lake, "_segregated/condition")
    ))
    .unwrap();
    assert_eq!(ids_of(&segregated), ["c1".to_owned()].into());
    assert_verifies(&lake);
}

/// Ids of `file`'s resources of `patient`, with their date (as written).
fn resources_of(
    file: &Path,
    patient: &str,
    date: &dyn Fn(&Value) -> Option<String>,
) -> Vec<(String, Option<String>)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["subject"]["reference"] == format!("Patient/{patient}")
                || r["patient"]["reference"] == format!("Patient/{patient}")
        })
        .map(|r| (r["id"].as_str().unwrap().to_owned(), date(&r)))
        .collect()
}

#[test]
fn consents_deny_a_patient_for_research_and_permit_only_later_data_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let synthea = sample_dir("synthea-10");
    let patients: Vec<String> = std::fs::read_to_string(synthea.join("Patient.000.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (opted_out, since_2015) = (&patients[0], &patients[2]);
    let consents = [
        format!(
            r#"{{"resourceType":"Consent","id":"opt-out","status":"active","patient":{{"reference":"Patient/{opted_out}"}},"provision":{{"type":"deny","purpose":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}}]}}}}"#
        ),
        format!(
            r#"{{"resourceType":"Consent","id":"since-2015","status":"active","patient":{{"reference":"Patient/{since_2015}"}},"provision":{{"type":"deny","provision":[{{"type":"permit","dataPeriod":{{"start":"2015-01-01"}}}}]}}}}"#
        ),
    ];
    crate::common::write_file(dir.path(), "consents.ndjson", &consents);
    let policy = dir.path().join("research-consent.toml");
    std::fs::write(
        &policy,
        "[consent]\nfile = \"consents.ndjson\"\npurpose = \"HRESCH\"\n\n[[rule]]\nname = \"consent\"\naction = \"deny\"\nconsent = true\n",
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let summary = load_with_policy(&lake, &synthea, policy.to_str().unwrap());

    let start = |r: &Value| r["period"]["start"].as_str().map(str::to_owned);
    let encounters_out = resources_of(&synthea.join("Encounter.000.ndjson"), opted_out, &start);
    let encounters_b = resources_of(&synthea.join("Encounter.000.ndjson"), since_2015, &start);
    let (later, earlier): (Vec<_>, Vec<_>) = encounters_b
        .iter()
        .partition(|(_, d)| d.as_deref().is_some_and(|d| d >= "2015-01-01"));
    assert!(!encounters_out.is_empty() && !later.is_empty() && !earlier.is_empty());
    let encounter_input = summary["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["path"]
                .as_str()
                .unwrap()
                .ends_with("Encounter.000.ndjson")
        })
        .unwrap();
    assert_eq!(
        encounter_input["filtered_by"]["consent"],
        (encounters_out.len() + earlier.len()) as u64
    );

    let Some(_) = duckdb("select 1") else { return };
    // Every type of the opted-out patient is gone; the other keeps what is dated 2015 or later.
    let patient_rows = duckdb(&format!(
        "select id from {} where id in ({})",
        scan(&lake, "patient"),
        sql_list([opted_out, since_2015])
    ))
    .unwrap();
    // A Patient resource has no date: a permit limited to dates does not reach it.
    assert!(patient_rows.is_empty(), "{patient_rows:?}");
    for table in ["condition", "encounter", "immunization"] {
        let rows = duckdb(&format!(
            "select count(*) from {} where json_extract_string(resource, '$.subject.reference') = 'Patient/{opted_out}' \
               or json_extract_string(resource, '$.patient.reference') = 'Patient/{opted_out}'",
            scan(&lake, table)
        ))
        .unwrap();
        assert_eq!(rows[0][0], 0, "{table}");
    }
    let kept = ids_of(&duckdb(&format!(
        "select id from {} where json_extract_string(resource, '$.subject.reference') = 'Patient/{since_2015}'",
        scan(&lake, "encounter")
    ))
    .unwrap());
    assert_eq!(kept, later.iter().map(|(id, _)| id.clone()).collect());
}

/// A Consent provision about an actor applies to the lake whose
/// `[consent] actor` it names, not to another; a lake that names no actor
/// is denied (it cannot tell whether the provision is about it).
#[test]
fn a_consent_about_an_actor_applies_only_to_the_lake_of_that_actor() {
    let dir = tempfile::tempdir().unwrap();
    let patients = sample_dir("synthea-10").join("Patient.000.ndjson");
    let id = first_id(&patients);
    let id = id.as_str();
    crate::common::write_file(
        dir.path(),
        "consents.ndjson",
        &[format!(
            r#"{{"resourceType":"Consent","id":"not-to-acme","status":"active","patient":{{"reference":"Patient/{id}"}},"provision":{{"type":"deny","actor":[{{"reference":{{"reference":"Organization/acme"}}}}]}}}}"#
        )],
    );
    let outcome = |actor: Option<&str>| {
        let policy = dir.path().join("p.toml");
        let actor_line = actor.map_or(String::new(), |a| format!("actor = \"{a}\"\n"));
        std::fs::write(
            &policy,
            format!("[consent]\nfile = \"consents.ndjson\"\npurpose = \"HRESCH\"\n{actor_line}\n[[rule]]\nname = \"consent\"\naction = \"deny\"\nconsent = true\n"),
        )
        .unwrap();
        let out = fhirlake()
            .args(["policy", "check", "--json", "--all", "--policy"])
            .arg(&policy)
            .arg("--input")
            .arg(&patients)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let records: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let denied: Vec<String> = records
            .iter()
            .filter(|r| r["outcome"] == "deny")
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        denied
    };
    assert_eq!(outcome(Some("Organization/acme")), [id]);
    assert!(outcome(Some("Organization/uni")).is_empty());
    assert_eq!(outcome(None), [id], "fail closed without an actor");
}

/// `[consent] table = "consent"`: the Consents a job enforces are the ones
/// earlier jobs loaded into the lake's own `consent` table (an export or a
/// sync brings them from the EHR); the Consent resources themselves are
/// never filtered by them, and the policy version covers them.
#[test]
fn consents_loaded_into_the_lake_are_enforced_by_the_next_load() {
    let dir = tempfile::tempdir().unwrap();
    let synthea = sample_dir("synthea-10");
    let patients = synthea.join("Patient.000.ndjson");
    let opted_out = first_id(&patients);
    let consent = crate::common::write_file(
        &dir.path().join("consents"),
        "Consent.ndjson",
        &[format!(
            r#"{{"resourceType":"Consent","id":"opt-out","meta":{{"lastUpdated":"2026-01-01T00:00:00Z"}},"status":"active","patient":{{"reference":"Patient/{opted_out}"}},"provision":{{"type":"deny","purpose":[{{"code":"HRESCH"}}]}}}}"#
        )],
    );
    let policy = dir.path().join("lake-consents.toml");
    std::fs::write(
        &policy,
        "[consent]\ntable = \"consent\"\npurpose = \"HRESCH\"\n\n[[rule]]\nname = \"consent\"\naction = \"deny\"\nconsent = true\n",
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let policy = policy.to_str().unwrap();
    let before = load_with_policy(&lake, &consent, policy);
    assert_eq!(
        before["totals"]["inserted"], 1,
        "the Consent itself is kept: {before:#}"
    );
    let after = load_with_policy(&lake, &patients, policy);
    let input = &after["inputs"][0];
    assert_eq!(input["filtered_by"]["consent"], 1, "{after:#}");
    assert_ne!(
        before["policy_version"], after["policy_version"],
        "the version covers the Consents read from the lake"
    );
    let held = crate::common::sql_blocking(
        &open_lake(&lake),
        &["patient"],
        &format!("SELECT count(*) FROM patient WHERE id = '{opted_out}'"),
    );
    assert_eq!(held[0][0], 0);
    // policy check reads the same Consents with --lake, and needs it.
    let check = |with_lake: bool| {
        let mut cmd = fhirlake();
        cmd.args(["policy", "check", "--json", "--policy", policy, "--input"])
            .arg(&patients)
            .env_remove("FHIRLAKE_LAKE");
        if with_lake {
            cmd.arg("--lake").arg(&lake);
        }
        cmd.output().unwrap()
    };
    let out = check(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&opted_out) && text.contains("\"deny\""),
        "{text}"
    );
    let out = check(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --lake"));
}

fn policy_apply(lake: &Path, policy: &str) -> Value {
    run_json(
        fhirlake()
            .args(["policy", "apply", "--json", "--policy", policy, "--lake"])
            .arg(lake),
        0,
    )
}

/// The ids of table `table` (main or `_segregated/…`), as DuckDB reads them.
fn ids_in(lake: &Path, table: &str) -> BTreeSet<String> {
    if !lake.join(table).join("_delta_log").exists() {
        return BTreeSet::new();
    }
    ids_of(&duckdb(&format!("select id from {}", scan(lake, table))).unwrap())
}

#[test]
fn policy_apply_moves_rows_loaded_before_the_policy_and_converges() {
    let Some(_) = duckdb("select 1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&lake)
            .arg(part2_fixture()),
        0,
    );
    let expected = expected_segregated();
    let total: usize = expected.values().map(BTreeMap::len).sum();

    // A dry run changes nothing; the apply moves exactly the Part 2 records.
    let dry = run_json(
        fhirlake()
            .args([
                "policy",
                "apply",
                "--dry-run",
                "--json",
                "--policy",
                "part2",
                "--lake",
            ])
            .arg(&lake),
        0,
    );
    assert_eq!(dry["plan"]["moves"]["segregated"], total as u64);
    assert!(dry["job"].is_null());
    assert!(!lake.join("_segregated").exists());
    let applied = policy_apply(&lake, "part2");
    assert_eq!(applied["plan"]["moves"]["segregated"], total as u64);
    let job = &applied["job"];
    assert_eq!(job["kind"], "policy_apply", "{job}");
    for input in job["inputs"].as_array().unwrap() {
        let counted = counted_lines(input);
        assert_eq!(input["lines"].as_u64().unwrap(), counted, "{input}");
    }
    for (table, rules) in &expected {
        let wanted: BTreeSet<String> = rules.keys().cloned().collect();
        assert!(
            ids_in(&lake, table).is_disjoint(&wanted),
            "{table}: Part 2 rows left in the main table"
        );
        assert_eq!(
            ids_in(&lake, &format!("_segregated/{table}")),
            wanted,
            "{table}"
        );
    }
    let main_after = |lake: &Path| {
        expected
            .keys()
            .map(|t| (t.clone(), ids_in(lake, t)))
            .collect::<BTreeMap<_, _>>()
    };
    let after_part2 = main_after(&lake);

    // Applied again: nothing to do. A plan whose job committed but was not
    // marked done (a crash after the commit) is finished by the next run,
    // and changes nothing; under another policy the run refuses.
    assert!(policy_apply(&lake, "part2")["job"].is_null());
    let plan_dir = lake
        .join("_fhirlake/policy-apply")
        .join(applied["plan"]["plan_id"].as_str().unwrap());
    std::fs::remove_file(plan_dir.join("applied.json")).unwrap();
    let refused = fhirlake()
        .args(["policy", "apply", "--policy", "research", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("did not finish") && stderr.contains("plan.json"),
        "{stderr}"
    );
    let resumed = policy_apply(&lake, "part2");
    assert_eq!(resumed["resumed"], true);
    assert!(plan_dir.join("applied.json").exists());
    assert_eq!(main_after(&lake), after_part2);
    for (table, rules) in &expected {
        let wanted: BTreeSet<String> = rules.keys().cloned().collect();
        assert_eq!(
            ids_in(&lake, &format!("_segregated/{table}")),
            wanted,
            "{table}"
        );
    }

    // A policy that denies SUD codes instead: coded Part 2 rows leave the
    // lake, the labelled ones (no rule of it matches) come back, each once.
    let deny = dir.path().join("deny.toml");
    std::fs::write(
        &deny,
        "name = \"deny-sud\"\n[[rule]]\nname = \"no-sud\"\naction = \"deny\"\n\
         codes = [\"cms-bfd-samhsa\", \"sud-snomed\", \"moud-rxnorm\"]\n",
    )
    .unwrap();
    let denied = policy_apply(&lake, deny.to_str().unwrap());
    let moves = &denied["plan"]["moves"];
    assert!(moves["removed"].as_u64().unwrap() > 0, "{moves}");
    assert!(moves["restored"].as_u64().unwrap() > 0, "{moves}");
    let sud = "sud-icd10";
    assert!(!ids_in(&lake, "condition").contains(sud));
    assert!(!ids_in(&lake, "_segregated/condition").contains(sud));
    for table in expected.keys() {
        let rows = duckdb(&format!(
            "select count(*), count(distinct id) from {}",
            scan(&lake, table)
        ))
        .unwrap();
        assert_eq!(rows[0][0], rows[0][1], "{table}: one row per id");
    }
    let restored: u64 = expected
        .keys()
        .map(|t| (ids_in(&lake, t).len() - after_part2[t].len()) as u64)
        .sum();
    assert_eq!(restored, moves["restored"].as_u64().unwrap());
    assert_verifies(&lake);
}

#[test]
fn kill_9_during_policy_apply_then_rerun_equals_a_clean_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fhirlake::bench::generate(&sample_dir(""), &data, 30_000_000, 7).unwrap();
    let policy = tmp.path().join("move.toml");
    std::fs::write(
        &policy,
        "name = \"move\"\n[[rule]]\nname = \"clinical\"\naction = \"segregate\"\n\
         types = [\"Observation\", \"Encounter\"]\n",
    )
    .unwrap();
    let (crashed, clean) = (tmp.path().join("crashed"), tmp.path().join("clean"));
    for lake in [&crashed, &clean] {
        run_json(
            fhirlake()
                .args(["load", "--json", "--no-code-checks", "--lake"])
                .arg(lake)
                .arg(&data),
            0,
        );
    }
    let apply = |lake: &Path| {
        let mut cmd = fhirlake();
        cmd.args(["policy", "apply", "--json", "--no-code-checks", "--policy"])
            .arg(&policy)
            .arg("--lake")
            .arg(lake);
        cmd
    };
    // Killed once its plan is in the lake: the commits are under way.
    let mut child = apply(&crashed)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let plans = crashed.join("_fhirlake/policy-apply");
    let has_plan = || {
        std::fs::read_dir(&plans)
            .map(|dirs| dirs.flatten().any(|d| d.path().join("plan.json").exists()))
            .unwrap_or(false)
    };
    while !has_plan() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    crate::common::kill_9_while_running(&mut child);
    let resumed = run_json(&mut apply(&crashed), 0);
    assert_eq!(resumed["resumed"], true, "{}", resumed["plan"]);
    run_json(&mut apply(&clean), 0);
    let tables = ["observation", "encounter", "patient"]
        .into_iter()
        .flat_map(|t| [t.to_owned(), format!("_segregated/{t}")])
        .filter(|t| clean.join(t).join("_delta_log").exists());
    crate::common::assert_converged(tables, (crashed.as_path(), clean.as_path()), scan, duckdb);
    // Nothing of the moved types is left in the main tables.
    let Some(_) = duckdb("select 1") else { return };
    assert!(ids_in(&crashed, "observation").is_empty());
    assert!(!ids_in(&crashed, "_segregated/observation").is_empty());
}

/// One NDJSON line per resource, in the order given.
fn write_ndjson(path: &Path, resources: &[Value]) {
    let text: String = resources.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `table` → (ids in the main table, id → rule tag in `_segregated/<table>`).
type Placement = BTreeMap<String, (BTreeSet<String>, BTreeMap<String, String>)>;

fn placement(lake: &Path, tables: &[&str]) -> Placement {
    tables
        .iter()
        .map(|table| {
            let segregated = format!("_segregated/{table}");
            let tags = match lake.join(&segregated).join("_delta_log").exists() {
                false => BTreeMap::new(),
                true => duckdb(&format!(
                    "select id, json_extract_string(resource, '$.meta.tag[0].code') from {}",
                    scan(lake, &segregated)
                ))
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            };
            (table.to_string(), (ids_in(lake, table), tags))
        })
        .collect()
}

#[test]
fn a_segregated_encounter_takes_its_compartment_across_files_jobs_and_policy_apply() {
    let Some(_) = duckdb("select 1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let at = serde_json::json!({"lastUpdated": "2024-05-01T10:00:00Z"});
    let patient = serde_json::json!({"reference": "Patient/p1"});
    let encounter = |id: &str, extra: Value| {
        let mut e = serde_json::json!({"resourceType": "Encounter", "id": id, "meta": at,
            "status": "finished", "class": {"code": "AMB"}, "subject": patient,
            "period": {"start": "2024-04-30T09:00:00Z"}});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    };
    let observation = |id: &str, visit: &str| {
        serde_json::json!({"resourceType": "Observation", "id": id, "meta": at, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": patient, "encounter": {"reference": format!("Encounter/{visit}")},
            "effectiveDateTime": "2024-04-30T09:30:00Z"})
    };
    // The visit's Observation and Claim come before the Encounter that makes
    // them Part 2, and the follow-up visit before its parent.
    let visit = dir.path().join("visit.ndjson");
    write_ndjson(
        &visit,
        &[
            observation("obs-during", "enc-sud"),
            serde_json::json!({"resourceType": "Claim", "id": "claim-1", "meta": at,
                "status": "active", "use": "claim", "patient": patient, "created": "2024-05-01",
                "item": [{"sequence": 1, "encounter": [{"reference": "Encounter/enc-sud"}]}]}),
            encounter(
                "enc-sub",
                serde_json::json!({"partOf": {"reference": "Encounter/enc-sud"}}),
            ),
            encounter(
                "enc-sud",
                serde_json::json!({"reasonCode": [{"coding": [{
                "system": "http://snomed.info/sct", "code": "445273005"}]}]}),
            ),
            encounter("enc-plain", serde_json::json!({})),
            observation("obs-plain", "enc-plain"),
        ],
    );
    // A later job: records of those visits arrive without their Encounters.
    let later = dir.path().join("later.ndjson");
    write_ndjson(
        &later,
        &[
            observation("obs-later", "enc-sud"),
            serde_json::json!({"resourceType": "DocumentReference", "id": "doc-1", "meta": at,
                "status": "current", "subject": patient,
                "content": [{"attachment": {"contentType": "text/plain"}}],
                "context": {"encounter": [{"reference": "Encounter/enc-sub"}]}}),
            observation("obs-plain-2", "enc-plain"),
        ],
    );
    let tables = ["encounter", "observation", "claim", "documentreference"];
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let tagged = |ids: &[&str]| {
        ids.iter()
            .map(|s| (s.to_string(), "part2-codes".to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    let wanted: Placement = [
        (
            "encounter",
            set(&["enc-plain"]),
            tagged(&["enc-sub", "enc-sud"]),
        ),
        (
            "observation",
            set(&["obs-plain", "obs-plain-2"]),
            tagged(&["obs-during", "obs-later"]),
        ),
        ("claim", set(&[]), tagged(&["claim-1"])),
        ("documentreference", set(&[]), tagged(&["doc-1"])),
    ]
    .into_iter()
    .map(|(t, main, seg)| (t.to_owned(), (main, seg)))
    .collect();

    let loaded = dir.path().join("loaded");
    let first_time = |summary: &Value| {
        summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find(|w| w.contains("segregated for the first time"))
            .map(str::to_owned)
    };
    for input in [&visit, &later] {
        let summary = load_with_policy(&loaded, input, "part2");
        for input in summary["inputs"].as_array().unwrap() {
            assert_eq!(
                input["lines"].as_u64().unwrap(),
                counted_lines(input),
                "{input}"
            );
        }
        // The first load finds no earlier records; the second, no new visit.
        assert_eq!(first_time(&summary), None);
    }
    assert_eq!(placement(&loaded, &tables), wanted);
    let why = duckdb(&format!(
        "select json_extract_string(resource, '$.meta.tag[0].display') from {} where id = 'doc-1'",
        scan(&loaded, "_segregated/documentreference")
    ))
    .unwrap();
    let why = why[0][0].as_str().unwrap();
    assert!(
        why.starts_with(
            "references Encounter/enc-sub — Encounter/enc-sub is segregated by rule `part2-codes`"
        ) && why.contains("part of Encounter/enc-sud"),
        "{why}"
    );
    assert_verifies(&loaded);
    // A new Part 2 visit in a lake that holds Encounters: earlier records of
    // it would stay in the main tables, and the summary says so.
    let new_visit = dir.path().join("new-visit.ndjson");
    write_ndjson(
        &new_visit,
        &[encounter(
            "enc-sud-2",
            serde_json::json!({"reasonCode": [{"coding": [{
            "system": "http://snomed.info/sct", "code": "445273005"}]}]}),
        )],
    );
    let summary = load_with_policy(&loaded, &new_visit, "part2");
    let warning = first_time(&summary).expect("a warning");
    assert!(
        warning.contains("1 Encounter(s)")
            && warning.contains("Encounter/enc-sud-2")
            && warning.contains("policy apply"),
        "{warning}"
    );

    // The same files loaded with no policy, then `policy apply part2`: the
    // same placement, and a second apply has nothing to do.
    let applied = dir.path().join("applied");
    for input in [&visit, &later] {
        run_json(
            fhirlake()
                .args(["load", "--json", "--lake"])
                .arg(&applied)
                .arg(input),
            0,
        );
    }
    assert_eq!(
        policy_apply(&applied, "part2")["plan"]["moves"]["segregated"],
        6
    );
    assert_eq!(placement(&applied, &tables), wanted);
    assert!(policy_apply(&applied, "part2")["job"].is_null());
    assert_verifies(&applied);
}

#[test]
fn a_table_without_raw_json_keeps_its_view_columns_and_nothing_else_of_the_source() {
    let Some(_) = duckdb("select 1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("minimum.toml");
    std::fs::write(
        &policy,
        "name = \"minimum\"\n[tables.Patient]\nraw = false\n[tables.Condition]\nraw = true\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let (full, minimum) = (dir.path().join("full"), dir.path().join("minimum"));
    let synthea = sample_dir("synthea-10");
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&full)
            .arg(&synthea),
        0,
    );
    let summary = load_with_policy(&minimum, &synthea, policy);
    for input in summary["inputs"].as_array().unwrap() {
        assert_eq!(
            input["lines"].as_u64().unwrap(),
            counted_lines(input),
            "{input}"
        );
    }
    let count = |sql: &str| duckdb(sql).unwrap()[0][0].as_i64().unwrap();
    let patients = count(&format!("select count(*) from {}", scan(&full, "patient")));
    assert!(patients > 0);
    // The stored JSON holds the keys and meta only, labelled and tagged.
    let stubs = count(&format!(
        "select count(*) from {} where json_keys(resource::json) = ['resourceType', 'id', 'meta'] \
         and resource like '%\"code\":\"REDACTED\"%' and resource like '%\"code\":\"raw-omitted\"%'",
        scan(&minimum, "patient")
    ));
    assert_eq!(stubs, patients);
    // Every other column — the view columns among them — is as a full load
    // stores it; other tables keep their JSON.
    let same = |table: &str, except: &str| {
        let columns = format!("* exclude (_job_id, _ingested_at{except})");
        let (a, b) = (scan(&full, table), scan(&minimum, table));
        count(&format!(
            "select (select count(*) from (select {columns} from {a} except select {columns} from {b})) \
                  + (select count(*) from (select {columns} from {b} except select {columns} from {a}))"
        ))
    };
    assert_eq!(same("patient", ", resource"), 0);
    assert_eq!(same("condition", ""), 0);
    let name_columns = count(&format!(
        "select count(*) from {} where resource like '%\"family\"%'",
        scan(&minimum, "patient")
    ));
    assert_eq!(name_columns, 0);

    // policy apply has nothing left to decide on in those rows: they stay.
    let applied = policy_apply(&minimum, policy);
    assert_eq!(applied["plan"]["raw_omitted"], patients);
    assert!(applied["job"].is_null(), "{applied}");
    assert_eq!(same("patient", ", resource"), 0);
    assert_verifies(&minimum);
}

#[test]
fn a_table_elements_list_keeps_only_those_root_elements_and_policy_apply_cuts_older_rows() {
    let Some(_) = duckdb("select 1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("minimum.toml");
    std::fs::write(
        &policy,
        "name = \"minimum\"\n[tables.Patient]\nelements = [\"gender\", \"birthDate\", \"deceased[x]\"]\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let (full, minimum) = (dir.path().join("full"), dir.path().join("minimum"));
    let synthea = sample_dir("synthea-10");
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&full)
            .arg(&synthea),
        0,
    );
    let summary = load_with_policy(&minimum, &synthea, policy);
    for input in summary["inputs"].as_array().unwrap() {
        assert_eq!(
            input["lines"].as_u64().unwrap(),
            counted_lines(input),
            "{input}"
        );
    }
    let count = |sql: &str| duckdb(sql).unwrap()[0][0].as_i64().unwrap();
    let patients = count(&format!("select count(*) from {}", scan(&full, "patient")));
    assert!(patients > 0);
    let subsets = |lake: &Path| {
        count(&format!(
            "select count(*) from {} where list_sort(json_keys(resource::json)) <@ \
             ['birthDate', 'deceasedDateTime', 'gender', 'id', 'meta', 'resourceType'] \
             and resource like '%\"code\":\"SUBSETTED\"%' and resource not like '%\"family\"%'",
            scan(lake, "patient")
        ))
    };
    assert_eq!(subsets(&minimum), patients);
    // The kept elements' view columns are as a full load has them; the
    // removed ones' are empty.
    let kept = "id, meta_last_updated, gender, birth_date, deceased, deceased_date_time";
    let differ = count(&format!(
        "select count(*) from (select {kept} from {} except select {kept} from {})",
        scan(&full, "patient"),
        scan(&minimum, "patient")
    ));
    assert_eq!(differ, 0);
    let identifying = count(&format!(
        "select count(*) from {} where coalesce(family_name, given_name, mrn, ssn, city, \
         state, postal_code) is not null",
        scan(&minimum, "patient")
    ));
    assert_eq!(identifying, 0);
    assert_eq!(
        count(&format!(
            "select count(*) from {}",
            scan(&minimum, "condition")
        )),
        count(&format!(
            "select count(*) from {}",
            scan(&full, "condition")
        ))
    );

    // Rows loaded whole before the policy listed elements are cut to them.
    policy_apply(&full, policy);
    assert_eq!(subsets(&full), patients);
    // The same JSON but meta.lastUpdated, which policy apply writes in from
    // the row (Synthea's resources have none; the load stood one in).
    let unstamped = "id, json_merge_patch(resource, '{\"meta\":{\"lastUpdated\":null}}')";
    let differ = count(&format!(
        "select count(*) from (select {unstamped} from {} except select {unstamped} from {})",
        scan(&full, "patient"),
        scan(&minimum, "patient")
    ));
    assert_eq!(differ, 0);
    assert!(policy_apply(&full, policy)["job"].is_null());
    assert_verifies(&full);
}
