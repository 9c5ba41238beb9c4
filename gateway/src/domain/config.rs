//! Configuration: file and environment → `Raw*` → validated `Config`.
//!
//! Loading reports every error at once, each naming its field. Without a file, the gateway starts from the
//! environment alone, with the variable names the ecosystem already uses (`OPENAI_API_KEY`, ...).

mod env;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;

pub use env::{expand, EnvSource, MapEnv, ProcessEnv};
pub use raw::{RawConfig, RawUsd};
pub use validate::{ConfigError, ConfigErrors};

/// The validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub models_cache_ttl: Duration,
    pub models_fetch_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Forward reasoning/thinking text as `reasoning_content` instead of dropping it.
    pub include_reasoning: bool,
    /// Add a `tenant` label to request metrics (opt-in: tenant counts can be large).
    pub metrics_tenant_label: bool,
    /// Enabled providers, in id order.
    pub providers: Vec<Arc<ProviderConfig>>,
    /// Ids of providers present in the configuration but not enabled (for the start-up log).
    pub disabled_providers: Vec<String>,
    /// Providers a client may name (a `provider/` prefix, or a built-in route such as `gpt-*` → `openai`)
    /// that are not enabled, each with what would enable it (`set \`OPENAI_API_KEY\``): routing answers
    /// with that instead of a bare `model_not_found` (issue 11, item 16).
    pub unavailable_providers: Vec<UnavailableProvider>,
    /// Built-in routes whose provider is not enabled (`gpt-*` → `openai` without `OPENAI_API_KEY`).
    pub unavailable_routes: Vec<(ModelPattern, String)>,
    /// Routes for bare model names: configured ones first, then the built-in defaults.
    pub routes: Vec<RouteRule>,
    /// The retry policy of everything without its own `retry:` (top-level `retry:`, else
    /// [`RetryPolicy::DEFAULT`]).
    pub default_retry: RetryPolicy,
    pub tenants: Vec<TenantConfig>,
    pub admin_api_key: Option<Secret>,
    pub ledger: LedgerSettings,
    pub pricing_file: Option<PathBuf>,
    /// What happens to a routable model no price table matches (`pricing.unpriced`; default refuse).
    pub unpriced: crate::domain::pricing::UnpricedPolicy,
    /// Per-deployment circuit breaker settings.
    pub circuit_breaker: BreakerPolicy,
    /// Tenant limits: defaults, counting, Redis.
    pub limits: LimitSettings,
    /// JWT bearer tokens, when accepted.
    pub jwt: Option<JwtSettings>,
    /// Downstream connection timeouts (`server:`).
    pub server: ServerSettings,
    /// The local batch executor (`batches:`).
    pub batches: BatchSettings,
    /// The GraphQL front door (`graphql:`, `ENABLE_PLAYGROUND`).
    pub graphql: GraphqlSettings,
    /// The dashboard (`dashboard:`, `DASHBOARD_SESSION_SECRET`).
    pub dashboard: DashboardSettings,
}

/// `dashboard:` (issue 16).
#[derive(Debug, Clone, Default)]
pub struct DashboardSettings {
    /// With a secret, sign-ins are kept in the tenant store (the credential sealed with a key
    /// derived from it), so they survive a restart and are shared by replicas; without one they
    /// live in memory and a restart signs everyone out.
    pub session_secret: Option<Secret>,
}

/// `graphql:`: the GraphQL API at `/graphql` (issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphqlSettings {
    /// Serve the GraphiQL-style page at `GET /graphql` (off by default; `ENABLE_PLAYGROUND=true`
    /// or `graphql.playground: true`).
    pub playground: bool,
    /// Answer `__schema`/`__type` queries (on by default; `graphql.introspection: false` turns it off).
    pub introspection: bool,
    /// Deepest selection nesting a query may have (default 12).
    pub max_depth: usize,
    /// Largest complexity (one per field, times the page size of connections) a query may have
    /// (default 2000).
    pub max_complexity: usize,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self { playground: false, introspection: true, max_depth: 12, max_complexity: 2000 }
    }
}

