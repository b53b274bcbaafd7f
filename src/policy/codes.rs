//! Sensitive code lists and where a resource's codes are.
//!
//! In: value sets (fhirlake's small TSV format, [`ValueSet::parse_tsv`]; three
//! ship with fhirlake under `data/consent/`) and parsed resources. Out: a
//! [`CodeIndex`] compiled once (system → normalised code → the sets and date
//! ranges holding it), and per resource the sets its codings hit at the
//! resource's date. Codes compare the way CMS BFD compares them: trimmed,
//! without `.`, lower-cased (`F10.10` = `F1010` = `f10.10`); systems ignore
//! `http`/`https` and a trailing `/`, and well-known OIDs stand for their URL.
//!
//! A coding whose system the policy cannot place (no system, not a URI, an
//! unknown `urn:oid:`, or a misspelt ICD/SNOMED/RxNorm/CPT/HCPCS/DRG URI)
//! holding a code some set lists fails closed ([`Unreadable`]); any other
//! coding that no set lists costs two hash look-ups and nothing else.

use smallvec::SmallVec;

use super::date::{self, DayRange};
use super::tree::{self, Unreadable, member};
use crate::view::Json;

/// The value sets fhirlake ships, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "cms-bfd-samhsa",
        include_str!("../../data/consent/cms-bfd-samhsa.tsv"),
    ),
    (
        "sud-snomed",
        include_str!("../../data/consent/sud-snomed.tsv"),
    ),
    (
        "moud-rxnorm",
        include_str!("../../data/consent/moud-rxnorm.tsv"),
    ),
];

/// One code of a value set, with the days it is sensitive on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub system: Box<str>,
    pub code: Box<str>,
    pub range: DayRange,
    pub display: Option<Box<str>>,
}

