//! Mapping behaviour: accounting, identity, versions, merges, value types.

use chrono::DateTime;
use serde_json::Value as Json;

use super::super::testdata;
use super::super::{parse, split_batch};
use super::*;

fn conv(bytes: &[u8]) -> Conversion {
    let m = parse(bytes).unwrap_or_else(|e| panic!("parse: {e}"));
    convert(&m, &MapOptions::default()).unwrap_or_else(|e| panic!("convert: {e}"))
}

fn of_type<'a>(c: &'a Conversion, ty: &str) -> Vec<&'a Json> {
    c.resources
        .iter()
        .filter(|r| r["resourceType"] == ty)
        .collect()
}

fn accounted(c: &Conversion, m: &Message<'_>) {
    let total: u64 = c
        .mapped_segments
        .values()
        .chain(c.unmapped_segments.values())
        .sum();
    assert_eq!(total as usize, m.segment_count());
}

#[test]
#[ignore = "prints every fixture's conversion, for eyeballing"]
fn dump() {
    for (name, bytes) in testdata::all_messages() {
        let c = conv(&bytes);
        println!("=== {name}\n{}", serde_json::to_string_pretty(&c).unwrap());
    }
}

#[test]
fn every_fixture_maps_and_is_fully_accounted() {
    for (name, bytes) in testdata::all_messages() {
        let m = parse(&bytes).unwrap();
        let c = convert(&m, &MapOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        accounted(&c, &m);
        assert_eq!(c.resources[0]["resourceType"], "MessageHeader", "{name}");
        assert_eq!(
            c.resources.last().unwrap()["resourceType"],
            "Provenance",
            "{name}"
        );
        assert_eq!(of_type(&c, "Patient").len(), 1, "{name}");
        for r in &c.resources {
            let id = r["id"].as_str().unwrap();
            assert!(
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "{name}: bad id {id}"
            );
            assert!(r["meta"]["lastUpdated"].is_string(), "{name}: {r}");
            assert!(r["meta"]["versionId"].is_string());
            assert!(
                r["meta"]["source"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:fhirlake:hl7v2:")
            );
        }
        // Every reference points at a resource of this conversion.
        let ids: std::collections::HashSet<String> = c
            .resources
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                )
            })
            .collect();
        let mut refs = Vec::new();
        collect_refs(&Json::Array(c.resources.clone()), &mut refs);
        for r in refs {
            assert!(ids.contains(&r), "{name}: dangling {r}");
        }
        let prov = c.resources.last().unwrap();
        assert_eq!(
            prov["target"].as_array().unwrap().len(),
            c.resources.len() - 1,
            "{name}"
        );
        assert_eq!(
            prov["entity"][0]["what"]["identifier"]["value"],
            c.info.control_id
        );
    }
}

