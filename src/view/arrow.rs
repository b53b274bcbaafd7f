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

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

use super::cell::Cell;
use super::kind::{Kind, bool_of, float_of, int_of, str_of, text_of};
use super::{ColumnSpec, CompiledView};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fhirpath::Item;
    use crate::view::json::Json;
    use deltalake::arrow::array::{Array, AsArray};
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
