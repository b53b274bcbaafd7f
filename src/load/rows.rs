//! Arrow builders for the rows one job appends: resource rows and
//! quarantine rows. The column order comes from [`TableLayout`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, StringArray,
    StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use super::picked::PickedRows;
use crate::lake::{Lineage, LineageColumns, TableLayout};
use crate::view::{CompiledView, ViewArrays};

/// One resource row as the standard columns see it.
pub struct ResourceRow<'a> {
    pub id: &'a str,
    pub last_updated: i64,
    pub version_id: Option<&'a str>,
    pub last_updated_from: Option<&'a str>,
    /// The raw resource: row `n` of a decoded chunk's `resources`.
    pub resource: (&'a ViewArrays, usize),
    /// Its length in bytes (counted toward the bytes buffered for a MERGE).
    pub resource_bytes: usize,
    pub source: &'a str,
    pub line: u64,
    /// A subset (`SUBSETTED`), flagged in `_subsetted`.
    pub subsetted: bool,
    /// A history-mode version recording a deletion (`_deleted`).
    pub deleted: bool,
    /// Problems the code checks found (`_code_issues`); `None`: not checked.
    pub code_issues: Option<u32>,
    /// Conforms to its profile (`_valid`); `None`: not validated.
    pub valid: Option<bool>,
}

/// The layout of the resource table of a type with `view` (or none).
pub fn resource_layout(view: Option<&CompiledView>) -> TableLayout {
    TableLayout::resource(&view.map(CompiledView::arrow_fields).unwrap_or_default())
}

pub struct ResourceRows {
    layout: TableLayout,
    /// The type's view: its rows become the columns after the standard ones.
    view: Option<PickedRows>,
    id: StringBuilder,
    last_updated: TimestampMicrosecondBuilder,
    version_id: StringBuilder,
    last_updated_from: StringBuilder,
    /// Picked from the decoded chunks' `resources`, not copied row by row.
    resource: PickedRows,
    subsetted: BooleanBuilder,
    deleted: BooleanBuilder,
    code_issues: Int32Builder,
    valid: BooleanBuilder,
    lineage: LineageColumns,
    bytes: usize,
}

impl ResourceRows {
    /// Rows of a table without a view.
    pub fn new(layout: TableLayout) -> Self {
        Self::with_capacity(layout, None, 0)
    }

    pub fn with_view(layout: TableLayout, view: Option<&CompiledView>) -> Self {
        Self::with_capacity(layout, view, 0)
    }

