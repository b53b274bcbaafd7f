//! Terminology checks and normalisation, without I/O on the hot path: codings
//! and quantity units in, findings and codings to add out.
//!
//! In: codings and Quantity unit codes the caller extracted from a parsed
//! resource ([`Coding`], [`Concept`], [`Quantity`]: borrowed strings and the
//! element's path), plus, once per job, value sets, concept maps and
//! bindings. Out: [`Finding`]s (a typed [`Problem`] with a message), the
//! [`Target`] codings a concept map adds, [`Metrics`] for the manifest, and
//! [`Curation`] records for the `_curation` table.
//!
//! ```text
//! once per job:  ValueSetLoader ─▶ ValueSets ─┐   ConceptMapLoader ─▶ ConceptMaps ─┐
//!                 (dirs, files, .tgz)         ├─ Terminology::builder() ─ bindings ─┴─▶ Terminology
//! per thread:    terminology.checker() ─▶ Checker
//! per resource:  check_concept / check_quantity ─▶ Vec<Finding> ─▶ Curation::record
//!                map_concept ─▶ Vec<&Target> (codings to add; the original stays)
//! end of job:    Checker::into_metrics ─▶ Metrics::merge ─▶ Metrics::report (manifest)
//!                Curation::merge (threads, then the stored table) ─▶ into_records (rows)
//! ```
//!
//! Pieces, one job each: [`checks`] (LOINC mod-10, SNOMED CT Verhoeff and
//! partition, RxNorm, ICD-10-CM shapes), [`ucum`] (unit grammar), [`systems`]
//! (known URIs, misspellings and their fix), [`valueset`] and [`codeset`]
//! (membership), [`binding`] (element → value set), [`conceptmap`]
//! (normalisation), [`engine`] (the checker), [`curation`] (the queue),
//! [`package`] (reading directories and FHIR `.tgz` packages), [`error`].
//!
//! Design: everything is compiled before the first resource — hash sets keyed
//! by system then code, looked up with the resource's own `&str`s — so a
//! clean coding costs a few hash lookups and byte scans and allocates
//! nothing. Findings borrow the input and the job's terminology; only a
//! curation record or example that is new allocates.
//!
//! It does not: read resources (the decode pass extracts codings and calls
//! in), ask a terminology server, check whether a code exists in a code
//! system's release (only shapes and check digits, and value sets that are
//! loaded), honour value set versions in `include.version`, or validate
//! profiles. This module refers to itself only through `super::`/`self::`,
//! so it builds alone (scratch crate).

pub mod binding;
pub mod checks;
pub mod codeset;
pub mod conceptmap;
pub mod curation;
pub mod engine;
pub mod error;
pub mod package;
pub mod problem;
pub mod systems;
pub mod ucum;
pub mod valueset;

pub use binding::{Binding, BindingStrength, Bindings};
pub use checks::CodeRules;
pub use conceptmap::{ConceptMapLoader, ConceptMaps, Equivalence, Target};
pub use curation::{Curation, CurationRecord, Example, ResourceRef};
pub use engine::{
    Checker, Coding, Concept, Finding, Metrics, MetricsReport, Quantity, Terminology,
    TerminologyBuilder,
};
pub use error::{Origin, TerminologyError};
pub use problem::{Problem, ProblemKind};
pub use systems::{SystemTable, SystemVerdict};
pub use valueset::{Membership, ValueSet, ValueSetLoader, ValueSets};

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod testdata;
