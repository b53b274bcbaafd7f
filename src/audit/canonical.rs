//! The one definition of an audit record's hash: SHA-256 over its RFC 8785
//! (JCS) canonical JSON.
//!
//! In: a JSON value, or the bytes of a stored record. Out: canonical bytes
//! and their digest. JCS sorts members by their UTF-16 code units, writes
//! numbers as ECMAScript does and strings with the minimal escapes, so any
//! JCS implementation in any language re-derives the same digest from the
//! stored record. (`serde_json_canonicalizer` reformats every number through
//! `f64`, independent of serde_json's `arbitrary_precision`; fhirlake's
//! records hold counts as strings, so no number is ever rounded.)

use serde_json::Value;

use super::values::Sha256;

/// The JCS form of `value`.
pub fn canonical(value: &Value) -> Vec<u8> {
    // A `Value` holds no NaN or infinity and every key is a string, the only
    // things JCS refuses.
    serde_json_canonicalizer::to_vec(value).expect("a serde_json::Value is always canonicalizable")
}

/// SHA-256 of the JCS form of `value`.
pub fn digest(value: &Value) -> Sha256 {
    Sha256::of(&canonical(value))
}

/// What a stored record's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// JSON, stored in its canonical form (as the chain writes it).
    Canonical { value: Value, digest: Sha256 },
    /// JSON, but not byte for byte its canonical form: written or rewritten
    /// by something other than the chain. `digest` is of the canonical form.
    Rewritten { value: Value, digest: Sha256 },
    /// Not JSON; `digest` is of the raw bytes, so a later link can still name it.
    NotJson { digest: Sha256 },
}

impl Stored {
    pub fn read(bytes: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return Self::NotJson {
                digest: Sha256::of(bytes),
            };
        };
        let canonical = canonical(&value);
        let digest = Sha256::of(&canonical);
        if canonical == bytes {
            Self::Canonical { value, digest }
        } else {
            Self::Rewritten { value, digest }
        }
    }

    pub fn digest(&self) -> Sha256 {
        match self {
            Self::Canonical { digest, .. }
            | Self::Rewritten { digest, .. }
            | Self::NotJson { digest } => *digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_sort_by_utf16_code_units_and_strings_escape_minimally() {
        // RFC 8785 §3.2.3's own sorting example: "\u20ac" (€) sorts before
        // "\ud83d\ude00" (😀) in UTF-16, though not in UTF-8 or code points.
        let value: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let text = String::from_utf8(canonical(&value)).unwrap();
        let keys: Vec<&str> = text
            .trim_matches(['{', '}'])
            .split(',')
            .map(|pair| pair.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "\"\\r\"",
                "\"1\"",
                "\"\u{80}\"",
                "\"\u{f6}\"",
                "\"\u{20ac}\"",
                "\"\u{1f600}\"",
                "\"\u{fb33}\"",
            ]
        );
    }

    #[test]
    fn numbers_and_literals_take_their_ecmascript_form() {
        // RFC 8785 §3.2.2 example values.
        let value: Value = serde_json::from_str(
            r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"literals":[null,true,false]}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value)).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}"#
        );
    }

    #[test]
    fn stored_bytes_tell_canonical_from_rewritten_from_garbage() {
        let value = json!({"b": "2", "a": "1"});
        let bytes = canonical(&value);
        assert_eq!(bytes, br#"{"a":"1","b":"2"}"#);
        let stored = Stored::read(&bytes);
        assert_eq!(
            stored,
            Stored::Canonical {
                value: value.clone(),
                digest: Sha256::of(&bytes)
            }
        );
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(
            Stored::read(&pretty),
            Stored::Rewritten {
                value,
                digest: Sha256::of(&bytes)
            }
        );
        // A duplicated member is read as its last copy, so it is never canonical.
        assert!(matches!(
            Stored::read(br#"{"a":"0","a":"1","b":"2"}"#),
            Stored::Rewritten { .. }
        ));
        assert_eq!(
            Stored::read(b"{not json"),
            Stored::NotJson {
                digest: Sha256::of(b"{not json")
            }
        );
    }
}
