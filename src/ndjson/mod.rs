//! NDJSON in, keyed resource lines out.
//!
//! Bytes arrive in arbitrary pieces (file reads, HTTP bodies, S3 ranges);
//! [`LineChunker`] cuts them into newline-aligned [`Chunk`]s that carry their
//! first line number and byte offset, and [`ChunkDecoder`] parses every line of
//! a chunk with simd-json's tape (no per-node allocation) into a
//! [`DecodedLine`]: the resource's keys, or the reason it was rejected.
//! [`open_input`] turns a local file or an object into a hashed byte stream;
//! nothing here writes tables. Chunks are independent, so callers decode them
//! on all cores.

mod chunker;
mod decode;
mod input;

pub use chunker::{BufferPool, Chunk, LineChunker};
pub use decode::{
    ChunkDecoder, DecodedChunk, DecodedLine, LineKind, RejectReason, ResourceKeys, UTF8_BOM,
    ViewRows,
};
pub use input::{HashingReader, InputFile, InputSource, open_input};
