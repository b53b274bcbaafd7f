//! The per-type tables of a job: each one's stager, key index, the keys of
//! the rows it wrote, and its buffered rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::keys::JobKey;
use super::rows::{ResourceRows, resource_layout};
use super::writer::TableWriter;
use super::{Context, LoadError};
use crate::fhir;
use crate::lake::{Spill, Stager, TableIndex, TableLayout};
use crate::ledger::TableRecord;
use crate::view::CompiledView;

/// Job keys a table keeps in memory before it spills them to disk.
const KEYS_IN_MEMORY: usize = 256 * 1024;

/// The open tables, and existing ones being opened ahead of their first
/// row. Opening a table reads its key index's tails: I/O the loader would
/// otherwise wait on at a file boundary, cores idle.
#[derive(Default)]
pub(super) struct TypeTables {
    pub open: BTreeMap<String, TableState>,
    /// `None` from a task: the table does not exist yet.
    opening: HashMap<String, tokio::task::JoinHandle<Result<Option<TableState>, LoadError>>>,
}

impl TypeTables {
    /// Starts opening the table of `resource_type`, unless open or opening.
    /// Only an existing table is opened ahead: creating one waits for its
    /// first row, so a file whose lines all fail leaves no empty table.
    pub fn open_ahead(&mut self, context: &Arc<Context>, resource_type: &str) {
        let name = fhir::table_name(resource_type);
        if self.open.contains_key(&name) || self.opening.contains_key(&name) {
            return;
        }
        let view = context.views.for_type(resource_type).cloned();
        let (context, table) = (context.clone(), name.clone());
        let task = tokio::spawn(async move {
            if !context.lake.has_table(&table).await? {
                return Ok(None);
            }
            TableState::open(&context, &table, view).await.map(Some)
        });
        self.opening.insert(name, task);
    }

    /// The table `name` of `resource_type`: opened ahead, or now.
    pub async fn get(
        &mut self,
        context: &Context,
        name: &str,
        resource_type: &str,
    ) -> Result<&mut TableState, LoadError> {
        if !self.open.contains_key(name) {
            let ahead = match self.opening.remove(name) {
                Some(task) => task.await.expect("table open task panicked")?,
                None => None,
            };
            let state = match ahead {
                Some(state) => state,
                None => {
                    // Segregated rows keep the resource only, no view columns.
                    let view = if fhir::is_segregated_table(name) {
                        None
                    } else {
                        context.views.for_type(resource_type).cloned()
                    };
                    TableState::open(context, name, view).await?
                }
            };
            self.open.insert(name.to_owned(), state);
        }
        Ok(self.open.get_mut(name).expect("opened above"))
    }

    /// The open tables, once tables opened ahead but never needed (their
    /// file held no valid line of the type) have settled. Their outcome does
    /// not matter to the job: nothing of it went to them.
    pub async fn into_open(mut self) -> BTreeMap<String, TableState> {
        for (_, task) in self.opening.drain() {
            let _ = task.await;
        }
        std::mem::take(&mut self.open)
    }
}

impl Drop for TypeTables {
    /// A job that fails stops its tables being opened ahead.
    fn drop(&mut self) {
        for task in self.opening.values() {
            task.abort();
        }
    }
}

/// A table being loaded.
pub(super) struct TableState {
    pub name: String,
    pub layout: TableLayout,
    view: Option<Arc<CompiledView>>,
    pub writer: Option<TableWriter>,
    pub index: TableIndex,
    /// The index's runs when the job read the table: runs after these are a
    /// concurrent writer's.
    pub runs_read: usize,
    pub inserts: ResourceRows,
    /// Rows handed to the writer so far: the next row's staged position.
    pub staged_rows: u64,
    pub keys: Spill<JobKey>,
    /// History-mode tombstone versions staged.
    pub tombstones: u64,
    pub record: TableRecord,
}

impl TableState {
    pub async fn open(
        context: &Context,
        name: &str,
        view: Option<Arc<CompiledView>>,
    ) -> Result<Self, LoadError> {
        let layout = resource_layout(view.as_deref());
        let stager = Stager::open(&context.lake, name, layout.schema()).await?;
        let index = TableIndex::open(&context.lake, stager.table(), name, context.mode).await?;
        Ok(Self {
            name: name.to_owned(),
            inserts: ResourceRows::with_view(layout.clone(), view.as_deref()),
            layout,
            view,
            writer: Some(TableWriter::start(stager, context.clock.clone())),
            runs_read: index.runs(),
            index,
            staged_rows: 0,
            keys: Spill::new(KEYS_IN_MEMORY),
            tombstones: 0,
            record: TableRecord::default(),
        })
    }

    pub fn arrow_err(&self) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> LoadError + '_ {
        move |source| LoadError::Arrow {
            table: self.name.clone(),
            source,
        }
    }

    /// Hands the buffered rows to the table's writer task; returns the time
    /// spent waiting for room in its queue.
    pub async fn write_inserts(&mut self) -> Result<Duration, LoadError> {
        if self.inserts.is_empty() {
            return Ok(Duration::ZERO);
        }
        // The next batch is sized like this one (files are mostly one type).
        let fresh = ResourceRows::with_capacity(
            self.layout.clone(),
            self.view.as_deref(),
            self.inserts.len(),
        );
        let rows = std::mem::replace(&mut self.inserts, fresh);
        self.writer.as_mut().expect("writer open").send(rows).await
    }
}
