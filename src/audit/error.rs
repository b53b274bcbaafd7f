//! The audit module's two error boundaries: a value refused when an event is
//! built ([`InputError`]), and the store failing under the chain
//! ([`ChainError`]). Neither ever repeats the value it refused: a rejected
//! client id may be a token pasted in the wrong place.

/// A value refused by one of the audit types. Names the field and why, never
/// the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit {field}: refused a value of {len} bytes: {reason}")]
pub struct InputError {
    /// What the value was meant to be (`client id`, `resource type`, ...).
    pub field: &'static str,
    /// Why it was refused.
    pub reason: &'static str,
    /// Its length, the only thing said about the value.
    pub len: usize,
}

impl InputError {
    pub(crate) fn new(field: &'static str, reason: &'static str, value: &str) -> Self {
        Self {
            field,
            reason,
            len: value.len(),
        }
    }
}

/// The store under the chain failed, or other writers kept winning.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The store refused or failed a read, list or write of `path`.
    #[error("audit chain: {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// Every one of `attempts` sequence numbers in a row was taken by another
    /// writer first; `path` is the last one tried.
    #[error(
        "audit chain: {path}: {attempts} sequence numbers in a row were taken by other writers; retry the step"
    )]
    Contended { path: String, attempts: u32 },
}
