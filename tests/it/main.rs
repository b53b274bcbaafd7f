//! Integration tests: one binary, a module per area (see STYLE.md).

mod audit;
mod bulk_server;
mod codes;
mod common;
mod correctness;
mod export;
mod fhir_server;
mod hl7v2;
mod incremental;
mod load;
mod policy;
mod s3;
mod sof;
mod status;
mod sync;
mod tx;
mod validate;
mod views;
mod worm;
