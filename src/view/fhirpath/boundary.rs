//! `lowBoundary()` / `highBoundary()`: the range a value's written precision
//! allows. Decimals use their digits (1.0 → 0.95..1.05); partial dates,
//! dateTimes and times fill the missing parts; a dateTime without a zone
//! spans every zone (+14:00 for the low end, -12:00 for the high end).

use std::borrow::Cow;

use super::item::Item;
use crate::view::json::Json;

pub fn of<'a>(item: &Item<'a>, high: bool) -> Option<Item<'a>> {
    let ty = item.type_name();
    let text: &str = match item {
        Item::Node {
            json: Json::Number(n),
            ..
        } => n,
        Item::Node {
            json: Json::String(s),
            ..
        } => s,
        Item::Dec(d) => d,
        Item::Int(_) => return decimal(&item_int_text(item)?, high),
        Item::Str(s) | Item::Date(s) | Item::DateTime(s) | Item::Time(s) => s,
        _ => return None,
    };
    match ty.as_ref() {
        "decimal" | "integer" => decimal(text, high),
        "date" => date(text, high).map(|d| Item::Date(Cow::Owned(d))),
        "dateTime" | "instant" => date_time(text, high).map(|d| Item::DateTime(Cow::Owned(d))),
        "time" => time(text, high).map(|t| Item::Time(Cow::Owned(t))),
        // Untyped strings: infer from the text.
        "string" if text.contains('T') => {
            date_time(text, high).map(|d| Item::DateTime(Cow::Owned(d)))
        }
        "string" if text.len() >= 4 && text.as_bytes()[..4].iter().all(u8::is_ascii_digit) => {
            date(text, high).map(|d| Item::Date(Cow::Owned(d)))
        }
        "string" if text.contains(':') => time(text, high).map(|t| Item::Time(Cow::Owned(t))),
        _ => None,
    }
}

fn item_int_text(item: &Item<'_>) -> Option<String> {
    match item {
        Item::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn decimal<'a>(text: &str, high: bool) -> Option<Item<'a>> {
    let value: f64 = text.parse().ok()?;
    let scale = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    let half = 0.5 * 10f64.powi(-(scale as i32));
    let bound = if high { value + half } else { value - half };
    // Round to one digit more than the input, to drop float noise.
    let rounded = format!("{bound:.prec$}", prec = scale + 1);
    Some(Item::Dec(Cow::Owned(rounded)))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn date(text: &str, high: bool) -> Option<String> {
    let parts: Vec<&str> = text.split('-').collect();
    let year: i32 = parts.first()?.parse().ok()?;
    let month: u32 = match parts.get(1) {
        Some(m) => m.parse().ok()?,
        None => {
            if high {
                12
            } else {
                1
            }
        }
    };
    let day: u32 = match parts.get(2) {
        Some(d) => d.parse().ok()?,
        None => {
            if high {
                days_in_month(year, month)
            } else {
                1
            }
        }
    };
    if parts.len() > 3 || !(1..=12).contains(&month) {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

fn time(text: &str, high: bool) -> Option<String> {
    let (hms, frac) = match text.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (text, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let hour: u32 = parts.first()?.parse().ok()?;
    let minute: u32 = match parts.get(1) {
        Some(m) => m.parse().ok()?,
        None => {
            if high {
                59
            } else {
                0
            }
        }
    };
    let second: u32 = match parts.get(2) {
        Some(s) => s.parse().ok()?,
        None => {
            if high {
                59
            } else {
                0
            }
        }
    };
    let millis = match frac {
        Some(f) => {
            let digits: String = f
                .chars()
                .chain(std::iter::repeat(if high { '9' } else { '0' }))
                .take(3)
                .collect();
            digits
        }
        None => (if high { "999" } else { "000" }).to_owned(),
    };
    Some(format!("{hour:02}:{minute:02}:{second:02}.{millis}"))
}

fn date_time(text: &str, high: bool) -> Option<String> {
    let (date_part, rest) = match text.split_once('T') {
        Some((d, r)) => (d, r),
        None => (text, ""),
    };
    let day = date(date_part, high)?;
    // Split off the zone: Z, +hh:mm or -hh:mm after the time.
    let (time_part, zone) = match rest.find(['Z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let clock = if time_part.is_empty() {
        time(if high { "23" } else { "00" }, high)?
    } else {
        time(time_part, high)?
    };
    let zone = match zone {
        Some("Z") => "Z".to_owned(),
        Some(z) => z.to_owned(),
        None => (if high { "-12:00" } else { "+14:00" }).to_owned(),
    };
    Some(format!("{day}T{clock}{zone}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(item: Option<Item<'_>>) -> String {
        item.unwrap().to_serde().to_string()
    }

    #[test]
    fn boundaries_follow_precision() {
        let dec = Json::Number("1.0");
        let item = Item::Node {
            json: &dec,
            ty: None,
        };
        assert_eq!(s(of(&item, false)), "0.95");
        assert_eq!(s(of(&item, true)), "1.05");
        assert_eq!(date("1970-06", true).unwrap(), "1970-06-30");
        assert_eq!(date("2024-02", true).unwrap(), "2024-02-29");
        assert_eq!(
            date_time("2010-10-10", false).unwrap(),
            "2010-10-10T00:00:00.000+14:00"
        );
        assert_eq!(
            date_time("2010-10-10", true).unwrap(),
            "2010-10-10T23:59:59.999-12:00"
        );
        assert_eq!(time("12:34:00", true).unwrap(), "12:34:00.999");
    }
}
