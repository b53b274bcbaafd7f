//! Security labels: the codes a policy file names, and the labels a
//! resource carries.
//!
//! In: a label as a policy file writes it (`R`, `42CFRPart2`, or
//! `system|code`), and a parsed resource. Out: [`Label`]s with canonical
//! systems, and the resource's labels ([`ResourceLabels`], borrowed from the
//! tree): `meta.security`, plus the DS4P inline labels
//! (`extension-inline-sec-label`) anywhere in the resource when
//! `meta.security` holds `PROCESSINLINELABEL`. A label the policy cannot read
//! (not a Coding, no system, no code) is an [`Unreadable`]: the rule fails
//! closed. Label subsumption (SUD ⊃ OPIOIDUD) is not inferred: a policy
//! lists every code it means.

use std::fmt;

use smallvec::SmallVec;

use super::tree::{self, Unreadable, member};
use crate::view::Json;

pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
pub const INLINE_LABEL: &str =
    "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label";

/// The THO canonical URL of a label system written as an OID or a pre-THO
/// (STU3) URL; any other system as given.
pub fn canonical_system(system: &str) -> &str {
    match system {
        "urn:oid:2.16.840.1.113883.5.25" | "http://hl7.org/fhir/v3/Confidentiality" => {
            CONFIDENTIALITY
        }
        "urn:oid:2.16.840.1.113883.5.4" | "http://hl7.org/fhir/v3/ActCode" => ACT_CODE,
        "urn:oid:2.16.840.1.113883.5.1063" | "http://hl7.org/fhir/v3/ObservationValue" => {
            OBSERVATION_VALUE
        }
        other => other,
    }
}

/// v3-ActCode labels a policy may write without their system: privacy laws,
/// sensitivity, obligations and refrains (HL7 Terminology 7.0.1).
const ACT_CODES: &[&str] = &[
    // _ActUSPrivacyLaw
    "42CFRPart2",
    "CommonRule",
    "HIPAAConsent",
    "HIPAANOPP",
    "HIPAAPsyNotes",
    "HIPAASelfPay",
    "Title38Section7332",
    // _ActInformationSensitivityPolicy and SPI
    "ETH",
    "GDIS",
    "HIV",
    "MST",
    "SCA",
    "SDV",
    "SEX",
    "SPI",
    "STD",
    "SICKLE",
    "TBOO",
    "BH",
    "COGN",
    "DVD",
    "EMOTDIS",
    "MH",
    "PSY",
    "PSYTHPN",
    "SUD",
    "ETHUD",
    "OPIOIDUD",
    "DEMO",
    "LIVARG",
    // obligations
    "CPLYCD",
    "CPLYJPP",
    "CPLYOPP",
    "CPLYOSP",
    "CPLYPOL",
    "ANONY",
    "AOD",
    "AUDIT",
    "AUDTR",
    "DECLASSIFYLABEL",
    "DEID",
    "DELAU",
    "DOWNGRDLABEL",
    "DRIVLABEL",
    "ENCRYPT",
    "ENCRYPTR",
    "ENCRYPTT",
    "ENCRYPTU",
    "HUAPRV",
    "LABEL",
    "MASK",
    "MINEC",
    "PERSISTLABEL",
    "PRIVMARK",
    "PROCESSINLINELABEL",
    "PSEUD",
    "REDACT",
    "UPGRDLABEL",
    // refrains
    "NOAUTH",
    "NOCOLLECT",
    "NODSCLCD",
    "NODSCLCDS",
    "NOINTEGRATE",
    "NOLIST",
    "NOMOU",
    "NOORGPOL",
    "NOPAT",
    "NOPERSISTP",
    "NORDSCLCD",
    "NORDSCLCDS",
    "NORDSCLW",
    "NORDSLCD",
    "NORELINK",
    "NOREUSE",
    "NOVIP",
    "ORCON",
];

/// v3-ObservationValue labels a policy may write without their system.
const OBSERVATION_VALUES: &[&str] = &[
    "REDACTED",
    "SUBSETTED",
    "MASKED",
    "ABSTRED",
    "AGGRED",
    "ANONYED",
    "MAPPED",
    "PSEUDED",
    "SYNTAC",
    "TRSLT",
    "VERSIONED",
    "CRYTOHASH",
    "DIGSIG",
    "PATRPT",
    "UNCERTREL",
];

