use super::*;
use helpers::*;

/// Helpers kept local so the tests read like the brief.
mod helpers {
    pub fn msg(s: &str) -> Vec<u8> {
        s.replace('\n', "\r").into_bytes()
    }
}

const ADT: &str = "MSH|^~\\&|ADT1|GOOD HEALTH|LAB|GHH|20240517134201+0200||ADT^A01^ADT_A01|MSG1|P|2.5.1\n\
EVN|A01|20240517134201\n\
PID|1||PATID1234^5^M11^ADT1&1.2.3&ISO^MR~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M\n\
ZZZ|custom|data\n";

#[test]
fn msh_field_numbering() {
    let bytes = msg(ADT);
    let m = parse(&bytes).unwrap();
    let h = m.header();
    assert_eq!(h.field(1).raw(), "|");
    assert_eq!(h.field(2).raw(), "^~\\&");
    assert_eq!(h.field(2).text(), "^~\\&", "MSH-2 is never unescaped");
    assert_eq!(h.field(3).text(), "ADT1");
    assert_eq!(h.field(9).comp(2).text(), "A01");
    assert_eq!(h.field(12).text(), "2.5.1");
    assert_eq!(m.version().to_string(), "2.5.1");
    assert_eq!(h.field_count(), 12);
    assert!(h.field(40).is_empty());
    assert_eq!(m.control_id(), "MSG1");
    assert!(m.is_borrowed(), "UTF-8 input is not copied");
}

#[test]
fn fields_repetitions_components_subcomponents() {
    let bytes = msg(ADT);
    let m = parse(&bytes).unwrap();
    let pid = m.segments("PID").next().unwrap();
    assert_eq!(pid.index(), 2);
    assert_eq!(pid.line(), 3);
    let ids = pid.field(3);
    assert_eq!(ids.reps().count(), 2);
    assert_eq!(ids.component(1, 1).text(), "PATID1234");
    assert_eq!(ids.sub(1, 4, 2).text(), "1.2.3");
    assert_eq!(ids.rep(2).comp(5).text(), "SS");
    assert_eq!(ids.rep(2).comp(4).part(1).text(), "USSSA");
    assert!(ids.rep(3).is_empty());
    assert_eq!(pid.field(5).comp(1).part(1).text(), "EVERYMAN");
    assert_eq!(m.segments("ZZZ").count(), 1);
    assert_eq!(m.segments("ZZZ").next().unwrap().field(2).text(), "data");
}

#[test]
fn unusual_delimiters() {
    let bytes = msg(
        "MSH#$%!@#APP#FAC#####ORU$R01#42#P#2.7\nOBX#1#ST#CODE$text$LN##a!F!b!S!c!T!d!R!e%second\n",
    );
    let m = parse(&bytes).unwrap();
    assert_eq!(m.delimiters().encoding_characters(), "$%!@");
    let obx = m.segments("OBX").next().unwrap();
    assert_eq!(obx.field(3).comp(2).text(), "text");
    let v = obx.field(5);
    assert_eq!(v.rep(1).text(), "a#b$c@d%e");
    assert_eq!(v.rep(2).text(), "second");
    assert_eq!(m.message_type().1, "R01");
}

#[test]
fn truncation_character_v27() {
    let bytes = msg("MSH|^~\\&#|A|B|||20240101||ADT^A08|1|P|2.7\nPID|1||X\\P\\Y#\n");
    let m = parse(&bytes).unwrap();
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.segments("PID").next().unwrap().field(3).text(), "X#Y#");
}

#[test]
fn crlf_and_mixed_line_ends_and_bom() {
    let text = "\u{feff}MSH|^~\\&|A|B|||20240101||ADT^A08|1|P|2.4\r\nEVN|A08\n\r\nPID|1||9\r";
    let m = parse(text.as_bytes()).unwrap();
    let ids: Vec<&str> = m.all().map(|s| s.id()).collect();
    assert_eq!(ids, ["MSH", "EVN", "PID"]);
    assert_eq!(m.segments("PID").next().unwrap().line(), 4);
    assert_eq!(m.segments("PID").next().unwrap().field(3).text(), "9");
}

