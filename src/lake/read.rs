//! Reading what a table holds, for sources that re-read resources by id.

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;

use super::{Lake, LakeError};

/// Opens the Delta table `name` of `lake` (errors name it).
pub async fn open_table(lake: &Lake, name: &str) -> Result<DeltaTable, LakeError> {
    let lake = lake.holding(name);
    DeltaTable::try_from_url_with_storage_options(
        lake.table_url(name),
        lake.storage_options().clone(),
    )
    .await
    .map_err(LakeError::delta(name))
}

/// Runs `sql` over `table`, registered as `t`; errors name the table `name`.
pub async fn query(
    table: &DeltaTable,
    name: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>, LakeError> {
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let provider = table.table_provider().await.map_err(query_err)?;
    ctx.register_table("t", provider).map_err(query_err)?;
    ctx.sql(sql)
        .await
        .map_err(query_err)?
        .collect()
        .await
        .map_err(query_err)
}

/// The `resource` JSON of every current row of table `name`, one per id
/// (the newest version in a history-mode table; tombstones left out),
/// sorted by id. Empty when the table does not exist.
pub async fn current_resources(lake: &Lake, name: &str) -> Result<Vec<String>, LakeError> {
    let rows = current_rows(lake, name).await?;
    Ok(rows.into_iter().map(|(_, resource)| resource).collect())
}

/// [`current_resources`] with each row's `meta_last_updated` (UTC µs).
pub async fn current_rows(lake: &Lake, name: &str) -> Result<Vec<(i64, String)>, LakeError> {
    if !lake.has_table(name).await? {
        return Ok(Vec::new());
    }
    let table = open_table(lake, name).await?;
    let batches = query(
        &table,
        name,
        "SELECT meta_last_updated, resource FROM (SELECT meta_last_updated, resource, \
         row_number() OVER (PARTITION BY id ORDER BY meta_last_updated DESC) AS n, id FROM t) \
         WHERE n = 1 AND resource IS NOT NULL ORDER BY id",
    )
    .await?;
    let arrow_err = |source| LakeError::Arrow {
        table: name.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for batch in batches {
        let at = cast(batch.column(0), &DataType::Int64).map_err(arrow_err)?;
        let resource = cast(batch.column(1), &DataType::Utf8).map_err(arrow_err)?;
        let at = at.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        for (i, resource) in resource.as_string::<i32>().iter().enumerate() {
            if let Some(resource) = resource {
                out.push((at.value(i), resource.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Which rows to list.
#[derive(Debug, Clone)]
pub enum Rows<'a> {
    /// These ids (FHIR ids only; others are skipped).
    Ids(&'a [String]),
    /// Rows whose `meta_last_updated` is before this instant (UTC µs).
    UpdatedBefore(i64),
}

/// `(id, meta_version_id)` of the current rows of table `name` that
/// `rows` selects (none when the table does not exist).
pub async fn stored_versions(
    lake: &Lake,
    name: &str,
    rows: Rows<'_>,
) -> Result<Vec<(String, Option<String>)>, LakeError> {
    if !lake.has_table(name).await? {
        return Ok(Vec::new());
    }
    let table = open_table(lake, name).await?;
    let filter = match rows {
        Rows::Ids(ids) => {
            let quoted: Vec<String> = ids
                .iter()
                .filter(|id| crate::fhir::is_valid_id(id))
                .map(|id| format!("'{id}'"))
                .collect();
            if quoted.is_empty() {
                return Ok(Vec::new());
            }
            format!("id IN ({})", quoted.join(","))
        }
        Rows::UpdatedBefore(micros) => {
            format!("meta_last_updated < to_timestamp_micros({micros})")
        }
    };
    let deleted = if table_has_column(&table, super::DELETED_COLUMN) {
        format!(" AND {} IS NOT TRUE", super::DELETED_COLUMN)
    } else {
        String::new()
    };
    let sql = format!("SELECT id, meta_version_id FROM t WHERE {filter}{deleted} ORDER BY id");
    let batches = query(&table, name, &sql).await?;
    let mut out = Vec::new();
    for batch in batches {
        let arrow_err = |source| LakeError::Arrow {
            table: name.to_owned(),
            source,
        };
        let ids = cast(batch.column(0), &DataType::Utf8).map_err(arrow_err)?;
        let versions = cast(batch.column(1), &DataType::Utf8).map_err(arrow_err)?;
        let (ids, versions) = (ids.as_string::<i32>(), versions.as_string::<i32>());
        for i in 0..batch.num_rows() {
            let version = versions.is_valid(i).then(|| versions.value(i).to_owned());
            out.push((ids.value(i).to_owned(), version));
        }
    }
    Ok(out)
}

/// Whether the table's schema has `column`.
pub fn table_has_column(table: &DeltaTable, column: &str) -> bool {
    table
        .snapshot()
        .map(|s| s.schema().field(column).is_some())
        .unwrap_or(false)
}
