//! Evaluating a compiled [`Profile`] on a parsed resource.
//!
//! Each rule finds the nodes of its parent path (every array item along the
//! way) and, under each, the element's values: their count against min/max,
//! each value against the fixed or pattern value, the choice type, the
//! reference's target type and the required binding. A rule under an absent
//! parent checks nothing: cardinality is relative to the parent.

use serde_json::{Map, Value};

use super::profile::{BoundCodes, Profile, Rule, Step};
use super::{Finding, Severity};

/// Appends what `resource` breaks of `profile` to `findings`.
pub fn check(profile: &Profile, resource: &Value, findings: &mut Vec<Finding>) {
    let mut parents = Vec::new();
    for rule in &profile.rules {
        parents.clear();
        let (last, above) = rule.steps.split_last().expect("compiled rules have a step");
        collect(resource, &profile.resource_type, above, &mut parents);
        for (path, parent) in &parents {
            check_under(rule, last, path, parent, &profile.url, findings);
        }
    }
}

/// Every object reached from `node` along `steps`, with its FHIRPath-style location.
fn collect<'v>(
    node: &'v Value,
    path: &str,
    steps: &[Step],
    out: &mut Vec<(String, &'v Map<String, Value>)>,
) {
    let Some(object) = node.as_object() else {
        return;
    };
    let Some((first, rest)) = steps.split_first() else {
        out.push((path.to_string(), object));
        return;
    };
    let Step::Member(name) = first else {
        return; // choices are compiled only as the last step
    };
    match object.get(name) {
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{path}.{name}[{i}]"), rest, out);
            }
        }
        Some(item) => collect(item, &format!("{path}.{name}"), rest, out),
        None => {}
    }
}

fn check_under(
    rule: &Rule,
    last: &Step,
    parent_path: &str,
    parent: &Map<String, Value>,
    profile: &str,
    findings: &mut Vec<Finding>,
) {
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
    let mut present: Vec<(&str, Option<&str>, Vec<&Value>)> = Vec::new();
    let mut count = 0usize;
    match last {
        Step::Member(name) => {
            let values = values_of(parent.get(name.as_str()));
            count = present_count(parent.get(name.as_str()), parent.get(&format!("_{name}")));
            present.push((name.as_str(), None, values));
        }
        Step::Choice(base) => {
            for (key, value) in parent {
                let Some(suffix) = key.strip_prefix(base.as_str()) else {
                    continue;
                };
                if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
                    continue;
                }
                let values = values_of(Some(value));
                count += values.len();
                present.push((key.as_str(), Some(suffix), values));
            }
            if count == 0 {
                let extension_only = parent.keys().any(|k| {
                    k.strip_prefix('_')
                        .and_then(|k| k.strip_prefix(base.as_str()))
                        .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
                });
                count = usize::from(extension_only);
            }
        }
    }
    let shown = match last {
        Step::Member(name) => format!("{parent_path}.{name}"),
        Step::Choice(base) => format!("{parent_path}.{base}[x]"),
    };
    if count < rule.min as usize {
        finding(
            shown.clone(),
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
        finding(shown.clone(), message);
    }
    for (key, suffix, values) in present {
        if let (Some(suffix), Some(allowed)) = (suffix, &rule.choice_types)
            && !allowed.iter().any(|t| t == suffix)
        {
            finding(
                format!("{parent_path}.{key}"),
                format!(
                    "type {suffix} is not allowed for {} (allowed: {})",
                    rule.element,
                    allowed.join(", ")
                ),
            );
        }
        let many = values.len() > 1;
        for (i, value) in values.into_iter().enumerate() {
            let path = if many {
                format!("{parent_path}.{key}[{i}]")
            } else {
                format!("{parent_path}.{key}")
            };
            if let Some(fixed) = &rule.fixed
                && value != fixed
            {
                finding(
                    path.clone(),
                    format!("must be exactly {fixed} (fixed value), found {value}"),
                );
            }
            if let Some(pattern) = &rule.pattern
                && !matches_pattern(value, pattern)
            {
                finding(
                    path.clone(),
                    format!("must match the pattern {pattern}, found {value}"),
                );
            }
            if let Some(types) = &rule.reference_types
                && let Some(target) = reference_type(value)
                && !types.is_empty()
                && !types.iter().any(|t| t == target)
            {
                finding(
                    path.clone(),
                    format!(
                        "refers to a {target}; {} may refer to {}",
                        rule.element,
                        types.join(", ")
                    ),
                );
            }
            if let Some(binding) = &rule.binding
                && let BoundCodes::Enumerated { codes, pairs } = &binding.codes
                && let Some(outside) = outside_binding(value, codes, pairs)
            {
                finding(
                    path.clone(),
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
pub(crate) fn present_count(value: Option<&Value>, extension: Option<&Value>) -> usize {
    let present = |v: Option<&Value>, i: usize| match v {
        Some(Value::Array(items)) => items.get(i).is_some_and(|x| !x.is_null()),
        Some(Value::Null) | None => false,
        Some(_) => i == 0,
    };
    let len = |v: Option<&Value>| match v {
        Some(Value::Array(items)) => items.len(),
        Some(Value::Null) | None => 0,
        Some(_) => 1,
    };
    (0..len(value).max(len(extension)))
        .filter(|&i| present(value, i) || present(extension, i))
        .count()
}

fn values_of(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().filter(|v| !v.is_null()).collect(),
        Some(value) => vec![value],
    }
}

/// FHIR pattern semantics: every member the pattern has, the value has
/// with a matching value; an array in the pattern is matched item by item
/// by some item of the value's array.
pub fn matches_pattern(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(value), Value::Object(pattern)) => pattern
            .iter()
            .all(|(key, p)| value.get(key).is_some_and(|v| matches_pattern(v, p))),
        (Value::Array(values), Value::Array(patterns)) => patterns
            .iter()
            .all(|p| values.iter().any(|v| matches_pattern(v, p))),
        (value, pattern) => value == pattern,
    }
}

/// The resource type a literal reference names (`Patient/1`,
/// `https://x/fhir/Patient/1/_history/2`); none for a contained (`#`) or
/// `urn:` reference, which only a bundle-aware validator can resolve.
fn reference_type(value: &Value) -> Option<&str> {
    let reference = value.get("reference")?.as_str()?;
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let reference = reference.split("/_history/").next().unwrap_or(reference);
    let mut segments = reference.rsplit('/');
    segments.next()?; // the id
    segments
        .next()
        .filter(|t| crate::fhir::is_known_resource_type(t))
}

/// For a code, Coding or CodeableConcept: the code shown in a finding when
/// none of its codings is in the value set. A CodeableConcept with only
/// text has no code to judge.
fn outside_binding(
    value: &Value,
    codes: &std::collections::HashSet<String>,
    pairs: &crate::terminology::codeset::CodeSet,
) -> Option<String> {
    if let Some(code) = value.as_str() {
        return (!codes.contains(code)).then(|| format!("code {code:?}"));
    }
    let codings: Vec<&Value> = match value.get("coding") {
        Some(Value::Array(codings)) => codings.iter().collect(),
        Some(_) => return None,
        None if value.get("code").is_some() => vec![value],
        None => return None,
    };
    let mut first = None;
    for coding in codings {
        let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
        let Some(code) = coding.get("code").and_then(Value::as_str) else {
            continue;
        };
        if pairs.contains(system, code) {
            return None;
        }
        first.get_or_insert_with(|| format!("{system}|{code}"));
    }
    first
}
