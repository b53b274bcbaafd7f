//! `fhirlake sync --refresh <table>`: re-reads resources the lake holds, by
//! id, with `If-None-Match: W/"<meta_version_id>"`. 304 is unchanged (no
//! body, no write); 200 is loaded like any page; 404 or 410 applies a
//! deletion (current mode deletes the row, history mode writes a
//! tombstone); 412 (a stale precondition) is read again once without it.
//! Nothing is written when every answer is 304.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use url::Url;

use super::SyncError;
use super::pages::{Fetcher, RateLimit, refused, server_date};
use crate::http::{HttpClient, redact_url};
use crate::lake::{Deletion, Lake, Rows, stored_versions};
use crate::ledger::{Echo, EventLog, ManifestKind, PageRecord, SyncRecord};
use crate::load::{Input, Job, LoadOptions, LoadReport, SourceKind, StandIn, StandInSource};

/// Which stored resources to re-read.
#[derive(Debug, Clone)]
pub enum RefreshSelect {
    Ids(Vec<String>),
    /// Rows whose `meta_last_updated` is older than this.
    OlderThan(Duration),
}

#[derive(Debug, Clone)]
pub struct RefreshPlan {
    pub server: Url,
    pub resource_type: String,
    pub select: RefreshSelect,
    /// Reads in flight at once.
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub load: LoadOptions,
}

#[derive(Debug, Default)]
pub struct RefreshReport {
    pub reads: u64,
    pub not_modified: u64,
    pub changed: u64,
    pub deleted: u64,
    /// The load job, when anything changed.
    pub load: Option<LoadReport>,
}

/// What one read came to.
enum Read {
    NotModified,
    Changed(Vec<u8>, PageRecord, Option<i64>),
    Gone(Deletion),
}

pub async fn refresh(
    lake: &Lake,
    plan: &RefreshPlan,
    http: &HttpClient,
    echo: Option<Echo>,
) -> Result<RefreshReport, SyncError> {
    lake.ensure_put_if_absent().await?;
    let ty = &plan.resource_type;
    let table = crate::fhir::table_name(ty);
    let rows = match &plan.select {
        RefreshSelect::Ids(ids) => Rows::Ids(ids),
        RefreshSelect::OlderThan(age) => {
            Rows::UpdatedBefore(Utc::now().timestamp_micros() - age.as_micros() as i64)
        }
    };
    let stored = stored_versions(lake, &table, rows).await?;
    let events = EventLog::new(Vec::new(), echo);
    let limit = RateLimit::new(plan.rate);
    let fetcher = Fetcher::new(http, &events, &limit, &plan.server);
    let reads: Vec<Result<Read, SyncError>> = futures::stream::iter(&stored)
        .map(|(id, version)| read_one(&fetcher, ty, id, version.as_deref()))
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await;
    let mut report = RefreshReport {
        reads: stored.len() as u64,
        ..RefreshReport::default()
    };
    let mut ndjson = Vec::new();
    let mut record = SyncRecord {
        server: redact_url(plan.server.as_str()),
        step: "refresh".to_owned(),
        resource_type: Some(ty.clone()),
        ..SyncRecord::default()
    };
    let mut deletions = Vec::new();
    let mut newest_date = None;
    for read in reads {
        match read? {
            Read::NotModified => report.not_modified += 1,
            Read::Changed(body, page, date) => {
                report.changed += 1;
                ndjson.extend(body.iter().filter(|b| !matches!(b, b'\n' | b'\r')));
                ndjson.push(b'\n');
                record.pages.push(page);
                newest_date = newest_date.max(date);
            }
            Read::Gone(deletion) => {
                report.deleted += 1;
                deletions.push(deletion);
            }
        }
    }
    record.not_modified = report.not_modified;
    if report.changed == 0 && report.deleted == 0 {
        return Ok(report);
    }
    let name = format!(
        "{}/{ty} ({} conditional reads)",
        redact_url(plan.server.as_str()).trim_end_matches('/'),
        report.reads
    );
    let mut inputs = Vec::new();
    if !ndjson.is_empty() {
        let stand_in = newest_date.map(|t| StandIn::new(StandInSource::ServerDate, t));
        inputs.push(
            Input::memory(name, SourceKind::Sync, Bytes::from(ndjson))
                .with_expected_type(None)
                .with_stand_in(stand_in),
        );
    }
    let load = Job::new(lake)
        .with_inputs(inputs)
        .with_options(plan.load.clone())
        .with_kind(ManifestKind::Sync)
        .with_sync(record)
        .with_deletions(BTreeMap::from([(ty.clone(), deletions)]))
        .without_loaded_markers()
        .await?;
    report.load = Some(load);
    Ok(report)
}

async fn read_one(
    fetcher: &Fetcher<'_>,
    ty: &str,
    id: &str,
    version: Option<&str>,
) -> Result<Read, SyncError> {
    let url = fetcher.url(fetcher.server, &format!("{ty}/{id}"), &[])?;
    let condition: Vec<(&str, String)> = version
        .map(|v| vec![("if-none-match", format!("W/\"{v}\""))])
        .unwrap_or_default();
    let mut fetched = fetcher.get_any(&url, "refresh", &condition).await?;
    if fetched.status == StatusCode::PRECONDITION_FAILED {
        fetched = fetcher.get_any(&url, "refresh", &[]).await?;
    }
    match fetched.status {
        StatusCode::NOT_MODIFIED => Ok(Read::NotModified),
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            let at = server_date(&fetched).unwrap_or_else(|| Utc::now().timestamp_micros());
            Ok(Read::Gone(Deletion {
                id: id.to_owned(),
                deleted_at: at,
                record:
                    serde_json::json!({"request": {"method": "GET", "url": format!("{ty}/{id}")},
                    "response": {"status": fetched.status.as_u16().to_string()}})
                    .to_string(),
                source: redact_url(url.as_str()),
                line: 1,
            }))
        }
        status if status.is_success() => {
            let page = PageRecord {
                url: redact_url(url.as_str()),
                bytes: fetched.body.len() as u64,
                sha256: hex::encode(Sha256::digest(&fetched.body)),
                entries: 1,
                ..PageRecord::default()
            };
            let date = server_date(&fetched);
            Ok(Read::Changed(fetched.body.to_vec(), page, date))
        }
        _ => Err(refused(&url, &fetched)),
    }
}
