//! One `fhirlake sync`: per type, from its watermark to the server's "now"
//! minus the settle lag, window by window; each window's pages (and the
//! deletions `_history` lists for it) go through the one load job, then the
//! watermark moves. Types run side by side up to `--max-concurrency`.
//!
//! ```text
//!  CapabilityStatement (features, server clock)
//!   └▶ per type: watermark ─▶ windows (counted, or by time)
//!        └▶ per window: search pages ─(every --max-window entries)─▶ load job (kind sync)
//!                       _history deletions ─────────────────────────▶ last job of the window
//!                       ─▶ watermark = window end
//!   └▶ --resolve-references: missing targets fetched by _id batches ─▶ load job
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::Serialize;
use url::Url;

use super::capability::{self, Features, TypeFeatures};
use super::pages::{Deleted, Fetcher, Page, RateLimit, fetch_page};
use super::references::{References, resolve_references};
use super::watermark::{self, Watermark};
use super::window::{TimeSteps, Window, plan_counted};
use super::{SyncError, SyncEvent, SyncProgress};
use crate::http::{HttpClient, redact_url};
use crate::lake::{Deletion, Lake};
use crate::ledger::{Echo, Event, EventLog, ManifestKind, PageRecord, SyncRecord, SyncWindow};
use crate::load::{Input, Job, LoadOptions, LoadReport, SourceKind, StandIn, StandInSource};
use crate::source::bulk::{JobState, Phase};

/// Where a sync learns of deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteSource {
    /// `_history` where the CapabilityStatement offers it.
    Auto,
    /// `_history`, required.
    History,
    /// Not at all.
    None,
}

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub server: Url,
    pub types: Vec<String>,
    /// How far behind the server's clock a window ends.
    pub settle: Duration,
    /// Resources per window (and per commit).
    pub max_window: u64,
    /// `_count` asked per page.
    pub page_size: u32,
    /// `_include` values (`Source:param`, optionally `Type=` to pick the searched type).
    pub includes: Vec<String>,
    /// `_revinclude` values (`Source:param`; every type, or `Type=` one).
    pub revincludes: Vec<String>,
    pub elements: Option<String>,
    pub resolve_references: bool,
    pub deletes: DeleteSource,
    /// Overrides every watermark.
    pub since: Option<i64>,
    /// Per type, the date parameter windows are on (default `_lastUpdated`).
    pub since_params: BTreeMap<String, String>,
    pub max_concurrency: usize,
    /// Requests per second, across the sync.
    pub rate: Option<f64>,
    pub load: LoadOptions,
}

/// What one type's sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeOutcome {
    pub resource_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub up_to: String,
    pub windows: u64,
    pub pages: u64,
    pub resources: u64,
    pub deletions: u64,
}

/// What the sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub types: Vec<TypeOutcome>,
    /// Every load job, in the order they committed.
    pub loads: Vec<LoadReport>,
    pub warnings: Vec<String>,
}

/// What every part of a running sync reads.
pub(super) struct Sync<'a> {
    pub lake: &'a Lake,
    pub plan: &'a SyncPlan,
    pub fetcher: Fetcher<'a>,
    pub features: Features,
    pub server: String,
    pub progress: Option<SyncProgress>,
    pub loads: Mutex<Vec<LoadReport>>,
    pub warnings: Mutex<Vec<String>>,
    pub references: Mutex<References>,
}

