//! What fhirlake wrote into each Delta commit's `commitInfo`: the job, the
//! audit chain head it anchored, and the commit's row metrics.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::audit::{Head, Sha256};
use crate::lake::{Lake, LakeError, list_tables};
use crate::load::ANCHOR_KEY;

/// One commit of one table, as its log entry says.
#[derive(Debug, Clone)]
pub struct Commit {
    pub table: String,
    pub version: u64,
    /// `<table>/_delta_log/<version>.json`.
    pub location: String,
    /// `commitInfo.fhirlake.job_id`: the fhirlake job that wrote it.
    pub job_id: Option<String>,
    /// `commitInfo.fhirlake.audit`, when present.
    pub anchor: Option<Head>,
    /// `commitInfo.fhirlake.audit` is there but not a head.
    pub anchor_unreadable: bool,
    /// `commitInfo.operationMetrics`, numbers as the log has them.
    pub metrics: BTreeMap<String, u64>,
    /// Adds or removes a file with `dataChange: true` (not a compaction,
    /// not a metadata-only commit such as the table's creation).
    pub data_change: bool,
    /// `commitInfo.timestamp`: when it was committed (ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// `commitInfo.operation` (`WRITE`, `MERGE`, `OPTIMIZE`, ...).
    pub operation: Option<String>,
    /// The files it removed and added, with the rows each holds.
    pub files: Vec<FileAction>,
}

/// One `add` or `remove` of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    pub added: bool,
    pub path: String,
    /// Live rows: the file's `numRecords` less its deletion vector's
    /// `cardinality`; `None` when the action carries no statistics.
    pub rows: Option<u64>,
}

impl FileAction {
    fn read(action: &Value) -> Option<Self> {
        let (added, body) = match (action.get("add"), action.get("remove")) {
            (Some(add), _) => (true, add),
            (None, Some(remove)) => (false, remove),
            (None, None) => return None,
        };
        let records = body["stats"]
            .as_str()
            .and_then(|stats| serde_json::from_str::<Value>(stats).ok())
            .and_then(|stats| stats["numRecords"].as_u64());
        let deleted = body["deletionVector"]["cardinality"].as_u64().unwrap_or(0);
        Some(Self {
            added,
            path: body["path"].as_str()?.to_owned(),
            rows: records.map(|n| n.saturating_sub(deleted)),
        })
    }
}

/// Every commit still in the logs (JSON commits; versions compacted into a
/// checkpoint and cleaned up are gone), by (table, version).
pub async fn commits(lake: &Lake) -> Result<BTreeMap<(String, u64), Commit>, LakeError> {
    let mut all = BTreeMap::new();
    for table in list_tables(lake).await? {
        let holder = lake.holding(&table);
        let dir = holder.path(&format!("{table}/_delta_log"));
        for path in holder.list_objects(&dir).await? {
            let Some(version) = path.filename().and_then(commit_version) else {
                continue;
            };
            // Listed, then gone (a log cleanup meanwhile): nothing to check.
            let Some(bytes) = holder.read_object(&path).await? else {
                continue;
            };
            let location = format!("{table}/_delta_log/{version:020}.json");
            all.insert(
                (table.clone(), version),
                parse(&table, version, location, &bytes),
            );
        }
    }
    Ok(all)
}

