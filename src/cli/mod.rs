//! Command line: parse flags, resolve them into plans, run, print, exit.
//! Nothing here loads data; it only wires flags to the library.

mod audit;
mod bench;
mod curation;
mod export;
mod hl7v2;
mod policy;
mod progress;
mod server;
mod status;
mod summary;
mod sync;
mod validate;
mod view;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::lake::{Lake, LoadMode, SegregatedAccess};
use crate::load::Job;
use crate::source::discover;

const EXIT_CODES: &str = "\
Exit codes:
  0  finished, every line loaded or already present
  1  finished, but some lines were quarantined (see <lake>/_quarantine)
  2  fatal error: nothing after the failing step was committed; fix and re-run";

const EXPORT_EXIT_CODES: &str = "\
Exit codes:
  0    finished: downloaded, loaded, the server's job deleted
  1    finished with warnings: quarantined lines, server error files, or a count mismatch
  2    fatal: the job is saved in <lake>/_fhirlake/jobs; re-run the same command to resume
  130  cancelled (Ctrl-C); the server's job was deleted unless --keep-server-job";

const VERIFY_EXIT_CODES: &str = "\
Exit codes:
  0  clean: every event links, every anchor matches, every manifest and raw file checks out
  1  problems found (each printed with the object it concerns)
  2  the lake could not be read, or holds nothing to verify (a mistyped --lake)";

#[derive(Debug, Parser)]
#[command(name = "fhirlake", version, about = "Load FHIR data into Delta Lake tables, accounting for every line.", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load Bulk Data NDJSON files or directories into the lake.
    #[command(after_help = EXIT_CODES)]
    Load(LoadArgs),
    /// Run a FHIR Bulk Data $export against a server and load the result (resumable).
    #[command(after_help = EXPORT_EXIT_CODES)]
    Export(Box<export::ExportArgs>),
    /// Pull what changed on a FHIR server since the last sync (REST search by _lastUpdated).
    Sync(Box<sync::SyncArgs>),
    /// HL7 v2 messages: convert one to FHIR, load files, or listen on MLLP.
    #[command(subcommand)]
    Hl7v2(hl7v2::Hl7v2Command),
    /// SQL-on-FHIR ViewDefinitions: run one over resources to see its rows.
    #[command(subcommand)]
    View(view::ViewCommand),
    /// Compact small files of every table (or --table) with Delta OPTIMIZE.
    Optimize(OptimizeArgs),
    /// Delete data files no longer referenced by recent table versions (Delta VACUUM).
    Vacuum(VacuumArgs),
    /// Check the lake's history: the audit chain and its anchors, manifests against the Delta logs, kept raw files.
    #[command(after_help = VERIFY_EXIT_CODES)]
    Verify(audit::VerifyArgs),
    /// List the audit trail's events (who loaded what, when, under which policy).
    Audit(audit::AuditArgs),
    /// What the lake holds and how it got there: jobs, tables, quarantine, whether the audit trail verifies (--html for a page).
    #[command(after_help = status::STATUS_EXIT_CODES)]
    Status(status::StatusArgs),
    /// Policies: what one would do to some resources, and why.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The curation queue: codes the checks flagged, with counts and example resources.
    #[command(subcommand)]
    Curation(curation::CurationCommand),
    /// Check resources against US Core profiles (cardinality, fixed and pattern values, types, references, required bindings).
    #[command(after_help = validate::VALIDATE_EXIT_CODES)]
    Validate(validate::ValidateArgs),
    /// Generate a synthetic Bulk dataset, load it into a fresh lake, report throughput.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Lake root: a local path, file:// URI or s3://bucket/prefix.
    #[arg(long, env = "FHIRLAKE_LAKE")]
    pub lake: String,
    /// Extra object-store option (repeatable), e.g. --storage-option AWS_REGION=us-east-1.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub storage_options: Vec<(String, String)>,
    /// A second lake for what a policy segregates (`_segregated/<table>`), e.g. s3://restricted-bucket/lake; recorded by the first job, then needed by every job that writes.
    #[arg(long, value_name = "URI", env = "FHIRLAKE_SEGREGATED_LAKE")]
    pub segregated_lake: Option<String>,
    /// KEY=VALUE lines (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…, AWS_ENDPOINT_URL=…) the segregated lake is opened with, over the lake's own options: its own credentials, never on the command line.
    #[arg(
        long,
        value_name = "FILE",
        env = "FHIRLAKE_SEGREGATED_CREDENTIALS",
        requires = "segregated_lake"
    )]
    pub segregated_credentials: Option<PathBuf>,
}

