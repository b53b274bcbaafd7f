//! FHIR `date` / `dateTime` / `instant` values as inclusive day ranges.
//!
//! In: the text of a date as written (`2020`, `2020-05`, `2020-05-04`,
//! `2020-05-04T10:00:00-05:00`). Out: the days it may denote, as a
//! [`DayRange`] of days since 1970-01-01. A partial date covers every day it
//! could mean; a dateTime is its calendar date as written (no time-zone
//! shift: code lists and consents speak in dates). Nothing here allocates.

/// Days since 1970-01-01 in the proleptic Gregorian calendar.
pub type Day = i32;

/// The days from `first` to `last`, both included (`first <= last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DayRange {
    pub first: Day,
    pub last: Day,
}

/// How a day range relates to another one: wholly inside, wholly outside, or
/// partly (a partial date straddling a boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Within,
    Disjoint,
    Partial,
}

impl DayRange {
    /// Every day there is.
    pub const ALL: DayRange = DayRange {
        first: Day::MIN,
        last: Day::MAX,
    };

    pub fn day(day: Day) -> Self {
        DayRange {
            first: day,
            last: day,
        }
    }

    pub fn contains(&self, day: Day) -> bool {
        self.first <= day && day <= self.last
    }

    pub fn intersects(&self, other: &DayRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Where `self` lies relative to `bounds`.
    pub fn within(&self, bounds: &DayRange) -> Overlap {
        if bounds.first <= self.first && self.last <= bounds.last {
            Overlap::Within
        } else if self.intersects(bounds) {
            Overlap::Partial
        } else {
            Overlap::Disjoint
        }
    }
}

impl std::fmt::Display for DayRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |f: &mut std::fmt::Formatter<'_>, day: Day, open: &str| {
            if day == Day::MIN || day == Day::MAX {
                f.write_str(open)
            } else {
                let (y, m, d) = civil_from_days(day);
                write!(f, "{y:04}-{m:02}-{d:02}")
            }
        };
        if self.first == self.last {
            return end(f, self.first, "");
        }
        end(f, self.first, "…")?;
        f.write_str("..")?;
        end(f, self.last, "…")
    }
}

/// The days `text` may denote, or `None` when it is not a FHIR date or
/// dateTime (`2020-13-01`, `20200101`, `May 2020`).
pub fn parse(text: &str) -> Option<DayRange> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    match b.len() {
        4 => {
            return Some(DayRange {
                first: days_from_civil(year, 1, 1),
                last: days_from_civil(year, 12, 31),
            });
        }
        7 if b[4] == b'-' => {
            let month = digits(5..7)?;
            if !(1..=12).contains(&month) {
                return None;
            }
            return Some(DayRange {
                first: days_from_civil(year, month, 1),
                last: days_from_civil(year, month, days_in_month(year, month)),
            });
        }
        _ => {}
    }
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' || (b.len() > 10 && b[10] != b'T') {
        return None;
    }
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(DayRange::day(days_from_civil(year, month, day)))
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> Day {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(days: Day) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

/// The UTC day of a Unix time in microseconds (the job's instant, say).
pub fn day_of_micros(micros: i64) -> Day {
    micros.div_euclid(86_400_000_000) as Day
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_partial_dates_and_date_times_as_written() {
        let d = |y, m, dd| days_from_civil(y, m, dd);
        assert_eq!(parse("1970-01-01"), Some(DayRange::day(0)));
        assert_eq!(parse("2020-02-29"), Some(DayRange::day(d(2020, 2, 29))));
        assert_eq!(
            parse("2020"),
            Some(DayRange {
                first: d(2020, 1, 1),
                last: d(2020, 12, 31)
            })
        );
        assert_eq!(
            parse("2021-02"),
            Some(DayRange {
                first: d(2021, 2, 1),
                last: d(2021, 2, 28)
            })
        );
        // The date as written, whatever the offset.
        assert_eq!(
            parse("2020-05-04T23:30:00-05:00"),
            Some(DayRange::day(d(2020, 5, 4)))
        );
        for bad in [
            "",
            "202",
            "2020-1",
            "2020-13",
            "2021-02-29",
            "2020-00-10",
            "20200101",
            "2020/01/01",
            "2020-01-01 10:00",
            "May 2020",
            "2020-01-32",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_round_trips_and_ranges_compare() {
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        let year = parse("2020").unwrap();
        let from_june = DayRange {
            first: days_from_civil(2020, 6, 1),
            last: Day::MAX,
        };
        assert_eq!(year.within(&from_june), Overlap::Partial);
        assert_eq!(
            parse("2021-01").unwrap().within(&from_june),
            Overlap::Within
        );
        assert_eq!(
            parse("2019-12-31").unwrap().within(&from_june),
            Overlap::Disjoint
        );
        assert_eq!(from_june.to_string(), "2020-06-01..…");
        assert_eq!(day_of_micros(-1), -1);
        assert_eq!(day_of_micros(86_400_000_000), 1);
    }
}
