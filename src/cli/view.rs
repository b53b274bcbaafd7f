//! `fhirlake view run`: a ViewDefinition over resources, rows out. The way
//! users debug their views before a load uses them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;

use crate::view::{CompiledView, Json, Row};

#[derive(Debug, Subcommand)]
pub enum ViewCommand {
    /// Run a ViewDefinition over NDJSON, a Bundle or one resource, print its rows.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// ViewDefinition JSON file.
    #[arg(long)]
    view: PathBuf,
    /// Resources: NDJSON (one per line), a Bundle, or a single resource.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, value_enum, default_value = "ndjson")]
    format: Format,
    /// Write here instead of stdout (required for parquet).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Resources in `text`, each with where it came from (for error messages).
fn resources(text: &str) -> Result<Vec<(String, Json<'_>)>> {
    if let Ok(json) = Json::parse(text) {
        if json.get("resourceType").and_then(Json::as_str) == Some("Bundle") {
            let Some(Json::Array(entries)) = json.get("entry") else {
                return Ok(Vec::new());
            };
            return Ok(entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.get("resource").map(|r| (format!("entry {i}"), r.clone())))
                .collect());
        }
        return Ok(vec![("the resource".into(), json)]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let json = Json::parse(line).with_context(|| format!("line {}: not valid JSON", i + 1))?;
        out.push((format!("line {}", i + 1), json));
    }
    Ok(out)
}

pub fn run(command: ViewCommand) -> Result<()> {
    match run_view(command) {
        // `fhirlake view run ... | head` closes the pipe early: not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run_view(command: ViewCommand) -> Result<()> {
    let ViewCommand::Run(args) = command;
    let view_text = std::fs::read_to_string(&args.view)
        .with_context(|| format!("reading view {}", args.view.display()))?;
    let view =
        CompiledView::parse(&view_text).with_context(|| format!("view {}", args.view.display()))?;
    let input = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading input {}", args.input.display()))?;
    let mut rows: Vec<Row> = Vec::new();
    for (origin, resource) in
        resources(&input).with_context(|| format!("input {}", args.input.display()))?
    {
        let produced = view
            .rows(&resource)
            .with_context(|| format!("{}, {origin}", args.input.display()))?;
        rows.extend(produced);
    }
    match args.format {
        Format::Parquet => {
            let Some(out) = &args.out else {
                bail!("--format parquet needs --out FILE")
            };
            let schema = Arc::new(Schema::new(view.arrow_fields()));
            let refs: Vec<&Row> = rows.iter().collect();
            let batch = RecordBatch::try_new(schema.clone(), view.arrow_arrays(&refs))?;
            let file = std::fs::File::create(out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut writer = ArrowWriter::try_new(file, schema, None)?;
            writer.write(&batch)?;
            writer.close()?;
        }
        format => {
            let mut sink: Box<dyn Write> = match &args.out {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let names: Vec<&str> = view.columns.iter().map(|c| c.name.as_str()).collect();
            if matches!(format, Format::Csv) {
                writeln!(
                    sink,
                    "{}",
                    names
                        .iter()
                        .map(|n| csv_field(n))
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
            for row in &rows {
                match format {
                    Format::Csv => {
                        let fields: Vec<String> = row
                            .iter()
                            .map(|v| match v {
                                serde_json::Value::Null => String::new(),
                                serde_json::Value::String(s) => csv_field(s),
                                other => csv_field(&other.to_string()),
                            })
                            .collect();
                        writeln!(sink, "{}", fields.join(","))?;
                    }
                    _ => {
                        let object: serde_json::Map<String, serde_json::Value> = names
                            .iter()
                            .map(|n| n.to_string())
                            .zip(row.iter().cloned())
                            .collect();
                        writeln!(sink, "{}", serde_json::Value::Object(object))?;
                    }
                }
            }
            sink.flush()?;
        }
    }
    Ok(())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
