//! A batch's columns gathered by picking rows out of the arrays decoding
//! built (one set per chunk): the load's insert batches are, nearly always,
//! a run of one chunk's rows, which is then a slice of it and no copy.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef};
use deltalake::arrow::compute::interleave;
use deltalake::arrow::error::ArrowError;

use crate::view::{CompiledView, ViewArrays, ViewBuilder};

/// Chunks a [`PickedRows`] may hold before it copies out what it picked.
const MAX_SOURCES: usize = 32;

/// A batch's columns (a view's, or the raw resources), gathered by picking
/// rows out of [`ViewArrays`] built elsewhere (one set per decoded chunk)
/// and a one-row null set.
pub struct PickedRows {
    null: ViewArrays,
    sources: Vec<ViewArrays>,
    /// (source, row) per output row.
    picks: Vec<(usize, usize)>,
}

impl PickedRows {
    pub fn new(view: &CompiledView) -> Self {
        let mut builder = ViewBuilder::new(view);
        builder.append_null();
        Self::with_null_row(ViewArrays::from(builder.finish()))
    }

    /// Picks from sources with the columns of `null`, a one-row set that
    /// [`PickedRows::push_null`] picks from.
    pub fn with_null_row(null: ViewArrays) -> Self {
        Self {
            sources: vec![null.clone()],
            null,
            picks: Vec::new(),
        }
    }

    /// Adds row `row` of `source`.
    pub fn push(&mut self, source: &ViewArrays, row: usize) -> Result<(), ArrowError> {
        // Rows come a chunk at a time: the source is nearly always the last one.
        let at = match self.sources.iter().rposition(|s| Arc::ptr_eq(s, source)) {
            Some(at) => at,
            None => {
                if self.sources.len() > MAX_SOURCES {
                    self.compact()?;
                }
                self.sources.push(source.clone());
                self.sources.len() - 1
            }
        };
        self.picks.push((at, row));
        Ok(())
    }

    /// Copies the rows picked so far out of their sources, so a batch that
    /// picks a few rows from many chunks does not keep every chunk alive.
    fn compact(&mut self) -> Result<(), ArrowError> {
        let picked = ViewArrays::from(self.finish()?);
        self.picks = (0..picked.first().map_or(0, |a| a.len()))
            .map(|row| (1, row))
            .collect();
        self.sources.push(picked);
        Ok(())
    }

    /// `(source, first row)` when the picks are consecutive rows of one source.
    fn one_run(&self) -> Option<(usize, usize)> {
        let &(source, first) = self.picks.first()?;
        let consecutive = self
            .picks
            .iter()
            .enumerate()
            .all(|(i, &(s, row))| s == source && row == first + i);
        consecutive.then_some((source, first))
    }

    /// Adds a row of nulls (the view gave no row).
    pub fn push_null(&mut self) {
        self.picks.push((0, 0));
    }

    pub fn len(&self) -> usize {
        self.picks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// The picked rows' columns, in [`fields`] order; starts over empty.
    pub fn finish(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        let columns = self.null.len();
        let mut out = Vec::with_capacity(columns);
        if let Some((source, first)) = self.one_run() {
            // The common batch: consecutive rows of one chunk, shared, not copied.
            let len = self.picks.len();
            out.extend(self.sources[source].iter().map(|a| a.slice(first, len)));
            self.sources.truncate(1);
            self.picks.clear();
            return Ok(out);
        }
        for column in 0..columns {
            let arrays: Vec<&dyn Array> = self.sources.iter().map(|s| s[column].as_ref()).collect();
            out.push(interleave(&arrays, &self.picks)?);
        }
        self.sources.truncate(1);
        self.picks.clear();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Cell;
    use crate::view::fhirpath::Item;
    use deltalake::arrow::array::AsArray;

    fn one_string_column() -> CompiledView {
        CompiledView::parse(
            r#"{"resource":"Patient","select":[{"column":[{"name":"v","path":"id","type":"string"}]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn picked_rows_from_many_chunks_are_compacted_and_keep_their_order() {
        let view = one_string_column();
        let mut picked = PickedRows::new(&view);
        let mut expected = Vec::new();
        for chunk in 0..3 * MAX_SOURCES {
            let mut builder = ViewBuilder::new(&view);
            for row in 0..3 {
                let text = format!("{chunk}-{row}");
                builder.append(&[Cell::One(Item::Str(text.into()))]);
            }
            let source = ViewArrays::from(builder.finish());
            picked.push(&source, 1).unwrap();
            expected.push(Some(format!("{chunk}-1")));
            if chunk % 7 == 0 {
                picked.push_null();
                expected.push(None);
            }
            assert!(picked.sources.len() <= MAX_SOURCES + 2);
        }
        let columns = picked.finish().unwrap();
        let got: Vec<Option<String>> = columns[0]
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect();
        assert_eq!(got, expected);
        assert!(picked.is_empty());
    }

    #[test]
    fn a_run_of_one_chunks_rows_is_a_slice_of_it_and_anything_else_a_copy() {
        let view = one_string_column();
        let mut builder = ViewBuilder::new(&view);
        for row in 0..5 {
            builder.append(&[Cell::One(Item::Str(format!("r{row}").into()))]);
        }
        let source = ViewArrays::from(builder.finish());
        let values = |picks: &[Option<usize>]| {
            let mut picked = PickedRows::new(&view);
            for pick in picks {
                match pick {
                    Some(row) => picked.push(&source, *row).unwrap(),
                    None => picked.push_null(),
                }
            }
            let column = picked.finish().unwrap().remove(0);
            let shares =
                column.to_data().buffers()[1].as_ptr() == source[0].to_data().buffers()[1].as_ptr();
            let got: Vec<Option<String>> = column
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect();
            (got, shares)
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            values(&[Some(1), Some(2), Some(3)]),
            (vec![some("r1"), some("r2"), some("r3")], true)
        );
        assert_eq!(
            values(&[Some(1), Some(3)]),
            (vec![some("r1"), some("r3")], false)
        );
        assert_eq!(
            values(&[Some(4), None, Some(0)]),
            (vec![some("r4"), None, some("r0")], false)
        );
    }
}
