//! Writing batches into a table as parquet files that stay invisible until
//! one commit adds them all.

use std::sync::Arc;

use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Version};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use std::collections::HashMap;

use super::conflict::{ConflictRetry, retry_on_conflict};
use super::index::COMMIT_INFO_KEY;
use super::{Lake, LakeError};

/// Opens the table `name`, creating it with `schema` if it does not exist.
pub async fn open_or_create_table(
    lake: &Lake,
    name: &str,
    schema: &SchemaRef,
) -> Result<DeltaTable, LakeError> {
    open_or_create(lake, name, schema, false).await
}

/// Opens a type table, creating it with `schema`, with deletion vectors
/// enabled: a newer version of a stored row is appended and the old row
/// marked deleted, instead of its file being rewritten. An existing table
/// without them is upgraded (reader 3 / writer 7, `deletionVectors`).
pub async fn open_or_create_resource_table(
    lake: &Lake,
    name: &str,
    schema: &SchemaRef,
) -> Result<DeltaTable, LakeError> {
    let mut table = open_or_create(lake, name, schema, true).await?;
    if has_deletion_vectors(&table, name)? {
        return Ok(table);
    }
    let property = TableProperty::EnableDeletionVectors.as_ref().to_owned();
    retry_on_conflict(&mut table, name, |table| {
        let property = property.clone();
        async move {
            if has_deletion_vectors(&table, name)? {
                return Ok(table);
            }
            table
                .set_tbl_properties()
                .with_properties(HashMap::from([(property, "true".to_owned())]))
                .await
                .map_err(LakeError::delta(name))
        }
    })
    .await
}

/// Whether the table has deletion vectors enabled.
pub fn has_deletion_vectors(table: &DeltaTable, name: &str) -> Result<bool, LakeError> {
    let snapshot = table.snapshot().map_err(LakeError::delta(name))?;
    Ok(snapshot
        .metadata()
        .configuration()
        .get(TableProperty::EnableDeletionVectors.as_ref())
        .is_some_and(|v| v == "true"))
}

async fn open_or_create(
    lake: &Lake,
    name: &str,
    schema: &SchemaRef,
    deletion_vectors: bool,
) -> Result<DeltaTable, LakeError> {
    let lake = lake.holding(name);
    let url = lake.prepare_table(name)?;
    let table = DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
        .await
        .map_err(LakeError::delta(name))?;
    if table.version().is_some() {
        return add_missing_columns(table, name, schema).await;
    }
    let kernel = delta_schema(schema, name)?;
    // Another writer creating the same table at the same moment wins; we
    // then load what it created. No retries: delta-rs would otherwise commit
    // our CREATE again as version 1, replacing the winner's metadata (and
    // the table id) under the rows it may already have committed.
    let mut create = table
        .create()
        .with_table_name(name)
        .with_columns(kernel.fields().cloned())
        .with_save_mode(SaveMode::Ignore)
        .with_commit_properties(CommitProperties::default().with_max_retries(0));
    if deletion_vectors {
        create =
            create.with_configuration_property(TableProperty::EnableDeletionVectors, Some("true"));
    }
    let created = create.await;
    match created {
        Ok(created) if created.version().is_some() => Ok(created),
        // Lost the race to create version 0 (or Ignore found it existing): load the winner's.
        Ok(_)
        | Err(DeltaTableError::VersionAlreadyExists(_) | DeltaTableError::Transaction { .. }) => {
            let url = lake.table_url(name);
            let winner =
                DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
                    .await
                    .map_err(LakeError::delta(name))?;
            add_missing_columns(winner, name, schema).await
        }
        Err(e) => Err(LakeError::delta(name)(e)),
    }
}

/// `schema` in Delta's terms.
fn delta_schema(schema: &SchemaRef, table: &str) -> Result<StructType, LakeError> {
    schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| LakeError::Delta {
            table: table.to_owned(),
            source: e.into(),
        })
}

/// Schema evolution: columns in `schema` the table lacks (a view gained a
/// column) are added as nullable; existing rows read null for them. A
/// column whose type changed is an error before anything is written.
async fn add_missing_columns(
    mut table: DeltaTable,
    name: &str,
    schema: &SchemaRef,
) -> Result<DeltaTable, LakeError> {
    let wanted = delta_schema(schema, name)?;
    let evolved = retry_on_conflict(&mut table, name, |table| {
        let wanted = &wanted;
        async move {
            let snapshot = table.snapshot().map_err(LakeError::delta(name))?;
            let current = snapshot.schema();
            for field in wanted.fields() {
                if let Some(existing) = current.field(field.name())
                    && existing.data_type() != field.data_type()
                {
                    return Err(LakeError::ColumnTypeChanged {
                        table: name.to_owned(),
                        column: field.name().to_owned(),
                        existing: existing.data_type().to_string(),
                        wanted: field.data_type().to_string(),
                    });
                }
            }
            let existing: Vec<String> = current.fields().map(|f| f.name().to_owned()).collect();
            let missing: Vec<_> = schema
                .fields()
                .iter()
                .filter(|f| !existing.iter().any(|e| e == f.name()))
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            if missing.is_empty() {
                return Ok(None);
            }
            let kernel = delta_schema(&Arc::new(Schema::new(missing)), name)?;
            table
                .add_columns()
                .with_fields(kernel.fields().cloned().collect::<Vec<_>>())
                .await
                .map(Some)
                .map_err(LakeError::delta(name))
        }
    })
    .await?;
    if let Some(evolved) = evolved {
        table = evolved;
    }
    Ok(table)
}

