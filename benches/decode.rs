//! Decode + batch throughput (MB/s): the CPU core of `fhirlake load`, without
//! storage. Input: the bundled Observation sample replicated to ~32 MB in memory.
//! Run: `cargo bench --bench decode`.

use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirlake::lake::{Lineage, TableLayout, writer_properties};
use fhirlake::load::{ResourceRow, ResourceRows, resource_layout};
use fhirlake::ndjson::{Chunk, ChunkDecoder, DecodedChunk, LineChunker, LineKind};
use fhirlake::view::ViewSet;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;

fn sample(target: usize) -> Vec<u8> {
    sample_of("Observation", target)
}

fn sample_of(resource_type: &str, target: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("data/bulk/bds-r4-10/{resource_type}.ndjson"));
    let one = std::fs::read(path).expect("bundled sample");
    let mut data = Vec::with_capacity(target + one.len());
    while data.len() < target {
        data.extend_from_slice(&one);
    }
    data
}

fn chunks(data: &[u8], size: usize) -> Vec<Chunk> {
    let mut chunker = LineChunker::new(size);
    let mut reader = data;
    std::iter::from_fn(|| chunker.next_chunk(&mut reader).unwrap()).collect()
}

/// Appends a decoded chunk's resource lines to `rows`, as the loader does
/// for new resources.
fn push_resources(rows: &mut ResourceRows, decoded: DecodedChunk, source: &str, lineage: &Lineage) {
    for (n, line) in decoded.lines.into_iter().enumerate() {
        if let LineKind::Resource(keys) = line.kind {
            let row = ResourceRow {
                id: &keys.id,
                last_updated: keys.last_updated.unwrap_or(0),
                version_id: keys.version_id.as_deref(),
                last_updated_from: None,
                resource: (&decoded.resources, n),
                resource_bytes: line.end - line.start,
                source,
                line: line.line,
                subsetted: keys.subsetted,
                deleted: false,
                code_issues: keys.code_issues,
                valid: None,
            };
            let view_row = line.view_row.map(|r| (&decoded.views[r.slot], r.start));
            rows.push(&row, view_row, lineage).unwrap();
        }
    }
}

fn decode_and_build(chunks: &[Chunk]) -> usize {
    let lineage = Lineage {
        job_id: "bench".into(),
        ingested_at: 0,
    };
    chunks
        .par_iter()
        .map_init(
            || {
                (
                    ChunkDecoder::default(),
                    ResourceRows::new(TableLayout::resource(&[])),
                )
            },
            |(decoder, rows), chunk| {
                let decoded = decoder.decode(chunk, Some("Observation"));
                push_resources(rows, decoded, "bench", &lineage);
                rows.finish().unwrap().num_rows()
            },
        )
        .sum()
}

/// The Observation table's batches (standard and view columns), one per chunk.
fn table_batches(chunks: &[Chunk], views: &Arc<ViewSet>) -> Vec<RecordBatch> {
    let lineage = Lineage {
        job_id: "bench-job-0123456789".into(),
        ingested_at: 0,
    };
    let view = views.for_type("Observation").cloned();
    let layout = resource_layout(view.as_deref());
    let mut decoder = ChunkDecoder::with_views(views.clone());
    chunks
        .iter()
        .map(|chunk| {
            let decoded = decoder.decode(chunk, Some("Observation"));
            let mut rows = ResourceRows::with_view(layout.clone(), view.as_deref());
            push_resources(
                &mut rows,
                decoded,
                "/data/export/Observation.000.ndjson",
                &lineage,
            );
            rows.finish().unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = sample(32 << 20);
    let parts = chunks(&data, 4 << 20);
    let mut group = c.benchmark_group("ndjson");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("decode_keys", |b| {
        b.iter(|| {
            parts
                .par_iter()
                .map_init(ChunkDecoder::default, |d, c| {
                    d.decode(c, Some("Observation")).lines.len()
                })
                .sum::<usize>()
        })
    });
    group.bench_function("decode_and_arrow_batch", |b| {
        b.iter(|| decode_and_build(&parts))
    });
    group.finish();

    // The default views on the two biggest types of a Bulk export: the
    // tree parse, the view evaluation and the Arrow columns, per chunk.
    let views = Arc::new(ViewSet::defaults());

    // Parquet encoding of the Observation table, as the lake writes it.
    let batches = table_batches(&parts, &views);
    let mut group = c.benchmark_group("parquet");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("write_observation_table", |b| {
        b.iter(|| {
            let schema = batches[0].schema();
            let properties = writer_properties(&schema);
            let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties)).unwrap();
            for batch in &batches {
                writer.write(batch).unwrap();
            }
            writer.into_inner().unwrap().len()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("views");
    group.sample_size(10);
    for resource_type in ["Observation", "Encounter"] {
        let data = sample_of(resource_type, 32 << 20);
        let parts = chunks(&data, 4 << 20);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(format!("decode_{}", resource_type.to_lowercase()), |b| {
            b.iter(|| {
                parts
                    .par_iter()
                    .map_init(
                        || ChunkDecoder::with_views(views.clone()),
                        |d, c| d.decode(c, Some(resource_type)).lines.len(),
                    )
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
