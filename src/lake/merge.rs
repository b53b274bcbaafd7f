//! The insert-only MERGE of own-table view rows, and what a commit did in
//! the manifest's terms ([`UpdateMetrics`]).

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use serde::Serialize;

use super::LakeError;
use super::conflict::retry_on_conflict;
use super::index::COMMIT_INFO_KEY;

/// What a MERGE did, in the manifest's terms.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UpdateMetrics {
    pub source_rows: u64,
    pub rows_updated: u64,
    pub rows_inserted: u64,
    #[serde(default)]
    pub rows_deleted: u64,
    pub files_added: u64,
    pub files_removed: u64,
    /// Rows rewritten unchanged (copy-on-write MERGE); 0 with deletion vectors.
    #[serde(default)]
    pub rows_copied: u64,
    /// Files whose deletion vector the commit set.
    #[serde(default)]
    pub deletion_vectors: u64,
}

/// The key of an own-table view's rows.
const VIEW_ROW_KEY: [&str; 3] = ["id", "meta_last_updated", "_row"];

/// Properties recording `info` as `commitInfo.fhirlake` (job id, audit anchor).
pub(super) fn commit_info(info: &serde_json::Value) -> CommitProperties {
    CommitProperties::default().with_metadata([(COMMIT_INFO_KEY.to_owned(), info.clone())])
}

/// Inserts the rows of `batches` that `table` lacks, keyed on (`id`,
/// `meta_last_updated`, `_row`), so re-inserting rows that already landed
/// is a no-op (own-table view rows). Retries on commit conflicts.
pub async fn insert_missing(
    mut table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    info: &serde_json::Value,
) -> Result<(DeltaTable, UpdateMetrics), LakeError> {
    let (merged, metrics) = retry_on_conflict(&mut table, name, |table| {
        merge_once(table, name, schema, batches.clone(), info)
    })
    .await?;
    Ok((merged, metrics))
}

async fn merge_once(
    table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    info: &serde_json::Value,
) -> Result<(DeltaTable, UpdateMetrics), LakeError> {
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let source = MemTable::try_new(schema.clone(), vec![batches]).map_err(query_err)?;
    ctx.register_table("rows", Arc::new(source))
        .map_err(query_err)?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let column_list = columns.join(", ");
    let partition = VIEW_ROW_KEY.join(", ");
    // MERGE rejects two source rows matching one target row: one per key.
    let distinct = ctx
        .sql(&format!(
            "SELECT {column_list} FROM (SELECT *, row_number() OVER \
             (PARTITION BY {partition} ORDER BY _line DESC) AS _rank FROM rows) WHERE _rank = 1"
        ))
        .await
        .map_err(query_err)?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let on: Vec<String> = VIEW_ROW_KEY
        .iter()
        .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
        .collect();
    let (table, metrics) = table
        .merge(distinct, on.join(" AND "))
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .with_commit_properties(commit_info(info))
        .when_not_matched_insert(|insert| {
            names
                .iter()
                .fold(insert, |i, c| i.set(c.as_str(), format!("source.\"{c}\"")))
        })
        .map_err(LakeError::delta(name))?
        .await
        .map_err(LakeError::delta(name))?;
    Ok((
        table,
        UpdateMetrics {
            source_rows: metrics.num_source_rows as u64,
            rows_updated: metrics.num_target_rows_updated as u64,
            rows_inserted: metrics.num_target_rows_inserted as u64,
            rows_deleted: metrics.num_target_rows_deleted as u64,
            files_added: metrics.num_target_files_added as u64,
            files_removed: metrics.num_target_files_removed as u64,
            rows_copied: metrics.num_target_rows_copied as u64,
            deletion_vectors: 0,
        },
    ))
}
