//! An in-process FHIR R4 REST server for the `fhirlake sync` tests (issue 15),
//! speaking plain HTTP/1.1 with keep-alive on 127.0.0.1. It answers the search
//! interactions an incremental sync uses the way HAPI, Smile or Epic do:
//! `_lastUpdated` windows with FHIR range semantics, `_id`, `identifier`,
//! `date` and reference parameters, `_count` cut to a server maximum, `_sort`, `_include`/`_revinclude`, `_elements` tagged SUBSETTED,
//! `_summary=count`, `_total`, kilobyte-long opaque `next` tokens that only
//! work when followed verbatim, ETag reads with 304/412, `_history` with
//! deletions, and a CapabilityStatement whose features can be switched off.
//!
//! In: resources written by the test (`create`, `update`, `delete`,
//! `commit_late`, `seed_from_ndjson`) and a server clock the test moves
//! (`set_clock`, `advance`; the `Date` header reports it). Out: HTTP answers,
//! a request log and counters. Faults (429 storms, 503 outages, a page that
//! fails once, cut bodies, slow answers, OperationOutcome 500s) are set at run
//! time and counted.
//!
//! Every write is a version in a per-type log; the current store is an index
//! into that log, so `_history` and reads can never disagree.
//!
//! Not here: writes over HTTP, chained, composite or modified parameters
//! (`:missing`, `:exact`), `_include:iterate`, vread, `previous` links, TLS.

// A fixture: each test uses the part of the API it needs.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Days, Months, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server clock at start unless `Config::clock` says otherwise.
pub const START: &str = "2026-11-20T10:00:00.000Z";

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// Reference search parameters served by default: `Type param=path ...`.
const REFERENCES: &[&str] = &[
    "Observation subject=subject patient=subject encounter=encounter performer=performer",
    "Encounter subject=subject patient=subject participant=participant.individual",
    "Encounter service-provider=serviceProvider location=location.location",
    "Condition subject=subject patient=subject encounter=encounter",
    "Procedure subject=subject patient=subject encounter=encounter",
    "DiagnosticReport subject=subject patient=subject encounter=encounter result=result",
    "MedicationRequest subject=subject patient=subject encounter=encounter requester=requester",
    "CarePlan subject=subject patient=subject encounter=encounter",
    "CareTeam subject=subject patient=subject encounter=encounter",
    "Immunization patient=patient encounter=encounter",
    "AllergyIntolerance patient=patient encounter=encounter",
];

/// The element each type's `date` search parameter reads, by default.
const DATES: &[(&str, &str)] = &[
    ("Observation", "effectiveDateTime"),
    ("Encounter", "period.start"),
    ("Condition", "recordedDate"),
    ("Procedure", "performedPeriod.start"),
];

/// What the CapabilityStatement offers. A feature switched off is also
/// refused (400), or ignored when the client sends `Prefer: handling=lenient`.
#[derive(Clone, Debug)]
pub struct Capabilities {
    pub last_updated: bool,
    pub sort: bool,
    pub history: bool,
    pub summary_count: bool,
    pub total: bool,
    /// ETag preconditions are honoured; off, `If-None-Match`/`If-Match` are ignored.
    pub conditional_read: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            last_updated: true,
            sort: true,
            history: true,
            summary_count: true,
            total: true,
            conditional_read: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub capabilities: Capabilities,
    /// Resource types served; empty means any type name (/metadata lists those stored).
    pub types: Vec<String>,
    /// A larger `_count` is cut to this, like HAPI's maximum page size.
    pub max_count: usize,
    /// Page size when the client sends no `_count`.
    pub default_count: usize,
    /// Length of a continuation token in base64 characters (a multiple of 4).
    pub token_len: usize,
    /// Later pages are cut from the live result at each fetch, not from the
    /// snapshot taken at the first page: writes in between shift them.
    pub drift: bool,
    /// Every page after the first starts with the previous page's last entry.
    pub duplicate_across_pages: bool,
    /// Bundles carry `total` unless the client asks `_total=none`.
    pub total_by_default: bool,
    /// First pages of searches carry an OperationOutcome entry
    /// (`search.mode = outcome`) with this warning.
    pub search_warning: Option<String>,
    /// Gzip bodies for clients that send `Accept-Encoding: gzip`.
    pub gzip: bool,
    /// `Authorization: Bearer <token>` required on every request.
    pub bearer: Option<String>,
    pub keep_alive: bool,
    /// The server clock at start.
    pub clock: DateTime<Utc>,
    /// Each write moves the server clock on by this much, so lastUpdated values differ.
    pub write_tick: Duration,
    /// Continuation tokens older than this (server clock) answer 410.
    pub cursor_ttl: Option<Duration>,
    /// (type, dotted path) of the `date` search parameter.
    pub date_params: Vec<(String, String)>,
    /// (type, search parameter, dotted path to a Reference), for reference
    /// search, `_include` and `_revinclude`.
    pub references: Vec<(String, String, String)>,
    /// A terminology service: the codes of each code system it holds, for
    /// `CodeSystem/$validate-code` (GET, or in a batch Bundle).
    pub code_systems: BTreeMap<String, BTreeSet<String>>,
    /// `POST [base]` batch Bundles are served; off, they answer 405.
    pub batch: bool,
}

impl Default for Config {
    fn default() -> Self {
        let mut references = Vec::new();
        for line in REFERENCES {
            let mut words = line.split_whitespace();
            let ty = words.next().unwrap_or_default();
            for (param, path) in words.filter_map(|pair| pair.split_once('=')) {
                references.push((ty.to_owned(), param.to_owned(), path.to_owned()));
            }
        }
        Self {
            capabilities: Capabilities::default(),
            types: Vec::new(),
            max_count: 50,
            default_count: 20,
            token_len: 2048,
            drift: false,
            duplicate_across_pages: false,
            total_by_default: true,
            search_warning: None,
            gzip: true,
            bearer: None,
            keep_alive: true,
            clock: START.parse().unwrap(),
            write_tick: Duration::from_millis(3),
            cursor_ttl: None,
            date_params: DATES
                .iter()
                .map(|(t, p)| (t.to_string(), p.to_string()))
                .collect(),
            references,
            code_systems: BTreeMap::new(),
            batch: true,
        }
    }
}

