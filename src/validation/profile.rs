//! Compiling a StructureDefinition snapshot into the rules [`check`](super::check)
//! evaluates: one [`Rule`] per element, with its path split into steps,
//! cardinality, allowed choice types, fixed and pattern values, reference
//! target types and required bindings resolved to code sets, so evaluating a
//! resource allocates no rule structures.
//!
//! A slice whose discriminators are values or patterns on `$this` or on
//! member paths (`system`, `coding.code`), or a `$this` pattern stated as a
//! required binding, becomes a [`Step::Slice`]: the matching items. Not compiled (and
//! so not checked): other slices and what is inside them, slices inside
//! slices, `contentReference` elements, and bindings that are not
//! `required`.

use std::collections::HashSet;

use serde::de::IgnoredAny;

use serde::Deserialize;
use serde_json::Value;

use super::invariant::{self, Invariant, Unsupported};
use crate::terminology::ValueSets;
use crate::terminology::codeset::CodeSet;

/// One profile, compiled.
#[derive(Debug)]
pub struct Profile {
    /// Canonical URL, without a version.
    pub url: String,
    pub version: Option<String>,
    /// The resource type it constrains.
    pub resource_type: String,
    /// Rules that check something, grouped by parent path (the groups in
    /// snapshot order of their first rule, each group in snapshot order).
    pub rules: Vec<Rule>,
    /// The groups: `rules` with one parent path, and how a parent's members reach them.
    pub groups: Vec<Group>,
    /// The pattern or fixed value its `code` element pins (body weight: LOINC 29463-7).
    pub code_pattern: Option<Value>,
    /// The invariants of the resource element itself (`us-core-8`, `dom-2`).
    pub root_invariants: Vec<Invariant>,
    /// Error invariants it has that the FHIRPath engine cannot evaluate.
    pub unsupported_invariants: Vec<Unsupported>,
    /// The `category` codings its required category slices pin
    /// (`Observation.category:VSCat` = vital-signs): how a resource that
    /// names no profile is matched to this one.
    pub category_codes: Vec<(String, String)>,
    /// Whether it pins `code` (a pattern, or required slices of
    /// `code.coding` as pulse oximetry has): then only a matching code
    /// makes it apply to a resource that names no profile.
    pub pins_code: bool,
    /// What its `code` binding (required or extensible) admits.
    pub code_binding: CodeBinding,
}

/// A profile's `code` binding, as far as it tells which codes the profile is for.
#[derive(Debug)]
pub enum CodeBinding {
    /// No binding, or only preferred / example: any code.
    Open,
    /// Required or extensible to an enumerated value set: these (system, code).
    Enumerated(CodeSet),
    /// Bound to a value set not enumerable here (a LOINC filter, a base
    /// FHIR value set): the code cannot tell.
    Unknown,
}

/// What one element of a snapshot requires.
#[derive(Debug)]
pub struct Rule {
    /// The element's id, e.g. `Patient.name.family`: what a finding names.
    pub element: String,
    /// Path steps after the resource type; the last may be a choice (`value[x]`).
    pub steps: Vec<Step>,
    pub min: u32,
    /// `None` for `*`.
    pub max: Option<u32>,
    /// For a choice element: the type suffixes allowed (`Quantity`, `String`).
    pub choice_types: Option<Vec<String>>,
    pub fixed: Option<Value>,
    pub pattern: Option<Value>,
    /// For a Reference: the resource types it may point at (empty: any).
    pub reference_types: Option<Vec<String>>,
    pub binding: Option<RequiredBinding>,
    /// `_name` for a member `name` (a primitive's extension); empty for a choice.
    pub primitive_extension: String,
    /// Its error invariants, evaluated on each of its values.
    pub invariants: Vec<Invariant>,
}

impl Rule {
    /// Whether it can find anything: optional, unbounded, unconstrained
    /// elements (most of a snapshot) are not evaluated at all.
    fn checks_something(&self) -> bool {
        self.min > 0
            || self.max.is_some()
            || self.choice_types.is_some()
            || self.fixed.is_some()
            || self.pattern.is_some()
            || self.reference_types.as_ref().is_some_and(|t| !t.is_empty())
            || self.binding.is_some()
            || !self.invariants.is_empty()
    }
}

