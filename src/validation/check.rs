//! Evaluating a compiled [`Profile`] on a parsed resource.
//!
//! Each rule finds the nodes of its parent path (every array item along the
//! way) and, under each, the element's values: their count against min/max,
//! each value against the fixed or pattern value, the choice type, the
//! reference's target type and the required binding. A rule under an absent
//! parent checks nothing: cardinality is relative to the parent.

use super::invariant::Outcome;
use super::profile::{BoundCodes, Group, Profile, Rule, SliceMatch, Step};
use super::tree::{Tree, equals, matches_pattern};
use super::{Finding, Severity};

/// Appends what `resource` breaks of `profile` to `findings`. Rules come
/// grouped by parent path: each group's parents are found once.
pub fn check<'v>(profile: &Profile, resource: impl Tree<'v>, findings: &mut Vec<Finding>) {
    if let Some(json) = resource.as_json() {
        for invariant in &profile.root_invariants {
            if let Outcome::Fails = invariant.on(json, None) {
                findings.push(Finding {
                    severity: Severity::Error,
                    profile: profile.url.clone(),
                    element: profile.resource_type.clone(),
                    path: profile.resource_type.clone(),
                    message: invariant.failed(),
                });
            }
        }
    }
    let mut parents = Vec::new();
    for group in &profile.groups {
        let rules = &profile.rules[group.rules.clone()];
        let (_, above) = rules[0]
            .steps
            .split_last()
            .expect("compiled rules have a step");
        parents.clear();
        collect(resource, above, &mut Trail::new(), &mut parents);
        for (parent, trail) in &parents {
            let at = Place {
                resource_type: &profile.resource_type,
                steps: above,
                trail,
            };
            let found = Found::of(group, rules.len(), *parent);
            for (offset, rule) in rules.iter().enumerate() {
                // Absent and optional: nothing to check, and the rule's
                // steps (another allocation) are not even read.
                if rule.min == 0
                    && found.values[offset].is_none()
                    && found.extensions[offset].is_none()
                    && !group.is_choice(offset)
                {
                    continue;
                }
                let under = Under {
                    parent: *parent,
                    value: found.values[offset],
                    extension: found.extensions[offset],
                    choices: &found.choices,
                    offset,
                };
                check_under(rule, &at, under, &profile.url, findings);
            }
        }
    }
}

/// What one parent holds for its group's rules, found in one pass over
/// its members (the first member of a name wins, as in `get`).
struct Found<'v, T> {
    /// By rule offset: the member's value, and its `_name` extension.
    values: smallvec::SmallVec<[Option<T>; 16]>,
    extensions: smallvec::SmallVec<[Option<T>; 16]>,
    /// Members of choice rules: (rule offset, member name, value).
    choices: smallvec::SmallVec<[(usize, &'v str, T); 4]>,
}

impl<'v, T: Tree<'v>> Found<'v, T> {
    fn of(group: &Group, rules: usize, parent: T) -> Self {
        let mut found = Found {
            values: smallvec::smallvec![None; rules],
            extensions: smallvec::smallvec![None; rules],
            choices: smallvec::SmallVec::new(),
        };
        for (key, value) in parent.members() {
            if let Some(hits) = group.by_member.get(key) {
                for &(offset, extension) in hits {
                    let slot = match extension {
                        false => &mut found.values[offset],
                        true => &mut found.extensions[offset],
                    };
                    slot.get_or_insert(value);
                }
            }
            for (offset, base) in &group.choices {
                // `valueQuantity` for `value`: longer, same first byte, then the prefix.
                let (k, b) = (key.as_bytes(), base.as_bytes());
                if k.len() > b.len()
                    && k[0] == b[0]
                    && k[b.len()].is_ascii_uppercase()
                    && k.starts_with(b)
                {
                    found.choices.push((*offset, key, value));
                }
            }
        }
        found
    }
}

/// A rule's view of its parent.
struct Under<'f, 'v, T> {
    parent: T,
    value: Option<T>,
    extension: Option<T>,
    choices: &'f [(usize, &'v str, T)],
    offset: usize,
}

/// The array index taken at each step to a parent (`NOT_AN_ARRAY` for a single value).
type Trail = smallvec::SmallVec<[u32; 6]>;
const NOT_AN_ARRAY: u32 = u32::MAX;

/// Where a parent is; its FHIRPath-style location is formatted only for a finding.
struct Place<'p> {
    resource_type: &'p str,
    steps: &'p [Step],
    trail: &'p Trail,
}

impl Place<'_> {
    fn path(&self) -> String {
        let mut path = self.resource_type.to_string();
        for (step, &index) in self.steps.iter().zip(self.trail.iter()) {
            if let Step::Member(name) | Step::Slice { member: name, .. } = step {
                path.push('.');
                path.push_str(name);
            }
            if index != NOT_AN_ARRAY {
                path.push_str(&format!("[{index}]"));
            }
        }
        path
    }
}