/// Failure injection, set with [`FhirServer::set_faults`]. Counts are used up
/// as they fire; [`FhirServer::faults`] shows what is left.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Faults apply only to requests whose path and query contain this
    /// (e.g. `_getpages`, `/Observation`); `fail_page_once` ignores it.
    pub only: Option<String>,
    /// The next N requests answer 429.
    pub throttle_next: u32,
    /// A storm: this percentage of requests answer 429, spread evenly.
    pub throttle_percent: u32,
    /// `Retry-After` on 429 and 503.
    pub retry_after: RetryAfter,
    /// The next N requests answer 503.
    pub unavailable_next: u32,
    /// Every request answers 503 for this long (wall clock) from `set_faults`.
    pub outage_for: Option<Duration>,
    /// The next N requests answer 500 with an OperationOutcome.
    pub error_next: u32,
    /// (type, page number from 1): that page of a search or history fails
    /// once with a 500, then succeeds.
    pub fail_page_once: Vec<(String, u32)>,
    /// The next N answers with a body announce the full Content-Length, send
    /// half and close the connection.
    pub truncate_next: u32,
    /// Every answer waits this long before it is written.
    pub delay: Duration,
}

#[derive(Clone, Debug, Default)]
pub enum RetryAfter {
    #[default]
    Omit,
    Seconds(u64),
    /// An HTTP-date this many seconds after the server clock (the `Date` header's clock).
    Date(u64),
}

/// One request as received, with the status it got.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Raw, as sent (still percent-encoded).
    pub query: String,
    /// Names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    /// The type searched or read; for a continuation page, its search's type.
    pub resource_type: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests: u64,
    pub connections: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Continuation pages served with 200.
    pub pages: u64,
    pub truncated: u64,
    /// `$validate-code` questions answered (alone or inside batches), and batches.
    pub codes_asked: u64,
    pub batches: u64,
}

impl Counters {
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }
}