/// The rules of one parent path, and which of them each member name of a
/// parent feeds: one pass over a parent's members, with a hash lookup per
/// member, finds every rule's value (instead of a scan of the members per rule).
#[derive(Debug)]
pub struct Group {
    pub rules: std::ops::Range<usize>,
    /// Member name → the rules (offsets in the group) it is the value of
    /// (`false`) or the primitive extension of (`true`, `_name`).
    pub by_member:
        std::collections::HashMap<String, Vec<(usize, bool)>, foldhash::fast::FixedState>,
    /// Rules of a choice (`value[x]`): offset and base name, matched by prefix.
    pub choices: Vec<(usize, String)>,
}

impl Group {
    /// Whether the rule at `offset` is a choice's (its members are found by prefix).
    pub fn is_choice(&self, offset: usize) -> bool {
        self.choices.iter().any(|(o, _)| *o == offset)
    }

    fn of(rules: &[Rule], range: std::ops::Range<usize>) -> Self {
        let mut group = Group {
            rules: range.clone(),
            by_member: Default::default(),
            choices: Vec::new(),
        };
        for (offset, rule) in rules[range].iter().enumerate() {
            match rule.steps.last() {
                Some(Step::Member(name) | Step::Slice { member: name, .. }) => {
                    let hits = group.by_member.entry(name.clone()).or_default();
                    hits.push((offset, false));
                    if !rule.primitive_extension.is_empty() {
                        let hits = (group.by_member)
                            .entry(rule.primitive_extension.clone())
                            .or_default();
                        hits.push((offset, true));
                    }
                }
                Some(Step::Choice(base)) => group.choices.push((offset, base.clone())),
                None => {}
            }
        }
        group
    }
}

/// Orders `rules` by parent path (groups in order of first appearance) and
/// returns the groups.
fn grouped(rules: Vec<Rule>) -> (Vec<Rule>, Vec<Group>) {
    let mut groups: Vec<(Vec<Step>, Vec<Rule>)> = Vec::new();
    for rule in rules {
        let parent = &rule.steps[..rule.steps.len() - 1];
        match groups.iter_mut().find(|(p, _)| p == parent) {
            Some((_, members)) => members.push(rule),
            None => groups.push((parent.to_vec(), vec![rule])),
        }
    }
    let mut ordered = Vec::new();
    let mut ranges = Vec::new();
    for (_, members) in groups {
        let start = ordered.len();
        ordered.extend(members);
        ranges.push(start..ordered.len());
    }
    let groups = ranges
        .into_iter()
        .map(|range| Group::of(&ordered, range))
        .collect();
    (ordered, groups)
}

/// One step of an element path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Member(String),
    /// `value[x]`: any member named `value` + a type name.
    Choice(String),
    /// `identifier:NPI`: the items of `member` that match the slice's
    /// discriminator values (`{"system": "http://hl7.org/fhir/sid/us-npi"}`).
    Slice {
        member: String,
        name: String,
        matcher: SliceMatch,
    },
}

/// Which items of a sliced element are the slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceMatch {
    /// Items that match this pattern (FHIR pattern semantics).
    Pattern(Value),
    /// Items with a coding in this set: a `$this` pattern the slice states
    /// as a required binding (`Condition.category:us-core`).
    Codes(CodeSet),
}

/// A required binding, resolved against the loaded value sets.
#[derive(Debug)]
pub struct RequiredBinding {
    pub value_set: String,
    pub codes: BoundCodes,
}

#[derive(Debug)]
pub enum BoundCodes {
    /// The value set is enumerated: for a `code` element the codes, for
    /// Coding / CodeableConcept the (system, code) pairs.
    Enumerated {
        codes: HashSet<String>,
        pairs: CodeSet,
    },
    /// Not in the package, or not enumerable offline (a filter, a whole
    /// external system): reported as not checked, never as an error.
    NotCheckable,
}

#[derive(Deserialize)]
struct StructureDefinition {
    url: String,
    version: Option<String>,
    kind: Option<String>,
    #[serde(rename = "type")]
    type_: String,
    snapshot: Option<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    element: Vec<Element>,
}

