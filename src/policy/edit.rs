//! Changing a resource the policy matched: labels added, elements removed,
//! the segregating rule tagged.
//!
//! In: the parsed resource and the [`Edits`] its rules asked for. Out: the
//! changed resource as compact JSON (members in name order: the tree is
//! re-serialised through `serde_json`). Runs only for resources a rule
//! changes or segregates, so it may allocate.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::labels::{self, Label, OBSERVATION_VALUE};
use super::tree;
use crate::view::Json;

/// The `meta.tag` system naming the rule that segregated a resource (its
/// code) and why (its display).
pub const POLICY_RULE_TAG: &str = "urn:fhirlake:policy-rule";

/// An element a redact rule removes: a member path from the resource root
/// (`name`, `contact.telecom`; arrays are stepped through),
/// `Reference.display`, the display text of every Reference anywhere
/// (literal or logical: an object with a `reference` or an `identifier`), or
/// `extension(URL)`, the resource's extensions of that URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    Members(Box<[Box<str>]>),
    ReferenceDisplay,
    Extension(Box<str>),
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        if text == "Reference.display" {
            return Ok(Path::ReferenceDisplay);
        }
        if let Some(url) = text
            .strip_prefix("extension(")
            .and_then(|t| t.strip_suffix(')'))
        {
            if !url.contains(':') {
                return Err(format!("`{text}`: the extension URL is not a URI"));
            }
            return Ok(Path::Extension(url.into()));
        }
        let steps: Box<[Box<str>]> = text.split('.').map(Into::into).collect();
        let valid =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !steps.iter().all(|s| valid(s)) || steps[0].starts_with(|c: char| c.is_ascii_uppercase())
        {
            return Err(format!(
                "`{text}` is not an element path (`name`, `contact.telecom`) or `Reference.display`"
            ));
        }
        if matches!(&*steps[0], "resourceType" | "id" | "meta") {
            return Err(format!(
                "`{text}`: the resource's keys and meta cannot be redacted"
            ));
        }
        Ok(Path::Members(steps))
    }

    /// Whether the resource holds anything at this path.
    pub fn is_present(&self, resource: &Json<'_>) -> bool {
        match self {
            Path::Members(steps) => {
                let mut found = false;
                tree::for_each_at(resource, steps, &mut |_| found = true);
                found
            }
            Path::ReferenceDisplay => has_reference_display(resource),
            Path::Extension(url) => match tree::member(resource, "extension") {
                Some(Json::Array(items)) => items.iter().any(|e| is_extension(e, url)),
                _ => false,
            },
        }
    }
}

fn is_extension(extension: &Json<'_>, url: &str) -> bool {
    tree::member(extension, "url").and_then(tree::string) == Some(url)
}

fn has_reference_display(value: &Json<'_>) -> bool {
    match *value {
        Json::Array(items) => items.iter().any(has_reference_display),
        Json::Object(members) => {
            let is_reference = members.iter().any(|(k, v)| {
                (*k == "reference" && matches!(v, Json::String(_)))
                    || (*k == "identifier" && matches!(v, Json::Object(_)))
            });
            (is_reference && members.iter().any(|(k, _)| *k == "display"))
                || members.iter().any(|(_, v)| has_reference_display(v))
        }
        _ => false,
    }
}

/// What the matched rules change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Added to `meta.security` (none already there).
    pub add_labels: Vec<Label>,
    /// Removed; the resource is then labelled `REDACTED`.
    pub remove: Vec<Path>,
    /// The rule that segregated it, tagged in `meta.tag`.
    pub segregated_by: Option<Arc<str>>,
}

impl Edits {
    /// Changes nothing in the resource as the main table would store it.
    pub fn is_empty(&self) -> bool {
        self.add_labels.is_empty() && self.remove.is_empty()
    }
}

/// The resource with `edits` applied; `why` is the segregating rule's reason.
pub fn apply(resource: &Json<'_>, edits: &Edits, why: Option<&str>) -> String {
    let mut value = resource.to_serde();
    let mut removed = false;
    for path in &edits.remove {
        removed |= match path {
            Path::Members(steps) => remove_at(&mut value, steps),
            Path::ReferenceDisplay => remove_reference_display(&mut value),
            Path::Extension(url) => remove_extension(&mut value, url),
        };
    }
    let mut security: Vec<Label> = edits.add_labels.clone();
    if removed {
        security.push(Label::new(OBSERVATION_VALUE, "REDACTED"));
    }
    let Value::Object(root) = &mut value else {
        unreachable!("a resource is an object");
    };
    let meta = root
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        if !security.is_empty() {
            let list = meta
                .entry("security")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                for label in security {
                    let present = list.iter().any(|c| {
                        c["code"].as_str() == Some(&*label.code)
                            && c["system"].as_str().map(labels::canonical_system)
                                == Some(&*label.system)
                    });
                    if !present {
                        list.push(json!({"system": &*label.system, "code": &*label.code}));
                    }
                }
            }
        }
        if let Some(rule) = &edits.segregated_by {
            let tags = meta
                .entry("tag")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                let mut tag = json!({"system": POLICY_RULE_TAG, "code": &**rule});
                if let Some(why) = why {
                    tag["display"] = Value::String(why.to_owned());
                }
                tags.push(tag);
            }
        }
    }
    serde_json::to_string(&value).expect("a JSON value serialises")
}

