//! Opening one NDJSON input: plain or gzip, hashed while it streams.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::fhir;

/// One input file as the load path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// The resource type the file's name promises (`Patient.000.ndjson`), if any.
    pub expected_type: Option<&'static str>,
    pub gzip: bool,
}

impl InputFile {
    pub fn new(path: PathBuf) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let gzip = name.ends_with(".gz");
        Self {
            expected_type: fhir::type_from_file_name(name),
            gzip,
            path,
        }
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
    Plain(HashingReader<File>),
    Gzip(Box<MultiGzDecoder<HashingReader<File>>>),
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

pub fn open_input(path: &Path, gzip: bool) -> io::Result<InputReader> {
    let hashing = HashingReader::new(File::open(path)?);
    Ok(if gzip {
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
