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
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use serde_json::Value;

use super::ColumnSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Date,
    DateTime,
}

fn kind(ty: Option<&str>) -> Kind {
    match ty.unwrap_or("string") {
        "integer" | "positiveInt" | "unsignedInt" | "integer64" => Kind::Int,
        "decimal" => Kind::Float,
        "boolean" => Kind::Bool,
        "date" => Kind::Date,
        "dateTime" | "instant" => Kind::DateTime,
        _ => Kind::Text,
    }
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
    let k = kind(column.ty.as_deref());
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

/// Strings as they are (no copy); other JSON values as their JSON text.
fn text_of(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.as_str().into()),
        other => Some(other.to_string().into()),
    }
}

/// Builds the arrays for `column` from its values in `rows` (index `at`).
pub fn arrays(column: &ColumnSpec, values: &[&Value]) -> Vec<ArrayRef> {
    let k = kind(column.ty.as_deref());
    if column.collection {
        return vec![list_array(k, values)];
    }
    let mut out: Vec<ArrayRef> = Vec::new();
    match k {
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(values.len());
            values.iter().for_each(|v| {
                b.append_option(
                    v.as_i64()
                        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                )
            });
            out.push(Arc::new(b.finish()));
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(values.len());
            values.iter().for_each(|v| b.append_option(v.as_f64()));
            out.push(Arc::new(b.finish()));
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            values.iter().for_each(|v| b.append_option(v.as_bool()));
            out.push(Arc::new(b.finish()));
        }
        Kind::Text | Kind::Date | Kind::DateTime => {
            let bytes = values.iter().filter_map(|v| v.as_str()).map(str::len).sum();
            let mut b = StringBuilder::with_capacity(values.len(), bytes);
            values.iter().for_each(|v| b.append_option(text_of(v)));
            out.push(Arc::new(b.finish()));
        }
    }
    match k {
        Kind::Date => {
            let mut b = Date32Builder::with_capacity(values.len());
            values
                .iter()
                .for_each(|v| b.append_option(v.as_str().and_then(full_date_days)));
            out.push(Arc::new(b.finish()));
        }
        Kind::DateTime => {
            let mut b =
                TimestampMicrosecondBuilder::with_capacity(values.len()).with_timezone("UTC");
            // Complete = seconds and a zone: exactly what RFC 3339 requires.
            values.iter().for_each(|v| {
                b.append_option(v.as_str().and_then(crate::fhir::parse_instant_micros))
            });
            out.push(Arc::new(b.finish()));
        }
        _ => {}
    }
    out
}

fn list_array(k: Kind, values: &[&Value]) -> ArrayRef {
    macro_rules! list {
        ($builder:expr, $convert:expr) => {{
            let mut b = ListBuilder::new($builder);
            for v in values {
                match v.as_array() {
                    Some(items) => {
                        for item in items {
                            b.values().append_option($convert(item));
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match k {
        Kind::Int => list!(Int64Builder::new(), |v: &Value| v.as_i64()),
        Kind::Float => list!(Float64Builder::new(), |v: &Value| v.as_f64()),
        Kind::Bool => list!(BooleanBuilder::new(), |v: &Value| v.as_bool()),
        _ => list!(StringBuilder::new(), text_of),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Date32Type, TimestampMicrosecondType};

    #[test]
    fn dates_keep_text_and_get_companions_only_when_complete() {
        let spec = ColumnSpec {
            name: "born".into(),
            ty: Some("date".into()),
            collection: false,
        };
        let (full, partial) = (Value::from("1970-01-02"), Value::from("1970-06"));
        let built = arrays(&spec, &[&full, &partial]);
        assert_eq!(fields(&spec).len(), 2);
        assert_eq!(built[0].as_string::<i32>().value(1), "1970-06");
        let days = built[1].as_primitive::<Date32Type>();
        assert_eq!((days.value(0), days.is_null(1)), (1, true));

        let spec = ColumnSpec {
            name: "at".into(),
            ty: Some("dateTime".into()),
            collection: false,
        };
        let (full, day) = (
            Value::from("2024-01-01T02:00:00+02:00"),
            Value::from("2024-01-01"),
        );
        let built = arrays(&spec, &[&full, &day]);
        let ts = built[1].as_primitive::<TimestampMicrosecondType>();
        assert_eq!((ts.value(0), ts.is_null(1)), (1_704_067_200_000_000, true));
    }
}
