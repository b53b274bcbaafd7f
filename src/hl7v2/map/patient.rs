//! PID → Patient, NK1 → Patient.contact, MRG → merge links (IG `PID[Patient]`,
//! `NK1[Patient]`, A40 merge). Race and ethnicity use the US Core extensions.

use serde_json::{Value as Json, json};

use super::super::ids::resource_id;
use super::super::parse::{Segment, Value};
use super::datatypes::{Ident, clean, cwe, cx, type_concept, xad, xpn, xtn};
use super::tables;
use super::walk::Ctx;
use super::{MapError, MapWarning};

/// The Patient of the current PID.
#[derive(Debug, Clone)]
pub(super) struct PatientRef {
    pub id: String,
    pub reference: String,
}

/// The identifier that keys the Patient: first PID-3 repetition with a
/// value and type MR, else the first with a value.
fn key_identifier(idents: &[Ident]) -> Option<&Ident> {
    idents
        .iter()
        .find(|i| i.type_code.as_deref() == Some("MR"))
        .or_else(|| idents.first())
}

fn patient_id(facility: &str, ident: &Ident) -> String {
    resource_id(
        "pat",
        &[
            facility,
            ident.system.as_deref().unwrap_or(""),
            &ident.value,
        ],
    )
}

fn identifiers(field: Value<'_>) -> Vec<Ident> {
    field.reps().filter_map(cx).collect()
}

