//! Where the current row of each resource id lives: a persistent key index
//! per table, so a load of N rows into a table of M rows looks up N keys
//! instead of reading M.
//!
//! ```text
//!  _fhirlake/index/<table>/runs/<uuid>.run        immutable sorted runs (key, lastUpdated, file, row, flags)
//!  _fhirlake/index/<table>/state-<version>.json   the runs that together cover table versions 0..=version
//! ```
//! A load's commit names the run it wrote in its Delta `commitInfo`
//! (`fhirlake.keys_run`), so a run is part of the table exactly when the
//! commit that names it landed: a crash leaves at worst an unreferenced run.
//! Opening the index reads the newest state at or below the table's version
//! and then the commits after it: a named run is added; a commit that only
//! changes metadata changes nothing; a compaction (files rewritten with
//! `dataChange = false`, e.g. OPTIMIZE by any engine) is indexed by reading
//! the files it added; anything else (a writer that is not fhirlake) rebuilds
//! the index from the table's files. The newest run holding a key wins.
//!
//! Keys are the xxh3-128 of the id: a collision between two of 100 million
//! ids is about 1e-23 likely. (Not seeded by the table's Delta id: a table
//! whose metadata is replaced keeps its rows, and its runs must stay valid.)

mod bloom;
mod compact;
mod run;
mod spill;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::kernel::LogicalFileView;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

pub use run::{BlockView, Entry, Footer, RunMeta, RunMode, RunTail, RunWriter};
pub use spill::{Record, Sorted, Spill};

use super::mode::LoadMode;
use super::object_reader::ObjectReader;
use super::{Lake, LakeError, dv};

pub const INDEX_DIR: &str = "_fhirlake/index";
/// The `commitInfo` member naming the run a commit's rows are indexed in.
pub const COMMIT_INFO_KEY: &str = "fhirlake";

/// A data file's id within one opened index.
pub type FileId = u32;

/// Where a key's current row (or its tombstone) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub last_updated: i64,
    pub flags: u8,
    pub file: FileId,
    pub row: u32,
}

impl Hit {
    pub fn subsetted(&self) -> bool {
        self.flags & Entry::SUBSETTED != 0
    }

    pub fn tombstone(&self) -> bool {
        self.flags & Entry::TOMBSTONE != 0
    }
}

/// What a state file says: the runs (oldest first) covering versions 0..=version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    table_id: String,
    version: i64,
    mode: LoadMode,
    runs: Vec<String>,
}

/// One run, its tail in memory.
struct OpenRun {
    /// Relative to the lake root.
    path: String,
    tail: RunTail,
    /// The run's file indexes, as this index's file ids.
    file_ids: Vec<FileId>,
}

/// The key index of one table, opened at a table version.
pub struct TableIndex {
    lake: Lake,
    table: String,
    mode: LoadMode,
    table_id: String,
    /// The table version the runs cover (`None`: the table has no version yet).
    version: Option<i64>,
    /// The version of the newest state recorded or read.
    state_version: Option<i64>,
    runs: Vec<OpenRun>,
    files: Vec<String>,
    file_ids: HashMap<String, FileId>,
    /// Opened blocks, by (run, block), bounded.
    cache: Mutex<BlockCache>,
}

/// Opened blocks kept for later lookups (a re-run meets the same blocks);
/// ~11 KB each.
const CACHED_BLOCKS: usize = 4096;

/// Versions between recorded states.
const STATE_EVERY: i64 = 16;

/// Bytes read from a run's end when it is opened.
const SUFFIX_READ: u64 = 256 << 10;

type BlockCache = HashMap<(usize, usize), Arc<BlockView<'static>>>;

fn store_err(path: &ObjectPath) -> impl Fn(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Store {
        path: path.to_string(),
        source,
    }
}

/// A run or state that is gone or unreadable: the index is rebuilt from
/// the table, which is the truth.
fn is_damage(error: &LakeError) -> bool {
    matches!(
        error,
        LakeError::Index { .. }
            | LakeError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
    )
}

fn corrupt(table: &str, what: String) -> LakeError {
    LakeError::Index {
        table: table.to_owned(),
        detail: what,
    }
}

