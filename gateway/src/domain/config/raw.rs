//! `Raw*`: the configuration file as deserialized, before validation. Field names are the YAML keys.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The top level of `gateway.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub models_cache_ttl_secs: Option<u64>,
    pub models_fetch_timeout_ms: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub include_reasoning: Option<bool>,
    pub metrics_tenant_label: Option<bool>,
    pub providers: Option<BTreeMap<String, RawProvider>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    pub admin_api_key: Option<String>,
    pub ledger: Option<RawLedger>,
    pub pricing_file: Option<String>,
    /// What to do with models no price table matches.
    pub pricing: Option<RawPricing>,
    /// Retry policy of routes without their own `retry:`, built-in routes and `provider/model` names.
    pub retry: Option<RawRetry>,
    pub circuit_breaker: Option<RawBreaker>,
    /// Shared rate-limit counters (`REDIS_URL` when unset).
    pub redis_url: Option<String>,
    pub limits: Option<RawLimits>,
    pub jwt: Option<RawJwt>,
    pub server: Option<RawServer>,
    pub batches: Option<RawBatches>,
    pub graphql: Option<RawGraphql>,
    pub dashboard: Option<RawDashboard>,
}

/// `dashboard:` (issue 16).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDashboard {
    /// Keeps sign-ins across restarts (and replicas) when set (`DASHBOARD_SESSION_SECRET`).
    pub session_secret: Option<String>,
}

/// `graphql:`: the GraphQL front door at `/graphql` (issue 15).
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawGraphql {
    pub playground: Option<bool>,
    pub introspection: Option<bool>,
    pub max_depth: Option<usize>,
    pub max_complexity: Option<usize>,
}

/// `server:`: downstream connection limits, in seconds.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub header_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub h2_keep_alive_interval_secs: Option<u64>,
    pub h2_keep_alive_timeout_secs: Option<u64>,
}

/// One entry of `providers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeouts: Option<RawTimeouts>,
    pub anthropic_version: Option<String>,
    pub default_max_tokens: Option<u64>,
    pub num_ctx: Option<u64>,
    pub keep_alive: Option<String>,
}

/// Upstream timeouts in milliseconds.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub pattern: String,
    /// Shorthand for a single target.
    pub provider: Option<String>,
    pub model: Option<String>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    pub retry: Option<RawRetry>,
}

/// One entry of a route's `targets:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: String,
    pub model: Option<String>,
    pub weight: Option<u32>,
    pub priority: Option<u32>,
}

/// `pricing:`: the policy for unpriced models.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPricing {
    /// `refuse` (default) or `fallback`.
    pub unpriced: Option<String>,
    /// The price charged to unpriced models under `unpriced: fallback`, USD per million tokens.
    pub fallback: Option<RawFallbackPrice>,
}

/// `pricing.fallback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallbackPrice {
    pub input: RawUsd,
    pub output: RawUsd,
    pub cached_input: Option<RawUsd>,
    pub cache_write: Option<RawUsd>,
}

/// A route's `retry:`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// `overload` (503/529 only) or `retryable` (every failure a retry could cure).
    pub on: Option<String>,
}

/// One entry of `tenants:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub monthly_budget_usd: Option<RawUsd>,
}

/// A USD amount: a decimal string (`"12.50"`) or a YAML number, read as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawUsd {
    Int(u64),
    Text(String),
    Float(f64),
}

impl RawUsd {
    /// The amount as decimal text.
    pub fn as_text(&self) -> String {
        match self {
            RawUsd::Int(i) => i.to_string(),
            RawUsd::Text(s) => s.clone(),
            RawUsd::Float(f) => f.to_string(),
        }
    }
}

/// `limits:`: defaults for tenants that set none, and how limits are counted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub monthly_budget_usd: Option<RawUsd>,
    /// Completion allowance reserved when a request has no `max_tokens` (default 1024).
    pub default_completion_tokens: Option<u64>,
    /// Per-model completion allowances, first match wins.
    #[serde(default)]
    pub completion_tokens: Vec<RawCompletionTokens>,
    pub redis_prefix: Option<String>,
    pub redis_timeout_ms: Option<u64>,
    /// How long stored keys and tenants are cached (bounds the revocation delay; default 5000).
    pub key_cache_ttl_ms: Option<u64>,
    pub concurrency_stale_secs: Option<u64>,
}

/// One entry of `limits.completion_tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompletionTokens {
    #[serde(rename = "match")]
    pub pattern: String,
    pub tokens: u64,
}

/// `jwt:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub hs256_secret: Option<String>,
    pub public_key_file: Option<String>,
    /// `RS256` (default) or `ES256` (also RS384/RS512/PS*/ES384/EdDSA).
    pub public_key_algorithm: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_reload_ms: Option<u64>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub tenant_claim: Option<String>,
    pub leeway_secs: Option<u64>,
    pub auto_create_tenants: Option<bool>,
}

/// `ledger:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub database_url: Option<String>,
    pub data_dir: Option<String>,
    pub queue_capacity: Option<usize>,
    pub batch_rows: Option<usize>,
    pub batch_interval_ms: Option<u64>,
}

/// `circuit_breaker:`.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

/// `batches:`: the local batch executor (issue 14).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBatches {
    pub worker: Option<bool>,
    pub lane_concurrency: Option<u32>,
    #[serde(default)]
    pub lanes: BTreeMap<String, u32>,
    pub lease_secs: Option<u64>,
    pub poll_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub window_secs: Option<u64>,
}
