//! Profile validation against US Core: StructureDefinition snapshots from
//! an IG package compiled once into rules ([`profile`]), evaluated on the
//! parsed resource ([`check`]).
//!
//! A resource is validated against each profile its `meta.profile` names
//! that the package holds at the version named, else against its type's
//! default profile (the one named `us-core-<type>`), else against the
//! profiles whose `code` pattern it matches (a body weight), else those
//! whose required category slices it carries (a lab result); a Bundle's
//! entries are validated one by one. What is checked: cardinality, fixed and
//! pattern values, choice types, reference target types, required bindings
//! to value sets the package enumerates, slices discriminated by value or
//! pattern, and FHIRPath invariants of severity error. What is not yet:
//! other slices, invariants the engine cannot run (listed by
//! [`Profiles::unsupported_invariants`]), bindings to value sets outside
//! the package ([`Profiles::unchecked_bindings`]), contained and
//! bundle-internal references.

pub mod check;
pub mod invariant;
pub mod job;
pub mod profile;
pub mod table;
#[cfg(test)]
mod tests;
pub mod tree;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::terminology::package::{Visit, for_each_package_resource, for_each_resource};
use crate::terminology::{Origin, TerminologyError, ValueSetLoader};
pub use job::{LineVerdict, OnInvalid, Validation};
use profile::{BoundCodes, CodeBinding, Profile};
pub use tree::Tree;

/// The US Core 6.1.0 package, compiled into the binary.
const US_CORE_610: &[u8] = include_bytes!("../../data/us-core/us_core_610.tgz");

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
        })
    }
}

/// One thing a resource breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The profile's canonical URL.
    pub profile: String,
    /// The rule: the element id in the profile (`Patient.identifier.system`).
    pub element: String,
    /// Where in the resource (`Patient.identifier[1].system`).
    pub path: String,
    pub message: String,
}

/// The distinct profiles `findings` name, sorted.
pub fn broken_profiles(findings: &[Finding]) -> Vec<&str> {
    let mut profiles: Vec<&str> = findings.iter().map(|f| f.profile.as_str()).collect();
    profiles.sort_unstable();
    profiles.dedup();
    profiles
}

/// A resource's verdict.
#[derive(Debug, Clone, Default)]
pub struct Verdict<'p> {
    /// The profiles it was checked against (their URLs, borrowed from the package).
    pub profiles: Vec<&'p str>,
    pub findings: Vec<Finding>,
}

impl Verdict<'_> {
    pub fn is_valid(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Error)
    }
}

/// The profiles' lookups run per resource: a fast hash. The maps hold only
/// the package's keys; looking up a resource's strings inserts nothing.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The compiled profiles of one IG package.
#[derive(Debug)]
pub struct Profiles {
    /// `hl7.fhir.us.core@6.1.0`, or the path it came from.
    pub package: String,
    by_url: Map<String, Profile>,
    default_for_type: Map<String, String>,
    /// The URLs of each type's profiles, sorted.
    of_type: Map<String, Vec<String>>,
    /// Profiles with a `code` pattern, by the first (system, code) the
    /// pattern holds: a resource's code finds its candidates by lookup,
    /// not by matching every profile of its type. Patterns without a
    /// coding sit under ("", "").
    by_code_pattern: Map<String, Map<String, Vec<String>>>,
}

impl Profiles {
    /// US Core 6.1.0, compiled into the binary.
    pub fn us_core() -> Result<Profiles, TerminologyError> {
        Self::compile_package(
            "hl7.fhir.us.core@6.1.0",
            Cursor::new(US_CORE_610),
            Path::new("us_core_610.tgz (built in)"),
        )
    }

    /// The profiles of a package `.tgz` held in memory, called `package`.
    pub fn compile_package(
        package: &str,
        bytes: Cursor<&[u8]>,
        name: &Path,
    ) -> Result<Profiles, TerminologyError> {
        Self::compile(package.into(), |types, each| {
            for_each_package_resource(bytes.clone(), name, types, each).map(|_| ())
        })
    }

    /// The profiles of a package `.tgz`, a directory or a JSON file.
    pub fn load(source: &Path) -> Result<Profiles, TerminologyError> {
        let source: PathBuf = source.into();
        Self::compile(source.display().to_string(), |types, each| {
            for_each_resource(&source, types, each).map(|_| ())
        })
    }

