//! The ways into the lake. Each source turns what it reads into
//! [`crate::load::Input`]s — byte streams of FHIR NDJSON plus what the ledger
//! must record about them — and hands them to the one load job
//! ([`crate::load::Job`]); none commits on its own.
//!
//! - [`files`]: local and object-store NDJSON (`fhirlake load`).
//! - [`bulk`]: the Bulk Data `$export` client (`fhirlake export`).
//! - [`sync`]: REST incremental sync and conditional re-reads (`fhirlake sync`).

pub mod bulk;
pub mod files;
pub mod sync;

pub use files::{DiscoverError, discover};
