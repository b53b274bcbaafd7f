//! Value sets: FHIR ValueSet JSON loaded once per job and compiled into hash
//! sets, for membership by (system, code).
//!
//! In: ValueSet resources (and complete CodeSystems, which enumerate the
//! includes of a whole system) from directories, files and FHIR packages.
//! Out: [`ValueSets`], where [`ValueSet::membership`] answers with two hash
//! lookups and no allocation.
//!
//! What is enumerated: `expansion.contains` (nested, abstract entries left
//! out), `compose.include` with `concept`s, includes of a whole system (from
//! its CodeSystem when one with `content: complete` is loaded, else answered
//! as [`Membership::InWholeSystem`]), and `valueSet` imports of loaded value
//! sets; `compose.exclude` the same way. What is not: `filter`s (is-a,
//! regex, properties), imports of value sets that are not loaded (VSAC's),
//! intersections involving either, and a paged expansion without compose.
//! Each is kept as an [`OpenPart`] and reported: a code it might hold is
//! [`Membership::NotCheckable`], never "not a member". `include.version` is
//! not honoured: codes are compared across versions.
//!
//! A complete expansion wins over `compose` (it is what the publisher
//! computed). Two loads of the same `url|version` keep the first; a canonical
//! without `|version` finds the highest version loaded.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::codeset::CodeSet;
use super::error::{Origin, TerminologyError};
use super::package::{self, Scan};

/// Why part of a value set cannot be enumerated offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotEnumerable {
    Filter {
        property: Box<str>,
        op: Box<str>,
        value: Box<str>,
    },
    ImportNotLoaded {
        value_set: Box<str>,
    },
    ImportCycle {
        value_set: Box<str>,
    },
    /// Several value sets (or a value set and a system) intersected, where
    /// one side is not enumerable.
    Intersection,
    /// An expansion with fewer codes than its `total`, and no compose.
    PagedExpansion {
        total: u64,
        contained: u64,
    },
}

/// An include (or exclude) that cannot be enumerated: codes of `system`
/// (`None`: of any system) may or may not be in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPart {
    pub system: Option<Box<str>>,
    pub reason: NotEnumerable,
}

impl OpenPart {
    fn covers(&self, system: &str) -> bool {
        self.system.as_deref().is_none_or(|s| s == system)
    }
}

impl fmt::Display for OpenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.system {
            Some(system) => write!(f, "codes of {system}")?,
            None => write!(f, "codes of any system")?,
        }
        match &self.reason {
            NotEnumerable::Filter {
                property,
                op,
                value,
            } => write!(f, " selected by filter `{property} {op} {value}`")?,
            NotEnumerable::ImportNotLoaded { value_set } => {
                write!(f, " from value set {value_set}, which is not loaded")?
            }
            NotEnumerable::ImportCycle { value_set } => {
                write!(f, " from value set {value_set}, which imports itself")?
            }
            NotEnumerable::Intersection => write!(
                f,
                " in an intersection of value sets that are not all enumerable"
            )?,
            NotEnumerable::PagedExpansion { total, contained } => {
                write!(f, " beyond the {contained} of {total} its expansion lists")?
            }
        }
        f.write_str(": not checkable offline")
    }
}

/// Whether a (system, code) is in a value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership<'v> {
    Member,
    /// The value set includes all of the code's system: a member if the
    /// code exists there (its format is checked elsewhere).
    InWholeSystem,
    /// It may be: this part cannot be enumerated offline.
    NotCheckable(&'v OpenPart),
    NotMember,
}

impl Membership<'_> {
    /// True for a member, or a code of a system the value set takes whole.
    pub fn is_member(&self) -> bool {
        matches!(self, Self::Member | Self::InWholeSystem)
    }
}

