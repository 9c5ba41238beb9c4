use super::*;
use crate::domain::pricing::*;

const SAMPLE: &str = r#"
providers:
  openai:
    gpt-4o: { input: "2.50", output: "10.00", cached_input: "1.25" }
    "gpt-4o-mini*": { input: "0.15", output: "0.60", cached_input: "0.075" }
    "gpt-4o*": { input: "5", output: "15" }
    "o*": { input: 1.10, output: 4.40 }
  anthropic:
    "claude-sonnet-4-5*": { input: "3.00", output: "15.00", cached_input: "0.30", cache_write: "3.75" }
    "claude-*": { input: "1", output: "1" }
  ollama:
    "*": { input: "0", output: "0" }
"#;

fn table() -> PricingTable {
    PricingTable::parse(SAMPLE).expect("sample parses")
}

#[test]
fn parses_decimals_exactly() {
    assert_eq!(parse_price("0.075"), Ok(75_000));
    assert_eq!(parse_price("2.50"), Ok(2_500_000));
    assert_eq!(parse_price("10"), Ok(10_000_000));
    assert_eq!(parse_price("0.000001"), Ok(1));
    assert_eq!(parse_price(".5"), Ok(500_000));
    assert_eq!(parse_price("3."), Ok(3_000_000));
    assert_eq!(parse_price("0"), Ok(0));
    assert!(parse_price("0.0000001").is_err());
    assert!(parse_price("-1").is_err());
    assert!(parse_price("1e3").is_err());
    assert!(parse_price("abc").is_err());
    assert!(parse_price("").is_err());
    assert!(parse_price(".").is_err());
    assert!(parse_price("1.2.3").is_err());
    assert!(parse_price("99999999999999999999").is_err());
}

#[test]
fn unquoted_yaml_numbers_keep_their_exact_decimal_text() {
    let t = table();
    let o3 = t.price("openai", "o3-mini");
    assert_eq!(o3.input_micro_per_m, 1_100_000);
    assert_eq!(o3.output_micro_per_m, 4_400_000);
}

#[test]
fn exact_beats_glob_and_most_specific_glob_wins() {
    let t = table();
    assert_eq!(t.price("openai", "gpt-4o").input_micro_per_m, 2_500_000);
    assert_eq!(
        t.price("openai", "gpt-4o-mini-2024-07-18"),
        Price {
            input_micro_per_m: 150_000,
            output_micro_per_m: 600_000,
            cached_input_micro_per_m: 75_000,
            cache_write_micro_per_m: 150_000,
        }
    );
    assert_eq!(t.price("openai", "gpt-4o-2024-05-13").input_micro_per_m, 5_000_000);
    let sonnet = t.price("anthropic", "claude-sonnet-4-5-20250929");
    assert_eq!(sonnet.cache_write_micro_per_m, 3_750_000);
    assert_eq!(sonnet.cached_input_micro_per_m, 300_000);
    assert_eq!(t.price("anthropic", "claude-haiku-4-5").input_micro_per_m, 1_000_000);
}

#[test]
fn unknown_models_and_providers_are_free_but_distinguishable() {
    let t = table();
    assert_eq!(t.price("openai", "text-davinci-003"), Price::default());
    assert_eq!(t.lookup("openai", "text-davinci-003"), None);
    assert_eq!(t.price("nobody", "gpt-4o"), Price::default());
    assert_eq!(t.lookup("ollama", "llama3.2"), Some(Price::default()));
}

#[test]
fn provider_id_first_then_kind() {
    let yaml = r#"
providers:
  openai: { "gpt-4o": { input: "2.50", output: "10" } }
  azure: { "gpt-4o": { input: "2.75", output: "11" } }
"#;
    let t = PricingTable::parse(yaml).unwrap();
    assert_eq!(t.price_for("azure", "openai", "gpt-4o").input_micro_per_m, 2_750_000);
    assert_eq!(t.price_for("groq", "openai", "gpt-4o").input_micro_per_m, 2_500_000);
    assert_eq!(t.price_for("groq", "openai", "llama"), Price::default());
}

