//! `--tx URL`: the bundled sample loaded with an in-process terminology
//! server (`$validate-code`, alone or in batch Bundles, with its 429s and
//! outages). A code the server does not know is a problem in the row and the
//! curation queue; answers are cached in `_tx_cache`, so a reload asks
//! nothing; a server that is down never blocks the load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{duckdb, fhirlake, run_json, sample_dir, scan};
use crate::fhir_server::{Config, Faults, FhirServer, RetryAfter};

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const CVX: &str = "http://hl7.org/fhir/sid/cvx";

/// A code the server's LOINC lacks: the body height of 104 Observations.
const UNKNOWN: &str = "8302-2";

/// Every (system, code) of the files in `dir`, anywhere in the resources.
fn codes_in(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(value: &Value, out: &mut BTreeMap<String, BTreeSet<String>>) {
        match value {
            Value::Object(members) => {
                if let (Some(Value::String(s)), Some(Value::String(c))) =
                    (members.get("system"), members.get("code"))
                {
                    out.entry(s.clone()).or_default().insert(c.clone());
                }
                members.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            walk(&serde_json::from_str(line).unwrap(), &mut out);
        }
    }
    out
}

/// A server holding the sample's LOINC (but [`UNKNOWN`]), SNOMED CT and CVX
/// codes; RxNorm is not among its code systems.
fn server_for(dir: &Path, batch: bool) -> FhirServer {
    let mut systems = codes_in(dir);
    systems.retain(|s, _| [LOINC, SNOMED, CVX].contains(&s.as_str()));
    if let Some(loinc) = systems.get_mut(LOINC) {
        loinc.remove(UNKNOWN);
    }
    FhirServer::start_blocking(Config {
        code_systems: systems,
        batch,
        ..Config::default()
    })
}

fn load(lake: &Path, input: &Path, extra: &[&str]) -> Value {
    run_json(
        fhirlake()
            .args(["load", "--json", "--lake"])
            .arg(lake)
            .arg(input)
            .args(extra),
        0,
    )
}

fn curation(lake: &Path) -> Vec<Value> {
    let out = fhirlake()
        .args(["curation", "list", "--json", "--lake"])
        .arg(lake)
        .output()
        .unwrap();
    assert!(out.status.success());
    (String::from_utf8(out.stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn codes_the_server_does_not_know_are_flagged_queued_and_cached_for_the_next_load() {
    let input = sample_dir("bds-r4-10");
    let server = server_for(&input, true);
    // A throttling proxy in front: the first request is refused with a Retry-After.
    server.set_faults(Faults {
        throttle_next: 1,
        retry_after: RetryAfter::Seconds(1),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let tx = ["--tx", server.base.as_str()];

    let first = load(&lake, &input, &tx);
    assert_eq!(first["totals"]["quarantined"], 0);
    let codes = &first["code_checks"];
    let tx_record = &codes["terminology_server"];
    assert_eq!(tx_record["server"], server.base, "{tx_record}");
    assert_eq!(tx_record["codes_invalid"], 1, "{tx_record}");
    assert_eq!(tx_record["codes_unverified"], 0, "{tx_record}");
    assert_eq!(tx_record["codings_unverified"], 0, "{tx_record}");
    // RxNorm is not held by the server: not verified, and not called wrong.
    let rxnorm = codes_in(&input)[RXNORM].len() as u64;
    let unsupported = tx_record["codes_unsupported"].as_u64().unwrap();
    assert!(unsupported > 0 && unsupported <= rxnorm, "{tx_record}");
    assert_eq!(codes["problems"]["unknown_to_server"], 104, "{codes}");
    assert_eq!(codes["resources_with_issues"], 104, "{codes}");
    let counters = server.counters();
    assert_eq!(
        counters.status(429),
        1,
        "the throttled batch was sent again"
    );
    let asked = tx_record["codes_asked"].as_u64().unwrap();
    assert_eq!(counters.codes_asked, asked);
    // Batches of at most 100 codes, each asked once (the 429 is not an answer).
    assert!(counters.batches >= asked.div_ceil(100), "{counters:?}");
    assert_eq!(tx_record["cache_rows_written"], asked, "{tx_record}");

    let queue = curation(&lake);
    let flagged: Vec<&Value> = queue
        .iter()
        .filter(|i| i["problem"] == "unknown_to_server")
        .collect();
    assert_eq!(flagged.len(), 1, "{queue:?}");
    assert_eq!(flagged[0]["system"], LOINC);
    assert_eq!(flagged[0]["code"], UNKNOWN);
    assert_eq!(flagged[0]["count"], 104);
    let message = flagged[0]["message"].as_str().unwrap();
    assert!(message.contains("Unknown code '8302-2'"), "{message}");

    if let Some(rows) = duckdb(&format!(
        "SELECT count(*) FILTER (WHERE _code_issues = 1), \
                count(*) FILTER (WHERE _code_issues = 1 AND resource LIKE '%\"code\":\"{UNKNOWN}\"%') \
         FROM {}",
        scan(&lake, "observation")
    )) {
        assert_eq!(
            rows[0][0], 104,
            "only the rows with the unknown code have an issue"
        );
        assert_eq!(rows[0][1], 104);
    }
    if let Some(rows) = duckdb(&format!(
        "SELECT count(*), count(*) FILTER (WHERE verdict = 'invalid' AND code = '{UNKNOWN}'), \
                count(DISTINCT server) FROM {}",
        scan(&lake, "_tx_cache")
    )) {
        assert_eq!(rows[0][0], asked);
        assert_eq!(rows[0][1], 1);
        assert_eq!(rows[0][2], 1);
    }

    // The reload asks nothing: every answer comes from `_tx_cache`.
    let second = load(&lake, &input, &["--tx", server.base.as_str(), "--force"]);
    let tx_record = &second["code_checks"]["terminology_server"];
    assert_eq!(tx_record["codes_asked"], 0, "{tx_record}");
    assert_eq!(tx_record["requests"], 0, "{tx_record}");
    assert_eq!(tx_record["codes_cached"], asked, "{tx_record}");
    assert_eq!(tx_record["cache_rows_written"], 0, "{tx_record}");
    assert_eq!(second["code_checks"]["problems"]["unknown_to_server"], 104);
    assert_eq!(server.counters().codes_asked, asked);

    // Past their age, answers are asked again.
    let third = load(
        &lake,
        &input,
        &["--tx", server.base.as_str(), "--force", "--tx-max-age", "0"],
    );
    let tx_record = &third["code_checks"]["terminology_server"];
    assert_eq!(tx_record["codes_cached"], 0, "{tx_record}");
    assert_eq!(tx_record["codes_asked"], asked, "{tx_record}");

    // A server that knows the code (a newer LOINC release) resolves the queue item.
    let mut systems = codes_in(&input);
    systems.retain(|s, _| [LOINC, SNOMED, CVX].contains(&s.as_str()));
    let newer = FhirServer::start_blocking(Config {
        code_systems: systems,
        ..Config::default()
    });
    let fourth = load(&lake, &input, &["--tx", newer.base.as_str(), "--force"]);
    assert_eq!(fourth["code_checks"]["curation_resolved"], 1, "{fourth}");
    assert_eq!(
        fourth["code_checks"]["problems"].get("unknown_to_server"),
        None
    );
    let out = fhirlake()
        .args(["curation", "list", "--json", "--all", "--lake"])
        .arg(&lake)
        .output()
        .unwrap();
    let resolved: Vec<Value> = (String::from_utf8(out.stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|i: &Value| i["code"] == UNKNOWN)
        .collect();
    let by = resolved[0]["resolved_by"].as_str().unwrap();
    assert!(
        by.contains(&newer.base) && by.contains("knows it now"),
        "{by}"
    );
}

#[test]
fn a_terminology_server_that_is_down_never_blocks_the_load() {
    let input = sample_dir("bds-r4-10");
    let server = server_for(&input, true);
    server.set_faults(Faults {
        outage_for: Some(Duration::from_secs(600)),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let without = load(&dir.path().join("plain"), &input, &[]);

    let started = std::time::Instant::now();
    let down = load(&lake, &input, &["--tx", server.base.as_str()]);
    let took = started.elapsed();
    assert_eq!(
        down["totals"], without["totals"],
        "every resource loads as without --tx"
    );
    let tx_record = &down["code_checks"]["terminology_server"];
    let unverified = tx_record["codes_unverified"].as_u64().unwrap();
    assert!(unverified > 100, "{tx_record}");
    assert!(tx_record["codings_unverified"].as_u64().unwrap() >= unverified);
    assert_eq!(tx_record["codes_valid"], 0, "{tx_record}");
    let error = tx_record["error"].as_str().unwrap();
    assert!(error.contains(&server.base), "{error}");
    assert_eq!(
        tx_record["unverified_examples"].as_array().unwrap().len(),
        10
    );
    // The breaker opened after three failed tries: the rest failed fast.
    assert!(server.counters().requests <= 4, "{:?}", server.counters());
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        !lake.join("_tx_cache").exists(),
        "no answer, nothing cached"
    );
    assert_eq!(
        down["code_checks"]["problems"].get("unknown_to_server"),
        None
    );

    // Back up: the next load asks what was left unverified.
    server.set_faults(Faults::default());
    let up = load(&lake, &input, &["--tx", server.base.as_str(), "--force"]);
    let tx_record = &up["code_checks"]["terminology_server"];
    assert_eq!(tx_record["codes_unverified"], 0, "{tx_record}");
    assert_eq!(tx_record["codes_asked"], unverified, "{tx_record}");
    assert_eq!(tx_record["codes_invalid"], 1, "{tx_record}");
}

#[test]
fn a_server_without_batches_is_asked_code_by_code() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let file = "Immunization.ndjson";
    std::fs::copy(sample_dir("bds-r4-10").join(file), input.join(file)).unwrap();
    let server = server_for(&input, false);
    let cvx = codes_in(&input)[CVX].len() as u64;

    let summary = load(
        &dir.path().join("lake"),
        &input,
        &["--tx", server.base.as_str(), "--tx-rate", "0"],
    );
    let tx_record = &summary["code_checks"]["terminology_server"];
    assert_eq!(tx_record["codes_valid"], cvx, "{tx_record}");
    assert_eq!(tx_record["codes_unverified"], 0, "{tx_record}");
    let counters = server.counters();
    assert_eq!(counters.batches, 0);
    assert_eq!(counters.codes_asked, cvx);
    // One refused batch (405), then one GET per code.
    assert_eq!(counters.status(405), 1, "{counters:?}");
    assert_eq!(tx_record["requests"], cvx + 1, "{tx_record}");
}
