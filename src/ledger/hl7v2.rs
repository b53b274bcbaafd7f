//! What an HL7 v2 job received and what became of each message: converted
//! (its resources are lines of the job's input), a replay of a message the
//! lake already holds (nothing written), or rejected (quarantined whole).
//! Also every segment mapped or not, per segment id, gaps in the senders'
//! MSH-13 sequence numbers, and where the raw messages are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hl7v2Record {
    /// Where the messages came from: the files, or `mllp://<listen address>`.
    pub origin: String,
    /// Offset used for timestamps that carry none (`--timezone`).
    pub timezone: String,
    pub messages: MessageCounts,
    /// Resources the converted messages became (lines of the job's input).
    pub resources: u64,
    /// Every segment of every parsed message, by segment id: mapped to a
    /// resource or counted here as not mapped (Z-segments among them).
    pub mapped_segments: BTreeMap<String, u64>,
    pub unmapped_segments: BTreeMap<String, u64>,
    /// Mapping warnings (kept per message in `log`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warnings: u64,
    /// Messages that used `timezone` for a timestamp without an offset.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timezone_assumed: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence_gaps: Vec<SequenceGap>,
    /// File-level findings: batch counts that do not match, lines outside
    /// any message (kept in `_raw/` with the file, never loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_warnings: Vec<String>,
    /// Objects under `_raw/hl7v2/` holding the messages exactly as received.
    pub raw: Vec<RawObject>,
    /// One entry per message, in the order received.
    pub log: Vec<MessageRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageCounts {
    pub received: u64,
    pub converted: u64,
    pub replays: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    #[default]
    Converted,
    /// Same sender, MSH-10 and MSH-7 as a message already in the lake or earlier
    /// in this job: acknowledged, not written again.
    Replay,
    /// Could not be parsed or mapped: quarantined whole.
    Rejected,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageRecord {
    /// MSH-10.
    pub control_id: String,
    /// MSH-3|MSH-4.
    pub sender: String,
    /// MSH-9, e.g. `ADT^A08`.
    pub message_type: String,
    pub sha256: String,
    /// Where it came from (file path or `mllp://peer`) and its 1-based
    /// number there.
    pub source: String,
    pub number: u64,
    /// The `_raw/` object and byte range holding it.
    pub raw: String,
    pub raw_offset: u64,
    pub raw_bytes: u64,
    pub status: MessageStatus,
    /// Lines of the job's input holding its resources (converted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(u64, u64)>,
    /// The resources it became, as `Type/id` (converted only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// MSH-13 numbers a sender skipped between two messages of this job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SequenceGap {
    pub sender: String,
    pub after: u64,
    pub next: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RawObject {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Hl7v2Record {
    /// Every message received is converted, a replay or rejected, and the
    /// resources add up to what the converted messages produced.
    pub fn accounting_holds(&self) -> bool {
        let m = &self.messages;
        let statuses = |s: MessageStatus| self.log.iter().filter(|r| r.status == s).count() as u64;
        let resources: u64 = self
            .log
            .iter()
            .filter_map(|r| r.lines.map(|(first, last)| last + 1 - first))
            .sum();
        m.received == m.converted + m.replays + m.rejected
            && m.received == self.log.len() as u64
            && m.converted == statuses(MessageStatus::Converted)
            && m.replays == statuses(MessageStatus::Replay)
            && m.rejected == statuses(MessageStatus::Rejected)
            && resources == self.resources
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
