//! End-of-job summaries: a table for people, JSON for scripts.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::ledger::InputStatus;
use crate::load::LoadReport;

pub fn text(report: &LoadReport) -> String {
    let m = &report.manifest;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {}  ({:.2} s, {:.1} MB read)",
        m.job_id,
        report.elapsed_s,
        report.bytes_read as f64 / 1e6
    );
    let filtered = m.totals.filtered > 0;
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>11}{}  versions",
        "table",
        "rows in",
        "inserted",
        "updated",
        "unchanged",
        "quarantined",
        if filtered { "  filtered" } else { "" }
    );
    for (name, table) in &m.tables {
        let versions: Vec<String> = table
            .commits
            .iter()
            .map(|c| format!("{}:{}", c.operation, c.version))
            .collect();
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>9} {:>9} {:>11}{}  {}",
            name,
            table.rows.total(),
            table.rows.inserted,
            table.rows.updated,
            table.rows.unchanged,
            table.rows.quarantined,
            if filtered {
                format!(" {:>9}", table.rows.filtered)
            } else {
                String::new()
            },
            if versions.is_empty() {
                "-".to_owned()
            } else {
                versions.join(" ")
            }
        );
    }
    let t = &m.totals;
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>11}{}",
        "total",
        t.total(),
        t.inserted,
        t.updated,
        t.unchanged,
        t.quarantined,
        if filtered {
            format!(" {:>9}", t.filtered)
        } else {
            String::new()
        }
    );
    let skipped: Vec<&str> = m
        .inputs
        .iter()
        .filter(|i| i.status == InputStatus::SkippedAlreadyLoaded)
        .map(|i| i.path.as_str())
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped {} file(s) already loaded into this lake (use --force to reload)",
            skipped.len()
        );
    }
    // One note per stand-in source, not per file: a big export has hundreds of files.
    let mut stand_ins: std::collections::BTreeMap<&str, (u64, u64, &str)> = Default::default();
    for stand_in in m
        .inputs
        .iter()
        .filter_map(|i| i.last_updated_stand_in.as_ref())
    {
        let entry =
            stand_ins
                .entry(stand_in.source.as_str())
                .or_insert((0, 0, stand_in.value.as_str()));
        entry.0 += stand_in.resources;
        entry.1 += 1;
    }
    for (source, (resources, files, example)) in stand_ins {
        let _ = writeln!(
            out,
            "note: {resources} resource(s) in {files} file(s) had no meta.lastUpdated; used the {source} (e.g. {example}); see the manifest"
        );
    }
    if t.inserted + t.updated == 0 {
        let _ = writeln!(
            out,
            "no rows changed: every line was already loaded or quarantined"
        );
    }
    let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
    for input in &m.inputs {
        for (reason, n) in &input.filtered_by {
            *reasons.entry(reason.as_str()).or_default() += n;
        }
    }
    for (reason, n) in reasons {
        let _ = writeln!(out, "filtered {n}: {reason}");
    }
    let mut rules: std::collections::BTreeMap<&str, u64> = Default::default();
    for input in &m.inputs {
        for (rule, n) in &input.policy_rules {
            *rules.entry(rule.as_str()).or_default() += n;
        }
    }
    if m.policy_version != "none" {
        let _ = writeln!(out, "policy sha256 {}", m.policy_version);
    }
    for (rule, n) in rules {
        let _ = writeln!(
            out,
            "policy rule {rule}: {n} resource(s) segregated or changed"
        );
    }
    if let Some(codes) = &m.code_checks {
        let problems: u64 = codes.problems.values().sum();
        let _ = write!(
            out,
            "codes: {} coded element(s) and {} unit(s) checked, {problems} problem(s) in {} resource(s)",
            codes.concepts, codes.quantities, codes.resources_with_issues
        );
        if codes.mappings_applied > 0 {
            let _ = write!(
                out,
                ", {} coding(s) added by concept maps",
                codes.mappings_applied
            );
        }
        let _ = writeln!(out);
        if let Some(tx) = &codes.terminology_server {
            let _ = writeln!(
                out,
                "terminology server {}: {} coding(s) checked ({} code(s) asked in {} request(s), {} from the lake's cache; {} unknown to it, {} in systems it does not hold)",
                tx.server,
                tx.codings_checked,
                tx.codes_asked,
                tx.requests,
                tx.codes_cached,
                tx.codes_invalid,
                tx.codes_unsupported
            );
            if tx.codings_unverified > 0 {
                let _ = writeln!(
                    out,
                    "warning: {} coding(s) ({} code(s)) unverified: {}; the next load asks them again",
                    tx.codings_unverified,
                    tx.codes_unverified,
                    tx.error
                        .as_deref()
                        .unwrap_or("the server did not answer them")
                );
            }
        }
        if codes.curation_open > 0 || codes.curation_resolved > 0 {
            let _ = writeln!(
                out,
                "curation queue: {} open item(s), {} resolved by this job: fhirlake curation list --lake {}",
                codes.curation_open, codes.curation_resolved, m.lake
            );
        }
    }
    if let Some(v) = &m.validation {
        let _ = writeln!(
            out,
            "validation ({}, on invalid: {}): {} resource(s) validated, {} valid, {} invalid, {} with no profile",
            v.package, v.on_invalid, v.validated, v.valid, v.invalid, v.no_profile
        );
        for (profile, n) in &v.invalid_by_profile {
            let _ = writeln!(out, "  {n} invalid against {profile}");
        }
        if v.rows_written > 0 {
            let _ = writeln!(
                out,
                "{} finding(s) written: query {}_validation (join on id, meta_last_updated)",
                v.rows_written, m.lake
            );
        }
    }
    if t.quarantined > 0 {
        let _ = writeln!(
            out,
            "{} line(s) quarantined: query {}_quarantine for file, line and reason",
            t.quarantined, m.lake
        );
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "manifest: {}{}", m.lake, report.manifest_path);
    out
}

