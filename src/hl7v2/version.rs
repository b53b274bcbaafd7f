//! MSH-12: the HL7 v2 versions this reader accepts (2.3 to 2.8, with or
//! without a patch level such as 2.3.1 or 2.5.1).

use std::fmt;

use super::error::Hl7Error;

/// MSH-12, limited to the versions this reader knows (2.3 to 2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl Version {
    pub fn parse(value: &str) -> Result<Version, Hl7Error> {
        let unsupported = || Hl7Error::UnsupportedVersion {
            value: value.to_string(),
        };
        let mut parts = value.trim().split('.');
        let mut num = |required: bool| -> Result<u8, Hl7Error> {
            match parts.next() {
                Some(p) => p.parse::<u8>().map_err(|_| unsupported()),
                None if required => Err(unsupported()),
                None => Ok(0),
            }
        };
        let v = Version {
            major: num(true)?,
            minor: num(true)?,
            patch: num(false)?,
        };
        if parts.next().is_some() || v.major != 2 || !(3..=8).contains(&v.minor) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// True for 2.5 and later (ERL error locations, ERR-3 codes).
    pub fn at_least(&self, minor: u8) -> bool {
        self.minor >= minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            0 => write!(f, "{}.{}", self.major, self.minor),
            p => write!(f, "{}.{}.{}", self.major, self.minor, p),
        }
    }
}
