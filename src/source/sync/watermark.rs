//! Where each type's sync got to: one object per server + type + query
//! under `_fhirlake/watermarks/`, written only after the window it closes
//! has committed. A crash before it re-runs the window; the load makes the
//! rows that already landed unchanged.

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lake::{Lake, LakeError};

pub const WATERMARK_DIR: &str = "_fhirlake/watermarks";

/// One type's watermark on one server for one query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Watermark {
    /// The server's base URL (redacted).
    pub server: String,
    pub resource_type: String,
    /// What besides the window the search asks (`_include`, `_elements`, the
    /// window's parameter): another query keeps its own watermark.
    pub query: Vec<(String, String)>,
    /// Every resource of the type changed at or before this instant (by the
    /// server's clock, minus the settle lag) is in the lake.
    pub up_to: String,
    pub up_to_micros: i64,
    pub job_id: String,
    pub updated_at: String,
}

/// The object a watermark lives in.
pub fn key(server: &str, resource_type: &str, query: &[(String, String)]) -> String {
    let digest = |text: &str| hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    let query_text: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{WATERMARK_DIR}/{}/{resource_type}-{}.json",
        digest(server),
        digest(&query_text.join("&"))
    )
}

fn store_err(key: &str) -> impl Fn(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Store {
        path: key.to_owned(),
        source,
    }
}

pub async fn read(lake: &Lake, key: &str) -> Result<Option<Watermark>, LakeError> {
    let path = lake.path(key);
    match lake.store().get(&path).await {
        Ok(result) => {
            let bytes = result.bytes().await.map_err(store_err(key))?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err(key)(e)),
    }
}

pub async fn write(lake: &Lake, key: &str, watermark: &Watermark) -> Result<(), LakeError> {
    let body = serde_json::to_vec_pretty(watermark).expect("a watermark serializes");
    lake.store()
        .put(&lake.path(key), PutPayload::from(body))
        .await
        .map_err(store_err(key))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_query_keeps_its_own_watermark() {
        let q = |k: &str| vec![("_include".to_owned(), k.to_owned())];
        let a = key("http://ehr/fhir", "Encounter", &q("Encounter:subject"));
        assert!(a.starts_with("_fhirlake/watermarks/") && a.contains("/Encounter-"));
        assert_ne!(
            a,
            key("http://ehr/fhir", "Encounter", &q("Encounter:location"))
        );
        assert_ne!(
            a,
            key("http://other/fhir", "Encounter", &q("Encounter:subject"))
        );
        assert_eq!(
            a,
            key("http://ehr/fhir", "Encounter", &q("Encounter:subject"))
        );
    }
}
