//! The `_validation` table: one row per finding of each resource version a
//! load wrote, keyed like the row it judges (`table_name`, `id`,
//! `meta_last_updated`), so joining on the key gives the current rows'
//! findings and older versions' findings stay as their history.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use super::Finding;
use crate::lake::{Lineage, LineageColumns, lineage_fields, utc_micros};

pub const VALIDATION_TABLE: &str = "_validation";

pub fn validation_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("meta_last_updated", utc_micros(), false),
        Field::new("profile", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        // The element of the profile whose rule failed (`Patient.identifier.system`).
        Field::new("rule", DataType::Utf8, false),
        // Where in the resource (`Patient.identifier[1].system`).
        Field::new("path", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
    ];
    fields.extend(lineage_fields());
    Arc::new(Schema::new(fields))
}

/// The version a finding belongs to, and where it was read.
pub struct Judged<'a> {
    pub table: &'a str,
    pub id: &'a str,
    pub last_updated: i64,
    pub source: &'a str,
    pub line: u64,
}

/// A job's `_validation` rows, appended as it stages resources.
pub struct ValidationRows {
    table: StringBuilder,
    id: StringBuilder,
    last_updated: TimestampMicrosecondBuilder,
    profile: StringBuilder,
    severity: StringBuilder,
    rule: StringBuilder,
    path: StringBuilder,
    message: StringBuilder,
    lineage: LineageColumns,
}

impl Default for ValidationRows {
    fn default() -> Self {
        Self {
            table: StringBuilder::new(),
            id: StringBuilder::new(),
            last_updated: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            profile: StringBuilder::new(),
            severity: StringBuilder::new(),
            rule: StringBuilder::new(),
            path: StringBuilder::new(),
            message: StringBuilder::new(),
            lineage: LineageColumns::with_capacity(0),
        }
    }
}

impl ValidationRows {
    pub fn len(&self) -> usize {
        self.lineage.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, judged: &Judged<'_>, findings: &[Finding], lineage: &Lineage) {
        for finding in findings {
            self.table.append_value(judged.table);
            self.id.append_value(judged.id);
            self.last_updated.append_value(judged.last_updated);
            self.profile.append_value(&finding.profile);
            self.severity.append_value(finding.severity.to_string());
            self.rule.append_value(&finding.element);
            self.path.append_value(&finding.path);
            self.message.append_value(&finding.message);
            self.lineage.push(lineage, judged.source, judged.line);
        }
    }

    /// Takes the rows as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.table.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.last_updated.finish()),
            Arc::new(self.profile.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.message.finish()),
        ];
        columns.extend(self.lineage.finish());
        RecordBatch::try_new(validation_schema(), columns)
    }
}
