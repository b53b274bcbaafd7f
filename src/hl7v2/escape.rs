//! HL7 escape sequences, both ways.
//!
//! In: a raw (still escaped) value and the message's delimiters and charset.
//! Out: the text it stands for, borrowed when there is nothing to decode.
//! Decoded: `\F\ \S\ \T\ \R\ \E\ \P\`, `\Xhh..\` (bytes in the message charset),
//! formatting `\.br\ \.sp n\ \.ce\` (newlines), `\.sk n\` (spaces),
//! `\.fi\ \.nf\ \.in n\ \.ti n\` and highlighting `\H\ \N\` (dropped).
//! Kept verbatim: anything else (`\Cxxyy\`, `\Mxxyyzz\`, `\Zxx\`, unknown,
//! unterminated), so no text is lost.

use std::borrow::Cow;

use super::charset::Charset;
use super::delimiters::Delimiters;

/// Longest run of newlines/spaces a `\.sp n\` or `\.sk n\` may produce.
const MAX_FORMAT_REPEAT: usize = 64;

/// Decode escape sequences in `raw`.
pub fn unescape<'a>(raw: &'a str, delims: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let Some(esc) = delims.escape else {
        return Cow::Borrowed(raw);
    };
    let bytes = raw.as_bytes();
    let Some(first) = memchr::memchr(esc, bytes) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut pos = first;
    while pos < bytes.len() {
        // `pos` is at an escape character.
        let Some(len) = memchr::memchr(esc, &bytes[pos + 1..]) else {
            out.push_str(&raw[pos..]);
            break;
        };
        let close = pos + 1 + len;
        let seq = &raw[pos + 1..close];
        if !decode_sequence(seq, delims, charset, &mut out) {
            out.push_str(&raw[pos..=close]);
        }
        pos = close + 1;
        match memchr::memchr(esc, &bytes[pos..]) {
            Some(next) => {
                out.push_str(&raw[pos..pos + next]);
                pos += next;
            }
            None => {
                out.push_str(&raw[pos..]);
                break;
            }
        }
    }
    Cow::Owned(out)
}

