//! View rows → Arrow columns, typed by each column's declared FHIR type.
//!
//! | FHIR type | Arrow |
//! |---|---|
//! | string, code, id, uri, url, canonical, oid, uuid, markdown, base64Binary, time, untyped | Utf8 |
//! | integer, positiveInt, unsignedInt, integer64 | Int64 |
//! | decimal | Float64 (FHIR decimals have no fixed scale, so Decimal128 would have to guess one; 15–17 significant digits cover clinical values) |
//! | boolean | Boolean |
//! | date | Utf8 as written, plus `<name>_date` Date32 when the value is a full YYYY-MM-DD |
//! | dateTime, instant | Utf8 as written, plus `<name>_ts` Timestamp(µs, UTC) when it has seconds and a zone |
//!
//! Partial dates (`1970-06`) stay strings with a null companion: nothing is
//! invented. `collection: true` columns become `List<type>` (no companion).

use std::borrow::Cow;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::interleave;
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::error::ArrowError;

use super::fhirpath::Item;
use super::json::Json;
use super::run::Cell;
use super::{ColumnSpec, CompiledView};

/// How a column's FHIR type is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Date,
    DateTime,
}

impl Kind {
    pub(super) fn of(ty: Option<&str>) -> Kind {
        match ty.unwrap_or("string") {
            "integer" | "positiveInt" | "unsignedInt" | "integer64" => Kind::Int,
            "decimal" => Kind::Float,
            "boolean" => Kind::Bool,
            "date" => Kind::Date,
            "dateTime" | "instant" => Kind::DateTime,
            _ => Kind::Text,
        }
    }
}

