//! Client-chosen text as the gateway keeps, echoes and logs it: one length bound for every name and
//! id we store or send back (issue #11, item 7), and an escaping wrapper for log fields so that a
//! newline or an ESC byte in a model name cannot forge a log line or drive a terminal (item 9).

use std::fmt;

/// Longest client string (model names, key names, ids) the gateway stores, echoes or labels, in bytes.
/// Longer ones are refused with a 400 naming the field. Real model names are under 100 bytes.
pub const MAX_CLIENT_STRING: usize = 256;

/// True when `s` holds a control character (C0, DEL or C1: NUL, newline, ESC, ...).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Displays a client string with every control character escaped (`\n`, `\u{1b}`, ...) and nothing
/// else changed, so the log line stays one line and carries no terminal escape. Allocates nothing.
///
/// Use it for every logged string a client chose: `tracing::info!(model = %Escaped(&name))`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or('\0');
            // `escape_default` spells `\n`, `\r`, `\t` and `\u{1b}`: readable and unambiguous.
            fmt::Display::fmt(&c.escape_default(), f)?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Appends `s` to `out` as [`Escaped`] displays it; without a control character (the usual case)
/// that is one copy, not a pass through the formatting machinery.
pub fn push_escaped(out: &mut String, s: &str) {
    if has_control(s) {
        use fmt::Write as _;
        let _ = write!(out, "{}", Escaped(s));
    } else {
        out.push_str(s);
    }
}

/// Appends `v` in decimal, as `{v}` formats it, without the formatting machinery (the access line
/// carries eight numbers: `write!` made them ~1,500 instructions, issue 17).
pub fn push_u64(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Appends `v` in decimal (`{v}` for an `i64`).
pub fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Appends `s` as `{s:?}` formats it: quoted, with the quote, backslash and non-printable characters
/// escaped; strings that need no escape (the usual provider ids) are copied.
pub fn push_debug_str(out: &mut String, s: &str) {
    if s.chars().all(|c| c != '"' && c != '\\' && !c.is_control() && c.is_ascii()) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use fmt::Write as _;
        let _ = write!(out, "{s:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_numbers_and_strings_match_format() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut values = vec![0, 1, 9, 10, 99, 100, u64::MAX, u64::from(u32::MAX)];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for v in values {
            let mut out = String::from("=");
            push_u64(&mut out, v);
            assert_eq!(out, format!("={v}"));
            let signed = v as i64;
            let mut out = String::new();
            push_i64(&mut out, signed);
            assert_eq!(out, format!("{signed}"));
        }
        for s in ["openai", "groq-eu.1_x", "", "a\"b", "back\\slash", "new\nline", "é", "\u{1b}"] {
            let mut out = String::new();
            push_debug_str(&mut out, s);
            assert_eq!(out, format!("{s:?}"), "{s}");
        }
    }

    #[test]
    fn push_escaped_is_escaped() {
        for s in ["plain", "a\nb\x1b[31m", "", "é\t"] {
            let mut out = String::from(">");
            push_escaped(&mut out, s);
            assert_eq!(out, format!(">{}", Escaped(s)));
        }
    }

    /// Issue #11, item 9: control bytes in a logged client string come out escaped.
    #[test]
    fn escapes_control_characters_only() {
        assert_eq!(Escaped("a\nb\x1b[31m").to_string(), "a\\nb\\u{1b}[31m");
        assert_eq!(Escaped("\r\t\0\u{7f}\u{9b}").to_string(), "\\r\\t\\u{0}\\u{7f}\\u{9b}");
        assert_eq!(Escaped("gpt-4o \"x\" é").to_string(), "gpt-4o \"x\" é");
        assert!(!Escaped("a\nb\x1b[31m").to_string().chars().any(char::is_control));
        assert!(has_control("a\0b"));
        assert!(!has_control("claude-sonnet-4-5"));
    }
}
