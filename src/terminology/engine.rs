//! The job's compiled terminology and the per-thread checker that runs it.
//!
//! ```text
//! ValueSetLoader ─build─▶ ValueSets ─┐
//! ConceptMapLoader ─build─▶ ConceptMaps ─┼─ TerminologyBuilder::build ─▶ Terminology (once per job, shared)
//! [Binding] ─────────────────────────┘                                       │ checker()
//!                                                                            ▼
//!   Concept / Quantity (borrowed from the parsed resource) ──▶ Checker (one per thread)
//!        ──▶ Finding*  (into the caller's Vec)      ──▶ Curation::record, `_code_issues`
//!        ──▶ &Target*  (codings to add)              ──▶ the resource's codings
//!                       Metrics (merged per job)     ──▶ the manifest
//! ```
//!
//! A clean concept allocates nothing: systems are hash hits (or verdicts
//! cached per thread the first time a system is seen), code checks are
//! byte scans, membership is two hash lookups, and findings go into a `Vec`
//! that stays empty.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use super::binding::{Binding, Bindings};
use super::checks;
use super::conceptmap::{ConceptMaps, Target};
use super::error::TerminologyError;
use super::problem::{Problem, ProblemKind};
use super::systems::{SystemTable, SystemVerdict};
use super::valueset::{Membership, ValueSets};

/// One coding as the resource has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coding<'a> {
    pub system: Option<&'a str>,
    pub code: Option<&'a str>,
    pub display: Option<&'a str>,
}

impl<'a> Coding<'a> {
    pub fn new(system: &'a str, code: &'a str) -> Self {
        Self {
            system: Some(system),
            code: Some(code),
            display: None,
        }
    }
}

/// A CodeableConcept (or a lone Coding: one element) and where it is:
/// `path` is the element in the resource (`Observation.code`,
/// `Observation.component[1].code`); a coding's own path is
/// `path.coding[i]`.
///
/// The slice may be a scratch buffer the caller reuses: findings borrow the
/// strings (`'a`), not the slice (`'c`).
#[derive(Debug, Clone, Copy)]
pub struct Concept<'c, 'a> {
    pub path: &'a str,
    pub codings: &'c [Coding<'a>],
}

/// A Quantity's unit code and system, and where it is (`Observation.valueQuantity`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity<'a> {
    pub path: &'a str,
    pub system: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// A problem and the coding it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding<'a> {
    pub path: &'a str,
    /// The coding's index in the concept; `None` for a quantity.
    pub index: Option<usize>,
    pub coding: Coding<'a>,
    pub problem: Problem<'a>,
}

impl Finding<'_> {
    /// Where, as a FHIR path: `Observation.code.coding[0]`.
    pub fn location(&self) -> Location<'_> {
        Location {
            path: self.path,
            index: self.index,
        }
    }
}

/// A finding's path, displayed without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    path: &'a str,
    index: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}.coding[{i}]", self.path),
            None => f.write_str(self.path),
        }
    }
}

impl fmt::Display for Finding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let system = self.coding.system.unwrap_or("");
        let code = self.coding.code.unwrap_or("");
        write!(f, "{} `{system}|{code}`: {}", self.location(), self.problem)
    }
}

/// Everything a job checks codes against, compiled once.
#[derive(Debug, Clone)]
pub struct Terminology {
    systems: SystemTable,
    value_sets: ValueSets,
    maps: ConceptMaps,
    bindings: Bindings,
}

/// Configuration of a [`Terminology`]; [`Self::build`] validates it.
#[derive(Debug, Clone, Default)]
pub struct TerminologyBuilder {
    value_sets: ValueSets,
    maps: ConceptMaps,
    bindings: Vec<Binding>,
    known: Vec<String>,
}

impl TerminologyBuilder {
    pub fn with_value_sets(mut self, value_sets: ValueSets) -> Self {
        self.value_sets = value_sets;
        self
    }

    pub fn with_concept_maps(mut self, maps: ConceptMaps) -> Self {
        self.maps = maps;
        self
    }

    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    pub fn with_bindings(mut self, bindings: impl IntoIterator<Item = Binding>) -> Self {
        self.bindings.extend(bindings);
        self
    }