/// A named list of codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSet {
    pub name: Box<str>,
    /// `builtin:<name>`, a path, or `<policy>#valuesets.<name>`.
    pub origin: Box<str>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct ValueSetError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl ValueSet {
    /// A shipped value set.
    pub fn builtin(name: &str) -> Option<ValueSet> {
        let (name, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Some(
            ValueSet::parse_tsv(name, &format!("builtin:{name}"), text)
                .expect("shipped value sets parse (tested)"),
        )
    }

    /// Parses fhirlake's value-set text: `#` comments and blank lines,
    /// `@system URI` (applies to the lines after it), `@range FIRST LAST`
    /// (the default days for bare codes; all days unless given), and one code
    /// a line: `code`, or `code<TAB>first<TAB>last[<TAB>display]` with empty
    /// dates meaning the default. Dates are FHIR dates, both ends included.
    pub fn parse_tsv(name: &str, origin: &str, text: &str) -> Result<ValueSet, ValueSetError> {
        let err = |line: usize, message: String| ValueSetError {
            origin: origin.to_owned(),
            line,
            message,
        };
        let mut system: Option<&str> = None;
        let mut default = DayRange::ALL;
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let at = n + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(uri) = line.strip_prefix("@system ") {
                let uri = uri.trim();
                if !uri.contains(':') {
                    return Err(err(at, format!("`{uri}` is not a code system URI")));
                }
                system = Some(uri);
                default = DayRange::ALL;
                continue;
            }
            if let Some(range) = line.strip_prefix("@range ") {
                let (first, last) = range
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| err(at, "@range needs FIRST LAST".into()))?;
                default = range_of(first, last).map_err(|m| err(at, m))?;
                continue;
            }
            if line.starts_with('@') {
                return Err(err(at, format!("unknown directive `{line}`")));
            }
            let system = system.ok_or_else(|| err(at, "a code before any @system line".into()))?;
            let mut fields = line.split('\t');
            let code = fields.next().unwrap_or_default().trim();
            if code.is_empty() || code.contains(' ') {
                return Err(err(at, format!("`{code}` is not a code")));
            }
            let first = fields.next().unwrap_or_default();
            let last = fields.next().unwrap_or_default();
            let range = match (first.is_empty(), last.is_empty()) {
                (true, true) => default,
                _ => range_of(first, last).map_err(|m| err(at, m))?,
            };
            let display = fields
                .next()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(Into::into);
            if fields.next().is_some() {
                return Err(err(at, "more than four tab-separated fields".into()));
            }
            entries.push(Entry {
                system: system.into(),
                code: code.into(),
                range,
                display,
            });
        }
        Ok(ValueSet {
            name: name.into(),
            origin: origin.into(),
            entries,
        })
    }

    /// Codes written inline in a policy file as `system|code`.
    pub fn inline(name: &str, origin: &str, codes: &[String]) -> Result<ValueSet, String> {
        let entries = codes
            .iter()
            .map(|text| match text.split_once('|') {
                Some((system, code)) if system.contains(':') && !code.is_empty() => Ok(Entry {
                    system: system.into(),
                    code: code.into(),
                    range: DayRange::ALL,
                    display: None,
                }),
                _ => Err(format!("`{text}` is not system|code")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ValueSet {
            name: name.into(),
            origin: origin.into(),
            entries,
        })
    }
}

fn range_of(first: &str, last: &str) -> Result<DayRange, String> {
    let first = date::parse(first.trim()).ok_or_else(|| format!("`{first}` is not a date"))?;
    let last = date::parse(last.trim()).ok_or_else(|| format!("`{last}` is not a date"))?;
    if first.first > last.last {
        return Err("the range ends before it starts".into());
    }
    // 9999-12-31 is the lists' way of saying "open-ended".
    let last = if last.last == date::days_from_civil(9999, 12, 31) {
        date::Day::MAX
    } else {
        last.last
    };
    Ok(DayRange {
        first: first.first,
        last,
    })
}

/// OIDs and alternative URIs of the systems the shipped lists use.
const SYSTEM_ALIASES: &[(&str, &str)] = &[
    (
        "urn:oid:2.16.840.1.113883.6.90",
        "http://hl7.org/fhir/sid/icd-10-cm",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.103",
        "http://hl7.org/fhir/sid/icd-9-cm",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.2",
        "http://hl7.org/fhir/sid/icd-9-cm",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.104",
        "http://www.cms.gov/Medicare/Coding/ICD9",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.4",
        "http://www.cms.gov/Medicare/Coding/ICD10",
    ),
    (
        "http://hl7.org/fhir/sid/icd-10-pcs",
        "http://www.cms.gov/Medicare/Coding/ICD10",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.12",
        "http://www.ama-assn.org/go/cpt",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.285",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    ),
    (
        "urn:oid:2.16.840.1.113883.6.14",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    ),
    ("urn:oid:2.16.840.1.113883.6.96", "http://snomed.info/sct"),
    (
        "urn:oid:2.16.840.1.113883.6.88",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
    ),
    ("urn:oid:2.16.840.1.113883.6.1", "http://loinc.org"),
];

/// Systems that are written correctly even when no loaded set uses them.
const WELL_KNOWN: &[&str] = &[
    "snomed.info/sct",
    "loinc.org",
    "www.nlm.nih.gov/research/umls/rxnorm",
    "hl7.org/fhir/sid/icd-10-cm",
    "hl7.org/fhir/sid/icd-10",
    "hl7.org/fhir/sid/icd-9-cm",
    "hl7.org/fhir/sid/cvx",
    "hl7.org/fhir/sid/ndc",
    "www.ama-assn.org/go/cpt",
    "www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "www.cms.gov/Medicare/Coding/ICD10",
    "www.cms.gov/Medicare/Coding/ICD9",
    "www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/AcuteInpatientPPS/MS-DRG-Classifications-and-Software",
    "unitsofmeasure.org",
];

/// Substrings that make a system look like one of the code systems the
/// sensitive lists use.
const FAMILIES: &[&str] = &["icd", "snomed", "sct", "rxnorm", "hcpcs", "cpt", "drg"];

/// The comparison key of a system: aliases resolved, scheme and trailing `/`
/// dropped. Borrowed: no allocation.
pub fn system_key(system: &str) -> &str {
    let system = system.trim();
    let system = if system.starts_with("urn:oid:")
        || system.starts_with("http://hl7.org/fhir/sid/icd-10-pcs")
    {
        SYSTEM_ALIASES
            .iter()
            .find(|(alias, _)| *alias == system)
            .map_or(system, |(_, canonical)| *canonical)
    } else {
        system
    };
    let system = system
        .strip_prefix("https://")
        .or_else(|| system.strip_prefix("http://"))
        .unwrap_or(system);
    system.strip_suffix('/').unwrap_or(system)
}

/// Codes compare trimmed, without `.`, ASCII lower-cased (BFD's rule).
/// `None` for codes too long to be in any list (64 bytes).
pub fn normalise<'b>(code: &str, buffer: &'b mut [u8; 64]) -> Option<&'b str> {
    let mut n = 0;
    for &b in code.trim().as_bytes() {
        if b == b'.' {
            continue;
        }
        *buffer.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    // Dropping ASCII bytes and lower-casing ASCII keeps UTF-8 valid.
    std::str::from_utf8(&buffer[..n]).ok()
}

pub fn normalised(code: &str) -> String {
    code.trim().replace('.', "").to_ascii_lowercase()
}

/// A set that holds a code, on which days, and which entry says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub set: u8,
    pub range: DayRange,
    pub entry: u32,
}

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
type Set<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;
/// Normalised code → the sets holding it.
type CodesOfSystem = Map<Box<str>, SmallVec<[Hit; 1]>>;
/// An element path, split at its dots.
type ElementPath = Box<[Box<str>]>;

