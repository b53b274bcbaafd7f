//! Streaming one manifest file to disk: SHA-256 and line count computed as the
//! bytes arrive, written to `<name>.part` and renamed only when complete, so a
//! file on disk under its final name is always whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::http::{Attempt, HttpClient, HttpError, is_transient, redact_url};
use crate::load::HashingReader;

/// A completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `<stem>.ndjson`, or `<stem>.ndjson.gz` when the server sent gzip.
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Non-blank lines after decompression.
    pub lines: u64,
    pub content_encoding: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 404/410: the link expired; a fresh manifest may have a new one.
    #[error("{url}: HTTP {status} (the file expired or is gone)")]
    Expired { url: String, status: u16 },
    #[error("{url}: HTTP {status}: {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The retries ran out, or the host's breaker is open.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Counts non-blank lines of the bytes written to it.
#[derive(Default)]
pub struct LineCounter {
    pub lines: u64,
    in_content: bool,
}

impl LineCounter {
    pub fn feed(&mut self, bytes: &[u8]) {
        // Every downloaded byte passes here: jump between newlines with
        // memchr; a line's content check usually stops at its first byte.
        let has_content = |segment: &[u8]| segment.iter().any(|b| !b.is_ascii_whitespace());
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', bytes) {
            if self.in_content || has_content(&bytes[start..end]) {
                self.lines += 1;
            }
            self.in_content = false;
            start = end + 1;
        }
        self.in_content |= has_content(&bytes[start..]);
    }

    /// Counts a last line without a trailing newline.
    pub fn finish(&mut self) -> u64 {
        if std::mem::take(&mut self.in_content) {
            self.lines += 1;
        }
        self.lines
    }
}

impl Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts lines of plain or gzip bytes as they stream by.
enum Counter {
    Plain(LineCounter),
    Gzip(Box<flate2::write::MultiGzDecoder<LineCounter>>),
}

impl Counter {
    /// A counter for bytes in `encoding` (`None`: plain; `Some("gzip")`).
    fn for_encoding(encoding: Option<&str>) -> Self {
        match encoding {
            None => Counter::Plain(LineCounter::default()),
            Some(_) => Counter::Gzip(Box::new(flate2::write::MultiGzDecoder::new(
                LineCounter::default(),
            ))),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Counter::Plain(c) => {
                c.feed(bytes);
                Ok(())
            }
            Counter::Gzip(d) => d.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<u64> {
        match self {
            Counter::Plain(mut c) => Ok(c.finish()),
            Counter::Gzip(d) => Ok(d.finish()?.finish()),
        }
    }
}

/// The SHA-256 of a file on disk (to trust a download from an earlier run).
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    Ok(crate::load::sha256_of(std::fs::File::open(path)?)?.0)
}

/// A download that finished (was renamed from `.part`) in an earlier run that
/// died before recording it: re-hashed and re-counted from disk so it need not
/// be fetched again. `None` when no complete file is there.
pub fn completed_earlier(stem: &Path) -> std::io::Result<Option<Received>> {
    for (extension, encoding) in [("ndjson", None), ("ndjson.gz", Some("gzip"))] {
        let path = stem.with_extension(extension);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut counter = Counter::for_encoding(encoding);
        let mut reader = HashingReader::new(file);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            counter.feed(&buf[..n])?;
        }
        let (sha256, bytes) = reader.finish();
        return Ok(Some(Received {
            path,
            bytes,
            sha256,
            lines: counter.finish()?,
            content_encoding: encoding.map(str::to_owned),
        }));
    }
    Ok(None)
}

/// What one download attempt came to.
pub type Try = Attempt<Result<Received, DownloadError>>;

