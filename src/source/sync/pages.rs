//! Requests to the server and what comes back: URLs built on the base the
//! user gave (and only there), a request rate cap, and search Bundles read
//! into the NDJSON the load takes, each resource's JSON kept as received.
//!
//! ```text
//!  GET page ─▶ Bundle ─▶ entries: match / include → NDJSON lines (their own JSON, unchanged)
//!                                 outcome         → warnings
//!           └▶ link[next] followed exactly as returned (opaque tokens), same server only
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use url::Url;

use super::SyncError;
use crate::http::{Fetched, HttpClient, RetryKind, redact_url};
use crate::ledger::{EventLog, PageRecord};

/// Spaces requests at least `1 / rate` apart, across every task of a sync.
pub struct RateLimit {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimit {
    /// `rate`: requests per second (none: no cap).
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            interval: rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The server a sync talks to, and how.
pub struct Fetcher<'a> {
    pub http: &'a HttpClient,
    pub events: &'a EventLog,
    pub limit: &'a RateLimit,
    pub server: &'a Url,
}

impl<'a> Fetcher<'a> {
    pub fn new(
        http: &'a HttpClient,
        events: &'a EventLog,
        limit: &'a RateLimit,
        server: &'a Url,
    ) -> Self {
        Self {
            http,
            events,
            limit,
            server,
        }
    }

    /// `[base]/path?params`.
    pub fn url(
        &self,
        base: &Url,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Url, SyncError> {
        let text = format!("{}/{path}", base.as_str().trim_end_matches('/'));
        let mut url = Url::parse(&text).map_err(|e| SyncError::Input {
            what: format!("URL {}", redact_url(&text)),
            detail: e.to_string(),
        })?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }

    /// Refuses a URL on another origin than the server's.
    pub fn check_same_server(&self, url: &Url) -> Result<(), SyncError> {
        if url.origin() == self.server.origin() {
            return Ok(());
        }
        Err(SyncError::ForeignLink {
            url: redact_url(url.as_str()),
            host: url.host_str().unwrap_or_default().to_owned(),
        })
    }

    /// A GET whatever its status (after the client's retries of 429/5xx).
    pub async fn get_any(
        &self,
        url: &Url,
        what: &str,
        headers: &[(&str, String)],
    ) -> Result<Fetched, SyncError> {
        self.check_same_server(url)?;
        self.limit.wait().await;
        let fetched = self
            .http
            .fetch(RetryKind::Request, what, url, self.events, |request| {
                headers.iter().fold(
                    request.header("accept", "application/fhir+json"),
                    |r, (k, v)| r.header(*k, v.as_str()),
                )
            })
            .await?;
        Ok(fetched)
    }

    /// A GET that must succeed.
    pub async fn get(
        &self,
        url: &Url,
        what: &str,
        headers: &[(&str, String)],
    ) -> Result<Fetched, SyncError> {
        let fetched = self.get_any(url, what, headers).await?;
        if !fetched.status.is_success() {
            return Err(refused(url, &fetched));
        }
        Ok(fetched)
    }
}

/// The error for an answer that is not a success: the OperationOutcome's
/// diagnostics when there is one.
pub fn refused(url: &Url, fetched: &Fetched) -> SyncError {
    let outcome: Option<serde_json::Value> = serde_json::from_slice(&fetched.body).ok();
    let detail = outcome
        .as_ref()
        .and_then(|o| o["issue"][0]["diagnostics"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&fetched.body[..fetched.body.len().min(200)]).into_owned()
        });
    SyncError::Refused {
        url: redact_url(url.as_str()),
        status: fetched.status.as_u16(),
        detail,
    }
}

/// The server's clock from a response's `Date` header (UTC µs).
pub fn server_date(fetched: &Fetched) -> Option<i64> {
    let date = fetched.header("date")?;
    chrono::DateTime::parse_from_rfc2822(date)
        .ok()
        .map(|d| d.timestamp_micros())
}

#[derive(Deserialize)]
struct Bundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<&'a str>,
    #[serde(default, borrow)]
    entry: Vec<Entry<'a>>,
    #[serde(default)]
    link: Vec<Link>,
    total: Option<u64>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    search: Option<Search>,
    request: Option<EntryRequest>,
    response: Option<EntryResponse>,
}

#[derive(Deserialize)]
struct Search {
    mode: Option<String>,
}

#[derive(Deserialize)]
struct EntryRequest {
    method: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryResponse {
    last_modified: Option<String>,
}

#[derive(Deserialize)]
struct Link {
    relation: Option<String>,
    url: Option<String>,
}

/// A deletion a `_history` page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub resource_type: String,
    pub id: String,
    /// `response.lastModified` (UTC µs), when given.
    pub at: Option<i64>,
    /// The entry's request, kept on tombstones.
    pub record: String,
}

/// One page as received and read.
pub struct Page {
    pub record: PageRecord,
    /// One resource per line, each as the server sent it (line breaks
    /// inside its whitespace removed: JSON strings cannot hold raw ones).
    pub ndjson: Vec<u8>,
    pub next: Option<Url>,
    pub total: Option<u64>,
    /// `search.mode = outcome` diagnostics.
    pub warnings: Vec<String>,
    pub deleted: Vec<Deleted>,
    /// The server's clock when it answered.
    pub server_now: Option<i64>,
}

