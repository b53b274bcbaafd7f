//! One job's HL7 v2 messages, converted as they arrive: each message is
//! parsed and mapped (`crate::hl7v2`) at once, so a listener can answer it,
//! and kept with what the ledger must know about it until the job commits.
//!
//! A message ends as one of three [`MessageStatus`]es: converted (its
//! resources become lines of the job's one NDJSON input), a replay (its
//! MessageHeader id — sender, MSH-10 and MSH-7 — was seen earlier in the feed or is
//! already in the lake; nothing is written), or rejected (it did not parse
//! or map: quarantined whole, with the segment, field and reason).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use sha2::{Digest, Sha256};

use crate::fhir;
use crate::hl7v2::ack::{self, AckCode, AckError, AckHeader};
use crate::hl7v2::{MapOptions, parse};
use crate::lake::{Lake, LakeError, LoadMode};
use crate::ledger::{
    Hl7v2Record, MessageCounts, MessageRecord, MessageStatus, RawObject, SequenceGap,
};
use crate::load::{Input, Rejection, SourceKind};

/// Where `_raw/` keeps each job's messages exactly as received.
pub const RAW_DIR: &str = "_raw/hl7v2";

/// Where a message came from: a file path or `mllp://peer`, and its
/// 1-based number there.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: String,
    pub number: u64,
    /// Byte offset of its MSH in the source (0 for a frame).
    pub byte_offset: u64,
}

struct Entry {
    record: MessageRecord,
    ack: AckHeader,
    error: Option<AckError>,
    reason_code: &'static str,
    /// The MessageHeader id, for converted messages.
    key: Option<String>,
    /// Its resources as NDJSON lines.
    ndjson: Vec<u8>,
    resources: u64,
    byte_offset: u64,
}

/// The messages of one job.
pub struct Feed {
    options: MapOptions,
    origin: String,
    entries: Vec<Entry>,
    converted: HashMap<String, usize>,
    raw: Vec<u8>,
    mapped: BTreeMap<String, u64>,
    unmapped: BTreeMap<String, u64>,
    warnings: u64,
    timezone_assumed: u64,
    last_sequence: HashMap<String, u64>,
    gaps: Vec<SequenceGap>,
    file_warnings: Vec<String>,
}

/// What a job hands the load: the NDJSON input, the rejected messages, the
/// ledger record and the raw bytes to keep under `_raw/`.
pub struct JobParts {
    pub input: Input,
    pub rejections: Vec<Rejection>,
    pub record: Hl7v2Record,
    pub raw_path: String,
    pub raw: Bytes,
}

