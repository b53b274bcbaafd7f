//! fhirlake: bulk-first FHIR → Delta Lake loading with row accounting.
//!
//! Stages, each a module with one job (see DESIGN.md): [`ndjson`] decodes
//! lines, [`lake`] writes Delta tables, [`ledger`] records what happened,
//! [`load`] runs a job through them, [`view`] flattens resources, [`bulk`]
//! exports from FHIR servers over [`http`] with [`auth`], [`bench`] measures,
//! [`cli`] is the command line.

pub mod auth;
pub mod bench;
pub mod bulk;
pub mod cli;
pub mod fhir;
pub mod http;
pub mod lake;
pub mod ledger;
pub mod load;
pub mod ndjson;
pub mod view;
