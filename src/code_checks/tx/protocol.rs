//! What `$validate-code` looks like on the wire: the batch Bundle fhirlake
//! sends, and how an answer (a `Parameters`, or an `OperationOutcome` with
//! an error status) reads as a [`Verdict`].
//!
//! ```text
//! POST [base]  Bundle(batch): entry[i].request = GET CodeSystem/$validate-code?url=SYSTEM&code=CODE
//!   ◀── Bundle(batch-response): entry[i].response.status, entry[i].resource = Parameters{result, message, display}
//! ```
//! Servers differ on a code system they do not hold: tx.fhir.org answers
//! `result = false` with `x-caused-by-unknown-system`, HAPI and Ontoserver
//! a 4xx OperationOutcome. Both read as [`Verdict::Unsupported`]: the code
//! is not verified, and it is not called wrong.

use std::sync::Arc;

use serde_json::{Value, json};

/// A server's answer about one (system, code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Not a code of the system; the server's message.
    Invalid(Arc<str>),
    /// The server cannot judge it (it does not hold the code system).
    Unsupported(Arc<str>),
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid(_) => "invalid",
            Self::Unsupported(_) => "unsupported",
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Valid => None,
            Self::Invalid(m) | Self::Unsupported(m) => Some(m),
        }
    }

    /// From the `_tx_cache` columns; `None` for a verdict name fhirlake does not write.
    pub fn parse(name: &str, message: Option<&str>) -> Option<Self> {
        let message = || Arc::from(message.unwrap_or_default());
        match name {
            "valid" => Some(Self::Valid),
            "invalid" => Some(Self::Invalid(message())),
            "unsupported" => Some(Self::Unsupported(message())),
            _ => None,
        }
    }
}

/// The relative URL asking about one code (as a batch entry, or after the
/// base for a lone GET).
pub fn question(system: &str, code: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", system)
        .append_pair("code", code)
        .finish();
    format!("CodeSystem/$validate-code?{query}")
}

/// One batch Bundle asking about every (system, code) of `keys`, in order.
pub fn batch<'k>(keys: impl IntoIterator<Item = (&'k str, &'k str)>) -> Value {
    let entry: Vec<Value> = keys
        .into_iter()
        .map(|(system, code)| json!({"request": {"method": "GET", "url": question(system, code)}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entry})
}

/// Reads a `batch-response`: one verdict per question, `None` where that
/// entry failed in a way worth asking again (5xx, 429, no readable answer).
/// An error when the body is not a batch-response with one entry per question.
pub fn read_batch(body: &[u8], questions: usize) -> Result<Vec<Option<Verdict>>, String> {
    let bundle: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let kind = bundle.get("type").and_then(Value::as_str);
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || kind != Some("batch-response")
    {
        return Err(format!(
            "expected a Bundle of type batch-response, got {} {}",
            bundle
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("no resourceType"),
            kind.unwrap_or("")
        ));
    }
    let entries = bundle.get("entry").and_then(Value::as_array);
    let entries = entries.map_or(&[][..], Vec::as_slice);
    if entries.len() != questions {
        return Err(format!(
            "the batch-response has {} entries for {questions} questions",
            entries.len()
        ));
    }
    Ok(entries
        .iter()
        .map(|entry| {
            let response = entry.get("response");
            let status = response
                .and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let resource = entry
                .get("resource")
                .or_else(|| response.and_then(|r| r.get("outcome")));
            read_answer(status, resource)
        })
        .collect())
}

/// Reads one answer with its HTTP status.
pub fn read_answer(status: u16, resource: Option<&Value>) -> Option<Verdict> {
    match status {
        200..=299 => resource.and_then(read_parameters),
        429 | 500.. => None,
        _ => Some(Verdict::Unsupported(Arc::from(
            outcome_text(resource).unwrap_or_else(|| format!("HTTP {status}")),
        ))),
    }
}

