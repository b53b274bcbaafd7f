//! Table maintenance: compaction (Delta OPTIMIZE) and removal of unreferenced
//! files (VACUUM). Nightly incremental loads add a few small files per table;
//! compaction keeps scans fast. Checkpoints need no command: deltalake writes
//! one every 100 commits (the Delta default) after a commit.

use std::num::NonZeroU64;

use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use object_store::ObjectStore;
use serde::Serialize;

use super::conflict::retry_on_conflict;
use super::index::TableIndex;
use super::purge::{PurgeReport, purge_deleted_rows};
use super::{Lake, LakeError};

/// Names of the Delta tables in the lake (directories holding a `_delta_log`),
/// with the segregated tables of its segregated lake when one is attached.
pub async fn list_tables(lake: &Lake) -> Result<Vec<String>, LakeError> {
    let mut tables = tables_in(lake).await?;
    if let Some(segregated) = lake.segregated_lake() {
        let theirs = tables_in(segregated).await?;
        tables.extend(
            theirs
                .into_iter()
                .filter(|t| crate::fhir::is_segregated_table(t)),
        );
        tables.sort();
    }
    Ok(tables)
}

/// The Delta tables under `lake`'s own root.
async fn tables_in(lake: &Lake) -> Result<Vec<String>, LakeError> {
    let store = lake.store();
    let listing = store
        .list_with_delimiter(None)
        .await
        .map_err(|source| LakeError::Store {
            path: lake.root().to_string(),
            source,
        })?;
    let mut names = Vec::new();
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename().map(str::to_owned) else {
            continue;
        };
        match name.as_str() {
            "_fhirlake" | "_raw" => {}
            // A policy's segregated tables, one level down.
            crate::fhir::SEGREGATED_DIR => {
                let inner = store
                    .list_with_delimiter(Some(&dir))
                    .await
                    .map_err(|source| LakeError::Store {
                        path: dir.to_string(),
                        source,
                    })?;
                names.extend(
                    inner
                        .common_prefixes
                        .iter()
                        .filter_map(|d| d.filename().map(|n| format!("{name}/{n}"))),
                );
            }
            _ => names.push(name),
        }
    }
    let mut tables = Vec::new();
    for name in names {
        let log = lake.path(&format!("{name}/_delta_log"));
        let entries = store
            .list_with_delimiter(Some(&log))
            .await
            .map_err(|source| LakeError::Store {
                path: log.to_string(),
                source,
            })?;
        if !entries.objects.is_empty() {
            tables.push(name);
        }
    }
    tables.sort();
    Ok(tables)
}

pub(super) async fn open_existing(lake: &Lake, name: &str) -> Result<DeltaTable, LakeError> {
    let table = super::open_table(lake, name).await?;
    if table.version().is_none() {
        return Err(LakeError::Location {
            uri: lake.table_url(name).to_string(),
            reason: "no Delta table here; `fhirlake optimize --lake URI` without --table lists what exists".into(),
        });
    }
    Ok(table)
}

#[derive(Debug, Clone, Serialize)]
pub struct OptimizeReport {
    pub table: String,
    /// Files rewritten without the rows their deletion vectors mark.
    pub purged: PurgeReport,
    pub files_removed: u64,
    pub files_added: u64,
    /// The table's key-index runs before and after they were merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_runs: Option<(usize, usize)>,
    pub version_before: Option<u64>,
    pub version_after: Option<u64>,
}

/// Restores a table's layout: files whose deletion vectors mark at least
/// `purge_share` of their rows are rewritten without them, small files are
/// compacted into files of about `target_bytes` (Delta OPTIMIZE), and the
/// key index's runs are merged into one.
pub async fn optimize(
    lake: &Lake,
    name: &str,
    target_bytes: Option<u64>,
    purge_share: f64,
) -> Result<OptimizeReport, LakeError> {
    let version_before = open_existing(lake, name).await?.version();
    let purged = purge_deleted_rows(lake, name, purge_share).await?;
    let mut table = open_existing(lake, name).await?;
    let (table, metrics) = retry_on_conflict(&mut table, name, |table| async move {
        let mut builder = table.optimize();
        if let Some(target) = target_bytes.and_then(NonZeroU64::new) {
            builder = builder.with_target_size(target);
        }
        builder.await.map_err(LakeError::delta(name))
    })
    .await?;
    let index_runs = match TableIndex::stored_mode(lake, name).await? {
        Some(mode) => {
            let mut index = TableIndex::open(lake, &table, name, mode).await?;
            let before = index.runs();
            index.compact_all().await?;
            Some((before, index.runs()))
        }
        None => None,
    };
    Ok(OptimizeReport {
        table: name.to_owned(),
        purged,
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        index_runs,
        version_before,
        version_after: table.version(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    pub files_deleted: usize,
    /// Key-index runs and states no longer needed.
    pub index_objects_deleted: usize,
}

/// Deletes files no version within the last `retain_hours` refers to, including
/// orphans of killed jobs. Delta refuses a retention under its configured
/// minimum (7 days by default) unless `allow_short_retention`.
pub async fn vacuum(
    lake: &Lake,
    name: &str,
    retain_hours: u64,
    dry_run: bool,
    allow_short_retention: bool,
) -> Result<VacuumReport, LakeError> {
    let table = open_existing(lake, name).await?;
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(chrono::Duration::hours(retain_hours as i64))
        .with_enforce_retention_duration(!allow_short_retention)
        .with_dry_run(dry_run)
        .await
        .map_err(|source| {
            if source.to_string().contains("minimum retention") {
                LakeError::Location {
                    uri: lake.table_url(name).to_string(),
                    reason: format!(
                        "--retain {retain_hours} is under the table's minimum retention ({source}); \
                         pass --allow-short-retention if no reader needs older versions and no load is running"
                    ),
                }
            } else {
                LakeError::delta(name)(source)
            }
        })?;
    let retain = chrono::Duration::hours(retain_hours as i64);
    let index_objects_deleted = TableIndex::vacuum(lake, name, retain, dry_run).await?;
    Ok(VacuumReport {
        table: name.to_owned(),
        dry_run,
        files_deleted: metrics.files_deleted.len(),
        index_objects_deleted,
    })
}
