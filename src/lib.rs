//! fhirlake: FHIR → Delta Lake loading with row accounting.
//!
//! Stages, each a module with one job (see DESIGN.md): [`source`] is the
//! ways in (files, Bulk `$export`), each turning its input into byte
//! streams for the one [`load`] job; [`ndjson`] cuts and decodes lines,
//! [`policy`] decides per resource, [`view`] flattens resources into columns,
//! [`lake`] owns every Delta write, [`ledger`] records what happened.
//! [`http`] (with [`auth`]) is the one client for FHIR servers, [`bench`]
//! generates benchmark data, [`cli`] is the command line.

pub mod audit;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod code_checks;
pub mod fhir;
pub mod hl7v2;
pub mod http;
pub mod lake;
pub mod ledger;
pub mod load;
pub mod ndjson;
pub mod policy;
pub mod source;
pub mod status;
pub mod terminology;
pub mod validation;
pub mod verify;
pub mod view;
