//! A load job's audit trail: the AuditEvents its steps append to the lake's
//! chain (`_fhirlake/audit`), and the chain head it anchors in each Delta
//! commit's `commitInfo` and in its manifest.
//!
//! Every source's job goes through here (load, export, sync, HL7 v2), so
//! there is one place that decides what a step records. A step whose event
//! cannot be appended fails the job: data must not land unaudited. Events
//! are made of counts, versions, digests and checked types only (see
//! `crate::audit`); a value the audit types refuse (a name that is not a
//! FHIR resource type, say) is left out of the event, never recorded raw.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::audit::{
    self, AuditLog, ChainError, Code, FileKind, Finish, Head, InputFile, JobContext, JobId,
    JobKind, JobOutcome, KickOff, Location, Operation, PolicyChange, PolicyVersion, Principal,
    Quarantine, ResourceType, RowChanges, Sha256, Step, TableCommit, TableName, TableVersion,
    Totals, Warnings,
};
use crate::lake::Lake;
use crate::ledger::{
    CommitOperation, InputRecord, InputStatus, JobManifest, ManifestKind, TableRecord,
};

use super::{Input, LoadError, SourceKind};

/// The chain's folder in a lake.
pub const AUDIT_PREFIX: &str = "_fhirlake/audit";

/// How far back in the chain a job looks for the previous job's policy.
const POLICY_LOOKBACK: u64 = 512;

/// The key of the chain head inside the `fhirlake` commitInfo entry.
pub const ANCHOR_KEY: &str = "audit";

/// One job's view of the chain: its context, and the newest head it wrote.
pub(crate) struct JobAudit {
    lake: Lake,
    log: AuditLog,
    context: JobContext,
    head: Mutex<Option<Head>>,
    /// The job's events as stored, in the order appended (for `_audit`).
    stored: Mutex<Vec<(Head, Vec<u8>)>>,
}

impl JobAudit {
    pub fn new(
        lake: &Lake,
        job_id: &str,
        kind: ManifestKind,
        policy_version: &str,
        principal: Principal,
    ) -> Result<Self, LoadError> {
        let job = JobId::new(job_id).map_err(|e| LoadError::Audit(e.to_string()))?;
        let policy = PolicyVersion::parse(policy_version).unwrap_or(PolicyVersion::None);
        let mut context = JobContext::new(job, job_kind(kind))
            .with_policy(policy)
            .with_principal(principal);
        if let Ok(manifest) = Location::new(&format!("_fhirlake/manifests/{job_id}.json")) {
            context = context.with_manifest(manifest);
        }
        Ok(Self::open(lake, context))
    }

    /// The chain of `lake`, for a job described by `context` (a load's, or
    /// a maintenance run's); the context gains the lake.
    pub fn open(lake: &Lake, mut context: JobContext) -> Self {
        if let Ok(root) = Location::new(lake.root().as_str()) {
            context = context.with_lake(root);
        }
        Self {
            lake: lake.clone(),
            log: AuditLog::new(lake.store().clone(), lake.path(AUDIT_PREFIX)),
            context,
            head: Mutex::new(None),
            stored: Mutex::new(Vec::new()),
        }
    }

    /// Appends `step` now; the new head becomes the job's anchor.
    pub async fn record(&self, step: impl Into<Step>) -> Result<Head, LoadError> {
        let (head, body) = self
            .log
            .emit_stored(&self.context, step)
            .await
            .map_err(chain_err)?;
        self.lake.seal(&event_object(head.seq));
        {
            let mut known = self.head.lock().expect("audit head lock");
            if known.is_none_or(|k| k.seq < head.seq) {
                *known = Some(head);
            }
        }
        self.stored
            .lock()
            .expect("audit events lock")
            .push((head, body));
        Ok(head)
    }

    /// Counts event `seq` (this job's, appended by an earlier step in
    /// another process or context) among the job's events for `_audit`.
    pub async fn adopt(&self, seq: u64) -> Result<(), LoadError> {
        if let Some(stored) = self.log.stored_event(seq).await.map_err(chain_err)? {
            self.stored.lock().expect("audit events lock").push(stored);
        }
        Ok(())
    }

    /// The job's events as stored so far, with their heads.
    pub fn stored(&self) -> Vec<(Head, Vec<u8>)> {
        self.stored.lock().expect("audit events lock").clone()
    }

    /// The job's shared audit context (for its Provenance).
    pub fn context(&self) -> &JobContext {
        &self.context
    }

    /// The newest head this job appended.
    pub fn head(&self) -> Option<Head> {
        *self.head.lock().expect("audit head lock")
    }

