//! Newline-aligned chunking of a byte stream, with line numbers and offsets.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// A run of whole lines cut from one input, plus where it starts in that input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whole lines, each ending in `\n` except possibly the input's last one.
    pub data: Vec<u8>,
    /// 1-based number of the chunk's first line in its input (0 from a
    /// chunker [`without_line_numbers`](LineChunker::without_line_numbers)).
    pub first_line: u64,
    /// Byte offset of the chunk's first byte in its (decompressed) input.
    pub first_offset: u64,
}

/// Buffers of consumed chunks, for reuse. One pool can serve the chunkers
/// of many files (a job's), so each file does not allocate, zero and
/// page-fault its own set of multi-megabyte buffers.
#[derive(Debug, Default, Clone)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers a pool keeps; more are dropped.
const POOLED_BUFFERS: usize = 16;

impl BufferPool {
    /// Hands back a consumed chunk's buffer.
    pub fn put(&self, mut buffer: Vec<u8>) {
        let mut pool = self.0.lock().expect("buffer pool poisoned");
        if pool.len() < POOLED_BUFFERS {
            // Only the tail past the last cut is zeroed: the buffer was full once.
            buffer.resize(buffer.capacity(), 0);
            pool.push(buffer);
        }
    }

    /// A pooled buffer of at least `len` bytes, if there is one.
    fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut pool = self.0.lock().expect("buffer pool poisoned");
        let at = pool.iter().rposition(|b| b.len() >= len)?;
        Some(pool.swap_remove(at))
    }
}

/// Bytes asked of the reader per call: small enough that the hashing
/// reader and the newline search still find them in cache.
const READ_BYTES: usize = 1 << 20;
/// Room past the target in each buffer for the line the target falls in.
const SLACK_BYTES: usize = 64 * 1024;

/// Cuts what a reader yields into chunks of at least `target_bytes` that end
/// on a newline. Reads land straight in the chunk's buffer; only the line a
/// cut falls in is copied (to the next buffer). The chunks (and so the line
/// numbers and offsets) depend only on the bytes and the target, never on
/// how much each read returns.
#[derive(Debug)]
pub struct LineChunker {
    target_bytes: usize,
    /// The chunk being filled; `buf[..filled]` holds input.
    buf: Vec<u8>,
    filled: usize,
    /// `buf[..scanned]` past the target holds no newline (a long line).
    scanned: usize,
    /// `None`: lines are not counted here (see [`LineChunker::without_line_numbers`]).
    next_line: Option<u64>,
    next_offset: u64,
    /// Where consumed chunks' buffers come back for reuse.
    pool: BufferPool,
}

impl LineChunker {
    pub fn new(target_bytes: usize) -> Self {
        let target_bytes = target_bytes.max(1);
        Self {
            target_bytes,
            buf: Vec::new(),
            filled: 0,
            scanned: 0,
            next_line: Some(1),
            next_offset: 0,
            pool: BufferPool::default(),
        }
    }

    /// Takes buffers from (and so shares them through) `pool`.
    pub fn with_pool(mut self, pool: BufferPool) -> Self {
        self.pool = pool;
        self
    }

    /// Chunks get `first_line` 0: the caller numbers lines itself, as the
    /// load pipeline does after decoding (one pass over the bytes fewer).
    pub fn without_line_numbers(mut self) -> Self {
        self.next_line = None;
        self
    }