#[test]
fn glob_matcher() {
    assert!(glob_match(b"claude-*", b"claude-"));
    assert!(glob_match(b"claude-*", b"claude-opus-4-1"));
    assert!(glob_match(b"*-mini", b"o4-mini"));
    assert!(glob_match(b"o?-mini*", b"o3-mini-2025-01-31"));
    assert!(glob_match(b"a*b*c", b"axxbyyc"));
    assert!(glob_match(b"*", b""));
    assert!(!glob_match(b"claude-*", b"claude"));
    assert!(!glob_match(b"gpt-4o", b"gpt-4o-mini"));
    assert!(!glob_match(b"a*b*c", b"axxbyy"));
}

#[test]
fn refuses_duplicates() {
    let yaml = r#"
providers:
  openai:
    gpt-4o: { input: "2.50", output: "10" }
    gpt-4o: { input: "3", output: "10" }
"#;
    let err = PricingTable::parse(yaml).unwrap_err().to_string();
    assert!(err.contains("duplicate"), "{err}");
    assert!(err.contains("gpt-4o"), "{err}");
}

#[test]
fn refuses_negative_and_bad_decimals_naming_every_entry() {
    let yaml = r#"
providers:
  openai:
    gpt-4o: { input: "-2.50", output: "10" }
    gpt-4.1: { input: "2", output: "1.2345678" }
  anthropic:
    claude-x: { input: "two", output: "1", cache_write: "1,5" }
"#;
    let err = PricingTable::parse(yaml).unwrap_err();
    let PricingError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(problems.len(), 4, "{problems:?}");
    let msg = err.to_string();
    assert!(msg.contains("providers.openai.\"gpt-4o\".input: negative price"), "{msg}");
    assert!(msg.contains("providers.openai.\"gpt-4.1\".output: more than 6 decimal places"), "{msg}");
    assert!(msg.contains("providers.anthropic.\"claude-x\".input: not a decimal number"), "{msg}");
    assert!(msg.contains("providers.anthropic.\"claude-x\".cache_write"), "{msg}");
}

#[test]
fn refuses_unknown_fields_and_bad_yaml() {
    let unknown = "providers:\n  openai:\n    gpt-4o: { input: \"1\", output: \"1\", cahced_input: \"1\" }\n";
    let err = PricingTable::parse(unknown).unwrap_err().to_string();
    assert!(err.contains("cahced_input"), "{err}");
    let top = "providers: {}\nversion: 2\n";
    assert!(PricingTable::parse(top).is_err());
    let bad = "providers: [\n";
    assert!(matches!(PricingTable::parse(bad), Err(PricingError::Yaml(_))));
    let missing = "providers:\n  openai:\n    gpt-4o: { input: \"1\" }\n";
    assert!(PricingTable::parse(missing).is_err());
}

#[test]
fn cost_arithmetic_is_exact() {
    let p = Price {
        input_micro_per_m: 2_500_000,        // $2.50/M
        output_micro_per_m: 10_000_000,      // $10/M
        cached_input_micro_per_m: 1_250_000, // $1.25/M
        cache_write_micro_per_m: 3_125_000,  // $3.125/M
    };
    // 1M uncached input tokens = $2.50 exactly.
    assert_eq!(cost_nano_usd(&p, 1_000_000, 0, 0, 0), 2_500_000_000);
    // One output token at $10/M = 10_000 nano-USD.
    assert_eq!(cost_nano_usd(&p, 0, 1, 0, 0), 10_000);
    // prompt 1000 of which 600 cached and 100 cache-write: 300*2.5 + 600*1.25 + 100*3.125 (micro)
    // = 750 + 750 + 312.5 = 1812.5 micro... in nano: (300*2_500_000 + 600*1_250_000
    // + 100*3_125_000 + 50*10_000_000) / 1000.
    let expect = (300 * 2_500_000 + 600 * 1_250_000 + 100 * 3_125_000 + 50 * 10_000_000) / 1000;
    assert_eq!(cost_nano_usd(&p, 1000, 50, 600, 100), expect);
    assert_eq!(expect, 2_312_500);
    // Cached tokens larger than prompt (bad upstream data) never go negative.
    assert_eq!(cost_nano_usd(&p, 10, 0, 20, 0), 20 * 1_250);
    // 0.075/M: 1 token = 75 nano-USD exactly.
    let mini = Price { input_micro_per_m: 75_000, ..Price::default() };
    assert_eq!(cost_nano_usd(&mini, 1, 0, 0, 0), 75);
    // Sub-nano: 1 token at $0.0001/M = 0.1 nano-USD rounds to 0; 5 tokens = 0.5 rounds up to 1.
    let tiny = Price { input_micro_per_m: 100, ..Price::default() };
    assert_eq!(cost_nano_usd(&tiny, 1, 0, 0, 0), 0);
    assert_eq!(cost_nano_usd(&tiny, 5, 0, 0, 0), 1);
    // Huge token counts saturate rather than wrap.
    let huge = Price { output_micro_per_m: i64::MAX, ..Price::default() };
    assert_eq!(cost_nano_usd(&huge, 0, u64::MAX, 0, 0), i64::MAX);
    assert_eq!(cost_nano_usd(&Price::default(), 5, 5, 1, 1), 0);
}

