//! One input of a job: its decoded lines classified against the key index
//! and turned into staged rows, every line counted.
//!
//! ```text
//!  pieces (chunk, decoded lines) ─▶ the chunk's keys looked up in each table's index
//!    ─▶ per line: blank | rejected | filtered | resource
//!    resource ─▶ new or newer than stored: staged (to the writer), its key kept | unchanged | subset of full
//!  end of input ─▶ SHA-256 known ─▶ rejects into the quarantine rows ─▶ the input's record
//! ```
//! Rows are classified against the table alone here; rows of one id the
//! job reads twice are settled when the job commits (`keys`, `resolve`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use super::commit::Staged;
use super::keys::{Class, JobKey, Stored, classify};
use super::pipeline::{FilePipeline, Piece};
use super::rows::{QuarantineRow, ResourceRow};
use super::view_tables::{VersionRows, ViewTable};
use super::{Context, LoadError};
use crate::fhir::{self, segregated_table};
use crate::lake::{Deletion, Hit, LakeError, LoadMode, QUARANTINE_TABLE};
use crate::ledger::{InputRecord, InputStatus, RowCounts, StandInRecord};
use crate::load::{Input, StandIn, StandInSource};
use crate::ndjson::{DecodedChunk, DecodedLine, LineKind, RejectReason, ResourceKeys};
use crate::validation::table::Judged;
use crate::validation::{LineVerdict, broken_profiles};

/// The filter reason of a subset that met a stored full row.
pub(super) const SUBSET_OF_FULL: &str =
    "subsetted: a SUBSETTED resource never replaces the full row the table holds";

/// A rejected line held until its input's SHA-256 is known.
struct PendingReject {
    line: u64,
    offset: u64,
    reason: RejectReason,
    raw: Vec<u8>,
}

/// The stand-in for a missing `meta.lastUpdated` in `input`: `--as-of`,
/// else what the source says (the export's transactionTime), else when the
/// file was written (stable across re-runs), else when the job started.
fn stand_in_for(context: &Context, input: &Input) -> StandIn {
    context
        .as_of
        .clone()
        .or_else(|| input.stand_in.clone())
        .or_else(|| {
            input
                .modified
                .map(|micros| StandIn::new(StandInSource::FileMtime, micros))
        })
        .unwrap_or_else(|| StandIn::new(StandInSource::IngestedAt, context.lineage.ingested_at))
}

/// A resource line of a decoded chunk.
struct Line<'a> {
    keys: &'a ResourceKeys,
    line: &'a DecodedLine,
    decoded: &'a DecodedChunk,
    /// Its row in the chunk's columns.
    n: usize,
    bytes: usize,
}

pub(super) fn spill_error(table: &str, e: std::io::Error) -> LoadError {
    LoadError::Lake(Box::new(LakeError::Index {
        table: table.to_owned(),
        detail: format!("spilling the job's keys to a temporary file: {e}"),
    }))
}

/// One input being loaded.
struct InputLoad<'a> {
    context: &'a Context,
    staged: &'a mut Staged,
    record: InputRecord,
    stand_in: StandIn,
    /// The source says every resource of the input is a subset (`_elements`).
    subsetted: bool,
    stand_ins: u64,
    rejects: Vec<PendingReject>,
    /// Lines of one file are nearly always one type: its table is named once per run.
    table_of_type: (Box<str>, String),
    /// This input's place among the job's input records.
    input: u32,
}