/// One compiled value set.
#[derive(Debug, Clone)]
pub struct ValueSet {
    pub url: Box<str>,
    pub version: Option<Box<str>>,
    pub origin: Origin,
    members: CodeSet,
    whole_systems: Vec<Box<str>>,
    open: Vec<OpenPart>,
    excluded: CodeSet,
    open_exclusions: Vec<OpenPart>,
}

impl ValueSet {
    pub fn membership(&self, system: &str, code: &str) -> Membership<'_> {
        if self.excluded.contains(system, code) {
            return Membership::NotMember;
        }
        let found = if self.members.contains(system, code) {
            Membership::Member
        } else if self.whole_systems.iter().any(|s| &**s == system) {
            Membership::InWholeSystem
        } else if let Some(part) = self.open.iter().find(|p| p.covers(system)) {
            return Membership::NotCheckable(part);
        } else {
            return Membership::NotMember;
        };
        match self.open_exclusions.iter().find(|p| p.covers(system)) {
            Some(part) => Membership::NotCheckable(part),
            None => found,
        }
    }

    /// The enumerated members.
    pub fn members(&self) -> &CodeSet {
        &self.members
    }

    /// Systems included whole, with no complete CodeSystem loaded.
    pub fn whole_systems(&self) -> impl Iterator<Item = &str> {
        self.whole_systems.iter().map(|s| &**s)
    }

    /// The parts (includes, then excludes) that cannot be checked offline.
    pub fn not_checkable(&self) -> impl Iterator<Item = &OpenPart> {
        self.open.iter().chain(&self.open_exclusions)
    }

    /// True when every membership question has a definite answer.
    pub fn is_fully_checkable(&self) -> bool {
        self.open.is_empty() && self.open_exclusions.is_empty()
    }

    /// `url|version`, or `url`.
    pub fn canonical(&self) -> String {
        match &self.version {
            Some(v) => format!("{}|{v}", self.url),
            None => self.url.to_string(),
        }
    }
}

/// The value sets of a job, compiled.
#[derive(Debug, Clone, Default)]
pub struct ValueSets {
    sets: Vec<ValueSet>,
    by_url: HashMap<Box<str>, Vec<usize>>,
    duplicates: Vec<(String, Origin)>,
}

/// Which value set a binding names, as an index into [`ValueSets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueSetId(pub(crate) u32);

impl ValueSets {
    /// The value set a canonical (`url` or `url|version`) names.
    pub fn get(&self, canonical: &str) -> Option<&ValueSet> {
        self.id(canonical).map(|id| self.by_id(id))
    }

    pub fn id(&self, canonical: &str) -> Option<ValueSetId> {
        let (url, version) = match canonical.split_once('|') {
            Some((url, version)) => (url, Some(version)),
            None => (canonical, None),
        };
        let candidates = self.by_url.get(url)?;
        let index = match version {
            Some(v) => *candidates
                .iter()
                .find(|&&i| self.sets[i].version.as_deref() == Some(v))?,
            None => *candidates.iter().max_by(|&&a, &&b| {
                compare_versions(
                    self.sets[a].version.as_deref(),
                    self.sets[b].version.as_deref(),
                )
            })?,
        };
        Some(ValueSetId(index as u32))
    }

    pub fn by_id(&self, id: ValueSetId) -> &ValueSet {
        &self.sets[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValueSet> {
        self.sets.iter()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Every part of every value set that cannot be checked offline: the
    /// load report's "not checkable offline" lines.
    pub fn not_checkable(&self) -> impl Iterator<Item = (&ValueSet, &OpenPart)> {
        self.sets
            .iter()
            .flat_map(|vs| vs.not_checkable().map(move |part| (vs, part)))
    }

    /// `url|version` loaded more than once, and where the copy left out was.
    pub fn duplicates(&self) -> &[(String, Origin)] {
        &self.duplicates
    }

    /// Every system a value set names (for the job's known systems).
    pub fn systems(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().flat_map(|vs| {
            vs.members
                .systems()
                .chain(vs.whole_systems())
                .chain(vs.not_checkable().filter_map(|p| p.system.as_deref()))
        })
    }
}

/// Numeric where both parts are numbers (`3.1.1` < `6.1.0` < `10.0.0`);
/// a missing version sorts first.
fn compare_versions(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_some().cmp(&b.is_some());
    };
    let mut x = a.split(['.', '-']);
    let mut y = b.split(['.', '-']);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) => {
                let order = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    _ => p.cmp(q),
                };
                if order.is_ne() {
                    return order;
                }
            }
        }
    }
}

