//! ACK messages, as text (frame them with `mllp::frame`).
//!
//! In: the original's header ([`AckHeader`], from a parsed [`Message`] or
//! salvaged from bytes that did not parse), an [`AckCode`], an optional
//! [`AckError`] and the current time. Out: `MSH` (sender and receiver
//! swapped, new MSH-10, MSH-9 `ACK^<event>^ACK`, same version and
//! delimiters), `MSA` (MSA-2 = the original MSH-10, always) and, for AE/AR,
//! `ERR`: v2.5+ use ERR-2 (location), ERR-3 (table 0357), ERR-4 `E`, ERR-8
//! (what to fix); v2.3/2.4 put location and code in ERR-1 (ELD) and the text
//! in MSA-3.

use chrono::{DateTime, FixedOffset};
use sha2::{Digest, Sha256};

use super::error::Hl7Error;
use super::escape::escape;
use super::map::MapError;
use super::parse::{Delimiters, Message, Version, lines, strip_bom};

/// MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted.
    AA,
    /// Error: the message was understood but could not be processed.
    AE,
    /// Reject: unsupported type, event, version or processing id.
    AR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

/// Where an error is (ERL / ELD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLocation {
    pub segment: String,
    /// 1-based occurrence of that segment id in the message.
    pub sequence: usize,
    pub field: Option<usize>,
}

/// What goes into ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// HL7 table 0357 code.
    pub code: u16,
    pub location: Option<ErrorLocation>,
    /// ERR-8: what the sender should fix.
    pub message: String,
}

/// Table 0357 text.
pub fn error_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        104 => "Value too long",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        _ => "Application internal error",
    }
}

fn occurrence(msg: Option<&Message<'_>>, index1: usize, id: &str) -> usize {
    msg.map_or(1, |m| {
        m.all().take(index1).filter(|s| s.id() == id).count().max(1)
    })
}

impl AckError {
    /// The ERR content for a parse failure.
    pub fn from_parse(e: &Hl7Error) -> AckError {
        let code = match e {
            Hl7Error::Empty | Hl7Error::NotMsh { .. } | Hl7Error::InvalidSegmentId { .. } => 100,
            Hl7Error::TruncatedHeader { .. } | Hl7Error::MissingField { .. } => 101,
            Hl7Error::UnsupportedVersion { .. } => 203,
            _ => 102,
        };
        let location = e.location().map(|(_, seg, field)| ErrorLocation {
            segment: if seg.is_empty() {
                "MSH".into()
            } else {
                seg.into()
            },
            sequence: 1,
            field,
        });
        AckError {
            code,
            location,
            message: e.to_string(),
        }
    }

    /// The ERR content for a mapping failure (`msg` locates the segment).
    pub fn from_map(e: &MapError, msg: Option<&Message<'_>>) -> AckError {
        let code = match e {
            MapError::UnsupportedMessageType { message_type } => {
                let known = ["ADT", "ORM", "ORU"]
                    .iter()
                    .any(|t| message_type.starts_with(t));
                if known { 201 } else { 200 }
            }
            MapError::MissingSegment { .. } => 100,
            MapError::NoPatientIdentifier { .. } => 101,
            MapError::BadMessageTimestamp { .. } => 102,
        };
        let location = e.location().map(|(index, seg, field)| ErrorLocation {
            segment: seg.to_string(),
            sequence: occurrence(msg, index, seg),
            field,
        });
        AckError {
            code,
            location,
            message: e.to_string(),
        }
    }

    /// AR for "we do not take this kind of message", AE otherwise.
    pub fn ack_code(&self) -> AckCode {
        if (200..=203).contains(&self.code) {
            AckCode::AR
        } else {
            AckCode::AE
        }
    }
}

/// The parts of the original MSH an ACK needs, raw (escaped in `delimiters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckHeader {
    pub delimiters: Delimiters,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub control_id: String,
    pub trigger_event: String,
    pub processing_id: String,
    pub version: String,
}

impl AckHeader {
    pub fn from_message(msg: &Message<'_>) -> AckHeader {
        let h = msg.header();
        AckHeader {
            delimiters: *msg.delimiters(),
            sending_application: h.field(3).raw().to_string(),
            sending_facility: h.field(4).raw().to_string(),
            receiving_application: h.field(5).raw().to_string(),
            receiving_facility: h.field(6).raw().to_string(),
            control_id: h.field(10).raw().to_string(),
            trigger_event: h.field(9).comp(2).raw().to_string(),
            processing_id: h.field(11).raw().to_string(),
            version: h.field(12).comp(1).raw().to_string(),
        }
    }

