//! `fhirlake view run`: a ViewDefinition over resources, rows out. The way
//! users debug their views before a load uses them.

use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;

use bumpalo::Bump;
use rayon::prelude::*;

use crate::ndjson::{Chunk, LineChunker, UTF8_BOM};
use crate::view::{CompiledView, Json, Row, ViewBuilder, ViewError};

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

/// Whether `json` is an object with a string `resourceType`.
fn is_resource(json: &Json<'_>) -> bool {
    json.get("resourceType").and_then(Json::as_str).is_some()
}

/// An NDJSON line must be a resource: JSON without `resourceType` would
/// otherwise give no rows, silently.
fn require_resource(json: &Json<'_>, line: u64) -> Result<()> {
    if !is_resource(json) {
        bail!("line {line}: no resourceType; each NDJSON line must be one FHIR resource");
    }
    Ok(())
}

/// Resources in `text` (a Bundle, a JSON array of resources, one resource,
/// or NDJSON), each with where it came from (for error messages).
fn resources<'a>(text: &'a str, arena: &'a Bump) -> Result<Vec<(String, Json<'a>)>> {
    if let Ok(json) = Json::parse(text, arena) {
        if let Json::Array(items) = json {
            return Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("item {i}"), *item))
                .collect());
        }
        if !is_resource(&json) {
            bail!(
                "the input is JSON but no FHIR resource (no resourceType): give NDJSON, a Bundle, \
                 a JSON array of resources, or one resource"
            );
        }
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
        require_resource(&json, i as u64 + 1)?;
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

/// What one piece of input evaluates to: JSON rows for text output, Arrow
/// columns (built straight from the evaluated cells) for Parquet.
enum Produced {
    Rows(Vec<Row>),
    Batch(RecordBatch),
}

/// Collects a view's rows in the form the output needs.
enum Collector {
    Rows(Vec<Row>),
    Arrow(ViewBuilder, Arc<Schema>),
}

impl Collector {
    fn new(view: &CompiledView, schema: Option<&Arc<Schema>>) -> Self {
        match schema {
            Some(schema) => Collector::Arrow(ViewBuilder::new(view), schema.clone()),
            None => Collector::Rows(Vec::new()),
        }
    }

