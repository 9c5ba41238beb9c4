use super::*;

fn env(pairs: &[(&str, &str)]) -> MapEnv {
    MapEnv::from_pairs(pairs.iter().copied())
}

#[test]
fn env_only_enables_providers_with_keys_and_always_ollama() {
    let cfg = Config::from_env(&env(&[("ANTHROPIC_API_KEY", "sk-ant-test"), ("API_PORT", "9999")])).unwrap();
    let ids: Vec<_> = cfg.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["anthropic", "ollama"]);
    assert_eq!(cfg.listen.port(), 9999);
    assert!(cfg.listen.ip().is_loopback());
    assert_eq!(cfg.provider("anthropic").unwrap().base_url, "https://api.anthropic.com");
    assert_eq!(cfg.provider("ollama").unwrap().base_url, "http://localhost:11434");
    // Default routes only point at enabled providers.
    assert!(cfg.routes.iter().any(|r| r.pattern.as_str() == "claude-*"));
    assert!(!cfg.routes.iter().any(|r| r.targets.iter().any(|t| t.provider == "openai")));
}

#[test]
fn example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.example.yaml")).unwrap();
    let cfg = Config::from_yaml_str(&text, &env(&[("OPENAI_API_KEY", "sk-x"), ("ANTHROPIC_API_KEY", "sk-y")])).unwrap();
    assert!(cfg.provider("openai").is_some());
    assert!(cfg.provider("groq").is_none());
    assert_eq!(cfg.disabled_providers, ["groq"]);
    let fast = cfg.routes.iter().find(|r| r.pattern.as_str() == "fast").unwrap();
    assert_eq!(fast.alias_model(), Some("claude-haiku-4-5"));
}

#[test]
fn every_error_is_reported_with_its_path() {
    let yaml = r#"
listen: nowhere
bogus: 1
providers:
  a:
    kind: martian
  b:
    kind: openai
    base_url: ftp://x
  c:
    kind: ollama
    timeouts: {connect_ms: 0}
    surprise: true
routes:
  - match: x
    provider: zzz
tenants:
  - id: t
    api_keys: ["short", "sha256:zz"]
"#;
    let errs = Config::from_yaml_str(yaml, &env(&[])).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "listen",
        "bogus",
        "providers.a.kind",
        "providers.b.base_url",
        "providers.c.surprise",
        "routes[0].provider",
        "tenants[0].api_keys[0]",
        "tenants[0].api_keys[1]",
    ] {
        assert!(paths.iter().any(|p| p.starts_with(expected)), "missing {expected} in {paths:?}");
    }
}

#[test]
fn unset_variable_without_default_is_an_error() {
    let yaml = "providers:\n  o:\n    kind: openai\n    api_key: ${NOPE}\n";
    let errs = Config::from_yaml_str(yaml, &env(&[])).unwrap_err().0;
    assert_eq!(errs[0].path, "providers.o.api_key");
    assert!(errs[0].message.contains("NOPE"));
}

#[test]
fn anthropic_without_key_is_disabled_but_self_hosted_openai_is_not() {
    let yaml = "providers:\n  anthropic:\n    kind: anthropic\n  vllm:\n    kind: openai\n    base_url: http://127.0.0.1:8000/v1/\n";
    let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
    assert_eq!(cfg.disabled_providers, ["anthropic"]);
    assert_eq!(cfg.provider("vllm").unwrap().base_url, "http://127.0.0.1:8000/v1");
}

#[test]
fn secrets_are_redacted_in_debug() {
    let cfg = Config::from_env(&env(&[("OPENAI_API_KEY", "sk-very-secret")])).unwrap();
    assert!(!format!("{cfg:?}").contains("sk-very-secret"));
}

#[test]
fn globs_match() {
    assert!(glob_match(b"claude-*", b"claude-sonnet-4-5"));
    assert!(glob_match(b"o1*", b"o1"));
    assert!(glob_match(b"*-mini", b"gpt-4o-mini"));
    assert!(glob_match(b"a*b*c", b"axxbyyc"));
    assert!(glob_match(b"gpt-4?", b"gpt-4o"));
    assert!(!glob_match(b"gpt-4?", b"gpt-4"));
    assert!(!glob_match(b"claude-*", b"gpt-4o"));
}

