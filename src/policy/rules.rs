//! A policy file's rules, compiled once and evaluated per resource.
//!
//! In: a [`PolicySource`] and, per resource, its parsed tree. Out: a
//! [`Verdict`] — the rules that matched, and why, in order — and from it a
//! [`Decision`] for the decoder. What a rule asks about is read at most once
//! per resource and only when some rule asks: the labels (`meta.security`,
//! inline labels), and the value sets its codings hit at the resource's date
//! (one [`CodeIndex`] of every set: two hash look-ups per coding).
//!
//! A rule matches a resource of one of its `types` (all, when none) that
//! carries any of its `labels` or any code of its `codes` sets (every
//! resource of the types, when it names neither). `label` and `redact` rules
//! change the resource and evaluation goes on; the first `allow`,
//! `segregate` or `deny` that matches decides. A resource whose labels or
//! codes a rule cannot read fails closed: segregated by [`FAIL_CLOSED`].

use std::fmt::Write as _;
use std::sync::Arc;

use smallvec::SmallVec;

use super::codes::{CodeIndex, CodePaths, Lookup, normalised, resource_date};
use super::compartment::Compartments;
use super::consent::{Consents, patient_of};
use super::date::Overlap;
use super::edit::{self, Edits, Elements};
use super::file::{Action, PolicySource};
use super::labels::{self, Label, ResourceLabels};
use super::tree::{self, Unreadable};
use super::{Decision, Rule, Subject};
use crate::view::Json;

/// The rule that segregates what no rule could evaluate.
pub const FAIL_CLOSED: &str = "fail-closed";

#[derive(Debug, Clone)]
struct CompiledRule {
    name: Arc<str>,
    action: Action,
    types: Vec<Box<str>>,
    labels: Vec<Label>,
    /// Bit `n`: the index's set `n`.
    sets: u64,
    add_labels: Vec<Label>,
    paths: Vec<edit::Path>,
    /// Matches by the patient's Consents.
    consent: bool,
    /// Also matches what is in the compartment of an Encounter it segregates.
    compartment: bool,
}

/// Every rule of a policy file, compiled.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Arc<[CompiledRule]>,
    index: Arc<CodeIndex>,
    code_paths: CodePaths,
    consents: Option<Arc<Consents>>,
    /// The Encounters compartment rules took (a job's [`super::compartment::Survey`]).
    compartments: Option<Arc<Compartments>>,
    /// Resource types whose main table keeps no raw JSON (`[tables.T] raw = false`).
    raw_omitted: Vec<Box<str>>,
    /// Per resource type, the root elements its main table keeps
    /// (`[tables.T] elements`), and the rule name a removal is reported by.
    elements: Vec<TableElements>,
}

#[derive(Debug, Clone)]
struct TableElements {
    resource_type: Box<str>,
    rule: Arc<str>,
    elements: Arc<Elements>,
}

/// One rule that matched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: Arc<str>,
    pub action: Action,
    pub why: String,
}

/// What the policy makes of one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// In rule order; the last one decides when its action is final.
    pub matched: Vec<Match>,
    pub edits: Edits,
}

impl Verdict {
    /// Segregated because a rule cannot read the resource.
    fn fail_closed(&mut self, why: String) {
        self.matched.push(Match {
            rule: FAIL_CLOSED.into(),
            action: Action::Segregate,
            why,
        });
        self.edits.segregated_by = Some(FAIL_CLOSED.into());
    }

    /// The final rule, if one matched.
    pub fn decided_by(&self) -> Option<&Match> {
        self.matched.last().filter(|m| m.action.is_final())
    }

    /// What happens: the final action, else `label`/`redact` when something
    /// changed, else `allow`.
    pub fn outcome(&self) -> Action {
        match self.decided_by() {
            Some(m) => m.action,
            None if !self.edits.is_empty() => {
                self.matched.last().expect("edits come from rules").action
            }
            None => Action::Allow,
        }
    }
}

/// The facts about one resource rules ask for, read once on first use.
struct Facts<'a> {
    resource: &'a Json<'a>,
    resource_type: &'a str,
    labels: Option<Result<ResourceLabels<'a>, Unreadable>>,
    codes: Option<Result<CodeHits<'a>, Unreadable>>,
}

/// The value sets a resource's codings hit at its date: a bit per set and
/// the first coding of each.
#[derive(Default)]
struct CodeHits<'a> {
    sets: u64,
    first: SmallVec<[(u8, &'a str, &'a str, String); 2]>,
}

