//! `fhirlake sync`: flags → a [`SyncPlan`] (or a [`RefreshPlan`] with
//! `--refresh`); a progress bar per type on a terminal, events on stderr;
//! a summary (or `--json`) at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use url::Url;

use super::server::ServerArgs;
use super::{LakeArgs, TableFlags, WormArgs, runtime};
use crate::ledger::Echo;
use crate::load::LoadReport;
use crate::source::sync::{
    self, DEFAULT_CONCURRENCY, DeleteSource, RefreshPlan, RefreshSelect, SyncError, SyncPlan,
    SyncProgress, TypeOutcome,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Deletes {
    /// From `Type/_history` where the CapabilityStatement offers it.
    Auto,
    /// From `Type/_history`, required.
    History,
    /// Not synced.
    None,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// FHIR server base URL, e.g. https://ehr.example.org/fhir
    #[arg(long)]
    server: Url,
    /// Resource types, comma-separated or repeated.
    #[arg(
        long = "type",
        value_delimiter = ',',
        value_name = "TYPE",
        required_unless_present = "refresh"
    )]
    types: Vec<String>,
    /// Sync changes after this instant, not since each type's watermark.
    #[arg(long, value_name = "INSTANT")]
    since: Option<String>,
    /// How far behind the server's clock a window ends (servers do not commit in
    /// lastUpdated order), e.g. 2m, 30s.
    #[arg(long, default_value = "2m", value_parser = duration)]
    settle: Duration,
    /// Resources per window (and per commit); larger windows are split.
    #[arg(long, default_value_t = 50_000)]
    max_window: u64,
    /// Resources asked per page (_count; the server may send fewer).
    #[arg(long, default_value_t = 500)]
    count: u32,
    /// _include, e.g. Encounter:subject (the searched type is the source's; or
    /// TYPE=Source:param). Repeatable.
    #[arg(long = "include", value_name = "VALUE")]
    includes: Vec<String>,
    /// _revinclude, e.g. Observation:encounter (every type, or TYPE=Source:param). Repeatable.
    #[arg(long = "revinclude", value_name = "VALUE")]
    revincludes: Vec<String>,
    /// Elements to ask for (_elements); the server tags the results SUBSETTED and
    /// they never replace a full row.
    #[arg(long, value_name = "LIST")]
    elements: Option<String>,
    /// After the windows, fetch what the synced resources reference and the lake
    /// lacks, in batches by _id.
    #[arg(long)]
    resolve_references: bool,
    #[arg(long, value_enum, default_value = "auto")]
    deletes: Deletes,
    /// TYPE=PARAM: window a type on another date search parameter (e.g.
    /// Observation=date) when the server cannot search it by _lastUpdated. Repeatable.
    #[arg(long = "since-param", value_name = "TYPE=PARAM")]
    since_params: Vec<String>,
    /// Types synced at once (one request stream each).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    max_concurrency: usize,
    /// Requests per second at most, across the sync.
    #[arg(long, value_name = "RPS")]
    rate: Option<f64>,

    /// Re-read the resources a table holds with If-None-Match instead of
    /// searching: TABLE is a type (Patient) or its table (patient).
    #[arg(long, value_name = "TABLE")]
    refresh: Option<String>,
    /// With --refresh: a file of ids, one per line.
    #[arg(
        long,
        value_name = "PATH",
        requires = "refresh",
        conflicts_with = "older_than"
    )]
    ids: Option<PathBuf>,
    /// With --refresh: rows whose meta.lastUpdated is older than this (e.g. 30d).
    #[arg(long, value_name = "DURATION", requires = "refresh", value_parser = duration)]
    older_than: Option<Duration>,

    #[command(flatten)]
    connection: ServerArgs,
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    #[command(flatten)]
    tables: TableFlags,
    /// Print the sync as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `90s`, `2m`, `3h`, `30d`, or seconds.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{text:?}: use s, m, h or d (e.g. 2m)")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 2m"))?;
    if value < 0.0 {
        return Err(format!("{text:?} is negative"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn plan(args: &SyncArgs) -> Result<SyncPlan> {
    let types = sync::check_types(&args.types)?;
    let since = match &args.since {
        Some(text) => Some(crate::fhir::parse_instant_micros(text).with_context(|| {
            format!("--since {text:?} is not a FHIR instant such as 2024-08-06T18:12:57Z")
        })?),
        None => None,
    };
    let mut since_params = BTreeMap::new();
    for pair in &args.since_params {
        let Some((ty, param)) = pair.split_once('=') else {
            bail!("--since-param {pair:?}: use TYPE=PARAM, e.g. Observation=date");
        };
        since_params.insert(ty.to_owned(), param.to_owned());
    }
    Ok(SyncPlan {
        server: args.server.clone(),
        types,
        settle: args.settle,
        max_window: args.max_window.max(1),
        page_size: args.count.max(1),
        includes: args.includes.clone(),
        revincludes: args.revincludes.clone(),
        elements: args.elements.clone(),
        resolve_references: args.resolve_references,
        deletes: match args.deletes {
            Deletes::Auto => DeleteSource::Auto,
            Deletes::History => DeleteSource::History,
            Deletes::None => DeleteSource::None,
        },
        since,
        since_params,
        max_concurrency: args.max_concurrency.max(1),
        rate: args.rate,
        load: args.tables.load_options()?,
    })
}

/// One bar per type on a terminal: windows done (of planned) and resources.
fn progress_bars() -> Option<SyncProgress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bars = MultiProgress::new();
    let by_type: Mutex<BTreeMap<String, ProgressBar>> = Mutex::new(BTreeMap::new());
    let style = ProgressStyle::with_template(
        "{prefix:>20} [{elapsed_precise}] {bar:30} {pos}/{len} windows {msg}",
    )
    .expect("valid template");
    Some(Arc::new(
        move |ty: &str, outcome: &TypeOutcome, windows: Option<u64>| {
            let mut by_type = by_type.lock().expect("bars lock");
            let bar = by_type.entry(ty.to_owned()).or_insert_with(|| {
                let bar = bars.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(ty.to_owned());
                bar
            });
            bar.set_length(windows.unwrap_or(outcome.windows).max(outcome.windows));
            bar.set_position(outcome.windows);
            bar.set_message(format!(
                "{} resources, up to {}",
                outcome.resources, outcome.up_to
            ));
        },
    ))
}

fn exit_for(error: &SyncError) -> ExitCode {
    eprintln!("fhirlake: {error}");
    ExitCode::from(2)
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    let http = args.connection.http(&args.server)?;
    let echo: Echo = Arc::new(|line: &str| eprintln!("fhirlake sync: {line}"));
    if let Some(table) = &args.refresh {
        return refresh(&args, table, &lake, &http, echo);
    }
    let plan = plan(&args)?;
    let report =
        match runtime()?.block_on(sync::run(&lake, &plan, &http, Some(echo), progress_bars())) {
            Ok(report) => report,
            Err(error) => return Ok(exit_for(&error)),
        };
    let quarantined: u64 = report.loads.iter().map(LoadReport::quarantined).sum();
    if args.json {
        let out = json!({
            "types": report.types,
            "loads": report.loads.iter().map(super::summary::json).collect::<Vec<_>>(),
            "warnings": report.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for t in &report.types {
            println!(
                "{:<24} {:>4} window(s) {:>6} page(s) {:>9} resources {:>6} deletions  up to {}",
                t.resource_type, t.windows, t.pages, t.resources, t.deletions, t.up_to
            );
        }
        for load in &report.loads {
            print!("{}", super::summary::text(load));
        }
        for warning in &report.warnings {
            println!("  warning: {warning}");
        }
    }
    Ok(if quarantined > 0 || !report.warnings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn refresh(
    args: &SyncArgs,
    table: &str,
    lake: &crate::lake::Lake,
    http: &crate::http::HttpClient,
    echo: Echo,
) -> Result<ExitCode> {
    let resource_type = crate::fhir::known_type_of_table(table)
        .map(str::to_owned)
        .or_else(|| crate::fhir::is_valid_resource_type(table).then(|| table.to_owned()))
        .with_context(|| {
            format!("--refresh {table:?}: not a resource type or its table (e.g. Patient)")
        })?;
    let select = match (&args.ids, args.older_than) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--ids {}", path.display()))?;
            RefreshSelect::Ids(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        }
        (None, Some(age)) => RefreshSelect::OlderThan(age),
        (None, None) => bail!("--refresh needs --ids FILE or --older-than DURATION"),
    };
    let plan = RefreshPlan {
        server: args.server.clone(),
        resource_type,
        select,
        concurrency: args.max_concurrency.max(1) * 2,
        rate: args.rate,
        load: args.tables.load_options()?,
    };
    let report = match runtime()?.block_on(sync::refresh(lake, &plan, http, Some(echo))) {
        Ok(report) => report,
        Err(error) => return Ok(exit_for(&error)),
    };
    if args.json {
        let out = json!({
            "reads": report.reads, "not_modified": report.not_modified,
            "changed": report.changed, "deleted": report.deleted,
            "load": report.load.as_ref().map(super::summary::json),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} read(s): {} not modified, {} changed, {} deleted",
            report.reads, report.not_modified, report.changed, report.deleted
        );
        if let Some(load) = &report.load {
            print!("{}", super::summary::text(load));
        }
    }
    Ok(ExitCode::SUCCESS)
}
