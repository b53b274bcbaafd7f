//! Code system URIs: which are known, which are misspellings of a known one
//! (and the fix), and which are unknown.
//!
//! In: `Coding.system`. Out: a [`SystemVerdict`]. The table holds the
//! canonical URIs of the FHIR terminology registry for the systems clinical
//! data uses, with their OIDs and the names HL7 v2 and spreadsheets use
//! (`LN`, `SCT`); families of URIs are known by prefix (every
//! `http://terminology.hl7.org/CodeSystem/…`). A system that is none of
//! these is compared, after normalising scheme, host case, `www.` and a
//! trailing slash, and at one edit's distance, with the canonical URIs.
//!
//! An exact hit is one hash lookup and allocates nothing; only a system that
//! misses pays for the comparison (callers cache verdicts per system).

use std::collections::HashMap;
use std::fmt;

use super::checks::CodeRules;
use super::codeset::FxHashMap;

/// A code system of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownSystem {
    pub uri: &'static str,
    pub name: &'static str,
    pub rules: CodeRules,
    pub oids: &'static [&'static str],
    /// Names used instead of the URI (compared case-insensitively).
    pub names: &'static [&'static str],
}

pub const LOINC: &str = "http://loinc.org";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const UCUM: &str = "http://unitsofmeasure.org";

const fn sys(
    uri: &'static str,
    name: &'static str,
    rules: CodeRules,
    oids: &'static [&'static str],
    names: &'static [&'static str],
) -> KnownSystem {
    KnownSystem {
        uri,
        name,
        rules,
        oids,
        names,
    }
}

use CodeRules as R;

