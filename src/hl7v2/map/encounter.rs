//! PV1/PV2 → Encounter (IG `PV1[Encounter]`, `PV2[Encounter]`), with the
//! Location of PV1-3 and the Practitioners of PV1-7/8/9/17/52.

use serde_json::{Value as Json, json};

use super::super::ids::resource_id;
use super::super::parse::{Segment, Value};
use super::MapWarning;
use super::datatypes::{clean, cwe, cx, pl, type_concept, xcn};
use super::patient::PatientRef;
use super::tables;
use super::walk::Ctx;

/// A Practitioner for an XCN: (reference, display).
pub(super) fn practitioner(
    ctx: &mut Ctx<'_>,
    seg: &Segment<'_>,
    v: Value<'_>,
) -> Option<(String, String)> {
    let (key, mut body, display) = xcn(v, &ctx.facility)?;
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    body["id"] = Json::String(resource_id("prac", &keys));
    Some((ctx.push_shared(body, seg), display))
}

/// A reference (with display) to the Practitioner of an XCN.
pub(super) fn practitioner_ref(ctx: &mut Ctx<'_>, seg: &Segment<'_>, v: Value<'_>) -> Option<Json> {
    practitioner(ctx, seg, v).map(|(r, d)| json!({ "reference": r, "display": d }))
}

fn location(ctx: &mut Ctx<'_>, seg: &Segment<'_>, v: Value<'_>) -> Option<Json> {
    let (key, mut body, display) = pl(v, &ctx.facility)?;
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    body["id"] = Json::String(resource_id("loc", &keys));
    let r = ctx.push_shared(body, seg);
    Some(json!({ "reference": r, "display": display }))
}

pub(super) fn map_pv1(
    ctx: &mut Ctx<'_>,
    pv1: &Segment<'_>,
    patient: Option<&PatientRef>,
    event: &str,
) -> String {
    let class_code = pv1.field(2).comp(1).opt();
    let class = match class_code.as_deref().and_then(tables::encounter_class) {
        Some((system, code, display)) => {
            json!({ "system": system, "code": code, "display": display })
        }
        None => {
            ctx.code((pv1, 2), "0004", class_code.clone(), true, |_| None);
            match &class_code {
                Some(c) => {
                    json!({ "system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": c })
                }
                None => {
                    json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown" })
                }
            }
        }
    };
    let start = ctx.datetime(pv1, 44, pv1.field(44));
    let end = ctx.datetime(pv1, 45, pv1.field(45));
    let status = tables::event_status(event).unwrap_or_else(|| {
        if end.is_some() {
            "finished"
        } else {
            tables::class_status(class_code.as_deref().unwrap_or(""))
        }
    });

    let visit = cx(pv1.field(19));
    let facility = ctx.facility.clone();
    let patient_id = patient.map_or("", |p| p.id.as_str()).to_string();
    let control_id = ctx.msg.control_id().into_owned();
    let key: Vec<String> = match (&visit, pv1.field(44).comp(1).opt()) {
        (Some(v), _) => vec![
            facility,
            v.system.clone().unwrap_or_default(),
            v.value.clone(),
        ],
        (None, Some(admit)) => vec![facility, patient_id, "admit".into(), admit],
        (None, None) => {
            ctx.warn(MapWarning::EncounterPerMessage {
                segment_index: pv1.index() + 1,
            });
            vec![facility, patient_id, "message".into(), control_id]
        }
    };
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();

    let mut identifiers = Vec::new();
    if let Some(v) = visit {
        let mut j = v.json;
        j["type"] = type_concept("VN");
        identifiers.push(j);
    }
    identifiers.extend(pv1.field(50).reps().filter_map(cx).map(|i| i.json));

    let mut participants = Vec::new();
    for (field, code) in [
        (7, "ATND"),
        (8, "REF"),
        (9, "CON"),
        (17, "ADM"),
        (52, "PART"),
    ] {
        for rep in pv1.field(field).reps() {
            if let Some(individual) = practitioner_ref(ctx, pv1, rep) {
                participants.push(json!({
                    "type": [{ "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": code,
                        "display": tables::participation_display(code),
                    }]}],
                    "individual": individual,
                }));
            }
        }
    }
    let mut locations = Vec::new();
    for (field, status) in [
        (
            3,
            if class_code.as_deref() == Some("P") {
                "planned"
            } else {
                "active"
            },
        ),
        (6, "completed"),
        (11, "active"),
        (42, "reserved"),
        (43, "completed"),
    ] {
        if let Some(l) = location(ctx, pv1, pv1.field(field)) {
            locations.push(json!({ "location": l, "status": status }));
        }
    }
    let encounter = clean(json!({
        "resourceType": "Encounter",
        "id": resource_id("enc", &keys),
        "identifier": identifiers,
        "status": status,
        "class": class,
        "type": [cwe(pv1.field(4))],
        "serviceType": cwe(pv1.field(10)),
        "subject": patient.map(|p| json!({ "reference": p.reference })),
        "participant": participants,
        "period": { "start": start, "end": end },
        "hospitalization": {
            "preAdmissionIdentifier": cx(pv1.field(5)).map(|i| i.json),
            "admitSource": cwe(pv1.field(14)),
            "reAdmission": cwe(pv1.field(13)),
            "specialCourtesy": [cwe(pv1.field(16))],
            "dietPreference": [cwe(pv1.field(38))],
            "dischargeDisposition": cwe(pv1.field(36)),
        },
        "location": locations,
    }));
    ctx.push(encounter, pv1)
}

/// PV2-3 (admit reason) → Encounter.reasonCode.
pub(super) fn map_pv2(ctx: &mut Ctx<'_>, pv2: &Segment<'_>, encounter: &str) -> bool {
    match cwe(pv2.field(3)) {
        Some(reason) => {
            ctx.append(encounter, "reasonCode", reason);
            true
        }
        None => false,
    }
}
