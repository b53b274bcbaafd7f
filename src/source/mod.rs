//! The ways into the lake. Each source turns what it reads into
//! [`crate::load::Input`]s — byte streams of FHIR NDJSON plus what the ledger
//! must record about them — and hands them to the one load job
//! ([`crate::load::Job`]); none commits on its own.
//!
//! - [`files`]: local and object-store NDJSON (`fhirlake load`).
//! - [`bulk`]: the Bulk Data `$export` client (`fhirlake export`).
//! - [`sync`]: REST incremental sync and conditional re-reads (`fhirlake sync`).
//! - [`hl7v2`]: HL7 v2 files and an MLLP listener (`fhirlake hl7v2`).
//! - [`reapply`]: the lake's own rows under a new policy (`fhirlake policy apply`).

pub mod bulk;
pub mod files;
pub mod hl7v2;
pub mod reapply;
pub mod sync;

pub use files::{DiscoverError, discover};
