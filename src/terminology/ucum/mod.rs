//! UCUM unit syntax, for `Quantity.code` with system `http://unitsofmeasure.org`.
//!
//! In: a unit code. Out: nothing, or where and why it is not UCUM. The
//! grammar is UCUM's own (§ 2 of the specification, case-sensitive form):
//!
//! ```text
//! main-term   := "/" term | term
//! term        := component (("." | "/") component)*
//! component   := annotatable annotation? | annotation | factor | "(" term ")"
//! annotatable := simple-unit exponent?
//! simple-unit := atom | prefix metric-atom
//! exponent    := ("+" | "-")? digits
//! annotation  := "{" ASCII 33–126 except braces "}"
//! ```
//!
//! `10*` and `10^` are atoms (`10*3/uL`); square brackets belong to the
//! symbol (`mm[Hg]`, `[in_i]`, `B[10.nV]`). The atom table ([`atoms`]) is a
//! documented subset of UCUM's. Not checked: whether a unit suits the
//! quantity (commensurability needs the unit definitions, not the syntax).
//! Known non-UCUM spellings (`mcg`, `mEq`, `hr`) come with their UCUM code.

pub mod atoms;

use std::fmt;

/// What is wrong with a unit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UcumErrorKind {
    Empty,
    Whitespace,
    NotAscii,
    UnexpectedChar,
    UnknownUnit,
    /// The symbol is a prefix on an atom that takes none (`kh`, `mmin`).
    PrefixOnNonMetric {
        prefix_len: u8,
    },
    UnclosedBracket,
    UnclosedAnnotation,
    BadAnnotationChar,
    UnclosedParen,
    /// An operator without the unit it needs (`mg/`, `//`, `()`).
    MissingUnit,
    /// A sign without digits (`m+`).
    BadExponent,
}

/// A unit code that is not UCUM: the code, the byte span at fault, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UcumError<'a> {
    pub unit: &'a str,
    pub at: usize,
    pub len: usize,
    pub kind: UcumErrorKind,
}

impl UcumError<'_> {
    /// The part of the code at fault (empty for errors at a position).
    pub fn symbol(&self) -> &str {
        self.unit.get(self.at..self.at + self.len).unwrap_or("")
    }

    /// The UCUM code to use instead, for a known non-UCUM spelling.
    pub fn suggestion(&self) -> Option<&'static str> {
        atoms::hint(self.unit).or_else(|| atoms::hint(self.symbol()))
    }
}

