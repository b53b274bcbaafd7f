//! `fhirlake export`: flags → an [`ExportPlan`] and credentials; events to
//! stderr as they happen; a summary (or `--json`) at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use url::Url;

use super::server::ServerArgs;
use super::{LakeArgs, TableFlags, WormArgs, runtime};
use crate::ledger::Echo;
use crate::policy::Policy;
use crate::source::bulk::{
    self, ExportError, ExportPlan, KickoffMethod, PollPolicy, Resume, Scope, Since,
};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// FHIR server base URL, e.g. https://ehr.example.org/fhir
    #[arg(long)]
    server: Url,
    /// Export one Group's patients (/Group/ID/$export).
    #[arg(long, value_name = "ID", conflicts_with = "all_patients")]
    group: Option<String>,
    /// Export all patients (/Patient/$export). Without --group or this: system level (/$export).
    #[arg(long)]
    all_patients: bool,
    /// Resource types (_type), comma-separated or repeated.
    #[arg(long = "type", value_delimiter = ',', value_name = "TYPE")]
    types: Vec<String>,
    /// Only resources changed since this instant, or `auto`: the transactionTime of the
    /// last finished export of the same server, scope and parameters in this lake.
    #[arg(long, value_name = "INSTANT|auto")]
    since: Option<String>,
    /// Only resources changed up to this instant (_until).
    #[arg(long, value_name = "INSTANT")]
    until: Option<String>,
    /// Elements to include (_elements), comma-separated.
    #[arg(long, value_name = "LIST")]
    elements: Option<String>,
    /// A _typeFilter query, e.g. 'Observation?category=laboratory' (repeatable).
    #[arg(long = "type-filter", value_name = "QUERY")]
    type_filters: Vec<String>,
    /// Restrict to a patient reference, e.g. Patient/123 (repeatable; forces POST).
    #[arg(long = "patient", value_name = "REFERENCE")]
    patients: Vec<String>,
    /// includeAssociatedData code, e.g. LatestProvenanceResources (repeatable).
    #[arg(long = "include-associated-data", value_name = "CODE")]
    include_associated_data: Vec<String>,
    /// Let the server split the manifest into pages (allowPartialManifests).
    #[arg(long)]
    allow_partial_manifests: bool,
    /// organizeOutputBy, e.g. Patient.
    #[arg(long, value_name = "TYPE")]
    organize_output_by: Option<String>,
    /// _outputFormat (the server's default when omitted).
    #[arg(long, value_name = "MIME")]
    output_format: Option<String>,
    /// Kick-off method; auto = GET (POST when --patient), falling back on 405/400.
    #[arg(long, value_enum, default_value = "auto")]
    method: KickoffMethod,

    #[command(flatten)]
    connection: ServerArgs,

    /// Files downloaded at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Parent folder for the job's raw files (default: <lake>/_raw; for an s3:// lake
    /// ~/.cache/fhirlake/raw).
    #[arg(long, value_name = "DIR")]
    raw_dir: Option<PathBuf>,
    /// Delete the job's raw files after a successful load.
    #[arg(long)]
    no_keep_raw: bool,
    /// Poll interval when the server sends no Retry-After, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    poll_interval: u64,
    /// Require an unfinished job of the same request to resume (the default resumes one if found).
    #[arg(long, conflicts_with = "fresh")]
    resume: bool,
    /// Always kick off a new export, even if an unfinished one exists.
    #[arg(long)]
    fresh: bool,
    /// Do not DELETE the server's job when done or on Ctrl-C.
    #[arg(long)]
    keep_server_job: bool,

    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    #[command(flatten)]
    tables: TableFlags,
    /// Print the job as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `_elements` for minimum necessary: every root element the policy keeps
/// of each exported type, when it lists them for every one (a type without
/// a list must come whole, and bulk `_elements` subsets every type).
fn policy_elements(types: &[String], policy: &Policy) -> Result<Option<String>, String> {
    if types.is_empty() {
        let subsetted = policy.subsetted_types();
        if subsetted.is_empty() {
            return Ok(None);
        }
        return Err(format!(
            "not asking the server for _elements: the policy lists elements for {} but the \
             export names no --type, so every type comes whole (the load removes what it does \
             not keep; name the types with --type to ask for less)",
            subsetted.join(", ")
        ));
    }
    let listed: Vec<&String> = types.iter().filter(|t| policy.subsets(t)).collect();
    if listed.is_empty() {
        return Ok(None);
    }
    if listed.len() < types.len() {
        let whole: Vec<&str> = types
            .iter()
            .filter(|t| !policy.subsets(t))
            .map(String::as_str)
            .collect();
        return Err(format!(
            "not asking the server for _elements: the policy lists elements for {} but not \
             for {} (the load removes what it does not keep)",
            listed
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            whole.join(", ")
        ));
    }
    let mut names = Vec::new();
    for ty in types {
        let elements = policy.elements(ty).expect("listed above");
        names.extend(elements.names().map(|name| format!("{ty}.{name}")));
    }
    Ok(Some(names.join(",")))
}

