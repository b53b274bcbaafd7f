//! Changing a resource the policy matched: labels added, elements removed,
//! the segregating rule tagged.
//!
//! In: the parsed resource and the [`Edits`] its rules asked for. Out: the
//! changed resource as compact JSON: a new tree sharing every unchanged
//! subtree, members in their order, numbers exactly as written (a
//! decimal's precision is part of its value). Runs only for resources a
//! rule changes or segregates, so it may allocate.

use std::sync::Arc;

use bumpalo::Bump;

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
    /// Only these root elements are kept (`[tables.T] elements`); the
    /// resource is then tagged `SUBSETTED`, as a server answering
    /// `_elements` tags it.
    pub subset: Option<Arc<Elements>>,
}

impl Edits {
    /// Changes nothing in the resource as the main table would store it.
    pub fn is_empty(&self) -> bool {
        self.add_labels.is_empty() && self.remove.is_empty() && self.subset.is_none()
    }
}

/// The resource with `edits` applied; `why` is the segregating rule's reason.
pub fn apply(resource: &Json<'_>, edits: &Edits, why: Option<&str>) -> String {
    let arena = Bump::new();
    let mut value = *resource;
    let mut subsetted = false;
    if let (Some(elements), Json::Object(root)) = (&edits.subset, value)
        && !root.iter().all(|(k, _)| elements.keeps(k))
    {
        let kept: Vec<(&str, Json<'_>)> = root
            .iter()
            .filter(|(k, _)| elements.keeps(k))
            .copied()
            .collect();
        value = Json::Object(arena.alloc_slice_copy(&kept));
        subsetted = true;
    }
    let mut removed = false;
    for path in &edits.remove {
        let edited = match path {
            Path::Members(steps) => remove_at(&arena, value, steps),
            Path::ReferenceDisplay => remove_reference_display(&arena, value),
            Path::Extension(url) => remove_extension(&arena, value, url),
        };
        if let Some(edited) = edited {
            value = edited;
            removed = true;
        }
    }
    let mut security: Vec<Label> = edits.add_labels.clone();
    if removed {
        security.push(Label::new(OBSERVATION_VALUE, "REDACTED"));
    }
    let Json::Object(root) = value else {
        unreachable!("a resource is an object");
    };
    let text = |s: &str| Json::String(arena.alloc_str(s));
    let coding = |system: &str, code: &str, display: Option<&str>| {
        let mut members = vec![("system", text(system)), ("code", text(code))];
        if let Some(display) = display {
            members.push(("display", text(display)));
        }
        Json::Object(arena.alloc_slice_copy(&members))
    };
    let meta = root.iter().find(|(k, _)| *k == "meta").map(|(_, v)| *v);
    let mut meta_members: Vec<(&str, Json<'_>)> = match meta {
        Some(Json::Object(members)) => members.to_vec(),
        // A meta that is not an object is left as it is.
        Some(_) => return write(value),
        None => Vec::new(),
    };
    if !security.is_empty() {
        let mut list = array_member(&meta_members, "security");
        for label in security {
            let present = list.iter().any(|c| {
                tree::member(c, "code").and_then(tree::string) == Some(&*label.code)
                    && tree::member(c, "system")
                        .and_then(tree::string)
                        .map(labels::canonical_system)
                        == Some(&*label.system)
            });
            if !present {
                list.push(coding(&label.system, &label.code, None));
            }
        }
        set_member(
            &mut meta_members,
            "security",
            Json::Array(arena.alloc_slice_copy(&list)),
        );
    }
    let mut tags = array_member(&meta_members, "tag");
    let tag_count = tags.len();
    if subsetted && !tags.iter().any(|c| is_coding(c, SUBSETTED_TAG)) {
        tags.push(coding(SUBSETTED_TAG.0, SUBSETTED_TAG.1, None));
    }
    if let Some(rule) = &edits.segregated_by {
        tags.push(coding(POLICY_RULE_TAG, rule, why));
    }
    if tags.len() > tag_count {
        set_member(
            &mut meta_members,
            "tag",
            Json::Array(arena.alloc_slice_copy(&tags)),
        );
    }
    let meta = Json::Object(arena.alloc_slice_copy(&meta_members));
    let mut members: Vec<(&str, Json<'_>)> = root.to_vec();
    set_member(&mut members, "meta", meta);
    write(Json::Object(arena.alloc_slice_copy(&members)))
}

/// The root elements a table keeps (`[tables.T] elements`); the keys and
/// `meta` always stay, and `_name` (a primitive's id and extensions) goes
/// with `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elements {
    /// As written; `deceased[x]` keeps `deceasedBoolean`, `deceasedDateTime`, ...
    names: Box<[Box<str>]>,
}

impl Elements {
    pub fn parse(names: &[String]) -> Result<Elements, String> {
        for name in names {
            let base = name.strip_suffix("[x]").unwrap_or(name);
            let valid = base.starts_with(|c: char| c.is_ascii_lowercase())
                && base.bytes().all(|b| b.is_ascii_alphanumeric());
            if !valid {
                return Err(format!(
                    "`{name}` is not a root element name (`gender`, `birthDate`, `deceased[x]`)"
                ));
            }
        }
        Ok(Elements {
            names: names.iter().map(|n| n.as_str().into()).collect(),
        })
    }

    /// What `_elements` asks for: the names, choice types without `[x]`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(|n| n.strip_suffix("[x]").unwrap_or(n))
    }

    /// Whether the root member `key` is kept.
    pub fn keeps(&self, key: &str) -> bool {
        let key = key.strip_prefix('_').unwrap_or(key);
        matches!(key, "resourceType" | "id" | "meta")
            || self
                .names
                .iter()
                .any(|name| match name.strip_suffix("[x]") {
                    Some(base) => key
                        .strip_prefix(base)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
                    None => key == &**name,
                })
    }

    /// The root members of `resource` it does not keep.
    pub fn removed<'a>(&self, resource: &Json<'a>) -> Vec<&'a str> {
        match *resource {
            Json::Object(members) => members
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !self.keeps(k))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The `meta.tag` system|code a server puts on a subset (`_elements`,
/// `_summary`), and a table's `elements` on what it keeps.
pub const SUBSETTED_TAG: (&str, &str) = (OBSERVATION_VALUE, "SUBSETTED");

fn is_coding(coding: &Json<'_>, (system, code): (&str, &str)) -> bool {
    tree::member(coding, "system").and_then(tree::string) == Some(system)
        && tree::member(coding, "code").and_then(tree::string) == Some(code)
}

/// The `meta.tag` system|code marking a row stored without its source
/// resource (a table the policy keeps no raw JSON of).
pub const RAW_OMITTED_TAG: (&str, &str) = ("urn:fhirlake:policy", "raw-omitted");

/// What the main table stores of `resource` when the policy keeps no raw
/// JSON of its type: `resourceType`, `id` and `meta`, labelled `REDACTED`
/// and tagged [`RAW_OMITTED_TAG`]. The view columns hold the rest.
pub fn without_raw(resource: &Json<'_>) -> String {
    let arena = Bump::new();
    let Json::Object(root) = *resource else {
        unreachable!("a resource is an object");
    };
    let text = |s: &str| Json::String(arena.alloc_str(s));
    let coding = |system: &str, code: &str| {
        Json::Object(arena.alloc_slice_copy(&[("system", text(system)), ("code", text(code))]))
    };
    let mut meta_members: Vec<(&str, Json<'_>)> =
        match root.iter().find(|(k, _)| *k == "meta").map(|(_, v)| *v) {
            Some(Json::Object(members)) => members.to_vec(),
            _ => Vec::new(),
        };
    let mut security = array_member(&meta_members, "security");
    if !security.iter().any(|c| {
        tree::member(c, "code").and_then(tree::string) == Some("REDACTED")
            && tree::member(c, "system").and_then(tree::string) == Some(OBSERVATION_VALUE)
    }) {
        security.push(coding(OBSERVATION_VALUE, "REDACTED"));
    }
    set_member(
        &mut meta_members,
        "security",
        Json::Array(arena.alloc_slice_copy(&security)),
    );
    let mut tags = array_member(&meta_members, "tag");
    tags.push(coding(RAW_OMITTED_TAG.0, RAW_OMITTED_TAG.1));
    set_member(
        &mut meta_members,
        "tag",
        Json::Array(arena.alloc_slice_copy(&tags)),
    );
    let mut members: Vec<(&str, Json<'_>)> = root
        .iter()
        .filter(|(k, _)| matches!(*k, "resourceType" | "id"))
        .copied()
        .collect();
    members.push(("meta", Json::Object(arena.alloc_slice_copy(&meta_members))));
    write(Json::Object(arena.alloc_slice_copy(&members)))
}

/// Whether `resource` is a row stored without its source ([`without_raw`]).
pub fn is_raw_omitted(resource: &Json<'_>) -> bool {
    let Some(tags) = tree::member(resource, "meta").and_then(|meta| tree::member(meta, "tag"))
    else {
        return false;
    };
    tree::items(tags)
        .iter()
        .any(|tag| is_coding(tag, RAW_OMITTED_TAG))
}

/// The rule a segregating rule's tag names, and its reason (the tag's
/// display), when `resource` carries one.
pub fn rule_tag<'a>(resource: &Json<'a>) -> Option<(&'a str, &'a str)> {
    let tags = tree::member(resource, "meta").and_then(|meta| tree::member(meta, "tag"))?;
    tree::items(tags).iter().find_map(|tag| {
        let text = |key| tree::member(tag, key).and_then(tree::string);
        (text("system")? == POLICY_RULE_TAG)
            .then_some((text("code")?, text("display").unwrap_or("")))
    })
}

/// The resource as a policy sees it again (`policy apply`): without the tag
/// a segregating rule added, and with `meta.lastUpdated` set to
/// `last_updated` (the stored row's) when it has none, so a reload keeps
/// its version. `None` when it needs neither.
pub fn restored(resource: &Json<'_>, last_updated: &str) -> Option<String> {
    let arena = Bump::new();
    let Json::Object(root) = *resource else {
        return None;
    };
    let mut meta_members: Vec<(&str, Json<'_>)> =
        match root.iter().find(|(k, _)| *k == "meta").map(|(_, v)| *v) {
            Some(Json::Object(members)) => members.to_vec(),
            Some(_) => return None,
            None => Vec::new(),
        };
    let mut changed = false;
    let tags = array_member(&meta_members, "tag");
    let kept: Vec<Json<'_>> = tags
        .iter()
        .filter(|c| tree::member(c, "system").and_then(tree::string) != Some(POLICY_RULE_TAG))
        .copied()
        .collect();
    if kept.len() < tags.len() {
        changed = true;
        if kept.is_empty() {
            meta_members.retain(|(k, _)| *k != "tag");
        } else {
            set_member(
                &mut meta_members,
                "tag",
                Json::Array(arena.alloc_slice_copy(&kept)),
            );
        }
    }
    if !meta_members.iter().any(|(k, _)| *k == "lastUpdated") {
        changed = true;
        meta_members.push(("lastUpdated", Json::String(arena.alloc_str(last_updated))));
    }
    if !changed {
        return None;
    }
    let mut members: Vec<(&str, Json<'_>)> = root.to_vec();
    set_member(
        &mut members,
        "meta",
        Json::Object(arena.alloc_slice_copy(&meta_members)),
    );
    Some(write(Json::Object(arena.alloc_slice_copy(&members))))
}

/// The tree as compact JSON, numbers exactly as they came.
fn write(value: Json<'_>) -> String {
    let mut out = String::with_capacity(1024);
    value.write_compact(&mut out);
    out
}

/// The items of array member `name` (none when absent or not an array,
/// which the new array then replaces).
fn array_member<'a>(members: &[(&'a str, Json<'a>)], name: &str) -> Vec<Json<'a>> {
    match members.iter().find(|(k, _)| *k == name) {
        Some((_, Json::Array(items))) => items.to_vec(),
        _ => Vec::new(),
    }
}

/// Sets member `name` in place, or appends it.
fn set_member<'a>(members: &mut Vec<(&'a str, Json<'a>)>, name: &'a str, value: Json<'a>) {
    match members.iter_mut().find(|(k, _)| *k == name) {
        Some(member) => member.1 = value,
        None => members.push((name, value)),
    }
}

/// `value` without what `steps` reach (arrays are stepped through), or
/// `None` when nothing is there.
fn remove_at<'a>(arena: &'a Bump, value: Json<'a>, steps: &[Box<str>]) -> Option<Json<'a>> {
    match value {
        Json::Array(items) => map_items(arena, items, |item| remove_at(arena, item, steps)),
        Json::Object(members) => match steps {
            [] => None,
            [last] => {
                let kept: Vec<_> = members
                    .iter()
                    .filter(|(k, _)| *k != &**last)
                    .copied()
                    .collect();
                (kept.len() < members.len()).then(|| Json::Object(arena.alloc_slice_copy(&kept)))
            }
            [first, rest @ ..] => {
                let at = members.iter().position(|(k, _)| *k == &**first)?;
                let child = remove_at(arena, members[at].1, rest)?;
                let mut copy = members.to_vec();
                copy[at].1 = child;
                Some(Json::Object(arena.alloc_slice_copy(&copy)))
            }
        },
        _ => None,
    }
}

fn remove_extension<'a>(arena: &'a Bump, resource: Json<'a>, url: &str) -> Option<Json<'a>> {
    let Json::Object(members) = resource else {
        return None;
    };
    let at = members.iter().position(|(k, _)| *k == "extension")?;
    let Json::Array(extensions) = members[at].1 else {
        return None;
    };
    let kept: Vec<Json<'a>> = extensions
        .iter()
        .filter(|e| !is_extension(e, url))
        .copied()
        .collect();
    if kept.len() == extensions.len() {
        return None;
    }
    let mut copy = members.to_vec();
    if kept.is_empty() {
        copy.remove(at);
    } else {
        copy[at].1 = Json::Array(arena.alloc_slice_copy(&kept));
    }
    Some(Json::Object(arena.alloc_slice_copy(&copy)))
}

fn remove_reference_display<'a>(arena: &'a Bump, value: Json<'a>) -> Option<Json<'a>> {
    match value {
        Json::Array(items) => map_items(arena, items, |item| remove_reference_display(arena, item)),
        Json::Object(members) => {
            let is_reference = members.iter().any(|(k, v)| {
                (*k == "reference" && matches!(v, Json::String(_)))
                    || (*k == "identifier" && matches!(v, Json::Object(_)))
            });
            let mut changed = false;
            let mut copy = Vec::with_capacity(members.len());
            for (k, v) in members {
                if is_reference && *k == "display" {
                    changed = true;
                    continue;
                }
                match remove_reference_display(arena, *v) {
                    Some(edited) => {
                        changed = true;
                        copy.push((*k, edited));
                    }
                    None => copy.push((*k, *v)),
                }
            }
            changed.then(|| Json::Object(arena.alloc_slice_copy(&copy)))
        }
        _ => None,
    }
}

/// The array with `edit` applied to its items, or `None` when no item changed.
fn map_items<'a>(
    arena: &'a Bump,
    items: &'a [Json<'a>],
    mut edit: impl FnMut(Json<'a>) -> Option<Json<'a>>,
) -> Option<Json<'a>> {
    let edited: Vec<Option<Json<'a>>> = items.iter().map(|i| edit(*i)).collect();
    edited.iter().any(Option::is_some).then(|| {
        let items: Vec<Json<'a>> = items
            .iter()
            .zip(edited)
            .map(|(i, e)| e.unwrap_or(*i))
            .collect();
        Json::Array(arena.alloc_slice_copy(&items))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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
            segregated_by: Some("part2".into()),
            ..Edits::default()
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
    fn numbers_member_order_and_escapes_survive_an_edit() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Observation","id":"o","status":"final","valueQuantity":{"value":5.50,"unit":"mmol/L"},"component":[{"valueInteger":12345678901234567890}],"note":[{"text":"line\none \"q\" \u0001"}],"performer":[{"reference":"Practitioner/1","display":"Dr Z"}],"meta":{"versionId":"2"},"issued":1E+2}"#;
        let json = Json::parse(text, &arena).unwrap();
        let edits = Edits {
            remove: vec![Path::ReferenceDisplay],
            ..Edits::default()
        };
        let out = apply(&json, &edits, None);
        assert!(out.contains(r#""value":5.50"#), "{out}");
        assert!(
            out.contains(r#""valueInteger":12345678901234567890"#),
            "{out}"
        );
        assert!(out.contains(r#""issued":1E+2"#), "{out}");
        assert!(
            out.starts_with(r#"{"resourceType":"Observation","id":"o","status":"final""#),
            "{out}"
        );
        let before: Value = serde_json::from_str(text).unwrap();
        let after: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(after["note"], before["note"]);
        assert_eq!(after["meta"]["versionId"], "2");
        assert!(after["performer"][0].get("display").is_none());
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

    #[test]
    fn a_subset_keeps_the_listed_root_elements_and_says_so() {
        let elements = Elements::parse(&["gender".into(), "deceased[x]".into()]).unwrap();
        assert_eq!(elements.names().collect::<Vec<_>>(), ["gender", "deceased"]);
        let arena = Bump::new();
        let text = r#"{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2020-01-01T00:00:00Z"},"name":[{"family":"Doe"}],"gender":"female","_gender":{"id":"g"},"deceasedDateTime":"2020-01-01","deceasedish":true,"birthDate":"1970-01-01"}"#;
        let json = Json::parse(text, &arena).unwrap();
        assert_eq!(
            elements.removed(&json),
            ["name", "deceasedish", "birthDate"]
        );
        let edits = Edits {
            subset: Some(Arc::new(elements)),
            ..Edits::default()
        };
        assert_eq!(
            apply(&json, &edits, None),
            r#"{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2020-01-01T00:00:00Z","tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]},"gender":"female","_gender":{"id":"g"},"deceasedDateTime":"2020-01-01"}"#
        );
        // Already a subset (a server's answer): tagged once.
        let served = Json::parse(r#"{"resourceType":"Patient","id":"q","meta":{"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]},"gender":"male","name":[]}"#, &arena).unwrap();
        assert_eq!(
            apply(&served, &edits, None),
            r#"{"resourceType":"Patient","id":"q","meta":{"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]},"gender":"male"}"#
        );
        for bad in ["Gender", "name.family", "deceased[y]", ""] {
            assert!(Elements::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_raw_keeps_the_keys_and_meta_labelled_and_tagged() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2020-01-01T00:00:00Z","security":[{"system":"x","code":"R"}]},"name":[{"family":"Doe"}],"gender":"female"}"#;
        let json = Json::parse(text, &arena).unwrap();
        assert!(!is_raw_omitted(&json));
        let stub = without_raw(&json);
        assert_eq!(
            stub,
            r#"{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2020-01-01T00:00:00Z","security":[{"system":"x","code":"R"},{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"REDACTED"}],"tag":[{"system":"urn:fhirlake:policy","code":"raw-omitted"}]}}"#
        );
        assert!(is_raw_omitted(&Json::parse(&stub, &arena).unwrap()));
        let bare = Json::parse(r#"{"resourceType":"Patient","id":"q","name":[]}"#, &arena).unwrap();
        assert!(
            without_raw(&bare)
                .starts_with(r#"{"resourceType":"Patient","id":"q","meta":{"security""#)
        );
    }

    #[test]
    fn restored_drops_the_rule_tag_and_fills_last_updated() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Condition","id":"c","meta":{"lastUpdated":"2020-01-01T00:00:00Z","tag":[{"system":"urn:fhirlake:policy-rule","code":"part2"},{"system":"x","code":"y"}]}}"#;
        let json = Json::parse(text, &arena).unwrap();
        assert_eq!(
            restored(&json, "2021-01-01T00:00:00Z").unwrap(),
            r#"{"resourceType":"Condition","id":"c","meta":{"lastUpdated":"2020-01-01T00:00:00Z","tag":[{"system":"x","code":"y"}]}}"#
        );
        let bare = Json::parse(r#"{"resourceType":"Patient","id":"p"}"#, &arena).unwrap();
        assert_eq!(
            restored(&bare, "2021-01-01T00:00:00Z").unwrap(),
            r#"{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2021-01-01T00:00:00Z"}}"#
        );
        let plain = Json::parse(
            r#"{"resourceType":"Patient","meta":{"lastUpdated":"x"}}"#,
            &arena,
        )
        .unwrap();
        assert_eq!(restored(&plain, "y"), None);
    }
}