/// Every value set of a policy, compiled into one lookup.
#[derive(Debug, Default)]
pub struct CodeIndex {
    systems: Map<Box<str>, CodesOfSystem>,
    /// Normalised codes of every set in any system: the gate for failing
    /// closed on codings whose system cannot be placed.
    any: Set<Box<str>>,
    sets: Vec<ValueSet>,
}

/// What a coding is to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'i> {
    /// No set holds it.
    Miss,
    Hits(&'i [Hit]),
}

impl CodeIndex {
    /// At most 64 sets (a rule names sets by a bit mask).
    pub fn new(sets: Vec<ValueSet>) -> Result<CodeIndex, String> {
        if sets.len() > 64 {
            return Err(format!("{} value sets; at most 64", sets.len()));
        }
        let mut index = CodeIndex::default();
        for (s, set) in sets.iter().enumerate() {
            for (e, entry) in set.entries.iter().enumerate() {
                let code = normalised(&entry.code);
                index.any.insert(code.clone().into());
                index
                    .systems
                    .entry(system_key(&entry.system).into())
                    .or_default()
                    .entry(code.into())
                    .or_default()
                    .push(Hit {
                        set: s as u8,
                        range: entry.range,
                        entry: e as u32,
                    });
            }
        }
        index.sets = sets;
        Ok(index)
    }

    pub fn sets(&self) -> &[ValueSet] {
        &self.sets
    }

    pub fn set_index(&self, name: &str) -> Option<usize> {
        self.sets.iter().position(|s| &*s.name == name)
    }

