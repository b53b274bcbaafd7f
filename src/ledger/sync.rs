//! What a `fhirlake sync` job asked a FHIR server and received: the window
//! it covered, every page (redacted URL, bytes, SHA-256 of the body as
//! received, entries), conditional re-reads answered 304, and the deletions
//! it applied. No credentials: URLs are redacted.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncRecord {
    /// The server's base URL (redacted).
    pub server: String,
    /// What the job did: `window`, `references` or `refresh`.
    pub step: String,
    /// The resource type synced (none for reference resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// `_lastUpdated` (or `--since-param`) window: exclusive lower bound
    /// (none: from the beginning) and inclusive upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SyncWindow>,
    pub pages: Vec<PageRecord>,
    /// Conditional re-reads the server answered 304 Not Modified.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_modified: u64,
    /// Resources the server reported deleted in the window, and what that did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deletions_requested: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_deleted: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tombstones: u64,
    /// Warnings the server sent (`search.mode = outcome`) and the sync's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub up_to: String,
    /// The search parameter the window is on (`_lastUpdated` unless `--since-param`).
    pub param: String,
}

/// One page (a search Bundle, a `_history` page or a read) as received.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageRecord {
    pub url: String,
    pub bytes: u64,
    pub sha256: String,
    /// Resources it carried (`search.mode` match and include).
    pub entries: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub included: u64,
    /// Deletions it listed (`_history` pages).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deletions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