/// Parquet settings for our tables. Pages are 64 KiB, not the default 1 MiB:
/// a page is built, compressed and copied while it is still in the CPU's
/// cache (snappy works in 64 KiB blocks anyway), which encodes a table ~15%
/// faster (`cargo bench --bench decode -- parquet`) for ~3% more bytes.
/// The raw-resource column is unique per row,
/// so a dictionary or min/max statistics would only cost time (nobody prunes
/// on a JSON document); `id` and `_line` are unique too, so no dictionary
/// (their statistics stay: lookups by id prune on them). Row groups are capped
/// so a writer's memory stays bounded whatever the input size.
pub fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_size_limit(64 * 1024)
        .set_max_row_group_row_count(Some(32 * 1024));
    for unique in ["id", "_line"] {
        if schema.field_with_name(unique).is_ok() {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(unique), false);
        }
    }
    // Raw JSON and resource ids: zstd level 1 encodes them as fast as snappy
    // here, and its entropy coding (which snappy lacks) makes the lake ~half
    // the size: hex ids shrink ~50% instead of ~13%, repeated JSON keys too.
    // The view columns are dictionary-encoded already; snappy stays there.
    let zstd = Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid"));
    if schema.field_with_name("id").is_ok() {
        builder = builder.set_column_compression(ColumnPath::from("id"), zstd);
    }
    for wide in ["resource", "raw"] {
        if schema.field_with_name(wide).is_ok() {
            builder = builder
                .set_column_compression(ColumnPath::from(wide), zstd)
                .set_column_dictionary_enabled(ColumnPath::from(wide), false)
                .set_column_statistics_enabled(ColumnPath::from(wide), EnabledStatistics::None);
        }
    }
    builder.build()
}

/// Appends to one table: batches become parquet files at once, the Delta
/// commit that makes them visible happens in [`TableSink::commit`].
pub struct TableSink {
    name: String,
    table: DeltaTable,
    writer: RecordBatchWriter,
    rows_written: u64,
}

impl TableSink {
    pub async fn open(lake: &Lake, name: &str, schema: &SchemaRef) -> Result<Self, LakeError> {
        let table = open_or_create_table(lake, name, schema).await?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(LakeError::delta(name))?
            .with_writer_properties(writer_properties(schema))
            .with_target_file_size(256 * 1024 * 1024);
        Ok(Self {
            name: name.to_owned(),
            table,
            writer,
            rows_written: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records `info` as the commit's `commitInfo.fhirlake` (job id, audit anchor).
    pub fn with_commit_info(mut self, info: serde_json::Value) -> Self {
        let properties =
            CommitProperties::default().with_metadata([(COMMIT_INFO_KEY.to_owned(), info)]);
        self.writer = self.writer.with_commit_properties(properties);
        self
    }

    /// The table as of when the sink was opened.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Writes a batch to (uncommitted) parquet files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), LakeError> {
        self.rows_written += batch.num_rows() as u64;
        // MergeSchema: a view that gained columns widens the table (old rows read null).
        self.writer
            .write_with_mode(batch, WriteMode::MergeSchema)
            .await
            .map_err(LakeError::delta(&self.name))
    }

    /// Commits everything written as one Delta version; returns the table and
    /// the version, or `None` when nothing was written.
    pub async fn commit(mut self) -> Result<(DeltaTable, Option<Version>), LakeError> {
        if self.rows_written == 0 {
            return Ok((self.table, None));
        }
        // A failed commit leaves the files staged, so a retry re-uploads nothing.
        let mut retry = ConflictRetry::new(&self.name);
        let version = loop {
            match self.writer.flush_and_commit(&mut self.table).await {
                Ok(version) => break version,
                Err(e) => {
                    let error = LakeError::delta(&self.name)(e);
                    retry.after(&mut self.table, error).await?;
                }
            }
        };
        Ok((self.table, Some(version)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn raw_json_and_ids_get_zstd_the_view_columns_snappy() {
        let schema: SchemaRef = std::sync::Arc::new(Schema::new(
            ["id", "resource", "status"]
                .map(|name| Field::new(name, DataType::Utf8, true))
                .to_vec(),
        ));
        let properties = writer_properties(&schema);
        let codec = |column: &str| properties.compression(&ColumnPath::from(column));
        let zstd = Compression::ZSTD(ZstdLevel::try_new(1).unwrap());
        assert_eq!(
            [codec("id"), codec("resource"), codec("status")],
            [zstd, zstd, Compression::SNAPPY]
        );
        let resource = ColumnPath::from("resource");
        assert!(!properties.dictionary_enabled(&resource));
        assert_eq!(
            properties.statistics_enabled(&resource),
            EnabledStatistics::None
        );
    }
}

#[cfg(test)]
mod create_race {
    use super::*;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    /// Writers creating one table at once end with one table: a single
    /// CREATE in the log (delta-rs, left to retry, commits a second one as
    /// version 1 with a new table id).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_leave_one_create_in_the_log() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let lake = Lake::open(dir.path().to_str().unwrap(), Default::default()).unwrap();
            let schema: SchemaRef =
                Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let (lake, schema) = (lake.clone(), schema.clone());
                    tokio::spawn(async move {
                        open_or_create_resource_table(&lake, "patient", &schema)
                            .await
                            .map(|t| t.snapshot().unwrap().metadata().id().to_owned())
                    })
                })
                .collect();
            let mut ids = std::collections::BTreeSet::new();
            for task in tasks {
                ids.insert(task.await.unwrap().unwrap());
            }
            assert_eq!(ids.len(), 1, "every writer sees the same table");
            let log = dir.path().join("patient/_delta_log");
            let creates = std::fs::read_dir(&log)
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                .filter(|text| text.contains("\"metaData\""))
                .count();
            assert_eq!(creates, 1, "one CREATE in {}", log.display());
        }
    }
}
