//! `--resolve-references`: after the windows, what the synced resources
//! point at and the lake does not hold (Practitioner, Organization,
//! Location, Medication, ...) is fetched in batches (`_id=a,b,c`), never one
//! GET per reference. One level: references of the fetched resources are
//! not followed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use url::Url;

use super::SyncError;
use super::pages::{Page, fetch_page};
use super::run::Sync;
use crate::ledger::SyncRecord;

/// Ids per request.
const BATCH: usize = 50;

/// References seen in synced resources, and the resources synced.
#[derive(Debug, Default)]
pub struct References {
    wanted: BTreeMap<String, BTreeSet<String>>,
    seen: BTreeMap<String, BTreeSet<String>>,
}

impl References {
    /// Notes the references of a page's resources (relative `Type/id`, or
    /// absolute on `server`), and the resources themselves.
    pub fn note_page(&mut self, ndjson: &[u8], server: &Url) {
        let base = server.as_str().trim_end_matches('/');
        for line in ndjson.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(resource) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if let (Some(ty), Some(id)) =
                (resource["resourceType"].as_str(), resource["id"].as_str())
            {
                self.seen
                    .entry(ty.to_owned())
                    .or_default()
                    .insert(id.to_owned());
            }
            collect(&resource, base, &mut self.wanted);
        }
    }

    /// Per type, the ids referenced but not synced.
    fn missing(&self) -> BTreeMap<String, Vec<String>> {
        let empty = BTreeSet::new();
        self.wanted
            .iter()
            .map(|(ty, ids)| {
                let seen = self.seen.get(ty).unwrap_or(&empty);
                (ty.clone(), ids.difference(seen).cloned().collect())
            })
            .filter(|(_, ids): &(String, Vec<String>)| !ids.is_empty())
            .collect()
    }
}

fn collect(value: &Value, base: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("reference")
                && let Some((ty, id)) = target(reference, base)
            {
                into.entry(ty.to_owned()).or_default().insert(id.to_owned());
            }
            for child in map.values() {
                collect(child, base, into);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, base, into);
            }
        }
        _ => {}
    }
}

/// `Type/id` of a reference to this server (not `#contained`, not another server).
fn target<'a>(reference: &'a str, base: &str) -> Option<(&'a str, &'a str)> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.strip_prefix('/')?,
        None if reference.contains("://") || reference.starts_with('#') => return None,
        None => reference,
    };
    let relative = relative.split("/_history/").next()?;
    let (ty, id) = relative.split_once('/')?;
    (crate::fhir::is_valid_resource_type(ty) && crate::fhir::is_valid_id(id)).then_some((ty, id))
}

/// Fetches what the synced resources reference and the lake lacks.
pub(super) async fn resolve_references(sync: &Sync<'_>) -> Result<(), SyncError> {
    let missing = sync.references.lock().expect("references lock").missing();
    let fetcher = &sync.fetcher;
    for (ty, ids) in missing {
        let held = crate::lake::held_ids(
            sync.lake,
            &crate::fhir::table_name(&ty),
            sync.plan.load.mode,
            &ids,
        )
        .await?;
        let absent: Vec<String> = ids.into_iter().filter(|id| !held.contains(id)).collect();
        if absent.is_empty() {
            continue;
        }
        let mut record = SyncRecord {
            server: sync.server.clone(),
            step: "references".to_owned(),
            resource_type: Some(ty.clone()),
            ..SyncRecord::default()
        };
        let mut pages: Vec<Page> = Vec::new();
        for batch in absent.chunks(BATCH) {
            let params = vec![
                ("_id".to_owned(), batch.join(",")),
                ("_count".to_owned(), BATCH.to_string()),
            ];
            let mut url = Some(fetcher.url(fetcher.server, &ty, &params)?);
            while let Some(at) = url.take() {
                let page = fetch_page(fetcher, &at, &format!("{ty} references")).await?;
                record.pages.push(page.record.clone());
                url = page.next.clone();
                pages.push(page);
            }
        }
        sync.commit(record, pages, BTreeMap::new()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_this_server_are_collected_and_synced_ones_left_out() {
        let server = Url::parse("http://ehr/fhir").unwrap();
        let mut refs = References::default();
        let page = br##"{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"},"participant":[{"individual":{"reference":"http://ehr/fhir/Practitioner/d1/_history/2"}}],"serviceProvider":{"reference":"http://other/fhir/Organization/o9"},"contained":[{"resourceType":"Location","id":"l"}],"location":[{"location":{"reference":"#l"}}]}
{"resourceType":"Patient","id":"p1"}
"##;
        refs.note_page(page, &server);
        let missing = refs.missing();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing["Practitioner"], ["d1"]);
    }
}
