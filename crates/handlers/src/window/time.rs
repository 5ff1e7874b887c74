//! Event time for the `window` handler: which windows a time falls in, RFC
//! 3339 times read and written, and durations shown the way a pipeline
//! file writes them.
//!
//! Every time is milliseconds since the Unix epoch (UTC) and lies between
//! [`MIN_TIME_MS`] and [`MAX_TIME_MS`] (years 0001 to 9999), so window
//! arithmetic with durations of at most [`MAX_DURATION_MS`] never
//! overflows an `i64`.

use std::fmt;

/// 0001-01-01T00:00:00Z, the earliest event time accepted.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;

/// 9999-12-31T23:59:59.999Z, the latest event time accepted.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The longest `size`, `slide` or `allowed_lateness`: 100 years of 365
/// days.
pub const MAX_DURATION_MS: i64 = 36_500 * DAY_MS;

const DAY_MS: i64 = 86_400_000;

/// The starts of the windows `[s, s + size)` that contain `t`, where `s` is
/// a multiple of `slide` (`size` a multiple of `slide`), oldest first.
pub fn window_starts(t: i64, size: i64, slide: i64) -> impl DoubleEndedIterator<Item = i64> {
    let latest = t.div_euclid(slide) * slide;
    let count = size / slide;
    (0..count).rev().map(move |i| latest - i * slide)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads `count` ASCII digits at `at`.
fn digits(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(at..at + count)?;
    slice.iter().try_fold(0i64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

fn expect(bytes: &[u8], at: usize, wanted: &[u8]) -> bool {
    bytes.get(at).is_some_and(|b| wanted.contains(b))
}

/// Parses an RFC 3339 time (`2024-05-01T12:00:00Z`,
/// `2024-05-01T14:00:00.250+02:00`) into epoch milliseconds; digits past
/// the millisecond are dropped. The error says what is wrong.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    const SHAPE: &str = "expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM";
    let b = text.as_bytes();
    let field = |at, count, name: &str, range: std::ops::RangeInclusive<i64>| {
        let value = digits(b, at, count).ok_or_else(|| SHAPE.to_owned())?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!("{name} {value} is out of range"))
        }
    };
    let year = field(0, 4, "year", 1..=9999)?;
    if !expect(b, 4, b"-") || !expect(b, 7, b"-") || !expect(b, 10, b"Tt ") {
        return Err(SHAPE.to_owned());
    }
    let month = field(5, 2, "month", 1..=12)?;
    let day = field(8, 2, "day", 1..=days_in_month(year, month))?;
    if !expect(b, 13, b":") || !expect(b, 16, b":") {
        return Err(SHAPE.to_owned());
    }
    let hour = field(11, 2, "hour", 0..=23)?;
    let minute = field(14, 2, "minute", 0..=59)?;
    let second = field(17, 2, "second", 0..=59)?;
    let mut at = 19;
    let mut millis = 0;
    if expect(b, at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(SHAPE.to_owned());
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() && expect(b, at + 3, b":") => {
            let hours = field(at + 1, 2, "offset hour", 0..=23)?;
            let minutes = field(at + 4, 2, "offset minute", 0..=59)?;
            let total = hours * 60 + minutes;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(SHAPE.to_owned()),
    };
    let ms = days_from_civil(year, month, day) * DAY_MS
        + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
        + millis;
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err("the time is outside the years 0001 to 9999 in UTC".to_owned())
    }
}

/// An epoch-millisecond time written as RFC 3339 in UTC with milliseconds.
pub struct Rfc3339(pub i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY_MS);
        let in_day = self.0.rem_euclid(DAY_MS);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1000 % 60,
            in_day % 1000
        )
    }
}

/// A duration in milliseconds as a pipeline file writes it: `1h`, `15m`,
/// `30s`, `250ms`.
pub struct Millis(pub i64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        match ms {
            0 => write!(f, "0s"),
            _ if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            _ if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            _ if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_hold_their_start_and_end_minus_one() {
        let starts = |t| window_starts(t, 60_000, 60_000).collect::<Vec<_>>();
        assert_eq!(starts(120_000), vec![120_000]);
        assert_eq!(starts(179_999), vec![120_000]);
        assert_eq!(starts(180_000), vec![180_000]);
        assert_eq!(starts(-1), vec![-60_000], "before the epoch, floor");
    }

    #[test]
    fn sliding_windows_are_every_window_that_contains_the_time() {
        let starts = |t| window_starts(t, 60_000, 15_000).collect::<Vec<_>>();
        // t = s: the window starting at t and the three before it.
        assert_eq!(starts(60_000), vec![15_000, 30_000, 45_000, 60_000]);
        // t = e - 1 of [0, 60000): still in it.
        assert_eq!(starts(59_999), vec![0, 15_000, 30_000, 45_000]);
        for t in [0, 1, 14_999, 15_000, 59_999, 60_000, 123_456] {
            for s in starts(t) {
                assert!(s <= t && t < s + 60_000 && s % 15_000 == 0, "{t} in {s}");
            }
        }
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.25+01:00"),
            Ok(1_700_000_000_250)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14t22:13:20.123999z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Ok(-1));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00-00:30"),
            Ok(1_709_166_600_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:60Z",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20Zjunk",
            "0001-01-01T00:00:00+00:01",
            "",
            "２０２３",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn times_are_written_back_as_rfc3339() {
        for ms in [
            0,
            -1,
            1_700_000_000_250,
            MIN_TIME_MS,
            MAX_TIME_MS,
            951_782_400_000,
        ] {
            let text = Rfc3339(ms).to_string();
            assert_eq!(parse_rfc3339(&text), Ok(ms), "{text}");
        }
        assert_eq!(
            Rfc3339(1_700_000_000_000).to_string(),
            "2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn durations_show_in_their_largest_whole_unit() {
        let shown: Vec<String> = [0, 250, 30_000, 900_000, 7_200_000, 90_000]
            .into_iter()
            .map(|ms| Millis(ms).to_string())
            .collect();
        assert_eq!(shown, ["0s", "250ms", "30s", "15m", "2h", "90s"]);
    }
}
