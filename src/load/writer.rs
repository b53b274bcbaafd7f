//! Parquet encoding off the classify loop: each type table's batches are
//! finished (Arrow arrays, view columns included) and staged by a task of
//! their own, so the loop builds the next batch while the last is encoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::LoadError;
use super::pipeline::StageClock;
use super::rows::ResourceRows;
use crate::lake::{StagedFile, Stager};
use deltalake::DeltaTable;

/// Batches queued per table before the loop waits for the encoder: a batch
/// is a chunk's rows (a few MiB), so a few absorb the encoder's pauses.
const QUEUED_BATCHES: usize = 4;

pub struct TableWriter {
    sender: Option<mpsc::Sender<ResourceRows>>,
    task: Option<JoinHandle<Result<Stager, LoadError>>>,
}

impl TableWriter {
    pub fn start(mut sink: Stager, clock: Arc<StageClock>) -> Self {
        let (sender, mut receiver) = mpsc::channel::<ResourceRows>(QUEUED_BATCHES);
        let task = tokio::spawn(async move {
            while let Some(mut rows) = receiver.recv().await {
                let started = Instant::now();
                let batch = rows.finish().map_err(|source| LoadError::Arrow {
                    table: sink.name().to_owned(),
                    source,
                })?;
                StageClock::add(&clock.build, started);
                let started = Instant::now();
                sink.write(batch).await?;
                StageClock::add(&clock.write, started);
            }
            Ok(sink)
        });
        Self {
            sender: Some(sender),
            task: Some(task),
        }
    }

    /// Queues `rows`; returns how long the queue was full (the loop's wait).
    pub async fn send(&mut self, rows: ResourceRows) -> Result<Duration, LoadError> {
        let started = Instant::now();
        let sender = self.sender.as_ref().expect("writer open");
        if sender.send(rows).await.is_err() {
            // The task stopped early, which it only does on an error: report it.
            self.sender.take();
            let task = self.task.take().expect("writer finished once");
            return match task.await.expect("table writer task panicked") {
                Err(e) => Err(e),
                Ok(_) => unreachable!("a writer task ends early only on error"),
            };
        }
        Ok(started.elapsed())
    }

    /// Waits for queued batches to be written; returns the table and the
    /// staged files, in the order their rows were written.
    pub async fn finish(&mut self) -> Result<(DeltaTable, Vec<StagedFile>), LoadError> {
        self.sender.take();
        let task = self.task.take().expect("writer finished once");
        let stager = task.await.expect("table writer task panicked")?;
        Ok(stager.finish().await?)
    }
}
