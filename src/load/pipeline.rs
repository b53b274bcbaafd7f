//! Read → chunk → decode for one file, on threads, feeding the async loader.
//!
//! ```text
//!  reader thread            decode thread                    loader (async)
//!  read + SHA-256  ──chunks──▶ rayon: decode N chunks ──(chunk, lines)──▶ classify, build, write
//! ```
//! Both channels are bounded, so memory is about (queue depth + N) × chunk
//! size whatever the file size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::mpsc as async_mpsc;

use crate::code_checks::CodeChecks;
use crate::load::Input;
use crate::ndjson::{BufferPool, Chunk, ChunkDecoder, DecodedChunk, LineChunker};
use crate::policy::Policy;
use crate::validation::Validation;
use crate::view::ViewSet;

/// Nanoseconds spent per stage, summed over threads.
#[derive(Debug, Default)]
pub struct StageClock {
    pub read_hash: AtomicU64,
    pub decode: AtomicU64,
    pub build: AtomicU64,
    pub write: AtomicU64,
    pub commit: AtomicU64,
}

impl StageClock {
    pub fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

pub enum Piece {
    Lines(Chunk, DecodedChunk),
    /// The file was read to the end: its stored SHA-256 and size.
    Done {
        sha256: String,
        bytes: u64,
    },
    Failed(std::io::Error),
}

/// A running file pipeline: pieces in input order, and a way to hand
/// consumed chunk buffers back to the job's pool.
pub struct FilePipeline {
    pub pieces: async_mpsc::Receiver<Piece>,
    buffers: BufferPool,
}

impl FilePipeline {
    /// Returns a processed chunk's buffer to the pool for reuse.
    pub fn recycle(&self, chunk: Chunk) {
        self.buffers.put(chunk.data);
    }
}

/// What every file pipeline of a job shares.
#[derive(Clone)]
pub struct Decoding {
    pub chunk_bytes: usize,
    /// Chunk buffers come from (and go back to) here, shared by a job's files.
    pub buffers: BufferPool,
    pub views: Arc<ViewSet>,
    pub policy: Arc<Policy>,
    pub code_checks: Option<Arc<CodeChecks>>,
    pub validation: Option<Arc<Validation>>,
    pub clock: Arc<StageClock>,
}

/// Starts reading and decoding `input`; pieces arrive in input order.
pub fn start(
    input: &Input,
    decoding: &Decoding,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> FilePipeline {
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Result<Chunk, Piece>>(4);
    let (piece_tx, piece_rx) = async_mpsc::channel::<Piece>(4);

    let reader_input = input.clone();
    let reader_clock = decoding.clock.clone();
    let chunker = LineChunker::new(decoding.chunk_bytes)
        .with_pool(decoding.buffers.clone())
        // Lines are numbered after decoding, where they are walked anyway.
        .without_line_numbers();
    std::thread::spawn(move || {
        read_input(&reader_input, chunker, &chunk_tx, &reader_clock, &*progress)
    });

    let expected = input.expected_type;
    let shared = decoding.clone();
    std::thread::spawn(move || decode_chunks(chunk_rx, &piece_tx, expected, &shared));
    FilePipeline {
        pieces: piece_rx,
        buffers: decoding.buffers.clone(),
    }
}

fn read_input(
    input: &Input,
    chunker: LineChunker,
    tx: &mpsc::SyncSender<Result<Chunk, Piece>>,
    clock: &StageClock,
    progress: &(dyn Fn(u64) + Send + Sync),
) {
    let mut reader = match input.open() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(Piece::Failed(e)));
            return;
        }
    };
    let mut chunker = chunker.starting_at(reader.first_offset());
    loop {
        let started = Instant::now();
        let chunk = match chunker.next_chunk(&mut reader) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(Piece::Failed(e)));
                return;
            }
        };
        StageClock::add(&clock.read_hash, started);
        progress(chunk.data.len() as u64);
        if tx.send(Ok(chunk)).is_err() {
            return;
        }
    }
    let started = Instant::now();
    let done = match reader.finish() {
        Ok((sha256, bytes)) => Piece::Done { sha256, bytes },
        Err(e) => Piece::Failed(e),
    };
    StageClock::add(&clock.read_hash, started);
    let _ = tx.send(Err(done));
}