#[test]
fn formats_usd() {
    assert_eq!(format_usd(0), "0.000000");
    assert_eq!(format_usd(123), "0.000000123");
    assert_eq!(format_usd(123_000), "0.000123");
    assert_eq!(format_usd(1_500_000_000), "1.500000");
    assert_eq!(format_usd(2_312_500), "0.0023125");
    assert_eq!(format_usd(-75), "-0.000000075");
    assert_eq!(format_usd(12_345_678_901_234), "12345.678901234");
    assert_eq!(format_usd(i64::MAX), "9223372036.854775807");
    assert_eq!(format_usd(i64::MIN), "-9223372036.854775808");
    assert_eq!(format_usd(-1_000_000_000), "-1.000000");
}

/// The digit-by-digit writer agrees with the plain `format!` definition it replaced (issue 17).
#[test]
fn formats_usd_like_the_format_definition() {
    fn reference(nano: i64) -> String {
        let sign = if nano < 0 { "-" } else { "" };
        let abs = nano.unsigned_abs();
        let frac = format!("{:09}", abs % 1_000_000_000);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 6 { &frac[..6] } else { trimmed };
        format!("{sign}{}.{shown}", abs / 1_000_000_000)
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..20_000u64 {
        // xorshift, spread over every magnitude
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let nano = (x >> (i % 64)) as i64 * if i % 3 == 0 { -1 } else { 1 };
        assert_eq!(format_usd(nano), reference(nano), "{nano}");
    }
    for nano in [0, 1, 9, 10, 999_999, 1_000_000, 999_999_999, 1_000_000_000, i64::MAX, i64::MIN, i64::MIN + 1] {
        assert_eq!(format_usd(nano), reference(nano), "{nano}");
    }
}

#[test]
fn repo_pricing_yaml_is_valid_and_covers_the_common_models() {
    // The table moved into the binary (issue 11, item 5); the repo's pricing.yaml is the operator's
    // override file, layered over it, and must still load.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pricing.yaml");
    let pricing = Pricing::load(&path).expect("pricing.yaml parses");
    assert_eq!(pricing.current().len(), Pricing::builtin().unwrap().current().len(), "pricing.yaml overrides nothing");
    let pricing = Pricing::builtin().expect("the built-in table parses");
    let t = pricing.current();
    for (provider, model) in [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"),
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "gpt-5-nano"),
        ("openai", "o1"),
        ("openai", "o3"),
        ("openai", "o3-mini"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-opus-4-1-20250805"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "claude-sonnet-4-20250514"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("anthropic", "claude-3-7-sonnet-latest"),
        // Issue 11, item 5: routable paid models once metered at $0.
        ("openai", "gpt-4-0125-preview"),
        ("openai", "gpt-4-1106-preview"),
        ("openai", "gpt-audio"),
        ("openai", "computer-use-preview"),
        ("anthropic", "claude-3-sonnet-20240229"),
        ("openai", "gpt-4-turbo-2024-04-09"),
        ("openai", "gpt-4.5-preview"),
        ("openai", "gpt-4-32k"),
        ("openai", "gpt-3.5-turbo-0125"),
        ("openai", "gpt-realtime"),
        ("openai", "o1-preview"),
        ("openai", "o4-mini-deep-research"),
        ("openai", "chatgpt-4o-latest"),
        ("anthropic", "claude-3-opus-20240229"),
        ("anthropic", "claude-3-haiku-20240307"),
        ("anthropic", "claude-2.1"),
        ("anthropic", "claude-opus-4-5-20251101"),
    ] {
        let p = t.lookup(provider, model).unwrap_or_else(|| panic!("{provider}/{model} unpriced"));
        assert!(p.input_micro_per_m > 0 && p.output_micro_per_m > 0, "{model}");
        assert!(p.cached_input_micro_per_m <= p.input_micro_per_m, "{model}");
    }
    let sonnet = t.price("anthropic", "claude-sonnet-4-5-20250929");
    assert_eq!(sonnet.input_micro_per_m, 3_000_000);
    assert_eq!(sonnet.cache_write_micro_per_m, 3_750_000);
    assert_eq!(sonnet.cached_input_micro_per_m, 300_000);
    assert_eq!(t.price("openai", "gpt-4o-mini").cached_input_micro_per_m, 75_000);
    assert_eq!(t.price("ollama", "llama3.2"), Price::default());
    assert_eq!(t.lookup("ollama", "llama3.2"), Some(Price::default()), "local models are priced 0, not unpriced");
    assert_eq!(t.price("openai", "gpt-4-1106-preview").output_micro_per_m, 30_000_000);
    assert_eq!(t.price("openai", "computer-use-preview").input_micro_per_m, 3_000_000);
    assert_eq!(t.lookup("openai", "no-such-model"), None);
}

/// Issue 11, item 5: the operator's file is layered over the built-in table: its entries win (by id,
/// then kind), every other model keeps the built-in price.
#[test]
fn a_pricing_file_overrides_and_extends_the_builtin_table() {
    let file = PricingTable::parse(
        "providers:\n  openai:\n    gpt-4o: { input: \"1\", output: \"2\" }\n  groq:\n    \"llama-*\": { input: \"0.5\", output: \"0.5\" }\n",
    )
    .unwrap();
    let t = file.over(&PricingTable::builtin().unwrap());
    assert_eq!(t.price_for("openai", "openai", "gpt-4o").input_micro_per_m, 1_000_000, "the file wins");
    assert_eq!(t.price_for("openai", "openai", "gpt-4o-mini").input_micro_per_m, 150_000, "built-in otherwise");
    assert_eq!(t.price_for("groq", "openai", "llama-3.3-70b").input_micro_per_m, 500_000, "new models");
    assert_eq!(t.lookup_for("groq", "openai", "mixtral"), None, "unpriced stays unpriced");
}

#[tokio::test]
async fn hot_reload_takes_good_edits_and_keeps_old_prices_on_broken_ones() {
    let dir = std::env::temp_dir().join(format!("pricing-reload-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pricing.yaml");
    std::fs::write(&path, "providers:\n  openai:\n    gpt-4o: { input: \"2.50\", output: \"10\" }\n").unwrap();
    let pricing = Pricing::load(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pricing.watch_every(Duration::from_millis(20), shutdown.clone()));
    let input = |p: &Pricing| p.current().price("openai", "gpt-4o").input_micro_per_m;
    assert_eq!(input(&pricing), 2_500_000);

    // A good edit is picked up.
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(
        &path,
        "providers:\n  openai:\n    gpt-4o: { input: \"2.00\", output: \"8\" }\n    \"o*\": { input: \"1\", output: \"4\" }\n",
    )
    .unwrap();
    wait_until(|| input(&pricing) == 2_000_000).await;
    assert_eq!(pricing.current().price("openai", "o3").output_micro_per_m, 4_000_000);

    // A broken edit (negative price) is refused; the previous table stays.
    std::fs::write(&path, "providers:\n  openai:\n    gpt-4o: { input: \"-1\", output: \"8\" }\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(input(&pricing), 2_000_000);
    // Bad YAML too.
    std::fs::write(&path, "providers: [oops\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(input(&pricing), 2_000_000);
    assert!(pricing.reload().is_err());

    // A later good edit is picked up again.
    std::fs::write(&path, "providers:\n  openai:\n    gpt-4o: { input: \"3\", output: \"8\" }\n").unwrap();
    wait_until(|| input(&pricing) == 3_000_000).await;

    shutdown.cancel();
    task.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 5 s");
}
