//! One input of a job, and the one way every input is opened.
//!
//! An [`Input`] is a byte stream of FHIR NDJSON (a local file, an object, an
//! HTTP body or NDJSON a converter produced in memory) plus what the ledger
//! must record about it. [`Input::open`] is the only opener `load`, `export`
//! and `view run` use: gzip is recognised by its magic bytes whatever the name,
//! a UTF-8 byte order mark opening the stream is skipped (RFC 8259 lets parsers
//! ignore it), and the stored bytes are SHA-256-hashed as they stream by.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fhir;

pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Which way in an input came by (recorded in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Local or object-store NDJSON files (`fhirlake load`).
    Files,
    /// Files of a Bulk Data `$export` (`fhirlake export`).
    Export,
    /// Pages of a REST incremental sync.
    Sync,
    /// FHIR converted from HL7 v2 messages.
    Hl7v2,
}

/// What an input is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// FHIR resources, one per line: loaded.
    Resources,
    /// A Bulk Data export log (`log.ndjson`): hashed and recorded, not loaded.
    ExportLog,
}

/// Where a stand-in for a missing `meta.lastUpdated` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandInSource {
    /// The user's `--as-of`.
    AsOf,
    /// The export's `transactionTime`.
    TransactionTime,
    /// When the file was last modified.
    FileMtime,
    /// When the job started (an input with no time of its own).
    IngestedAt,
    /// The HTTP `Date` of the server's answer (a sync page).
    ServerDate,
}

impl StandInSource {
    /// As recorded in `_last_updated_from` and the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            StandInSource::AsOf => "as_of",
            StandInSource::TransactionTime => "transaction_time",
            StandInSource::FileMtime => "file_mtime",
            StandInSource::IngestedAt => "ingested_at",
            StandInSource::ServerDate => "server_date",
        }
    }
}

/// A stand-in `meta.lastUpdated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    pub source: StandInSource,
    /// UTC microseconds.
    pub micros: i64,
}

impl StandIn {
    pub fn new(source: StandInSource, micros: i64) -> Self {
        Self { source, micros }
    }

    /// `text`, if it is a FHIR instant.
    pub fn parse(source: StandInSource, text: &str) -> Option<Self> {
        fhir::parse_instant_micros(text).map(|micros| Self::new(source, micros))
    }

    pub fn text(&self) -> String {
        fhir::instant_text(self.micros)
    }
}

/// Where an input's bytes live.
#[derive(Clone)]
pub enum InputBytes {
    Local(PathBuf),
    /// An object (e.g. `s3://bucket/export/Patient.ndjson`), read by
    /// streaming GETs on `runtime` from the reader thread.
    Object {
        store: Arc<dyn ObjectStore>,
        location: ObjectPath,
        runtime: tokio::runtime::Handle,
    },
    /// Bytes already in memory (an HTTP page, a converter's output).
    Memory(Bytes),
}

impl std::fmt::Debug for InputBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "Local({})", path.display()),
            Self::Object { location, .. } => write!(f, "Object({location})"),
            Self::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
        }
    }
}

/// One input of a job: its bytes and what the ledger must know about it.
#[derive(Debug, Clone)]
pub struct Input {
    /// What the ledger records: an absolute path, an object URL, a redacted URL.
    pub name: String,
    pub kind: SourceKind,
    pub role: InputRole,
    pub bytes: InputBytes,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification (UTC µs), when the store says.
    pub modified: Option<i64>,
    /// Stands in for a missing `meta.lastUpdated` (e.g. the export's
    /// transactionTime); `--as-of` overrides it, the file time is the fallback.
    pub stand_in: Option<StandIn>,
    /// The SHA-256 of the stored bytes when the source computed it already
    /// (a download): the load then records it instead of hashing again.
    pub sha256: Option<String>,
    /// The resource type the name promises (`Patient.000.ndjson`), if any:
    /// lines of another type are quarantined.
    pub expected_type: Option<&'static str>,
    /// Every resource of the input is a subset (the source asked for
    /// `_elements`), tagged `SUBSETTED` or not.
    pub subsetted: bool,
}

