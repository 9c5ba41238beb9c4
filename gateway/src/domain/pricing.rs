//! Per-model token prices: the built-in table (`gateway/pricing/default.yaml`, compiled in) under the
//! operator's `pricing.yaml`, and exact integer cost arithmetic.
//!
//! Lookup order: the operator's file by provider id, then by kind, then the built-in table by id, then
//! by kind ([`PricingTable::over`]). A model matched nowhere is *unpriced*, and what happens to it is the
//! operator's [`UnpricedPolicy`]: refused by default, or charged a configured fallback price; never a
//! silent $0 (issue 11, item 5). Local (Ollama) models are priced 0 by the built-in table.
//!
//! Invariants:
//! - Money is never a float. Prices are parsed from decimal strings into integer micro-USD per
//!   million tokens (so `"0.075"` is exactly `75_000`); costs are integer nano-USD (`i64`).
//! - A pricing file is accepted whole or refused whole: bad YAML, duplicate keys, unknown fields,
//!   negative prices or malformed decimals are errors naming the entry, and a hot reload that
//!   fails keeps the previous table (see `stores::pricing`).
//!
//! File layout (see `pricing.yaml` at the repo root and `docs/LEDGER.md`):
//!
//! ```yaml
//! providers:
//!   openai:                       # provider id or provider kind
//!     gpt-4o: { input: "2.50", output: "10.00", cached_input: "1.25" }
//!     "gpt-4o-mini*": { input: "0.15", output: "0.60", cached_input: "0.075" }
//!   anthropic:
//!     "claude-sonnet-4-5*": { input: "3", output: "15", cached_input: "0.30", cache_write: "3.75" }
//! ```
//!
//! `cached_input` and `cache_write` default to the `input` price when absent (never undercharge).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The built-in price table, compiled into the binary so it works from any directory and in containers.
pub const BUILTIN_PRICING_YAML: &str = include_str!("../../pricing/default.yaml");

/// What to do with a routable model that no price table matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnpricedPolicy {
    /// Refuse the request before any upstream call (403 `model_price_missing`). The default.
    #[default]
    Refuse,
    /// Charge this price.
    Fallback(Price),
}

/// Most decimal places a price may have: micro-USD per million tokens.
const PRICE_DECIMALS: u32 = 6;

/// Prices of one model in integer micro-USD per million tokens.
///
/// `Default` is the zero price (local models, unknown models).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Price {
    /// Uncached input (prompt) tokens.
    pub input_micro_per_m: i64,
    /// Output (completion) tokens, including reasoning tokens.
    pub output_micro_per_m: i64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input_micro_per_m: i64,
    /// Input tokens written to the provider's prompt cache (Anthropic `cache_creation_input_tokens`).
    pub cache_write_micro_per_m: i64,
}

/// Why a pricing file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file could not be read.
    #[error("cannot read pricing file `{path}`: {source}")]
    Io {
        /// The pricing file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not YAML, a duplicate key, an unknown field or a wrong type (the message has the location).
    #[error("invalid pricing file: {0}")]
    Yaml(String),
    /// Semantically invalid entries, all of them at once, each naming its entry.
    #[error("invalid pricing file: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricingFile {
    providers: BTreeMap<String, BTreeMap<String, RawPrice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: String,
    output: String,
    #[serde(default)]
    cached_input: Option<String>,
    #[serde(default)]
    cache_write: Option<String>,
}

/// One provider's prices: exact model names and glob patterns.
#[derive(Debug, Default, Clone)]
struct ProviderPrices {
    exact: BTreeMap<String, Price>,
    /// Sorted most specific first (most literal characters, then by pattern) so the first match wins.
    globs: Vec<Glob>,
}

/// A glob entry and the length of its literal prefix (before the first wildcard).
#[derive(Debug, Clone)]
struct Glob {
    pattern: String,
    prefix: usize,
    price: Price,
}

impl Glob {
    fn new(pattern: String, price: Price) -> Self {
        let prefix = pattern.bytes().take_while(|c| !matches!(c, b'*' | b'?')).count();
        Self { pattern, prefix, price }
    }

    /// The literal prefix is compared first: most globs are `family*`, and a model of another
    /// family fails on its first bytes without the general matcher (the built-in table has ~40
    /// OpenAI globs, tried in order on every look-up; issue 17).
    fn matches(&self, model: &[u8]) -> bool {
        let pattern = self.pattern.as_bytes();
        model.starts_with(&pattern[..self.prefix]) && glob_match(&pattern[self.prefix..], &model[self.prefix..])
    }
}

impl ProviderPrices {
    fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.exact.get(model) {
            return Some(*p);
        }
        self.globs.iter().find(|g| g.matches(model.as_bytes())).map(|g| g.price)
    }
}

/// A validated, immutable pricing table: one or more layers, the first match wins.
#[derive(Debug, Default, Clone)]
pub struct PricingTable {
    /// Highest priority first (the operator's file, then the built-in table).
    layers: Vec<BTreeMap<String, ProviderPrices>>,
}