pub(super) fn map_pid(ctx: &mut Ctx<'_>, pid: &Segment<'_>) -> Result<PatientRef, MapError> {
    let pid3 = identifiers(pid.field(3));
    let pid2 = identifiers(pid.field(2));
    let pid4 = identifiers(pid.field(4));
    let key = key_identifier(&pid3)
        .or_else(|| key_identifier(&pid2))
        .or_else(|| key_identifier(&pid4))
        .ok_or(MapError::NoPatientIdentifier {
            segment: "PID",
            segment_index: pid.index() + 1,
            fields: "PID-3 (nor PID-2, PID-4)",
        })?;
    let id = patient_id(&ctx.facility, key);

    let mut ids: Vec<Json> = pid2
        .iter()
        .chain(&pid3)
        .chain(&pid4)
        .map(|i| i.json.clone())
        .collect();
    if let Some(ssn) = pid.field(19).opt() {
        ids.push(json!({ "type": type_concept("SS"), "system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn }));
    }
    if let Some(dl) = pid.field(20).comp(1).opt() {
        ids.push(clean(json!({
            "type": type_concept("DL"),
            "system": pid.field(20).comp(2).opt().map(|s| format!("urn:fhirlake:v2:drivers-license:{}", super::super::ids::urn_part(&s))),
            "value": dl,
        })));
    }

    let names: Vec<Json> = pid
        .field(5)
        .reps()
        .chain(pid.field(9).reps())
        .filter_map(xpn)
        .collect();
    let birth = pid.field(7);
    let birth_date = ctx.date(pid, 7, birth);
    let birth_time = if birth.part(1).raw().trim().len() > 8 {
        ctx.datetime(pid, 7, birth)
    } else {
        None
    };
    let gender_code = pid.field(8).comp(1).opt();
    let gender = ctx.code((pid, 8), "0001", gender_code, false, tables::gender);
    let county = pid.field(12).opt();
    let mut addresses: Vec<Json> = pid.field(11).reps().filter_map(xad).collect();
    if let Some(c) = county {
        // IG: PID-12 is the district of the (only) address that lacks one.
        match addresses.as_mut_slice() {
            [only] if only.get("district").is_none() => only["district"] = Json::String(c),
            _ => addresses.push(json!({ "district": c })),
        }
    }
    let telecom: Vec<Json> = pid
        .field(13)
        .reps()
        .filter_map(|t| xtn(t, Some("home"), Some("phone")))
        .chain(
            pid.field(14)
                .reps()
                .filter_map(|t| xtn(t, Some("work"), Some("phone"))),
        )
        .chain(pid.field(40).reps().filter_map(|t| xtn(t, None, None)))
        .collect();
    let marital = marital_status(ctx, pid);
    let deceased = match ctx.datetime(pid, 29, pid.field(29)) {
        Some(dt) => ("deceasedDateTime", Json::String(dt)),
        None => match pid.field(30).opt().as_deref() {
            Some("Y") => ("deceasedBoolean", Json::Bool(true)),
            Some("N") => ("deceasedBoolean", Json::Bool(false)),
            _ => ("deceasedBoolean", Json::Null),
        },
    };
    let multiple_birth = match (pid.field(25).opt(), pid.field(24).opt().as_deref()) {
        (Some(n), _) if n.parse::<u32>().is_ok() => {
            ("multipleBirthInteger", json!(n.parse::<u32>().ok()))
        }
        (_, Some("Y")) => ("multipleBirthBoolean", Json::Bool(true)),
        (_, Some("N")) => ("multipleBirthBoolean", Json::Bool(false)),
        _ => ("multipleBirthBoolean", Json::Null),
    };
    let mut extension = Vec::new();
    extension.extend(race(pid.field(10)));
    extension.extend(ethnicity(pid.field(22)));
    if let Some(mmn) = pid.field(6).comp(1).part(1).opt() {
        extension.push(json!({
            "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
            "valueString": mmn,
        }));
    }
    let mut patient = json!({
        "resourceType": "Patient",
        "id": id,
        "extension": extension,
        "identifier": ids,
        "active": true,
        "name": names,
        "telecom": telecom,
        "gender": gender,
        "birthDate": birth_date,
        "address": addresses,
        "maritalStatus": marital,
        "communication": [cwe(pid.field(15)).map(|c| json!({ "language": c }))],
    });
    patient[deceased.0] = deceased.1;
    patient[multiple_birth.0] = multiple_birth.1;
    if let Some(t) = birth_time {
        patient["_birthDate"] = json!({ "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": t,
        }]});
    }
    let reference = ctx.push(clean(patient), pid);
    let id = reference.trim_start_matches("Patient/").to_string();
    Ok(PatientRef { id, reference })
}

fn marital_status(ctx: &mut Ctx<'_>, pid: &Segment<'_>) -> Option<Json> {
    let f = pid.field(16);
    let code = f.comp(1).opt()?;
    let mapped = ctx.code((pid, 16), "0002", Some(code.clone()), false, |c| {
        tables::marital(c).map(|m| m.1)
    });
    match (mapped, tables::marital(&code)) {
        (Some(_), Some((system, code, display))) => Some(clean(json!({
            "coding": [{ "system": system, "code": code, "display": display }],
            "text": f.comp(2).opt(),
        }))),
        _ => cwe(f),
    }
}

/// PID-10 → us-core-race: OMB categories as `ombCategory`, other CDC race
/// codes as `detailed`, everything as `text` (US Core requires it).
fn race(field: Value<'_>) -> Option<Json> {
    let mut ext = Vec::new();
    let mut texts = Vec::new();
    for rep in field.reps() {
        let code = rep.comp(1).opt();
        let display = rep.comp(2).opt();
        let system = rep.comp(3).opt().unwrap_or_default().to_ascii_uppercase();
        if let Some(t) = display.clone().or_else(|| code.clone()) {
            texts.push(t);
        }
        let Some(code) = code else { continue };
        let coding = |d: Option<String>| {
            clean(
                json!({ "system": "urn:oid:2.16.840.1.113883.6.238", "code": code, "display": d }),
            )
        };
        if let Some(omb) = tables::omb_race(&code) {
            ext.push(json!({ "url": "ombCategory", "valueCoding": coding(Some(omb.to_string())) }));
        } else if matches!(system.as_str(), "CDCREC" | "HL70005") && code.contains('-') {
            ext.push(json!({ "url": "detailed", "valueCoding": coding(display) }));
        }
    }
    if texts.is_empty() {
        return None;
    }
    ext.push(json!({ "url": "text", "valueString": texts.join(", ") }));
    Some(json!({
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "extension": ext,
    }))
}

/// PID-22 → us-core-ethnicity (CDC codes, or table 0189 H/N).
fn ethnicity(field: Value<'_>) -> Option<Json> {
    let mut ext = Vec::new();
    let mut texts = Vec::new();
    for rep in field.reps() {
        let code = rep.comp(1).opt();
        if let Some(t) = rep.comp(2).opt().or_else(|| code.clone()) {
            texts.push(t);
        }
        if let Some((c, d)) = code.as_deref().and_then(tables::omb_ethnicity) {
            ext.push(json!({ "url": "ombCategory", "valueCoding": {
                "system": "urn:oid:2.16.840.1.113883.6.238", "code": c, "display": d } }));
        }
    }
    if texts.is_empty() {
        return None;
    }
    ext.push(json!({ "url": "text", "valueString": texts.join(", ") }));
    Some(json!({
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
        "extension": ext,
    }))
}

/// NK1 → Patient.contact (relationship, name, telecom, address, period).
pub(super) fn map_nk1(ctx: &mut Ctx<'_>, nk1: &Segment<'_>, patient: &PatientRef) -> bool {
    let telecom: Vec<Json> = nk1
        .field(5)
        .reps()
        .filter_map(|t| xtn(t, Some("home"), Some("phone")))
        .chain(
            nk1.field(6)
                .reps()
                .filter_map(|t| xtn(t, Some("work"), Some("phone"))),
        )
        .collect();
    let start = ctx.date(nk1, 8, nk1.field(8));
    let end = ctx.date(nk1, 9, nk1.field(9));
    let gender_code = nk1.field(15).comp(1).opt();
    let gender = ctx.code((nk1, 15), "0001", gender_code, false, tables::gender);
    let contact = clean(json!({
        "relationship": [cwe(nk1.field(3)), cwe(nk1.field(7))],
        "name": nk1.field(2).reps().find_map(xpn),
        "telecom": telecom,
        "address": nk1.field(4).reps().find_map(xad),
        "gender": gender,
        "period": { "start": start, "end": end },
    }));
    if contact.as_object().is_none_or(|m| m.is_empty()) {
        return false;
    }
    ctx.append(&patient.reference, "contact", contact);
    true
}

/// MRG (A40): the surviving Patient `replaces` the one MRG-1 names, and that
/// one is emitted inactive and `replaced-by` the survivor.
pub(super) fn map_mrg(ctx: &mut Ctx<'_>, mrg: &Segment<'_>, survivor: &PatientRef) -> bool {
    let prior = identifiers(mrg.field(1));
    let Some(key) = key_identifier(&prior) else {
        ctx.warn(MapWarning::NoContext {
            segment: "MRG".into(),
            segment_index: mrg.index() + 1,
            needs: "an identifier in MRG-1",
        });
        return false;
    };
    let old_id = patient_id(&ctx.facility, key);
    if old_id == survivor.id {
        ctx.warn(MapWarning::SelfMerge {
            segment_index: mrg.index() + 1,
        });
        return true;
    }
    let old_ref = format!("Patient/{old_id}");
    ctx.append(
        &survivor.reference,
        "link",
        json!({ "other": { "reference": old_ref }, "type": "replaces" }),
    );
    let old = clean(json!({
        "resourceType": "Patient",
        "id": old_id,
        "identifier": prior.iter().map(|i| i.json.clone()).collect::<Vec<_>>(),
        "active": false,
        "name": mrg.field(7).reps().filter_map(xpn).collect::<Vec<_>>(),
        "link": [{ "other": { "reference": survivor.reference }, "type": "replaced-by" }],
    }));
    ctx.push(old, mrg);
    true
}
