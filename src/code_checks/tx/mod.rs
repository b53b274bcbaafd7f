//! A terminology server (`--tx URL`) asked whether codes exist, with its
//! answers cached in the lake.
//!
//! ```text
//! job start:   _tx_cache (answers still fresh) ──preload──▶ cache (system → code → Verdict)
//! per coding:  cached(system, code)  → a hash hit on the decode thread; a miss waits for its chunk's end
//! chunk end:   resolve(misses) ── batches of `--tx-batch`, paced to `--tx-rate` ──▶ POST [base] Bundle(batch)
//!                  of GET CodeSystem/$validate-code   (a server that refuses batches gets one GET per code)
//!              answers ─▶ cache, and the job's new answers ─▶ appended to _tx_cache at commit
//! ```
//!
//! Requests go through the shared [`HttpClient`] (retries, `Retry-After`,
//! the host's circuit breaker) on a small runtime of the server's own: the
//! decode threads are not async, and they block only at a chunk's end, only
//! for codes no earlier chunk or job asked. A server that is down never
//! blocks the load: after a few quick retries its breaker opens, and every
//! code it did not answer is counted unverified (not cached, so the next
//! job asks again), with the error in the manifest.
//!
//! Asked: codings of the systems given (`--tx-system`, default
//! [`DEFAULT_SYSTEMS`]) that passed the local checks; a code with a bad
//! check digit is already flagged. A code the server does not know is a
//! problem (`unknown_to_server`) like any other: counted in the row's
//! `_code_issues`, queued in `_curation`.

mod cache;
pub mod protocol;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use url::Url;

use crate::auth::{Credentials, TokenSource};
use crate::http::{
    BreakerPolicy, Breakers, Call, HttpClient, Pace, RetryKind, RetryPolicy, redact_url,
};
use crate::lake::{Lake, LakeError};
use crate::ledger::EventLog;

pub use cache::{Answer, TX_CACHE_TABLE, to_batch, tx_cache_schema};
pub use protocol::Verdict;

/// The code systems asked when `--tx-system` is not given: those whose
/// local checks cover only a code's shape, and that terminology servers
/// commonly hold.
pub const DEFAULT_SYSTEMS: [&str; 5] = [
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/cvx",
];

/// How a job talks to its terminology server.
#[derive(Debug, Clone)]
pub struct TxOptions {
    /// The server's FHIR base (`https://tx.example.org/r4`).
    pub server: Url,
    /// Code systems asked about (empty: [`DEFAULT_SYSTEMS`]).
    pub systems: Vec<String>,
    /// Codes per batch request.
    pub batch: usize,
    /// Requests per second at most (0: no limit).
    pub rate: f64,
    /// Answers older than this are asked again.
    pub max_age: Duration,
    /// A bearer token for the server, read from this file.
    pub token_file: Option<PathBuf>,
    /// Longest a request may take.
    pub timeout: Duration,
}