/// One attempt to download `url` to `<stem>.ndjson[.gz]` (via
/// `<stem>.part`); the shared client's loop retries it. Sends the token only
/// when `with_token`.
pub async fn download_once(
    http: &HttpClient,
    url: &Url,
    with_token: bool,
    stem: &Path,
) -> Result<Try, HttpError> {
    let shown = redact_url(url.as_str());
    let request = http
        .client
        .get(url.clone())
        .header("Accept", "application/fhir+ndjson")
        .header("Accept-Encoding", "gzip");
    let response = match http.authorize(request, with_token).await?.send().await {
        Ok(response) => response,
        Err(e) => {
            return Ok(Attempt::Retry {
                reason: e.without_url().to_string(),
                retry_after: None,
                host_failed: true,
            });
        }
    };
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED && with_token {
        let refused = DownloadError::Refused {
            url: shown,
            status: 401,
            reason: "the server refused the access token".into(),
        };
        return Ok(Attempt::Unauthorized(Err(refused)));
    }
    if is_transient(status) {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Ok(Attempt::Retry {
            reason: format!("HTTP {status}"),
            retry_after,
            host_failed: status != StatusCode::TOO_MANY_REQUESTS,
        });
    }
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Ok(Attempt::Done(Err(DownloadError::Expired {
            url: shown,
            status: status.as_u16(),
        })));
    }
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Ok(Attempt::Done(Err(DownloadError::Refused {
            url: shown,
            status: status.as_u16(),
            reason: super::kickoff::diagnostics(&body),
        })));
    }
    let encoding = response
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v != "identity");
    if let Some(other) = encoding.as_deref().filter(|e| *e != "gzip") {
        return Ok(Attempt::Done(Err(DownloadError::Refused {
            url: shown,
            status: status.as_u16(),
            reason: format!("unsupported Content-Encoding {other:?} (only gzip was offered)"),
        })));
    }
    Ok(match save(response, encoding, stem).await {
        Ok(received) => Attempt::Done(Ok(received)),
        Err(Saving::Cut(reason)) => Attempt::Retry {
            reason,
            retry_after: None,
            host_failed: true,
        },
        Err(Saving::Io(e)) => Attempt::Done(Err(e)),
    })
}

/// Why a body could not be saved.
enum Saving {
    /// The body was cut or its gzip stream broken: worth another try.
    Cut(String),
    Io(DownloadError),
}

/// Streams the body to `<stem>.part`, hashing and counting it, and renames
/// it once whole.
async fn save(
    response: reqwest::Response,
    encoding: Option<String>,
    stem: &Path,
) -> Result<Received, Saving> {
    let mut counter = Counter::for_encoding(encoding.as_deref());
    let part = stem.with_extension("part");
    let dest = stem.with_extension(if encoding.is_some() {
        "ndjson.gz"
    } else {
        "ndjson"
    });
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Saving::Io(DownloadError::Io { path, source })
    };
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    }
    let mut file = tokio::fs::File::create(&part).await.map_err(io(&part))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Saving::Cut(format!(
                "body cut after {bytes} bytes ({})",
                e.without_url()
            ))
        })?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        counter
            .feed(&chunk)
            .map_err(|e| Saving::Cut(format!("gzip stream corrupt after {bytes} bytes: {e}")))?;
        file.write_all(&chunk).await.map_err(io(&part))?;
    }
    file.flush().await.map_err(io(&part))?;
    file.sync_all().await.map_err(io(&part))?;
    drop(file);
    let lines = counter
        .finish()
        .map_err(|e| Saving::Cut(format!("gzip stream truncated ({e})")))?;
    tokio::fs::rename(&part, &dest).await.map_err(io(&dest))?;
    Ok(Received {
        path: dest,
        bytes,
        sha256: hex::encode(hasher.finalize()),
        lines,
        content_encoding: encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_file_is_found_hashed_and_counted_plain_or_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("00000-patient");
        assert_eq!(completed_earlier(&stem).unwrap(), None);
        std::fs::write(stem.with_extension("part"), b"{}\n").unwrap();
        assert_eq!(
            completed_earlier(&stem).unwrap(),
            None,
            ".part is never whole"
        );

        let body = b"{\"a\":1}\n\n{\"a\":2}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::write(stem.with_extension("ndjson.gz"), &gz).unwrap();
        let found = completed_earlier(&stem).unwrap().unwrap();
        assert_eq!(found.lines, 2);
        assert_eq!(found.bytes, gz.len() as u64);
        assert_eq!(found.sha256, hex::encode(Sha256::digest(&gz)));
        assert_eq!(found.content_encoding.as_deref(), Some("gzip"));

        std::fs::write(stem.with_extension("ndjson.gz"), &gz[..gz.len() / 2]).unwrap();
        assert!(completed_earlier(&stem).is_err(), "a cut gzip is not whole");
    }

    #[test]
    fn line_counter_ignores_blank_lines_and_counts_an_unterminated_last_line() {
        let mut c = LineCounter::default();
        c.feed(b"{\"a\":1}\n\n  \n{\"a\"");
        c.feed(b":2}\r\n{\"a\":3}");
        assert_eq!(c.finish(), 3);
    }
}
