//! The values audit records are made of, each checked when it is made.
//!
//! In: strings and bytes from the job. Out: small types that can only hold
//! what their name says: a SHA-256, a FHIR type name, a table name, a SMART
//! scope, a URL without credentials, query or fragment. No type here takes
//! free text, which is how no event can carry a token, key or secret: the
//! builders accept nothing else. An [`Identity`] (client id, token `sub`,
//! OS user) is the one open-ended value; it refuses whitespace and the
//! shapes of tokens and keys (JWTs, PEM blocks, JSON).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use super::error::InputError;

/// A SHA-256 digest; shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// A digest computed elsewhere (a hasher's `finalize()`).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits (either case), as the ledger records them.
    pub fn from_hex(hex_digits: &str) -> Result<Self, InputError> {
        let mut out = [0u8; 32];
        if hex_digits.len() != 64 {
            return Err(InputError::new("sha256", "not 64 hex digits", hex_digits));
        }
        hex::decode_to_slice(hex_digits, &mut out)
            .map_err(|_| InputError::new("sha256", "not 64 hex digits", hex_digits))?;
        Ok(Self(out))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Checks every byte of `value` against `allowed`, and its length.
fn check(
    field: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(usize, u8) -> bool,
) -> Result<(), InputError> {
    if value.is_empty() || value.len() > max {
        return Err(InputError::new(field, "empty or too long", value));
    }
    if !value.bytes().enumerate().all(|(i, b)| allowed(i, b)) {
        return Err(InputError::new(field, "has a character it may not", value));
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The checked text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// A FHIR resource type name (`Patient`, `MedicationRequest`).
    ResourceType
);

impl ResourceType {
    pub fn new(name: &str) -> Result<Self, InputError> {
        check("resource type", name, 64, |i, b| {
            if i == 0 {
                b.is_ascii_uppercase()
            } else {
                b.is_ascii_alphabetic()
            }
        })?;
        Ok(Self(name.to_owned()))
    }
}

text_type!(
    /// A FHIR id (`[A-Za-z0-9.-]{1,64}`): a resource id, a version id, a
    /// Group id.
    ResourceId
);

impl ResourceId {
    pub fn new(id: &str) -> Result<Self, InputError> {
        check("resource id", id, 64, |_, b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
        })?;
        Ok(Self(id.to_owned()))
    }
}

text_type!(
    /// A job id, with the characters of a FHIR id (fhirlake's job ids are
    /// `<UTC time>-<8 hex>`, optionally prefixed `export-`).
    JobId
);

impl JobId {
    pub fn new(id: &str) -> Result<Self, InputError> {
        check("job id", id, 64, |_, b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
        })?;
        Ok(Self(id.to_owned()))
    }
}

text_type!(
    /// A Delta table of the lake, by its folder name (`patient`,
    /// `observation_category`, `_quarantine`).
    TableName
);

impl TableName {
    pub fn new(name: &str) -> Result<Self, InputError> {
        let body = name.strip_prefix('_').unwrap_or(name);
        check("table name", body, 63, |i, b| {
            if i == 0 {
                b.is_ascii_lowercase()
            } else {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
            }
        })
        .map_err(|e| InputError {
            len: name.len(),
            ..e
        })?;
        Ok(Self(name.to_owned()))
    }
}

text_type!(
    /// An HL7 v2 message type as in MSH-9: `ADT^A01`, `ORU^R01^ORU_R01`.
    MessageType
);

impl MessageType {
    pub fn new(code: &str) -> Result<Self, InputError> {
        let parts: Vec<&str> = code.split('^').collect();
        let upper = |s: &str, min: usize, max: usize, underscore: bool| {
            (min..=max).contains(&s.len())
                && s.bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || (underscore && b == b'_')
                })
        };
        let ok = match parts.as_slice() {
            [m] => upper(m, 3, 3, false),
            [m, e] => upper(m, 3, 3, false) && upper(e, 3, 3, false),
            [m, e, s] => upper(m, 3, 3, false) && upper(e, 3, 3, false) && upper(s, 3, 7, true),
            _ => false,
        };
        if !ok {
            return Err(InputError::new(
                "HL7 v2 message type",
                "not MSG^EVT or MSG^EVT^STRUCTURE",
                code,
            ));
        }
        Ok(Self(code.to_owned()))
    }
}

/// A reason code of fhirlake's own (`not_utf8`, `invalid_id`): a compiled-in
/// string, so no runtime text can become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(&'static str);

