//! A table's rows at every Delta version, replayed from its log's file
//! actions: each `add` brings its file's live rows (`numRecords` less its
//! deletion vector), each `remove` takes away what that file held.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat};
use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;
use serde::Serialize;

use crate::fhir::SEGREGATED_DIR;
use crate::lake::{Lake, LakeError, open_table, query};
use crate::verify::Commit;

/// One table of the lake.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub name: String,
    /// Live rows at the latest version.
    pub rows: u64,
    /// The latest version.
    pub version: u64,
    /// The last commit that changed data: when, and which job.
    pub last_change: Option<String>,
    pub last_job: Option<String>,
    /// Rows after each version, oldest first; empty when the log is not
    /// whole from version 0 (checkpointed and cleaned up) or a file has no
    /// statistics (then `rows` is counted by a scan).
    pub history: Vec<Version>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Version {
    pub version: u64,
    pub rows: u64,
}

/// Which part of the report a table belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Resources,
    Segregated,
    Fhirlake,
}

impl TableStatus {
    pub fn group(&self) -> Group {
        if self.name.starts_with(&format!("{SEGREGATED_DIR}/")) {
            Group::Segregated
        } else if self.name.starts_with('_') {
            Group::Fhirlake
        } else {
            Group::Resources
        }
    }
}

/// The commits of each table, in version order.
pub fn by_table(commits: &BTreeMap<(String, u64), Commit>) -> BTreeMap<&str, Vec<&Commit>> {
    let mut tables: BTreeMap<&str, Vec<&Commit>> = BTreeMap::new();
    for ((table, _), commit) in commits {
        tables.entry(table).or_default().push(commit);
    }
    tables
}

pub async fn status(
    lake: &Lake,
    name: &str,
    commits: &[&Commit],
) -> Result<TableStatus, LakeError> {
    let history = replay(commits).unwrap_or_default();
    let rows = match history.last() {
        Some(last) => last.rows,
        None => count(lake, name).await?,
    };
    let last_data = commits.iter().rev().find(|c| c.data_change);
    Ok(TableStatus {
        name: name.to_owned(),
        rows,
        version: commits.last().map_or(0, |c| c.version),
        last_change: last_data
            .and_then(|c| c.timestamp_ms)
            .and_then(DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        last_job: last_data.and_then(|c| c.job_id.clone()),
        history,
    })
}

/// Rows after each commit, when the log is whole from version 0 and every
/// file it adds has statistics (fhirlake and delta-rs always write them).
fn replay(commits: &[&Commit]) -> Option<Vec<Version>> {
    if commits.first()?.version != 0 {
        return None;
    }
    let mut live: HashMap<&str, u64> = HashMap::new();
    let mut rows: u64 = 0;
    let mut history = Vec::with_capacity(commits.len());
    for (expected, commit) in (0u64..).zip(commits) {
        // A version missing from the log (cleaned up, or listed then gone):
        // the rows after it cannot be told.
        if commit.version != expected {
            return None;
        }
        // A commit that swaps a file's deletion vector removes and adds the
        // same path: take the old state out before the new one goes in.
        for file in commit.files.iter().filter(|f| !f.added) {
            rows = rows.saturating_sub(live.remove(file.path.as_str())?);
        }
        for file in commit.files.iter().filter(|f| f.added) {
            let n = file.rows?;
            rows += n;
            live.insert(&file.path, n);
        }
        history.push(Version {
            version: commit.version,
            rows,
        });
    }
    Some(history)
}

async fn count(lake: &Lake, name: &str) -> Result<u64, LakeError> {
    let table = open_table(lake, name).await?;
    let batches = query(&table, name, "SELECT count(*) FROM t").await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).map_or(0, |b| {
        b.column(0).as_primitive::<Int64Type>().value(0) as u64
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::FileAction;

    fn commit(version: u64, files: &[(bool, &str, Option<u64>)]) -> Commit {
        Commit {
            table: "patient".into(),
            version,
            location: String::new(),
            job_id: None,
            anchor: None,
            anchor_unreadable: false,
            metrics: BTreeMap::new(),
            data_change: true,
            timestamp_ms: None,
            operation: None,
            files: files
                .iter()
                .map(|&(added, path, rows)| FileAction {
                    added,
                    path: path.into(),
                    rows,
                })
                .collect(),
        }
    }

    #[test]
    fn rows_follow_appends_deletion_vectors_and_compaction() {
        let log = [
            commit(0, &[]),
            commit(1, &[(true, "a", Some(10)), (true, "b", Some(5))]),
            // Three rows of `a` superseded: its DV grows, new versions appended.
            commit(
                2,
                &[
                    (false, "a", None),
                    (true, "a", Some(7)),
                    (true, "c", Some(3)),
                ],
            ),
            // Compaction: same rows, fewer files.
            commit(
                3,
                &[
                    (false, "a", None),
                    (false, "b", None),
                    (false, "c", None),
                    (true, "d", Some(15)),
                ],
            ),
        ];
        let refs: Vec<&Commit> = log.iter().collect();
        let rows: Vec<u64> = replay(&refs).unwrap().iter().map(|v| v.rows).collect();
        assert_eq!(rows, [0, 15, 15, 15]);
    }

    #[test]
    fn an_incomplete_log_is_not_guessed() {
        let gap = [commit(0, &[]), commit(2, &[(true, "a", Some(1))])];
        assert!(replay(&gap.iter().collect::<Vec<_>>()).is_none());
        let missing_start = [commit(4, &[(true, "a", Some(1))])];
        assert!(replay(&missing_start.iter().collect::<Vec<_>>()).is_none());
        let no_stats = [commit(0, &[(true, "a", None)])];
        assert!(replay(&no_stats.iter().collect::<Vec<_>>()).is_none());
        let unknown_remove = [commit(0, &[(false, "z", None)])];
        assert!(replay(&unknown_remove.iter().collect::<Vec<_>>()).is_none());
    }
}
