//! A view's output values: a [`Cell`] per column, borrowing from the
//! resource until it is converted to Arrow or JSON.

use super::definition::ColumnSpec;
use super::fhirpath::Item;
use super::kind::typed_json;

/// One output row as JSON: a value per view column (null when absent).
pub type Row = Vec<serde_json::Value>;

/// One column's value in a row, borrowing from the resource: converted to
/// Arrow or JSON only at the end, so evaluating copies no strings.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell<'a> {
    #[default]
    Null,
    One(Item<'a>),
    /// A `collection: true` column (possibly empty).
    Many(Vec<Item<'a>>),
}

impl Cell<'_> {
    /// As JSON of the column's declared type, the way a load stores it (a
    /// string column's number becomes its text, an integer column's `4.0`
    /// is `4`); a column without a type keeps the value's own JSON type.
    pub fn to_serde(&self, column: &ColumnSpec) -> serde_json::Value {
        let one = |item: &Item<'_>| match column.ty {
            Some(_) => typed_json(column.kind, item),
            None => item.to_serde(),
        };
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::One(item) => one(item),
            Cell::Many(items) => items.iter().map(one).collect(),
        }
    }
}

/// One output row: a cell per view column.
pub type CellRow<'a> = Vec<Cell<'a>>;
