//! The views a load applies: the defaults compiled into the binary (from
//! `schemas/`), plus or replaced by the user's `--views DIR`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{CompiledView, ViewError};
use crate::lake::TableShape;

/// The default ViewDefinitions, embedded so an installed binary has them.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "allergyintolerance.json",
        include_str!("../../schemas/allergyintolerance.json"),
    ),
    (
        "condition.json",
        include_str!("../../schemas/condition.json"),
    ),
    (
        "diagnosticreport.json",
        include_str!("../../schemas/diagnosticreport.json"),
    ),
    (
        "documentreference.json",
        include_str!("../../schemas/documentreference.json"),
    ),
    (
        "encounter.json",
        include_str!("../../schemas/encounter.json"),
    ),
    (
        "immunization.json",
        include_str!("../../schemas/immunization.json"),
    ),
    ("location.json", include_str!("../../schemas/location.json")),
    (
        "medicationrequest.json",
        include_str!("../../schemas/medicationrequest.json"),
    ),
    (
        "observation.json",
        include_str!("../../schemas/observation.json"),
    ),
    (
        "organization.json",
        include_str!("../../schemas/organization.json"),
    ),
    ("patient.json", include_str!("../../schemas/patient.json")),
    (
        "practitioner.json",
        include_str!("../../schemas/practitioner.json"),
    ),
    (
        "procedure.json",
        include_str!("../../schemas/procedure.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ViewSetError {
    #[error("view {file}: {source}")]
    View {
        file: String,
        #[source]
        source: ViewError,
    },
    #[error("views directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "view {file}: name {name:?} cannot name a table: use lower-case letters, digits and _, \
         starting with a letter, and not a resource type's table name or one starting with _"
    )]
    BadName { file: String, name: String },
}

/// Views by resource type. A view named like its type (`patient`) gives the
/// columns of that type's table; any other name (`observation_category`) is a
/// table of its own, with 0..n rows per resource.
#[derive(Debug, Clone, Default)]
pub struct ViewSet {
    by_type: BTreeMap<String, Arc<CompiledView>>,
    /// Own-table views by resource type, each with its table name.
    extra: BTreeMap<String, Vec<(String, Arc<CompiledView>)>>,
}

impl ViewSet {
    /// No views: tables get the standard columns only.
    pub fn none() -> Self {
        Self::default()
    }

    /// The defaults from `schemas/`.
    pub fn defaults() -> Self {
        let mut set = Self::default();
        for (file, text) in DEFAULTS {
            set.add(file, text).expect("default views compile (tested)");
        }
        set
    }

