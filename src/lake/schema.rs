//! Arrow schemas of the tables fhirlake owns.
//!
//! Every resource table starts with the standard columns below; views (a later
//! stage) append their columns after them, so adding a view is a schema
//! addition, never a rewrite.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Table of rejected lines (the dead-letter queue).
pub const QUARANTINE_TABLE: &str = "_quarantine";

pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Columns every own-table view's table has besides the view's: the keys
/// first, lineage last (see `load::view_tables`).
pub const VIEW_TABLE_COLUMNS: &[&str] = &[
    "id",
    "meta_last_updated",
    "_row",
    "_job_id",
    "_source",
    "_line",
    "_ingested_at",
];

/// Standard columns of a per-resource-type table.
pub fn resource_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("meta_last_updated", utc_micros(), false),
        Field::new("meta_version_id", DataType::Utf8, true),
        // Null when meta.lastUpdated came from the resource; otherwise where the
        // stand-in came from: "as_of", "transaction_time" or "file_mtime".
        Field::new("_last_updated_from", DataType::Utf8, true),
        Field::new("resource", DataType::Utf8, false),
        Field::new("_job_id", DataType::Utf8, false),
        Field::new("_source", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_ingested_at", utc_micros(), false),
    ]))
}

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