/// Runs a sync (see the module header).
pub async fn run(
    lake: &Lake,
    plan: &SyncPlan,
    http: &HttpClient,
    echo: Option<Echo>,
    progress: Option<SyncProgress>,
) -> Result<SyncReport, SyncError> {
    lake.ensure_put_if_absent().await?;
    let events = EventLog::new(Vec::new(), echo);
    let limit = RateLimit::new(plan.rate);
    let fetcher = Fetcher::new(http, &events, &limit, &plan.server);
    let features = capability::read(&fetcher, &plan.server).await?;
    let sync = Sync {
        lake,
        plan,
        server: redact_url(plan.server.as_str()),
        fetcher,
        features,
        progress,
        loads: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        references: Mutex::new(References::default()),
    };
    let outcomes: Vec<Result<TypeOutcome, SyncError>> = futures::stream::iter(&plan.types)
        .map(|ty| sync_type(&sync, ty))
        .buffered(plan.max_concurrency.max(1))
        .collect()
        .await;
    let mut types = Vec::new();
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(outcome) => types.push(outcome),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if plan.resolve_references {
        resolve_references(&sync).await?;
    }
    Ok(SyncReport {
        types,
        loads: sync.loads.into_inner().expect("loads lock"),
        warnings: sync.warnings.into_inner().expect("warnings lock"),
    })
}

fn instant(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl Sync<'_> {
    pub(super) fn warn(&self, warning: String) {
        SyncEvent::Warning { text: &warning }.emit(self.fetcher.events);
        self.warnings.lock().expect("warnings lock").push(warning);
    }

    /// The search parameters besides the window: what makes a query its own.
    fn query_of(&self, ty: &str) -> Vec<(String, String)> {
        let mut query = Vec::new();
        let pick = |value: &str, every_type: bool| -> Option<String> {
            match value.split_once('=') {
                Some((target, rest)) => (target == ty).then(|| rest.to_owned()),
                None if every_type || value.split(':').next() == Some(ty) => Some(value.to_owned()),
                None => None,
            }
        };
        for include in &self.plan.includes {
            if let Some(v) = pick(include, false) {
                query.push(("_include".to_owned(), v));
            }
        }
        for revinclude in &self.plan.revincludes {
            if let Some(v) = pick(revinclude, true) {
                query.push(("_revinclude".to_owned(), v));
            }
        }
        // Minimum necessary: a type the policy lists `elements` for is asked
        // for only those (`--elements` wins).
        let elements = self.plan.elements.clone().or_else(|| {
            let elements = self.plan.load.policy.elements(ty)?;
            Some(elements.names().collect::<Vec<_>>().join(","))
        });
        if let Some(elements) = elements {
            query.push(("_elements".to_owned(), elements));
        }
        query
    }

    /// The baseline a type with no watermark starts from: the newest
    /// finished `$export` of this server that covered the type.
    async fn export_baseline(&self, ty: &str) -> Result<Option<i64>, SyncError> {
        let jobs = JobState::list(self.lake).await?;
        Ok(jobs
            .iter()
            .filter(|j| matches!(j.phase, Phase::Loaded | Phase::Finished))
            .filter(|j| j.request.server == self.server)
            .filter(|j| j.request.covers_type(ty))
            .filter_map(|j| j.transaction_time.as_deref())
            .filter_map(crate::fhir::parse_instant_micros)
            .max())
    }

    /// Loads pages (and deletions) as one job.
    pub(super) async fn commit(
        &self,
        record: SyncRecord,
        pages: Vec<Page>,
        deletions: BTreeMap<String, Vec<Deletion>>,
    ) -> Result<(), SyncError> {
        if pages.iter().all(|p| p.ndjson.is_empty()) && deletions.is_empty() {
            return Ok(());
        }
        let subsetted = self.plan.elements.is_some();
        let inputs: Vec<Input> = pages
            .into_iter()
            .filter(|p| !p.ndjson.is_empty())
            .map(|page| {
                let stand_in = page
                    .server_now
                    .map(|t| StandIn::new(StandInSource::ServerDate, t));
                Input::memory(page.record.url, SourceKind::Sync, Bytes::from(page.ndjson))
                    .with_expected_type(None)
                    .with_subsetted(subsetted)
                    .with_stand_in(stand_in)
            })
            .collect();
        let report = Job::new(self.lake)
            .with_principal(self.fetcher.http.tokens.principal())
            .with_inputs(inputs)
            .with_options(self.plan.load.clone())
            .with_kind(ManifestKind::Sync)
            .with_sync(record)
            .with_deletions(deletions)
            .without_loaded_markers()
            .await?;
        self.loads.lock().expect("loads lock").push(report);
        Ok(())
    }

    fn report(&self, ty: &str, outcome: &TypeOutcome, total_windows: Option<u64>) {
        if let Some(progress) = &self.progress {
            progress(ty, outcome, total_windows);
        }
    }
}

