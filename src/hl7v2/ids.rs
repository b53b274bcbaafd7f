//! Deterministic resource ids, so the same patient, visit, order or result
//! gets the same FHIR id from any message that mentions it.
//!
//! `id = <prefix>-<first 32 hex chars of SHA-256(canonical key)>` (at most
//! 37 characters, inside FHIR's `[A-Za-z0-9\-\.]{1,64}`). The canonical key is
//! `hl7v2-id-v1`, the prefix and the key parts, joined by U+001F (a byte no
//! HL7 value carries), each part trimmed. Changing a key changes every id, so
//! the keys are part of the lake's contract:
//!
//! | resource | prefix | key parts |
//! |---|---|---|
//! | Patient | `pat` | sending facility (MSH-4), identifier system, identifier value of the first PID-3 repetition with a value, preferring type `MR` (then PID-2, PID-4) |
//! | Encounter | `enc` | facility, visit number system, PV1-19 value; else facility, Patient id, `admit`, PV1-44 as sent; else facility, Patient id, `message`, MSH-10 |
//! | Practitioner | `prac` | `id`, identifier system (XCN.9) or facility, XCN.1; else `name`, facility, family, given |
//! | Location | `loc` | facility (PL.4 or MSH-4), point of care, room, bed, building, floor |
//! | ServiceRequest | `sr` | facility, `placer`, placer number (OBR-2, else ORC-2) with its namespace; else `filler`, filler number (OBR-3, else ORC-3) |
//! | DiagnosticReport | `dr` | facility, `filler`, filler number with namespace; else `placer`, placer number; else Patient id, MSH-10, OBR set id |
//! | Observation | `obs` | facility, report key (the DiagnosticReport's key, or the Patient id for ADT/ORM), OBX-1 set id, OBX-4 sub-id, OBX-3 code and coding system |
//! | Specimen | `spm` | facility, SPM-2 filler id (else placer id); else report key, SPM-1 or `obr15`, specimen type code |
//! | MessageHeader, Provenance | `mh`, `prov` | sending application, facility, MSH-10, MSH-7 as sent (a retry resends both; a sender reusing a control id at another time is a new message) |
//!
//! The placer number keys a ServiceRequest because it is assigned first and
//! survives the filler number being added later; a DiagnosticReport is the
//! filler's, so the filler number keys it.

use sha2::{Digest, Sha256};

const KEY_VERSION: &str = "hl7v2-id-v1";
const SEP: char = '\u{1F}';

/// The id for a resource of kind `prefix` with this key.
pub fn resource_id(prefix: &str, parts: &[&str]) -> String {
    let mut key = String::with_capacity(64);
    key.push_str(KEY_VERSION);
    key.push(SEP);
    key.push_str(prefix);
    for p in parts {
        key.push(SEP);
        key.push_str(p.trim());
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}-{}", &hex[..32])
}

/// Make `s` a FHIR id fragment: allowed characters kept, others become `.`,
/// cut to `max` characters.
pub fn id_safe(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .take(max)
        .collect()
}

/// Percent-encode `s` for use inside a URN (RFC 8141 NSS): unreserved
/// characters and a few sub-delims stay, everything else is `%XX`.
pub fn urn_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.trim().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_valid() {
        let a = resource_id("pat", &["GHH", "urn:oid:1.2", "PATID1234"]);
        assert_eq!(
            a,
            resource_id("pat", &[" GHH ", "urn:oid:1.2", "PATID1234"])
        );
        assert_ne!(a, resource_id("pat", &["GHH", "urn:oid:1.2", "PATID1235"]));
        // Parts cannot run into each other.
        assert_ne!(
            resource_id("x", &["ab", "c"]),
            resource_id("x", &["a", "bc"])
        );
        assert!(a.len() <= 64 && a.starts_with("pat-"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn escaping_helpers() {
        assert_eq!(id_safe("MSG 001/x", 64), "MSG.001.x");
        assert_eq!(urn_part("GHH LAB|x"), "GHH%20LAB%7Cx");
    }
}
