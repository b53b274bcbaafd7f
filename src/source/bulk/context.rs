//! The running export job its steps share: the lake, the job's state and
//! event log, and the HTTP client.

use tokio::sync::Mutex;

use super::error::ExportError;
use super::job::JobState;
use crate::http::HttpClient;
use crate::lake::Lake;
use crate::ledger::EventLog;

/// Shared by the job's tasks: the state and where to save it.
pub(super) struct Job<'a> {
    pub lake: &'a Lake,
    pub job_id: String,
    pub state: Mutex<JobState>,
    pub events: EventLog,
    pub http: &'a HttpClient,
}

impl Job<'_> {
    pub async fn save(&self) -> Result<(), ExportError> {
        let mut state = self.state.lock().await;
        state.save(self.lake, &self.events.to_ndjson()).await?;
        Ok(())
    }
}
