//! Removing rows by id: a server's deletions (Bulk Data `deleted[]`, later
//! REST `_history` deletes) applied to a type table, and [`delete_ids`] for
//! rows a newer version replaces. Current mode removes the stored row unless
//! it is newer than the deletion; history mode appends a tombstone version
//! (`_deleted` = true).

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::{DataFrame, SessionContext};

use super::conflict::retry_on_conflict;
use super::keys::LoadMode;
use super::layout::{DELETED_COLUMN, Lineage, LineageColumns, TableLayout, utc_micros};
use super::merge::{MergeKind, merge_rows};
use super::sink::open_or_create_table;
use super::{Lake, LakeError};

/// One resource the server says was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    /// When it was deleted (UTC µs): rows newer than this survive.
    pub deleted_at: i64,
    /// The deletion record as received (a Bundle entry), kept on tombstones.
    pub record: String,
    pub source: String,
    pub line: u64,
}

/// What applying deletions did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionOutcome {
    pub version: Option<u64>,
    pub rows_deleted: u64,
    pub tombstones: u64,
}

pub async fn apply_deletions(
    lake: &Lake,
    name: &str,
    mode: LoadMode,
    deletions: &[Deletion],
    lineage: &Lineage,
) -> Result<DeletionOutcome, LakeError> {
    if deletions.is_empty() {
        return Ok(DeletionOutcome::default());
    }
    match mode {
        LoadMode::Current => {
            let Some(table) = open_existing(lake, name).await? else {
                // Never loaded: nothing to delete.
                return Ok(DeletionOutcome::default());
            };
            let batch = deletion_batch(deletions).map_err(arrow_err(name))?;
            // Newer rows survive: a version stored after the deletion is a re-creation.
            let (_, deleted, version) = delete_matching(
                table,
                name,
                batch,
                Some("target.meta_last_updated <= source.deleted_at"),
            )
            .await?;
            Ok(DeletionOutcome {
                version,
                rows_deleted: deleted,
                tombstones: 0,
            })
        }
        LoadMode::History => {
            let schema = TableLayout::resource(&[]).schema().clone();
            let table = open_or_create_table(lake, name, &schema).await?;
            let batch = tombstone_batch(deletions, lineage).map_err(arrow_err(name))?;
            let schema = batch.schema();
            let (table, metrics) = merge_rows(
                table,
                name,
                &schema,
                vec![batch],
                MergeKind::InsertMissingVersion,
            )
            .await?;
            Ok(DeletionOutcome {
                version: (metrics.rows_inserted > 0)
                    .then(|| table.version())
                    .flatten(),
                rows_deleted: 0,
                tombstones: metrics.rows_inserted,
            })
        }
    }
}

/// Deletes every row of `table` whose id is in `ids`; returns the table, the
/// rows deleted and the version committed (`None` when nothing matched).
pub async fn delete_ids(
    table: DeltaTable,
    name: &str,
    ids: &[String],
) -> Result<(DeltaTable, u64, Option<u64>), LakeError> {
    if ids.is_empty() {
        return Ok((table, 0, None));
    }
    let schema = Schema::new(vec![Field::new("id", DataType::Utf8, false)]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from_iter_values(ids)) as ArrayRef],
    )
    .map_err(arrow_err(name))?;
    delete_matching(table, name, batch, None).await
}

async fn open_existing(lake: &Lake, name: &str) -> Result<Option<DeltaTable>, LakeError> {
    let url = lake.prepare_table(name)?;
    let table = DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
        .await
        .map_err(LakeError::delta(name))?;
    Ok(table.version().is_some().then_some(table))
}

fn arrow_err(name: &str) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> LakeError + '_ {
    move |source| LakeError::Arrow {
        table: name.to_owned(),
        source,
    }
}

fn deletion_batch(
    deletions: &[Deletion],
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("deleted_at", utc_micros(), false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.id.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(deletions.iter().map(|d| d.deleted_at))
                    .with_timezone("UTC"),
            ),
        ],
    )
}

/// History-mode tombstones: the table's own columns, then `_deleted`.
fn tombstone_batch(
    deletions: &[Deletion],
    lineage: &Lineage,
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let layout = TableLayout::resource(&[]);
    let mut fields: Vec<Field> = layout
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, true));
    let n = deletions.len();
    let mut lineage_columns = LineageColumns::with_capacity(n);
    for d in deletions {
        lineage_columns.push(lineage, &d.source, d.line);
    }
    let mut columns = layout.assemble(
        [
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.id.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(deletions.iter().map(|d| d.deleted_at))
                    .with_timezone("UTC"),
            ),
        ],
        vec![
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(StringArray::from(vec![Some("deleted"); n])),
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.record.as_str()),
            )),
            Arc::new(BooleanArray::from(vec![false; n])),
        ],
        lineage_columns.finish(),
        Vec::new(),
    );
    columns.push(Arc::new(BooleanArray::from(vec![true; n])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Deletes the rows whose id a row of `source` names (and, with
/// `condition`, for which it holds), retrying on commit conflicts.
async fn delete_matching(
    mut table: DeltaTable,
    name: &str,
    source: RecordBatch,
    condition: Option<&'static str>,
) -> Result<(DeltaTable, u64, Option<u64>), LakeError> {
    let (merged, deleted, version) = retry_on_conflict(&mut table, name, |table| {
        let source = &source;
        async move {
            let one_per_id = one_row_per_id(name, source).await?;
            let before = table.version();
            let (merged, metrics) = table
                .merge(one_per_id, "target.id = source.id")
                .with_source_alias("source")
                .with_target_alias("target")
                .when_matched_delete(|d| match condition {
                    Some(c) => d.predicate(c),
                    None => d,
                })
                .map_err(LakeError::delta(name))?
                .await
                .map_err(LakeError::delta(name))?;
            let deleted = metrics.num_target_rows_deleted as u64;
            let version = (deleted > 0 && merged.version() != before)
                .then(|| merged.version())
                .flatten();
            Ok((merged, deleted, version))
        }
    })
    .await?;
    table = merged;
    Ok((table, deleted, version))
}

/// `source` with one row per id, the latest `deleted_at` when it has one
/// (MERGE rejects two source rows matching one target row).
async fn one_row_per_id(name: &str, source: &RecordBatch) -> Result<DataFrame, LakeError> {
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let table =
        MemTable::try_new(source.schema(), vec![vec![source.clone()]]).map_err(query_err)?;
    ctx.register_table("deletions", Arc::new(table))
        .map_err(query_err)?;
    let order = if source.schema().field_with_name("deleted_at").is_ok() {
        "deleted_at DESC"
    } else {
        "id"
    };
    ctx.sql(&format!(
        "SELECT * EXCLUDE (_rank) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY {order}) AS _rank FROM deletions) WHERE _rank = 1"
    ))
    .await
    .map_err(query_err)
}
