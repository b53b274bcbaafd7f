//! Own-table views (a view named other than its type, e.g. `observation_category`):
//! 0..n rows per resource, keyed (`id`, `meta_last_updated`, `_row`).
//!
//! Commit order, before the type table's commits, so a crash is repaired by a
//! re-run (the resource then classifies new or newer again):
//! ```text
//!  delete rows of ids that got a newer version ─▶ insert-only MERGE of new rows
//! ```
//! The insert-only MERGE makes re-inserting rows that already landed a no-op.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use super::picked::PickedRows;
use crate::lake::{
    Lake, LakeError, Lineage, LineageColumns, TableLayout, delete_ids, insert_missing,
    open_or_create_table,
};
use crate::ledger::{CommitOperation, CommitRecord, TableRecord};
use crate::view::{CompiledView, ViewArrays};

/// One resource version's rows of an own-table view.
pub struct VersionRows<'a> {
    pub id: &'a str,
    pub last_updated: i64,
    /// The decoded chunk's view columns, and which of their rows are this version's.
    pub columns: &'a ViewArrays,
    pub rows: std::ops::Range<usize>,
    pub source: &'a str,
    pub line: u64,
    /// It supersedes a stored version, whose rows go first.
    pub replaces: bool,
}

/// One job's rows for an own-table view.
pub struct ViewTable {
    name: String,
    /// The type table of the view's resource.
    type_table: String,
    layout: TableLayout,
    ids: StringBuilder,
    times: TimestampMicrosecondBuilder,
    row_numbers: Int64Builder,
    rows: PickedRows,
    lineage_columns: LineageColumns,
    batches: Vec<RecordBatch>,
    /// Resources that got a newer version: their old rows go first.
    replace_ids: BTreeSet<String>,
    rows_written: u64,
    lineage: Lineage,
}

impl ViewTable {
    pub fn new(name: &str, view: Arc<CompiledView>, lineage: Lineage) -> Self {
        Self {
            name: name.to_owned(),
            type_table: crate::fhir::table_name(&view.resource),
            layout: TableLayout::view_rows(&view.arrow_fields()),
            rows: PickedRows::new(&view),
            ids: StringBuilder::new(),
            times: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            row_numbers: Int64Builder::new(),
            lineage_columns: LineageColumns::with_capacity(0),
            batches: Vec::new(),
            replace_ids: BTreeSet::new(),
            rows_written: 0,
            lineage,
        }
    }

    /// Adds a resource version's rows.
    pub fn push(&mut self, version: &VersionRows<'_>) -> Result<(), ArrowError> {
        if version.replaces {
            self.replace_ids.insert(version.id.to_owned());
        }
        for (i, row) in version.rows.clone().enumerate() {
            self.ids.append_value(version.id);
            self.times.append_value(version.last_updated);
            self.row_numbers.append_value(i as i64);
            self.rows.push(version.columns, row)?;
            self.lineage_columns
                .push(&self.lineage, version.source, version.line);
        }
        if self.lineage_columns.len() >= 16 * 1024 {
            self.finish_batch()?;
        }
        Ok(())
    }

    fn finish_batch(&mut self) -> Result<(), ArrowError> {
        if self.lineage_columns.is_empty() {
            return Ok(());
        }
        self.rows_written += self.lineage_columns.len() as u64;
        let columns = self.layout.assemble(
            [
                Arc::new(self.ids.finish()) as ArrayRef,
                Arc::new(self.times.finish()),
            ],
            vec![Arc::new(self.row_numbers.finish())],
            self.lineage_columns.finish(),
            self.rows.finish()?,
        );
        self.batches
            .push(RecordBatch::try_new(self.layout.schema().clone(), columns)?);
        Ok(())
    }

    /// The type table of the view's resource.
    pub fn type_table(&self) -> &str {
        &self.type_table
    }

    /// Drops the rows of the versions `lost(id, lastUpdated)` says lost.
    pub fn drop_versions(&mut self, lost: impl Fn(&str, i64) -> bool) -> Result<(), LakeError> {
        let name = self.name.clone();
        let arrow = |source| LakeError::Arrow {
            table: name.clone(),
            source,
        };
        self.finish_batch().map_err(arrow)?;
        for batch in &mut self.batches {
            let (Some(ids), Some(times)) = (
                batch.column(0).as_string_opt::<i32>(),
                batch
                    .column(1)
                    .as_primitive_opt::<TimestampMicrosecondType>(),
            ) else {
                continue;
            };
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|i| Some(!lost(ids.value(i), times.value(i))))
                .collect();
            if keep.true_count() < batch.num_rows() {
                *batch = filter_record_batch(batch, &keep).map_err(arrow)?;
            }
        }
        Ok(())
    }

    /// Deletes replaced rows, then inserts the new ones; records the commits.
    pub async fn commit(
        &mut self,
        lake: &Lake,
        record: &mut TableRecord,
        info: &serde_json::Value,
    ) -> Result<(), LakeError> {
        self.finish_batch().map_err(|source| LakeError::Arrow {
            table: self.name.clone(),
            source,
        })?;
        let schema = self.layout.schema().clone();
        let table = open_or_create_table(lake, &self.name, &schema).await?;
        let ids: Vec<String> = std::mem::take(&mut self.replace_ids).into_iter().collect();
        let (table, _, deleted) = delete_ids(table, &self.name, &ids, info).await?;
        if let Some(version) = deleted {
            record.commits.push(CommitRecord {
                version,
                operation: CommitOperation::Delete,
                merge: None,
            });
        }
        let batches = std::mem::take(&mut self.batches);
        if !batches.is_empty() {
            let before = table.version();
            let (merged, metrics) =
                insert_missing(table, &self.name, &schema, batches, info).await?;
            record.rows.inserted += metrics.rows_inserted;
            if merged.version() != before
                && let Some(version) = merged.version()
            {
                record.commits.push(CommitRecord {
                    version,
                    operation: CommitOperation::Merge,
                    merge: Some(metrics),
                });
            }
        }
        Ok(())
    }
}
