//! Turns YAML text (or nothing) plus the environment into a validated `Config`, collecting every error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::raw::{RawConfig, RawJwt, RawLedger, RawLimits, RawProvider, RawRoute, RawTenant, RawTimeouts, RawUsd};
use super::{
    env, Config, EnvSource, KeySpec, LedgerSettings, ModelPattern, ProviderConfig, ProviderKind, RetryOn, RetryPolicy,
    RouteRule, Secret, TargetSpec, TenantConfig, Timeouts,
};
use crate::domain::limits::{LimitSpec, LimiterSettings};

/// One configuration problem, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Every configuration problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} error{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_OPENAI_BASE: &str = "https://api.openai.com/v1";
const DEFAULT_ANTHROPIC_BASE: &str = "https://api.anthropic.com";
const DEFAULT_OLLAMA_BASE: &str = "http://localhost:11434";
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;
const KNOWN_TOP_LEVEL: &[&str] = &[
    "listen",
    "max_body_bytes",
    "models_cache_ttl_secs",
    "models_fetch_timeout_ms",
    "shutdown_grace_secs",
    "include_reasoning",
    "metrics_tenant_label",
    "providers",
    "routes",
    "tenants",
    "admin_api_key",
    "ledger",
    "pricing_file",
    "pricing",
    "retry",
    "circuit_breaker",
    "redis_url",
    "limits",
    "jwt",
    "server",
    "graphql",
    "batches",
    "dashboard",
];

/// Built-in routes for bare names, appended after the configured ones.
const DEFAULT_ROUTES: &[(&str, &str)] = &[
    ("gpt-*", "openai"),
    ("o1*", "openai"),
    ("o3*", "openai"),
    ("o4*", "openai"),
    ("chatgpt-*", "openai"),
    ("claude-*", "anthropic"),
];

struct Collector {
    errors: Vec<super::ConfigError>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { path: path.into(), message: message.into() });
    }

    /// Deserializes one section, recording a path-qualified error instead of failing the whole load.
    fn section<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = if inner == "." || inner.is_empty() { path.to_owned() } else { format!("{path}.{inner}") };
                self.push(full, e.into_inner().to_string());
                None
            }
        }
    }
}

/// Expands `${VAR}` in every string of the tree, recording unset variables with their path.
fn expand_tree(value: &mut Value, path: &str, env: &dyn EnvSource, c: &mut Collector) {
    match value {
        Value::String(s) => match env::expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(missing) => {
                for name in missing {
                    c.push(path, format!("environment variable `{name}` is not set (use ${{{name}:-default}})"));
                }
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), env, c);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                expand_tree(v, &child, env, c);
            }
        }
        _ => {}
    }
}

fn parse_raw(yaml: &str, env: &dyn EnvSource, c: &mut Collector) -> RawConfig {
    let mut tree: Value = match serde_saphyr::from_str::<Value>(yaml) {
        Ok(v) => v,
        Err(e) => {
            c.push("(file)", format!("not valid YAML: {e}"));
            return RawConfig::default();
        }
    };
    if tree.is_null() {
        tree = Value::Object(Default::default());
    }
    let Value::Object(mut top) = tree else {
        c.push("(file)", "the top level must be a mapping");
        return RawConfig::default();
    };
    for key in top.keys() {
        if !KNOWN_TOP_LEVEL.contains(&key.as_str()) {
            c.push(key.clone(), format!("unknown field; expected one of: {}", KNOWN_TOP_LEVEL.join(", ")));
        }
    }
    let mut raw = RawConfig::default();
    macro_rules! scalar {
        ($field:ident) => {
            if let Some(mut v) = top.remove(stringify!($field)) {
                expand_tree(&mut v, stringify!($field), env, c);
                raw.$field = c.section(v, stringify!($field));
            }
        };
    }
    scalar!(listen);
    scalar!(max_body_bytes);
    scalar!(models_cache_ttl_secs);
    scalar!(models_fetch_timeout_ms);
    scalar!(shutdown_grace_secs);
    scalar!(include_reasoning);
    scalar!(metrics_tenant_label);
    scalar!(admin_api_key);
    scalar!(pricing_file);
    scalar!(pricing);
    scalar!(retry);
    scalar!(circuit_breaker);
    scalar!(redis_url);
    scalar!(limits);
    scalar!(jwt);
    scalar!(server);
    scalar!(graphql);
    scalar!(batches);
    scalar!(dashboard);
    if let Some(mut v) = top.remove("ledger") {
        expand_tree(&mut v, "ledger", env, c);
        raw.ledger = c.section::<RawLedger>(v, "ledger");
    }
    if let Some(v) = top.remove("providers") {
        match v {
            Value::Object(map) => {
                let mut providers = BTreeMap::new();
                for (id, mut pv) in map {
                    let path = format!("providers.{id}");
                    expand_tree(&mut pv, &path, env, c);
                    if let Some(p) = c.section::<RawProvider>(pv, &path) {
                        providers.insert(id, p);
                    }
                }
                raw.providers = Some(providers);
            }
            Value::Null => raw.providers = Some(BTreeMap::new()),
            _ => c.push("providers", "must be a mapping of provider id to provider"),
        }
    }
    for (name, target) in [("routes", 0), ("tenants", 1)] {
        let Some(v) = top.remove(name) else { continue };
        let Value::Array(items) = v else {
            c.push(name, "must be a list");
            continue;
        };
        for (i, mut item) in items.into_iter().enumerate() {
            let path = format!("{name}[{i}]");
            expand_tree(&mut item, &path, env, c);
            if target == 0 {
                if let Some(r) = c.section::<RawRoute>(item, &path) {
                    raw.routes.push(r);
                }
            } else if let Some(t) = c.section::<RawTenant>(item, &path) {
                raw.tenants.push(t);
            }
        }
    }
    raw
}