impl Code {
    pub fn new(code: &'static str) -> Result<Self, InputError> {
        check("reason code", code, 40, |_, b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
        })?;
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

text_type!(
    /// Who someone is to a server or this machine: an OAuth `client_id`, a
    /// token's `sub`, an OS user name. 1 to 255 bytes without whitespace or
    /// control characters, and never shaped like a token or a key (a JWT, a
    /// PEM block, a JSON object), so a secret handed over by mistake is
    /// refused rather than recorded.
    Identity
);

impl Identity {
    pub fn new(id: &str) -> Result<Self, InputError> {
        const FIELD: &str = "identity";
        if id.is_empty() || id.len() > 255 {
            return Err(InputError::new(FIELD, "empty or longer than 255 bytes", id));
        }
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InputError::new(
                FIELD,
                "has whitespace or a control character",
                id,
            ));
        }
        // A JWS/JWE starts with the base64url of `{"`.
        if id.starts_with("eyJ") && id.contains('.') {
            return Err(InputError::new(FIELD, "is shaped like a JWT (a token)", id));
        }
        if id.contains("-----") {
            return Err(InputError::new(FIELD, "is shaped like a PEM key", id));
        }
        if id.starts_with('{') || id.starts_with('[') {
            return Err(InputError::new(
                FIELD,
                "is JSON (a key or a token response?)",
                id,
            ));
        }
        Ok(Self(id.to_owned()))
    }
}

text_type!(
    /// A SMART on FHIR scope as a token response grants it: `system/*.read`,
    /// `patient/Observation.rs?category=laboratory`, `launch/patient`,
    /// `openid`, `fhirUser`, `offline_access`, ...
    Scope
);

const PLAIN_SCOPES: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
];

impl Scope {
    pub fn new(scope: &str) -> Result<Self, InputError> {
        if PLAIN_SCOPES.contains(&scope) || Self::is_resource_scope(scope) {
            return Ok(Self(scope.to_owned()));
        }
        Err(InputError::new(
            "scope",
            "not a SMART scope (context/Type.permissions)",
            scope,
        ))
    }

    /// `(patient|user|system)/(*|Type).(*|read|write|c?r?u?d?s?)(?query)?`
    fn is_resource_scope(scope: &str) -> bool {
        let (scope, query) = match scope.split_once('?') {
            Some((s, q)) => (s, Some(q)),
            None => (scope, None),
        };
        let Some((context, rest)) = scope.split_once('/') else {
            return false;
        };
        let Some((kind, permissions)) = rest.split_once('.') else {
            return false;
        };
        let context_ok = matches!(context, "patient" | "user" | "system");
        let kind_ok = kind == "*" || ResourceType::new(kind).is_ok();
        let permissions_ok = matches!(permissions, "*" | "read" | "write")
            || (!permissions.is_empty() && is_ordered_subset(permissions, "cruds"));
        let query_ok = query.is_none_or(|q| {
            !q.is_empty()
                && q.len() <= 256
                && q.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:|/%=&".contains(&b))
        });
        context_ok && kind_ok && permissions_ok && query_ok
    }
}

/// Whether `s` is some of the letters of `letters`, each at most once, in order.
fn is_ordered_subset(s: &str, letters: &str) -> bool {
    let mut rest = letters.bytes();
    s.bytes().all(|b| rest.any(|l| l == b))
}

text_type!(
    /// Where something is: a path, or a URL with its user, password, query
    /// and fragment removed (a pre-signed download URL carries its
    /// credentials in the query).
    Location
);

impl Location {
    pub fn new(location: &str) -> Result<Self, InputError> {
        if location.is_empty() || location.len() > 2048 {
            return Err(InputError::new("location", "empty or too long", location));
        }
        if location.chars().any(char::is_control) {
            return Err(InputError::new(
                "location",
                "has a control character",
                location,
            ));
        }
        // One-letter schemes are Windows drive letters, not URLs.
        if let Ok(mut url) = url::Url::parse(location)
            && url.scheme().len() > 1
        {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            return Ok(Self(url.to_string()));
        }
        Ok(Self(location.to_owned()))
    }
}

/// The policy a job ran under: the SHA-256 of the policy in force, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyVersion {
    None,
    Sha256(Sha256),
}

