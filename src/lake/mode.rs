//! How a table keeps versions of a resource.

/// How a table keeps versions of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// One row per id: the newest `meta.lastUpdated` wins.
    Current,
    /// One row per (id, meta.lastUpdated): every version is kept.
    History,
}