// ---- FHIR JSON, as much as is read -------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawValueSet {
    url: Option<String>,
    version: Option<String>,
    compose: Option<RawCompose>,
    expansion: Option<RawExpansion>,
}

#[derive(Deserialize, Default)]
struct RawCompose {
    #[serde(default)]
    include: Vec<RawInclude>,
    #[serde(default)]
    exclude: Vec<RawInclude>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInclude {
    system: Option<String>,
    #[serde(default)]
    concept: Vec<RawConcept>,
    #[serde(default)]
    filter: Vec<RawFilter>,
    #[serde(default)]
    value_set: Vec<String>,
}

#[derive(Deserialize)]
struct RawConcept {
    code: String,
}

#[derive(Deserialize)]
struct RawFilter {
    property: String,
    op: String,
    value: String,
}

#[derive(Deserialize)]
struct RawExpansion {
    total: Option<u64>,
    offset: Option<u64>,
    #[serde(default)]
    contains: Vec<RawContains>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContains {
    system: Option<String>,
    code: Option<String>,
    #[serde(rename = "abstract", default)]
    is_abstract: bool,
    #[serde(default)]
    contains: Vec<RawContains>,
}

#[derive(Deserialize)]
struct RawCodeSystem {
    url: Option<String>,
    content: Option<String>,
    #[serde(default)]
    concept: Vec<RawCsConcept>,
}

#[derive(Deserialize)]
struct RawCsConcept {
    code: String,
    #[serde(default)]
    concept: Vec<RawCsConcept>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceType {
    resource_type: Option<String>,
}

// ---- loading ------------------------------------------------------------

/// Collects ValueSet and CodeSystem resources; [`Self::build`] compiles them.
#[derive(Default)]
pub struct ValueSetLoader {
    raw: Vec<(Origin, RawValueSet)>,
    code_systems: HashMap<String, CodeSet>,
}

impl std::fmt::Debug for ValueSetLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueSetLoader")
            .field("value_sets", &self.raw.len())
            .field("code_systems", &self.code_systems.len())
            .finish()
    }
}

impl ValueSetLoader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the ValueSets and complete CodeSystems of a directory (`*.json`
    /// and `*.tgz`), a package, or a file.
    pub fn add_source(&mut self, source: &Path) -> Result<Scan, TerminologyError> {
        package::for_each_resource(source, &["ValueSet", "CodeSystem"], &mut |origin, bytes| {
            self.add_json(origin, bytes)
        })
    }

    /// Adds one ValueSet or CodeSystem resource.
    pub fn add_json(&mut self, origin: Origin, bytes: &[u8]) -> Result<(), TerminologyError> {
        let shape = |origin: &Origin, source| TerminologyError::Shape {
            origin: origin.clone(),
            resource: "ValueSet",
            source,
        };
        let kind: ResourceType =
            serde_json::from_slice(bytes).map_err(|source| TerminologyError::Json {
                origin: origin.clone(),
                source,
            })?;
        match kind.resource_type.as_deref() {
            Some("ValueSet") => {
                let vs: RawValueSet =
                    serde_json::from_slice(bytes).map_err(|e| shape(&origin, e))?;
                if vs.url.is_none() {
                    return Err(TerminologyError::Malformed {
                        origin,
                        problem: super::error::Malformed::Missing {
                            resource: "ValueSet",
                            field: "url",
                        },
                    });
                }
                self.raw.push((origin, vs));
            }
            Some("CodeSystem") => {
                let cs: RawCodeSystem =
                    serde_json::from_slice(bytes).map_err(|source| TerminologyError::Shape {
                        origin: origin.clone(),
                        resource: "CodeSystem",
                        source,
                    })?;
                if let (Some(url), Some("complete")) = (cs.url, cs.content.as_deref()) {
                    let mut codes = CodeSet::default();
                    collect_cs(&url, &cs.concept, &mut codes);
                    self.code_systems
                        .entry(url)
                        .or_default()
                        .extend_from(&codes);
                }
            }
            other => {
                return Err(TerminologyError::WrongResource {
                    origin,
                    expected: "ValueSet or CodeSystem",
                    found: other.unwrap_or("resource without resourceType").to_string(),
                });
            }
        }
        Ok(())
    }

    /// Compiles every value set, resolving imports between them.
    pub fn build(self) -> ValueSets {
        let mut out = ValueSets::default();
        let mut raws = Vec::new();
        for (origin, raw) in self.raw {
            let url = raw.url.clone().unwrap_or_default();
            let dup = out.by_url.get(url.as_str()).is_some_and(|ids| {
                ids.iter()
                    .any(|&i| raws_version(&raws, i) == raw.version.as_deref())
            });
            if dup {
                out.duplicates
                    .push((canonical(&url, raw.version.as_deref()), origin));
                continue;
            }
            out.by_url
                .entry(url.as_str().into())
                .or_default()
                .push(raws.len());
            raws.push((origin, raw));
        }
        let mut resolver = Resolver {
            raws: &raws,
            by_url: &out.by_url,
            code_systems: &self.code_systems,
            done: vec![None; raws.len()],
            visiting: vec![false; raws.len()],
        };
        for i in 0..raws.len() {
            resolver.resolve(i);
        }
        let compiled = resolver.done;
        for ((origin, raw), parts) in raws.into_iter().zip(compiled) {
            let parts = parts.unwrap_or_default();
            out.sets.push(ValueSet {
                url: raw.url.unwrap_or_default().into(),
                version: raw.version.map(Into::into),
                origin,
                members: parts.members,
                whole_systems: parts.whole,
                open: parts.open,
                excluded: parts.excluded,
                open_exclusions: parts.open_exclusions,
            });
        }
        out
    }
}

fn raws_version(raws: &[(Origin, RawValueSet)], i: usize) -> Option<&str> {
    raws[i].1.version.as_deref()
}

fn canonical(url: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{url}|{v}"),
        None => url.to_string(),
    }
}