/// Append the meaning of one sequence (without its escape characters) to
/// `out`; `false` means "not understood, keep it verbatim".
fn decode_sequence(seq: &str, d: &Delimiters, charset: Charset, out: &mut String) -> bool {
    let single = |c: Option<u8>, out: &mut String| match c {
        Some(c) => {
            out.push(char::from(c));
            true
        }
        None => false,
    };
    match seq {
        "F" => single(Some(d.field), out),
        "S" => single(Some(d.component), out),
        "T" => single(d.subcomponent, out),
        "R" => single(d.repetition, out),
        "E" => single(d.escape, out),
        "P" => single(d.truncation, out),
        "H" | "N" => true,
        _ if seq.len() > 1 && (seq.starts_with('X') || seq.starts_with('x')) => {
            match hex_bytes(&seq[1..]).and_then(|b| charset.decode_escaped(&b)) {
                Some(text) => {
                    out.push_str(&text);
                    true
                }
                None => false,
            }
        }
        _ if seq.starts_with('.') => formatting(&seq[1..], out),
        _ => false,
    }
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Formatted-text commands (`FT`): line breaks become `\n`, layout hints go.
fn formatting(cmd: &str, out: &mut String) -> bool {
    let Some(name) = cmd.get(..cmd.len().min(2)) else {
        return false;
    };
    let arg = &cmd[name.len()..];
    let count = |default: usize| -> Option<usize> {
        let a = arg.trim();
        if a.is_empty() {
            Some(default)
        } else {
            a.parse::<usize>().ok().map(|n| n.min(MAX_FORMAT_REPEAT))
        }
    };
    let signed_ok = || {
        let a = arg.trim().trim_start_matches(['+', '-']);
        a.is_empty() || a.bytes().all(|b| b.is_ascii_digit())
    };
    match name {
        "br" if arg.is_empty() => out.push('\n'),
        "ce" if arg.is_empty() => out.push('\n'),
        "fi" | "nf" if arg.is_empty() => {}
        "sp" => match count(1) {
            Some(n) => out.extend(std::iter::repeat_n('\n', n)),
            None => return false,
        },
        "sk" => match count(1) {
            Some(n) => out.extend(std::iter::repeat_n(' ', n)),
            None => return false,
        },
        "in" | "ti" if signed_ok() => {}
        _ => return false,
    }
    true
}

/// Escape `value` so that it survives as one component of a field.
/// Delimiters become `\F\ \S\ \R\ \T\ \E\ \P\`, `\n` becomes `\.br\` and `\r`
/// becomes `\X0D\`, so `unescape(escape(v)) == v`. Without an escape
/// character (MSH-2 of one or two characters) nothing can be escaped and the
/// value is returned as is.
pub fn escape(value: &str, d: &Delimiters) -> String {
    let Some(esc) = d.escape else {
        return value.to_string();
    };
    let esc = char::from(esc);
    let mut out = String::with_capacity(value.len() + 8);
    for ch in value.chars() {
        let code = match ch {
            _ if ch == char::from(d.field) => Some("F"),
            _ if ch == char::from(d.component) => Some("S"),
            _ if ch == esc => Some("E"),
            _ if d.repetition.map(char::from) == Some(ch) => Some("R"),
            _ if d.subcomponent.map(char::from) == Some(ch) => Some("T"),
            _ if d.truncation.map(char::from) == Some(ch) => Some("P"),
            '\n' => Some(".br"),
            '\r' => Some("X0D"),
            _ => None,
        };
        match code {
            Some(code) => {
                out.push(esc);
                out.push_str(code);
                out.push(esc);
            }
            None => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn delimiter_escapes() {
        let s = unescape(r"A\T\E \F\ \S\ \R\ \E\", &d(), Charset::Utf8);
        assert_eq!(s, r"A&E | ^ ~ \");
        assert!(matches!(
            unescape("plain", &d(), Charset::Utf8),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn hex_in_charset() {
        assert_eq!(unescape(r"caf\XC3A9\", &d(), Charset::Utf8), "café");
        assert_eq!(unescape(r"caf\XE9\", &d(), Charset::Latin1), "café");
        // Not valid UTF-8: kept verbatim rather than guessed.
        assert_eq!(unescape(r"caf\XE9\", &d(), Charset::Utf8), r"caf\XE9\");
        assert_eq!(unescape(r"\X0D0A\", &d(), Charset::Ascii), "\r\n");
    }

    #[test]
    fn formatting_and_highlight() {
        assert_eq!(
            unescape(r"one\.br\two\H\bold\N\\.sp 2\x", &d(), Charset::Utf8),
            "one\ntwobold\n\nx"
        );
        assert_eq!(
            unescape(r"\.in+4\a\.ti-2\\.sk 3\b\.fi\", &d(), Charset::Utf8),
            "a   b"
        );
    }

    #[test]
    fn non_ascii_never_splits_a_character() {
        assert_eq!(unescape("\\.aé\\", &d(), Charset::Utf8), "\\.aé\\");
        assert!(super::super::dtm::parse_dtm("2024+aé1").is_err());
    }

    #[test]
    fn unknown_and_unterminated_kept() {
        assert_eq!(
            unescape(r"\Zfoo\ \C2842\ \Q\", &d(), Charset::Utf8),
            r"\Zfoo\ \C2842\ \Q\"
        );
        assert_eq!(unescape(r"C:\temp", &d(), Charset::Utf8), r"C:\temp");
        assert_eq!(unescape(r"a\\b", &d(), Charset::Utf8), r"a\\b");
    }

    #[test]
    fn escape_round_trips_with_unusual_delimiters() {
        let odd = Delimiters {
            field: b'#',
            component: b'$',
            repetition: Some(b'%'),
            escape: Some(b'!'),
            subcomponent: Some(b'@'),
            truncation: None,
        };
        let value = "a#b$c%d!e@f\ng\rh|^~\\&";
        let escaped = escape(value, &odd);
        assert!(!escaped.contains(['#', '$', '%', '@', '\n', '\r']));
        assert_eq!(unescape(&escaped, &odd, Charset::Utf8), value);
    }
}
