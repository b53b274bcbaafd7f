//! Bindings: which value set an element's codes must come from.
//!
//! In: [`Binding`]s (element path, value set canonical, strength) from the
//! job's configuration. Out: [`Bindings`], compiled against the loaded
//! value sets once, looked up per concept by the path the caller gives
//! (`Observation.component[1].code.coding[0]` finds `Observation.component.code`):
//! indices and a trailing `.coding` are dropped on the stack, without
//! allocating. Choice elements are named by their type
//! (`Observation.valueCodeableConcept`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::codeset::FxHashMap;
use super::error::TerminologyError;
use super::valueset::{ValueSetId, ValueSets};

/// FHIR's binding strengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingStrength {
    Required,
    Extensible,
    Preferred,
    Example,
}

impl fmt::Display for BindingStrength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Required => "required",
            Self::Extensible => "extensible",
            Self::Preferred => "preferred",
            Self::Example => "example",
        })
    }
}

/// An element bound to a value set, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// `Type.element.path`, without indices.
    pub element: String,
    /// `url` or `url|version`.
    pub value_set: String,
    pub strength: BindingStrength,
}

impl Binding {
    pub fn new(
        element: impl Into<String>,
        value_set: impl Into<String>,
        strength: BindingStrength,
    ) -> Self {
        Self {
            element: element.into(),
            value_set: value_set.into(),
            strength,
        }
    }
}

/// A binding resolved to a loaded value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundValueSet {
    pub value_set: ValueSetId,
    pub strength: BindingStrength,
}

/// The job's bindings by element.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    by_element: FxHashMap<Box<str>, Vec<BoundValueSet>>,
}

/// Longest path normalised on the stack; longer ones are normalised on the
/// heap (no FHIR element path comes near it).
const STACK_PATH: usize = 256;

impl Bindings {
    /// Resolves each binding's value set; one that is not loaded is an error
    /// (configuration, reported before any data is read).
    pub fn compile(bindings: &[Binding], sets: &ValueSets) -> Result<Self, TerminologyError> {
        let mut by_element: FxHashMap<Box<str>, Vec<BoundValueSet>> = FxHashMap::default();
        for b in bindings {
            let value_set =
                sets.id(&b.value_set)
                    .ok_or_else(|| TerminologyError::UnboundValueSet {
                        element: b.element.clone(),
                        value_set: b.value_set.clone(),
                    })?;
            let element = with_element(&b.element, |e| Box::<str>::from(e));
            let bound = by_element.entry(element).or_default();
            let entry = BoundValueSet {
                value_set,
                strength: b.strength,
            };
            if !bound.contains(&entry) {
                bound.push(entry);
            }
        }
        Ok(Self { by_element })
    }

    /// The value sets the element at `path` is bound to (none: empty).
    pub fn lookup(&self, path: &str) -> &[BoundValueSet] {
        if self.by_element.is_empty() {
            return &[];
        }
        with_element(path, |element| {
            self.by_element.get(element).map_or(&[][..], Vec::as_slice)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_element.is_empty()
    }
}

/// Calls `f` with `path` without `[n]` indices and without a trailing
/// `.coding`, normalised in a stack buffer when it fits.
pub fn with_element<R>(path: &str, f: impl FnOnce(&str) -> R) -> R {
    if !path.contains('[') && !path.ends_with(".coding") {
        return f(path);
    }
    let mut stack = [0u8; STACK_PATH];
    let mut heap = Vec::new();
    let mut len = 0;
    let mut depth = 0usize;
    for &b in path.as_bytes() {
        match b {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ if len < STACK_PATH && heap.is_empty() => {
                stack[len] = b;
                len += 1;
            }
            _ => {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack[..len]);
                }
                heap.push(b);
            }
        }
    }
    let bytes = if heap.is_empty() {
        &stack[..len]
    } else {
        &heap[..]
    };
    // Only ASCII brackets and their contents were dropped: still UTF-8.
    let element = std::str::from_utf8(bytes).unwrap_or(path);
    f(element.strip_suffix(".coding").unwrap_or(element))
}

#[cfg(test)]
mod tests {
    use super::super::error::Origin;
    use super::super::valueset::ValueSetLoader;
    use super::*;

    #[test]
    fn paths_reduce_to_elements() {
        let cases = [
            ("Observation.code", "Observation.code"),
            ("Observation.code.coding[0]", "Observation.code"),
            ("Observation.code.coding", "Observation.code"),
            (
                "Observation.component[1].code.coding[12]",
                "Observation.component.code",
            ),
            ("Condition.category[0]", "Condition.category"),
            (
                "Patient.extension[3].extension[0].valueCoding",
                "Patient.extension.extension.valueCoding",
            ),
        ];
        for (path, element) in cases {
            assert_eq!(with_element(path, str::to_string), element, "{path}");
        }
        let long = format!("{}.code.coding[0]", "Observation.component[1]".repeat(20));
        let expected = format!("{}.code", "Observation.component".repeat(20));
        assert_eq!(with_element(&long, str::to_string), expected);
    }

    #[test]
    fn compile_and_look_up() {
        let mut loader = ValueSetLoader::new();
        loader
            .add_json(
                Origin::file("vs.json"),
                br#"{"resourceType":"ValueSet","url":"http://x/vs","version":"1","compose":{"include":[]}}"#,
            )
            .unwrap();
        let sets = loader.build();
        let bindings = Bindings::compile(
            &[
                Binding::new("Observation.code", "http://x/vs", BindingStrength::Required),
                Binding::new(
                    "Observation.code",
                    "http://x/vs|1",
                    BindingStrength::Required,
                ),
            ],
            &sets,
        )
        .unwrap();
        assert_eq!(
            bindings.lookup("Observation.code.coding[2]").len(),
            1,
            "the same binding twice is one"
        );
        assert!(bindings.lookup("Observation.category[0]").is_empty());
        let err = Bindings::compile(
            &[Binding::new(
                "Condition.code",
                "http://x/missing",
                BindingStrength::Required,
            )],
            &sets,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(
            "the binding of Condition.code names value set http://x/missing, which is not loaded"
        ));
    }

    #[test]
    fn bindings_read_from_config() {
        let b: Binding = serde_json::from_str(
            r#"{"element":"Condition.category","value_set":"http://x/vs","strength":"extensible"}"#,
        )
        .unwrap();
        assert_eq!(b.strength, BindingStrength::Extensible);
        assert!(
            serde_json::from_str::<Binding>(
                r#"{"element":"a","value_set":"b","strength":"required","x":1}"#
            )
            .is_err()
        );
    }
}