/// Fetches and reads one Bundle page.
pub async fn fetch_page(fetcher: &Fetcher<'_>, url: &Url, what: &str) -> Result<Page, SyncError> {
    let fetched = fetcher.get(url, what, &[]).await?;
    let mut page = read_bundle(url, &fetched.body)?;
    page.server_now = server_date(&fetched);
    if let Some(next) = &page.next {
        fetcher.check_same_server(next)?;
    }
    Ok(page)
}

/// Reads a Bundle body into a page.
pub fn read_bundle(url: &Url, body: &Bytes) -> Result<Page, SyncError> {
    let bad = |detail: String| SyncError::Bundle {
        url: redact_url(url.as_str()),
        detail,
    };
    let bundle: Bundle = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if bundle.resource_type != Some("Bundle") {
        return Err(bad(format!(
            "resourceType is {:?}",
            bundle.resource_type.unwrap_or("missing")
        )));
    }
    let mut page = Page {
        record: PageRecord {
            url: redact_url(url.as_str()),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
            ..PageRecord::default()
        },
        ndjson: Vec::with_capacity(body.len()),
        next: None,
        total: bundle.total,
        warnings: Vec::new(),
        deleted: Vec::new(),
        server_now: None,
    };
    for entry in &bundle.entry {
        let mode = entry.search.as_ref().and_then(|s| s.mode.as_deref());
        let method = entry.request.as_ref().and_then(|r| r.method.as_deref());
        if method == Some("DELETE") {
            page.deleted.push(
                deleted(entry)
                    .ok_or_else(|| bad("a DELETE entry without a Type/id request.url".into()))?,
            );
            continue;
        }
        let Some(resource) = entry.resource else {
            continue;
        };
        if mode == Some("outcome") {
            let outcome: serde_json::Value =
                serde_json::from_str(resource.get()).unwrap_or_default();
            for issue in outcome["issue"].as_array().into_iter().flatten() {
                let text = issue["diagnostics"]
                    .as_str()
                    .or(issue["details"]["text"].as_str())
                    .unwrap_or("(no diagnostics)");
                page.warnings.push(format!("{}: {text}", page.record.url));
            }
            continue;
        }
        page.ndjson.extend(
            resource
                .get()
                .bytes()
                .filter(|b| !matches!(b, b'\n' | b'\r')),
        );
        page.ndjson.push(b'\n');
        page.record.entries += 1;
        if mode == Some("include") {
            page.record.included += 1;
        }
    }
    page.record.deletions = page.deleted.len() as u64;
    page.next = bundle
        .link
        .iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url.as_deref())
        .map(|next| Url::parse(next).map_err(|e| bad(format!("next link {next:?}: {e}"))))
        .transpose()?;
    Ok(page)
}

fn deleted(entry: &Entry<'_>) -> Option<Deleted> {
    let request = entry.request.as_ref()?;
    let url = request.url.as_deref()?;
    // `Type/id` or `Type/id/_history/v`, maybe absolute.
    let path = url.split("/_history/").next()?;
    let mut parts = path.rsplit('/');
    let id = parts.next()?.to_owned();
    let resource_type = parts.next()?.to_owned();
    let at = entry
        .response
        .as_ref()
        .and_then(|r| r.last_modified.as_deref())
        .and_then(crate::fhir::parse_instant_micros);
    let record = serde_json::json!({"request": {"method": "DELETE", "url": url}}).to_string();
    Some(Deleted {
        resource_type,
        id,
        at,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_becomes_lines_kept_as_received_and_its_next_link_verbatim() {
        let body = Bytes::from_static(
            br#"{"resourceType":"Bundle","type":"searchset","total":3,
"link":[{"relation":"self","url":"http://h/fhir/Patient"},{"relation":"next","url":"http://h/fhir?_getpages=AbC%2Bz&_page=2"}],
"entry":[{"resource":{"resourceType":"Patient","id":"a", "meta":{"lastUpdated":"2026-01-01T00:00:00Z"}},"search":{"mode":"match"}},
{"resource":{
  "resourceType":"Organization","id":"o"},"search":{"mode":"include"}},
{"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","diagnostics":"too broad"}]},"search":{"mode":"outcome"}},
{"request":{"method":"DELETE","url":"Patient/gone"},"response":{"lastModified":"2026-01-02T00:00:00Z"}}]}"#,
        );
        let url = Url::parse("http://h/fhir/Patient?_count=2").unwrap();
        let page = read_bundle(&url, &body).unwrap();
        let text = String::from_utf8(page.ndjson).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"resourceType":"Patient","id":"a", "meta":{"lastUpdated":"2026-01-01T00:00:00Z"}}"#
        );
        assert_eq!(lines[1], r#"{  "resourceType":"Organization","id":"o"}"#);
        assert_eq!((page.record.entries, page.record.included), (2, 1));
        assert_eq!(
            page.next.unwrap().as_str(),
            "http://h/fhir?_getpages=AbC%2Bz&_page=2"
        );
        assert_eq!(page.warnings.len(), 1);
        assert_eq!(page.deleted[0].id, "gone");
        assert_eq!(page.total, Some(3));
        assert_eq!(page.record.sha256.len(), 64);
    }
}