/// One security label (canonical system, code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub system: Box<str>,
    pub code: Box<str>,
}

impl Label {
    pub fn new(system: &str, code: &str) -> Self {
        Label {
            system: canonical_system(system).into(),
            code: code.into(),
        }
    }

    /// `system|code`, or a bare code of v3-Confidentiality (`U L M N R V`),
    /// v3-ActCode (`42CFRPart2`, `ETH`, `NORDSCLCD`, ...) or
    /// v3-ObservationValue (`REDACTED`, ...).
    pub fn parse(text: &str) -> Result<Label, String> {
        if let Some((system, code)) = text.split_once('|') {
            if system.is_empty() || code.is_empty() || code.contains('|') {
                return Err(format!("`{text}` is not system|code"));
            }
            return Ok(Label::new(system, code));
        }
        let system = if matches!(text, "U" | "L" | "M" | "N" | "R" | "V") {
            CONFIDENTIALITY
        } else if ACT_CODES.contains(&text) {
            ACT_CODE
        } else if OBSERVATION_VALUES.contains(&text) {
            OBSERVATION_VALUE
        } else {
            return Err(format!(
                "`{text}` is not a known v3-Confidentiality, v3-ActCode or v3-ObservationValue \
                 code; write it as system|code"
            ));
        };
        Ok(Label::new(system, text))
    }

    pub fn is(&self, system: &str, code: &str) -> bool {
        &*self.code == code && &*self.system == system
    }

    /// Rank of a confidentiality code (U < L < M < N < R < V); `None` for
    /// other labels.
    pub fn confidentiality(&self) -> Option<u8> {
        (&*self.system == CONFIDENTIALITY)
            .then(|| confidentiality_rank(&self.code))
            .flatten()
    }

    /// The `meta.security` Coding of this label, as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::json!({"system": &*self.system, "code": &*self.code}).to_string()
    }
}

pub fn confidentiality_rank(code: &str) -> Option<u8> {
    ["U", "L", "M", "N", "R", "V"]
        .iter()
        .position(|c| *c == code)
        .map(|p| p as u8)
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.system, self.code)
    }
}

/// A label found on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// Canonical system.
    pub system: &'a str,
    pub code: &'a str,
    /// Inline (on an element), not in `meta.security`.
    pub inline: bool,
}

/// The labels of one resource. Few: kept inline, no allocation.
#[derive(Debug, Clone, Default)]
pub struct ResourceLabels<'a> {
    pub seen: SmallVec<[Seen<'a>; 6]>,
}

impl<'a> ResourceLabels<'a> {
    /// The first label that is one of `wanted`.
    pub fn find(&self, wanted: &[Label]) -> Option<Seen<'a>> {
        self.seen
            .iter()
            .find(|s| wanted.iter().any(|w| w.is(s.system, s.code)))
            .copied()
    }

    pub fn has(&self, label: &Label) -> bool {
        self.seen.iter().any(|s| label.is(s.system, s.code))
    }
}

fn coding<'a>(value: &Json<'a>, what: &'static str) -> Result<(&'a str, &'a str), Unreadable> {
    let Json::Object(_) = value else {
        return Err(Unreadable::new(what));
    };
    let system = tree::string_member(value, "system", what)?;
    let code = tree::string_member(value, "code", what)?;
    match (system, code) {
        (Some(system), Some(code)) if !system.is_empty() && !code.is_empty() => {
            Ok((canonical_system(system), code))
        }
        _ => Err(Unreadable::new(what)),
    }
}

/// Reads `meta.security` (and inline labels when asked for by
/// `PROCESSINLINELABEL`).
pub fn read<'a>(resource: &Json<'a>) -> Result<ResourceLabels<'a>, Unreadable> {
    let mut labels = ResourceLabels::default();
    let Some(meta) = member(resource, "meta") else {
        return Ok(labels);
    };
    let Json::Object(_) = meta else {
        return Err(Unreadable::new("meta is not an object"));
    };
    let Some(security) = member(meta, "security") else {
        return Ok(labels);
    };
    let Json::Array(codings) = security else {
        return Err(Unreadable::new("meta.security is not an array"));
    };
    let mut inline = false;
    for item in *codings {
        let (system, code) = coding(
            item,
            "a meta.security label is not a Coding with a system and a code",
        )?;
        inline |= system == ACT_CODE && code == "PROCESSINLINELABEL";
        labels.seen.push(Seen {
            system,
            code,
            inline: false,
        });
    }
    if inline {
        read_inline(resource, &mut labels)?;
    }
    Ok(labels)
}

