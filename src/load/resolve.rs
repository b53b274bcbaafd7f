//! A type table's commit, decided: from the job's sorted keys (and the
//! server's deletions), which staged rows win, which rows — staged or stored —
//! are deleted by deletion vectors, the run of index entries that describes
//! the table afterwards, and the counts that change.
//!
//! ```text
//!  sorted job keys ─▶ groups (one id; one id+version in history mode) ─┐
//!  deletions by id (current mode) ──────────────────────────────────────┴▶ merged in key order
//!    ─▶ per group: replay (keys::resolve) ─▶ winner entry │ loser rows │ superseded stored row │ recounts
//!    ─▶ run written (ascending keys) ─▶ Changes for lake::commit_changes
//! ```
//! After a lost commit race the same keys resolve again against what the
//! winner stored (the index's runs added since the job read the table).

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringTreemap;

use super::LoadError;
use super::keys::{
    Class, JobKey, Outcome, Recounts, SameVersion, Stored, add_recounts, entry_of, resolve,
};
use crate::lake::{
    Changes, Entry, FileId, Hit, LakeError, LocalRun, Spill, StagedFile, TableIndex, UpdateMetrics,
};

/// Groups resolved per lookup batch (lookups in the index go in batches).
const BATCH: usize = 4096;

/// What the job's reading of the table is worth when it resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// The table is as the job read it.
    AsRead,
    /// A concurrent writer committed since: the index's runs from this one
    /// on are its; keys they hold were changed, the others are as read.
    Since(usize),
    /// The index was rebuilt since: look every key up again.
    All,
}

/// A deletion to apply in current mode.
#[derive(Debug, Clone, Copy)]
pub struct KeyDeletion {
    pub key: u128,
    pub deleted_at: i64,
}

/// What resolving a table decided.
pub struct Resolution {
    pub changes: Changes,
    /// The index entries of the table's rows this commit sets, written
    /// locally in key order (uploaded before the commit names them).
    pub run: Option<LocalRun>,
    pub recounts: Recounts,
    /// Versions of the job that lost, (key, lastUpdated): own-table views drop their rows.
    pub losers: Vec<(u128, i64)>,
}

/// Which staged file, and which row of it, staged position `seq` is.
fn staged_place(starts: &[u64], seq: u64) -> (usize, u32) {
    let file = starts.partition_point(|&start| start <= seq) - 1;
    (file, (seq - starts[file]) as u32)
}

struct Resolver<'a> {
    index: &'a TableIndex,
    fresh: Fresh,
    starts: Vec<u64>,
    staged_deleted: Vec<RoaringTreemap>,
    stored_deleted: BTreeMap<FileId, RoaringTreemap>,
    run: LocalRun,
    recounts: Recounts,
    losers: Vec<(u128, i64)>,
    metrics: UpdateMetrics,
}

impl Resolver<'_> {
    fn delete_staged(&mut self, seq: u64) {
        let (file, row) = staged_place(&self.starts, seq);
        self.staged_deleted[file].insert(u64::from(row));
    }

    fn delete_stored(&mut self, file: FileId, row: u32) {
        self.stored_deleted
            .entry(file)
            .or_default()
            .insert(u64::from(row));
    }

    /// Applies one group's outcome, and a deletion of its id if any.
    fn apply(
        &mut self,
        group: &[JobKey],
        outcome: Outcome,
        stored: Option<(Stored, u32, u32)>,
        deletion: Option<i64>,
    ) -> Result<(), LakeError> {
        add_recounts(&mut self.recounts, &outcome);
        for seq in &outcome.losers {
            self.delete_staged(*seq);
            if let Some(row) = group.iter().find(|r| r.seq == *seq) {
                self.losers.push((row.key, row.last_updated));
            }
        }
        if let Some((file, row)) = outcome.supersedes {
            self.delete_stored(file, row);
        }
        // What the table holds for the key afterwards, before any deletion.
        let current = match &outcome.winner {
            Some(w) => Some((w.last_updated, Some(w.seq), None)),
            None => stored
                .filter(|(s, _, _)| !s.tombstone)
                .map(|(s, file, row)| (s.last_updated, None, Some((file, row)))),
        };
        match outcome.winner_class {
            Some(Class::Newer) => self.metrics.rows_updated += 1,
            Some(_) => self.metrics.rows_inserted += 1,
            None => {}
        }
        if let (Some(deleted_at), Some((t, seq, place))) = (deletion, current)
            && t <= deleted_at
        {
            match (seq, place) {
                (Some(seq), _) => self.delete_staged(seq),
                (None, Some((file, row))) => self.delete_stored(file, row),
                (None, None) => {}
            }
            self.metrics.rows_deleted += 1;
            if let Some(first) = group.first() {
                return self.run.push(tombstone(first.key, deleted_at));
            }
            return Ok(());
        }
        if let Some(winner) = outcome.winner {
            let (file, row) = staged_place(&self.starts, winner.seq);
            self.run.push(entry_of(&winner, file as u32, row))?;
        }
        Ok(())
    }

    /// A deletion of an id the job has no row of.
    fn apply_deletion(
        &mut self,
        key: u128,
        deleted_at: i64,
        hit: Option<Hit>,
    ) -> Result<(), LakeError> {
        let Some(hit) = hit.filter(|h| !h.tombstone()) else {
            return Ok(());
        };
        if hit.last_updated > deleted_at {
            return Ok(());
        }
        self.delete_stored(hit.file, hit.row);
        self.metrics.rows_deleted += 1;
        self.run.push(tombstone(key, deleted_at))
    }
}

