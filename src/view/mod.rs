//! SQL-on-FHIR v2 ViewDefinitions: which columns a table gets from each
//! resource.
//!
//! In: a ViewDefinition (JSON) and resources. Out: rows of [`Cell`]s that
//! borrow from the resource, appended to Arrow builders ([`ViewBuilder`]) or
//! turned into JSON [`Row`]s. A view is compiled once ([`CompiledView::compile`]:
//! every FHIRPath parsed, constants resolved, unionAll shapes checked) and then
//! run per resource ([`CompiledView::rows`]). Nothing here does I/O.

pub mod arrow;
mod definition;
pub mod fhirpath;
pub mod json;
mod run;
mod set;

pub use arrow::{PickedRows, ViewArrays, ViewBuilder};
pub use definition::{ColumnSpec, CompiledView, ViewError};
pub use json::Json;
pub use run::{Cell, CellRow, Row};
pub use set::{ViewSet, ViewSetError};

impl CompiledView {
    /// Arrow fields of this view's columns (companion columns included).
    pub fn arrow_fields(&self) -> Vec<deltalake::arrow::datatypes::Field> {
        self.columns.iter().flat_map(arrow::fields).collect()
    }
}