/// The table. OIDs from the FHIR terminology registry / HL7 OID registry.
pub const KNOWN: &[KnownSystem] = &[
    sys(
        LOINC,
        "LOINC",
        R::Loinc,
        &["2.16.840.1.113883.6.1"],
        &["LN", "LOINC"],
    ),
    sys(
        SNOMED,
        "SNOMED CT",
        R::Snomed,
        &["2.16.840.1.113883.6.96"],
        &[
            "SCT",
            "SNOMED",
            "SNOMEDCT",
            "SNOMED-CT",
            "SNOMED CT",
            "SNOMEDCT_US",
        ],
    ),
    sys(
        RXNORM,
        "RxNorm",
        R::RxNorm,
        &["2.16.840.1.113883.6.88"],
        &["RXNORM", "RXN"],
    ),
    sys(
        ICD10CM,
        "ICD-10-CM",
        R::Icd10Cm,
        &["2.16.840.1.113883.6.90"],
        &["ICD-10-CM", "ICD10CM", "I10C", "ICD10-CM"],
    ),
    sys(UCUM, "UCUM", R::Ucum, &["2.16.840.1.113883.6.8"], &["UCUM"]),
    sys(
        "http://hl7.org/fhir/sid/icd-10",
        "ICD-10",
        R::None,
        &["2.16.840.1.113883.6.3"],
        &["ICD-10", "ICD10", "I10"],
    ),
    sys(
        "http://hl7.org/fhir/sid/icd-9-cm",
        "ICD-9-CM",
        R::None,
        &[
            "2.16.840.1.113883.6.103",
            "2.16.840.1.113883.6.104",
            "2.16.840.1.113883.6.2",
        ],
        &["ICD-9-CM", "ICD9CM", "I9C", "I9CM"],
    ),
    sys(
        "http://www.cms.gov/Medicare/Coding/ICD10",
        "ICD-10-PCS",
        R::None,
        &["2.16.840.1.113883.6.4"],
        &[
            "ICD-10-PCS",
            "ICD10PCS",
            "I10P",
            "http://hl7.org/fhir/sid/icd-10-pcs",
        ],
    ),
    sys(
        "http://www.ama-assn.org/go/cpt",
        "CPT",
        R::None,
        &["2.16.840.1.113883.6.12"],
        &["CPT", "CPT4", "CPT-4", "C4"],
    ),
    sys(
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "HCPCS Level II",
        R::None,
        &["2.16.840.1.113883.6.285", "2.16.840.1.113883.6.14"],
        &["HCPCS"],
    ),
    sys(
        "http://www.ada.org/cdt",
        "CDT",
        R::None,
        &["2.16.840.1.113883.6.13"],
        &["CDT"],
    ),
    sys(
        "http://hl7.org/fhir/sid/cvx",
        "CVX",
        R::None,
        &["2.16.840.1.113883.12.292"],
        &["CVX"],
    ),
    sys(
        "http://hl7.org/fhir/sid/ndc",
        "NDC",
        R::None,
        &["2.16.840.1.113883.6.69"],
        &["NDC"],
    ),
    sys(
        "http://nucc.org/provider-taxonomy",
        "NUCC Provider Taxonomy",
        R::None,
        &["2.16.840.1.113883.6.101"],
        &["NUCC"],
    ),
    sys(
        "urn:oid:2.16.840.1.113883.6.238",
        "CDC Race and Ethnicity",
        R::None,
        &[],
        &["CDCREC"],
    ),
    sys("urn:ietf:bcp:47", "BCP 47 language tags", R::None, &[], &[]),
    sys("urn:ietf:bcp:13", "MIME types", R::None, &[], &[]),
    sys(
        "urn:iso:std:iso:3166",
        "ISO 3166 countries",
        R::None,
        &["1.0.3166.1.2.2"],
        &[],
    ),
    sys(
        "urn:iso:std:iso:4217",
        "ISO 4217 currencies",
        R::None,
        &[],
        &[],
    ),
    sys(
        "urn:iso:std:iso:11073:10101",
        "ISO/IEEE 11073-10101",
        R::None,
        &[],
        &[],
    ),
    sys(
        "http://www.nubc.org/patient-discharge",
        "NUBC discharge status",
        R::None,
        &[],
        &[],
    ),
    sys(
        "https://www.nubc.org/CodeSystem/PatDischargeStatus",
        "NUBC discharge status (THO 5+)",
        R::None,
        &[],
        &[],
    ),
    sys(
        "https://www.usps.com/",
        "USPS state codes",
        R::None,
        &[],
        &[],
    ),
    sys(
        "http://www.whocc.no/atc",
        "ATC",
        R::None,
        &["2.16.840.1.113883.6.73"],
        &["ATC"],
    ),
    sys(
        "http://fdasis.nlm.nih.gov",
        "UNII",
        R::None,
        &["2.16.840.1.113883.4.9"],
        &["UNII"],
    ),
    sys(
        "http://dicom.nema.org/resources/ontology/DCM",
        "DICOM",
        R::None,
        &["1.2.840.10008.2.16.4"],
        &["DCM"],
    ),
    sys("http://www.genenames.org", "HGNC", R::None, &[], &["HGNC"]),
    sys(
        "http://ncimeta.nci.nih.gov",
        "NCI Metathesaurus",
        R::None,
        &[],
        &[],
    ),
    sys(
        "http://ncithesaurus-stage.nci.nih.gov",
        "NCI Thesaurus",
        R::None,
        &[],
        &[],
    ),
    sys(
        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
        "IHE format codes",
        R::None,
        &[],
        &[],
    ),
    sys(
        "https://www.cdc.gov/nhsn/cdaportal/terminology/codesystem/hsloc.html",
        "NHSN locations",
        R::None,
        &[],
        &[],
    ),
    sys("urn:ietf:rfc:3986", "URIs", R::None, &[], &[]),
];

/// URI families: any system under the prefix is known (without code rules).
const FAMILIES: &[&str] = &[
    "http://terminology.hl7.org/CodeSystem/",
    "http://hl7.org/fhir/",
    "https://bluebutton.cms.gov/resources/",
];

/// Pre-R4 FHIR URIs of HL7 v2 tables and v3 code systems, and their R4 home.
const LEGACY: &[(&str, &str)] = &[
    (
        "http://hl7.org/fhir/v2/",
        "http://terminology.hl7.org/CodeSystem/v2-",
    ),
    (
        "http://hl7.org/fhir/v3/",
        "http://terminology.hl7.org/CodeSystem/v3-",
    ),
];

/// What is off about a misspelt system (several may hold at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spelling(u16);

impl Spelling {
    pub const SCHEME: Self = Self(1);
    pub const TRAILING_SLASH: Self = Self(2);
    pub const WWW: Self = Self(4);
    pub const CASE: Self = Self(8);
    pub const WHITESPACE: Self = Self(16);
    pub const OID: Self = Self(32);
    pub const NAME: Self = Self(64);
    pub const EDITION_URI: Self = Self(128);
    pub const LEGACY_URI: Self = Self(256);
    pub const TYPO: Self = Self(512);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    fn with(self, other: Self, on: bool) -> Self {
        if on { Self(self.0 | other.0) } else { self }
    }
}

