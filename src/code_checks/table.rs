//! The `_curation` Delta table: one row per distinct (system, code,
//! problem), merged across jobs.
//!
//! A job reads the stored rows, merges its own records in (counts add,
//! first/last seen widen, examples stay the earliest: [`Curation::merge`]),
//! marks resolved what its terminology now settles, and overwrites the
//! table in one commit; a concurrent writer makes the commit conflict and
//! the job merges again on the new snapshot. The queue is small (distinct
//! codes, not occurrences), so rewriting it is cheap.
//!
//! Resolved: an open row this job did not see again is resolved when the
//! job's concept maps map its code (`mapped by <map>`), or, for an unknown
//! system, when the job's terminology knows the system. Resolved rows stay
//! (the history of the queue); seen again with the problem, a row reopens.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::DeltaTable;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use super::{CURATION_EXAMPLES, CodeChecks};
use crate::lake::{
    COMMIT_INFO_KEY, ConflictRetry, Lake, LakeError, open_or_create_table, open_table, query,
    utc_micros,
};
use crate::terminology::{Curation, CurationRecord, Example, ProblemKind, SystemVerdict};

pub const CURATION_TABLE: &str = "_curation";

pub fn curation_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("system", DataType::Utf8, true),
        Field::new("code", DataType::Utf8, true),
        Field::new("problem", DataType::Utf8, false),
        Field::new("display", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("first_seen", utc_micros(), false),
        Field::new("last_seen", utc_micros(), false),
        // JSON: [{"table":"observation","id":"...","seen":µs}, ...]
        Field::new("examples", DataType::Utf8, false),
        Field::new("resolved_at", utc_micros(), true),
        Field::new("resolved_by", DataType::Utf8, true),
    ]))
}

/// A `_curation` row: the record and whether it is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub record: CurationRecord,
    pub resolved: Option<Resolution>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub at: i64,
    pub by: String,
}

/// What merging a job into the queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueUpdate {
    pub version: Option<u64>,
    pub open: usize,
    pub resolved_now: usize,
}

/// Merges `job` into `_curation` and resolves what `checks` settles; one
/// commit (none when the queue would not change).
pub async fn merge_into_lake(
    lake: &Lake,
    job: &Curation,
    checks: &CodeChecks,
    commit_info: serde_json::Value,
) -> Result<QueueUpdate, LakeError> {
    if job.is_empty() && !lake.has_table(CURATION_TABLE).await? {
        return Ok(QueueUpdate::default());
    }
    let mut retry = ConflictRetry::new(CURATION_TABLE);
    let schema = curation_schema();
    let mut table = open_or_create_table(lake, CURATION_TABLE, &schema).await?;
    loop {
        let stored = read_table(&table).await?;
        let (rows, resolved_now) = merged(&stored, job, checks);
        let update = QueueUpdate {
            version: None,
            open: rows.iter().filter(|r| r.resolved.is_none()).count(),
            resolved_now,
        };
        if job.is_empty() && resolved_now == 0 {
            return Ok(update);
        }
        let batch = to_batch(&rows).map_err(|source| LakeError::Arrow {
            table: CURATION_TABLE.into(),
            source,
        })?;
        let properties = CommitProperties::default()
            .with_metadata([(COMMIT_INFO_KEY.to_owned(), commit_info.clone())]);
        let written = table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Overwrite)
            .with_commit_properties(properties)
            .await;
        match written {
            Ok(done) => {
                return Ok(QueueUpdate {
                    version: done.version(),
                    ..update
                });
            }
            Err(e) => {
                retry
                    .after(&mut table, LakeError::delta(CURATION_TABLE)(e))
                    .await?
            }
        }
    }
}

/// The stored rows with `job` merged in and resolutions applied; also how
/// many rows this merge resolved.
fn merged(stored: &[QueueRow], job: &Curation, checks: &CodeChecks) -> (Vec<QueueRow>, usize) {
    let key = |r: &CurationRecord| (r.system.clone(), r.code.clone(), r.problem.clone());
    let resolutions: BTreeMap<_, _> = stored
        .iter()
        .filter_map(|row| Some((key(&row.record), row.resolved.clone()?)))
        .collect();
    let mut curation =
        Curation::from_records(CURATION_EXAMPLES, stored.iter().map(|r| r.record.clone()));
    let seen_now: std::collections::BTreeSet<_> = job.records().into_iter().map(key).collect();
    curation.merge(job.clone());
    let now = Utc::now().timestamp_micros();
    let mut resolved_now = 0;
    let rows = curation
        .into_records()
        .into_iter()
        .map(|record| {
            let k = key(&record);
            let resolved = if seen_now.contains(&k) {
                None
            } else if let Some(previous) = resolutions.get(&k) {
                Some(previous.clone())
            } else {
                settled_by(&record, checks).map(|by| {
                    resolved_now += 1;
                    Resolution { at: now, by }
                })
            };
            QueueRow { record, resolved }
        })
        .collect();
    (rows, resolved_now)
}

