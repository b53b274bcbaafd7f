//! HL7 v2 DTM/TS/DT values to FHIR `date`, `dateTime` and `instant`.
//!
//! In: `YYYY[MM[DD[HH[MM[SS[.S{1,9}]]]]]][+/-ZZZZ]`. Out: FHIR strings of the
//! same precision where FHIR can say it (`2024`, `2024-05`, `2024-05-17`,
//! full times). FHIR cannot say "hour" or "minute" precision, so those are
//! padded with `:00` seconds. A time without an offset takes the caller's
//! default offset, and every function that does so reports it.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

/// How much of a DTM was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// Why a DTM was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum DtmError {
    #[error("empty")]
    Empty,
    #[error("expected YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]")]
    BadFormat,
    #[error("month, day, hour, minute or second out of range")]
    OutOfRange,
    #[error("time zone offset must be +HHMM or -HHMM within +/-14:00")]
    BadOffset,
}

/// A parsed DTM. Missing parts are 0 (time) or 1 (month, day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtm {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Digits of fractional seconds as sent (0 = none).
    pub frac_digits: u8,
    pub precision: Precision,
    pub offset: Option<FixedOffset>,
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse a DTM (also a TS's first component or a DT).
pub fn parse_dtm(value: &str) -> Result<Dtm, DtmError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DtmError::Empty);
    }
    let (main, offset) = match v.get(4..).and_then(|rest| rest.find(['+', '-'])) {
        Some(i) => (&v[..4 + i], Some(&v[4 + i..])),
        None => (v, None),
    };
    let (whole, frac) = match main.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (main, None),
    };
    let precision = match whole.len() {
        4 => Precision::Year,
        6 => Precision::Month,
        8 => Precision::Day,
        10 => Precision::Hour,
        12 => Precision::Minute,
        14 => Precision::Second,
        _ => return Err(DtmError::BadFormat),
    };
    if !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DtmError::BadFormat);
    }
    let part =
        |a: usize, b: usize, default: u32| whole.get(a..b).and_then(digits).unwrap_or(default);
    let (nanos, frac_digits) = match frac {
        None => (0, 0),
        Some(f) if precision == Precision::Second && (1..=9).contains(&f.len()) => {
            let n = digits(f).ok_or(DtmError::BadFormat)?;
            (n * 10u32.pow(9 - f.len() as u32), f.len() as u8)
        }
        Some(_) => return Err(DtmError::BadFormat),
    };
    let dtm = Dtm {
        year: part(0, 4, 0) as i32,
        month: part(4, 6, 1),
        day: part(6, 8, 1),
        hour: part(8, 10, 0),
        minute: part(10, 12, 0),
        second: part(12, 14, 0),
        nanos,
        frac_digits,
        precision,
        offset: offset.map(parse_offset).transpose()?,
    };
    if NaiveDate::from_ymd_opt(dtm.year, dtm.month, dtm.day).is_none()
        || dtm.hour > 23
        || dtm.minute > 59
        || dtm.second > 59
    {
        return Err(DtmError::OutOfRange);
    }
    Ok(dtm)
}

fn parse_offset(s: &str) -> Result<FixedOffset, DtmError> {
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let body = &s[1..];
    if body.len() != 4 || !body.is_ascii() {
        return Err(DtmError::BadOffset);
    }
    let h = digits(&body[..2]).ok_or(DtmError::BadOffset)?;
    let m = digits(&body[2..]).ok_or(DtmError::BadOffset)?;
    if h > 14 || m > 59 {
        return Err(DtmError::BadOffset);
    }
    FixedOffset::east_opt(sign * (h as i32 * 3600 + m as i32 * 60)).ok_or(DtmError::BadOffset)
}

fn fmt_offset(o: FixedOffset) -> String {
    let secs = o.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let secs = secs.abs();
    format!("{sign}{:02}:{:02}", secs / 3600, (secs % 3600) / 60)
}