fn tombstone(key: u128, deleted_at: i64) -> Entry {
    Entry {
        key,
        last_updated: deleted_at,
        file: 0,
        row: 0,
        flags: Entry::TOMBSTONE,
    }
}

fn stored_of(hit: &Hit) -> (Stored, u32, u32) {
    (Stored::from(hit), hit.file, hit.row)
}

/// Resolves a table's commit. `deletions` (current mode) must be sorted by key.
pub async fn resolve_table(
    index: &TableIndex,
    keys: &mut Spill<JobKey>,
    staged: &[StagedFile],
    deletions: &[KeyDeletion],
    fresh: Fresh,
    same: SameVersion,
) -> Result<Resolution, LoadError> {
    let mode = index.mode();
    let mut starts = Vec::with_capacity(staged.len());
    let mut at = 0;
    for file in staged {
        starts.push(at);
        at += file.rows;
    }
    let mut resolver = Resolver {
        index,
        fresh,
        starts,
        staged_deleted: vec![RoaringTreemap::new(); staged.len()],
        stored_deleted: BTreeMap::new(),
        run: index.local_run(keys.len() as usize + deletions.len())?,
        recounts: Recounts::new(),
        losers: Vec::new(),
        metrics: UpdateMetrics {
            source_rows: at,
            files_added: staged.len() as u64,
            ..Default::default()
        },
    };
    // What the table holds now for each deleted id.
    let deletion_hits: HashMap<u128, Hit> = if deletions.is_empty() {
        HashMap::new()
    } else {
        let lookups: Vec<(u128, i64)> = deletions.iter().map(|d| (d.key, 0)).collect();
        let hits = index.lookup(&lookups).await?;
        deletions
            .iter()
            .zip(hits)
            .filter_map(|(d, h)| h.map(|h| (d.key, h)))
            .collect()
    };
    let io = |e: std::io::Error| LoadError::Lake(Box::new(index_error(index, e)));
    let mut sorted = keys.sorted().map_err(io)?;
    let mut pending = sorted.next_record().map_err(io)?;
    let mut next_deletion = 0;
    let mut groups: Vec<Vec<JobKey>> = Vec::with_capacity(BATCH);
    loop {
        // Gather a batch of groups in key order.
        groups.clear();
        while groups.len() < BATCH {
            let Some(first) = pending.take() else { break };
            let mut group = vec![first];
            loop {
                pending = sorted.next_record().map_err(io)?;
                match pending {
                    Some(k) if k.key == first.key && k.version == first.version => group.push(k),
                    _ => break,
                }
            }
            group.sort_by_key(|k| k.order);
            groups.push(group);
        }
        if groups.is_empty() {
            break;
        }
        // After a lost race, the winners' runs say what is stored now.
        let wanted = || -> Vec<(u128, i64)> {
            groups
                .iter()
                .map(|g| (g[0].key, g[0].last_updated))
                .collect()
        };
        let fresh: Vec<Option<Hit>> = match resolver.fresh {
            Fresh::AsRead => vec![None; groups.len()],
            Fresh::Since(from) => resolver.index.lookup_from(from, &wanted()).await?,
            Fresh::All => resolver.index.lookup(&wanted()).await?,
        };
        for (group, fresh) in groups.iter().zip(fresh) {
            let key = group[0].key;
            // Deletions of ids before this one, which the job has no row of.
            while next_deletion < deletions.len() && deletions[next_deletion].key < key {
                let d = deletions[next_deletion];
                resolver.apply_deletion(d.key, d.deleted_at, deletion_hits.get(&d.key).copied())?;
                next_deletion += 1;
            }
            let mut deletion = None;
            while next_deletion < deletions.len() && deletions[next_deletion].key == key {
                let at = deletions[next_deletion].deleted_at;
                deletion = Some(deletion.map_or(at, |d: i64| d.max(at)));
                next_deletion += 1;
            }
            let stored = match resolver.fresh {
                Fresh::All => fresh.as_ref().map(stored_of),
                _ => fresh.as_ref().map(stored_of).or(group[0].stored),
            };
            let outcome = resolve(mode, same, stored, group);
            resolver.apply(group, outcome, stored, deletion)?;
        }
    }
    while next_deletion < deletions.len() {
        let d = deletions[next_deletion];
        resolver.apply_deletion(d.key, d.deleted_at, deletion_hits.get(&d.key).copied())?;
        next_deletion += 1;
    }
    resolver.metrics.deletion_vectors = resolver
        .staged_deleted
        .iter()
        .filter(|r| !r.is_empty())
        .count() as u64
        + resolver.stored_deleted.len() as u64;
    let stored_deleted = resolver
        .stored_deleted
        .into_iter()
        .map(|(file, rows)| (index.file_path(file).to_owned(), rows))
        .collect();
    Ok(Resolution {
        changes: Changes {
            staged: staged.to_vec(),
            staged_deleted: resolver.staged_deleted,
            stored_deleted,
            run: None,
            job_id: String::new(),
            anchor: None,
            metrics: resolver.metrics,
        },
        run: Some(resolver.run),
        recounts: resolver.recounts,
        losers: resolver.losers,
    })
}

fn index_error(index: &TableIndex, e: std::io::Error) -> LakeError {
    LakeError::Index {
        table: index.table_name().to_owned(),
        detail: format!("reading the job's keys back: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_positions_map_to_files_and_rows() {
        let starts = [0, 10, 25];
        assert_eq!(staged_place(&starts, 0), (0, 0));
        assert_eq!(staged_place(&starts, 9), (0, 9));
        assert_eq!(staged_place(&starts, 10), (1, 0));
        assert_eq!(staged_place(&starts, 30), (2, 5));
    }
}