    /// The first chunk starts at byte `offset` of the input (bytes before
    /// it, such as a byte order mark, were skipped by the reader).
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.next_offset = offset;
        self
    }

    /// Hands back a consumed chunk's buffer for reuse.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.pool.put(buffer);
    }

    /// Reads until a chunk is complete and returns it; `None` at the end of
    /// the input. The last chunk may lack a final newline.
    pub fn next_chunk(&mut self, reader: &mut dyn Read) -> io::Result<Option<Chunk>> {
        if self.buf.is_empty() {
            self.buf = self.fresh_buffer();
        }
        loop {
            if self.filled >= self.target_bytes {
                // Cut at the first newline at or after the target, so a chunk
                // is never shorter than the target unless the input ends.
                let from = self.scanned.max(self.target_bytes - 1);
                if let Some(pos) = memchr::memchr(b'\n', &self.buf[from..self.filled]) {
                    return Ok(Some(self.cut(from + pos + 1)));
                }
                self.scanned = self.filled;
            }
            if self.filled == self.buf.len() {
                // One line longer than the buffer: make room for it.
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let end = self.buf.len().min(self.filled + READ_BYTES);
            let n = match reader.read(&mut self.buf[self.filled..end]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok((self.filled > 0).then(|| self.cut(self.filled)));
            }
            self.filled += n;
        }
    }

    fn fresh_buffer(&mut self) -> Vec<u8> {
        let len = self.target_bytes + SLACK_BYTES;
        self.pool.take(len).unwrap_or_else(|| vec![0; len])
    }

    /// Emits `buf[..cut]`; what follows it starts the next buffer.
    fn cut(&mut self, cut: usize) -> Chunk {
        let rest = self.filled - cut;
        let mut next = self.fresh_buffer();
        if next.len() < rest + 1 {
            next.resize((rest + 1).next_power_of_two(), 0);
        }
        next[..rest].copy_from_slice(&self.buf[cut..self.filled]);
        let mut data = std::mem::replace(&mut self.buf, next);
        data.truncate(cut);
        self.filled = rest;
        self.scanned = 0;
        let chunk = Chunk {
            first_line: self.next_line.unwrap_or(0),
            first_offset: self.next_offset,
            data,
        };
        if let Some(line) = self.next_line.as_mut() {
            *line += memchr::memchr_iter(b'\n', &chunk.data).count() as u64;
        }
        self.next_offset += chunk.data.len() as u64;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `piece` bytes per call.
    pub struct Pieces<'a> {
        pub data: &'a [u8],
        pub piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn chunk_all(input: &[u8], target: usize, piece: usize) -> Vec<Chunk> {
        let mut chunker = LineChunker::new(target);
        let mut reader = Pieces { data: input, piece };
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk(&mut reader).unwrap() {
            out.push(chunk);
        }
        out
    }

    #[test]
    fn chunks_are_independent_of_piece_size() {
        let input = b"{\"a\":1}\n{\"bb\":22}\n\n{\"ccc\":333}\n{\"d\":4}";
        for target in [1, 3, 8, 17, 4096] {
            let reference = chunk_all(input, target, input.len());
            for piece in [1, 3, 5, 7, 4096] {
                assert_eq!(
                    chunk_all(input, target, piece),
                    reference,
                    "target {target} piece {piece}"
                );
            }
            let joined: Vec<u8> = reference.iter().flat_map(|c| c.data.clone()).collect();
            assert_eq!(joined, input);
            for chunk in &reference[..reference.len() - 1] {
                assert_eq!(chunk.data.last(), Some(&b'\n'));
            }
        }
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_kept_whole() {
        let long = "x".repeat(3 * SLACK_BYTES);
        let input = format!("a\n{long}\nb\n{long}");
        for piece in [7, 4096, input.len()] {
            let chunks = chunk_all(input.as_bytes(), 4, piece);
            let lines: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
            let expected = [format!("a\n{long}\n"), format!("b\n{long}")];
            assert_eq!(lines, expected.map(String::into_bytes), "piece {piece}");
        }
    }

    #[test]
    fn recycled_buffers_give_the_same_chunks() {
        let input: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let reference = chunk_all(&input, 100, 33);
        let mut chunker = LineChunker::new(100);
        let mut reader = Pieces {
            data: &input,
            piece: 33,
        };
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk(&mut reader).unwrap() {
            out.push(chunk.clone());
            chunker.recycle(chunk.data);
        }
        assert_eq!(out, reference);
    }

    #[test]
    fn chunkers_sharing_a_pool_reuse_each_others_buffers() {
        let pool = BufferPool::default();
        let mut first = LineChunker::new(16).with_pool(pool.clone());
        let chunk = first.next_chunk(&mut &b"{\"a\":1}\n"[..]).unwrap().unwrap();
        let address = chunk.data.as_ptr();
        first.recycle(chunk.data);
        // The next file's chunker takes the buffer instead of allocating one.
        let mut second = LineChunker::new(16).with_pool(pool);
        let chunk = second
            .next_chunk(&mut &b"{\"b\":2}\n"[..])
            .unwrap()
            .unwrap();
        assert_eq!(chunk.data, b"{\"b\":2}\n");
        assert_eq!(chunk.data.as_ptr(), address);
    }

    #[test]
    fn line_numbers_and_offsets_follow_the_input() {
        let chunks = chunk_all(b"a\nbb\nccc\n", 2, 1);
        let starts: Vec<(u64, u64)> = chunks
            .iter()
            .map(|c| (c.first_line, c.first_offset))
            .collect();
        assert_eq!(starts, vec![(1, 0), (2, 2), (3, 5)]);
    }
}
