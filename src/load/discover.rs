//! Turning the user's paths (local paths or `s3://` URLs) into input files,
//! and finding the export's `transactionTime` (from a Bulk Data `log.ndjson`
//! or `manifest.json` beside the files) to stand in for missing `meta.lastUpdated`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt};
use url::Url;

use crate::lake::{LakeError, object_store_for};
use crate::ndjson::{InputFile, InputSource};

/// What the user's paths expand to.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Resource files, in a stable order (sorted per directory).
    pub files: Vec<InputFile>,
    /// Bulk Data export logs found (read, not loaded).
    pub export_logs: Vec<InputFile>,
    /// Directory (or object prefix) → the export's transactionTime (RFC 3339).
    pub transaction_times: BTreeMap<PathBuf, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("input {path}: {source}; check the path exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "input {path}: {source}; check the URL, the credentials (AWS_* or --storage-option) and that the object exists"
    )]
    Object {
        path: PathBuf,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("input {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: Box<LakeError>,
    },
    #[error("input {path} is a directory (or prefix) with no .ndjson or .ndjson.gz files")]
    EmptyDirectory { path: PathBuf },
}

fn is_ndjson_name(name: &str) -> bool {
    [".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// `s3://…` (or any non-file URL scheme) inputs are objects.
fn object_url(path: &Path) -> Option<Url> {
    let text = path.to_str()?;
    let url = Url::parse(text).ok()?;
    (url.scheme().len() > 1 && url.scheme() != "file" && text.contains("://")).then_some(url)
}

/// Expands the inputs. `storage_options` configure object-store inputs (the
/// lake's options: one set of credentials for both).
pub async fn discover(
    paths: &[PathBuf],
    storage_options: &HashMap<String, String>,
) -> Result<Discovered, DiscoverError> {
    let mut found = Discovered::default();
    for path in paths {
        let before = found.files.len() + found.export_logs.len();
        let is_dir = if let Some(url) = object_url(path) {
            discover_objects(&mut found, path, &url, storage_options).await?
        } else {
            discover_local(&mut found, path)?
        };
        if is_dir && found.files.len() + found.export_logs.len() == before {
            return Err(DiscoverError::EmptyDirectory { path: path.clone() });
        }
    }
    Ok(found)
}

/// Returns whether `path` was a directory.
fn discover_local(found: &mut Discovered, path: &Path) -> Result<bool, DiscoverError> {
    let io = |source| DiscoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let bytes = read_if_small_metadata_file(path);
        add_file(
            found,
            InputFile::local(path.to_path_buf()).map_err(io)?,
            &dir,
            bytes.as_deref(),
        );
        return Ok(false);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for file in names {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "manifest.json" {
            if let Some(time) = std::fs::read(&file)
                .ok()
                .and_then(|b| manifest_transaction_time(&b))
            {
                found.transaction_times.insert(path.to_path_buf(), time);
            }
        } else if is_ndjson_name(name) {
            let bytes = read_if_small_metadata_file(&file);
            let input = InputFile::local(file.clone()).map_err(io)?;
            add_file(found, input, path, bytes.as_deref());
        }
    }
    Ok(true)
}

fn read_if_small_metadata_file(path: &Path) -> Option<Vec<u8>> {
    (path.file_name()? == "log.ndjson").then(|| std::fs::read(path).ok())?
}

/// Returns whether `url` named a prefix (a "directory") rather than one object.
async fn discover_objects(
    found: &mut Discovered,
    path: &Path,
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<bool, DiscoverError> {
    let mut bucket = url.clone();
    bucket.set_path("/");
    let store = object_store_for(&bucket, options).map_err(|e| DiscoverError::Store {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let object_err = |source| DiscoverError::Object {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let key = url.path().trim_matches('/').to_owned();
    let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    let runtime = tokio::runtime::Handle::current();
    let make_input = |meta: &ObjectMeta| {
        let file_url = PathBuf::from(format!("{base}/{}", meta.location));
        let source = InputSource::Object {
            store: store.clone(),
            location: meta.location.clone(),
            runtime: runtime.clone(),
        };
        InputFile::with_source(
            file_url,
            source,
            meta.size,
            Some(meta.last_modified.timestamp_micros()),
        )
    };
    let file_name = key.rsplit('/').next().unwrap_or_default().to_owned();
    if is_ndjson_name(&file_name) {
        let location = ObjectPath::from(key.as_str());
        let meta = store.head(&location).await.map_err(object_err)?;
        let bytes = small_object(&store, &meta).await;
        let dir = PathBuf::from(format!(
            "{base}/{}",
            key.rsplit_once('/').map_or("", |(d, _)| d)
        ));
        add_file(found, make_input(&meta), &dir, bytes.as_deref());
        return Ok(false);
    }
    let prefix = ObjectPath::from(key.as_str());
    let mut objects: Vec<ObjectMeta> = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(object_err)?
        .objects;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let dir = PathBuf::from(format!("{base}/{key}"));
    for meta in objects {
        let name = meta.location.filename().unwrap_or_default().to_owned();
        if name == "manifest.json" {
            let bytes = store
                .get(&meta.location)
                .await
                .map_err(object_err)?
                .bytes()
                .await
                .map_err(object_err)?;
            if let Some(time) = manifest_transaction_time(&bytes) {
                found.transaction_times.insert(dir.clone(), time);
            }
        } else if is_ndjson_name(&name) {
            let bytes = small_object(&store, &meta).await;
            add_file(found, make_input(&meta), &dir, bytes.as_deref());
        }
    }
    Ok(true)
}

/// The content of a `log.ndjson` object (small by nature); other objects: `None`.
async fn small_object(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    meta: &ObjectMeta,
) -> Option<Vec<u8>> {
    if meta.location.filename()? != "log.ndjson" || meta.size > 64 << 20 {
        return None;
    }
    let result = store.get(&meta.location).await.ok()?;
    result.bytes().await.ok().map(|b| b.to_vec())
}

/// `log_bytes` is the file's content when it is named `log.ndjson`.
fn add_file(found: &mut Discovered, input: InputFile, dir: &Path, log_bytes: Option<&[u8]>) {
    match log_bytes.and_then(export_log_transaction_time) {
        Some(time) => {
            if let Some(time) = time {
                found.transaction_times.insert(dir.to_path_buf(), time);
            }
            found.export_logs.push(input);
        }
        None => found.files.push(input),
    }
}

/// `Some(time)` when `bytes` are a Bulk Data export log (lines carrying
/// `exportId` and `eventId`); the inner value is the transactionTime it
/// reports, if any. `None`: not a log, load it as resources.
fn export_log_transaction_time(bytes: &[u8]) -> Option<Option<String>> {
    let mut is_log = false;
    let mut time = None;
    for line in bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        let event: serde_json::Value = serde_json::from_slice(line).ok()?;
        if event.get("exportId").is_none() || event.get("eventId").is_none() {
            return None;
        }
        is_log = true;
        if let Some(t) = event
            .pointer("/eventDetail/transactionTime")
            .and_then(|v| v.as_str())
        {
            time = Some(t.to_owned());
        }
    }
    is_log.then_some(time)
}

fn manifest_transaction_time(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("transactionTime")?.as_str().map(str::to_owned)
}