impl LakeArgs {
    /// Opens the lake to read it: a segregated lake not given is not seen.
    pub fn open(&self) -> Result<Lake> {
        self.open_for(SegregatedAccess::Reading)
    }

    /// Opens the lake for a command that must see every table (a policy
    /// dry run) without writing.
    pub fn open_reading_all(&self) -> Result<Lake> {
        self.open_for(SegregatedAccess::ReadingAll)
    }

    fn open_for(&self, access: SegregatedAccess) -> Result<Lake> {
        let options: HashMap<String, String> = self.storage_options.iter().cloned().collect();
        let lake = Lake::open(&self.lake, options.clone())?;
        let segregated = match &self.segregated_lake {
            Some(uri) => {
                let mut options = options;
                if let Some(path) = &self.segregated_credentials {
                    options.extend(read_credentials(path)?);
                }
                Some(Lake::open(uri, options)?)
            }
            None => None,
        };
        if segregated.is_none() && access == SegregatedAccess::Reading {
            return Ok(lake);
        }
        Ok(runtime()?.block_on(lake.with_segregated(segregated, access))?)
    }

    /// Opens the lake for a job that writes records: with WORM retention
    /// when `worm` asks for it or the lake's setting says so (checked
    /// against the bucket's Object Lock before anything is written), and
    /// with the segregated lake it recorded.
    pub fn open_writing(&self, worm: &WormArgs) -> Result<Lake> {
        let lake = self.open_for(SegregatedAccess::Writing)?;
        let (lake, retention) = runtime()?.block_on(lake.with_worm(worm.requested()))?;
        if let Some(r) = retention {
            eprintln!(
                "worm: audit events and manifests are written with S3 Object Lock ({:?}, {} days)",
                r.mode, r.days
            );
        }
        Ok(lake)
    }
}

/// WORM retention of a job's records (S3 lakes in a bucket with Object Lock).
#[derive(Debug, Args)]
pub struct WormArgs {
    /// Write audit events and manifests with S3 Object Lock retention for DAYS (default 2190, about six years, with --worm-mode); kept as the lake's setting for every later job.
    #[arg(long, value_name = "DAYS", env = "FHIRLAKE_WORM_RETENTION", value_parser = clap::value_parser!(u32).range(1..))]
    pub worm_retention: Option<u32>,
    /// Object Lock mode: governance (users with the bypass permission can still remove it) or compliance (nobody can).
    #[arg(long, value_enum, value_name = "MODE", env = "FHIRLAKE_WORM_MODE")]
    pub worm_mode: Option<crate::lake::LockMode>,
}

impl WormArgs {
    fn requested(&self) -> Option<crate::lake::Retention> {
        if self.worm_retention.is_none() && self.worm_mode.is_none() {
            return None;
        }
        Some(crate::lake::Retention {
            mode: self.worm_mode.unwrap_or(crate::lake::LockMode::Governance),
            days: self
                .worm_retention
                .unwrap_or(crate::lake::DEFAULT_RETENTION_DAYS),
        })
    }
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// NDJSON files (.ndjson, .ndjson.gz) or directories of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    /// Keep every version, keyed on (id, meta.lastUpdated), instead of the newest per id.
    #[arg(long)]
    history: bool,
    /// Stand-in for resources without meta.lastUpdated (RFC 3339 instant). Default: the
    /// export's transactionTime from a log.ndjson/manifest.json beside the files, else
    /// the file's modification time. The manifest records which was used.
    #[arg(long, value_name = "INSTANT")]
    as_of: Option<String>,
    /// Load files even if the same bytes (SHA-256) were already loaded into this lake.
    #[arg(long)]
    force: bool,
    /// Print the job summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Directory of ViewDefinitions added to (or, per resource type, replacing) the defaults.
    #[arg(long, value_name = "DIR")]
    views: Option<PathBuf>,
    /// Load the standard columns only (no view columns).
    #[arg(long, conflicts_with = "views")]
    no_views: bool,
    /// Policy every resource passes through: a TOML file, or `part2` / `research` (shipped).
    #[arg(long, value_name = "NAME_OR_FILE", env = "FHIRLAKE_POLICY")]
    policy: Option<String>,
    #[command(flatten)]
    codes: CodeCheckFlags,
    /// Bytes per decode chunk (tuning; results never depend on it).
    #[arg(long, default_value_t = 4 << 20, hide = true)]
    chunk_bytes: usize,
}