/// The date parameter a type's windows are on, checked against the server.
fn window_param(sync: &Sync<'_>, ty: &str, features: &TypeFeatures) -> Result<String, SyncError> {
    let param = sync
        .plan
        .since_params
        .get(ty)
        .cloned()
        .unwrap_or_else(|| "_lastUpdated".to_owned());
    if !features.searches(&param) {
        return Err(SyncError::NoWindowParam {
            resource_type: ty.to_owned(),
            param,
        });
    }
    if param != "_lastUpdated" {
        sync.warn(format!(
            "{ty}: windows on `{param}`, not `_lastUpdated`: edits to resources whose {param} is older than the watermark are missed"
        ));
    }
    Ok(param)
}

async fn sync_type(sync: &Sync<'_>, ty: &str) -> Result<TypeOutcome, SyncError> {
    let features = sync.features.of(ty);
    let param = window_param(sync, ty, &features)?;
    let mut query = sync.query_of(ty);
    query.push(("window".to_owned(), param.clone()));
    let key = watermark::key(&sync.server, ty, &query);
    query.pop();
    let stored = watermark::read(sync.lake, &key).await?;
    let after = match (sync.plan.since, &stored) {
        (Some(since), _) => Some(since),
        (None, Some(w)) => Some(w.up_to_micros),
        (None, None) => sync.export_baseline(ty).await?,
    };
    let now = sync
        .features
        .server_now
        .unwrap_or_else(|| Utc::now().timestamp_micros());
    let settle = sync.plan.settle.as_micros() as i64;
    // Whole milliseconds: what search instants say.
    let up_to = (now - settle) / 1000 * 1000;
    let mut outcome = TypeOutcome {
        resource_type: ty.to_owned(),
        from: after.map(instant),
        up_to: instant(up_to),
        ..TypeOutcome::default()
    };
    if after.is_some_and(|a| a >= up_to) {
        return Ok(outcome);
    }
    let whole = Window { after, up_to };
    let history = match sync.plan.deletes {
        DeleteSource::None => false,
        DeleteSource::Auto => features.history,
        DeleteSource::History => true,
    };
    let mut context = TypeSync {
        sync,
        ty,
        param: &param,
        query: &query,
        key: &key,
        deletions: Mutex::new(Vec::new()),
        history_pages: Mutex::new(Vec::new()),
    };
    // The whole range's deletions, read once, each applied with the window
    // holding its time (a first crawl has nothing to delete).
    if history && whole.after.is_some() {
        let (deleted, pages) = context.deletions(&whole).await?;
        context.deletions = Mutex::new(deleted);
        context.history_pages = Mutex::new(pages);
    }
    if features.offers("_summary") {
        let planned = plan_counted(whole, sync.plan.max_window, async |w: &Window| {
            context.count(w).await
        })
        .await?;
        let total = planned.len().max(1) as u64;
        if planned.is_empty() {
            // Nothing changed: deletions may still have happened.
            context.window(whole, &mut outcome).await?;
        }
        for (window, _) in planned {
            context.window(window, &mut outcome).await?;
            sync.report(ty, &outcome, Some(total));
        }
    } else {
        let mut steps = TimeSteps::new(whole);
        while let Some(window) = steps.next_window() {
            let before = outcome.resources;
            context.window(window, &mut outcome).await?;
            steps.observe(outcome.resources - before, sync.plan.max_window);
            sync.report(ty, &outcome, None);
        }
    }
    Ok(outcome)
}

