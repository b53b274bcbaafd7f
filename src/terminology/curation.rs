//! The curation queue: one record per distinct (system, code, problem),
//! accumulated from findings and mergeable across threads and jobs.
//!
//! In: [`Finding`]s with the resource they came from and a timestamp the
//! caller gives (UTC µs: the job's start, or the resource's date). Out:
//! [`CurationRecord`]s, sorted, as the rows of the `_curation` Delta table
//! (the lead's code writes them; this module does no I/O).
//!
//! Deterministic whatever the order of arrival: counts add up; `first_seen`
//! is the earliest and `last_seen` the latest time; display, message and
//! path are those of the earliest occurrence (ties: the smallest text);
//! examples are the `max_examples` earliest resources (ties: smallest
//! table, then id), each once, so the examples of older jobs stay put when
//! newer jobs merge in. The same holds for [`Curation::merge`]: merging A
//! into B or B into A gives the same records.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::engine::Finding;

/// The resource a finding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    pub table: &'a str,
    pub id: &'a str,
}

/// An example resource of a record, with when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub seen: i64,
    pub table: String,
    pub id: String,
}

/// One row of `_curation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurationRecord {
    pub system: Option<String>,
    pub code: Option<String>,
    /// A [`ProblemKind`](super::ProblemKind) name (`bad_check_digit`, ...).
    pub problem: String,
    pub display: Option<String>,
    pub message: String,
    /// Where it was first seen: `Observation.code.coding[0]`.
    pub path: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub examples: Vec<Example>,
}

type ByCode = HashMap<Box<str>, CurationRecord>;

/// The accumulator.
#[derive(Debug, Clone)]
pub struct Curation {
    max_examples: usize,
    /// problem → system ("" for none) → code ("" for none).
    records: HashMap<Box<str>, HashMap<Box<str>, ByCode>>,
}

impl Curation {
    pub fn new(max_examples: usize) -> Self {
        Self {
            max_examples,
            records: HashMap::new(),
        }
    }

    /// Rebuilds the accumulator from stored rows (to merge a job into them);
    /// rows with the same key are merged.
    pub fn from_records(
        max_examples: usize,
        records: impl IntoIterator<Item = CurationRecord>,
    ) -> Self {
        let mut curation = Self::new(max_examples);
        for record in records {
            curation.absorb(record);
        }
        curation
    }

    /// Counts one occurrence of `finding` in `resource`, seen at `seen_at`.
    /// Allocates only for a new record or a new example.
    pub fn record(&mut self, finding: &Finding<'_>, resource: ResourceRef<'_>, seen_at: i64) {
        let problem = finding.problem.kind().as_str();
        let system = finding.coding.system.unwrap_or("");
        let code = finding.coding.code.unwrap_or("");
        let display = finding.coding.display;
        let max = self.max_examples;
        let by_code = self.by_code(problem, system);
        match by_code.get_mut(code) {
            Some(record) => {
                record.count += 1;
                record.last_seen = record.last_seen.max(seen_at);
                if seen_at < record.first_seen
                    || seen_at == record.first_seen && display < record.display.as_deref()
                {
                    record.display = display.map(str::to_string);
                }
                let earlier = seen_at < record.first_seen
                    || seen_at == record.first_seen
                        && (
                            cmp_display(&finding.problem, &record.message),
                            cmp_display(&finding.location(), &record.path),
                        ) < (Ordering::Equal, Ordering::Equal);
                if earlier {
                    record.message = finding.problem.to_string();
                    record.path = finding.location().to_string();
                }
                record.first_seen = record.first_seen.min(seen_at);
                add_example(&mut record.examples, max, seen_at, resource);
            }
            None => {
                let mut examples = Vec::new();
                add_example(&mut examples, max, seen_at, resource);
                by_code.insert(
                    code.into(),
                    CurationRecord {
                        system: finding.coding.system.map(str::to_string),
                        code: finding.coding.code.map(str::to_string),
                        problem: problem.to_string(),
                        display: display.map(str::to_string),
                        message: finding.problem.to_string(),
                        path: finding.location().to_string(),
                        count: 1,
                        first_seen: seen_at,
                        last_seen: seen_at,
                        examples,
                    },
                );
            }
        }
    }