#[derive(Debug, Args)]
struct OptimizeArgs {
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    /// Only this table (default: every table in the lake).
    #[arg(long)]
    table: Option<String>,
    /// Target file size in bytes (default: Delta's, 100 MB).
    #[arg(long)]
    target_size: Option<u64>,
    /// Rewrite files whose deletion vectors mark at least this share of
    /// their rows (superseded or deleted versions); 0 rewrites every file
    /// that has one.
    #[arg(long, default_value_t = 0.2, value_name = "SHARE", value_parser = share)]
    purge_share: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VacuumArgs {
    #[command(flatten)]
    lake: LakeArgs,
    #[command(flatten)]
    worm: WormArgs,
    /// Keep files needed by any version of the last HOURS (time travel window).
    #[arg(long, value_name = "HOURS")]
    retain: u64,
    /// Only this table (default: every table in the lake).
    #[arg(long)]
    table: Option<String>,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow --retain under the table's minimum (7 days by default). Readers of
    /// older versions, and loads running right now, may then fail.
    #[arg(long)]
    allow_short_retention: bool,
    #[arg(long)]
    json: bool,
}

/// Raw source copies stay in the main lake (the ledger's evidence): with a
/// segregated lake, they still hold what the policy segregates. Says so.
fn warn_raw_beside_segregated(lake: &Lake, command: &str, remedy: &str) {
    if let Some(segregated) = lake.segregated_lake() {
        eprintln!(
            "{command}: warning: raw copies of the input are kept in the main lake's _raw/ and hold \
             what the policy segregates into {}; {remedy}",
            segregated.root()
        );
    }
}

/// A credentials file's options: `KEY=VALUE` lines; blank lines and `#`
/// comments skipped. Errors name the file and line, never a value.
fn read_credentials(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--segregated-credentials {}: cannot read it",
            path.display()
        )
    })?;
    let mut options = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            bail!(
                "--segregated-credentials {} line {}: expected KEY=VALUE (e.g. AWS_ACCESS_KEY_ID=…)",
                path.display(),
                n + 1
            );
        };
        options.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(options)
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn parse_as_of(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| {
            format!("--as-of {text:?} is not an RFC 3339 instant such as 2024-08-06T18:12:57Z")
        })
}

/// The error and its causes, skipping a cause whose text the message already
/// holds (many errors embed their source in their own message).
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

/// How a source's rows are kept: the flags `export` and `sync` share.
#[derive(Debug, clap::Args)]
pub struct TableFlags {
    /// Keep every version, keyed on (id, meta.lastUpdated); deletions become tombstones.
    #[arg(long)]
    pub history: bool,
    /// Policy every resource passes through: a TOML file, or `part2` / `research` (shipped).
    #[arg(long, value_name = "NAME_OR_FILE", env = "FHIRLAKE_POLICY")]
    pub policy: Option<String>,
    /// Directory of ViewDefinitions added to (or replacing) the defaults.
    #[arg(long, value_name = "DIR")]
    pub views: Option<std::path::PathBuf>,
    #[arg(long, conflicts_with = "views")]
    pub no_views: bool,
    #[command(flatten)]
    pub codes: CodeCheckFlags,
}

