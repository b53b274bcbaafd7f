//! Code checks on the load path: the job's [`Terminology`], run on every
//! resource the decoder parsed, between the policy stage and the views.
//!
//! ```text
//! once per job:   CodeCheckOptions ─load─▶ CodeChecks (value sets, concept maps, bindings)
//! per chunk:      CodeChecks::checker ─▶ ChunkChecker
//! per resource:   ChunkChecker::check(tree) ─▶ issues count (`_code_issues`), curation records,
//!                                             the resource with mapped codings added (or not)
//! per chunk out:  ChunkCodes (metrics + curation) ─▶ merged by the job ─▶ manifest, `_curation`
//! ```
//!
//! Which elements are checked: the members [`CHECKED_MEMBERS`] of every
//! resource and of each `component` (Observation), whether they hold a
//! CodeableConcept, a Coding, or arrays of either; and the Quantity members
//! [`QUANTITY_MEMBERS`]. A resource the policy segregates or filters is
//! never checked: its codes must not reach the curation queue, which lives
//! in the main lake.

mod additions;
mod extract;
pub mod table;
pub mod tx;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bumpalo::Bump;
use chrono::Utc;

use crate::terminology::{
    Binding, BindingStrength, Checker, Coding, ConceptMapLoader, Curation, Finding, Metrics,
    Problem, ProblemKind, ResourceRef, Target, Terminology, TerminologyError, ValueSetLoader,
};
use crate::view::Json;
use extract::{Asked, Outputs};
use tx::{TerminologyServer, TxOptions, Verdict};

pub use extract::{CHECKED_MEMBERS, QUANTITY_MEMBERS};
pub use table::{CURATION_TABLE, curation_schema};

/// How many example resources a curation row keeps.
pub const CURATION_EXAMPLES: usize = 5;

/// Where a job's terminology comes from (`--valuesets`, `--concept-maps`, `--binding`).
#[derive(Debug, Clone, Default)]
pub struct CodeCheckOptions {
    /// Directories, `.tgz` packages or JSON files of ValueSets.
    pub value_sets: Vec<PathBuf>,
    /// Directories or JSON files of ConceptMaps.
    pub concept_maps: Vec<PathBuf>,
    /// `ELEMENT=VALUESET_URL` (`Observation.code=http://...`): codings of
    /// that element must be in that loaded value set.
    pub bindings: Vec<String>,
    /// A terminology server to ask whether codes exist (`--tx`).
    pub server: Option<TxOptions>,
    /// Members checked besides [`CHECKED_MEMBERS`] (`--code-element
    /// bodySite`): CodeableConcepts or Codings, on the resource and its
    /// components.
    pub extra_members: Vec<String>,
}

/// The job's compiled terminology.
#[derive(Debug)]
pub struct CodeChecks {
    terminology: Terminology,
    /// What the manifest records of where the terminology came from.
    sources: Vec<String>,
    server: Option<TerminologyServer>,
    /// Checked members besides the defaults.
    extra_members: Vec<Box<str>>,
}

impl CodeChecks {
    /// Shapes, check digits, known systems and UCUM units only: the default.
    pub fn standard() -> Arc<CodeChecks> {
        static STANDARD: OnceLock<Arc<CodeChecks>> = OnceLock::new();
        STANDARD
            .get_or_init(|| {
                let terminology = Terminology::builder()
                    .build()
                    .expect("no bindings: nothing to fail on");
                Arc::new(CodeChecks {
                    terminology,
                    sources: Vec::new(),
                    server: None,
                    extra_members: Vec::new(),
                })
            })
            .clone()
    }

