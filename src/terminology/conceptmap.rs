//! Concept maps: FHIR ConceptMap JSON compiled into a lookup from a source
//! (system, code) to the codings to add beside it.
//!
//! In: R4 ConceptMaps (`group[].source/target`, `element[].code`,
//! `element[].target[].code/display/equivalence`; R5's `relationship` is
//! read too) from directories, files and packages. Out: [`ConceptMaps`],
//! where [`ConceptMaps::targets`] is two hash lookups, no allocation.
//!
//! Normalisation adds a coding and never replaces one: the original stays.
//! Only targets whose equivalence is accepted are added; by default those
//! where the source implies the target (`equal`, `equivalent`, `wider`,
//! `subsumes`), because adding a narrower or inexact code would state more
//! than the source did. Not applied, and counted in [`Skipped`]: targets
//! with `dependsOn`/`product` (conditional on other elements), `unmapped`
//! rules, groups without a target system, and targets not accepted.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::codeset::FxHashMap;
use super::error::{Malformed, Origin, TerminologyError};
use super::package::{self, Scan};

/// How a target relates to its source (R4 `ConceptMapEquivalence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Equivalence {
    RelatedTo,
    Equivalent,
    Equal,
    Wider,
    Subsumes,
    Narrower,
    Specializes,
    Inexact,
    Unmatched,
    Disjoint,
}

impl Equivalence {
    /// The R4 code, or R5's `relationship` in R4 terms.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "relatedto" | "related-to" => Self::RelatedTo,
            "equivalent" => Self::Equivalent,
            "equal" => Self::Equal,
            "wider" | "source-is-narrower-than-target" => Self::Wider,
            "subsumes" => Self::Subsumes,
            "narrower" | "source-is-broader-than-target" => Self::Narrower,
            "specializes" => Self::Specializes,
            "inexact" => Self::Inexact,
            "unmatched" => Self::Unmatched,
            "disjoint" | "not-related-to" => Self::Disjoint,
            _ => return None,
        })
    }

    /// Accepted unless configured otherwise: the source implies the target.
    pub const DEFAULT_ACCEPTED: [Self; 4] =
        [Self::Equal, Self::Equivalent, Self::Wider, Self::Subsumes];
}

/// Which loaded map a target came from (index into [`ConceptMaps::maps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(pub u32);

/// A coding to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub system: Box<str>,
    pub code: Box<str>,
    pub display: Option<Box<str>>,
    pub equivalence: Equivalence,
    pub map: MapId,
}

/// A loaded map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub url: Option<Box<str>>,
    pub version: Option<Box<str>>,
    pub origin: Origin,
}

/// Map entries not turned into added codings, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub not_accepted: u64,
    pub conditional: u64,
    pub unmapped_rules: u64,
    pub no_target_system: u64,
    pub duplicate: u64,
}

/// source system → source code → targets.
type TargetIndex = FxHashMap<Box<str>, FxHashMap<Box<str>, Box<[Target]>>>;

/// (source system, source code, target system, target code).
type PairKey = (Box<str>, Box<str>, Box<str>, Box<str>);

/// The job's concept maps, compiled.
#[derive(Debug, Clone, Default)]
pub struct ConceptMaps {
    maps: Vec<MapInfo>,
    targets: TargetIndex,
    skipped: Skipped,
}

impl ConceptMaps {
    /// What to add beside (system, code); empty when nothing maps it.
    pub fn targets(&self, system: &str, code: &str) -> &[Target] {
        self.targets
            .get(system)
            .and_then(|codes| codes.get(code))
            .map_or(&[], |t| t)
    }

    /// True when some group maps from `system` (its codes are expected to
    /// have a mapping).
    pub fn is_source_system(&self, system: &str) -> bool {
        self.targets.contains_key(system)
    }

    pub fn maps(&self) -> &[MapInfo] {
        &self.maps
    }