pub fn json(report: &LoadReport) -> Value {
    let mut out = json!({
        "job_id": report.manifest.job_id,
        "kind": report.manifest.kind,
        "manifest": format!("{}{}", report.manifest.lake, report.manifest_path),
        "elapsed_s": report.elapsed_s,
        "bytes_read": report.bytes_read,
        "stages": report.stages,
        "totals": report.manifest.totals,
        "tables": report.manifest.tables,
        "inputs": report.manifest.inputs,
        "changed": report.manifest.totals.inserted + report.manifest.totals.updated > 0,
        "policy_version": report.manifest.policy_version,
        "warnings": report.warnings,
    });
    if let Some(codes) = &report.manifest.code_checks {
        out["code_checks"] = json!(codes);
    }
    if let Some(validation) = &report.manifest.validation {
        out["validation"] = json!(validation);
    }
    if let Some(sync) = &report.manifest.sync {
        out["sync"] = json!(sync);
    }
    if let Some(hl7v2) = &report.manifest.hl7v2 {
        // The per-message log stays in the manifest: a feed can be large.
        out["hl7v2"] = json!({
            "messages": hl7v2.messages,
            "resources": hl7v2.resources,
            "unmapped_segments": hl7v2.unmapped_segments,
            "sequence_gaps": hl7v2.sequence_gaps,
            "file_warnings": hl7v2.file_warnings,
            "raw": hl7v2.raw,
        });
    }
    out
}

/// The HL7 v2 part of a job's summary: what became of the messages.
pub fn hl7v2_text(report: &LoadReport) -> String {
    let Some(h) = &report.manifest.hl7v2 else {
        return String::new();
    };
    let m = &h.messages;
    let mut out = format!(
        "hl7v2: {} message(s): {} converted into {} resource(s), {} replay(s) of messages already loaded, {} rejected\n",
        m.received, m.converted, h.resources, m.replays, m.rejected
    );
    if m.rejected > 0 {
        let _ = writeln!(
            out,
            "{} message(s) quarantined whole: query {}_quarantine WHERE reason_code LIKE 'hl7v2%' for segment, field and reason",
            m.rejected, report.manifest.lake
        );
    }
    if !h.unmapped_segments.is_empty() {
        let list: Vec<String> = h
            .unmapped_segments
            .iter()
            .map(|(id, n)| format!("{id} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "segments not mapped (kept in _raw/): {}",
            list.join(", ")
        );
    }
    for gap in &h.sequence_gaps {
        let _ = writeln!(
            out,
            "warning: {} skipped MSH-13 sequence numbers {}..{}",
            gap.sender,
            gap.after + 1,
            gap.next - 1
        );
    }
    for warning in &h.file_warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}
