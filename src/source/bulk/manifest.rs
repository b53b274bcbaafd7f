//! The completion manifest of a Bulk Data export, in the shapes servers send:
//! v1/STU3 and v2 (`error`, `deleted`, partial manifests with `link` next),
//! and STU4 drafts (`outcome` in place of `error`, `extension` as an array).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One file the server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Resource type of the file's lines (`OperationOutcome` for error files).
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
    /// Lines the server says the file holds, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The server's cut-off instant: the next `--since` of an incremental export.
    pub transaction_time: String,
    pub request: String,
    /// Whether downloads need the bearer token (never sent when false).
    pub requires_access_token: bool,
    pub output: Vec<ManifestFile>,
    /// Files of OperationOutcomes about the export (`error`, or STU4 `outcome`).
    pub error: Vec<ManifestFile>,
    /// Bundles of deleted resources (v2).
    pub deleted: Vec<ManifestFile>,
    /// URL of the next partial manifest, if this one is partial.
    pub next: Option<String>,
    pub extension: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("export manifest is not JSON ({0}); the server sent something else at completion")]
    NotJson(String),
    #[error("export manifest has no {0:?}; it is required by the Bulk Data IG")]
    Missing(&'static str),
    #[error("export manifest field {field:?} is malformed: {detail}")]
    Malformed { field: &'static str, detail: String },
}

fn files(value: Option<&Value>, field: &'static str) -> Result<Vec<ManifestFile>, ManifestError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ManifestError::Malformed {
            field,
            detail: e.to_string(),
        }),
    }
}

impl Manifest {
    pub fn parse(body: &[u8]) -> Result<Self, ManifestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ManifestError::NotJson(e.to_string()))?;
        let text = |field: &'static str| -> Result<String, ManifestError> {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(ManifestError::Missing(field))
        };
        let transaction_time = text("transactionTime")?;
        if crate::fhir::parse_instant_micros(&transaction_time).is_none() {
            return Err(ManifestError::Malformed {
                field: "transactionTime",
                detail: format!("{transaction_time:?} is not a FHIR instant"),
            });
        }
        let requires_access_token = match value.get("requiresAccessToken") {
            Some(Value::Bool(b)) => *b,
            None => return Err(ManifestError::Missing("requiresAccessToken")),
            Some(other) => {
                return Err(ManifestError::Malformed {
                    field: "requiresAccessToken",
                    detail: format!("{other} is not a boolean"),
                });
            }
        };
        let error_field = if value.get("error").is_some() {
            "error"
        } else {
            "outcome"
        };
        let next = value
            .get("link")
            .and_then(Value::as_array)
            .and_then(|links| {
                links
                    .iter()
                    .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
            })
            .and_then(|l| l.get("url").and_then(Value::as_str))
            .map(str::to_owned);
        Ok(Self {
            transaction_time,
            request: text("request").unwrap_or_default(),
            requires_access_token,
            output: files(value.get("output"), "output")?,
            error: files(value.get(error_field), error_field)?,
            deleted: files(value.get("deleted"), "deleted")?,
            next,
            extension: value.get("extension").cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"{
      "transactionTime": "2021-01-01T00:00:00Z",
      "request": "https://example.com/fhir/Patient/$export?_type=Patient,Observation",
      "requiresAccessToken": true,
      "output": [
        {"type": "Patient", "url": "https://example.com/output/patient_file_1.ndjson"},
        {"type": "Observation", "url": "https://example.com/output/observation_file_1.ndjson", "count": 1234}
      ],
      "deleted": [{"type": "Bundle", "url": "https://example.com/output/del_file_1.ndjson"}],
      "error": [{"type": "OperationOutcome", "url": "https://example.com/output/err_file_1.ndjson"}],
      "link": [{"relation": "next", "url": "https://example.com/output/manifest-2.json"}],
      "extension": {"https://example.com/extra-property": true}
    }"#;

    #[test]
    fn parses_a_v2_manifest() {
        let m = Manifest::parse(V2.as_bytes()).unwrap();
        assert_eq!(m.transaction_time, "2021-01-01T00:00:00Z");
        assert!(m.requires_access_token);
        assert_eq!(m.output.len(), 2);
        assert_eq!(m.output[1].count, Some(1234));
        assert_eq!((m.error.len(), m.deleted.len()), (1, 1));
        assert_eq!(
            m.next.as_deref(),
            Some("https://example.com/output/manifest-2.json")
        );
    }

    #[test]
    fn tolerates_stu3_and_stu4_shapes() {
        let stu3 = r#"{"transactionTime":"2019-02-01T00:00:00.000+10:00","request":"r","requiresAccessToken":false,
                       "output":[{"type":"Patient","url":"u"}],"error":[]}"#;
        let m = Manifest::parse(stu3.as_bytes()).unwrap();
        assert!(!m.requires_access_token && m.deleted.is_empty() && m.next.is_none());
        let stu4 = r#"{"transactionTime":"2024-01-01T00:00:00Z","request":"r","requiresAccessToken":true,"output":[],
                       "outcome":[{"type":"OperationOutcome","url":"o"}],"extension":[{"url":"x","valueBoolean":true}]}"#;
        let m = Manifest::parse(stu4.as_bytes()).unwrap();
        assert_eq!(m.error[0].url, "o");
        assert!(m.extension.unwrap().is_array());
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        assert!(matches!(
            Manifest::parse(b"<html>"),
            Err(ManifestError::NotJson(_))
        ));
        assert_eq!(
            Manifest::parse(br#"{"request":"r","requiresAccessToken":true}"#),
            Err(ManifestError::Missing("transactionTime"))
        );
        let bad_time = br#"{"transactionTime":"yesterday","requiresAccessToken":true}"#;
        assert!(matches!(
            Manifest::parse(bad_time),
            Err(ManifestError::Malformed {
                field: "transactionTime",
                ..
            })
        ));
        let bad_output = br#"{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"output":[{"url":"u"}]}"#;
        assert!(matches!(
            Manifest::parse(bad_output),
            Err(ManifestError::Malformed {
                field: "output",
                ..
            })
        ));
    }
}
