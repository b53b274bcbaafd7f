//! Parsing and compiling a ViewDefinition.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::fhirpath::{self, Expr, Literal, Plan};
use super::kind::Kind;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewError {
    #[error("ViewDefinition is not valid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Path(#[from] fhirpath::ParseError),
    #[error("column {column:?}: {message}")]
    Column { column: String, message: String },
    #[error("{0}")]
    Eval(String),
}

#[derive(Debug, Deserialize)]
struct RawView {
    name: Option<String>,
    resource: String,
    #[serde(default)]
    constant: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    select: Vec<RawSelect>,
    #[serde(default, rename = "where")]
    where_: Vec<RawWhere>,
}

#[derive(Debug, Deserialize)]
struct RawWhere {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelect {
    #[serde(default)]
    column: Vec<RawColumn>,
    #[serde(default)]
    select: Vec<RawSelect>,
    for_each: Option<String>,
    for_each_or_null: Option<String>,
    repeat: Option<Vec<String>>,
    #[serde(default)]
    union_all: Vec<RawSelect>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct RawColumn {
    name: String,
    path: String,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    collection: bool,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

/// Refuses a key of a select or column that the spec does not define: a
/// misspelt `colum` or `typ` would otherwise drop a column or its type
/// silently. `allowed` are the element's keys that are read nowhere.
fn no_unknown_keys(
    element: &str,
    other: &BTreeMap<String, IgnoredAny>,
    allowed: &[&str],
) -> Result<(), ViewError> {
    // FHIR's own element keys may appear anywhere.
    const FHIR: &[&str] = &["id", "extension", "modifierExtension"];
    match other
        .keys()
        .find(|k| !FHIR.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
    {
        Some(key) => Err(ViewError::Invalid(format!(
            "a {element} has the key {key:?}, which ViewDefinition does not define (misspelt?)"
        ))),
        None => Ok(()),
    }
}

/// An output column: name, FHIR type (if declared) and whether it holds a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    /// The FHIRPath as written (compiled once, kept for messages and checks).
    pub path: String,
    pub ty: Option<String>,
    pub collection: bool,
    /// What `ty` stores as, decided once (checked on every cell).
    pub(super) kind: Kind,
}

impl ColumnSpec {
    pub fn new(
        name: impl Into<String>,
        path: impl Into<String>,
        ty: Option<String>,
        collection: bool,
    ) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            kind: Kind::of(ty.as_deref()),
            ty,
            collection,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Iterate {
    Once,
    ForEach(Expr),
    ForEachOrNull(Expr),
    Repeat(Vec<Expr>),
}

/// A compiled select: columns (as indices into the view's columns) and paths.
#[derive(Debug, Clone)]
pub(super) struct Select {
    pub columns: Vec<(usize, Expr)>,
    /// Fast-path plans for `columns`, where the path has a simple shape.
    pub plans: Vec<Option<Plan>>,
    pub iterate: Iterate,
    /// Fast-path plan for a forEach / forEachOrNull path.
    pub iterate_plan: Option<Plan>,
    pub children: Vec<Select>,
    pub union_all: Vec<Select>,
    /// Every column this select and its descendants produce (for null rows).
    pub all_columns: Vec<usize>,
}

/// A ViewDefinition ready to run: paths parsed once, constants resolved.
#[derive(Debug, Clone)]
pub struct CompiledView {
    pub name: Option<String>,
    pub resource: String,
    pub columns: Vec<ColumnSpec>,
    /// The `where` paths, as written and compiled.
    pub(super) filters: Vec<(String, Expr)>,
    pub(super) root: Select,
    pub(super) shape: Shape,
}

/// How a view's rows come about, for the common shapes a direct way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    /// Every select runs once per resource (no forEach/repeat/unionAll):
    /// exactly one row, written straight into place.
    Flat,
    /// Flat but for one forEach / forEachOrNull select (reached from the
    /// root through these child indices) whose own subtree is flat: one row
    /// per item, each the shared columns plus the item's.
    OneIteration(Vec<usize>),
    /// Anything else: rows built as the cross product of partial rows.
    General,
}

impl Select {
    fn runs_once(&self) -> bool {
        matches!(self.iterate, Iterate::Once) && self.union_all.is_empty()
    }

    fn is_flat(&self) -> bool {
        self.runs_once() && self.children.iter().all(Select::is_flat)
    }

    /// The path to the one iterating select, if this tree has exactly one
    /// and everything else is flat.
    fn one_iteration(&self) -> Option<Vec<usize>> {
        if !self.runs_once() {
            return None;
        }
        let mut found = None;
        for (i, child) in self.children.iter().enumerate() {
            if child.is_flat() {
                continue;
            }
            let iterates = matches!(
                child.iterate,
                Iterate::ForEach(_) | Iterate::ForEachOrNull(_)
            ) && child.union_all.is_empty()
                && child.children.iter().all(Select::is_flat);
            let below = if iterates {
                vec![i]
            } else {
                let mut path = child.one_iteration()?;
                path.insert(0, i);
                path
            };
            if found.replace(below).is_some() {
                return None;
            }
        }
        found
    }

    /// The select at `path` below this one.
    pub(super) fn at(&self, path: &[usize]) -> &Select {
        path.iter().fold(self, |select, &i| &select.children[i])
    }
}

fn constant_literal(
    entry: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, Literal), ViewError> {
    let name = entry
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| ViewError::Invalid("a constant has no name".into()))?;
    let (key, value) = entry
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .ok_or_else(|| ViewError::Invalid(format!("constant {name:?} has no value[x]")))?;
    let bad = || ViewError::Invalid(format!("constant {name:?}: {key} has the wrong JSON type"));
    let literal = match key.as_str() {
        "valueBoolean" => Literal::Boolean(value.as_bool().ok_or_else(bad)?),
        "valueInteger" | "valuePositiveInt" | "valueUnsignedInt" | "valueInteger64" => {
            Literal::Integer(value.as_i64().ok_or_else(bad)?)
        }
        "valueDecimal" => Literal::Decimal(value.as_number().ok_or_else(bad)?.to_string()),
        "valueDate" => Literal::Date(value.as_str().ok_or_else(bad)?.to_owned()),
        "valueDateTime" | "valueInstant" => {
            Literal::DateTime(value.as_str().ok_or_else(bad)?.to_owned())
        }
        "valueTime" => Literal::Time(value.as_str().ok_or_else(bad)?.to_owned()),
        _ => Literal::String(value.as_str().ok_or_else(bad)?.to_owned()),
    };
    Ok((name.to_owned(), literal))
}

struct Compiler {
    constants: Vec<(String, Literal)>,
    columns: Vec<ColumnSpec>,
}

impl Compiler {
    fn path(&self, text: &str) -> Result<Expr, ViewError> {
        let expr = fhirpath::parse(text)?;
        let lookup = |name: &str| {
            self.constants
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, l)| l.clone())
        };
        expr.resolve_constants(&lookup)
            .map_err(|message| ViewError::Invalid(format!("path {text:?}: {message}")))
    }