    fn by_code(&mut self, problem: &str, system: &str) -> &mut ByCode {
        if !self.records.contains_key(problem) {
            self.records.insert(problem.into(), HashMap::new());
        }
        let by_system = self.records.get_mut(problem).expect("inserted above");
        if !by_system.contains_key(system) {
            by_system.insert(system.into(), HashMap::new());
        }
        by_system.get_mut(system).expect("inserted above")
    }

    /// Adds another accumulator's records (another thread's, or the stored
    /// queue): counts add, times widen, examples stay the earliest.
    pub fn merge(&mut self, other: Curation) {
        for (_, by_system) in other.records {
            for (_, by_code) in by_system {
                for (_, record) in by_code {
                    self.absorb(record);
                }
            }
        }
    }

    fn absorb(&mut self, other: CurationRecord) {
        let max = self.max_examples;
        let by_code = self.by_code(
            &other.problem.clone(),
            other.system.as_deref().unwrap_or(""),
        );
        let key: Box<str> = other.code.as_deref().unwrap_or("").into();
        let Some(record) = by_code.get_mut(&key) else {
            let mut other = other;
            let examples = std::mem::take(&mut other.examples);
            for e in examples {
                insert_example(&mut other.examples, max, e);
            }
            by_code.insert(key, other);
            return;
        };
        record.count += other.count;
        record.last_seen = record.last_seen.max(other.last_seen);
        let earlier = (other.first_seen, &other.message, &other.path)
            < (record.first_seen, &record.message, &record.path);
        if other.first_seen < record.first_seen
            || other.first_seen == record.first_seen && other.display < record.display
        {
            record.display = other.display;
        }
        if earlier {
            record.message = other.message;
            record.path = other.path;
        }
        record.first_seen = record.first_seen.min(other.first_seen);
        for e in other.examples {
            insert_example(&mut record.examples, max, e);
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, sorted by (system, code, problem): the table's rows.
    pub fn into_records(self) -> Vec<CurationRecord> {
        let mut rows: Vec<CurationRecord> = self
            .records
            .into_values()
            .flat_map(HashMap::into_values)
            .flat_map(HashMap::into_values)
            .collect();
        rows.sort_by(|a, b| {
            (&a.system, &a.code, &a.problem).cmp(&(&b.system, &b.code, &b.problem))
        });
        rows
    }

    /// The same, borrowed.
    pub fn records(&self) -> Vec<&CurationRecord> {
        let mut rows: Vec<&CurationRecord> = self
            .records
            .values()
            .flat_map(HashMap::values)
            .flat_map(HashMap::values)
            .collect();
        rows.sort_by(|a, b| {
            (&a.system, &a.code, &a.problem).cmp(&(&b.system, &b.code, &b.problem))
        });
        rows
    }
}

/// Compares what `value` displays with `text`, without formatting it into
/// a string.
fn cmp_display(value: &impl fmt::Display, text: &str) -> Ordering {
    struct Cmp<'t> {
        rest: &'t str,
        order: Ordering,
    }
    impl fmt::Write for Cmp<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if self.order.is_ne() {
                return Ok(());
            }
            let n = s.len().min(self.rest.len());
            self.order = s.as_bytes()[..n].cmp(&self.rest.as_bytes()[..n]);
            if self.order.is_eq() && s.len() > self.rest.len() {
                self.order = Ordering::Greater;
            }
            self.rest = &self.rest[n..];
            Ok(())
        }
    }
    let mut cmp = Cmp {
        rest: text,
        order: Ordering::Equal,
    };
    let _ = fmt::write(&mut cmp, format_args!("{value}"));
    if cmp.order.is_eq() && !cmp.rest.is_empty() {
        return Ordering::Less;
    }
    cmp.order
}

