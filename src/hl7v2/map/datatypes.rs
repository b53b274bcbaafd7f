//! v2 datatypes → FHIR datatypes (IG `mappings/datatypes`: CX, EI, HD, XPN,
//! XAD, XTN, CWE, XCN, PL, NM/CWE → Quantity). Each reader takes a
//! [`Value`] at any level and walks it with `part(i)`, so the same code reads
//! a CX that is a whole field and an HD that sits inside a component.
//! Readers are pure: dates that do not parse are left out here, and the
//! segment mappers that need to warn about them use `Ctx` instead.

use serde_json::{Map, Value as Json, json};

use super::super::dtm::parse_dtm;
use super::super::ids::urn_part;
use super::super::parse::Value;
use super::tables;

pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// Drop nulls, empty strings, empty arrays and empty objects, recursively,
/// so resources can be written with `json!` and `Option`s.
pub fn clean(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| (k, clean(v)))
                .filter(|(_, v)| !is_blank(v))
                .collect::<Map<String, Json>>(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(clean).filter(|v| !is_blank(v)).collect()),
        other => other,
    }
}

fn is_blank(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// HD parts → a system URI: `urn:oid:` for ISO OIDs, `urn:uuid:` for UUIDs,
/// the URI itself for URI/URL, and `urn:fhirlake:v2:<ns>` when only a
/// namespace id is given.
pub fn hd_system(ns: Option<String>, uid: Option<String>, ty: Option<String>) -> Option<String> {
    let ty = ty.map(|t| t.to_ascii_uppercase());
    match (uid, ty.as_deref()) {
        (Some(u), Some("ISO")) => Some(oid_urn(&u)),
        (Some(u), Some("UUID")) => Some(format!("urn:uuid:{}", u.trim_start_matches("urn:uuid:"))),
        (Some(u), Some("URI" | "URL")) => Some(u),
        (Some(u), Some(t)) => Some(format!("urn:fhirlake:v2:{}:{}", urn_part(t), urn_part(&u))),
        (Some(u), None) if is_oid(&u) => Some(oid_urn(&u)),
        (Some(u), None) => Some(format!("urn:fhirlake:v2:{}", urn_part(&u))),
        (None, _) => ns.map(|n| format!("urn:fhirlake:v2:{}", urn_part(&n))),
    }
}

fn is_oid(s: &str) -> bool {
    s.contains('.') && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn oid_urn(u: &str) -> String {
    format!("urn:oid:{}", u.trim_start_matches("urn:oid:"))
}

/// An HD (field or component) as a system URI.
pub fn hd(v: Value) -> Option<String> {
    hd_system(v.part(1).opt(), v.part(2).opt(), v.part(3).opt())
}

/// An HD as a short label: namespace id, else universal id.
pub fn hd_label(v: Value) -> Option<String> {
    v.part(1).opt().or_else(|| v.part(2).opt())
}

/// A DT/DTM as a FHIR date (pure: unparseable dates are dropped).
pub fn date(v: Value) -> Option<String> {
    parse_dtm(&v.part(1).opt()?).ok().map(|d| d.to_date())
}

fn period(start: Option<String>, end: Option<String>) -> Json {
    json!({ "start": start, "end": end })
}

/// An identifier read from a CX or EI.
#[derive(Debug, Clone)]
pub struct Ident {
    pub system: Option<String>,
    pub value: String,
    pub type_code: Option<String>,
    pub json: Json,
}

pub fn type_concept(code: &str) -> Json {
    json!({ "coding": [{
        "system": V2_0203,
        "code": code,
        "display": tables::identifier_type_display(code),
    }]})
}

/// CX → Identifier (value, system from the assigning authority, type, period).
pub fn cx(v: Value) -> Option<Ident> {
    let value = v.part(1).opt()?;
    let authority = v.part(4);
    let system = hd(authority);
    let type_code = v.part(5).opt();
    let json = clean(json!({
        "type": type_code.as_deref().map(type_concept),
        "system": system,
        "value": value,
        "period": period(date(v.part(7)), date(v.part(8))),
        "assigner": { "display": hd_label(authority) },
    }));
    Some(Ident {
        system,
        value,
        type_code,
        json,
    })
}

/// EI → Identifier, with an optional v2-0203 type (PLAC, FILL, PGN ...).
pub fn ei(v: Value, type_code: Option<&str>) -> Option<Ident> {
    let value = v.part(1).opt()?;
    let system = hd_system(v.part(2).opt(), v.part(3).opt(), v.part(4).opt());
    let json = clean(json!({
        "type": type_code.map(type_concept),
        "system": system,
        "value": value,
    }));
    Some(Ident {
        system,
        value,
        type_code: type_code.map(str::to_string),
        json,
    })
}

/// XPN (or the name part of an XCN starting at `first`) → HumanName.
pub fn xpn(v: Value) -> Option<Json> {
    let name = clean(json!({
        "use": v.part(7).opt().as_deref().and_then(tables::name_use),
        "family": v.part(1).part(1).opt(),
        "given": [v.part(2).opt(), v.part(3).opt()],
        "prefix": [v.part(5).opt()],
        "suffix": [v.part(4).opt(), v.part(6).opt(), v.part(14).opt()],
        "period": match (date(v.part(12)), date(v.part(13))) {
            (None, None) => period(date(v.part(10).part(1)), date(v.part(10).part(2))),
            (s, e) => period(s, e),
        },
    }));
    (name.get("family").is_some() || name.get("given").is_some()).then_some(name)
}

/// XAD → Address. The SAD parts of XAD.1 are joined into one line.
pub fn xad(v: Value) -> Option<Json> {
    let street = v.part(1);
    let sad: Vec<String> = (1..=3).filter_map(|i| street.part(i).opt()).collect();
    let (use_, type_) = v
        .part(7)
        .opt()
        .map_or((None, None), |c| tables::address_use_type(&c));
    let addr = clean(json!({
        "use": use_,
        "type": type_,
        "line": [(!sad.is_empty()).then(|| sad.join(" ")), v.part(2).opt(), v.part(19).opt()],
        "city": v.part(3).opt(),
        "state": v.part(4).opt(),
        "postalCode": v.part(5).opt(),
        "country": v.part(6).opt(),
        "district": v.part(9).part(1).opt(),
        "period": match (date(v.part(13)), date(v.part(14))) {
            (None, None) => period(date(v.part(12).part(1)), date(v.part(12).part(2))),
            (s, e) => period(s, e),
        },
    }));
    (addr.as_object().is_some_and(|m| {
        m.keys()
            .any(|k| !matches!(k.as_str(), "use" | "type" | "period"))
    }))
    .then_some(addr)
}

/// XTN → ContactPoint. `default_use`/`default_system` come from the field
/// (PID-13 is "home phone", PID-14 "business phone") when XTN.2/XTN.3 are empty.
pub fn xtn(v: Value, default_use: Option<&str>, default_system: Option<&str>) -> Option<Json> {
    let equip = v.part(3).opt();
    let mapped = equip.as_deref().and_then(tables::telecom_system);
    let is_email = mapped.is_some_and(|(s, _)| s == "email");
    let composed = || {
        let local = v.part(7).opt()?;
        let mut s = String::new();
        if let Some(c) = v.part(5).opt() {
            s.push_str(&format!("+{c} "));
        }
        if let Some(a) = v.part(6).opt() {
            s.push_str(&format!("{a} "));
        }
        s.push_str(&local);
        if let Some(x) = v.part(8).opt() {
            s.push_str(&format!(" X{x}"));
        }
        Some(s)
    };
    let (value, from_address) = if is_email {
        (v.part(4).opt(), true)
    } else if let Some(u) = v.part(12).opt() {
        (Some(u), false)
    } else if let Some(c) = composed() {
        (Some(c), false)
    } else if let Some(t) = v.part(1).opt() {
        (Some(t), false)
    } else {
        (v.part(4).opt(), true)
    };
    let value = value?;
    let system = match mapped {
        Some((s, _)) => Some(s),
        None if from_address => Some("email"),
        None => default_system,
    };
    let use_ = v
        .part(2)
        .opt()
        .as_deref()
        .and_then(tables::telecom_use)
        .or(mapped.and_then(|(_, u)| u))
        .or(default_use);
    let rank = v
        .part(18)
        .opt()
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|r| *r > 0);
    Some(clean(json!({
        "system": system,
        "value": value,
        "use": use_,
        "rank": rank,
        "period": period(date(v.part(13)), date(v.part(14))),
    })))
}

/// One coding from code/display/system-name(/version) parts.
pub fn coding(code: Value, display: Value, system: Value, version: Value) -> Option<Json> {
    let code = code.opt()?;
    Some(clean(json!({
        "system": system.opt().map(|s| tables::code_system_uri(&s)),
        "version": version.opt(),
        "code": code,
        "display": display.opt(),
    })))
}

/// CWE/CE/CNE → CodeableConcept: primary and alternate codings, text from
/// CWE.9 (original text), or CWE.2 when there is no code at all.
pub fn cwe(v: Value) -> Option<Json> {
    let codings: Vec<Json> = [
        coding(v.part(1), v.part(2), v.part(3), v.part(7)),
        coding(v.part(4), v.part(5), v.part(6), v.part(8)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let text = v
        .part(9)
        .opt()
        .or_else(|| codings.is_empty().then(|| v.part(2).opt()).flatten());
    if codings.is_empty() && text.is_none() {
        return None;
    }
    Some(clean(json!({ "coding": codings, "text": text })))
}

/// A decimal as a JSON number (integers stay integers).
pub fn number(s: &str) -> Option<Json> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let body = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let ok = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return None;
    }
    if frac.is_empty()
        && !body.contains('.')
        && let Ok(i) = t.parse::<i64>()
    {
        return Some(Json::from(i));
    }
    t.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Json::Number)
}