/// `batches:`: how this replica executes batch lines (it always serves the Files and Batch APIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSettings {
    /// Whether this replica also executes batches (default true). Replicas with `false` only serve the API.
    pub worker: bool,
    /// Lines in flight at once per provider lane on this replica (default 4), unless `lanes` says otherwise.
    pub lane_concurrency: u32,
    /// Per-provider lane sizes.
    pub lanes: std::collections::BTreeMap<String, u32>,
    /// How long a claimed line stays leased without a heartbeat (default 60 s); a replica that dies
    /// holding lines releases them after this.
    pub lease: Duration,
    /// How often an idle worker looks for work (default 500 ms).
    pub poll: Duration,
    /// Tries of a line that fails with a retryable error (5xx, transport) before it becomes an error
    /// line (default 3). 429s do not count.
    pub max_retries: u32,
    /// The completion window actually applied (default 86,400 s, OpenAI's `24h`; tests shorten it).
    pub window: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            worker: true,
            lane_concurrency: 4,
            lanes: std::collections::BTreeMap::new(),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            max_retries: 3,
            window: Duration::from_secs(86_400),
        }
    }
}

impl BatchSettings {
    /// The lane size of `provider`.
    pub fn lane(&self, provider: &str) -> u32 {
        self.lanes.get(provider).copied().unwrap_or(self.lane_concurrency).max(1)
    }
}

/// `server:`: how long the gateway waits on a downstream client before closing its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// A client must send a request's complete headers within this time (slowloris guard; HTTP/1).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this time: one that never sends a
    /// byte, an HTTP/1 keep-alive connection between requests, an idle h2c connection (GOAWAY).
    pub idle_timeout: Duration,
    /// Longest silence while reading a request body; then 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// HTTP/2 PING interval (`None`: no pings); a peer that does not answer within
    /// `h2_keep_alive_timeout` is dropped.
    pub h2_keep_alive_interval: Option<Duration>,
    pub h2_keep_alive_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(30),
            h2_keep_alive_interval: Some(Duration::from_secs(30)),
            h2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// `limits:` and `REDIS_URL`, validated.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Limits of tenants (config or stored) that set none of their own.
    pub defaults: crate::domain::limits::LimitSpec,
    pub limiter: crate::domain::limits::LimiterSettings,
    /// How long stored keys and tenants are cached: the revocation delay on other replicas.
    pub key_cache_ttl: Duration,
}

/// What kind of wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Ollama,
}

impl ProviderKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Ollama => "ollama",
        }
    }
}

/// One enabled upstream provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The id clients use as a model prefix (`anthropic/claude-…`).
    pub id: String,
    pub kind: ProviderKind,
    /// Base URL without a trailing slash (`https://api.openai.com/v1`, `http://localhost:11434`).
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Extra headers sent on every upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: Timeouts,
    /// `anthropic-version` header value (Anthropic only).
    pub anthropic_version: String,
    /// `max_tokens` for Anthropic when the client sends none; `None` uses the per-family table.
    pub default_max_tokens: Option<u64>,
    /// Ollama `options.num_ctx`.
    pub num_ctx: Option<u64>,
    /// Ollama `keep_alive`.
    pub keep_alive: Option<String>,
}

/// A provider that is known but not enabled, and what the operator must do to enable it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableProvider {
    pub id: String,
    /// An imperative the error message ends with, e.g. ``set `OPENAI_API_KEY` ``.
    pub hint: String,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From sending the request to the response headers, and on to the first stream event.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a stream.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), first_byte: Duration::from_secs(120), idle: Duration::from_secs(300) }
    }
}

/// A route for bare model names: one or more targets and how to retry across them.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub pattern: ModelPattern,
    /// At least one. Lower `priority` is tried first; equal priorities form a weighted pool.
    pub targets: Vec<TargetSpec>,
    pub retry: RetryPolicy,
}

impl RouteRule {
    /// The alias target when the route has a single renaming target.
    pub fn alias_model(&self) -> Option<&str> {
        match self.targets.as_slice() {
            [only] => only.model.as_deref(),
            _ => None,
        }
    }
}

/// One deployment a route can send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub provider: String,
    /// Upstream model name; `None` sends the requested name unchanged.
    pub model: Option<String>,
    /// Share of traffic within its priority group (default 1).
    pub weight: u32,
    /// Fallback order (default: the target's position in the list).
    pub priority: u32,
}

/// Which failures a [`RetryPolicy`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Only a transient overload answered before any byte: upstream 503 or 529 (Anthropic `overloaded`),
    /// or an in-band `overloaded` error before the first content. The default policy's choice: safe for
    /// every route, since such an answer says nothing was done.
    Overload,
    /// Every failure that a retry could cure (connect errors, timeouts, 429, 502/503/504, …).
    Retryable,
}

