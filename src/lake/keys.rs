//! Which (id, meta.lastUpdated) keys a table already holds.
//!
//! Loads classify every incoming row against this index instead of asking
//! Delta per row: only the key columns are scanned, and ids are kept as
//! 128-bit hashes (24 bytes a row), so a 10M-row table's index fits in
//! ~300 MB. A 128-bit collision between distinct ids is vanishingly unlikely
//! (about 1e-25 at 10M ids).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::LakeError;

/// How a table keeps versions of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// One row per id: the newest `meta.lastUpdated` wins.
    Current,
    /// One row per (id, meta.lastUpdated): every version is kept.
    History,
}

/// What an incoming row is, relative to the table and the rows before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Key not present: append.
    New,
    /// Id present with an older `meta.lastUpdated` (current mode): update.
    Newer,
    /// Same key present, or a newer version already is: nothing to do.
    Unchanged,
    /// A subset (`SUBSETTED`) newer than a stored full row (current mode):
    /// it must not replace the row, so it is not loaded.
    SubsetOfFull,
}

#[derive(Debug)]
pub struct KeyIndex {
    mode: LoadMode,
    /// Current mode: each id's newest `meta.lastUpdated`, and whether that
    /// row is a subset.
    latest: HashMap<u128, (i64, bool), Prehashed>,
    versions: HashSet<(u128, i64), Prehashed>,
}

/// Hasher for keys that are already xxh3 hashes of the id: their bits are
/// evenly spread, so hashing them again (std's SipHash) would only cost time
/// on every row of a load.
#[derive(Default, Clone, Copy)]
struct PrehashedKey(u64);

type Prehashed = BuildHasherDefault<PrehashedKey>;

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by the key types here; FNV-1a keeps it correct anyway.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 ^= id as u64 ^ (id >> 64) as u64;
    }

    fn write_i64(&mut self, last_updated: i64) {
        // Versions of one id differ only here: multiply to spread them.
        self.0 = (self.0 ^ last_updated as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn id_hash(id: &str) -> u128 {
    // Seeded per process: the index buckets by these bits directly
    // ([`PrehashedKey`]), so ids crafted to collide must not be predictable.
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0u64)
    });
    xxhash_rust::xxh3::xxh3_128_with_seed(id.as_bytes(), *SEED)
}

impl KeyIndex {
    pub fn new(mode: LoadMode) -> Self {
        Self {
            mode,
            latest: HashMap::default(),
            versions: HashSet::default(),
        }
    }

    pub fn len(&self) -> usize {
        match self.mode {
            LoadMode::Current => self.latest.len(),
            LoadMode::History => self.versions.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Classifies a row (`subsetted`: a `SUBSETTED` resource) and records
    /// it, so later rows see it. In current mode the newest version wins,
    /// except that a subset never replaces a full row, and a full row
    /// replaces a subset of the same instant.
    pub fn classify(&mut self, id: &str, last_updated: i64, subsetted: bool) -> KeyState {
        let key = id_hash(id);
        match self.mode {
            LoadMode::History => {
                if self.versions.insert((key, last_updated)) {
                    KeyState::New
                } else {
                    KeyState::Unchanged
                }
            }
            LoadMode::Current => match self.latest.get_mut(&key) {
                None => {
                    self.latest.insert(key, (last_updated, subsetted));
                    KeyState::New
                }
                Some((_, false)) if subsetted => KeyState::SubsetOfFull,
                Some(seen)
                    if last_updated > seen.0
                        || (last_updated == seen.0 && seen.1 && !subsetted) =>
                {
                    *seen = (last_updated, subsetted);
                    KeyState::Newer
                }
                Some(_) => KeyState::Unchanged,
            },
        }
    }

    fn record(&mut self, id: &str, last_updated: i64, subsetted: bool) {
        let key = id_hash(id);
        match self.mode {
            LoadMode::History => {
                self.versions.insert((key, last_updated));
            }
            LoadMode::Current => {
                let seen = self.latest.entry(key).or_insert((last_updated, subsetted));
                if last_updated > seen.0 {
                    *seen = (last_updated, subsetted);
                }
            }
        }
    }
}

/// Scans the key columns of `table` into an index.
pub async fn read_key_index(
    table: &DeltaTable,
    name: &str,
    mode: LoadMode,
) -> Result<KeyIndex, LakeError> {
    let mut index = KeyIndex::new(mode);
    let query_err = |source| LakeError::Query {
        table: name.to_owned(),
        source,
    };
    let arrow_err = |source| LakeError::Arrow {
        table: name.to_owned(),
        source,
    };
    let ctx = SessionContext::new();
    let provider = table.table_provider().await.map_err(query_err)?;
    ctx.register_table("t", provider).map_err(query_err)?;
    let frame = ctx
        .sql("SELECT id, meta_last_updated, _subsetted FROM t")
        .await
        .map_err(query_err)?;
    let mut stream = frame.execute_stream().await.map_err(query_err)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query_err)?;
        let ids = cast(batch.column(0), &DataType::Utf8).map_err(arrow_err)?;
        let times = cast(batch.column(1), &DataType::Int64).map_err(arrow_err)?;
        let ids = ids.as_string::<i32>();
        let times = times.as_primitive::<Int64Type>();
        let subsetted = batch.column(2).as_boolean();
        for row in 0..batch.num_rows() {
            if ids.is_valid(row) && times.is_valid(row) {
                let subset = subsetted.is_valid(row) && subsetted.value(row);
                index.record(ids.value(row), times.value(row), subset);
            }
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_mode_keeps_the_newest() {
        let mut index = KeyIndex::new(LoadMode::Current);
        assert_eq!(index.classify("a", 10, false), KeyState::New);
        assert_eq!(index.classify("a", 10, false), KeyState::Unchanged);
        assert_eq!(
            index.classify("a", 5, false),
            KeyState::Unchanged,
            "stale must not overwrite"
        );
        assert_eq!(index.classify("a", 20, false), KeyState::Newer);
        assert_eq!(index.classify("b", 1, false), KeyState::New);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_subset_never_replaces_a_full_row_and_a_full_row_replaces_a_subset() {
        let mut index = KeyIndex::new(LoadMode::Current);
        assert_eq!(index.classify("full", 10, false), KeyState::New);
        assert_eq!(index.classify("full", 20, true), KeyState::SubsetOfFull);
        assert_eq!(index.classify("full", 30, false), KeyState::Newer);
        // A subset first: kept (flagged), replaced by newer subsets, and by a
        // full row even of the same instant.
        assert_eq!(index.classify("part", 10, true), KeyState::New);
        assert_eq!(index.classify("part", 20, true), KeyState::Newer);
        assert_eq!(index.classify("part", 20, true), KeyState::Unchanged);
        assert_eq!(index.classify("part", 20, false), KeyState::Newer);
        assert_eq!(index.classify("part", 25, true), KeyState::SubsetOfFull);
    }

    #[test]
    fn history_mode_keeps_every_version() {
        let mut index = KeyIndex::new(LoadMode::History);
        assert_eq!(index.classify("a", 10, false), KeyState::New);
        assert_eq!(index.classify("a", 5, true), KeyState::New);
        assert_eq!(index.classify("a", 10, false), KeyState::Unchanged);
        assert_eq!(index.len(), 2);
    }
}
