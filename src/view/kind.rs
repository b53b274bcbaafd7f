//! How a view column's declared FHIR type is stored, and how a FHIRPath
//! value reads as that type (the same reading for Arrow columns and for the
//! JSON rows `view run` prints).

use std::borrow::Cow;

use super::fhirpath::Item;
use super::json::Json;

/// How a column's FHIR type is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Date,
    DateTime,
}

impl Kind {
    pub(super) fn of(ty: Option<&str>) -> Kind {
        match ty.unwrap_or("string") {
            "integer" | "positiveInt" | "unsignedInt" | "integer64" => Kind::Int,
            "decimal" => Kind::Float,
            "boolean" => Kind::Bool,
            "date" => Kind::Date,
            "dateTime" | "instant" => Kind::DateTime,
            _ => Kind::Text,
        }
    }
}

/// Why `item` cannot be stored in a column of `kind`, if it cannot. Such a
/// value is an error (its resource is quarantined), never a silent null.
/// Says what kind of value it is, never the value: it may be PHI.
pub(super) fn mismatch(kind: Kind, item: &Item<'_>) -> Option<&'static str> {
    let fits = match kind {
        Kind::Text => return None,
        _ if matches!(
            item,
            Item::Node {
                json: Json::Null,
                ..
            }
        ) =>
        {
            return None;
        }
        Kind::Int => int_of(item).is_some(),
        Kind::Float => float_of(item).is_some(),
        Kind::Bool => bool_of(item).is_some(),
        Kind::Date | Kind::DateTime => str_of(item).is_some(),
    };
    if fits {
        return None;
    }
    Some(match item {
        Item::Node { json, .. } => match json {
            Json::String(_) => "a string",
            Json::Number(_) if kind == Kind::Int => "a number that is not a whole 64-bit integer",
            Json::Number(_) => "a number",
            Json::Bool(_) => "a boolean",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
            Json::Null => "null",
        },
        Item::Bool(_) => "a boolean",
        Item::Int(_) => "an integer",
        Item::Dec(_) if kind == Kind::Int => "a decimal that is not a whole 64-bit integer",
        Item::Dec(_) => "a decimal",
        Item::Str(_) => "a string",
        Item::Date(_) | Item::DateTime(_) | Item::Time(_) => "a date/time",
    })
}

/// The item as a JSON string, if it is one (the only values dates come from).
pub(super) fn str_of<'i>(item: &'i Item<'_>) -> Option<&'i str> {
    match item {
        Item::Node {
            json: Json::String(s),
            ..
        } => Some(s),
        Item::Str(s) | Item::Date(s) | Item::DateTime(s) | Item::Time(s) => Some(s),
        _ => None,
    }
}

/// Strings as they are (no copy); other values as their JSON text.
pub(super) fn text_of<'i>(item: &'i Item<'_>) -> Option<Cow<'i, str>> {
    match item {
        Item::Node {
            json: Json::Null, ..
        } => None,
        _ => match str_of(item) {
            Some(s) => Some(Cow::Borrowed(s)),
            None => Some(Cow::Owned(item.to_serde().to_string())),
        },
    }
}

/// A JSON number's value as f64 (as serde_json would read it).
pub(super) fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

pub(super) fn int_of(item: &Item<'_>) -> Option<i64> {
    let text = match item {
        Item::Int(i) => return Some(*i),
        Item::Dec(d) => d.as_ref(),
        Item::Node {
            json: Json::Number(n),
            ..
        } => n,
        _ => return None,
    };
    text.parse::<i64>()
        .ok()
        .or_else(|| number(text).filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

pub(super) fn float_of(item: &Item<'_>) -> Option<f64> {
    match item {
        Item::Int(i) => Some(*i as f64),
        Item::Dec(d) => number(d),
        Item::Node {
            json: Json::Number(n),
            ..
        } => number(n),
        _ => None,
    }
}

pub(super) fn bool_of(item: &Item<'_>) -> Option<bool> {
    match item {
        Item::Bool(b)
        | Item::Node {
            json: Json::Bool(b),
            ..
        } => Some(*b),
        _ => None,
    }
}

/// `item` as JSON of a column of `kind`: the value the column's Arrow
/// builder stores, so `view run` prints what a load writes.
pub(super) fn typed_json(kind: Kind, item: &Item<'_>) -> serde_json::Value {
    match kind {
        Kind::Text | Kind::Date | Kind::DateTime => {
            text_of(item).map_or(serde_json::Value::Null, |s| s.into_owned().into())
        }
        Kind::Int => int_of(item).map_or(serde_json::Value::Null, Into::into),
        // A decimal prints as written (`107`, `1.50`), as FHIR JSON has it.
        Kind::Float => match float_of(item) {
            Some(_) => item.to_serde(),
            None => serde_json::Value::Null,
        },
        Kind::Bool => bool_of(item).map_or(serde_json::Value::Null, Into::into),
    }
}