impl fmt::Display for Spelling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WORDS: [(Spelling, &str); 10] = [
            (Spelling::SCHEME, "wrong scheme (http vs https)"),
            (Spelling::TRAILING_SLASH, "trailing slash"),
            (Spelling::WWW, "`www.` added or dropped"),
            (Spelling::CASE, "wrong case"),
            (Spelling::WHITESPACE, "surrounding whitespace"),
            (Spelling::OID, "an OID where FHIR uses the URI"),
            (Spelling::NAME, "a name where FHIR uses the URI"),
            (
                Spelling::EDITION_URI,
                "an edition URI (the edition belongs in Coding.version)",
            ),
            (Spelling::LEGACY_URI, "a pre-R4 URI"),
            (Spelling::TYPO, "a typing slip"),
        ];
        let mut first = true;
        for (flag, word) in WORDS {
            if self.contains(flag) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The URI to use instead of a misspelt one: `prefix` followed by the found
/// system's bytes `keep` (empty for a table entry), so a verdict needs no
/// allocation and can be cached per system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fix {
    pub prefix: &'static str,
    pub keep: (usize, usize),
}

impl Fix {
    fn to(uri: &'static str) -> Self {
        Self {
            prefix: uri,
            keep: (0, 0),
        }
    }

    /// The corrected URI for the system `found` this fix was made for.
    pub fn apply<'a>(&self, found: &'a str) -> FixedUri<'a> {
        FixedUri {
            prefix: self.prefix,
            tail: found.get(self.keep.0..self.keep.1).unwrap_or(""),
        }
    }
}

/// A corrected URI, displayed without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedUri<'a> {
    prefix: &'static str,
    tail: &'a str,
}

impl fmt::Display for FixedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.tail)
    }
}

/// What a system URI is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemVerdict {
    /// In the table, a family, or known to this job (value sets, maps).
    Known(CodeRules),
    /// A misspelling of a known system; its codes get the fixed system's rules.
    Misspelt {
        fix: Fix,
        spelling: Spelling,
        rules: CodeRules,
    },
    Unknown,
}

impl SystemVerdict {
    /// The code rules that apply (a misspelt system's codes are checked as
    /// the system it means).
    pub fn rules(&self) -> CodeRules {
        match self {
            Self::Known(rules) | Self::Misspelt { rules, .. } => *rules,
            Self::Unknown => CodeRules::None,
        }
    }
}

/// The table compiled once per job, plus the systems the job knows from its
/// value sets and concept maps.
#[derive(Debug, Clone)]
pub struct SystemTable {
    exact: FxHashMap<Box<str>, CodeRules>,
    /// Normalised canonical form → table entry.
    normalised: HashMap<String, &'static KnownSystem>,
    /// OID, and lower-case name → table entry.
    aliases: HashMap<String, (&'static KnownSystem, Spelling)>,
}

impl Default for SystemTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemTable {
    pub fn new() -> Self {
        let mut exact = FxHashMap::default();
        let mut normalised = HashMap::new();
        let mut aliases = HashMap::new();
        for known in KNOWN {
            exact.insert(known.uri.into(), known.rules);
            normalised.insert(normalise(known.uri), known);
            for oid in known.oids {
                for form in [
                    oid.to_string(),
                    format!("urn:oid:{oid}"),
                    format!("oid:{oid}"),
                ] {
                    aliases.insert(form, (known, Spelling::OID));
                }
            }
            for name in known.names {
                aliases.insert(name.to_ascii_lowercase(), (known, Spelling::NAME));
            }
        }
        Self {
            exact,
            normalised,
            aliases,
        }
    }

    /// Makes `uri` known, with no code rules unless it is already in the
    /// table (a system named by a loaded value set or concept map).
    pub fn add_known(&mut self, uri: &str) {
        self.exact.entry(uri.into()).or_insert(CodeRules::None);
    }

    /// The verdict on `system` when it is known exactly: one lookup, no
    /// allocation. `None` means [`Self::classify`] must decide.
    pub fn exact(&self, system: &str) -> Option<CodeRules> {
        self.exact.get(system).copied()
    }