impl Feed {
    /// `origin` names the whole feed in the manifest (a directory, a file,
    /// `mllp://127.0.0.1:2575`).
    pub fn new(origin: impl Into<String>, options: MapOptions) -> Self {
        Self {
            options,
            origin: origin.into(),
            entries: Vec::new(),
            converted: HashMap::new(),
            raw: Vec::new(),
            mapped: BTreeMap::new(),
            unmapped: BTreeMap::new(),
            warnings: 0,
            timezone_assumed: 0,
            last_sequence: HashMap::new(),
            gaps: Vec::new(),
            file_warnings: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses and maps one message; returns its index for [`Feed::ack`].
    pub fn push(&mut self, bytes: &[u8], origin: Origin) -> usize {
        let raw_offset = self.raw.len() as u64;
        self.raw.extend_from_slice(bytes);
        self.raw.push(b'\n');
        let mut record = MessageRecord {
            sha256: hex::encode(Sha256::digest(bytes)),
            source: origin.source,
            number: origin.number,
            raw_offset,
            raw_bytes: bytes.len() as u64,
            ..MessageRecord::default()
        };
        let entry = |record, ack, error: Option<AckError>, reason_code| Entry {
            record,
            ack,
            reason_code,
            error,
            key: None,
            ndjson: Vec::new(),
            resources: 0,
            byte_offset: origin.byte_offset,
        };
        let message = match parse(bytes) {
            Ok(message) => message,
            Err(e) => {
                let ack = AckHeader::salvage(bytes);
                record.control_id = ack.control_id.clone();
                record.sender = sender(&ack.sending_application, &ack.sending_facility);
                record.status = MessageStatus::Rejected;
                record.reason = Some(located(&e.to_string(), e.location()));
                let error = AckError::from_parse(&e);
                return self.add(entry(record, ack, Some(error), "hl7v2_parse"));
            }
        };
        let ack = AckHeader::from_message(&message);
        let (kind, event, _) = message.message_type();
        record.message_type = if event.is_empty() {
            kind.into_owned()
        } else {
            format!("{kind}^{event}")
        };
        record.control_id = message.control_id().into_owned();
        record.sender = sender(&ack.sending_application, &ack.sending_facility);
        let conversion = match crate::hl7v2::convert(&message, &self.options) {
            Ok(conversion) => conversion,
            Err(e) => {
                record.status = MessageStatus::Rejected;
                record.reason = Some(located(&e.to_string(), e.location()));
                let error = AckError::from_map(&e, Some(&message));
                return self.add(entry(record, ack, Some(error), "hl7v2_unmapped"));
            }
        };
        for (id, n) in &conversion.mapped_segments {
            *self.mapped.entry(id.clone()).or_default() += n;
        }
        for (id, n) in &conversion.unmapped_segments {
            *self.unmapped.entry(id.clone()).or_default() += n;
        }
        self.warnings += conversion.warnings.len() as u64;
        self.timezone_assumed += u64::from(conversion.info.timezone_assumed);
        record.warnings = conversion
            .warnings
            .iter()
            .map(|w| serde_json::to_string(w).unwrap_or_default())
            .collect();
        if let Some(n) = conversion.info.sequence_number {
            self.note_sequence(&record.sender, n);
        }
        let key = conversion.resources.first().and_then(|r| r["id"].as_str());
        let key = key.map(str::to_owned);
        let mut converted = entry(record, ack, None, "");
        if let Some(key) = &key
            && self.converted.contains_key(key)
        {
            converted.record.status = MessageStatus::Replay;
            return self.add(converted);
        }
        for resource in &conversion.resources {
            // Values built by the mapper always serialise.
            converted
                .ndjson
                .extend(serde_json::to_vec(resource).unwrap_or_default());
            converted.ndjson.push(b'\n');
        }
        converted.resources = conversion.resources.len() as u64;
        converted.record.resources = conversion
            .resources
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{}/{}",
                    r["resourceType"].as_str()?,
                    r["id"].as_str()?
                ))
            })
            .collect();
        converted.key = key.clone();
        let index = self.add(converted);
        if let Some(key) = key {
            self.converted.insert(key, index);
        }
        index
    }

    /// Something about a file that is not an error in any one message.
    pub fn warn(&mut self, warning: String) {
        self.file_warnings.push(warning);
    }

    fn add(&mut self, entry: Entry) -> usize {
        self.entries.push(entry);
        self.entries.len() - 1
    }

    fn note_sequence(&mut self, sender: &str, n: u64) {
        if let Some(last) = self.last_sequence.insert(sender.to_owned(), n)
            && n > last + 1
        {
            self.gaps.push(SequenceGap {
                sender: sender.to_owned(),
                after: last,
                next: n,
            });
        }
    }

    /// Marks as replays the converted messages whose MessageHeader the lake
    /// already holds: a sender's retry, or the same feed loaded again.
    pub async fn find_replays(&mut self, lake: &Lake, mode: LoadMode) -> Result<u64, LakeError> {
        let keys: Vec<String> = self.converted.keys().cloned().collect();
        let table = fhir::table_name("MessageHeader");
        let held: HashSet<String> = crate::lake::held_ids(lake, &table, mode, &keys).await?;
        for key in &held {
            if let Some(index) = self.converted.remove(key) {
                let entry = &mut self.entries[index];
                entry.record.status = MessageStatus::Replay;
                entry.record.resources.clear();
                entry.ndjson = Vec::new();
                entry.resources = 0;
            }
        }
        Ok(held.len() as u64)
    }

    /// Everything the load job needs (`job` names the raw object), and
    /// what the ACKs need once it has committed.
    pub fn split(self, job: &str) -> (JobParts, Acks) {
        let raw = Bytes::from(self.raw);
        let raw_sha256 = hex::encode(Sha256::digest(&raw));
        let raw_path = format!("{RAW_DIR}/{job}-{}.hl7", &raw_sha256[..16]);
        let mut ndjson = Vec::new();
        let mut line = 1u64;
        let mut record = Hl7v2Record {
            origin: self.origin.clone(),
            timezone: self.options.timezone.to_string(),
            mapped_segments: self.mapped,
            unmapped_segments: self.unmapped,
            warnings: self.warnings,
            timezone_assumed: self.timezone_assumed,
            sequence_gaps: self.gaps,
            file_warnings: self.file_warnings,
            raw: vec![RawObject {
                path: raw_path.clone(),
                sha256: raw_sha256,
                bytes: raw.len() as u64,
            }],
            ..Hl7v2Record::default()
        };
        let mut rejections = Vec::new();
        let mut counts = MessageCounts::default();
        let mut acks = Acks(Vec::with_capacity(self.entries.len()));
        for mut entry in self.entries {
            acks.0.push((entry.record.status, entry.ack, entry.error));
            counts.received += 1;
            entry.record.raw = raw_path.clone();
            match entry.record.status {
                MessageStatus::Converted => {
                    counts.converted += 1;
                    record.resources += entry.resources;
                    if entry.resources > 0 {
                        entry.record.lines = Some((line, line + entry.resources - 1));
                        line += entry.resources;
                    }
                    ndjson.extend_from_slice(&entry.ndjson);
                }
                MessageStatus::Replay => counts.replays += 1,
                MessageStatus::Rejected => {
                    counts.rejected += 1;
                    let start = entry.record.raw_offset as usize;
                    let end = start + entry.record.raw_bytes as usize;
                    rejections.push(Rejection {
                        source: entry.record.source.clone(),
                        source_sha256: entry.record.sha256.clone(),
                        line: entry.record.number,
                        byte_offset: entry.byte_offset,
                        reason_code: entry.reason_code,
                        reason: format!(
                            "HL7 v2 message {} (MSH-10 `{}`): {}",
                            entry.record.number,
                            entry.record.control_id,
                            entry.record.reason.as_deref().unwrap_or_default()
                        ),
                        raw: raw[start..end].to_vec(),
                    });
                }
            }
            record.log.push(entry.record);
        }
        record.messages = counts;
        let mut input = Input::memory(
            format!("{} (as FHIR)", self.origin),
            SourceKind::Hl7v2,
            Bytes::from(ndjson),
        );
        input.expected_type = None;
        let parts = JobParts {
            input,
            rejections,
            record,
            raw_path,
            raw,
        };
        (parts, acks)
    }
}