#[test]
fn latin1_message() {
    let mut bytes = b"MSH|^~\\&|A|B|||20240101||ADT^A08|1|P|2.5||||||8859/1\rPID|1||9||M\xdcLLER^J\xd6RG\\XE9\\\r".to_vec();
    let m = parse(&bytes).unwrap();
    assert_eq!(m.charset(), Charset::Latin1);
    assert!(!m.is_borrowed());
    let pid = m.segments("PID").next().unwrap();
    assert_eq!(pid.field(5).comp(1).text(), "MÜLLER");
    assert_eq!(pid.field(5).comp(2).text(), "JÖRGé");
    // The same bytes without MSH-18 are not UTF-8: a clear error, not mojibake.
    let pos = bytes.windows(6).position(|w| w == b"8859/1").unwrap();
    bytes.drain(pos..pos + 6);
    match parse(&bytes) {
        Err(Hl7Error::InvalidUtf8 { offset, .. }) => assert_eq!(bytes[offset], 0xdc),
        other => panic!("{other:?}"),
    }
}

#[test]
fn utf8_and_unknown_charsets() {
    let ok =
        "MSH|^~\\&|A|B|||20240101||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|1||9||Żółć\\XC3A9\\\r";
    let m = parse(ok.as_bytes()).unwrap();
    assert_eq!(m.segments("PID").next().unwrap().field(5).text(), "Żółćé");
    let bad = b"MSH|^~\\&|A|B|||20240101||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|1||\xc3(\r";
    let at = bad.iter().position(|&b| b == 0xc3).unwrap();
    assert_eq!(
        parse(bad).unwrap_err(),
        Hl7Error::InvalidUtf8 {
            offset: at,
            charset: "UNICODE UTF-8"
        }
    );
    let unknown = "MSH|^~\\&|A|B|||20240101||ADT^A08|1|P|2.5||||||ISO IR87\r";
    let e = parse(unknown.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        Hl7Error::UnsupportedCharset {
            value: "ISO IR87".into()
        }
    );
    assert!(e.to_string().contains("ISO IR87"));
}

#[test]
fn truncated_and_broken_messages_give_clear_errors() {
    assert_eq!(parse(b"").unwrap_err(), Hl7Error::Empty);
    assert_eq!(parse(b"\r\n\r\n").unwrap_err(), Hl7Error::Empty);
    assert!(matches!(parse(b"PID|1"), Err(Hl7Error::NotMsh { .. })));
    assert!(matches!(
        parse(b"MSH|"),
        Err(Hl7Error::TruncatedHeader { len: 4 })
    ));
    assert!(matches!(
        parse(b"MSH|^^\\&|"),
        Err(Hl7Error::InvalidDelimiters { .. })
    ));
    assert!(matches!(
        parse(b"MSHA^~\\&|"),
        Err(Hl7Error::InvalidDelimiters { .. })
    ));
    let e = parse(b"MSH|^~\\&|A|B|C|D|2024").unwrap_err();
    assert_eq!(
        e,
        Hl7Error::MissingField {
            segment_index: 1,
            segment: "MSH".into(),
            field: 9,
            name: "message type"
        }
    );
    assert!(e.to_string().contains("MSH-9"), "{e}");
    let e = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.1").unwrap_err();
    assert!(e.to_string().contains("2.1"), "{e}");
    let e = parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1\rthis line was wrapped\r")
        .unwrap_err();
    assert_eq!(
        e,
        Hl7Error::InvalidSegmentId {
            segment_index: 3,
            line: 3,
            found: "this line wa".into()
        }
    );
}

#[test]
fn every_fixture_parses() {
    for (name, bytes) in super::super::testdata::all_messages() {
        let m = parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.segment_count() > 1, "{name}");
    }
}
