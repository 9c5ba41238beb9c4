//! Money as integers: micro-USD for budgets, nano-USD for metered cost. Never `f64`.

/// Parses a non-negative decimal USD amount (at most 6 decimals) into micro-USD.
///
/// # Errors
/// Not a decimal, negative, too many decimals or too large.
pub fn parse_usd_micro(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must not be negative");
    }
    let (int_part, frac_part) = s.split_once('.').unwrap_or((s, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a decimal number");
    }
    if frac_part.len() > 6 {
        return Err("more than 6 decimal places");
    }
    let mut value: i64 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()).chain(std::iter::repeat_n(b'0', 6 - frac_part.len())) {
        value = value.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))).ok_or("too large")?;
    }
    Ok(value)
}

/// Formats micro-USD as a decimal string (`12.5`).
pub fn format_usd_micro(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    let frac = format!("{:06}", abs % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", abs / 1_000_000)
    } else {
        format!("{sign}{}.{frac}", abs / 1_000_000)
    }
}
