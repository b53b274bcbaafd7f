//! Keeping the run count small: each load adds a run, and every lookup
//! asks each run's bloom filter. After a load, the newest runs are merged
//! into one while the run before them is not much larger than they are
//! together (size-tiered): runs then grow geometrically, their count stays
//! logarithmic in the loads, and an entry is rewritten O(log) times over
//! its life. The base run — a rebuild's, usually most of the table — is
//! merged only when the runs after it add up to a good part of it.
//!
//! Merging keeps, per key (per key and version in history mode), the entry
//! of the newest run: the one a lookup would find. Tombstones are kept —
//! they still reject versions older than the deletion.

use std::collections::HashMap;

use object_store::PutMode;

use super::run::{BLOCK_ENTRIES, Entry};
use super::{LakeError, OpenRun, RunMeta, Spill, TableIndex, corrupt, store_err};
use crate::lake::mode::LoadMode;

/// Runs a table keeps before the newest are merged.
const MAX_RUNS: usize = 8;
/// A run this many times the size of the runs after it is left alone.
const SIZE_RATIO: u64 = 4;
/// Blocks fetched per ranged read while merging.
const BLOCKS_PER_READ: usize = 64;

impl TableIndex {
    /// Merges the newest runs when there are more than [`MAX_RUNS`] (see
    /// the module header); records the new state.
    pub async fn compact(&mut self) -> Result<(), LakeError> {
        if self.runs.len() <= MAX_RUNS {
            return Ok(());
        }
        let first = merge_from(
            &self
                .runs
                .iter()
                .map(|r| r.tail.entries())
                .collect::<Vec<_>>(),
        );
        if self.runs.len() - first < 2 {
            return Ok(());
        }
        self.merge_runs(first).await
    }

    /// Merges every run into one (`fhirlake optimize`).
    pub async fn compact_all(&mut self) -> Result<(), LakeError> {
        if self.runs.len() < 2 {
            return Ok(());
        }
        self.merge_runs(0).await
    }

    async fn merge_runs(&mut self, first: usize) -> Result<(), LakeError> {
        let merging = first..self.runs.len();
        let mut cursors = Vec::with_capacity(merging.len());
        for at in merging.clone() {
            cursors.push(Cursor::new(at));
        }
        let expected: u64 = merging.clone().map(|at| self.runs[at].tail.entries()).sum();
        let mut out = self.local_run(expected as usize)?;
        // The merged run's files: those its entries name, as its own indexes.
        let mut files: Vec<String> = Vec::new();
        let mut file_of: HashMap<u32, u32> = HashMap::new();
        for cursor in cursors.iter_mut() {
            cursor.fill(self).await?;
        }
        while let Some(position) = cursors
            .iter()
            .filter_map(|c| c.peek().map(|e| self.position(e)))
            .min()
        {
            // The newest run holding the position decides; the others are shadowed.
            let mut chosen: Option<(usize, Entry)> = None;
            for cursor in cursors.iter_mut() {
                while let Some(entry) = cursor.peek()
                    && self.position(entry) == position
                {
                    let entry = *entry;
                    chosen = Some((cursor.run, entry));
                    cursor.advance(self).await?;
                }
            }
            let (run, mut entry) = chosen.expect("a cursor held the smallest position");
            if !entry.is_tombstone() {
                let global = self.runs[run].file_ids[entry.file as usize];
                let next = files.len() as u32;
                entry.file = *file_of.entry(global).or_insert_with(|| {
                    files.push(self.files[global as usize].clone());
                    next
                });
            } else {
                entry.file = 0;
            }
            out.push(entry)?;
        }
        let metas: Vec<RunMeta> = merging.clone().map(|at| self.runs[at].tail.meta).collect();
        let from = metas
            .iter()
            .map(|m| m.table_version_from)
            .min()
            .unwrap_or(0);
        let to = metas.iter().map(|m| m.table_version_to).max().unwrap_or(0);
        let path = self.upload_run(out, &files, (from, to)).await?;
        self.runs.truncate(first);
        self.cache.lock().expect("block cache").clear();
        self.add_run(path).await?;
        self.record_state(PutMode::Overwrite).await
    }