    /// Whatever can be read from bytes that did not parse: the first MSH
    /// line split on its field separator. With unusable encoding characters
    /// the defaults are used and the salvaged values are escaped for them.
    pub fn salvage(bytes: &[u8]) -> AckHeader {
        let bytes = strip_bom(bytes);
        let line = lines(bytes)
            .map(|(s, e, _)| &bytes[s..e])
            .find(|l| l.len() >= 4 && l.starts_with(b"MSH"));
        let mut out = AckHeader {
            delimiters: Delimiters::default(),
            sending_application: String::new(),
            sending_facility: String::new(),
            receiving_application: String::new(),
            receiving_facility: String::new(),
            control_id: String::new(),
            trigger_event: String::new(),
            processing_id: String::new(),
            version: String::new(),
        };
        let Some(line) = line else {
            return out;
        };
        let fs = line[3];
        let fields: Vec<&[u8]> = line.split(|&b| b == fs).collect();
        let parsed = Delimiters::from_header(fs, fields.get(1).copied().unwrap_or(b""));
        let get = |n: usize| -> String {
            // MSH-n is split index n-1.
            String::from_utf8_lossy(fields.get(n - 1).copied().unwrap_or(b"")).into_owned()
        };
        let first_comp = |s: String, d: &Delimiters| -> String {
            s.split(char::from(d.component))
                .next()
                .unwrap_or("")
                .to_string()
        };
        match parsed {
            Ok(d) => {
                out.delimiters = d;
                out.sending_application = get(3);
                out.sending_facility = get(4);
                out.receiving_application = get(5);
                out.receiving_facility = get(6);
                out.control_id = get(10);
                out.trigger_event = get(9)
                    .split(char::from(d.component))
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                out.processing_id = get(11);
                out.version = first_comp(get(12), &d);
            }
            Err(_) => {
                let d = Delimiters::default();
                let esc = |s: String| escape(&s, &d);
                out.sending_application = esc(get(3));
                out.sending_facility = esc(get(4));
                out.receiving_application = esc(get(5));
                out.receiving_facility = esc(get(6));
                out.control_id = esc(get(10));
                out.processing_id = esc(get(11));
                out.version = esc(get(12));
            }
        }
        // Only echo a version that is one; otherwise answer in 2.5.
        if out.version.trim().is_empty()
            || !out
                .version
                .trim()
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
        {
            out.version = "2.5".into();
        }
        out
    }
}

fn new_control_id(original: &AckHeader, code: AckCode, now: &DateTime<FixedOffset>) -> String {
    let digest = Sha256::digest(
        format!(
            "{}\u{1F}{}\u{1F}{}",
            original.control_id,
            now.to_rfc3339(),
            code.as_str()
        )
        .as_bytes(),
    );
    format!("A{}", &hex::encode(digest)[..19])
}

/// Build the ACK text (segments end with `\r`).
pub fn build(
    original: &AckHeader,
    code: AckCode,
    error: Option<&AckError>,
    now: DateTime<FixedOffset>,
) -> String {
    let d = &original.delimiters;
    let f = char::from(d.field);
    let c = char::from(d.component);
    let sub = d.subcomponent.map(char::from).unwrap_or(c);
    // ERL/ERR-3 exist from v2.5; older (even unsupported, e.g. 2.1) use ERR-1.
    let modern = match Version::parse(&original.version) {
        Ok(v) => v.at_least(5),
        Err(_) => {
            !original.version.trim().starts_with("2.")
                || original
                    .version
                    .trim()
                    .trim_start_matches("2.")
                    .split('.')
                    .next()
                    .and_then(|m| m.parse::<u8>().ok())
                    .is_none_or(|m| m >= 5)
        }
    };
    let event = if original.trigger_event.is_empty() {
        String::new()
    } else {
        format!("{c}{}", original.trigger_event)
    };
    let mut out = String::with_capacity(256);
    let processing = if original.processing_id.is_empty() {
        "P"
    } else {
        original.processing_id.as_str()
    };
    out.push_str(&format!(
        "MSH{f}{enc}{f}{ra}{f}{rf}{f}{sa}{f}{sf}{f}{now}{f}{f}ACK{event}{c}ACK{f}{id}{f}{processing}{f}{version}\r",
        enc = d.encoding_characters(),
        ra = original.receiving_application,
        rf = original.receiving_facility,
        sa = original.sending_application,
        sf = original.sending_facility,
        now = now.format("%Y%m%d%H%M%S%z"),
        id = new_control_id(original, code, &now),
        version = original.version,
    ));
    let user_text = error.map(|e| escape(&e.message, d));
    out.push_str(&format!(
        "MSA{f}{}{f}{}",
        code.as_str(),
        original.control_id
    ));
    if !modern && let Some(t) = &user_text {
        out.push_str(&format!("{f}{t}"));
    }
    out.push('\r');
    if let (Some(e), true) = (error, code != AckCode::AA) {
        let text = error_text(e.code);
        let loc = |sep: char| {
            e.location.as_ref().map_or(String::new(), |l| {
                format!(
                    "{}{sep}{}{sep}{}",
                    l.segment,
                    l.sequence,
                    l.field.map_or(String::new(), |n| n.to_string())
                )
            })
        };
        if modern {
            out.push_str(&format!(
                "ERR{f}{f}{loc}{f}{code}{c}{text}{c}HL70357{f}E{f}{f}{f}{f}{msg}\r",
                loc = loc(c),
                code = e.code,
                msg = user_text.unwrap_or_default(),
            ));
        } else {
            out.push_str(&format!(
                "ERR{f}{loc}{c}{code}{sub}{text}{sub}HL70357\r",
                loc = if e.location.is_some() {
                    loc(c)
                } else {
                    format!("{c}{c}")
                },
                code = e.code,
            ));
        }
    }
    out
}

/// An ACK for bytes that did not parse: MSA-2 from whatever MSH-10 there is.
pub fn build_for_unparsed(bytes: &[u8], error: &Hl7Error, now: DateTime<FixedOffset>) -> String {
    let header = AckHeader::salvage(bytes);
    let err = AckError::from_parse(error);
    build(&header, err.ack_code(), Some(&err), now)
}

#[cfg(test)]
#[path = "ack_tests.rs"]
mod tests;