    fn select(&mut self, raw: &RawSelect) -> Result<Select, ViewError> {
        no_unknown_keys("select", &raw.other, &[])?;
        let iterates = raw.for_each.is_some() || raw.for_each_or_null.is_some();
        if raw.column.is_empty()
            && raw.select.is_empty()
            && raw.union_all.is_empty()
            && !iterates
            && raw.repeat.is_none()
        {
            return Err(ViewError::Invalid(
                "a select is empty: give it a column, select, unionAll or forEach".into(),
            ));
        }
        let kinds = [
            raw.for_each.is_some(),
            raw.for_each_or_null.is_some(),
            raw.repeat.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ViewError::Invalid(
                "a select may have only one of forEach, forEachOrNull, repeat".into(),
            ));
        }
        let iterate = if let Some(p) = &raw.for_each {
            Iterate::ForEach(self.path(p)?)
        } else if let Some(p) = &raw.for_each_or_null {
            Iterate::ForEachOrNull(self.path(p)?)
        } else if let Some(paths) = &raw.repeat {
            Iterate::Repeat(
                paths
                    .iter()
                    .map(|p| self.path(p))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            Iterate::Once
        };
        let mut columns = Vec::new();
        for column in &raw.column {
            no_unknown_keys("column", &column.other, &["description", "tag"])?;
            if self.columns.iter().any(|c| c.name == column.name) {
                return Err(ViewError::Invalid(format!(
                    "column name {:?} is used twice",
                    column.name
                )));
            }
            if !is_column_name(&column.name) {
                return Err(ViewError::Invalid(format!(
                    "column name {:?} must be letters, digits and _ and start with a letter",
                    column.name
                )));
            }
            self.columns.push(ColumnSpec::new(
                column.name.clone(),
                column.path.clone(),
                column.ty.clone(),
                column.collection,
            ));
            let path = self.path(&column.path).map_err(|e| ViewError::Column {
                column: column.name.clone(),
                message: e.to_string(),
            })?;
            columns.push((self.columns.len() - 1, path));
        }
        let children = raw
            .select
            .iter()
            .map(|s| self.select(s))
            .collect::<Result<Vec<_>, _>>()?;
        let union_all = self.union_all(&raw.union_all)?;
        let mut all_columns: Vec<usize> = columns.iter().map(|(i, _)| *i).collect();
        for s in &children {
            all_columns.extend(&s.all_columns);
        }
        if let Some(first) = union_all.first() {
            all_columns.extend(&first.all_columns);
        }
        let iterate_plan = match &iterate {
            Iterate::ForEach(path) | Iterate::ForEachOrNull(path) => Plan::compile(path),
            Iterate::Once | Iterate::Repeat(_) => None,
        };
        Ok(Select {
            plans: columns.iter().map(|(_, e)| Plan::compile(e)).collect(),
            columns,
            iterate,
            iterate_plan,
            children,
            union_all,
            all_columns,
        })
    }

