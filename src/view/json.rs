//! A small JSON tree for view evaluation that keeps each number's source
//! text: FHIRPath needs a decimal's written precision (`1.0` vs `1`) for
//! `lowBoundary()`/`highBoundary()`, which a float would lose.

use std::fmt;

use bumpalo::Bump;

/// Borrows from the text it was parsed from (names, strings and numbers are
/// slices of the line) and from an arena (arrays, objects, and strings that
/// had escapes, unescaped). Nothing is freed per node: the caller resets the
/// arena once the tree is done with, so a line costs no heap traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Number(&'a str),
    String(&'a str),
    Array(&'a [Json<'a>]),
    /// Members in document order.
    Object(&'a [(&'a str, Json<'a>)]),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {message}{}", duplicate.as_ref().map(|d| format!(" {d:?}")).unwrap_or_default())]
pub struct JsonError {
    pub offset: usize,
    pub message: &'static str,
    /// The member name an object holds twice (FHIR JSON forbids it).
    pub duplicate: Option<Box<str>>,
}

/// A name that `keys` holds twice. Objects are small: pairs are compared
/// directly, larger ones sorted.
pub fn duplicate_name<'k>(keys: &mut [&'k str]) -> Option<&'k str> {
    if keys.len() <= 12 {
        for (i, a) in keys.iter().enumerate() {
            if keys[i + 1..].iter().any(|b| a.len() == b.len() && a == b) {
                return Some(a);
            }
        }
        return None;
    }
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl<'a> Json<'a> {
    /// Parses `text`, allocating arrays and objects in `arena`.
    pub fn parse(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, JsonError> {
        // One pass over the whole text finds whether any control byte is in
        // it at all (compact NDJSON has none); only then must each string be
        // checked for one. A fold, not `any`: no early exit, so it vectorises.
        let controls = text.bytes().fold(false, |seen, b| seen | (b < 0x20));
        let mut parser = Parser {
            bytes: text.as_bytes(),
            pos: 0,
            text,
            arena,
            items: Vec::new(),
            members: Vec::new(),
            controls,
        };
        parser.skip_ws();
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != parser.bytes.len() {
            return Err(parser.err("trailing characters"));
        }
        Ok(value)
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| &**k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to serde_json (numbers become i64 when integral, else f64).
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => (*b).into(),
            Json::Number(n) => number_to_serde(n),
            Json::String(s) => (*s).into(),
            Json::Array(items) => items.iter().map(Json::to_serde).collect(),
            Json::Object(members) => members
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_serde()))
                .collect(),
        }
    }
}

pub fn number_to_serde(text: &str) -> serde_json::Value {
    if let Ok(i) = text.parse::<i64>() {
        return i.into();
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, Into::into)
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_serde())
    }
}

impl Json<'_> {
    /// Appends the tree as compact JSON: numbers exactly as written (a
    /// decimal's precision is part of its value in FHIR), members in order.
    pub fn write_compact(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_compact(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(name, out);
                    out.push(':');
                    value.write_compact(out);
                }
                out.push('}');
            }
        }
    }
}