impl TableIndex {
    /// The index of `table` as of its loaded version; catches up with
    /// commits made since the last state, or rebuilds from the files.
    pub async fn open(
        lake: &Lake,
        table: &DeltaTable,
        name: &str,
        mode: LoadMode,
    ) -> Result<Self, LakeError> {
        let table_id = match table.version() {
            Some(_) => table
                .snapshot()
                .map_err(LakeError::delta(name))?
                .metadata()
                .id()
                .to_owned(),
            None => String::new(),
        };
        let mut index = Self {
            lake: lake.holding(name).clone(),
            table: name.to_owned(),
            mode,
            table_id,
            version: None,
            state_version: None,
            runs: Vec::new(),
            files: Vec::new(),
            file_ids: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
        };
        let Some(current) = table.version() else {
            return Ok(index);
        };
        let restored = async {
            if let Some(state) = index.newest_state(current as i64).await? {
                for run in &state.runs {
                    index.add_run(run.clone()).await?;
                }
                index.version = Some(state.version);
                index.state_version = Some(state.version);
            }
            Ok(())
        }
        .await;
        match restored {
            Ok(()) => {
                index.catch_up(table).await?;
            }
            Err(e) if is_damage(&e) => index.rebuild(table).await?,
            Err(e) => return Err(e),
        }
        Ok(index)
    }

    pub fn mode(&self) -> LoadMode {
        self.mode
    }

