//! Turning the user's paths into input files, and finding the export's
//! `transactionTime` (from a Bulk Data `log.ndjson` or `manifest.json`
//! beside the files) to stand in for missing `meta.lastUpdated`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::ndjson::InputFile;

/// What the user's paths expand to.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Resource files, in a stable order (sorted per directory).
    pub files: Vec<InputFile>,
    /// Bulk Data export logs found (read, not loaded).
    pub export_logs: Vec<PathBuf>,
    /// Directory → the export's transactionTime (RFC 3339) found in it.
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
    #[error("input {path} is a directory with no .ndjson or .ndjson.gz files")]
    EmptyDirectory { path: PathBuf },
}

fn is_ndjson_name(name: &str) -> bool {
    [".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

pub fn discover(paths: &[PathBuf]) -> Result<Discovered, DiscoverError> {
    let mut found = Discovered::default();
    for path in paths {
        let io = |source| DiscoverError::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            names.sort();
            let before = found.files.len() + found.export_logs.len();
            for file in names {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                if name == "manifest.json" {
                    if let Some(time) = manifest_transaction_time(&file) {
                        found.transaction_times.insert(path.clone(), time);
                    }
                } else if is_ndjson_name(&name) {
                    add_file(&mut found, file, Some(path));
                }
            }
            if found.files.len() + found.export_logs.len() == before {
                return Err(DiscoverError::EmptyDirectory { path: path.clone() });
            }
        } else {
            let dir = path.parent().map(Path::to_path_buf);
            add_file(&mut found, path.clone(), dir.as_ref());
        }
    }
    Ok(found)
}

fn add_file(found: &mut Discovered, file: PathBuf, dir: Option<&PathBuf>) {
    if let Some(time) = export_log_transaction_time(&file) {
        if let Some(dir) = dir
            && let Some(time) = time
        {
            found.transaction_times.insert(dir.clone(), time);
        }
        found.export_logs.push(file);
    } else {
        found.files.push(InputFile::new(file));
    }
}

/// `Some(time)` when `file` is a Bulk Data export log (`log.ndjson` whose
/// lines carry `exportId` and `eventId`); the inner value is the
/// transactionTime it reports, if any.
fn export_log_transaction_time(file: &Path) -> Option<Option<String>> {
    if file.file_name()? != "log.ndjson" {
        return None;
    }
    let reader = BufReader::new(std::fs::File::open(file).ok()?);
    let mut is_log = false;
    let mut time = None;
    for line in reader.lines().map_while(Result::ok).take(10_000) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            return None;
        };
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

fn manifest_transaction_time(file: &Path) -> Option<String> {
    let bytes = std::fs::read(file).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("transactionTime")?.as_str().map(str::to_owned)
}
