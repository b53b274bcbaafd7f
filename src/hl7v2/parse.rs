//! One HL7 v2 message: bytes in, a [`Message`] out.
//!
//! Delimiters come from MSH-1/MSH-2 (never assumed), text is decoded once in
//! the MSH-18 charset (borrowed when the bytes are UTF-8 already), segment and
//! field boundaries are found once with `memchr`, and everything below a field
//! (repetitions, components, sub-components, escapes) is split or decoded only
//! when asked for, as a borrowed slice unless an escape must be decoded.
//! Not here: batches (`batch`), framing (`mllp`), meaning (`map`).

use std::borrow::Cow;
use std::fmt;

use super::charset::Charset;
pub use super::delimiters::Delimiters;
use super::error::{Hl7Error, preview};
use super::escape::unescape;
pub use super::version::Version;

#[derive(Debug, Clone)]
struct Span {
    start: usize,
    end: usize,
    line: usize,
    /// Index into `Message::seps` of this segment's first field separator.
    first_sep: usize,
    sep_count: usize,
}

/// A parsed message. Owns (or borrows) its decoded text; every accessor
/// returns slices of it.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    text: Cow<'a, str>,
    delims: Delimiters,
    charset: Charset,
    charset_declared: bool,
    version: Version,
    spans: Vec<Span>,
    seps: Vec<usize>,
}

/// Skip a UTF-8 byte order mark.
pub(super) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Segments whose field 1 is the field separator itself.
pub(super) fn is_header_id(id: &[u8]) -> bool {
    matches!(id, b"MSH" | b"BHS" | b"FHS")
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Iterate `(start, end, line)` of the non-blank lines of `bytes`, where a
/// line ends at `\r`, `\n` or `\r\n`.
pub(super) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut pos = 0;
    let mut line = 0;
    std::iter::from_fn(move || {
        while pos < bytes.len() {
            line += 1;
            let start = pos;
            let end = memchr::memchr2(b'\r', b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
            pos = end;
            if pos < bytes.len() {
                pos += if bytes[pos] == b'\r' && bytes.get(pos + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            if !is_blank(&bytes[start..end]) {
                return Some((start, end, line));
            }
        }
        None
    })
}

/// Parse one message.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Hl7Error> {
    let bytes = strip_bom(bytes);
    let Some((h_start, h_end, _)) = lines(bytes).next() else {
        return Err(Hl7Error::Empty);
    };
    let header = &bytes[h_start..h_end];
    if !header.starts_with(b"MSH") {
        return Err(Hl7Error::NotMsh {
            found: preview(header, 12),
        });
    }
    if header.len() < 5 {
        return Err(Hl7Error::TruncatedHeader { len: header.len() });
    }
    let field = header[3];
    let msh2_end = memchr::memchr(field, &header[4..]).map_or(header.len(), |i| 4 + i);
    let delims = Delimiters::from_header(field, &header[4..msh2_end])?;

    let msh18 = header
        .split(|&b| b == field)
        .nth(17)
        .map(|f| match delims.repetition {
            Some(r) => f.split(|&b| b == r).next().unwrap_or(f),
            None => f,
        })
        .unwrap_or(b"");
    let declared = Charset::from_msh18(&String::from_utf8_lossy(msh18))?;
    let charset = declared.unwrap_or(Charset::Utf8);
    let text = charset.decode(bytes, declared.is_some())?;

    let mut spans = Vec::new();
    let mut seps = Vec::new();
    for (start, end, line) in lines(text.as_bytes()) {
        let seg = &text.as_bytes()[start..end];
        let id_ok = seg.len() >= 3
            && seg[..3]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && (seg.len() == 3 || seg[3] == field);
        if !id_ok {
            return Err(Hl7Error::InvalidSegmentId {
                segment_index: spans.len() + 1,
                line,
                found: preview(seg, 12),
            });
        }
        let first_sep = seps.len();
        seps.extend(memchr::memchr_iter(field, seg).map(|i| start + i));
        spans.push(Span {
            start,
            end,
            line,
            first_sep,
            sep_count: seps.len() - first_sep,
        });
    }

    let mut msg = Message {
        text,
        delims,
        charset,
        charset_declared: declared.is_some(),
        version: Version {
            major: 2,
            minor: 5,
            patch: 0,
        },
        spans,
        seps,
    };
    let required = |msg: &Message<'_>, n: usize, name: &'static str| {
        if msg.header().field(n).has_value() {
            Ok(())
        } else {
            Err(Hl7Error::MissingField {
                segment_index: 1,
                segment: "MSH".to_string(),
                field: n,
                name,
            })
        }
    };
    required(&msg, 9, "message type")?;
    required(&msg, 10, "message control id")?;
    required(&msg, 12, "version id")?;
    msg.version = Version::parse(&msg.header().field(12).comp(1).text())?;
    Ok(msg)
}

impl<'a> Message<'a> {
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }
    pub fn charset(&self) -> Charset {
        self.charset
    }
    /// Whether MSH-18 named the charset (false: read as UTF-8 by default).
    pub fn charset_declared(&self) -> bool {
        self.charset_declared
    }
    pub fn version(&self) -> Version {
        self.version
    }
    /// The decoded text of the whole message (segments still escaped).
    pub fn text(&self) -> &str {
        &self.text
    }
    /// Whether the text borrows the input bytes (no charset conversion).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }
    pub fn segment_count(&self) -> usize {
        self.spans.len()
    }
    /// Segment by 0-based position.
    pub fn segment(&self, index: usize) -> Option<Segment<'_>> {
        (index < self.spans.len()).then_some(Segment { msg: self, index })
    }
    /// The MSH segment (always segment 0 of a parsed message).
    pub fn header(&self) -> Segment<'_> {
        Segment {
            msg: self,
            index: 0,
        }
    }
    pub fn all(&self) -> impl Iterator<Item = Segment<'_>> {
        (0..self.spans.len()).map(move |index| Segment { msg: self, index })
    }
    /// All segments with this id, in order.
    pub fn segments<'s>(&'s self, id: &'s str) -> impl Iterator<Item = Segment<'s>> + 's {
        self.all().filter(move |s| s.id() == id)
    }
    /// MSH-9.1, MSH-9.2, MSH-9.3 (each possibly empty).
    pub fn message_type(&self) -> (Cow<'_, str>, Cow<'_, str>, Cow<'_, str>) {
        let f = self.header().field(9);
        (f.comp(1).text(), f.comp(2).text(), f.comp(3).text())
    }
    /// MSH-10.
    pub fn control_id(&self) -> Cow<'_, str> {
        self.header().field(10).text()
    }
}