impl PolicyVersion {
    /// Reads the ledger's form: `none`, or 64 hex digits.
    pub fn parse(version: &str) -> Result<Self, InputError> {
        if version == "none" {
            return Ok(Self::None);
        }
        Sha256::from_hex(version)
            .map(Self::Sha256)
            .map_err(|e| InputError {
                field: "policy version",
                reason: "neither `none` nor a SHA-256",
                ..e
            })
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Sha256(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_round_trips_through_hex_and_serde() {
        let digest = Sha256::of(b"abc");
        let text = digest.to_string();
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256::from_hex(&text.to_uppercase()).unwrap(), digest);
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), digest);
        assert!(Sha256::from_hex("abc").is_err());
        assert!(Sha256::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(ResourceType::new("MedicationRequest").is_ok());
        for bad in ["", "patient", "Pa tient", "Patient1", &"A".repeat(65)] {
            assert!(ResourceType::new(bad).is_err(), "{bad}");
        }
        assert!(ResourceId::new("abc-1.2").is_ok());
        assert!(ResourceId::new("../etc").is_err());
        assert!(JobId::new("export-20260101T000000.000Z-1a2b3c4d").is_ok());
        assert!(JobId::new("a/b").is_err());
        for good in ["patient", "observation_category", "_quarantine", "_audit"] {
            assert!(TableName::new(good).is_ok(), "{good}");
        }
        for bad in ["Patient", "1x", "__x", "a-b", "", "_"] {
            assert!(TableName::new(bad).is_err(), "{bad}");
        }
        for good in ["ADT", "ADT^A01", "ORU^R01^ORU_R01"] {
            assert!(MessageType::new(good).is_ok(), "{good}");
        }
        for bad in ["adt^a01", "ADT^A01^X", "ADT^A01^ORU_R01^X", "AD"] {
            assert!(MessageType::new(bad).is_err(), "{bad}");
        }
        assert!(Code::new("not_utf8").is_ok());
        assert!(Code::new("Not UTF-8").is_err());
    }

    #[test]
    fn identities_refuse_tokens_and_keys_and_never_repeat_them() {
        for good in [
            "fhirlake-prod",
            "0oa1b2c3d4e5f6g7h8i9",
            "6f1c7d2e-8a9b-4c3d-9e8f-0a1b2c3d4e5f",
            "https://issuer.example.org/users/42",
            "jdoe@example.org",
        ] {
            assert!(Identity::new(good).is_ok(), "{good}");
        }
        let jwt = "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        for bad in [
            jwt,
            "-----BEGIN PRIVATE KEY-----MIIE",
            "{\"kty\":\"RSA\"}",
            "Bearer abc",
            "",
            &"x".repeat(256),
        ] {
            let err = Identity::new(bad).unwrap_err();
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn scopes_follow_the_smart_grammar() {
        for good in [
            "system/*.read",
            "system/Patient.rs",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "user/*.*",
            "system/*.cruds",
            "launch/patient",
            "openid",
            "offline_access",
        ] {
            assert!(Scope::new(good).is_ok(), "{good}");
        }
        for bad in [
            "system/*.sr",
            "system/*.rr",
            "system/*.",
            "admin/*.read",
            "system/patient.read",
            "system/*.read?",
            "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.c2ln",
            "anything",
        ] {
            assert!(Scope::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_lose_credentials_query_and_fragment() {
        let signed = "https://user:hunter2@bucket.s3.example.com/out/Patient.ndjson?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA#frag";
        assert_eq!(
            Location::new(signed).unwrap().as_str(),
            "https://bucket.s3.example.com/out/Patient.ndjson"
        );
        assert_eq!(
            Location::new("s3://lake/fhir?versionId=3")
                .unwrap()
                .as_str(),
            "s3://lake/fhir"
        );
        assert_eq!(
            Location::new("_raw/job/output/Patient.000.ndjson")
                .unwrap()
                .as_str(),
            "_raw/job/output/Patient.000.ndjson"
        );
        assert_eq!(
            Location::new("C:\\exports\\Patient.ndjson")
                .unwrap()
                .as_str(),
            "C:\\exports\\Patient.ndjson"
        );
        assert!(Location::new("a\nb").is_err());
    }

    #[test]
    fn policy_versions_read_the_ledger_form() {
        assert_eq!(PolicyVersion::parse("none").unwrap(), PolicyVersion::None);
        let digest = Sha256::of(b"policy");
        let parsed = PolicyVersion::parse(&digest.to_string()).unwrap();
        assert_eq!(parsed, PolicyVersion::Sha256(digest));
        assert_eq!(parsed.to_string(), digest.to_string());
        assert_eq!(
            PolicyVersion::parse("v2").unwrap_err().field,
            "policy version"
        );
    }
}
