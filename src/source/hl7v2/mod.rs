//! HL7 v2 into the lake: messages from files or an MLLP listener, converted
//! to FHIR by [`crate::hl7v2`], loaded through the one load job.
//!
//! - [`feed`]: one job's messages, each parsed and mapped on arrival;
//!   replays (same sender, MSH-10 and MSH-7) found in the feed and in the lake.
//! - [`load`]: a feed into the lake — raw messages under `_raw/hl7v2/`, then
//!   the job (manifest `kind: "hl7v2"` with every message's fate).
//! - [`files`]: `fhirlake hl7v2 load` of files and directories.
//! - [`listen`]: `fhirlake hl7v2 listen`, MLLP with group commit; `AA` only
//!   once the message is in the lake.

pub mod feed;
pub mod files;
pub mod listen;
pub mod load;

pub use feed::{Acks, Feed, Origin};
pub use files::{FilesError, FilesJob, discover, load_files};
pub use listen::{ListenConfig, ListenSummary, listen};
pub use load::load_feed;
