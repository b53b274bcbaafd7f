//! `fhirlake sync`: REST incremental sync (change data capture) from a FHIR
//! server into the same tables as `load` and `export`.
//!
//! - [`run`]: per type, windows of `_lastUpdated` from the type's watermark
//!   to the server's clock minus a settle lag (servers do not commit in
//!   `lastUpdated` order), pages followed exactly as returned, deletions
//!   from `_history`, each window committed through the one load job before
//!   its watermark moves.
//! - [`refresh`]: conditional re-reads of resources the lake holds
//!   (`If-None-Match`): 304 unchanged, 200 loaded, 404/410 deleted.
//!
//! Every request goes through the shared HTTP client (retries with
//! `Retry-After`, the per-host circuit breaker) and only to the server named.

mod capability;
mod error;
mod pages;
mod references;
mod refresh;
mod run;
mod watermark;
mod window;

pub use capability::{Features, TypeFeatures};
pub use error::SyncError;
pub use refresh::{RefreshPlan, RefreshReport, RefreshSelect, refresh};
pub use run::{
    DEFAULT_CONCURRENCY, DeleteSource, SyncPlan, SyncReport, TypeOutcome, check_types, run,
};
pub use watermark::{WATERMARK_DIR, Watermark};

use std::sync::Arc;

use serde_json::json;

use crate::ledger::Event;

/// Called after each window: the type, what it has done so far, and the
/// windows planned (when the server counts).
pub type SyncProgress = Arc<dyn Fn(&str, &TypeOutcome, Option<u64>) + Send + Sync>;

/// What a sync tells its event log.
pub enum SyncEvent<'a> {
    Window {
        resource_type: &'a str,
        up_to: &'a str,
        resources: u64,
    },
    Warning {
        text: &'a str,
    },
}

impl Event for SyncEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            SyncEvent::Window { .. } => "window_committed",
            SyncEvent::Warning { .. } => "warning",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            SyncEvent::Window {
                resource_type,
                up_to,
                resources,
            } => json!({"type": resource_type, "up_to": up_to, "resources": resources}),
            SyncEvent::Warning { text } => json!({"text": text}),
        }
    }

    fn describe(&self) -> Option<String> {
        Some(match self {
            SyncEvent::Window {
                resource_type,
                up_to,
                resources,
            } => format!("{resource_type}: synced up to {up_to} ({resources} resources so far)"),
            SyncEvent::Warning { text } => format!("warning: {text}"),
        })
    }
}