#[derive(Deserialize)]
struct Element {
    id: Option<String>,
    path: String,
    min: Option<u32>,
    max: Option<String>,
    #[serde(rename = "type", default)]
    types: Vec<ElementType>,
    binding: Option<ElementBinding>,
    #[serde(rename = "contentReference")]
    content_reference: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct ElementType {
    code: String,
    #[serde(rename = "targetProfile", default)]
    target_profile: Vec<String>,
    /// For an Extension: the extension definitions it may be.
    #[serde(default)]
    profile: Vec<String>,
}

#[derive(Deserialize)]
struct ElementBinding {
    strength: String,
    #[serde(rename = "valueSet")]
    value_set: Option<String>,
}

/// What a profile's reference targets name: a profile URL to its type.
pub type TypeOfProfile<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// What a package member is, read from its header alone.
pub enum Member {
    ValueSet,
    /// A profile of a resource type, with a snapshot: (URL, type).
    ResourceProfile(String, String),
    Other,
}

/// Reads a member's header: its resource type and, for a
/// StructureDefinition, what it profiles (the snapshot is skipped, not built).
pub fn peek(bytes: &[u8]) -> Result<Member, serde_json::Error> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
        url: Option<String>,
        kind: Option<String>,
        #[serde(rename = "type")]
        type_: Option<String>,
        snapshot: Option<IgnoredAny>,
    }
    let head: Head = serde_json::from_slice(bytes)?;
    Ok(
        match (head.resource_type.as_deref(), head.url, head.type_) {
            (Some("ValueSet"), _, _) => Member::ValueSet,
            (Some("StructureDefinition"), Some(url), Some(type_))
                if head.kind.as_deref() == Some("resource") && head.snapshot.is_some() =>
            {
                Member::ResourceProfile(strip_version(&url).to_string(), type_)
            }
            _ => Member::Other,
        },
    )
}

/// Compiles a resource profile; `None` for one that does not constrain a
/// resource (an extension, a data type) or has no snapshot.
pub fn compile(
    bytes: &[u8],
    value_sets: &ValueSets,
    type_of_profile: &TypeOfProfile<'_>,
) -> Result<Option<Profile>, serde_json::Error> {
    let definition: StructureDefinition = serde_json::from_slice(bytes)?;
    let Some(snapshot) = definition.snapshot else {
        return Ok(None);
    };
    if definition.kind.as_deref() != Some("resource") {
        return Ok(None);
    }
    let mut rules = Vec::new();
    let mut category_slices: Vec<CategorySlice> = Vec::new();
    let mut pins_code = false;
    let mut code_binding = CodeBinding::Open;
    let mut root_invariants = Vec::new();
    let mut unsupported_invariants = Vec::new();
    let slices = slice_patterns(&snapshot.element, value_sets);
    for element in snapshot.element {
        let id = element.id.clone().unwrap_or_else(|| element.path.clone());
        let category_slice = format!("{}.category:", definition.type_);
        if let Some(slice) = id.strip_prefix(&category_slice) {
            note_category_slice(slice, &element, &mut category_slices);
        }
        let code_element = format!("{}.code", definition.type_);
        pins_code |= id == code_element
            && (value_with_prefix(&element.rest, "pattern").is_some()
                || value_with_prefix(&element.rest, "fixed").is_some());
        pins_code |= id
            .strip_prefix(&format!("{code_element}.coding:"))
            .is_some_and(|slice| !slice.contains('.'))
            && element.min.unwrap_or(0) >= 1;
        if id == code_element {
            code_binding = code_binding_of(&element, value_sets);
        }
        if element.content_reference.is_some() {
            continue;
        }
        let Some(steps) = steps_of(&id, &slices) else {
            continue; // inside a slice whose discriminator is not a value or pattern
        };
        if steps.is_empty() {
            root_invariants = invariant::compile(
                &id,
                element.rest.get("constraint"),
                &mut unsupported_invariants,
            );
            continue;
        }
        if steps[..steps.len() - 1]
            .iter()
            .any(|s| matches!(s, Step::Choice(_)))
        {
            continue; // below a choice of types
        }
        if steps
            .iter()
            .filter(|s| matches!(s, Step::Slice { .. }))
            .count()
            > 1
        {
            continue; // a slice inside a slice (re-slicing): not evaluated
        }
        rules.push(compile_element(
            id,
            steps,
            element,
            value_sets,
            type_of_profile,
            &mut unsupported_invariants,
        ));
    }
    let code_pattern = rules
        .iter()
        .find(|r| r.steps == [Step::Member("code".into())])
        .and_then(|r| r.pattern.clone().or_else(|| r.fixed.clone()));
    rules.retain(Rule::checks_something);
    let (rules, groups) = grouped(rules);
    Ok(Some(Profile {
        url: strip_version(&definition.url).to_string(),
        version: definition.version,
        resource_type: definition.type_,
        rules,
        groups,
        code_pattern,
        root_invariants,
        unsupported_invariants,
        category_codes: category_slices
            .into_iter()
            .filter(|s| s.required)
            .flat_map(|s| s.codes)
            .collect(),
        pins_code,
        code_binding,
    }))
}

