//! RFC 3339 timestamps ↔ unix time: upstream listings (Anthropic `created_at`, Ollama `modified_at`),
//! the gateway's own query parameters (usage filters) and the listings it serves (Anthropic-shaped
//! `GET /v1/models`). Pure and dependency-free; the one date parser and formatter of the workspace.

/// RFC 3339 timestamp (`2025-05-04T17:37:44.706015396-07:00`, `…Z`) → unix seconds (fraction dropped).
/// `None` when malformed or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    u64::try_from(parse_rfc3339_ms(s)?.div_euclid(1000)).ok()
}

/// A calendar date `YYYY-MM-DD` → days since 1970-01-01 (negative before). `None` when malformed or
/// impossible (`2026-02-31`, `2023-02-29`).
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    valid_date(year, month, day).then(|| days_from_civil(year, month, day))
}

fn valid_date(year: i64, month: i64, day: i64) -> bool {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12).contains(&month) && day >= 1 && day <= month_days[(month - 1) as usize]
}

/// RFC 3339 timestamp → unix milliseconds (signed: before 1970 is negative; digits past the
/// millisecond are dropped). `None` when malformed or impossible.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 3 {
                millis = millis * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return None;
        }
        for _ in (pos - start)..3 {
            millis *= 10;
        }
    }
    let offset = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b.get(pos + 3) == Some(&b':') => {
            let h = num(pos + 1..pos + 3)?;
            let m = num(pos + 4..pos + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    if !valid_date(year, month, day) {
        return None;
    }
    // 60 allows a leap second (it rolls into the next minute).
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs * 1000 + millis)
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (UTC, no fraction), the form Anthropic's `created_at` uses.
/// Round-trips with [`parse_rfc3339`].
pub fn format_rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 2);
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_fractions_and_separators() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-05-04T17:37:44.706015396-07:00"), Some(1_746_405_464));
        assert_eq!(parse_rfc3339("2025-05-05T02:07:44+01:30"), Some(1_746_405_464));
        assert_eq!(parse_rfc3339("2000-03-01 00:00:00+00:00"), Some(951_868_800));
        assert_eq!(parse_rfc3339_ms("2025-01-01T12:00:00.25+02:00"), Some(1_735_725_600_250));
        assert_eq!(parse_rfc3339_ms("2025-01-01T12:00:00.123987Z"), Some(1_735_732_800_123));
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
    }

    #[test]
    fn dates_are_checked_against_the_calendar() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        for bad in ["2026-02-31", "2023-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "26-01-01", "2026-01-0x"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_746_405_464), "2025-05-05T00:37:44Z");
        assert_eq!(format_rfc3339(951_868_800), "2000-03-01T00:00:00Z");
        for unix in [0, 59, 86_399, 951_782_400, 1_709_164_800, 1_759_104_000, 4_102_444_800, 253_402_300_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(unix)), Some(unix), "{unix}");
        }
    }

    #[test]
    fn malformed_or_pre_epoch_is_none() {
        for bad in ["", "2025-05-04", "2023-02-29T00:00:00Z", "2025-05-04T17:37:44+0700", "1969-12-31T23:59:59Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