pub struct FhirServer {
    /// `http://127.0.0.1:PORT/fhir`
    pub base: String,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl FhirServer {
    /// Binds an ephemeral port and serves on the current runtime, which must
    /// be multi-threaded if the test then blocks on a subprocess.
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::new(config, origin.clone())));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                lock(&shared).counters.connections += 1;
                tokio::spawn(connection(stream, shared.clone()));
            }
        });
        let base = format!("{origin}/fhir");
        Self {
            base,
            state,
            accept,
            runtime: None,
        }
    }

    /// Starts on a runtime of its own; call it outside any runtime.
    pub fn start_blocking(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut server = runtime.block_on(Self::start(config));
        server.runtime = Some(runtime);
        server
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Stores a new resource (id assigned when absent) as version 1, or as the
    /// next version of a deleted one; panics if it exists. Returns it with meta.
    pub fn create(&self, resource: Value) -> Value {
        let mut state = self.state();
        if let (Some(ty), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str()) {
            assert!(state.live(ty, id).is_none(), "{ty}/{id} already exists");
        }
        state.write(resource, None)
    }

    /// Stores the next version (or the first: an update may create).
    pub fn update(&self, resource: Value) -> Value {
        assert!(resource["id"].is_string(), "update needs an id");
        self.state().write(resource, None)
    }

    /// Deletes (a new version, listed by `_history`); false if nothing was live.
    pub fn delete(&self, resource_type: &str, id: &str) -> bool {
        self.state().delete(resource_type, id)
    }

    /// Stores a version that becomes visible now but carries an older
    /// `lastUpdated`, as servers that do not commit in timestamp order do.
    pub fn commit_late(&self, resource: Value, last_updated: DateTime<Utc>) -> Value {
        self.state().write(resource, Some(last_updated))
    }

    /// Loads every `*.ndjson` of a directory (sorted by file name; lines
    /// without `resourceType` skipped), each resource a new version spaced
    /// `write_tick` apart. Returns how many were stored.
    pub fn seed_from_ndjson(&self, dir: impl AsRef<Path>) -> usize {
        let mut files: Vec<_> = (std::fs::read_dir(dir.as_ref()).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
            .collect();
        files.sort();
        let mut state = self.state();
        let mut stored = 0;
        for path in files {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let resource: Value = serde_json::from_str(line).unwrap_or_default();
                if resource["resourceType"].is_string() {
                    state.write(resource, None);
                    stored += 1;
                }
            }
        }
        stored
    }

    /// The current version, unless deleted.
    pub fn get(&self, resource_type: &str, id: &str) -> Option<Value> {
        let state = self.state();
        state
            .live(resource_type, id)
            .and_then(|v| v.resource.clone())
    }

    /// Ids of the live (not deleted) resources of a type.
    pub fn ids(&self, resource_type: &str) -> BTreeSet<String> {
        let state = self.state();
        let live = state
            .current(resource_type)
            .filter(|v| v.resource.is_some());
        live.map(|v| v.id.clone()).collect()
    }

    pub fn count(&self, resource_type: &str) -> usize {
        self.ids(resource_type).len()
    }

    pub fn set_clock(&self, now: DateTime<Utc>) {
        self.state().now = now;
    }

    pub fn advance(&self, by: Duration) {
        self.state().now += TimeDelta::from_std(by).unwrap();
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.state().now
    }

    /// Changes the configuration of the running server (capabilities, drift, gzip...).
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        change(&mut self.state().config);
    }

    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.state();
        state.outage_until = faults.outage_for.map(|d| Instant::now() + d);
        state.faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.state().faults.clone()
    }

    pub fn log(&self) -> Vec<Request> {
        self.state().log.clone()
    }

    pub fn requests(&self, path_contains: &str) -> Vec<Request> {
        let state = self.state();
        let hits = state.log.iter().filter(|r| r.path.contains(path_contains));
        hits.cloned().collect()
    }

    pub fn counters(&self) -> Counters {
        self.state().counters.clone()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One entry of a type's version log.
struct Version {
    id: String,
    version: u64,
    /// `meta.lastUpdated` (for a delete, when it happened).
    at: DateTime<Utc>,
    /// POST, PUT or DELETE.
    method: &'static str,
    /// With `meta.versionId` and `meta.lastUpdated`; `None` for a delete.
    resource: Option<Value>,
}

/// A paged listing the server keeps between pages, named by the token.
struct Cursor {
    query: Query,
    created: DateTime<Utc>,
    /// `None` under `drift`: pages are cut from the live result.
    snapshot: Option<Vec<Value>>,
}

struct State {
    config: Config,
    origin: String,
    now: DateTime<Utc>,
    /// Per type, the version log in commit order.
    log_by_type: BTreeMap<String, Vec<Version>>,
    /// Per type, id → index of its current version in the log.
    current: BTreeMap<String, BTreeMap<String, usize>>,
    cursors: BTreeMap<u64, Cursor>,
    next_cursor: u64,
    secret: [u8; 16],
    faults: Faults,
    outage_until: Option<Instant>,
    storm_seen: u64,
    log: Vec<Request>,
    counters: Counters,
}

impl State {
    fn new(config: Config, origin: String) -> Self {
        Self {
            now: config.clock,
            config,
            origin,
            log_by_type: BTreeMap::new(),
            current: BTreeMap::new(),
            cursors: BTreeMap::new(),
            next_cursor: 1,
            secret: *uuid::Uuid::new_v4().as_bytes(),
            faults: Faults::default(),
            outage_until: None,
            storm_seen: 0,
            log: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Current versions of a type (deletes included), by id.
    fn current(&self, ty: &str) -> impl Iterator<Item = &Version> {
        let log = self.log_by_type.get(ty).map_or(&[][..], Vec::as_slice);
        self.current
            .get(ty)
            .into_iter()
            .flat_map(|ids| ids.values().map(|&i| &log[i]))
    }

    fn latest(&self, ty: &str, id: &str) -> Option<&Version> {
        let index = *self.current.get(ty)?.get(id)?;
        self.log_by_type.get(ty)?.get(index)
    }

    fn live(&self, ty: &str, id: &str) -> Option<&Version> {
        self.latest(ty, id).filter(|v| v.resource.is_some())
    }

    fn commit(&mut self, ty: &str, version: Version) {
        let log = self.log_by_type.entry(ty.to_owned()).or_default();
        let ids = self.current.entry(ty.to_owned()).or_default();
        ids.insert(version.id.clone(), log.len());
        log.push(version);
    }

    fn tick(&mut self) {
        self.now += TimeDelta::from_std(self.config.write_tick).unwrap();
    }

    /// Stores the next version; `at` backdates it without moving the clock.
    fn write(&mut self, mut resource: Value, at: Option<DateTime<Utc>>) -> Value {
        let ty = resource["resourceType"]
            .as_str()
            .expect("resourceType")
            .to_owned();
        let id = resource["id"]
            .as_str()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let previous = self.latest(&ty, &id);
        let method = if previous.is_some_and(|p| p.resource.is_some()) {
            "PUT"
        } else {
            "POST"
        };
        let version = previous.map_or(1, |p| p.version + 1);
        let updated = at.unwrap_or(self.now);
        resource["id"] = json!(id);
        if !resource["meta"].is_object() {
            resource["meta"] = json!({});
        }
        resource["meta"]["versionId"] = json!(version.to_string());
        resource["meta"]["lastUpdated"] = json!(instant(updated));
        let stored = Some(resource.clone());
        self.commit(
            &ty,
            Version {
                id,
                version,
                at: updated,
                method,
                resource: stored,
            },
        );
        if at.is_none() {
            self.tick();
        }
        resource
    }

    fn delete(&mut self, ty: &str, id: &str) -> bool {
        let Some(version) = self.live(ty, id).map(|v| v.version + 1) else {
            return false;
        };
        let (id, at) = (id.to_owned(), self.now);
        self.commit(
            ty,
            Version {
                id,
                version,
                at,
                method: "DELETE",
                resource: None,
            },
        );
        self.tick();
        true
    }
}

// ---- HTTP/1.1 ----

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Compress the body when it is written (outside the state lock).
    gzip: bool,
    /// Send half the body after announcing all of it, then close.
    cut: bool,
    close: bool,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>) -> Self {
        let headers = Vec::new();
        Self {
            status,
            headers,
            body,
            gzip: false,
            cut: false,
            close: false,
        }
    }

    fn json(status: u16, value: Value) -> Self {
        Self::new(status, serde_json::to_vec(&value).unwrap())
            .header("Content-Type", "application/fhir+json;charset=utf-8")
    }

    fn outcome(status: u16, code: &str, text: &str) -> Self {
        Self::json(status, outcome("error", code, text))
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

fn outcome(severity: &str, code: &str, text: &str) -> Value {
    let issue = json!({"severity": severity, "code": code, "diagnostics": text});
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

async fn connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let (reply, delay) = respond(&mut lock(&state), request);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if write_reply(&mut stream, reply).await.unwrap_or(true) {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// Reads one request; bytes of the next one stay in `buf` (pipelining).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 256 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?);
    let headers: BTreeMap<String, String> = (lines.filter_map(|l| l.split_once(':')))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    while buf.len() < end + 4 + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..end + 4 + length).skip(end + 4).collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let (status, resource_type) = (0, None);
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
        status,
        resource_type,
    })
}

/// Writes the answer; `Ok(true)` when the connection is to be closed.
async fn write_reply(stream: &mut TcpStream, mut reply: Reply) -> std::io::Result<bool> {
    if reply.gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&reply.body)?;
        reply.body = encoder.finish()?;
        reply = reply.header("Content-Encoding", "gzip");
    }
    let reason = match reply.status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        410 => "Gone",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let connection = if reply.close { "close" } else { "keep-alive" };
    let length = reply.body.len();
    let _ = write!(
        head,
        "Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    );
    // One write: a head sent apart from its body waits on the peer's delayed ACK.
    let mut out = head.into_bytes();
    out.extend_from_slice(&reply.body[..if reply.cut { length / 2 } else { length }]);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(reply.close)
}