/// Providers from the environment alone, with the ecosystem's variable names.
fn providers_from_env(env: &dyn EnvSource) -> BTreeMap<String, RawProvider> {
    let non_empty = |k: &str| env.get(k).filter(|v| !v.trim().is_empty());
    let mut providers = BTreeMap::new();
    if let Some(key) = non_empty("OPENAI_API_KEY") {
        providers.insert(
            "openai".to_owned(),
            RawProvider {
                kind: "openai".into(),
                base_url: Some(non_empty("OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_OPENAI_BASE.into())),
                api_key: Some(key),
                ..RawProvider::default()
            },
        );
    }
    if let Some(key) = non_empty("ANTHROPIC_API_KEY") {
        providers.insert(
            "anthropic".to_owned(),
            RawProvider {
                kind: "anthropic".into(),
                base_url: Some(non_empty("ANTHROPIC_BASE_URL").unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE.into())),
                api_key: Some(key),
                ..RawProvider::default()
            },
        );
    }
    providers.insert(
        "ollama".to_owned(),
        RawProvider {
            kind: "ollama".into(),
            base_url: Some(non_empty("OLLAMA_URL").unwrap_or_else(|| DEFAULT_OLLAMA_BASE.into())),
            ..RawProvider::default()
        },
    );
    providers
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn validate_base_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.authority().is_none() {
        return Err("has no host".into());
    }
    if uri.query().is_some() {
        return Err("must not contain a query string".into());
    }
    Ok(trimmed.to_owned())
}

fn provider(id: &str, raw: RawProvider, c: &mut Collector) -> Option<(ProviderConfig, bool)> {
    let path = format!("providers.{id}");
    if !is_valid_id(id) {
        c.push(&path, "provider ids may contain only letters, digits, '-', '_' and '.'");
    }
    let kind = match raw.kind.as_str() {
        "openai" => ProviderKind::OpenAi,
        "anthropic" => ProviderKind::Anthropic,
        "ollama" => ProviderKind::Ollama,
        other => {
            c.push(format!("{path}.kind"), format!("unknown kind `{other}`; expected openai, anthropic or ollama"));
            return None;
        }
    };
    let default_base = match kind {
        ProviderKind::OpenAi => DEFAULT_OPENAI_BASE,
        ProviderKind::Anthropic => DEFAULT_ANTHROPIC_BASE,
        ProviderKind::Ollama => DEFAULT_OLLAMA_BASE,
    };
    let base_url = match validate_base_url(raw.base_url.as_deref().filter(|s| !s.is_empty()).unwrap_or(default_base)) {
        Ok(u) => u,
        Err(e) => {
            c.push(format!("{path}.base_url"), e);
            return None;
        }
    };
    let api_key = raw.api_key.filter(|k| !k.trim().is_empty()).map(|k| Secret::new(k.trim().to_owned()));
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        if value.is_empty() {
            // `${VAR:-}` left empty: the header is simply not sent.
            continue;
        }
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            _ => c.push(format!("{path}.headers.{name}"), "not a valid HTTP header name or value"),
        }
    }
    let t = raw.timeouts.unwrap_or(RawTimeouts::default());
    let d = Timeouts::default();
    let mut ms = |field: &str, v: Option<u64>, default: Duration| match v {
        Some(0) => {
            c.push(format!("{path}.timeouts.{field}"), "must be greater than 0");
            default
        }
        Some(ms) => Duration::from_millis(ms),
        None => default,
    };
    let timeouts = Timeouts {
        connect: ms("connect_ms", t.connect_ms, d.connect),
        first_byte: ms("first_byte_ms", t.first_byte_ms, d.first_byte),
        idle: ms("idle_ms", t.idle_ms, d.idle),
    };
    if kind != ProviderKind::Anthropic && (raw.anthropic_version.is_some() || raw.default_max_tokens.is_some()) {
        c.push(&path, "anthropic_version and default_max_tokens apply to kind anthropic only");
    }
    if kind != ProviderKind::Ollama && (raw.num_ctx.is_some() || raw.keep_alive.is_some()) {
        c.push(&path, "num_ctx and keep_alive apply to kind ollama only");
    }
    if raw.default_max_tokens == Some(0) {
        c.push(format!("{path}.default_max_tokens"), "must be greater than 0");
    }
    // Auto-enable: Ollama needs no key; a self-hosted OpenAI-compatible server may not either; Anthropic and
    // api.openai.com always do.
    let needs_key = kind == ProviderKind::Anthropic || base_url.contains("api.openai.com");
    let enabled = raw.enabled.unwrap_or(!needs_key || api_key.is_some());
    Some((
        ProviderConfig {
            id: id.to_owned(),
            kind,
            base_url,
            api_key,
            headers,
            timeouts,
            anthropic_version: raw.anthropic_version.unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned()),
            default_max_tokens: raw.default_max_tokens,
            num_ctx: raw.num_ctx,
            keep_alive: raw.keep_alive,
        },
        enabled,
    ))
}

