//! ORC/OBR/TQ1 → ServiceRequest (IG `ORC[ServiceRequest]`, `OBR[ServiceRequest]`,
//! `TQ1[ServiceRequest]`), the order group that OBX/SPM attach to, and NTE → note.

use serde_json::{Value as Json, json};

use super::super::ids::resource_id;
use super::super::parse::{Segment, Value};
use super::datatypes::{Ident, clean, cwe, ei};
use super::encounter::practitioner_ref;
use super::group::{Group, Numbers, ident_key};
use super::patient::PatientRef;
use super::result;
use super::tables;
use super::walk::{Ctx, Kind};

fn number(
    obr: Option<&Segment<'_>>,
    orc: Option<&Segment<'_>>,
    field: usize,
    ty: &str,
) -> Option<Ident> {
    obr.and_then(|s| ei(s.field(field), Some(ty)))
        .or_else(|| orc.and_then(|s| ei(s.field(field), Some(ty))))
}

/// Start an order group from an ORC and/or OBR.
pub(super) fn open(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    orc: Option<Segment<'_>>,
    obr: Option<&Segment<'_>>,
    patient: Option<&PatientRef>,
    encounter: Option<&str>,
) -> Group {
    let orc = orc.as_ref();
    let anchor = obr.or(orc).copied();
    let Some(anchor) = anchor else {
        return Group::default();
    };
    let numbers = Numbers {
        placer: number(obr, orc, 2, "PLAC"),
        filler: number(obr, orc, 3, "FILL"),
    };
    let group_number = orc.and_then(|s| ei(s.field(4), Some("PGN")));
    let facility = ctx.facility.clone();
    let patient_id = patient.map_or(String::new(), |p| p.id.clone());
    let sr_key: Vec<String> = match (&numbers.placer, &numbers.filler) {
        (Some(p), _) => vec![facility.clone(), "placer".into(), ident_key(p)],
        (None, Some(f)) => vec![facility.clone(), "filler".into(), ident_key(f)],
        (None, None) => vec![
            facility.clone(),
            patient_id.clone(),
            ctx.msg.control_id().into_owned(),
            (anchor.index() + 1).to_string(),
        ],
    };
    let sr_keys: Vec<&str> = sr_key.iter().map(String::as_str).collect();
    let sr_id = resource_id("sr", &sr_keys);

    let status = match orc {
        Some(o) => {
            let orc5 = o.field(5).opt();
            let orc1 = o.field(1).opt();
            if orc5.is_some() {
                ctx.code((o, 5), "0038", orc5, true, tables::order_status)
            } else {
                ctx.code((o, 1), "0119", orc1, true, tables::order_control_status)
            }
        }
        None => None,
    }
    .unwrap_or("unknown");

    // Priority and start: OBR-27 / ORC-7 (TQ: .4 start, .6 priority); TQ1 may refine.
    let tq = obr
        .map(|s| s.field(27))
        .filter(|f| f.has_value())
        .or_else(|| orc.map(|s| s.field(7)));
    let (tq_seg, tq_field) = match (obr, orc) {
        (Some(o), _) if o.field(27).has_value() => (Some(*o), 27),
        (_, Some(o)) => (Some(*o), 7),
        _ => (None, 0),
    };
    let priority = match (tq, tq_seg) {
        (Some(tq), Some(seg)) => {
            let code = tq.comp(6).opt();
            ctx.code((&seg, tq_field), "0027", code, false, tables::priority)
        }
        _ => None,
    };
    let occurrence = match (tq, tq_seg) {
        (Some(tq), Some(seg)) => ctx.datetime(&seg, tq_field, tq.comp(4)),
        _ => None,
    };
    let requester = match orc.filter(|o| o.field(12).has_value()) {
        Some(o) => practitioner_ref(ctx, o, o.field(12).rep(1)),
        None => match obr {
            Some(o) => practitioner_ref(ctx, o, o.field(16).rep(1)),
            None => None,
        },
    };
    let authored = orc.and_then(|o| ctx.datetime(o, 9, o.field(9)));
    let code = obr.and_then(|o| cwe(o.field(4)));
    let reasons: Vec<Json> =
        obr.map_or(Vec::new(), |o| o.field(31).reps().filter_map(cwe).collect());
    let identifiers: Vec<Json> = [&numbers.placer, &numbers.filler, &group_number]
        .into_iter()
        .flatten()
        .map(|i| i.json.clone())
        .collect();
    let subject = patient.map(|p| json!({ "reference": p.reference }));
    let enc = encounter.map(|e| json!({ "reference": e }));
    let sr = clean(json!({
        "resourceType": "ServiceRequest",
        "id": sr_id,
        "identifier": identifiers,
        "status": status,
        "intent": "order",
        "priority": priority,
        "code": code,
        "subject": subject,
        "encounter": enc,
        "occurrenceDateTime": occurrence,
        "authoredOn": authored,
        "requester": requester,
        "reasonCode": reasons,
    }));
    let sr_ref = ctx.push(sr, &anchor);

    let mut group = Group {
        sr: Some(sr_ref.clone()),
        report_key: sr_key.join("|"),
        ..Group::default()
    };
    if let Some(obr) = obr {
        group.effective = ctx.datetime(obr, 7, obr.field(7));
        if kind == Kind::Oru {
            let (dr, key) = result::map_report(ctx, obr, &numbers, patient, encounter, &sr_ref);
            group.dr = Some(dr);
            group.report_key = key;
        }
        result::map_obr15(ctx, obr, &mut group, patient);
    }
    group
}

/// TQ1-9 priority and TQ1-7 start → the group's ServiceRequest.
pub(super) fn map_tq1(ctx: &mut Ctx<'_>, tq1: &Segment<'_>, sr: &str) -> bool {
    let code = tq1.field(9).comp(1).opt();
    let priority = ctx.code((tq1, 9), "0485", code, false, tables::priority);
    let start = ctx.datetime(tq1, 7, tq1.field(7));
    let Some(r) = ctx.get_mut(sr) else {
        return false;
    };
    let mut used = false;
    if let Some(p) = priority {
        r["priority"] = Json::String(p.into());
        used = true;
    }
    if let Some(s) = start {
        if r.get("occurrenceDateTime").is_none() {
            r["occurrenceDateTime"] = Json::String(s);
        }
        used = true;
    }
    used
}

/// NTE-3 (repetitions joined by newlines) → `note` of `target`.
pub(super) fn map_nte(ctx: &mut Ctx<'_>, nte: &Segment<'_>, target: &str) -> bool {
    let lines: Vec<String> = nte
        .field(3)
        .reps()
        .map(|r: Value<'_>| r.text().into_owned())
        .collect();
    let text = lines.join("\n");
    if text.trim().is_empty() {
        return false;
    }
    let time = ctx.datetime(nte, 6, nte.field(6));
    let author = nte.field(5).comp(2).opt().map(|family| {
        let given = nte.field(5).comp(3).opt().unwrap_or_default();
        format!("{given} {family}").trim().to_string()
    });
    ctx.append(
        target,
        "note",
        clean(json!({ "text": text, "time": time, "authorString": author })),
    );
    true
}