    /// Deletes the index objects of `name` no reader needs: states older
    /// than the newest, and runs it does not name, once older than
    /// `retain` (a run a commit names but no state yet — a crash between
    /// the two — is young; should one go anyway, the next load rebuilds).
    /// Returns the objects deleted (or, with `dry_run`, that would be).
    pub async fn vacuum(
        lake: &Lake,
        name: &str,
        retain: chrono::Duration,
        dry_run: bool,
    ) -> Result<usize, LakeError> {
        let lake = lake.holding(name);
        let prefix = lake.path(&format!("{INDEX_DIR}/{name}"));
        let objects: Vec<object_store::ObjectMeta> = lake
            .store()
            .list(Some(&prefix))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(store_err(&prefix))?;
        let is_state = |o: &&object_store::ObjectMeta| {
            o.location
                .filename()
                .is_some_and(|n| n.starts_with("state-"))
        };
        let Some(newest) = objects.iter().filter(is_state).map(|o| &o.location).max() else {
            return Ok(0);
        };
        let result = lake.store().get(newest).await.map_err(store_err(newest))?;
        let bytes = result.bytes().await.map_err(store_err(newest))?;
        let Ok(state) = serde_json::from_slice::<State>(&bytes) else {
            return Ok(0);
        };
        let named: std::collections::HashSet<ObjectPath> =
            state.runs.iter().map(|r| lake.path(r)).collect();
        let cutoff = chrono::Utc::now() - retain;
        let doomed: Vec<&object_store::ObjectMeta> = objects
            .iter()
            .filter(|o| o.last_modified < cutoff && o.location != *newest)
            .filter(|o| is_state(o) || !named.contains(&o.location))
            .collect();
        if !dry_run {
            for object in &doomed {
                match lake.store().delete(&object.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(&object.location)(e)),
                }
            }
        }
        Ok(doomed.len())
    }

    /// The mode of the newest state of `name`'s index, if it has one.
    pub async fn stored_mode(lake: &Lake, name: &str) -> Result<Option<LoadMode>, LakeError> {
        let lake = lake.holding(name);
        let prefix = lake.path(&format!("{INDEX_DIR}/{name}"));
        let listing = lake
            .store()
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(store_err(&prefix))?;
        let Some(newest) = listing
            .objects
            .iter()
            .filter(|o| {
                o.location
                    .filename()
                    .is_some_and(|n| n.starts_with("state-"))
            })
            .map(|o| &o.location)
            .max()
        else {
            return Ok(None);
        };
        let result = lake.store().get(newest).await.map_err(store_err(newest))?;
        let bytes = result.bytes().await.map_err(store_err(newest))?;
        Ok(serde_json::from_slice::<State>(&bytes).ok().map(|s| s.mode))
    }

    /// The table version the index covers.
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// The key of a resource id in this table.
    pub fn key_of(&self, id: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(id.as_bytes())
    }

    /// The path (relative to the table) of a file id.
    pub fn file_path(&self, file: FileId) -> &str {
        &self.files[file as usize]
    }

    /// The id of a data file, registering it if new.
    pub fn file_id(&mut self, path: &str) -> FileId {
        if let Some(id) = self.file_ids.get(path) {
            return *id;
        }
        let id = self.files.len() as FileId;
        self.files.push(path.to_owned());
        self.file_ids.insert(path.to_owned(), id);
        id
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    pub fn entries(&self) -> u64 {
        self.runs.iter().map(|r| r.tail.entries()).sum()
    }

    /// Bytes the open runs hold in memory (bloom filters, block indexes).
    pub fn memory_bytes(&self) -> usize {
        self.runs.iter().map(|r| r.tail.memory_bytes()).sum()
    }

    fn dir(&self) -> String {
        format!("{INDEX_DIR}/{}", self.table)
    }

    async fn newest_state(&self, at_most: i64) -> Result<Option<State>, LakeError> {
        let prefix = self.lake.path(&self.dir());
        let listing = self
            .lake
            .store()
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(store_err(&prefix))?;
        let mut versions: Vec<i64> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename())
            .filter_map(|n| {
                n.strip_prefix("state-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .filter(|v| *v <= at_most)
            .collect();
        versions.sort_unstable();
        for version in versions.into_iter().rev() {
            let path = self
                .lake
                .path(&format!("{}/state-{version:020}.json", self.dir()));
            let bytes = self.get(&path).await?;
            let Ok(state) = serde_json::from_slice::<State>(&bytes) else {
                continue;
            };
            if state.table_id == self.table_id && state.mode == self.mode {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }

    async fn get(&self, path: &ObjectPath) -> Result<bytes::Bytes, LakeError> {
        let result = self.lake.store().get(path).await.map_err(store_err(path))?;
        result.bytes().await.map_err(store_err(path))
    }

    /// Opens the run at `path` (relative to the lake) as the newest.
    async fn add_run(&mut self, path: String) -> Result<(), LakeError> {
        let location = self.lake.path(&path);
        let store = self.lake.store().clone();
        let bad = |e: run::RunError| corrupt(&self.table, format!("run {path}: {e}"));
        // One read of the object's end holds the footer and, for most runs,
        // the whole tail.
        let options = GetOptions {
            range: Some(GetRange::Suffix(SUFFIX_READ)),
            ..Default::default()
        };
        let result = store
            .get_opts(&location, options)
            .await
            .map_err(store_err(&location))?;
        let (size, start) = (result.meta.size, result.range.start);
        let suffix = result.bytes().await.map_err(store_err(&location))?;
        let footer = Footer::parse(&suffix).map_err(bad)?;
        if footer.object_len() != size {
            return Err(corrupt(
                &self.table,
                format!(
                    "run {path} is {size} bytes, its footer says {}",
                    footer.object_len()
                ),
            ));
        }
        let range = footer.tail_range();
        let tail_bytes = match range.start >= start {
            true => suffix.slice((range.start - start) as usize..(range.end - start) as usize),
            false => store
                .get_range(&location, range)
                .await
                .map_err(store_err(&location))?,
        };
        let tail = RunTail::parse(&footer, &tail_bytes).map_err(bad)?;
        let file_ids = tail.files.iter().map(|f| self.file_id(f)).collect();
        self.runs.push(OpenRun {
            path,
            tail,
            file_ids,
        });
        Ok(())
    }

    /// Looks up `keys` (with, in history mode, the version wanted): the
    /// newest run holding each one decides.
    pub async fn lookup(&self, keys: &[(u128, i64)]) -> Result<Vec<Option<Hit>>, LakeError> {
        self.lookup_from(0, keys).await
    }

    /// [`TableIndex::lookup`] in the runs from `first` on only (the ones a
    /// concurrent writer added since a job read the table).
    pub async fn lookup_from(
        &self,
        first: usize,
        keys: &[(u128, i64)],
    ) -> Result<Vec<Option<Hit>>, LakeError> {
        let mut found: Vec<Option<Hit>> = vec![None; keys.len()];
        let mut open: Vec<usize> = (0..keys.len()).collect();
        let mut entries = Vec::new();
        for at in (first.min(self.runs.len())..self.runs.len()).rev() {
            if open.is_empty() {
                break;
            }
            let run = &self.runs[at];
            // Which block the bloom filter and block index send each open key to.
            let mut wanted: Vec<(usize, usize)> = Vec::new();
            for &k in &open {
                let (key, t) = keys[k];
                if !run.tail.may_contain(key) {
                    continue;
                }
                let block = match self.mode {
                    LoadMode::Current => run.tail.blocks_for_key(key).next_back(),
                    LoadMode::History => run.tail.block_for(key, t),
                };
                if let Some(block) = block {
                    wanted.push((k, block));
                }
            }
            if wanted.is_empty() {
                continue;
            }
            let blocks = self.blocks(at, wanted.iter().map(|(_, b)| *b)).await?;
            let bad = |e: run::RunError| corrupt(&self.table, format!("run {}: {e}", run.path));
            let mut resolved = Vec::new();
            for (k, block) in wanted {
                let (key, t) = keys[k];
                entries.clear();
                blocks[&block].find_into(key, &mut entries).map_err(bad)?;
                let hit = match self.mode {
                    LoadMode::Current => entries.last(),
                    LoadMode::History => entries.iter().find(|e| e.last_updated == t),
                };
                let Some(entry) = hit else { continue };
                let file = match entry.is_tombstone() {
                    true => 0,
                    false => *run.file_ids.get(entry.file as usize).ok_or_else(|| {
                        corrupt(
                            &self.table,
                            format!("run {} names a file it does not list", run.path),
                        )
                    })?,
                };
                found[k] = Some(Hit {
                    last_updated: entry.last_updated,
                    flags: entry.flags,
                    file,
                    row: entry.row,
                });
                resolved.push(k);
            }
            open.retain(|k| !resolved.contains(k));
        }
        Ok(found)
    }

    /// The opened blocks of run `at`, the missing ones fetched in one
    /// coalesced read.
    async fn blocks(
        &self,
        at: usize,
        wanted: impl Iterator<Item = usize>,
    ) -> Result<HashMap<usize, Arc<BlockView<'static>>>, LakeError> {
        let run = &self.runs[at];
        let mut out = HashMap::new();
        let mut missing: Vec<usize> = Vec::new();
        {
            let cache = self.cache.lock().expect("block cache");
            for block in wanted {
                if out.contains_key(&block) || missing.contains(&block) {
                    continue;
                }
                match cache.get(&(at, block)) {
                    Some(view) => {
                        out.insert(block, view.clone());
                    }
                    None => missing.push(block),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        missing.sort_unstable();
        let location = self.lake.path(&run.path);
        let ranges: Vec<std::ops::Range<u64>> =
            missing.iter().map(|b| run.tail.block_range(*b)).collect();
        let bytes = self
            .lake
            .store()
            .get_ranges(&location, &ranges)
            .await
            .map_err(store_err(&location))?;
        let mut cache = self.cache.lock().expect("block cache");
        if cache.len() > CACHED_BLOCKS {
            cache.clear();
        }
        for (block, data) in missing.into_iter().zip(bytes) {
            let view = run
                .tail
                .open_block(block, &data)
                .map_err(|e| corrupt(&self.table, format!("run {}: {e}", run.path)))?;
            let view = Arc::new(view.into_owned());
            cache.insert((at, block), view.clone());
            out.insert(block, view);
        }
        Ok(out)
    }

    /// Brings the index up to `table`'s loaded version (see the module
    /// header); true when it had to be rebuilt from the table's files.
    pub async fn catch_up(&mut self, table: &DeltaTable) -> Result<bool, LakeError> {
        match self.follow_log(table).await {
            Err(e) if is_damage(&e) => self.rebuild(table).await.map(|()| true),
            other => other,
        }
    }

    async fn follow_log(&mut self, table: &DeltaTable) -> Result<bool, LakeError> {
        let Some(target) = table.version().map(|v| v as i64) else {
            return Ok(false);
        };
        let from = self.version.map_or(0, |v| v + 1);
        for version in from..=target {
            match self.read_commit(version).await? {
                Commit::Run(path) => self.add_run(path).await?,
                Commit::NoData => {}
                Commit::Compaction(added) => {
                    // The added files that are still live, read with their
                    // current deletion vectors; later commits' runs follow.
                    let snapshot = table.snapshot().map_err(LakeError::delta(&self.table))?;
                    let live: Vec<LogicalFileView> = snapshot
                        .log_data()
                        .iter()
                        .filter(|f| added.iter().any(|a| *a == f.path()))
                        .collect();
                    if !live.is_empty() {
                        let path = self
                            .index_files(table, &live, (version, version), Spill::new(1 << 20))
                            .await?;
                        self.add_run(path).await?;
                    }
                }
                Commit::Other | Commit::Missing => return self.rebuild(table).await.map(|()| true),
            }
            self.version = Some(version);
        }
        // A state every few versions: opening replays at most that many
        // commits, and a feed committing every second does not leave an
        // object per commit behind.
        let stale = match self.state_version {
            None => true,
            Some(recorded) => self.version.unwrap_or(0) - recorded >= STATE_EVERY,
        };
        if self.version == Some(target) && from <= target && stale {
            self.record_state(PutMode::Create).await?;
        }
        Ok(false)
    }

    async fn read_commit(&self, version: i64) -> Result<Commit, LakeError> {
        let path = self
            .lake
            .path(&format!("{}/_delta_log/{version:020}.json", self.table));
        let bytes = match self.lake.store().get(&path).await {
            Ok(result) => result.bytes().await.map_err(store_err(&path))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Commit::Missing),
            Err(e) => return Err(store_err(&path)(e)),
        };
        Ok(Commit::classify(&bytes))
    }

    /// Writes the state naming the open runs at the covered version: after
    /// a catch-up put-if-absent (another writer's state of that version is
    /// as good), after a compaction over it (fewer runs, same rows).
    async fn record_state(&mut self, mode: PutMode) -> Result<(), LakeError> {
        let Some(version) = self.version else {
            return Ok(());
        };
        self.state_version = Some(version);
        let state = State {
            table_id: self.table_id.clone(),
            version,
            mode: self.mode,
            runs: self.runs.iter().map(|r| r.path.clone()).collect(),
        };
        let path = self
            .lake
            .path(&format!("{}/state-{version:020}.json", self.dir()));
        let body = serde_json::to_vec(&state).expect("state serializes");
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .lake
            .store()
            .put_opts(&path, PutPayload::from(body), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(store_err(&path)(e)),
        }
    }

    /// Forgets every run and indexes every live row of the table's files.
    /// Deletions the runs remember are kept (the table's rows cannot say
    /// that an id was deleted, and when): a stored row of the id outranks one.
    pub async fn rebuild(&mut self, table: &DeltaTable) -> Result<(), LakeError> {
        let mut entries: Spill<Entry> = Spill::new(1 << 20);
        if let Err(e) = self.tombstones_into(&mut entries).await {
            if !is_damage(&e) {
                return Err(e);
            }
            // A damaged run's deletions are lost with it.
            entries = Spill::new(1 << 20);
        }
        self.runs.clear();
        self.cache.lock().expect("block cache").clear();
        let Some(version) = table.version().map(|v| v as i64) else {
            self.version = None;
            return Ok(());
        };
        let snapshot = table.snapshot().map_err(LakeError::delta(&self.table))?;
        let files: Vec<LogicalFileView> = snapshot.log_data().iter().collect();
        if !files.is_empty() || !entries.is_empty() {
            let path = self
                .index_files(table, &files, (0, version), entries)
                .await?;
            self.add_run(path).await?;
        }
        self.version = Some(version);
        self.record_state(PutMode::Overwrite).await
    }

    /// Writes a run of every live row of `files` (their deletion vectors
    /// applied) and of `spill`'s entries, covering versions `from..=to`;
    /// returns its path.
    async fn index_files(
        &mut self,
        table: &DeltaTable,
        files: &[LogicalFileView],
        (from, to): (i64, i64),
        mut spill: Spill<Entry>,
    ) -> Result<String, LakeError> {
        let mut paths = Vec::new();
        for (n, file) in files.iter().enumerate() {
            let deleted = self.deleted_rows(table, file).await?;
            let path = file.path().to_string();
            let size = file.size() as u64;
            self.read_keys(table, (&path, size), n as u32, &deleted, &mut spill)
                .await?;
            paths.push(path);
        }
        let meta = RunMeta {
            table_version_from: from,
            table_version_to: to,
            created_micros: chrono::Utc::now().timestamp_micros(),
            mode: run_mode(self.mode),
        };
        let sorted = spill
            .sorted()
            .map_err(|e| corrupt(&self.table, format!("sorting keys: {e}")))?;
        self.write_run(newest_per_key(sorted, self.mode), &paths, meta)
            .await
    }

    /// The rows `file`'s deletion vector deletes.
    pub async fn deleted_rows(
        &self,
        table: &DeltaTable,
        file: &LogicalFileView,
    ) -> Result<RoaringTreemap, LakeError> {
        match file.deletion_vector_descriptor() {
            None => Ok(RoaringTreemap::new()),
            Some(descriptor) => read_dv(table, &descriptor)
                .await
                .map_err(|e| corrupt(&self.table, e)),
        }
    }

    /// Adds an entry for every row of `path` not in `deleted`.
    async fn read_keys(
        &self,
        table: &DeltaTable,
        (path, size): (&str, u64),
        file: u32,
        deleted: &RoaringTreemap,
        spill: &mut Spill<Entry>,
    ) -> Result<(), LakeError> {
        let parquet_err = |e: deltalake::parquet::errors::ParquetError| {
            corrupt(&self.table, format!("reading keys of {path}: {e}"))
        };
        let store = table.object_store();
        let location = ObjectPath::from(path);
        let reader = ObjectReader::new(store, location, size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(parquet_err)?;
        let schema = builder.parquet_schema();
        let wanted = ["id", "meta_last_updated", super::SUBSETTED_COLUMN];
        let columns: Vec<usize> = (0..schema.num_columns())
            .filter(|&i| wanted.contains(&schema.column(i).name()))
            .collect();
        let mask = ProjectionMask::roots(schema, columns);
        let mut stream = builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(parquet_err)?;
        let mut row: u64 = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(parquet_err)?;
            let arrow_err = |e: deltalake::arrow::error::ArrowError| {
                corrupt(&self.table, format!("reading keys of {path}: {e}"))
            };
            let ids = batch
                .column_by_name("id")
                .ok_or_else(|| corrupt(&self.table, format!("{path} has no id column")))?;
            let ids = cast(ids, &DataType::Utf8).map_err(arrow_err)?;
            let times = batch
                .column_by_name("meta_last_updated")
                .ok_or_else(|| corrupt(&self.table, format!("{path} has no meta_last_updated")))?;
            let times = cast(times, &DataType::Int64).map_err(arrow_err)?;
            let subsets = batch.column_by_name(super::SUBSETTED_COLUMN).cloned();
            let (ids, times) = (ids.as_string::<i32>(), times.as_primitive::<Int64Type>());
            for i in 0..batch.num_rows() {
                let position = row + i as u64;
                if deleted.contains(position) || !ids.is_valid(i) || !times.is_valid(i) {
                    continue;
                }
                let subset = subsets
                    .as_ref()
                    .is_some_and(|s| s.is_valid(i) && s.as_boolean().value(i));
                spill
                    .push(Entry {
                        key: self.key_of(ids.value(i)),
                        last_updated: times.value(i),
                        file,
                        row: position as u32,
                        flags: if subset { Entry::SUBSETTED } else { 0 },
                    })
                    .map_err(|e| corrupt(&self.table, format!("spilling keys: {e}")))?;
            }
            row += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Writes a run of `entries` (ascending, one per key in current mode)
    /// referring to `files`; returns its path relative to the lake.
    async fn write_run(
        &self,
        mut entries: impl EntrySource,
        files: &[String],
        meta: RunMeta,
    ) -> Result<String, LakeError> {
        let mut run = self.local_run(entries.size_hint())?;
        while let Some(entry) = entries
            .next_entry()
            .map_err(|e| corrupt(&self.table, format!("reading keys: {e}")))?
        {
            run.push(entry)?;
        }
        self.upload_run(run, files, (meta.table_version_from, meta.table_version_to))
            .await
    }

    /// The table's id this index belongs to.
    pub fn table_id(&self) -> &str {
        &self.table_id
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// A run being written locally, sized for about `expected` entries.
    pub fn local_run(&self, expected: usize) -> Result<LocalRun, LakeError> {
        let path = std::env::temp_dir().join(format!(
            "fhirlake-run-{}.run",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&path)
            .map_err(|e| corrupt(&self.table, format!("writing a run: {e}")))?;
        Ok(LocalRun {
            table: self.table.clone(),
            writer: Some(RunWriter::new(std::io::BufWriter::new(file), expected)),
            path,
        })
    }

    /// Uploads `run` (its entries refer to `files`, covering versions
    /// `from..=to`); returns its path relative to the lake.
    pub async fn upload_run(
        &self,
        mut run: LocalRun,
        files: &[String],
        (from, to): (i64, i64),
    ) -> Result<String, LakeError> {
        let meta = RunMeta {
            table_version_from: from,
            table_version_to: to,
            created_micros: chrono::Utc::now().timestamp_micros(),
            mode: run_mode(self.mode),
        };
        let writer = run.writer.take().expect("a run is finished once");
        let (out, _) = writer
            .finish(files, meta)
            .map_err(|e| corrupt(&self.table, format!("writing a run: {e}")))?;
        drop(
            out.into_inner()
                .map_err(|e| corrupt(&self.table, format!("writing a run: {e}")))?,
        );
        let path = format!("{}/runs/{}.run", self.dir(), uuid::Uuid::new_v4().simple());
        upload(self.lake.store(), &run.path, &self.lake.path(&path)).await?;
        Ok(path)
    }
}

/// Which of `ids` the table `name` holds a current row of (none if the
/// table does not exist), looked up in its key index.
pub async fn held_ids(
    lake: &Lake,
    name: &str,
    mode: LoadMode,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, LakeError> {
    if ids.is_empty() || !lake.has_table(name).await? {
        return Ok(Default::default());
    }
    let table = super::open_table(lake, name).await?;
    let index = TableIndex::open(lake, &table, name, mode).await?;
    // History mode asks for any version: the newest of each key.
    let keys: Vec<(u128, i64)> = ids.iter().map(|id| (index.key_of(id), 0)).collect();
    let hits = match mode {
        LoadMode::Current => index.lookup(&keys).await?,
        LoadMode::History => {
            let current = TableIndex {
                mode: LoadMode::Current,
                ..index
            };
            current.lookup(&keys).await?
        }
    };
    Ok(ids
        .iter()
        .zip(hits)
        .filter(|(_, hit)| hit.is_some_and(|h| !h.tombstone()))
        .map(|(id, _)| id.clone())
        .collect())
}

/// A run written to a local file, entry by entry, before it is uploaded.
pub struct LocalRun {
    table: String,
    writer: Option<RunWriter<std::io::BufWriter<std::fs::File>>>,
    path: std::path::PathBuf,
}

impl LocalRun {
    /// Entries must come in ascending (key, lastUpdated) order.
    pub fn push(&mut self, entry: Entry) -> Result<(), LakeError> {
        self.writer
            .as_mut()
            .expect("open until uploaded")
            .push(entry)
            .map_err(|e| corrupt(&self.table, format!("writing a run: {e}")))
    }

    pub fn entries(&self) -> u64 {
        self.writer.as_ref().map_or(0, RunWriter::entries)
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Record for Entry {
    const SIZE: usize = 16 + 8 + 4 + 4 + 1;

    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.key.to_be_bytes());
        out[16..24].copy_from_slice(&self.last_updated.to_le_bytes());
        out[24..28].copy_from_slice(&self.file.to_le_bytes());
        out[28..32].copy_from_slice(&self.row.to_le_bytes());
        out[32] = self.flags;
    }

    fn decode(b: &[u8]) -> Self {
        Entry {
            key: u128::from_be_bytes(b[..16].try_into().expect("16 bytes")),
            last_updated: i64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            file: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
            row: u32::from_le_bytes(b[28..32].try_into().expect("4 bytes")),
            flags: b[32],
        }
    }
}

/// A stream of entries in ascending order.
pub trait EntrySource {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>>;
    fn size_hint(&self) -> usize;
}

impl EntrySource for std::vec::IntoIter<Entry> {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        Ok(self.next())
    }
    fn size_hint(&self) -> usize {
        self.len()
    }
}

/// Sorted entries with, in current mode, only the newest of each key (the
/// highest lastUpdated; of one instant, a full row over a subset).
struct NewestPerKey<'s> {
    sorted: Sorted<'s, Entry>,
    next: Option<Entry>,
    mode: LoadMode,
    hint: usize,
}

fn newest_per_key(sorted: Sorted<'_, Entry>, mode: LoadMode) -> NewestPerKey<'_> {
    NewestPerKey {
        sorted,
        next: None,
        mode,
        hint: 0,
    }
}

impl EntrySource for NewestPerKey<'_> {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        let mut current = match self.next.take() {
            Some(e) => e,
            None => match self.sorted.next_record()? {
                Some(e) => e,
                None => return Ok(None),
            },
        };
        loop {
            match self.sorted.next_record()? {
                None => return Ok(Some(current)),
                Some(e) if e.key == current.key && self.mode == LoadMode::Current => {
                    // A stored row outranks a remembered deletion. Ascending
                    // by (key, lastUpdated): a later one is newer; of one
                    // instant keep the full row.
                    let better = match (current.is_tombstone(), e.is_tombstone()) {
                        (true, false) => true,
                        (false, true) => false,
                        _ => {
                            e.last_updated > current.last_updated
                                || (current.is_subsetted() && !e.is_subsetted())
                        }
                    };
                    if better {
                        current = e;
                    }
                }
                Some(e) if e.key == current.key && e.last_updated == current.last_updated => {}
                Some(e) => {
                    self.next = Some(e);
                    return Ok(Some(current));
                }
            }
        }
    }

    fn size_hint(&self) -> usize {
        self.hint.max(1 << 20)
    }
}

fn run_mode(mode: LoadMode) -> RunMode {
    match mode {
        LoadMode::Current => RunMode::Current,
        LoadMode::History => RunMode::History,
    }
}

/// Uploads a local file to `to` (streaming, multipart when large).
async fn upload(
    store: &Arc<dyn ObjectStore>,
    from: &std::path::Path,
    to: &ObjectPath,
) -> Result<(), LakeError> {
    let io = |e: std::io::Error| LakeError::Store {
        path: to.to_string(),
        source: object_store::Error::Generic {
            store: "run upload",
            source: Box::new(e),
        },
    };
    let mut file = tokio::fs::File::open(from).await.map_err(io)?;
    let mut writer = object_store::buffered::BufWriter::new(store.clone(), to.clone());
    tokio::io::copy(&mut file, &mut writer).await.map_err(io)?;
    tokio::io::AsyncWriteExt::shutdown(&mut writer)
        .await
        .map_err(io)
}

/// Reads a deletion vector of a file of `table`.
pub async fn read_dv(
    table: &DeltaTable,
    descriptor: &deltalake::kernel::DeletionVectorDescriptor,
) -> Result<RoaringTreemap, String> {
    let bytes = match dv::location(descriptor).map_err(|e| e.to_string())? {
        None => dv::inline_bytes(descriptor).map_err(|e| e.to_string())?,
        Some((name, range)) => table
            .object_store()
            .get_range(&ObjectPath::from(name.as_str()), range)
            .await
            .map_err(|e| format!("deletion vector {name}: {e}"))?
            .to_vec(),
    };
    dv::decode(descriptor, &bytes).map_err(|e| e.to_string())
}

/// What a commit means to the index.
#[derive(Debug, PartialEq)]
enum Commit {
    /// fhirlake indexed its rows in this run.
    Run(String),
    /// No data file added or removed (schema, properties).
    NoData,
    /// Files rewritten without changing data: index the ones added (paths).
    Compaction(Vec<String>),
    /// Data changed by another writer: the index must be rebuilt.
    Other,
    /// The commit's JSON is gone (log cleanup): rebuild.
    Missing,
}

impl Commit {
    fn classify(bytes: &[u8]) -> Commit {
        let mut data_change = false;
        let mut files = false;
        let mut run = None;
        let mut added = Vec::new();
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(info) = action.get("commitInfo")
                && let Some(path) = info
                    .pointer(&format!("/{COMMIT_INFO_KEY}/keys_run"))
                    .and_then(|v| v.as_str())
            {
                run = Some(path.to_owned());
            }
            for kind in ["add", "remove"] {
                if let Some(file) = action.get(kind) {
                    files = true;
                    if file.get("dataChange").and_then(|v| v.as_bool()) != Some(false) {
                        data_change = true;
                    }
                    if kind == "add"
                        && let Some(path) = file.get("path").and_then(|p| p.as_str())
                    {
                        // Log paths are URL-encoded; snapshot views give them decoded.
                        let decoded = percent_decode(path);
                        added.push(decoded);
                    }
                }
            }
        }
        match (run, files, data_change) {
            (Some(run), _, _) => Commit::Run(run),
            (None, false, _) => Commit::NoData,
            (None, true, false) => Commit::Compaction(added),
            (None, true, true) => Commit::Other,
        }
    }
}

/// `%XX` escapes of a log path decoded (file names are ASCII in practice).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_classified_for_the_index() {
        let run = br#"{"commitInfo":{"fhirlake":{"keys_run":"_fhirlake/index/patient/runs/a.run"}}}
{"add":{"path":"part-1.parquet","dataChange":true}}"#;
        assert_eq!(
            Commit::classify(run),
            Commit::Run("_fhirlake/index/patient/runs/a.run".into())
        );
        let schema = br#"{"commitInfo":{}}
{"metaData":{"id":"x"}}"#;
        assert_eq!(Commit::classify(schema), Commit::NoData);
        let optimize = br#"{"commitInfo":{"operation":"OPTIMIZE"}}
{"remove":{"path":"a.parquet","dataChange":false}}
{"add":{"path":"b%20c.parquet","dataChange":false}}"#;
        assert_eq!(
            Commit::classify(optimize),
            Commit::Compaction(vec!["b c.parquet".into()])
        );
        let foreign = br#"{"commitInfo":{"operation":"WRITE"}}
{"add":{"path":"b.parquet","dataChange":true}}"#;
        assert_eq!(Commit::classify(foreign), Commit::Other);
    }
}