/// Why `item` cannot be stored in a column of `kind`, if it cannot. Such a
/// value is an error (its resource is quarantined), never a silent null.
/// Says what kind of value it is, never the value: it may be PHI.
pub(super) fn mismatch(kind: Kind, item: &Item<'_>) -> Option<&'static str> {
    let fits = match kind {
        Kind::Text => return None,
        _ if matches!(
            item,
            Item::Node {
                json: Json::Null,
                ..
            }
        ) =>
        {
            return None;
        }
        Kind::Int => int_of(item).is_some(),
        Kind::Float => float_of(item).is_some(),
        Kind::Bool => bool_of(item).is_some(),
        Kind::Date | Kind::DateTime => str_of(item).is_some(),
    };
    if fits {
        return None;
    }
    Some(match item {
        Item::Node { json, .. } => match json {
            Json::String(_) => "a string",
            Json::Number(_) if kind == Kind::Int => "a number that is not a whole 64-bit integer",
            Json::Number(_) => "a number",
            Json::Bool(_) => "a boolean",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
            Json::Null => "null",
        },
        Item::Bool(_) => "a boolean",
        Item::Int(_) => "an integer",
        Item::Dec(_) if kind == Kind::Int => "a decimal that is not a whole 64-bit integer",
        Item::Dec(_) => "a decimal",
        Item::Str(_) => "a string",
        Item::Date(_) | Item::DateTime(_) | Item::Time(_) => "a date/time",
    })
}

fn base_type(kind: Kind) -> DataType {
    match kind {
        Kind::Int => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// The Arrow fields a view column becomes (one, or two with a companion).
pub fn fields(column: &ColumnSpec) -> Vec<Field> {
    let k = column.kind;
    if column.collection {
        let item = Field::new("item", base_type(k), true);
        return vec![Field::new(
            &column.name,
            DataType::List(Arc::new(item)),
            true,
        )];
    }
    let mut out = vec![Field::new(&column.name, base_type(k), true)];
    match k {
        Kind::Date => out.push(Field::new(
            format!("{}_date", column.name),
            DataType::Date32,
            true,
        )),
        Kind::DateTime => out.push(Field::new(
            format!("{}_ts", column.name),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )),
        _ => {}
    }
    out
}

fn full_date_days(text: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days() as i32)
}

/// The item as a JSON string, if it is one (the only values dates come from).
fn str_of<'i>(item: &'i Item<'_>) -> Option<&'i str> {
    match item {
        Item::Node {
            json: Json::String(s),
            ..
        } => Some(s),
        Item::Str(s) | Item::Date(s) | Item::DateTime(s) | Item::Time(s) => Some(s),
        _ => None,
    }
}

/// Strings as they are (no copy); other values as their JSON text.
fn text_of<'i>(item: &'i Item<'_>) -> Option<Cow<'i, str>> {
    match item {
        Item::Node {
            json: Json::Null, ..
        } => None,
        _ => match str_of(item) {
            Some(s) => Some(Cow::Borrowed(s)),
            None => Some(Cow::Owned(item.to_serde().to_string())),
        },
    }
}

/// A JSON number's value as f64 (as serde_json would read it).
fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn int_of(item: &Item<'_>) -> Option<i64> {
    let text = match item {
        Item::Int(i) => return Some(*i),
        Item::Dec(d) => d.as_ref(),
        Item::Node {
            json: Json::Number(n),
            ..
        } => n,
        _ => return None,
    };
    text.parse::<i64>()
        .ok()
        .or_else(|| number(text).filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

fn float_of(item: &Item<'_>) -> Option<f64> {
    match item {
        Item::Int(i) => Some(*i as f64),
        Item::Dec(d) => number(d),
        Item::Node {
            json: Json::Number(n),
            ..
        } => number(n),
        _ => None,
    }
}

fn bool_of(item: &Item<'_>) -> Option<bool> {
    match item {
        Item::Bool(b)
        | Item::Node {
            json: Json::Bool(b),
            ..
        } => Some(*b),
        _ => None,
    }
}

/// `item` as JSON of a column of `kind`: the value the column's Arrow
/// builder stores, so `view run` prints what a load writes.
pub(super) fn typed_json(kind: Kind, item: &Item<'_>) -> serde_json::Value {
    match kind {
        Kind::Text | Kind::Date | Kind::DateTime => {
            text_of(item).map_or(serde_json::Value::Null, |s| s.into_owned().into())
        }
        Kind::Int => int_of(item).map_or(serde_json::Value::Null, Into::into),
        // A decimal prints as written (`107`, `1.50`), as FHIR JSON has it.
        Kind::Float => match float_of(item) {
            Some(_) => item.to_serde(),
            None => serde_json::Value::Null,
        },
        Kind::Bool => bool_of(item).map_or(serde_json::Value::Null, Into::into),
    }
}

/// One column's builders: its value, and a companion for dates.
enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(StringBuilder, Date32Builder),
    DateTime(StringBuilder, TimestampMicrosecondBuilder),
    TextList(ListBuilder<StringBuilder>),
    IntList(ListBuilder<Int64Builder>),
    FloatList(ListBuilder<Float64Builder>),
    BoolList(ListBuilder<BooleanBuilder>),
}

impl ColumnBuilder {
    fn new(column: &ColumnSpec) -> Self {
        let k = column.kind;
        let text = || StringBuilder::new();
        match (column.collection, k) {
            (true, Kind::Int) => Self::IntList(ListBuilder::new(Int64Builder::new())),
            (true, Kind::Float) => Self::FloatList(ListBuilder::new(Float64Builder::new())),
            (true, Kind::Bool) => Self::BoolList(ListBuilder::new(BooleanBuilder::new())),
            (true, _) => Self::TextList(ListBuilder::new(text())),
            (false, Kind::Text) => Self::Text(text()),
            (false, Kind::Int) => Self::Int(Int64Builder::new()),
            (false, Kind::Float) => Self::Float(Float64Builder::new()),
            (false, Kind::Bool) => Self::Bool(BooleanBuilder::new()),
            (false, Kind::Date) => Self::Date(text(), Date32Builder::new()),
            (false, Kind::DateTime) => Self::DateTime(
                text(),
                TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            ),
        }
    }

    fn append(&mut self, cell: &Cell<'_>) {
        let one = match cell {
            Cell::One(item) => Some(item),
            Cell::Null | Cell::Many(_) => None,
        };
        macro_rules! list {
            ($b:expr, $convert:expr) => {{
                if let Cell::Many(items) = cell {
                    for item in items {
                        $b.values().append_option($convert(item));
                    }
                    $b.append(true);
                } else {
                    $b.append(false);
                }
            }};
        }
        match self {
            Self::Text(b) => b.append_option(one.and_then(text_of)),
            Self::Int(b) => b.append_option(one.and_then(int_of)),
            Self::Float(b) => b.append_option(one.and_then(float_of)),
            Self::Bool(b) => b.append_option(one.and_then(bool_of)),
            Self::Date(text, days) => {
                text.append_option(one.and_then(text_of));
                days.append_option(one.and_then(str_of).and_then(full_date_days));
            }
            Self::DateTime(text, micros) => {
                text.append_option(one.and_then(text_of));
                // Complete = seconds and a zone: exactly what RFC 3339 requires.
                micros.append_option(
                    one.and_then(str_of)
                        .and_then(crate::fhir::parse_instant_micros),
                );
            }
            Self::TextList(b) => list!(b, text_of),
            Self::IntList(b) => list!(b, int_of),
            Self::FloatList(b) => list!(b, float_of),
            Self::BoolList(b) => list!(b, bool_of),
        }
    }

    /// Rows appended so far.
    fn len(&self) -> usize {
        match self {
            Self::Text(b) | Self::Date(b, _) | Self::DateTime(b, _) => b.len(),
            Self::Int(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Bool(b) => b.len(),
            Self::TextList(b) => b.len(),
            Self::IntList(b) => b.len(),
            Self::FloatList(b) => b.len(),
            Self::BoolList(b) => b.len(),
        }
    }

    fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        match self {
            Self::Text(b) => out.push(Arc::new(b.finish())),
            Self::Int(b) => out.push(Arc::new(b.finish())),
            Self::Float(b) => out.push(Arc::new(b.finish())),
            Self::Bool(b) => out.push(Arc::new(b.finish())),
            Self::Date(text, days) => {
                out.push(Arc::new(text.finish()));
                out.push(Arc::new(days.finish()));
            }
            Self::DateTime(text, micros) => {
                out.push(Arc::new(text.finish()));
                out.push(Arc::new(micros.finish()));
            }
            Self::TextList(b) => out.push(Arc::new(b.finish())),
            Self::IntList(b) => out.push(Arc::new(b.finish())),
            Self::FloatList(b) => out.push(Arc::new(b.finish())),
            Self::BoolList(b) => out.push(Arc::new(b.finish())),
        }
    }
}

/// Builds a view's Arrow columns row by row, straight from cells: no JSON
/// value is made per cell.
pub struct ViewBuilder {
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl ViewBuilder {
    pub fn new(view: &CompiledView) -> Self {
        Self {
            columns: view.columns.iter().map(ColumnBuilder::new).collect(),
            rows: 0,
        }
    }

    /// Appends one row (a cell per view column, in column order).
    pub fn append(&mut self, row: &[Cell<'_>]) {
        for (builder, cell) in self.columns.iter_mut().zip(row) {
            builder.append(cell);
        }
        self.rows += 1;
    }

    /// Appends one cell to column `column` of the row being built; the row
    /// ends with [`ViewBuilder::end_row`].
    pub fn append_cell(&mut self, column: usize, cell: &Cell<'_>) {
        self.columns[column].append(cell);
    }

    /// Ends the row being built, every column having had its cell.
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Ends a row whose evaluation stopped early: the columns that got no
    /// cell get a null, so every column keeps one value per row.
    pub fn end_partial_row(&mut self) {
        self.rows += 1;
        for builder in &mut self.columns {
            if builder.len() < self.rows {
                builder.append(&Cell::Null);
            }
        }
    }

    /// Appends a row of nulls.
    pub fn append_null(&mut self) {
        for builder in &mut self.columns {
            builder.append(&Cell::Null);
        }
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The arrays built so far, in [`fields`] order; the builder starts over.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        let mut out = Vec::with_capacity(self.columns.len() + 2);
        for builder in &mut self.columns {
            builder.finish(&mut out);
        }
        self.rows = 0;
        out
    }
}

/// A finished set of a view's columns (in [`fields`] order), shared between
/// the thread that built it and the batches that pick rows from it.
pub type ViewArrays = Arc<[ArrayRef]>;

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
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{
        Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
    };

    fn build(ty: &str, collection: bool, cells: &[Cell<'_>]) -> Vec<ArrayRef> {
        let spec = ColumnSpec::new("c", "c", Some(ty.into()), collection);
        let mut builder = ColumnBuilder::new(&spec);
        cells.iter().for_each(|c| builder.append(c));
        let mut out = Vec::new();
        builder.finish(&mut out);
        assert_eq!(out.len(), fields(&spec).len());
        out
    }

    fn text(s: &str) -> Cell<'_> {
        Cell::One(Item::Str(s.into()))
    }

    #[test]
    fn dates_keep_text_and_get_companions_only_when_complete() {
        let built = build("date", false, &[text("1970-01-02"), text("1970-06")]);
        assert_eq!(built[0].as_string::<i32>().value(1), "1970-06");
        let days = built[1].as_primitive::<Date32Type>();
        assert_eq!((days.value(0), days.is_null(1)), (1, true));

        let built = build(
            "dateTime",
            false,
            &[text("2024-01-01T02:00:00+02:00"), text("2024-01-01")],
        );
        let ts = built[1].as_primitive::<TimestampMicrosecondType>();
        assert_eq!((ts.value(0), ts.is_null(1)), (1_704_067_200_000_000, true));
    }

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

    #[test]
    fn values_convert_as_their_json_reads() {
        let (ten, one_fifty, yes, null) = (
            Json::Number("10.0"),
            Json::Number("1.50"),
            Json::Bool(true),
            Json::Null,
        );
        let node = |json| Cell::One(Item::Node { json, ty: None });
        let ints = build(
            "integer",
            false,
            &[
                node(&ten),
                node(&one_fifty),
                text("3"),
                Cell::One(Item::Int(7)),
            ],
        );
        let ints = ints[0].as_primitive::<Int64Type>();
        assert_eq!(ints.value(0), 10);
        assert!(
            ints.is_null(1) && ints.is_null(2),
            "no rounding, no string parsing"
        );
        assert_eq!(ints.value(3), 7);

        let floats = build(
            "decimal",
            false,
            &[node(&one_fifty), Cell::One(Item::Dec("2.5".into()))],
        );
        let floats = floats[0].as_primitive::<Float64Type>();
        assert_eq!((floats.value(0), floats.value(1)), (1.5, 2.5));

        let texts = build(
            "string",
            false,
            &[node(&one_fifty), node(&yes), node(&null), Cell::Null],
        );
        let texts = texts[0].as_string::<i32>();
        assert_eq!((texts.value(0), texts.value(1)), ("1.5", "true"));
        assert!(texts.is_null(2) && texts.is_null(3));

        let lists = build(
            "string",
            true,
            &[
                Cell::Many(vec![Item::Str("a".into()), Item::Str("b".into())]),
                Cell::Many(vec![]),
                Cell::Null,
            ],
        );
        let lists = lists[0].as_list::<i32>();
        assert_eq!(lists.value(0).len(), 2);
        assert!(lists.is_valid(1) && lists.value(1).is_empty());
        assert!(lists.is_null(2));
    }
}