fn key_spec(key: &str, path: &str, c: &mut Collector) -> Option<KeySpec> {
    if let Some(hex_digest) = key.strip_prefix("sha256:") {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(hex_digest, &mut digest).is_err() {
            c.push(path, "sha256: keys need 64 hexadecimal digits");
            return None;
        }
        return Some(KeySpec::Sha256(digest));
    }
    if key.len() < 8 {
        c.push(path, "API keys must be at least 8 characters");
        return None;
    }
    Some(KeySpec::Plain(Secret::new(key.to_owned())))
}

/// The whole pipeline: parse, expand, apply environment overrides, validate.
pub(super) fn from_yaml(yaml: Option<&str>, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
    let mut c = Collector { errors: Vec::new() };
    let raw = match yaml {
        Some(text) => parse_raw(text, env, &mut c),
        None => RawConfig::default(),
    };
    let non_empty = |k: &str| env.get(k).filter(|v| !v.trim().is_empty());

    let mut listen: SocketAddr = match raw.listen.as_deref() {
        None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        Some(s) => s.parse().unwrap_or_else(|_| {
            c.push("listen", format!("`{s}` is not an address like 127.0.0.1:8080 or [::]:8080"));
            SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
        }),
    };
    if let Some(port) = non_empty("API_PORT") {
        match port.trim().parse::<u16>() {
            Ok(p) => listen.set_port(p),
            Err(_) => c.push("API_PORT", format!("`{port}` is not a port number")),
        }
    }

    let from_env = raw.providers.is_none();
    let raw_providers = raw.providers.unwrap_or_else(|| providers_from_env(env));
    let mut providers = Vec::new();
    let mut disabled = Vec::new();
    let mut unavailable_providers = Vec::new();
    for (id, rp) in raw_providers {
        if let Some((p, enabled)) = provider(&id, rp, &mut c) {
            if enabled {
                providers.push(Arc::new(p));
            } else {
                let hint = format!("set `providers.{id}.api_key` (or `enabled: true`)");
                unavailable_providers.push(super::UnavailableProvider { id: id.clone(), hint });
                disabled.push(id);
            }
        }
    }
    // The providers of the built-in routes, when absent altogether: say what would enable them.
    for (id, var) in [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")] {
        if providers.iter().any(|p| p.id == id) || unavailable_providers.iter().any(|p| p.id == id) {
            continue;
        }
        let hint = if from_env {
            format!("set `{var}`")
        } else {
            format!("add `providers.{id}` (kind `{id}`, `api_key: ${{{var}}}`) to the configuration file")
        };
        unavailable_providers.push(super::UnavailableProvider { id: id.to_owned(), hint });
    }

    let default_retry = match raw.retry {
        None => RetryPolicy::DEFAULT,
        Some(r) => retry_policy(r, RetryPolicy::DEFAULT, "retry", &mut c),
    };
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let RawRoute { pattern, provider, model, targets, retry } = r;
        if pattern.is_empty() {
            c.push(format!("routes[{i}].match"), "must not be empty");
        }
        let mut specs = Vec::new();
        match (provider, targets.is_empty()) {
            (Some(provider), true) => {
                specs.push((format!("routes[{i}]"), TargetSpec { provider, model, weight: 1, priority: 0 }))
            }
            (None, false) if model.is_none() => {
                for (t, target) in targets.into_iter().enumerate() {
                    let weight = target.weight.unwrap_or(1);
                    if weight == 0 {
                        c.push(format!("routes[{i}].targets[{t}].weight"), "must be greater than 0");
                    }
                    specs.push((
                        format!("routes[{i}].targets[{t}]"),
                        TargetSpec {
                            provider: target.provider,
                            model: target.model,
                            weight: weight.max(1),
                            priority: target.priority.unwrap_or(u32::try_from(t).unwrap_or(u32::MAX)),
                        },
                    ));
                }
            }
            _ => c.push(format!("routes[{i}]"), "give either `provider` (and `model`) or a non-empty `targets` list"),
        }
        for (path, spec) in &specs {
            if !providers.iter().any(|p| p.id == spec.provider) {
                let why = if disabled.contains(&spec.provider) { "is disabled" } else { "is not configured" };
                c.push(format!("{path}.provider"), format!("provider `{}` {why}", spec.provider));
            }
            if spec.model.as_deref() == Some("") {
                c.push(format!("{path}.model"), "must not be empty");
            }
        }
        let retry = match retry {
            None => default_retry,
            Some(r) => {
                let base = RetryPolicy { attempts: 3, ..RetryPolicy::NONE };
                retry_policy(r, base, &format!("routes[{i}].retry"), &mut c)
            }
        };
        routes.push(RouteRule {
            pattern: ModelPattern::parse(&pattern),
            targets: specs.into_iter().map(|(_, s)| s).collect(),
            retry,
        });
    }
    let mut unavailable_routes = Vec::new();
    for (glob, provider) in DEFAULT_ROUTES {
        if providers.iter().any(|p| p.id == *provider) {
            routes.push(RouteRule {
                pattern: ModelPattern::parse(glob),
                targets: vec![TargetSpec { provider: (*provider).to_owned(), model: None, weight: 1, priority: 0 }],
                retry: default_retry,
            });
        } else {
            unavailable_routes.push((ModelPattern::parse(glob), (*provider).to_owned()));
        }
    }

    let mut tenants = Vec::new();
    let mut seen_tenants = std::collections::HashSet::new();
    let jwt = raw.jwt.map(|j| jwt_settings(j, &mut c));
    for (i, RawTenant { id, api_keys, rpm, tpm, max_concurrent, monthly_budget_usd }) in
        raw.tenants.into_iter().enumerate()
    {
        if !super::is_valid_tenant_id(&id) {
            c.push(
                format!("tenants[{i}].id"),
                "tenant ids may contain only letters, digits, '-', '_' and '.', start with a letter or digit, and have at most 128 characters",
            );
        }
        // Unique regardless of case, as in the tenant store: `Acme` and `acme` would be two tenants.
        if !seen_tenants.insert(id.to_ascii_lowercase()) {
            c.push(format!("tenants[{i}].id"), format!("duplicate tenant `{id}` (ids are compared ignoring case)"));
        }
        for (field, v) in [("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)] {
            if v.is_some_and(|v| v > super::MAX_LIMIT) {
                c.push(format!("tenants[{i}].{field}"), format!("must be at most {}", super::MAX_LIMIT));
            }
        }
        if api_keys.is_empty() && jwt.is_none() {
            c.push(format!("tenants[{i}].api_keys"), "a tenant needs at least one key");
        }
        let keys = api_keys
            .iter()
            .enumerate()
            .filter_map(|(k, key)| key_spec(key, &format!("tenants[{i}].api_keys[{k}]"), &mut c))
            .collect();
        let limits = LimitSpec {
            rpm,
            tpm,
            max_concurrent,
            monthly_budget_micro_usd: usd(
                monthly_budget_usd.as_ref(),
                &format!("tenants[{i}].monthly_budget_usd"),
                &mut c,
            ),
        };
        tenants.push(TenantConfig { id, api_keys: keys, limits });
    }

    let admin_api_key =
        raw.admin_api_key.filter(|k| !k.is_empty()).or_else(|| non_empty("ADMIN_API_KEY")).map(Secret::new);
    if admin_api_key.as_ref().is_some_and(|k| k.expose().len() < 16) {
        c.push("admin_api_key", "the admin key must be at least 16 characters");
    }

    let rl = raw.ledger.unwrap_or_default();
    let ledger = LedgerSettings {
        database_url: rl.database_url.filter(|u| !u.is_empty()).or_else(|| non_empty("DATABASE_URL")).map(Secret::new),
        data_dir: PathBuf::from(
            rl.data_dir.filter(|d| !d.is_empty()).or_else(|| non_empty("DATA_DIR")).unwrap_or_else(|| "./data".into()),
        ),
        queue_capacity: rl.queue_capacity.unwrap_or(8192).max(1),
        batch_rows: rl.batch_rows.unwrap_or(1000).max(1),
        batch_interval: Duration::from_millis(rl.batch_interval_ms.unwrap_or(100).max(1)),
    };

    let pricing_file = match raw.pricing_file.filter(|p| !p.is_empty()).or_else(|| non_empty("PRICING_FILE")) {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from("pricing.yaml")).filter(|p| p.exists()),
    };

    let unpriced = unpriced_policy(raw.pricing.unwrap_or_default(), &mut c);

    let limits = limit_settings(raw.limits.unwrap_or_default(), raw.redis_url, env, &mut c);

    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if max_body_bytes == 0 {
        c.push("max_body_bytes", "must be greater than 0");
    }

    let server = server_settings(raw.server.unwrap_or_default(), &mut c);
    let graphql = graphql_settings(raw.graphql.unwrap_or_default(), env, &mut c);
    let batches = batch_settings(raw.batches.clone().unwrap_or_default(), &mut c);
    let session_secret = raw
        .dashboard
        .clone()
        .unwrap_or_default()
        .session_secret
        .filter(|k| !k.is_empty())
        .or_else(|| non_empty("DASHBOARD_SESSION_SECRET"))
        .map(Secret::new);
    if session_secret.as_ref().is_some_and(|k| k.expose().len() < 32) {
        c.push("dashboard.session_secret", "the session secret must be at least 32 characters");
    }

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config {
        listen,
        max_body_bytes,
        models_cache_ttl: Duration::from_secs(raw.models_cache_ttl_secs.unwrap_or(60)),
        models_fetch_timeout: Duration::from_millis(raw.models_fetch_timeout_ms.unwrap_or(5000).max(1)),
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(30)),
        include_reasoning: raw.include_reasoning.unwrap_or(false),
        metrics_tenant_label: raw.metrics_tenant_label.unwrap_or(false),
        providers,
        disabled_providers: disabled,
        default_retry,
        unavailable_providers,
        unavailable_routes,
        routes,
        tenants,
        admin_api_key,
        ledger,
        pricing_file,
        unpriced,
        circuit_breaker: {
            let b = raw.circuit_breaker.unwrap_or_default();
            let d = crate::domain::config::BreakerPolicy::default();
            crate::domain::config::BreakerPolicy {
                failures: b.failures.unwrap_or(d.failures).max(1),
                cooldown: b.cooldown_ms.map_or(d.cooldown, Duration::from_millis),
            }
        },
        limits,
        jwt,
        server,
        graphql,
        batches,
        dashboard: super::DashboardSettings { session_secret },
    })
}