    pub fn entry(&self, hit: &Hit) -> &Entry {
        &self.sets[hit.set as usize].entries[hit.entry as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.any.is_empty()
    }

    /// Looks a Coding up.
    pub fn lookup<'a>(&self, coding: &Json<'a>) -> Result<Lookup<'_>, Unreadable> {
        let Json::Object(_) = coding else {
            return Err(Unreadable::new("a Coding is not an object"));
        };
        let mut buffer = [0u8; 64];
        let code = match member(coding, "code") {
            None => return Ok(Lookup::Miss),
            Some(Json::String(code)) => *code,
            // A number where a code belongs: what YAML does to `303.0`.
            Some(Json::Number(text)) => {
                return match normalise(text, &mut buffer) {
                    Some(code) if self.any.contains(code) => Err(Unreadable::new(
                        "a Coding's code is a number that a sensitive list holds as a code",
                    )),
                    _ => Ok(Lookup::Miss),
                };
            }
            Some(_) => return Err(Unreadable::new("a Coding's code is not a string")),
        };
        let Some(code) = normalise(code, &mut buffer) else {
            return Ok(Lookup::Miss);
        };
        let system = match member(coding, "system") {
            Some(Json::String(system)) => Some(*system),
            None => None,
            Some(_) => return Err(Unreadable::new("a Coding's system is not a string")),
        };
        let key = system.map(system_key);
        if let Some(codes) = key.and_then(|k| self.systems.get(k)) {
            return Ok(codes
                .get(code)
                .map_or(Lookup::Miss, |hits| Lookup::Hits(hits)));
        }
        let placed = key.is_some_and(|k| {
            WELL_KNOWN.contains(&k)
                || (k.contains(':') && !k.starts_with("urn:oid:")
                    || k.contains('/') && !k.contains(':'))
                    && !FAMILIES.iter().any(|f| tree::contains_ignore_case(k, f))
        });
        if !placed && self.any.contains(code) {
            return Err(Unreadable::owned(format!(
                "code `{}` of a sensitive list under a system the policy cannot place ({})",
                string_of(coding, "code"),
                system.map_or("no system".to_owned(), |s| format!("`{s}`")),
            )));
        }
        Ok(Lookup::Miss)
    }
}

fn string_of<'a>(value: &Json<'a>, key: &str) -> &'a str {
    member(value, key).and_then(tree::string).unwrap_or("")
}

/// Where codes are, per resource type: element paths whose values are
/// CodeableConcepts, Codings or CodeableReferences.
pub const DEFAULT_CODE_PATHS: &[(&str, &[&str])] = &[
    ("AllergyIntolerance", &["code"]),
    (
        "CarePlan",
        &[
            "category",
            "activity.detail.code",
            "activity.detail.reasonCode",
        ],
    ),
    ("CareTeam", &["reasonCode"]),
    (
        "Claim",
        &[
            "diagnosis.diagnosisCodeableConcept",
            "diagnosis.packageCode",
            "procedure.procedureCodeableConcept",
            "item.productOrService",
            "item.detail.productOrService",
            "supportingInfo.code",
        ],
    ),
    (
        "ClinicalImpression",
        &["code", "finding.itemCodeableConcept"],
    ),
    ("Condition", &["code"]),
    ("DiagnosticReport", &["code", "conclusionCode"]),
    ("DocumentReference", &["type", "context.event"]),
    ("Encounter", &["type", "reasonCode", "serviceType"]),
    ("EpisodeOfCare", &["type"]),
    (
        "ExplanationOfBenefit",
        &[
            "diagnosis.diagnosisCodeableConcept",
            "diagnosis.packageCode",
            "procedure.procedureCodeableConcept",
            "item.productOrService",
            "item.detail.productOrService",
            "addItem.productOrService",
            "supportingInfo.code",
        ],
    ),
    ("Flag", &["code"]),
    ("Immunization", &["reasonCode"]),
    ("List", &["code"]),
    ("Medication", &["code"]),
    (
        "MedicationAdministration",
        &["medicationCodeableConcept", "reasonCode"],
    ),
    ("MedicationDispense", &["medicationCodeableConcept"]),
    (
        "MedicationRequest",
        &["medicationCodeableConcept", "reasonCode"],
    ),
    (
        "MedicationStatement",
        &["medicationCodeableConcept", "reasonCode"],
    ),
    (
        "Observation",
        &[
            "code",
            "valueCodeableConcept",
            "component.code",
            "component.valueCodeableConcept",
        ],
    ),
    ("Procedure", &["code", "reasonCode"]),
    ("ServiceRequest", &["code", "reasonCode"]),
];

