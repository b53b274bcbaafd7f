//! SQL-on-FHIR v2 ViewDefinitions: which columns a table gets from each
//! resource.
//!
//! In: a ViewDefinition (JSON) and resources. Out: rows of typed JSON values,
//! one [`Row`] per output row. A view is compiled once ([`CompiledView::compile`]:
//! every FHIRPath parsed, constants resolved, unionAll shapes checked) and then
//! run per resource ([`CompiledView::rows`]). Nothing here does I/O.

pub mod arrow;
mod definition;
pub mod fhirpath;
pub mod json;
mod run;
mod set;

pub use definition::{ColumnSpec, CompiledView, ViewError};
pub use json::Json;
pub use run::Row;
pub use set::{ViewSet, ViewSetError};

impl CompiledView {
    /// Arrow fields of this view's columns (companion columns included).
    pub fn arrow_fields(&self) -> Vec<deltalake::arrow::datatypes::Field> {
        self.columns.iter().flat_map(arrow::fields).collect()
    }

    /// Arrow arrays for `rows`, in `arrow_fields` order.
    pub fn arrow_arrays(&self, rows: &[&Row]) -> Vec<deltalake::arrow::array::ArrayRef> {
        let mut out = Vec::new();
        for (i, column) in self.columns.iter().enumerate() {
            let values: Vec<&serde_json::Value> = rows.iter().map(|r| &r[i]).collect();
            out.extend(arrow::arrays(column, &values));
        }
        out
    }
}