/// Keeps the `max` earliest examples, one per resource; allocates only when
/// the example is kept.
fn add_example(examples: &mut Vec<Example>, max: usize, seen: i64, r: ResourceRef<'_>) {
    if let Some(i) = examples
        .iter()
        .position(|e| e.table == r.table && e.id == r.id)
    {
        if seen < examples[i].seen {
            examples.remove(i);
        } else {
            return;
        }
    }
    if examples.len() >= max
        && examples.last().is_none_or(|last| {
            (seen, r.table, r.id) >= (last.seen, last.table.as_str(), last.id.as_str())
        })
    {
        return;
    }
    insert_example(
        examples,
        max,
        Example {
            seen,
            table: r.table.to_string(),
            id: r.id.to_string(),
        },
    );
}

fn insert_example(examples: &mut Vec<Example>, max: usize, example: Example) {
    if let Some(i) = examples
        .iter()
        .position(|e| e.table == example.table && e.id == example.id)
    {
        if example.seen >= examples[i].seen {
            return;
        }
        examples.remove(i);
    }
    let at = examples.partition_point(|e| e < &example);
    examples.insert(at, example);
    examples.truncate(max);
}

#[cfg(test)]
mod tests {
    use super::super::engine::Coding;
    use super::super::problem::Problem;
    use super::*;

    const LOINC: &str = "http://loinc.org";