impl PricingTable {
    /// Parses and validates a pricing file's text.
    ///
    /// # Errors
    /// [`PricingError::Yaml`] for syntax, duplicate keys, unknown fields and wrong types;
    /// [`PricingError::Invalid`] listing every bad price (`providers.openai."gpt-4o".input: ...`).
    pub fn parse(yaml: &str) -> Result<Self, PricingError> {
        let raw: RawPricingFile = serde_saphyr::from_str(yaml).map_err(|e| PricingError::Yaml(e.to_string()))?;
        let mut problems = Vec::new();
        let mut providers = BTreeMap::new();
        for (provider, models) in raw.providers {
            if provider.trim().is_empty() {
                problems.push("providers: empty provider name".to_owned());
                continue;
            }
            let mut prices = ProviderPrices::default();
            for (model, raw_price) in models {
                let entry = format!("providers.{provider}.\"{model}\"");
                if model.trim().is_empty() {
                    problems.push(format!("{entry}: empty model name"));
                    continue;
                }
                let mut field = |name: &str, value: &str| match parse_price(value) {
                    Ok(v) => v,
                    Err(why) => {
                        problems.push(format!("{entry}.{name}: {why} (got \"{value}\")"));
                        0
                    }
                };
                let input = field("input", &raw_price.input);
                let output = field("output", &raw_price.output);
                let cached_input = raw_price.cached_input.as_deref().map_or(input, |v| field("cached_input", v));
                let cache_write = raw_price.cache_write.as_deref().map_or(input, |v| field("cache_write", v));
                let price = Price {
                    input_micro_per_m: input,
                    output_micro_per_m: output,
                    cached_input_micro_per_m: cached_input,
                    cache_write_micro_per_m: cache_write,
                };
                if model.contains(['*', '?']) {
                    prices.globs.push(Glob::new(model, price));
                } else {
                    prices.exact.insert(model, price);
                }
            }
            prices.globs.sort_by(|a, b| {
                literal_len(&b.pattern).cmp(&literal_len(&a.pattern)).then_with(|| a.pattern.cmp(&b.pattern))
            });
            providers.insert(provider, prices);
        }
        if problems.is_empty() {
            Ok(Self { layers: vec![providers] })
        } else {
            Err(PricingError::Invalid(problems))
        }
    }

    /// The built-in table ([`BUILTIN_PRICING_YAML`]).
    ///
    /// # Errors
    /// Only if the compiled-in file is broken, which a unit test rules out.
    pub fn builtin() -> Result<Self, PricingError> {
        Self::parse(BUILTIN_PRICING_YAML)
    }

    /// This table layered over `base`: a model this table prices keeps this price (by provider id, then
    /// kind); every other model is looked up in `base`.
    pub fn over(mut self, base: &PricingTable) -> Self {
        self.layers.extend(base.layers.iter().cloned());
        self
    }

    /// The price of `model` under one provider id or kind (`"openai"`, `"anthropic"`, `"groq"`).
    ///
    /// An exact model name wins over globs; among globs the most specific (most non-wildcard
    /// characters) wins. Unknown providers and models cost zero (local models); use
    /// [`PricingTable::lookup`] to tell "free" from "unpriced".
    pub fn price(&self, provider_kind_or_id: &str, model: &str) -> Price {
        self.lookup(provider_kind_or_id, model).unwrap_or_default()
    }

    /// Like [`PricingTable::price`], but `None` when no entry matches.
    pub fn lookup(&self, provider_kind_or_id: &str, model: &str) -> Option<Price> {
        self.layers.iter().find_map(|layer| layer.get(provider_kind_or_id)?.lookup(model))
    }

    /// The price looked up, layer by layer, by provider id first (`"groq"`), then by its kind (`"openai"`);
    /// `None` when the model is unpriced.
    pub fn lookup_for(&self, provider_id: &str, provider_kind: &str, model: &str) -> Option<Price> {
        self.layers.iter().find_map(|layer| {
            let by = |key: &str| layer.get(key).and_then(|p| p.lookup(model));
            by(provider_id).or_else(|| by(provider_kind))
        })
    }

    /// [`PricingTable::lookup_for`], zero when unpriced.
    pub fn price_for(&self, provider_id: &str, provider_kind: &str, model: &str) -> Price {
        self.lookup_for(provider_id, provider_kind, model).unwrap_or_default()
    }

    /// Every entry in effect, as `(provider id or kind, model name or glob, price)`, sorted by
    /// provider then model; an entry a higher layer overrides is listed once, with the winning price.
    pub fn entries(&self) -> Vec<(String, String, Price)> {
        let mut out: BTreeMap<(String, String), Price> = BTreeMap::new();
        // Lowest priority first, so a higher layer's entry replaces it.
        for layer in self.layers.iter().rev() {
            for (provider, prices) in layer {
                let models = prices.exact.iter().chain(prices.globs.iter().map(|g| (&g.pattern, &g.price)));
                for (model, price) in models {
                    out.insert((provider.clone(), model.clone()), *price);
                }
            }
        }
        out.into_iter().map(|((provider, model), price)| (provider, model, price)).collect()
    }