/// Faults, routing, counters and the log; returns the answer and the delay before it.
fn respond(state: &mut State, mut request: Request) -> (Reply, Duration) {
    let target = format!("{}?{}", request.path, request.query);
    let in_scope = (state.faults.only.as_ref()).is_none_or(|s| target.contains(s.as_str()));
    let (mut reply, resource_type) = match in_scope.then(|| inject(state)).flatten() {
        Some(reply) => (reply, None),
        None => route(state, &request),
    };
    reply = reply.header("Date", &http_date(state.now));
    let header = |name: &str| request.headers.get(name).map_or("", String::as_str);
    let has_body = !reply.body.is_empty();
    reply.gzip = state.config.gzip && has_body && header("accept-encoding").contains("gzip");
    if in_scope && has_body && take(&mut state.faults.truncate_next) {
        (reply.cut, reply.close) = (true, true);
        state.counters.truncated += 1;
    }
    reply.close |= header("connection").eq_ignore_ascii_case("close") || !state.config.keep_alive;
    let counters = &mut state.counters;
    counters.requests += 1;
    *counters.by_status.entry(reply.status).or_default() += 1;
    if let Some(ty) = &resource_type {
        *counters.by_type.entry(ty.clone()).or_default() += 1;
    }
    if reply.status == 200 && request.query.starts_with("_getpages=") {
        counters.pages += 1;
    }
    (request.status, request.resource_type) = (reply.status, resource_type);
    state.log.push(request);
    let delay = match in_scope {
        true => state.faults.delay,
        false => Duration::ZERO,
    };
    (reply, delay)
}

fn take(count: &mut u32) -> bool {
    let fire = *count > 0;
    *count = count.saturating_sub(1);
    fire
}

/// Outages, throttling and 500s, which hit before authentication as a proxy's would.
fn inject(state: &mut State) -> Option<Reply> {
    let retry_after = match state.faults.retry_after {
        RetryAfter::Omit => None,
        RetryAfter::Seconds(s) => Some(s.to_string()),
        RetryAfter::Date(s) => Some(http_date(state.now + TimeDelta::seconds(s as i64))),
    };
    let faults = &mut state.faults;
    state.storm_seen += 1;
    let n = state.storm_seen;
    let percent = u64::from(faults.throttle_percent.min(100));
    let storm = n * percent / 100 > (n - 1) * percent / 100;
    let outage = state.outage_until.is_some_and(|t| Instant::now() < t);
    let reply = if outage || take(&mut faults.unavailable_next) {
        Reply::outcome(503, "transient", "service unavailable")
    } else if take(&mut faults.throttle_next) || storm {
        Reply::outcome(429, "throttled", "too many requests")
    } else if take(&mut faults.error_next) {
        return Some(Reply::outcome(500, "exception", "database connection lost"));
    } else {
        return None;
    };
    Some(match retry_after {
        Some(value) => reply.header("Retry-After", &value),
        None => reply,
    })
}

fn route(state: &mut State, request: &Request) -> (Reply, Option<String>) {
    let authorization = request.headers.get("authorization");
    if let Some(token) = &state.config.bearer
        && authorization != Some(&format!("Bearer {token}"))
    {
        let reply = Reply::outcome(401, "login", "bearer token missing or wrong")
            .header("WWW-Authenticate", "Bearer realm=\"fhir\"");
        return (reply, None);
    }
    let not_found = |what: &str| Reply::outcome(404, "not-found", what);
    let Some(path) = request.path.strip_prefix("/fhir") else {
        return (not_found(&request.path), None);
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut params = form(request.query.as_bytes());
    let prefer = request.headers.get("prefer");
    let lenient = prefer.is_some_and(|p| p.contains("handling=lenient"));
    let (get, post) = (request.method == "GET", request.method == "POST");
    let types = &state.config.types;
    let known = |ty: &str| {
        let name = ty.starts_with(|c: char| c.is_ascii_uppercase())
            && ty.chars().all(|c| c.is_ascii_alphanumeric());
        name && (types.is_empty() || types.iter().any(|t| t == ty))
    };
    let reply = match segments.as_slice() {
        [] if get && request.query.starts_with("_getpages=") => {
            return page(state, &request.query);
        }
        ["metadata"] if get => return (Reply::json(200, capability(state)), None),
        ["CodeSystem", "$validate-code"] if get => {
            let (status, body) = validate_code(state, &params);
            Reply::json(status, body)
        }
        [] if post && state.config.batch => batch(state, &request.body),
        [ty, ..] if !known(ty) => not_found(&format!("unknown resource type {ty}")),
        [ty] if get => search(state, ty, &params, lenient, false),
        [ty, "_search"] if post => {
            params.extend(form(&request.body));
            search(state, ty, &params, lenient, false)
        }
        [ty, "_history"] if get => search(state, ty, &params, lenient, true),
        [ty, id] if get => read(state, ty, id, &request.headers),
        _ if !get => Reply::outcome(405, "not-supported", "this server is read-only"),
        _ => not_found(&request.path),
    };
    (reply, segments.first().map(|t| t.to_string()))
}

/// `$validate-code` as terminology servers answer it: `Parameters` with
/// `result` (and a `message` when false); an unknown code system is a 404
/// OperationOutcome, as HAPI answers it.
fn validate_code(state: &mut State, params: &[(String, String)]) -> (u16, Value) {
    state.counters.codes_asked += 1;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(system), Some(code)) = (param("url").or(param("system")), param("code")) else {
        return (
            400,
            outcome("error", "required", "url and code are required"),
        );
    };
    let Some(codes) = state.config.code_systems.get(system) else {
        let text = format!("Unknown CodeSystem: {system}");
        return (404, outcome("error", "not-found", &text));
    };
    let mut parameter = vec![json!({"name": "result", "valueBoolean": codes.contains(code)})];
    if !codes.contains(code) {
        let text = format!("Unknown code '{code}' in the CodeSystem '{system}'");
        parameter.push(json!({"name": "message", "valueString": text}));
    }
    (
        200,
        json!({"resourceType": "Parameters", "parameter": parameter}),
    )
}

/// A batch Bundle: each entry's GET answered on its own, in order.
fn batch(state: &mut State, body: &[u8]) -> Reply {
    let Ok(bundle) = serde_json::from_slice::<Value>(body) else {
        return Reply::outcome(400, "structure", "the body is not JSON");
    };
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "batch" {
        return Reply::outcome(400, "invalid", "expected a Bundle of type batch");
    }
    state.counters.batches += 1;
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let answers: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let url = entry["request"]["url"].as_str().unwrap_or_default();
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let (status, resource) =
                if entry["request"]["method"] == "GET" && path == "CodeSystem/$validate-code" {
                    validate_code(state, &form(query.as_bytes()))
                } else {
                    (
                        400,
                        outcome("error", "not-supported", "only $validate-code"),
                    )
                };
            let line = format!("{status} {}", if status == 200 { "OK" } else { "Error" });
            match status {
                200 => json!({"resource": resource, "response": {"status": line}}),
                _ => json!({"response": {"status": line, "outcome": resource}}),
            }
        })
        .collect();
    Reply::json(
        200,
        json!({"resourceType": "Bundle", "type": "batch-response", "entry": answers}),
    )
}

