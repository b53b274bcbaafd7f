//! SQL-on-FHIR v2 ViewDefinitions: which columns a table gets from each
//! resource.
//!
//! In: a ViewDefinition (JSON) and resources. Out: rows of [`Cell`]s that
//! borrow from the resource, appended to Arrow builders ([`ViewBuilder`]) or
//! turned into JSON [`Row`]s. A view is compiled once ([`CompiledView::compile`]:
//! every FHIRPath parsed, constants resolved, unionAll shapes checked) and then
//! run per resource ([`CompiledView::rows`]). Nothing here does I/O.

pub mod arrow;
mod cell;
mod definition;
pub mod fhirpath;
pub mod json;
mod kind;
mod run;
pub mod runner;
mod set;

pub use arrow::{ViewArrays, ViewBuilder};
pub use cell::{Cell, CellRow, Row};
pub use definition::{ColumnSpec, CompiledView, ViewError};
pub use json::Json;
pub use set::{ViewSet, ViewSetError};

impl CompiledView {
    /// Arrow fields of this view's columns (companion columns included).
    pub fn arrow_fields(&self) -> Vec<deltalake::arrow::datatypes::Field> {
        self.columns.iter().flat_map(arrow::fields).collect()
    }

    /// Checks the view's columns can join a table whose own columns are
    /// `reserved`: none may take a reserved name (but `id`, when it is the
    /// resource id the table's `id` already holds), and no two may share a
    /// name ignoring case (Delta's rule), companions (`<date>_date`,
    /// `<dateTime>_ts`) included. Otherwise a column would vanish or the
    /// table could not be created.
    pub fn check_table_columns(&self, reserved: &[&str]) -> Result<(), ViewError> {
        let mut taken: Vec<(String, &str)> = Vec::new();
        for column in &self.columns {
            for field in arrow::fields(column) {
                let name = field.name().to_ascii_lowercase();
                if name == "id" && column.name == "id" {
                    if !matches!(column.path.trim(), "id" | "getResourceKey()") {
                        return Err(ViewError::Invalid(format!(
                            "column \"id\" (path {:?}) would be dropped: the table's id column \
                             already holds the resource id; give this column another name",
                            column.path
                        )));
                    }
                    continue;
                }
                if let Some(own) = reserved.iter().find(|r| r.eq_ignore_ascii_case(&name)) {
                    return Err(ViewError::Invalid(format!(
                        "column {:?} would take the name of the table's own column {own:?}; \
                         rename it",
                        field.name()
                    )));
                }
                if let Some((_, other)) = taken.iter().find(|(n, _)| *n == name) {
                    return Err(ViewError::Invalid(format!(
                        "columns {other:?} and {:?} both give a table column named {:?} (Delta \
                         ignores case; a date column adds <name>_date, a dateTime <name>_ts); \
                         rename one",
                        column.name,
                        field.name()
                    )));
                }
                taken.push((name, &column.name));
            }
        }
        Ok(())
    }
}
