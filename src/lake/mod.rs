//! The lake: where tables live and how rows get into them.
//!
//! In: a lake URI and Arrow record batches. Out: committed Delta versions.
//! A load commits in this order, per table, so a crash at any point leaves
//! every table at a committed version and a re-run converges:
//!
//! ```text
//!  rows classified ──▶ parquet files staged ──▶ one commit: the files added, the rows they
//!  (key index)         (uncommitted, invisible)  supersede marked deleted (deletion vectors),
//!                                                the key index's new run named in commitInfo
//! ```
//!
//! The ledger (manifest, loaded-file markers) is written only after these commits.
//! Nothing here decides *what* to load; that is the `load` module's job.

mod conflict;
mod delete;
mod dv;
mod index;
mod layout;
mod location;
mod maintain;
mod merge;
mod mode;
mod object_reader;
mod purge;
mod read;
mod segregated;
mod sink;
mod stage;
mod upsert;
mod worm;

pub use conflict::{COMMIT_ATTEMPTS, ConflictRetry, is_commit_conflict, retry_on_conflict};
pub use delete::{Deletion, delete_ids};
pub use index::{
    COMMIT_INFO_KEY, Entry, FileId, Hit, LocalRun, Record, Spill, TableIndex, held_ids,
};
pub use layout::{
    CODE_ISSUES_COLUMN, DELETED_COLUMN, KEY_COLUMNS, LINEAGE_COLUMNS, Lineage, LineageColumns,
    QUARANTINE_TABLE, RESOURCE_COLUMNS, ROW_COLUMN, SUBSETTED_COLUMN, TableLayout, TableShape,
    VALID_COLUMN, lineage_fields, quarantine_schema, resource_schema, utc_micros,
};
pub use location::{Lake, object_store_for, register_storage_handlers};
pub use maintain::{OptimizeReport, VacuumReport, list_tables, optimize, vacuum};
pub use merge::{UpdateMetrics, insert_missing};
pub use mode::LoadMode;
pub use purge::{PurgeReport, purge_deleted_rows};
pub use read::{
    Rows, current_resources, current_rows, open_table, query, stored_versions, table_has_column,
};
pub use segregated::{SEGREGATED_SETTING_PATH, SegregatedAccess};
pub use sink::{TableSink, has_deletion_vectors, open_or_create_table, writer_properties};
pub use stage::{StagedFile, Stager};
pub use upsert::{Changes, commit_changes};
pub use worm::{DEFAULT_RETENTION_DAYS, LockMode, Retention};

/// Errors at the storage boundary; each names the table or URI involved.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {uri:?} is not usable: {reason}")]
    Location { uri: String, reason: String },
    #[error("Delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("Delta table {table}: query failed: {source}")]
    Query {
        table: String,
        #[source]
        source: deltalake::datafusion::error::DataFusionError,
    },
    #[error("Delta table {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    #[error(
        "the store at {uri} cannot create an object only if it is absent ({detail}); Delta commits \
         and ledger records could silently overwrite each other there, so fhirlake will not write \
         to it. Use a store with conditional PUT (AWS S3, MinIO, SeaweedFS, R2) and do not set \
         aws_conditional_put=disabled"
    )]
    NoPutIfAbsent { uri: String, detail: String },
    #[error(
        "cannot write to the store at {uri} (endpoint {endpoint}): {detail}; {hint}. Nothing was \
         written"
    )]
    Unreachable {
        uri: String,
        endpoint: String,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "Delta table {table}: column {column:?} holds {existing} but the views now make it \
         {wanted}; a column's type cannot change in place. Keep the column's type in the view, \
         or give the column a new name (rows loaded earlier read null for it), or load into a new \
         lake"
    )]
    ColumnTypeChanged {
        table: String,
        column: String,
        existing: String,
        wanted: String,
    },
    #[error(
        "the key index of table {table}: {detail}; the index is rebuilt from the table on the next \
         load if its files are damaged (delete _fhirlake/index/{table} to force it)"
    )]
    Index { table: String, detail: String },
    #[error("WORM retention on {uri}: {detail}")]
    Worm { uri: String, detail: String },
    #[error("segregated lake of {uri}: {detail}")]
    Segregated { uri: String, detail: String },
    #[error("object {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

impl LakeError {
    pub(crate) fn delta(table: &str) -> impl FnOnce(deltalake::DeltaTableError) -> Self + '_ {
        move |source| Self::Delta {
            table: table.to_owned(),
            source,
        }
    }
}