fn decode_chunks(
    rx: mpsc::Receiver<Result<Chunk, Piece>>,
    tx: &async_mpsc::Sender<Piece>,
    expected: Option<&'static str>,
    decoding: &Decoding,
) {
    let clock = &decoding.clock;
    let group = rayon::current_num_threads().max(1) * 2;
    let mut pending: Vec<Chunk> = Vec::with_capacity(group);
    // The chunks come unnumbered: each one's lines follow the previous one's.
    let mut next_line = 1;
    loop {
        // Block for one chunk, then take whatever else is already queued.
        let first = match rx.recv() {
            Ok(item) => item,
            Err(_) => return,
        };
        let mut end = None;
        match first {
            Ok(chunk) => pending.push(chunk),
            Err(piece) => end = Some(piece),
        }
        while end.is_none() && pending.len() < group {
            match rx.try_recv() {
                Ok(Ok(chunk)) => pending.push(chunk),
                Ok(Err(piece)) => end = Some(piece),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let decoded: Vec<DecodedChunk> = pending
            .par_iter()
            .map_init(
                || {
                    ChunkDecoder::with_views(decoding.views.clone())
                        .with_policy(decoding.policy.clone())
                        .with_code_checks(decoding.code_checks.clone())
                        .with_validation(decoding.validation.clone())
                },
                |decoder, chunk| decoder.decode(chunk, expected),
            )
            .collect();
        StageClock::add(&clock.decode, started);
        for (mut chunk, mut lines) in pending.drain(..).zip(decoded) {
            chunk.first_line = next_line;
            lines.number_from(next_line);
            next_line += lines.lines.len() as u64;
            if tx.blocking_send(Piece::Lines(chunk, lines)).is_err() {
                return;
            }
        }
        if let Some(piece) = end {
            let _ = tx.blocking_send(piece);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{SourceKind, UTF8_BOM};
    use crate::ndjson::{LineKind, RejectReason};
    use deltalake::arrow::array::AsArray;

    /// The bytes of `file` as a load reads them: opened, chunked, decoded.
    fn decode_file(file: &[u8], decoder: &mut ChunkDecoder) -> DecodedChunk {
        let input = Input::memory(
            "Patient.ndjson".into(),
            SourceKind::Files,
            file.to_vec().into(),
        );
        let mut reader = input.open().unwrap();
        let mut chunker = LineChunker::new(1 << 20).starting_at(reader.first_offset());
        let chunk = chunker.next_chunk(&mut reader).unwrap().unwrap();
        decoder.decode(&chunk, input.expected_type)
    }

    #[test]
    fn a_byte_order_mark_opening_a_file_is_skipped_and_latin1_is_named() {
        let patient = br#"{"resourceType":"Patient","id":"a","name":[{"family":"M"#;
        let latin1 = [&patient[..], b"\xfcller\"}]}"].concat();
        let body = [
            br#"{"resourceType":"Patient","id":"b"}"#,
            &b"\n"[..],
            &latin1[..],
        ]
        .concat();
        let file = [UTF8_BOM, &body[..]].concat();
        // Both parse paths: simd-json (no view) and the view tree.
        for mut decoder in [
            ChunkDecoder::default(),
            ChunkDecoder::with_views(Arc::new(ViewSet::defaults())),
        ] {
            let decoded = decode_file(&file, &mut decoder);
            let [first, second] = decoded.lines.as_slice() else {
                panic!("{:?}", decoded.lines)
            };
            assert!(
                matches!(&first.kind, LineKind::Resource(k) if &*k.id == "b"),
                "{first:?}"
            );
            assert_eq!(first.offset, 3, "offsets count the mark's bytes");
            let resources = decoded.resources[0].as_string::<i32>();
            assert_eq!(resources.value(0), r#"{"resourceType":"Patient","id":"b"}"#);
            assert_eq!(
                second.kind,
                LineKind::Rejected(RejectReason::NotUtf8 { at: patient.len() })
            );
            // Further into a file, the same bytes are no mark: the line is rejected.
            let later = [
                &body[..],
                b"\n",
                UTF8_BOM,
                br#"{"resourceType":"Patient","id":"c"}"#,
            ]
            .concat();
            let decoded = decode_file(&later, &mut decoder);
            assert!(matches!(decoded.lines[2].kind, LineKind::Rejected(_)));
        }
    }
}
