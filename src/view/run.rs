//! Running a compiled view on one resource: the select tree becomes rows.
//!
//! A select's rows are the cross product of its own columns, each nested
//! select's rows and the concatenated rows of its unionAll branches, for each
//! item its forEach / forEachOrNull / repeat yields.

use super::arrow::ViewBuilder;
use super::cell::{Cell, CellRow, Row};
use super::definition::{CompiledView, Iterate, Select, Shape, ViewError};
use super::fhirpath::{Expr, Item, Plan, evaluate};
use super::json::Json;
use super::kind::{Kind, mismatch};

type Partial<'a> = Vec<(usize, Cell<'a>)>;

impl CompiledView {
    /// Runs the view on one resource given as text.
    pub fn rows_for_text(&self, text: &str) -> Result<Vec<Row>, ViewError> {
        let arena = bumpalo::Bump::new();
        let json = Json::parse(text, &arena).map_err(|e| ViewError::Invalid(e.to_string()))?;
        self.rows(&json)
    }

    /// The rows `resource` contributes as JSON values (none if it is another
    /// type or a `where` filter rejects it).
    pub fn rows(&self, resource: &Json<'_>) -> Result<Vec<Row>, ViewError> {
        Ok(self
            .cells(resource)?
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&self.columns)
                    .map(|(cell, column)| cell.to_serde(column))
                    .collect()
            })
            .collect())
    }

    /// The rows `resource` contributes, as cells borrowing from it.
    pub fn cells<'a>(&self, resource: &'a Json<'a>) -> Result<Vec<CellRow<'a>>, ViewError> {
        let Some(focus) = self.focus(resource)? else {
            return Ok(Vec::new());
        };
        let focus = [focus];
        match &self.shape {
            Shape::Flat => {
                let mut row = vec![Cell::Null; self.columns.len()];
                self.fill_flat(&self.root, &focus[0], 0, &mut row, None)?;
                return Ok(vec![row]);
            }
            Shape::OneIteration(path) => return self.one_iteration_rows(&focus[0], path),
            Shape::General => {}
        }
        let partials = self.select_rows(&self.root, &focus[0], 0)?;
        Ok(partials
            .into_iter()
            .map(|partial| {
                let mut row = vec![Cell::Null; self.columns.len()];
                for (i, value) in partial {
                    row[i] = value;
                }
                row
            })
            .collect())
    }

    /// The resource as the view's focus, or `None` when the view does not
    /// apply (another type, or a `where` filter rejects it).
    fn focus<'a>(&self, resource: &'a Json<'a>) -> Result<Option<Item<'a>>, ViewError> {
        if resource.get("resourceType").and_then(Json::as_str) != Some(self.resource.as_str()) {
            return Ok(None);
        }
        let focus = [Item::Node {
            json: resource,
            ty: None,
        }];
        for (text, filter) in &self.filters {
            let result = evaluate(filter, &focus, 0).map_err(|e| ViewError::Eval(e.0))?;
            // A filter must be a boolean: empty excludes, anything else but
            // one boolean is an error (FHIRPath's singleton rule would read
            // a single string as true).
            let keep = match result.as_slice() {
                [] => false,
                [item] => item.as_bool().ok_or_else(|| {
                    ViewError::Eval(format!(
                        "where {text:?} gave a {}, not a boolean",
                        item.type_name()
                    ))
                })?,
                items => {
                    return Err(ViewError::Eval(format!(
                        "where {text:?} gave {} values, not one boolean",
                        items.len()
                    )));
                }
            };
            if !keep {
                return Ok(None);
            }
        }
        let [focus] = focus;
        Ok(Some(focus))
    }

    /// Appends the rows `resource` contributes to `builder`; returns how
    /// many. A flat view's cells go straight to the column builders, with
    /// no row in between. After an error the builder may hold a padded,
    /// partial row: the caller rejects the resource and never reads it.
    pub fn append_to(
        &self,
        resource: &Json<'_>,
        builder: &mut ViewBuilder,
    ) -> Result<usize, ViewError> {
        if !matches!(self.shape, Shape::Flat) {
            let rows = self.cells(resource)?;
            for row in &rows {
                builder.append(row);
            }
            return Ok(rows.len());
        }
        let Some(focus) = self.focus(resource)? else {
            return Ok(0);
        };
        let filled = self.each_flat_cell(&self.root, &focus, 0, None, &mut |i, cell| {
            builder.append_cell(i, &cell)
        });
        match filled {
            Ok(()) => builder.end_row(),
            Err(_) => builder.end_partial_row(),
        }
        filled.map(|()| 1)
    }

    fn select_rows<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Partial<'a>>, ViewError> {
        let foci: Vec<(Item<'a>, i64)> = match &select.iterate {
            // The common case: no collection of foci to build.
            Iterate::Once => return self.rows_at(select, focus, row_index),
            Iterate::ForEach(_) => self
                .iteration_items(select, focus, row_index)?
                .into_iter()
                .zip(0..)
                .collect(),
            Iterate::ForEachOrNull(_) => {
                let items = self.iteration_items(select, focus, row_index)?;
                if items.is_empty() {
                    return Ok(vec![
                        select
                            .all_columns
                            .iter()
                            .map(|&i| (i, self.null_row_cell(i)))
                            .collect(),
                    ]);
                }
                items.into_iter().zip(0..).collect()
            }
            Iterate::Repeat(paths) => {
                let mut out = Vec::new();
                repeat(paths, focus, &mut out)?;
                out.into_iter().zip(0..).collect()
            }
        };
        let mut rows = Vec::new();
        for (item, index) in &foci {
            rows.extend(self.rows_at(select, item, *index)?);
        }
        Ok(rows)
    }

    /// The rows of `select` for one focus: its columns times each nested
    /// select's rows times its unionAll branches' rows.
    fn rows_at<'a>(
        &self,
        select: &Select,
        item: &Item<'a>,
        index: i64,
    ) -> Result<Vec<Partial<'a>>, ViewError> {
        let mut base: Vec<Partial<'a>> = vec![self.columns_of(select, item, index)?];
        for child in &select.children {
            base = product(base, self.select_rows(child, item, index)?);
        }
        if !select.union_all.is_empty() {
            let mut union = Vec::new();
            for branch in &select.union_all {
                union.extend(self.select_rows(branch, item, index)?);
            }
            base = product(base, union);
        }
        Ok(base)
    }

    /// A flat select tree gives one row: each column's value goes straight
    /// to its place, with no partial rows to join. `skip` leads to a subtree
    /// left out (the iterating select of [`Shape::OneIteration`]).
    fn fill_flat<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
        row: &mut [Cell<'a>],
        skip: Option<&[usize]>,
    ) -> Result<(), ViewError> {
        self.each_flat_cell(select, focus, row_index, skip, &mut |i, cell| row[i] = cell)
    }

    /// Each column's cell of a flat select tree, by column index, to `sink`.
    fn each_flat_cell<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
        skip: Option<&[usize]>,
        sink: &mut impl FnMut(usize, Cell<'a>),
    ) -> Result<(), ViewError> {
        for (column, plan) in select.columns.iter().zip(&select.plans) {
            sink(
                column.0,
                self.cell(column, plan.as_ref(), focus, row_index)?,
            );
        }
        for (i, child) in select.children.iter().enumerate() {
            match skip {
                Some([only]) if *only == i => {}
                Some([first, rest @ ..]) if *first == i => {
                    self.each_flat_cell(child, focus, row_index, Some(rest), sink)?
                }
                _ => self.each_flat_cell(child, focus, row_index, None, sink)?,
            }
        }
        Ok(())
    }

    /// [`Shape::OneIteration`]: the shared columns once, then per item a
    /// copy of them with the item's columns filled in.
    fn one_iteration_rows<'a>(
        &self,
        focus: &Item<'a>,
        path: &[usize],
    ) -> Result<Vec<CellRow<'a>>, ViewError> {
        let mut shared = vec![Cell::Null; self.columns.len()];
        self.fill_flat(&self.root, focus, 0, &mut shared, Some(path))?;
        let select = self.root.at(path);
        // Every select above the iterating one runs once, on the resource.
        let items = self.iteration_items(select, focus, 0)?;
        if items.is_empty() {
            return Ok(match select.iterate {
                Iterate::ForEachOrNull(_) => {
                    for &i in &select.all_columns {
                        shared[i] = self.null_row_cell(i);
                    }
                    vec![shared]
                }
                _ => Vec::new(),
            });
        }
        let mut rows = Vec::with_capacity(items.len());
        for (item, index) in items.iter().zip(0..) {
            let mut row = shared.clone();
            self.fill_flat(select, item, index, &mut row, None)?;
            rows.push(row);
        }
        Ok(rows)
    }

    /// Column `i`'s cell in the row forEachOrNull gives an empty collection:
    /// null, but `%rowIndex` is 0 there (the spec's processing algorithm).
    fn null_row_cell<'a>(&self, i: usize) -> Cell<'a> {
        if self.columns[i].path.trim() == "%rowIndex" {
            Cell::One(Item::Int(0))
        } else {
            Cell::Null
        }
    }

    /// The items a forEach / forEachOrNull path yields at `focus`.
    fn iteration_items<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Item<'a>>, ViewError> {
        let (Iterate::ForEach(path) | Iterate::ForEachOrNull(path)) = &select.iterate else {
            unreachable!("only iterating selects have items");
        };
        match &select.iterate_plan {
            Some(plan) => Ok(plan.eval(focus).into_vec()),
            None => evaluate(path, std::slice::from_ref(focus), row_index)
                .map_err(|e| ViewError::Eval(e.0)),
        }
    }

    fn columns_of<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Partial<'a>, ViewError> {
        let mut partial = Vec::with_capacity(select.columns.len());
        for (column, plan) in select.columns.iter().zip(&select.plans) {
            partial.push((
                column.0,
                self.cell(column, plan.as_ref(), focus, row_index)?,
            ));
        }
        Ok(partial)
    }

    /// One column's value at `focus`.
    fn cell<'a>(
        &self,
        (index, expr): &(usize, Expr),
        plan: Option<&Plan>,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Cell<'a>, ViewError> {
        let spec = &self.columns[*index];
        let (fast, general);
        let items: &[Item<'a>] = match plan {
            Some(plan) => {
                fast = plan.eval(focus);
                &fast
            }
            None => {
                general = evaluate(expr, std::slice::from_ref(focus), row_index).map_err(|e| {
                    ViewError::Column {
                        column: spec.name.clone(),
                        message: e.0,
                    }
                })?;
                &general
            }
        };
        if spec.kind != Kind::Text
            && let Some(got) = items.iter().find_map(|item| mismatch(spec.kind, item))
        {
            return Err(ViewError::Column {
                column: spec.name.clone(),
                message: format!(
                    "the path gave {got}, which a column of type {} cannot hold; fix the data or the column's type",
                    spec.ty.as_deref().unwrap_or("string")
                ),
            });
        }
        if spec.collection {
            return Ok(Cell::Many(items.to_vec()));
        }
        match items {
            [] => Ok(Cell::Null),
            [item] => Ok(Cell::One(item.clone())),
            _ => Err(ViewError::Column {
                column: spec.name.clone(),
                message: format!(
                    "the path gave {} values; set \"collection\": true to keep a list",
                    items.len()
                ),
            }),
        }
    }
}

