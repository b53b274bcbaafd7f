//! The separators of a message: MSH-1 (fields) and MSH-2 (components,
//! repetitions, escapes, sub-components, and the v2.7+ truncation mark).

use super::error::{DelimiterProblem, Hl7Error};

/// The separators of one message, from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: Option<u8>,
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
    /// v2.7+ truncation character (5th character of MSH-2).
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: Some(b'~'),
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Read MSH-1 (`field`) and the raw MSH-2 bytes.
    pub fn from_header(field: u8, msh2: &[u8]) -> Result<Self, Hl7Error> {
        let bad = |problem| Hl7Error::InvalidDelimiters { problem };
        let usable = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric();
        if !usable(field) {
            return Err(bad(DelimiterProblem::BadFieldSeparator(char::from(field))));
        }
        if msh2.is_empty() {
            return Err(bad(DelimiterProblem::NoEncodingCharacters));
        }
        if msh2.len() > 5 {
            return Err(bad(DelimiterProblem::TooManyEncodingCharacters(msh2.len())));
        }
        let mut seen = vec![field];
        for &b in msh2 {
            if !usable(b) {
                return Err(bad(DelimiterProblem::BadEncodingCharacter(char::from(b))));
            }
            if seen.contains(&b) {
                return Err(bad(DelimiterProblem::Duplicate(char::from(b))));
            }
            seen.push(b);
        }
        let at = |i: usize| msh2.get(i).copied();
        Ok(Delimiters {
            field,
            component: msh2[0],
            repetition: at(1),
            escape: at(2),
            subcomponent: at(3),
            truncation: at(4),
        })
    }

    /// MSH-2 as it is written in a header.
    pub fn encoding_characters(&self) -> String {
        [
            Some(self.component),
            self.repetition,
            self.escape,
            self.subcomponent,
            self.truncation,
        ]
        .into_iter()
        .flatten()
        .map(char::from)
        .collect()
    }
}