    /// The full verdict (allocates for systems that are not exact hits).
    pub fn classify(&self, system: &str) -> SystemVerdict {
        if let Some(rules) = self.exact(system) {
            return SystemVerdict::Known(rules);
        }
        if let Some(v) = self.table_misspelling(system) {
            return v;
        }
        if let Some(v) = family_misspelling(system) {
            return v;
        }
        if in_family(system) {
            return SystemVerdict::Known(CodeRules::None);
        }
        self.typo(system).unwrap_or(SystemVerdict::Unknown)
    }

    fn table_misspelling(&self, system: &str) -> Option<SystemVerdict> {
        let trimmed = system.trim();
        let whitespace = trimmed.len() != system.len();
        let misspelt = |known: &'static KnownSystem, spelling: Spelling| SystemVerdict::Misspelt {
            fix: Fix::to(known.uri),
            spelling: spelling.with(Spelling::WHITESPACE, whitespace),
            rules: known.rules,
        };
        if let Some(&rules) = self.exact.get(trimmed) {
            return Some(match KNOWN.iter().find(|k| k.uri == trimmed) {
                Some(known) => misspelt(known, Spelling::default()),
                None => SystemVerdict::Misspelt {
                    fix: Fix {
                        prefix: "",
                        keep: offsets(system, trimmed),
                    },
                    spelling: Spelling::WHITESPACE,
                    rules,
                },
            });
        }
        if let Some(&(known, spelling)) = self.aliases.get(&trimmed.to_ascii_lowercase()) {
            return Some(misspelt(known, spelling));
        }
        if let Some(&known) = self.normalised.get(&normalise(trimmed)) {
            return Some(misspelt(known, spelling_of(trimmed, known.uri)));
        }
        if let Some(rest) = trimmed.strip_prefix("http://snomed.info/sct/")
            && rest.bytes().next().is_some_and(|b| b.is_ascii_digit())
        {
            let known = KNOWN.iter().find(|k| k.uri == SNOMED)?;
            return Some(misspelt(known, Spelling::EDITION_URI));
        }
        None
    }

    /// One edit (insert, delete, substitute or swap two neighbours) from a
    /// canonical URI, after normalising: `http://lonic.org`.
    fn typo(&self, system: &str) -> Option<SystemVerdict> {
        let norm = normalise(system.trim());
        if norm.len() < 8 {
            return None;
        }
        let mut found = None;
        for (canonical, known) in &self.normalised {
            if canonical.len().abs_diff(norm.len()) <= 1 && within_one_edit(canonical, &norm) {
                if found.is_some() {
                    return None; // ambiguous: suggest nothing
                }
                found = Some(*known);
            }
        }
        found.map(|known| SystemVerdict::Misspelt {
            fix: Fix::to(known.uri),
            spelling: Spelling::TYPO,
            rules: known.rules,
        })
    }
}

/// Lower case, no scheme, no `www.`, no trailing slash.
fn normalise(uri: &str) -> String {
    let lower = uri.to_ascii_lowercase();
    let s = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let s = s.strip_prefix("www.").unwrap_or(s);
    s.trim_end_matches('/').to_string()
}

fn spelling_of(found: &str, canonical: &str) -> Spelling {
    let scheme = |s: &str| {
        s.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    };
    let www = |s: &str| s.to_ascii_lowercase().contains("://www.");
    let trailing = found.ends_with('/') && !canonical.ends_with('/')
        || !found.ends_with('/') && canonical.ends_with('/');
    let strip = |s: &str| {
        let s = s.trim_end_matches('/');
        let s = s.split_once("://").map_or(s, |(_, rest)| rest);
        s.strip_prefix("www.").unwrap_or(s).to_string()
    };
    Spelling::default()
        .with(Spelling::SCHEME, scheme(found) != scheme(canonical))
        .with(Spelling::WWW, www(found) != www(canonical))
        .with(Spelling::TRAILING_SLASH, trailing)
        .with(Spelling::CASE, strip(found) != strip(canonical))
}

fn in_family(system: &str) -> bool {
    FAMILIES.iter().any(|family| {
        system.strip_prefix(family).is_some_and(|rest| {
            !rest.is_empty()
                && !rest.ends_with('/')
                && !rest.bytes().any(|b| b.is_ascii_whitespace())
                && !LEGACY.iter().any(|(old, _)| system.starts_with(old))
        })
    })
}

