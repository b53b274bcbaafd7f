//! What a server offers a sync, from its CapabilityStatement: per type, the
//! search parameters (`_lastUpdated`, `_sort`, `_summary`, `_total`, ...)
//! and interactions (`history-type`), and the server's clock (`Date`).
//!
//! A type the statement does not describe is assumed to offer the common
//! search parameters (`_lastUpdated` is one for every resource in R4), not
//! history or counts: the sync then needs nothing it was not promised.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use url::Url;

use super::SyncError;
use super::pages::{Fetcher, server_date};

/// What the server offers for one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFeatures {
    /// Search parameter names; empty when the statement lists none.
    pub params: BTreeSet<String>,
    pub history: bool,
    pub conditional_read: bool,
}

impl TypeFeatures {
    /// Whether searching by `param` is offered (all common ones are when the
    /// statement lists no parameters).
    pub fn searches(&self, param: &str) -> bool {
        self.params.is_empty() && param.starts_with('_') || self.params.contains(param)
    }

    /// `_sort` by `_lastUpdated`, `_summary=count`, `_total`: only when listed.
    pub fn offers(&self, param: &str) -> bool {
        self.params.contains(param)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Features {
    pub types: BTreeMap<String, TypeFeatures>,
    /// The server's clock when it answered (UTC µs).
    pub server_now: Option<i64>,
}

impl Features {
    pub fn of(&self, resource_type: &str) -> TypeFeatures {
        self.types
            .get(resource_type)
            .cloned()
            .unwrap_or_else(|| TypeFeatures {
                params: BTreeSet::new(),
                history: false,
                conditional_read: false,
            })
    }
}

/// Reads `[base]/metadata`.
pub async fn read(fetcher: &Fetcher<'_>, server: &Url) -> Result<Features, SyncError> {
    let url = fetcher.url(server, "metadata", &[])?;
    let fetched = fetcher.get(&url, "metadata", &[]).await?;
    let statement: Value =
        serde_json::from_slice(&fetched.body).map_err(|e| SyncError::Bundle {
            url: crate::http::redact_url(url.as_str()),
            detail: format!("CapabilityStatement: {e}"),
        })?;
    let mut features = parse(&statement);
    features.server_now = server_date(&fetched);
    Ok(features)
}

/// The features a CapabilityStatement describes.
pub fn parse(statement: &Value) -> Features {
    let mut types = BTreeMap::new();
    let rests = statement["rest"].as_array().into_iter().flatten();
    for rest in rests.filter(|r| r["mode"] == "server") {
        for resource in rest["resource"].as_array().into_iter().flatten() {
            let Some(name) = resource["type"].as_str() else {
                continue;
            };
            let params = resource["searchParam"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            let interactions: Vec<&str> = resource["interaction"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["code"].as_str())
                .collect();
            let conditional = resource["conditionalRead"]
                .as_str()
                .unwrap_or("not-supported");
            types.insert(
                name.to_owned(),
                TypeFeatures {
                    params,
                    history: interactions.contains(&"history-type"),
                    conditional_read: conditional != "not-supported",
                },
            );
        }
    }
    Features {
        types,
        server_now: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn features_come_from_the_statement_and_unknown_types_get_the_common_ones() {
        let statement = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
            {"type": "Patient", "interaction": [{"code": "search-type"}, {"code": "history-type"}],
             "conditionalRead": "full-support",
             "searchParam": [{"name": "_lastUpdated"}, {"name": "_sort"}, {"name": "_summary"}]},
            {"type": "Observation", "interaction": [{"code": "search-type"}],
             "searchParam": [{"name": "date"}, {"name": "_id"}]}]}]});
        let features = parse(&statement);
        let patient = features.of("Patient");
        assert!(patient.searches("_lastUpdated") && patient.offers("_sort") && patient.history);
        assert!(patient.conditional_read);
        let observation = features.of("Observation");
        assert!(
            !observation.searches("_lastUpdated"),
            "listed params, not it"
        );
        assert!(observation.searches("date") && !observation.history);
        let unknown = features.of("Encounter");
        assert!(unknown.searches("_lastUpdated") && !unknown.offers("_summary"));
    }
}
