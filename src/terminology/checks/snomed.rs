//! SNOMED CT identifiers (SCTIDs) and the expressions built from them.
//!
//! An SCTID is 6 to 18 digits without a leading zero; the last is a
//! Verhoeff check digit, the two before it the partition identifier
//! (SNOMED CT TIG 6.3–6.4): the first partition digit says short (`0`, an
//! International Release id) or long format (`1`, a 7-digit namespace
//! before the partition), the second what the id names (`0` concept, `1`
//! description, `2` relationship). A Coding's code must name a concept.
//!
//! A code with expression syntax (`:` `=` `{` `+` `|`, as in
//! `71341001:272741003=7771000`) is a post-coordinated expression: every
//! SCTID in it is checked as a concept id, terms between `|` are skipped,
//! and the grammar itself is not checked.

use thiserror::Error;

/// What an SCTID names, from the second partition digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Concept,
    Description,
    Relationship,
}

/// A well-formed concept id: short format, or long with its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConceptId {
    Short,
    Long { namespace: u32 },
}

/// Why a code is not a SNOMED CT concept id. `at` is the byte offset of the
/// offending SCTID in the code (0 unless the code is an expression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SnomedError {
    #[error("not a SNOMED CT concept id: an SCTID is digits only (byte {at})")]
    NotDigits { at: usize },
    #[error("SNOMED CT id at byte {at} has {len} digits: an SCTID has 6 to 18")]
    Length { at: usize, len: usize },
    #[error("SNOMED CT id at byte {at} starts with 0: SCTIDs never do")]
    LeadingZero { at: usize },
    #[error(
        "SNOMED CT Verhoeff check digit at byte {at} fails: a digit is mistyped or two are swapped"
    )]
    CheckDigit { at: usize },
    #[error(
        "SNOMED CT id at byte {at} has partition `{partition}`: only 00, 01, 02 (short) and 10, 11, 12 (long) exist"
    )]
    Partition { at: usize, partition: u8 },
    #[error(
        "SNOMED CT id at byte {at} is a long-format id of {len} digits: it needs 11 or more (item, 7-digit namespace, partition, check digit)"
    )]
    ShortLongFormat { at: usize, len: usize },
    #[error(
        "SNOMED CT id at byte {at} names a {component:?}, not a concept: a Coding's code must be a concept id"
    )]
    NotAConcept { at: usize, component: Component },
}

impl SnomedError {
    /// True when the id has the right shape but its digits disagree.
    pub fn is_check_digit(&self) -> bool {
        matches!(self, Self::CheckDigit { .. })
    }
}

/// Checks a Coding's code: one concept id, or every SCTID in an expression.
pub fn check(code: &str) -> Result<(), SnomedError> {
    if code.bytes().all(|b| b.is_ascii_digit()) {
        return check_concept_id(code, 0).map(|_| ());
    }
    if !code.bytes().any(|b| b"|:={}+".contains(&b)) {
        let at = code.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(0);
        return Err(SnomedError::NotDigits { at });
    }
    check_expression(code)
}