fn params(args: &ExportArgs, elements: Option<String>) -> Vec<(String, String)> {
    let mut params = Vec::new();
    if let Some(format) = &args.output_format {
        params.push(("_outputFormat".into(), format.clone()));
    }
    if !args.types.is_empty() {
        params.push(("_type".into(), args.types.join(",")));
    }
    if let Some(until) = &args.until {
        params.push(("_until".into(), until.clone()));
    }
    if let Some(elements) = args.elements.clone().or(elements) {
        params.push(("_elements".into(), elements));
    }
    for filter in &args.type_filters {
        params.push(("_typeFilter".into(), filter.clone()));
    }
    for patient in &args.patients {
        params.push(("patient".into(), patient.clone()));
    }
    for code in &args.include_associated_data {
        params.push(("includeAssociatedData".into(), code.clone()));
    }
    if args.allow_partial_manifests {
        params.push(("allowPartialManifests".into(), "true".into()));
    }
    if let Some(by) = &args.organize_output_by {
        params.push(("organizeOutputBy".into(), by.clone()));
    }
    params
}

fn check_instant(flag: &str, text: &str) -> Result<()> {
    if crate::fhir::parse_instant_micros(text).is_none() {
        bail!("{flag} {text:?} is not a FHIR instant such as 2024-08-06T18:12:57Z");
    }
    Ok(())
}

/// Parent of the export's raw folders: `<lake>/_raw` for a local lake, a
/// local staging folder in the user's cache for a remote one.
fn default_raw_parent(lake: &crate::lake::Lake) -> PathBuf {
    if lake.root().scheme() == "file"
        && let Ok(path) = lake.root().to_file_path()
    {
        return path.join("_raw");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("fhirlake").join("raw")
}

/// Resolves when the user presses Ctrl-C (never, if the handler cannot be set).
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    if !args.no_keep_raw {
        super::warn_raw_beside_segregated(
            &lake,
            "export",
            "pass --no-keep-raw to delete them after the load",
        );
    }
    let scope = match (&args.group, args.all_patients) {
        (Some(id), _) => Scope::Group(id.clone()),
        (None, true) => Scope::Patient,
        (None, false) => Scope::System,
    };
    let since = match args.since.as_deref() {
        None => Since::None,
        Some("auto") => Since::Auto,
        Some(text) => {
            check_instant("--since", text)?;
            Since::At(text.to_owned())
        }
    };
    if let Some(until) = &args.until {
        check_instant("--until", until)?;
    }
    let load = args.tables.load_options()?;
    let elements = match (&args.elements, policy_elements(&args.types, &load.policy)) {
        (Some(_), _) => None,
        (None, Ok(elements)) => elements,
        (None, Err(note)) => {
            eprintln!("fhirlake export: {note}");
            None
        }
    };
    let plan = ExportPlan {
        server: args.server.clone(),
        scope,
        params: params(&args, elements),
        since,
        method: args.method,
        parallel: args.parallel.max(1),
        keep_raw: !args.no_keep_raw,
        raw_dir: args
            .raw_dir
            .clone()
            .unwrap_or_else(|| default_raw_parent(&lake)),
        poll: PollPolicy {
            default_wait: Duration::from_secs(args.poll_interval),
            max_wait: Duration::from_secs(args.connection.max_retry_after),
        },
        keep_server_job: args.keep_server_job,
        resume: if args.resume {
            Resume::Require
        } else if args.fresh {
            Resume::Fresh
        } else {
            Resume::Auto
        },
        load,
    };
    let http = args.connection.http(&args.server)?;
    let echo: Echo = Arc::new(|line: &str| eprintln!("fhirlake export: {line}"));
    let result = runtime()?.block_on(bulk::run(&lake, plan, &http, Some(echo), ctrl_c()));
    let report = match result {
        Ok(report) => report,
        Err(error @ ExportError::Cancelled { .. }) => {
            eprintln!("fhirlake: {error}");
            return Ok(ExitCode::from(130));
        }
        Err(error) => return Err(error.into()),
    };
    let quarantined = report
        .load
        .as_ref()
        .map_or(0, |l| l.manifest.totals.quarantined);
    if args.json {
        let out = json!({
            "job": report.job,
            "resumed": report.resumed,
            "load": report.load.as_ref().map(super::summary::json),
            "warnings": report.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let job = &report.job;
        println!(
            "export {}{}: transactionTime {}",
            job.job_id,
            if report.resumed { " (resumed)" } else { "" },
            job.transaction_time.as_deref().unwrap_or("-")
        );
        let bytes: u64 = job.files.iter().filter_map(|f| f.bytes).sum();
        println!(
            "  {} file(s), {} bytes; raw copies in {}",
            job.files.len(),
            bytes,
            job.raw_dir
        );
        if let Some(load) = &report.load {
            print!("{}", super::summary::text(load));
        }
        // The load's own warnings are in its summary already.
        let printed = report.load.as_ref().map_or(&[][..], |l| &l.warnings[..]);
        for warning in report.warnings.iter().filter(|w| !printed.contains(w)) {
            println!("  warning: {warning}");
        }
    }
    Ok(if quarantined > 0 || !report.warnings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
