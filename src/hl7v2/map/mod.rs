//! HL7 v2 message → FHIR R4 resources (`serde_json::Value`), following the
//! HL7 v2-to-FHIR IG segment and datatype maps.
//!
//! In: a parsed [`Message`] and [`MapOptions`]. Out: a [`Conversion`] — the
//! resources, facts about the message ([`MessageInfo`]), how every segment
//! was accounted for, and warnings — or a [`MapError`] naming why the
//! message must be quarantined (for example an MSH-9 we do not map).
//!
//! Messages: ADT A01 A02 A03 A04 A05 A06 A07 A08 A11 A13 A14 A28 A31 A40,
//! ORM^O01, ORU^R01. Segments mapped (anything else, and every Z-segment, is
//! counted in `unmapped_segments`; Z-segments are also kept in `z_segments`):
//!
//! | segment | becomes |
//! |---|---|
//! | MSH, EVN, SFT | MessageHeader, Provenance, `meta` of every resource |
//! | PID | Patient (`patient.rs`) |
//! | NK1 | Patient.contact |
//! | MRG (A40) | Patient.link `replaces` + the old Patient, inactive, `replaced-by` |
//! | PV1, PV2 | Encounter, Location, Practitioner (`encounter.rs`) |
//! | ORC, OBR, TQ1 | ServiceRequest (`order.rs`); OBR also DiagnosticReport in ORU |
//! | OBX | Observation (`result.rs`) |
//! | SPM, OBR-15 | Specimen |
//! | NTE | `note` of the resource it follows (ServiceRequest, DiagnosticReport or Observation); an NTE after anything else is unmapped |
//!
//! Ids are deterministic (see `ids`). Every resource gets `meta.lastUpdated`
//! (EVN-2, else MSH-7, with its offset), `meta.versionId` (MSH-13 as a
//! 20-digit zero-padded number when it is numeric; else the MSH-7 instant in
//! UTC as `yyyyMMddHHmmssffffff`, `-`, MSH-10 — both forms sort as strings
//! in the order the messages were sent) and `meta.source`
//! (`urn:fhirlake:hl7v2:<MSH-3>|<MSH-4>`).

mod datatypes;
mod encounter;
mod group;
mod header;
mod order;
mod patient;
mod result;
mod tables;
mod walk;

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Offset};
use serde::Serialize;
use serde_json::Value as Json;
use thiserror::Error;

use super::dtm::DtmError;
use super::parse::{Message, Version};

/// How to map.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// Offset for v2 timestamps that carry none (default UTC). Each use is
    /// reported (`MessageInfo::timezone_assumed`, a warning per field).
    pub timezone: FixedOffset,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            timezone: chrono::Utc.fix(),
        }
    }
}

/// Facts about the message, for the manifest and for ACKs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageInfo {
    pub control_id: String,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub receiving_application: Option<String>,
    pub receiving_facility: Option<String>,
    pub message_type: String,
    pub trigger_event: String,
    /// MSH-9.3, or the standard structure for the event when MSH-9.3 is empty.
    pub structure: String,
    pub version: Version,
    /// MSH-7 as an instant.
    pub timestamp: DateTime<FixedOffset>,
    /// EVN-2 as an instant, when present and valid.
    pub event_timestamp: Option<DateTime<FixedOffset>>,
    /// MSH-13, when numeric.
    pub sequence_number: Option<u64>,
    pub processing_id: Option<String>,
    /// True when any timestamp had no offset and `MapOptions::timezone` was used.
    pub timezone_assumed: bool,
}

/// The result of mapping one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversion {
    /// MessageHeader first, Provenance last, the clinical resources between.
    pub resources: Vec<Json>,
    pub info: MessageInfo,
    /// Segments that were mapped, by id (with `unmapped_segments` they add up
    /// to every segment of the message).
    pub mapped_segments: BTreeMap<String, u64>,
    pub unmapped_segments: BTreeMap<String, u64>,
    /// Z-segments, raw (still escaped), in message order.
    pub z_segments: Vec<String>,
    pub warnings: Vec<MapWarning>,
}

/// Something mapped imperfectly; the resources are still usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MapWarning {
    /// A timestamp had no offset; `MapOptions::timezone` was used (once per segment id and field).
    TimezoneAssumed {
        segment: String,
        field: usize,
        offset: String,
    },
    InvalidTimestamp {
        segment: String,
        segment_index: usize,
        field: usize,
        value: String,
        reason: DtmError,
    },
    InvalidNumber {
        segment: String,
        segment_index: usize,
        field: usize,
        value: String,
    },
    /// A code with no FHIR equivalent in the IG's concept map (empty code: field missing).
    UnmappedCode {
        segment: String,
        segment_index: usize,
        field: usize,
        table: &'static str,
        code: String,
    },
    /// Only the first repetition fits the FHIR element.
    RepetitionsDropped {
        segment: String,
        segment_index: usize,
        field: usize,
        total: usize,
    },
    /// OBX-2 value type with no FHIR value[x]: kept as valueString.
    ValueAsString {
        segment_index: usize,
        value_type: String,
    },
    /// Two segments produced the same id; the later one got a `-n` suffix.
    DuplicateId {
        resource_type: String,
        id: String,
        segment_index: usize,
    },
    /// No PV1-19 and no PV1-44: the Encounter id is specific to this message.
    EncounterPerMessage { segment_index: usize },
    /// A merge whose old and new identifiers give the same Patient.
    SelfMerge { segment_index: usize },
    /// A segment that needs context it did not get (e.g. NK1 without PID).
    NoContext {
        segment: String,
        segment_index: usize,
        needs: &'static str,
    },
}

/// Why a message cannot be mapped (quarantine it with this reason).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error(
        "MSH-9 `{message_type}` is not mapped (fhirlake maps ADT^A01-A08/A11/A13/A14/A28/A31/A40, ORM^O01, ORU^R01)"
    )]
    UnsupportedMessageType { message_type: String },
    #[error("{message_type} message has no {segment} segment, which it needs")]
    MissingSegment {
        segment: &'static str,
        message_type: String,
    },
    #[error(
        "segment {segment_index} ({segment}) has no identifier in {fields}: a stable Patient id needs one"
    )]
    NoPatientIdentifier {
        segment: &'static str,
        segment_index: usize,
        fields: &'static str,
    },
    #[error(
        "MSH-7 `{value}` is not a usable timestamp ({reason}): it dates every resource, send YYYYMMDDHHMM[SS][+/-ZZZZ]"
    )]
    BadMessageTimestamp { value: String, reason: DtmError },
}

impl MapError {
    /// The (segment index, segment id, field) the error points at.
    pub fn location(&self) -> Option<(usize, &str, Option<usize>)> {
        match self {
            MapError::UnsupportedMessageType { .. } => Some((1, "MSH", Some(9))),
            MapError::BadMessageTimestamp { .. } => Some((1, "MSH", Some(7))),
            MapError::NoPatientIdentifier {
                segment,
                segment_index,
                ..
            } => Some((*segment_index, segment, Some(3))),
            MapError::MissingSegment { .. } => None,
        }
    }
}

/// Map one message.
pub fn convert(msg: &Message<'_>, opts: &MapOptions) -> Result<Conversion, MapError> {
    walk::convert(msg, opts)
}

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