/// Appends `text` as a JSON string, escaping what JSON requires.
pub fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&text[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

const MAX_DEPTH: usize = 512;

/// Where the first `"` or `\` at or after `from` is. Eight bytes at a time
/// (most strings are keys, codes and ids, too short for a vector search to
/// pay for its setup), then a vector search for long strings.
fn find_quote_or_backslash(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `word` that is zero; wrong only in bytes
    // above a zero byte, and only the lowest flagged byte is used.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut at = from;
    while at + 8 <= bytes.len() && at - from < 64 {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let found = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', &bytes[at..]).map(|i| at + i)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    arena: &'a Bump,
    /// Open arrays' items and open objects' members, stacked: a container's
    /// entries are copied to the arena once, when it closes (growing arena
    /// vectors would copy them at every doubling).
    items: Vec<Json<'a>>,
    members: Vec<(&'a str, Json<'a>)>,
    /// Whether the text holds any byte below 0x20 (JSON forbids them raw in strings).
    controls: bool,
}

impl<'a> Parser<'a> {
    fn err(&self, message: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            message,
            duplicate: None,
        }
    }

    /// The object whose members start at `mark` names each member once.
    fn no_duplicate_names(&self, mark: usize) -> Result<(), JsonError> {
        let members = &self.members[mark..];
        if members.len() < 2 {
            return Ok(());
        }
        let mut names: smallvec::SmallVec<[&str; 16]> = members.iter().map(|(k, _)| *k).collect();
        match duplicate_name(&mut names) {
            None => Ok(()),
            Some(name) => Err(JsonError {
                offset: self.pos,
                message: "duplicate member name",
                duplicate: Some(name.into()),
            }),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len()
            && matches!(self.bytes[self.pos], b' ' | b'\t' | b'\n' | b'\r')
        {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, literal: &str, value: Json<'a>) -> Result<Json<'a>, JsonError> {
        if self.text[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(value)
        } else {
            Err(self.err("unexpected token"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.bytes.get(self.pos) {
            None => Err(self.err("unexpected end")),
            Some(b'n') => self.expect_literal("null", Json::Null),
            Some(b't') => self.expect_literal("true", Json::Bool(true)),
            Some(b'f') => self.expect_literal("false", Json::Bool(false)),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b'[') => {
                self.pos += 1;
                let mark = self.items.len();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Json::Array(&[]));
                }
                loop {
                    self.skip_ws();
                    let item = self.value(depth + 1)?;
                    self.items.push(item);
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            let items = self.arena.alloc_slice_copy(&self.items[mark..]);
                            self.items.truncate(mark);
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.err("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mark = self.members.len();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(&[]));
                }
                loop {
                    self.skip_ws();
                    if self.bytes.get(self.pos) != Some(&b'"') {
                        return Err(self.err("expected a member name"));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.bytes.get(self.pos) != Some(&b':') {
                        return Err(self.err("expected :"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    let value = self.value(depth + 1)?;
                    self.members.push((key, value));
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            self.no_duplicate_names(mark)?;
                            let members = self.arena.alloc_slice_copy(&self.members[mark..]);
                            self.members.truncate(mark);
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(self.err("expected , or }")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                if self.bytes[self.pos] == b'-' {
                    self.pos += 1;
                }
                let digits = |p: &mut Self| {
                    let s = p.pos;
                    while p.pos < p.bytes.len() && p.bytes[p.pos].is_ascii_digit() {
                        p.pos += 1;
                    }
                    p.pos > s
                };
                if !digits(self) {
                    return Err(self.err("expected digits"));
                }
                if self.bytes.get(self.pos) == Some(&b'.') {
                    self.pos += 1;
                    if !digits(self) {
                        return Err(self.err("expected fraction digits"));
                    }
                }
                if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
                    self.pos += 1;
                    if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                        self.pos += 1;
                    }
                    if !digits(self) {
                        return Err(self.err("expected exponent digits"));
                    }
                }
                Ok(Json::Number(&self.text[start..self.pos]))
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn string(&mut self) -> Result<&'a str, JsonError> {
        self.pos += 1; // opening quote
        let first = self.pos;
        // Compact NDJSON: no control byte anywhere, so a string with no
        // escape is everything up to the next quote.
        if !self.controls
            && let Some(at) = find_quote_or_backslash(self.bytes, first)
            && self.bytes[at] == b'"'
        {
            self.pos = at + 1;
            return Ok(&self.text[first..at]);
        }
        let mut out = String::new();
        loop {
            let start = self.pos;
            // Jump to the next quote or backslash; then reject raw control
            // characters in what was skipped (JSON forbids them in strings).
            self.pos = memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..])
                .map_or(self.bytes.len(), |i| self.pos + i);
            // A fold, not `any`: no early exit, so it vectorises.
            if self.controls
                && self.bytes[start..self.pos]
                    .iter()
                    .fold(false, |control, &b| control | (b < 0x20))
            {
                return Err(self.err("control character in string"));
            }
            // No escape so far: the string is a slice of the input.
            if self.bytes.get(self.pos) == Some(&b'"') && start == first {
                self.pos += 1;
                return Ok(&self.text[first..self.pos - 1]);
            }
            out.push_str(&self.text[start..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(self.arena.alloc_str(&out));
                }
                Some(_) => {
                    self.pos += 1;
                    let escaped = *self
                        .bytes
                        .get(self.pos)
                        .ok_or_else(|| self.err("unterminated escape"))?;
                    self.pos += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                if !self.text[self.pos..].starts_with("\\u") {
                                    return Err(self.err("lone surrogate"));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.err("bad surrogate pair"));
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            out.push(
                                char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?,
                            );
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let value = u32::from_str_radix(hex, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.pos += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_quote_or_backslash_at_any_offset_and_length() {
        let mut text: Vec<u8> = (0..200u32)
            .map(|i| b"ab\xc3\xa9z0\x01"[i as usize % 7])
            .collect();
        for stop in [0usize, 1, 7, 8, 9, 15, 63, 64, 65, 71, 72, 150, 199] {
            for byte in [b'"', b'\\'] {
                text[stop] = byte;
                for from in [0usize, 1, 3, 8, 60] {
                    let naive = text[from..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\')
                        .map(|p| from + p);
                    assert_eq!(find_quote_or_backslash(&text, from), naive, "{stop} {from}");
                }
                text[stop] = b'a';
            }
        }
        assert_eq!(find_quote_or_backslash(b"abc", 0), None);
    }

    #[test]
    fn keeps_number_text_and_matches_serde() {
        let text = r#"{"a":1.0,"b":[true,null,-2e3,"x\"\u00e9\ud83d\ude00"],"c":{}}"#;
        let arena = Bump::new();
        let json = Json::parse(text, &arena).unwrap();
        assert_eq!(json.get("a"), Some(&Json::Number("1.0")));
        assert_eq!(
            json.to_serde(),
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        for bad in ["{", "[1,]", "{\"a\" 1}", "01x", "\"\\q\"", "[1] 2"] {
            assert!(Json::parse(bad, &arena).is_err(), "{bad}");
        }
    }

    /// A small deterministic generator of JSON text (no extra crates).
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn ws(&mut self, out: &mut String) {
            for _ in 0..self.next(3) {
                out.push([' ', '\n', '\t', '\r'][self.next(4) as usize]);
            }
        }

        fn value(&mut self, depth: u32, out: &mut String) {
            self.ws(out);
            match if depth > 4 {
                self.next(4)
            } else {
                self.next(7)
            } {
                0 => out.push_str(["null", "true", "false"][self.next(3) as usize]),
                1 => {
                    let int = self.next(2_000_000) as i64 - 1_000_000;
                    match self.next(3) {
                        0 => out.push_str(&int.to_string()),
                        1 => out.push_str(&format!("{int}.{}", self.next(1000))),
                        _ => out.push_str(&format!("{int}e{}", self.next(20) as i64 - 10)),
                    }
                }
                2 | 3 => {
                    out.push('"');
                    for _ in 0..self.next(8) {
                        let piece = [
                            "a",
                            "Z",
                            "é",
                            "😀",
                            "\\n",
                            "\\\"",
                            "\\\\",
                            "\\u00e9",
                            "\\ud83d\\ude00",
                            "\\/",
                            " ",
                        ];
                        out.push_str(piece[self.next(piece.len() as u64) as usize]);
                    }
                    out.push('"');
                }
                4 | 5 => {
                    out.push('[');
                    for i in 0..self.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(depth + 1, out);
                    }
                    self.ws(out);
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    // Member names are distinct (FHIR JSON forbids duplicates,
                    // and the parser rejects them; see the test below).
                    let first = self.next(5);
                    for i in 0..self.next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        out.push_str(&format!("\"k{}\"", first + i));
                        self.ws(out);
                        out.push(':');
                        self.value(depth + 1, out);
                    }
                    self.ws(out);
                    out.push('}');
                }
            }
            self.ws(out);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_generated_and_truncated_documents() {
        let mut g = Gen(20261126);
        for _ in 0..3000 {
            let mut text = String::new();
            g.value(0, &mut text);
            let arena = Bump::new();
            let ours = Json::parse(&text, &arena).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(ours.to_serde(), theirs, "{text:?}");
            // Every prefix: same verdict, and never a panic.
            for cut in (0..text.len()).filter(|&c| text.is_char_boundary(c)) {
                let prefix = &text[..cut];
                assert_eq!(
                    Json::parse(prefix, &arena).is_ok(),
                    serde_json::from_str::<serde_json::Value>(prefix).is_ok(),
                    "{prefix:?}"
                );
            }
        }
    }

    #[test]
    fn a_member_name_twice_in_one_object_is_an_error_naming_it() {
        let arena = Bump::new();
        for (text, name) in [
            (r#"{"id":"a","x":1,"id":"b"}"#, "id"),
            (r#"{"a":{"f":1,"f":2}}"#, "f"),
            (r#"[{"a\u0062":1,"ab":2}]"#, "ab"),
        ] {
            let error = Json::parse(text, &arena).unwrap_err();
            assert_eq!(error.duplicate.as_deref(), Some(name), "{text}");
        }
        let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        assert!(Json::parse(&format!("{{{many}\"k7\":0}}"), &arena).is_err());
        assert!(Json::parse(&format!("{{{many}\"z\":0}}"), &arena).is_ok());
    }
}