fn form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn read(state: &State, ty: &str, id: &str, headers: &BTreeMap<String, String>) -> Reply {
    let Some(latest) = state.latest(ty, id) else {
        return Reply::outcome(404, "not-found", &format!("{ty}/{id} is not known"));
    };
    let etag = format!("W/\"{}\"", latest.version);
    let Some(resource) = &latest.resource else {
        let reply = Reply::outcome(410, "deleted", &format!("{ty}/{id} was deleted"));
        return reply.header("ETag", &etag);
    };
    let modified = http_date(latest.at);
    if state.config.capabilities.conditional_read {
        let listed = |name: &str| {
            let tags = headers.get(name)?.split(',').map(str::trim);
            let version = latest.version.to_string();
            Some(
                tags.map(|t| t.trim_start_matches("W/").trim_matches('"'))
                    .any(|t| t == "*" || t == version),
            )
        };
        if listed("if-match") == Some(false) {
            let why = format!("{ty}/{id} is at version {}", latest.version);
            return Reply::outcome(412, "conflict", &why);
        }
        if listed("if-none-match") == Some(true) {
            let reply = Reply::new(304, Vec::new()).header("ETag", &etag);
            return reply.header("Last-Modified", &modified);
        }
    }
    let reply = Reply::json(200, resource.clone()).header("ETag", &etag);
    reply.header("Last-Modified", &modified)
}

// ---- search and history ----

type Range = (DateTime<Utc>, DateTime<Utc>);

#[derive(Clone, Debug)]
enum Filter {
    /// `path: None` is `_lastUpdated`.
    Time {
        path: Option<String>,
        prefix: String,
        range: Range,
    },
    Ids(Vec<String>),
    Refs {
        path: String,
        wanted: Vec<String>,
    },
    /// `system|value` or `value`.
    Identifiers(Vec<String>),
}

#[derive(Clone, Debug, Default)]
struct Query {
    ty: String,
    history: bool,
    since: Option<DateTime<Utc>>,
    filters: Vec<Filter>,
    /// (`_lastUpdated` or `_id`, descending)
    sort: Vec<(String, bool)>,
    count: usize,
    total: Option<bool>,
    summary_count: bool,
    elements: Option<Vec<String>>,
    /// (path in the matched type, target type)
    include: Vec<(String, Option<String>)>,
    /// (source type, path to a reference to the matched type)
    revinclude: Vec<(String, String)>,
}

fn split(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_search(
    config: &Config,
    ty: &str,
    params: &[(String, String)],
    lenient: bool,
) -> Result<Query, String> {
    let caps = &config.capabilities;
    let reference = |t: &str, name: &str| {
        let mut refs = config.references.iter();
        refs.find(|(rt, n, _)| rt == t && n == name)
            .map(|(_, _, path)| path.clone())
    };
    let date_path = config
        .date_params
        .iter()
        .find(|(t, _)| t == ty)
        .map(|(_, p)| p.clone());
    let mut query = Query {
        ty: ty.to_owned(),
        count: config.default_count,
        ..Query::default()
    };
    for (key, value) in params {
        let filter = match key.as_str() {
            "_lastUpdated" if caps.last_updated => time_filter(None, value)?,
            "date" if date_path.is_some() => time_filter(date_path.clone(), value)?,
            "_id" => Filter::Ids(split(value)),
            "identifier" => Filter::Identifiers(split(value)),
            "_count" => {
                query.count = parse_count(config, value)?;
                continue;
            }
            "_sort" if caps.sort => {
                for key in value.split(',') {
                    let (descending, name) =
                        key.strip_prefix('-').map_or((false, key), |k| (true, k));
                    if !matches!(name, "_lastUpdated" | "_id") {
                        return Err(format!("cannot sort by {name}"));
                    }
                    query.sort.push((name.to_owned(), descending));
                }
                continue;
            }
            "_total" if caps.total => {
                query.total = match value.as_str() {
                    "none" => Some(false),
                    "accurate" | "estimate" => Some(true),
                    _ => return Err(format!("_total={value} is not none, estimate or accurate")),
                };
                continue;
            }
            "_summary" if value == "count" && caps.summary_count => {
                query.summary_count = true;
                continue;
            }
            "_elements" => {
                let names = split(value).into_iter();
                // `Observation.code` and `code` name the same element.
                let names = names.map(|e| e.rsplit('.').next().unwrap_or_default().to_owned());
                query.elements = Some(names.collect());
                continue;
            }
            "_include" | "_revinclude" => {
                let mut parts = value.split(':');
                let (source, name) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let unsupported =
                    || format!("{key}={value} is not a supported reference parameter");
                let path = reference(source, name).ok_or_else(unsupported)?;
                if key == "_revinclude" {
                    query.revinclude.push((source.to_owned(), path));
                } else if source == ty {
                    query.include.push((path, parts.next().map(str::to_owned)));
                } else {
                    return Err(unsupported());
                }
                continue;
            }
            "_summary" if value == "false" => continue,
            "_format" | "_pretty" => continue,
            name => match reference(ty, name) {
                Some(path) => Filter::Refs {
                    path,
                    wanted: split(value),
                },
                None if lenient => continue,
                None => {
                    return Err(format!(
                        "unknown or unsupported parameter {key}={value} for {ty}"
                    ));
                }
            },
        };
        query.filters.push(filter);
    }
    Ok(query)
}

fn parse_history(
    config: &Config,
    ty: &str,
    params: &[(String, String)],
    lenient: bool,
) -> Result<Query, String> {
    if !config.capabilities.history {
        return Err("history is not supported".into());
    }
    let mut query = Query {
        ty: ty.to_owned(),
        history: true,
        count: config.default_count,
        ..Query::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "_since" => {
                let since =
                    parse_instant(value).ok_or(format!("_since={value} is not an instant"))?;
                query.since = Some(since.0);
            }
            "_count" => query.count = parse_count(config, value)?,
            "_format" | "_pretty" => {}
            _ if lenient => {}
            _ => return Err(format!("unknown or unsupported history parameter {key}")),
        }
    }
    Ok(query)
}