    fn compile(
        package: String,
        read: impl Fn(&[&str], &mut Visit<'_>) -> Result<(), TerminologyError>,
    ) -> Result<Profiles, TerminologyError> {
        let mut sets = ValueSetLoader::new();
        let mut definitions: Vec<(Origin, Vec<u8>)> = Vec::new();
        let mut type_of: HashMap<String, String> = HashMap::new();
        read(
            &["ValueSet", "StructureDefinition"],
            &mut |origin, bytes| {
                let json_err = |source| TerminologyError::Json {
                    origin: origin.clone(),
                    source,
                };
                match profile::peek(bytes).map_err(json_err)? {
                    profile::Member::ValueSet => return sets.add_json(origin, bytes),
                    profile::Member::ResourceProfile(url, resource_type) => {
                        type_of.insert(url, resource_type);
                        definitions.push((origin, bytes.to_vec()));
                    }
                    profile::Member::Other => {}
                }
                Ok(())
            },
        )?;
        let value_sets = sets.build();
        let type_of_profile = |url: &str| {
            profile::core_type(url).or_else(|| type_of.get(profile::strip_version(url)).cloned())
        };
        let mut by_url = Map::default();
        for (origin, bytes) in definitions {
            let compiled = profile::compile(&bytes, &value_sets, &type_of_profile)
                .map_err(|source| TerminologyError::Json { origin, source })?;
            if let Some(compiled) = compiled {
                by_url.insert(compiled.url.clone(), compiled);
            }
        }
        let default_for_type = default_profiles(&by_url);
        let mut of_type: Map<String, Vec<String>> = Map::default();
        for profile in by_url.values() {
            of_type
                .entry(profile.resource_type.clone())
                .or_default()
                .push(profile.url.clone());
        }
        of_type.values_mut().for_each(|urls| urls.sort());
        let mut by_code_pattern: Map<String, Map<String, Vec<String>>> = Map::default();
        for profile in by_url.values() {
            if let Some(pattern) = &profile.code_pattern {
                let (system, code) = profile::first_coding(pattern).unwrap_or_default();
                by_code_pattern
                    .entry(system)
                    .or_default()
                    .entry(code)
                    .or_default()
                    .push(profile.url.clone());
            }
        }
        Ok(Profiles {
            package,
            by_url,
            default_for_type,
            of_type,
            by_code_pattern,
        })
    }

    pub fn len(&self) -> usize {
        self.by_url.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_url.is_empty()
    }

    pub fn get(&self, url: &str) -> Option<&Profile> {
        self.by_url.get(profile::strip_version(url))
    }

    /// The profile a canonical names, if its version (when given) is the one loaded.
    pub fn get_version(&self, canonical: &str) -> Option<&Profile> {
        let profile = self.get(canonical)?;
        match canonical.split_once('|') {
            Some((_, version)) if profile.version.as_deref() != Some(version) => None,
            _ => Some(profile),
        }
    }

    /// The profile a resource of `resource_type` without a known
    /// `meta.profile` is checked against, if the package has one.
    pub fn default_for(&self, resource_type: &str) -> Option<&Profile> {
        self.default_for_type
            .get(resource_type)
            .and_then(|url| self.by_url.get(url))
    }

    /// The profiles a resource that names none of the package's is checked
    /// against: the type's default, else the profiles whose `code` pattern
    /// it matches, else those whose required category codes it all has.
    pub fn inferred_for<'v>(&self, resource_type: &str, resource: impl Tree<'v>) -> Vec<&Profile> {
        if let Some(profile) = self.default_for(resource_type) {
            return vec![profile];
        }
        let code = resource.get("code");
        let mut by_code = self.matching_code_pattern(resource_type, code);
        if by_code.is_empty() {
            let of_type = self
                .of_type
                .get(resource_type)
                .into_iter()
                .flatten()
                .filter_map(|url| self.by_url.get(url));
            let categories: Vec<(String, String)> = resource
                .get("category")
                .map(|c| match c.items() {
                    Some(items) => items.flat_map(profile::codings).collect(),
                    None => profile::codings(c).collect(),
                })
                .unwrap_or_default();
            by_code = of_type
                .filter(|p| !p.pins_code && !p.category_codes.is_empty())
                .filter(|p| p.category_codes.iter().all(|c| categories.contains(c)))
                .filter(|p| match &p.code_binding {
                    CodeBinding::Open => true,
                    CodeBinding::Enumerated(pairs) => code
                        .into_iter()
                        .flat_map(profile::codings)
                        .any(|(system, code)| pairs.contains(&system, &code)),
                    // The category says what it is; the code cannot tell otherwise.
                    CodeBinding::Unknown => true,
                })
                .collect();
        }
        by_code.sort_by(|a, b| a.url.cmp(&b.url));
        by_code.dedup_by(|a, b| a.url == b.url);
        by_code
    }

