//! Opening one NDJSON input, local or in an object store: plain or gzip,
//! hashed while it streams.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use crate::fhir;

/// Where an input's bytes live.
#[derive(Clone)]
pub enum InputSource {
    Local,
    /// An object (e.g. `s3://bucket/export/Patient.ndjson`), read by streaming
    /// GETs on `runtime` from the reader thread.
    Object {
        store: Arc<dyn ObjectStore>,
        location: ObjectPath,
        runtime: tokio::runtime::Handle,
    },
}

impl std::fmt::Debug for InputSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::Object { location, .. } => write!(f, "Object({location})"),
        }
    }
}

/// One input file as the load path sees it.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Local path, or the object's URL (`s3://…`) for objects.
    pub path: PathBuf,
    pub source: InputSource,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification, UTC microseconds, if the store says.
    pub modified: Option<i64>,
    /// The resource type the file's name promises (`Patient.000.ndjson`), if any.
    pub expected_type: Option<&'static str>,
    pub gzip: bool,
}

impl InputFile {
    /// A local file; reads its size and modification time.
    pub fn local(path: PathBuf) -> io::Result<Self> {
        let meta = std::fs::metadata(&path)?;
        let modified = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).timestamp_micros());
        Ok(Self::with_source(
            path,
            InputSource::Local,
            meta.len(),
            modified,
        ))
    }

    pub fn with_source(
        path: PathBuf,
        source: InputSource,
        size: u64,
        modified: Option<i64>,
    ) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        Self {
            expected_type: fhir::type_from_file_name(name),
            gzip: name.ends_with(".gz"),
            path,
            source,
            size,
            modified,
        }
    }

    /// The stored bytes, unhashed and undecompressed. Blocks: call it off the
    /// async runtime (a reader thread or `block_in_place`).
    pub fn open_raw(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.source {
            InputSource::Local => Ok(Box::new(File::open(&self.path)?)),
            InputSource::Object {
                store,
                location,
                runtime,
            } => {
                let result = runtime
                    .block_on(store.get(location))
                    .map_err(io::Error::other)?;
                Ok(Box::new(ObjectReader {
                    runtime: runtime.clone(),
                    stream: result.into_stream(),
                    current: Bytes::new(),
                }))
            }
        }
    }
}

/// `Read` over an object's byte stream, driven from a non-async thread.
struct ObjectReader {
    runtime: tokio::runtime::Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Counts and SHA-256-hashes the bytes as they are read, so the checksum of a
/// file costs no second pass. Hashes the stored bytes (compressed, for `.gz`).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The hex SHA-256 and byte count of everything read so far.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A readable input that yields NDJSON bytes and, at the end, the stored
/// file's checksum.
pub enum InputReader {
    Plain(HashingReader<Box<dyn Read + Send>>),
    Gzip(Box<MultiGzDecoder<HashingReader<Box<dyn Read + Send>>>>),
}

impl InputReader {
    /// Reads the rest of the stored bytes (a gzip trailer, say) and returns
    /// the hex SHA-256 and size of the stored file.
    pub fn finish(self) -> io::Result<(String, u64)> {
        let mut hashing = match self {
            Self::Plain(r) => r,
            Self::Gzip(d) => d.into_inner(),
        };
        io::copy(&mut hashing, &mut io::sink())?;
        Ok(hashing.finish())
    }
}

impl Read for InputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
        }
    }
}

pub fn open_input(file: &InputFile) -> io::Result<InputReader> {
    let hashing = HashingReader::new(file.open_raw()?);
    Ok(if file.gzip {
        InputReader::Gzip(Box::new(MultiGzDecoder::new(hashing)))
    } else {
        InputReader::Plain(hashing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_known_digest() {
        let mut reader = HashingReader::new(&b"abc"[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (sha, bytes) = reader.finish();
        assert_eq!(bytes, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
