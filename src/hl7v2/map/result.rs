//! OBR → DiagnosticReport, OBX → Observation, SPM/OBR-15 → Specimen
//! (IG `OBR[DiagnosticReport]`, `OBX[Observation]`, `SPM[Specimen]`, `OBR[Specimen]`).
//! OBX-5 by OBX-2: NM → valueQuantity (OBX-6 units, UCUM when it says so),
//! ST/TX/FT → valueString (repetitions joined by newlines), CE/CWE/CNE/CF →
//! valueCodeableConcept, IS/ID → code only, SN → valueQuantity (with
//! comparator) / valueRange (`-`) / valueRatio (`:` `/`) / valueString (`+`),
//! DT/TS/DTM → valueDateTime, TM → valueTime, NR → valueRange, DR →
//! valuePeriod, CX → valueString (the id), NA/RP/ED/other → valueString (warned).

use serde_json::{Map, Value as Json, json};

use super::super::ids::resource_id;
use super::super::parse::{Segment, Value};
use super::MapWarning;
use super::datatypes::{clean, cwe, ei, number, quantity};
use super::encounter::practitioner_ref;
use super::group::{Group, Numbers, ident_key};
use super::patient::PatientRef;
use super::tables;
use super::walk::Ctx;

/// OBR → DiagnosticReport; returns (reference, report key).
pub(super) fn map_report(
    ctx: &mut Ctx<'_>,
    obr: &Segment<'_>,
    numbers: &Numbers,
    patient: Option<&PatientRef>,
    encounter: Option<&str>,
    sr: &str,
) -> (String, String) {
    let facility = ctx.facility.clone();
    let key: Vec<String> = match (&numbers.filler, &numbers.placer) {
        (Some(f), _) => vec![facility, "filler".into(), ident_key(f)],
        (None, Some(p)) => vec![facility, "placer".into(), ident_key(p)],
        (None, None) => vec![
            facility,
            patient.map_or(String::new(), |p| p.id.clone()),
            ctx.msg.control_id().into_owned(),
            obr.field(1)
                .opt()
                .unwrap_or_else(|| (obr.index() + 1).to_string()),
        ],
    };
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    let code25 = obr.field(25).opt();
    let status = ctx
        .code((obr, 25), "0123", code25, true, tables::report_status)
        .unwrap_or("unknown");
    let start = ctx.datetime(obr, 7, obr.field(7));
    let end = ctx.datetime(obr, 8, obr.field(8));
    let issued = ctx.instant(obr, 22, obr.field(22));
    let identifiers: Vec<Json> = [&numbers.placer, &numbers.filler]
        .into_iter()
        .flatten()
        .map(|i| i.json.clone())
        .collect();
    let mut dr = json!({
        "resourceType": "DiagnosticReport",
        "id": resource_id("dr", &keys),
        "identifier": identifiers,
        "basedOn": [{ "reference": sr }],
        "status": status,
        "category": [cwe(obr.field(24)).map(|_| json!({ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": obr.field(24).comp(1).opt(),
        }]}))],
        "code": cwe(obr.field(4)).unwrap_or_else(|| json!({ "text": "OBR-4 not sent" })),
        "subject": patient.map(|p| json!({ "reference": p.reference })),
        "encounter": encounter.map(|e| json!({ "reference": e })),
        "issued": issued,
    });
    match end {
        Some(end) => dr["effectivePeriod"] = json!({ "start": start, "end": end }),
        None => dr["effectiveDateTime"] = json!(start),
    }
    (ctx.push(clean(dr), obr), key.join("|"))
}

