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

use crate::ndjson::{
    BufferPool, Chunk, ChunkDecoder, DecodedChunk, InputFile, LineChunker, open_input,
};
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

/// Starts reading and decoding `file`; pieces arrive in input order. Chunk
/// buffers come from (and go back to) `buffers`, shared by a job's files.
pub fn start(
    file: &InputFile,
    chunk_bytes: usize,
    buffers: BufferPool,
    views: Arc<ViewSet>,
    clock: Arc<StageClock>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> FilePipeline {
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Result<Chunk, Piece>>(4);
    let (piece_tx, piece_rx) = async_mpsc::channel::<Piece>(4);

    let reader_file = file.clone();
    let reader_clock = clock.clone();
    let chunker = LineChunker::new(chunk_bytes)
        .with_pool(buffers.clone())
        // Lines are numbered after decoding, where they are walked anyway.
        .without_line_numbers();
    std::thread::spawn(move || {
        read_file(&reader_file, chunker, &chunk_tx, &reader_clock, &*progress)
    });

    let expected = file.expected_type;
    std::thread::spawn(move || decode_chunks(chunk_rx, &piece_tx, expected, &views, &clock));
    FilePipeline {
        pieces: piece_rx,
        buffers,
    }
}

fn read_file(
    file: &InputFile,
    mut chunker: LineChunker,
    tx: &mpsc::SyncSender<Result<Chunk, Piece>>,
    clock: &StageClock,
    progress: &(dyn Fn(u64) + Send + Sync),
) {
    let mut reader = match open_input(file) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(Piece::Failed(e)));
            return;
        }
    };
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
    views: &Arc<ViewSet>,
    clock: &StageClock,
) {
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
                || ChunkDecoder::with_views(views.clone()),
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
