//! `fhirlake view run`: a ViewDefinition over resources, rows out — how
//! users debug a view before a load uses it.
//!
//! In: a compiled view and an input (NDJSON, a Bundle, a JSON array of
//! resources or one resource; plain or gzip, through the one input opener).
//! Out: rows written to an [`Output`] as NDJSON, CSV or Parquet. NDJSON
//! streams in chunks on all cores; the other shapes are read whole.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;

use bumpalo::Bump;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::errors::ParquetError;
use rayon::prelude::*;

use super::{CompiledView, Json, Row, ViewBuilder, ViewError};
use crate::load::Input;
use crate::ndjson::{Chunk, LineChunker};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: u64 },
    #[error("line {line}: not valid JSON ({detail})")]
    NotJson { line: u64, detail: String },
    #[error("line {line}: no resourceType; each NDJSON line must be one FHIR resource")]
    NotAResource { line: u64 },
    #[error(
        "the input is JSON but no FHIR resource (no resourceType): give NDJSON, a Bundle, \
         a JSON array of resources, or one resource"
    )]
    NoResource,
    #[error("{origin}: {source}")]
    View {
        origin: String,
        #[source]
        source: ViewError,
    },
    #[error("writing rows: {0}")]
    Write(#[from] std::io::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("building rows: {0}")]
    Arrow(#[from] ArrowError),
}

impl RunError {
    /// The reader of the rows went away (`view run ... | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, RunError::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Where rows go: streamed as text, or into a Parquet file (whose writer
/// gathers the batches into row groups).
pub enum Output {
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
    /// NDJSON rows (objects keyed by column name) or CSV with a header.
    pub fn text(
        mut sink: Box<dyn Write + Send>,
        csv: bool,
        view: &CompiledView,
    ) -> Result<Self, RunError> {
        let names: Vec<String> = view.columns.iter().map(|c| c.name.clone()).collect();
        if csv {
            let header: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
            writeln!(sink, "{}", header.join(","))?;
        }
        Ok(Output::Text { sink, csv, names })
    }

    /// A Parquet file with the view's Arrow columns.
    pub fn parquet(file: std::fs::File, view: &CompiledView) -> Result<Self, RunError> {
        let schema = Arc::new(Schema::new(view.arrow_fields()));
        Ok(Output::Parquet {
            writer: Box::new(ArrowWriter::try_new(file, schema.clone(), None)?),
            schema,
        })
    }

    /// The schema evaluation should build Arrow columns for, if any.
    fn arrow_schema(&self) -> Option<&Arc<Schema>> {
        match self {
            Output::Parquet { schema, .. } => Some(schema),
            Output::Text { .. } => None,
        }
    }

    fn write(&mut self, produced: Produced) -> Result<(), RunError> {
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

    /// Flushes the text, or closes the Parquet file.
    pub fn finish(self) -> Result<(), RunError> {
        match self {
            Output::Text { mut sink, .. } => Ok(sink.flush()?),
            Output::Parquet { writer, .. } => {
                writer.close()?;
                Ok(())
            }
        }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
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

    fn finish(self) -> Result<Produced, RunError> {
        Ok(match self {
            Collector::Rows(rows) => Produced::Rows(rows),
            Collector::Arrow(mut builder, schema) => {
                Produced::Batch(RecordBatch::try_new(schema, builder.finish())?)
            }
        })
    }
}

/// Whether `json` is an object with a string `resourceType`.
fn is_resource(json: &Json<'_>) -> bool {
    json.get("resourceType").and_then(Json::as_str).is_some()
}

/// Runs `view` over `input`, writing its rows to `output`.
pub fn run(view: &CompiledView, input: &Input, output: &mut Output) -> Result<(), RunError> {
    let read = |source| RunError::Read {
        name: input.name.clone(),
        source,
    };
    if starts_with_a_resource_line(input).map_err(read)? {
        return stream_ndjson(view, input, output);
    }
    let mut text = String::new();
    input
        .open()
        .and_then(|mut reader| reader.read_to_string(&mut text))
        .map_err(read)?;
    let arena = Bump::new();
    let mut collector = Collector::new(view, output.arrow_schema());
    for (origin, resource) in resources(&text, &arena)? {
        collector
            .add(view, &resource)
            .map_err(|source| RunError::View { origin, source })?;
    }
    output.write(collector.finish()?)
}

/// NDJSON, told by a first line that is a JSON object on its own.
fn starts_with_a_resource_line(input: &Input) -> std::io::Result<bool> {
    let mut first = String::new();
    std::io::BufReader::new(input.open()?).read_line(&mut first)?;
    Ok(first.trim_start().starts_with('{') && Json::parse(first.trim(), &Bump::new()).is_ok())
}

/// Resources in `text` (a Bundle, a JSON array of resources, one resource,
/// or NDJSON), each with where it came from (for error messages).
fn resources<'a>(text: &'a str, arena: &'a Bump) -> Result<Vec<(String, Json<'a>)>, RunError> {
    if let Ok(json) = Json::parse(text, arena) {
        if let Json::Array(items) = json {
            return Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("item {i}"), *item))
                .collect());
        }
        if !is_resource(&json) {
            return Err(RunError::NoResource);
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
        let number = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let json = Json::parse(line, arena).map_err(|e| RunError::NotJson {
            line: number,
            detail: e.to_string(),
        })?;
        if !is_resource(&json) {
            return Err(RunError::NotAResource { line: number });
        }
        out.push((format!("line {number}"), json));
    }
    Ok(out)
}

/// The rows of one chunk of NDJSON lines; errors name the line.
fn chunk_rows(
    view: &CompiledView,
    schema: Option<&Arc<Schema>>,
    chunk: &Chunk,
    arena: &mut Bump,
) -> Result<Produced, RunError> {
    let mut collector = Collector::new(view, schema);
    arena.reset();
    // memchr, not a per-byte split: this loop sees every byte of the input.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', &chunk.data).chain(std::iter::once(chunk.data.len()));
    for (i, end) in ends.enumerate() {
        let line = &chunk.data[start..end];
        start = end + 1;
        let number = chunk.first_line + i as u64;
        let text = std::str::from_utf8(line).map_err(|_| RunError::NotUtf8 { line: number })?;
        if text.trim().is_empty() {
            continue;
        }
        let json = Json::parse(text, arena).map_err(|e| RunError::NotJson {
            line: number,
            detail: e.to_string(),
        })?;
        if !is_resource(&json) {
            return Err(RunError::NotAResource { line: number });
        }
        collector
            .add(view, &json)
            .map_err(|source| RunError::View {
                origin: format!("line {number}"),
                source,
            })?;
        arena.reset();
    }
    collector.finish()
}

/// NDJSON streams through in chunks: a reader thread cuts them, all cores
/// evaluate them in groups, in order, while a writer thread writes the
/// previous group's output. Memory stays at a few chunks whatever the file size.
fn stream_ndjson(view: &CompiledView, input: &Input, output: &mut Output) -> Result<(), RunError> {
    let read = |source| RunError::Read {
        name: input.name.clone(),
        source,
    };
    let mut reader = input.open().map_err(read)?;
    let group = rayon::current_num_threads() * 2;
    let schema = output.arrow_schema().cloned();
    std::thread::scope(|scope| {
        // Bounded both ways: the reader runs one group ahead of the
        // evaluators, which run at most two groups ahead of the writer.
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Result<Chunk, RunError>>(group);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut chunker = LineChunker::new(4 << 20).starting_at(reader.first_offset());
            loop {
                while let Ok(buffer) = recycle_rx.try_recv() {
                    chunker.recycle(buffer);
                }
                let chunk = match chunker.next_chunk(&mut reader) {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = chunk_tx.send(Err(read(e)));
                        return;
                    }
                };
                if chunk_tx.send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Produced>(2 * group);
        let writer = scope.spawn(move || -> Result<(), RunError> {
            for produced in receiver {
                output.write(produced)?;
            }
            Ok(())
        });
        let evaluate = || -> Result<(), RunError> {
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
                let results: Vec<Result<Produced, RunError>> = pending
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