impl Input {
    /// A local file; reads its size and modification time.
    pub fn local(path: PathBuf, kind: SourceKind) -> io::Result<Self> {
        let meta = std::fs::metadata(&path)?;
        let modified = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).timestamp_micros());
        let name = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string();
        Ok(Self::new(
            name,
            kind,
            InputBytes::Local(path),
            meta.len(),
            modified,
        ))
    }

    /// NDJSON held in memory, recorded under `name`.
    pub fn memory(name: String, kind: SourceKind, bytes: Bytes) -> Self {
        let size = bytes.len() as u64;
        Self::new(name, kind, InputBytes::Memory(bytes), size, None)
    }

    pub fn new(
        name: String,
        kind: SourceKind,
        bytes: InputBytes,
        size: u64,
        modified: Option<i64>,
    ) -> Self {
        let file_name = name.rsplit(['/', '\\']).next().unwrap_or_default();
        Self {
            expected_type: fhir::type_from_file_name(file_name),
            name,
            kind,
            role: InputRole::Resources,
            bytes,
            size,
            modified,
            stand_in: None,
            sha256: None,
            subsetted: false,
        }
    }

    pub fn with_role(mut self, role: InputRole) -> Self {
        self.role = role;
        self
    }

    pub fn with_stand_in(mut self, stand_in: Option<StandIn>) -> Self {
        self.stand_in = stand_in;
        self
    }

    pub fn with_sha256(mut self, sha256: Option<String>) -> Self {
        self.sha256 = sha256;
        self
    }

    pub fn with_subsetted(mut self, subsetted: bool) -> Self {
        self.subsetted = subsetted;
        self
    }

    pub fn with_expected_type(mut self, expected: Option<&'static str>) -> Self {
        self.expected_type = expected;
        self
    }

    /// The local path, for a local input.
    pub fn path(&self) -> Option<&Path> {
        match &self.bytes {
            InputBytes::Local(path) => Some(path),
            _ => None,
        }
    }

    /// The stored bytes, unhashed and undecompressed. Blocks: call it off the
    /// async runtime (a reader thread or `block_in_place`).
    pub fn open_raw(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.bytes {
            InputBytes::Local(path) => Ok(Box::new(File::open(path)?)),
            InputBytes::Object {
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
            InputBytes::Memory(bytes) => Ok(Box::new(io::Cursor::new(bytes.clone()))),
        }
    }

    /// The input's NDJSON text bytes: gunzipped when the stored bytes are
    /// gzip, without a leading byte order mark, hashed as they are read
    /// (unless the source already knows the SHA-256).
    pub fn open(&self) -> io::Result<InputReader> {
        let raw = self.open_raw()?;
        let hashing = match &self.sha256 {
            Some(_) => HashingReader::counting(raw),
            None => HashingReader::new(raw),
        };
        let mut stored = BufReader::with_capacity(64 * 1024, hashing);
        let text = if stored.fill_buf()?.starts_with(&GZIP_MAGIC) {
            Text::Gzip(Box::new(MultiGzDecoder::new(stored)))
        } else {
            Text::Plain(stored)
        };
        let mut text = BufReader::with_capacity(64 * 1024, text);
        let skipped = if text.fill_buf()?.starts_with(UTF8_BOM) {
            text.consume(UTF8_BOM.len());
            UTF8_BOM.len() as u64
        } else {
            0
        };
        Ok(InputReader {
            text,
            skipped,
            known_sha256: self.sha256.clone(),
        })
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
/// file costs no second pass. Hashes the stored bytes (compressed, for gzip).
pub struct HashingReader<R> {
    inner: R,
    /// `None`: only counting (the checksum is known already).
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
        }
    }

    /// Counts the bytes without hashing them.
    pub fn counting(inner: R) -> Self {
        Self {
            inner,
            hasher: None,
            bytes: 0,
        }
    }

    /// The hex SHA-256 (empty when only counting) and byte count of
    /// everything read so far.
    pub fn finish(self) -> (String, u64) {
        let sha256 = self.hasher.map(|h| hex::encode(h.finalize()));
        (sha256.unwrap_or_default(), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The SHA-256 and size of everything `reader` yields.
pub fn sha256_of(reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

type Stored = BufReader<HashingReader<Box<dyn Read + Send>>>;

/// The text of an input: the stored bytes, or their gzip decoding.
enum Text {
    Plain(Stored),
    Gzip(Box<MultiGzDecoder<Stored>>),
}

impl Read for Text {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Text::Plain(r) => r.read(buf),
            Text::Gzip(r) => r.read(buf),
        }
    }
}

/// An opened input: its text, and at the end the stored bytes' checksum.
pub struct InputReader {
    text: BufReader<Text>,
    /// Bytes skipped before the first line (a byte order mark).
    skipped: u64,
    known_sha256: Option<String>,
}

impl InputReader {
    /// Offset in the text of the first byte this reader yields.
    pub fn first_offset(&self) -> u64 {
        self.skipped
    }

    /// Whether the stored bytes are gzip.
    pub fn is_gzip(&self) -> bool {
        matches!(self.text.get_ref(), Text::Gzip(_))
    }

    /// Reads the rest of the stored bytes (a gzip trailer, say) and returns
    /// the hex SHA-256 and size of the stored input.
    pub fn finish(self) -> io::Result<(String, u64)> {
        let mut stored = match self.text.into_inner() {
            Text::Plain(stored) => stored,
            Text::Gzip(decoder) => decoder.into_inner(),
        };
        io::copy(&mut stored, &mut io::sink())?;
        let (computed, bytes) = stored.into_inner().finish();
        Ok((self.known_sha256.unwrap_or(computed), bytes))
    }
}

impl Read for InputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.text.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn open(bytes: &[u8], name: &str) -> (Vec<u8>, InputReader) {
        let input = Input::memory(name.into(), SourceKind::Files, Bytes::from(bytes.to_vec()));
        let mut reader = input.open().unwrap();
        let mut text = Vec::new();
        reader.read_to_end(&mut text).unwrap();
        (text, reader)
    }

    #[test]
    fn hash_matches_known_digest() {
        let (sha, bytes) = sha256_of(&b"abc"[..]).unwrap();
        assert_eq!(bytes, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn gzip_is_told_by_content_not_name_and_the_stored_bytes_are_hashed() {
        let body = b"{\"resourceType\":\"Patient\",\"id\":\"a\"}\n".repeat(5000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        for name in ["Patient.ndjson", "Patient.ndjson.gz", "export"] {
            let (text, reader) = open(&gz, name);
            assert!(reader.is_gzip(), "{name}");
            assert_eq!(text, body, "{name}");
            assert_eq!(reader.finish().unwrap(), sha256_of(&gz[..]).unwrap());
        }
        // And a plain file named .gz is read as it is.
        let (text, reader) = open(&body, "Patient.ndjson.gz");
        assert!(!reader.is_gzip());
        assert_eq!(text, body);
        assert_eq!(reader.finish().unwrap(), sha256_of(&body[..]).unwrap());
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_once_and_counted_in_offsets() {
        let body = [UTF8_BOM, b"{}\n", UTF8_BOM, b"{}\n"].concat();
        let (text, reader) = open(&body, "x.ndjson");
        assert_eq!(reader.first_offset(), 3);
        assert_eq!(text, [b"{}\n", UTF8_BOM, b"{}\n"].concat());
        assert_eq!(reader.finish().unwrap().1, body.len() as u64);
    }

    #[test]
    fn a_cut_gzip_stream_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b"{}\n".repeat(10_000)).unwrap();
        let gz = gz.finish().unwrap();
        let input = Input::memory(
            "x".into(),
            SourceKind::Files,
            Bytes::from(gz[..gz.len() / 2].to_vec()),
        );
        let mut reader = input.open().unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }
}
