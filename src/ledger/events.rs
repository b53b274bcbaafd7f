//! The export's structured event log: one JSON object per event, kept in
//! memory and written beside the job state as NDJSON each time it is saved.

use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// Called with each event as it is recorded.
pub type Echo = Arc<dyn Fn(&str, &Value) + Send + Sync>;

#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Value>>>,
    echo: Option<Echo>,
}

impl EventLog {
    /// `echo` sees every event as it happens (the CLI's progress display).
    pub fn new(previous: Vec<Value>, echo: Option<Echo>) -> Self {
        Self {
            events: Arc::new(Mutex::new(previous)),
            echo,
        }
    }

    /// Records `event` with `detail` (an object; its fields are merged in).
    /// Callers pass redacted URLs only.
    pub fn record(&self, event: &str, detail: Value) {
        let mut entry = json!({
            "at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "event": event,
        });
        if let (Some(entry), Value::Object(detail)) = (entry.as_object_mut(), detail) {
            entry.extend(detail);
        }
        if let Some(echo) = &self.echo {
            echo(event, &entry);
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