/// `batches:`: bounded lane sizes, lease and poll times, retries and window.
fn batch_settings(raw: super::raw::RawBatches, c: &mut Collector) -> super::BatchSettings {
    let d = super::BatchSettings::default();
    let mut lanes = std::collections::BTreeMap::new();
    for (p, n) in raw.lanes {
        if !(1..=1024).contains(&n) {
            c.push(format!("batches.lanes.{p}"), "must be between 1 and 1024");
        }
        lanes.insert(p, n.clamp(1, 1024));
    }
    let lane_concurrency = raw.lane_concurrency.unwrap_or(d.lane_concurrency);
    if !(1..=1024).contains(&lane_concurrency) {
        c.push("batches.lane_concurrency", "must be between 1 and 1024");
    }
    let lease_secs = raw.lease_secs.unwrap_or(60);
    if !(1..=3600).contains(&lease_secs) {
        c.push("batches.lease_secs", "must be between 1 and 3600");
    }
    let poll_ms = raw.poll_ms.unwrap_or(500);
    if !(10..=60_000).contains(&poll_ms) {
        c.push("batches.poll_ms", "must be between 10 and 60000");
    }
    let window_secs = raw.window_secs.unwrap_or(86_400);
    if !(1..=86_400).contains(&window_secs) {
        c.push("batches.window_secs", "must be between 1 and 86400 (the `24h` window)");
    }
    super::BatchSettings {
        worker: raw.worker.unwrap_or(true),
        lane_concurrency: lane_concurrency.clamp(1, 1024),
        lanes,
        lease: Duration::from_secs(lease_secs.clamp(1, 3600)),
        poll: Duration::from_millis(poll_ms.clamp(10, 60_000)),
        max_retries: raw.max_retries.unwrap_or(d.max_retries).min(20),
        window: Duration::from_secs(window_secs.clamp(1, 86_400)),
    }
}