    /// Every tombstone of the open runs (a rebuild keeps them).
    pub(super) async fn tombstones_into(&self, spill: &mut Spill<Entry>) -> Result<(), LakeError> {
        for at in 0..self.runs.len() {
            let mut cursor = Cursor::new(at);
            cursor.fill(self).await?;
            while let Some(entry) = cursor.peek() {
                if entry.is_tombstone() {
                    spill
                        .push(*entry)
                        .map_err(|e| corrupt(&self.table, format!("spilling keys: {e}")))?;
                }
                cursor.advance(self).await?;
            }
        }
        Ok(())
    }

    /// What two entries must share to be the same for a lookup.
    fn position(&self, entry: &Entry) -> (u128, i64) {
        match self.mode {
            LoadMode::Current => (entry.key, 0),
            LoadMode::History => (entry.key, entry.last_updated),
        }
    }
}

/// Where the merge of the newest runs starts, given each run's entries
/// (oldest first): back from the newest while the run before is at most
/// [`SIZE_RATIO`] times the runs after it together.
fn merge_from(entries: &[u64]) -> usize {
    let mut first = entries.len().saturating_sub(1);
    let mut total = entries.last().copied().unwrap_or(0);
    while first > 0 && entries[first - 1] <= SIZE_RATIO * total.max(1) {
        first -= 1;
        total += entries[first];
    }
    // Past the limit however the sizes fall: merge at least the newest two.
    first.min(entries.len().saturating_sub(2))
}

/// Reads one run's entries in order, a few ranged reads at a time.
struct Cursor {
    run: usize,
    next_block: usize,
    entries: Vec<Entry>,
    at: usize,
}

impl Cursor {
    fn new(run: usize) -> Self {
        Cursor {
            run,
            next_block: 0,
            entries: Vec::new(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<&Entry> {
        self.entries.get(self.at)
    }

    async fn advance(&mut self, index: &TableIndex) -> Result<(), LakeError> {
        self.at += 1;
        if self.at >= self.entries.len() {
            self.fill(index).await?;
        }
        Ok(())
    }

    /// Decodes the next blocks (none left: the cursor is exhausted).
    async fn fill(&mut self, index: &TableIndex) -> Result<(), LakeError> {
        let run: &OpenRun = &index.runs[self.run];
        self.entries.clear();
        self.at = 0;
        let blocks = self.next_block..(self.next_block + BLOCKS_PER_READ).min(run.tail.blocks());
        if blocks.is_empty() {
            return Ok(());
        }
        self.next_block = blocks.end;
        let location = index.lake.path(&run.path);
        let ranges: Vec<std::ops::Range<u64>> =
            blocks.clone().map(|b| run.tail.block_range(b)).collect();
        let bytes = index
            .lake
            .store()
            .get_ranges(&location, &ranges)
            .await
            .map_err(store_err(&location))?;
        self.entries.reserve(blocks.len() * BLOCK_ENTRIES);
        for (block, data) in blocks.zip(bytes) {
            let decoded = run
                .tail
                .decode_block(block, &data)
                .map_err(|e| corrupt(&index.table, format!("run {}: {e}", run.path)))?;
            self.entries.extend(decoded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_runs_merge_while_the_one_before_is_not_much_larger() {
        // A base of 10M and nine loads of 1k: the loads merge, the base stays.
        let mut runs = vec![10_000_000];
        runs.extend([1_000; 9]);
        assert_eq!(merge_from(&runs), 1);
        assert_eq!(merge_from(&[10_000_000, 3_000_000, 1_000, 1_000]), 2);
        // Merged loads grow until the base is within reach.
        assert_eq!(merge_from(&[10_000_000, 3_000_000, 1_000_000]), 0);
        // The newest run larger than all before it: everything merges.
        assert_eq!(merge_from(&[1, 10, 100, 1_000]), 0);
        // A base far larger than a lone newest run: still the newest two.
        assert_eq!(merge_from(&[10_000_000, 1, 1]), 1);
    }
}
