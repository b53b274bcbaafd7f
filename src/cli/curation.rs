//! `fhirlake curation list`: the `_curation` queue, open items first.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat};
use clap::{Args, Subcommand};
use serde_json::json;

use super::{LakeArgs, runtime};
use crate::code_checks::table::{self, QueueRow};

#[derive(Debug, Subcommand)]
pub enum CurationCommand {
    /// List the codes the checks flagged: system, code, problem, how often, where first seen.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Include resolved items (mapped since, or a system now known).
    #[arg(long)]
    all: bool,
    /// Only this problem (`bad_check_digit`, `unknown_system`, `misspelt_system`, ...).
    #[arg(long)]
    problem: Option<String>,
    /// One JSON object per item on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(command: CurationCommand) -> Result<ExitCode> {
    match command {
        CurationCommand::List(args) => list(args),
    }
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let lake = args.lake.open()?;
    let rows = runtime()?.block_on(table::read(&lake))?;
    let mut rows: Vec<QueueRow> = rows
        .into_iter()
        .filter(|r| args.all || r.resolved.is_none())
        .filter(|r| {
            args.problem
                .as_deref()
                .is_none_or(|p| r.record.problem == p)
        })
        .collect();
    // Most frequent first: what fixes the most rows.
    rows.sort_by_key(|r| std::cmp::Reverse(r.record.count));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        for row in &rows {
            writeln!(out, "{}", item_json(row))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "the curation queue is empty")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:>7}  {:<18} {:<40} {:<16} message",
        "count", "problem", "system", "code"
    )?;
    for row in &rows {
        let r = &row.record;
        writeln!(
            out,
            "{:>7}  {:<18} {:<40} {:<16} {}{}",
            r.count,
            r.problem,
            r.system.as_deref().unwrap_or("-"),
            r.code.as_deref().unwrap_or("-"),
            r.message,
            row.resolved
                .as_ref()
                .map_or(String::new(), |x| format!(" [resolved: {}]", x.by))
        )?;
        if let Some(e) = r.examples.first() {
            writeln!(
                out,
                "         first at {} in {}/{}, last seen {}",
                r.path,
                e.table,
                e.id,
                instant(r.last_seen)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn item_json(row: &QueueRow) -> serde_json::Value {
    let r = &row.record;
    json!({
        "system": r.system,
        "code": r.code,
        "problem": r.problem,
        "display": r.display,
        "message": r.message,
        "path": r.path,
        "count": r.count,
        "first_seen": instant(r.first_seen),
        "last_seen": instant(r.last_seen),
        "examples": r.examples.iter().map(|e| json!({"table": e.table, "id": e.id})).collect::<Vec<_>>(),
        "resolved_at": row.resolved.as_ref().map(|x| instant(x.at)),
        "resolved_by": row.resolved.as_ref().map(|x| x.by.clone()),
    })
}

fn instant(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}
