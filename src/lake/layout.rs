//! The one description of the columns of the tables fhirlake writes rows to.
//!
//! Two shapes share the same key and lineage columns:
//!
//! ```text
//!  resource table (one per type):  id, meta_last_updated | meta_version_id, _last_updated_from, resource, _subsetted, _deleted | lineage | view columns
//!  view-rows table (own-table view): id, meta_last_updated | _row | view columns | lineage
//!  lineage:                         _job_id, _source, _line, _ingested_at
//! ```
//! Schemas, the row builders in `load`, tombstones and the own-table view
//! tables all take their column lists from here, so the order is written once.
//! View columns come after the standard ones, so adding a view is a schema
//! addition, never a rewrite. The orders are those of lakes already written
//! (a lake from before `_subsetted` gains it at its end: writes match
//! columns by name).

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Delta's timestamp type: microseconds, UTC.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The key columns opening every table.
pub const KEY_COLUMNS: [&str; 2] = ["id", "meta_last_updated"];
/// What a resource table stores of each resource besides its key.
pub const RESOURCE_COLUMNS: [&str; 7] = [
    "meta_version_id",
    "_last_updated_from",
    "resource",
    SUBSETTED_COLUMN,
    DELETED_COLUMN,
    CODE_ISSUES_COLUMN,
    VALID_COLUMN,
];
/// True when the stored resource is a subset (tagged `SUBSETTED`).
pub const SUBSETTED_COLUMN: &str = "_subsetted";
/// Lineage: which job, file and line a row came from, and when.
pub const LINEAGE_COLUMNS: [&str; 4] = ["_job_id", "_source", "_line", "_ingested_at"];
/// A view-rows table's row index within its resource.
pub const ROW_COLUMN: &str = "_row";
/// Set on history-mode tombstones (a version that records a deletion).
pub const DELETED_COLUMN: &str = "_deleted";
/// How many problems the code checks found in the row's codings (null:
/// not checked); each is a row of `_curation`.
pub const CODE_ISSUES_COLUMN: &str = "_code_issues";
/// Whether the row conforms to its profile (`--validate`; null: not
/// validated, or no profile applies); its findings are rows of `_validation`.
pub const VALID_COLUMN: &str = "_valid";

/// Per-job constants stamped on every row a job writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub job_id: String,
    /// When the job started (UTC µs).
    pub ingested_at: i64,
}

fn key_fields() -> [Field; 2] {
    [
        Field::new("id", DataType::Utf8, false),
        Field::new("meta_last_updated", utc_micros(), false),
    ]
}

/// The lineage columns every table a job writes rows to ends or carries.
pub fn lineage_fields() -> [Field; 4] {
    [
        Field::new("_job_id", DataType::Utf8, false),
        Field::new("_source", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_ingested_at", utc_micros(), false),
    ]
}

/// The shape of a table: a type's resource table or an own-table view's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableShape {
    Resource,
    ViewRows,
}

impl TableShape {
    /// Column names a view column may not take in a table of this shape.
    pub fn own_columns(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = KEY_COLUMNS.to_vec();
        match self {
            TableShape::Resource => names.extend(RESOURCE_COLUMNS),
            TableShape::ViewRows => names.push(ROW_COLUMN),
        }
        names.extend(LINEAGE_COLUMNS);
        names
    }
}

/// A table's columns: its shape's own columns plus the view's.
#[derive(Debug, Clone)]
pub struct TableLayout {
    shape: TableShape,
    schema: SchemaRef,
    /// Positions in the view's fields of those the table stores (a view
    /// column named like an own column, e.g. `id`, is not stored twice).
    view_columns: Vec<usize>,
}

impl TableLayout {
    /// A resource table whose view gives `view_fields` (empty: no view).
    pub fn resource(view_fields: &[Field]) -> Self {
        Self::new(TableShape::Resource, view_fields)
    }

    /// An own-table view's table.
    pub fn view_rows(view_fields: &[Field]) -> Self {
        Self::new(TableShape::ViewRows, view_fields)
    }

    fn new(shape: TableShape, view_fields: &[Field]) -> Self {
        let own = shape.own_columns();
        let view_columns: Vec<usize> = (0..view_fields.len())
            .filter(|&i| !own.contains(&view_fields[i].name().as_str()))
            .collect();
        let view = view_columns.iter().map(|&i| view_fields[i].clone());
        let mut fields: Vec<Field> = key_fields().to_vec();
        match shape {
            TableShape::Resource => {
                fields.extend([
                    Field::new("meta_version_id", DataType::Utf8, true),
                    // Null when meta.lastUpdated came from the resource; otherwise
                    // where the stand-in came from ("as_of", "transaction_time", ...).
                    Field::new("_last_updated_from", DataType::Utf8, true),
                    Field::new("resource", DataType::Utf8, false),
                    // A subset (`_elements`, `_summary`): never a full row's stand-in.
                    Field::new(SUBSETTED_COLUMN, DataType::Boolean, true),
                    // True on a history-mode version recording a deletion.
                    Field::new(DELETED_COLUMN, DataType::Boolean, true),
                ]);
                fields.extend(lineage_fields());
                fields.extend(view);
                // Last: lakes from before the code checks (and validation)
                // gain them at the end.
                fields.push(Field::new(CODE_ISSUES_COLUMN, DataType::Int32, true));
                fields.push(Field::new(VALID_COLUMN, DataType::Boolean, true));
            }
            TableShape::ViewRows => {
                fields.push(Field::new(ROW_COLUMN, DataType::Int64, false));
                fields.extend(view);
                fields.extend(lineage_fields());
            }
        }
        Self {
            shape,
            schema: Arc::new(Schema::new(fields)),
            view_columns,
        }
    }