    /// Compiles `options`; an unreadable file, a binding to a value set
    /// that is not loaded, or a malformed `--binding` is an error naming it.
    pub fn load(options: &CodeCheckOptions) -> Result<CodeChecks, TerminologyError> {
        let mut sources = Vec::new();
        let mut sets = ValueSetLoader::new();
        for source in &options.value_sets {
            let scan = sets.add_source(source)?;
            sources.push(format!(
                "value sets: {} ({} ValueSet resources)",
                source.display(),
                scan.matched
            ));
        }
        let mut maps = ConceptMapLoader::new();
        for source in &options.concept_maps {
            let scan = maps.add_source(source)?;
            sources.push(format!(
                "concept maps: {} ({} ConceptMap resources)",
                source.display(),
                scan.matched
            ));
        }
        let mut bindings = Vec::new();
        for text in &options.bindings {
            let Some((element, url)) = text.split_once('=') else {
                return Err(TerminologyError::Config(format!(
                    "--binding {text:?}: expected ELEMENT=VALUESET_URL, e.g. Observation.code=http://example.org/ValueSet/labs"
                )));
            };
            bindings.push(Binding::new(
                element.trim(),
                url.trim(),
                BindingStrength::Required,
            ));
            sources.push(format!("binding: {text}"));
        }
        let terminology = Terminology::builder()
            .with_value_sets(sets.build())
            .with_concept_maps(maps.build())
            .with_bindings(bindings)
            .build()?;
        let server = match &options.server {
            Some(tx) => {
                let server = TerminologyServer::new(tx)
                    .map_err(|e| TerminologyError::Config(e.to_string()))?;
                sources.push(format!("terminology server: {}", server.label()));
                Some(server)
            }
            None => None,
        };
        let mut extra_members: Vec<Box<str>> = Vec::new();
        for name in &options.extra_members {
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(TerminologyError::Config(format!(
                    "--code-element {name:?}: give a member name such as bodySite or interpretation"
                )));
            }
            if !CHECKED_MEMBERS.contains(&name) && !extra_members.iter().any(|m| &**m == name) {
                sources.push(format!("checked element: {name}"));
                extra_members.push(name.into());
            }
        }
        Ok(CodeChecks {
            terminology,
            sources,
            server,
            extra_members,
        })
    }

    /// The job's terminology server (`--tx`), when it has one.
    pub fn server(&self) -> Option<&TerminologyServer> {
        self.server.as_ref()
    }

    pub fn terminology(&self) -> &Terminology {
        &self.terminology
    }

    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// A checker for one chunk (its system cache lives as long).
    pub fn checker(&self) -> ChunkChecker<'_> {
        ChunkChecker {
            checks: self,
            checker: self.terminology.checker(),
            curation: Curation::new(CURATION_EXAMPLES),
            seen_at: Utc::now().timestamp_micros(),
            findings: Vec::new(),
            added: Vec::new(),
            slot: 0,
            pending: HashMap::new(),
            server_checked: 0,
            server_unverified: 0,
            server_problems: 0,
        }
    }
}

/// A coding waiting for the terminology server, and whose it is.
struct Pending {
    /// The line's place in its chunk.
    slot: usize,
    table: String,
    id: String,
    /// The concept's path; the coding's index in it.
    path: String,
    index: usize,
    display: Option<String>,
}

/// What one chunk's checks found, for the job to merge.
#[derive(Debug)]
pub struct ChunkCodes {
    pub metrics: Metrics,
    pub curation: Curation,
}

/// What checking one resource gave.
pub struct Checked {
    /// Problems found (the row's `_code_issues`).
    pub issues: u32,
    /// The resource with mapped codings added, when a concept map applied.
    pub changed: Option<String>,
}

/// Checks the resources of one chunk.
pub struct ChunkChecker<'t> {
    checks: &'t CodeChecks,
    checker: Checker<'t>,
    curation: Curation,
    seen_at: i64,
    /// Reused per resource (emptied, never shrunk).
    findings: Vec<Finding<'static>>,
    added: Vec<(usize, &'t Target)>,
    /// The place in the chunk of the line being checked.
    slot: usize,
    /// Codings no answer is known for yet, by (system, code): asked at the chunk's end.
    pending: HashMap<(String, String), Vec<Pending>>,
    server_checked: u64,
    server_unverified: u64,
    server_problems: u64,
}

impl<'t> ChunkChecker<'t> {
    /// The next resource checked is the chunk's line `slot`.
    pub fn at_line(&mut self, slot: usize) {
        self.slot = slot;
    }