/// The path steps of an element id after the resource type; a type slice
/// (`value[x]:valueQuantity`) is the member it names, a slice whose
/// discriminator values are known (`slices`) a [`Step::Slice`]. `None`
/// inside any other slice: its discriminator is not evaluated.
fn steps_of(id: &str, slices: &std::collections::HashMap<String, SliceMatch>) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let Some(mut prefix_len) = id.find('.') else {
        return Some(steps); // the resource itself
    };
    for part in id[prefix_len + 1..].split('.') {
        prefix_len += 1 + part.len();
        steps.push(match part.split_once(':') {
            None => step(part),
            Some((member, slice)) => {
                let is_type_slice = member.strip_suffix("[x]").is_some_and(|base| {
                    slice
                        .strip_prefix(base)
                        .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
                });
                if is_type_slice {
                    Step::Member(slice.to_string())
                } else {
                    Step::Slice {
                        member: member.to_string(),
                        name: slice.to_string(),
                        matcher: slices.get(&id[..prefix_len])?.clone(),
                    }
                }
            }
        });
    }
    Some(steps)
}

/// An extension slice's `url`, when its snapshot names the extension by
/// its type's profile rather than with a `.url` element.
fn extension_url(element: &Element, path: &str) -> Option<Value> {
    let [only] = element.types.as_slice() else {
        return None;
    };
    let [url] = only.profile.as_slice() else {
        return None;
    };
    (path == "url" && only.code == "Extension").then(|| Value::String(strip_version(url).into()))
}

/// The discriminator values of each slice whose sliced element
/// discriminates by `value` or `pattern` on `$this` or on member paths
/// (`system`, `url`, `coding.code`), by slice id (`Practitioner.identifier:NPI`):
/// the slice's own fixed or pattern value, or its members' at those paths.
/// A slice missing one of them is left out (not evaluated).
fn slice_patterns(
    elements: &[Element],
    value_sets: &ValueSets,
) -> std::collections::HashMap<String, SliceMatch> {
    let id_of = |e: &Element| e.id.clone().unwrap_or_else(|| e.path.clone());
    let fixed_or_pattern = |e: &Element| {
        value_with_prefix(&e.rest, "fixed").or_else(|| value_with_prefix(&e.rest, "pattern"))
    };
    let mut discriminators: std::collections::HashMap<String, Vec<String>> = Default::default();
    for element in elements {
        let Some(slicing) = element.rest.get("slicing") else {
            continue;
        };
        let paths: Option<Vec<String>> = slicing
            .get("discriminator")
            .and_then(Value::as_array)
            .filter(|d| !d.is_empty())
            .and_then(|d| {
                d.iter()
                    .map(|d| {
                        let kind = d.get("type")?.as_str()?;
                        let path = d.get("path")?.as_str()?;
                        // `$this`, a member, or a member path (`coding.code`).
                        let simple = path == "$this"
                            || (!path.contains(['(', ' ', '$']) && !path.is_empty());
                        (matches!(kind, "value" | "pattern") && simple).then(|| path.to_owned())
                    })
                    .collect()
            });
        if let Some(paths) = paths {
            discriminators.insert(id_of(element), paths);
        }
    }
    let by_id: std::collections::HashMap<String, &Element> =
        elements.iter().map(|e| (id_of(e), e)).collect();
    let mut patterns = std::collections::HashMap::new();
    for element in elements {
        let id = id_of(element);
        let Some((sliced, name)) = id.rsplit_once(':') else {
            continue;
        };
        if name.contains('.') {
            continue; // an element inside a slice, not the slice
        }
        let Some(paths) = discriminators.get(sliced) else {
            continue;
        };
        let mut pattern = serde_json::Map::new();
        let mut whole = None;
        let complete = paths.iter().all(|path| {
            let value = if path == "$this" {
                fixed_or_pattern(element)
            } else {
                by_id
                    .get(&format!("{id}.{path}"))
                    .and_then(|child| fixed_or_pattern(child))
                    .or_else(|| extension_url(element, path))
            };
            match (path.as_str(), value) {
                ("$this", Some(v)) => whole = Some(v),
                (_, Some(v)) => return insert_at(&mut pattern, &id, path, v, &by_id),
                (_, None) => return false,
            }
            true
        });
        if !complete {
            // A `$this` pattern stated as a required binding: the items
            // with a coding in its value set, when that is enumerable.
            if let (true, Some(binding)) =
                (paths.len() == 1 && paths[0] == "$this", &element.binding)
                && binding.strength == "required"
                && let Some(url) = &binding.value_set
                && let BoundCodes::Enumerated { pairs, .. } =
                    resolve_binding(url, false, value_sets).codes
            {
                patterns.insert(id, SliceMatch::Codes(pairs));
            }
            continue;
        }
        let pattern = match whole {
            Some(Value::Object(mut all)) => {
                all.extend(pattern);
                Value::Object(all)
            }
            Some(scalar) if pattern.is_empty() => scalar,
            Some(_) => continue,
            None => Value::Object(pattern),
        };
        patterns.insert(id, SliceMatch::Pattern(pattern));
    }
    patterns
}