    /// The head to anchor in a Delta commit, as `commitInfo.fhirlake.audit`.
    pub fn anchor(&self) -> Option<Value> {
        self.head()
            .map(|head| json!({ "seq": head.seq, "sha256": head.sha256.to_string() }))
    }

    /// What a Delta commit of this job records under `commitInfo.fhirlake`.
    pub fn commit_info(&self, job_id: &str) -> Value {
        let mut info = json!({ "job_id": job_id });
        if let Some(anchor) = self.anchor() {
            info[ANCHOR_KEY] = anchor;
        }
        info
    }

    /// The kick-off event: what the job was given.
    pub async fn kick_off(&self, kind: ManifestKind, inputs: usize) -> Result<Head, LoadError> {
        let operation = match kind {
            ManifestKind::Load => Operation::Load,
            // The export's request to the server was its first event (with
            // its real level); this is the hand-over of its downloads.
            ManifestKind::Export => Operation::Load,
            ManifestKind::Sync => Operation::Sync,
            ManifestKind::Hl7v2 => Operation::Hl7v2,
            ManifestKind::PolicyApply => Operation::PolicyApply,
        };
        self.record(KickOff {
            operation,
            resource_types: Vec::new(),
            since: None,
            until: None,
            inputs: Some(inputs as u64),
        })
        .await
    }

    /// A policy-change event when this job's policy is not the one the
    /// lake's previous job ran under: a changed policy file, a first
    /// policy, or none after one (a load that left out `--policy` is exactly
    /// what a compliance review must see). The previous policy is read from
    /// the chain itself (the newest event of another job), so it is as
    /// tamper-evident as the rest. Concurrent jobs with different policies
    /// may both record one.
    pub async fn policy_change(&self) -> Result<(), LoadError> {
        let Some(previous) = self.previous_policy().await? else {
            return Ok(());
        };
        if previous == self.context.policy() {
            return Ok(());
        }
        self.record(PolicyChange {
            previous,
            source: None,
        })
        .await?;
        Ok(())
    }

    /// The policy of the newest event before this job's of a job that moves
    /// data (maintenance events are skipped); `None` when the last
    /// [`POLICY_LOOKBACK`] events hold none.
    async fn previous_policy(&self) -> Result<Option<PolicyVersion>, LoadError> {
        let Some(head) = self.log.head().await.map_err(chain_err)? else {
            return Ok(None);
        };
        let mine = self.context.job().as_str();
        for seq in (head.seq.saturating_sub(POLICY_LOOKBACK)..=head.seq).rev() {
            let Some(event) = self.log.event(seq).await.map_err(chain_err)? else {
                continue;
            };
            let summary = audit::EventSummary::of(seq, event);
            if summary.job.as_deref() == Some(mine)
                || matches!(summary.step.as_deref(), Some("optimize" | "vacuum"))
            {
                continue;
            }
            return Ok(summary.policy.and_then(|p| PolicyVersion::parse(&p).ok()));
        }
        Ok(None)
    }

    /// One input read (loaded, or recorded without loading).
    pub async fn input(
        &self,
        record: &InputRecord,
        input: &Input,
        started: DateTime<Utc>,
    ) -> Result<(), LoadError> {
        let Ok(sha256) = Sha256::from_hex(&record.sha256) else {
            return Ok(());
        };
        let Ok(source) = Location::new(&record.path) else {
            return Ok(());
        };
        let kind = match (record.status, input.kind) {
            (InputStatus::ExportLog, _) => FileKind::ExportLog,
            (_, SourceKind::Export) => FileKind::Output,
            _ => FileKind::Local,
        };
        self.record(InputFile {
            kind,
            resource_type: input.expected_type.and_then(|t| ResourceType::new(t).ok()),
            source,
            stored_as: None,
            bytes: record.bytes,
            lines: record.lines,
            sha256,
            started: Some(started.fixed_offset()),
        })
        .await
        .map(drop)
    }

    /// One event per Delta commit the job made to `table`.
    pub async fn table_commits(&self, table: &str, record: &TableRecord) -> Result<(), LoadError> {
        let Ok(name) = TableName::new(table) else {
            return Ok(());
        };
        for commit in &record.commits {
            let rows = match &commit.merge {
                Some(m) => RowChanges {
                    inserted: m.rows_inserted,
                    updated: m.rows_updated,
                    deleted: m.rows_deleted,
                },
                None => RowChanges::default(),
            };
            self.record(TableCommit {
                table: name.clone(),
                resource_type: None,
                version: commit.version,
                operation: commit_operation(commit.operation),
                rows,
            })
            .await?;
        }
        Ok(())
    }

