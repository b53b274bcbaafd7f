//! MSH/EVN/SFT → [`MessageInfo`], the `meta` every resource carries, the
//! MessageHeader (event, source, destination, focus) and the Provenance
//! (target, recorded, agent, entity) of the message.

use chrono::Timelike;
use serde_json::{Value as Json, json};

use super::super::dtm::parse_dtm;
use super::super::ids::{id_safe, resource_id, urn_part};
use super::super::parse::Message;
use super::datatypes::{clean, hd_label};
use super::walk::Ctx;
use super::{MapError, MapOptions, MessageInfo};

/// The standard message structure for an event, for when MSH-9.3 is empty (v2.3).
fn default_structure(code: &str, trigger: &str) -> String {
    let s = match (code, trigger) {
        ("ADT", "A01" | "A04" | "A08" | "A13") => "ADT_A01",
        ("ADT", "A02") => "ADT_A02",
        ("ADT", "A03") => "ADT_A03",
        ("ADT", "A05" | "A14" | "A28" | "A31") => "ADT_A05",
        ("ADT", "A06" | "A07") => "ADT_A06",
        ("ADT", "A11") => "ADT_A09",
        ("ADT", "A40") => "ADT_A39",
        ("ORM", "O01") => "ORM_O01",
        ("ORU", "R01") => "ORU_R01",
        _ => "",
    };
    s.to_string()
}

pub(super) fn message_info(msg: &Message<'_>, opts: &MapOptions) -> Result<MessageInfo, MapError> {
    let h = msg.header();
    let (code, trigger, structure) = msg.message_type();
    let raw7 = h.field(7).comp(1).text().trim().to_string();
    let msh7 = parse_dtm(&raw7).map_err(|reason| MapError::BadMessageTimestamp {
        value: raw7.clone(),
        reason,
    })?;
    let (timestamp, assumed) = msh7.to_instant(opts.timezone);
    let event = h_evn2(msg).map(|d| d.to_instant(opts.timezone).0);
    Ok(MessageInfo {
        control_id: msg.control_id().trim().to_string(),
        sending_application: hd_label(h.field(3)),
        sending_facility: hd_label(h.field(4)),
        receiving_application: hd_label(h.field(5)),
        receiving_facility: hd_label(h.field(6)),
        structure: match structure.trim() {
            "" => default_structure(&code, &trigger),
            s => s.to_string(),
        },
        message_type: code.into_owned(),
        trigger_event: trigger.into_owned(),
        version: msg.version(),
        timestamp,
        event_timestamp: event,
        sequence_number: h.field(13).opt().and_then(|s| s.parse().ok()),
        processing_id: h.field(11).comp(1).opt(),
        timezone_assumed: assumed,
    })
}

fn h_evn2(msg: &Message<'_>) -> Option<super::super::dtm::Dtm> {
    let evn = msg.segments("EVN").next()?;
    parse_dtm(&evn.field(2).comp(1).opt()?).ok()
}

fn source_urn(info: &MessageInfo) -> String {
    format!(
        "urn:fhirlake:hl7v2:{}|{}",
        urn_part(info.sending_application.as_deref().unwrap_or("")),
        urn_part(info.sending_facility.as_deref().unwrap_or(""))
    )
}

/// `meta` for every resource: versionId, lastUpdated, source.
pub(super) fn meta(ctx: &mut Ctx<'_>, info: &MessageInfo) -> Json {
    let version_id = match info.sequence_number {
        Some(seq) => format!("{seq:020}"),
        None => {
            let utc = info.timestamp.naive_utc();
            format!(
                "{}{:06}-{}",
                utc.format("%Y%m%d%H%M%S"),
                utc.nanosecond() / 1000 % 1_000_000,
                id_safe(&info.control_id, 43)
            )
        }
    };
    let h = ctx.msg.header();
    let evn = ctx.msg.segments("EVN").next();
    let last_updated = evn
        .and_then(|e| ctx.instant(&e, 2, e.field(2)))
        .or_else(|| ctx.instant(&h, 7, h.field(7)));
    json!({
        "versionId": version_id,
        "lastUpdated": last_updated,
        "source": source_urn(info),
    })
}

