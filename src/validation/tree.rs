//! The reads the validator makes of a parsed resource, over both trees it
//! meets: serde_json's (`fhirlake validate`, profile patterns) and the
//! load path's arena [`Json`] (so a load validates the tree it already
//! parsed for its views and code checks, without building a second one).

use serde_json::Value;

use crate::view::Json;
use crate::view::json::number_to_serde;

/// A borrowed JSON value.
pub trait Tree<'v>: Copy + 'v {
    /// An object's member.
    fn get(self, key: &str) -> Option<Self>;
    /// An object's members in order; none for anything else.
    fn members(self) -> impl Iterator<Item = (&'v str, Self)>;
    /// An array's items; `None` when it is not an array.
    fn items(self) -> Option<impl Iterator<Item = Self>>;
    fn as_str(self) -> Option<&'v str>;
    fn is_null(self) -> bool;
    fn is_object(self) -> bool;
    /// Equal to `other`, which is neither an array nor an object.
    fn scalar_eq(self, other: &Value) -> bool;
    /// Compact JSON, for a finding's message.
    fn show(self) -> String;
    /// The load path's tree, which FHIRPath invariants are evaluated on
    /// (`None` for serde_json's: [`Profiles::validate_value`] converts).
    ///
    /// [`Profiles::validate_value`]: super::Profiles::validate_value
    fn as_json(self) -> Option<&'v Json<'v>>;
}

impl<'v> Tree<'v> for &'v Value {
    fn get(self, key: &str) -> Option<Self> {
        Value::get(self, key)
    }
    fn members(self) -> impl Iterator<Item = (&'v str, Self)> {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        self.as_array().map(|items| items.iter())
    }
    fn as_str(self) -> Option<&'v str> {
        Value::as_str(self)
    }
    fn is_null(self) -> bool {
        Value::is_null(self)
    }
    fn is_object(self) -> bool {
        Value::is_object(self)
    }
    fn scalar_eq(self, other: &Value) -> bool {
        self == other
    }
    fn show(self) -> String {
        self.to_string()
    }
    fn as_json(self) -> Option<&'v Json<'v>> {
        None
    }
}

impl<'v, 'a: 'v> Tree<'v> for &'v Json<'a> {
    fn get(self, key: &str) -> Option<Self> {
        Json::get(self, key)
    }
    fn members(self) -> impl Iterator<Item = (&'v str, Self)> {
        let members: &'v [(&'a str, Json<'a>)] = match self {
            Json::Object(members) => members,
            _ => &[],
        };
        members.iter().map(|(k, v)| (*k, v))
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        match self {
            Json::Array(items) => Some(items.iter()),
            _ => None,
        }
    }
    fn as_str(self) -> Option<&'v str> {
        Json::as_str(self)
    }
    fn is_null(self) -> bool {
        matches!(self, Json::Null)
    }
    fn is_object(self) -> bool {
        matches!(self, Json::Object(_))
    }
    fn scalar_eq(self, other: &Value) -> bool {
        match (self, other) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::String(a), Value::String(b)) => a == b,
            (Json::Number(a), Value::Number(_)) => number_to_serde(a) == *other,
            _ => false,
        }
    }
    fn show(self) -> String {
        let mut out = String::new();
        self.write_compact(&mut out);
        out
    }
    fn as_json(self) -> Option<&'v Json<'v>> {
        Some(self)
    }
}

/// Deep equality with a profile's fixed value (member order aside).
pub fn equals<'v>(value: impl Tree<'v>, fixed: &Value) -> bool {
    match fixed {
        Value::Array(fixed) => value.items().is_some_and(|items| {
            let mut fixed = fixed.iter();
            items
                .into_iter()
                .all(|v| fixed.next().is_some_and(|f| equals(v, f)))
                && fixed.next().is_none()
        }),
        Value::Object(fixed) => {
            value.is_object()
                && value.members().count() == fixed.len()
                && fixed
                    .iter()
                    .all(|(key, f)| value.get(key).is_some_and(|v| equals(v, f)))
        }
        scalar => value.scalar_eq(scalar),
    }
}

/// FHIR pattern semantics: every member the pattern has, the value has
/// with a matching value; an array in the pattern is matched item by item
/// by some item of the value's array.
pub fn matches_pattern<'v, T: Tree<'v>>(value: T, pattern: &Value) -> bool {
    match pattern {
        Value::Object(pattern) => {
            value.is_object()
                && pattern
                    .iter()
                    .all(|(key, p)| value.get(key).is_some_and(|v| matches_pattern(v, p)))
        }
        Value::Array(patterns) => value.items().is_some_and(|_| {
            patterns.iter().all(|p| {
                value
                    .items()
                    .into_iter()
                    .flatten()
                    .any(|v| matches_pattern(v, p))
            })
        }),
        scalar => value.scalar_eq(scalar),
    }
}
