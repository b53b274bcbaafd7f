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

use deltalake::arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use super::rows::Lineage;
use crate::lake::{
    COMMIT_ATTEMPTS, Lake, LakeError, MergeKind, VIEW_TABLE_COLUMNS, is_commit_conflict,
    merge_rows, open_or_create_table,
};
use crate::ledger::{CommitRecord, TableRecord};
use crate::view::{CompiledView, PickedRows, ViewArrays};

fn utc() -> DataType {
    crate::lake::utc_micros()
}

/// Schema of an own-table view: key columns, the view's columns, lineage.
pub fn view_table_schema(view: &CompiledView) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("meta_last_updated", utc(), false),
        Field::new("_row", DataType::Int64, false),
    ];
    fields.extend(
        view.arrow_fields()
            .into_iter()
            .filter(|f| !VIEW_TABLE_COLUMNS.contains(&f.name().as_str())),
    );
    fields.extend([
        Field::new("_job_id", DataType::Utf8, false),
        Field::new("_source", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_ingested_at", utc(), false),
    ]);
    Arc::new(Schema::new(fields))
}

/// One job's rows for an own-table view.
pub struct ViewTable {
    name: String,
    view: Arc<CompiledView>,
    schema: SchemaRef,
    ids: Vec<String>,
    times: Vec<i64>,
    row_numbers: Vec<i64>,
    rows: PickedRows,
    sources: Vec<String>,
    lines: Vec<i64>,
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
            schema: view_table_schema(&view),
            rows: PickedRows::new(&view),
            view,
            ids: Vec::new(),
            times: Vec::new(),
            row_numbers: Vec::new(),
            sources: Vec::new(),
            lines: Vec::new(),
            batches: Vec::new(),
            replace_ids: BTreeSet::new(),
            rows_written: 0,
            lineage,
        }
    }

    /// Adds a resource version's rows (`rows` of a chunk's view columns);
    /// `replaces` when it supersedes a stored version.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        id: &str,
        last_updated: i64,
        columns: &ViewArrays,
        rows: std::ops::Range<usize>,
        source: &str,
        line: u64,
        replaces: bool,
    ) -> Result<(), ArrowError> {
        if replaces {
            self.replace_ids.insert(id.to_owned());
        }
        for (i, row) in rows.enumerate() {
            self.ids.push(id.to_owned());
            self.times.push(last_updated);
            self.row_numbers.push(i as i64);
            self.rows.push(columns, row)?;
            self.sources.push(source.to_owned());
            self.lines.push(line as i64);
        }
        if self.ids.len() >= 16 * 1024 {
            self.finish_batch()?;
        }
        Ok(())
    }

    fn finish_batch(&mut self) -> Result<(), ArrowError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let n = self.ids.len();
        let strings = |values: &[String]| {
            let mut b = StringBuilder::new();
            values.iter().for_each(|v| b.append_value(v));
            Arc::new(b.finish()) as ArrayRef
        };
        let times = |values: &[i64]| {
            let mut b =
                TimestampMicrosecondBuilder::with_capacity(values.len()).with_timezone("UTC");
            values.iter().for_each(|v| b.append_value(*v));
            Arc::new(b.finish()) as ArrayRef
        };
        let ints = |values: &[i64]| {
            let mut b = Int64Builder::with_capacity(values.len());
            values.iter().for_each(|v| b.append_value(*v));
            Arc::new(b.finish()) as ArrayRef
        };
        let mut columns = vec![
            strings(&self.ids),
            times(&self.times),
            ints(&self.row_numbers),
        ];
        for (field, array) in self.view.arrow_fields().iter().zip(self.rows.finish()?) {
            if !VIEW_TABLE_COLUMNS.contains(&field.name().as_str()) {
                columns.push(array);
            }
        }
        columns.push(strings(&vec![self.lineage.job_id.clone(); n]));
        columns.push(strings(&self.sources));
        columns.push(ints(&self.lines));
        columns.push(times(&vec![self.lineage.ingested_at; n]));
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.rows_written += n as u64;
        for v in [&mut self.ids, &mut self.sources] {
            v.clear();
        }
        self.times.clear();
        self.row_numbers.clear();
        self.lines.clear();
        Ok(())
    }

    /// Deletes replaced rows, then inserts the new ones; records the commits.
    pub async fn commit(&mut self, lake: &Lake, record: &mut TableRecord) -> Result<(), LakeError> {
        self.finish_batch().map_err(|source| LakeError::Arrow {
            table: self.name.clone(),
            source,
        })?;
        let mut table = open_or_create_table(lake, &self.name, &self.schema).await?;
        let ids: Vec<String> = std::mem::take(&mut self.replace_ids).into_iter().collect();
        for group in ids.chunks(500) {
            let list: Vec<String> = group
                .iter()
                .map(|id| format!("'{}'", id.replace('\'', "''")))
                .collect();
            let predicate = format!("id IN ({})", list.join(", "));
            let mut attempt = 1;
            loop {
                match table
                    .clone()
                    .delete()
                    .with_predicate(predicate.clone())
                    .await
                {
                    Ok((deleted, _)) => {
                        if deleted.version() != table.version()
                            && let Some(version) = deleted.version()
                        {
                            record.commits.push(CommitRecord {
                                version,
                                operation: "delete".into(),
                                merge: None,
                            });
                        }
                        table = deleted;
                        break;
                    }
                    Err(e) if attempt < COMMIT_ATTEMPTS && is_commit_conflict(&e) => {
                        attempt += 1;
                        table.load().await.map_err(LakeError::delta(&self.name))?;
                    }
                    Err(e) => return Err(LakeError::delta(&self.name)(e)),
                }
            }
        }
        let batches = std::mem::take(&mut self.batches);
        if !batches.is_empty() {
            let before = table.version();
            let (merged, metrics) = merge_rows(
                table,
                &self.name,
                &self.schema,
                batches,
                MergeKind::InsertMissing,
            )
            .await?;
            record.rows.inserted += metrics.rows_inserted;
            if merged.version() != before
                && let Some(version) = merged.version()
            {
                record.commits.push(CommitRecord {
                    version,
                    operation: "merge".into(),
                    merge: Some(metrics),
                });
            }
        }
        Ok(())
    }
}