/// Per message, in the order pushed: its status and what its ACK needs.
pub struct Acks(Vec<(MessageStatus, AckHeader, Option<AckError>)>);

impl Acks {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The status of message `index` and its ACK, to send only once the job
    /// has committed: an `AA` promises the message is durable.
    pub fn ack(&self, index: usize, now: DateTime<FixedOffset>) -> (MessageStatus, String) {
        let (status, header, error) = &self.0[index];
        let code = error.as_ref().map_or(AckCode::AA, AckError::ack_code);
        (*status, ack::build(header, code, error.as_ref(), now))
    }

    /// An `AE` for a message the lake could not store (the sender should
    /// send it again; nothing of it is acknowledged).
    pub fn not_stored(&self, index: usize, reason: &str, now: DateTime<FixedOffset>) -> String {
        let error = AckError {
            code: 207,
            location: None,
            message: format!("not stored, send again: {reason}"),
        };
        ack::build(&self.0[index].1, AckCode::AE, Some(&error), now)
    }
}

fn sender(application: &str, facility: &str) -> String {
    format!("{application}|{facility}")
}

/// The error with where it is (`segment 3 (OBX), field 5: ...`).
fn located(message: &str, location: Option<(usize, &str, Option<usize>)>) -> String {
    match location {
        Some((index, id, Some(field))) => {
            format!("segment {index} ({id}), field {field}: {message}")
        }
        Some((index, id, None)) => format!("segment {index} ({id}): {message}"),
        None => message.to_owned(),
    }
}