impl TxOptions {
    pub fn new(server: Url) -> Self {
        Self {
            server,
            systems: Vec::new(),
            batch: 100,
            rate: 10.0,
            max_age: Duration::from_secs(30 * 86_400),
            token_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the server did for a job (the manifest's record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Distinct codes answered from `_tx_cache` at the job's start.
    pub cached: u64,
    /// Distinct codes sent to the server.
    pub asked: u64,
    pub valid: u64,
    pub invalid: u64,
    pub unsupported: u64,
    /// Distinct codes left without an answer (asked again next job).
    pub unverified: u64,
    pub requests: u64,
    pub failed_requests: u64,
    /// Why the first request failed, when one did.
    pub error: Option<String>,
    /// A few unverified codes, `system|code`.
    pub unverified_examples: Vec<String>,
}

const UNVERIFIED_EXAMPLES: usize = 10;

/// The job's terminology server and what it has answered.
pub struct TerminologyServer {
    server: Url,
    /// The URL as written in `_tx_cache` and the manifest (no credentials, no query).
    label: String,
    systems: HashSet<String>,
    batch: usize,
    max_age: Duration,
    http: HttpClient,
    pace: Pace,
    events: EventLog,
    runtime: Option<tokio::runtime::Runtime>,
    cache: RwLock<HashMap<String, HashMap<String, Verdict>>>,
    /// Answers this job got, for `_tx_cache`.
    fresh: Mutex<Vec<Answer>>,
    unverified: Mutex<HashSet<(String, String)>>,
    /// Codes a thread is asking about now, and the signal that it is done.
    asking: Mutex<HashSet<(String, String)>>,
    asked: Condvar,
    stats: Mutex<ServerStats>,
    preloaded: AtomicBool,
    /// The server answered a batch with "not supported": one GET per code.
    no_batches: AtomicBool,
}

impl std::fmt::Debug for TerminologyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminologyServer")
            .field("server", &self.label)
            .field("systems", &self.systems)
            .finish_non_exhaustive()
    }
}

impl Drop for TerminologyServer {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TxError {
    #[error("--tx {0}: {1}")]
    Setup(String, String),
}

impl TerminologyServer {
    pub fn new(options: &TxOptions) -> Result<Self, TxError> {
        let label = redact_url(options.server.as_str());
        let setup = |e: &dyn std::fmt::Display| TxError::Setup(label.clone(), e.to_string());
        if !matches!(options.server.scheme(), "http" | "https") {
            return Err(setup(&"expected an http(s) FHIR base URL"));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("fhirlake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10).min(options.timeout))
            .read_timeout(options.timeout)
            .build()
            .map_err(|e| setup(&e))?;
        let credentials = match &options.token_file {
            Some(path) => Credentials::bearer_from_file(path).map_err(|e| setup(&e))?,
            None => Credentials::None,
        };
        let tokens = TokenSource::new(credentials, options.server.clone(), client.clone());
        // Quick to give up: a load never waits long on its terminology server.
        let retry = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(2),
            max_wait: Duration::from_secs(5),
        };
        let breakers = Breakers::new(BreakerPolicy {
            failures: 3,
            cool_down: Duration::from_secs(60),
            max_cool_down: Duration::from_secs(600),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fhirlake-tx")
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        let systems = if options.systems.is_empty() {
            DEFAULT_SYSTEMS.iter().map(|s| s.to_string()).collect()
        } else {
            options.systems.iter().cloned().collect()
        };
        Ok(Self {
            server: options.server.clone(),
            label,
            systems,
            batch: options.batch.max(1),
            max_age: options.max_age,
            http: HttpClient::new(client, tokens, retry).with_breakers(breakers),
            pace: Pace::new(options.rate),
            events: EventLog::default(),
            runtime: Some(runtime),
            cache: RwLock::default(),
            fresh: Mutex::default(),
            unverified: Mutex::default(),
            asking: Mutex::default(),
            asked: Condvar::new(),
            stats: Mutex::default(),
            preloaded: AtomicBool::new(false),
            no_batches: AtomicBool::new(false),
        })
    }

    /// The server as recorded (no credentials, no query).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether codes of `system` are asked about.
    pub fn asks(&self, system: &str) -> bool {
        self.systems.contains(system)
    }

    /// The answer already known for a code (this job's or a fresh cached one).
    pub fn cached(&self, system: &str, code: &str) -> Option<Verdict> {
        let cache = self.cache.read().expect("tx cache lock");
        cache.get(system)?.get(code).cloned()
    }

    /// Reads the answers of `_tx_cache` still fresh (once per process: a
    /// listener's later group commits keep what it has).
    pub async fn preload(&self, lake: &Lake) -> Result<(), LakeError> {
        if self.preloaded.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let max_age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        let since = Utc::now()
            .checked_sub_signed(max_age)
            .map_or(i64::MIN, |t| t.timestamp_micros());
        let stored = cache::read(lake, &self.label, since).await?;
        let mut cache = self.cache.write().expect("tx cache lock");
        let mut count = 0;
        for (system, codes) in stored {
            let known = cache.entry(system).or_default();
            for (code, verdict) in codes {
                known.entry(code).or_insert(verdict);
                count += 1;
            }
        }
        self.stats.lock().expect("tx stats lock").cached += count;
        Ok(())
    }

    /// Answers for `keys` (distinct (system, code)), in order: from the
    /// cache, else asked in batches. `None`: unverified (the server failed).
    /// A code another thread is asking about right now is waited for, not
    /// asked twice.
    pub fn resolve(&self, keys: &[(String, String)]) -> Vec<Option<Verdict>> {
        let mut out: Vec<Option<Verdict>> = keys.iter().map(|(s, c)| self.cached(s, c)).collect();
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        {
            let mut asking = self.asking.lock().expect("tx asking lock");
            for i in (0..keys.len()).filter(|&i| out[i].is_none()) {
                if asking.insert(keys[i].clone()) {
                    mine.push(i);
                } else {
                    theirs.push(i);
                }
            }
        }
        for group in mine.chunks(self.batch) {
            let questions: Vec<(&str, &str)> = group
                .iter()
                .map(|&i| (keys[i].0.as_str(), keys[i].1.as_str()))
                .collect();
            match self.block(|| self.ask(&questions)) {
                Ok(verdicts) => {
                    for (&i, verdict) in group.iter().zip(verdicts) {
                        out[i] = verdict;
                    }
                    self.record(group.iter().map(|&i| (&keys[i], &out[i])));
                }
                Err(error) => {
                    let mut stats = self.stats.lock().expect("tx stats lock");
                    stats.failed_requests += 1;
                    stats.error.get_or_insert(error);
                }
            }
        }
        {
            let mut asking = self.asking.lock().expect("tx asking lock");
            for &i in &mine {
                asking.remove(&keys[i]);
            }
            self.asked.notify_all();
            // Every thread asks its own codes before it waits: no cycle.
            while theirs.iter().any(|&i| asking.contains(&keys[i])) {
                asking = self.asked.wait(asking).expect("tx asking lock");
            }
        }
        for i in theirs.drain(..) {
            out[i] = self.cached(&keys[i].0, &keys[i].1);
        }
        self.note_unverified(keys.iter().zip(&out).filter(|(_, v)| v.is_none()));
        out
    }

    /// The answers this job got that `_tx_cache` does not hold yet (taken:
    /// a listener's next commit writes only what is newer).
    pub fn take_fresh(&self) -> Vec<Answer> {
        std::mem::take(&mut *self.fresh.lock().expect("tx fresh lock"))
    }

    pub fn stats(&self) -> ServerStats {
        self.stats.lock().expect("tx stats lock").clone()
    }

    fn record<'k>(
        &self,
        answered: impl Iterator<Item = (&'k (String, String), &'k Option<Verdict>)>,
    ) {
        let now = Utc::now().timestamp_micros();
        let mut cache = self.cache.write().expect("tx cache lock");
        let mut fresh = self.fresh.lock().expect("tx fresh lock");
        let mut stats = self.stats.lock().expect("tx stats lock");
        for ((system, code), verdict) in answered {
            stats.asked += 1;
            let Some(verdict) = verdict else {
                continue;
            };
            match verdict {
                Verdict::Valid => stats.valid += 1,
                Verdict::Invalid(_) => stats.invalid += 1,
                Verdict::Unsupported(_) => stats.unsupported += 1,
            }
            let known = cache.entry(system.clone()).or_default();
            if known.insert(code.clone(), verdict.clone()).is_none() {
                fresh.push(Answer {
                    system: system.clone(),
                    code: code.clone(),
                    verdict: verdict.clone(),
                    checked_at: now,
                });
            }
        }
    }

    fn note_unverified<'k>(
        &self,
        missing: impl Iterator<Item = (&'k (String, String), &'k Option<Verdict>)>,
    ) {
        let mut unverified = self.unverified.lock().expect("tx unverified lock");
        let mut stats = self.stats.lock().expect("tx stats lock");
        for (key, _) in missing {
            if unverified.insert(key.clone()) {
                stats.unverified += 1;
                if stats.unverified_examples.len() < UNVERIFIED_EXAMPLES {
                    stats
                        .unverified_examples
                        .push(format!("{}|{}", key.0, key.1));
                }
            }
        }
    }

    /// Runs the future `make` makes on the server's runtime, from a decode
    /// thread (or, should a caller be inside a runtime already, from a
    /// scoped thread: a runtime cannot be entered from within one).
    fn block<M, F>(&self, make: M) -> F::Output
    where
        M: FnOnce() -> F + Send,
        F: Future,
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(make());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(make()))
                .join()
                .expect("the terminology request thread panicked")
        })
    }

    /// One batch request (or, for a server without batches, one GET per code).
    async fn ask(&self, questions: &[(&str, &str)]) -> Result<Vec<Option<Verdict>>, String> {
        if !self.no_batches.load(Ordering::Relaxed) {
            let body = protocol::batch(questions.iter().copied()).to_string();
            self.pace.wait().await;
            self.count_request();
            let call = Call::new("terminology batch", Method::POST, &self.server);
            let response = self
                .http
                .send(call, &self.events, |r| {
                    r.header(CONTENT_TYPE, "application/fhir+json")
                        .header(ACCEPT, "application/fhir+json")
                        .body(body.clone())
                })
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| format!("terminology batch {}: {}", self.label, e.without_url()))?;
            if status.is_success() {
                return protocol::read_batch(&bytes, questions.len())
                    .map_err(|e| format!("terminology batch {}: {e}", self.label));
            }
            if !matches!(status.as_u16(), 400 | 404 | 405 | 415 | 422 | 501) {
                return Err(format!(
                    "terminology batch {}: HTTP {status}; check the server and its credentials (--tx-token-file)",
                    self.label
                ));
            }
            // Batches are not supported: ask code by code from now on.
            self.no_batches.store(true, Ordering::Relaxed);
        }
        let mut verdicts = Vec::with_capacity(questions.len());
        for (system, code) in questions {
            let base = self.server.as_str().trim_end_matches('/');
            let url = Url::parse(&format!("{base}/{}", protocol::question(system, code)))
                .map_err(|e| format!("terminology server {}: {e}", self.label))?;
            self.pace.wait().await;
            self.count_request();
            let fetched = self
                .http
                .fetch(
                    RetryKind::Request,
                    "terminology $validate-code",
                    &url,
                    &self.events,
                    |r| r.header(ACCEPT, "application/fhir+json"),
                )
                .await
                .map_err(|e| e.to_string())?;
            let answer: Option<serde_json::Value> = serde_json::from_slice(&fetched.body).ok();
            verdicts.push(protocol::read_answer(
                fetched.status.as_u16(),
                answer.as_ref(),
            ));
        }
        Ok(verdicts)
    }

    fn count_request(&self) {
        self.stats.lock().expect("tx stats lock").requests += 1;
    }
}