/// A family URI with the wrong scheme, case, trailing slash or whitespace,
/// or a pre-R4 v2/v3 URI.
fn family_misspelling(system: &str) -> Option<SystemVerdict> {
    let trimmed = system.trim();
    let (start, end) = offsets(system, trimmed);
    let end = end - (trimmed.len() - trimmed.trim_end_matches('/').len());
    let body = &system[start..end];
    let whitespace = trimmed.len() != system.len();
    let slash = end - start != trimmed.len();
    for (old, new) in LEGACY {
        if let Some(prefix) = body.get(..old.len())
            && prefix.eq_ignore_ascii_case(old)
            && body.len() > old.len()
        {
            return Some(SystemVerdict::Misspelt {
                fix: Fix {
                    prefix: new,
                    keep: (start + old.len(), end),
                },
                spelling: Spelling::LEGACY_URI
                    .with(Spelling::WHITESPACE, whitespace)
                    .with(Spelling::TRAILING_SLASH, slash),
                rules: CodeRules::None,
            });
        }
    }
    for family in FAMILIES {
        let bare = family.split_once("://").map_or(*family, |(_, rest)| rest);
        let (scheme_len, scheme_ok) = match body.get(..8) {
            Some(p) if p.eq_ignore_ascii_case("https://") => (8, family.starts_with("https://")),
            _ => match body.get(..7) {
                Some(p) if p.eq_ignore_ascii_case("http://") => (7, family.starts_with("http://")),
                _ => continue,
            },
        };
        let Some(host_path) = body.get(scheme_len..scheme_len + bare.len()) else {
            continue;
        };
        if !host_path.eq_ignore_ascii_case(bare) || body.len() == scheme_len + bare.len() {
            continue;
        }
        let case = host_path != bare || (scheme_ok && body[..scheme_len] != family[..scheme_len]);
        if scheme_ok && !case && !whitespace && !slash {
            return None; // well-formed: `in_family` decides
        }
        return Some(SystemVerdict::Misspelt {
            fix: Fix {
                prefix: family,
                keep: (start + scheme_len + bare.len(), end),
            },
            spelling: Spelling::default()
                .with(Spelling::SCHEME, !scheme_ok)
                .with(Spelling::CASE, case)
                .with(Spelling::WHITESPACE, whitespace)
                .with(Spelling::TRAILING_SLASH, slash),
            rules: CodeRules::None,
        });
    }
    None
}

/// Byte offsets of `inner` (a subslice) in `outer`.
fn offsets(outer: &str, inner: &str) -> (usize, usize) {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    (start, start + inner.len())
}