impl RuleSet {
    pub fn compile(source: &PolicySource) -> Result<RuleSet, String> {
        let index = CodeIndex::new(source.value_sets.clone())?;
        let mut code_paths = CodePaths::default();
        for (resource_type, paths) in &source.text.code_paths {
            // A misspelt code path finds no codes: what it should have
            // segregated would reach the main table.
            let fail = |m: String| format!("[code_paths] {resource_type}: {m}");
            if !crate::fhir::is_known_resource_type(resource_type) {
                return Err(fail(
                    "not a FHIR resource type (name the type, e.g. Condition)".into(),
                ));
            }
            for path in paths {
                let steps: Vec<&str> = path.split('.').collect();
                if steps
                    .iter()
                    .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(fail(format!(
                        "`{path}` is not an element path (`code`, `diagnosis.condition`)"
                    )));
                }
                known_root_element(steps[0], std::slice::from_ref(resource_type))
                    .map_err(|m| fail(format!("`{path}`: {m}")))?;
            }
            code_paths.set(resource_type, paths);
        }
        let mut rules = Vec::new();
        for text in &source.text.rules {
            let fail = |m: String| format!("rule `{}`: {m}", text.name);
            let labels = |list: &[String]| -> Result<Vec<Label>, String> {
                list.iter().map(|l| Label::parse(l).map_err(fail)).collect()
            };
            let mut sets = 0u64;
            for name in &text.codes {
                let at = index
                    .set_index(name)
                    .expect("the source loaded every set a rule names");
                sets |= 1 << at;
            }
            let paths = text
                .paths
                .iter()
                .map(|p| {
                    let path = edit::Path::parse(p).map_err(fail)?;
                    if let edit::Path::Members(steps) = &path {
                        known_root_element(&steps[0], &text.types)
                            .map_err(|m| fail(format!("paths: `{p}`: {m}")))?;
                    }
                    Ok::<_, String>(path)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let add_labels = labels(&text.add_labels)?;
            match text.action {
                Action::Label if add_labels.is_empty() => {
                    return Err(fail("a label rule needs add_labels".into()));
                }
                Action::Redact if paths.is_empty() => {
                    return Err(fail("a redact rule needs paths".into()));
                }
                Action::Allow | Action::Deny if !add_labels.is_empty() => {
                    return Err(fail(format!(
                        "add_labels means nothing to {}",
                        text.action.as_str()
                    )));
                }
                action if action != Action::Redact && !paths.is_empty() => {
                    return Err(fail(format!("paths mean nothing to {}", action.as_str())));
                }
                _ => {}
            }
            if text.consent && !(text.labels.is_empty() && text.codes.is_empty()) {
                return Err(fail(
                    "a consent rule matches by Consent only: give labels and codes to another rule"
                        .into(),
                ));
            }
            if text.compartment.is_some() {
                if text.action != Action::Segregate {
                    return Err(fail(format!(
                        "compartment needs action = \"segregate\" (not {}): a denied or kept \
                         Encounter leaves no trace a later job could follow",
                        text.action.as_str()
                    )));
                }
                if text.consent || (text.labels.is_empty() && text.codes.is_empty()) {
                    return Err(fail(
                        "compartment extends a rule's labels or codes: give it labels or codes"
                            .into(),
                    ));
                }
            }
            for t in &text.types {
                if !crate::fhir::is_known_resource_type(t) {
                    return Err(fail(format!("`{t}` is not a FHIR resource type")));
                }
            }
            rules.push(CompiledRule {
                name: text.name.as_str().into(),
                action: text.action,
                types: text.types.iter().map(|t| t.as_str().into()).collect(),
                labels: labels(&text.labels)?,
                sets,
                add_labels,
                paths,
                consent: text.consent,
                compartment: text.compartment.is_some(),
            });
        }
        let mut raw_omitted = Vec::new();
        let mut elements = Vec::new();
        for (resource_type, table) in &source.text.tables {
            let fail = |m: String| format!("[tables.{resource_type}]: {m}");
            if !crate::fhir::is_known_resource_type(resource_type) {
                return Err(fail(format!(
                    "`{resource_type}` is not a FHIR resource type (name the type, e.g. Patient)"
                )));
            }
            if resource_type == "Consent"
                && source.lake_consents.is_some()
                && (!table.raw || table.elements.is_some())
            {
                return Err(fail(
                    "raw = false or elements would leave the Consents [consent] table reads \
                     without their provisions"
                        .into(),
                ));
            }
            if let Some(names) = &table.elements {
                let parsed = Elements::parse(names).map_err(fail)?;
                let of_type = std::slice::from_ref(resource_type);
                for name in names {
                    known_root_element(name, of_type)
                        .map_err(|m| fail(format!("elements: {m}")))?;
                }
                elements.push(TableElements {
                    resource_type: resource_type.as_str().into(),
                    rule: format!("tables.{resource_type}.elements").into(),
                    elements: Arc::new(parsed),
                });
            }
            if !table.raw {
                raw_omitted.push(resource_type.as_str().into());
            }
        }
        Ok(RuleSet {
            raw_omitted,
            elements,
            rules: rules.into(),
            index: Arc::new(index),
            code_paths,
            consents: source.consents.clone(),
            compartments: None,
        })
    }

    /// Whether a rule takes Encounter compartments: a job must then survey
    /// its Encounters first ([`RuleSet::with_compartments`]).
    pub fn has_compartment_rules(&self) -> bool {
        self.rules.iter().any(|r| r.compartment)
    }

    /// Every code a compartment rule matches on, normalised as codes are
    /// compared (its labels' codes and its value sets'): an Encounter none
    /// of whose codings holds one cannot be taken by such a rule.
    pub fn compartment_codes(&self) -> std::collections::HashSet<Box<str>> {
        let mut codes = std::collections::HashSet::new();
        for rule in self.rules.iter().filter(|r| r.compartment) {
            for label in &rule.labels {
                codes.insert(normalised(&label.code).into());
            }
            for (at, set) in self.index.sets().iter().enumerate() {
                if rule.sets & (1 << at) != 0 {
                    codes.extend(set.entries.iter().map(|e| normalised(&e.code).into()));
                }
            }
        }
        codes
    }

    /// Whether the main table of `resource_type` keeps no raw JSON.
    pub fn omits_raw(&self, resource_type: &str) -> bool {
        self.raw_omitted.iter().any(|t| &**t == resource_type)
    }

    /// The root elements the main table of `resource_type` keeps, when the
    /// policy lists them.
    pub fn elements(&self, resource_type: &str) -> Option<&Elements> {
        self.table_elements(resource_type).map(|t| &*t.elements)
    }

    /// The types whose main tables keep only listed elements.
    pub fn subsetted_types(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().map(|t| &*t.resource_type)
    }

    fn table_elements(&self, resource_type: &str) -> Option<&TableElements> {
        self.elements
            .iter()
            .find(|t| &*t.resource_type == resource_type)
    }

    /// Whether the rule `name` takes the compartment of what it segregates.
    pub fn takes_compartment(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.compartment && &*r.name == name)
    }

