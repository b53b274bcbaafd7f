//! Code checks end to end: the bundled sample with two mistyped codes and
//! one local code loads whole, the curation queue holds exactly those three,
//! each row says how many problems it has, and a ConceptMap resolves the
//! local code on reload.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::{duckdb, fhirlake, run_json, sample_dir, scan};

const LOCAL: &str = "http://hospital.example.org/CodeSystem/lab";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";

/// `fhirlake curation list --json` (one item per line).
fn curation(lake: &Path, extra: &[&str]) -> Vec<Value> {
    let out = fhirlake()
        .args(["curation", "list", "--json", "--lake"])
        .arg(lake)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn keys(items: &[Value]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or("").to_owned();
            (s("system"), s("code"), s("problem"))
        })
        .collect()
}

/// Replaces `from` by `to` in the first line of `file` holding `from`;
/// returns that line's resource id.
fn mutate_first(file: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let mut id = None;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if id.is_none() && line.contains(from) {
                let v: Value = serde_json::from_str(line).unwrap();
                id = Some(v["id"].as_str().unwrap().to_owned());
                line.replacen(from, to, 1)
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
    id.unwrap_or_else(|| panic!("{from} is not in {}", file.display()))
}

#[test]
fn the_curation_queue_holds_exactly_the_bad_codes_and_a_concept_map_resolves_the_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sample");
    std::fs::create_dir_all(&input).unwrap();
    for entry in std::fs::read_dir(sample_dir("bds-r4-10")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, input.join(path.file_name().unwrap())).unwrap();
    }
    // Two mistyped codes (check digits) and one code only a local system knows.
    let observations = input.join("Observation.ndjson");
    let bad_loinc = mutate_first(
        &observations,
        r#""system":"http://loinc.org","code":"8302-2""#,
        r#""system":"http://loinc.org","code":"8302-3""#,
    );
    let local = mutate_first(
        &observations,
        r#""system":"http://loinc.org","code":"29463-7""#,
        &format!(r#""system":"{LOCAL}","code":"WT-KG""#),
    );
    let conditions = input.join("Condition.ndjson");
    let condition: Value = serde_json::from_str(
        std::fs::read_to_string(&conditions)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let sct = condition["code"]["coding"][0]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = sct.chars().last().unwrap().to_digit(10).unwrap();
    let bad_sct = format!("{}{}", &sct[..sct.len() - 1], (last + 1) % 10);
    let bad_condition = mutate_first(
        &conditions,
        &format!(r#""code":"{sct}""#),
        &format!(r#""code":"{bad_sct}""#),
    );

    let lake = dir.path().join("lake");
    let summary = run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&lake)
            .arg(&input),
        0,
    );
    // Nothing is dropped: every line loaded.
    assert_eq!(summary["totals"]["quarantined"], 0);
    let codes = &summary["code_checks"];
    assert_eq!(codes["resources_with_issues"], 3, "{codes}");
    assert_eq!(codes["curation_open"], 3, "{codes}");
    assert_eq!(codes["problems"]["bad_check_digit"], 2, "{codes}");
    assert_eq!(codes["problems"]["unknown_system"], 1, "{codes}");

    let items = curation(&lake, &[]);
    let wanted: BTreeSet<_> = [
        (LOINC, "8302-3", "bad_check_digit"),
        (SNOMED, bad_sct.as_str(), "bad_check_digit"),
        (LOCAL, "WT-KG", "unknown_system"),
    ]
    .iter()
    .map(|(s, c, p)| (s.to_string(), c.to_string(), p.to_string()))
    .collect();
    assert_eq!(keys(&items), wanted);
    let example_of = |code: &str| {
        let item = items.iter().find(|i| i["code"] == code).unwrap();
        assert_eq!(item["count"], 1, "{item}");
        item["examples"][0]["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(example_of("8302-3"), bad_loinc);
    assert_eq!(example_of(&bad_sct), bad_condition);
    assert_eq!(example_of("WT-KG"), local);

    // Each row says how many problems it has; an analyst filters on it.
    if let Some(rows) = duckdb(&format!(
        "SELECT id, _code_issues FROM {} WHERE _code_issues > 0 \
         UNION ALL SELECT id, _code_issues FROM {} WHERE _code_issues > 0 ORDER BY id",
        scan(&lake, "observation"),
        scan(&lake, "condition")
    )) {
        let mut want = vec![bad_loinc.clone(), local.clone(), bad_condition.clone()];
        want.sort();
        let got: Vec<String> = rows
            .iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, want);
        assert!(rows.iter().all(|r| r[1] == 1));
        let unchecked = duckdb(&format!(
            "SELECT count(*) FROM {} WHERE _code_issues IS NULL",
            scan(&lake, "observation")
        ))
        .unwrap();
        assert_eq!(unchecked[0][0], 0, "every row was checked");
        let queue = duckdb(&format!(
            "SELECT count(*), sum(count) FROM {} WHERE resolved_at IS NULL",
            scan(&lake, "_curation")
        ))
        .unwrap();
        assert_eq!(queue[0], [Value::from(3), Value::from(3)]);
    }

    // A ConceptMap for the local code, and a newer version of that
    // Observation: the mapped LOINC coding is added, the original kept,
    // and the queue item is resolved.
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    std::fs::write(
        maps.join("lab.json"),
        format!(
            r#"{{"resourceType":"ConceptMap","url":"http://hospital.example.org/ConceptMap/lab-to-loinc","status":"active",
              "group":[{{"source":"{LOCAL}","target":"{LOINC}",
                "element":[{{"code":"WT-KG","target":[{{"code":"29463-7","display":"Body weight","equivalence":"equivalent"}}]}}]}}]}}"#
        ),
    )
    .unwrap();
    let line = std::fs::read_to_string(&observations)
        .unwrap()
        .lines()
        .find(|l| l.contains("WT-KG"))
        .unwrap()
        .to_owned();
    let mut newer: Value = serde_json::from_str(&line).unwrap();
    newer["meta"] = serde_json::json!({"lastUpdated": "2030-01-01T00:00:00Z"});
    let delta = dir.path().join("delta");
    std::fs::create_dir_all(&delta).unwrap();
    std::fs::write(delta.join("Observation.ndjson"), format!("{newer}\n")).unwrap();
    let summary = run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(&lake)
            .arg("--concept-maps")
            .arg(&maps)
            .arg(&delta),
        0,
    );
    let codes = &summary["code_checks"];
    assert_eq!(codes["mappings_applied"], 1, "{codes}");
    assert_eq!(codes["curation_resolved"], 1, "{codes}");
    assert_eq!(codes["curation_open"], 2, "{codes}");
    assert_eq!(
        keys(&curation(&lake, &[])),
        wanted
            .iter()
            .filter(|k| k.1 != "WT-KG")
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    let all = curation(&lake, &["--all"]);
    let resolved = all.iter().find(|i| i["code"] == "WT-KG").unwrap();
    assert!(
        resolved["resolved_by"]
            .as_str()
            .unwrap()
            .contains("lab-to-loinc"),
        "{resolved}"
    );
    if let Some(rows) = duckdb(&format!(
        "SELECT resource, _code_issues FROM {} WHERE id = '{local}'",
        scan(&lake, "observation")
    )) {
        assert_eq!(rows.len(), 1);
        let stored: Value = serde_json::from_str(rows[0][0].as_str().unwrap()).unwrap();
        let codings = stored["code"]["coding"].as_array().unwrap();
        assert_eq!(
            codings[0]["system"], LOCAL,
            "the original coding stays first"
        );
        assert_eq!(codings[1]["system"], LOINC);
        assert_eq!(codings[1]["code"], "29463-7");
        assert_eq!(rows[0][1], 0);
    }

    // The queue's commits are recorded like every other: the lake verifies.
    let verify = fhirlake()
        .args(["verify", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // Without code checks, rows carry no count and the queue is untouched.
    let off = dir.path().join("off");
    let summary = run_json(
        fhirlake()
            .args(["load", "--json", "--no-code-checks", "--lake"])
            .arg(&off)
            .arg(&input),
        0,
    );
    assert!(summary.get("code_checks").is_none());
    assert!(!off.join("_curation").exists());
}