fn parse_count(config: &Config, value: &str) -> Result<usize, String> {
    let n: usize = value
        .parse()
        .map_err(|_| format!("_count={value} is not a number"))?;
    Ok(n.min(config.max_count))
}

fn time_filter(path: Option<String>, value: &str) -> Result<Filter, String> {
    let (prefix, rest) = match value.get(..2) {
        Some(p @ ("eq" | "ne" | "gt" | "ge" | "lt" | "le")) => (p, &value[2..]),
        Some(p @ ("sa" | "eb" | "ap")) => return Err(format!("prefix {p} is not supported")),
        _ => ("eq", value),
    };
    let invalid = || format!("{value} is not a FHIR date, dateTime or instant");
    let range = parse_instant(rest).ok_or_else(invalid)?;
    Ok(Filter::Time {
        path,
        prefix: prefix.to_owned(),
        range,
    })
}

/// A FHIR date/dateTime/instant as the range its precision covers:
/// `2026-11` is the whole month, `...T10:00:00Z` that second. Offsets are
/// honoured; a bare date is taken as UTC.
fn parse_instant(text: &str) -> Option<Range> {
    let Some((date, time)) = text.split_once('T') else {
        let parts: Vec<&str> = text.split('-').collect();
        let number = |i: usize| {
            parts
                .get(i)
                .map_or(Some(1), |p| p.parse().ok().filter(|_| p.len() == 2))
        };
        let year: i32 = parts[0].parse().ok().filter(|_| parts[0].len() == 4)?;
        let start = NaiveDate::from_ymd_opt(year, number(1)?, number(2)?)?;
        let end = match parts.len() {
            1 => NaiveDate::from_ymd_opt(year + 1, 1, 1),
            2 => start.checked_add_months(Months::new(1)),
            3 => start.checked_add_days(Days::new(1)),
            _ => None,
        }?;
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        return Some((midnight(start)?, midnight(end)?));
    };
    let (clock, zone) = time.split_at(time.find(['Z', '+', '-'])?);
    let (clock, width) = match clock.split(':').count() {
        2 => (format!("{clock}:00"), TimeDelta::minutes(1)),
        3 => {
            let digits = clock.split_once('.').map_or(0, |(_, f)| f.len() as u32);
            let width = TimeDelta::nanoseconds(10i64.pow(9u32.checked_sub(digits)?));
            (clock.to_owned(), width)
        }
        _ => return None,
    };
    let start = DateTime::parse_from_rfc3339(&format!("{date}T{clock}{zone}"))
        .ok()?
        .to_utc();
    Some((start, start + width))
}

/// FHIR prefix semantics between a value's range and the parameter's range.
fn compare(prefix: &str, value: Range, param: Range) -> bool {
    let within = value.0 >= param.0 && value.1 <= param.1;
    match prefix {
        "eq" => within,
        "ne" => !within,
        "gt" => value.1 > param.1,
        "ge" => value.1 > param.0,
        "lt" => value.0 < param.0,
        "le" => value.0 < param.1,
        _ => false,
    }
}

/// Values at a dotted path, arrays flattened at every step.
fn values_at<'a>(value: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![value];
    for step in path.split('.') {
        let next = current.into_iter().flat_map(|v| match &v[step] {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        });
        current = next.collect();
    }
    current
}

fn refs_at<'a>(value: &'a Value, path: &str) -> impl Iterator<Item = &'a str> {
    values_at(value, path)
        .into_iter()
        .filter_map(|r| r["reference"].as_str())
}

/// (type, id) of a literal reference, relative or absolute, versioned or not;
/// `None` for conditional (`Type?identifier=`), contained and `urn:` ones.
fn ref_key(reference: &str) -> Option<(&str, &str)> {
    if reference.contains('?') || reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let mut parts = reference.split("/_history/").next()?.rsplit('/');
    let id = parts.next()?;
    Some((parts.next()?, id))
}

impl Filter {
    fn matches(&self, v: &Version, resource: &Value) -> bool {
        match self {
            Filter::Time {
                path: None,
                prefix,
                range,
            } => compare(prefix, (v.at, v.at + TimeDelta::milliseconds(1)), *range),
            Filter::Time {
                path: Some(path),
                prefix,
                range,
            } => {
                let values = values_at(resource, path).into_iter();
                let mut ranges = values.filter_map(|v| v.as_str().and_then(parse_instant));
                ranges.any(|value| compare(prefix, value, *range))
            }
            Filter::Ids(ids) => ids.contains(&v.id),
            Filter::Refs { path, wanted } => {
                refs_at(resource, path).filter_map(ref_key).any(|key| {
                    let one = |w: &String| {
                        if w.contains('/') {
                            ref_key(w) == Some(key)
                        } else {
                            key.1 == w.as_str()
                        }
                    };
                    wanted.iter().any(one)
                })
            }
            Filter::Identifiers(wanted) => values_at(resource, "identifier").into_iter().any(|i| {
                let (system, value) = (i["system"].as_str().unwrap_or(""), i["value"].as_str());
                wanted.iter().any(|w| match w.split_once('|') {
                    Some((s, v)) => s == system && Some(v) == value,
                    None => Some(w.as_str()) == value,
                })
            }),
        }
    }
}

fn entry(origin: &str, ty: &str, id: &str, resource: &Value, mode: &str) -> Value {
    let url = format!("{origin}/fhir/{ty}/{id}");
    json!({"fullUrl": url, "resource": resource, "search": {"mode": mode}})
}