impl fmt::Display for UcumError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use UcumErrorKind::*;
        let (at, sym) = (self.at, self.symbol());
        write!(f, "UCUM unit `{}`: ", self.unit)?;
        match self.kind {
            Empty => write!(f, "empty: use `1` for a unitless quantity")?,
            Whitespace => write!(f, "whitespace at byte {at}: UCUM codes have none")?,
            NotAscii => write!(f, "non-ASCII character at byte {at}: UCUM codes are ASCII")?,
            UnexpectedChar => write!(f, "unexpected `{sym}` at byte {at}")?,
            UnknownUnit => write!(f, "`{sym}` (byte {at}) is not a UCUM unit")?,
            PrefixOnNonMetric { prefix_len } => {
                let (prefix, atom) = sym.split_at(usize::from(prefix_len).min(sym.len()));
                write!(
                    f,
                    "`{sym}` (byte {at}): `{atom}` takes no prefix such as `{prefix}`"
                )?
            }
            UnclosedBracket => write!(f, "`[` at byte {at} is never closed")?,
            UnclosedAnnotation => write!(f, "`{{` at byte {at} is never closed")?,
            BadAnnotationChar => write!(
                f,
                "annotation character at byte {at} must be printable ASCII other than a brace"
            )?,
            UnclosedParen => write!(f, "`(` at byte {at} is never closed")?,
            MissingUnit => write!(f, "a unit is missing at byte {at}")?,
            BadExponent => write!(f, "exponent sign without digits at byte {at}")?,
        }
        if let Some(fix) = self.suggestion() {
            write!(f, " (UCUM writes `{fix}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for UcumError<'_> {}

/// Checks that `unit` is a UCUM code (case-sensitive form).
pub fn validate(unit: &str) -> Result<(), UcumError<'_>> {
    let err = |at, len, kind| {
        Err(UcumError {
            unit,
            at,
            len,
            kind,
        })
    };
    if unit.is_empty() {
        return err(0, 0, UcumErrorKind::Empty);
    }
    if let Some(at) = unit.bytes().position(|b| !b.is_ascii()) {
        return err(at, 0, UcumErrorKind::NotAscii);
    }
    if let Some(at) = unit.bytes().position(|b| b.is_ascii_whitespace()) {
        return err(at, 0, UcumErrorKind::Whitespace);
    }
    let mut parser = Parser {
        unit,
        s: unit.as_bytes(),
        i: 0,
    };
    parser.main_term()?;
    if parser.i < parser.s.len() {
        return err(parser.i, 1, UcumErrorKind::UnexpectedChar);
    }
    Ok(())
}

struct Parser<'a> {
    unit: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn fail(&self, at: usize, len: usize, kind: UcumErrorKind) -> Result<(), UcumError<'a>> {
        Err(UcumError {
            unit: self.unit,
            at,
            len,
            kind,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn main_term(&mut self) -> Result<(), UcumError<'a>> {
        if self.peek() == Some(b'/') {
            self.i += 1;
        }
        self.term()
    }

    fn term(&mut self) -> Result<(), UcumError<'a>> {
        self.component()?;
        while let Some(b'.' | b'/') = self.peek() {
            self.i += 1;
            self.component()?;
        }
        Ok(())
    }

    fn component(&mut self) -> Result<(), UcumError<'a>> {
        match self.peek() {
            None | Some(b'.' | b'/' | b')') => self.fail(self.i, 0, UcumErrorKind::MissingUnit),
            Some(b'(') => {
                let open = self.i;
                self.i += 1;
                self.term()?;
                if self.peek() != Some(b')') {
                    return self.fail(open, 1, UcumErrorKind::UnclosedParen);
                }
                self.i += 1;
                Ok(())
            }
            Some(b'{') => self.annotation(),
            Some(b'}' | b']' | b'+' | b'-') => self.fail(self.i, 1, UcumErrorKind::UnexpectedChar),
            Some(b'0'..=b'9') => self.factor_or_power_of_ten(),
            Some(_) => {
                self.simple_unit()?;
                self.exponent()?;
                if self.peek() == Some(b'{') {
                    self.annotation()?;
                }
                Ok(())
            }
        }
    }

    /// Digits: a factor (`1000`), or the atoms `10*` / `10^` with an exponent.
    fn factor_or_power_of_ten(&mut self) -> Result<(), UcumError<'a>> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        if let Some(b'*' | b'^') = self.peek() {
            self.i += 1;
            if &self.s[start..self.i] != b"10*" && &self.s[start..self.i] != b"10^" {
                return self.fail(start, self.i - start, UcumErrorKind::UnknownUnit);
            }
            self.exponent()?;
            if self.peek() == Some(b'{') {
                self.annotation()?;
            }
        }
        Ok(())
    }

    fn simple_unit(&mut self) -> Result<(), UcumError<'a>> {
        let start = self.i;
        while let Some(b) = self.peek() {
            match b {
                b'[' => match self.s[self.i..].iter().position(|&c| c == b']') {
                    Some(end) => self.i += end + 1,
                    None => return self.fail(self.i, 1, UcumErrorKind::UnclosedBracket),
                },
                b']' | b'.' | b'/' | b'(' | b')' | b'{' | b'}' | b'+' | b'-' | b'0'..=b'9' => {
                    break;
                }
                _ => self.i += 1,
            }
        }
        let symbol = &self.unit[start..self.i];
        if symbol.is_empty() {
            return self.fail(start, 1, UcumErrorKind::UnexpectedChar);
        }
        if atoms::atom(symbol).is_some() {
            return Ok(());
        }
        let mut non_metric = None;
        for prefix in atoms::PREFIXES {
            let Some(rest) = symbol.strip_prefix(prefix) else {
                continue;
            };
            match atoms::atom(rest) {
                Some(atom) if atom.metric => return Ok(()),
                Some(_) => non_metric = Some(prefix.len() as u8),
                None => {}
            }
        }
        let kind = match non_metric {
            Some(prefix_len) => UcumErrorKind::PrefixOnNonMetric { prefix_len },
            None => UcumErrorKind::UnknownUnit,
        };
        self.fail(start, symbol.len(), kind)
    }

    fn exponent(&mut self) -> Result<(), UcumError<'a>> {
        let start = self.i;
        if let Some(b'+' | b'-') = self.peek() {
            self.i += 1;
        }
        let digits = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        if self.i == digits && digits > start {
            return self.fail(start, 1, UcumErrorKind::BadExponent);
        }
        Ok(())
    }

    fn annotation(&mut self) -> Result<(), UcumError<'a>> {
        let open = self.i;
        self.i += 1;
        loop {
            match self.peek() {
                None => return self.fail(open, 1, UcumErrorKind::UnclosedAnnotation),
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'{') => return self.fail(self.i, 1, UcumErrorKind::BadAnnotationChar),
                Some(33..=126) => self.i += 1,
                Some(_) => return self.fail(self.i, 1, UcumErrorKind::BadAnnotationChar),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UcumErrorKind::*;
    use super::*;

    /// Every UCUM code in `Quantity.code` of ../shared/data/bulk (Synthea)
    /// and ../shared/data/fhir-examples (R4 core and US Core examples).
    const IN_SHARED_DATA: &[&str] = &[
        "%",
        "/a",
        "/min",
        "1",
        "10*12/L",
        "10*3/uL",
        "10*6/uL",
        "Cel",
        "L/min",
        "U",
        "U/L",
        "[in_i]",
        "[lb_av]",
        "a",
        "cm",
        "d",
        "d/wk",
        "fL",
        "g",
        "g/L",
        "g/cm-2",
        "g/dL",
        "h",
        "kPa",
        "kU/L",
        "kg",
        "kg/m2",
        "mL",
        "mL/min",
        "mL/min/{1.73_m2}",
        "mg",
        "mg/dL",
        "mg/kg",
        "mg/m2",
        "min",
        "min/d",
        "ml",
        "mm",
        "mm[Hg]",
        "mmol/L",
        "ng/mL",
        "pg",
        "{score}",
    ];

    /// The codes with UCUM's system there that are not UCUM, and their fix.
    const NOT_UCUM_IN_SHARED_DATA: &[(&str, &str)] = &[
        ("drop", "[drp]"),
        ("ea", "{each}"),
        ("mEq", "meq"),
        ("mcg", "ug"),
        ("ml/hr", "mL/h"),
    ];

    #[test]
    fn units_in_the_shared_data() {
        for unit in IN_SHARED_DATA {
            assert_eq!(validate(unit), Ok(()), "{unit}");
        }
        for (unit, fix) in NOT_UCUM_IN_SHARED_DATA {
            let e = validate(unit).unwrap_err();
            assert_eq!(e.suggestion(), Some(*fix), "{unit}: {e}");
        }
    }

    #[test]
    fn grammar_corners() {
        for unit in [
            "10*-3",
            "10^3",
            "m2.s-1",
            "kg.m/s2",
            "(m/s)/s",
            "/[HPF]",
            "{cells}/uL",
            "[IU]/L",
            "m[IU]/L",
            "cm[H2O]",
            "B[10.nV]",
            "cal_[15]",
            "kcal/(kg.d)",
            "[arb'U]/mL",
            "''",
            "%[slope]",
            "daL",
            "KiBy",
            "mmol/mol",
            "meq/L",
            "ug/(24.h)",
            "{#}/[HPF]",
            "mL{total}",
            "[in_i'Hg]",
            "umol/L",
            "nmol/min/mg{protein}",
            "s+2",
        ] {
            assert_eq!(validate(unit), Ok(()), "{unit}");
        }
    }

    fn kind(unit: &str) -> (usize, usize, UcumErrorKind) {
        let e = validate(unit).unwrap_err();
        (e.at, e.len, e.kind)
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(kind(""), (0, 0, Empty));
        assert_eq!(kind("mg /dL"), (2, 0, Whitespace));
        assert_eq!(kind("µg"), (0, 0, NotAscii));
        assert_eq!(kind("mg/dl2x"), (6, 1, UnexpectedChar));
        assert_eq!(kind("mg/"), (3, 0, MissingUnit));
        assert_eq!(kind("mg//L"), (3, 0, MissingUnit));
        assert_eq!(kind("()"), (1, 0, MissingUnit));
        assert_eq!(kind("mg/(kg"), (3, 1, UnclosedParen));
        assert_eq!(kind("mg)"), (2, 1, UnexpectedChar));
        assert_eq!(kind("mm[Hg"), (2, 1, UnclosedBracket));
        assert_eq!(kind("{score"), (0, 1, UnclosedAnnotation));
        assert_eq!(kind("{a{b}}"), (2, 1, BadAnnotationChar));
        assert_eq!(kind("m+"), (1, 1, BadExponent));
        assert_eq!(kind("2{x}"), (1, 1, UnexpectedChar));
        assert_eq!(kind("11*3"), (0, 3, UnknownUnit));
        assert_eq!(kind("mg/xyz"), (3, 3, UnknownUnit));
        assert_eq!(kind("MG/DL"), (3, 2, UnknownUnit)); // MG is megagauss; DL is nothing
        assert_eq!(kind("kh"), (0, 2, PrefixOnNonMetric { prefix_len: 1 }));
        assert_eq!(kind("mmin"), (0, 4, PrefixOnNonMetric { prefix_len: 1 }));
        assert_eq!(kind("k[IU]x"), (0, 6, UnknownUnit));
    }

    #[test]
    fn messages_name_the_symbol_and_the_fix() {
        let e = validate("mg/hr").unwrap_err();
        assert_eq!(e.symbol(), "hr");
        assert_eq!(
            e.to_string(),
            "UCUM unit `mg/hr`: `hr` (byte 3) is not a UCUM unit (UCUM writes `mg/h`)"
        );
        let e = validate("kh").unwrap_err();
        assert_eq!(
            e.to_string(),
            "UCUM unit `kh`: `kh` (byte 0): `h` takes no prefix such as `k`"
        );
        let e = validate("ng/dL.hr").unwrap_err();
        assert_eq!(e.suggestion(), Some("h"));
    }
}