    fn finding<'a>(code: &'a str, display: Option<&'a str>, problem: Problem<'a>) -> Finding<'a> {
        Finding {
            path: "Observation.code",
            index: Some(0),
            coding: Coding {
                system: Some(LOINC),
                code: Some(code),
                display,
            },
            problem,
        }
    }

    fn r<'a>(table: &'a str, id: &'a str) -> ResourceRef<'a> {
        ResourceRef { table, id }
    }

    #[test]
    fn one_record_per_system_code_problem() {
        let mut c = Curation::new(2);
        let f = finding("8867-5", Some("Heart rate"), Problem::NoCode);
        c.record(&f, r("observation", "b"), 20);
        c.record(&f, r("observation", "a"), 10);
        c.record(&f, r("observation", "c"), 30);
        c.record(&f, r("observation", "a"), 40);
        c.record(
            &finding("8867-5", None, Problem::NoSystem),
            r("observation", "a"),
            10,
        );
        c.record(
            &finding("1-9", None, Problem::NoCode),
            r("observation", "a"),
            10,
        );
        assert_eq!(c.len(), 3);
        let rows = c.into_records();
        let row = &rows[1];
        assert_eq!(
            (row.code.as_deref(), row.problem.as_str()),
            (Some("8867-5"), "no_code")
        );
        assert_eq!((row.count, row.first_seen, row.last_seen), (4, 10, 40));
        assert_eq!(row.path, "Observation.code.coding[0]");
        assert_eq!(row.message, "a system without a code");
        let ids: Vec<_> = row
            .examples
            .iter()
            .map(|e| (e.seen, e.id.as_str()))
            .collect();
        assert_eq!(ids, [(10, "a"), (20, "b")]);
        assert_eq!(rows[0].code.as_deref(), Some("1-9"));
        assert_eq!(rows[2].problem, "no_system");
    }

    #[test]
    fn display_is_the_earliest_then_smallest() {
        let mut c = Curation::new(3);
        c.record(&finding("x", Some("b"), Problem::NoCode), r("t", "1"), 5);
        c.record(&finding("x", Some("a"), Problem::NoCode), r("t", "2"), 5);
        c.record(
            &finding("x", Some("0 later"), Problem::NoCode),
            r("t", "3"),
            9,
        );
        assert_eq!(c.records()[0].display.as_deref(), Some("a"));
    }

    /// Any split of the same occurrences, merged in any order, gives the
    /// same rows as one accumulator.
    #[test]
    fn merge_is_order_independent() {
        let events: Vec<(&str, &str, i64)> = (0..40)
            .map(|i| {
                (
                    ["x", "y", "z"][i % 3],
                    ["p", "q", "r", "s", "t"][(i * 7) % 5],
                    (i as i64 * 13) % 17,
                )
            })
            .collect();
        let run = |parts: &[&[(&str, &str, i64)]], reverse: bool| {
            let mut accs: Vec<Curation> = parts
                .iter()
                .map(|part| {
                    let mut c = Curation::new(3);
                    for &(code, id, t) in *part {
                        c.record(
                            &finding(code, Some(id), Problem::NoCode),
                            r("observation", id),
                            t,
                        );
                    }
                    c
                })
                .collect();
            if reverse {
                accs.reverse();
            }
            let mut total = Curation::new(3);
            for acc in accs {
                total.merge(acc);
            }
            total.into_records()
        };
        let whole = run(&[&events], false);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole.iter().map(|r| r.count).sum::<u64>(), 40);
        for split in [1, 7, 20, 39] {
            let (a, b) = events.split_at(split);
            assert_eq!(run(&[a, b], false), whole, "split at {split}");
            assert_eq!(run(&[a, b], true), whole, "split at {split}, reversed");
        }
    }

    #[test]
    fn a_later_job_keeps_the_stored_examples() {
        let mut stored = Curation::new(2);
        let f = finding("8867-5", None, Problem::NoCode);
        stored.record(&f, r("observation", "z"), 100);
        stored.record(&f, r("observation", "y"), 100);
        let rows = stored.into_records();
        let mut job = Curation::new(2);
        job.record(&f, r("observation", "a"), 200);
        let mut queue = Curation::from_records(2, rows);
        queue.merge(job);
        let row = &queue.into_records()[0];
        assert_eq!((row.count, row.first_seen, row.last_seen), (3, 100, 200));
        let ids: Vec<_> = row.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["y", "z"]);
    }

    #[test]
    fn display_comparison_streams() {
        assert_eq!(cmp_display(&"abc", "abc"), Ordering::Equal);
        assert_eq!(cmp_display(&"ab", "abc"), Ordering::Less);
        assert_eq!(cmp_display(&"abd", "abc"), Ordering::Greater);
        assert_eq!(
            cmp_display(&format_args!("{}{}", "a", "bc"), "abc"),
            Ordering::Equal
        );
        assert_eq!(
            cmp_display(&format_args!("{}{}", "a", "bcd"), "abc"),
            Ordering::Greater
        );
        assert_eq!(cmp_display(&"", ""), Ordering::Equal);
    }

    #[test]
    fn message_and_path_at_a_tie_are_the_smallest() {
        let at = |path| Finding {
            path,
            ..finding("x", None, Problem::NoCode)
        };
        let mut a = Curation::new(1);
        a.record(&at("Observation.component.code"), r("t", "1"), 5);
        a.record(&at("Observation.code"), r("t", "2"), 5);
        let mut b = Curation::new(1);
        b.record(&at("Observation.code"), r("t", "2"), 5);
        b.record(&at("Observation.component.code"), r("t", "1"), 5);
        assert_eq!(a.records()[0].path, "Observation.code.coding[0]");
        assert_eq!(a.into_records(), b.into_records());
    }

    #[test]
    fn rows_serialize_for_the_table() {
        let mut c = Curation::new(1);
        c.record(
            &finding("8867-5", Some("HR"), Problem::NoCode),
            r("observation", "o1"),
            7,
        );
        let rows = c.into_records();
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["system"], LOINC);
        assert_eq!(json["examples"][0]["id"], "o1");
        let back: CurationRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, rows[0]);
    }
}