/// Puts `value` at the member path `path` (`coding.code`) of a slice's
/// pattern: each member before the last is an object, or an array of one
/// object when the element repeats, so two paths under one member
/// (`coding.code`, `coding.system`) describe one item, as the slice's
/// fixed values do. `false` when a member's element is not in the snapshot
/// or the paths disagree on its shape.
fn insert_at(
    pattern: &mut serde_json::Map<String, Value>,
    slice_id: &str,
    path: &str,
    value: Value,
    by_id: &std::collections::HashMap<String, &Element>,
) -> bool {
    let Some((first, rest)) = path.split_once('.') else {
        pattern.insert(path.to_owned(), value);
        return true;
    };
    let Some(element) = by_id.get(&format!("{slice_id}.{first}")) else {
        return false;
    };
    let repeats = element
        .rest
        .get("base")
        .and_then(|b| b.get("max"))
        .and_then(Value::as_str)
        .or(element.max.as_deref())
        .is_some_and(|max| max != "1" && max != "0");
    let slot = pattern.entry(first.to_owned()).or_insert_with(|| {
        if repeats {
            Value::Array(vec![Value::Object(Default::default())])
        } else {
            Value::Object(Default::default())
        }
    });
    let inner = match slot {
        Value::Array(items) if repeats => items.first_mut().and_then(Value::as_object_mut),
        Value::Object(map) if !repeats => Some(map),
        _ => None,
    };
    match inner {
        Some(map) => insert_at(map, &format!("{slice_id}.{first}"), rest, value, by_id),
        None => false,
    }
}

/// What the `code` element's binding admits, for choosing a profile for a
/// resource that names none.
fn code_binding_of(element: &Element, value_sets: &ValueSets) -> CodeBinding {
    let Some(binding) = &element.binding else {
        return CodeBinding::Open;
    };
    if !matches!(binding.strength.as_str(), "required" | "extensible") {
        return CodeBinding::Open;
    }
    let Some(url) = &binding.value_set else {
        return CodeBinding::Open;
    };
    match resolve_binding(url, false, value_sets).codes {
        BoundCodes::Enumerated { pairs, .. } => CodeBinding::Enumerated(pairs),
        BoundCodes::NotCheckable => CodeBinding::Unknown,
    }
}

fn compile_element(
    element_id: String,
    steps: Vec<Step>,
    element: Element,
    value_sets: &ValueSets,
    type_of_profile: &TypeOfProfile<'_>,
    unsupported: &mut Vec<Unsupported>,
) -> Rule {
    let invariants = invariant::compile(&element_id, element.rest.get("constraint"), unsupported);
    let max = match element.max.as_deref() {
        None | Some("*") => None,
        Some(n) => n.parse().ok(),
    };
    let is_choice = matches!(steps.last(), Some(Step::Choice(_)));
    let choice_types =
        is_choice.then(|| element.types.iter().map(|t| capitalised(&t.code)).collect());
    let fixed = value_with_prefix(&element.rest, "fixed");
    let pattern = value_with_prefix(&element.rest, "pattern");
    // A Reference, or the Reference type of a choice (`medication[x]`): the
    // choice's other types have no `reference` member, so only it is judged.
    let reference = element
        .types
        .iter()
        .filter(|t| t.code == "Reference")
        .find(|_| is_choice || element.types.len() == 1);
    let reference_types = reference.map(|reference| {
        let targets = &reference.target_profile;
        let mut types: Vec<String> = targets.iter().filter_map(|t| type_of_profile(t)).collect();
        if types.iter().any(|t| t == "Resource") || types.len() < targets.len() {
            types.clear(); // any resource, or a target we cannot name: do not judge
        }
        types
    });
    let is_code = element.types.len() == 1 && element.types[0].code == "code";
    let binding = element
        .binding
        .filter(|b| b.strength == "required")
        .and_then(|b| b.value_set)
        .map(|url| resolve_binding(&url, is_code, value_sets));
    let primitive_extension = match steps.last() {
        Some(Step::Member(name)) => format!("_{name}"),
        _ => String::new(),
    };
    Rule {
        element: element_id,
        primitive_extension,
        invariants,
        steps,
        min: element.min.unwrap_or(0),
        max,
        choice_types,
        fixed,
        pattern,
        reference_types,
        binding,
    }
}

