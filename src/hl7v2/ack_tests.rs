use chrono::TimeZone;

use super::*;
use helpers::now;

mod helpers {
    use chrono::{DateTime, FixedOffset, TimeZone};
    pub fn now() -> DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2024, 5, 17, 13, 42, 1)
            .unwrap()
    }
}

fn segs(ack: &str) -> Vec<&str> {
    ack.split('\r').filter(|s| !s.is_empty()).collect()
}

const ORIG: &str = "MSH|^~\\&|LAB|NORTH^1.2.3^ISO|LAKE|CENTRAL|20240517134000+0100||ORU^R01^ORU_R01|CTRL-9|P|2.5.1\rPID|1||X\r";

#[test]
fn accept_swaps_sender_and_receiver() {
    let m = super::super::parse(ORIG.as_bytes()).unwrap();
    let ack = build(&AckHeader::from_message(&m), AckCode::AA, None, now());
    let s = segs(&ack);
    assert_eq!(s.len(), 2, "{ack}");
    assert!(
        s[0].starts_with(
            "MSH|^~\\&|LAKE|CENTRAL|LAB|NORTH^1.2.3^ISO|20240517134201+0100||ACK^R01^ACK|A"
        ),
        "{}",
        s[0]
    );
    assert!(s[0].ends_with("|P|2.5.1"));
    assert_eq!(s[1], "MSA|AA|CTRL-9");
    // The ACK itself parses, with the same version and a new control id.
    let parsed = super::super::parse(ack.as_bytes()).unwrap();
    assert_eq!(parsed.version().to_string(), "2.5.1");
    assert_ne!(parsed.control_id(), "CTRL-9");
    assert_eq!(parsed.control_id().len(), 20);
}

#[test]
fn error_for_v25_uses_err_2_3_4_8() {
    let m = super::super::parse(ORIG.as_bytes()).unwrap();
    let e = AckError {
        code: 101,
        location: Some(ErrorLocation {
            segment: "PID".into(),
            sequence: 1,
            field: Some(3),
        }),
        message: "PID-3 is empty | fix it".into(),
    };
    let ack = build(&AckHeader::from_message(&m), e.ack_code(), Some(&e), now());
    let s = segs(&ack);
    assert_eq!(s[1], "MSA|AE|CTRL-9");
    assert_eq!(
        s[2],
        "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 is empty \\F\\ fix it"
    );
    let parsed = super::super::parse(ack.as_bytes()).unwrap();
    let err = parsed.segments("ERR").next().unwrap();
    assert_eq!(err.field(8).text(), "PID-3 is empty | fix it");
}

#[test]
fn error_for_v23_uses_err_1_and_unusual_delimiters() {
    let orig = "MSH#$%!@#APP#FAC#ME#HERE#20240517##ADT$A01#77#T#2.3\rPID#1\r";
    let m = super::super::parse(orig.as_bytes()).unwrap();
    let map_err = super::super::map::MapError::UnsupportedMessageType {
        message_type: "ADT^A99".into(),
    };
    let e = AckError::from_map(&map_err, Some(&m));
    assert_eq!(e.ack_code(), AckCode::AR);
    let ack = build(&AckHeader::from_message(&m), e.ack_code(), Some(&e), now());
    let s = segs(&ack);
    assert!(s[0].starts_with("MSH#$%!@#ME#HERE#APP#FAC#"), "{}", s[0]);
    assert!(s[0].contains("#ACK$A01$ACK#"));
    assert!(s[1].starts_with("MSA#AR#77#MSH-9"), "{}", s[1]);
    assert_eq!(s[2], "ERR#MSH$1$9$201@Unsupported event code@HL70357");
}

#[test]
fn ack_for_a_message_too_broken_to_parse() {
    let broken = b"MSH|^~\\&|LAB|NORTH|LAKE|CENTRAL|20240517||ORU^R01|SALVAGED-1|P|2.1\rPID|1\r";
    let e = super::super::parse(broken).unwrap_err();
    let ack = build_for_unparsed(broken, &e, now());
    let s = segs(&ack);
    assert_eq!(
        s[1],
        "MSA|AR|SALVAGED-1|MSH-12 version `2.1` is not supported: fhirlake reads HL7 v2.3 to v2.8 (send the version as e.g. `2.5.1`)"
    );
    assert!(s[2].starts_with("ERR|MSH^1^12^203&"), "{}", s[2]);
    // Bad encoding characters: defaults are used, the control id still comes back.
    let worse = b"MSH|^^|A|B|C|D|2024||ORU^R01|CID|P|2.5\r";
    let e = super::super::parse(worse).unwrap_err();
    let ack = build_for_unparsed(worse, &e, now());
    assert!(segs(&ack)[1].starts_with("MSA|AE|CID"), "{ack}");
    assert!(super::super::parse(ack.as_bytes()).is_ok());
    // Nothing salvageable at all.
    let ack = build_for_unparsed(
        b"\x00garbage",
        &super::super::parse(b"\x00garbage").unwrap_err(),
        now(),
    );
    assert!(segs(&ack)[1].starts_with("MSA|AE|"), "{ack}");
    let _ = FixedOffset::east_opt(0)
        .unwrap()
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0);
}