#[test]
fn tenant_limits_defaults_redis_and_jwt_are_parsed() {
    let yaml = r#"
redis_url: ${REDIS_URL:-}
limits:
  tpm: 100000
  monthly_budget_usd: 25
  key_cache_ttl_ms: 1500
  completion_tokens:
    - { match: "claude-*", tokens: 4096 }
tenants:
  - id: acme
    api_keys: ["sk-acme-key-1"]
    rpm: 60
    max_concurrent: 4
    monthly_budget_usd: "12.50"
  - id: jwt-only
jwt:
  hs256_secret: an-hs256-secret-of-at-least-32-characters
  audience: ai-aggregator
  tenant_claim: org
"#;
    let cfg = Config::from_yaml_str(yaml, &env(&[("REDIS_URL", "redis://127.0.0.1:6379")])).unwrap();
    let acme = &cfg.tenants[0];
    assert_eq!(acme.limits.rpm, Some(60));
    assert_eq!(acme.limits.max_concurrent, Some(4));
    assert_eq!(acme.limits.monthly_budget_micro_usd, Some(12_500_000));
    assert!(cfg.tenants[1].api_keys.is_empty(), "with jwt: a tenant needs no key");
    assert_eq!(cfg.limits.defaults.tpm, Some(100_000));
    assert_eq!(cfg.limits.defaults.monthly_budget_micro_usd, Some(25_000_000));
    assert_eq!(cfg.limits.key_cache_ttl, std::time::Duration::from_millis(1500));
    assert_eq!(cfg.limits.limiter.redis_url.as_ref().map(Secret::expose), Some("redis://127.0.0.1:6379"));
    assert_eq!(cfg.limits.limiter.completion_defaults.len(), 1);
    let jwt = cfg.jwt.as_ref().unwrap();
    assert_eq!(jwt.tenant_claim, "org");
    assert_eq!(jwt.audience.as_deref(), Some("ai-aggregator"));
    assert!(!jwt.auto_create_tenants);
    // REDIS_URL alone is enough.
    let cfg = Config::from_env(&env(&[("REDIS_URL", "redis://10.0.0.1:6379/2")])).unwrap();
    assert!(cfg.limits.limiter.redis_url.is_some());
}

#[test]
fn bad_limits_and_jwt_settings_are_reported_with_paths() {
    let yaml = r#"
redis_url: http://not-redis
limits:
  rpm: 0
  monthly_budget_usd: "-3"
tenants:
  - id: acme
    api_keys: ["sk-acme-key-1"]
    monthly_budget_usd: "1.0000001"
  - id: keyless
jwt:
  hs256_secret: short
  public_key_file: /nonexistent/key.pem
"#;
    let errors = Config::from_yaml_str(yaml, &env(&[])).unwrap_err().0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "redis_url",
        "limits.rpm",
        "limits.monthly_budget_usd",
        "tenants[0].monthly_budget_usd",
        "jwt.hs256_secret",
        "jwt.public_key_file",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    // Without jwt:, a tenant still needs a key.
    let errors = Config::from_yaml_str("tenants:\n  - id: keyless\n", &env(&[])).unwrap_err().0;
    assert!(errors.iter().any(|e| e.path == "tenants[0].api_keys"));
}

/// Issue #11, item 12: `.`/`..` and ids not starting with a letter or digit are refused, ids are unique
/// ignoring case, and limits beyond what the stores hold are refused (in the file as in the admin API).
#[test]
fn tenant_ids_and_limits_are_strict() {
    for bad in [".", "..", "-a", "_a", ".a", "", "a/b", "a b"] {
        assert!(!is_valid_tenant_id(bad), "{bad:?}");
    }
    for good in ["a", "Acme", "acme-1.eu_west", "9lives"] {
        assert!(is_valid_tenant_id(good), "{good:?}");
    }
    assert!(!is_valid_tenant_id(&"a".repeat(129)));
    let yaml = r#"
tenants:
  - id: ".."
    api_keys: ["sk-dots-12345"]
  - id: Acme
    api_keys: ["sk-acme-12345"]
  - id: acme
    api_keys: ["sk-acme-67890"]
    rpm: 9223372036854775808
"#;
    let errs = Config::from_yaml_str(yaml, &env(&[])).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    for expected in ["tenants[0].id", "tenants[2].id", "tenants[2].rpm"] {
        assert!(paths.contains(&expected), "missing {expected} in {errs:?}");
    }
}