fn mh_key(info: &MessageInfo, msg: &Message<'_>) -> Vec<String> {
    vec![
        info.sending_application.clone().unwrap_or_default(),
        info.sending_facility.clone().unwrap_or_default(),
        info.control_id.clone(),
        msg.header().field(7).raw().to_string(),
    ]
}

/// Put the MessageHeader first and the Provenance last.
pub(super) fn finish(ctx: &mut Ctx<'_>, info: &MessageInfo) -> Vec<Json> {
    let msg = ctx.msg;
    let h = msg.header();
    let key = mh_key(info, msg);
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    let focus: Vec<Json> = ctx
        .resources
        .iter()
        .map(|r| json!({ "reference": format!("{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or("")) }))
        .collect();
    let sft = msg.segments("SFT").next();
    let dest = info.receiving_application.is_some() || info.receiving_facility.is_some();
    let event_display = h.field(9).text().into_owned();
    let mut header = clean(json!({
        "resourceType": "MessageHeader",
        "id": resource_id("mh", &keys),
        "eventCoding": {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
            "code": info.trigger_event,
            "display": event_display,
        },
        "destination": [dest.then(|| json!({
            "name": info.receiving_application,
            "endpoint": format!(
                "urn:fhirlake:hl7v2:{}|{}",
                urn_part(info.receiving_application.as_deref().unwrap_or("")),
                urn_part(info.receiving_facility.as_deref().unwrap_or(""))
            ),
        }))],
        "source": {
            "name": info.sending_application,
            "software": sft.and_then(|s| s.field(3).opt()),
            "version": sft.and_then(|s| s.field(2).opt()),
            "endpoint": source_urn(info),
        },
        "focus": focus,
    }));
    header["meta"] = ctx.meta.clone();
    if let Some(p) = &info.processing_id {
        header["meta"]["tag"] = json!([{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0103",
            "code": p,
        }]);
    }
    let header_ref = format!("MessageHeader/{}", header["id"].as_str().unwrap_or(""));
    let mut targets = vec![json!({ "reference": header_ref })];
    targets.extend(focus_refs(&ctx.resources));
    let recorded = ctx.instant(&h, 7, h.field(7));
    let evn = msg.segments("EVN").next();
    let occurred = evn.and_then(|e| {
        let f = if e.field(6).has_value() { 6 } else { 2 };
        ctx.datetime(&e, f, e.field(f))
    });
    let app = format!(
        "{}|{}",
        info.sending_application.as_deref().unwrap_or(""),
        info.sending_facility.as_deref().unwrap_or("")
    );
    let mut provenance = clean(json!({
        "resourceType": "Provenance",
        "id": resource_id("prov", &keys),
        "target": targets,
        "recorded": recorded,
        "occurredDateTime": occurred,
        "activity": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
            "code": info.trigger_event,
            "display": event_display,
        }]},
        "agent": [{
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "author",
                "display": "Author",
            }]},
            "who": {
                "identifier": { "system": "urn:fhirlake:hl7v2:application", "value": app },
                "display": format!("{} at {}",
                    info.sending_application.as_deref().unwrap_or("unknown application"),
                    info.sending_facility.as_deref().unwrap_or("unknown facility")),
            },
        }],
        "entity": [{
            "role": "source",
            "what": {
                "identifier": {
                    "system": format!("{}:control-id", source_urn(info)),
                    "value": info.control_id,
                },
                "display": format!("HL7 v2 {} message {}", event_display, info.control_id),
            },
        }],
    }));
    provenance["meta"] = ctx.meta.clone();
    let mut out = Vec::with_capacity(ctx.resources.len() + 2);
    out.push(header);
    out.append(&mut ctx.resources);
    out.push(provenance);
    out
}

fn focus_refs(resources: &[Json]) -> Vec<Json> {
    resources
        .iter()
        .map(|r| {
            json!({ "reference": format!("{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")) })
        })
        .collect()
}
