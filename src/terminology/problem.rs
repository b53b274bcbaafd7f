//! What a check finds wrong with a coding or a quantity's unit: a typed
//! [`Problem`] with a human message, and its stable [`ProblemKind`] (the
//! `problem` column of `_curation`, the key of the metrics).

use std::fmt;

use serde::Serialize;

use super::binding::BindingStrength;
use super::checks::CodeError;
use super::checks::loinc::LoincError;
use super::checks::snomed::SnomedError;
use super::systems::{FixedUri, Spelling};

/// The stable name of a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    NoSystem,
    NoCode,
    UnknownSystem,
    MisspeltSystem,
    BadFormat,
    BadCheckDigit,
    BadPartition,
    NotAConcept,
    BadUnit,
    NotInValueSet,
    NoMapping,
    UnknownToServer,
}

impl ProblemKind {
    pub const ALL: [Self; 12] = [
        Self::NoSystem,
        Self::NoCode,
        Self::UnknownSystem,
        Self::MisspeltSystem,
        Self::BadFormat,
        Self::BadCheckDigit,
        Self::BadPartition,
        Self::NotAConcept,
        Self::BadUnit,
        Self::NotInValueSet,
        Self::NoMapping,
        Self::UnknownToServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSystem => "no_system",
            Self::NoCode => "no_code",
            Self::UnknownSystem => "unknown_system",
            Self::MisspeltSystem => "misspelt_system",
            Self::BadFormat => "bad_format",
            Self::BadCheckDigit => "bad_check_digit",
            Self::BadPartition => "bad_partition",
            Self::NotAConcept => "not_a_concept",
            Self::BadUnit => "bad_unit",
            Self::NotInValueSet => "not_in_value_set",
            Self::NoMapping => "no_mapping",
            Self::UnknownToServer => "unknown_to_server",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Position in [`Self::ALL`], for counters kept in arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem. Borrows the input (the system found) and the job's
/// terminology (a value set's URL); nothing is allocated to make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem<'a> {
    /// A code without a system: nobody can tell what it means.
    NoSystem,
    /// A system without a code.
    NoCode,
    /// Not a known terminology, and no concept map of the job maps it; the
    /// concept has no coding in a known system either.
    UnknownSystem { system: &'a str },
    MisspeltSystem {
        system: &'a str,
        fix: FixedUri<'a>,
        spelling: Spelling,
    },
    /// The code breaks its system's rules (format, check digit, UCUM).
    Code(CodeError<'a>),
    /// No coding of the concept is in the value set its element is bound to.
    NotInValueSet {
        value_set: &'a str,
        strength: BindingStrength,
    },
    /// A code of a system the job's concept maps translate, with no
    /// mapping, in a concept with no coding in a known system.
    NoMapping { system: &'a str },
    /// The terminology server (`--tx`) answered that the code is not in
    /// its code system; `answer` is the server's message.
    UnknownToServer { answer: &'a str },
}

impl Problem<'_> {
    pub fn kind(&self) -> ProblemKind {
        match self {
            Self::NoSystem => ProblemKind::NoSystem,
            Self::NoCode => ProblemKind::NoCode,
            Self::UnknownSystem { .. } => ProblemKind::UnknownSystem,
            Self::MisspeltSystem { .. } => ProblemKind::MisspeltSystem,
            Self::NotInValueSet { .. } => ProblemKind::NotInValueSet,
            Self::NoMapping { .. } => ProblemKind::NoMapping,
            Self::UnknownToServer { .. } => ProblemKind::UnknownToServer,
            Self::Code(e) => match e {
                CodeError::Ucum(_) => ProblemKind::BadUnit,
                CodeError::Loinc(LoincError::CheckDigit { .. })
                | CodeError::Snomed(SnomedError::CheckDigit { .. }) => ProblemKind::BadCheckDigit,
                CodeError::Snomed(
                    SnomedError::Partition { .. } | SnomedError::ShortLongFormat { .. },
                ) => ProblemKind::BadPartition,
                CodeError::Snomed(SnomedError::NotAConcept { .. }) => ProblemKind::NotAConcept,
                _ => ProblemKind::BadFormat,
            },
        }
    }
}

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSystem => {
                f.write_str("a code without a system: nobody can tell which terminology it is from")
            }
            Self::NoCode => f.write_str("a system without a code"),
            Self::UnknownSystem { system } => write!(
                f,
                "unknown code system `{system}`, and no coding in a known one: add a concept map to a standard terminology (--concept-maps)"
            ),
            Self::MisspeltSystem {
                system,
                fix,
                spelling,
            } => {
                write!(
                    f,
                    "code system `{system}` is misspelt ({spelling}): use `{fix}`"
                )
            }
            Self::Code(e) => write!(f, "{e}"),
            Self::NotInValueSet {
                value_set,
                strength,
            } => {
                write!(f, "not in value set {value_set} ({strength} binding)")
            }
            Self::NoMapping { system } => write!(
                f,
                "no concept map of this job maps this code of `{system}` to a standard code"
            ),
            Self::UnknownToServer { answer } => write!(
                f,
                "the terminology server does not know this code ({answer}): fix the code, or map it (--concept-maps)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_index() {
        for (i, kind) in ProblemKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(ProblemKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(ProblemKind::parse("bad"), None);
    }

    #[test]
    fn code_errors_map_to_kinds() {
        use super::super::checks::{self, CodeRules};
        let kind = |rules, code| Problem::Code(checks::check(rules, code).unwrap_err()).kind();
        assert_eq!(kind(CodeRules::Loinc, "8867-5"), ProblemKind::BadCheckDigit);
        assert_eq!(kind(CodeRules::Loinc, "8867"), ProblemKind::BadFormat);
        assert_eq!(
            kind(CodeRules::Snomed, "38341004"),
            ProblemKind::BadCheckDigit
        );
        assert_eq!(
            kind(CodeRules::Snomed, "12345032"),
            ProblemKind::BadPartition
        );
        assert_eq!(
            kind(CodeRules::Snomed, "12345013"),
            ProblemKind::NotAConcept
        );
        assert_eq!(kind(CodeRules::RxNorm, "x"), ProblemKind::BadFormat);
        assert_eq!(kind(CodeRules::Icd10Cm, "E119"), ProblemKind::BadFormat);
        assert_eq!(kind(CodeRules::Ucum, "mcg"), ProblemKind::BadUnit);
    }
}