    /// These rules, matching also by `compartments`.
    pub fn with_compartments(&self, compartments: Arc<Compartments>) -> RuleSet {
        RuleSet {
            compartments: Some(compartments),
            ..self.clone()
        }
    }

    /// Every rule that matches `resource`, in order, up to the deciding one.
    pub fn evaluate<'a>(&self, resource: &'a Json<'a>, resource_type: &'a str) -> Verdict {
        let mut facts = Facts {
            resource,
            resource_type,
            labels: None,
            codes: None,
        };
        let mut verdict = Verdict::default();
        for rule in self.rules.iter() {
            if !rule.types.is_empty() && !rule.types.iter().any(|t| &**t == resource_type) {
                continue;
            }
            let why = match self.matches(rule, &mut facts) {
                Ok(Some(why)) => why,
                Ok(None) => continue,
                Err(unreadable) => {
                    verdict.fail_closed(format!(
                        "rule `{}` cannot evaluate it: {unreadable}",
                        rule.name
                    ));
                    return verdict;
                }
            };
            let changed = match rule.action {
                Action::Label | Action::Segregate if !rule.add_labels.is_empty() => {
                    let present = match facts.labels(resource) {
                        Ok(labels) => labels,
                        Err(unreadable) => {
                            verdict.fail_closed(format!(
                                "rule `{}` cannot label it: {unreadable}",
                                rule.name
                            ));
                            return verdict;
                        }
                    };
                    let missing: Vec<Label> = rule
                        .add_labels
                        .iter()
                        .filter(|l| !present.has(l) && !verdict.edits.add_labels.contains(l))
                        .cloned()
                        .collect();
                    let changed = !missing.is_empty();
                    verdict.edits.add_labels.extend(missing);
                    changed
                }
                Action::Redact => {
                    let present: Vec<&edit::Path> = rule
                        .paths
                        .iter()
                        .filter(|p| p.is_present(resource))
                        .collect();
                    let changed = !present.is_empty();
                    for path in present {
                        if !verdict.edits.remove.contains(path) {
                            verdict.edits.remove.push(path.clone());
                        }
                    }
                    changed
                }
                Action::Allow | Action::Deny | Action::Segregate | Action::Label => true,
            };
            if rule.action.is_final() || changed {
                verdict.matched.push(Match {
                    rule: rule.name.clone(),
                    action: rule.action,
                    why,
                });
            }
            if rule.action.is_final() {
                if rule.action == Action::Segregate {
                    verdict.edits.segregated_by = Some(rule.name.clone());
                }
                break;
            }
        }
        self.subset(&mut verdict, resource, resource_type);
        verdict
    }

    /// Minimum necessary: what the main table keeps of a resource it gets
    /// is only the type's `elements`.
    fn subset(&self, verdict: &mut Verdict, resource: &Json<'_>, resource_type: &str) {
        let Some(table) = self.table_elements(resource_type) else {
            return;
        };
        if matches!(
            verdict.decided_by().map(|m| m.action),
            Some(Action::Segregate | Action::Deny)
        ) {
            return;
        }
        let removed = table.elements.removed(resource);
        if removed.is_empty() {
            return;
        }
        verdict.matched.push(Match {
            rule: table.rule.clone(),
            action: Action::Redact,
            why: format!(
                "not in [tables.{resource_type}] elements: {}",
                removed.join(", ")
            ),
        });
        verdict.edits.subset = Some(table.elements.clone());
    }

    /// Why `rule` matches (`None`: it does not), or what it cannot read.
    fn matches(
        &self,
        rule: &CompiledRule,
        facts: &mut Facts<'_>,
    ) -> Result<Option<String>, Unreadable> {
        // Consents are the directives themselves: a deny must not keep the
        // lake from holding the Consent that says so (and its later versions).
        if rule.consent && facts.resource_type == "Consent" {
            return Ok(None);
        }
        if rule.consent {
            let consents = self
                .consents
                .as_ref()
                .expect("the source read the Consents a rule asks for");
            let Some(patient) = patient_of(facts.resource, facts.resource_type) else {
                return Ok(None);
            };
            if !consents.covers(patient) {
                return Ok(None);
            }
            let day = resource_date(facts.resource, facts.resource_type)?;
            return Ok(consents.denial(patient, facts.resource_type, day));
        }
        if rule.labels.is_empty() && rule.sets == 0 {
            return Ok(Some(format!("a {}", facts.resource_type)));
        }
        if !rule.labels.is_empty() {
            let resource = facts.resource;
            if let Some(seen) = facts.labels(resource)?.find(&rule.labels) {
                let place = if seen.inline {
                    "an inline label"
                } else {
                    "meta.security"
                };
                return Ok(Some(format!(
                    "label {}|{} in {place}",
                    seen.system, seen.code
                )));
            }
        }
        if rule.sets != 0 {
            let resource_type = facts.resource_type;
            let hits = facts.codes(self)?;
            if hits.sets & rule.sets != 0 {
                let (set, system, code, path) = hits
                    .first
                    .iter()
                    .find(|(s, ..)| rule.sets & (1 << s) != 0)
                    .expect("a first coding per set hit");
                let mut why = String::new();
                let _ = write!(
                    why,
                    "code {code} ({system}) at {}.{path}, in value set {}",
                    resource_type,
                    self.index.sets()[*set as usize].name
                );
                return Ok(Some(why));
            }
        }
        if rule.compartment
            && let Some(compartments) = &self.compartments
        {
            return Ok(compartments.member(facts.resource, facts.resource_type, &rule.name));
        }
        Ok(None)
    }
}

