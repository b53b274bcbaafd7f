//! The one rule for Delta commit conflicts, used by every commit fhirlake makes.
//!
//! Delta commits are put-if-absent: when two writers race for a version, the
//! loser's commit fails with a conflict. The loser reloads the table (so it
//! sees the winner's commit) and runs its operation again on that snapshot,
//! up to [`COMMIT_ATTEMPTS`] times. An operation must therefore decide what to
//! write from the table it is given, never from a snapshot it held before.

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};

use super::LakeError;

/// Commit attempts against a fresh snapshot before giving up.
pub const COMMIT_ATTEMPTS: usize = 10;

/// True for errors a retry on a fresh snapshot can fix.
pub fn is_commit_conflict(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_)
    )
}

/// Counts the attempts of one commit and decides, after each failure,
/// whether to go again: the one rule every commit site follows.
pub struct ConflictRetry<'a> {
    name: &'a str,
    attempt: usize,
}

impl<'a> ConflictRetry<'a> {
    /// For commits to the table `name`.
    pub fn new(name: &'a str) -> Self {
        Self { name, attempt: 1 }
    }

    /// After a failed attempt: when it lost a race (and attempts remain),
    /// reloads `table` and returns `Ok` to go again; otherwise the error.
    pub async fn after(
        &mut self,
        table: &mut DeltaTable,
        error: LakeError,
    ) -> Result<(), LakeError> {
        match error {
            LakeError::Delta { source, .. }
                if self.attempt < COMMIT_ATTEMPTS && is_commit_conflict(&source) =>
            {
                self.attempt += 1;
                table.load().await.map_err(LakeError::delta(self.name))
            }
            other => Err(other),
        }
    }
}

/// Runs `operation` on (a copy of) `table` until it succeeds, fails for
/// another reason, or has lost [`COMMIT_ATTEMPTS`] races; reloads `table`
/// after each lost race.
pub async fn retry_on_conflict<T, F, Fut>(
    table: &mut DeltaTable,
    name: &str,
    mut operation: F,
) -> Result<T, LakeError>
where
    F: FnMut(DeltaTable) -> Fut,
    Fut: std::future::Future<Output = Result<T, LakeError>>,
{
    let mut retry = ConflictRetry::new(name);
    loop {
        match operation(table.clone()).await {
            Ok(value) => return Ok(value),
            Err(error) => retry.after(table, error).await?,
        }
    }
}

/// Commits `actions` as a transaction that read the whole table, so any
/// data commit that landed since `table`'s snapshot makes it conflict (the
/// caller then decides again on the new snapshot). delta-rs spells "read the
/// whole table" as a MERGE without a predicate; `merge_predicate` is only
/// recorded. Returns the version committed.
pub async fn commit_reading_whole_table(
    table: &DeltaTable,
    name: &str,
    actions: Vec<Action>,
    properties: CommitProperties,
    merge_predicate: Option<String>,
) -> Result<u64, LakeError> {
    let snapshot = table.snapshot().map_err(LakeError::delta(name))?;
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate,
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(LakeError::delta(name))?;
    Ok(finalized.version())
}
