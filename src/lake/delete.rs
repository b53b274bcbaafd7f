//! A server's deletions (Bulk Data `deleted[]`, REST `_history` deletes), as
//! the load applies them in a type table's commit (see `load::resolve`), and
//! [`delete_ids`]: removing an own-table view's rows of ids a newer version
//! replaces.

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{ArrayRef, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;

use super::LakeError;
use super::conflict::retry_on_conflict;

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

/// Deletes every row of `table` whose id is in `ids` (distinct); returns the
/// table, the rows deleted and the version committed (`None` when nothing
/// matched). Retries on commit conflicts.
pub async fn delete_ids(
    mut table: DeltaTable,
    name: &str,
    ids: &[String],
    info: &serde_json::Value,
) -> Result<(DeltaTable, u64, Option<u64>), LakeError> {
    if ids.is_empty() {
        return Ok((table, 0, None));
    }
    let schema = Schema::new(vec![Field::new("id", DataType::Utf8, false)]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from_iter_values(ids)) as ArrayRef],
    )
    .map_err(|source| LakeError::Arrow {
        table: name.to_owned(),
        source,
    })?;
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let (merged, deleted, version) = retry_on_conflict(&mut table, name, |table| {
        let batch = batch.clone();
        async move {
            let ctx = SessionContext::new();
            let source = ctx.read_batch(batch).map_err(query_err)?;
            let before = table.version();
            let (merged, metrics) = table
                .merge(source, "target.id = source.id")
                .with_source_alias("source")
                .with_target_alias("target")
                .with_commit_properties(super::merge::commit_info(info))
                .when_matched_delete(|d| d)
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