impl<'a> Facts<'a> {
    fn labels(&mut self, resource: &Json<'a>) -> Result<&ResourceLabels<'a>, Unreadable> {
        if self.labels.is_none() {
            self.labels = Some(labels::read(resource));
        }
        self.labels
            .as_ref()
            .expect("read above")
            .as_ref()
            .map_err(Clone::clone)
    }

    fn codes(&mut self, rules: &RuleSet) -> Result<&CodeHits<'a>, Unreadable> {
        if self.codes.is_none() {
            self.codes = Some(code_hits(rules, self.resource, self.resource_type));
        }
        self.codes
            .as_ref()
            .expect("read above")
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The sets the resource's codings hit at its date. A resource without a
/// date is held to every range (it may fall in any); a date partly inside a
/// range (a year straddling its start) counts as inside.
fn code_hits<'a>(
    rules: &RuleSet,
    resource: &'a Json<'a>,
    resource_type: &str,
) -> Result<CodeHits<'a>, Unreadable> {
    let mut raw: SmallVec<[(super::codes::Hit, &'a Json<'a>, String); 2]> = SmallVec::new();
    rules
        .code_paths
        .for_each_coding(resource, resource_type, &mut |path, coding| {
            if let Lookup::Hits(hits) = rules.index.lookup(coding)? {
                for hit in hits {
                    raw.push((*hit, coding, path.join(".")));
                }
            }
            Ok::<(), Unreadable>(())
        })?;
    let mut found = CodeHits::default();
    if raw.is_empty() {
        return Ok(found);
    }
    let date = resource_date(resource, resource_type)?;
    for (hit, coding, path) in raw {
        if let Some(date) = date
            && date.within(&hit.range) == Overlap::Disjoint
        {
            continue;
        }
        if found.sets & (1 << hit.set) == 0 {
            let text = |key| {
                tree::member(coding, key)
                    .and_then(tree::string)
                    .unwrap_or("")
            };
            found
                .first
                .push((hit.set, text("system"), text("code"), path));
        }
        found.sets |= 1 << hit.set;
    }
    Ok(found)
}

