//! NDJSON in, keyed resource lines out.
//!
//! Bytes arrive in arbitrary pieces (file reads, HTTP bodies, S3 ranges);
//! [`LineChunker`] cuts them into newline-aligned [`Chunk`]s that carry their
//! first line number and byte offset, and [`ChunkDecoder`] parses every line of
//! a chunk with simd-json's tape (no per-node allocation) into a
//! [`DecodedLine`]: the resource's keys, or the reason it was rejected.
//! Nothing here does I/O (the load job opens inputs); chunks are
//! independent, so callers decode them on all cores.

mod chunker;
mod decode;

pub use chunker::{BufferPool, Chunk, LineChunker};
pub use decode::{
    ChunkDecoder, DecodedChunk, DecodedLine, LineKind, RejectReason, ResourceKeys, ViewRows,
};
