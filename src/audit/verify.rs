//! Checking a chain: a pure function over what was read back.
//!
//! In: the chain's stored events in ascending sequence order (name and
//! bytes), objects under the events folder that are not events, the head
//! hint as read, and anchors (heads recorded elsewhere: Delta commitInfo,
//! manifests). Out: a [`Report`] with every [`Problem`], each naming the
//! object (event path, hint path, anchor location), not just the first.
//!
//! What is checked: sequence numbers start at 0 and are contiguous; each
//! event's embedded sequence number is its name's; each event's `previous`
//! is the hash of the event before it as stored (none for event 0); each
//! event is stored in the canonical form the chain writes; each anchor (and
//! the hint) names an event that exists with that hash. An anchor beyond
//! the last event is a cut-off tail, which links alone cannot show.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical::Stored;
use super::codes;
use super::values::Sha256;

/// The latest event of a chain: what callers anchor elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub sha256: Sha256,
}

/// A head recorded outside the chain, and where it was found
/// (`patient/_delta_log/00000000000000000007.json commitInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: u64,
    pub sha256: Sha256,
    pub location: String,
}

impl Anchor {
    pub fn new(head: Head, location: impl Into<String>) -> Self {
        Self {
            seq: head.seq,
            sha256: head.sha256,
            location: location.into(),
        }
    }
}

/// The head hint as the reader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    Absent,
    Unreadable,
    Head(Head),
}

/// One thing wrong with a chain, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Events `first..=last` are not there (`path` names the first).
    Missing {
        first: u64,
        last: u64,
        path: String,
    },
    /// The object is not a chain event (not JSON, not an AuditEvent).
    Unreadable {
        seq: u64,
        path: String,
        reason: &'static str,
    },
    /// JSON, but not byte for byte the canonical form the chain writes.
    NotCanonical {
        seq: u64,
        path: String,
    },
    /// The event's own sequence number is not the one in its name.
    SequenceMismatch {
        seq: u64,
        path: String,
        found: Option<String>,
    },
    /// The event's `previous` is not the hash of the event before it as
    /// stored (`previous_path`), or event 0 has one. Either the earlier
    /// event was changed, or this one was forged.
    BrokenLink {
        seq: u64,
        path: String,
        previous_path: Option<String>,
        expected: Option<Sha256>,
        found: Option<String>,
    },
    /// An object under the events folder that is not named like an event.
    Stray {
        path: String,
    },
    /// An anchor names an event whose hash is different.
    AnchorMismatch {
        location: String,
        seq: u64,
        path: String,
        anchored: Sha256,
        actual: Sha256,
    },
    /// An anchor names an event past the chain's last: the tail was cut off.
    AnchorBeyondEnd {
        location: String,
        seq: u64,
        end: Option<u64>,
    },
    /// An anchor names an event that is missing from the middle.
    AnchorOnMissing {
        location: String,
        seq: u64,
        path: String,
    },
    /// The head hint names an event past the chain's last.
    HintBeyondEnd {
        path: String,
        seq: u64,
        end: Option<u64>,
    },
    /// The head hint names an event that is missing from the middle.
    HintOnMissing {
        path: String,
        seq: u64,
    },
    /// The head hint's hash is not its event's.
    HintMismatch {
        path: String,
        seq: u64,
        hinted: Sha256,
        actual: Sha256,
    },
    HintUnreadable {
        path: String,
    },
}

