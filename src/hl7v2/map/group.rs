//! The state an order or result group carries between its segments, shared
//! by the ORM (`order`) and ORU (`result`) mappings.

use super::datatypes::Ident;

/// One ORDER/ORDER_OBSERVATION group.
#[derive(Debug, Clone, Default)]
pub(super) struct Group {
    pub sr: Option<String>,
    pub dr: Option<String>,
    /// Key of the group's report (or order): part of Observation/Specimen keys.
    pub report_key: String,
    pub observations: Vec<String>,
    pub specimens: Vec<String>,
    /// OBR-7, the default effective time of the group's observations.
    pub effective: Option<String>,
}

/// Placer and filler numbers of an order.
pub(super) struct Numbers {
    pub placer: Option<Ident>,
    pub filler: Option<Ident>,
}

/// The key of an order number, as part of resource identity keys.
pub(super) fn ident_key(i: &Ident) -> String {
    format!("{}|{}", i.system.as_deref().unwrap_or(""), i.value)
}
