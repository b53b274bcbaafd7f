//! Code checks that need no code list: the shape and check digit of a code
//! in a code system whose identifiers carry them.
//!
//! In: a code and the [`CodeRules`] of its (canonical) system. Out: nothing,
//! or the [`CodeError`] that says what is wrong. Whether the code exists in
//! the system's current release is not checked here (that needs the release,
//! or a terminology server).

pub mod icd10cm;
pub mod loinc;
pub mod rxnorm;
pub mod snomed;

use thiserror::Error;

use super::ucum::{self, UcumError};

/// Which checks a code system's codes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRules {
    Loinc,
    Snomed,
    RxNorm,
    Icd10Cm,
    Ucum,
    /// Known system, nothing offline to check about its codes.
    None,
}

/// Why a code fails its system's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CodeError<'a> {
    #[error(transparent)]
    Loinc(loinc::LoincError),
    #[error(transparent)]
    Snomed(snomed::SnomedError),
    #[error(transparent)]
    RxNorm(rxnorm::RxNormError),
    #[error(transparent)]
    Icd10Cm(icd10cm::Icd10CmError),
    #[error(transparent)]
    Ucum(UcumError<'a>),
}

impl CodeError<'_> {
    /// True when the code has its system's shape but a check digit fails.
    pub fn is_check_digit(&self) -> bool {
        match self {
            Self::Loinc(e) => matches!(e, loinc::LoincError::CheckDigit { .. }),
            Self::Snomed(e) => e.is_check_digit(),
            _ => false,
        }
    }
}

/// Checks `code` against `rules`.
pub fn check(rules: CodeRules, code: &str) -> Result<(), CodeError<'_>> {
    match rules {
        CodeRules::Loinc => loinc::check(code).map(|_| ()).map_err(CodeError::Loinc),
        CodeRules::Snomed => snomed::check(code).map_err(CodeError::Snomed),
        CodeRules::RxNorm => rxnorm::check(code).map_err(CodeError::RxNorm),
        CodeRules::Icd10Cm => icd10cm::check(code).map_err(CodeError::Icd10Cm),
        CodeRules::Ucum => ucum::validate(code).map_err(CodeError::Ucum),
        CodeRules::None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_by_rules() {
        assert!(check(CodeRules::Loinc, "8867-4").is_ok());
        assert!(
            check(CodeRules::Loinc, "8867-5")
                .unwrap_err()
                .is_check_digit()
        );
        assert!(
            check(CodeRules::Snomed, "38341004")
                .unwrap_err()
                .is_check_digit()
        );
        assert!(
            !check(CodeRules::Snomed, "3834")
                .unwrap_err()
                .is_check_digit()
        );
        assert!(check(CodeRules::RxNorm, "x").is_err());
        assert!(check(CodeRules::Icd10Cm, "E11.9").is_ok());
        assert!(check(CodeRules::Ucum, "mg/dL").is_ok());
        assert!(check(CodeRules::Ucum, "mcg").is_err());
        assert!(check(CodeRules::None, "anything at all").is_ok());
    }
}