/// Why the job's terminology settles `record`, if it does.
fn settled_by(record: &CurationRecord, checks: &CodeChecks) -> Option<String> {
    let term = checks.terminology();
    let system = record.system.as_deref()?;
    let code = record.code.as_deref()?;
    if let Some(target) = term.concept_maps().targets(system, code).first() {
        let map = term.concept_maps().map(target.map);
        let name = map
            .url
            .as_deref()
            .map_or_else(|| map.origin.to_string(), str::to_string);
        return Some(format!(
            "mapped by {name} to {}|{}",
            target.system, target.code
        ));
    }
    let problem = ProblemKind::parse(&record.problem);
    if problem == Some(ProblemKind::UnknownToServer)
        && let Some(server) = checks.server()
        && server.cached(system, code) == Some(super::tx::Verdict::Valid)
    {
        return Some(format!(
            "the terminology server {} knows it now",
            server.label()
        ));
    }
    let unknown = problem == Some(ProblemKind::UnknownSystem);
    if unknown && matches!(term.classify_system(system), SystemVerdict::Known(_)) {
        return Some(format!("{system} is a known system now"));
    }
    None
}

/// The stored queue (empty when the table does not exist).
pub async fn read(lake: &Lake) -> Result<Vec<QueueRow>, LakeError> {
    if !lake.has_table(CURATION_TABLE).await? {
        return Ok(Vec::new());
    }
    read_table(&open_table(lake, CURATION_TABLE).await?).await
}

async fn read_table(table: &DeltaTable) -> Result<Vec<QueueRow>, LakeError> {
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let arrow_err = |source| LakeError::Arrow {
        table: CURATION_TABLE.to_owned(),
        source,
    };
    let batches = query(
        table,
        CURATION_TABLE,
        "SELECT system, code, problem, display, message, path, count, \
         CAST(first_seen AS BIGINT), CAST(last_seen AS BIGINT), examples, \
         CAST(resolved_at AS BIGINT), resolved_by FROM t",
    )
    .await?;
    let mut rows = Vec::new();
    for batch in batches {
        let text = |i: usize| cast(batch.column(i), &DataType::Utf8).map_err(arrow_err);
        let int = |i: usize| cast(batch.column(i), &DataType::Int64).map_err(arrow_err);
        let [
            system,
            code,
            problem,
            display,
            message,
            path,
            examples,
            resolved_by,
        ] = [0, 1, 2, 3, 4, 5, 9, 11].map(text);
        let [count, first, last, resolved_at] = [6, 7, 8, 10].map(int);
        let (system, code, problem, display, message, path, examples, resolved_by) = (
            system?,
            code?,
            problem?,
            display?,
            message?,
            path?,
            examples?,
            resolved_by?,
        );
        let (count, first, last, resolved_at) = (count?, first?, last?, resolved_at?);
        let s = |a: &ArrayRef, i: usize| {
            let a = a.as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i).to_owned())
        };
        let n = |a: &ArrayRef, i: usize| {
            let a = a.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            (!a.is_null(i)).then(|| a.value(i))
        };
        for i in 0..batch.num_rows() {
            let examples: Vec<Example> = serde_json::from_str(&s(&examples, i).unwrap_or_default())
                .map_err(|e| LakeError::Index {
                    table: CURATION_TABLE.into(),
                    detail: format!("row {i}: examples are not the JSON fhirlake writes: {e}"),
                })?;
            rows.push(QueueRow {
                record: CurationRecord {
                    system: s(&system, i),
                    code: s(&code, i),
                    problem: s(&problem, i).unwrap_or_default(),
                    display: s(&display, i),
                    message: s(&message, i).unwrap_or_default(),
                    path: s(&path, i).unwrap_or_default(),
                    count: n(&count, i).unwrap_or(0) as u64,
                    first_seen: n(&first, i).unwrap_or(0),
                    last_seen: n(&last, i).unwrap_or(0),
                    examples,
                },
                resolved: n(&resolved_at, i).map(|at| Resolution {
                    at,
                    by: s(&resolved_by, i).unwrap_or_default(),
                }),
            });
        }
    }
    rows.sort_by(|a, b| {
        let k = |r: &QueueRow| {
            (
                r.record.system.clone(),
                r.record.code.clone(),
                r.record.problem.clone(),
            )
        };
        k(a).cmp(&k(b))
    });
    Ok(rows)
}

fn to_batch(rows: &[QueueRow]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut text: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut count = Int64Builder::new();
    let mut times: Vec<TimestampMicrosecondBuilder> = (0..3)
        .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
        .collect();
    for row in rows {
        let r = &row.record;
        text[0].append_option(r.system.as_deref());
        text[1].append_option(r.code.as_deref());
        text[2].append_value(&r.problem);
        text[3].append_option(r.display.as_deref());
        text[4].append_value(&r.message);
        text[5].append_value(&r.path);
        text[6].append_value(serde_json::to_string(&r.examples).expect("examples serialise"));
        text[7].append_option(row.resolved.as_ref().map(|x| x.by.as_str()));
        count.append_value(r.count as i64);
        times[0].append_value(r.first_seen);
        times[1].append_value(r.last_seen);
        times[2].append_option(row.resolved.as_ref().map(|x| x.at));
    }
    let mut t = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut ts = times
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let (system, code, problem, display, message, path, examples, resolved_by) = (
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
        t.next().unwrap(),
    );
    let (first, last, resolved_at) = (ts.next().unwrap(), ts.next().unwrap(), ts.next().unwrap());
    RecordBatch::try_new(
        curation_schema(),
        vec![
            system,
            code,
            problem,
            display,
            message,
            path,
            Arc::new(count.finish()),
            first,
            last,
            examples,
            resolved_at,
            resolved_by,
        ],
    )
}