/// One segment of a [`Message`].
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Message<'m>,
    index: usize,
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({}: {:?})", self.index, self.raw())
    }
}

impl<'m> Segment<'m> {
    fn span(&self) -> &'m Span {
        &self.msg.spans[self.index]
    }
    /// 0-based position in the message.
    pub fn index(&self) -> usize {
        self.index
    }
    /// 1-based line within the message.
    pub fn line(&self) -> usize {
        self.span().line
    }
    pub fn id(&self) -> &'m str {
        let s = self.span();
        &self.msg.text[s.start..s.start + 3]
    }
    /// The whole segment, still escaped.
    pub fn raw(&self) -> &'m str {
        let s = self.span();
        &self.msg.text[s.start..s.end]
    }
    fn is_header(&self) -> bool {
        is_header_id(self.id().as_bytes())
    }
    /// Number of the last field present.
    pub fn field_count(&self) -> usize {
        let n = self.span().sep_count;
        if self.is_header() { n + 1 } else { n }
    }
    /// Field `n` in HL7 numbering (for MSH, MSH-1 is the separator itself and
    /// MSH-2 the encoding characters, both literal). Absent fields are empty.
    pub fn field(&self, n: usize) -> Value<'m> {
        let s = self.span();
        let literal = |raw: &'m str| Value::new(raw, Level::Literal, self.msg);
        if n == 0 {
            return literal(self.id());
        }
        let split = if self.is_header() {
            if n == 1 {
                return literal(&self.msg.text[s.start + 3..(s.start + 4).min(s.end)]);
            }
            n - 1
        } else {
            n
        };
        if split > s.sep_count {
            return Value::new("", Level::Field, self.msg);
        }
        let start = self.msg.seps[s.first_sep + split - 1] + 1;
        let end = if split < s.sep_count {
            self.msg.seps[s.first_sep + split]
        } else {
            s.end
        };
        let raw = &self.msg.text[start..end];
        if self.is_header() && n == 2 {
            literal(raw)
        } else {
            Value::new(raw, Level::Field, self.msg)
        }
    }
}

/// Which level of the field tree a [`Value`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Field,
    Repetition,
    Component,
    Subcomponent,
    /// MSH-1/MSH-2 and segment ids: never split or unescaped.
    Literal,
}

/// A field, repetition, component or sub-component: a raw slice plus what is
/// needed to split and decode it. Absent parts are empty values, so chains
/// like `seg.field(3).rep(2).comp(4).subcomp(2)` never fail.
#[derive(Clone, Copy)]
pub struct Value<'m> {
    raw: &'m str,
    level: Level,
    delims: Delimiters,
    charset: Charset,
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({:?})", self.level, self.raw)
    }
}

fn nth(raw: &str, sep: Option<u8>, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let Some(sep) = sep else {
        return if n == 1 { raw } else { "" };
    };
    let bytes = raw.as_bytes();
    let mut start = 0;
    let mut seen = 1;
    for i in memchr::memchr_iter(sep, bytes) {
        if seen == n {
            return &raw[start..i];
        }
        seen += 1;
        start = i + 1;
    }
    if seen == n { &raw[start..] } else { "" }
}

