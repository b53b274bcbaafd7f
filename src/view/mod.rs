//! SQL-on-FHIR v2 ViewDefinitions: which columns a table gets from each
//! resource.
//!
//! In: a ViewDefinition (JSON) and resources. Out: rows of typed JSON values,
//! one [`Row`] per output row. A view is compiled once ([`CompiledView::compile`]:
//! every FHIRPath parsed, constants resolved, unionAll shapes checked) and then
//! run per resource ([`CompiledView::rows`]). Nothing here does I/O.

mod definition;
pub mod fhirpath;
pub mod json;
mod run;

pub use definition::{ColumnSpec, CompiledView, ViewError};
pub use json::Json;
pub use run::Row;