    /// Adds every `*.json` in `dir`; a view for a type replaces the one
    /// before. Returns how many files it read.
    pub fn add_dir(&mut self, dir: &Path) -> Result<usize, ViewSetError> {
        let io = |source| ViewSetError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(io)?;
            self.add(&file.display().to_string(), &text)?;
        }
        Ok(files.len())
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), ViewSetError> {
        let view = CompiledView::parse(text).map_err(|source| ViewSetError::View {
            file: file.to_owned(),
            source,
        })?;
        let type_table = crate::fhir::table_name(&view.resource);
        let name = view.name.clone().unwrap_or_else(|| type_table.clone());
        let invalid = |source| ViewSetError::View {
            file: file.to_owned(),
            source,
        };
        if name.to_ascii_lowercase() == type_table {
            view.check_table_columns(&TableShape::Resource.own_columns())
                .map_err(invalid)?;
            self.by_type.insert(view.resource.clone(), Arc::new(view));
            return Ok(());
        }
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !crate::fhir::is_known_resource_type_table(&name);
        if !valid {
            return Err(ViewSetError::BadName {
                file: file.to_owned(),
                name,
            });
        }
        view.check_table_columns(&TableShape::ViewRows.own_columns())
            .map_err(invalid)?;
        let views = self.extra.entry(view.resource.clone()).or_default();
        views.retain(|(table, _)| *table != name);
        views.push((name, Arc::new(view)));
        Ok(())
    }

    pub fn for_type(&self, resource_type: &str) -> Option<&Arc<CompiledView>> {
        self.by_type.get(resource_type)
    }

    /// Own-table views of a type, with their table names.
    pub fn extras_for(&self, resource_type: &str) -> &[(String, Arc<CompiledView>)] {
        self.extra.get(resource_type).map_or(&[], Vec::as_slice)
    }

    /// Whether lines of this type need the view tree at all.
    pub fn has_views_for(&self, resource_type: &str) -> bool {
        self.by_type.contains_key(resource_type) || self.extra.contains_key(resource_type)
    }

    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty() && self.extra.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_type.len() + self.extra.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile_and_cover_us_core_types() {
        let set = ViewSet::defaults();
        for ty in [
            "Patient",
            "Encounter",
            "Observation",
            "Condition",
            "MedicationRequest",
            "Procedure",
            "AllergyIntolerance",
            "Immunization",
            "DiagnosticReport",
            "DocumentReference",
            "Organization",
            "Practitioner",
            "Location",
        ] {
            assert!(set.for_type(ty).is_some(), "{ty}");
        }
    }

    #[test]
    fn own_table_views_need_a_safe_distinct_table_name() {
        let view = |name: &str| {
            format!(
                r#"{{"name":"{name}","resource":"Observation","select":[{{"column":[{{"name":"c","path":"code"}}]}}]}}"#
            )
        };
        let mut set = ViewSet::none();
        set.add("a.json", &view("observation_category")).unwrap();
        set.add("b.json", &view("observation")).unwrap();
        assert_eq!(set.extras_for("Observation").len(), 1);
        assert!(set.for_type("Observation").is_some());
        for bad in ["Encounter_x", "encounter", "_quarantine", "a-b", "../x"] {
            assert!(
                matches!(
                    set.add("c.json", &view(bad)),
                    Err(ViewSetError::BadName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn view_columns_that_would_vanish_or_collide_in_the_table_are_refused() {
        let view = |name: &str, columns: &str| {
            format!(r#"{{"name":"{name}","resource":"Patient","select":[{{"column":{columns}}}]}}"#)
        };
        let mut set = ViewSet::none();
        for (table, columns, says) in [
            (
                "patient",
                r#"[{"name":"resource","path":"gender"}]"#,
                "own column \"resource\"",
            ),
            (
                "patient",
                r#"[{"name":"Meta_Version_Id","path":"gender"}]"#,
                "own column \"meta_version_id\"",
            ),
            (
                "patient_x",
                r#"[{"name":"meta_last_updated","path":"gender"}]"#,
                "own column",
            ),
            (
                "patient",
                r#"[{"name":"id","path":"identifier.value.first()"}]"#,
                "already holds the resource id",
            ),
            (
                "patient",
                r#"[{"name":"b_date","path":"gender"},{"name":"b","path":"birthDate","type":"date"}]"#,
                "named \"b_date\"",
            ),
            (
                "patient_x",
                r#"[{"name":"t","path":"id","type":"dateTime"},{"name":"T_ts","path":"id"}]"#,
                "named \"T_ts\"",
            ),
            (
                "patient",
                r#"[{"name":"G","path":"gender"},{"name":"g","path":"id"}]"#,
                "\"G\" and \"g\"",
            ),
        ] {
            let err = set
                .add("v.json", &view(table, columns))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("view v.json: ") && err.contains(says),
                "{columns}: {err}"
            );
        }
        assert!(set.is_empty());
        // The resource id under its own name is what the table's id holds: fine.
        for path in ["id", "getResourceKey()"] {
            let columns =
                format!(r#"[{{"name":"id","path":"{path}"}},{{"name":"g","path":"gender"}}]"#);
            set.add("v.json", &view("patient", &columns)).unwrap();
            set.add("w.json", &view("patient_x", &columns)).unwrap();
        }
    }

    #[test]
    fn add_dir_counts_the_views_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = ViewSet::none();
        assert_eq!(set.add_dir(dir.path()).unwrap(), 0);
        std::fs::write(dir.path().join("notes.txt"), "not a view").unwrap();
        let (file, text) = DEFAULTS[0];
        std::fs::write(dir.path().join(file), text).unwrap();
        assert_eq!(set.add_dir(dir.path()).unwrap(), 1);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn embedded_defaults_are_exactly_the_schemas_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let on_disk = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            on_disk,
            DEFAULTS.len(),
            "add new schemas/*.json to DEFAULTS"
        );
        for (file, text) in DEFAULTS {
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), *text);
        }
    }
}