    /// unionAll branches must produce the same column names, in the same
    /// order. Each branch is compiled from the same starting column list, so
    /// equal shapes land on the same column indices.
    fn union_all(&mut self, branches: &[RawSelect]) -> Result<Vec<Select>, ViewError> {
        let base = self.columns.clone();
        let mut after_first = None;
        let mut shape: Vec<String> = Vec::new();
        let mut compiled = Vec::new();
        for raw in branches {
            self.columns = base.clone();
            compiled.push(self.select(raw)?);
            let names: Vec<String> = self.columns[base.len()..]
                .iter()
                .map(|c| c.name.clone())
                .collect();
            match &after_first {
                None => {
                    shape = names;
                    after_first = Some(self.columns.clone());
                }
                Some(_) if names != shape => {
                    return Err(ViewError::Invalid(format!(
                        "unionAll branches must have the same columns in the same order: {shape:?} vs {names:?}"
                    )));
                }
                Some(_) => {}
            }
        }
        self.columns = after_first.unwrap_or(base);
        Ok(compiled)
    }
}

fn is_column_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl CompiledView {
    /// Compiles a ViewDefinition given as JSON text.
    pub fn parse(text: &str) -> Result<Self, ViewError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ViewError::Invalid(e.to_string()))?;
        Self::compile(&value)
    }

    pub fn compile(view: &serde_json::Value) -> Result<Self, ViewError> {
        let raw: RawView =
            serde_json::from_value(view.clone()).map_err(|e| ViewError::Invalid(e.to_string()))?;
        if !crate::fhir::is_valid_resource_type(&raw.resource) {
            return Err(ViewError::Invalid(format!(
                "resource {:?} is not a FHIR resource type",
                raw.resource
            )));
        }
        let constants = raw
            .constant
            .iter()
            .map(constant_literal)
            .collect::<Result<Vec<_>, _>>()?;
        let mut compiler = Compiler {
            constants,
            columns: Vec::new(),
        };
        let filters = raw
            .where_
            .iter()
            .map(|w| compiler.path(&w.path).map(|e| (w.path.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.select.is_empty() {
            return Err(ViewError::Invalid(
                "the view has no select, so no columns: add \"select\": [{\"column\": [...]}]"
                    .into(),
            ));
        }
        let children = raw
            .select
            .iter()
            .map(|s| compiler.select(s))
            .collect::<Result<Vec<_>, _>>()?;
        let all_columns = children
            .iter()
            .flat_map(|s| s.all_columns.clone())
            .collect();
        let root = Select {
            columns: Vec::new(),
            plans: Vec::new(),
            iterate: Iterate::Once,
            iterate_plan: None,
            children,
            union_all: Vec::new(),
            all_columns,
        };
        Ok(Self {
            name: raw.name,
            resource: raw.resource,
            columns: compiler.columns,
            filters,
            shape: if root.is_flat() {
                Shape::Flat
            } else {
                root.one_iteration()
                    .map_or(Shape::General, Shape::OneIteration)
            },
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(view: &str) -> String {
        match CompiledView::parse(view) {
            Err(ViewError::Invalid(message)) => message,
            other => panic!("{view}: {other:?}"),
        }
    }

    #[test]
    fn misspelt_or_missing_selects_and_columns_are_errors_not_silent_gaps() {
        let message = invalid(
            r#"{"resource":"Patient","select":[{"colum":[{"name":"g","path":"gender"}]}]}"#,
        );
        assert!(
            message.contains("a select has the key \"colum\""),
            "{message}"
        );
        let message = invalid(
            r#"{"resource":"Patient","select":[{"column":[{"name":"b","path":"birthDate","typ":"date"}]}]}"#,
        );
        assert!(
            message.contains("a column has the key \"typ\""),
            "{message}"
        );
        let message = invalid(r#"{"resource":"Patient","select":[{}]}"#);
        assert!(message.contains("select is empty"), "{message}");
        for no_select in [
            r#"{"resource":"Patient"}"#,
            r#"{"resource":"Patient","select":[]}"#,
        ] {
            assert!(invalid(no_select).contains("no select"), "{no_select}");
        }
    }

    #[test]
    fn keys_the_spec_and_fhir_allow_are_accepted() {
        let view = CompiledView::parse(
            r#"{"resourceType":"ViewDefinition","id":"v","url":"http://x/v","status":"active",
                "resource":"Patient","select":[{"id":"s1","extension":[],"forEach":"name",
                "column":[{"name":"family","path":"family","type":"string","description":"d",
                           "tag":[{"name":"ansi/type","value":"VARCHAR"}],"extension":[]}]}]}"#,
        )
        .unwrap();
        assert_eq!(view.columns[0].name, "family");
    }

    #[test]
    fn functions_are_checked_when_the_view_is_compiled() {
        let view = |path: &str| {
            CompiledView::parse(&format!(
                r#"{{"resource":"Patient","select":[{{"column":[{{"name":"family","path":"{path}"}}]}}]}}"#
            ))
        };
        assert!(view("name.family.first()").is_ok());
        for (path, says) in [
            (
                "name.frist().family",
                "unknown function frist() (did you mean first()?)",
            ),
            ("name.first(1).family", "first() takes 0 argument(s), got 1"),
            (
                "name.family.upper()",
                "upper() is a FHIRPath function fhirlake's view engine does not implement",
            ),
        ] {
            let error = view(path).unwrap_err().to_string();
            assert!(
                error.contains("column \"family\"") && error.contains(says),
                "{path}: {error}"
            );
        }
        let filter = CompiledView::parse(
            r#"{"resource":"Patient","where":[{"path":"active.isTrue()"}],"select":[{"column":[{"name":"id","path":"id"}]}]}"#,
        );
        assert!(filter.unwrap_err().to_string().contains("isTrue()"));
    }
}