    /// Number of priced entries (exact names plus globs, every layer), for logs.
    pub fn len(&self) -> usize {
        self.layers.iter().flat_map(|l| l.values()).map(|p| p.exact.len() + p.globs.len()).sum()
    }

    /// True when the table prices nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn literal_len(pattern: &str) -> usize {
    pattern.chars().filter(|c| !matches!(c, '*' | '?')).count()
}

/// Glob match with `*` (any run, including empty) and `?` (one byte); everything else literal.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Parses a non-negative decimal USD amount (at most 6 decimals) into integer micro-USD.
pub(crate) fn parse_price(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("negative price");
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("not a decimal number");
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number");
    }
    if frac_part.len() > PRICE_DECIMALS as usize {
        return Err("more than 6 decimal places");
    }
    let mut value: i64 = 0;
    for b in int_part.bytes() {
        value = value.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))).ok_or("price too large")?;
    }
    let mut frac: i64 = 0;
    for b in frac_part.bytes() {
        frac = frac * 10 + i64::from(b - b'0');
    }
    frac *= 10i64.pow(PRICE_DECIMALS - frac_part.len() as u32);
    value.checked_mul(10i64.pow(PRICE_DECIMALS)).and_then(|v| v.checked_add(frac)).ok_or("price too large")
}

/// The cost of one request in integer nano-USD.
///
/// `prompt_tokens` includes the cached and cache-write tokens (OpenAI convention): uncached input
/// is `prompt_tokens - cached_tokens - cache_write_tokens` (saturating at zero) at the input
/// price, cached tokens at the cached price, cache writes at the cache-write price, completion at
/// the output price. One token at `p` micro-USD per million costs `p / 1000` nano-USD; the sum is
/// computed in `i128` and rounded half up to a whole nano-USD once, so the only rounding error
/// is < 0.5 nano-USD per request (none when prices have ≤ 3 decimals). Saturates at `i64::MAX`.
pub fn cost_nano_usd(
    price: &Price,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
) -> i64 {
    let uncached = prompt_tokens.saturating_sub(cached_tokens).saturating_sub(cache_write_tokens);
    let micro_times_tokens: i128 = i128::from(uncached) * i128::from(price.input_micro_per_m)
        + i128::from(cached_tokens) * i128::from(price.cached_input_micro_per_m)
        + i128::from(cache_write_tokens) * i128::from(price.cache_write_micro_per_m)
        + i128::from(completion_tokens) * i128::from(price.output_micro_per_m);
    let nano = (micro_times_tokens + 500).div_euclid(1000);
    i64::try_from(nano).unwrap_or(if nano < 0 { i64::MIN } else { i64::MAX })
}

/// Formats nano-USD as a decimal USD string: at least 6 decimals, up to 9, trailing zeros trimmed
/// beyond the sixth (`123` → `"0.000000123"`, `1_500_000_000` → `"1.500000"`).
///
/// Written digit by digit into one `String` (it is on every priced response's header): two
/// `format!` calls made it ~2,000 instructions (issue 17).
pub fn format_usd(nano: i64) -> String {
    let abs = nano.unsigned_abs();
    // u64::MAX has 20 digits, of which 11 are whole dollars.
    let mut digits = [b'0'; 20];
    let mut rest = abs;
    let mut first = digits.len();
    while first > digits.len() - 10 || rest > 0 {
        first -= 1;
        digits[first] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let (whole, frac) = digits[first..].split_at(digits.len() - first - 9);
    let shown = frac.iter().rposition(|&d| d != b'0').map_or(6, |last| (last + 1).max(6));
    let mut out = String::with_capacity(1 + whole.len() + 1 + shown);
    if nano < 0 {
        out.push('-');
    }
    out.extend(whole.iter().map(|&d| char::from(d)));
    out.push('.');
    out.extend(frac[..shown].iter().map(|&d| char::from(d)));
    out
}

#[cfg(test)]
mod glob_tests {
    use super::*;

    /// The prefix-first matcher answers exactly as the general matcher, for patterns with `*` and
    /// `?` anywhere (issue 17 changed only the order of the comparisons).
    #[test]
    fn prefix_first_matching_is_glob_matching() {
        let alphabet = [b'a', b'b', b'-', b'*', b'?'];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..20_000 {
            let pattern: Vec<u8> = (0..next(7)).map(|_| alphabet[next(5)]).collect();
            let model: Vec<u8> = (0..next(8)).map(|_| alphabet[next(3)]).collect();
            let glob = Glob::new(String::from_utf8(pattern.clone()).unwrap(), Price::default());
            assert_eq!(
                glob.matches(&model),
                glob_match(&pattern, &model),
                "{:?} vs {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&model)
            );
        }
    }
}
