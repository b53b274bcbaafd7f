//! Decode + batch throughput (MB/s): the CPU core of `fhirlake load`, without
//! storage. Input: the bundled Observation sample replicated to ~32 MB in memory.
//! Run: `cargo bench --bench decode`.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirlake::lake::resource_schema;
use fhirlake::load::{Lineage, ResourceRow, ResourceRows};
use fhirlake::ndjson::{Chunk, ChunkDecoder, LineChunker, LineKind};
use rayon::prelude::*;

fn sample(target: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bulk/bds-r4-10/Observation.ndjson");
    let one = std::fs::read(path).expect("bundled sample");
    let mut data = Vec::with_capacity(target + one.len());
    while data.len() < target {
        data.extend_from_slice(&one);
    }
    data
}

fn chunks(data: &[u8], size: usize) -> Vec<Chunk> {
    let mut chunker = LineChunker::new(size);
    let mut out = Vec::new();
    chunker.push(data, &mut out);
    out.extend(chunker.finish());
    out
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
                    ResourceRows::new(resource_schema()),
                )
            },
            |(decoder, rows), chunk| {
                let decoded = decoder.decode(chunk, Some("Observation"));
                for line in decoded.lines {
                    if let LineKind::Resource(keys) = line.kind {
                        let resource =
                            std::str::from_utf8(&chunk.data[line.start..line.end]).unwrap();
                        rows.push(
                            &ResourceRow {
                                id: &keys.id,
                                last_updated: keys.last_updated.unwrap_or(0),
                                version_id: keys.version_id.as_deref(),
                                last_updated_from: None,
                                resource,
                                source: "bench",
                                line: line.line,
                            },
                            line.view_row.map(|r| (&decoded.views[r.slot], r.start)),
                            &lineage,
                        )
                        .unwrap();
                    }
                }
                rows.finish().unwrap().num_rows()
            },
        )
        .sum()
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
