//! `fhirlake policy check`: what a policy would do to each resource of some
//! NDJSON files, and which rule decided, without loading anything.
//! `fhirlake policy apply`: the lake's rows re-evaluated under a policy
//! ([`crate::source::reapply`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bumpalo::Bump;
use clap::{Args, Subcommand};

use crate::policy::{Action, PolicySource, RuleSet, tree};
use crate::view::Json;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show, per resource, what the policy would do and which rule matched (nothing is loaded).
    Check(CheckArgs),
    /// Re-evaluate the rows a lake holds under a (changed) policy: move what it now segregates, redacts or denies out of the main tables, and back what it allows.
    Apply(Box<ApplyArgs>),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    lake: super::LakeArgs,
    #[command(flatten)]
    worm: super::WormArgs,
    /// The policy now in force: a TOML file, or `part2` / `research` (shipped).
    #[arg(long, value_name = "NAME_OR_FILE", env = "FHIRLAKE_POLICY")]
    policy: String,
    /// Directory of ViewDefinitions the lake was loaded with (default: the shipped ones).
    #[arg(long, value_name = "DIR")]
    views: Option<PathBuf>,
    /// The lake was loaded without view columns.
    #[arg(long, conflicts_with = "views")]
    no_views: bool,
    #[command(flatten)]
    codes: super::CodeCheckFlags,
    /// Show what would move, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the job summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A TOML policy file, or `part2` / `research` (shipped).
    #[arg(long, value_name = "NAME_OR_FILE")]
    policy: String,
    /// NDJSON files (.ndjson, .ndjson.gz) to check.
    #[arg(long = "input", value_name = "FILE", required = true)]
    inputs: Vec<PathBuf>,
    /// Also list resources no rule matched (kept as they are).
    #[arg(long)]
    all: bool,
    /// One JSON object per resource on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// The lake whose Consents a policy with `[consent] table` reads (read only).
    #[arg(long, env = "FHIRLAKE_LAKE")]
    lake: Option<String>,
}

pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Check(args) => check(args),
        PolicyCommand::Apply(args) => apply(args),
    }
}

