//! Applying a server's deletions (Bulk Data `deleted[]`) to a type table.
//! Current mode removes the stored row unless it is newer than the deletion;
//! history mode appends a tombstone version (`_deleted` = true).

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;

use super::keys::LoadMode;
use super::merge::{MergeKind, merge_rows};
use super::schema::utc_micros;
use super::sink::{open_or_create_table, retry_on_conflict};
use super::{Lake, LakeError, resource_schema};

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

/// Lineage stamped on tombstones.
pub struct TombstoneLineage<'a> {
    pub job_id: &'a str,
    pub ingested_at: i64,
}

pub async fn apply_deletions(
    lake: &Lake,
    name: &str,
    mode: LoadMode,
    deletions: &[Deletion],
    lineage: &TombstoneLineage<'_>,
) -> Result<DeletionOutcome, LakeError> {
    if deletions.is_empty() {
        return Ok(DeletionOutcome::default());
    }
    match mode {
        LoadMode::Current => {
            let url = lake.prepare_table(name)?;
            let table =
                DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
                    .await
                    .map_err(LakeError::delta(name))?;
            if table.version().is_none() {
                // Never loaded: nothing to delete.
                return Ok(DeletionOutcome::default());
            }
            let batch = deletion_batch(deletions).map_err(arrow_err(name))?;
            retry_on_conflict(table, name, |table| delete_once(table, name, batch.clone())).await
        }
        LoadMode::History => {
            let table = open_or_create_table(lake, name, &resource_schema()).await?;
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

fn tombstone_batch(
    deletions: &[Deletion],
    lineage: &TombstoneLineage<'_>,
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut fields: Vec<Field> = resource_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("_deleted", DataType::Boolean, true));
    let n = deletions.len();
    let ts =
        |values: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"));
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        vec![
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.id.as_str()),
            )),
            ts(deletions.iter().map(|d| d.deleted_at).collect()),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(StringArray::from(vec![Some("deleted"); n])),
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.record.as_str()),
            )),
            Arc::new(StringArray::from(vec![lineage.job_id; n])),
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.source.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                deletions.iter().map(|d| d.line as i64),
            )),
            ts(vec![lineage.ingested_at; n]),
            Arc::new(BooleanArray::from(vec![true; n])),
        ],
    )
}

/// Deletes each stored row whose id the source names, unless the row is
/// newer than the deletion.
async fn delete_once(
    table: DeltaTable,
    name: &str,
    batch: RecordBatch,
) -> Result<DeletionOutcome, LakeError> {
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let source = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(query_err)?;
    ctx.register_table("deletions", Arc::new(source))
        .map_err(query_err)?;
    // One row per id (MERGE rejects two source rows for one target row).
    let source = ctx
        .sql(
            "SELECT * EXCLUDE (_rank) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY deleted_at DESC) AS _rank FROM deletions) WHERE _rank = 1",
        )
        .await
        .map_err(query_err)?;
    let before = table.version();
    let (table, metrics) = table
        .merge(source, "target.id = source.id")
        .with_source_alias("source")
        .with_target_alias("target")
        .when_matched_delete(|d| d.predicate("target.meta_last_updated <= source.deleted_at"))
        .map_err(LakeError::delta(name))?
        .await
        .map_err(LakeError::delta(name))?;
    let deleted = metrics.num_target_rows_deleted as u64;
    Ok(DeletionOutcome {
        version: (deleted > 0 && table.version() != before)
            .then(|| table.version())
            .flatten(),
        rows_deleted: deleted,
        tombstones: 0,
    })
}