/// Longest accepted downstream timeout: a day. Beyond that a "timeout" is a typo.
const MAX_SERVER_TIMEOUT_SECS: u64 = 86_400;

/// `server:`: every timeout between 1 s and a day; `h2_keep_alive_interval_secs: 0` turns pings off.
fn server_settings(raw: super::raw::RawServer, c: &mut Collector) -> super::ServerSettings {
    let d = super::ServerSettings::default();
    let mut secs = |field: &str, v: Option<u64>, default: Duration| match v {
        None => default,
        Some(s) if (1..=MAX_SERVER_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            c.push(format!("server.{field}"), format!("must be between 1 and {MAX_SERVER_TIMEOUT_SECS} seconds"));
            default
        }
    };
    let header_read_timeout = secs("header_read_timeout_secs", raw.header_read_timeout_secs, d.header_read_timeout);
    let idle_timeout = secs("idle_timeout_secs", raw.idle_timeout_secs, d.idle_timeout);
    let body_read_timeout = secs("body_read_timeout_secs", raw.body_read_timeout_secs, d.body_read_timeout);
    let h2_keep_alive_timeout =
        secs("h2_keep_alive_timeout_secs", raw.h2_keep_alive_timeout_secs, d.h2_keep_alive_timeout);
    let h2_keep_alive_interval = match raw.h2_keep_alive_interval_secs {
        Some(0) => None,
        v => Some(secs("h2_keep_alive_interval_secs", v, d.h2_keep_alive_interval.unwrap_or(Duration::from_secs(30)))),
    };
    super::ServerSettings {
        header_read_timeout,
        idle_timeout,
        body_read_timeout,
        h2_keep_alive_interval,
        h2_keep_alive_timeout,
    }
}