    /// Checks `resource` (of `resource_type` and `id`, parsed into `arena`)
    /// and records its problems for the curation queue.
    pub fn check<'a>(
        &mut self,
        resource: &'a Json<'a>,
        arena: &'a Bump,
        resource_type: &'a str,
        id: &str,
    ) -> Checked
    where
        't: 'a,
    {
        let mut findings = reuse(std::mem::take(&mut self.findings));
        let mut added = std::mem::take(&mut self.added);
        added.clear();
        let server = self.checks.server();
        let mut asked = Vec::new();
        let concepts = extract::check_resource(
            &mut self.checker,
            resource,
            arena,
            resource_type,
            Outputs {
                findings: &mut findings,
                added: &mut added,
                asked: server.map(|s| (s, &mut asked)),
                extra_members: &self.checks.extra_members,
            },
        );
        if !asked.is_empty() {
            self.judge(&asked, arena, resource_type, id, &mut findings);
        }
        if !findings.is_empty() {
            let table = crate::fhir::table_name(resource_type);
            let resource = ResourceRef { table: &table, id };
            for finding in &findings {
                self.curation.record(finding, resource, self.seen_at);
            }
        }
        let issues = u32::try_from(findings.len()).unwrap_or(u32::MAX);
        let changed = (!added.is_empty()).then(|| {
            additions::write_with_codings(
                arena,
                resource,
                &concepts,
                &added,
                self.checks.terminology(),
            )
        });
        self.findings = reuse(findings);
        self.added = added;
        Checked { issues, changed }
    }

    /// Applies the answers known for `asked`: a code the server does not
    /// know is a finding now; one without an answer waits for the chunk's end.
    fn judge<'a>(
        &mut self,
        asked: &[Asked<'a>],
        arena: &'a Bump,
        resource_type: &str,
        id: &str,
        findings: &mut Vec<Finding<'a>>,
    ) {
        let Some(server) = self.checks.server() else {
            return;
        };
        for a in asked {
            let (system, code) = (a.coding.system.unwrap_or(""), a.coding.code.unwrap_or(""));
            match server.cached(system, code) {
                Some(Verdict::Invalid(answer)) => {
                    self.server_checked += 1;
                    self.server_problems += 1;
                    findings.push(Finding {
                        path: a.path(arena),
                        index: Some(a.index),
                        coding: a.coding,
                        problem: Problem::UnknownToServer {
                            answer: arena.alloc_str(&answer),
                        },
                    });
                }
                Some(_) => self.server_checked += 1,
                None => {
                    let key = (system.to_owned(), code.to_owned());
                    self.pending.entry(key).or_default().push(Pending {
                        slot: self.slot,
                        table: crate::fhir::table_name(resource_type),
                        id: id.to_owned(),
                        path: a.path(arena).to_owned(),
                        index: a.index,
                        display: a.coding.display.map(str::to_owned),
                    });
                }
            }
        }
    }

    /// Asks the terminology server about the chunk's codings without an
    /// answer yet (blocking the decode thread; paced and breaker-guarded)
    /// and records what it does not know; returns the problems to add to
    /// each line's `_code_issues`, by the line's place in the chunk.
    pub fn resolve_pending(&mut self) -> Vec<(usize, u32)> {
        let Some(server) = self.checks.server() else {
            return Vec::new();
        };
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending: Vec<((String, String), Vec<Pending>)> = self.pending.drain().collect();
        let keys: Vec<(String, String)> = pending.iter().map(|(k, _)| k.clone()).collect();
        let verdicts = server.resolve(&keys);
        let mut added: HashMap<usize, u32> = HashMap::new();
        for (((system, code), waiting), verdict) in pending.iter().zip(verdicts) {
            let n = waiting.len() as u64;
            let answer = match verdict {
                None => {
                    self.server_unverified += n;
                    continue;
                }
                Some(Verdict::Invalid(answer)) => answer,
                Some(_) => {
                    self.server_checked += n;
                    continue;
                }
            };
            self.server_checked += n;
            self.server_problems += n;
            for p in waiting {
                let finding = Finding {
                    path: &p.path,
                    index: Some(p.index),
                    coding: Coding {
                        system: Some(system),
                        code: Some(code),
                        display: p.display.as_deref(),
                    },
                    problem: Problem::UnknownToServer { answer: &answer },
                };
                let resource = ResourceRef {
                    table: &p.table,
                    id: &p.id,
                };
                self.curation.record(&finding, resource, self.seen_at);
                *added.entry(p.slot).or_default() += 1;
            }
        }
        added.into_iter().collect()
    }

    pub fn finish(self) -> ChunkCodes {
        let mut metrics = self.checker.into_metrics();
        metrics.problems[ProblemKind::UnknownToServer.index()] += self.server_problems;
        metrics.server_checked += self.server_checked;
        metrics.server_unverified += self.server_unverified;
        ChunkCodes {
            metrics,
            curation: self.curation,
        }
    }
}

/// An empty vector of findings of any lifetime, keeping the allocation:
/// findings borrow the resource, which lives only while it is checked.
fn reuse<'x, 'y>(mut findings: Vec<Finding<'x>>) -> Vec<Finding<'y>> {
    findings.clear();
    findings.into_iter().map(|_| unreachable!()).collect()
}

#[cfg(test)]
mod tests;
