//! The export job's persisted state, `<lake>/_fhirlake/jobs/<job>.json`,
//! rewritten at every step (kick-off, completion, each verified download,
//! load, DELETE) so a run killed at any point resumes from the last one.
//!
//! Download URLs are not kept (pre-signed ones carry credentials): a resumed
//! job asks the status URL for a fresh manifest instead.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lake::{Lake, LakeError};
use crate::ledger::{ExportFile, FileKind, store_err};

pub const JOBS_DIR: &str = "_fhirlake/jobs";

/// What the export asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// `/$export`
    System,
    /// `/Patient/$export`
    Patient,
    /// `/Group/{id}/$export`
    Group(String),
}

impl Scope {
    pub fn path(&self) -> String {
        match self {
            Scope::System => "$export".into(),
            Scope::Patient => "Patient/$export".into(),
            Scope::Group(id) => format!("Group/{id}/$export"),
        }
    }
}

/// The request, as sent (no credentials in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    pub server: String,
    pub scope: Scope,
    /// Kick-off parameters in order, `_since` included once resolved.
    pub params: Vec<(String, String)>,
}

impl ExportRequest {
    /// Whether the export asked for `resource_type` (no `_type`: every type).
    pub fn covers_type(&self, resource_type: &str) -> bool {
        let mut types = self.params.iter().filter(|(k, _)| k == "_type").peekable();
        types.peek().is_none()
            || types.any(|(_, v)| v.split(',').any(|t| t.trim() == resource_type))
    }

    /// Identity of "the same export" (server, scope, parameters), optionally
    /// ignoring `_since`: `--since auto` compares requests that way.
    pub fn fingerprint(&self, with_since: bool) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.server.trim_end_matches('/'));
        hasher.update([0]);
        hasher.update(self.scope.path());
        let mut params: Vec<&(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| with_since || k != "_since")
            .collect();
        params.sort();
        for (k, v) in params {
            hasher.update([0]);
            hasher.update(k);
            hasher.update([b'=']);
            hasher.update(v);
        }
        hex::encode(hasher.finalize())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The server accepted the request; `status_url` is known.
    KickedOff,
    /// The manifest arrived; files are being downloaded.
    Complete,
    /// The files are in the lake's tables and the job manifest is written.
    Loaded,
    /// The server was told to delete the job (or kept, on request): done.
    Finished,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn is_open(self) -> bool {
        matches!(self, Phase::KickedOff | Phase::Complete | Phase::Loaded)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub job_id: String,
    pub request: ExportRequest,
    /// The kick-off URL (redacted) and method that the server accepted.
    pub kickoff_url: String,
    pub kickoff_method: String,
    pub status_url: String,
    pub phase: Phase,
    pub started_at: String,
    pub updated_at: String,
    pub transaction_time: Option<String>,
    pub requires_access_token: Option<bool>,
    /// Local folder holding this job's raw files.
    pub raw_dir: String,
    pub files: Vec<ExportFile>,
    /// Row totals of the load, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub server_job_deleted: bool,
    /// Sequence number of the audit event recording the request to the
    /// server: the load copies it into `_audit` with its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_event: Option<u64>,
}

impl JobState {
    pub fn state_key(job_id: &str) -> String {
        format!("{JOBS_DIR}/{job_id}.json")
    }

    pub fn events_key(job_id: &str) -> String {
        format!("{JOBS_DIR}/{job_id}.events.ndjson")
    }

    /// Writes the state and the event log (overwriting the previous ones).
    pub async fn save(&mut self, lake: &Lake, events: &str) -> Result<(), LakeError> {
        self.updated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::to_vec_pretty(self).expect("job state serializes");
        let path = lake.path(&Self::state_key(&self.job_id));
        lake.store()
            .put(&path, PutPayload::from(body))
            .await
            .map_err(store_err(&path))?;
        let path = lake.path(&Self::events_key(&self.job_id));
        lake.store()
            .put(&path, PutPayload::from(events.as_bytes().to_vec()))
            .await
            .map_err(store_err(&path))?;
        Ok(())
    }

    /// The manifest file at `index` among those of `kind`.
    pub fn file_mut(&mut self, kind: FileKind, index: usize) -> Option<&mut ExportFile> {
        self.files
            .iter_mut()
            .find(|f| f.kind == kind && f.index == index)
    }

