//! Running a compiled view on one resource: the select tree becomes rows.
//!
//! A select's rows are the cross product of its own columns, each nested
//! select's rows and the concatenated rows of its unionAll branches, for each
//! item its forEach / forEachOrNull / repeat yields.

use super::definition::{CompiledView, Iterate, Select, ViewError};
use super::fhirpath::{Expr, Item, Plan, evaluate, singleton_bool};
use super::json::Json;

/// One output row as JSON: a value per view column (null when absent).
pub type Row = Vec<serde_json::Value>;

/// One column's value in a row, borrowing from the resource: converted to
/// Arrow or JSON only at the end, so evaluating copies no strings.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell<'a> {
    #[default]
    Null,
    One(Item<'a>),
    /// A `collection: true` column (possibly empty).
    Many(Vec<Item<'a>>),
}

impl Cell<'_> {
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::One(item) => item.to_serde(),
            Cell::Many(items) => items.iter().map(Item::to_serde).collect(),
        }
    }
}

/// One output row: a cell per view column.
pub type CellRow<'a> = Vec<Cell<'a>>;

type Partial<'a> = Vec<(usize, Cell<'a>)>;

impl CompiledView {
    /// The rows `resource` contributes as JSON values (none if it is another
    /// type or a `where` filter rejects it).
    pub fn rows(&self, resource: &Json<'_>) -> Result<Vec<Row>, ViewError> {
        Ok(self
            .cells(resource)?
            .iter()
            .map(|row| row.iter().map(Cell::to_serde).collect())
            .collect())
    }

    /// The rows `resource` contributes, as cells borrowing from it.
    pub fn cells<'a>(&self, resource: &'a Json<'a>) -> Result<Vec<CellRow<'a>>, ViewError> {
        if resource.get("resourceType").and_then(Json::as_str) != Some(self.resource.as_str()) {
            return Ok(Vec::new());
        }
        let focus = [Item::Node {
            json: resource,
            ty: None,
        }];
        for filter in &self.filters {
            let result = evaluate(filter, &focus, 0).map_err(|e| ViewError::Eval(e.0))?;
            match singleton_bool(&result).map_err(|e| ViewError::Eval(format!("where: {}", e.0)))? {
                Some(true) => {}
                _ => return Ok(Vec::new()),
            }
        }
        if self.flat {
            let mut row = vec![Cell::Null; self.columns.len()];
            self.fill_flat(&self.root, &focus[0], &mut row)?;
            return Ok(vec![row]);
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

    fn select_rows<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Partial<'a>>, ViewError> {
        let eval = |expr, row_index| {
            evaluate(expr, std::slice::from_ref(focus), row_index).map_err(|e| ViewError::Eval(e.0))
        };
        let foci: Vec<(Item<'a>, i64)> = match &select.iterate {
            // The common case: no collection of foci to build.
            Iterate::Once => return self.rows_at(select, focus, row_index),
            Iterate::ForEach(path) => eval(path, row_index)?.into_iter().zip(0..).collect(),
            Iterate::ForEachOrNull(path) => {
                let items = eval(path, row_index)?;
                if items.is_empty() {
                    return Ok(vec![
                        select
                            .all_columns
                            .iter()
                            .map(|&i| (i, Cell::Null))
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
    /// to its place, with no partial rows to join.
    fn fill_flat<'a>(
        &self,
        select: &Select,
        focus: &Item<'a>,
        row: &mut [Cell<'a>],
    ) -> Result<(), ViewError> {
        for (column, plan) in select.columns.iter().zip(&select.plans) {
            row[column.0] = self.cell(column, plan.as_ref(), focus, 0)?;
        }
        for child in &select.children {
            self.fill_flat(child, focus, row)?;
        }
        Ok(())
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
