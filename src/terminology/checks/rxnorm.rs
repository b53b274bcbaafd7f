//! RxNorm concept unique identifiers (RXCUI): decimal numbers.
//!
//! RxNorm publishes no check digit, so only the shape is checked: 1 to 8
//! digits, no leading zero (RXCUIs reached 7 digits in the 2020s).

use thiserror::Error;

/// Why a code is not an RXCUI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RxNormError {
    #[error("not an RxNorm RXCUI: expected 1 to 8 digits without a leading zero (e.g. `198440`)")]
    Format,
}

const MAX_DIGITS: usize = 8;

/// Checks the shape of an RXCUI.
pub fn check(code: &str) -> Result<(), RxNormError> {
    let ok = (1..=MAX_DIGITS).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && !code.starts_with('0');
    if ok { Ok(()) } else { Err(RxNormError::Format) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rxcuis() {
        for code in ["1", "198440", "313782", "1049221", "2599543"] {
            assert_eq!(check(code), Ok(()), "{code}");
        }
        for code in [
            "",
            "0198440",
            "19844O",
            "198 440",
            "123456789",
            "RX198440",
            "-1",
        ] {
            assert_eq!(check(code), Err(RxNormError::Format), "{code:?}");
        }
    }
}
