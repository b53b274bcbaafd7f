//! `fhirlake hl7v2 load`: local files of HL7 v2 messages (one message, many
//! back to back, or FHS/BHS batches) and directories of them, into the lake
//! as jobs of at most `batch_messages` messages each.

use std::path::{Path, PathBuf};

use super::feed::{Feed, Origin};
use super::load::load_feed;
use crate::hl7v2::{BatchWarning, MapOptions, split_batch};
use crate::lake::Lake;
use crate::load::{LoadError, LoadOptions, LoadReport, ProgressSink};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("reading {path}: {source}; check the path and its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} holds no files (hidden files are skipped); give the directory of the feed's message files"
    )]
    EmptyDirectory { path: PathBuf },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The files `paths` name: each file as given, each directory's files
/// (recursively, hidden ones skipped), sorted so a re-run reads the same order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FilesError> {
    let mut files = Vec::new();
    for path in paths {
        let read = |source| FilesError::Read {
            path: path.clone(),
            source,
        };
        if !std::fs::metadata(path).map_err(read)?.is_dir() {
            files.push(path.clone());
            continue;
        }
        let before = files.len();
        walk(path, &mut files)?;
        if files.len() == before {
            return Err(FilesError::EmptyDirectory { path: path.clone() });
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let read = |source| FilesError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else {
            files.push(entry);
        }
    }
    Ok(())
}

/// How `hl7v2 load` runs.
pub struct FilesJob {
    pub options: LoadOptions,
    pub map: MapOptions,
    /// Messages per job (each job is one commit per table).
    pub batch_messages: usize,
    pub progress: Option<ProgressSink>,
}

/// Loads every message of `files`; one report per job.
pub async fn load_files(
    lake: &Lake,
    files: &[PathBuf],
    job: &FilesJob,
) -> Result<Vec<LoadReport>, FilesError> {
    let origin = match files {
        [one] => absolute(one),
        _ => format!("{} files", files.len()),
    };
    let mut reports = Vec::new();
    let mut feed = Feed::new(origin.clone(), job.map.clone());
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| FilesError::Read {
            path: path.clone(),
            source,
        })?;
        let source = absolute(path);
        let batch = split_batch(&bytes);
        for warning in &batch.warnings {
            feed.warn(format!("{source}: {}", describe(warning)));
        }
        for message in &batch.messages {
            feed.push(
                message.bytes,
                Origin {
                    source: source.clone(),
                    number: message.index as u64 + 1,
                    byte_offset: message.byte_offset as u64,
                },
            );
            if feed.len() >= job.batch_messages.max(1) {
                let full = std::mem::replace(&mut feed, Feed::new(origin.clone(), job.map.clone()));
                reports.push(load(lake, full, job).await?);
            }
        }
    }
    if !feed.is_empty() || reports.is_empty() {
        reports.push(load(lake, feed, job).await?);
    }
    Ok(reports)
}

async fn load(lake: &Lake, feed: Feed, job: &FilesJob) -> Result<LoadReport, FilesError> {
    let (_, report) = load_feed(lake, feed, &job.options, job.progress.clone()).await;
    Ok(report?)
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn describe(warning: &BatchWarning) -> String {
    match warning {
        BatchWarning::CountMismatch {
            segment,
            line,
            declared,
            actual,
        } => format!("line {line}: {segment} declares {declared} but the file holds {actual}"),
        BatchWarning::BadCount {
            segment,
            line,
            value,
        } => format!("line {line}: {segment}-1 `{value}` is not a count"),
        BatchWarning::StrayLine {
            line,
            byte_offset,
            preview,
        } => format!(
            "line {line} (byte {byte_offset}) belongs to no message (before the first MSH or after a trailer), not loaded: {preview}"
        ),
    }
}