    /// The quarantine commit: rows by reason, and the files they came from.
    pub async fn quarantine(
        &self,
        version: u64,
        reasons: &BTreeMap<&'static str, u64>,
        sources: &[String],
    ) -> Result<(), LoadError> {
        let reasons: Vec<(Code, u64)> = reasons
            .iter()
            .filter_map(|(code, n)| Code::new(code).ok().map(|c| (c, *n)))
            .collect();
        let mut sources: Vec<Sha256> = sources
            .iter()
            .filter_map(|s| Sha256::from_hex(s).ok())
            .collect();
        sources.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        sources.dedup();
        self.record(Quarantine {
            version,
            rows: reasons_total(&reasons),
            reasons,
            sources,
        })
        .await
        .map(drop)
    }

    /// The last event, before the manifest is written (which anchors it).
    pub async fn finish(
        &self,
        manifest: &JobManifest,
        started: DateTime<Utc>,
    ) -> Result<(), LoadError> {
        let t = &manifest.totals;
        let lines = manifest.inputs.iter().map(|i| i.lines).sum();
        let deleted = manifest
            .export
            .as_ref()
            .map(|e| e.rows_deleted)
            .or(manifest.sync.as_ref().map(|s| s.rows_deleted))
            .unwrap_or(0);
        let outcome = match t.quarantined {
            0 => JobOutcome::Succeeded,
            n => JobOutcome::Warnings(Warnings {
                quarantined: n,
                ..Warnings::default()
            }),
        };
        let tables = manifest
            .tables
            .iter()
            .filter_map(|(name, record)| {
                let version = record.commits.iter().map(|c| c.version).max()?;
                Some(TableVersion {
                    table: TableName::new(name).ok()?,
                    version,
                })
            })
            .collect();
        self.record(Finish {
            outcome,
            started: started.fixed_offset(),
            manifest_sha256: None,
            tables,
            totals: Totals {
                lines,
                inserted: t.inserted,
                updated: t.updated,
                unchanged: t.unchanged,
                quarantined: t.quarantined,
                filtered: t.filtered,
                deleted,
            },
        })
        .await
        .map(drop)
    }

    /// A failed job's last event (best effort: the job's own error is what
    /// the caller reports).
    pub async fn failed(&self, error: &LoadError, started: DateTime<Utc>) {
        self.failed_as(failure_kind(error), started).await;
    }

    /// A failure finish of kind `kind` (best effort: the job is failing already).
    pub async fn failed_as(&self, kind: audit::FailureKind, started: DateTime<Utc>) {
        let failure = audit::Failure {
            kind,
            step: None,
            object: None,
        };
        let _ = self
            .record(Finish {
                outcome: JobOutcome::Failed(failure),
                started: started.fixed_offset(),
                manifest_sha256: None,
                tables: Vec::new(),
                totals: Totals::default(),
            })
            .await;
    }
}

/// Event `seq`'s object, relative to the lake.
fn event_object(seq: u64) -> String {
    format!("{AUDIT_PREFIX}/{}/{seq:020}.json", audit::EVENTS_DIR)
}

fn reasons_total(reasons: &[(Code, u64)]) -> u64 {
    reasons.iter().map(|(_, n)| n).sum()
}

fn job_kind(kind: ManifestKind) -> JobKind {
    match kind {
        ManifestKind::Load => JobKind::Load,
        ManifestKind::Export => JobKind::Export,
        ManifestKind::Sync => JobKind::Sync,
        ManifestKind::Hl7v2 => JobKind::Hl7v2,
        ManifestKind::PolicyApply => JobKind::Policy,
    }
}

fn commit_operation(operation: CommitOperation) -> audit::CommitOperation {
    match operation {
        CommitOperation::Append => audit::CommitOperation::Append,
        CommitOperation::Merge => audit::CommitOperation::Merge,
        CommitOperation::Delete => audit::CommitOperation::Delete,
        CommitOperation::Tombstone => audit::CommitOperation::Tombstone,
        CommitOperation::Upsert => audit::CommitOperation::Upsert,
    }
}

fn failure_kind(error: &LoadError) -> audit::FailureKind {
    use audit::FailureKind as K;
    match error {
        LoadError::Read { .. } => K::Storage,
        LoadError::Lake(_) => K::Storage,
        LoadError::Arrow { .. } => K::Internal,
        LoadError::Accounting(_) => K::Accounting,
        LoadError::Audit(_) => K::Storage,
        LoadError::Policy(_) => K::InvalidInput,
    }
}

fn chain_err(error: ChainError) -> LoadError {
    LoadError::Audit(error.to_string())
}
