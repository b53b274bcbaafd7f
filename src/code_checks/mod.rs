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

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bumpalo::Bump;
use chrono::Utc;

use crate::terminology::{
    Binding, BindingStrength, Checker, ConceptMapLoader, Curation, Finding, Metrics, ResourceRef,
    Target, Terminology, TerminologyError, ValueSetLoader,
};
use crate::view::Json;

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
}

/// The job's compiled terminology.
#[derive(Debug)]
pub struct CodeChecks {
    terminology: Terminology,
    /// What the manifest records of where the terminology came from.
    sources: Vec<String>,
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
        Ok(CodeChecks {
            terminology,
            sources,
        })
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
        }
    }
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
}

impl<'t> ChunkChecker<'t> {
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
        let concepts = extract::check_resource(
            &mut self.checker,
            resource,
            arena,
            resource_type,
            &mut findings,
            &mut added,
        );
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

    pub fn finish(self) -> ChunkCodes {
        ChunkCodes {
            metrics: self.checker.into_metrics(),
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
