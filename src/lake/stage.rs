//! A type table's new rows staged as Parquet files, invisible until a commit
//! adds them. Each file's rows are known (the file is closed at a size, not
//! rolled by the writer behind our back), so a row's place — file and
//! physical position — follows from the order it was written in: what a
//! deletion vector and the key index need.

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};

use super::sink::{open_or_create_resource_table, writer_properties};
use super::{Lake, LakeError};

/// Bytes of encoded Parquet after which a staged file is closed.
const FILE_BYTES: usize = 256 << 20;

/// One staged file: its `add` action and how many rows it holds.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub add: Add,
    pub rows: u64,
}

/// Writes a type table's rows into staged files.
pub struct Stager {
    name: String,
    table: DeltaTable,
    writer: RecordBatchWriter,
    /// Rows written to the open file.
    open_rows: u64,
    files: Vec<StagedFile>,
}

impl Stager {
    pub async fn open(lake: &Lake, name: &str, schema: &SchemaRef) -> Result<Self, LakeError> {
        let table = open_or_create_resource_table(lake, name, schema).await?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(LakeError::delta(name))?
            .with_writer_properties(writer_properties(schema))
            // One file per flush: this stager decides where files end.
            .with_target_file_size(0);
        Ok(Self {
            name: name.to_owned(),
            table,
            writer,
            open_rows: 0,
            files: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table as of when the stager was opened.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Writes a batch; its rows follow the rows written before.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), LakeError> {
        self.open_rows += batch.num_rows() as u64;
        self.writer
            .write_with_mode(batch, WriteMode::MergeSchema)
            .await
            .map_err(LakeError::delta(&self.name))?;
        if self.writer.buffer_len() >= FILE_BYTES {
            self.close_file().await?;
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<(), LakeError> {
        if self.open_rows == 0 {
            return Ok(());
        }
        let adds = self
            .writer
            .flush()
            .await
            .map_err(LakeError::delta(&self.name))?;
        let mut rows = 0;
        for add in adds {
            let in_file = records(&add).ok_or_else(|| LakeError::Index {
                table: self.name.clone(),
                detail: format!("staged file {} has no numRecords statistic", add.path),
            })?;
            rows += in_file;
            self.files.push(StagedFile { add, rows: in_file });
        }
        if rows != self.open_rows {
            return Err(LakeError::Index {
                table: self.name.clone(),
                detail: format!(
                    "staged files hold {rows} rows, {} were written",
                    self.open_rows
                ),
            });
        }
        self.open_rows = 0;
        Ok(())
    }

    /// Closes the open file; returns the table and every staged file, in
    /// the order their rows were written.
    pub async fn finish(mut self) -> Result<(DeltaTable, Vec<StagedFile>), LakeError> {
        self.close_file().await?;
        Ok((self.table, self.files))
    }
}

/// `numRecords` of an add's statistics.
pub fn records(add: &Add) -> Option<u64> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64()
}