fn remove_at(value: &mut Value, steps: &[Box<str>]) -> bool {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, item| remove_at(item, steps) | any),
        Value::Object(members) => match steps {
            [] => false,
            [last] => members.remove(&**last).is_some(),
            [first, rest @ ..] => members
                .get_mut(&**first)
                .is_some_and(|child| remove_at(child, rest)),
        },
        _ => false,
    }
}

fn remove_extension(resource: &mut Value, url: &str) -> bool {
    let Some(Value::Array(extensions)) = resource.get_mut("extension") else {
        return false;
    };
    let before = extensions.len();
    extensions.retain(|e| e["url"].as_str() != Some(url));
    let removed = extensions.len() < before;
    if extensions.is_empty() {
        resource
            .as_object_mut()
            .expect("a resource")
            .remove("extension");
    }
    removed
}

fn remove_reference_display(value: &mut Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, item| remove_reference_display(item) | any),
        Value::Object(members) => {
            let is_reference = members.get("reference").is_some_and(Value::is_string)
                || members.get("identifier").is_some_and(Value::is_object);
            let mut removed = is_reference && members.remove("display").is_some();
            for child in members.values_mut() {
                removed |= remove_reference_display(child);
            }
            removed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[test]
    fn removes_paths_through_arrays_and_reference_displays_and_labels_redacted() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Patient","id":"p","name":[{"family":"X"}],
            "contact":[{"name":{"family":"Y"},"relationship":[{"text":"kin"}]}],
            "generalPractitioner":[{"reference":"Practitioner/1","display":"Dr Z"},
                {"identifier":{"system":"http://hl7.org/fhir/sid/us-npi","value":"1"},"display":"Dr Y"}],
            "maritalStatus":{"coding":[{"code":"M","display":"Married"}]},
            "extension":[{"url":"http://x/mmn","valueString":"M"},{"url":"http://x/race","valueString":"R"}]}"#;
        let json = Json::parse(text, &arena).unwrap();
        let paths: Vec<Path> = [
            "name",
            "contact.name",
            "Reference.display",
            "photo",
            "extension(http://x/mmn)",
        ]
        .iter()
        .map(|p| Path::parse(p).unwrap())
        .collect();
        assert_eq!(
            paths
                .iter()
                .map(|p| p.is_present(&json))
                .collect::<Vec<_>>(),
            [true, true, true, false, true]
        );
        let edits = Edits {
            remove: paths,
            ..Edits::default()
        };
        let out: Value = serde_json::from_str(&apply(&json, &edits, None)).unwrap();
        assert!(out.get("name").is_none());
        assert!(out["contact"][0].get("name").is_none());
        assert_eq!(out["contact"][0]["relationship"][0]["text"], "kin");
        assert!(out["generalPractitioner"][0].get("display").is_none());
        assert!(out["generalPractitioner"][1].get("display").is_none());
        // A Coding's display is not a Reference's.
        assert_eq!(out["maritalStatus"]["coding"][0]["display"], "Married");
        assert_eq!(
            out["extension"],
            json!([{"url": "http://x/race", "valueString": "R"}])
        );
        assert_eq!(
            out["meta"]["security"],
            json!([{"system": OBSERVATION_VALUE, "code": "REDACTED"}])
        );
    }

    #[test]
    fn labels_are_added_once_and_segregation_is_tagged() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Condition","id":"c","meta":{"security":[{"system":"urn:oid:2.16.840.1.113883.5.25","code":"R"}]}}"#;
        let json = Json::parse(text, &arena).unwrap();
        let edits = Edits {
            add_labels: vec![
                Label::parse("R").unwrap(),
                Label::parse("42CFRPart2").unwrap(),
            ],
            remove: Vec::new(),
            segregated_by: Some("part2".into()),
        };
        let out: Value = serde_json::from_str(&apply(&json, &edits, Some("because"))).unwrap();
        let codes: Vec<_> = out["meta"]["security"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].clone())
            .collect();
        assert_eq!(codes, [json!("R"), json!("42CFRPart2")]);
        assert_eq!(
            out["meta"]["tag"],
            json!([{"system": POLICY_RULE_TAG, "code": "part2", "display": "because"}])
        );
    }

    #[test]
    fn paths_that_are_not_element_paths_are_refused() {
        for bad in [
            "",
            "name.",
            "Patient.name",
            "meta",
            "id",
            "name[0]",
            "a b",
            "extension(x)",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
