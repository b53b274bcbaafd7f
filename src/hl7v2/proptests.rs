//! Property tests: no input panics anywhere in the stage, escaping
//! round-trips, and MLLP decoding does not depend on how bytes are split.

use chrono::{FixedOffset, TimeZone};
use proptest::prelude::*;

use super::escape::escape;
use super::{
    AckError, AckHeader, Delimiters, MapOptions, ack, convert, mllp, parse, split_batch, testdata,
};

fn exercise(data: &[u8]) {
    let now = FixedOffset::east_opt(0)
        .unwrap()
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .unwrap();
    for raw in split_batch(data).messages {
        match parse(raw.bytes) {
            Ok(m) => {
                for seg in m.all() {
                    for n in 0..seg.field_count() + 2 {
                        let f = seg.field(n);
                        let _ = f.text();
                        for r in f.reps() {
                            let _ = r.comp(2).subcomp(2).text();
                        }
                    }
                }
                let header = AckHeader::from_message(&m);
                match convert(&m, &MapOptions::default()) {
                    Ok(c) => {
                        let total: u64 = c
                            .mapped_segments
                            .values()
                            .chain(c.unmapped_segments.values())
                            .sum();
                        assert_eq!(total as usize, m.segment_count());
                    }
                    Err(e) => {
                        let err = AckError::from_map(&e, Some(&m));
                        let _ = ack::build(&header, err.ack_code(), Some(&err), now);
                    }
                }
            }
            Err(e) => {
                let _ = ack::build_for_unparsed(raw.bytes, &e, now);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', b'#', 0xC3, 0xFF, b'0', b'"',
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, b) => bytes[i % len] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Delete(i, n) => {
                let s = i % len;
                bytes.drain(s..(s + n).min(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&data);
        let mut d = mllp::Decoder::new(64);
        let _ = d.decode(&data);
        let _ = d.finish();
    }

    #[test]
    fn random_text_after_a_header_never_panics(body in "[A-Z0-9|^~&\\\\\r\n .#-]{0,400}") {
        let data = format!("MSH|^~\\&|A|F|||20240101||ORU^R01|1|P|2.5\r{body}");
        exercise(data.as_bytes());
    }

    #[test]
    fn mutated_fixtures_never_panic(pick in any::<usize>(), muts in prop::collection::vec(mutation(), 1..8)) {
        let all = testdata::all_messages();
        let (_, bytes) = &all[pick % all.len()];
        exercise(&apply(bytes.clone(), &muts));
    }

    #[test]
    fn escape_then_parse_round_trips(value in any::<String>(), odd in any::<bool>()) {
        let d = if odd {
            Delimiters { field: b'#', component: b'$', repetition: Some(b'%'), escape: Some(b'!'), subcomponent: Some(b'@'), truncation: None }
        } else {
            Delimiters::default()
        };
        let f = char::from(d.field);
        let msg = format!("MSH{f}{}{f}A{f}F{f}{f}{f}20240101{f}{f}ORU{}R01{f}1{f}P{f}2.5\rOBX{f}1{f}ST{f}X{f}{f}{}\r",
            d.encoding_characters(), char::from(d.component), escape(&value, &d));
        let m = parse(msg.as_bytes()).unwrap();
        let obx = m.segments("OBX").next().unwrap();
        prop_assert_eq!(obx.field(5).text(), value.as_str());
    }

    #[test]
    fn mllp_split_does_not_matter(payloads in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no frame bytes", |b| *b != 0x1C && *b != 0x0B), 0..50), 1..5),
                                  cuts in prop::collection::vec(1usize..7, 1..50)) {
        let stream: Vec<u8> = payloads.iter().flat_map(|p| mllp::frame(p)).collect();
        let mut d = mllp::Decoder::new(1 << 16);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            got.extend(d.decode(&stream[pos..pos + n]));
            pos += n;
            i += 1;
        }
        let want: Vec<Result<Vec<u8>, mllp::MllpError>> = payloads.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.finish(), None);
    }
}
