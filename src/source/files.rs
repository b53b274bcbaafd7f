//! The files source: the user's paths (local paths or `s3://` URLs) turned
//! into [`Input`]s, with the export's `transactionTime` (from a Bulk Data
//! `log.ndjson` or `manifest.json` beside the files) as the stand-in for a
//! missing `meta.lastUpdated`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt};
use url::Url;

use crate::lake::{LakeError, object_store_for};
use crate::load::{Input, InputBytes, InputRole, SourceKind, StandIn, StandInSource};

/// What the paths held: inputs with their directory (or prefix), and the
/// transactionTime each directory's export log or manifest gives.
#[derive(Default)]
struct Found {
    inputs: Vec<(PathBuf, Input)>,
    transaction_times: Vec<(PathBuf, StandIn)>,
}

impl Found {
    /// The inputs, each resource file with its directory's transactionTime.
    fn finish(self) -> Vec<Input> {
        let times = self.transaction_times;
        self.inputs
            .into_iter()
            .map(|(dir, input)| {
                let time = times
                    .iter()
                    .find(|(d, _)| same_dir(d, &dir))
                    .map(|(_, t)| t.clone());
                match input.role {
                    InputRole::Resources => input.with_stand_in(time),
                    InputRole::ExportLog => input,
                }
            })
            .collect()
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
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

/// Expands the user's paths into inputs: files in a stable order (sorted
/// per directory), Bulk Data export logs recorded, not loaded.
/// `storage_options` configure object-store inputs (the lake's options: one
/// set of credentials for both).
pub async fn discover(
    paths: &[PathBuf],
    storage_options: &HashMap<String, String>,
) -> Result<Vec<Input>, DiscoverError> {
    let mut found = Found::default();
    for path in paths {
        let before = found.inputs.len();
        let is_dir = if let Some(url) = object_url(path) {
            discover_objects(&mut found, path, &url, storage_options).await?
        } else {
            discover_local(&mut found, path)?
        };
        if is_dir && found.inputs.len() == before {
            return Err(DiscoverError::EmptyDirectory { path: path.clone() });
        }
    }
    Ok(found.finish())
}

/// Returns whether `path` was a directory.
fn discover_local(found: &mut Found, path: &Path) -> Result<bool, DiscoverError> {
    let io = |source| DiscoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let bytes = read_if_small_metadata_file(path);
        let input = Input::local(path.to_path_buf(), SourceKind::Files).map_err(io)?;
        add_file(found, input, &dir, bytes.as_deref());
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
                found.transaction_times.push((path.to_path_buf(), time));
            }
        } else if is_ndjson_name(name) {
            let bytes = read_if_small_metadata_file(&file);
            let input = Input::local(file.clone(), SourceKind::Files).map_err(io)?;
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
    found: &mut Found,
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
        let bytes = InputBytes::Object {
            store: store.clone(),
            location: meta.location.clone(),
            runtime: runtime.clone(),
        };
        Input::new(
            format!("{base}/{}", meta.location),
            SourceKind::Files,
            bytes,
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
                found.transaction_times.push((dir.clone(), time));
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
fn add_file(found: &mut Found, input: Input, dir: &Path, log_bytes: Option<&[u8]>) {
    let dir = dir.to_path_buf();
    match log_bytes.and_then(export_log_transaction_time) {
        Some(time) => {
            if let Some(time) =
                time.and_then(|t| StandIn::parse(StandInSource::TransactionTime, &t))
            {
                found.transaction_times.push((dir.clone(), time));
            }
            found
                .inputs
                .push((dir, input.with_role(InputRole::ExportLog)));
        }
        None => found.inputs.push((dir, input)),
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

fn manifest_transaction_time(bytes: &[u8]) -> Option<StandIn> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let text = value.get("transactionTime")?.as_str()?;
    StandIn::parse(StandInSource::TransactionTime, text)
}