fn end_text(end: &Option<u64>) -> String {
    match end {
        Some(end) => format!("the chain ends at event {end}"),
        None => "the chain is empty".to_owned(),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { first, last, path } if first == last => {
                write!(f, "{path}: audit event {first} is missing")
            }
            Self::Missing { first, last, path } => write!(
                f,
                "{path}: audit events {first} to {last} are missing ({} events)",
                last - first + 1
            ),
            Self::Unreadable { path, reason, .. } => write!(f, "{path}: unreadable: {reason}"),
            Self::NotCanonical { path, .. } => write!(
                f,
                "{path}: not in the canonical form fhirlake writes: rewritten outside fhirlake"
            ),
            Self::SequenceMismatch { seq, path, found } => write!(
                f,
                "{path}: its sequence number is {}, its name says {seq}",
                found.as_deref().unwrap_or("missing")
            ),
            Self::BrokenLink {
                path,
                previous_path: None,
                found,
                ..
            } => write!(
                f,
                "{path}: the first event links to a previous event ({})",
                found.as_deref().unwrap_or("")
            ),
            Self::BrokenLink {
                path,
                previous_path: Some(previous),
                expected,
                found,
                ..
            } => write!(
                f,
                "{path}: its previous hash ({}) is not the hash of {previous} ({}): \
                 {previous} was changed, or {path} was forged",
                found.as_deref().unwrap_or("none"),
                expected.map(|e| e.to_string()).unwrap_or_default()
            ),
            Self::Stray { path } => write!(
                f,
                "{path}: not an audit event (events are named <20 digits>.json)"
            ),
            Self::AnchorMismatch {
                location,
                seq,
                path,
                anchored,
                actual,
            } => write!(
                f,
                "{location}: anchors audit event {seq} with hash {anchored}, but {path} hashes to {actual}"
            ),
            Self::AnchorBeyondEnd { location, seq, end } => write!(
                f,
                "{location}: anchors audit event {seq}, but {}: events were cut off the end",
                end_text(end)
            ),
            Self::AnchorOnMissing {
                location,
                seq,
                path,
            } => write!(
                f,
                "{location}: anchors audit event {seq}, which is missing ({path})"
            ),
            Self::HintBeyondEnd { path, seq, end } => write!(
                f,
                "{path}: names audit event {seq} as the head, but {}: events were cut off the end",
                end_text(end)
            ),
            Self::HintOnMissing { path, seq } => write!(
                f,
                "{path}: names audit event {seq} as the head, which is missing"
            ),
            Self::HintMismatch {
                path,
                seq,
                hinted,
                actual,
            } => write!(
                f,
                "{path}: gives audit event {seq} the hash {hinted}, but it hashes to {actual}"
            ),
            Self::HintUnreadable { path } => write!(f, "{path}: not a head hint"),
        }
    }
}

/// What [`Verifier::finish`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// The last event as stored.
    pub head: Option<Head>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The chain link an event carries.
struct Link {
    sequence: Option<String>,
    previous: Option<String>,
}

