//! The server's own files of an export: `error[]` OperationOutcome lines
//! (quarantined with the server's diagnostics) and `deleted[]` Bundles
//! (applied as deletions after the load).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use super::kickoff::diagnostics;
use crate::fhir;
use crate::lake::Deletion;
use crate::ledger::ExportFile;
use crate::load::Rejection;
use crate::load::{Input, SourceKind};

/// A raw file's lines, read through the one input opener (gzip by content).
fn read_lines(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let reader = Input::local(path.to_path_buf(), SourceKind::Export)?.open()?;
    std::io::BufReader::new(reader).split(b'\n').collect()
}

/// error[] files: each line becomes a quarantine row naming the server's diagnostics.
pub(super) fn server_issues(raw: &Path, file: &mut ExportFile) -> std::io::Result<Vec<Rejection>> {
    let path = raw.join(&file.name);
    let mut issues = Vec::new();
    let mut offset = 0u64;
    for (i, line) in read_lines(&path)?.into_iter().enumerate() {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = diagnostics(&line);
        file.diagnostics.push(text.clone());
        issues.push(Rejection {
            source: path.display().to_string(),
            source_sha256: file.sha256.clone().unwrap_or_default(),
            line: i as u64 + 1,
            byte_offset: line_offset,
            reason_code: "server_error",
            reason: format!("server error for export ({}): {text}", file.resource_type),
            raw: line,
        });
    }
    Ok(issues)
}

/// deleted[] files: Bundles whose entries say `DELETE Type/id`.
pub(super) fn deletions(
    raw: &Path,
    file: &ExportFile,
    transaction_time: i64,
    by_type: &mut BTreeMap<String, Vec<Deletion>>,
    issues: &mut Vec<Rejection>,
) -> std::io::Result<()> {
    let path = raw.join(&file.name);
    let source = path.display().to_string();
    let mut offset = 0u64;
    for (i, line) in read_lines(&path)?.into_iter().enumerate() {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = parse_deleted_bundle(&line, transaction_time);
        match parsed {
            Ok(found) => {
                for (resource_type, id, deleted_at, record) in found {
                    by_type.entry(resource_type).or_default().push(Deletion {
                        id,
                        deleted_at,
                        record,
                        source: source.clone(),
                        line: i as u64 + 1,
                    });
                }
            }
            Err(reason) => issues.push(Rejection {
                source: source.clone(),
                source_sha256: file.sha256.clone().unwrap_or_default(),
                line: i as u64 + 1,
                byte_offset: line_offset,
                reason_code: "server_error",
                reason: format!("deleted[] line not applied: {reason}"),
                raw: line,
            }),
        }
    }
    Ok(())
}

type Deleted = (String, String, i64, String);

/// (type, id, deleted at, entry JSON) for each DELETE entry of a Bundle line.
pub fn parse_deleted_bundle(line: &[u8], transaction_time: i64) -> Result<Vec<Deleted>, String> {
    let bundle: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err("not a Bundle".into());
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("the Bundle has no entry")?;
    let mut found = Vec::new();
    for entry in entries {
        let request = entry.get("request").ok_or("an entry has no request")?;
        if request.get("method").and_then(Value::as_str) != Some("DELETE") {
            return Err("an entry's request.method is not DELETE".into());
        }
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or("an entry has no request.url")?;
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(h) = segments.iter().position(|s| *s == "_history") {
            segments.truncate(h);
        }
        let (resource_type, id) = match segments.as_slice() {
            [.., t, id] if fhir::is_valid_resource_type(t) => (*t, *id),
            _ => return Err(format!("request.url {url:?} is not Type/id")),
        };
        if !fhir::is_valid_id(id) {
            return Err(format!(
                "request.url {url:?}: {id:?} is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)"
            ));
        }
        let deleted_at = entry
            .pointer("/response/lastModified")
            .and_then(Value::as_str)
            .and_then(fhir::parse_instant_micros)
            .unwrap_or(transaction_time);
        found.push((
            resource_type.to_owned(),
            id.to_owned(),
            deleted_at,
            entry.to_string(),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_bundles_name_type_id_and_time() {
        let line = br#"{"resourceType":"Bundle","type":"transaction","entry":[
            {"request":{"method":"DELETE","url":"Patient/p1"}},
            {"request":{"method":"DELETE","url":"https://ehr/fhir/Observation/o9/_history/3"},
             "response":{"status":"204","lastModified":"2024-05-01T00:00:00Z"}}]}"#;
        let found = parse_deleted_bundle(line, 7).unwrap();
        assert_eq!(found[0].0, "Patient");
        assert_eq!(found[0].1, "p1");
        assert_eq!(found[0].2, 7);
        assert_eq!(found[1].0, "Observation");
        assert_eq!(found[1].1, "o9");
        assert_eq!(
            found[1].2,
            fhir::parse_instant_micros("2024-05-01T00:00:00Z").unwrap()
        );
        assert!(parse_deleted_bundle(br#"{"resourceType":"Patient"}"#, 0).is_err());
        let put = br#"{"resourceType":"Bundle","entry":[{"request":{"method":"PUT","url":"Patient/1"}}]}"#;
        assert!(parse_deleted_bundle(put, 0).is_err());
        for url in [
            "Patient/has space",
            "Patient/a%20b",
            "patient/p1",
            "Patient/a_b",
        ] {
            let line = format!(
                r#"{{"resourceType":"Bundle","entry":[{{"request":{{"method":"DELETE","url":"{url}"}}}}]}}"#
            );
            assert!(parse_deleted_bundle(line.as_bytes(), 0).is_err(), "{url}");
        }
    }
}
