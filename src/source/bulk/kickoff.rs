//! Kick-off: `GET` with query parameters or `POST` with a FHIR `Parameters`
//! body (the only way to send `patient`), falling back from one to the other
//! when the server answers 405 or 400. Returns the status URL.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use super::job::ExportRequest;
use crate::http::{Call, HttpClient, HttpError, redact_url};
use crate::ledger::{Event, EventLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KickoffMethod {
    /// GET, or POST when `patient` is given; fall back on 405/400.
    Auto,
    Get,
    Post,
}

#[derive(Debug, thiserror::Error)]
pub enum KickoffError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "kick-off {method} {url} was refused: HTTP {status}: {diagnostics}; check the scope, --type and the other parameters the server supports"
    )]
    Refused {
        method: String,
        url: String,
        status: u16,
        diagnostics: String,
    },
    #[error(
        "kick-off {url} answered {status} without a Content-Location header; the server does not follow the Bulk Data IG's async pattern"
    )]
    NoStatusUrl { url: String, status: u16 },
}

/// The accepted kick-off.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub method: Method,
    pub url: Url,
    pub status_url: Url,
}

/// The `$export` URL with the parameters a GET can carry.
pub fn kickoff_url(server: &Url, request: &ExportRequest, with_query: bool) -> Url {
    let mut url = server.clone();
    let path = format!(
        "{}/{}",
        url.path().trim_end_matches('/'),
        request.scope.path()
    );
    url.set_path(&path);
    url.set_query(None);
    if with_query {
        let mut query = url.query_pairs_mut();
        for (k, v) in &request.params {
            if k != "patient" {
                query.append_pair(k, v);
            }
        }
    }
    url
}

/// The `Parameters` body of a POST kick-off.
pub fn parameters_body(request: &ExportRequest) -> Value {
    let parameter: Vec<Value> = request
        .params
        .iter()
        .map(|(name, value)| match name.as_str() {
            "patient" => json!({"name": name, "valueReference": {"reference": value}}),
            "_since" | "_until" => json!({"name": name, "valueInstant": value}),
            "allowPartialManifests" => {
                json!({"name": name, "valueBoolean": value == "true"})
            }
            "includeAssociatedData" => json!({"name": name, "valueCode": value}),
            _ => json!({"name": name, "valueString": value}),
        })
        .collect();
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// The diagnostics of an OperationOutcome body, or the body's start.
pub fn diagnostics(body: &[u8]) -> String {
    super::status::outcome(body)
        .map(|(_, text)| text)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

pub async fn kick_off(
    http: &HttpClient,
    server: &Url,
    request: &ExportRequest,
    method: KickoffMethod,
    events: &EventLog,
) -> Result<Accepted, KickoffError> {
    let has_patient = request.params.iter().any(|(k, _)| k == "patient");
    let order: &[Method] = match (method, has_patient) {
        (KickoffMethod::Get, _) => &[Method::GET],
        (KickoffMethod::Post, _) | (KickoffMethod::Auto, true) => &[Method::POST],
        (KickoffMethod::Auto, false) => &[Method::GET, Method::POST],
    };
    let mut refusals = Vec::new();
    for (i, method) in order.iter().enumerate() {
        let url = kickoff_url(server, request, *method == Method::GET);
        let body = parameters_body(request).to_string();
        let response = http
            .send(Call::new("kick-off", method.clone(), &url), events, |r| {
                let r = r
                    .header("Accept", "application/fhir+json")
                    .header("Prefer", "respond-async");
                if *method == Method::POST {
                    r.header("Content-Type", "application/fhir+json")
                        .body(body.clone())
                } else {
                    r
                }
            })
            .await?;
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            let location = response
                .headers()
                .get("content-location")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
                .ok_or_else(|| KickoffError::NoStatusUrl {
                    url: redact_url(url.as_str()),
                    status: 202,
                })?;
            super::events::KickedOff {
                method: method.to_string(),
                url: redact_url(url.as_str()),
            }
            .emit(events);
            return Ok(Accepted {
                method: method.clone(),
                url,
                status_url: location,
            });
        }
        let body = response.bytes().await.unwrap_or_default();
        let refused = KickoffError::Refused {
            method: method.to_string(),
            url: redact_url(url.as_str()),
            status: status.as_u16(),
            diagnostics: diagnostics(&body),
        };
        super::events::KickoffRefused {
            method: method.to_string(),
            url: redact_url(url.as_str()),
            status: status.as_u16(),
        }
        .emit(events);
        let fallback = matches!(status.as_u16(), 400 | 405) && i + 1 < order.len();
        if !fallback {
            return Err(refused);
        }
        refusals.push(refused);
    }
    Err(refusals.pop().expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use super::super::job::Scope;
    use super::*;

    fn request() -> ExportRequest {
        ExportRequest {
            server: "https://ehr/fhir/".into(),
            scope: Scope::Group("g 1".into()),
            params: vec![
                ("_type".into(), "Patient,Observation".into()),
                ("_since".into(), "2024-01-01T00:00:00Z".into()),
                ("patient".into(), "Patient/7".into()),
                ("allowPartialManifests".into(), "true".into()),
            ],
        }
    }

    #[test]
    fn get_url_and_post_body_carry_the_parameters() {
        let server = Url::parse("https://ehr/fhir/").unwrap();
        let url = kickoff_url(&server, &request(), true);
        assert_eq!(url.path(), "/fhir/Group/g%201/$export");
        let query = url.query().unwrap();
        assert!(query.contains("_type=Patient%2CObservation"), "{query}");
        assert!(!query.contains("patient"), "patient is POST-only: {query}");
        let body = parameters_body(&request());
        assert_eq!(body["resourceType"], "Parameters");
        assert_eq!(
            body["parameter"][2],
            json!({"name": "patient", "valueReference": {"reference": "Patient/7"}})
        );
        assert_eq!(body["parameter"][1]["valueInstant"], "2024-01-01T00:00:00Z");
        assert_eq!(body["parameter"][3]["valueBoolean"], true);
    }
}