pub(super) fn map_obx(
    ctx: &mut Ctx<'_>,
    obx: &Segment<'_>,
    group: Option<&mut Group>,
    patient: Option<&PatientRef>,
    encounter: Option<&str>,
) -> String {
    let code = cwe(obx.field(3));
    let context = match &group {
        Some(g) => g.report_key.clone(),
        None => patient.map_or(String::new(), |p| p.id.clone()),
    };
    let facility = ctx.facility.clone();
    let key = [
        facility,
        context,
        obx.field(1).opt().unwrap_or_default(),
        obx.field(4).opt().unwrap_or_default(),
        obx.field(3).comp(1).opt().unwrap_or_default(),
        obx.field(3).comp(3).opt().unwrap_or_default(),
    ];
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    let status_code = obx.field(11).opt();
    let status = ctx
        .code(
            (obx, 11),
            "0085",
            status_code.clone(),
            true,
            tables::observation_status,
        )
        .unwrap_or("unknown");
    let value = value(ctx, obx);
    let absent = match (&value, status_code.as_deref()) {
        (None, Some("X")) => Some("cannot-be-obtained"),
        (None, Some("N")) => Some("not-asked"),
        _ => None,
    };
    let effective = ctx
        .datetime(obx, 14, obx.field(14))
        .or_else(|| group.as_ref().and_then(|g| g.effective.clone()));
    let mut performers = Vec::new();
    for rep in obx.field(16).reps() {
        performers.extend(practitioner_ref(ctx, obx, rep));
    }
    let mut obs = json!({
        "resourceType": "Observation",
        "id": resource_id("obs", &keys),
        "identifier": [ei(obx.field(21), Some("FILL")).map(|i| i.json)],
        "basedOn": [group.as_ref().and_then(|g| g.sr.clone()).map(|r| json!({ "reference": r }))],
        "status": status,
        "code": code.unwrap_or_else(|| json!({ "text": "OBX-3 not sent" })),
        "subject": patient.map(|p| json!({ "reference": p.reference })),
        "encounter": encounter.map(|e| json!({ "reference": e })),
        "effectiveDateTime": effective,
        "performer": performers,
        "dataAbsentReason": absent.map(|c| json!({ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": c,
        }]})),
        "interpretation": obx.field(8).reps().filter_map(interpretation).collect::<Vec<_>>(),
        "referenceRange": [reference_range(obx.field(7), obx.field(6))],
        "method": cwe(obx.field(17)),
        "bodySite": cwe(obx.field(20)),
        "specimen": group.as_ref().and_then(|g| g.specimens.last()).map(|s| json!({ "reference": s })),
    });
    if let Some((k, v)) = value {
        obs[k] = v;
    }
    let reference = ctx.push(clean(obs), obx);
    if let Some(g) = group {
        match (&g.dr, &g.sr) {
            (Some(dr), _) => ctx.append(dr, "result", json!({ "reference": reference })),
            (None, Some(sr)) => ctx.append(sr, "supportingInfo", json!({ "reference": reference })),
            _ => {}
        }
        g.observations.push(reference.clone());
    }
    reference
}

fn interpretation(rep: Value<'_>) -> Option<Json> {
    let code = rep.comp(1).opt()?;
    match tables::interpretation(&code) {
        Some(display) => Some(json!({ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": code,
            "display": display,
        }]})),
        None => cwe(rep),
    }
}

/// OBX-7 → referenceRange: always the text; low/high when it reads `a-b`,
/// `a to b`, `<b`, `>a`.
fn reference_range(range: Value<'_>, units: Value<'_>) -> Option<Json> {
    let text = range.opt()?;
    let q = |s: &str| quantity(s, units, None);
    let t = text.trim();
    let (low, high) = if let Some(h) = t.strip_prefix('<') {
        (None, q(h.trim_start_matches('=')))
    } else if let Some(l) = t.strip_prefix('>') {
        (q(l.trim_start_matches('=')), None)
    } else if let Some((l, h)) = t.split_once(" to ") {
        (q(l), q(h))
    } else if let Some(i) = t.get(1..).and_then(|r| r.find('-')) {
        (q(&t[..=i]), q(&t[i + 2..]))
    } else {
        (None, None)
    };
    Some(clean(json!({ "low": low, "high": high, "text": text })))
}