/// Where a resource's date is (the first present wins); `Through` is a
/// claim's through-date: `end`, or `start` when it is later (BFD's rule).
#[derive(Debug, Clone, Copy)]
pub enum DateAt {
    Path(&'static [&'static str]),
    Through(&'static str),
}

const DATES: &[(&str, &[DateAt])] = {
    use DateAt::{Path as P, Through as T};
    &[
        (
            "AllergyIntolerance",
            &[P(&["onsetDateTime"]), P(&["recordedDate"])],
        ),
        ("CarePlan", &[P(&["period", "start"]), P(&["created"])]),
        ("CareTeam", &[P(&["period", "start"])]),
        ("Claim", &[T("billablePeriod"), P(&["created"])]),
        (
            "Condition",
            &[
                P(&["onsetDateTime"]),
                P(&["onsetPeriod", "start"]),
                P(&["recordedDate"]),
            ],
        ),
        ("Consent", &[P(&["dateTime"])]),
        ("Coverage", &[P(&["period", "start"])]),
        (
            "DiagnosticReport",
            &[
                P(&["effectiveDateTime"]),
                P(&["effectivePeriod", "start"]),
                P(&["issued"]),
            ],
        ),
        (
            "DocumentReference",
            &[P(&["context", "period", "start"]), P(&["date"])],
        ),
        ("Encounter", &[P(&["period", "start"])]),
        ("EpisodeOfCare", &[P(&["period", "start"])]),
        (
            "ExplanationOfBenefit",
            &[T("billablePeriod"), P(&["created"])],
        ),
        ("ImagingStudy", &[P(&["started"])]),
        (
            "Immunization",
            &[P(&["occurrenceDateTime"]), P(&["recorded"])],
        ),
        (
            "MedicationAdministration",
            &[P(&["effectiveDateTime"]), P(&["effectivePeriod", "start"])],
        ),
        (
            "MedicationDispense",
            &[P(&["whenHandedOver"]), P(&["whenPrepared"])],
        ),
        ("MedicationRequest", &[P(&["authoredOn"])]),
        (
            "MedicationStatement",
            &[
                P(&["effectiveDateTime"]),
                P(&["effectivePeriod", "start"]),
                P(&["dateAsserted"]),
            ],
        ),
        (
            "Observation",
            &[
                P(&["effectiveDateTime"]),
                P(&["effectivePeriod", "start"]),
                P(&["effectiveInstant"]),
                P(&["issued"]),
            ],
        ),
        (
            "Procedure",
            &[P(&["performedDateTime"]), P(&["performedPeriod", "start"])],
        ),
        (
            "ServiceRequest",
            &[
                P(&["occurrenceDateTime"]),
                P(&["occurrencePeriod", "start"]),
                P(&["authoredOn"]),
            ],
        ),
    ]
};

