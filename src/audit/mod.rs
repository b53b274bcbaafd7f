//! The audit trail: FHIR R4 AuditEvents per job step, kept as a hash chain
//! in the lake's object store, checked by `verify`; and a Provenance per job.
//!
//! In: a [`JobContext`] per job (who asked, the policy in force, the
//! manifest, source and lake) and one typed [`Step`] per thing the job did.
//! Out: AuditEvent JSON appended to the chain, a [`Head`] per append for the
//! caller to anchor outside the chain, a [`Report`] of every problem the
//! chain and the anchors show, and [`Provenance`] resources. Not here: the
//! Delta `_audit` and `provenance` tables, reading anchors out of Delta
//! logs and manifests, WORM retention; the job does those with what this
//! module returns.
//!
//! ```text
//!  job step ──► Step ─┐
//!  JobContext ────────┴─► event() ─► AuditEvent            (pure, event.rs)
//!                                      │
//!                       AuditLog::append (chain.rs)
//!                                      │ link: seq N, previous = H(N-1)
//!                                      ▼ canonical JSON (RFC 8785)
//!   <prefix>/events/00000000000000000000.json ◄─┐ previous
//!   <prefix>/events/00000000000000000001.json ──┘ ◄─┐
//!   <prefix>/events/…N.json  (PutMode::Create) ──────┘
//!   <prefix>/head.json        hint {seq, sha256}, rewritten, never trusted
//!                                      │
//!                   Head {seq: N, sha256: H(N)} ──► anchored by the caller
//!                                      │             (Delta commitInfo,
//!                                      ▼              manifest)
//!   AuditLog::verify(anchors) ─► reads back ─► Verifier (pure, verify.rs)
//!                                              ─► Report { problems }
//! ```
//!
//! H(event) is SHA-256 over the event's RFC 8785 canonical form as stored;
//! the chain stores exactly that form, so anyone can re-derive every hash
//! from the objects with any JCS implementation. The link lives in the
//! event itself (extension `urn:fhirlake:audit-chain`: `sequence`,
//! `previous`), so each stored object is a valid R4 AuditEvent.
//!
//! Writers never rewrite: each event is created put-if-absent, and a writer
//! that loses a sequence number reads the winner, links to it and tries the
//! next. Links show a deleted or edited event and a forged one that does
//! not link; only anchors show a cut-off tail (what is left is a perfect
//! shorter chain), which is why every append returns the head to anchor.
//!
//! No event can carry a token, key or secret: steps and contexts are made
//! only of counts, versions, times, digests and checked types (URLs lose
//! their credentials, query and fragment; identities refuse token and key
//! shapes; scopes follow the SMART grammar), and [`Grant`] reads a token
//! response for its `scope` and `sub` only.

mod canonical;
mod chain;
mod codes;
mod context;
mod error;
mod event;
mod listing;
mod principal;
mod provenance;
mod step;
mod values;
mod verify;

pub use canonical::{canonical, digest};
pub use chain::{AuditLog, EVENTS_DIR, HEAD_HINT};
pub use context::{JobContext, JobKind, Software};
pub use error::{ChainError, InputError};
pub use event::AuditEvent;
pub use listing::EventSummary;
pub use principal::{Grant, Principal};
pub use provenance::{MessageEntity, Provenance, Target};
pub use step::{
    CommitOperation, Deletions, ExportLevel, Failure, FailureKind, FileKind, Finish, Hl7Batch,
    InputFile, JobOutcome, KickOff, Maintenance, MaintenanceOp, Operation, PolicyChange,
    Quarantine, RowChanges, Step, StepKind, SyncPage, TableCommit, TableVersion, Totals, Warnings,
};
pub use values::{
    Code, Identity, JobId, Location, MessageType, PolicyVersion, ResourceId, ResourceType, Scope,
    Sha256, TableName,
};
pub use verify::{Anchor, Head, Hint, Problem, Report, Verifier};

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod fhir_validation_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod secrets_tests;
#[cfg(test)]
mod tamper_tests;
