//! Purging deleted rows: a file whose deletion vector marks a good share of
//! its rows is rewritten with only its live rows, and the commit swaps the
//! files (`dataChange = false`: the table's rows do not change). Delta's
//! OPTIMIZE only rewrites files below its target size, so the large files
//! loads write would otherwise carry superseded rows forever.
//!
//! ```text
//!  live files with a DV ≥ share ─▶ each read, rows in its DV dropped ─▶ new files staged
//!    ─▶ one commit: remove(old) + add(new), dataChange=false ─▶ the key index indexes the new files
//! ```
//! The commit is made as a MERGE that read the whole table, so a load that
//! marked more rows of those files meanwhile makes it conflict (and retry
//! on the new snapshot) instead of resurrecting the rows.

use deltalake::DeltaTable;
use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use super::conflict::{ConflictRetry, commit_reading_whole_table};
use super::index::{COMMIT_INFO_KEY, read_dv};
use super::object_reader::ObjectReader;
use super::stage::{Stager, records};
use super::{Lake, LakeError};

/// What a purge did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub files_rewritten: u64,
    pub rows_dropped: u64,
    pub rows_kept: u64,
    pub version: Option<u64>,
}

fn index_err(name: &str, detail: String) -> LakeError {
    LakeError::Index {
        table: name.to_owned(),
        detail,
    }
}

/// Rewrites the files of `name` whose deletion vectors mark at least
/// `min_share` (0..=1) of their rows.
pub async fn purge_deleted_rows(
    lake: &Lake,
    name: &str,
    min_share: f64,
) -> Result<PurgeReport, LakeError> {
    let mut table = super::maintain::open_existing(lake, name).await?;
    let mut retry = ConflictRetry::new(name);
    loop {
        match purge_once(lake, &table, name, min_share).await {
            Ok(report) => return Ok(report),
            Err(error) => retry.after(&mut table, error).await?,
        }
    }
}

async fn purge_once(
    lake: &Lake,
    table: &DeltaTable,
    name: &str,
    min_share: f64,
) -> Result<PurgeReport, LakeError> {
    let snapshot = table.snapshot().map_err(LakeError::delta(name))?;
    let candidates: Vec<LogicalFileView> = snapshot
        .log_data()
        .iter()
        .filter(|f| {
            let (Some(dv), Some(rows)) = (f.deletion_vector_descriptor(), f.num_records()) else {
                return false;
            };
            rows > 0 && dv.cardinality as f64 >= min_share * rows as f64
        })
        .collect();
    let mut report = PurgeReport::default();
    if candidates.is_empty() {
        return Ok(report);
    }
    let schema = snapshot.snapshot().arrow_schema();
    let mut stager = Stager::open(lake, name, &schema).await?;
    for file in &candidates {
        let descriptor = file.deletion_vector_descriptor().expect("filtered on it");
        let deleted = read_dv(table, &descriptor)
            .await
            .map_err(|e| index_err(name, e))?;
        let path = file.path().to_string();
        let parquet_err = |e: deltalake::parquet::errors::ParquetError| {
            index_err(name, format!("reading {path} to purge it: {e}"))
        };
        let reader = ObjectReader::new(
            table.object_store(),
            ObjectPath::from(path.as_str()),
            file.size() as u64,
        );
        let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(parquet_err)?
            .with_batch_size(32 * 1024)
            .build()
            .map_err(parquet_err)?;
        let mut row: u64 = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(parquet_err)?;
            let keep: BooleanArray = (0..batch.num_rows() as u64)
                .map(|i| Some(!deleted.contains(row + i)))
                .collect();
            row += batch.num_rows() as u64;
            let kept = filter_record_batch(&batch, &keep).map_err(|source| LakeError::Arrow {
                table: name.to_owned(),
                source,
            })?;
            report.rows_dropped += (batch.num_rows() - kept.num_rows()) as u64;
            report.rows_kept += kept.num_rows() as u64;
            if kept.num_rows() > 0 {
                stager.write(kept).await?;
            }
        }
    }
    let (_, staged) = stager.finish().await?;
    let mut actions = Vec::with_capacity(candidates.len() + staged.len());
    for file in &candidates {
        actions.push(Action::Remove(file.remove_action(false)));
    }
    let mut written = 0;
    for file in staged {
        written += records(&file.add).unwrap_or(0);
        let mut add = file.add;
        add.data_change = false;
        actions.push(Action::Add(add));
    }
    if written != report.rows_kept {
        return Err(index_err(
            name,
            format!(
                "purged files hold {written} rows, {} were kept",
                report.rows_kept
            ),
        ));
    }
    let info = serde_json::json!({"operation": "purge deleted rows",
        "files": candidates.len(), "rows_dropped": report.rows_dropped});
    let properties =
        CommitProperties::default().with_metadata([(COMMIT_INFO_KEY.to_owned(), info)]);
    // Read the whole table: a load marking rows of these files meanwhile conflicts.
    let version = commit_reading_whole_table(table, name, actions, properties, None).await?;
    report.files_rewritten = candidates.len() as u64;
    report.version = Some(version);
    Ok(report)
}
