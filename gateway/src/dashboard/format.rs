//! Locale-aware numbers, money and dates for the pages. Numbers go through ICU4X `icu_decimal`
//! (CLDR data compiled in: Russian groups with U+00A0 and uses a decimal comma); money is USD with
//! the CLDR placement (`$1,234.50` / `1 234,50 $`); dates are rendered in an explicit UTC offset.

use icu_decimal::input::Decimal;
use icu_decimal::DecimalFormatter;

use super::i18n::Lang;
use crate::domain::time::civil_from_days;

/// No-break space, as CLDR uses between a Russian amount and its currency sign.
pub const NBSP: char = '\u{a0}';

thread_local! {
    // Per thread: the formatter's data payloads are `Rc`-backed (no `sync` feature), and two
    // small formatters per worker thread cost less than the feature's build time.
    static FORMATTERS: [Option<DecimalFormatter>; 2] = [make("en"), make("ru")];
}

fn make(tag: &str) -> Option<DecimalFormatter> {
    let locale: icu_locale_core::Locale = tag.parse().ok()?;
    DecimalFormatter::try_new(locale.into(), Default::default()).ok()
}

fn decimal(lang: Lang, d: &Decimal) -> String {
    let i = match lang {
        Lang::En => 0,
        Lang::Ru => 1,
    };
    FORMATTERS.with(|f| match &f[i] {
        Some(f) => f.format_to_string(d),
        None => d.to_string(),
    })
}

/// An integer count: `1,234,567` / `1 234 567`.
pub fn count(lang: Lang, n: i64) -> String {
    decimal(lang, &Decimal::from(n))
}

/// A nano-USD amount as money, rounded to the micro-dollar, with 2 to 6 decimals (LLM calls cost
/// fractions of a cent, which 2 decimals would show as 0.00): `$1,234.50`, `$0.000015`, `1 234,50 $`.
pub fn money(lang: Lang, nano_usd: i64) -> String {
    let negative = nano_usd < 0;
    let mut d = Decimal::from(nano_usd.unsigned_abs());
    d.multiply_pow10(-9);
    d.round(-6);
    d.absolute.trim_end();
    d.absolute.pad_end(-2);
    let n = decimal(lang, &d);
    let sign = if negative { "-" } else { "" };
    match lang {
        Lang::En => format!("{sign}${n}"),
        Lang::Ru => format!("{sign}{n}{NBSP}$"),
    }
}

/// A ratio in percent with one decimal: `2.5%` / `2,5 %` (CLDR: Russian puts a no-break space).
pub fn percent(lang: Lang, part: u64, whole: u64) -> String {
    let tenths = if whole == 0 { 0 } else { (part as u128 * 1000 + whole as u128 / 2) / whole as u128 };
    let mut d = Decimal::from(i64::try_from(tenths).unwrap_or(i64::MAX));
    d.multiply_pow10(-1);
    d.absolute.pad_end(-1);
    let n = decimal(lang, &d);
    match lang {
        Lang::En => format!("{n}%"),
        Lang::Ru => format!("{n}{NBSP}%"),
    }
}

const EN_MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/// CLDR `ru` abbreviated month names, genitive (format) forms.
const RU_MONTHS: [&str; 12] =
    ["янв.", "февр.", "мар.", "апр.", "мая", "июн.", "июл.", "авг.", "сент.", "окт.", "нояб.", "дек."];

/// Local civil time at `offset_min` east of UTC.
fn civil(unix_ms: i64, offset_min: i32) -> (i64, u32, u32, i64, i64) {
    let local = unix_ms + i64::from(offset_min) * 60_000;
    let days = local.div_euclid(86_400_000);
    let ms = local.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, ms / 3_600_000, ms / 60_000 % 60)
}

/// Date and time in the chosen offset, CLDR medium style: `Dec 1, 2026, 14:05` / `1 дек. 2026 г., 14:05`.
pub fn datetime(lang: Lang, unix_ms: i64, offset_min: i32) -> String {
    let (y, m, d, hh, mm) = civil(unix_ms, offset_min);
    let idx = (m as usize).saturating_sub(1).min(11);
    match lang {
        Lang::En => format!("{} {d}, {y}, {hh:02}:{mm:02}", EN_MONTHS[idx]),
        Lang::Ru => format!("{d} {} {y} г., {hh:02}:{mm:02}", RU_MONTHS[idx]),
    }
}

/// `YYYY-MM-DD` of the local day containing `unix_ms`.
pub fn day(unix_ms: i64, offset_min: i32) -> String {
    let (y, m, d, _, _) = civil(unix_ms, offset_min);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix ms of local midnight starting the day that contains `unix_ms`.
pub fn local_midnight(unix_ms: i64, offset_min: i32) -> i64 {
    let off = i64::from(offset_min) * 60_000;
    (unix_ms + off).div_euclid(86_400_000) * 86_400_000 - off
}

/// The fixed set of zones the dashboard offers: whole-hour UTC offsets from −12 to +14 plus the
/// common half-hour ones. No DST rules (a tz database crate would add megabytes and build time);
/// a day is always `[local midnight, +24 h)` in the chosen offset.
pub const OFFSETS_MIN: &[i32] = &[
    -720, -660, -600, -540, -480, -420, -360, -300, -240, -210, -180, -120, -60, 0, 60, 120, 180, 210, 240, 270,
    300, 330, 345, 360, 390, 420, 480, 540, 570, 600, 660, 720, 780, 840,
];

/// `UTC`, `UTC+03:00`, `UTC−05:00`.
pub fn offset_label(offset_min: i32) -> String {
    if offset_min == 0 {
        return "UTC".to_owned();
    }
    let sign = if offset_min < 0 { '\u{2212}' } else { '+' };
    let a = offset_min.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", a / 60, a % 60)
}

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_money_per_locale() {
        assert_eq!(count(Lang::En, 1_234_567), "1,234,567");
        assert_eq!(count(Lang::Ru, 1_234_567), "1\u{a0}234\u{a0}567");
        assert_eq!(money(Lang::En, 1_234_567_500_000_000), "$1,234,567.50");
        assert_eq!(money(Lang::Ru, 1_234_567_500_000_000), "1\u{a0}234\u{a0}567,50\u{a0}$");
        assert_eq!(money(Lang::En, 15_000), "$0.000015");
        assert_eq!(money(Lang::En, 0), "$0.00");
        assert_eq!(money(Lang::En, -2_000_000_000), "-$2.00");
        assert_eq!(percent(Lang::En, 1, 40), "2.5%");
        assert_eq!(percent(Lang::Ru, 1, 40), "2,5\u{a0}%");
    }

    #[test]
    fn dates_in_an_explicit_offset() {
        // 2026-12-01T22:30:00Z
        let t = 1_796_164_200_000;
        assert_eq!(datetime(Lang::En, t, 0), "Dec 1, 2026, 22:30");
        assert_eq!(datetime(Lang::Ru, t, 180), "2 дек. 2026 г., 01:30");
        assert_eq!(day(t, 180), "2026-12-02");
        assert_eq!(local_midnight(t, 180), 1_796_158_800_000);
        assert_eq!(local_midnight(t, 0), 1_796_083_200_000);
        assert_eq!(offset_label(-300), "UTC\u{2212}05:00");
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }
}
