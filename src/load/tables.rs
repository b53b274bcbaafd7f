//! The per-type tables of a job: each one's sink, key index and buffered rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::record_batch::RecordBatch;

use super::pipeline::StageClock;
use super::rows::{ResourceRows, resource_layout};
use super::writer::TableWriter;
use super::{Context, LoadError};
use crate::fhir;
use crate::lake::{KeyIndex, TableLayout, TableSink, merge_updates, read_key_index};
use crate::ledger::{CommitOperation, CommitRecord, TableRecord};
use crate::view::CompiledView;

/// The open tables, and existing ones being opened ahead of their first
/// row. Reading a big table's key index is I/O the loader would otherwise
/// wait on at a file boundary, cores idle.
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
                    let view = context.views.for_type(resource_type).cloned();
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

/// A table being loaded: its sink, key index and buffered rows.
pub(super) struct TableState {
    pub name: String,
    layout: TableLayout,
    view: Option<Arc<CompiledView>>,
    writer: Option<TableWriter>,
    pub index: KeyIndex,
    pub inserts: ResourceRows,
    pub updates: ResourceRows,
    update_batches: Vec<RecordBatch>,
    pub update_bytes: usize,
    pub record: TableRecord,
}

impl TableState {
    async fn open(
        context: &Context,
        name: &str,
        view: Option<Arc<CompiledView>>,
    ) -> Result<Self, LoadError> {
        let layout = resource_layout(view.as_deref());
        let sink = TableSink::open(&context.lake, name, layout.schema()).await?;
        let index = read_key_index(sink.table(), name, context.mode).await?;
        Ok(Self {
            name: name.to_owned(),
            inserts: ResourceRows::with_view(layout.clone(), view.as_deref()),
            updates: ResourceRows::with_view(layout.clone(), view.as_deref()),
            layout,
            view,
            writer: Some(TableWriter::start(sink, context.clock.clone())),
            index,
            update_batches: Vec::new(),
            update_bytes: 0,
            record: TableRecord::default(),
        })
    }

    pub fn arrow_err(&self) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> LoadError + '_ {
        move |source| LoadError::Arrow {
            table: self.name.clone(),
            source,
        }
    }

    /// Hands the buffered inserts to the table's writer task; returns the
    /// time spent waiting for room in its queue.
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

    pub fn stash_updates(&mut self) -> Result<(), LoadError> {
        if !self.updates.is_empty() {
            self.update_bytes += self.updates.bytes();
            let batch = self.updates.finish().map_err(self.arrow_err())?;
            self.update_batches.push(batch);
        }
        Ok(())
    }

    /// Commits the appends, then MERGEs the buffered updates (which may
    /// update rows those appends just added). Reopens the sink if `reopen`.
    pub async fn commit(&mut self, context: &Context, reopen: bool) -> Result<(), LoadError> {
        self.write_inserts().await?;
        self.stash_updates()?;
        let started = Instant::now();
        let mut writer = self.writer.take().expect("writer open");
        let (mut table, version) = writer.finish().await?.commit().await?;
        if let Some(version) = version {
            self.record.commits.push(CommitRecord {
                version,
                operation: CommitOperation::Append,
                merge: None,
            });
        }
        let updates = std::mem::take(&mut self.update_batches);
        self.update_bytes = 0;
        if !updates.is_empty() {
            let schema = self.layout.schema();
            let (merged, metrics) = merge_updates(table, &self.name, schema, updates).await?;
            table = merged;
            if let Some(version) = table.version() {
                self.record.commits.push(CommitRecord {
                    version,
                    operation: CommitOperation::Merge,
                    merge: Some(metrics),
                });
            }
        }
        if reopen {
            let sink = TableSink::open(&context.lake, &self.name, self.layout.schema()).await?;
            self.writer = Some(TableWriter::start(sink, context.clock.clone()));
        }
        StageClock::add(&context.clock.commit, started);
        Ok(())
    }
}
