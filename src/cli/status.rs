//! `fhirlake status`: jobs, tables, quarantine and the audit verdict, as
//! text, JSON or one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{LakeArgs, runtime};
use crate::status::{self, LakeStatus};

pub const STATUS_EXIT_CODES: &str = "\
Exit codes:
  0  report written; the audit trail verifies (chain, anchors, manifests; raw files too with --rehash-raw)
  1  report written; the audit trail does NOT verify (problems listed, as by fhirlake verify)
  2  the lake could not be read, or holds no tables (a mistyped --lake)";

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write the report as a self-contained HTML page (charts inline, no external assets).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also re-hash every kept raw file against its manifest, as fhirlake verify does (reads all of them).
    #[arg(long)]
    rehash_raw: bool,
}

pub fn run(args: StatusArgs) -> Result<ExitCode> {
    let lake = args.lake.open()?;
    let raw = if args.rehash_raw {
        status::RawFiles::Rehash
    } else {
        status::RawFiles::Skip
    };
    let report = runtime()?.block_on(status::collect(&lake, raw))?;
    if report.tables.is_empty() && report.jobs.is_empty() {
        bail!(
            "{}: no Delta tables and no jobs there; check --lake",
            args.lake.lake
        );
    }
    if let Some(path) = &args.html {
        std::fs::write(path, status::render_html(&report))
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
        if let Some(path) = &args.html {
            println!("HTML report: {}", path.display());
        }
    }
    Ok(if report.verify.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(r: &LakeStatus) {
    let v = &r.verify;
    println!("lake {}", r.lake);
    if let Some(segregated) = &r.segregated_lake {
        match segregated.read {
            true => println!("segregated tables: in {}", segregated.uri),
            false => println!(
                "segregated tables: in {} (not read: give --segregated-lake {} to include them)",
                segregated.uri, segregated.uri
            ),
        }
    }
    println!(
        "audit trail: {} ({} events, {} anchors, {} Delta commits, {} manifests checked; {})",
        if v.clean {
            "verifies"
        } else {
            "does NOT verify"
        },
        v.events,
        v.anchors,
        v.commits,
        v.manifests,
        if v.raw_rehashed {
            v.raw_files()
        } else {
            format!("{}: --rehash-raw, or fhirlake verify", v.raw_files())
        }
    );
    for problem in &v.problems {
        println!("  problem: {problem}");
    }
    println!("\ntables ({}):", r.tables.len());
    println!(
        "  {:<40} {:>12} {:>8}  {:<20}  last job",
        "table", "rows", "version", "last change"
    );
    for t in &r.tables {
        println!(
            "  {:<40} {:>12} {:>8}  {:<20}  {}",
            t.name,
            t.rows,
            t.version,
            t.last_change.as_deref().unwrap_or("-"),
            t.last_job.as_deref().unwrap_or("-")
        );
    }
    println!("\nquarantine: {} row(s)", r.quarantine.rows);
    for (reason, n) in &r.quarantine.by_reason {
        println!("  {reason:<40} {n:>12}");
    }
    println!("\njobs ({}):", r.jobs.len());
    for j in &r.jobs {
        let rows = j.rows.map_or_else(String::new, |c| {
            format!(
                "  inserted {} updated {} unchanged {} quarantined {} filtered {}",
                c.inserted, c.updated, c.unchanged, c.quarantined, c.filtered
            )
        });
        println!(
            "  {}  {:<11} {:<10} {} → {}  by {}{rows}",
            j.job_id,
            j.kind,
            j.outcome,
            j.started.as_deref().unwrap_or("?"),
            j.finished.as_deref().unwrap_or("?"),
            j.principal.as_deref().unwrap_or("unknown"),
        );
    }
}
