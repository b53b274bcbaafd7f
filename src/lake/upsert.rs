//! One commit of a type table: the job's staged files added, and the rows
//! they supersede (or a server deleted) marked deleted with deletion
//! vectors — no file rewritten. The commit names the job's key-index run in
//! its `commitInfo`, so the run is part of the table exactly when the commit
//! lands.
//!
//! ```text
//!  DV file written (invisible) ─▶ commit: add(staged files [+ their own DVs]) + per touched file
//!                                 remove(old DV) + add(same path, old ∪ new DV) + commitInfo{fhirlake.keys_run}
//! ```
//! The commit is made as a MERGE that read the whole table, so Delta's
//! conflict checker refuses it when any other data commit landed first (a
//! concurrent load, a compaction of a file it marks): the caller then
//! catches the index up and resolves again. One attempt here.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add, Remove};
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload};
use roaring::RoaringTreemap;
use serde_json::json;

use super::conflict::commit_reading_whole_table;
use super::index::{COMMIT_INFO_KEY, read_dv};
use super::merge::UpdateMetrics;
use super::stage::StagedFile;
use super::{LakeError, dv};

/// What one type-table commit does.
#[derive(Debug, Default)]
pub struct Changes {
    /// The job's new files, in the order their rows were written.
    pub staged: Vec<StagedFile>,
    /// Rows of the staged files that lost (duplicates, races), per file.
    pub staged_deleted: Vec<RoaringTreemap>,
    /// Rows of stored files superseded or deleted, by file path.
    pub stored_deleted: BTreeMap<String, RoaringTreemap>,
    /// The job's key-index run (relative to the lake root).
    pub run: Option<String>,
    pub job_id: String,
    /// The writer's audit chain head, anchored in the commit's `commitInfo`.
    pub anchor: Option<serde_json::Value>,
    pub metrics: UpdateMetrics,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty() && self.stored_deleted.values().all(RoaringTreemap::is_empty)
    }
}

fn index_err(name: &str, detail: String) -> LakeError {
    LakeError::Index {
        table: name.to_owned(),
        detail,
    }
}

/// Commits `changes` to `table` (one attempt); returns the new version, or
/// `None` when there was nothing to commit.
pub async fn commit_changes(
    table: &mut DeltaTable,
    name: &str,
    changes: &Changes,
) -> Result<Option<u64>, LakeError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let snapshot = table.snapshot().map_err(LakeError::delta(name))?;
    // The stored files touched: their current state, and the union of their
    // old and new deletions.
    let mut touched = Vec::new();
    for (path, rows) in changes.stored_deleted.iter().filter(|(_, r)| !r.is_empty()) {
        let view = snapshot
            .log_data()
            .iter()
            .find(|f| f.path() == path.as_str())
            .ok_or_else(|| {
                index_err(
                    name,
                    format!("the key index names {path}, which the table no longer holds"),
                )
            })?;
        let mut union = match view.deletion_vector_descriptor() {
            Some(descriptor) => read_dv(table, &descriptor)
                .await
                .map_err(|e| index_err(name, e))?,
            None => RoaringTreemap::new(),
        };
        union |= rows;
        touched.push((view, union));
    }
    let own: Vec<(usize, &RoaringTreemap)> = changes
        .staged_deleted
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .collect();
    let bitmaps: Vec<&RoaringTreemap> = own
        .iter()
        .map(|(_, r)| *r)
        .chain(touched.iter().map(|(_, r)| r))
        .collect();
    let mut descriptors = Vec::new().into_iter();
    if !bitmaps.is_empty() {
        let id = uuid::Uuid::new_v4();
        let (bytes, written) = dv::encode(id, &bitmaps);
        let path = ObjectPath::from(dv::file_name(id).as_str());
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        table
            .object_store()
            .put_opts(&path, PutPayload::from(bytes), create)
            .await
            .map_err(|source| LakeError::Store {
                path: path.to_string(),
                source,
            })?;
        descriptors = written.into_iter();
    }

    let mut actions = Vec::with_capacity(changes.staged.len() + 2 * touched.len());
    let mut own_dvs: BTreeMap<usize, deltalake::kernel::DeletionVectorDescriptor> = BTreeMap::new();
    for (at, _) in &own {
        own_dvs.insert(*at, descriptors.next().expect("one descriptor per bitmap"));
    }
    for (at, file) in changes.staged.iter().enumerate() {
        let mut add = file.add.clone();
        if let Some(descriptor) = own_dvs.remove(&at) {
            loosen_bounds(&mut add);
            add.deletion_vector = Some(descriptor);
        }
        actions.push(Action::Add(add));
    }
    for (view, _) in &touched {
        let remove: Remove = view.remove_action(true);
        #[allow(deprecated)]
        let mut add: Add = view.add_action();
        add.data_change = true;
        add.modification_time = chrono::Utc::now().timestamp_millis();
        loosen_bounds(&mut add);
        add.deletion_vector = Some(descriptors.next().expect("one descriptor per bitmap"));
        actions.push(Action::Remove(remove));
        actions.push(Action::Add(add));
    }

    let m = &changes.metrics;
    let mut info = json!({"keys_run": changes.run, "job_id": changes.job_id});
    if let Some(anchor) = &changes.anchor {
        info["audit"] = anchor.clone();
    }
    let metrics = json!({
        "numSourceRows": m.source_rows.to_string(),
        "numTargetRowsInserted": m.rows_inserted.to_string(),
        "numTargetRowsUpdated": m.rows_updated.to_string(),
        "numTargetRowsDeleted": m.rows_deleted.to_string(),
        "numTargetRowsCopied": m.rows_copied.to_string(),
        "numTargetFilesAdded": m.files_added.to_string(),
        "numTargetFilesRemoved": m.files_removed.to_string(),
        "numTargetDeletionVectorsAdded": m.deletion_vectors.to_string(),
    });
    let properties = CommitProperties::default().with_metadata([
        (COMMIT_INFO_KEY.to_owned(), info),
        ("operationMetrics".to_owned(), metrics),
    ]);
    // The commit read the whole table: any concurrent data commit conflicts
    // with it (the caller resolves again).
    let merge = Some("target.id = source.id".to_owned());
    let version = commit_reading_whole_table(table, name, actions, properties, merge).await?;
    table.load().await.map_err(LakeError::delta(name))?;
    Ok(Some(version))
}

/// Min/max statistics of a file with deleted rows bound only the live ones.
fn loosen_bounds(add: &mut Add) {
    if let Some(stats) = &add.stats
        && let Ok(mut value) = serde_json::from_str::<serde_json::Value>(stats)
        && let Some(object) = value.as_object_mut()
    {
        object.insert("tightBounds".into(), false.into());
        add.stats = Some(value.to_string());
    }
}