/// Every object reached from `node` along `steps`, with the indices taken.
fn collect<'v, T: Tree<'v>>(node: T, steps: &[Step], trail: &mut Trail, out: &mut Vec<(T, Trail)>) {
    if !node.is_object() {
        return;
    }
    let Some((first, rest)) = steps.split_first() else {
        out.push((node, trail.clone()));
        return;
    };
    let (name, slice) = match first {
        Step::Member(name) => (name, None),
        Step::Slice {
            member, matcher, ..
        } => (member, Some(matcher)),
        Step::Choice(_) => return, // choices are compiled only as the last step
    };
    let Some(value) = node.get(name) else {
        return;
    };
    match value.items() {
        Some(items) => {
            for (i, item) in items.enumerate() {
                if slice.is_some_and(|m| !in_slice(item, m)) {
                    continue; // not in the slice
                }
                trail.push(i as u32);
                collect(item, rest, trail, out);
                trail.pop();
            }
        }
        None if slice.is_some_and(|m| !in_slice(value, m)) => {}
        None => {
            trail.push(NOT_AN_ARRAY);
            collect(value, rest, trail, out);
            trail.pop();
        }
    }
}

fn check_under<'v, T: Tree<'v>>(
    rule: &Rule,
    at: &Place<'_>,
    under: Under<'_, 'v, T>,
    profile: &str,
    findings: &mut Vec<Finding>,
) {
    let parent = under.parent;
    let last = rule.steps.last().expect("compiled rules have a step");
    let mut finding = |path: String, message: String| {
        findings.push(Finding {
            severity: Severity::Error,
            profile: profile.to_string(),
            element: rule.element.clone(),
            path,
            message,
        });
    };
    // (member name, its choice type if a choice, its values)
    let mut present: smallvec::SmallVec<[Present<'_, T>; 2]> = smallvec::SmallVec::new();
    let mut count = 0usize;
    match last {
        Step::Member(name) => {
            let value = under.value;
            // A single present value counts one whatever its extension holds.
            let single = value.is_some_and(|v| v.items().is_none() && !v.is_null());
            let extension = under.extension.filter(|_| !single);
            if value.is_none() && extension.is_none() {
                if rule.min == 0 {
                    return; // absent and optional: nothing else to check
                }
            } else {
                count = present_count(value, extension);
            }
            present.push((name.as_str(), None, values_of(value)));
        }
        Step::Slice {
            member, matcher, ..
        } => {
            let values: Values<T> = values_of(under.value)
                .into_iter()
                .filter(|(_, v)| in_slice(*v, matcher))
                .collect();
            if values.is_empty() && rule.min == 0 {
                return;
            }
            count = values.len();
            present.push((member.as_str(), None, values));
        }
        Step::Choice(base) => {
            let mine = under.choices.iter().filter(|(o, _, _)| *o == under.offset);
            for &(_, key, value) in mine {
                let suffix = &key[base.len()..];
                let values = values_of(Some(value));
                count += values.len();
                present.push((key, Some(suffix), values));
            }
            if count == 0 {
                let extension_only = parent.members().any(|(k, _)| {
                    k.strip_prefix('_')
                        .and_then(|k| k.strip_prefix(base.as_str()))
                        .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
                });
                count = usize::from(extension_only);
            }
        }
    }
    let shown = || match last {
        Step::Member(name) | Step::Slice { member: name, .. } => format!("{}.{name}", at.path()),
        Step::Choice(base) => format!("{}.{base}[x]", at.path()),
    };
    if count < rule.min as usize {
        finding(
            shown(),
            format!(
                "{} is required (min {}), found {count}",
                rule.element, rule.min
            ),
        );
    }
    if let Some(max) = rule.max
        && count > max as usize
    {
        let message = if max == 0 {
            format!("{} is not allowed by this profile (max 0)", rule.element)
        } else {
            format!("{} allows at most {max}, found {count}", rule.element)
        };
        finding(shown(), message);
    }
    for (key, suffix, values) in present {
        if let (Some(suffix), Some(allowed)) = (suffix, &rule.choice_types)
            && !allowed.iter().any(|t| t == suffix)
        {
            finding(
                format!("{}.{key}", at.path()),
                format!(
                    "type {suffix} is not allowed for {} (allowed: {})",
                    rule.element,
                    allowed.join(", ")
                ),
            );
        }
        for (i, value) in values {
            let path = || {
                if i != NOT_AN_ARRAY {
                    format!("{}.{key}[{i}]", at.path())
                } else {
                    format!("{}.{key}", at.path())
                }
            };
            if let Some(fixed) = &rule.fixed
                && !equals(value, fixed)
            {
                finding(
                    path(),
                    format!(
                        "must be exactly {fixed} (fixed value), found {}",
                        value.show()
                    ),
                );
            }
            if let Some(pattern) = &rule.pattern
                && !matches_pattern(value, pattern)
            {
                finding(
                    path(),
                    format!("must match the pattern {pattern}, found {}", value.show()),
                );
            }
            if let Some(types) = &rule.reference_types
                && !types.is_empty()
                && let Some(target) = reference_type(value)
                && !types.iter().any(|t| t == target)
                && crate::fhir::is_known_resource_type(target)
            {
                finding(
                    path(),
                    format!(
                        "refers to a {target}; {} may refer to {}",
                        rule.element,
                        types.join(", ")
                    ),
                );
            }
            if let Some(json) = value.as_json().filter(|_| !rule.invariants.is_empty()) {
                for invariant in &rule.invariants {
                    if let Outcome::Fails = invariant.on(json, suffix) {
                        finding(path(), invariant.failed());
                    }
                }
            }
            if let Some(binding) = &rule.binding
                && let BoundCodes::Enumerated { codes, pairs } = &binding.codes
                && let Some(outside) = outside_binding(value, codes, pairs)
            {
                finding(
                    path(),
                    format!(
                        "{outside} is not in the required value set {}",
                        binding.value_set
                    ),
                );
            }
        }
    }
}

/// How many items an element has: a primitive may be present only as its
/// extension (`_birthDate`), item by item in a repeating one (`given: [null,
/// "b"]` with `_given: [{...}, null]` is two).
pub(crate) fn present_count<'v, T: Tree<'v>>(value: Option<T>, extension: Option<T>) -> usize {
    let present = |v: Option<T>, i: usize| match v {
        None => false,
        Some(v) => match v.items() {
            Some(mut items) => items.nth(i).is_some_and(|x| !x.is_null()),
            None => !v.is_null() && i == 0,
        },
    };
    let len = |v: Option<T>| match v {
        None => 0,
        Some(v) => match v.items() {
            Some(items) => items.count(),
            None => usize::from(!v.is_null()),
        },
    };
    (0..len(value).max(len(extension)))
        .filter(|&i| present(value, i) || present(extension, i))
        .count()
}

/// A member present for a rule: its name, its choice type if a choice, its values.
type Present<'k, T> = (&'k str, Option<&'k str>, Values<T>);

/// An element's values, each with its array index (`NOT_AN_ARRAY` for a
/// single value); most elements hold one or a few.
type Values<T> = smallvec::SmallVec<[(u32, T); 4]>;

fn values_of<'v, T: Tree<'v>>(value: Option<T>) -> Values<T> {
    match value {
        None => Values::new(),
        Some(value) => match value.items() {
            Some(items) => items
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, v)| (i as u32, v))
                .collect(),
            None if value.is_null() => Values::new(),
            None => smallvec::smallvec![(NOT_AN_ARRAY, value)],
        },
    }
}

