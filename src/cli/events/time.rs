//! Times of `--since`/`--until` and of events: RFC 3339 and durations back from now, as
//! microseconds since the Unix epoch (UTC).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Now, in [`Micros`].
pub fn now() -> Micros {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as Micros,
        Err(e) => -(e.duration().as_micros() as Micros),
    }
}

/// `--since`/`--until`: a duration back from `now` (`30s`, `15m`, `2h`, `7d`, `1h30m`) or an
/// RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T11:00:00+01:00`, fractions allowed).
pub fn parse_bound(s: &str, now: Micros) -> Result<Micros, String> {
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(['s', 'm', 'h', 'd']) && !s.contains([':', '-']) {
        return parse_duration(s).map(|d| now - d);
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither a duration (30s, 15m, 2h, 7d, 1h30m) nor an RFC 3339 time (2026-12-06T10:00:00Z)")
    })
}

/// `1h30m` → microseconds.
fn parse_duration(s: &str) -> Result<Micros, String> {
    let bad = || format!("{s:?} is not a duration (30s, 15m, 2h, 7d, 1h30m)");
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    total.checked_mul(1_000_000).ok_or_else(bad)
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `t`/space accepted for `T`) → microseconds.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = six.parse().ok()?;
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && tz.as_bytes()[3] == b':' => {
            let oh: i64 = tz[1..3].parse().ok()?;
            let om: i64 = tz[4..6].parse().ok()?;
            let o = (oh * 60 + om) * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86400 + h * 3600 + mi * 60 + sec) - offset) * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_rfc3339("2026-11-23T22:41:07.123456Z"), Some(1_795_473_667_123_456));
        assert_eq!(parse_rfc3339("2026-11-23T23:41:07.123456+01:00"), parse_rfc3339("2026-11-23T22:41:07.123456Z"));
        assert_eq!(parse_rfc3339("2026-11-23T21:41:07.123456-01:00"), parse_rfc3339("2026-11-23T22:41:07.123456Z"));
        assert_eq!(parse_rfc3339("2000-02-29 12:00:00z"), Some(951_825_600_000_000));
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T22:41:07",
            "2026-13-01T00:00:00Z",
            "2026-11-23T22:41:07.Z",
            "2026-11-23T22:41:07+0100",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounds_take_durations_and_times() {
        let now = 10_000_000_000;
        assert_eq!(parse_bound("30s", now), Ok(now - 30_000_000));
        assert_eq!(parse_bound("15m", now), Ok(now - 900_000_000));
        assert_eq!(parse_bound("2h", now), Ok(now - 7_200_000_000));
        assert_eq!(parse_bound("1d", now), Ok(now - 86_400_000_000));
        assert_eq!(parse_bound("1h30m", now), Ok(now - 5_400_000_000));
        assert_eq!(parse_bound("1970-01-01T00:00:10Z", now), Ok(10_000_000));
        for bad in ["", "5", "5w", "h", "1h30", "-5m", "99999999999999999d"] {
            assert!(parse_bound(bad, now).is_err(), "{bad}");
        }
        assert!(parse_bound("soon", now).unwrap_err().contains("neither a duration"));
    }
}
