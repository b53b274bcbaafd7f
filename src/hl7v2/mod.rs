//! HL7 v2 source stage, without I/O: bytes in; messages, MLLP frames, ACKs
//! and FHIR R4 resources (as `serde_json::Value`) out.
//!
//! ```text
//! file bytes ──batch::split_batch──▶ RawMessage ──parse::parse──▶ Message ──map::convert──▶ Conversion
//! socket bytes ──mllp::Decoder──▶ frame ─┘            │                               (resources, info,
//!                                                     └──ack::build──▶ ACK ──mllp::frame──▶ reply  accounting)
//! ```
//!
//! - [`batch`]: one file → messages (back to back or FHS/BHS batches),
//!   envelope segments and count checks.
//! - [`parse`]: one message → segments/fields/components, delimiters from
//!   MSH-1/MSH-2, text decoded per MSH-18 ([`charset`]), escapes ([`escape`])
//!   decoded lazily, MSH-12 checked ([`version`]); errors in [`error`].
//! - [`mllp`]: framing with a size limit; [`ack`]: ACK messages.
//! - [`map`]: FHIR R4 per the HL7 v2-to-FHIR IG, deterministic ids ([`ids`]),
//!   timestamps ([`dtm`]); every segment is mapped or counted as unmapped.
//!
//! It does not read files or sockets, write the lake, or commit anything: the
//! caller hands `Conversion`s (or errors, to quarantine) to the load job.
//!
//! Why a hand-written parser: `hl7-parser` (0.3) and similar crates split
//! structure well, but do not decode text in the MSH-18 charset, decode
//! `\X..\` in that charset, split FHS/BHS batches with count checks, or give
//! error positions per segment and field; here delimiters, escapes, batches
//! and charsets must all be exact, and the parser is small (split once with
//! `memchr`, decode lazily) — so it is written here and fuzzed.
//!
//! This module refers to itself only through `super::`/`self::`, so it can be
//! built alone (scratch crate, fuzz target).

pub mod ack;
pub mod batch;
pub mod charset;
pub mod delimiters;
pub mod dtm;
pub mod error;
pub mod escape;
pub mod ids;
pub mod map;
pub mod mllp;
pub mod parse;
pub mod version;

pub use ack::{AckCode, AckError, AckHeader};
pub use batch::{Batch, BatchWarning, RawMessage, split_batch, split_messages};
pub use charset::Charset;
pub use error::Hl7Error;
pub use map::{Conversion, MapError, MapOptions, MapWarning, MessageInfo, convert};
pub use parse::{Delimiters, Message, Segment, Value, Version, parse};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testdata;
