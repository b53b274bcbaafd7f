//! `fhirlake hl7v2 listen`: an MLLP server that commits what it receives.
//!
//! ```text
//!  connection ─┐ frame ─▶ Pending ─┐            ┌─▶ ACK ─▶ connection
//!  connection ─┤  (one message in  ├─▶ committer ┤      (per message, in order)
//!  connection ─┘   flight each)    ┘  group commit: a Feed every
//!                                     --commit-interval or --max-batch
//! ```
//!
//! Durability: a message is acknowledged `AA` only after the job holding it
//! has committed to the lake (no local log: the lake is the log, and a
//! group commit a second amortises its cost over every message that arrived
//! meanwhile). A sender that times out and retries sends a message the lake
//! holds: its MessageHeader is found and it is acknowledged `AA` again with
//! no second write. A message that does not parse or map is quarantined in
//! the same commit and answered `AE`/`AR` with an ERR segment. A frame over
//! `--max-message-bytes`, or broken framing, is answered `AR` and the
//! connection closed: the stream cannot be trusted past it. If the commit
//! fails (the lake is unreachable) every message of the batch is answered
//! `AE` (207, "not stored, send again") and the listener keeps serving.
//!
//! Shutdown (SIGTERM, Ctrl-C): stop accepting, stop reading, commit and
//! answer what was received, exit 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::feed::{Feed, Origin};
use super::load::load_feed;
use crate::hl7v2::MapOptions;
use crate::hl7v2::ack::{self, AckCode, AckError, AckHeader};
use crate::hl7v2::mllp::{Decoder, frame};
use crate::lake::Lake;
use crate::ledger::MessageStatus;
use crate::load::LoadOptions;

/// How the listener runs.
#[derive(Clone)]
pub struct ListenConfig {
    pub address: SocketAddr,
    pub max_message_bytes: usize,
    /// Longest a message waits for its group commit.
    pub commit_interval: Duration,
    /// Most messages per commit.
    pub max_batch: usize,
    /// How often throughput is logged (zero: never).
    pub stats_interval: Duration,
    pub options: LoadOptions,
    pub map: MapOptions,
}

/// What the listener did, for its exit summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ListenSummary {
    pub connections: u64,
    pub messages: u64,
    pub accepted: u64,
    pub replays: u64,
    pub rejected: u64,
    pub not_stored: u64,
    pub commits: u64,
    pub framing_errors: u64,
    /// Receipt to ACK, over every message answered.
    pub ack_latency_p50_ms: f64,
    pub ack_latency_p99_ms: f64,
}

struct Pending {
    bytes: Vec<u8>,
    origin: Origin,
    received: Instant,
    /// The ACK, and whether it is an `AA`.
    reply: oneshot::Sender<(String, bool)>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    /// Connections open now: each has at most one message in flight.
    open: AtomicU64,
    framing_errors: AtomicU64,
}

/// Binds `config.address` and serves until `shutdown` resolves.
pub async fn listen(
    lake: Lake,
    config: ListenConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ListenSummary> {
    lake.ensure_put_if_absent().await?;
    let listener = TcpListener::bind(config.address).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e}; is another listener on that port?",
            config.address
        )
    })?;
    let bound = listener.local_addr()?;
    eprintln!("fhirlake hl7v2: listening for MLLP on {bound}");
    let (to_committer, pending) = mpsc::channel::<Pending>(config.max_batch.max(1) * 2);
    let (stop_tx, stop) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let committer = tokio::spawn(commit_loop(
        lake,
        config.clone(),
        format!("mllp://{bound}"),
        pending,
        counters.clone(),
    ));
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        eprintln!("fhirlake hl7v2: accept failed: {e}");
                        continue;
                    }
                };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                counters.open.fetch_add(1, Ordering::Relaxed);
                connections.spawn(serve(
                    stream,
                    peer,
                    config.max_message_bytes,
                    to_committer.clone(),
                    stop.clone(),
                    counters.clone(),
                ));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    eprintln!("fhirlake hl7v2: stopping: committing and answering what was received");
    let _ = stop_tx.send(true);
    drop(to_committer);
    while connections.join_next().await.is_some() {}
    let mut summary = committer.await?;
    summary.connections = counters.connections.load(Ordering::Relaxed);
    summary.framing_errors = counters.framing_errors.load(Ordering::Relaxed);
    Ok(summary)
}