/// Every match (search) or version (history) as Bundle entries, in page order.
fn listing(state: &State, query: &Query) -> Vec<Value> {
    let ty = &query.ty;
    if query.history {
        let versions = state.log_by_type.get(ty).into_iter().flatten().rev();
        let mut rows: Vec<&Version> = versions
            .filter(|h| query.since.is_none_or(|s| h.at >= s))
            .collect();
        // Newest first; the reversed commit order breaks ties.
        rows.sort_by_key(|h| std::cmp::Reverse(h.at));
        return rows
            .into_iter()
            .map(|h| history_entry(&state.origin, ty, h))
            .collect();
    }
    let matching = state.current(ty).filter_map(|v| {
        let resource = v.resource.as_ref()?;
        query
            .filters
            .iter()
            .all(|f| f.matches(v, resource))
            .then_some((v, resource))
    });
    let mut hits: Vec<(&Version, &Value)> = matching.collect();
    let order = |a: &Version, b: &Version| {
        let by_key = query.sort.iter().map(|(key, descending)| {
            let order = if key == "_id" {
                a.id.cmp(&b.id)
            } else {
                a.at.cmp(&b.at)
            };
            if *descending { order.reverse() } else { order }
        });
        by_key
            .fold(Ordering::Equal, Ordering::then)
            .then_with(|| a.id.cmp(&b.id))
    };
    // Unsorted, the order is the server's own: by id, not by lastUpdated.
    hits.sort_by(|a, b| order(a.0, b.0));
    hits.into_iter()
        .map(|(v, resource)| entry(&state.origin, ty, &v.id, resource, "match"))
        .collect()
}

fn history_entry(origin: &str, ty: &str, h: &Version) -> Value {
    let url = format!("{ty}/{}", h.id);
    let (request_url, status) = match h.method {
        "POST" => (ty.to_owned(), "201 Created"),
        "PUT" => (url.clone(), "200 OK"),
        _ => (url.clone(), "204 No Content"),
    };
    let mut entry = json!({"fullUrl": format!("{origin}/fhir/{url}"),
        "request": {"method": h.method, "url": request_url},
        "response": {"status": status, "etag": format!("W/\"{}\"", h.version),
                     "lastModified": instant(h.at)}});
    if let Some(resource) = &h.resource {
        entry["resource"] = resource.clone();
    }
    entry
}

fn search(
    state: &mut State,
    ty: &str,
    params: &[(String, String)],
    lenient: bool,
    history: bool,
) -> Reply {
    let parsed = if history {
        parse_history(&state.config, ty, params, lenient)
    } else {
        parse_search(&state.config, ty, params, lenient)
    };
    let query = match parsed {
        Ok(query) => query,
        Err(why) => return Reply::outcome(400, "not-supported", &why),
    };
    let mut self_url = format!("{}/fhir/{ty}", state.origin);
    if history {
        self_url.push_str("/_history");
    }
    if !params.is_empty() {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        self_url = format!("{self_url}?{}", serializer.extend_pairs(params).finish());
    }
    if let Some(reply) = page_fault(state, ty, 1) {
        return reply;
    }
    let items = listing(state, &query);
    if query.summary_count {
        let link = json!([{"relation": "self", "url": self_url}]);
        let id = uuid::Uuid::new_v4().to_string();
        let bundle = json!({"resourceType": "Bundle", "id": id, "type": "searchset",
                            "total": items.len(), "link": link});
        return Reply::json(200, bundle);
    }
    let cursor = state.next_cursor;
    state.next_cursor += 1;
    let bundle = render(state, cursor, &query, &items, 0, self_url);
    if query.count > 0 && items.len() > query.count {
        let snapshot = (!state.config.drift).then_some(items);
        let kept = Cursor {
            query,
            created: state.now,
            snapshot,
        };
        state.cursors.insert(cursor, kept);
        if state.cursors.len() > 1000 {
            state.cursors.pop_first();
        }
    }
    Reply::json(200, bundle)
}

/// A continuation page: the query must be exactly what a `next` link carried.
fn page(state: &mut State, raw_query: &str) -> (Reply, Option<String>) {
    let Some((id, offset)) = unseal(state, raw_query) else {
        let why = "continuation token altered or not issued by this server";
        return (Reply::outcome(400, "invalid", why), None);
    };
    let (ttl, now) = (state.config.cursor_ttl, state.now);
    let expired =
        |c: &Cursor| ttl.is_some_and(|ttl| now - c.created > TimeDelta::from_std(ttl).unwrap());
    let Some(cursor) = state.cursors.remove(&id).filter(|c| !expired(c)) else {
        let why = "search expired; start it again";
        return (Reply::outcome(410, "not-found", why), None);
    };
    let ty = cursor.query.ty.clone();
    let page_number = (offset / cursor.query.count.max(1) + 1) as u32;
    let reply = page_fault(state, &ty, page_number).unwrap_or_else(|| {
        let live;
        let items = match &cursor.snapshot {
            Some(items) => items,
            None => {
                live = listing(state, &cursor.query);
                &live
            }
        };
        let self_url = format!("{}/fhir?{raw_query}", state.origin);
        let bundle = render(state, id, &cursor.query, items, offset, self_url);
        Reply::json(200, bundle)
    });
    state.cursors.insert(id, cursor);
    (reply, Some(ty))
}

fn page_fault(state: &mut State, ty: &str, page: u32) -> Option<Reply> {
    let pages = &mut state.faults.fail_page_once;
    let at = pages.iter().position(|(t, p)| t == ty && *p == page)?;
    pages.remove(at);
    let why = format!("page {page} of {ty} failed; try again");
    Some(Reply::outcome(500, "transient", &why))
}

