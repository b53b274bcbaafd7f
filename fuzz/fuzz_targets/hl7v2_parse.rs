//! Fuzz the HL7 v2 stage end to end: split a file, parse each message, map it,
//! answer it (ACK, also for messages that do not parse), and MLLP-decode the
//! same bytes. Nothing may panic. Run (see README in this directory):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run hl7v2_parse`
#![no_main]
#![allow(dead_code, unused_imports)]

use chrono::{FixedOffset, TimeZone};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/hl7v2/mod.rs"]
mod hl7v2;

fuzz_target!(|data: &[u8]| {
    let Some(now) = FixedOffset::east_opt(3600)
        .and_then(|tz| tz.with_ymd_and_hms(2024, 5, 17, 12, 0, 0).single())
    else {
        return;
    };
    let batch = hl7v2::split_batch(data);
    for raw in &batch.messages {
        match hl7v2::parse(raw.bytes) {
            Ok(msg) => {
                let header = hl7v2::AckHeader::from_message(&msg);
                match hl7v2::convert(&msg, &hl7v2::MapOptions::default()) {
                    Ok(c) => {
                        let total: u64 = c
                            .mapped_segments
                            .values()
                            .chain(c.unmapped_segments.values())
                            .sum();
                        assert_eq!(total as usize, msg.segment_count());
                        let _ = hl7v2::ack::build(&header, hl7v2::AckCode::AA, None, now);
                    }
                    Err(e) => {
                        let err = hl7v2::AckError::from_map(&e, Some(&msg));
                        let ack = hl7v2::ack::build(&header, err.ack_code(), Some(&err), now);
                        assert!(hl7v2::parse(ack.as_bytes()).is_ok() || header.version.is_empty());
                    }
                }
            }
            Err(e) => {
                let _ = hl7v2::ack::build_for_unparsed(raw.bytes, &e, now);
            }
        }
    }
    if let Ok(msg) = hl7v2::parse(data) {
        let _ = hl7v2::convert(&msg, &hl7v2::MapOptions::default());
    }
    let mut decoder = hl7v2::mllp::Decoder::new(1024);
    for frame in decoder.decode(data) {
        assert!(frame.map_or(true, |f| f.len() <= 1024));
    }
    let _ = decoder.finish();
});