/// The date of a resource: `Ok(None)` when its type has none or it carries
/// none; an error when the first date present is not a date.
pub fn resource_date<'a>(
    resource: &Json<'a>,
    resource_type: &str,
) -> Result<Option<DayRange>, Unreadable> {
    let Some((_, at)) = DATES.iter().find(|(t, _)| *t == resource_type) else {
        return Ok(None);
    };
    let parse = |value: &Json<'a>| match tree::string(value).and_then(date::parse) {
        Some(range) => Ok(range),
        None => Err(Unreadable::owned(format!(
            "{resource_type} date `{value}` is not a FHIR date"
        ))),
    };
    for place in *at {
        match place {
            DateAt::Path(path) => {
                let mut value = Some(resource);
                for step in *path {
                    value = value.and_then(|v| member(v, step));
                }
                if let Some(value) = value {
                    return parse(value).map(Some);
                }
            }
            DateAt::Through(period) => {
                let Some(period) = member(resource, period) else {
                    continue;
                };
                let start = member(period, "start").map(parse).transpose()?;
                let end = member(period, "end").map(parse).transpose()?;
                match (start, end) {
                    (Some(s), Some(e)) => return Ok(Some(if s.first > e.last { s } else { e })),
                    (s, e) => {
                        if let Some(d) = e.or(s) {
                            return Ok(Some(d));
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Compiled code paths per resource type.
#[derive(Debug, Clone)]
pub struct CodePaths {
    by_type: Map<Box<str>, Vec<ElementPath>>,
}

impl Default for CodePaths {
    fn default() -> Self {
        let mut by_type: Map<Box<str>, Vec<ElementPath>> = Map::default();
        for (t, paths) in DEFAULT_CODE_PATHS {
            by_type.insert((*t).into(), paths.iter().map(|p| split_path(p)).collect());
        }
        CodePaths { by_type }
    }
}

fn split_path(path: &str) -> Box<[Box<str>]> {
    path.split('.').map(Into::into).collect()
}

impl CodePaths {
    /// Replaces the paths of `resource_type` (a policy file's `[code_paths]`).
    pub fn set(&mut self, resource_type: &str, paths: &[String]) {
        self.by_type.insert(
            resource_type.into(),
            paths.iter().map(|p| split_path(p)).collect(),
        );
    }

    pub fn of(&self, resource_type: &str) -> &[Box<[Box<str>]>] {
        self.by_type.get(resource_type).map_or(&[], Vec::as_slice)
    }

    /// The top-level elements holding codes of `resource_type`.
    pub fn roots(&self, resource_type: &str) -> impl Iterator<Item = &str> {
        self.of(resource_type).iter().map(|p| &*p[0])
    }

    /// Calls `f(path, coding)` for every Coding at the type's paths, and in
    /// the type's `contained` resources at theirs. Stops at `f`'s first error.
    pub fn for_each_coding<'a, E>(
        &self,
        resource: &'a Json<'a>,
        resource_type: &str,
        f: &mut impl FnMut(&[Box<str>], &'a Json<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        for path in self.of(resource_type) {
            let mut result = Ok(());
            tree::for_each_at(resource, path, &mut |concept| {
                if result.is_ok() {
                    result = visit_concept(concept, &mut |coding| f(path, coding));
                }
            });
            result?;
        }
        if let Some(Json::Array(contained)) = member(resource, "contained") {
            for inner in *contained {
                if let Some(kind) = member(inner, "resourceType").and_then(tree::string) {
                    for path in self.of(kind) {
                        let mut result = Ok(());
                        tree::for_each_at(inner, path, &mut |concept| {
                            if result.is_ok() {
                                result = visit_concept(concept, &mut |coding| f(path, coding));
                            }
                        });
                        result?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A CodeableConcept's codings, a CodeableReference's concept's, or a Coding.
fn visit_concept<'a, E>(
    value: &'a Json<'a>,
    f: &mut impl FnMut(&'a Json<'a>) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(codings) = member(value, "coding") {
        for coding in tree::items(codings) {
            f(coding)?;
        }
        Ok(())
    } else if let Some(concept) = member(value, "concept") {
        for inner in tree::items(concept) {
            visit_concept(inner, f)?;
        }
        Ok(())
    } else if member(value, "code").is_some() || member(value, "system").is_some() {
        f(value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[test]
    fn shipped_sets_parse_and_keep_the_cms_date_ranges() {
        let cms = ValueSet::builtin("cms-bfd-samhsa").unwrap();
        assert_eq!(cms.entries.len(), 682);
        let g0137 = cms.entries.iter().find(|e| &*e.code == "G0137").unwrap();
        assert_eq!(g0137.range.first, date::days_from_civil(2024, 1, 1));
        assert_eq!(g0137.range.last, date::Day::MAX);
        let drg = cms.entries.iter().find(|e| &*e.code == "522").unwrap();
        assert_eq!(drg.range.last, date::days_from_civil(2007, 10, 1));
        assert_eq!(ValueSet::builtin("sud-snomed").unwrap().entries.len(), 77);
        assert_eq!(ValueSet::builtin("moud-rxnorm").unwrap().entries.len(), 31);
        assert!(ValueSet::builtin("nope").is_none());
    }

    /// The compiled copy holds exactly the CMS YAML's 682 entries, when the
    /// project's shared data is beside the clone.
    #[test]
    fn the_compiled_cms_list_matches_its_source() {
        let source = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/consent/cms-bfd-samhsa-security-labels.yml"
        );
        let Ok(yaml) = std::fs::read_to_string(source) else {
            eprintln!("SKIPPED: {source} is not there");
            return;
        };
        let mut from_yaml = Vec::new();
        let mut current: Vec<(String, String)> = Vec::new();
        for line in yaml.lines().chain(std::iter::once("- end")) {
            if line.starts_with("- ") && !current.is_empty() {
                let get = |k: &str| current.iter().find(|(key, _)| key == k).unwrap().1.clone();
                from_yaml.push((get("system"), get("code"), get("startDate"), get("endDate")));
                current.clear();
            }
            if let Some((k, v)) = line.trim_start_matches("- ").trim().split_once(": ") {
                current.push((k.to_owned(), v.trim().to_owned()));
            }
        }
        let ours: Vec<_> = ValueSet::builtin("cms-bfd-samhsa")
            .unwrap()
            .entries
            .into_iter()
            .map(|e| {
                let end = if e.range.last == date::Day::MAX {
                    "9999-12-31".to_owned()
                } else {
                    let (y, m, d) = date::civil_from_days(e.range.last);
                    format!("{y:04}-{m:02}-{d:02}")
                };
                let (y, m, d) = date::civil_from_days(e.range.first);
                (
                    e.system.to_string(),
                    e.code.to_string(),
                    format!("{y:04}-{m:02}-{d:02}"),
                    end,
                )
            })
            .collect();
        let mut a = from_yaml.clone();
        let mut b = ours.clone();
        a.sort();
        b.sort();
        assert_eq!(a.len(), 682);
        assert_eq!(a, b);
    }

    #[test]
    fn tsv_errors_name_the_line() {
        let e = ValueSet::parse_tsv("x", "x.tsv", "# c\nF10.10\n").unwrap_err();
        assert_eq!(e.to_string(), "x.tsv:2: a code before any @system line");
        let e = ValueSet::parse_tsv("x", "x.tsv", "@system http://s\nA\t2020-13-01\t2021\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(ValueSet::parse_tsv("x", "x", "@system icd\n").is_err());
        let ok = ValueSet::parse_tsv(
            "x",
            "x",
            "@system http://s\n@range 2020 2020\nA\nB\t2019-01-01\t2019-12-31\tBee\n",
        )
        .unwrap();
        assert_eq!(ok.entries[0].range, date::parse("2020").unwrap());
        assert_eq!(ok.entries[1].display.as_deref(), Some("Bee"));
    }

    #[test]
    fn codes_and_systems_normalise_like_bfd() {
        let mut b = [0u8; 64];
        assert_eq!(normalise(" F10.10 ", &mut b), Some("f1010"));
        assert_eq!(normalise(&"x".repeat(65), &mut b), None);
        assert_eq!(
            system_key("https://hl7.org/fhir/sid/icd-10-cm/"),
            "hl7.org/fhir/sid/icd-10-cm"
        );
        assert_eq!(
            system_key("urn:oid:2.16.840.1.113883.6.90"),
            "hl7.org/fhir/sid/icd-10-cm"
        );
        assert_eq!(
            system_key("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"),
            system_key("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets")
        );
    }

    #[test]
    fn lookups_hit_miss_and_fail_closed_on_unplaceable_systems() {
        let index = CodeIndex::new(vec![
            ValueSet::builtin("cms-bfd-samhsa").unwrap(),
            ValueSet::builtin("sud-snomed").unwrap(),
        ])
        .unwrap();
        let arena = Bump::new();
        let look = |text: &str| {
            let json = Json::parse(text, &arena).unwrap();
            index.lookup(&json).map(|l| match l {
                Lookup::Miss => 0,
                Lookup::Hits(h) => h.len(),
            })
        };
        assert_eq!(
            look(r#"{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"F11.20"}"#),
            Ok(1)
        );
        assert_eq!(
            look(r#"{"system":"urn:oid:2.16.840.1.113883.6.90","code":"f1120"}"#),
            Ok(1)
        );
        assert_eq!(
            look(r#"{"system":"http://snomed.info/sct","code":"7200002"}"#),
            Ok(1)
        );
        assert_eq!(
            look(r#"{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"F17.210"}"#),
            Ok(0)
        );
        assert_eq!(
            look(r#"{"system":"http://loinc.org","code":"F11.20"}"#),
            Ok(0)
        );
        assert_eq!(
            look(r#"{"system":"http://acme.org/codes","code":"F11.20"}"#),
            Ok(0)
        );
        assert_eq!(look(r#"{"display":"x"}"#), Ok(0));
        // Cannot be placed, and the code is sensitive somewhere: fail closed.
        for bad in [
            r#"{"code":"F11.20"}"#,
            r#"{"system":"ICD10CM","code":"F11.20"}"#,
            r#"{"system":"http://hl7.org/fhir/sid/icd10cm","code":"F11.20"}"#,
            r#"{"system":"urn:oid:9.9.9","code":"7200002"}"#,
            r#"{"system":"http://hl7.org/fhir/sid/icd-9-cm","code":303.0}"#,
            r#"{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":["F11.20"]}"#,
        ] {
            assert!(look(bad).is_err(), "{bad}");
        }
        // ... but a code no list holds is just a miss.
        assert_eq!(look(r#"{"system":"ICD10CM","code":"J45.909"}"#), Ok(0));
    }

    #[test]
    fn dates_of_resources_follow_their_type() {
        let arena = Bump::new();
        let date = |t: &str, text: &str| resource_date(&Json::parse(text, &arena).unwrap(), t);
        assert_eq!(
            date(
                "Condition",
                r#"{"recordedDate":"2020-02-02","onsetDateTime":"2019-01-01T00:00:00Z"}"#
            ),
            Ok(date::parse("2019-01-01"))
        );
        assert_eq!(
            date(
                "ExplanationOfBenefit",
                r#"{"billablePeriod":{"start":"2010-05-26","end":"2011-05-26"}}"#
            ),
            Ok(date::parse("2011-05-26"))
        );
        assert_eq!(
            date(
                "Claim",
                r#"{"billablePeriod":{"start":"2012-01-02","end":"2011-05-26"}}"#
            ),
            Ok(date::parse("2012-01-02"))
        );
        assert_eq!(date("Patient", r#"{"birthDate":"2000"}"#), Ok(None));
        assert_eq!(date("Encounter", r#"{"status":"finished"}"#), Ok(None));
        assert!(date("Encounter", r#"{"period":{"start":"yesterday"}}"#).is_err());
    }

    #[test]
    fn codings_are_found_at_the_type_paths_and_in_contained_resources() {
        let arena = Bump::new();
        let text = r#"{"resourceType":"ExplanationOfBenefit","contained":[{"resourceType":"Condition","code":{"coding":[{"system":"s","code":"c1"}]}}],
            "diagnosis":[{"diagnosisCodeableConcept":{"coding":[{"system":"s","code":"c2"},{"system":"s","code":"c3"}]}}],
            "item":[{"productOrService":{"coding":[{"system":"s","code":"c4"}]}}],
            "supportingInfo":[{"code":{"coding":[{"system":"s","code":"c5"}]}}]}"#;
        let json = Json::parse(text, &arena).unwrap();
        let mut seen = Vec::new();
        CodePaths::default()
            .for_each_coding::<()>(&json, "ExplanationOfBenefit", &mut |_, c| {
                seen.push(string_of(c, "code"));
                Ok(())
            })
            .unwrap();
        seen.sort();
        assert_eq!(seen, ["c1", "c2", "c3", "c4", "c5"]);
    }
}