fn render(
    state: &State,
    cursor: u64,
    query: &Query,
    items: &[Value],
    offset: usize,
    self_url: String,
) -> Value {
    let config = &state.config;
    let start = offset.min(items.len());
    let end = (offset + query.count).min(items.len());
    let mut entries = Vec::new();
    if config.duplicate_across_pages && start > 0 {
        entries.push(items[start - 1].clone());
    }
    entries.extend_from_slice(&items[start..end]);
    if !query.history {
        let included = includes(state, query, &entries);
        if let Some(keep) = &query.elements {
            entries
                .iter_mut()
                .for_each(|e| subset(&mut e["resource"], keep));
        }
        entries.extend(included);
        if let (0, Some(warning)) = (offset, &config.search_warning) {
            let resource = outcome("warning", "informational", warning);
            entries.push(json!({"resource": resource, "search": {"mode": "outcome"}}));
        }
    }
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if query.count > 0 && end < items.len() {
        let next = seal(state, cursor, end as u64, query.history);
        links.push(json!({"relation": "next", "url": format!("{}/fhir?{next}", state.origin)}));
    }
    let kind = if query.history {
        "history"
    } else {
        "searchset"
    };
    let mut bundle = json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": instant(state.now)}, "type": kind, "link": links});
    if query.total.unwrap_or(config.total_by_default) {
        bundle["total"] = json!(items.len());
    }
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// `_include` targets and `_revinclude` sources of a page's matches, each once.
fn includes(state: &State, query: &Query, entries: &[Value]) -> Vec<Value> {
    let ids: HashSet<&str> = entries
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    let mut seen: HashSet<String> = ids.iter().map(|id| format!("{}/{id}", query.ty)).collect();
    let mut out = Vec::new();
    for (path, target) in &query.include {
        let references = entries.iter().flat_map(|e| refs_at(&e["resource"], path));
        for (ty, id) in references.filter_map(ref_key) {
            if target.as_ref().is_none_or(|t| t == ty)
                && let Some(resource) = state.live(ty, id).and_then(|v| v.resource.as_ref())
                && seen.insert(format!("{ty}/{id}"))
            {
                out.push(entry(&state.origin, ty, id, resource, "include"));
            }
        }
    }
    for (source, path) in &query.revinclude {
        for v in state.current(source) {
            let Some(resource) = &v.resource else {
                continue;
            };
            let mut keys = refs_at(resource, path).filter_map(ref_key);
            if keys.any(|(t, i)| t == query.ty && ids.contains(i))
                && seen.insert(format!("{source}/{}", v.id))
            {
                out.push(entry(&state.origin, source, &v.id, resource, "include"));
            }
        }
    }
    out
}

/// Keeps the requested top-level elements (plus id, meta, resourceType) and
/// tags the resource SUBSETTED, as servers answer `_elements`.
fn subset(resource: &mut Value, keep: &[String]) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    object.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.contains(k));
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    if !meta["tag"].is_array() {
        meta["tag"] = json!([]);
    }
    if let Some(tags) = meta["tag"].as_array_mut() {
        tags.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
    }
}

// ---- continuation tokens ----

/// The query of a `next` link: `_getpages=<token>&_bundletype=<kind>`. The
/// token is standard base64 (`+` and `/` percent-encoded) of the cursor id and
/// offset (8 bytes each), a history flag, filler drawn from the server secret
/// up to `token_len`, and a 16-byte SHA-256 MAC. Sealing is deterministic, so
/// unsealing re-seals what the token claims and compares the whole query.
fn seal(state: &State, cursor: u64, offset: u64, history: bool) -> String {
    let mut raw = [cursor.to_be_bytes(), offset.to_be_bytes()].concat();
    raw.push(u8::from(history));
    let filled = (state.config.token_len / 4 * 3).max(raw.len() + 16) - 16;
    while raw.len() < filled {
        let block = Sha256::new()
            .chain_update(state.secret)
            .chain_update(&raw)
            .finalize();
        raw.extend_from_slice(&block[..block.len().min(filled - raw.len())]);
    }
    let mac = Sha256::new()
        .chain_update(state.secret)
        .chain_update(&raw)
        .finalize();
    raw.extend_from_slice(&mac[..16]);
    let token = STANDARD.encode(raw);
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let kind = if history { "history" } else { "searchset" };
    format!("_getpages={token}&_bundletype={kind}")
}

fn unseal(state: &State, raw_query: &str) -> Option<(u64, usize)> {
    let (_, token) = form(raw_query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == "_getpages")?;
    let raw = STANDARD.decode(token).ok()?;
    let number = |at: usize| Some(u64::from_be_bytes(raw.get(at..at + 8)?.try_into().ok()?));
    let (cursor, offset) = (number(0)?, number(8)?);
    let history = *raw.get(16)? == 1;
    let genuine = seal(state, cursor, offset, history) == raw_query;
    genuine.then_some((cursor, usize::try_from(offset).ok()?))
}

// ---- CapabilityStatement ----

fn capability(state: &State) -> Value {
    let mut types: BTreeSet<&str> = state.config.types.iter().map(String::as_str).collect();
    types.extend(state.current.keys().map(String::as_str));
    let resources: Vec<Value> = types
        .iter()
        .map(|ty| capability_of(&state.config, ty, &types))
        .collect();
    json!({"resourceType": "CapabilityStatement", "status": "active", "date": instant(state.now),
        "kind": "instance", "fhirVersion": "4.0.1", "format": ["application/fhir+json"],
        "implementation": {"description": "fhirlake test server",
                           "url": format!("{}/fhir", state.origin)},
        "rest": [{"mode": "server", "resource": resources}]})
}

fn capability_of(config: &Config, ty: &str, types: &BTreeSet<&str>) -> Value {
    let caps = &config.capabilities;
    let mut params = vec![
        ("_id", "token"),
        ("identifier", "token"),
        ("_count", "number"),
    ];
    let optional = [
        (caps.last_updated, "_lastUpdated", "date"),
        (caps.sort, "_sort", "special"),
        (caps.summary_count, "_summary", "special"),
        (caps.total, "_total", "special"),
        (true, "_include", "special"),
        (true, "_revinclude", "special"),
        (true, "_elements", "special"),
        (
            config.date_params.iter().any(|(t, _)| t == ty),
            "date",
            "date",
        ),
    ];
    params.extend(optional.iter().filter(|o| o.0).map(|o| (o.1, o.2)));
    let references = config.references.iter();
    params.extend(
        references
            .clone()
            .filter(|r| r.0 == ty)
            .map(|r| (r.1.as_str(), "reference")),
    );
    let includes = |of: &dyn Fn(&str) -> bool| {
        let listed = references
            .clone()
            .filter(|r| of(&r.0) && types.contains(r.0.as_str()));
        listed
            .map(|r| format!("{}:{}", r.0, r.1))
            .collect::<Vec<_>>()
    };
    let mut interactions = vec![json!({"code": "read"}), json!({"code": "search-type"})];
    if caps.history {
        interactions.push(json!({"code": "history-type"}));
    }
    let conditional = if caps.conditional_read {
        "full-support"
    } else {
        "not-supported"
    };
    let params: Vec<Value> = params
        .iter()
        .map(|(n, t)| json!({"name": n, "type": t}))
        .collect();
    json!({"type": ty, "versioning": "versioned", "interaction": interactions,
        "conditionalRead": conditional, "searchParam": params,
        "searchInclude": includes(&|t: &str| t == ty),
        "searchRevInclude": includes(&|t: &str| t != ty)})
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