fn check_expression(code: &str) -> Result<(), SnomedError> {
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A term: `|Hand structure|`; may hold digits.
            b'|' => match bytes[i + 1..].iter().position(|&b| b == b'|') {
                Some(end) => i += end + 2,
                None => return Err(SnomedError::NotDigits { at: i }),
            },
            // A concrete value: `#5` or `"text"`.
            b'#' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            b'"' => match bytes[i + 1..].iter().position(|&b| b == b'"') {
                Some(end) => i += end + 2,
                None => return Err(SnomedError::NotDigits { at: i }),
            },
            b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                check_concept_id(&code[start..i], start)?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Checks one SCTID (digits only) as a concept id; `at` is its offset in
/// the caller's code, for the error.
pub fn check_concept_id(id: &str, at: usize) -> Result<ConceptId, SnomedError> {
    let digits = id.as_bytes();
    if let Some(bad) = digits.iter().position(|b| !b.is_ascii_digit()) {
        return Err(SnomedError::NotDigits { at: at + bad });
    }
    let len = digits.len();
    if !(6..=18).contains(&len) {
        return Err(SnomedError::Length { at, len });
    }
    if digits[0] == b'0' {
        return Err(SnomedError::LeadingZero { at });
    }
    if !verhoeff_valid(digits) {
        return Err(SnomedError::CheckDigit { at });
    }
    let format = digits[len - 3] - b'0';
    let kind = digits[len - 2] - b'0';
    let component = match kind {
        0 => Component::Concept,
        1 => Component::Description,
        2 => Component::Relationship,
        _ => {
            return Err(SnomedError::Partition {
                at,
                partition: format * 10 + kind,
            });
        }
    };
    let id = match format {
        0 => ConceptId::Short,
        1 if len < 11 => return Err(SnomedError::ShortLongFormat { at, len }),
        1 => ConceptId::Long {
            namespace: id[len - 10..len - 3].parse().unwrap_or(0),
        },
        _ => {
            return Err(SnomedError::Partition {
                at,
                partition: format * 10 + kind,
            });
        }
    };
    if component != Component::Concept {
        return Err(SnomedError::NotAConcept { at, component });
    }
    Ok(id)
}

/// Verhoeff's dihedral group D5: `D[j][k]` is j∘k.
const D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// The position permutation, applied `i mod 8` times at position `i`.
const P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Inverses in D5, for computing a check digit.
const INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// True when ASCII `digits` (check digit last) pass Verhoeff.
pub fn verhoeff_valid(digits: &[u8]) -> bool {
    let mut c = 0u8;
    for (i, &b) in digits.iter().rev().enumerate() {
        c = D[c as usize][P[i % 8][(b - b'0') as usize] as usize];
    }
    c == 0
}

/// The Verhoeff check digit to append to ASCII `digits`.
pub fn verhoeff_check_digit(digits: &[u8]) -> u8 {
    let mut c = 0u8;
    for (i, &b) in digits.iter().rev().enumerate() {
        c = D[c as usize][P[(i + 1) % 8][(b - b'0') as usize] as usize];
    }
    INV[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concept_ids_pass() {
        for code in ["38341003", "44054006", "73211009", "404684003", "248153007"] {
            assert_eq!(check_concept_id(code, 0), Ok(ConceptId::Short), "{code}");
        }
        // US edition (namespace 1000124) concept.
        assert_eq!(
            check_concept_id("731000124108", 0),
            Ok(ConceptId::Long { namespace: 1000124 })
        );
    }

    #[test]
    fn check_digit_round_trips() {
        assert_eq!(verhoeff_check_digit(b"3834100"), 3);
        assert_eq!(verhoeff_check_digit(b"236"), 3); // Verhoeff's own example
        assert!(verhoeff_valid(b"2363"));
        assert!(!verhoeff_valid(b"2364"));
    }

    #[test]
    fn single_digit_and_swap_errors_fail() {
        assert_eq!(
            check_concept_id("38341004", 0),
            Err(SnomedError::CheckDigit { at: 0 })
        );
        assert_eq!(
            check_concept_id("83341003", 0),
            Err(SnomedError::CheckDigit { at: 0 })
        );
    }

    #[test]
    fn descriptions_and_relationships_are_not_concepts() {
        // Partition 01: a description id.
        let desc = format!("1234501{}", verhoeff_check_digit(b"1234501"));
        assert_eq!(
            check_concept_id(&desc, 0),
            Err(SnomedError::NotAConcept {
                at: 0,
                component: Component::Description
            })
        );
        let rel = format!("1234502{}", verhoeff_check_digit(b"1234502"));
        assert_eq!(
            check_concept_id(&rel, 0),
            Err(SnomedError::NotAConcept {
                at: 0,
                component: Component::Relationship
            })
        );
    }

    #[test]
    fn bad_partitions_fail() {
        let bad = format!("1234503{}", verhoeff_check_digit(b"1234503"));
        assert_eq!(
            check_concept_id(&bad, 0),
            Err(SnomedError::Partition {
                at: 0,
                partition: 3
            })
        );
        let bad = format!("1234520{}", verhoeff_check_digit(b"1234520"));
        assert_eq!(
            check_concept_id(&bad, 0),
            Err(SnomedError::Partition {
                at: 0,
                partition: 20
            })
        );
        // Long format needs a 7-digit namespace: 10 digits cannot hold it.
        let short_long = format!("123456710{}", verhoeff_check_digit(b"123456710"));
        assert_eq!(
            check_concept_id(&short_long, 0),
            Err(SnomedError::ShortLongFormat { at: 0, len: 10 })
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(check("12345"), Err(SnomedError::Length { at: 0, len: 5 }));
        assert_eq!(
            check("1234567890123456789"),
            Err(SnomedError::Length { at: 0, len: 19 })
        );
        assert_eq!(check("038341003"), Err(SnomedError::LeadingZero { at: 0 }));
        assert_eq!(check("3834100A"), Err(SnomedError::NotDigits { at: 7 }));
        assert_eq!(check(" 38341003"), Err(SnomedError::NotDigits { at: 0 }));
        assert_eq!(check(""), Err(SnomedError::Length { at: 0, len: 0 }));
    }

    #[test]
    fn expressions_check_every_id() {
        assert_eq!(check("71341001:272741003=7771000"), Ok(()));
        assert_eq!(
            check("71341001 |Bone structure of femur| : 272741003 |Laterality| = 7771000 |Left|"),
            Ok(())
        );
        assert_eq!(check("397956004:{363698007=24136001}"), Ok(()));
        assert_eq!(check("27658006:411116001=#250"), Ok(()));
        assert_eq!(
            check("71341001:272741003=7771001"),
            Err(SnomedError::CheckDigit { at: 19 })
        );
        assert!(check("71341001 |unclosed").is_err());
    }
}
