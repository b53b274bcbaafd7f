//! `fhirlake hl7v2 convert | load | listen`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::FixedOffset;
use clap::{Args, Subcommand};
use serde_json::json;

use super::sync::duration;
use super::{LakeArgs, TableFlags, WormArgs, progress, runtime, summary};
use crate::hl7v2::{MapOptions, parse, split_batch};
use crate::load::LoadReport;
use crate::source::hl7v2::{self, FilesJob, ListenConfig};

#[derive(Debug, Subcommand)]
pub enum Hl7v2Command {
    /// Print the FHIR Bundle a message becomes (a JSON array for a file of several), to debug a mapping.
    Convert(ConvertArgs),
    /// Load files or directories of HL7 v2 messages (one, many, or FHS/BHS batches per file).
    Load(Box<LoadArgs>),
    /// Receive messages over MLLP; each is acknowledged AA once it is committed to the lake.
    Listen(Box<ListenArgs>),
}

#[derive(Debug, Args)]
struct Mapping {
    /// Offset for HL7 timestamps that carry none, e.g. -05:00 (recorded in the manifest).
    #[arg(long, default_value = "UTC", value_parser = offset)]
    timezone: FixedOffset,
}

impl Mapping {
    fn options(&self) -> MapOptions {
        MapOptions {
            timezone: self.timezone,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A file of HL7 v2 messages.
    file: PathBuf,
    #[command(flatten)]
    mapping: Mapping,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Files or directories of messages (directories are read recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    #[command(flatten)]
    tables: TableFlags,
    #[command(flatten)]
    mapping: Mapping,
    /// Messages per job: each job is one commit per table and one manifest,
    /// and holds its messages' FHIR in memory (about 25 KB a message).
    #[arg(long, default_value_t = 10_000)]
    batch_messages: usize,
    /// Print the job summaries as a JSON array on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on (only this one), e.g. 127.0.0.1:2575.
    #[arg(long, value_name = "HOST:PORT")]
    mllp: SocketAddr,
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    #[command(flatten)]
    tables: TableFlags,
    #[command(flatten)]
    mapping: Mapping,
    /// Frames over this many bytes are refused (AR) and the connection closed.
    #[arg(long, default_value_t = 1 << 20)]
    max_message_bytes: usize,
    /// Longest a message waits for its group commit, e.g. 1s, 200ms.
    #[arg(long, default_value = "1s", value_parser = duration)]
    commit_interval: Duration,
    /// Most messages per group commit.
    #[arg(long, default_value_t = 5_000)]
    max_batch: usize,
    /// How often to log throughput and ACK latency (0 for never).
    #[arg(long, default_value = "60s", value_parser = duration)]
    stats_interval: Duration,
}

pub fn run(command: Hl7v2Command) -> Result<ExitCode> {
    match command {
        Hl7v2Command::Convert(args) => convert(args),
        Hl7v2Command::Load(args) => load(*args),
        Hl7v2Command::Listen(args) => listen(*args),
    }
}

fn convert(args: ConvertArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let batch = split_batch(&bytes);
    if batch.messages.is_empty() {
        bail!(
            "{} holds no HL7 v2 message (no line starts with MSH)",
            args.file.display()
        );
    }
    let options = args.mapping.options();
    let mut bundles = Vec::new();
    let mut failed = 0;
    for message in &batch.messages {
        let at = format!(
            "{} message {} (line {})",
            args.file.display(),
            message.index + 1,
            message.line
        );
        let converted = parse(message.bytes)
            .map_err(|e| e.to_string())
            .and_then(|m| crate::hl7v2::convert(&m, &options).map_err(|e| e.to_string()));
        match converted {
            Ok(c) => {
                for (segment, n) in &c.unmapped_segments {
                    eprintln!("{at}: {n} {segment} segment(s) not mapped");
                }
                for warning in &c.warnings {
                    eprintln!("{at}: warning: {}", serde_json::to_string(warning)?);
                }
                let entries: Vec<_> = c
                    .resources
                    .iter()
                    .map(|r| {
                        json!({
                            "fullUrl": format!("urn:fhirlake:{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or("")),
                            "resource": r,
                        })
                    })
                    .collect();
                bundles.push(json!({
                    "resourceType": "Bundle",
                    "type": "message",
                    "timestamp": c.info.timestamp.to_rfc3339(),
                    "entry": entries,
                }));
            }
            Err(e) => {
                failed += 1;
                eprintln!("{at}: cannot be converted: {e}");
            }
        }
    }
    let out = match bundles.len() {
        1 if batch.messages.len() == 1 => bundles.remove(0),
        _ => serde_json::Value::Array(bundles),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn load(args: LoadArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    super::warn_raw_beside_segregated(
        &lake,
        "hl7v2",
        "the messages are the job's input and its evidence, and stay there",
    );
    let files = hl7v2::discover(&args.inputs)?;
    let display = progress::Display::for_stderr();
    let job = FilesJob {
        options: args.tables.load_options()?,
        map: args.mapping.options(),
        batch_messages: args.batch_messages,
        progress: display.sink(),
    };
    let reports = runtime()?.block_on(hl7v2::load_files(&lake, &files, &job))?;
    display.finish();
    if args.json {
        let all: Vec<_> = reports.iter().map(summary::json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for report in &reports {
            print!("{}{}", summary::text(report), summary::hl7v2_text(report));
        }
    }
    Ok(exit_code(&reports))
}

/// 1 when anything was quarantined: lines of the converted FHIR or whole messages.
fn exit_code(reports: &[LoadReport]) -> ExitCode {
    let rejected = |r: &LoadReport| r.manifest.hl7v2.as_ref().map_or(0, |h| h.messages.rejected);
    if reports.iter().any(|r| r.quarantined() + rejected(r) > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn listen(args: ListenArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    super::warn_raw_beside_segregated(
        &lake,
        "hl7v2",
        "the messages are the job's input and its evidence, and stay there",
    );
    let config = ListenConfig {
        address: args.mllp,
        max_message_bytes: args.max_message_bytes,
        commit_interval: args.commit_interval,
        max_batch: args.max_batch,
        stats_interval: args.stats_interval,
        options: args.tables.load_options()?,
        map: args.mapping.options(),
    };
    let summary = runtime()?.block_on(hl7v2::listen(lake, config, stop_signal()))?;
    eprintln!(
        "fhirlake hl7v2: stopped: {} connection(s), {} message(s): {} accepted, {} replays, {} rejected, {} not stored; {} commit(s); ACK latency p50 {:.0} ms, p99 {:.0} ms",
        summary.connections,
        summary.messages,
        summary.accepted,
        summary.replays,
        summary.rejected,
        summary.not_stored,
        summary.commits,
        summary.ack_latency_p50_ms,
        summary.ack_latency_p99_ms
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = sigterm => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `UTC`, `Z`, `+05:30`, `-0500`.
fn offset(text: &str) -> Result<FixedOffset, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let bad = || format!("{text:?} is not an offset such as UTC, -05:00 or +0530");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i32 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i32 = digits[2..].parse().map_err(|_| bad())?;
    if hours > 14 || minutes > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}