impl Dtm {
    /// FHIR `date` (time parts dropped).
    pub fn to_date(&self) -> String {
        match self.precision {
            Precision::Year => format!("{:04}", self.year),
            Precision::Month => format!("{:04}-{:02}", self.year, self.month),
            _ => format!("{:04}-{:02}-{:02}", self.year, self.month, self.day),
        }
    }

    fn time_string(&self, default_tz: FixedOffset) -> (String, bool) {
        let (offset, assumed) = match self.offset {
            Some(o) => (o, false),
            None => (default_tz, true),
        };
        let frac = if self.frac_digits > 0 {
            let all = format!("{:09}", self.nanos);
            format!(".{}", &all[..self.frac_digits as usize])
        } else {
            String::new()
        };
        (
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{}",
                self.year,
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second,
                fmt_offset(offset)
            ),
            assumed,
        )
    }

    /// FHIR `dateTime`; `true` when `default_tz` had to be used.
    pub fn to_datetime(&self, default_tz: FixedOffset) -> (String, bool) {
        if self.precision <= Precision::Day {
            (self.to_date(), false)
        } else {
            self.time_string(default_tz)
        }
    }

    /// FHIR `instant` (always to the second, missing parts padded).
    pub fn to_instant_string(&self, default_tz: FixedOffset) -> (String, bool) {
        self.time_string(default_tz)
    }

    /// The instant this DTM names (missing parts padded).
    pub fn to_instant(&self, default_tz: FixedOffset) -> (DateTime<FixedOffset>, bool) {
        let (offset, assumed) = match self.offset {
            Some(o) => (o, false),
            None => (default_tz, true),
        };
        let naive = NaiveDate::from_ymd_opt(self.year, self.month, self.day)
            .and_then(|d| d.and_hms_nano_opt(self.hour, self.minute, self.second, self.nanos))
            .unwrap_or_default();
        let dt = offset
            .from_local_datetime(&naive)
            .single()
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive).with_timezone(&offset));
        (dt, assumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn every_precision() {
        let cases = [
            ("2024", "2024"),
            ("202405", "2024-05"),
            ("20240517", "2024-05-17"),
            ("2024051713", "2024-05-17T13:00:00+00:00"),
            ("202405171342", "2024-05-17T13:42:00+00:00"),
            ("20240517134201", "2024-05-17T13:42:01+00:00"),
            ("20240517134201.1234", "2024-05-17T13:42:01.1234+00:00"),
            ("20240517134201-0500", "2024-05-17T13:42:01-05:00"),
            ("198908181126+0215", "1989-08-18T11:26:00+02:15"),
        ];
        for (v2, fhir) in cases {
            let d = parse_dtm(v2).unwrap();
            assert_eq!(d.to_datetime(utc()).0, fhir, "{v2}");
        }
        let (_, assumed) = parse_dtm("202405171342").unwrap().to_datetime(utc());
        assert!(assumed);
        let (_, assumed) = parse_dtm("20240517").unwrap().to_datetime(utc());
        assert!(!assumed);
    }

    #[test]
    fn instants_compare() {
        let a = parse_dtm("20240517134201+0200")
            .unwrap()
            .to_instant(utc())
            .0;
        let b = parse_dtm("20240517124201+0000")
            .unwrap()
            .to_instant(utc())
            .0;
        assert!(a < b);
        assert_eq!(
            parse_dtm("2024").unwrap().to_instant_string(utc()).0,
            "2024-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(parse_dtm(""), Err(DtmError::Empty));
        assert_eq!(parse_dtm("2010201200+0215"), Err(DtmError::OutOfRange));
        assert_eq!(parse_dtm("20240230"), Err(DtmError::OutOfRange));
        assert_eq!(parse_dtm("2024051"), Err(DtmError::BadFormat));
        assert!(parse_dtm("2024-05-17").is_err());
        assert_eq!(parse_dtm("20240517+25"), Err(DtmError::BadOffset));
        assert_eq!(parse_dtm("2024.5"), Err(DtmError::BadFormat));
    }
}