/// Issue #11, item 8: the downstream timeouts are configurable and validated.
#[test]
fn server_timeouts_are_configurable_and_validated() {
    let cfg = Config::from_env(&env(&[])).unwrap();
    assert_eq!(cfg.server, ServerSettings::default());
    let yaml = "server:\n  idle_timeout_secs: 5\n  body_read_timeout_secs: 2\n  h2_keep_alive_interval_secs: 0\n";
    let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(5));
    assert_eq!(cfg.server.body_read_timeout, Duration::from_secs(2));
    assert_eq!(cfg.server.h2_keep_alive_interval, None);
    let bad = "server:\n  idle_timeout_secs: 0\n  header_read_timeout_secs: 100000\n  idle_secs: 3\n";
    let errs = Config::from_yaml_str(bad, &env(&[])).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.iter().any(|p| p.starts_with("server")), "{errs:?}");
    let bad = "server:\n  idle_timeout_secs: 0\n  header_read_timeout_secs: 100000\n";
    let errs = Config::from_yaml_str(bad, &env(&[])).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["server.header_read_timeout_secs", "server.idle_timeout_secs"]);
}

/// Issue 11, item 14: overloads are retried by default everywhere; the top-level `retry:` changes that
/// default (down to one attempt), a route's own `retry:` keeps retrying every retryable failure, and bad
/// values are refused with their path.
#[test]
fn retry_defaults_and_the_top_level_retry_section() {
    let cfg = Config::from_env(&env(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
    assert_eq!(cfg.default_retry, RetryPolicy::DEFAULT);
    assert_eq!((cfg.default_retry.attempts, cfg.default_retry.on), (2, RetryOn::Overload));
    assert!(cfg.routes.iter().all(|r| r.retry == RetryPolicy::DEFAULT), "built-in routes use the default");
    let yaml = "retry: {attempts: 1}\nproviders:\n  o: {kind: openai, base_url: \"http://127.0.0.1:9/v1\"}\nroutes:\n  - {match: a, provider: o}\n  - {match: b, provider: o, retry: {attempts: 4}}\n";
    let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
    assert_eq!(cfg.default_retry.attempts, 1);
    assert_eq!(cfg.routes[0].retry.attempts, 1);
    assert_eq!((cfg.routes[1].retry.attempts, cfg.routes[1].retry.on), (4, RetryOn::Retryable));
    let errs = Config::from_yaml_str("retry: {attempts: 0, on: sometimes}\n", &env(&[])).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"retry.attempts") && paths.contains(&"retry.on"), "{paths:?}");
}

/// Issue 11, item 5: unpriced models are refused unless `pricing.unpriced: fallback` gives a valid price.
#[test]
fn the_unpriced_policy_defaults_to_refuse_and_a_fallback_is_validated() {
    use crate::domain::pricing::UnpricedPolicy;
    assert_eq!(Config::from_env(&env(&[])).unwrap().unpriced, UnpricedPolicy::Refuse);
    let yaml = "pricing:\n  unpriced: fallback\n  fallback: {input: \"10\", output: 30}\n";
    match Config::from_yaml_str(yaml, &env(&[])).unwrap().unpriced {
        UnpricedPolicy::Fallback(p) => {
            assert_eq!(
                (p.input_micro_per_m, p.output_micro_per_m, p.cached_input_micro_per_m),
                (10_000_000, 30_000_000, 10_000_000)
            );
        }
        other => panic!("{other:?}"),
    }
    for (yaml, path) in [
        ("pricing: {unpriced: fallback}\n", "pricing.fallback"),
        ("pricing: {fallback: {input: \"1\", output: \"1\"}}\n", "pricing.fallback"),
        ("pricing: {unpriced: free}\n", "pricing.unpriced"),
        ("pricing: {unpriced: fallback, fallback: {input: \"-1\", output: \"1\"}}\n", "pricing.fallback.input"),
    ] {
        let errs = Config::from_yaml_str(yaml, &env(&[])).unwrap_err().0;
        assert!(errs.iter().any(|e| e.path == path), "{yaml}: {errs:?}");
    }
}