fn apply(args: Box<ApplyArgs>) -> Result<ExitCode> {
    // A policy with a mistake stops before the lake is touched.
    let policy = crate::policy::Policy::load(&args.policy)?;
    let options = crate::load::LoadOptions {
        mode: crate::lake::LoadMode::Current,
        views: std::sync::Arc::new(super::views_for(args.no_views, args.views.as_deref())?),
        policy: std::sync::Arc::new(policy.clone()),
        code_checks: args.codes.compile()?,
        validation: args.codes.validation()?,
    };
    let lake = if args.dry_run {
        args.lake.open_reading_all()?
    } else {
        args.lake.open_writing(&args.worm)?
    };
    let display = super::progress::Display::for_stderr();
    let applied = super::runtime()?.block_on(crate::source::reapply::apply(
        &lake,
        &policy,
        &args.policy,
        &options,
        args.dry_run,
        display.sink(),
    ))?;
    display.finish();
    let plan = &applied.plan;
    if args.json {
        let summary = serde_json::json!({
            "plan": plan,
            "resumed": applied.resumed,
            "job": applied.report.as_ref().map(super::summary::json),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let m = &plan.moves;
        let verb = if args.dry_run { "would move" } else { "moves" };
        println!(
            "policy apply {}{}: {} rows read; {verb}: {} changed, {} to _segregated, {} back from _segregated, {} removed",
            plan.plan_id,
            if applied.resumed {
                " (an unfinished plan, finished now)"
            } else {
                ""
            },
            plan.rows_scanned,
            m.changed,
            m.segregated,
            m.restored,
            m.removed
        );
        if plan.raw_omitted > 0 {
            println!(
                "{} row(s) stored without their source resource (raw = false) cannot be \
                 decided again and stay as they are; reload their source to re-evaluate them",
                plan.raw_omitted
            );
        }
        match &applied.report {
            Some(report) => print!("{}", super::summary::text(report)),
            None if args.dry_run => println!("dry run: nothing was changed"),
            None => println!("nothing to change: the lake already follows this policy"),
        }
    }
    Ok(match &applied.report {
        Some(report) if report.quarantined() > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// `rules` matching also by the compartments of the Encounters they take
/// in the inputs (and in `--lake`'s `_segregated/encounter`).
fn with_compartments(rules: RuleSet, args: &CheckArgs) -> Result<RuleSet> {
    let mut survey = crate::policy::compartment::Survey::default();
    if let Some(uri) = &args.lake {
        let lake = crate::lake::Lake::open(uri, Default::default())?;
        super::runtime()?.block_on(crate::load::survey_lake(&lake, &rules, &mut survey))?;
    }
    let mut inputs = Vec::new();
    for path in &args.inputs {
        let input = crate::load::Input::local(path.clone(), crate::load::SourceKind::Files)
            .with_context(|| format!("{}: cannot read it", path.display()))?;
        inputs.push(input);
    }
    crate::load::survey_inputs(inputs.iter(), &rules, &mut survey)?;
    Ok(rules.with_compartments(std::sync::Arc::new(survey.finish())))
}

/// Counts per outcome, for the closing summary.
#[derive(Default)]
struct Tally {
    resources: u64,
    unreadable: u64,
    by_outcome: std::collections::BTreeMap<&'static str, u64>,
    by_rule: std::collections::BTreeMap<String, u64>,
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let mut source = PolicySource::load(&args.policy)?;
    if let Some(table) = source.lake_consents.clone() {
        let Some(uri) = &args.lake else {
            anyhow::bail!(
                "policy {}: it reads Consents from the lake's `{table}` table; give --lake",
                source.origin
            );
        };
        let lake = crate::lake::Lake::open(uri, Default::default())?;
        let consents = super::runtime()?.block_on(crate::lake::current_resources(&lake, &table))?;
        source = source.with_consents(
            &format!("lake table {table}"),
            &(consents.join("\n") + "\n"),
        )?;
    }
    let mut rules = RuleSet::compile(&source).map_err(|message| crate::policy::PolicyError {
        origin: source.origin.clone(),
        message,
    })?;
    if rules.has_compartment_rules() {
        rules = with_compartments(rules, &args)?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        writeln!(
            out,
            "policy {} ({}), sha256 {}",
            source.name(),
            source.origin,
            source.sha256
        )?;
    }
    let mut tally = Tally::default();
    let mut arena = Bump::new();
    for path in &args.inputs {
        let reader = open(path)?;
        for (n, line) in reader.lines().enumerate() {
            let line = line
                .with_context(|| format!("{}: line {}: cannot read it", path.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            arena.reset();
            let at = format!("{}:{}", path.display(), n + 1);
            let json = match Json::parse(&line, &arena) {
                Ok(json) => json,
                Err(e) => {
                    tally.unreadable += 1;
                    report_unreadable(&mut out, args.json, &at, &e.to_string())?;
                    continue;
                }
            };
            let kind = tree::member(&json, "resourceType").and_then(tree::string);
            let id = tree::member(&json, "id")
                .and_then(tree::string)
                .unwrap_or("");
            let Some(kind) = kind else {
                tally.unreadable += 1;
                report_unreadable(&mut out, args.json, &at, "no string \"resourceType\"")?;
                continue;
            };
            let verdict = rules.evaluate(&json, kind);
            let outcome = verdict.outcome();
            tally.resources += 1;
            *tally.by_outcome.entry(outcome.as_str()).or_default() += 1;
            for m in &verdict.matched {
                *tally.by_rule.entry(m.rule.to_string()).or_default() += 1;
            }
            if verdict.matched.is_empty() && !args.all {
                continue;
            }
            if args.json {
                let rules: Vec<_> = verdict
                    .matched
                    .iter()
                    .map(|m| serde_json::json!({"rule": &*m.rule, "action": m.action.as_str(), "why": m.why}))
                    .collect();
                let record = serde_json::json!({
                    "at": at, "resourceType": kind, "id": id,
                    "outcome": outcome.as_str(), "rules": rules,
                });
                writeln!(out, "{record}")?;
            } else {
                writeln!(out, "{at}  {kind}/{id}  {}", describe(outcome))?;
                for m in &verdict.matched {
                    writeln!(out, "    {} ({}): {}", m.rule, m.action.as_str(), m.why)?;
                }
            }
        }
    }
    if !args.json {
        let outcomes: Vec<String> = tally
            .by_outcome
            .iter()
            .map(|(o, n)| format!("{n} {}", describe_plain(o)))
            .collect();
        writeln!(
            out,
            "{} resources: {}",
            tally.resources,
            outcomes.join(", ")
        )?;
        for (rule, n) in &tally.by_rule {
            writeln!(out, "  rule {rule}: {n}")?;
        }
        if tally.unreadable > 0 {
            writeln!(
                out,
                "{} line(s) are not resources (a load quarantines them)",
                tally.unreadable
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(outcome: Action) -> &'static str {
    match outcome {
        Action::Allow => "kept",
        Action::Label => "kept, labelled",
        Action::Redact => "kept, redacted",
        Action::Segregate => "SEGREGATED",
        Action::Deny => "DENIED (not stored)",
    }
}

fn describe_plain(outcome: &str) -> &'static str {
    match outcome {
        "allow" => "kept",
        "label" => "labelled",
        "redact" => "redacted",
        "segregate" => "segregated",
        _ => "denied",
    }
}

fn report_unreadable(out: &mut impl Write, json: bool, at: &str, why: &str) -> Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"at": at, "outcome": "quarantine", "why": why})
        )?;
    } else {
        writeln!(out, "{at}  not a resource: {why}")?;
    }
    Ok(())
}

pub(super) fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open it; give an NDJSON file", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}