/// OBX-5 by OBX-2 → (value[x] name, value).
fn value(ctx: &mut Ctx<'_>, obx: &Segment<'_>) -> Option<(&'static str, Json)> {
    let vt = obx.field(2).opt().unwrap_or_default().to_ascii_uppercase();
    let f5 = obx.field(5);
    if !f5.reps().any(|r| r.has_value()) {
        return None;
    }
    let units = obx.field(6);
    let as_string = |ctx: &mut Ctx<'_>, v: Value<'_>| {
        ctx.warn(MapWarning::ValueAsString {
            segment_index: obx.index() + 1,
            value_type: vt.clone(),
        });
        Some(("valueString", Json::String(v.text().into_owned())))
    };
    match vt.as_str() {
        "ST" | "TX" | "FT" => {
            let text: Vec<String> = f5.reps().map(|r| r.text().into_owned()).collect();
            Some(("valueString", Json::String(text.join("\n"))))
        }
        "NM" => {
            let v = ctx.single(obx, 5);
            let raw = v.opt().unwrap_or_default();
            match quantity(&raw, units, None) {
                Some(q) => Some(("valueQuantity", q)),
                None => {
                    ctx.warn(MapWarning::InvalidNumber {
                        segment: "OBX".into(),
                        segment_index: obx.index() + 1,
                        field: 5,
                        value: raw.clone(),
                    });
                    Some(("valueString", Json::String(raw)))
                }
            }
        }
        "SN" => {
            let v = ctx.single(obx, 5);
            structured_numeric(v, units).or_else(|| {
                ctx.warn(MapWarning::InvalidNumber {
                    segment: "OBX".into(),
                    segment_index: obx.index() + 1,
                    field: 5,
                    value: v.text().into_owned(),
                });
                Some(("valueString", Json::String(v.text().into_owned())))
            })
        }
        "CE" | "CWE" | "CNE" | "CF" => {
            let v = ctx.single(obx, 5);
            cwe(v).map(|c| ("valueCodeableConcept", c))
        }
        "IS" | "ID" => {
            let v = ctx.single(obx, 5);
            v.opt()
                .map(|c| ("valueCodeableConcept", json!({ "coding": [{ "code": c }] })))
        }
        "DT" | "TS" | "DTM" => {
            let v = ctx.single(obx, 5);
            match ctx.datetime(obx, 5, v) {
                Some(dt) => Some(("valueDateTime", Json::String(dt))),
                None => Some(("valueString", Json::String(v.text().into_owned()))),
            }
        }
        "TM" => {
            let v = ctx.single(obx, 5);
            let t = v.opt().unwrap_or_default();
            match time(&t) {
                Some(tm) => Some(("valueTime", Json::String(tm))),
                None => as_string(ctx, v),
            }
        }
        "CX" => {
            let v = ctx.single(obx, 5);
            v.comp(1).opt().map(|id| ("valueString", Json::String(id)))
        }
        "NR" => {
            let v = ctx.single(obx, 5);
            let range = clean(json!({
                "low": quantity(&v.comp(1).opt().unwrap_or_default(), units, None),
                "high": quantity(&v.comp(2).opt().unwrap_or_default(), units, None),
            }));
            Some(("valueRange", range))
        }
        "DR" => {
            let v = ctx.single(obx, 5);
            let start = ctx.datetime(obx, 5, v.comp(1));
            let end = ctx.datetime(obx, 5, v.comp(2));
            Some(("valuePeriod", clean(json!({ "start": start, "end": end }))))
        }
        "NA" => {
            let v = ctx.single(obx, 5);
            let parts: Vec<String> = v.comps().map(|c| c.text().into_owned()).collect();
            let _ = as_string(ctx, v);
            Some((
                "valueString",
                Json::String(parts.join(" ").trim().to_string()),
            ))
        }
        _ => {
            let v = ctx.single(obx, 5);
            as_string(ctx, v)
        }
    }
}

/// SN: comparator ^ num1 ^ separator/suffix ^ num2.
fn structured_numeric(v: Value<'_>, units: Value<'_>) -> Option<(&'static str, Json)> {
    let comparator = v.comp(1).opt();
    let n1 = v.comp(2).opt()?;
    let sep = v.comp(3).opt();
    let n2 = v.comp(4).opt();
    match sep.as_deref() {
        Some(":") | Some("/") => {
            let den = number(&n2?)?;
            Some((
                "valueRatio",
                json!({
                    "numerator": quantity(&n1, units, None)?,
                    "denominator": { "value": den },
                }),
            ))
        }
        Some("-") => Some((
            "valueRange",
            json!({
                "low": quantity(&n1, units, None)?,
                "high": quantity(&n2?, units, None)?,
            }),
        )),
        Some("+") => {
            let s = [comparator, Some(n1), sep, n2]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            Some(("valueString", Json::String(s.join(" "))))
        }
        _ => {
            let c = match comparator.as_deref() {
                None | Some("=") => None,
                Some(c @ ("<" | "<=" | ">=" | ">")) => Some(c),
                Some(_) => return None,
            };
            Some(("valueQuantity", quantity(&n1, units, c)?))
        }
    }
}