fn collect_refs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("reference", Json::String(s)) => out.push(s.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn cdc_hapi_lfh_and_batch_are_accounted() {
    let c = conv(&testdata::message("cdc-CELR-ATVersion23.hl7"));
    assert_eq!(c.unmapped_segments.get("ZLR"), Some(&1));
    assert_eq!(c.z_segments.len(), 1);
    assert!(c.z_segments[0].starts_with("ZLR|1|"));
    assert!(!c.mapped_segments.contains_key("ZLR"));
    // NTE after OBR annotate the report; the empty ones are counted unmapped.
    assert_eq!(c.mapped_segments.get("NTE"), Some(&3));
    assert_eq!(c.unmapped_segments.get("NTE"), Some(&2));
    let dr = of_type(&c, "DiagnosticReport")[0];
    assert_eq!(dr["note"].as_array().unwrap().len(), 3);
    // OBR-15 names a specimen.
    assert_eq!(of_type(&c, "Specimen").len(), 1);

    let c = conv(&testdata::message("hapi-adt_a03.hl7"));
    assert_eq!(c.unmapped_segments.get("PR1"), Some(&1));
    let enc = of_type(&c, "Encounter")[0];
    assert_eq!(enc["status"], "finished");
    assert_eq!(enc["class"]["code"], "IMP");

    let c = conv(&testdata::message("lfh-ORU-multiline-short-mixed.hl7"));
    assert_eq!(of_type(&c, "Observation").len(), 4);
    assert_eq!(
        c.unmapped_segments.get("NTE"),
        Some(&1),
        "NTE after PID has no FHIR home"
    );

    let file = testdata::read("batch/cdc-GenV1_Batch_No_headers_twoMSH.txt");
    let batch = split_batch(&file);
    assert_eq!(batch.messages.len(), 2);
    assert!(batch.warnings.is_empty());
    for raw in &batch.messages {
        let m = parse(raw.bytes).unwrap();
        let c = convert(&m, &MapOptions::default()).unwrap();
        accounted(&c, &m);
        assert!(c.unmapped_segments.is_empty(), "{:?}", c.unmapped_segments);
        assert_eq!(of_type(&c, "DiagnosticReport").len(), 2);
    }
    assert_eq!(batch.messages[1].line, 39);
}

fn with_header(bytes: &[u8], msh7: &str, event: &str, control: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (msh, rest) = text.split_once('\r').unwrap();
    let mut f: Vec<String> = msh.split('|').map(str::to_string).collect();
    f[6] = msh7.into();
    f[8] = format!("ADT^{event}^ADT_A01");
    f[9] = control.into();
    let evn_fixed = rest.replacen(
        "EVN|A01|20290801070624+0115|",
        &format!("EVN|{event}|{msh7}|"),
        1,
    );
    format!("{}\r{}", f.join("|"), evn_fixed).into_bytes()
}

#[test]
fn a01_then_a08_same_patient_later_version() {
    let fixture = testdata::message("ms-ADT-A01-01.hl7");
    let a01 = with_header(&fixture, "20240101080000+0100", "A01", "MSG-A");
    let a08 = with_header(&fixture, "20240101090000+0200", "A08", "MSG-0");
    let (c1, c2) = (conv(&a01), conv(&a08));
    let (p1, p2) = (of_type(&c1, "Patient")[0], of_type(&c2, "Patient")[0]);
    assert_eq!(p1["id"], p2["id"]);
    let v1 = p1["meta"]["versionId"].as_str().unwrap();
    let v2 = p2["meta"]["versionId"].as_str().unwrap();
    // 08:00+01:00 and 09:00+02:00 are the same instant: versionId compares in UTC.
    assert_eq!(&v1[..20], &v2[..20]);
    let a08 = with_header(&fixture, "20240101093000+0200", "A08", "MSG-0");
    let c2 = conv(&a08);
    let p2 = of_type(&c2, "Patient")[0];
    let v2 = p2["meta"]["versionId"].as_str().unwrap();
    assert!(v2 > v1, "{v2} > {v1}");
    let t = |p: &Json| {
        DateTime::parse_from_rfc3339(p["meta"]["lastUpdated"].as_str().unwrap()).unwrap()
    };
    assert!(t(p2) > t(p1));
    assert_eq!(p2["meta"]["lastUpdated"], "2024-01-01T09:30:00+02:00");
    // Encounter keyed by visit number: same id too.
    assert_eq!(
        of_type(&c1, "Encounter")[0]["id"],
        of_type(&c2, "Encounter")[0]["id"]
    );

    // The real A08 fixture names the same patient from the same facility.
    let real = conv(&testdata::message("ms-ADT-A08-02.hl7"));
    assert_eq!(of_type(&real, "Patient")[0]["id"], p1["id"]);
}

#[test]
fn sequence_number_and_timezone_default() {
    let msg = "MSH|^~\\&|APP|FAC|||20240517101500||ADT^A08^ADT_A01|C1|P|2.5|42\rPID|1||123^^^FAC^MR\rPV1|1|O|||||||||||||||||V9|||||||||||||||||||||||||20240517100000\r";
    let opts = MapOptions {
        timezone: chrono::FixedOffset::east_opt(-5 * 3600).unwrap(),
    };
    let c = convert(&parse(msg.as_bytes()).unwrap(), &opts).unwrap();
    assert_eq!(c.info.sequence_number, Some(42));
    assert!(c.info.timezone_assumed);
    let p = of_type(&c, "Patient")[0];
    assert_eq!(p["meta"]["versionId"], "00000000000000000042");
    assert_eq!(p["meta"]["lastUpdated"], "2024-05-17T10:15:00-05:00");
    assert_eq!(
        of_type(&c, "Encounter")[0]["period"]["start"],
        "2024-05-17T10:00:00-05:00"
    );
    assert!(c.warnings.iter().any(
        |w| matches!(w, MapWarning::TimezoneAssumed { segment, field: 44, .. } if segment == "PV1")
    ));
    assert_eq!(c.info.timestamp.to_rfc3339(), "2024-05-17T10:15:00-05:00");
}

#[test]
fn a40_merge_links_both_patients() {
    let msg = "MSH|^~\\&|APP|FAC|||20240517101500+0000||ADT^A40^ADT_A39|C1|P|2.5\rEVN|A40|20240517101500+0000\rPID|1||NEW1^^^FAC^MR||DOE^JANE\rMRG|OLD7^^^FAC^MR\r";
    let c = conv(msg.as_bytes());
    let pats = of_type(&c, "Patient");
    assert_eq!(pats.len(), 2);
    let (new, old) = (pats[0], pats[1]);
    assert_eq!(new["link"][0]["type"], "replaces");
    assert_eq!(
        new["link"][0]["other"]["reference"],
        format!("Patient/{}", old["id"].as_str().unwrap())
    );
    assert_eq!(old["active"], false);
    assert_eq!(old["link"][0]["type"], "replaced-by");
    assert_eq!(old["identifier"][0]["value"], "OLD7");
    // The old id is the id the old MRN had before the merge.
    let before =
        "MSH|^~\\&|APP|FAC|||20240101000000+0000||ADT^A01|C0|P|2.5\rPID|1||OLD7^^^FAC^MR\r";
    assert_eq!(
        of_type(&conv(before.as_bytes()), "Patient")[0]["id"],
        old["id"]
    );
    assert_eq!(c.mapped_segments.get("MRG"), Some(&1));
}

#[test]
fn encounter_status_by_event() {
    let base = |event: &str, pv1_45: &str| {
        format!(
            "MSH|^~\\&|A|F|||20240101000000+0000||ADT^{event}|C|P|2.5\rPID|1||1^^^F^MR\rPV1|1|I|||||||||||||||||V1|||||||||||||||||||||||||20240101000000+0000|{pv1_45}\r"
        )
    };
    let status = |event: &str, end: &str| {
        let c = conv(base(event, end).as_bytes());
        of_type(&c, "Encounter")[0]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("A01", ""), "in-progress");
    assert_eq!(status("A04", ""), "in-progress");
    assert_eq!(status("A05", ""), "planned");
    assert_eq!(status("A03", "20240102000000+0000"), "finished");
    assert_eq!(status("A11", ""), "cancelled");
    assert_eq!(status("A13", "20240102000000+0000"), "in-progress");
    assert_eq!(status("A08", ""), "in-progress");
    assert_eq!(status("A08", "20240102000000+0000"), "finished");
}

#[test]
fn unknown_message_type_is_an_error_naming_msh9() {
    let msg = "MSH|^~\\&|A|F|||20240101||SIU^S12^SIU_S12|C|P|2.5\rSCH|1\r";
    let e = convert(&parse(msg.as_bytes()).unwrap(), &MapOptions::default()).unwrap_err();
    assert_eq!(
        e,
        MapError::UnsupportedMessageType {
            message_type: "SIU^S12^SIU_S12".into()
        }
    );
    assert!(e.to_string().contains("SIU^S12^SIU_S12"));
    let msg = "MSH|^~\\&|A|F|||20240101||ADT^A01|C|P|2.5\rEVN|A01\r";
    let e = convert(&parse(msg.as_bytes()).unwrap(), &MapOptions::default()).unwrap_err();
    assert!(matches!(e, MapError::MissingSegment { segment: "PID", .. }));
    let msg = "MSH|^~\\&|A|F|||garbage||ADT^A01|C|P|2.5\rPID|1||1\r";
    let e = convert(&parse(msg.as_bytes()).unwrap(), &MapOptions::default()).unwrap_err();
    assert!(e.to_string().contains("MSH-7"), "{e}");
}

#[test]
fn obx_value_types() {
    let msg = "MSH|^~\\&|LAB|F|||20240101000000+0000||ORU^R01|C|P|2.5.1\rPID|1||1^^^F^MR\rOBR|1||F1^LAB|24317-0^CBC^LN|||20240101000000+0000||||||||||||||||||F\r\
OBX|1|SN|1-1^a^LN||<^5|mg/dL^mg/dL^UCUM|||||F\r\
OBX|2|SN|1-2^b^LN||^10^-^20|mg|||||C\r\
OBX|3|SN|1-3^c^LN||^1^:^128||||||X\r\
OBX|4|NM|1-4^d^LN||7.25|%^percent^UCUM|4.3 to 6.2|H~A|||D\r\
OBX|5|CWE|1-5^e^LN||260373001^Detected^SCT||||||W\r\
OBX|6|TX|1-6^f^LN||line one~line two||||||P\r\
OBX|7|DT|1-7^g^LN||20190711||||||F\r\
OBX|8|CX|1-8^h^LN||ABC123^^^FAC^MR||||||F\r\
OBX|9|TM|1-9^i^LN||1330||||||F\r\
OBX|10|NM|1-10^j^LN||abc||||||F\r\
OBX|11|ST|1-11^k^LN||||||||X\r";
    let c = conv(msg.as_bytes());
    let obs = of_type(&c, "Observation");
    assert_eq!(obs[0]["valueQuantity"]["comparator"], "<");
    assert_eq!(
        obs[0]["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert_eq!(obs[1]["valueRange"]["low"]["value"], 10);
    assert_eq!(obs[1]["valueRange"]["high"]["unit"], "mg");
    assert!(
        obs[1]["valueRange"]["high"].get("system").is_none(),
        "no UCUM claim without UCUM"
    );
    assert_eq!(obs[1]["status"], "corrected");
    assert_eq!(obs[2]["valueRatio"]["denominator"]["value"], 128);
    assert_eq!(obs[2]["status"], "cancelled");
    assert_eq!(obs[3]["valueQuantity"]["value"], 7.25);
    assert_eq!(obs[3]["referenceRange"][0]["low"]["value"], 4.3);
    assert_eq!(obs[3]["interpretation"][1]["coding"][0]["code"], "A");
    assert_eq!(obs[3]["status"], "entered-in-error");
    assert_eq!(
        obs[4]["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(obs[5]["valueString"], "line one\nline two");
    assert_eq!(obs[6]["valueDateTime"], "2019-07-11");
    assert_eq!(obs[7]["valueString"], "ABC123");
    assert_eq!(obs[8]["valueTime"], "13:30:00");
    assert_eq!(obs[9]["valueString"], "abc");
    assert!(
        c.warnings
            .iter()
            .any(|w| matches!(w, MapWarning::InvalidNumber { value, .. } if value == "abc"))
    );
    assert_eq!(
        obs[10]["dataAbsentReason"]["coding"][0]["code"],
        "cannot-be-obtained"
    );
    let dr = of_type(&c, "DiagnosticReport")[0];
    assert_eq!(dr["result"].as_array().unwrap().len(), 11);
    assert_eq!(dr["status"], "final");
}

#[test]
fn patient_demographics() {
    let c = conv(&testdata::message("ms-ADT-A01-01.hl7"));
    let p = of_type(&c, "Patient")[0];
    let race = p["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("us-core-race"))
        .unwrap();
    assert_eq!(race["extension"][0]["url"], "ombCategory");
    assert_eq!(race["extension"][0]["valueCoding"]["code"], "2106-3");
    assert_eq!(
        race["extension"].as_array().unwrap().last().unwrap()["valueString"],
        "White, Asian"
    );
    let eth = p["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("us-core-ethnicity"))
        .unwrap();
    assert_eq!(eth["extension"][0]["valueCoding"]["code"], "2186-5");
    assert_eq!(p["maritalStatus"]["coding"][0]["code"], "M");
    assert_eq!(p["deceasedDateTime"], "2008-08-25T11:16:30+01:15");
    let tel = p["telecom"].as_array().unwrap();
    assert_eq!(tel[0]["system"], "phone");
    assert_eq!(tel[0]["use"], "mobile");
    let mr = p["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["value"] == "PATID1234")
        .unwrap();
    // HD type HCD (not ISO): the OID-looking id keeps its type.
    assert_eq!(mr["system"], "urn:fhirlake:v2:HCD:2.16.1");
    let ss = p["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["value"] == "123456789")
        .unwrap();
    assert_eq!(ss["system"], "urn:fhirlake:v2:USSSA");
    let enc = of_type(&c, "Encounter")[0];
    let types: Vec<&str> = enc["participant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"][0]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"ATND") && types.contains(&"ADM"),
        "{types:?}"
    );
    assert!(enc["location"][0]["location"]["display"].is_string());
    assert_eq!(enc["identifier"][0]["value"], "40007716");
    // The escaped PV1 value decodes.
    assert!(c.warnings.iter().all(|w| !matches!(w, MapWarning::DuplicateId { resource_type, .. } if resource_type == "Patient")));
}