    pub fn map(&self, id: MapId) -> &MapInfo {
        &self.maps[id.0 as usize]
    }

    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Number of (source, target) pairs that will be added.
    pub fn len(&self) -> usize {
        self.targets
            .values()
            .flat_map(|codes| codes.values())
            .map(|t| t.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Every system a target is in (for the job's known systems).
    pub fn target_systems(&self) -> impl Iterator<Item = &str> {
        self.targets
            .values()
            .flat_map(|codes| codes.values())
            .flat_map(|t| t.iter().map(|t| &*t.system))
    }
}

// ---- FHIR JSON ----------------------------------------------------------

#[derive(Deserialize)]
struct RawConceptMap {
    url: Option<String>,
    version: Option<String>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Deserialize)]
struct RawGroup {
    source: Option<String>,
    target: Option<String>,
    #[serde(default)]
    element: Vec<RawElement>,
    unmapped: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawElement {
    code: Option<String>,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTarget {
    code: Option<String>,
    display: Option<String>,
    equivalence: Option<String>,
    relationship: Option<String>,
    #[serde(default)]
    depends_on: Vec<serde_json::Value>,
    #[serde(default)]
    product: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceType {
    resource_type: Option<String>,
}

/// Collects ConceptMaps; [`Self::build`] compiles them.
#[derive(Debug, Clone)]
pub struct ConceptMapLoader {
    accepted: Vec<Equivalence>,
    maps: Vec<MapInfo>,
    entries: Vec<(Box<str>, Box<str>, Target)>,
    skipped: Skipped,
}

impl Default for ConceptMapLoader {
    fn default() -> Self {
        Self {
            accepted: Equivalence::DEFAULT_ACCEPTED.to_vec(),
            maps: Vec::new(),
            entries: Vec::new(),
            skipped: Skipped::default(),
        }
    }
}

impl ConceptMapLoader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Which equivalences become added codings (before anything is added).
    pub fn with_accepted(mut self, accepted: &[Equivalence]) -> Self {
        self.accepted = accepted.to_vec();
        self
    }

    /// Reads the ConceptMaps of a directory (`*.json`, `*.tgz`), a package or a file.
    pub fn add_source(&mut self, source: &Path) -> Result<Scan, TerminologyError> {
        package::for_each_resource(source, &["ConceptMap"], &mut |origin, bytes| {
            self.add_json(origin, bytes)
        })
    }

    /// Adds one ConceptMap resource.
    pub fn add_json(&mut self, origin: Origin, bytes: &[u8]) -> Result<(), TerminologyError> {
        let kind: ResourceType =
            serde_json::from_slice(bytes).map_err(|source| TerminologyError::Json {
                origin: origin.clone(),
                source,
            })?;
        if kind.resource_type.as_deref() != Some("ConceptMap") {
            return Err(TerminologyError::WrongResource {
                origin,
                expected: "ConceptMap",
                found: kind
                    .resource_type
                    .unwrap_or_else(|| "resource without resourceType".into()),
            });
        }
        let raw: RawConceptMap =
            serde_json::from_slice(bytes).map_err(|source| TerminologyError::Shape {
                origin: origin.clone(),
                resource: "ConceptMap",
                source,
            })?;
        let map = MapId(self.maps.len() as u32);
        let mut entries = Vec::new();
        let mut skipped = Skipped::default();
        for (g, group) in raw.group.iter().enumerate() {
            if group.unmapped.is_some() {
                skipped.unmapped_rules += 1;
            }
            let Some(source) = group.source.as_deref() else {
                return Err(TerminologyError::Malformed {
                    origin,
                    problem: Malformed::Missing {
                        resource: "ConceptMap group",
                        field: "source",
                    },
                });
            };
            for (e, element) in group.element.iter().enumerate() {
                let Some(code) = element.code.as_deref() else {
                    continue;
                };
                for (t, target) in element.target.iter().enumerate() {
                    let field = || format!("group[{g}].element[{e}].target[{t}].equivalence");
                    let equivalence = match (&target.equivalence, &target.relationship) {
                        (Some(v), _) | (None, Some(v)) => Equivalence::parse(v).ok_or_else(|| {
                            TerminologyError::Malformed {
                                origin: origin.clone(),
                                problem: Malformed::BadValue {
                                    field: field(),
                                    value: v.clone(),
                                    expected: "the R4 equivalences (equivalent, wider, ...) or R5 relationships",
                                },
                            }
                        })?,
                        (None, None) => {
                            return Err(TerminologyError::Malformed {
                                origin,
                                problem: Malformed::Missing { resource: "ConceptMap target", field: "equivalence" },
                            });
                        }
                    };
                    let Some(target_code) = target.code.as_deref() else {
                        continue;
                    };
                    if !target.depends_on.is_empty() || !target.product.is_empty() {
                        skipped.conditional += 1;
                        continue;
                    }
                    if !self.accepted.contains(&equivalence) {
                        skipped.not_accepted += 1;
                        continue;
                    }
                    let Some(target_system) = group.target.as_deref() else {
                        skipped.no_target_system += 1;
                        continue;
                    };
                    entries.push((
                        Box::from(source),
                        Box::from(code),
                        Target {
                            system: target_system.into(),
                            code: target_code.into(),
                            display: target.display.as_deref().map(Into::into),
                            equivalence,
                            map,
                        },
                    ));
                }
            }
        }
        self.maps.push(MapInfo {
            url: raw.url.map(Into::into),
            version: raw.version.map(Into::into),
            origin,
        });
        self.entries.extend(entries);
        let s = &mut self.skipped;
        s.not_accepted += skipped.not_accepted;
        s.conditional += skipped.conditional;
        s.unmapped_rules += skipped.unmapped_rules;
        s.no_target_system += skipped.no_target_system;
        Ok(())
    }

    pub fn build(self) -> ConceptMaps {
        let mut grouped: HashMap<Box<str>, HashMap<Box<str>, Vec<Target>>> = HashMap::new();
        let mut seen: HashSet<PairKey> = HashSet::new();
        let mut skipped = self.skipped;
        for (system, code, target) in self.entries {
            let key = (
                system.clone(),
                code.clone(),
                target.system.clone(),
                target.code.clone(),
            );
            if !seen.insert(key) {
                skipped.duplicate += 1;
                continue;
            }
            grouped
                .entry(system)
                .or_default()
                .entry(code)
                .or_default()
                .push(target);
        }
        let targets = grouped
            .into_iter()
            .map(|(system, codes)| {
                let codes = codes
                    .into_iter()
                    .map(|(c, t)| (c, t.into_boxed_slice()))
                    .collect();
                (system, codes)
            })
            .collect();
        ConceptMaps {
            maps: self.maps,
            targets,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "http://hospital.example.org/codes";

    fn map_json(targets: &str) -> String {
        format!(
            r#"{{"resourceType":"ConceptMap","url":"http://x/cm","group":[{{"source":"{LOCAL}","target":"http://snomed.info/sct",
                "element":[{{"code":"DM2","target":[{targets}]}}]}}]}}"#
        )
    }

    fn build(json: &str) -> Result<ConceptMaps, TerminologyError> {
        let mut loader = ConceptMapLoader::new();
        loader.add_json(Origin::file("cm.json"), json.as_bytes())?;
        Ok(loader.build())
    }

    #[test]
    fn accepted_targets_are_added() {
        let maps = build(&map_json(
            r#"{"code":"44054006","display":"Diabetes mellitus type 2","equivalence":"equivalent"},
               {"code":"73211009","equivalence":"wider"},
               {"code":"9414007","equivalence":"narrower"},
               {"code":"1","equivalence":"inexact","dependsOn":[{"property":"x"}]}"#,
        ))
        .unwrap();
        let targets = maps.targets(LOCAL, "DM2");
        let codes: Vec<_> = targets.iter().map(|t| &*t.code).collect();
        assert_eq!(codes, ["44054006", "73211009"]);
        assert_eq!(
            targets[0].display.as_deref(),
            Some("Diabetes mellitus type 2")
        );
        assert_eq!(maps.map(targets[0].map).url.as_deref(), Some("http://x/cm"));
        assert!(maps.targets(LOCAL, "DM1").is_empty());
        assert!(maps.is_source_system(LOCAL));
        assert!(!maps.is_source_system("http://snomed.info/sct"));
        assert_eq!(maps.skipped().not_accepted, 1);
        assert_eq!(maps.skipped().conditional, 1);
        assert_eq!(maps.len(), 2);
    }

    #[test]
    fn accepting_more_and_r5_relationships() {
        let mut loader = ConceptMapLoader::new().with_accepted(&[Equivalence::Narrower]);
        loader
            .add_json(
                Origin::file("cm.json"),
                map_json(r#"{"code":"9414007","relationship":"source-is-broader-than-target"}"#)
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(loader.build().targets(LOCAL, "DM2").len(), 1);
    }

    #[test]
    fn duplicates_across_maps_are_added_once() {
        let mut loader = ConceptMapLoader::new();
        let json = map_json(r#"{"code":"44054006","equivalence":"equal"}"#);
        loader
            .add_json(Origin::file("a.json"), json.as_bytes())
            .unwrap();
        loader
            .add_json(Origin::file("b.json"), json.as_bytes())
            .unwrap();
        let maps = loader.build();
        assert_eq!(maps.targets(LOCAL, "DM2").len(), 1);
        assert_eq!(maps.skipped().duplicate, 1);
        assert_eq!(maps.maps().len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = build(&map_json(r#"{"code":"1","equivalence":"same"}"#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cm.json: `group[0].element[0].target[0].equivalence` holds `same`, which is not one of the R4 equivalences (equivalent, wider, ...) or R5 relationships"
        );
        let err = build(&map_json(r#"{"code":"1"}"#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cm.json: `equivalence` is missing: a ConceptMap target needs it"
        );
        let err = build(r#"{"resourceType":"ValueSet"}"#).unwrap_err();
        assert!(matches!(err, TerminologyError::WrongResource { .. }));
    }
}
