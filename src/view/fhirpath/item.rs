//! One value of a FHIRPath collection, and what the evaluator asks of it:
//! its type, its scalar reading, its JSON form.

use std::borrow::Cow;

use crate::view::json::Json;

/// One value in a FHIRPath collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// A node of the resource; `ty` is the FHIR type a choice element's name
    /// gave it (`valueQuantity` → `Quantity`), when known.
    Node {
        json: &'a Json<'a>,
        ty: Option<&'a str>,
    },
    Bool(bool),
    Int(i64),
    /// Decimal as written (keeps precision).
    Dec(Cow<'a, str>),
    Str(Cow<'a, str>),
    Date(Cow<'a, str>),
    DateTime(Cow<'a, str>),
    Time(Cow<'a, str>),
}

/// Scalar view of an item, for comparisons.
#[derive(Debug, PartialEq)]
pub(super) enum Scalar<'s> {
    Bool(bool),
    Num(f64),
    Str(&'s str),
    Other,
}

impl<'a> Item<'a> {
    pub(super) fn scalar(&self) -> Scalar<'_> {
        match self {
            Item::Bool(b) => Scalar::Bool(*b),
            Item::Int(i) => Scalar::Num(*i as f64),
            Item::Dec(d) => d.parse().map_or(Scalar::Other, Scalar::Num),
            Item::Str(s) | Item::Date(s) | Item::DateTime(s) | Item::Time(s) => Scalar::Str(s),
            Item::Node { json, .. } => match json {
                Json::Bool(b) => Scalar::Bool(*b),
                Json::Number(n) => n.parse().map_or(Scalar::Other, Scalar::Num),
                Json::String(s) => Scalar::Str(s),
                _ => Scalar::Other,
            },
        }
    }

    /// The item's value when it is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Item::Bool(b)
            | Item::Node {
                json: Json::Bool(b),
                ..
            } => Some(*b),
            _ => None,
        }
    }

    /// The FHIR type name of the item, as far as it is known.
    pub fn type_name(&self) -> Cow<'_, str> {
        match self {
            Item::Bool(_) => "boolean".into(),
            Item::Int(_) => "integer".into(),
            Item::Dec(_) => "decimal".into(),
            Item::Str(_) => "string".into(),
            Item::Date(_) => "date".into(),
            Item::DateTime(_) => "dateTime".into(),
            Item::Time(_) => "time".into(),
            Item::Node { ty: Some(ty), .. } => {
                // Choice suffixes capitalise primitives (valueDateTime → dateTime).
                if is_primitive(ty) {
                    let first = ty.chars().next().unwrap_or('X');
                    format!("{}{}", first.to_ascii_lowercase(), &ty[first.len_utf8()..]).into()
                } else {
                    (*ty).into()
                }
            }
            Item::Node { json, ty: None } => match json {
                Json::Bool(_) => "boolean".into(),
                Json::Number(n) if !n.contains(['.', 'e', 'E']) => "integer".into(),
                Json::Number(_) => "decimal".into(),
                Json::String(_) => "string".into(),
                Json::Object(_) => json
                    .get("resourceType")
                    .and_then(Json::as_str)
                    .unwrap_or("Element")
                    .into(),
                _ => "Element".into(),
            },
        }
    }

    /// Converts to a JSON value for output.
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Item::Bool(b) => (*b).into(),
            Item::Int(i) => (*i).into(),
            Item::Dec(d) => crate::view::json::number_to_serde(d),
            Item::Str(s) | Item::Date(s) | Item::DateTime(s) | Item::Time(s) => s.as_ref().into(),
            Item::Node { json, .. } => json.to_serde(),
        }
    }
}

const PRIMITIVES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "integer64",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

fn is_primitive(name: &str) -> bool {
    PRIMITIVES.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// Whether `item` is of FHIR type `wanted` (FHIR. / System. prefixes ignored).
pub(super) fn is_type(item: &Item<'_>, wanted: &str) -> bool {
    // A choice element's type is its name's suffix; the names compare
    // case-insensitively (valueDateTime is a dateTime), no allocation.
    if let Item::Node { ty: Some(ty), .. } = item {
        return ty.eq_ignore_ascii_case(wanted);
    }
    let actual = item.type_name();
    if actual.eq_ignore_ascii_case(wanted) {
        return true;
    }
    // Untyped JSON strings can hold any string-based primitive.
    let untyped_string = matches!(
        item,
        Item::Node {
            json: Json::String(_),
            ty: None
        }
    );
    let string_based = [
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "markdown",
        "base64Binary",
        "date",
        "dateTime",
        "instant",
        "time",
    ];
    untyped_string && string_based.iter().any(|t| t.eq_ignore_ascii_case(wanted))
        || matches!(
            item,
            Item::Node {
                json: Json::Number(_),
                ty: None
            }
        ) && ["positiveInt", "unsignedInt", "decimal"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(wanted))
}