/// The code checks' and profile validation's flags, shared by every command that loads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CodeCheckFlags {
    /// Do not check codes (check digits, systems, units, value sets); rows get a null `_code_issues`.
    #[arg(long)]
    pub no_code_checks: bool,
    /// ValueSets (FHIR JSON: a directory, a .json file or a .tgz package) to check bindings against (repeatable).
    #[arg(
        long = "valuesets",
        value_name = "DIR",
        conflicts_with = "no_code_checks"
    )]
    pub value_sets: Vec<std::path::PathBuf>,
    /// ConceptMaps (FHIR JSON) that map local codes to standard ones; the mapped coding is added (repeatable).
    #[arg(
        long = "concept-maps",
        value_name = "DIR",
        conflicts_with = "no_code_checks"
    )]
    pub concept_maps: Vec<std::path::PathBuf>,
    /// ELEMENT=VALUESET_URL: the codings of ELEMENT (e.g. Observation.code) must be in that loaded value set (repeatable).
    #[arg(
        long = "binding",
        value_name = "ELEMENT=URL",
        conflicts_with = "no_code_checks"
    )]
    pub bindings: Vec<String>,
    /// A member also checked as a coded element, besides code, category, valueCodeableConcept, medicationCodeableConcept, reasonCode, vaccineCode, type and class (repeatable; e.g. bodySite, interpretation).
    #[arg(
        long = "code-element",
        value_name = "NAME",
        conflicts_with = "no_code_checks"
    )]
    pub code_elements: Vec<String>,
    /// Validate every resource against its profile: `us-core` (US Core 6.1.0), `us-core@3.1.1`, or a package .tgz / directory; rows get `_valid`, findings go to `_validation`.
    #[arg(long, value_name = "PACKAGE")]
    pub validate: Option<String>,
    /// What happens to a resource that breaks its profile: flagged (`_valid` false), quarantined, or segregated.
    #[arg(long, value_enum, default_value = "flag", requires = "validate")]
    pub on_invalid: crate::validation::OnInvalid,
    /// A FHIR terminology server (base URL) asked with `$validate-code` whether codes exist; answers are cached in `_tx_cache`. Down, it never blocks the load: its codes count as unverified.
    #[arg(long, value_name = "URL", conflicts_with = "no_code_checks")]
    pub tx: Option<url::Url>,
    /// A code system the terminology server is asked about (repeatable; default: LOINC, SNOMED CT, RxNorm, ICD-10-CM, CVX).
    #[arg(long = "tx-system", value_name = "URI", requires = "tx")]
    pub tx_systems: Vec<String>,
    /// Codes per batch request to the terminology server.
    #[arg(long, default_value_t = 100, value_name = "N", requires = "tx")]
    pub tx_batch: usize,
    /// Requests per second to the terminology server at most (0: no limit).
    #[arg(long, default_value_t = 10.0, value_name = "N", requires = "tx")]
    pub tx_rate: f64,
    /// Days a cached answer is trusted before the code is asked again.
    #[arg(long, default_value_t = 30, value_name = "DAYS", requires = "tx")]
    pub tx_max_age: u64,
    /// File holding a bearer token for the terminology server.
    #[arg(long, value_name = "PATH", requires = "tx")]
    pub tx_token_file: Option<std::path::PathBuf>,
}

impl CodeCheckFlags {
    /// The job's code checks, compiled (before the lake is touched); `None` with `--no-code-checks`.
    pub fn compile(&self) -> Result<Option<std::sync::Arc<crate::code_checks::CodeChecks>>> {
        use crate::code_checks::{CodeCheckOptions, CodeChecks};
        if self.no_code_checks {
            return Ok(None);
        }
        if self.value_sets.is_empty()
            && self.concept_maps.is_empty()
            && self.bindings.is_empty()
            && self.code_elements.is_empty()
            && self.tx.is_none()
        {
            return Ok(Some(CodeChecks::standard()));
        }
        let server = self.tx.clone().map(|url| {
            let mut tx = crate::code_checks::tx::TxOptions::new(url);
            tx.systems = self.tx_systems.clone();
            tx.batch = self.tx_batch;
            tx.rate = self.tx_rate;
            tx.max_age = std::time::Duration::from_secs(self.tx_max_age.saturating_mul(86_400));
            tx.token_file = self.tx_token_file.clone();
            tx
        });
        let options = CodeCheckOptions {
            value_sets: self.value_sets.clone(),
            concept_maps: self.concept_maps.clone(),
            bindings: self.bindings.clone(),
            server,
            extra_members: self.code_elements.clone(),
        };
        Ok(Some(std::sync::Arc::new(CodeChecks::load(&options)?)))
    }

    /// The job's profile validation, compiled (before the lake is touched); `None` without `--validate`.
    pub fn validation(&self) -> Result<Option<std::sync::Arc<crate::validation::Validation>>> {
        self.validate
            .as_deref()
            .map(|spec| crate::validation::Validation::named(spec, self.on_invalid))
            .transpose()
            .with_context(|| format!("--validate {}", self.validate.as_deref().unwrap_or("")))
    }
}

impl TableFlags {
    pub fn load_options(&self) -> Result<crate::load::LoadOptions> {
        Ok(crate::load::LoadOptions {
            mode: if self.history {
                crate::lake::LoadMode::History
            } else {
                crate::lake::LoadMode::Current
            },
            views: std::sync::Arc::new(views_for(self.no_views, self.views.as_deref())?),
            policy: std::sync::Arc::new(policy_for(self.policy.as_deref())?),
            code_checks: self.codes.compile()?,
            validation: self.codes.validation()?,
        })
    }
}

/// `--policy`, compiled; no policy without it.
pub fn policy_for(spec: Option<&str>) -> Result<crate::policy::Policy> {
    Ok(match spec {
        Some(spec) => crate::policy::Policy::load(spec)?,
        None => crate::policy::Policy::none(),
    })
}