fn resolve_binding(url: &str, is_code: bool, value_sets: &ValueSets) -> RequiredBinding {
    let set = value_sets
        .get(url)
        .or_else(|| value_sets.get(strip_version(url)))
        .filter(|set| set.is_fully_checkable() && set.whole_systems().next().is_none());
    let codes = match set {
        Some(set) => {
            let members = set.members();
            BoundCodes::Enumerated {
                codes: if is_code {
                    members.iter().map(|(_, c)| c.to_string()).collect()
                } else {
                    HashSet::new()
                },
                pairs: members.clone(),
            }
        }
        None => BoundCodes::NotCheckable,
    };
    RequiredBinding {
        value_set: url.to_string(),
        codes,
    }
}

/// What a category slice pins, as read from its elements.
struct CategorySlice {
    name: String,
    required: bool,
    codes: Vec<(String, String)>,
    fixed_system: Option<String>,
}

/// A slice pins its category either with a pattern on the slice
/// (`patternCodeableConcept`) or with fixed `coding.system` and
/// `coding.code` children (US Core vital signs' `VSCat`).
fn note_category_slice(slice_path: &str, element: &Element, slices: &mut Vec<CategorySlice>) {
    let (name, below) = slice_path.split_once('.').unwrap_or((slice_path, ""));
    if below.is_empty() {
        slices.push(CategorySlice {
            name: name.to_string(),
            required: element.min.unwrap_or(0) >= 1,
            codes: element
                .rest
                .get("patternCodeableConcept")
                .map(|p| codings(p).collect())
                .unwrap_or_default(),
            fixed_system: None,
        });
        return;
    }
    let Some(slice) = slices.iter_mut().rev().find(|s| s.name == name) else {
        return;
    };
    let fixed = |key: &str| {
        element
            .rest
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match below {
        "coding.system" => slice.fixed_system = fixed("fixedUri"),
        "coding.code" => {
            if let (Some(system), Some(code)) = (slice.fixed_system.clone(), fixed("fixedCode")) {
                slice.codes.push((system, code));
            }
        }
        _ => {}
    }
}

/// The (system, code) pairs of a CodeableConcept.
pub fn codings<'v, T: super::Tree<'v>>(concept: T) -> impl Iterator<Item = (String, String)> + 'v {
    concept
        .get("coding")
        .and_then(|c| c.items())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let system = c.get("system").and_then(|s| s.as_str()).unwrap_or("");
            Some((system.to_string(), c.get("code")?.as_str()?.to_string()))
        })
}

/// The first (system, code) a pattern CodeableConcept (or Coding) holds.
pub fn first_coding(pattern: &Value) -> Option<(String, String)> {
    let coding = match pattern.get("coding") {
        Some(codings) => codings.as_array()?.first()?,
        None => pattern,
    };
    let text = |k: &str| coding.get(k).and_then(Value::as_str);
    Some((
        text("system").unwrap_or("").to_owned(),
        text("code")?.to_owned(),
    ))
}

fn step(name: &str) -> Step {
    match name.strip_suffix("[x]") {
        Some(base) => Step::Choice(base.to_string()),
        None => Step::Member(name.to_string()),
    }
}

/// `fixedUri`, `patternCodeableConcept`, ...: the element's one value of that kind.
fn value_with_prefix(rest: &serde_json::Map<String, Value>, prefix: &str) -> Option<Value> {
    rest.iter()
        .find(|(key, _)| {
            key.strip_prefix(prefix)
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
        })
        .map(|(_, value)| value.clone())
}

/// `dateTime` → `DateTime`: how a type names a choice member (`effectiveDateTime`).
pub fn capitalised(code: &str) -> String {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `http://...|6.1.0` → `http://...`.
pub fn strip_version(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

/// A base resource's type from its core profile URL.
pub fn core_type(url: &str) -> Option<String> {
    strip_version(url)
        .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
        .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(str::to_string)
}