/// OBX-6 (CWE units) as the unit/system/code members of a Quantity; the
/// UCUM system only when the unit's coding system says UCUM.
pub fn unit_members(units: Value) -> Map<String, Json> {
    let mut m = Map::new();
    let (code, text, sys) = if units
        .part(3)
        .opt()
        .is_some_and(|s| s.eq_ignore_ascii_case("UCUM"))
    {
        (units.part(1).opt(), units.part(2).opt(), true)
    } else if units
        .part(6)
        .opt()
        .is_some_and(|s| s.eq_ignore_ascii_case("UCUM"))
    {
        (units.part(4).opt(), units.part(5).opt(), true)
    } else {
        (units.part(1).opt(), units.part(2).opt(), false)
    };
    if let Some(unit) = text.clone().or_else(|| code.clone()) {
        m.insert("unit".into(), Json::String(unit));
    }
    if sys && let Some(code) = code {
        m.insert(
            "system".into(),
            Json::String("http://unitsofmeasure.org".into()),
        );
        m.insert("code".into(), Json::String(code));
    }
    m
}

/// A Quantity from a number string and OBX-6 units.
pub fn quantity(num: &str, units: Value, comparator: Option<&str>) -> Option<Json> {
    let value = number(num)?;
    let mut m = Map::new();
    m.insert("value".into(), value);
    if let Some(c) = comparator {
        m.insert("comparator".into(), Json::String(c.into()));
    }
    m.extend(unit_members(units));
    Some(Json::Object(m))
}