/// Optimal-string-alignment distance ≤ 1.
fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    match (a.len(), b.len()) {
        (0, 0) => true,
        (x, y) if x == y => {
            a[1..] == b[1..] || (x >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        (x, y) if x + 1 == y => a == &b[1..],
        (x, y) if y + 1 == x => &a[1..] == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix_of(table: &SystemTable, system: &str) -> (String, Spelling) {
        match table.classify(system) {
            SystemVerdict::Misspelt { fix, spelling, .. } => {
                (fix.apply(system).to_string(), spelling)
            }
            other => panic!("{system}: {other:?}"),
        }
    }

    #[test]
    fn canonical_uris_and_families_are_known() {
        let t = SystemTable::new();
        assert_eq!(t.exact(LOINC), Some(CodeRules::Loinc));
        assert_eq!(t.classify(SNOMED), SystemVerdict::Known(CodeRules::Snomed));
        assert_eq!(
            t.classify("https://www.usps.com/"),
            SystemVerdict::Known(CodeRules::None)
        );
        for family in [
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
            "http://hl7.org/fhir/observation-status",
            "https://bluebutton.cms.gov/resources/codesystem/adjudication",
        ] {
            assert_eq!(t.exact(family), None);
            assert_eq!(
                t.classify(family),
                SystemVerdict::Known(CodeRules::None),
                "{family}"
            );
        }
    }

    #[test]
    fn misspellings_of_table_entries() {
        let t = SystemTable::new();
        let cases = [
            ("http://loinc.org/", LOINC, Spelling::TRAILING_SLASH),
            ("https://loinc.org", LOINC, Spelling::SCHEME),
            ("http://www.loinc.org", LOINC, Spelling::WWW),
            ("HTTP://LOINC.ORG", LOINC, Spelling::CASE),
            (" http://loinc.org", LOINC, Spelling::WHITESPACE),
            ("urn:oid:2.16.840.1.113883.6.1", LOINC, Spelling::OID),
            ("2.16.840.1.113883.6.96", SNOMED, Spelling::OID),
            ("LN", LOINC, Spelling::NAME),
            ("snomed-ct", SNOMED, Spelling::NAME),
            ("http://snomed.info/sct/", SNOMED, Spelling::TRAILING_SLASH),
            ("http://snomed.info/SCT", SNOMED, Spelling::CASE),
            (
                "http://snomed.info/sct/731000124108",
                SNOMED,
                Spelling::EDITION_URI,
            ),
            (
                "http://www.nlm.nih.gov/research/umls/rxnorm/",
                RXNORM,
                Spelling::TRAILING_SLASH,
            ),
            ("http://unitsofmeasure.org/", UCUM, Spelling::TRAILING_SLASH),
            ("http://lonic.org", LOINC, Spelling::TYPO),
            ("http://snomed.info/sc", SNOMED, Spelling::TYPO),
            (
                "http://hl7.org/fhir/sid/icd-10-pcs",
                "http://www.cms.gov/Medicare/Coding/ICD10",
                Spelling::NAME,
            ),
            (
                "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                Spelling::SCHEME,
            ),
        ];
        for (found, canonical, spelling) in cases {
            let (fixed, got) = fix_of(&t, found);
            assert_eq!(fixed, canonical, "{found}");
            assert!(
                got.contains(spelling),
                "{found}: {got:?} lacks {spelling:?}"
            );
        }
        // A misspelt system's codes are checked as the system it means.
        assert_eq!(t.classify("http://loinc.org/").rules(), CodeRules::Loinc);
    }

    #[test]
    fn misspellings_of_families_keep_the_name() {
        let t = SystemTable::new();
        let cases = [
            (
                "https://terminology.hl7.org/CodeSystem/v3-ActCode",
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            ),
            (
                "http://terminology.hl7.org/CodeSystem/condition-clinical/",
                "http://terminology.hl7.org/CodeSystem/condition-clinical",
            ),
            (
                "http://Terminology.HL7.org/CodeSystem/v2-0203",
                "http://terminology.hl7.org/CodeSystem/v2-0203",
            ),
            (
                "http://hl7.org/fhir/v3/MaritalStatus",
                "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            ),
            (
                "http://hl7.org/fhir/v2/0203",
                "http://terminology.hl7.org/CodeSystem/v2-0203",
            ),
        ];
        for (found, fixed) in cases {
            assert_eq!(fix_of(&t, found).0, fixed, "{found}");
        }
    }

    #[test]
    fn unknown_systems_stay_unknown() {
        let mut t = SystemTable::new();
        for system in [
            "http://acme.org/codes",
            "urn:oid:1.2.3.4",
            "local",
            "http://hl7.org/fhir/",
            "http://loinc.org.example",
        ] {
            assert_eq!(t.classify(system), SystemVerdict::Unknown, "{system}");
        }
        t.add_known("http://acme.org/codes");
        assert_eq!(t.exact("http://acme.org/codes"), Some(CodeRules::None));
        // Adding never downgrades a table entry's rules.
        t.add_known(LOINC);
        assert_eq!(t.exact(LOINC), Some(CodeRules::Loinc));
    }

    #[test]
    fn icd_versions_are_not_typos_of_each_other() {
        let t = SystemTable::new();
        assert_eq!(
            t.classify("http://hl7.org/fhir/sid/icd-9-cm"),
            SystemVerdict::Known(CodeRules::None)
        );
        assert_eq!(
            t.classify("http://hl7.org/fhir/sid/icd-10"),
            SystemVerdict::Known(CodeRules::None)
        );
    }

    #[test]
    fn edit_distance() {
        assert!(within_one_edit("loinc.org", "lonic.org"));
        assert!(within_one_edit("loinc.org", "loinc.orgg"));
        assert!(within_one_edit("loinc.org", "loic.org"));
        assert!(within_one_edit("loinc.org", "loinx.org"));
        assert!(!within_one_edit("loinc.org", "lnoic.org"));
        assert!(!within_one_edit("icd-10-pcs", "icd-10-cm"));
    }

    #[test]
    fn spelling_reads() {
        let s = Spelling::SCHEME.with(Spelling::TRAILING_SLASH, true);
        assert_eq!(
            s.to_string(),
            "wrong scheme (http vs https), trailing slash"
        );
    }
}