/// One connection: frames in, each answered before the next is read (MLLP
/// senders wait for the ACK), so a connection has one message in flight.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    max_message_bytes: usize,
    committer: mpsc::Sender<Pending>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let source = format!("mllp://{peer}");
    let mut decoder = Decoder::new(max_message_bytes);
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut messages, mut acked) = (0u64, 0u64);
    let mut closing = None;
    'read: while !*stop.borrow() {
        let n = tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => { closing = Some(format!("read failed: {e}")); break; }
            },
            _ = stop.changed() => break,
        };
        for frame_or_error in decoder.decode(&buffer[..n]) {
            let reply = match frame_or_error {
                Ok(bytes) => {
                    messages += 1;
                    let (reply, answer) = oneshot::channel();
                    let pending = Pending {
                        bytes,
                        origin: Origin {
                            source: source.clone(),
                            number: messages,
                            byte_offset: 0,
                        },
                        received: Instant::now(),
                        reply,
                    };
                    if committer.send(pending).await.is_err() {
                        break 'read;
                    }
                    match answer.await {
                        Ok(answer) => answer,
                        Err(_) => break 'read,
                    }
                }
                Err(error) => {
                    counters.framing_errors.fetch_add(1, Ordering::Relaxed);
                    let head = decoder.take_dropped_head();
                    let nak = AckError {
                        code: 207,
                        location: None,
                        message: error.to_string(),
                    };
                    let header = AckHeader::salvage(&head);
                    let text = ack::build(&header, AckCode::AR, Some(&nak), Utc::now().into());
                    let _ = stream.write_all(&frame(text.as_bytes())).await;
                    closing = Some(format!("closed after a framing error: {error}"));
                    break 'read;
                }
            };
            let (reply, accepted) = reply;
            acked += u64::from(accepted);
            if let Err(e) = stream.write_all(&frame(reply.as_bytes())).await {
                closing = Some(format!("writing an ACK failed: {e}"));
                break 'read;
            }
        }
    }
    if closing.is_none()
        && let Some(error) = decoder.finish()
    {
        closing = Some(error.to_string());
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
    eprintln!(
        "fhirlake hl7v2: {peer}: {messages} message(s), {acked} acknowledged AA{}",
        closing.map(|c| format!("; {c}")).unwrap_or_default()
    );
}

/// Group commit: the first message waiting opens a batch, which commits
/// after `commit_interval`, at `max_batch` messages, or as soon as every
/// open connection has its message in it (each sender waits for its ACK,
/// so nothing more can arrive: waiting longer would only add latency).
async fn commit_loop(
    lake: Lake,
    config: ListenConfig,
    origin: String,
    mut pending: mpsc::Receiver<Pending>,
    counters: Arc<Counters>,
) -> ListenSummary {
    let mut summary = ListenSummary::default();
    let mut latencies_ms: Vec<f64> = Vec::new();
    let mut window = Stats::new(config.stats_interval);
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.commit_interval;
        while batch.len() < config.max_batch.max(1) {
            if batch.len() as u64 >= counters.open.load(Ordering::Relaxed) {
                break;
            }
            tokio::select! {
                next = pending.recv() => match next {
                    Some(p) => batch.push(p),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut feed = Feed::new(origin.clone(), config.map.clone());
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch {
            let index = feed.push(&p.bytes, p.origin);
            replies.push((index, p.reply, p.received));
        }
        let (acks, result) = load_feed(&lake, feed, &config.options, None).await;
        let now = Utc::now().into();
        summary.commits += u64::from(result.is_ok());
        if let Err(e) = &result {
            eprintln!(
                "fhirlake hl7v2: commit of {} message(s) failed, answered AE so senders resend: {e}",
                replies.len()
            );
        }
        for (index, reply, received) in replies {
            summary.messages += 1;
            let answer = match &result {
                Ok(_) => {
                    let (status, text) = acks.ack(index, now);
                    match status {
                        MessageStatus::Converted => summary.accepted += 1,
                        MessageStatus::Replay => summary.replays += 1,
                        MessageStatus::Rejected => summary.rejected += 1,
                    }
                    (text, status != MessageStatus::Rejected)
                }
                Err(e) => {
                    summary.not_stored += 1;
                    (acks.not_stored(index, &e.to_string(), now), false)
                }
            };
            // The connection may be gone (sender timed out): it resends.
            let _ = reply.send(answer);
            let ms = received.elapsed().as_secs_f64() * 1e3;
            latencies_ms.push(ms);
            window.add(ms);
        }
        window.maybe_log();
    }
    latencies_ms.sort_by(f64::total_cmp);
    summary.ack_latency_p50_ms = percentile(&latencies_ms, 0.50);
    summary.ack_latency_p99_ms = percentile(&latencies_ms, 0.99);
    summary
}

/// Throughput logged every `interval`.
struct Stats {
    interval: Duration,
    started: Instant,
    messages: u64,
    latencies_ms: Vec<f64>,
}

impl Stats {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            started: Instant::now(),
            messages: 0,
            latencies_ms: Vec::new(),
        }
    }

    fn add(&mut self, latency_ms: f64) {
        self.messages += 1;
        self.latencies_ms.push(latency_ms);
    }

    fn maybe_log(&mut self) {
        let elapsed = self.started.elapsed();
        if self.interval.is_zero() || elapsed < self.interval {
            return;
        }
        self.latencies_ms.sort_by(f64::total_cmp);
        eprintln!(
            "fhirlake hl7v2: {} message(s) in {:.1} s ({:.0}/s), ACK latency p50 {:.0} ms, p99 {:.0} ms",
            self.messages,
            elapsed.as_secs_f64(),
            self.messages as f64 / elapsed.as_secs_f64(),
            percentile(&self.latencies_ms, 0.50),
            percentile(&self.latencies_ms, 0.99),
        );
        *self = Stats::new(self.interval);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
