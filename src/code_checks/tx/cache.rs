//! The `_tx_cache` Delta table: every answer a terminology server gave,
//! appended by the job that asked, so the next job asks only what is new.
//!
//! One row per answer (`server, system, code, verdict, message,
//! checked_at, job_id`); a code asked again after its answer expired gets
//! a second row, and readers take the latest. Unverified codes (the
//! server was down) are not written: the next job asks them again.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::protocol::Verdict;
use crate::lake::{Lake, LakeError, open_table, query, utc_micros};

pub const TX_CACHE_TABLE: &str = "_tx_cache";

pub fn tx_cache_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("server", DataType::Utf8, false),
        Field::new("system", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("verdict", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("checked_at", utc_micros(), false),
        Field::new("job_id", DataType::Utf8, false),
    ]))
}

/// One answer, as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub system: String,
    pub code: String,
    pub verdict: Verdict,
    /// UTC microseconds.
    pub checked_at: i64,
}

/// Answers by system, then code.
pub type Answers = HashMap<String, HashMap<String, Verdict>>;

/// The latest answer of `server` for each code, checked at or after
/// `fresh_since` (UTC µs); empty when the table does not exist.
pub async fn read(lake: &Lake, server: &str, fresh_since: i64) -> Result<Answers, LakeError> {
    let mut latest: HashMap<(String, String), (i64, Verdict)> = HashMap::new();
    if lake.has_table(TX_CACHE_TABLE).await? {
        let table = open_table(lake, TX_CACHE_TABLE).await?;
        for answer in read_table(&table, server, fresh_since).await? {
            let key = (answer.system, answer.code);
            match latest.get(&key) {
                Some((at, _)) if *at >= answer.checked_at => {}
                _ => {
                    latest.insert(key, (answer.checked_at, answer.verdict));
                }
            }
        }
    }
    let mut answers = Answers::new();
    for ((system, code), (_, verdict)) in latest {
        answers.entry(system).or_default().insert(code, verdict);
    }
    Ok(answers)
}

async fn read_table(
    table: &DeltaTable,
    server: &str,
    fresh_since: i64,
) -> Result<Vec<Answer>, LakeError> {
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let arrow_err = |source| LakeError::Arrow {
        table: TX_CACHE_TABLE.to_owned(),
        source,
    };
    // The server URL is bound as a literal: quotes doubled.
    let sql = format!(
        "SELECT system, code, verdict, message, CAST(checked_at AS BIGINT) FROM t \
         WHERE server = '{}' AND CAST(checked_at AS BIGINT) >= {fresh_since}",
        server.replace('\'', "''")
    );
    let batches = query(table, TX_CACHE_TABLE, &sql).await?;
    let mut answers = Vec::new();
    for batch in batches {
        let text = |i: usize| cast(batch.column(i), &DataType::Utf8).map_err(arrow_err);
        let (system, code, verdict, message) = (text(0)?, text(1)?, text(2)?, text(3)?);
        let at = cast(batch.column(4), &DataType::Int64).map_err(arrow_err)?;
        let s = text_at;
        let at = at.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let (Some(sys), Some(c), Some(name)) = (s(&system, i), s(&code, i), s(&verdict, i))
            else {
                continue;
            };
            // A verdict name of a later fhirlake: not trusted, asked again.
            let Some(verdict) = Verdict::parse(name, s(&message, i)) else {
                continue;
            };
            answers.push(Answer {
                system: sys.to_owned(),
                code: c.to_owned(),
                verdict,
                checked_at: at.value(i),
            });
        }
    }
    Ok(answers)
}

fn text_at(a: &ArrayRef, i: usize) -> Option<&str> {
    let a = a.as_string::<i32>();
    (!a.is_null(i)).then(|| a.value(i))
}

/// The rows of `answers` from `server` asked by `job_id`.
pub fn to_batch(
    server: &str,
    job_id: &str,
    answers: &[Answer],
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut text: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut checked_at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for a in answers {
        text[0].append_value(server);
        text[1].append_value(&a.system);
        text[2].append_value(&a.code);
        text[3].append_value(a.verdict.as_str());
        text[4].append_option(a.verdict.message());
        text[5].append_value(job_id);
        checked_at.append_value(a.checked_at);
    }
    let mut columns: Vec<ArrayRef> = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let job = columns.pop().expect("six columns");
    columns.push(Arc::new(checked_at.finish()));
    columns.push(job);
    RecordBatch::try_new(tx_cache_schema(), columns)
}