/// Retries before the first byte reaches the client (never a retried half-stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total upstream attempts, first included (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled per retry, with jitter.
    pub backoff: Duration,
    /// Cap on one backoff (and on an honoured `retry-after`).
    pub max_backoff: Duration,
    /// Give up retrying once this much time has passed since the request arrived.
    pub deadline: Duration,
    /// Which failures are retried.
    pub on: RetryOn,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        deadline: Duration::from_secs(60),
        on: RetryOn::Retryable,
    };

    /// The policy of routes that configure none, of the built-in routes and of `provider/model` names,
    /// unless the top-level `retry:` says otherwise: a transient overload is tried twice in all, after a
    /// backoff that honours the upstream's `retry-after` (capped at `max_backoff`) (issue 11, item 14).
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 2,
        backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(2),
        deadline: Duration::from_secs(60),
        on: RetryOn::Overload,
    };
}

/// An exact model name or a glob with `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    Exact(String),
    Glob(String),
}

impl ModelPattern {
    /// Parses `claude-*` as a glob and `fast` as an exact name.
    pub fn parse(s: &str) -> Self {
        if s.contains(['*', '?']) {
            ModelPattern::Glob(s.to_owned())
        } else {
            ModelPattern::Exact(s.to_owned())
        }
    }

    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            ModelPattern::Exact(exact) => exact == name,
            ModelPattern::Glob(glob) => glob_match(glob.as_bytes(), name.as_bytes()),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        match self {
            ModelPattern::Exact(s) | ModelPattern::Glob(s) => s,
        }
    }
}

/// Iterative glob matcher (`*` any run, `?` any one byte) with single-star backtracking: linear in practice.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// A tenant and its keys.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub api_keys: Vec<KeySpec>,
    /// The tenant's own limits (unset fields take `limits:` defaults).
    pub limits: crate::domain::limits::LimitSpec,
}

/// Tenant ids: 1 to 128 ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit (so
/// `.` and `..`, which no URL path can address, are refused). The same rule for the config file, the
/// admin API and JWT claims; ids are unique regardless of case.
pub fn is_valid_tenant_id(id: &str) -> bool {
    id.len() <= MAX_TENANT_ID
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Longest tenant id, in bytes.
pub const MAX_TENANT_ID: usize = 128;

/// Largest value of a count limit (`rpm`, `tpm`, `max_concurrent`): what the stores hold (`BIGINT`).
pub const MAX_LIMIT: u64 = i64::MAX as u64;

/// A configured key: the plain key, or the SHA-256 of it.
#[derive(Debug, Clone)]
pub enum KeySpec {
    Plain(Secret),
    Sha256([u8; 32]),
}

/// Ledger settings from config and environment.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub database_url: Option<Secret>,
    pub data_dir: PathBuf,
    pub queue_capacity: usize,
    pub batch_rows: usize,
    pub batch_interval: Duration,
}

/// A secret string: redacted in `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Config {
    /// Builds the configuration from YAML text plus the environment.
    pub fn from_yaml_str(yaml: &str, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        validate::from_yaml(Some(yaml), env)
    }

    /// Builds the configuration from the environment alone (no file).
    pub fn from_env(env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        validate::from_yaml(None, env)
    }

    /// Reads `path` (when given) and builds the configuration.
    pub fn load(path: Option<&std::path::Path>, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        match path {
            None => Self::from_env(env),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Self::from_yaml_str(&text, env),
                Err(e) => Err(ConfigErrors(vec![ConfigError {
                    path: "--config".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])),
            },
        }
    }

    /// The enabled provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// The known but not enabled provider with this id.
    pub fn unavailable_provider(&self, id: &str) -> Option<&UnavailableProvider> {
        self.unavailable_providers.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { failures: 5, cooldown: Duration::from_secs(30) }
    }
}

/// A PEM public key and the algorithm it verifies.
#[derive(Debug, Clone)]
pub struct PublicKeySpec {
    pub algorithm: Algorithm,
    pub pem: String,
}

/// Validated `jwt:` settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub hs256_secret: Option<Secret>,
    pub public_keys: Vec<PublicKeySpec>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_reload: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Claim holding the tenant id (default `sub`).
    pub tenant_claim: String,
    pub leeway: Duration,
    /// Create a stored tenant (default limits) for an unknown tenant in a valid token.
    pub auto_create_tenants: bool,
}