/// Loads the lines `pipeline` decodes from `input`; returns its record.
pub(super) async fn ingest(
    context: &Context,
    staged: &mut Staged,
    input: &Input,
    mut pipeline: FilePipeline,
) -> Result<InputRecord, LoadError> {
    let mut record = InputRecord::new(input.name.clone(), InputStatus::Loaded, String::new(), 0);
    record.source = Some(input.kind);
    let at = staged.inputs.len() as u32;
    let mut load = InputLoad {
        context,
        staged,
        record,
        stand_in: stand_in_for(context, input),
        subsetted: input.subsetted,
        stand_ins: 0,
        rejects: Vec::new(),
        table_of_type: (Box::from(""), String::new()),
        input: at,
    };
    let read_error = |source| LoadError::Read {
        path: input.name.clone(),
        source,
    };
    loop {
        match pipeline.pieces.recv().await {
            Some(Piece::Lines(chunk, decoded)) => {
                load.chunk(&chunk.data, decoded).await?;
                pipeline.recycle(chunk);
            }
            Some(Piece::Done { sha256, bytes }) => {
                load.record.sha256 = sha256;
                load.record.bytes = bytes;
                break;
            }
            Some(Piece::Failed(source)) => return Err(read_error(source)),
            None => {
                let stopped = std::io::Error::other("reader stopped before the end of the input");
                return Err(read_error(stopped));
            }
        }
    }
    Ok(load.finish())
}

