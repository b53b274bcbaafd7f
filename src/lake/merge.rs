//! MERGE of updated rows (current mode): a row replaces the stored one only
//! when its `meta_last_updated` is newer (and it is not a subset of a full
//! row), so a stale file can never win.

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use serde::Serialize;

use super::LakeError;
use super::conflict::retry_on_conflict;
use super::layout::SUBSETTED_COLUMN;

/// When a source row replaces the stored one (current mode): it is newer
/// and not a subset of a full row, or it is the full row of the instant a
/// stored subset has. So a stale file never wins, nor does a subset.
const NEWER_AND_NOT_A_SUBSET_OF_FULL: &str = "(source.meta_last_updated > target.meta_last_updated \
     AND (source._subsetted IS NOT TRUE OR target._subsetted IS TRUE)) \
     OR (source.meta_last_updated = target.meta_last_updated \
     AND target._subsetted IS TRUE AND source._subsetted IS NOT TRUE)";

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
}

/// How a MERGE matches and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    /// Keyed on `id`: update when the source is newer, insert when absent.
    NewerById,
    /// Keyed on (`id`, `meta_last_updated`, `_row`): insert what is absent,
    /// never update (own-table view rows; makes a re-run a no-op).
    InsertMissing,
    /// Keyed on (`id`, `meta_last_updated`): insert versions the table lacks
    /// (history-mode tombstones).
    InsertMissingVersion,
}

impl MergeKind {
    fn key(self) -> &'static [&'static str] {
        match self {
            MergeKind::NewerById => &["id"],
            MergeKind::InsertMissing => &["id", "meta_last_updated", "_row"],
            MergeKind::InsertMissingVersion => &["id", "meta_last_updated"],
        }
    }
}

/// Applies `batches` to `table` keyed on `id`. Several versions of one id in
/// the batches are collapsed to the newest first (MERGE rejects two source
/// rows matching one target row).
pub async fn merge_updates(
    table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(DeltaTable, UpdateMetrics), LakeError> {
    merge_rows(table, name, schema, batches, MergeKind::NewerById).await
}

/// MERGEs `batches` into `table` as `kind` says, retrying on commit conflicts.
pub async fn merge_rows(
    mut table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    kind: MergeKind,
) -> Result<(DeltaTable, UpdateMetrics), LakeError> {
    let (merged, metrics) = retry_on_conflict(&mut table, name, |table| {
        merge_once(table, name, schema, batches.clone(), kind)
    })
    .await?;
    Ok((merged, metrics))
}

async fn merge_once(
    table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    kind: MergeKind,
) -> Result<(DeltaTable, UpdateMetrics), LakeError> {
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let source = MemTable::try_new(schema.clone(), vec![batches]).map_err(query_err)?;
    ctx.register_table("updates", Arc::new(source))
        .map_err(query_err)?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    let column_list = columns.join(", ");
    let key = kind.key();
    let partition = key.join(", ");
    // Of two rows of one instant, the full one wins over a subset.
    let full_first = if schema.field_with_name(SUBSETTED_COLUMN).is_ok() {
        format!("coalesce({SUBSETTED_COLUMN}, false) ASC, ")
    } else {
        String::new()
    };
    let newest = ctx
        .sql(&format!(
            "SELECT {column_list} FROM (SELECT *, row_number() OVER \
             (PARTITION BY {partition} ORDER BY meta_last_updated DESC, {full_first}_line DESC) AS _rank FROM updates) \
             WHERE _rank = 1"
        ))
        .await
        .map_err(query_err)?;

    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let on: Vec<String> = key
        .iter()
        .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
        .collect();
    let mut builder = table
        .merge(newest, on.join(" AND "))
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true);
    if kind == MergeKind::NewerById {
        builder = builder
            .when_matched_update(|update| {
                names
                    .iter()
                    .fold(update.predicate(NEWER_AND_NOT_A_SUBSET_OF_FULL), |u, c| {
                        u.update(c.as_str(), format!("source.\"{c}\""))
                    })
            })
            .map_err(LakeError::delta(name))?;
    }
    let (table, metrics) = builder
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
        },
    ))
}
