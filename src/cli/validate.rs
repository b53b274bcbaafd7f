//! `fhirlake validate`: resources checked against US Core profiles, each
//! finding with the file and line, the resource, the profile element and
//! the path in the resource.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use crate::validation::{Profiles, Verdict};

pub const VALIDATE_EXIT_CODES: &str = "\
Exit codes:
  0  every resource conforms to the profiles it was checked against
  1  some resources do not (each printed with its findings), or some lines are not JSON
  2  an input or the package could not be read";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// NDJSON files (`.ndjson`, `.ndjson.gz`: one resource per line) or JSON
    /// files (`.json`: one resource or Bundle per file), repeatable.
    #[arg(long = "input", value_name = "FILE", required = true)]
    inputs: Vec<PathBuf>,
    /// `us-core` (US Core 6.1.0, built in, the default), `us-core@3.1.1`
    /// (built in), or an IG package `.tgz` (or a directory of
    /// StructureDefinitions and ValueSets).
    #[arg(long, value_name = "PACKAGE", default_value = "us-core")]
    package: String,
    /// One JSON object per resource on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also list conforming resources, and resources no profile applies to.
    #[arg(long)]
    all: bool,
}

#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    no_profile: usize,
    unreadable: usize,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let profiles =
        Profiles::named(&args.package).with_context(|| format!("--package {}", args.package))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut tally = Tally::default();
    for path in &args.inputs {
        for_each_resource(path, &mut |at, parsed| {
            match parsed {
                Ok(resource) => {
                    let verdict = profiles.validate_value(&resource);
                    report(&mut out, &args, &at, &resource, &verdict, &mut tally)?;
                }
                Err(why) => {
                    tally.unreadable += 1;
                    if args.json {
                        writeln!(out, "{}", json!({"at": at, "valid": null, "error": why}))?;
                    } else {
                        writeln!(out, "{at}  not JSON: {why}")?;
                    }
                }
            }
            Ok(())
        })?;
    }
    if !args.json {
        writeln!(
            out,
            "{} resources against {} ({} profiles): {} conform, {} do not, {} met no profile{}",
            tally.valid + tally.invalid + tally.no_profile,
            profiles.package,
            profiles.len(),
            tally.valid,
            tally.invalid,
            tally.no_profile,
            if tally.unreadable > 0 {
                format!("; {} line(s) not JSON", tally.unreadable)
            } else {
                String::new()
            }
        )?;
        let unchecked = profiles.unchecked_bindings().len();
        let invariants = profiles.unsupported_invariants();
        let mut keys: Vec<&str> = invariants.iter().map(|u| u.key.as_str()).collect();
        keys.dedup();
        writeln!(
            out,
            "not checked: slices (but type slices), {unchecked} required bindings to value sets the package does not enumerate, and the invariants ele-1, ext-1 (every element) and {} (FHIRPath fhirlake does not evaluate)",
            keys.join(", ")
        )?;
    }
    let clean = tally.invalid == 0 && tally.unreadable == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report(
    out: &mut impl Write,
    args: &ValidateArgs,
    at: &str,
    resource: &Value,
    verdict: &Verdict,
    tally: &mut Tally,
) -> Result<()> {
    let kind = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
    let valid = verdict.is_valid();
    match (verdict.profiles.is_empty(), valid) {
        (true, _) => tally.no_profile += 1,
        (false, true) => tally.valid += 1,
        (false, false) => tally.invalid += 1,
    }
    if valid && !args.all {
        return Ok(());
    }
    if args.json {
        let findings: Vec<Value> = verdict
            .findings
            .iter()
            .map(|f| {
                json!({"severity": f.severity.to_string(), "profile": f.profile,
                       "element": f.element, "path": f.path, "message": f.message})
            })
            .collect();
        let record = json!({"at": at, "resourceType": kind, "id": id, "profiles": verdict.profiles,
                            "valid": valid, "findings": findings});
        writeln!(out, "{record}")?;
        return Ok(());
    }
    let status = match (verdict.profiles.is_empty(), valid) {
        (true, _) => "no profile applies".to_string(),
        (false, true) => format!("conforms to {}", verdict.profiles.join(", ")),
        (false, false) => format!("DOES NOT CONFORM to {}", verdict.profiles.join(", ")),
    };
    writeln!(out, "{at}  {kind}/{id}  {status}")?;
    for f in &verdict.findings {
        writeln!(
            out,
            "    {} at {}: {} [{}]",
            f.severity, f.path, f.message, f.element
        )?;
    }
    Ok(())
}

type Parsed = std::result::Result<Value, String>;

/// Calls `each` with each resource of one input, one at a time (an NDJSON
/// file is streamed, never held whole), and where it is (`file:line`, or
/// `file` for a whole-file JSON resource).
fn for_each_resource(
    path: &Path,
    each: &mut dyn FnMut(String, Parsed) -> Result<()>,
) -> Result<()> {
    let whole_file = path.extension().is_some_and(|e| e == "json");
    if whole_file {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read it", path.display()))?;
        let parsed = serde_json::from_slice(&bytes).map_err(|e| e.to_string());
        return each(path.display().to_string(), parsed);
    }
    for (n, line) in super::policy::open(path)?.lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: line {}: cannot read it", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line).map_err(|e| e.to_string());
        each(format!("{}:{}", path.display(), n + 1), parsed)?;
    }
    Ok(())
}
