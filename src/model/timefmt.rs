//! The one time convention of the database: RFC 3339 UTC text with milliseconds
//! (`2026-11-26T15:39:21.000Z`), which sorts and compares correctly as text.
//!
//! Receives: epoch seconds (from S3 responses or the clock) or user input such as
//! `2026-01-01`. Sends on: that text. Invariant: every time s3meta writes has this exact shape.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats seconds and milliseconds since the Unix epoch.
pub fn format_epoch(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let Ok(year @ 0..=9999) = u32::try_from(y) else {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    };
    // Digit by digit: every listed object's Last-Modified goes through here, and `format!`
    // was a tenth of a rescan's CPU.
    let mut out = String::with_capacity(24);
    let fields = [
        (year, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (rem / 3600, 2, ':'),
        ((rem % 3600) / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (millis.min(999), 3, 'Z'),
    ];
    for (value, width, sep) in fields {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
        out.push(sep);
    }
    out
}

pub fn from_smithy(t: &aws_smithy_types::DateTime) -> String {
    format_epoch(t.secs(), t.subsec_nanos() / 1_000_000)
}

pub fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_epoch(d.as_secs() as i64, d.subsec_millis())
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]][Z]` (UTC), or a time relative to now
/// (`24h`, `-7d`: see [`parse_ago`]), into the canonical text.
pub fn parse_user_time(text: &str) -> Option<String> {
    if let Some(ago) = parse_ago(text) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at = now.saturating_sub(ago);
        return Some(format_epoch(at.as_secs() as i64, at.subsec_millis()));
    }
    parse_absolute(text)
}

/// A span back from now: `N` and a unit (`s`, `m`, `h`, `d`, `w`), with or without a leading
/// `-` (`--since 24h` and `@modified>-7d` both mean "since 24 hours / 7 days ago").
pub fn parse_ago(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let t = t.strip_prefix('-').unwrap_or(t);
    let unit = t.chars().last()?;
    let n: u64 = t[..t.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n.checked_mul(secs)?))
}

fn parse_absolute(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix('z'))
        .unwrap_or(t);
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, tm)) => (d, tm),
        None => (t, "00:00:00"),
    };
    let mut dp = date.split('-');
    let y: i64 = num(dp.next()?, 4)?;
    let m: u32 = num(dp.next()?, 2)?;
    let d: u32 = num(dp.next()?, 2)?;
    if dp.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut tp = hms.split(':');
    let hh: i64 = num(tp.next()?, 2)?;
    let mm: i64 = num(tp.next()?, 2)?;
    let ss: i64 = tp.next().map_or(Some(0), |s| num(s, 2))?;
    if tp.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: u32 = format!("{frac:0<3}")[..3].parse().ok()?;
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(format_epoch(secs, millis))
}

fn num<T: std::str::FromStr>(s: &str, width: usize) -> Option<T> {
    (s.len() == width && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms (public domain), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch() {
        assert_eq!(format_epoch(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_epoch(1_795_707_561, 7), "2026-11-26T15:39:21.007Z");
        assert_eq!(format_epoch(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        // The digit-by-digit path agrees with `format!` across years, and outside 0..=9999.
        for secs in (-70_000_000_000i64..300_000_000_000).step_by(7_777_777_777) {
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60,
                secs.rem_euclid(1000)
            );
            assert_eq!(format_epoch(secs, secs.rem_euclid(1000) as u32), want);
        }
    }

    #[test]
    fn parses_user_times() {
        assert_eq!(
            parse_user_time("2026-01-01").as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(
            parse_user_time("2026-11-26T15:39:21.5Z").as_deref(),
            Some("2026-11-26T15:39:21.500Z")
        );
        assert_eq!(
            parse_user_time("2026-11-26 15:39").as_deref(),
            Some("2026-11-26T15:39:00.000Z")
        );
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "yesterday",
            "2026-1-1",
            "2026-01-01T25:00",
        ] {
            assert_eq!(parse_user_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_days() {
        for days in [-800_000, -1, 0, 1, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