/// Largest `graphql.max_depth` / `graphql.max_complexity` accepted (a limit that high is no limit).
const MAX_GRAPHQL_DEPTH: usize = 64;
const MAX_GRAPHQL_COMPLEXITY: usize = 100_000;

/// `graphql:` → [`super::GraphqlSettings`]. The playground is on when the file says so or when
/// `ENABLE_PLAYGROUND` is `true`/`1` (the product's documented switch).
fn graphql_settings(raw: super::raw::RawGraphql, env: &dyn EnvSource, c: &mut Collector) -> super::GraphqlSettings {
    let d = super::GraphqlSettings::default();
    let env_playground = match env.get("ENABLE_PLAYGROUND").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v.is_empty() || v == "false" || v == "0" => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) => {
            c.push("ENABLE_PLAYGROUND", format!("`{v}` is not true or false"));
            false
        }
    };
    let mut bounded = |field: &str, v: Option<usize>, max: usize, default: usize| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n,
        Some(_) => {
            c.push(format!("graphql.{field}"), format!("must be between 1 and {max}"));
            default
        }
    };
    super::GraphqlSettings {
        playground: raw.playground.unwrap_or(false) || env_playground,
        introspection: raw.introspection.unwrap_or(d.introspection),
        max_depth: bounded("max_depth", raw.max_depth, MAX_GRAPHQL_DEPTH, d.max_depth),
        max_complexity: bounded("max_complexity", raw.max_complexity, MAX_GRAPHQL_COMPLEXITY, d.max_complexity),
    }
}