fn link_of(event: &Value) -> Link {
    let parts = event["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == codes::EXT_CHAIN)
        .and_then(|e| e["extension"].as_array());
    let part =
        |name: &str| {
            parts.into_iter().flatten().find(|p| p["url"] == name).map(
                |p| match &p["valueString"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            )
        };
    Link {
        sequence: part("sequence"),
        previous: part("previous"),
    }
}

struct Previous {
    seq: u64,
    path: String,
    digest: Sha256,
}

/// Walks a chain fed event by event, in ascending sequence order.
pub struct Verifier {
    events_dir: String,
    hint_path: String,
    next: u64,
    previous: Option<Previous>,
    anchors: BTreeMap<u64, Vec<Anchor>>,
    hint: Option<Head>,
    events: u64,
    problems: Vec<Problem>,
}

impl Verifier {
    /// `events_dir` and `hint_path` name objects in problems.
    pub fn new(events_dir: &str, hint_path: &str, anchors: &[Anchor], hint: Hint) -> Self {
        let mut by_seq: BTreeMap<u64, Vec<Anchor>> = BTreeMap::new();
        for anchor in anchors {
            by_seq.entry(anchor.seq).or_default().push(anchor.clone());
        }
        let mut problems = Vec::new();
        let hint = match hint {
            Hint::Absent => None,
            Hint::Unreadable => {
                problems.push(Problem::HintUnreadable {
                    path: hint_path.to_owned(),
                });
                None
            }
            Hint::Head(head) => Some(head),
        };
        Self {
            events_dir: events_dir.trim_end_matches('/').to_owned(),
            hint_path: hint_path.to_owned(),
            next: 0,
            previous: None,
            anchors: by_seq,
            hint,
            events: 0,
            problems,
        }
    }

    /// The path event `seq` has.
    pub fn path_of(&self, seq: u64) -> String {
        format!("{}/{seq:020}.json", self.events_dir)
    }

    /// An object under the events folder that is not named like an event.
    pub fn stray(&mut self, path: &str) {
        self.problems.push(Problem::Stray {
            path: path.to_owned(),
        });
    }

    /// The stored event `seq`. Events must come in ascending order.
    pub fn event(&mut self, seq: u64, path: &str, bytes: &[u8]) {
        assert!(
            seq >= self.next,
            "audit events fed out of order: {seq} after {}",
            self.next
        );
        if seq > self.next {
            self.problems.push(Problem::Missing {
                first: self.next,
                last: seq - 1,
                path: self.path_of(self.next),
            });
            self.previous = None;
        }
        let stored = Stored::read(bytes);
        let digest = stored.digest();
        let value = match stored {
            Stored::NotJson { .. } => None,
            Stored::Rewritten { value, .. } => {
                self.problems.push(Problem::NotCanonical {
                    seq,
                    path: path.to_owned(),
                });
                Some(value)
            }
            Stored::Canonical { value, .. } => Some(value),
        };
        match value {
            None => self.problems.push(Problem::Unreadable {
                seq,
                path: path.to_owned(),
                reason: "not JSON",
            }),
            Some(value) if value["resourceType"] != "AuditEvent" => {
                self.problems.push(Problem::Unreadable {
                    seq,
                    path: path.to_owned(),
                    reason: "not an AuditEvent",
                })
            }
            Some(value) => self.check_link(seq, path, &value),
        }
        self.check_anchors(seq, path, digest);
        self.previous = Some(Previous {
            seq,
            path: path.to_owned(),
            digest,
        });
        self.next = seq + 1;
        self.events += 1;
    }

    fn check_link(&mut self, seq: u64, path: &str, event: &Value) {
        let link = link_of(event);
        if link.sequence.as_deref() != Some(seq.to_string().as_str()) {
            self.problems.push(Problem::SequenceMismatch {
                seq,
                path: path.to_owned(),
                found: link.sequence,
            });
        }
        if seq == 0 {
            if link.previous.is_some() {
                self.problems.push(Problem::BrokenLink {
                    seq,
                    path: path.to_owned(),
                    previous_path: None,
                    expected: None,
                    found: link.previous,
                });
            }
            return;
        }
        // After a gap the event before is unknown; the gap is the problem.
        let Some(previous) = self.previous.as_ref().filter(|p| p.seq + 1 == seq) else {
            return;
        };
        let expected = previous.digest;
        let found = link.previous.as_deref().map(Sha256::from_hex);
        if !matches!(found, Some(Ok(d)) if d == expected) {
            self.problems.push(Problem::BrokenLink {
                seq,
                path: path.to_owned(),
                previous_path: Some(previous.path.clone()),
                expected: Some(expected),
                found: link.previous,
            });
        }
    }

    fn check_anchors(&mut self, seq: u64, path: &str, digest: Sha256) {
        for anchor in self.anchors.remove(&seq).unwrap_or_default() {
            if anchor.sha256 != digest {
                self.problems.push(Problem::AnchorMismatch {
                    location: anchor.location,
                    seq,
                    path: path.to_owned(),
                    anchored: anchor.sha256,
                    actual: digest,
                });
            }
        }
        if let Some(hint) = self.hint.take_if(|h| h.seq == seq)
            && hint.sha256 != digest
        {
            self.problems.push(Problem::HintMismatch {
                path: self.hint_path.clone(),
                seq,
                hinted: hint.sha256,
                actual: digest,
            });
        }
    }

    pub fn finish(mut self) -> Report {
        let end = self.previous.as_ref().map(|p| p.seq);
        let beyond = |seq: u64| end.is_none_or(|end| seq > end);
        for (seq, anchors) in std::mem::take(&mut self.anchors) {
            for anchor in anchors {
                let problem = if beyond(seq) {
                    Problem::AnchorBeyondEnd {
                        location: anchor.location,
                        seq,
                        end,
                    }
                } else {
                    Problem::AnchorOnMissing {
                        location: anchor.location,
                        seq,
                        path: self.path_of(seq),
                    }
                };
                self.problems.push(problem);
            }
        }
        if let Some(hint) = self.hint.take() {
            self.problems.push(if beyond(hint.seq) {
                Problem::HintBeyondEnd {
                    path: self.hint_path.clone(),
                    seq: hint.seq,
                    end,
                }
            } else {
                Problem::HintOnMissing {
                    path: self.hint_path.clone(),
                    seq: hint.seq,
                }
            });
        }
        Report {
            events: self.events,
            head: self.previous.map(|p| Head {
                seq: p.seq,
                sha256: p.digest,
            }),
            problems: self.problems,
        }
    }
}