/// One type's sync under way.
struct TypeSync<'a> {
    sync: &'a Sync<'a>,
    ty: &'a str,
    param: &'a str,
    query: &'a [(String, String)],
    key: &'a str,
    /// Deletions not yet applied, and the `_history` pages they came from
    /// (recorded with the first window's commit).
    deletions: Mutex<Vec<Deletion>>,
    history_pages: Mutex<Vec<PageRecord>>,
}

impl TypeSync<'_> {
    fn window_params(&self, window: &Window) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if let Some(after) = window.after {
            params.push((self.param.to_owned(), format!("gt{}", instant(after))));
        }
        params.push((
            self.param.to_owned(),
            format!("le{}", instant(window.up_to)),
        ));
        params
    }

    async fn count(&self, window: &Window) -> Result<u64, SyncError> {
        let mut params = self.window_params(window);
        params.push(("_summary".to_owned(), "count".to_owned()));
        let fetcher = &self.sync.fetcher;
        let url = fetcher.url(fetcher.server, self.ty, &params)?;
        let page = fetch_page(fetcher, &url, "count").await?;
        Ok(page.total.unwrap_or(u64::MAX))
    }

    fn search_url(&self, window: &Window) -> Result<Url, SyncError> {
        let features = self.sync.features.of(self.ty);
        let mut params = self.window_params(window);
        params.push(("_count".to_owned(), self.sync.plan.page_size.to_string()));
        if features.offers("_sort") && self.param == "_lastUpdated" {
            params.push(("_sort".to_owned(), "_lastUpdated".to_owned()));
        }
        if features.offers("_total") {
            params.push(("_total".to_owned(), "none".to_owned()));
        }
        params.extend(self.query.iter().cloned());
        let fetcher = &self.sync.fetcher;
        fetcher.url(fetcher.server, self.ty, &params)
    }

    fn record(&self, window: &Window) -> SyncRecord {
        SyncRecord {
            server: self.sync.server.clone(),
            step: "window".to_owned(),
            resource_type: Some(self.ty.to_owned()),
            window: Some(SyncWindow {
                after: window.after.map(instant),
                up_to: instant(window.up_to),
                param: self.param.to_owned(),
            }),
            ..SyncRecord::default()
        }
    }

    /// Syncs one window: its pages, committed every `--max-window`
    /// entries, the deletions of the window with the last; then its watermark.
    async fn window(&self, window: Window, outcome: &mut TypeOutcome) -> Result<(), SyncError> {
        let plan = self.sync.plan;
        let fetcher = &self.sync.fetcher;
        let mut url = Some(self.search_url(&window)?);
        let mut chunk: Vec<Page> = Vec::new();
        let mut chunk_entries = 0;
        let mut record = self.record(&window);
        let mut page_number = 0;
        while let Some(at) = url.take() {
            page_number += 1;
            let page = fetch_page(fetcher, &at, &format!("{} page {page_number}", self.ty)).await?;
            for warning in &page.warnings {
                self.sync.warn(warning.clone());
                record.warnings.push(warning.clone());
            }
            if plan.resolve_references {
                self.sync
                    .references
                    .lock()
                    .expect("references lock")
                    .note_page(&page.ndjson, fetcher.server);
            }
            outcome.pages += 1;
            outcome.resources += page.record.entries;
            chunk_entries += page.record.entries;
            record.pages.push(page.record.clone());
            url = page.next.clone();
            chunk.push(page);
            if chunk_entries >= plan.max_window && url.is_some() {
                let full = std::mem::replace(&mut record, self.record(&window));
                self.sync
                    .commit(full, std::mem::take(&mut chunk), BTreeMap::new())
                    .await?;
                chunk_entries = 0;
            }
        }
        let mut deletions = BTreeMap::new();
        record.pages.extend(std::mem::take(
            &mut *self.history_pages.lock().expect("pages lock"),
        ));
        let due: Vec<Deletion> = {
            let mut pending = self.deletions.lock().expect("deletions lock");
            let (due, later) = pending
                .drain(..)
                .partition(|d| d.deleted_at <= window.up_to);
            *pending = later;
            due
        };
        outcome.deletions += due.len() as u64;
        if !due.is_empty() {
            deletions.insert(self.ty.to_owned(), due);
        }
        self.sync.commit(record, chunk, deletions).await?;
        outcome.windows += 1;
        let job_id = self
            .sync
            .loads
            .lock()
            .expect("loads lock")
            .last()
            .map(|l| l.manifest.job_id.clone())
            .unwrap_or_default();
        let watermark = Watermark {
            server: self.sync.server.clone(),
            resource_type: self.ty.to_owned(),
            query: self.query.to_vec(),
            up_to: instant(window.up_to),
            up_to_micros: window.up_to,
            job_id,
            updated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        watermark::write(self.sync.lake, self.key, &watermark).await?;
        SyncEvent::Window {
            resource_type: self.ty,
            up_to: &watermark.up_to,
            resources: outcome.resources,
        }
        .emit(fetcher.events);
        Ok(())
    }

    /// The deletions `_history` lists in `window`, the last of each id.
    async fn deletions(
        &self,
        window: &Window,
    ) -> Result<(Vec<Deletion>, Vec<PageRecord>), SyncError> {
        let fetcher = &self.sync.fetcher;
        let mut params = vec![("_count".to_owned(), self.sync.plan.page_size.to_string())];
        if let Some(after) = window.after {
            params.push(("_since".to_owned(), instant(after)));
        }
        let mut url =
            Some(fetcher.url(fetcher.server, &format!("{}/_history", self.ty), &params)?);
        let mut deletions: BTreeMap<String, Deletion> = BTreeMap::new();
        let mut pages = Vec::new();
        while let Some(at) = url.take() {
            let page = fetch_page(fetcher, &at, &format!("{} history", self.ty)).await?;
            for (line, d) in page.deleted.iter().enumerate() {
                let at = d.at.or(page.server_now).unwrap_or(window.up_to);
                let in_window = window.after.is_none_or(|a| at > a) && at <= window.up_to;
                if !in_window || d.resource_type != self.ty {
                    continue;
                }
                let deletion = to_deletion(d, at, &page.record.url, line as u64 + 1);
                // The last deletion of an id wins.
                deletions
                    .entry(d.id.clone())
                    .and_modify(|e| {
                        if e.deleted_at < at {
                            *e = deletion.clone();
                        }
                    })
                    .or_insert(deletion);
            }
            url = page.next.clone();
            let mut record = page.record;
            // Only the deletions are loaded from a history page.
            record.entries = 0;
            pages.push(record);
        }
        Ok((deletions.into_values().collect(), pages))
    }
}

fn to_deletion(d: &Deleted, at: i64, source: &str, line: u64) -> Deletion {
    Deletion {
        id: d.id.clone(),
        deleted_at: at,
        record: d.record.clone(),
        source: source.to_owned(),
        line,
    }
}

/// Types synced at once by default: one stream per type.
pub const DEFAULT_CONCURRENCY: usize = 2;

/// A sync's resource types, checked, each once, in the order given (the
/// order they are synced in with `--max-concurrency 1`).
pub fn check_types(types: &[String]) -> Result<Vec<String>, SyncError> {
    let mut checked = Vec::new();
    for ty in types {
        if checked.contains(ty) {
            continue;
        }
        if !crate::fhir::is_valid_resource_type(ty) {
            return Err(SyncError::Input {
                what: format!("--type {ty}"),
                detail: "not a FHIR resource type name (e.g. Patient, Observation)".into(),
            });
        }
        checked.push(ty.clone());
    }
    Ok(checked)
}