fn read_parameters(resource: &Value) -> Option<Verdict> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return None;
    }
    let parameters = resource.get("parameter")?.as_array()?;
    let named = |name: &str| {
        parameters
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
    };
    let text = |name: &str| named(name)?.get("valueString")?.as_str().map(str::to_owned);
    let result = named("result")?.get("valueBoolean")?.as_bool()?;
    if result {
        return Some(Verdict::Valid);
    }
    let message = text("message").unwrap_or_else(|| "result false".to_owned());
    Some(if named("x-caused-by-unknown-system").is_some() {
        Verdict::Unsupported(Arc::from(message))
    } else {
        Verdict::Invalid(Arc::from(message))
    })
}

/// An OperationOutcome's first diagnostics or details text.
fn outcome_text(resource: Option<&Value>) -> Option<String> {
    let issue = resource?.get("issue")?.as_array()?.first()?;
    let text = issue
        .get("diagnostics")
        .or_else(|| issue.get("details")?.get("text"))?;
    text.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(result: bool, message: Option<&str>) -> Value {
        let mut parameter = vec![json!({"name": "result", "valueBoolean": result})];
        if let Some(m) = message {
            parameter.push(json!({"name": "message", "valueString": m}));
        }
        json!({"resourceType": "Parameters", "parameter": parameter})
    }

    #[test]
    fn the_batch_asks_each_code_with_its_system_encoded() {
        let bundle = batch([
            ("http://loinc.org", "8867-4"),
            ("http://snomed.info/sct", "a&b"),
        ]);
        assert_eq!(bundle["type"], "batch");
        let urls: Vec<&str> = (bundle["entry"].as_array().unwrap().iter())
            .map(|e| e["request"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "CodeSystem/$validate-code?url=http%3A%2F%2Floinc.org&code=8867-4",
                "CodeSystem/$validate-code?url=http%3A%2F%2Fsnomed.info%2Fsct&code=a%26b",
            ]
        );
    }

    #[test]
    fn answers_read_as_verdicts() {
        let unknown_system = json!({"resourceType": "Parameters", "parameter": [
            {"name": "result", "valueBoolean": false},
            {"name": "message", "valueString": "CodeSystem x not found"},
            {"name": "x-caused-by-unknown-system", "valueCanonical": "x"}]});
        let outcome = json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Unknown CodeSystem x"}]});
        let body = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"resource": parameters(true, None), "response": {"status": "200 OK"}},
            {"resource": parameters(false, Some("Unknown code 1234-5")), "response": {"status": "200"}},
            {"resource": unknown_system, "response": {"status": "200 OK"}},
            {"response": {"status": "404 Not Found", "outcome": outcome}},
            {"response": {"status": "503 Service Unavailable"}},
            {"resource": {"resourceType": "Patient"}, "response": {"status": "200 OK"}},
        ]});
        let verdicts = read_batch(body.to_string().as_bytes(), 6).unwrap();
        assert_eq!(
            verdicts,
            [
                Some(Verdict::Valid),
                Some(Verdict::Invalid("Unknown code 1234-5".into())),
                Some(Verdict::Unsupported("CodeSystem x not found".into())),
                Some(Verdict::Unsupported("Unknown CodeSystem x".into())),
                None,
                None,
            ]
        );
        let short = read_batch(body.to_string().as_bytes(), 7).unwrap_err();
        assert!(short.contains("6 entries for 7 questions"), "{short}");
        let wrong = read_batch(br#"{"resourceType":"OperationOutcome"}"#, 1).unwrap_err();
        assert!(wrong.contains("batch-response"), "{wrong}");
    }

    #[test]
    fn verdicts_round_trip_through_the_cache_columns() {
        for v in [
            Verdict::Valid,
            Verdict::Invalid("no such code".into()),
            Verdict::Unsupported("no such system".into()),
        ] {
            assert_eq!(Verdict::parse(v.as_str(), v.message()), Some(v.clone()));
        }
        assert_eq!(Verdict::parse("maybe", None), None);
    }
}