impl InputLoad<'_> {
    /// Classifies and stages one decoded chunk's lines: the chunk's keys are
    /// looked up in each table's index at once (one batch per table), then
    /// every line is counted in order.
    async fn chunk(&mut self, data: &[u8], mut decoded: DecodedChunk) -> Result<(), LoadError> {
        let started = Instant::now();
        if let Some(codes) = decoded.codes.take() {
            self.staged.codes.add(codes);
        }
        let mut waited = Duration::ZERO;
        let stored = self.lookups(&decoded).await?;
        for (n, line) in decoded.lines.iter().enumerate() {
            let raw = &data[line.start..line.end];
            match &line.kind {
                LineKind::Blank => self.record.blank_lines += 1,
                LineKind::Rejected(reason) => {
                    self.record.lines += 1;
                    if let RejectReason::Invalid { profiles, .. } = reason {
                        let counts = &mut self.staged.validation.record;
                        counts.count_invalid(profiles.iter().map(String::as_str));
                    }
                    self.rejects.push(PendingReject {
                        line: line.line,
                        offset: line.offset,
                        reason: reason.clone(),
                        raw: raw.to_vec(),
                    });
                }
                LineKind::Filtered(keys, reason) => {
                    self.record.lines += 1;
                    let table = fhir::table_name(&keys.resource_type);
                    self.record.tables.entry(table).or_default().filtered += 1;
                    *self
                        .record
                        .filtered_by
                        .entry(reason.to_string())
                        .or_default() += 1;
                }
                LineKind::Resource(keys) => {
                    self.record.lines += 1;
                    if let Some(mark) = &keys.policy {
                        *self
                            .record
                            .policy_rules
                            .entry(mark.by.to_string())
                            .or_default() += 1;
                    }
                    if keys.code_issues.is_some_and(|n| n > 0) {
                        self.staged.codes.resources_with_issues += 1;
                    }
                    if let Some(verdict) = &keys.validation {
                        self.count_verdict(verdict);
                    }
                    let (key, hit) = stored[n].expect("every resource was looked up");
                    let row = Line {
                        keys,
                        line,
                        decoded: &decoded,
                        n,
                        bytes: raw.len(),
                    };
                    waited += self.resource(row, key, hit).await?;
                }
            }
        }
        // A batch per chunk: its raw resources and view columns are then
        // slices of the chunk's columns, shared with the encoder, not copies.
        for state in self.staged.tables.open.values_mut() {
            waited += state.write_inserts().await?;
        }
        // Flatten time is this loop's time minus its waits for the writers.
        let own = started.elapsed().saturating_sub(waited).as_nanos() as u64;
        self.context.clock.build.fetch_add(own, Ordering::Relaxed);
        Ok(())
    }

    /// Each resource line's key and what its table stores for it, looked up
    /// one batch per table.
    async fn lookups(
        &mut self,
        decoded: &DecodedChunk,
    ) -> Result<Vec<Option<(u128, Option<Hit>)>>, LoadError> {
        let mut found = vec![None; decoded.lines.len()];
        let mut by_table: BTreeMap<String, Vec<(usize, u128, i64)>> = BTreeMap::new();
        for (n, line) in decoded.lines.iter().enumerate() {
            let LineKind::Resource(keys) = &line.kind else {
                continue;
            };
            let name = self.table_of(keys);
            let state = self
                .staged
                .tables
                .get(self.context, &name, &keys.resource_type)
                .await?;
            let key = state.index.key_of(&keys.id);
            let last_updated = keys.last_updated.unwrap_or(self.stand_in.micros);
            by_table
                .entry(name)
                .or_default()
                .push((n, key, last_updated));
        }
        for (name, rows) in by_table {
            let state = self.staged.tables.open.get(&name).expect("opened above");
            let wanted: Vec<(u128, i64)> = rows.iter().map(|&(_, k, t)| (k, t)).collect();
            let hits = if state.index.runs() == 0 {
                vec![None; wanted.len()]
            } else {
                state.index.lookup(&wanted).await?
            };
            for ((n, key, _), hit) in rows.into_iter().zip(hits) {
                found[n] = Some((key, hit));
            }
        }
        Ok(found)
    }

    /// The table of a resource (named once per run of a type): its type's,
    /// or the type's segregated table when the policy segregated it.
    fn table_of(&mut self, keys: &ResourceKeys) -> String {
        if keys.policy.as_ref().is_some_and(|m| m.segregated) {
            return segregated_table(&keys.resource_type);
        }
        let resource_type = &*keys.resource_type;
        if &*self.table_of_type.0 != resource_type {
            self.table_of_type = (resource_type.into(), fhir::table_name(resource_type));
        }
        self.table_of_type.1.clone()
    }

    /// Counts the resource of one line and, when it is new or newer than
    /// what its table stores, stages it; returns the time spent waiting for
    /// the table's writer.
    async fn resource(
        &mut self,
        row: Line<'_>,
        key: u128,
        hit: Option<Hit>,
    ) -> Result<Duration, LoadError> {
        let context = self.context;
        let Line {
            keys,
            line,
            decoded,
            n,
            bytes,
        } = row;
        // A type the policy lists `elements` for: the row holds all the
        // lake keeps of it, whether the server or the policy cut the rest.
        let policy_subset = !keys.policy.as_ref().is_some_and(|m| m.segregated)
            && context.policy.subsets(&keys.resource_type);
        let subsetted = (keys.subsetted || self.subsetted) && !policy_subset;
        let (last_updated, from) = match keys.last_updated {
            Some(t) => (t, None),
            None => {
                self.stand_ins += 1;
                (self.stand_in.micros, Some(self.stand_in.source.as_str()))
            }
        };
        let name = self.table_of(keys);
        let state = self
            .staged
            .tables
            .get(context, &name, &keys.resource_type)
            .await?;
        let counts: &mut RowCounts = self.record.tables.entry(name).or_default();
        let stored = hit.as_ref().map(Stored::from);
        let class = classify(
            context.mode,
            context.same_version,
            stored,
            last_updated,
            subsetted,
        );
        match class {
            Class::Unchanged => {
                counts.unchanged += 1;
                return Ok(Duration::ZERO);
            }
            Class::SubsetOfFull => {
                counts.filtered += 1;
                *self
                    .record
                    .filtered_by
                    .entry(SUBSET_OF_FULL.to_owned())
                    .or_default() += 1;
                return Ok(Duration::ZERO);
            }
            Class::New => counts.inserted += 1,
            Class::Newer => counts.updated += 1,
        }
        // A segregated version takes what the main table holds of the id
        // (older versions loaded before the policy matched) out of it.
        if let Some(mark) = keys.policy.as_ref().filter(|m| m.segregated)
            && context.mode == LoadMode::Current
        {
            self.staged
                .segregated
                .entry(keys.resource_type.to_string())
                .or_default()
                .push(Deletion {
                    id: keys.id.to_string(),
                    deleted_at: last_updated,
                    record: serde_json::json!({"segregated_by": &*mark.by}).to_string(),
                    source: self.record.path.clone(),
                    line: line.line,
                });
        }
        let source = &self.record.path;
        if let Some(verdict) = &keys.validation
            && !verdict.findings().is_empty()
        {
            let judged = Judged {
                table: &state.name,
                id: &keys.id,
                last_updated,
                source,
                line: line.line,
            };
            self.staged
                .validation
                .rows
                .push(&judged, verdict.findings(), &context.lineage);
        }
        let extras = context.views.extras_for(&keys.resource_type);
        for ((table, view), rows) in extras.iter().zip(&line.extra_rows) {
            self.staged
                .view_tables
                .entry(table.clone())
                .or_insert_with(|| ViewTable::new(table, view.clone(), context.lineage.clone()))
                .push(&VersionRows {
                    id: &keys.id,
                    last_updated,
                    columns: &decoded.views[rows.slot],
                    rows: rows.start..rows.start + rows.len,
                    source,
                    line: line.line,
                    replaces: class == Class::Newer,
                })
                .map_err(|source| LoadError::Arrow {
                    table: table.clone(),
                    source,
                })?;
        }
        let resource_row = ResourceRow {
            id: &keys.id,
            last_updated,
            version_id: keys.version_id.as_deref(),
            last_updated_from: from,
            resource: (&decoded.resources, n),
            resource_bytes: bytes,
            source,
            line: line.line,
            subsetted,
            deleted: false,
            code_issues: keys.code_issues,
            valid: keys.validation.as_ref().and_then(LineVerdict::valid),
        };
        let view_row = line.view_row.map(|r| (&decoded.views[r.slot], r.start));
        state
            .inserts
            .push(&resource_row, view_row, &context.lineage)
            .map_err(state.arrow_err())?;
        let job_key = JobKey {
            key,
            version: match context.mode {
                LoadMode::Current => 0,
                LoadMode::History => last_updated,
            },
            order: context.next_order(),
            last_updated,
            seq: state.staged_rows,
            input: self.input,
            subsetted,
            counted: 0,
            stored: hit.map(|h| (Stored::from(&h), h.file, h.row)),
        }
        .with_counted(class);
        state.staged_rows += 1;
        state
            .keys
            .push(job_key)
            .map_err(|e| spill_error(&state.name, e))?;
        if state.inserts.len() >= context.batch_rows {
            return state.write_inserts().await;
        }
        Ok(Duration::ZERO)
    }

    /// Counts one resource's verdict in the job's validation record.
    fn count_verdict(&mut self, verdict: &LineVerdict) {
        let counts = &mut self.staged.validation.record;
        match verdict {
            LineVerdict::NoProfile => counts.no_profile += 1,
            LineVerdict::Valid => {
                counts.validated += 1;
                counts.valid += 1;
            }
            LineVerdict::Invalid(findings) => counts.count_invalid(broken_profiles(findings)),
        }
    }

    /// The input's record, once its rejects are quarantined.
    fn finish(mut self) -> InputRecord {
        let record = &mut self.record;
        if !self.rejects.is_empty() {
            record
                .tables
                .entry(QUARANTINE_TABLE.to_owned())
                .or_default()
                .quarantined = self.rejects.len() as u64;
            self.staged.warnings.push(format!(
                "{}: {} line(s) quarantined",
                record.path,
                self.rejects.len()
            ));
        }
        for reject in &self.rejects {
            let reason = reject.reason.to_string();
            let (resource_type, resource_id) = reject.reason.resource();
            self.staged.quarantine.push(
                &QuarantineRow {
                    source: &record.path,
                    source_sha256: &record.sha256,
                    line: reject.line,
                    byte_offset: reject.offset,
                    reason_code: reject.reason.code(),
                    reason: &reason,
                    resource_type,
                    resource_id,
                    raw: &reject.raw,
                },
                &self.context.lineage,
            );
        }
        for counts in record.tables.values() {
            record.rows.add(counts);
        }
        if self.stand_ins > 0 {
            record.last_updated_stand_in = Some(StandInRecord {
                source: self.stand_in.source.as_str().to_owned(),
                value: self.stand_in.text(),
                resources: self.stand_ins,
            });
        }
        self.record
    }
}