    /// Sized for `rows` rows, so the builders fill without regrowing.
    pub fn with_capacity(layout: TableLayout, view: Option<&CompiledView>, rows: usize) -> Self {
        let no_resource: ArrayRef = Arc::new(StringArray::from(vec![""]));
        Self {
            layout,
            view: view.map(PickedRows::new),
            id: StringBuilder::with_capacity(rows, rows * 40),
            last_updated: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            version_id: StringBuilder::with_capacity(rows, rows * 4),
            last_updated_from: StringBuilder::with_capacity(rows, rows * 16),
            resource: PickedRows::with_null_row(ViewArrays::from(vec![no_resource])),
            subsetted: BooleanBuilder::with_capacity(rows),
            deleted: BooleanBuilder::with_capacity(rows),
            code_issues: Int32Builder::with_capacity(rows),
            valid: BooleanBuilder::with_capacity(rows),
            lineage: LineageColumns::with_capacity(rows),
            bytes: 0,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        self.layout.schema()
    }

    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate payload bytes buffered (the raw resources dominate).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a row; `view_row` (row `n` of a chunk's view columns) fills
    /// the view columns, which are null without it.
    pub fn push(
        &mut self,
        row: &ResourceRow<'_>,
        view_row: Option<(&ViewArrays, usize)>,
        lineage: &Lineage,
    ) -> Result<(), ArrowError> {
        if let Some(picked) = &mut self.view {
            match view_row {
                Some((source, n)) => picked.push(source, n)?,
                None => picked.push_null(),
            }
        }
        self.id.append_value(row.id);
        self.last_updated.append_value(row.last_updated);
        self.version_id.append_option(row.version_id);
        self.last_updated_from.append_option(row.last_updated_from);
        let (resources, n) = row.resource;
        self.resource.push(resources, n)?;
        self.subsetted.append_value(row.subsetted);
        // Null but on tombstones: the column of rows before it read null too.
        self.deleted.append_option(row.deleted.then_some(true));
        self.code_issues.append_option(
            row.code_issues
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        );
        self.valid.append_option(row.valid);
        self.lineage.push(lineage, row.source, row.line);
        self.bytes += row.resource_bytes + row.id.len() + 64;
        Ok(())
    }

    /// Takes the buffered rows as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.bytes = 0;
        let resource = self.resource.finish()?.remove(0);
        let view = match &mut self.view {
            Some(picked) => picked.finish()?,
            None => Vec::new(),
        };
        let columns = self.layout.assemble(
            [
                Arc::new(self.id.finish()),
                Arc::new(self.last_updated.finish()),
            ],
            vec![
                Arc::new(self.version_id.finish()),
                Arc::new(self.last_updated_from.finish()),
                resource,
                Arc::new(self.subsetted.finish()),
                Arc::new(self.deleted.finish()),
                Arc::new(self.code_issues.finish()),
                Arc::new(self.valid.finish()),
            ],
            self.lineage.finish(),
            view,
        );
        RecordBatch::try_new(self.layout.schema().clone(), columns)
    }
}

/// One rejected line.
pub struct QuarantineRow<'a> {
    pub source: &'a str,
    pub source_sha256: &'a str,
    pub line: u64,
    pub byte_offset: u64,
    pub reason_code: &'static str,
    pub reason: &'a str,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub raw: &'a [u8],
}

pub struct QuarantineRows {
    schema: SchemaRef,
    job_id: StringBuilder,
    source: StringBuilder,
    source_sha256: StringBuilder,
    line: Int64Builder,
    byte_offset: Int64Builder,
    reason_code: StringBuilder,
    reason: StringBuilder,
    resource_type: StringBuilder,
    resource_id: StringBuilder,
    raw: BinaryBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    /// Rows pushed, by reason code, and the SHA-256s of their sources (for the audit trail).
    reasons: BTreeMap<&'static str, u64>,
    sources: BTreeSet<String>,
}

impl QuarantineRows {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            job_id: StringBuilder::new(),
            source: StringBuilder::new(),
            source_sha256: StringBuilder::new(),
            line: Int64Builder::new(),
            byte_offset: Int64Builder::new(),
            reason_code: StringBuilder::new(),
            reason: StringBuilder::new(),
            resource_type: StringBuilder::new(),
            resource_id: StringBuilder::new(),
            raw: BinaryBuilder::new(),
            ingested_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            reasons: BTreeMap::new(),
            sources: BTreeSet::new(),
        }
    }

    /// Rows pushed so far, by reason code.
    pub fn reasons(&self) -> &BTreeMap<&'static str, u64> {
        &self.reasons
    }

    /// The SHA-256s of the sources of the rows pushed so far.
    pub fn sources(&self) -> Vec<String> {
        self.sources.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.line.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, row: &QuarantineRow<'_>, lineage: &Lineage) {
        *self.reasons.entry(row.reason_code).or_default() += 1;
        if !self.sources.contains(row.source_sha256) {
            self.sources.insert(row.source_sha256.to_owned());
        }
        self.job_id.append_value(&lineage.job_id);
        self.source.append_value(row.source);
        self.source_sha256.append_value(row.source_sha256);
        self.line.append_value(row.line as i64);
        self.byte_offset.append_value(row.byte_offset as i64);
        self.reason_code.append_value(row.reason_code);
        self.reason.append_value(row.reason);
        self.resource_type.append_option(row.resource_type);
        self.resource_id.append_option(row.resource_id);
        self.raw.append_value(row.raw);
        self.ingested_at.append_value(lineage.ingested_at);
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.job_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.source_sha256.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.byte_offset.finish()),
            Arc::new(self.reason_code.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.resource_type.finish()),
            Arc::new(self.resource_id.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.ingested_at.finish()),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}