impl<'m> Value<'m> {
    fn new(raw: &'m str, level: Level, msg: &Message<'_>) -> Self {
        Value {
            raw,
            level,
            delims: msg.delims,
            charset: msg.charset,
        }
    }
    fn child(&self, raw: &'m str, level: Level) -> Self {
        Value {
            raw,
            level,
            ..*self
        }
    }
    pub fn level(&self) -> Level {
        self.level
    }
    /// The text as written, escapes and all.
    pub fn raw(&self) -> &'m str {
        self.raw
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// `""`: the sender explicitly nulled the value.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }
    /// Neither empty nor null.
    pub fn has_value(&self) -> bool {
        !self.is_empty() && !self.is_null()
    }
    /// Decoded text (borrowed unless an escape had to be decoded).
    pub fn text(&self) -> Cow<'m, str> {
        if self.level == Level::Literal {
            Cow::Borrowed(self.raw)
        } else {
            unescape(self.raw, &self.delims, self.charset)
        }
    }
    /// Decoded, trimmed text; `None` when empty, null or blank.
    pub fn opt(&self) -> Option<String> {
        if !self.has_value() {
            return None;
        }
        let t = self.text();
        let t = t.trim();
        (!t.is_empty()).then(|| t.to_string())
    }
    /// Repetition `r` (1-based) of a field; a lower level is its own only repetition.
    pub fn rep(&self, r: usize) -> Value<'m> {
        match self.level {
            Level::Field => self.child(nth(self.raw, self.delims.repetition, r), Level::Repetition),
            _ if r == 1 => *self,
            _ => self.child("", self.level),
        }
    }
    /// All repetitions of a field (one for an empty field).
    pub fn reps(&self) -> impl Iterator<Item = Value<'m>> + 'm {
        let this = *self;
        let sep = match self.level {
            Level::Field => self.delims.repetition,
            _ => None,
        };
        let mut rest = Some(self.raw);
        std::iter::from_fn(move || {
            let r = rest?;
            let (head, tail) = match sep.and_then(|s| memchr::memchr(s, r.as_bytes())) {
                Some(i) => (&r[..i], Some(&r[i + 1..])),
                None => (r, None),
            };
            rest = tail;
            Some(this.child(
                head,
                if this.level == Level::Field {
                    Level::Repetition
                } else {
                    this.level
                },
            ))
        })
    }
    /// Component `c` (1-based) of this field's first repetition, or of this repetition.
    pub fn comp(&self, c: usize) -> Value<'m> {
        match self.level {
            Level::Field => self.rep(1).comp(c),
            Level::Repetition => self.child(
                nth(self.raw, Some(self.delims.component), c),
                Level::Component,
            ),
            _ if c == 1 => *self,
            _ => self.child("", self.level),
        }
    }
    /// Sub-component `s` (1-based) of this component (of component 1 above it).
    pub fn subcomp(&self, s: usize) -> Value<'m> {
        match self.level {
            Level::Field | Level::Repetition => self.comp(1).subcomp(s),
            Level::Component => self.child(
                nth(self.raw, self.delims.subcomponent, s),
                Level::Subcomponent,
            ),
            _ if s == 1 => *self,
            _ => self.child("", self.level),
        }
    }
    /// The `i`-th part one level down: components of a field or repetition,
    /// sub-components of a component. Lets datatype readers work the same
    /// whether the datatype is a whole field or sits inside a component.
    pub fn part(&self, i: usize) -> Value<'m> {
        match self.level {
            Level::Field | Level::Repetition => self.comp(i),
            Level::Component => self.subcomp(i),
            _ if i == 1 => *self,
            _ => self.child("", self.level),
        }
    }
    /// All components of this field's first repetition (or of this repetition).
    pub fn comps(&self) -> impl Iterator<Item = Value<'m>> + 'm {
        let rep = match self.level {
            Level::Field => self.rep(1),
            _ => *self,
        };
        let sep = match rep.level {
            Level::Repetition => Some(rep.delims.component),
            _ => None,
        };
        let mut rest = Some(rep.raw);
        std::iter::from_fn(move || {
            let r = rest?;
            let (head, tail) = match sep.and_then(|s| memchr::memchr(s, r.as_bytes())) {
                Some(i) => (&r[..i], Some(&r[i + 1..])),
                None => (r, None),
            };
            rest = tail;
            Some(rep.child(
                head,
                if sep.is_some() {
                    Level::Component
                } else {
                    rep.level
                },
            ))
        })
    }
    /// Component `c` of repetition `r`.
    pub fn component(&self, r: usize, c: usize) -> Value<'m> {
        self.rep(r).comp(c)
    }
    /// Sub-component `s` of component `c` of repetition `r`.
    pub fn sub(&self, r: usize, c: usize, s: usize) -> Value<'m> {
        self.rep(r).comp(c).subcomp(s)
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
