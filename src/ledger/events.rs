//! A job's structured event log: one JSON object per event, kept in memory
//! and written beside the job state as NDJSON each time it is saved.
//!
//! Each kind of event is a type implementing [`Event`]; `event.emit(&log)`
//! records its JSON and hands the line it describes itself with (if any) to
//! the display. Nothing matches events by their names afterwards.

use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// Called with each event's line for people, as it happens.
pub type Echo = Arc<dyn Fn(&str) + Send + Sync>;

/// One kind of job event. Implementations carry redacted URLs only.
pub trait Event {
    /// The `event` field of the record.
    fn name(&self) -> &'static str;
    /// The record's other fields (an object).
    fn detail(&self) -> Value;
    /// A line for the progress display, if the event is worth one.
    fn describe(&self) -> Option<String> {
        None
    }

    /// Records the event in `log`.
    fn emit(&self, log: &EventLog)
    where
        Self: Sized,
    {
        log.record(self);
    }
}

#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Value>>>,
    echo: Option<Echo>,
}

impl EventLog {
    /// `echo` sees every event's line as it happens (the CLI's progress display).
    pub fn new(previous: Vec<Value>, echo: Option<Echo>) -> Self {
        Self {
            events: Arc::new(Mutex::new(previous)),
            echo,
        }
    }

    fn record(&self, event: &dyn Event) {
        let mut entry = json!({
            "at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "event": event.name(),
        });
        if let (Some(entry), Value::Object(detail)) = (entry.as_object_mut(), event.detail()) {
            entry.extend(detail);
        }
        if let (Some(echo), Some(line)) = (&self.echo, event.describe()) {
            echo(&line);
        }
        self.events.lock().expect("event log lock").push(entry);
    }

    pub fn to_ndjson(&self) -> String {
        let events = self.events.lock().expect("event log lock");
        let mut out = String::new();
        for event in events.iter() {
            out.push_str(&event.to_string());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Kicked<'a> {
        url: &'a str,
    }

    impl Event for Kicked<'_> {
        fn name(&self) -> &'static str {
            "kickoff"
        }
        fn detail(&self) -> Value {
            json!({"url": self.url})
        }
        fn describe(&self) -> Option<String> {
            Some(format!("kick-off accepted ({})", self.url))
        }
    }

    #[test]
    fn an_event_is_recorded_with_its_fields_and_echoed_as_its_line() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let log = EventLog::new(
            Vec::new(),
            Some(Arc::new(move |line: &str| {
                seen.lock().unwrap().push(line.to_owned())
            })),
        );
        Kicked {
            url: "https://ehr/fhir/$export",
        }
        .emit(&log);
        let record: Value = serde_json::from_str(log.to_ndjson().trim()).unwrap();
        assert_eq!(record["event"], "kickoff");
        assert_eq!(record["url"], "https://ehr/fhir/$export");
        assert!(record["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            *lines.lock().unwrap(),
            ["kick-off accepted (https://ehr/fhir/$export)"]
        );
    }
}