impl Rule for RuleSet {
    fn as_rule_set(&self) -> Option<&RuleSet> {
        Some(self)
    }

    fn decide(&self, resource: &Json<'_>, subject: &Subject<'_>) -> Decision {
        let verdict = self.evaluate(resource, subject.resource_type);
        let Some(last) = verdict.matched.last() else {
            return Decision::Keep;
        };
        let by: Arc<str> = last.rule.clone();
        match verdict.decided_by().map(|m| m.action) {
            Some(Action::Deny) => Decision::Filter {
                reason: std::borrow::Cow::Owned(by.to_string()),
            },
            Some(Action::Segregate) => Decision::Segregate {
                json: edit::apply(resource, &verdict.edits, Some(&last.why)),
                by,
            },
            _ if verdict.edits.is_empty() => Decision::Keep,
            _ => Decision::Change {
                json: edit::apply(resource, &verdict.edits, None),
                by: verdict
                    .matched
                    .iter()
                    .filter(|m| !m.action.is_final())
                    .map(|m| &*m.rule)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into(),
            },
        }
    }
}

/// Whether `name` (`gender`, `deceased[x]`) is a root element of one of
/// `types` (of any resource type when there are none) in FHIR R4 or R5; the
/// error names the nearest element. A type neither version defines (a
/// server's own) is not checked.
fn known_root_element(name: &str, types: &[String]) -> Result<(), String> {
    let defined: Vec<&crate::fhir::RootElements> = match types {
        [] => crate::fhir::every_root_elements().collect(),
        types => types
            .iter()
            .map(|t| crate::fhir::root_elements(t))
            .collect::<Option<_>>()
            .unwrap_or_default(),
    };
    if defined.is_empty() || defined.iter().any(|elements| elements.has(name)) {
        return Ok(());
    }
    let of = match types {
        [] => "any resource type".to_owned(),
        types => types.join(" or "),
    };
    let near = defined.iter().filter_map(|e| e.nearest(name)).min();
    Err(match near {
        Some((_, near)) => {
            format!("`{name}` is not an element of {of} in FHIR R4 or R5 (did you mean `{near}`?)")
        }
        None => format!("`{name}` is not an element of {of} in FHIR R4 or R5"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    fn rules(text: &str) -> RuleSet {
        RuleSet::compile(&PolicySource::parse("test", text, None).unwrap()).unwrap()
    }

    fn verdict(rules: &RuleSet, text: &str) -> Verdict {
        let arena = Bump::new();
        let json = Json::parse(text, &arena).unwrap();
        let kind = tree::member(&json, "resourceType")
            .and_then(tree::string)
            .unwrap_or("Basic")
            .to_owned();
        rules.evaluate(&json, &kind)
    }

    fn decided(rules: &RuleSet, text: &str) -> Option<(String, Action)> {
        verdict(rules, text)
            .decided_by()
            .map(|m| (m.rule.to_string(), m.action))
    }

    const ICD: &str = "http://hl7.org/fhir/sid/icd-10-cm";

    #[test]
    fn part2_segregates_by_label_and_by_code_at_the_resource_date() {
        let part2 = RuleSet::compile(&PolicySource::load("part2").unwrap()).unwrap();
        let condition = |code: &str, date: &str| {
            format!(
                r#"{{"resourceType":"Condition","id":"c","code":{{"coding":[{{"system":"{ICD}","code":"{code}"}}]}},"recordedDate":"{date}"}}"#
            )
        };
        let seg = Some(("part2-codes".to_owned(), Action::Segregate));
        assert_eq!(decided(&part2, &condition("F11.20", "2020-01-01")), seg);
        assert_eq!(decided(&part2, &condition("J45.909", "2020-01-01")), None);
        // Nicotine dependence is not a Part 2 code.
        assert_eq!(decided(&part2, &condition("F17.210", "2020-01-01")), None);
        let labelled = r#"{"resourceType":"Observation","id":"o","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"42CFRPart2"}]}}"#;
        assert_eq!(
            decided(&part2, labelled),
            Some(("part2-labelled".into(), Action::Segregate))
        );
        let restricted = r#"{"resourceType":"Patient","id":"p","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]}}"#;
        assert_eq!(
            decided(&part2, restricted),
            Some(("restricted".into(), Action::Segregate))
        );
        let why = &verdict(&part2, &condition("F11.20", "2020-01-01")).matched[0].why;
        assert_eq!(
            why,
            &format!("code F11.20 ({ICD}) at Condition.code, in value set cms-bfd-samhsa")
        );
    }

    #[test]
    fn code_date_ranges_decide_and_a_resource_without_a_date_is_held_to_all() {
        // HCPCS G0137 is sensitive from 2024-01-01 on.
        let rules =
            rules("[[rule]]\nname = \"p2\"\naction = \"deny\"\ncodes = [\"cms-bfd-samhsa\"]\n");
        let claim = |date: &str| {
            format!(
                r#"{{"resourceType":"Claim","id":"c","item":[{{"productOrService":{{"coding":[{{"system":"https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets","code":"G0137"}}]}}}}]{date}}}"#
            )
        };
        assert_eq!(decided(&rules, &claim(r#","created":"2023-06-01""#)), None);
        assert!(decided(&rules, &claim(r#","created":"2024-06-01""#)).is_some());
        assert!(decided(&rules, &claim(r#","created":"2024""#)).is_some());
        assert!(decided(&rules, &claim("")).is_some());
        // A date that is not a date, on a resource with a sensitive code: closed.
        let v = verdict(&rules, &claim(r#","created":"soon""#));
        assert_eq!(v.decided_by().unwrap().rule.as_ref(), FAIL_CLOSED);
    }

    #[test]
    fn label_and_redact_change_and_go_on_and_the_first_final_rule_decides() {
        let rules = rules(
            "[[rule]]\nname = \"hiv\"\naction = \"label\"\ntypes = [\"Observation\"]\nadd_labels = [\"HIV\", \"R\"]\n\
             [[rule]]\nname = \"names\"\naction = \"redact\"\npaths = [\"name\", \"Reference.display\"]\n\
             [[rule]]\nname = \"keep-patients\"\naction = \"allow\"\ntypes = [\"Patient\"]\n\
             [[rule]]\nname = \"no-r\"\naction = \"deny\"\nlabels = [\"R\"]\n",
        );
        let patient = r#"{"resourceType":"Patient","id":"p","name":[{"family":"X"}],"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]}}"#;
        let v = verdict(&rules, patient);
        let names: Vec<_> = v.matched.iter().map(|m| &*m.rule).collect();
        assert_eq!(names, ["names", "keep-patients"]);
        assert_eq!(v.outcome(), Action::Allow);
        let obs = r#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p","display":"X"}}"#;
        let v = verdict(&rules, obs);
        let names: Vec<_> = v.matched.iter().map(|m| &*m.rule).collect();
        // The label rule adds R; the deny rule asks about the labels as received.
        assert_eq!(names, ["hiv", "names"]);
        assert_eq!(v.outcome(), Action::Redact);
        assert_eq!(v.edits.add_labels.len(), 2);
        // Nothing to redact: the redact rule does not match.
        assert_eq!(
            verdict(&rules, r#"{"resourceType":"Encounter","id":"e"}"#),
            Verdict::default()
        );
    }

    #[test]
    fn unreadable_labels_fail_closed_never_allow() {
        let rules = rules("[[rule]]\nname = \"r\"\naction = \"deny\"\nlabels = [\"R\"]\n");
        for bad in [
            r#"{"resourceType":"Patient","id":"p","meta":{"security":[{"code":"R"}]}}"#,
            r#"{"resourceType":"Patient","id":"p","meta":{"security":"R"}}"#,
            r#"{"resourceType":"Patient","id":"p","meta":"x"}"#,
        ] {
            let v = verdict(&rules, bad);
            let m = v.decided_by().expect(bad);
            assert_eq!(
                (&*m.rule, m.action),
                (FAIL_CLOSED, Action::Segregate),
                "{bad}"
            );
            assert!(
                m.why.starts_with("rule `r` cannot evaluate it: "),
                "{}",
                m.why
            );
        }
    }

    #[test]
    fn rules_that_make_no_sense_do_not_compile() {
        for (bad, says) in [
            ("action = \"label\"\n", "needs add_labels"),
            ("action = \"redact\"\n", "needs paths"),
            (
                "action = \"deny\"\nadd_labels = [\"R\"]\n",
                "nothing to deny",
            ),
            (
                "action = \"segregate\"\npaths = [\"name\"]\n",
                "nothing to segregate",
            ),
            (
                "action = \"deny\"\ntypes = [\"Patients\"]\n",
                "not a FHIR resource type",
            ),
            (
                "action = \"deny\"\nlabels = [\"RESTRICTED\"]\n",
                "system|code",
            ),
            (
                "action = \"deny\"\nlabels = [\"R\"]\ncompartment = \"encounter\"\n",
                "compartment needs action = \"segregate\" (not deny)",
            ),
            (
                "action = \"segregate\"\ncompartment = \"encounter\"\n",
                "give it labels or codes",
            ),
        ] {
            let source =
                PolicySource::parse("t", &format!("[[rule]]\nname = \"x\"\n{bad}"), None).unwrap();
            let e = RuleSet::compile(&source).unwrap_err();
            assert!(e.contains(says) && e.starts_with("rule `x`: "), "{e}");
        }
    }

    #[test]
    fn tables_without_raw_json_name_resource_types() {
        let compile = |text: &str| RuleSet::compile(&PolicySource::parse("t", text, None).unwrap());
        let rules =
            compile("[tables.Patient]\nraw = false\n[tables.Observation]\nraw = true\n").unwrap();
        assert!(rules.omits_raw("Patient"));
        assert!(!rules.omits_raw("Observation") && !rules.omits_raw("Condition"));
        let e = compile("[tables.patient]\nraw = false\n").unwrap_err();
        assert!(
            e.contains("[tables.patient]") && e.contains("e.g. Patient"),
            "{e}"
        );
        let e = compile(
            "[consent]\ntable = \"consent\"\npurpose = \"HRESCH\"\n[tables.Consent]\nraw = false\n\
             [[rule]]\nname = \"c\"\naction = \"deny\"\nconsent = true\n",
        )
        .unwrap_err();
        assert!(e.contains("without their provisions"), "{e}");
        let e = PolicySource::parse("t", "[tables.Patient]\nrow = false\n", None).unwrap_err();
        assert!(e.message.contains("row"), "{e}");
    }

    #[test]
    fn a_table_elements_list_subsets_what_the_main_table_gets_and_says_what_went() {
        let rules = rules(
            "[tables.Patient]\nelements = [\"gender\", \"birthDate\", \"deceased[x]\"]\n\
             [[rule]]\nname = \"restricted\"\naction = \"segregate\"\nlabels = [\"R\"]\n\
             [[rule]]\nname = \"names\"\naction = \"redact\"\npaths = [\"name\"]\n",
        );
        assert_eq!(
            rules
                .elements("Patient")
                .unwrap()
                .names()
                .collect::<Vec<_>>(),
            ["gender", "birthDate", "deceased"]
        );
        assert!(rules.elements("Observation").is_none());
        let full = r#"{"resourceType":"Patient","id":"p","name":[{"family":"Doe"}],"gender":"female","deceasedBoolean":false,"address":[{"city":"X"}]}"#;
        let v = verdict(&rules, full);
        assert_eq!(v.outcome(), Action::Redact);
        let last = v.matched.last().unwrap();
        assert_eq!(&*last.rule, "tables.Patient.elements");
        assert_eq!(last.why, "not in [tables.Patient] elements: name, address");
        assert!(v.edits.subset.is_some());
        // Nothing to remove: kept as it is.
        let v = verdict(
            &rules,
            r#"{"resourceType":"Patient","id":"p","gender":"female"}"#,
        );
        assert_eq!((v.outcome(), v.edits.is_empty()), (Action::Allow, true));
        // Segregated rows keep the whole resource: the list is the main table's.
        let v = verdict(
            &rules,
            r#"{"resourceType":"Patient","id":"p","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"name":[{"family":"Doe"}]}"#,
        );
        assert_eq!(v.outcome(), Action::Segregate);
        assert!(v.edits.subset.is_none());
        let e = RuleSet::compile(
            &PolicySource::parse(
                "t",
                "[tables.Patient]\nelements = [\"name.family\"]\n",
                None,
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(
            e.starts_with("[tables.Patient]: `name.family` is not a root element"),
            "{e}"
        );
    }

    #[test]
    fn element_names_are_checked_against_the_types_r4_and_r5_definitions() {
        let compile = |text: &str| RuleSet::compile(&PolicySource::parse("t", text, None).unwrap());
        // R4 and R5 names, a choice with or without [x]: all pass.
        compile(
            "[tables.Patient]\nelements = [\"gender\", \"deceased\", \"multipleBirth[x]\"]\n\
             [tables.Encounter]\nelements = [\"period\", \"actualPeriod\"]\n\
             [[rule]]\nname = \"n\"\naction = \"redact\"\npaths = [\"name\", \"address.line\"]\n\
             [[rule]]\nname = \"t\"\naction = \"redact\"\ntypes = [\"Patient\", \"Practitioner\"]\npaths = [\"birthDate\"]\n",
        )
        .unwrap();
        let e = compile("[tables.Patient]\nelements = [\"gendr\"]\n").unwrap_err();
        assert_eq!(
            e,
            "[tables.Patient]: elements: `gendr` is not an element of Patient in FHIR R4 or R5 \
             (did you mean `gender`?)"
        );
        // `gender[x]` names a choice Patient does not have.
        let e = compile("[tables.Patient]\nelements = [\"gender[x]\"]\n").unwrap_err();
        assert!(
            e.contains("`gender[x]` is not an element of Patient"),
            "{e}"
        );
        let e = compile(
            "[[rule]]\nname = \"t\"\naction = \"redact\"\ntypes = [\"Observation\"]\npaths = [\"birthDate\"]\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "rule `t`: paths: `birthDate`: `birthDate` is not an element of Observation"
            ),
            "{e}"
        );
        let code_rule = "[[rule]]\nname = \"c\"\naction = \"deny\"\ncodes = [\"cms-bfd-samhsa\"]\n";
        compile(&format!(
            "[code_paths]\nClaim = [\"diagnosis.diagnosisCodeableConcept\"]\n{code_rule}"
        ))
        .unwrap();
        let e = compile(&format!("[code_paths]\nCondition = [\"cod\"]\n{code_rule}")).unwrap_err();
        assert_eq!(
            e,
            "[code_paths] Condition: `cod`: `cod` is not an element of Condition in FHIR R4 or R5 \
             (did you mean `code`?)"
        );
        let e = compile(&format!(
            "[code_paths]\ncondition = [\"code\"]\n{code_rule}"
        ))
        .unwrap_err();
        assert!(e.contains("not a FHIR resource type"), "{e}");
        let e = compile(&format!(
            "[code_paths]\nCondition = [\"code..coding\"]\n{code_rule}"
        ))
        .unwrap_err();
        assert!(e.contains("is not an element path"), "{e}");
        let e = compile("[[rule]]\nname = \"u\"\naction = \"redact\"\npaths = [\"adress.line\"]\n")
            .unwrap_err();
        assert!(
            e.contains("`adress` is not an element of any resource type in FHIR R4 or R5 (did you mean `address`?)"),
            "{e}"
        );
    }

    #[test]
    fn decisions_carry_the_changed_json_and_the_rule() {
        let rules = rules(
            "[[rule]]\nname = \"names\"\naction = \"redact\"\npaths = [\"name\"]\n\
             [[rule]]\nname = \"sud\"\naction = \"segregate\"\ncodes = [\"sud-snomed\"]\nadd_labels = [\"42CFRPart2\"]\n\
             [[rule]]\nname = \"no-claims\"\naction = \"deny\"\ntypes = [\"Claim\"]\n",
        );
        let arena = Bump::new();
        let decide = |text: &str| {
            let json = Json::parse(text, &arena).unwrap();
            let kind = tree::member(&json, "resourceType")
                .and_then(tree::string)
                .unwrap()
                .to_owned();
            rules.decide(
                &json,
                &Subject {
                    resource_type: &kind,
                    id: "x",
                    last_updated: None,
                },
            )
        };
        assert_eq!(
            decide(r#"{"resourceType":"Claim","id":"x"}"#),
            Decision::Filter {
                reason: "no-claims".into()
            }
        );
        assert_eq!(
            decide(r#"{"resourceType":"Encounter","id":"x"}"#),
            Decision::Keep
        );
        let Decision::Change { json, by } =
            decide(r#"{"resourceType":"Patient","id":"x","name":[{"family":"X"}]}"#)
        else {
            panic!("redacted")
        };
        assert_eq!(&*by, "names");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value.get("name").is_none());
        assert_eq!(value["meta"]["security"][0]["code"], "REDACTED");
        let Decision::Segregate { json, by } = decide(
            r#"{"resourceType":"Condition","id":"x","code":{"coding":[{"system":"http://snomed.info/sct","code":"7200002"}]}}"#,
        ) else {
            panic!("segregated")
        };
        assert_eq!(&*by, "sud");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["meta"]["security"][0]["code"], "42CFRPart2");
        assert_eq!(value["meta"]["tag"][0]["system"], edit::POLICY_RULE_TAG);
        assert_eq!(value["meta"]["tag"][0]["code"], "sud");
    }
}
