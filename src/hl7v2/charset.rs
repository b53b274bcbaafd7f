//! MSH-18 character sets: which ones we read and how bytes become UTF-8 text.
//!
//! In: the MSH-18 value and the message bytes. Out: `&str` (borrowed when the
//! bytes already are valid UTF-8) or an error naming the byte that is wrong.
//! Not here: ISO 2022 switching (`\C..\`/`\M..\` escapes are kept verbatim).

use std::borrow::Cow;

use super::error::Hl7Error;

/// A character set this reader supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Charset {
    /// `ASCII` / `ISO IR6`: 7-bit only; any other byte is an error.
    Ascii,
    /// `UNICODE UTF-8`, and the default when MSH-18 is empty.
    Utf8,
    /// `8859/1` (ISO IR100): each byte is the code point of the same value.
    Latin1,
}

impl Charset {
    /// Resolve an MSH-18 value. `Ok(None)` means "not declared" (we read UTF-8).
    pub fn from_msh18(value: &str) -> Result<Option<Charset>, Hl7Error> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let upper = v.to_ascii_uppercase();
        match upper.as_str() {
            "ASCII" | "ISO IR6" | "US-ASCII" => Ok(Some(Charset::Ascii)),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" => Ok(Some(Charset::Utf8)),
            "8859/1" | "ISO-8859-1" | "ISO 8859-1" | "ISO IR100" | "LATIN1" => {
                Ok(Some(Charset::Latin1))
            }
            _ => Err(Hl7Error::UnsupportedCharset {
                value: v.to_string(),
            }),
        }
    }

    /// The HL7 table 0211 name.
    pub fn label(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
        }
    }

    /// Decode a whole message. Borrows when no conversion is needed.
    pub fn decode(self, bytes: &[u8], declared: bool) -> Result<Cow<'_, str>, Hl7Error> {
        match self {
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(offset) => Err(Hl7Error::NotAscii {
                    offset,
                    byte: bytes[offset],
                }),
                // ASCII is valid UTF-8, so this cannot fail.
                None => Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or(""))),
            },
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Cow::Borrowed(s)),
                Err(e) => Err(Hl7Error::InvalidUtf8 {
                    offset: e.valid_up_to(),
                    charset: if declared {
                        "UNICODE UTF-8"
                    } else {
                        "none declared in MSH-18, read as UTF-8"
                    },
                }),
            },
            Charset::Latin1 => {
                if bytes.is_ascii() {
                    Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or("")))
                } else {
                    Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
                }
            }
        }
    }

    /// Decode the bytes of a `\Xhh..\` escape; `None` when they are not valid
    /// in this character set (the caller then keeps the escape verbatim).
    pub fn decode_escaped(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Ascii => bytes
                .is_ascii()
                .then(|| bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Utf8 => String::from_utf8(bytes.to_vec()).ok(),
            Charset::Latin1 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_names() {
        assert_eq!(Charset::from_msh18("").unwrap(), None);
        assert_eq!(
            Charset::from_msh18("8859/1").unwrap(),
            Some(Charset::Latin1)
        );
        assert_eq!(
            Charset::from_msh18("unicode utf-8").unwrap(),
            Some(Charset::Utf8)
        );
        assert_eq!(Charset::from_msh18("ASCII").unwrap(), Some(Charset::Ascii));
        let err = Charset::from_msh18("ISO IR87").unwrap_err();
        assert!(err.to_string().contains("ISO IR87"), "{err}");
    }

    #[test]
    fn latin1_becomes_utf8() {
        let s = Charset::Latin1.decode(b"M\xfcller", true).unwrap();
        assert_eq!(s, "Müller");
    }

    #[test]
    fn bad_utf8_names_the_byte() {
        let err = Charset::Utf8.decode(b"abc\xffdef", true).unwrap_err();
        assert_eq!(
            err,
            Hl7Error::InvalidUtf8 {
                offset: 3,
                charset: "UNICODE UTF-8"
            }
        );
        assert!(matches!(
            Charset::Ascii.decode(b"ab\xe9", true),
            Err(Hl7Error::NotAscii { offset: 2, .. })
        ));
    }
}