/// `pricing:` → the unpriced-model policy: `refuse` (default), or `fallback` with a `fallback` price.
fn unpriced_policy(raw: super::raw::RawPricing, c: &mut Collector) -> crate::domain::pricing::UnpricedPolicy {
    use crate::domain::pricing::{parse_price, Price, UnpricedPolicy};
    let fallback = raw.fallback.map(|f| {
        let mut field = |name: &str, v: &RawUsd| {
            let text = v.as_text();
            parse_price(&text).unwrap_or_else(|why| {
                c.push(format!("pricing.fallback.{name}"), format!("`{text}`: {why}"));
                0
            })
        };
        let input = field("input", &f.input);
        let output = field("output", &f.output);
        let cached = f.cached_input.as_ref().map_or(input, |v| field("cached_input", v));
        let write = f.cache_write.as_ref().map_or(input, |v| field("cache_write", v));
        Price {
            input_micro_per_m: input,
            output_micro_per_m: output,
            cached_input_micro_per_m: cached,
            cache_write_micro_per_m: write,
        }
    });
    match (raw.unpriced.as_deref(), fallback) {
        (None | Some("refuse"), None) => UnpricedPolicy::Refuse,
        (Some("fallback"), Some(price)) => UnpricedPolicy::Fallback(price),
        (Some("fallback"), None) => {
            c.push("pricing.fallback", "`unpriced: fallback` needs a `fallback: {input, output}` price");
            UnpricedPolicy::Refuse
        }
        (None | Some("refuse"), Some(_)) => {
            c.push("pricing.fallback", "a fallback price is used only with `unpriced: fallback`");
            UnpricedPolicy::Refuse
        }
        (Some(other), _) => {
            c.push("pricing.unpriced", format!("unknown value `{other}`; expected refuse or fallback"));
            UnpricedPolicy::Refuse
        }
    }
}

/// A `retry:` section over `base` (its unset fields), validated at `path`.
fn retry_policy(r: super::raw::RawRetry, base: RetryPolicy, path: &str, c: &mut Collector) -> RetryPolicy {
    let on = match r.on.as_deref() {
        None => base.on,
        Some("overload") => RetryOn::Overload,
        Some("retryable") => RetryOn::Retryable,
        Some(other) => {
            c.push(format!("{path}.on"), format!("unknown value `{other}`; expected overload or retryable"));
            base.on
        }
    };
    let policy = RetryPolicy {
        attempts: r.attempts.unwrap_or(base.attempts),
        backoff: r.backoff_ms.map_or(base.backoff, Duration::from_millis),
        max_backoff: r.max_backoff_ms.map_or(base.max_backoff, Duration::from_millis),
        deadline: r.deadline_ms.map_or(base.deadline, Duration::from_millis),
        on,
    };
    if policy.attempts == 0 || policy.attempts > 10 {
        c.push(format!("{path}.attempts"), "must be between 1 and 10");
    }
    policy
}

fn usd(v: Option<&RawUsd>, path: &str, c: &mut Collector) -> Option<i64> {
    let text = v?.as_text();
    match crate::domain::money::parse_usd_micro(&text) {
        Ok(micro) => Some(micro),
        Err(e) => {
            c.push(path, format!("`{text}`: {e}"));
            None
        }
    }
}

