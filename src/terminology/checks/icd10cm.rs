//! ICD-10-CM codes, as FHIR writes them (`http://hl7.org/fhir/sid/icd-10-cm`):
//! a letter, a digit, a digit or letter (`C4A`, `Z3A`), then optionally a
//! dot and one to four characters (digits or letters, `X` as placeholder).
//!
//! Only the shape is checked; whether the code exists in this year's release
//! needs the code list. The commonest slips get their fix named: a missing
//! dot (`E119`, as claims files write it) and lower case.

use thiserror::Error;

/// Why a code is not shaped like an ICD-10-CM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Icd10CmError {
    #[error(
        "not an ICD-10-CM code: expected a letter, a digit, a digit or letter, then optionally `.` and 1 to 4 characters (e.g. `E11.9`)"
    )]
    Format,
    #[error(
        "ICD-10-CM code without its dot: FHIR writes the dot after the third character (`E119` is `E11.9`)"
    )]
    MissingDot,
    #[error("ICD-10-CM code in lower case: codes are upper case (`e11.9` is `E11.9`)")]
    LowerCase,
}

/// Checks the shape of an ICD-10-CM code.
pub fn check(code: &str) -> Result<(), Icd10CmError> {
    if shape_ok(code.as_bytes()) {
        return Ok(());
    }
    if code.bytes().any(|b| b.is_ascii_lowercase())
        && shape_ok(code.to_ascii_uppercase().as_bytes())
    {
        return Err(Icd10CmError::LowerCase);
    }
    let b = code.as_bytes();
    if (4..=7).contains(&b.len())
        && !code.contains('.')
        && head_ok(b)
        && b[3..].iter().all(|&c| tail_char(c))
    {
        return Err(Icd10CmError::MissingDot);
    }
    Err(Icd10CmError::Format)
}

fn shape_ok(b: &[u8]) -> bool {
    if b.len() < 3 || !head_ok(b) {
        return false;
    }
    match &b[3..] {
        [] => true,
        [b'.', tail @ ..] => (1..=4).contains(&tail.len()) && tail.iter().all(|&c| tail_char(c)),
        _ => false,
    }
}

fn head_ok(b: &[u8]) -> bool {
    b[0].is_ascii_uppercase()
        && b[1].is_ascii_digit()
        && (b[2].is_ascii_digit() || b[2].is_ascii_uppercase())
}

fn tail_char(c: u8) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_fhir_form() {
        for code in [
            "E11", "E11.9", "Z38.00", "T20.21", "I49.01", "S72.001A", "C4A.0", "M1A.0110", "U07.1",
            "O9A.111", "T36.0X1A",
        ] {
            assert_eq!(check(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn slips_with_their_fix() {
        assert_eq!(check("E119"), Err(Icd10CmError::MissingDot));
        assert_eq!(check("S72001A"), Err(Icd10CmError::MissingDot));
        assert_eq!(check("e11.9"), Err(Icd10CmError::LowerCase));
        for code in [
            "",
            "E1",
            "11.9",
            "EE1.9",
            "E11.",
            "E11.12345",
            "E11-9",
            "E11 .9",
            "E11.9 ",
            "E11..9",
            "250.00",
        ] {
            assert_eq!(check(code), Err(Icd10CmError::Format), "{code:?}");
        }
    }
}
