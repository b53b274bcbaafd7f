//! LOINC codes: `NNNNN-C` terms, `LA…`/`LP…` answers and parts, each with a
//! mod-10 check digit.
//!
//! Terms use the Users' Guide 12C algorithm (Luhn over the digits). Answers
//! and parts carry letters, so LOINC uses the OpenMRS variant of Luhn, where a
//! character weighs its ASCII code minus 48 (on digits it is plain Luhn). The
//! 14 terms LOINC lists with wrong check digits are accepted as issued.
//! Group (`LG`) and answer-list (`LL`) identifiers are checked for shape
//! only: no published check-digit rule was verified for them.

use thiserror::Error;

/// What a well-formed LOINC code identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoincKind {
    Term,
    Answer,
    Part,
    Group,
    AnswerList,
}

/// Why a code is not a LOINC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LoincError {
    #[error(
        "not a LOINC code: expected digits, a hyphen and one check digit (e.g. `8867-4`, or `LA6576-8` for an answer)"
    )]
    Format,
    #[error(
        "LOINC check digit is {found}, but the digits before the hyphen give {expected}: a digit is mistyped"
    )]
    CheckDigit { expected: u8, found: u8 },
}

/// The terms LOINC issued with check digits that fail its own algorithm
/// (Users' Guide 12C, "Terms with invalid check digits"); all deprecated.
const ISSUED_WITH_WRONG_CHECK_DIGIT: [&str; 14] = [
    "11491-6", "11501-6", "5895-7", "5896-5", "5897-3", "5928-1", "6028-3", "6415-5", "6580-7",
    "6645-7", "6646-5", "6647-3", "6648-1", "6649-9",
];

/// Most digits before the hyphen: LOINC numbers passed 99999 in 2022, and
/// seven leaves room without accepting arbitrary numbers.
const MAX_BODY_DIGITS: usize = 7;

/// Checks shape and check digit.
pub fn check(code: &str) -> Result<LoincKind, LoincError> {
    let (body, check) = code.rsplit_once('-').ok_or(LoincError::Format)?;
    let &[found @ b'0'..=b'9'] = check.as_bytes() else {
        return Err(LoincError::Format);
    };
    let found = found - b'0';
    let (kind, digits) = split_prefix(body);
    let digits_ok = !digits.is_empty()
        && digits.len() <= MAX_BODY_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !digits_ok {
        return Err(LoincError::Format);
    }
    if matches!(kind, LoincKind::Group | LoincKind::AnswerList) {
        return Ok(kind);
    }
    let expected = check_digit(body);
    if expected != found && !ISSUED_WITH_WRONG_CHECK_DIGIT.contains(&code) {
        return Err(LoincError::CheckDigit { expected, found });
    }
    Ok(kind)
}

fn split_prefix(body: &str) -> (LoincKind, &str) {
    for (prefix, kind) in [
        ("LA", LoincKind::Answer),
        ("LP", LoincKind::Part),
        ("LG", LoincKind::Group),
        ("LL", LoincKind::AnswerList),
    ] {
        if let Some(rest) = body.strip_prefix(prefix) {
            return (kind, rest);
        }
    }
    (LoincKind::Term, body)
}

/// The mod-10 check digit of `body` (the part before the hyphen), in the
/// OpenMRS form: every character weighs `ascii - 48`, every other one from
/// the right is doubled with its digits summed (`2w - 9·⌊w/5⌋`).
pub fn check_digit(body: &str) -> u8 {
    let mut sum: u32 = 0;
    for (i, b) in body.bytes().rev().enumerate() {
        let w = u32::from(b).saturating_sub(48);
        sum += if i % 2 == 0 { 2 * w - 9 * (w / 5) } else { w };
    }
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_answers_and_parts_pass() {
        for code in ["8867-4", "55284-4", "12345-5", "2339-0", "85354-9", "1-8"] {
            assert_eq!(check(code), Ok(LoincKind::Term), "{code}");
        }
        for code in ["LA6576-8", "LA33-6", "LA32-8", "LA13909-9", "LA21277-1"] {
            assert_eq!(check(code), Ok(LoincKind::Answer), "{code}");
        }
        assert_eq!(check("LP29684-5"), Ok(LoincKind::Part));
    }

    #[test]
    fn users_guide_example() {
        // 12C: "5 is the Mod 10 check digit for 12345".
        assert_eq!(check_digit("12345"), 5);
    }

    #[test]
    fn wrong_check_digits_fail_with_the_right_one() {
        assert_eq!(
            check("8867-5"),
            Err(LoincError::CheckDigit {
                expected: 4,
                found: 5
            })
        );
        assert_eq!(
            check("LA33-7"),
            Err(LoincError::CheckDigit {
                expected: 6,
                found: 7
            })
        );
        // A transposition of adjacent digits is caught too.
        assert!(check("8687-4").is_err());
    }

    #[test]
    fn the_fourteen_issued_exceptions_pass_and_their_neighbours_do_not() {
        for code in ISSUED_WITH_WRONG_CHECK_DIGIT {
            let body = code.split('-').next().unwrap();
            assert_ne!(
                check_digit(body).to_string(),
                &code[code.len() - 1..],
                "{code} is no exception"
            );
            assert!(check(code).is_ok(), "{code}");
        }
        assert!(check("11491-7").is_err());
    }

    #[test]
    fn shapes_that_are_not_loinc() {
        for code in [
            "",
            "8867",
            "8867-",
            "-4",
            "8867-44",
            "8867-x",
            "08867-4",
            "88 67-4",
            "8867–4",
            "12345678-1",
            "LA-1",
            "LX123-4",
            "la33-6",
            "8867-4 ",
        ] {
            assert_eq!(check(code), Err(LoincError::Format), "{code:?}");
        }
    }

    #[test]
    fn groups_and_answer_lists_are_checked_for_shape() {
        assert_eq!(check("LG41761-4"), Ok(LoincKind::Group));
        assert_eq!(check("LL361-7"), Ok(LoincKind::AnswerList));
        assert_eq!(check("LG-4"), Err(LoincError::Format));
    }
}