fn read_inline<'a>(value: &Json<'a>, labels: &mut ResourceLabels<'a>) -> Result<(), Unreadable> {
    match *value {
        Json::Array(items) => items.iter().try_for_each(|item| read_inline(item, labels)),
        Json::Object(members) => {
            for (key, child) in members {
                if *key == "extension"
                    && let Json::Array(extensions) = child
                {
                    for extension in *extensions {
                        if member(extension, "url").and_then(tree::string) == Some(INLINE_LABEL) {
                            let value = member(extension, "valueCoding").ok_or_else(|| {
                                Unreadable::new("an inline security label has no valueCoding")
                            })?;
                            let (system, code) = coding(
                                value,
                                "an inline security label is not a Coding with a system and a code",
                            )?;
                            labels.seen.push(Seen {
                                system,
                                code,
                                inline: true,
                            });
                        }
                    }
                }
                read_inline(child, labels)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[test]
    fn policy_labels_resolve_bare_codes_and_aliases() {
        assert_eq!(Label::parse("R").unwrap(), Label::new(CONFIDENTIALITY, "R"));
        assert_eq!(
            Label::parse("42CFRPart2").unwrap().system.as_ref(),
            ACT_CODE
        );
        assert_eq!(Label::parse("NORDSLCD").unwrap().system.as_ref(), ACT_CODE);
        assert_eq!(
            Label::parse("REDACTED").unwrap().system.as_ref(),
            OBSERVATION_VALUE
        );
        assert_eq!(
            Label::parse("urn:oid:2.16.840.1.113883.5.25|V").unwrap(),
            Label::new(CONFIDENTIALITY, "V")
        );
        assert!(Label::parse("RESTRICTED").is_err());
        assert!(Label::parse("a|").is_err());
        assert_eq!(Label::parse("N").unwrap().confidentiality(), Some(3));
        assert_eq!(Label::parse("ETH").unwrap().confidentiality(), None);
    }

    #[test]
    fn reads_meta_security_and_inline_labels_only_when_told_to() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"Patient","id":"p","meta":{"security":[
            {"system":"http://hl7.org/fhir/v3/Confidentiality","code":"N"},
            {"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PROCESSINLINELABEL"}]},
            "identifier":[{"value":"1","extension":[{"url":"http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label",
            "valueCoding":{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}}]}]}"#;
        let labels = read(&Json::parse(text, &arena).unwrap()).unwrap();
        assert_eq!(labels.seen.len(), 3);
        assert_eq!(labels.seen[0].system, CONFIDENTIALITY);
        assert!(labels.seen[2].inline && labels.seen[2].code == "R");
        // Without PROCESSINLINELABEL inline labels are not looked for.
        let plain = text.replace("PROCESSINLINELABEL", "NORDSCLCD");
        assert_eq!(
            read(&Json::parse(&plain, &arena).unwrap())
                .unwrap()
                .seen
                .len(),
            2
        );
        assert!(
            read(&Json::parse(r#"{"id":"x"}"#, &arena).unwrap())
                .unwrap()
                .seen
                .is_empty()
        );
    }

    #[test]
    fn unreadable_labels_are_errors() {
        let arena = Bump::new();
        for bad in [
            r#"{"meta":[]}"#,
            r#"{"meta":{"security":{"code":"R"}}}"#,
            r#"{"meta":{"security":[{"code":"R"}]}}"#,
            r#"{"meta":{"security":[{"system":"s","code":5}]}}"#,
            r#"{"meta":{"security":["R"]}}"#,
            r#"{"meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PROCESSINLINELABEL"}]},
               "x":{"extension":[{"url":"http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label","valueString":"R"}]}}"#,
        ] {
            assert!(read(&Json::parse(bad, &arena).unwrap()).is_err(), "{bad}");
        }
    }
}