    /// A system this job treats as known (a local system on purpose).
    pub fn with_known_system(mut self, uri: impl Into<String>) -> Self {
        self.known.push(uri.into());
        self
    }

    /// Fails when a binding names a value set that is not loaded.
    pub fn build(self) -> Result<Terminology, TerminologyError> {
        let bindings = Bindings::compile(&self.bindings, &self.value_sets)?;
        let mut systems = SystemTable::new();
        for uri in self.value_sets.systems().chain(self.maps.target_systems()) {
            systems.add_known(uri);
        }
        for uri in &self.known {
            systems.add_known(uri);
        }
        Ok(Terminology {
            systems,
            value_sets: self.value_sets,
            maps: self.maps,
            bindings,
        })
    }
}

impl Terminology {
    pub fn builder() -> TerminologyBuilder {
        TerminologyBuilder::default()
    }

    /// A checker for one thread.
    pub fn checker(&self) -> Checker<'_> {
        Checker {
            term: self,
            cache: HashMap::new(),
            metrics: Metrics::for_maps(self.maps.maps().len()),
        }
    }

    pub fn value_sets(&self) -> &ValueSets {
        &self.value_sets
    }

    pub fn concept_maps(&self) -> &ConceptMaps {
        &self.maps
    }

    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// The verdict on one system URI (for `curation list` and tooling).
    pub fn classify_system(&self, system: &str) -> SystemVerdict {
        self.systems.classify(system)
    }
}

/// Distinct systems whose verdict a checker remembers; past this, misses
/// are classified every time (a hostile input cannot grow memory).
const CACHE_LIMIT: usize = 4096;

/// Runs the checks of one thread and counts what it did.
#[derive(Debug)]
pub struct Checker<'t> {
    term: &'t Terminology,
    cache: HashMap<Box<str>, SystemVerdict>,
    metrics: Metrics,
}

impl<'t> Checker<'t> {
    fn verdict(&mut self, system: &str) -> SystemVerdict {
        if let Some(rules) = self.term.systems.exact(system) {
            return SystemVerdict::Known(rules);
        }
        if let Some(v) = self.cache.get(system) {
            return *v;
        }
        let v = self.term.systems.classify(system);
        if self.cache.len() < CACHE_LIMIT {
            self.cache.insert(system.into(), v);
        }
        v
    }