/// `00000000000000000007.json` → 7 (not checkpoints, not `_last_checkpoint`).
fn commit_version(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn parse(table: &str, version: u64, location: String, bytes: &[u8]) -> Commit {
    let actions: Vec<Value> = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .collect();
    let info = actions
        .iter()
        .find_map(|action| action.get("commitInfo").cloned())
        .unwrap_or(Value::Null);
    let data_change = actions.iter().any(|action| {
        ["add", "remove"]
            .iter()
            .any(|kind| action[kind]["dataChange"] == true)
    });
    let ours = info.get(crate::lake::COMMIT_INFO_KEY);
    let anchor_value = ours.and_then(|o| o.get(ANCHOR_KEY));
    let anchor = anchor_value.and_then(|a| {
        Some(Head {
            seq: a.get("seq")?.as_u64()?,
            sha256: Sha256::from_hex(a.get("sha256")?.as_str()?).ok()?,
        })
    });
    let metrics = info
        .get("operationMetrics")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let n = v.as_u64().or_else(|| v.as_str()?.parse().ok())?;
                    Some((k.clone(), n))
                })
                .collect()
        })
        .unwrap_or_default();
    Commit {
        table: table.to_owned(),
        version,
        location,
        job_id: ours
            .and_then(|o| o.get("job_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        anchor_unreadable: anchor_value.is_some() && anchor.is_none(),
        anchor,
        metrics,
        data_change,
        timestamp_ms: info.get("timestamp").and_then(Value::as_i64),
        operation: info
            .get("operation")
            .and_then(Value::as_str)
            .map(str::to_owned),
        files: actions.iter().filter_map(FileAction::read).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_job_anchor_and_metrics_from_commit_info() {
        let sha = "ab".repeat(32);
        let log = format!(
            "{{\"add\":{{}}}}\n{{\"commitInfo\":{{\"operationMetrics\":{{\"numTargetRowsInserted\":\"5\",\"numFiles\":2}},\"fhirlake\":{{\"job_id\":\"j1\",\"audit\":{{\"seq\":3,\"sha256\":\"{sha}\"}}}}}}}}\n"
        );
        let commit = parse("patient", 4, "patient/_delta_log/4".into(), log.as_bytes());
        assert_eq!(commit.job_id.as_deref(), Some("j1"));
        assert_eq!(commit.anchor.map(|h| h.seq), Some(3));
        assert!(!commit.anchor_unreadable);
        assert_eq!(commit.metrics["numTargetRowsInserted"], 5);
        assert_eq!(commit.metrics["numFiles"], 2);
        assert!(!commit.data_change, "an add without dataChange: true");
        let append = "{\"add\":{\"path\":\"a.parquet\",\"dataChange\":true}}\n";
        assert!(parse("patient", 5, String::new(), append.as_bytes()).data_change);
    }

    #[test]
    fn file_actions_count_live_rows_net_of_deletion_vectors() {
        let log = concat!(
            r#"{"remove":{"path":"a.parquet","dataChange":true,"deletionVector":{"cardinality":1}}}"#,
            "\n",
            r#"{"add":{"path":"a.parquet","dataChange":true,"stats":"{\"numRecords\":10}","deletionVector":{"storageType":"u","cardinality":3}}}"#,
            "\n",
            r#"{"add":{"path":"b.parquet","dataChange":true}}"#,
            "\n",
            r#"{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE"}}"#,
            "\n",
        );
        let commit = parse("patient", 2, String::new(), log.as_bytes());
        let file = |added, path: &str, rows| FileAction {
            added,
            path: path.to_owned(),
            rows,
        };
        assert_eq!(
            commit.files,
            [
                file(false, "a.parquet", None),
                file(true, "a.parquet", Some(7)),
                file(true, "b.parquet", None)
            ]
        );
        assert_eq!(commit.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(commit.operation.as_deref(), Some("WRITE"));
    }

    #[test]
    fn a_mangled_anchor_is_reported_not_ignored() {
        let log = "{\"commitInfo\":{\"fhirlake\":{\"job_id\":\"j1\",\"audit\":{\"seq\":\"x\"}}}}\n";
        let commit = parse("patient", 0, String::new(), log.as_bytes());
        assert!(commit.anchor.is_none() && commit.anchor_unreadable);
    }

    #[test]
    fn only_commit_files_count() {
        assert_eq!(commit_version("00000000000000000012.json"), Some(12));
        assert_eq!(
            commit_version("00000000000000000010.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_version("_last_checkpoint"), None);
    }
}
