//! Newline-aligned chunking of a byte stream, with line numbers and offsets.

/// A run of whole lines cut from one input, plus where it starts in that input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whole lines, each ending in `\n` except possibly the input's last one.
    pub data: Vec<u8>,
    /// 1-based number of the chunk's first line in its input.
    pub first_line: u64,
    /// Byte offset of the chunk's first byte in its (decompressed) input.
    pub first_offset: u64,
}

/// Cuts a byte stream into chunks of at least `target_bytes` that end on a
/// newline. Feed it any piece sizes; the chunks (and so the line numbers and
/// offsets) depend only on the bytes and the target, never on the pieces.
#[derive(Debug)]
pub struct LineChunker {
    target_bytes: usize,
    pending: Vec<u8>,
    next_line: u64,
    next_offset: u64,
    /// Buffers of consumed chunks, reused so a long file does not allocate
    /// (and page-fault) a fresh multi-megabyte buffer per chunk.
    spare: Vec<Vec<u8>>,
}

impl LineChunker {
    pub fn new(target_bytes: usize) -> Self {
        let target_bytes = target_bytes.max(1);
        Self {
            target_bytes,
            pending: Vec::with_capacity(target_bytes + 64 * 1024),
            next_line: 1,
            next_offset: 0,
            spare: Vec::new(),
        }
    }

    /// Hands back a consumed chunk's buffer for reuse.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < 8 && buffer.capacity() >= self.target_bytes {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// Adds `bytes`; returns each chunk that is complete, in order.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Chunk>) {
        while !bytes.is_empty() {
            let room = self.target_bytes.saturating_sub(self.pending.len());
            if room > 0 {
                let take = room.min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.pending.len() < self.target_bytes {
                    continue;
                }
            }
            // At or past the target: cut at the first newline at or after it,
            // so a chunk is never shorter than the target unless input ends.
            let search_from = self.target_bytes - 1;
            if let Some(pos) = memchr::memchr(b'\n', &self.pending[search_from..]) {
                let cut = search_from + pos + 1;
                self.emit(cut, out);
            } else if let Some(pos) = memchr::memchr(b'\n', bytes) {
                self.pending.extend_from_slice(&bytes[..=pos]);
                bytes = &bytes[pos + 1..];
                let cut = self.pending.len();
                self.emit(cut, out);
            } else {
                // One line longer than the target: keep accumulating it.
                self.pending.extend_from_slice(bytes);
                bytes = &[];
            }
        }
    }

    /// Returns the final, possibly unterminated, chunk.
    pub fn finish(&mut self) -> Option<Chunk> {
        if self.pending.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.pending);
        Some(self.make_chunk(data))
    }

    fn emit(&mut self, cut: usize, out: &mut Vec<Chunk>) {
        let mut next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.target_bytes + 64 * 1024));
        next.extend_from_slice(&self.pending[cut..]);
        self.pending.truncate(cut);
        let data = std::mem::replace(&mut self.pending, next);
        let chunk = self.make_chunk(data);
        out.push(chunk);
    }

    fn make_chunk(&mut self, data: Vec<u8>) -> Chunk {
        let chunk = Chunk {
            first_line: self.next_line,
            first_offset: self.next_offset,
            data,
        };
        self.next_line += memchr::memchr_iter(b'\n', &chunk.data).count() as u64;
        self.next_offset += chunk.data.len() as u64;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_all(input: &[u8], target: usize, piece: usize) -> Vec<Chunk> {
        let mut chunker = LineChunker::new(target);
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            chunker.push(part, &mut out);
        }
        out.extend(chunker.finish());
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
    fn line_numbers_and_offsets_follow_the_input() {
        let chunks = chunk_all(b"a\nbb\nccc\n", 2, 1);
        let starts: Vec<(u64, u64)> = chunks
            .iter()
            .map(|c| (c.first_line, c.first_offset))
            .collect();
        assert_eq!(starts, vec![(1, 0), (2, 2), (3, 5)]);
    }
}
