//! Messages in Fluent `.ftl` files (compiled into the binary), one bundle per language, with CLDR
//! plural rules (Russian one/few/many/other). Placeable isolation marks (U+2068/U+2069) are off:
//! the UI is left-to-right only and they would leak into attributes, titles and exact tests.

use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// The English messages.
pub const EN_FTL: &str = include_str!("../../locales/en/dashboard.ftl");
/// The Russian messages.
pub const RU_FTL: &str = include_str!("../../locales/ru/dashboard.ftl");

/// A dashboard language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// The BCP 47 tag (`en`, `ru`), for `<html lang>` and the cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    /// `en`/`ru` (case-insensitive, region ignored: `ru-RU`).
    pub fn parse(s: &str) -> Option<Self> {
        let primary = s.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// The best of `Accept-Language` (highest q first, ties in order), English by default.
    pub fn from_accept_language(header: &str) -> Self {
        let mut best: Option<(u32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let q = (q.clamp(0.0, 1.0) * 1000.0) as u32;
            if let Some(lang) = Lang::parse(tag) {
                if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                    best = Some((q, lang));
                }
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }
}

fn bundle(lang: Lang) -> Option<&'static FluentBundle<FluentResource>> {
    static EN: OnceLock<Option<FluentBundle<FluentResource>>> = OnceLock::new();
    static RU: OnceLock<Option<FluentBundle<FluentResource>>> = OnceLock::new();
    let (cell, src) = match lang {
        Lang::En => (&EN, EN_FTL),
        Lang::Ru => (&RU, RU_FTL),
    };
    cell.get_or_init(|| {
        let res = FluentResource::try_new(src.to_owned()).ok()?;
        let id: unic_langid::LanguageIdentifier = lang.tag().parse().ok()?;
        let mut b = FluentBundle::new_concurrent(vec![id]);
        b.set_use_isolating(false);
        b.add_resource(res).ok()?;
        Some(b)
    })
    .as_ref()
}

/// The message `id` with `args`; the id itself when missing (visible, and caught by the tests).
pub fn message(lang: Lang, id: &str, args: Option<&FluentArgs<'_>>) -> String {
    let Some(b) = bundle(lang) else { return id.to_owned() };
    let Some(pattern) = b.get_message(id).and_then(|m| m.value()) else { return id.to_owned() };
    let mut errors = Vec::new();
    b.format_pattern(pattern, args, &mut errors).into_owned()
}

/// A counted message: `$count` selects the plural form, `$n` is the count formatted for `lang`.
pub fn counted(lang: Lang, id: &str, count: u64) -> String {
    let mut args = FluentArgs::new();
    args.set("count", FluentValue::from(count));
    args.set("n", FluentValue::from(super::format::count(lang, i64::try_from(count).unwrap_or(i64::MAX))));
    message(lang, id, Some(&args))
}

/// The message ids of an `.ftl` source, in order: lines `id = …` at column 0 (Fluent's syntax for a
/// message; terms start with `-`, comments with `#`, continuation lines are indented).
pub fn message_ids(src: &str) -> Vec<String> {
    src.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter_map(|l| l.split_once('=').map(|(id, _)| id.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_plurals_follow_cldr() {
        assert_eq!(counted(Lang::Ru, "requests-count", 1), "1 запрос");
        assert_eq!(counted(Lang::Ru, "requests-count", 2), "2 запроса");
        assert_eq!(counted(Lang::Ru, "requests-count", 5), "5 запросов");
        assert_eq!(counted(Lang::Ru, "requests-count", 11), "11 запросов");
        assert_eq!(counted(Lang::Ru, "requests-count", 21), "21 запрос");
        assert_eq!(counted(Lang::Ru, "requests-count", 1234), "1\u{a0}234 запроса");
        assert_eq!(counted(Lang::En, "requests-count", 1), "1 request");
        assert_eq!(counted(Lang::En, "requests-count", 21), "21 requests");
    }

    #[test]
    fn both_locales_have_the_same_ids() {
        let mut en = message_ids(EN_FTL);
        let mut ru = message_ids(RU_FTL);
        assert!(en.len() > 40, "{en:?}");
        en.sort();
        ru.sort();
        assert_eq!(en, ru);
        // Every message resolves (no syntax error swallowed a message).
        for id in &en {
            for lang in [Lang::En, Lang::Ru] {
                assert!(bundle(lang).is_some_and(|b| b.has_message(id)), "{id} missing in {lang:?}");
            }
        }
    }

    #[test]
    fn accept_language() {
        assert_eq!(Lang::from_accept_language("ru-RU,ru;q=0.9,en;q=0.8"), Lang::Ru);
        assert_eq!(Lang::from_accept_language("de,en;q=0.5,ru;q=0.4"), Lang::En);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language("en;q=0.1, ru;q=0.9"), Lang::Ru);
    }
}