/// The type a reference names: the segment before the id of a literal
/// reference (`Patient/1`, `https://x/fhir/Patient/1/_history/2`), or the
/// one before the query of a conditional one (`Practitioner?identifier=…`,
/// which Synthea's bulk output uses for practitioners, organizations and
/// locations); if the caller finds it is a resource type's name. None for a
/// contained (`#`) or `urn:` reference, which only a bundle-aware
/// validator can resolve.
fn reference_type<'v>(value: impl Tree<'v>) -> Option<&'v str> {
    let reference = value.get("reference")?.as_str()?;
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    if let Some((path, _query)) = reference.split_once('?') {
        return path.rsplit('/').next();
    }
    let reference = crate::fhir::without_history(reference);
    let (rest, _id) = reference.rsplit_once('/')?;
    // Whether it names a resource type is asked only of a type not allowed.
    rest.rsplit('/').next()
}

/// Whether an item of a sliced element is in the slice.
fn in_slice<'v, T: Tree<'v>>(item: T, matcher: &SliceMatch) -> bool {
    match matcher {
        SliceMatch::Pattern(pattern) => matches_pattern(item, pattern),
        SliceMatch::Codes(set) => {
            if let Some(code) = item.as_str() {
                return set.contains_code(code); // a `code` element
            }
            // Its codings, or the item itself when it is a Coding.
            let codings = item.get("coding").and_then(|c| c.items());
            let lone = item.get("code").is_some().then_some(item);
            codings.into_iter().flatten().chain(lone).any(|coding| {
                let system = coding.get("system").and_then(|s| s.as_str()).unwrap_or("");
                coding
                    .get("code")
                    .and_then(|c| c.as_str())
                    .is_some_and(|code| set.contains(system, code))
            })
        }
    }
}

/// For a code, Coding or CodeableConcept: the code shown in a finding when
/// none of its codings is in the value set. A CodeableConcept with only
/// text has no code to judge.
fn outside_binding<'v, T: Tree<'v>>(
    value: T,
    codes: &std::collections::HashSet<String>,
    pairs: &crate::terminology::codeset::CodeSet,
) -> Option<String> {
    if let Some(code) = value.as_str() {
        return (!codes.contains(code)).then(|| format!("code {code:?}"));
    }
    // Its codings, or the value itself when it is a Coding.
    let (codings, lone) = match value.get("coding") {
        Some(codings) => (Some(codings.items()?), None),
        None if value.get("code").is_some() => (None, Some(value)),
        None => return None,
    };
    let mut first = None;
    for coding in codings.into_iter().flatten().chain(lone) {
        let system = coding.get("system").and_then(|s| s.as_str()).unwrap_or("");
        let Some(code) = coding.get("code").and_then(|c| c.as_str()) else {
            continue;
        };
        if pairs.contains(system, code) {
            return None;
        }
        first.get_or_insert_with(|| format!("{system}|{code}"));
    }
    first
}
