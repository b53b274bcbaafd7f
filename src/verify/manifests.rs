//! One manifest checked against itself, the Delta logs and the raw objects.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::LakeProblem;
use super::delta_log::Commit;
use crate::lake::{Lake, LakeError};
use crate::ledger::{JobManifest, RowCounts};

/// The manifest's accounting, and its tables against the commits it names.
/// `segregated_unseen`: the lake keeps its segregated tables in a second
/// lake that was not given, so their commits cannot be looked at.
pub fn check(
    path: &str,
    manifest: &JobManifest,
    commits: &BTreeMap<(String, u64), Commit>,
    segregated_unseen: bool,
) -> Vec<LakeProblem> {
    let mut problems = Vec::new();
    let mut inputs = RowCounts::default();
    for input in &manifest.inputs {
        inputs.add(&input.rows);
        if let Err(e) = input.check_accounting() {
            problems.push(LakeProblem::InputAccounting {
                manifest: path.to_owned(),
                input: input.path.clone(),
                detail: format!(
                    "{} lines, {} classified (inserted + updated + unchanged + quarantined + filtered), {} in the per-table counts",
                    e.lines,
                    e.accounted,
                    e.by_table.total()
                ),
            });
        }
    }
    let t = &manifest.totals;
    for (field, totals, sum) in [
        ("inserted", t.inserted, inputs.inserted),
        ("updated", t.updated, inputs.updated),
        ("unchanged", t.unchanged, inputs.unchanged),
        ("quarantined", t.quarantined, inputs.quarantined),
        ("filtered", t.filtered, inputs.filtered),
    ] {
        if totals != sum {
            problems.push(LakeProblem::TotalsMismatch {
                manifest: path.to_owned(),
                field,
                totals,
                inputs: sum,
            });
        }
    }
    for (table, record) in &manifest.tables {
        if segregated_unseen
            && manifest.segregated_lake.is_some()
            && crate::fhir::is_segregated_table(table)
        {
            continue;
        }
        for named in &record.commits {
            let location = format!("{table}/_delta_log/{:020}.json", named.version);
            let Some(commit) = commits.get(&(table.clone(), named.version)) else {
                problems.push(LakeProblem::CommitMissing {
                    manifest: path.to_owned(),
                    location,
                });
                continue;
            };
            if commit.job_id.is_some() && commit.job_id.as_deref() != Some(&manifest.job_id) {
                problems.push(LakeProblem::CommitOfOtherJob {
                    manifest: path.to_owned(),
                    location: location.clone(),
                    job_id: commit.job_id.clone(),
                });
            }
            let logged = RowSums::of(commit);
            if let Some(m) = &named.merge {
                for (field, recorded, in_log) in [
                    ("inserted", m.rows_inserted, logged.inserted),
                    ("updated", m.rows_updated, logged.updated),
                    ("deleted", m.rows_deleted, logged.deleted),
                ] {
                    if in_log.is_some_and(|n| n != recorded) {
                        problems.push(LakeProblem::RowsMismatch {
                            manifest: path.to_owned(),
                            location: location.clone(),
                            field,
                            manifest_rows: recorded,
                            delta_rows: in_log.unwrap_or(0),
                        });
                    }
                }
            }
        }
    }
    // Each table's counts are the sum of what the inputs counted for it.
    let mut by_table: BTreeMap<&str, RowCounts> = BTreeMap::new();
    for input in &manifest.inputs {
        for (table, counts) in &input.tables {
            by_table.entry(table).or_default().add(counts);
        }
    }
    for (table, sum) in by_table {
        let recorded = manifest
            .tables
            .get(table)
            .map(|t| t.rows)
            .unwrap_or_default();
        for (field, in_table, in_inputs) in [
            ("inserted", recorded.inserted, sum.inserted),
            ("updated", recorded.updated, sum.updated),
            ("unchanged", recorded.unchanged, sum.unchanged),
            ("filtered", recorded.filtered, sum.filtered),
        ] {
            if in_table != in_inputs {
                problems.push(LakeProblem::TableCountsMismatch {
                    manifest: path.to_owned(),
                    table: table.to_owned(),
                    field,
                    table_rows: in_table,
                    inputs: in_inputs,
                });
            }
        }
    }
    problems
}

/// Rows a commit's `operationMetrics` say it changed (`None`: not recorded).
#[derive(Debug, Default, Clone, Copy)]
struct RowSums {
    inserted: Option<u64>,
    updated: Option<u64>,
    deleted: Option<u64>,
}

impl RowSums {
    fn of(commit: &Commit) -> Self {
        let metric = |name: &str| commit.metrics.get(name).copied();
        Self {
            inserted: metric("numTargetRowsInserted"),
            updated: metric("numTargetRowsUpdated"),
            deleted: metric("numTargetRowsDeleted"),
        }
    }
}

/// Re-hashes the raw objects the manifest says the lake keeps: an HL7 v2
/// job's `_raw/hl7v2/` objects, and an export's downloads under
/// `_raw/<job>/` (where the lake holds them; a `--raw-dir` elsewhere is
/// not the lake's to check). Returns the problems, objects and bytes read.
pub async fn check_raw(
    lake: &Lake,
    path: &str,
    manifest: &JobManifest,
) -> Result<(Vec<LakeProblem>, u64, u64), LakeError> {
    let mut expected: Vec<(String, String, bool)> = Vec::new();
    if let Some(hl7v2) = &manifest.hl7v2 {
        for raw in &hl7v2.raw {
            expected.push((raw.path.clone(), raw.sha256.clone(), true));
        }
    }
    if let Some(export) = &manifest.export {
        for file in &export.files {
            if let Some(sha256) = &file.sha256 {
                let object = format!("_raw/{}/{}", manifest.job_id, file.name);
                expected.push((object, sha256.clone(), false));
            }
        }
    }
    let mut problems = Vec::new();
    let (mut objects, mut bytes) = (0, 0);
    for (object, sha256, required) in expected {
        match hash_object(lake, &object).await? {
            Some((actual, n)) => {
                objects += 1;
                bytes += n;
                if !actual.eq_ignore_ascii_case(&sha256) {
                    problems.push(LakeProblem::RawChanged {
                        manifest: path.to_owned(),
                        path: object,
                        expected: sha256,
                        actual,
                    });
                }
            }
            None if required => problems.push(LakeProblem::RawMissing {
                manifest: path.to_owned(),
                path: object,
            }),
            None => {}
        }
    }
    Ok((problems, objects, bytes))
}

/// The SHA-256 and size of an object, streamed; `None` when it is absent.
async fn hash_object(lake: &Lake, relative: &str) -> Result<Option<(String, u64)>, LakeError> {
    let path = lake.path(relative);
    let store_err = |source| LakeError::Store {
        path: path.to_string(),
        source,
    };
    let result = match lake.store().get(&path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_err(e)),
    };
    let mut stream = result.into_stream();
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(store_err)?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok(Some((hex::encode(hasher.finalize()), n)))
}