fn collect_cs(system: &str, concepts: &[RawCsConcept], out: &mut CodeSet) {
    for c in concepts {
        out.insert(system, &c.code);
        collect_cs(system, &c.concept, out);
    }
}

fn collect_expansion(contains: &[RawContains], out: &mut CodeSet, count: &mut u64) {
    for c in contains {
        *count += 1;
        if let (Some(system), Some(code), false) = (&c.system, &c.code, c.is_abstract) {
            out.insert(system, code);
        }
        collect_expansion(&c.contains, out, count);
    }
}

#[derive(Debug, Clone, Default)]
struct Parts {
    members: CodeSet,
    whole: Vec<Box<str>>,
    open: Vec<OpenPart>,
    excluded: CodeSet,
    open_exclusions: Vec<OpenPart>,
}

impl Parts {
    fn enumerated(&self) -> bool {
        self.whole.is_empty() && self.open.is_empty() && self.open_exclusions.is_empty()
    }
}

struct Resolver<'a> {
    raws: &'a [(Origin, RawValueSet)],
    by_url: &'a HashMap<Box<str>, Vec<usize>>,
    code_systems: &'a HashMap<String, CodeSet>,
    done: Vec<Option<Parts>>,
    visiting: Vec<bool>,
}

impl Resolver<'_> {
    fn lookup(&self, canonical: &str) -> Option<usize> {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical, None),
        };
        let ids = self.by_url.get(url)?;
        match version {
            Some(v) => ids
                .iter()
                .copied()
                .find(|&i| raws_version(self.raws, i) == Some(v)),
            None => ids.iter().copied().max_by(|&a, &b| {
                compare_versions(raws_version(self.raws, a), raws_version(self.raws, b))
            }),
        }
    }

    /// The compiled parts of value set `i`; `None` while it is being
    /// resolved (an import cycle).
    fn resolve(&mut self, i: usize) -> Option<Parts> {
        if let Some(parts) = &self.done[i] {
            return Some(parts.clone());
        }
        if self.visiting[i] {
            return None;
        }
        self.visiting[i] = true;
        let raw = &self.raws[i].1;
        let mut parts = Parts::default();
        let expansion_complete = match &raw.expansion {
            Some(exp) if !exp.contains.is_empty() => {
                let mut count = 0;
                collect_expansion(&exp.contains, &mut parts.members, &mut count);
                let paged = exp.offset.unwrap_or(0) > 0 || exp.total.is_some_and(|t| t > count);
                if paged && raw.compose.is_none() {
                    parts.open.push(OpenPart {
                        system: None,
                        reason: NotEnumerable::PagedExpansion {
                            total: exp.total.unwrap_or(count),
                            contained: count,
                        },
                    });
                }
                !paged
            }
            _ => false,
        };
        if !expansion_complete && let Some(compose) = &raw.compose {
            for include in &compose.include {
                let part = self.include(include);
                parts.members.extend_from(&part.members);
                parts.whole.extend(part.whole);
                parts.open.extend(part.open);
            }
            for exclude in &compose.exclude {
                let part = self.include(exclude);
                parts.excluded.extend_from(&part.members);
                for system in &part.whole {
                    parts.members.remove_system(system);
                    parts.whole.retain(|s| s != system);
                }
                parts.open_exclusions.extend(part.open);
            }
            let excluded = parts.excluded.clone();
            parts.members.retain(|s, c| !excluded.contains(s, c));
        }
        self.visiting[i] = false;
        self.done[i] = Some(parts.clone());
        Some(parts)
    }

    /// One include (or exclude) entry, compiled on its own.
    fn include(&mut self, include: &RawInclude) -> Parts {
        let mut parts = Parts::default();
        let system = include.system.as_deref();
        let open = |reason| OpenPart {
            system: system.map(Into::into),
            reason,
        };
        if let Some(filter) = include.filter.first() {
            parts.open.push(open(NotEnumerable::Filter {
                property: filter.property.as_str().into(),
                op: filter.op.as_str().into(),
                value: filter.value.as_str().into(),
            }));
            return parts;
        }
        // The system's own contribution, before any intersection.
        let mut own = Parts::default();
        if let Some(system) = system {
            if !include.concept.is_empty() {
                for concept in &include.concept {
                    own.members.insert(system, &concept.code);
                }
            } else if let Some(codes) = self.code_systems.get(system) {
                own.members.extend_from(codes);
            } else {
                own.whole.push(system.into());
            }
        }
        if include.value_set.is_empty() {
            return own;
        }
        let mut imported = Vec::new();
        for canonical in &include.value_set {
            let Some(j) = self.lookup(canonical) else {
                parts.open.push(open(NotEnumerable::ImportNotLoaded {
                    value_set: canonical.as_str().into(),
                }));
                return parts;
            };
            match self.resolve(j) {
                Some(p) => imported.push(p),
                None => {
                    parts.open.push(open(NotEnumerable::ImportCycle {
                        value_set: canonical.as_str().into(),
                    }));
                    return parts;
                }
            }
        }
        if system.is_none() && imported.len() == 1 {
            return imported.pop().unwrap_or_default();
        }
        // An intersection: of the imports, and of the system's codes if any.
        let all_enumerated = imported.iter().all(Parts::enumerated)
            && (system.is_none() || own.whole.is_empty() || !include.concept.is_empty());
        if !all_enumerated {
            if system.is_some() && own.whole.len() == 1 && imported.iter().all(Parts::enumerated) {
                // system + value set: the value set's codes of that system.
                let mut members = imported[0].members.clone();
                for other in &imported[1..] {
                    members.retain(|s, c| other.members.contains(s, c));
                }
                let keep = own.whole[0].clone();
                members.retain(|s, _| *s == *keep);
                parts.members = members;
                return parts;
            }
            parts.open.push(open(NotEnumerable::Intersection));
            return parts;
        }
        let mut members = imported[0].members.clone();
        for other in &imported[1..] {
            members.retain(|s, c| other.members.contains(s, c));
        }
        if system.is_some() {
            members.retain(|s, c| own.members.contains(s, c));
        }
        parts.members = members;
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    fn load(jsons: &[&str]) -> ValueSets {
        let mut loader = ValueSetLoader::new();
        for (i, json) in jsons.iter().enumerate() {
            loader
                .add_json(Origin::file(format!("vs{i}.json")), json.as_bytes())
                .unwrap();
        }
        loader.build()
    }

    const LOINC: &str = "http://loinc.org";

    #[test]
    fn enumerated_compose_and_excludes() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/vs","compose":{
            "include":[{"system":"http://loinc.org","concept":[{"code":"8867-4"},{"code":"8480-6"}]}],
            "exclude":[{"system":"http://loinc.org","concept":[{"code":"8480-6"}]}]}}"#,
        ]);
        let vs = sets.get("http://x/vs").unwrap();
        assert_eq!(vs.membership(LOINC, "8867-4"), Membership::Member);
        assert_eq!(vs.membership(LOINC, "8480-6"), Membership::NotMember);
        assert_eq!(
            vs.membership("http://snomed.info/sct", "8867-4"),
            Membership::NotMember
        );
        assert!(vs.is_fully_checkable());
    }

    #[test]
    fn expansion_nested_and_abstract() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/e","expansion":{"total":3,"contains":[
            {"system":"http://loinc.org","code":"LP1-1","abstract":true,"contains":[
              {"system":"http://loinc.org","code":"8867-4"},{"system":"http://loinc.org","code":"8480-6"}]}]}}"#,
        ]);
        let vs = sets.get("http://x/e").unwrap();
        assert_eq!(vs.membership(LOINC, "8480-6"), Membership::Member);
        assert_eq!(vs.membership(LOINC, "LP1-1"), Membership::NotMember);
        assert!(vs.is_fully_checkable());
    }

    #[test]
    fn paged_expansion_is_not_checkable_beyond_its_page() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/p","expansion":{"total":100,"contains":[
            {"system":"http://loinc.org","code":"8867-4"}]}}"#,
        ]);
        let vs = sets.get("http://x/p").unwrap();
        assert_eq!(vs.membership(LOINC, "8867-4"), Membership::Member);
        assert!(matches!(
            vs.membership(LOINC, "1-8"),
            Membership::NotCheckable(_)
        ));
        let line = vs.not_checkable().next().unwrap().to_string();
        assert_eq!(
            line,
            "codes of any system beyond the 1 of 100 its expansion lists: not checkable offline"
        );
    }

    #[test]
    fn filters_whole_systems_and_imports() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/vital","compose":{"include":[
                {"system":"http://loinc.org","concept":[{"code":"8867-4"}]}]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/mixed","compose":{"include":[
                {"valueSet":["http://x/vital"]},
                {"system":"http://snomed.info/sct","filter":[{"property":"concept","op":"is-a","value":"404684003"}]},
                {"system":"http://hl7.org/fhir/sid/icd-10-cm"},
                {"valueSet":["http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113762.1.4.1"]}]}}"#,
            r#"{"resourceType":"CodeSystem","url":"http://x/cs","content":"complete","concept":[
                {"code":"a","concept":[{"code":"a1"}]}]}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/cs-vs","compose":{"include":[{"system":"http://x/cs"}]}}"#,
        ]);
        let vs = sets.get("http://x/mixed").unwrap();
        assert_eq!(vs.membership(LOINC, "8867-4"), Membership::Member);
        assert_eq!(
            vs.membership("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
            Membership::InWholeSystem
        );
        let Membership::NotCheckable(part) = vs.membership("http://snomed.info/sct", "44054006")
        else {
            panic!("a filter is not checkable")
        };
        assert_eq!(
            part.to_string(),
            "codes of http://snomed.info/sct selected by filter `concept is-a 404684003`: not checkable offline"
        );
        // The VSAC import could hold any system's codes.
        assert!(matches!(
            vs.membership("http://x/other", "1"),
            Membership::NotCheckable(_)
        ));
        assert_eq!(vs.not_checkable().count(), 2);
        // A whole system whose complete CodeSystem is loaded is enumerated.
        let cs = sets.get("http://x/cs-vs").unwrap();
        assert_eq!(cs.membership("http://x/cs", "a1"), Membership::Member);
        assert_eq!(cs.membership("http://x/cs", "b"), Membership::NotMember);
    }

    #[test]
    fn intersections_and_cycles() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/a","compose":{"include":[
                {"system":"http://loinc.org","concept":[{"code":"1-8"},{"code":"8867-4"}]},
                {"system":"http://snomed.info/sct","concept":[{"code":"38341003"}]}]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/loinc-of-a","compose":{"include":[
                {"system":"http://loinc.org","valueSet":["http://x/a"]}]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/cycle","compose":{"include":[{"valueSet":["http://x/cycle"]}]}}"#,
        ]);
        let vs = sets.get("http://x/loinc-of-a").unwrap();
        assert_eq!(vs.membership(LOINC, "1-8"), Membership::Member);
        assert_eq!(
            vs.membership("http://snomed.info/sct", "38341003"),
            Membership::NotMember
        );
        let cycle = sets.get("http://x/cycle").unwrap();
        assert!(matches!(
            cycle.membership(LOINC, "1-8"),
            Membership::NotCheckable(_)
        ));
    }

    #[test]
    fn versions_and_duplicates() {
        let sets = load(&[
            r#"{"resourceType":"ValueSet","url":"http://x/v","version":"3.1.1","compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-8"}]}]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/v","version":"10.0.0","compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"8867-4"}]}]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/v","version":"6.1.0","compose":{"include":[]}}"#,
            r#"{"resourceType":"ValueSet","url":"http://x/v","version":"3.1.1","compose":{"include":[]}}"#,
        ]);
        assert_eq!(
            sets.get("http://x/v").unwrap().version.as_deref(),
            Some("10.0.0")
        );
        assert!(
            sets.get("http://x/v|3.1.1")
                .unwrap()
                .members()
                .contains(LOINC, "1-8")
        );
        assert!(sets.get("http://x/v|9").is_none());
        assert_eq!(sets.len(), 3);
        assert_eq!(sets.duplicates().len(), 1);
        assert_eq!(sets.duplicates()[0].0, "http://x/v|3.1.1");
    }

    #[test]
    fn bad_resources_name_their_file() {
        let mut loader = ValueSetLoader::new();
        let err = loader
            .add_json(Origin::file("p.json"), br#"{"resourceType":"Patient"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json: a ValueSet or CodeSystem was expected, but the resource is a Patient"
        );
        let err = loader
            .add_json(Origin::file("n.json"), br#"{"resourceType":"ValueSet"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "n.json: `url` is missing: a ValueSet needs it"
        );
        let err = loader
            .add_json(Origin::file("s.json"), br#"{"resourceType":"ValueSet","url":"u","compose":{"include":[{"concept":[{"code":1}]}]}}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("s.json: not a valid ValueSet: invalid type"),
            "{err}"
        );
    }

    #[test]
    #[ignore = "reads ../shared/data (US Core packages, value sets), which a clone lacks: cargo test -- --ignored beside it"]
    fn the_shared_terminology_directory() {
        let mut loader = ValueSetLoader::new();
        let scan = loader.add_source(&testdata::shared("terminology")).unwrap();
        assert_eq!(scan.matched, 4);
        let sets = loader.build();
        let gps = sets
            .get("http://terminology.hl7.org/ValueSet/snomed-intl-gps")
            .unwrap();
        assert_eq!(gps.members().len(), 26_158);
        assert_eq!(
            gps.membership("http://snomed.info/sct", "38341003"),
            Membership::Member
        );
        let docs = sets
            .get("http://hl7.org/fhir/ValueSet/c80-doc-typecodes")
            .unwrap();
        assert_eq!(docs.members().len(), 6_401);
        assert!(sets.iter().all(ValueSet::is_fully_checkable));
    }

    #[test]
    #[ignore = "reads ../shared/data (US Core packages, value sets), which a clone lacks: cargo test -- --ignored beside it"]
    fn us_core_packages() {
        let mut loader = ValueSetLoader::new();
        let dir = testdata::shared("us-core/packages");
        let scan = loader.add_source(&dir).unwrap();
        assert_eq!(
            scan.matched,
            32 + 36 + 5 + 5,
            "value sets and code systems of both packages"
        );
        loader
            .add_source(&testdata::shared(
                "terminology/ValueSet-observation-vitalsignresult.json",
            ))
            .unwrap();
        let sets = loader.build();
        // Only 3.1.1 has this one.
        let smoking = sets
            .get("http://hl7.org/fhir/us/core/ValueSet/us-core-observation-smokingstatus")
            .unwrap();
        assert_eq!(smoking.version.as_deref(), Some("3.1.1"));
        assert_eq!(
            smoking.membership("http://snomed.info/sct", "449868002"),
            Membership::Member
        );
        let birthsex = sets
            .get("http://hl7.org/fhir/us/core/ValueSet/birthsex|3.1.1")
            .unwrap();
        assert_eq!(
            birthsex.membership(
                "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender",
                "F"
            ),
            Membership::Member
        );
        assert!(birthsex.is_fully_checkable());
        // 6.1.0 takes birth sex from VSAC: not checkable offline.
        let birthsex = sets
            .get("http://hl7.org/fhir/us/core/ValueSet/birthsex")
            .unwrap();
        assert_eq!(birthsex.version.as_deref(), Some("6.1.0"));
        assert!(matches!(
            birthsex.membership(
                "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender",
                "F"
            ),
            Membership::NotCheckable(_)
        ));
        // Vital signs 6.1.0: six LOINC codes, plus the FHIR vital-sign set loaded beside it.
        let vitals = sets
            .get("http://hl7.org/fhir/us/core/ValueSet/us-core-vital-signs")
            .unwrap();
        assert_eq!(vitals.membership(LOINC, "8867-4"), Membership::Member);
        assert!(
            vitals.is_fully_checkable(),
            "{:?}",
            vitals.not_checkable().collect::<Vec<_>>()
        );
        assert_eq!(vitals.membership(LOINC, "2339-0"), Membership::NotMember);
        // A whole US Core code system, enumerated from the package's CodeSystem.
        let simple = sets
            .get("http://hl7.org/fhir/us/core/ValueSet/us-core-simple-observation-category")
            .unwrap();
        assert_eq!(
            simple.membership(
                "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                "sdoh"
            ),
            Membership::Member
        );
        assert_eq!(
            simple.membership(
                "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                "nope"
            ),
            Membership::NotMember
        );
        assert!(sets.not_checkable().count() > 10);
    }
}