/// TM `HH[MM[SS[.S]]]` → FHIR time `hh:mm:ss`.
fn time(t: &str) -> Option<String> {
    let t = t.split(['+', '-']).next()?;
    let (whole, _) = t.split_once('.').unwrap_or((t, ""));
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !matches!(whole.len(), 2 | 4 | 6) {
        return None;
    }
    let p = |a: usize| {
        whole
            .get(a..a + 2)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (h, m, s) = (p(0), p(2), p(4));
    (h < 24 && m < 60 && s < 60).then(|| format!("{h:02}:{m:02}:{s:02}"))
}

fn link_specimen(ctx: &mut Ctx<'_>, group: Option<&mut Group>, spm: &str) {
    let Some(g) = group else { return };
    let item = json!({ "reference": spm });
    if let Some(dr) = g.dr.clone() {
        ctx.append(&dr, "specimen", item.clone());
    } else if let Some(sr) = g.sr.clone() {
        ctx.append(&sr, "specimen", item.clone());
    }
    for obs in &g.observations {
        if let Some(r) = ctx.get_mut(obs)
            && r.get("specimen").is_none()
        {
            r["specimen"] = item.clone();
        }
    }
    g.specimens.push(spm.to_string());
}

fn specimen_body(
    id: String,
    patient: Option<&PatientRef>,
    group: Option<&Group>,
) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Specimen"));
    m.insert("id".into(), json!(id));
    if let Some(p) = patient {
        m.insert("subject".into(), json!({ "reference": p.reference }));
    }
    if let Some(sr) = group.and_then(|g| g.sr.clone()) {
        m.insert("request".into(), json!([{ "reference": sr }]));
    }
    m
}

/// SPM → Specimen, linked to the group's report (or order) and observations.
pub(super) fn map_spm(
    ctx: &mut Ctx<'_>,
    spm: &Segment<'_>,
    group: Option<&mut Group>,
    patient: Option<&PatientRef>,
) -> Option<String> {
    let placer = ei(spm.field(2).comp(1), Some("PLAC"));
    let filler = ei(spm.field(2).comp(2), Some("FILL"));
    let ty = cwe(spm.field(4));
    let context = group
        .as_ref()
        .map(|g| g.report_key.clone())
        .or_else(|| patient.map(|p| p.id.clone()))
        .unwrap_or_default();
    let facility = ctx.facility.clone();
    let key: Vec<String> = match (&filler, &placer) {
        (Some(f), _) => vec![facility, "filler".into(), ident_key(f)],
        (None, Some(p)) => vec![facility, "placer".into(), ident_key(p)],
        (None, None) => vec![
            facility,
            context,
            spm.field(1).opt().unwrap_or_default(),
            spm.field(4).comp(1).opt().unwrap_or_default(),
        ],
    };
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    // The same SPM-2 id twice in a message is the same specimen.
    let shared = filler.is_some() || placer.is_some();
    let collected_start = ctx.datetime(spm, 17, spm.field(17).comp(1));
    let collected_end = ctx.datetime(spm, 17, spm.field(17).comp(2));
    let received = ctx.datetime(spm, 18, spm.field(18));
    let mut body = specimen_body(resource_id("spm", &keys), patient, group.as_deref());
    let collection = match collected_end {
        Some(end) => json!({ "collectedPeriod": { "start": collected_start, "end": end } }),
        None => json!({ "collectedDateTime": collected_start }),
    };
    let extra = json!({
        "identifier": [placer.map(|i| i.json), filler.map(|i| i.json)],
        "type": ty,
        "receivedTime": received,
        "collection": {
            "method": cwe(spm.field(7)),
            "bodySite": cwe(spm.field(8)),
            "collectedDateTime": collection.get("collectedDateTime"),
            "collectedPeriod": collection.get("collectedPeriod"),
        },
        "condition": spm.field(24).reps().filter_map(cwe).collect::<Vec<_>>(),
    });
    if let Json::Object(m) = extra {
        body.extend(m);
    }
    let body = clean(Json::Object(body));
    let reference = if shared {
        ctx.push_shared(body, spm)
    } else {
        ctx.push(body, spm)
    };
    link_specimen(ctx, group, &reference);
    Some(reference)
}

/// OBR-15 (specimen source, v2.3-2.4) → Specimen when it names one.
pub(super) fn map_obr15(
    ctx: &mut Ctx<'_>,
    obr: &Segment<'_>,
    group: &mut Group,
    patient: Option<&PatientRef>,
) {
    let sps = obr.field(15);
    let source = sps.comp(1);
    let Some(ty) = cwe(source) else { return };
    let code = source
        .part(1)
        .opt()
        .or_else(|| source.part(2).opt())
        .unwrap_or_default();
    let facility = ctx.facility.clone();
    let keys = [
        facility.as_str(),
        group.report_key.as_str(),
        "obr15",
        code.as_str(),
    ];
    let collected = ctx.datetime(obr, 7, obr.field(7));
    let mut body = specimen_body(resource_id("spm", &keys), patient, Some(group));
    let extra = json!({
        "type": ty,
        "collection": {
            "bodySite": cwe(sps.comp(4)),
            "collectedDateTime": collected,
        },
    });
    if let Json::Object(m) = extra {
        body.extend(m);
    }
    let reference = ctx.push(clean(Json::Object(body)), obr);
    link_specimen(ctx, Some(group), &reference);
}