/// `limits:` plus `redis_url` / `REDIS_URL`.
fn limit_settings(
    raw: RawLimits,
    redis_url: Option<String>,
    env: &dyn EnvSource,
    c: &mut Collector,
) -> super::LimitSettings {
    let defaults = LimitSpec {
        rpm: raw.rpm,
        tpm: raw.tpm,
        max_concurrent: raw.max_concurrent,
        monthly_budget_micro_usd: usd(raw.monthly_budget_usd.as_ref(), "limits.monthly_budget_usd", c),
    };
    for (field, v) in [("rpm", defaults.rpm), ("tpm", defaults.tpm), ("max_concurrent", defaults.max_concurrent)] {
        if v == Some(0) {
            c.push(format!("limits.{field}"), "must be greater than 0 (leave it out for no limit)");
        }
        if v.is_some_and(|v| v > super::MAX_LIMIT) {
            c.push(format!("limits.{field}"), format!("must be at most {}", super::MAX_LIMIT));
        }
    }
    let redis_url = redis_url
        .filter(|u| !u.trim().is_empty())
        .or_else(|| env.get("REDIS_URL").filter(|u| !u.trim().is_empty()))
        .map(|u| u.trim().to_owned());
    if let Some(url) = &redis_url {
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
            c.push("redis_url", "must start with redis://, rediss:// or unix://");
        }
    }
    let d = LimiterSettings::default();
    let completion_defaults = raw
        .completion_tokens
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.tokens == 0 {
                c.push(format!("limits.completion_tokens[{i}].tokens"), "must be greater than 0");
            }
            (ModelPattern::parse(&e.pattern), e.tokens)
        })
        .collect();
    super::LimitSettings {
        defaults,
        limiter: LimiterSettings {
            completion_defaults,
            default_completion_tokens: raw.default_completion_tokens.unwrap_or(d.default_completion_tokens),
            redis_url: redis_url.map(Secret::new),
            redis_prefix: raw.redis_prefix.filter(|p| !p.is_empty()).unwrap_or(d.redis_prefix),
            redis_timeout: raw.redis_timeout_ms.map_or(d.redis_timeout, |ms| Duration::from_millis(ms.max(1))),
            concurrency_stale: raw
                .concurrency_stale_secs
                .map_or(d.concurrency_stale, |s| Duration::from_secs(s.max(1))),
        },
        key_cache_ttl: Duration::from_millis(raw.key_cache_ttl_ms.unwrap_or(5000).max(1)),
    }
}

/// `jwt:`; reads the public key file.
fn jwt_settings(raw: RawJwt, c: &mut Collector) -> crate::domain::config::JwtSettings {
    let algorithm = raw.public_key_algorithm.as_deref().unwrap_or("RS256");
    let mut public_keys = Vec::new();
    if let Some(path) = raw.public_key_file.filter(|p| !p.is_empty()) {
        match (algorithm.parse::<jsonwebtoken::Algorithm>(), std::fs::read_to_string(&path)) {
            (Ok(alg), Ok(pem))
                if !matches!(
                    alg,
                    jsonwebtoken::Algorithm::HS256 | jsonwebtoken::Algorithm::HS384 | jsonwebtoken::Algorithm::HS512
                ) =>
            {
                public_keys.push(crate::domain::config::PublicKeySpec { algorithm: alg, pem });
            }
            (Ok(_), Ok(_)) | (Err(_), _) => c.push(
                "jwt.public_key_algorithm",
                format!("`{algorithm}` is not a public-key algorithm (RS256, ES256, ...)"),
            ),
            (_, Err(e)) => c.push("jwt.public_key_file", format!("cannot read {path}: {e}")),
        }
    }
    let hs256_secret = raw.hs256_secret.filter(|s| !s.is_empty()).map(Secret::new);
    if hs256_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
        c.push("jwt.hs256_secret", "must be at least 32 characters");
    }
    let jwks_file = raw.jwks_file.filter(|p| !p.is_empty()).map(PathBuf::from);
    if hs256_secret.is_none() && public_keys.is_empty() && jwks_file.is_none() {
        c.push("jwt", "set hs256_secret, public_key_file or jwks_file");
    }
    crate::domain::config::JwtSettings {
        hs256_secret,
        public_keys,
        jwks_file,
        jwks_reload: Duration::from_millis(raw.jwks_reload_ms.unwrap_or(2000).max(50)),
        issuer: raw.issuer.filter(|s| !s.is_empty()),
        audience: raw.audience.filter(|s| !s.is_empty()),
        tenant_claim: raw.tenant_claim.filter(|s| !s.is_empty()).unwrap_or_else(|| "sub".to_owned()),
        leeway: Duration::from_secs(raw.leeway_secs.unwrap_or(30)),
        auto_create_tenants: raw.auto_create_tenants.unwrap_or(false),
    }
}
