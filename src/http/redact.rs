//! URLs safe to log: no credentials in the user part or the query.

use url::Url;

/// Query parameters kept as they are: FHIR search and Bulk Data parameters.
/// Anything else (a pre-signed URL's signature, a continuation token) is
/// replaced, because it may carry credentials.
const SAFE: &[&str] = &[
    "_outputFormat",
    "_since",
    "_until",
    "_type",
    "_elements",
    "_typeFilter",
    "patient",
    "includeAssociatedData",
    "allowPartialManifests",
    "organizeOutputBy",
    "_format",
    "_lastUpdated",
    "_count",
    "_sort",
    "_total",
    "_summary",
    "_include",
    "_revinclude",
    "_id",
    "date",
];

/// A URL safe to log: query parameters other than FHIR's own are replaced
/// (pre-signed download URLs carry credentials there).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.split('?').next().unwrap_or_default().to_owned();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.is_empty() {
        parsed.set_query(None);
        return parsed.to_string();
    }
    let kept: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            if SAFE.contains(&k.as_str()) {
                format!("{k}={v}")
            } else {
                format!("{k}=<redacted>")
            }
        })
        .collect();
    parsed.set_query(None);
    format!("{parsed}?{}", kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_download_urls_lose_their_credentials() {
        let url =
            "https://bucket.s3.amazonaws.com/f/1.ndjson?X-Amz-Signature=abc&X-Amz-Credential=AKIA";
        let shown = redact_url(url);
        assert!(!shown.contains("abc") && !shown.contains("AKIA"), "{shown}");
        assert!(shown.starts_with("https://bucket.s3.amazonaws.com/f/1.ndjson?"));
        let kickoff = "https://ehr/fhir/Group/1/$export?_type=Patient&_since=2024-01-01T00:00:00Z";
        assert!(redact_url(kickoff).contains("_type=Patient"));
        assert!(!redact_url("https://user:pw@ehr/fhir").contains("pw"));
    }
}