    /// Every export job recorded in the lake, oldest first.
    pub async fn list(lake: &Lake) -> Result<Vec<JobState>, LakeError> {
        let prefix = lake.path(JOBS_DIR);
        let mut listing = lake.store().list(Some(&prefix));
        let mut jobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(store_err(&prefix))?;
            let name = meta.location.filename().unwrap_or_default();
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = lake
                .store()
                .get(&meta.location)
                .await
                .map_err(store_err(&meta.location))?
                .bytes()
                .await
                .map_err(store_err(&meta.location))?;
            // A state written by a newer fhirlake that this one cannot read is
            // not ours to resume; skip it rather than fail every export.
            if let Ok(job) = serde_json::from_slice::<JobState>(&bytes) {
                jobs.push(job);
            }
        }
        jobs.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        Ok(jobs)
    }

    pub async fn read_events(lake: &Lake, job_id: &str) -> Vec<serde_json::Value> {
        let path = lake.path(&Self::events_key(job_id));
        let Ok(result) = lake.store().get(&path).await else {
            return Vec::new();
        };
        let Ok(bytes) = result.bytes().await else {
            return Vec::new();
        };
        bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }
}

/// The newest unfinished job for this exact request, to resume.
pub fn resumable<'a>(jobs: &'a [JobState], request: &ExportRequest) -> Option<&'a JobState> {
    let want = request.fingerprint(false);
    jobs.iter()
        .rev()
        .find(|j| j.phase.is_open() && j.request.fingerprint(false) == want)
}

/// `--since auto`: the transactionTime of the newest finished export of the
/// same server, scope and parameters. Never the local clock.
pub fn since_auto(jobs: &[JobState], request: &ExportRequest) -> Option<String> {
    let want = request.fingerprint(false);
    jobs.iter()
        .filter(|j| {
            matches!(j.phase, Phase::Loaded | Phase::Finished)
                && j.request.fingerprint(false) == want
        })
        .filter_map(|j| j.transaction_time.clone())
        .max_by_key(|t| crate::fhir::parse_instant_micros(t).unwrap_or(i64::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(since: Option<&str>, types: &str) -> ExportRequest {
        let mut params = vec![("_type".to_owned(), types.to_owned())];
        if let Some(s) = since {
            params.push(("_since".into(), s.into()));
        }
        ExportRequest {
            server: "http://ehr/fhir/".into(),
            scope: Scope::Group("g1".into()),
            params,
        }
    }

    fn job(phase: Phase, req: ExportRequest, time: &str, started: &str) -> JobState {
        JobState {
            job_id: started.into(),
            request: req,
            kickoff_url: String::new(),
            kickoff_method: "GET".into(),
            status_url: "http://ehr/status/1".into(),
            phase,
            started_at: started.into(),
            updated_at: started.into(),
            transaction_time: Some(time.into()),
            requires_access_token: Some(false),
            raw_dir: String::new(),
            files: Vec::new(),
            load: None,
            error: None,
            server_job_deleted: false,
            request_event: None,
        }
    }

    #[test]
    fn since_auto_takes_the_newest_finished_export_of_the_same_request() {
        let jobs = vec![
            job(
                Phase::Finished,
                request(None, "Patient"),
                "2024-01-01T00:00:00Z",
                "a",
            ),
            job(
                Phase::Finished,
                request(Some("2024-01-01T00:00:00Z"), "Patient"),
                "2024-02-01T00:00:00+01:00",
                "b",
            ),
            // Not finished, or another request: ignored.
            job(
                Phase::Complete,
                request(None, "Patient"),
                "2024-03-01T00:00:00Z",
                "c",
            ),
            job(
                Phase::Finished,
                request(None, "Observation"),
                "2024-04-01T00:00:00Z",
                "d",
            ),
        ];
        assert_eq!(
            since_auto(&jobs, &request(None, "Patient")).as_deref(),
            Some("2024-02-01T00:00:00+01:00")
        );
        assert_eq!(since_auto(&jobs, &request(None, "Condition")), None);
        assert_eq!(
            resumable(&jobs, &request(None, "Patient")).unwrap().job_id,
            "c"
        );
    }
}
