//! Handing the verified files over to the one load job: output files as
//! inputs (the export's `transactionTime` as their stand-in for a missing
//! `meta.lastUpdated`, the SHA-256 the download computed), `error[]` lines for
//! the quarantine, `deleted[]` entries as deletions, the export's record for
//! the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::context::Job;
use super::error::ExportError;
use super::events::{LoadCompleted, LoadStarted};
use super::job::Phase;
use super::plan::ExportPlan;
use super::server_files::{deletions, server_issues};
use crate::fhir;
use crate::http::redact_url;
use crate::ledger::{self, Event, ExportFile, ExportRecord, FileKind, FileOutcome, ManifestKind};
use crate::load::{self, LoadReport};
use crate::load::{Input, SourceKind, StandIn, StandInSource};

/// The load input of a verified output file; `subsets` when the export
/// asked for `_elements` (its resources are subsets, tagged or not).
fn output_input(
    raw: &Path,
    file: &ExportFile,
    stand_in: Option<&StandIn>,
    subsets: bool,
) -> std::io::Result<Input> {
    Ok(Input::local(raw.join(&file.name), SourceKind::Export)?
        .with_stand_in(stand_in.cloned())
        .with_sha256(file.sha256.clone())
        .with_subsetted(subsets))
}

/// Loads the verified files as one load job under the export's id.
pub(super) async fn load_files(
    job: &Job<'_>,
    plan: &ExportPlan,
) -> Result<(Option<LoadReport>, Vec<String>), ExportError> {
    let mut state = job.state.lock().await;
    let job_id = state.job_id.clone();
    if state.phase == Phase::Loaded {
        return Ok((None, Vec::new()));
    }
    // Killed after the load wrote its manifest but before the state said so.
    if ledger::read_manifest(job.lake, &job_id).await.is_ok() {
        state.phase = Phase::Loaded;
        drop(state);
        job.save().await?;
        return Ok((None, Vec::new()));
    }
    let raw = PathBuf::from(&state.raw_dir);
    let request_event = state.request_event;
    let transaction_time = state.transaction_time.clone().unwrap_or_default();
    let tt_micros = fhir::parse_instant_micros(&transaction_time).unwrap_or(0);
    let stand_in = StandIn::parse(StandInSource::TransactionTime, &transaction_time);
    let subsets = state.request.params.iter().any(|(k, _)| k == "_elements");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let mut issues = Vec::new();
    let mut deleted = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut inputs = Vec::new();
    for file in state.files.iter_mut() {
        let path = raw.join(&file.name);
        match file.kind {
            FileKind::Output => {
                if file.outcome == FileOutcome::CountMismatch {
                    warnings.push(format!(
                        "{}: {} lines received, the manifest declared {}",
                        file.url,
                        file.lines.unwrap_or_default(),
                        file.declared_count.unwrap_or_default()
                    ));
                }
                let input = output_input(&raw, file, stand_in.as_ref(), subsets);
                inputs.push(input.map_err(io(&path))?);
            }
            FileKind::Error => {
                file.diagnostics.clear();
                issues.extend(server_issues(&raw, file).map_err(io(&path))?);
            }
            FileKind::Deleted => {
                deletions(&raw, file, tt_micros, &mut deleted, &mut issues).map_err(io(&path))?;
            }
        }
    }
    if !issues.is_empty() {
        warnings.push(format!(
            "{} OperationOutcome line(s) from the server's error files are in _quarantine",
            issues.len()
        ));
    }
    let record = ExportRecord {
        server: state.request.server.clone(),
        kickoff_url: state.kickoff_url.clone(),
        kickoff_method: state.kickoff_method.clone(),
        params: state.request.params.clone(),
        status_url: redact_url(&state.status_url),
        transaction_time: transaction_time.clone(),
        requires_access_token: state.requires_access_token.unwrap_or(true),
        files: state.files.clone(),
        ..Default::default()
    };
    drop(state);

    LoadStarted {
        job_id: job_id.clone(),
    }
    .emit(&job.events);
    let report = load::Job::new(job.lake)
        .with_principal(job.http.tokens.principal())
        .with_prior_event(request_event)
        .with_options(plan.load.clone())
        .with_inputs(inputs)
        .with_job_id(job_id.clone())
        .with_kind(ManifestKind::Export)
        .with_export(record)
        .with_rejections(issues)
        .with_deletions(deleted)
        .await
        .map_err(|source| ExportError::Load {
            job_id: job_id.clone(),
            source: Box::new(source),
        })?;
    let totals = &report.manifest.totals;
    LoadCompleted {
        manifest: report.manifest_path.clone(),
        inserted: totals.inserted,
        updated: totals.updated,
        unchanged: totals.unchanged,
        quarantined: totals.quarantined,
    }
    .emit(&job.events);
    {
        let mut state = job.state.lock().await;
        state.phase = Phase::Loaded;
        state.load = Some(BTreeMap::from([
            ("inserted".to_owned(), totals.inserted),
            ("updated".to_owned(), totals.updated),
            ("unchanged".to_owned(), totals.unchanged),
            ("quarantined".to_owned(), totals.quarantined),
        ]));
        if let Some(export) = &report.manifest.export {
            state.files = export.files.clone();
        }
    }
    job.save().await?;
    warnings.extend(report.warnings.iter().cloned());
    Ok((Some(report), warnings))
}