/// The defaults plus `--views DIR`, or nothing with `--no-views`.
pub fn views_for(no_views: bool, dir: Option<&std::path::Path>) -> Result<crate::view::ViewSet> {
    if no_views {
        return Ok(crate::view::ViewSet::none());
    }
    let mut views = crate::view::ViewSet::defaults();
    if let Some(dir) = dir
        && views.add_dir(dir)? == 0
    {
        // Likely the wrong directory; the load still runs, with the defaults.
        eprintln!(
            "warning: --views {} holds no *.json ViewDefinitions; only the default views apply",
            dir.display()
        );
    }
    Ok(views)
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Load(args) => run_load(args),
        Command::Export(args) => export::run(*args),
        Command::Sync(args) => sync::run(*args),
        Command::Hl7v2(command) => hl7v2::run(command),
        Command::View(command) => view::run(command).map(|()| ExitCode::SUCCESS),
        Command::Optimize(args) => run_optimize(args),
        Command::Vacuum(args) => run_vacuum(args),
        Command::Verify(args) => audit::run_verify(args),
        Command::Audit(args) => audit::run_audit(args),
        Command::Status(args) => status::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Curation(command) => curation::run(command),
        Command::Validate(args) => validate::run(args),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fhirlake: error: {}", error_chain(&error));
            ExitCode::from(2)
        }
    }
}

fn run_load(args: LoadArgs) -> Result<ExitCode> {
    // A policy with a mistake stops the job before the lake is touched.
    let policy = policy_for(args.policy.as_deref())?;
    let code_checks = args.codes.compile()?;
    let validation = args.codes.validation()?;
    let lake = args.lake.open_writing(&args.worm)?;
    let as_of = args.as_of.as_deref().map(parse_as_of).transpose()?;
    if args.inputs.is_empty() {
        bail!("no inputs given");
    }
    let display = progress::Display::for_stderr();
    let runtime = runtime()?;
    let inputs = runtime.block_on(discover(&args.inputs, lake.storage_options()))?;
    let job = Job::new(&lake)
        .with_inputs(inputs)
        .with_mode(if args.history {
            LoadMode::History
        } else {
            LoadMode::Current
        })
        .with_as_of(as_of)
        .with_force(args.force)
        .with_chunk_bytes(args.chunk_bytes)
        .with_views(views_for(args.no_views, args.views.as_deref())?)
        .with_policy(policy)
        .with_code_checks(code_checks)
        .with_validation(validation)
        .with_progress(display.sink());
    let report = runtime.block_on(job.into_future())?;
    display.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary::json(&report))?);
    } else {
        print!("{}", summary::text(&report));
    }
    Ok(if report.quarantined() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn tables_to_maintain(lake: &Lake, only: Option<&str>) -> Result<Vec<String>> {
    Ok(match only {
        Some(table) => vec![table.to_owned()],
        None => crate::lake::list_tables(lake).await?,
    })
}

/// A share between 0 and 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (e.g. 0.2)"
        )),
    }
}

fn run_optimize(args: OptimizeArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    let reports = runtime()?.block_on(async {
        lake.ensure_put_if_absent().await?;
        let audit = audit::MaintenanceAudit::new(&lake)?;
        let mut reports = Vec::new();
        for table in tables_to_maintain(&lake, args.table.as_deref()).await? {
            let report =
                crate::lake::optimize(&lake, &table, args.target_size, args.purge_share).await?;
            audit.optimized(&report).await?;
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!(
                "{:<28} {:>3} files purged of {} deleted rows, {:>5} files compacted into {:>3}{}  version {} -> {}",
                r.table,
                r.purged.files_rewritten,
                r.purged.rows_dropped,
                r.files_removed,
                r.files_added,
                r.index_runs.map_or(String::new(), |(a, b)| format!(
                    ", key index {a} -> {b} runs"
                )),
                r.version_before.map_or("-".into(), |v| v.to_string()),
                r.version_after.map_or("-".into(), |v| v.to_string())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_vacuum(args: VacuumArgs) -> Result<ExitCode> {
    let lake = args.lake.open_writing(&args.worm)?;
    let reports = runtime()?.block_on(async {
        lake.ensure_put_if_absent().await?;
        let audit = audit::MaintenanceAudit::new(&lake)?;
        let mut reports = Vec::new();
        for table in tables_to_maintain(&lake, args.table.as_deref()).await? {
            let report = crate::lake::vacuum(
                &lake,
                &table,
                args.retain,
                args.dry_run,
                args.allow_short_retention,
            )
            .await?;
            audit.vacuumed(&report, args.retain).await?;
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            println!(
                "{:<28} {verb} {} file(s), {} key-index object(s)",
                r.table, r.files_deleted, r.index_objects_deleted
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