    pub fn shape(&self) -> TableShape {
        self.shape
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Which of the view's columns the table stores, by position.
    pub fn view_columns(&self) -> &[usize] {
        &self.view_columns
    }

    /// The table's columns in order, given each part's arrays: `own` are the
    /// shape's own columns after the key, in [`RESOURCE_COLUMNS`] order (for
    /// a view-rows table, `_row`).
    pub fn assemble(
        &self,
        key: [ArrayRef; 2],
        own: Vec<ArrayRef>,
        lineage: [ArrayRef; 4],
        view: Vec<ArrayRef>,
    ) -> Vec<ArrayRef> {
        let mut stored: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut kept = self.view_columns.iter().peekable();
        let view_stored: Vec<ArrayRef> = view
            .into_iter()
            .enumerate()
            .filter(|(i, _)| kept.next_if_eq(&i).is_some())
            .map(|(_, array)| array)
            .collect();
        stored.extend(key);
        match self.shape {
            TableShape::Resource => {
                // The last two (`_code_issues`, `_valid`) go after the view's.
                let mut own = own;
                let checks = own.split_off(own.len() - 2);
                stored.extend(own);
                stored.extend(lineage);
                stored.extend(view_stored);
                stored.extend(checks);
            }
            TableShape::ViewRows => {
                stored.extend(own);
                stored.extend(view_stored);
                stored.extend(lineage);
            }
        }
        stored
    }
}

/// The standard columns of a resource table (no view).
pub fn resource_schema() -> SchemaRef {
    TableLayout::resource(&[]).schema().clone()
}

/// Table of rejected lines and resources (the dead-letter queue).
pub const QUARANTINE_TABLE: &str = "_quarantine";

/// Columns of the `_quarantine` table.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_sha256", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("byte_offset", DataType::Int64, false),
        Field::new("reason_code", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("resource_type", DataType::Utf8, true),
        Field::new("resource_id", DataType::Utf8, true),
        // The raw bytes exactly as received (they may not be valid UTF-8).
        Field::new("raw", DataType::Binary, false),
        Field::new("_ingested_at", utc_micros(), false),
    ]))
}

/// Builds the lineage columns of a batch, row by row.
pub struct LineageColumns {
    job_id: StringBuilder,
    source: StringBuilder,
    line: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
}

impl LineageColumns {
    /// Sized for `rows` rows, so the builders fill without regrowing.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            job_id: StringBuilder::with_capacity(rows, rows * 32),
            source: StringBuilder::with_capacity(rows, rows * 64),
            line: Int64Builder::with_capacity(rows),
            ingested_at: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
        }
    }

    pub fn push(&mut self, lineage: &Lineage, source: &str, line: u64) {
        self.job_id.append_value(&lineage.job_id);
        self.source.append_value(source);
        self.line.append_value(line as i64);
        self.ingested_at.append_value(lineage.ingested_at);
    }

    pub fn len(&self) -> usize {
        self.line.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The four lineage arrays, leaving the builders empty.
    pub fn finish(&mut self) -> [ArrayRef; 4] {
        [
            Arc::new(self.job_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.ingested_at.finish()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, Int32Array};

    fn names(schema: &SchemaRef) -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn resource_tables_keep_the_order_of_existing_lakes() {
        let view = [
            Field::new("id", DataType::Utf8, true),
            Field::new("gender", DataType::Utf8, true),
        ];
        let layout = TableLayout::resource(&view);
        assert_eq!(
            names(layout.schema()),
            [
                "id",
                "meta_last_updated",
                "meta_version_id",
                "_last_updated_from",
                "resource",
                "_subsetted",
                "_deleted",
                "_job_id",
                "_source",
                "_line",
                "_ingested_at",
                "gender",
                "_code_issues",
                "_valid"
            ]
        );
        assert_eq!(layout.view_columns(), [1]);
    }

    #[test]
    fn view_rows_tables_end_with_lineage() {
        let view = [
            Field::new("code", DataType::Utf8, true),
            Field::new("system", DataType::Utf8, true),
        ];
        let layout = TableLayout::view_rows(&view);
        assert_eq!(
            names(layout.schema()),
            [
                "id",
                "meta_last_updated",
                "_row",
                "code",
                "system",
                "_job_id",
                "_source",
                "_line",
                "_ingested_at"
            ]
        );
    }

    #[test]
    fn assemble_places_each_part_and_drops_shadowed_view_columns() {
        let int = |v: i32| Arc::new(Int32Array::from(vec![v])) as ArrayRef;
        let view = [
            Field::new("a", DataType::Int32, true),
            Field::new("id", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ];
        let layout = TableLayout::resource(&view);
        let columns = layout.assemble(
            [int(0), int(1)],
            vec![int(2), int(3), int(4), int(9), int(13), int(14), int(15)],
            [int(5), int(6), int(7), int(8)],
            vec![int(10), int(11), int(12)],
        );
        let values: Vec<i32> = columns
            .iter()
            .map(|c| c.as_any().downcast_ref::<Int32Array>().unwrap().value(0))
            .collect();
        // `_code_issues` (14) and `_valid` (15) come last.
        assert_eq!(values, [0, 1, 2, 3, 4, 9, 13, 5, 6, 7, 8, 10, 12, 14, 15]);
    }
}
