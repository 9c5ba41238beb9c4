//! Time as the gateway counts it: unix milliseconds, UTC calendar days and months. The only clock
//! read is [`now_unix_ms`]; everything else is pure. Text is parsed by `translators::rfc3339`, the
//! workspace's one date parser.

/// Milliseconds in a day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → `YYYY-MM-DD`.
pub fn format_day(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYYMM` of a unix time (UTC).
pub fn month_of(unix_ms: i64) -> String {
    let (y, m, _) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    format!("{y:04}{m:02}")
}

/// Unix ms of the first instant of the month containing `unix_ms` (UTC).
pub fn month_start_ms(unix_ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    days_from_civil(y, m, 1) * MS_PER_DAY
}

/// Milliseconds from `unix_ms` to the first instant of the next month (UTC).
pub fn ms_to_next_month(unix_ms: i64) -> u64 {
    let (y, m, _) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    u64::try_from(days_from_civil(ny, nm, 1) * MS_PER_DAY - unix_ms).unwrap_or(0)
}

/// Parses a query time: unix milliseconds (`1735689600000`), a date (`2025-01-01`, midnight UTC) or
/// RFC 3339 (`2025-01-01T12:00:00Z`, `2025-01-01T12:00:00.250+02:00`). Impossible dates
/// (`2026-02-31`) are refused, not rolled over.
///
/// # Errors
/// A message naming the text when it is none of these.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let parsed = if s.len() == 10 {
        translators::rfc3339::parse_date(s).map(|days| days * MS_PER_DAY)
    } else {
        translators::rfc3339::parse_rfc3339_ms(s)
    };
    parsed.ok_or_else(|| format!("invalid time `{s}` (unix ms, YYYY-MM-DD or RFC 3339)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 1, 19_782, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(month_of(1_764_064_800_000), "202511");
        assert_eq!(month_start_ms(1_764_064_800_000), 1_761_955_200_000);
        assert_eq!(ms_to_next_month(1_764_547_199_999), 1);
    }

    #[test]
    fn query_times() {
        assert_eq!(parse_time("1735689600000"), Ok(1_735_689_600_000));
        assert_eq!(parse_time("2025-01-01"), Ok(1_735_689_600_000));
        assert_eq!(parse_time("2025-01-01T12:00:00.250+02:00"), Ok(1_735_725_600_250));
        // Issue #11: an impossible date used to roll over into March.
        for bad in ["2026-02-31", "2026-02-30T00:00:00Z", "yesterday", "2025-01-01T25:00:00Z", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
