//! `fhirlake view run`: a ViewDefinition over resources, rows out. The way
//! users debug their views before a load uses them.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;

use bumpalo::Bump;
use rayon::prelude::*;

use crate::ndjson::{Chunk, LineChunker};
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
fn resources<'a>(text: &'a str, arena: &'a Bump) -> Result<Vec<(String, Json<'a>)>> {
    if let Ok(json) = Json::parse(text, arena) {
        if json.get("resourceType").and_then(Json::as_str) == Some("Bundle") {
            let Some(Json::Array(entries)) = json.get("entry") else {
                return Ok(Vec::new());
            };
            return Ok(entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.get("resource").map(|r| (format!("entry {i}"), *r)))
                .collect());
        }
        return Ok(vec![("the resource".into(), json)]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let json =
            Json::parse(line, arena).with_context(|| format!("line {}: not valid JSON", i + 1))?;
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

/// Where rows go: streamed as text, or as one row group per batch of chunks
/// into a Parquet file.
enum Output<'v> {
    Text {
        sink: Box<dyn Write + Send>,
        csv: bool,
        names: Vec<String>,
    },
    Parquet {
        view: &'v CompiledView,
        schema: Arc<Schema>,
        writer: Box<ArrowWriter<std::fs::File>>,
        rows: Vec<Row>,
    },
}

/// Rows buffered before a Parquet row group is written.
const PARQUET_BATCH_ROWS: usize = 256 * 1024;

impl Output<'_> {
    fn write(&mut self, rows: Vec<Row>) -> Result<()> {
        match self {
            Output::Parquet {
                view,
                schema,
                writer,
                rows: buffered,
            } => {
                buffered.extend(rows);
                if buffered.len() >= PARQUET_BATCH_ROWS {
                    let refs: Vec<&Row> = buffered.iter().collect();
                    let batch = RecordBatch::try_new(schema.clone(), view.arrow_arrays(&refs))?;
                    writer.write(&batch)?;
                    buffered.clear();
                }
            }
            Output::Text { sink, csv, names } => {
                for row in rows {
                    if *csv {
                        let fields: Vec<String> = row
                            .iter()
                            .map(|v| match v {
                                serde_json::Value::Null => String::new(),
                                serde_json::Value::String(s) => csv_field(s),
                                other => csv_field(&other.to_string()),
                            })
                            .collect();
                        writeln!(sink, "{}", fields.join(","))?;
                    } else {
                        let object: serde_json::Map<String, serde_json::Value> =
                            names.iter().cloned().zip(row).collect();
                        writeln!(sink, "{}", serde_json::Value::Object(object))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Output::Text { mut sink, .. } => Ok(sink.flush()?),
            Output::Parquet {
                view,
                schema,
                mut writer,
                rows,
            } => {
                let refs: Vec<&Row> = rows.iter().collect();
                let batch = RecordBatch::try_new(schema, view.arrow_arrays(&refs))?;
                writer.write(&batch)?;
                writer.close()?;
                Ok(())
            }
        }
    }
}

/// The rows of one chunk of NDJSON lines; errors name the line.
fn chunk_rows(view: &CompiledView, chunk: &Chunk, arena: &mut Bump) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    arena.reset();
    // memchr, not a per-byte split: this loop sees every byte of the input.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', &chunk.data).chain(std::iter::once(chunk.data.len()));
    for (i, end) in ends.enumerate() {
        let line = &chunk.data[start..end];
        start = end + 1;
        let number = chunk.first_line + i as u64;
        let text =
            std::str::from_utf8(line).with_context(|| format!("line {number}: not UTF-8"))?;
        if text.trim().is_empty() {
            continue;
        }
        let json =
            Json::parse(text, arena).with_context(|| format!("line {number}: not valid JSON"))?;
        rows.extend(view.rows(&json).with_context(|| format!("line {number}"))?);
        arena.reset();
    }
    Ok(rows)
}

/// NDJSON streams through in chunks evaluated on all cores, in order, while
/// a writer thread turns the previous group's rows into output; memory stays
/// at a few chunks whatever the file size.
fn stream_ndjson(view: &CompiledView, path: &Path, output: &mut Output<'_>) -> Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut chunker = LineChunker::new(4 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut pending: Vec<Chunk> = Vec::new();
    let group = rayon::current_num_threads() * 2;
    std::thread::scope(|scope| {
        // Bounded: the evaluators run at most two groups ahead of the writer.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Row>>(2 * group);
        let writer = scope.spawn(move || -> Result<()> {
            for rows in receiver {
                output.write(rows)?;
            }
            Ok(())
        });
        let flush = |pending: &mut Vec<Chunk>, chunker: &mut LineChunker| -> Result<()> {
            // One arena per rayon job, reused across its chunks (fresh arenas
            // per chunk cost page faults on every chunk).
            let results: Vec<Result<Vec<Row>>> = pending
                .par_iter()
                .map_init(Bump::new, |arena, c| chunk_rows(view, c, arena))
                .collect();
            for chunk in pending.drain(..) {
                chunker.recycle(chunk.data);
            }
            for rows in results {
                if sender.send(rows?).is_err() {
                    // The writer stopped on an error; join reports it.
                    break;
                }
            }
            Ok(())
        };
        let read = (|| -> Result<()> {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                chunker.push(&buf[..n], &mut pending);
                if pending.len() >= group {
                    flush(&mut pending, &mut chunker)?;
                }
            }
            pending.extend(chunker.finish());
            flush(&mut pending, &mut chunker)
        })();
        // Closing the channel ends the writer's loop.
        drop(sender);
        let written = writer.join().expect("writer thread panicked");
        read.and(written)
    })
}

fn is_ndjson(path: &Path) -> Result<bool> {
    let mut first = String::new();
    std::io::BufReader::new(std::fs::File::open(path)?).read_line(&mut first)?;
    Ok(Json::parse(first.trim(), &Bump::new()).is_ok() && first.trim_start().starts_with('{'))
}

fn run_view(command: ViewCommand) -> Result<()> {
    let ViewCommand::Run(args) = command;
    let view_text = std::fs::read_to_string(&args.view)
        .with_context(|| format!("reading view {}", args.view.display()))?;
    let view =
        CompiledView::parse(&view_text).with_context(|| format!("view {}", args.view.display()))?;
    let names: Vec<String> = view.columns.iter().map(|c| c.name.clone()).collect();
    let mut output = match args.format {
        Format::Parquet => {
            let Some(out) = args.out.clone() else {
                bail!("--format parquet needs --out FILE")
            };
            let schema = Arc::new(Schema::new(view.arrow_fields()));
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            Output::Parquet {
                view: &view,
                writer: Box::new(ArrowWriter::try_new(file, schema.clone(), None)?),
                schema,
                rows: Vec::new(),
            }
        }
        format => {
            let mut sink: Box<dyn Write + Send> = match &args.out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let csv = matches!(format, Format::Csv);
            if csv {
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
            Output::Text { sink, csv, names }
        }
    };
    let input_name = args.input.display().to_string();
    if is_ndjson(&args.input).with_context(|| format!("reading input {input_name}"))? {
        stream_ndjson(&view, &args.input, &mut output)
            .with_context(|| format!("input {input_name}"))?;
    } else {
        let input = std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading input {input_name}"))?;
        let arena = Bump::new();
        for (origin, resource) in
            resources(&input, &arena).with_context(|| format!("input {input_name}"))?
        {
            let rows = view
                .rows(&resource)
                .with_context(|| format!("{input_name}, {origin}"))?;
            output.write(rows)?;
        }
    }
    output.finish()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