/// Pre-order walk: each node, then (per path, in order) its descendants.
fn repeat<'a>(
    paths: &[super::fhirpath::Expr],
    focus: &Item<'a>,
    out: &mut Vec<Item<'a>>,
) -> Result<(), ViewError> {
    for path in paths {
        for child in
            evaluate(path, std::slice::from_ref(focus), 0).map_err(|e| ViewError::Eval(e.0))?
        {
            out.push(child.clone());
            repeat(paths, &child, out)?;
        }
    }
    Ok(())
}

/// `one` joined to each of `rows` (moved into the last, copied into the others).
fn append_to_each<'a>(mut rows: Vec<Partial<'a>>, one: Partial<'a>) -> Vec<Partial<'a>> {
    if let Some((last, others)) = rows.split_last_mut() {
        for row in others {
            row.extend(one.iter().cloned());
        }
        last.extend(one);
    }
    rows
}

/// Every left row joined with every right row. A partial row's entries
/// carry their column index, so their order does not matter: the common
/// one-row side is moved or appended instead of copying whole rows.
fn product<'a>(mut left: Vec<Partial<'a>>, mut right: Vec<Partial<'a>>) -> Vec<Partial<'a>> {
    if right.len() == 1 {
        return append_to_each(left, right.pop().expect("one row"));
    }
    if left.len() == 1 {
        return append_to_each(right, left.pop().expect("one row"));
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut row = l.clone();
            row.extend(r.iter().cloned());
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bumpalo::Bump;

    use super::*;

    const RESOURCES: &[&str] = &[
        r#"{"resourceType":"Patient","id":"p1","gender":"female",
            "name":[{"use":"official","family":"Doe","given":["J","K"]},{"family":"Roe","given":[]}],
            "telecom":[{"system":"phone","value":"1"}]}"#,
        r#"{"resourceType":"Patient","id":"p2","name":[]}"#,
        r#"{"resourceType":"Patient","id":"p3"}"#,
    ];

    /// Views of the one-iteration shape, wherever the iterating select sits.
    const VIEWS: &[&str] = &[
        r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]},
            {"forEach":"name","column":[{"name":"family","path":"family"},{"name":"n","path":"%rowIndex"}],
             "select":[{"column":[{"name":"given","path":"given.first()"}]}]}]}"#,
        r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}],
            "select":[{"column":[{"name":"g","path":"gender"}]},
                      {"forEachOrNull":"name.where(use = 'official')","column":[{"name":"family","path":"family"}]}]}]}"#,
        r#"{"resource":"Patient","select":[{"forEachOrNull":"name","column":[{"name":"family","path":"family"}]},
            {"column":[{"name":"id","path":"id"},{"name":"phone","path":"telecom.value.first()"}]}]}"#,
        r#"{"resource":"Patient","select":[{"forEach":"name.given","column":[{"name":"given","path":"$this"},{"name":"i","path":"%rowIndex"}]}]}"#,
    ];

    #[test]
    fn the_one_iteration_shape_gives_the_general_rows() {
        for text in VIEWS {
            let view = CompiledView::parse(text).unwrap();
            assert!(
                matches!(view.shape, Shape::OneIteration(_)),
                "{text}: {:?}",
                view.shape
            );
            let mut general = view.clone();
            general.shape = Shape::General;
            for resource in RESOURCES {
                let arena = Bump::new();
                let json = Json::parse(resource, &arena).unwrap();
                assert_eq!(
                    view.cells(&json).unwrap(),
                    general.cells(&json).unwrap(),
                    "{text} on {resource}"
                );
            }
        }
    }

    #[test]
    fn two_iterations_or_a_union_take_the_general_path() {
        for text in [
            r#"{"resource":"Patient","select":[{"forEach":"name","column":[{"name":"f","path":"family"}]},
                {"forEach":"telecom","column":[{"name":"t","path":"value"}]}]}"#,
            r#"{"resource":"Patient","select":[{"forEach":"name","column":[{"name":"f","path":"family"}],
                "select":[{"forEach":"given","column":[{"name":"g","path":"$this"}]}]}]}"#,
            r#"{"resource":"Patient","select":[{"unionAll":[{"column":[{"name":"a","path":"id"}]},
                {"column":[{"name":"a","path":"gender"}]}]}]}"#,
        ] {
            let view = CompiledView::parse(text).unwrap();
            assert_eq!(view.shape, Shape::General, "{text}");
        }
    }

    /// One column `c` of `ty` with `path`, run on `resource`: its value, or the error.
    fn one_cell(ty: &str, collection: bool, path: &str, resource: &str) -> Result<Row, ViewError> {
        let text = serde_json::json!({"resource": "Observation", "select": [{"column": [
            {"name": "c", "path": path, "type": ty, "collection": collection}]}]});
        let view = CompiledView::compile(&text).unwrap();
        let arena = Bump::new();
        let json = Json::parse(resource, &arena).unwrap();
        let mut builder = ViewBuilder::new(&view);
        // Both ways a view runs (rows for output, straight into Arrow for a load) agree.
        let appended = view.append_to(&json, &mut builder);
        let rows = view.rows(&json);
        assert_eq!(appended.is_ok(), rows.is_ok(), "{ty} {path}");
        rows.map(|mut rows| rows.remove(0))
    }

    #[test]
    fn a_value_its_column_type_cannot_hold_is_an_error_not_a_null() {
        let obs = r#"{"resourceType":"Observation","status":"final","issued":12,
            "valueQuantity":{"value":2.5,"unit":"kg"},"component":[{"valueInteger":3},{"valueInteger":4.0}],
            "effectiveDateTime":"2020-01","note":[{"text":"x"}],"extension":[{"valueBoolean":null}]}"#;
        for (ty, collection, path, got) in [
            ("integer", false, "status", "a string"),
            (
                "integer",
                false,
                "valueQuantity.value",
                "a number that is not a whole 64-bit integer",
            ),
            ("decimal", false, "valueQuantity.unit", "a string"),
            ("boolean", false, "status", "a string"),
            ("dateTime", false, "issued", "a number"),
            ("date", false, "note.first()", "an object"),
            (
                "integer",
                true,
                "component.value.ofType(integer) | status",
                "a string",
            ),
        ] {
            let err = one_cell(ty, collection, path, obs).unwrap_err();
            let ViewError::Column { column, message } = &err else {
                panic!("{ty} {path}: {err:?}");
            };
            assert_eq!(column, "c");
            assert!(
                message.starts_with(&format!("the path gave {got}, ")),
                "{message}"
            );
            assert!(message.contains(&format!("type {ty} ")), "{message}");
        }
        // What the type can hold loads, and prints as the column stores it:
        // a whole decimal as an integer, a partial date as its text, JSON
        // null as null, a number in a string column as its text.
        for (ty, collection, path, want) in [
            (
                "integer",
                true,
                "component.value.ofType(integer)",
                serde_json::json!([3, 4]),
            ),
            (
                "decimal",
                false,
                "valueQuantity.value",
                serde_json::json!(2.5),
            ),
            (
                "dateTime",
                false,
                "effective.ofType(dateTime)",
                serde_json::json!("2020-01"),
            ),
            ("boolean", false, "extension.value", serde_json::Value::Null),
            ("string", false, "issued", serde_json::json!("12")),
            (
                "decimal",
                false,
                "component.first().value",
                serde_json::json!(3),
            ),
        ] {
            assert_eq!(
                one_cell(ty, collection, path, obs).unwrap(),
                vec![want],
                "{ty} {path}"
            );
        }
    }
}