    /// Checks every coding of `concept`, and its binding if its element has
    /// one; appends what is wrong to `findings`.
    ///
    /// An unknown system, or a mapped local code without a mapping, is a
    /// problem only when no coding of the concept is in a known system: a
    /// local code beside a standard one hides nothing from a query.
    pub fn check_concept<'a>(&mut self, concept: &Concept<'_, 'a>, findings: &mut Vec<Finding<'a>>)
    where
        't: 'a,
    {
        self.metrics.concepts += 1;
        // Needed only for a coding in an unknown system: computed then.
        let mut has_standard = None;
        let start = findings.len();
        for (i, coding) in concept.codings.iter().enumerate() {
            self.metrics.codings += 1;
            let mut push = |problem| {
                findings.push(Finding {
                    path: concept.path,
                    index: Some(i),
                    coding: *coding,
                    problem,
                })
            };
            let (system, code) = (present(coding.system), present(coding.code));
            let (system, code) = match (system, code) {
                (None, None) => continue,
                (Some(_), None) => {
                    push(Problem::NoCode);
                    continue;
                }
                (None, Some(_)) => {
                    push(Problem::NoSystem);
                    continue;
                }
                (Some(s), Some(c)) => (s, c),
            };
            let verdict = self.verdict(system);
            if verdict == SystemVerdict::Unknown && has_standard.is_none() {
                has_standard = Some(self.has_standard(concept.codings));
            }
            match verdict {
                SystemVerdict::Misspelt { fix, spelling, .. } => push(Problem::MisspeltSystem {
                    system,
                    fix: fix.apply(system),
                    spelling,
                }),
                SystemVerdict::Unknown if has_standard == Some(true) => {}
                SystemVerdict::Unknown if self.term.maps.is_source_system(system) => {
                    if self.term.maps.targets(system, code).is_empty() {
                        push(Problem::NoMapping { system });
                    }
                }
                SystemVerdict::Unknown => push(Problem::UnknownSystem { system }),
                SystemVerdict::Known(_) => {}
            }
            if let Err(e) = checks::check(verdict.rules(), code) {
                push(Problem::Code(e));
            }
        }
        self.check_bindings(concept, findings);
        self.count(&findings[start..]);
    }

    /// True when some coding has a code and a known system.
    fn has_standard(&mut self, codings: &[Coding<'_>]) -> bool {
        codings.iter().any(|c| {
            present(c.code).is_some()
                && present(c.system)
                    .is_some_and(|s| matches!(self.verdict(s), SystemVerdict::Known(_)))
        })
    }

    fn check_bindings<'a>(&mut self, concept: &Concept<'_, 'a>, findings: &mut Vec<Finding<'a>>)
    where
        't: 'a,
    {
        let term = self.term;
        for bound in term.bindings.lookup(concept.path) {
            let value_set = term.value_sets.by_id(bound.value_set);
            let mut coded = false;
            let mut not_checkable = false;
            let mut member = false;
            for coding in concept.codings {
                let (Some(system), Some(code)) = (present(coding.system), present(coding.code))
                else {
                    continue;
                };
                coded = true;
                match value_set.membership(system, code) {
                    Membership::Member | Membership::InWholeSystem => member = true,
                    Membership::NotCheckable(_) => not_checkable = true,
                    Membership::NotMember => {}
                }
            }
            if !coded {
                continue;
            }
            self.metrics.bindings_checked += 1;
            if member {
                continue;
            }
            if not_checkable {
                self.metrics.bindings_not_checkable += 1;
                continue;
            }
            for (i, coding) in concept.codings.iter().enumerate() {
                if present(coding.system).is_some() && present(coding.code).is_some() {
                    findings.push(Finding {
                        path: concept.path,
                        index: Some(i),
                        coding: *coding,
                        problem: Problem::NotInValueSet {
                            value_set: &value_set.url,
                            strength: bound.strength,
                        },
                    });
                }
            }
        }
    }

    /// Checks a quantity's unit code (UCUM syntax when its system is UCUM's).
    pub fn check_quantity<'a>(&mut self, quantity: &Quantity<'a>, findings: &mut Vec<Finding<'a>>)
    where
        't: 'a,
    {
        let Some(code) = present(quantity.code) else {
            return;
        };
        self.metrics.quantities += 1;
        let coding = Coding {
            system: quantity.system,
            code: quantity.code,
            display: None,
        };
        let start = findings.len();
        let mut push = |problem| {
            findings.push(Finding {
                path: quantity.path,
                index: None,
                coding,
                problem,
            })
        };
        let Some(system) = present(quantity.system) else {
            push(Problem::NoSystem);
            self.count(&findings[start..]);
            return;
        };
        let verdict = self.verdict(system);
        match verdict {
            SystemVerdict::Misspelt { fix, spelling, .. } => push(Problem::MisspeltSystem {
                system,
                fix: fix.apply(system),
                spelling,
            }),
            SystemVerdict::Unknown => push(Problem::UnknownSystem { system }),
            SystemVerdict::Known(_) => {}
        }
        if let Err(e) = checks::check(verdict.rules(), code) {
            push(Problem::Code(e));
        }
        self.count(&findings[start..]);
    }

    /// The codings to add to `concept` from the job's concept maps: targets
    /// of its codings that the concept does not already hold, each once.
    /// Appends to `added` and returns how many; counted per map.
    pub fn map_concept(&mut self, concept: &Concept<'_, '_>, added: &mut Vec<&'t Target>) -> usize {
        let maps = &self.term.maps;
        if maps.is_empty() {
            return 0;
        }
        let start = added.len();
        for coding in concept.codings {
            let (Some(system), Some(code)) = (present(coding.system), present(coding.code)) else {
                continue;
            };
            for target in maps.targets(system, code) {
                let held = concept
                    .codings
                    .iter()
                    .any(|c| c.system == Some(&*target.system) && c.code == Some(&*target.code));
                let twice = added[start..]
                    .iter()
                    .any(|t| t.system == target.system && t.code == target.code);
                if !held && !twice {
                    added.push(target);
                    self.metrics.mappings_applied += 1;
                    if let Some(n) = self.metrics.mappings_by_map.get_mut(target.map.0 as usize) {
                        *n += 1;
                    }
                }
            }
        }
        added.len() - start
    }

    fn count(&mut self, findings: &[Finding<'_>]) {
        for f in findings {
            self.metrics.problems[f.problem.kind().index()] += 1;
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The terminology this checker runs.
    pub fn terminology(&self) -> &'t Terminology {
        self.term
    }

    pub fn into_metrics(self) -> Metrics {
        self.metrics
    }
}

fn present(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// What a checker did; [`Metrics::merge`] adds the threads of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub concepts: u64,
    pub codings: u64,
    pub quantities: u64,
    /// Findings by [`ProblemKind::index`].
    pub problems: [u64; ProblemKind::ALL.len()],
    pub bindings_checked: u64,
    /// Bindings where no coding was a member and some could not be checked.
    pub bindings_not_checkable: u64,
    pub mappings_applied: u64,
    /// Added codings by [`MapId`](super::conceptmap::MapId).
    pub mappings_by_map: Vec<u64>,
    /// Codings a terminology server judged (from its answers or their cache).
    pub server_checked: u64,
    /// Codings left unverified: the server did not answer.
    pub server_unverified: u64,
}

impl Metrics {
    fn for_maps(maps: usize) -> Self {
        Self {
            mappings_by_map: vec![0; maps],
            ..Self::default()
        }
    }

    pub fn problems_of(&self, kind: ProblemKind) -> u64 {
        self.problems[kind.index()]
    }

    pub fn merge(&mut self, other: &Metrics) {
        self.concepts += other.concepts;
        self.codings += other.codings;
        self.quantities += other.quantities;
        for (a, b) in self.problems.iter_mut().zip(other.problems) {
            *a += b;
        }
        self.bindings_checked += other.bindings_checked;
        self.bindings_not_checkable += other.bindings_not_checkable;
        self.mappings_applied += other.mappings_applied;
        self.server_checked += other.server_checked;
        self.server_unverified += other.server_unverified;
        if self.mappings_by_map.len() < other.mappings_by_map.len() {
            self.mappings_by_map.resize(other.mappings_by_map.len(), 0);
        }
        for (a, b) in self.mappings_by_map.iter_mut().zip(&other.mappings_by_map) {
            *a += b;
        }
    }

    /// For the manifest: problems by name, mappings by map URL (or file).
    pub fn report(&self, term: &Terminology) -> MetricsReport {
        let problems = ProblemKind::ALL
            .into_iter()
            .filter(|k| self.problems[k.index()] > 0)
            .map(|k| (k.as_str(), self.problems[k.index()]))
            .collect();
        let mut mappings_by_map = BTreeMap::new();
        for (info, &n) in term.maps.maps().iter().zip(&self.mappings_by_map) {
            if n > 0 {
                let name = info
                    .url
                    .as_deref()
                    .map_or_else(|| info.origin.to_string(), str::to_string);
                *mappings_by_map.entry(name).or_insert(0) += n;
            }
        }
        MetricsReport {
            concepts: self.concepts,
            codings: self.codings,
            quantities: self.quantities,
            problems,
            bindings_checked: self.bindings_checked,
            bindings_not_checkable: self.bindings_not_checkable,
            mappings_applied: self.mappings_applied,
            mappings_by_map,
        }
    }
}

/// [`Metrics`] with names, as the manifest stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsReport {
    pub concepts: u64,
    pub codings: u64,
    pub quantities: u64,
    pub problems: BTreeMap<&'static str, u64>,
    pub bindings_checked: u64,
    pub bindings_not_checkable: u64,
    pub mappings_applied: u64,
    pub mappings_by_map: BTreeMap<String, u64>,
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