    fn add(&mut self, view: &CompiledView, resource: &Json<'_>) -> Result<(), ViewError> {
        match self {
            Collector::Rows(rows) => rows.extend(view.rows(resource)?),
            Collector::Arrow(builder, _) => {
                for row in view.cells(resource)? {
                    builder.append(&row);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Produced> {
        Ok(match self {
            Collector::Rows(rows) => Produced::Rows(rows),
            Collector::Arrow(mut builder, schema) => {
                Produced::Batch(RecordBatch::try_new(schema, builder.finish())?)
            }
        })
    }
}

/// Where rows go: streamed as text, or into a Parquet file (whose writer
/// gathers the batches into row groups).
enum Output {
    Text {
        sink: Box<dyn Write + Send>,
        csv: bool,
        names: Vec<String>,
    },
    Parquet {
        schema: Arc<Schema>,
        writer: Box<ArrowWriter<std::fs::File>>,
    },
}

impl Output {
    /// The schema evaluation should build Arrow columns for, if any.
    fn arrow_schema(&self) -> Option<&Arc<Schema>> {
        match self {
            Output::Parquet { schema, .. } => Some(schema),
            Output::Text { .. } => None,
        }
    }

    fn write(&mut self, produced: Produced) -> Result<()> {
        match (self, produced) {
            (Output::Parquet { writer, .. }, Produced::Batch(batch)) => writer.write(&batch)?,
            (Output::Text { sink, csv, names }, Produced::Rows(rows)) => {
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
            _ => unreachable!("the collector is made for its output"),
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Output::Text { mut sink, .. } => Ok(sink.flush()?),
            Output::Parquet { writer, .. } => {
                writer.close()?;
                Ok(())
            }
        }
    }
}

/// The rows of one chunk of NDJSON lines; errors name the line.
fn chunk_rows(
    view: &CompiledView,
    schema: Option<&Arc<Schema>>,
    chunk: &Chunk,
    arena: &mut Bump,
) -> Result<Produced> {
    let mut collector = Collector::new(view, schema);
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
        require_resource(&json, number)?;
        collector
            .add(view, &json)
            .with_context(|| format!("line {number}"))?;
        arena.reset();
    }
    collector.finish()
}

/// NDJSON streams through in chunks: a reader thread cuts them, all cores
/// evaluate them in groups, in order, while a writer thread writes the
/// previous group's output. Memory stays at a few chunks whatever the file size.
fn stream_ndjson(view: &CompiledView, path: &Path, output: &mut Output) -> Result<()> {
    let mut file = open_input(path)?;
    let group = rayon::current_num_threads() * 2;
    let schema = output.arrow_schema().cloned();
    std::thread::scope(|scope| {
        // Bounded both ways: the reader runs one group ahead of the
        // evaluators, which run at most two groups ahead of the writer.
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Result<Chunk>>(group);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut chunker = LineChunker::new(4 << 20);
            loop {
                while let Ok(buffer) = recycle_rx.try_recv() {
                    chunker.recycle(buffer);
                }
                let chunk = match chunker.next_chunk(&mut file) {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = chunk_tx.send(Err(e.into()));
                        return;
                    }
                };
                if chunk_tx.send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Produced>(2 * group);
        let writer = scope.spawn(move || -> Result<()> {
            for produced in receiver {
                output.write(produced)?;
            }
            Ok(())
        });
        let evaluate = || -> Result<()> {
            let mut pending: Vec<Chunk> = Vec::with_capacity(group);
            // Block for one chunk, then take what else is ready, up to a group.
            while let Ok(first) = chunk_rx.recv() {
                pending.push(first?);
                while pending.len() < group {
                    match chunk_rx.try_recv() {
                        Ok(chunk) => pending.push(chunk?),
                        Err(_) => break,
                    }
                }
                // One arena per rayon job, reused across its chunks (fresh
                // arenas per chunk cost page faults on every chunk).
                let results: Vec<Result<Produced>> = pending
                    .par_iter()
                    .map_init(Bump::new, |arena, c| {
                        chunk_rows(view, schema.as_ref(), c, arena)
                    })
                    .collect();
                for chunk in pending.drain(..) {
                    let _ = recycle_tx.send(chunk.data);
                }
                for produced in results {
                    if sender.send(produced?).is_err() {
                        // The writer stopped on an error; join reports it.
                        return Ok(());
                    }
                }
            }
            Ok(())
        };
        let evaluated = evaluate();
        // Closing the channels ends the reader's and the writer's loops.
        drop(chunk_rx);
        drop(sender);
        let written = writer.join().expect("writer thread panicked");
        evaluated.and(written)
    })
}

/// The input's text bytes: gunzipped when it is gzip (told by its magic
/// bytes, not its name, as `load` reads `.ndjson.gz` exports), without the
/// UTF-8 byte order mark some exports open with (RFC 8259 lets parsers skip
/// it). Every way `view run` reads its input goes through here.
fn open_input(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(std::io::SeekFrom::Start(0))?;
    let bytes: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    // Large reads pass straight through the BufReader once it is empty.
    let mut reader = std::io::BufReader::new(bytes);
    if reader.fill_buf()?.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(Box::new(reader))
}

fn is_ndjson(path: &Path) -> Result<bool> {
    let mut first = String::new();
    std::io::BufReader::new(open_input(path)?).read_line(&mut first)?;
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
                writer: Box::new(ArrowWriter::try_new(file, schema.clone(), None)?),
                schema,
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
        let mut input = String::new();
        open_input(&args.input)
            .and_then(|mut reader| reader.read_to_string(&mut input))
            .with_context(|| format!("reading input {input_name}"))?;
        let arena = Bump::new();
        let mut collector = Collector::new(&view, output.arrow_schema());
        for (origin, resource) in
            resources(&input, &arena).with_context(|| format!("input {input_name}"))?
        {
            collector
                .add(&view, &resource)
                .with_context(|| format!("{input_name}, {origin}"))?;
        }
        output.write(collector.finish()?)?;
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
