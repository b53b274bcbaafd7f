//! Reading the parsed resource: members, strings and references of a
//! [`Json`] tree, borrowed for the tree's lifetime (`Json::get` and
//! `Json::as_str` tie the result to the borrow instead). Nothing allocates.

use std::borrow::Cow;
use std::fmt;

use crate::view::Json;

/// Why the policy cannot evaluate a resource. Rules fail closed on it: the
/// resource is segregated with this reason, never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub Cow<'static, str>);

impl Unreadable {
    pub fn new(why: &'static str) -> Self {
        Unreadable(Cow::Borrowed(why))
    }

    pub fn owned(why: String) -> Self {
        Unreadable(Cow::Owned(why))
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The member `key` of an object.
pub fn member<'a>(value: &Json<'a>, key: &str) -> Option<&'a Json<'a>> {
    match *value {
        Json::Object(members) => members.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
        _ => None,
    }
}

pub fn string<'a>(value: &Json<'a>) -> Option<&'a str> {
    match *value {
        Json::String(s) => Some(s),
        _ => None,
    }
}

/// The string member `key`: `Ok(None)` when absent, an error when present
/// but not a string.
pub fn string_member<'a>(
    value: &Json<'a>,
    key: &str,
    what: &'static str,
) -> Result<Option<&'a str>, Unreadable> {
    match member(value, key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(Unreadable::new(what)),
    }
}

/// A value as a slice of items: an array's items, or the value itself (FHIR
/// paths step through repeating elements transparently).
pub fn items<'a>(value: &'a Json<'a>) -> &'a [Json<'a>] {
    match value {
        Json::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

/// Splits a literal reference into its type and id: `Patient/1`,
/// `https://host/fhir/Patient/1/_history/2` → `("Patient", "1")`. Contained
/// (`#x`), `urn:` and other forms name no resource of the lake: `None`.
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let reference = match reference.find("/_history/") {
        Some(at) => &reference[..at],
        None => reference,
    };
    let mut parts = reference.rsplitn(3, '/');
    let id = parts.next()?;
    let kind = parts.next()?;
    let is_type = kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.bytes().all(|b| b.is_ascii_alphabetic());
    (is_type && !id.is_empty()).then_some((kind, id))
}

/// The id a Reference element points at when it is a `kind` reference.
/// `Ok(None)`: no such reference (absent, other type, logical only).
pub fn reference_to<'a>(value: &Json<'a>, kind: &str) -> Result<Option<&'a str>, Unreadable> {
    let Json::Object(_) = value else {
        return Err(Unreadable::new("a reference is not an object"));
    };
    let Some(reference) = string_member(value, "reference", "Reference.reference is not a string")?
    else {
        return Ok(None);
    };
    Ok(split_reference(reference)
        .filter(|(k, _)| *k == kind)
        .map(|(_, id)| id))
}

/// Calls `f` on every value at `path` (member names; arrays are stepped
/// through at every step).
pub fn for_each_at<'a>(
    value: &'a Json<'a>,
    path: &[impl AsRef<str>],
    f: &mut impl FnMut(&'a Json<'a>),
) {
    match value {
        Json::Array(items) => {
            for item in *items {
                for_each_at(item, path, f);
            }
        }
        _ => match path.split_first() {
            None => f(value),
            Some((first, rest)) => {
                if let Some(child) = member(value, first.as_ref()) {
                    for_each_at(child, rest, f);
                }
            }
        },
    }
}

/// Case-insensitive ASCII substring test, without allocating.
pub fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[test]
    fn references_split_into_type_and_id() {
        assert_eq!(split_reference("Patient/1"), Some(("Patient", "1")));
        assert_eq!(
            split_reference("https://h/fhir/Encounter/e-1/_history/3"),
            Some(("Encounter", "e-1"))
        );
        for none in [
            "#c",
            "urn:uuid:1234",
            "Patient",
            "patient/1",
            "Patient/",
            "1",
        ] {
            assert_eq!(split_reference(none), None, "{none}");
        }
        let arena = Bump::new();
        let json = Json::parse(
            r#"{"a":{"reference":"Patient/p"},"b":{"reference":3},"c":{"display":"x"}}"#,
            &arena,
        )
        .unwrap();
        assert_eq!(
            reference_to(member(&json, "a").unwrap(), "Patient"),
            Ok(Some("p"))
        );
        assert_eq!(reference_to(member(&json, "a").unwrap(), "Group"), Ok(None));
        assert!(reference_to(member(&json, "b").unwrap(), "Patient").is_err());
        assert_eq!(
            reference_to(member(&json, "c").unwrap(), "Patient"),
            Ok(None)
        );
    }

    #[test]
    fn paths_step_through_arrays() {
        let arena = Bump::new();
        let json = Json::parse(r#"{"a":[{"b":1},{"b":[2,3]},{"c":4}]}"#, &arena).unwrap();
        let mut seen = Vec::new();
        for_each_at(&json, &["a", "b"], &mut |v| seen.push(v.to_string()));
        assert_eq!(seen, ["1", "2", "3"]);
        assert!(contains_ignore_case(
            "http://hl7.org/fhir/sid/ICD-10-cm",
            "icd"
        ));
        assert!(!contains_ignore_case("http://loinc.org", "icd"));
    }
}