    /// The profiles of `resource_type` whose `code` pattern `code` matches:
    /// candidates looked up by each of its codings (and those whose
    /// pattern has no coding), then matched.
    fn matching_code_pattern<'v, T: Tree<'v>>(
        &self,
        resource_type: &str,
        code: Option<T>,
    ) -> Vec<&Profile> {
        let Some(code) = code else {
            return Vec::new();
        };
        let lookup = |system: &str, code: &str| {
            self.by_code_pattern
                .get(system)
                .and_then(|codes| codes.get(code))
        };
        let codings = code.get("coding").and_then(|c| c.items());
        let candidates = codings
            .into_iter()
            .flatten()
            .filter_map(|coding| {
                let system = coding.get("system").and_then(|s| s.as_str()).unwrap_or("");
                let code = coding.get("code")?.as_str()?;
                // A pattern coding without a system matches any system's code.
                let any_system = (!system.is_empty()).then(|| lookup("", code)).flatten();
                Some(lookup(system, code).into_iter().chain(any_system))
            })
            .flatten()
            .chain(lookup("", ""))
            .flatten();
        candidates
            .filter_map(|url| self.by_url.get(url))
            .filter(|p| p.resource_type == resource_type)
            .filter(|p| {
                p.code_pattern
                    .as_ref()
                    .is_some_and(|pattern| tree::matches_pattern(code, pattern))
            })
            .collect()
    }

    /// Required bindings whose value set the package does not enumerate
    /// (so membership is not checked offline): `(profile element, value set)`.
    pub fn unchecked_bindings(&self) -> BTreeSet<(String, String)> {
        self.by_url
            .values()
            .flat_map(|p| &p.rules)
            .filter_map(|rule| match &rule.binding {
                Some(b) if matches!(b.codes, BoundCodes::NotCheckable) => {
                    Some((rule.element.clone(), b.value_set.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Validates a serde_json resource: written out and read back as the
    /// load path's tree, so invariants are evaluated and the verdict is the
    /// one a load gives.
    pub fn validate_value(&self, resource: &serde_json::Value) -> Verdict<'_> {
        let text = resource.to_string();
        let arena = bumpalo::Bump::new();
        match crate::view::Json::parse(&text, &arena) {
            Ok(json) => self.validate(&json),
            // serde_json wrote it: cannot fail to parse.
            Err(e) => unreachable!("serde_json wrote invalid JSON: {e}"),
        }
    }

    /// Error invariants the FHIRPath engine cannot evaluate, by profile
    /// element (listed, never failed).
    pub fn unsupported_invariants(&self) -> BTreeSet<invariant::Unsupported> {
        self.by_url
            .values()
            .flat_map(|p| p.unsupported_invariants.iter().cloned())
            .collect()
    }

    /// Validates one resource (a Bundle: each entry's resource, the paths
    /// prefixed with the entry). FHIRPath invariants are evaluated only on
    /// the load path's tree ([`Tree::as_json`]).
    pub fn validate<'v>(&self, resource: impl Tree<'v>) -> Verdict<'_> {
        let mut verdict = Verdict::default();
        self.validate_into(resource, "", &mut verdict);
        verdict
    }

    fn validate_into<'v, 'p>(
        &'p self,
        resource: impl Tree<'v>,
        prefix: &str,
        verdict: &mut Verdict<'p>,
    ) {
        let resource_type = resource
            .get("resourceType")
            .and_then(|t| t.as_str())
            .unwrap_or("");
        if resource_type == "Bundle" {
            let entries = resource.get("entry").and_then(|e| e.items());
            for (i, entry) in entries.into_iter().flatten().enumerate() {
                if let Some(inner) = entry.get("resource") {
                    self.validate_into(
                        inner,
                        &format!("{prefix}Bundle.entry[{i}].resource/"),
                        verdict,
                    );
                }
            }
            return;
        }
        let named: Vec<&str> = resource
            .get("meta")
            .and_then(|m| m.get("profile"))
            .and_then(|p| p.items())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        let declared: Vec<&Profile> = named
            .iter()
            .filter_map(|url| self.get_version(url))
            .filter(|p| p.resource_type == resource_type)
            .collect();
        // A profile of this package named at another version (`|3.1.1`)
        // is not the one loaded: checking against these rules would judge
        // the resource by a profile it does not claim.
        let other_version = named.iter().any(|url| self.get(url).is_some());
        let profiles = match (declared.is_empty(), other_version) {
            (false, _) => declared,
            (true, true) => Vec::new(),
            (true, false) => self.inferred_for(resource_type, resource),
        };
        for profile in profiles {
            verdict.profiles.push(&profile.url);
            let start = verdict.findings.len();
            check::check(profile, resource, &mut verdict.findings);
            if !prefix.is_empty() {
                for finding in &mut verdict.findings[start..] {
                    finding.path = format!("{prefix}{}", finding.path);
                }
            }
        }
    }
}

/// Per type: the profile named `us-core-<type>` (`us-core-patient`). Not
/// "the type's only profile": US Core's only Device profile is for
/// implantable devices, which most Devices are not; Observation has many
/// profiles and no general one.
fn default_profiles(by_url: &Map<String, Profile>) -> Map<String, String> {
    by_url
        .values()
        .filter(|p| {
            let general = format!("/us-core-{}", p.resource_type.to_ascii_lowercase());
            p.url.ends_with(&general)
        })
        .map(|p| (p.resource_type.clone(), p.url.clone()))
        .collect()
}
