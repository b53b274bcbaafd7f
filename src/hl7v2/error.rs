//! Parse errors: each names where the message broke (segment number, segment
//! id, field) and says what the sender has to fix. Mapping errors live in
//! `map::MapError`; framing errors in `mllp::MllpError`.

use thiserror::Error;

/// Why MSH-1/MSH-2 could not be used as delimiters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DelimiterProblem {
    #[error("MSH-1 field separator {0:?} must be a printable, non-alphanumeric ASCII character")]
    BadFieldSeparator(char),
    #[error("MSH-2 is empty: it must hold at least the component separator (usually `^~\\&`)")]
    NoEncodingCharacters,
    #[error(
        "MSH-2 has {0} characters: at most 5 (component, repetition, escape, sub-component, truncation)"
    )]
    TooManyEncodingCharacters(usize),
    #[error("MSH-2 character {0:?} must be a printable, non-alphanumeric ASCII character")]
    BadEncodingCharacter(char),
    #[error("delimiter {0:?} is used twice in MSH-1/MSH-2: every delimiter must be distinct")]
    Duplicate(char),
}

/// A message that cannot be parsed. Positions are 1-based and relative to
/// the message (add `RawMessage::line - 1` for the line in the file).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Hl7Error {
    #[error("empty input: expected a message starting with an MSH segment")]
    Empty,
    #[error(
        "the message starts with `{found}`, not `MSH`: every message must begin with its MSH header (is the file HL7 v2, and unwrapped from MLLP/XML?)"
    )]
    NotMsh { found: String },
    #[error(
        "the MSH segment stops after {len} bytes, before MSH-2 (encoding characters): the message is truncated"
    )]
    TruncatedHeader { len: usize },
    #[error("invalid delimiters in MSH-1/MSH-2: {problem}")]
    InvalidDelimiters { problem: DelimiterProblem },
    #[error(
        "{segment}-{field} ({name}) is empty in segment {segment_index}: the sender must fill it (a truncated message loses it too)"
    )]
    MissingField {
        segment_index: usize,
        segment: String,
        field: usize,
        name: &'static str,
    },
    #[error(
        "MSH-12 version `{value}` is not supported: fhirlake reads HL7 v2.3 to v2.8 (send the version as e.g. `2.5.1`)"
    )]
    UnsupportedVersion { value: String },
    #[error(
        "MSH-18 character set `{value}` is not supported: use ASCII, UNICODE UTF-8 or 8859/1 (or leave MSH-18 empty for UTF-8)"
    )]
    UnsupportedCharset { value: String },
    #[error(
        "byte {offset} (0x{byte:02X}) is not ASCII, but MSH-18 declares ASCII: declare the real character set in MSH-18 (8859/1 or UNICODE UTF-8)"
    )]
    NotAscii { offset: usize, byte: u8 },
    #[error(
        "invalid UTF-8 at byte {offset} (character set {charset}): re-encode the message as UTF-8, or declare MSH-18 `8859/1` if it is Latin-1"
    )]
    InvalidUtf8 {
        offset: usize,
        charset: &'static str,
    },
    #[error(
        "segment {segment_index} (line {line}) starts with `{found}`, which is not a segment id: ids are 3 upper-case letters/digits followed by the field separator (a wrapped or cut line?)"
    )]
    InvalidSegmentId {
        segment_index: usize,
        line: usize,
        found: String,
    },
}

impl Hl7Error {
    /// The segment (1-based index, id) the error points at, when it points at one.
    pub fn location(&self) -> Option<(usize, &str, Option<usize>)> {
        match self {
            Hl7Error::MissingField {
                segment_index,
                segment,
                field,
                ..
            } => Some((*segment_index, segment.as_str(), Some(*field))),
            Hl7Error::UnsupportedVersion { .. } => Some((1, "MSH", Some(12))),
            Hl7Error::UnsupportedCharset { .. } => Some((1, "MSH", Some(18))),
            Hl7Error::InvalidDelimiters { .. } | Hl7Error::TruncatedHeader { .. } => {
                Some((1, "MSH", Some(2)))
            }
            Hl7Error::InvalidSegmentId { segment_index, .. } => Some((*segment_index, "", None)),
            _ => None,
        }
    }
}

/// First bytes of `bytes` as printable text, for error messages.
pub(super) fn preview(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