/// The person part of an XCN: (key parts, Practitioner body, display).
pub fn xcn(v: Value, facility: &str) -> Option<(Vec<String>, Json, String)> {
    let id = v.part(1).opt();
    let system = hd(v.part(9));
    let family = v.part(2).part(1).opt();
    let given: Vec<String> = [v.part(3).opt(), v.part(4).opt()]
        .into_iter()
        .flatten()
        .collect();
    let name = clean(json!({
        "family": family,
        "given": given,
        "prefix": [v.part(6).opt()],
        "suffix": [v.part(5).opt(), v.part(7).opt()],
    }));
    let display = {
        let mut parts: Vec<String> = given.clone();
        parts.extend(family.clone());
        if parts.is_empty() {
            id.clone()?
        } else {
            parts.join(" ")
        }
    };
    let key = match (&id, &family) {
        (Some(id), _) => vec![
            "id".to_string(),
            system.clone().unwrap_or_else(|| facility.to_string()),
            id.clone(),
        ],
        (None, Some(f)) => {
            let mut k = vec!["name".to_string(), facility.to_string(), f.clone()];
            k.extend(given.iter().cloned());
            k
        }
        (None, None) => return None,
    };
    let body = clean(json!({
        "resourceType": "Practitioner",
        "identifier": [id.map(|id| json!({ "system": system, "value": id }))],
        "name": [name],
    }));
    Some((key, body, display))
}

/// PL → (key parts, Location body, display). The Location is the most
/// granular place named (bed, else room, else point of care ...).
pub fn pl(v: Value, facility: &str) -> Option<(Vec<String>, Json, String)> {
    let poc = v.part(1).part(1).opt();
    let room = v.part(2).part(1).opt();
    let bed = v.part(3).part(1).opt();
    let fac = hd_label(v.part(4)).unwrap_or_else(|| facility.to_string());
    let building = v.part(7).part(1).opt();
    let floor = v.part(8).part(1).opt();
    let description = v.part(9).opt();
    let named: Vec<String> = [poc.clone(), room.clone(), bed.clone()]
        .into_iter()
        .flatten()
        .collect();
    if named.is_empty() && building.is_none() && floor.is_none() && description.is_none() {
        return None;
    }
    let display = description.clone().unwrap_or_else(|| {
        let mut d = named.clone();
        d.extend(building.clone());
        d.join(" ")
    });
    let physical = if bed.is_some() {
        ("bd", "Bed")
    } else if room.is_some() {
        ("ro", "Room")
    } else if poc.is_some() {
        ("wa", "Ward")
    } else if floor.is_some() {
        ("lvl", "Level")
    } else {
        ("bu", "Building")
    };
    let key = [
        fac.clone(),
        poc.unwrap_or_default(),
        room.unwrap_or_default(),
        bed.unwrap_or_default(),
        building.unwrap_or_default(),
        floor.unwrap_or_default(),
    ]
    .to_vec();
    let body = clean(json!({
        "resourceType": "Location",
        "name": display,
        "description": description,
        "mode": "instance",
        "physicalType": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
            "code": physical.0,
            "display": physical.1,
        }]},
    }));
    Some((key, body, display))
}
