//! The GraphQL schema: types named after the product's specification (`…Input` inputs, Relay
//! connections `…Connection`/`…Edge`/`PageInfo`), resolvers that each call one service operation
//! with the request's principal. The checked-in SDL is `gateway/schema.graphql`.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, MaybeUndefined, MergedObject, Object, Schema, SimpleObject, ID};
use tokio::sync::OnceCell;

use super::errors::{bad_input, to_graphql};
use super::jobs::{JobsMutation, JobsQuery, SubscriptionRoot};
use crate::domain::config::GraphqlSettings;
use crate::domain::limits::LimitSpec;
use crate::domain::money::format_usd_micro;
use crate::domain::pricing::{format_usd, Price, UnpricedPolicy};
use crate::domain::principal::{Credential, Principal};
use crate::domain::time::{month_start_ms, now_unix_ms, parse_time};
use crate::services::usage::{Bucket, GroupBy, UsageFilter, UsageRow};
use crate::services::{account, models, pricing, tenants, usage, AppState, Error};
use crate::upstream::health::BreakerState;

/// The schema type served at `/graphql`.
pub type GatewaySchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Largest page of any connection (`first`), as the issue requires.
pub const MAX_PAGE: usize = 100;
/// The page size when `first` is not given.
pub const DEFAULT_PAGE: usize = 20;

/// Builds the schema with the configured limits: depth, complexity, introspection.
pub fn build_schema(settings: &GraphqlSettings) -> GatewaySchema {
    let mut builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot)
        .limit_depth(settings.max_depth)
        .limit_complexity(settings.max_complexity)
        // Directives and recursion are cheap to abuse and never needed by our clients.
        .limit_directives(8)
        .limit_recursive_depth(32);
    if !settings.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

type Result<T> = std::result::Result<T, async_graphql::Error>;

/// The request's caller and the services, from the request data the transport sets.
pub(super) fn caller<'a>(ctx: &'a Context<'_>) -> Result<(&'a AppState, &'a Principal)> {
    let state = ctx.data::<Arc<AppState>>()?;
    let principal = ctx.data::<Principal>()?;
    Ok((state.as_ref(), principal))
}

pub(super) fn svc<T>(r: std::result::Result<T, Error>) -> Result<T> {
    r.map_err(to_graphql)
}

fn rfc3339_ms(ms: i64) -> String {
    translators::rfc3339::format_rfc3339(u64::try_from(ms.max(0) / 1000).unwrap_or(0))
}

/// Spend per tenant this month, read once per request with one grouped ledger query (not one per
/// tenant in a list: no N+1). The query is the principal's usage scope, so a tenant sees its own.
#[derive(Default)]
pub struct MonthSpend(OnceCell<std::collections::HashMap<String, (i64, u64)>>);

impl MonthSpend {
    async fn of(&self, state: &AppState, principal: &Principal, tenant: &str) -> Result<(i64, u64)> {
        let map = self
            .0
            .get_or_try_init(|| async {
                let filter = UsageFilter {
                    from_unix_ms: Some(month_start_ms(now_unix_ms())),
                    group_by: vec![GroupBy::Tenant],
                    ..UsageFilter::default()
                };
                let rows = svc(usage::query(state, principal, filter).await)?;
                Ok::<_, async_graphql::Error>(
                    rows.into_iter()
                        .filter_map(|r| r.tenant.map(|t| (t, (r.cost_nano_usd, r.requests))))
                        .collect::<std::collections::HashMap<_, _>>(),
                )
            })
            .await?;
        Ok(map.get(tenant).copied().unwrap_or((0, 0)))
    }
}

// ---------------------------------------------------------------- pagination

/// Extra fields of every connection.
#[derive(SimpleObject)]
pub struct ConnectionTotals {
    /// Items in the whole list (every page).
    pub total_count: usize,
}

fn cursor_of(id: &str) -> String {
    hex::encode(id.as_bytes())
}

/// One page of `items` (already in their stable order) after the item whose cursor is `after`.
fn page<T: async_graphql::OutputType>(
    items: Vec<T>,
    first: Option<i32>,
    after: Option<String>,
    id: impl Fn(&T) -> &str,
) -> Result<Connection<String, T, ConnectionTotals>> {
    let first = match first {
        None => DEFAULT_PAGE,
        Some(n) if n < 0 => return Err(bad_input("`first` must not be negative.")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if first > MAX_PAGE {
        return Err(bad_input(format!("`first` must be at most {MAX_PAGE}.")));
    }
    let start = match after {
        None => 0,
        Some(cursor) => match items.iter().position(|i| cursor_of(id(i)) == cursor) {
            Some(p) => p + 1,
            None => return Err(bad_input("`after` is not a cursor of this list (was the item deleted?).")),
        },
    };
    let total = items.len();
    let end = (start + first).min(total);
    let mut conn = Connection::with_additional_fields(start > 0, end < total, ConnectionTotals { total_count: total });
    conn.edges
        .extend(items.into_iter().skip(start).take(end - start).map(|item| Edge::new(cursor_of(id(&item)), item)));
    Ok(conn)
}

/// Complexity of a connection field: its page size times the cost of one item.
pub(super) fn page_complexity(child: usize, first: Option<i32>) -> usize {
    let n = first.and_then(|n| usize::try_from(n).ok()).unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    n.max(1).saturating_mul(child).saturating_add(1)
}

// ---------------------------------------------------------------- shared types

/// Limits of a tenant or key; `null` = unlimited.
#[derive(SimpleObject, Clone)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
    /// Spend per calendar month (UTC), decimal USD.
    pub monthly_budget_usd: Option<String>,
}

impl From<LimitSpec> for Limits {
    fn from(l: LimitSpec) -> Self {
        Limits {
            rpm: l.rpm,
            tpm: l.tpm,
            max_concurrent: l.max_concurrent,
            monthly_budget_usd: l.monthly_budget_micro_usd.map(format_usd_micro),
        }
    }
}

/// A change to limits: an absent field keeps its value, `null` removes the limit, a value sets it.
#[derive(InputObject, Default)]
pub struct LimitsInput {
    pub rpm: MaybeUndefined<u64>,
    pub tpm: MaybeUndefined<u64>,
    pub max_concurrent: MaybeUndefined<u64>,
    /// Decimal USD (`"12.50"`), parsed exactly.
    pub monthly_budget_usd: MaybeUndefined<String>,
}

fn patch<T>(v: MaybeUndefined<T>) -> Option<Option<T>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

impl From<Option<LimitsInput>> for tenants::LimitsPatch {
    fn from(input: Option<LimitsInput>) -> Self {
        let Some(i) = input else { return tenants::LimitsPatch::default() };
        tenants::LimitsPatch {
            rpm: patch(i.rpm),
            tpm: patch(i.tpm),
            max_concurrent: patch(i.max_concurrent),
            monthly_budget_usd: patch(i.monthly_budget_usd),
        }
    }
}

// ---------------------------------------------------------------- me

/// Who a caller is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The admin key: manages tenants, reads everyone's usage, makes no model requests.
    Admin,
    /// A tenant's key or JWT: its own data only.
    Tenant,
}

/// How a tenant caller authenticated.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Jwt,
    /// Open mode (loopback, no tenant configured).
    Open,
}

/// The caller, its limits and its spend this month.
#[derive(SimpleObject)]
pub struct Me {
    pub kind: PrincipalKind,
    /// The tenant, `null` for the admin.
    pub tenant_id: Option<ID>,
    /// The key used, when a key was used.
    pub key_id: Option<ID>,
    pub credential: Option<CredentialKind>,
    /// The tenant's limits (defaults filled in).
    pub tenant_limits: Limits,
    /// The key's own limits.
    pub key_limits: Limits,
    /// Spend since the start of this UTC month, decimal USD (the tenant's own; everyone's for the admin).
    pub spend_this_month_usd: String,
    /// Requests since the start of this UTC month (same scope).
    pub requests_this_month: u64,
}

// ---------------------------------------------------------------- tenants and keys

/// Where a tenant is defined.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// The config file (read-only here).
    Config,
    /// The tenant store (admin API, GraphQL, dashboard).
    Stored,
}

/// A tenant.
pub struct Tenant(tenants::Tenant);

#[Object]
impl Tenant {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn source(&self) -> TenantSource {
        match self.0.source {
            tenants::TenantSource::Config => TenantSource::Config,
            tenants::TenantSource::Stored => TenantSource::Stored,
        }
    }
    async fn limits(&self) -> Limits {
        self.0.limits.into()
    }
    /// A disabled tenant's keys stop working; its usage history stays.
    async fn disabled(&self) -> bool {
        self.0.disabled
    }
    /// RFC 3339, UTC; `null` for config tenants.
    async fn created_at(&self) -> Option<String> {
        self.0.created_at_unix_ms.map(rfc3339_ms)
    }
    async fn updated_at(&self) -> Option<String> {
        self.0.updated_at_unix_ms.map(rfc3339_ms)
    }
    /// Spend since the start of this UTC month, decimal USD (one ledger query per request for all tenants).
    async fn spend_this_month_usd(&self, ctx: &Context<'_>) -> Result<String> {
        let (state, principal) = caller(ctx)?;
        let (nano, _) = ctx.data::<MonthSpend>()?.of(state, principal, &self.0.id).await?;
        Ok(format_usd(nano))
    }
    /// Requests since the start of this UTC month.
    async fn requests_this_month(&self, ctx: &Context<'_>) -> Result<u64> {
        let (state, principal) = caller(ctx)?;
        Ok(ctx.data::<MonthSpend>()?.of(state, principal, &self.0.id).await?.1)
    }
}

/// An API key (never its secret).
pub struct ApiKey(tenants::KeyRow);

#[Object]
impl ApiKey {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn tenant_id(&self) -> ID {
        ID(self.0.tenant_id.clone())
    }
    /// The first characters of the secret, to recognise it.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn limits(&self) -> Limits {
        self.0.limits.into()
    }
    async fn created_at(&self) -> String {
        rfc3339_ms(self.0.created_at_unix_ms)
    }
    async fn revoked_at(&self) -> Option<String> {
        self.0.revoked_at_unix_ms.map(rfc3339_ms)
    }
    async fn revoked(&self) -> bool {
        self.0.revoked_at_unix_ms.is_some()
    }
}

/// A key just created: the only time its secret is shown.
#[derive(SimpleObject)]
pub struct CreateKeyPayload {
    pub key: ApiKey,
    /// The secret (`sk-…`): store it now, it cannot be read again.
    pub secret: String,
}

/// A new tenant.
#[derive(InputObject)]
pub struct CreateTenantInput {
    /// Letters, digits, `-`, `_`, `.`; at most 128 characters.
    pub id: ID,
    pub limits: Option<LimitsInput>,
}

/// A change to a tenant: absent fields are kept.
#[derive(InputObject)]
pub struct UpdateTenantInput {
    pub limits: Option<LimitsInput>,
    pub disabled: Option<bool>,
}

/// A new key.
#[derive(InputObject)]
pub struct CreateKeyInput {
    pub tenant_id: ID,
    pub name: Option<String>,
    pub limits: Option<LimitsInput>,
}

// ---------------------------------------------------------------- usage

/// A dimension to group usage by.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum UsageDimension {
    Tenant,
    Provider,
    /// The upstream model.
    Model,
    /// The UTC calendar day.
    Day,
}

impl From<UsageDimension> for GroupBy {
    fn from(d: UsageDimension) -> Self {
        match d {
            UsageDimension::Tenant => GroupBy::Tenant,
            UsageDimension::Provider => GroupBy::Provider,
            UsageDimension::Model => GroupBy::Model,
            UsageDimension::Day => GroupBy::Day,
        }
    }
}

/// Which usage to count. Times are unix ms, `YYYY-MM-DD` or RFC 3339; `from` inclusive, `to` exclusive.
#[derive(InputObject, Default)]
pub struct UsageFilterInput {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Only this tenant (a tenant key may name only itself).
    pub tenant_id: Option<ID>,
    /// Only this API key.
    pub key_id: Option<ID>,
    /// Only this provider id.
    pub provider: Option<String>,
    /// Only this upstream model (exact).
    pub model: Option<String>,
}

impl UsageFilterInput {
    fn into_filter(self) -> Result<UsageFilter> {
        let time = |v: Option<String>, name: &str| -> Result<Option<i64>> {
            v.map(|s| parse_time(&s).map_err(|e| bad_input(format!("`{name}`: {e}")))).transpose()
        };
        Ok(UsageFilter {
            from_unix_ms: time(self.from, "from")?,
            to_unix_ms: time(self.to, "to")?,
            tenant: self.tenant_id.map(|t| t.0),
            key_id: self.key_id.map(|k| k.0),
            provider: self.provider,
            model: self.model,
            group_by: Vec::new(),
            bucket: None,
            ..UsageFilter::default()
        })
    }
}

/// Counters of a set of requests.
#[derive(SimpleObject, Clone, Default)]
pub struct UsageTotals {
    pub requests: u64,
    /// Including cached and cache-write tokens.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// Decimal USD, exact (summed in nano-USD).
    pub cost_usd: String,
}

/// One group of usage; dimensions not grouped by are `null`.
#[derive(SimpleObject)]
pub struct UsageGroup {
    pub tenant_id: Option<ID>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    pub day: Option<String>,
    pub totals: UsageTotals,
}

/// Usage totals and the groups that add up to them (the numbers of `/admin/usage`).
#[derive(SimpleObject)]
pub struct UsageReport {
    pub group_by: Vec<UsageDimension>,
    pub totals: UsageTotals,
    pub rows: Vec<UsageGroup>,
}

fn totals_of(r: &UsageRow) -> UsageTotals {
    UsageTotals {
        requests: r.requests,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        cached_tokens: r.cached_tokens,
        cache_write_tokens: r.cache_write_tokens,
        cost_usd: r.cost_usd.clone(),
    }
}

fn sum(rows: &[UsageRow]) -> UsageTotals {
    let nano: i64 = rows.iter().map(|r| r.cost_nano_usd).sum();
    UsageTotals {
        requests: rows.iter().map(|r| r.requests).sum(),
        prompt_tokens: rows.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: rows.iter().map(|r| r.completion_tokens).sum(),
        cached_tokens: rows.iter().map(|r| r.cached_tokens).sum(),
        cache_write_tokens: rows.iter().map(|r| r.cache_write_tokens).sum(),
        cost_usd: format_usd(nano),
    }
}

/// The width of a series bucket.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum TimeBucket {
    Hour,
    Day,
}

/// One bucket of a series.
#[derive(SimpleObject)]
pub struct UsagePoint {
    /// Where the bucket starts, RFC 3339 UTC.
    pub start: String,
    pub start_unix_ms: i64,
    pub totals: UsageTotals,
}

/// Usage over time; buckets without requests are absent.
#[derive(SimpleObject)]
pub struct UsageSeries {
    pub bucket: TimeBucket,
    /// The UTC offset buckets are aligned to (`+00:00`).
    pub timezone: String,
    pub points: Vec<UsagePoint>,
    pub totals: UsageTotals,
}

/// `UTC`, `Z`, or a fixed offset `±HH:MM` → milliseconds east of UTC. Named zones (`Europe/Paris`)
/// are refused: the binary carries no time zone database, and a fixed offset is exact.
fn parse_offset(tz: &str) -> Result<(i64, String)> {
    let tz = tz.trim();
    if tz.is_empty() || tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return Ok((0, "+00:00".to_owned()));
    }
    let bad =
        || bad_input("`timezone` must be UTC or a fixed offset like +02:00 or -05:30 (named zones are not supported).");
    let rest = tz.strip_prefix("UTC").unwrap_or(tz);
    let (sign, hm) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = hm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=18).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    let ms = sign * (h * 3_600_000 + m * 60_000);
    Ok((ms, format!("{}{h:02}:{m:02}", if sign < 0 { '-' } else { '+' })))
}

// ---------------------------------------------------------------- models and prices

/// A deployment's health, from its circuit breaker.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ProviderHealth {
    /// Serving normally (breaker closed).
    Healthy,
    /// Recovering: one probe request at a time (breaker half-open).
    Degraded,
    /// Failing: skipped by routing until the cool-down ends (breaker open).
    Down,
}

/// A price in decimal USD per million tokens.
#[derive(SimpleObject, Clone)]
pub struct ModelPrice {
    pub input_usd_per_million: String,
    pub output_usd_per_million: String,
    pub cached_input_usd_per_million: String,
    pub cache_write_usd_per_million: String,
}

impl From<Price> for ModelPrice {
    fn from(p: Price) -> Self {
        ModelPrice {
            input_usd_per_million: format_usd_micro(p.input_micro_per_m),
            output_usd_per_million: format_usd_micro(p.output_micro_per_m),
            cached_input_usd_per_million: format_usd_micro(p.cached_input_micro_per_m),
            cache_write_usd_per_million: format_usd_micro(p.cache_write_micro_per_m),
        }
    }
}

/// A model of the live catalog.
#[derive(SimpleObject)]
pub struct Model {
    /// `provider/model`, or an alias from the routes.
    pub id: ID,
    pub owned_by: String,
    /// Unix seconds, as the provider reports it (0 when unknown).
    pub created: u64,
    /// The provider serving it (an alias: its primary target).
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    /// `null` when unpriced (refused unless the operator set a fallback price).
    pub price: Option<ModelPrice>,
    pub health: ProviderHealth,
}

/// One entry of the price table.
#[derive(SimpleObject)]
pub struct PriceEntry {
    /// Provider id or kind.
    pub provider: String,
    /// Model name or glob.
    pub model: String,
    pub price: ModelPrice,
}

/// What a model no entry matches costs.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum UnpricedPolicyKind {
    /// Refused before any upstream call.
    Refuse,
    /// Charged `fallbackPrice`.
    Fallback,
}

/// The price table in effect.
#[derive(SimpleObject)]
pub struct Pricing {
    pub entries: Vec<PriceEntry>,
    pub unpriced: UnpricedPolicyKind,
    pub fallback_price: Option<ModelPrice>,
}

// ---------------------------------------------------------------- roots

/// Queries: the caller, tenants, keys, usage, the model catalog and prices; jobs, batches and files
/// (a tenant's own, every tenant's for the admin).
#[derive(MergedObject, Default)]
pub struct QueryRoot(CoreQuery, JobsQuery);

/// Mutations: tenants and keys; jobs (created by a tenant) and batches.
#[derive(MergedObject, Default)]
pub struct MutationRoot(CoreMutation, JobsMutation);

/// Queries on the caller, tenants, keys, usage, models and prices.
#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// Who the caller is: admin or tenant, its limits, its spend this month.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let (state, principal) = caller(ctx)?;
        let me = svc(account::me(state, principal).await)?;
        Ok(Me {
            kind: if principal.is_admin() { PrincipalKind::Admin } else { PrincipalKind::Tenant },
            tenant_id: me.tenant.map(ID),
            key_id: me.key_id.map(ID),
            credential: me.credential.map(|c| match c {
                Credential::ApiKey => CredentialKind::ApiKey,
                Credential::Jwt => CredentialKind::Jwt,
                Credential::Open => CredentialKind::Open,
            }),
            tenant_limits: me.limits.tenant.into(),
            key_limits: me.limits.key.into(),
            spend_this_month_usd: format_usd(me.spend_this_month_nano_usd),
            requests_this_month: me.requests_this_month,
        })
    }

    /// Every tenant, stored ones first (admin only).
    #[graphql(complexity = "page_complexity(child_complexity, first)")]
    async fn tenants(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Tenant, ConnectionTotals>> {
        let (state, principal) = caller(ctx)?;
        let all = svc(tenants::list_tenants(state, principal).await)?;
        page(all.into_iter().map(Tenant).collect(), first, after, |t| &t.0.id)
    }

    /// One tenant: the admin any, a tenant itself (another tenant is NOT_FOUND).
    async fn tenant(&self, ctx: &Context<'_>, id: ID) -> Result<Tenant> {
        let (state, principal) = caller(ctx)?;
        Ok(Tenant(svc(tenants::get_tenant(state, principal, &id).await)?))
    }

    /// A tenant's keys, oldest first: the admin any tenant's, a tenant its own.
    #[graphql(complexity = "page_complexity(child_complexity, first)")]
    async fn keys(
        &self,
        ctx: &Context<'_>,
        tenant_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ApiKey, ConnectionTotals>> {
        let (state, principal) = caller(ctx)?;
        let keys = svc(tenants::list_keys(state, principal, &tenant_id).await)?;
        page(keys.into_iter().map(ApiKey).collect(), first, after, |k| &k.0.id)
    }

    /// Usage totals and groups, from the same service as `/v1/usage` and `/admin/usage`: a tenant
    /// sees its own (filtering on another tenant is BAD_USER_INPUT), the admin everyone's.
    async fn usage(
        &self,
        ctx: &Context<'_>,
        filter: Option<UsageFilterInput>,
        group_by: Option<Vec<UsageDimension>>,
    ) -> Result<UsageReport> {
        let (state, principal) = caller(ctx)?;
        let mut q = filter.unwrap_or_default().into_filter()?;
        let mut dims = group_by.unwrap_or_default();
        dims.dedup();
        q.group_by = dims.iter().map(|d| GroupBy::from(*d)).collect();
        // One query; the totals are the sum of its rows, so they always add up.
        let rows = svc(usage::query(state, principal, q).await)?;
        Ok(UsageReport {
            group_by: dims,
            totals: sum(&rows),
            rows: rows
                .iter()
                .map(|r| UsageGroup {
                    tenant_id: r.tenant.clone().map(ID),
                    provider: r.provider.clone(),
                    model: r.model.clone(),
                    day: r.day.clone(),
                    totals: totals_of(r),
                })
                .collect(),
        })
    }

    /// Usage per hour or day, aligned to `timezone` (UTC or a fixed offset like `+02:00`).
    async fn usage_series(
        &self,
        ctx: &Context<'_>,
        filter: Option<UsageFilterInput>,
        bucket: TimeBucket,
        timezone: Option<String>,
    ) -> Result<UsageSeries> {
        let (state, principal) = caller(ctx)?;
        let q = filter.unwrap_or_default().into_filter()?;
        let (offset_ms, tz) = parse_offset(timezone.as_deref().unwrap_or("UTC"))?;
        let width = match bucket {
            TimeBucket::Hour => 3_600_000,
            TimeBucket::Day => 86_400_000,
        };
        let b = Bucket::new(width, offset_ms).map_err(|e| bad_input(e.to_string()))?;
        let rows = svc(usage::series(state, principal, q, b).await)?;
        Ok(UsageSeries {
            bucket,
            timezone: tz,
            totals: sum(&rows),
            points: rows
                .iter()
                .map(|r| {
                    let start = r.bucket_start_unix_ms.unwrap_or(0);
                    UsagePoint { start: rfc3339_ms(start), start_unix_ms: start, totals: totals_of(r) }
                })
                .collect(),
        })
    }

    /// The live catalog: every enabled provider's models and the aliases, with price and health.
    async fn models(&self, ctx: &Context<'_>) -> Result<Vec<Model>> {
        let (state, principal) = caller(ctx)?;
        Ok(models::catalog(state, principal)
            .await
            .into_iter()
            .map(|m| Model {
                id: ID(m.entry.id),
                owned_by: m.entry.owned_by,
                created: m.entry.created,
                provider: m.provider,
                upstream_model: m.upstream_model,
                price: m.price.map(Into::into),
                health: match m.health {
                    BreakerState::Closed => ProviderHealth::Healthy,
                    BreakerState::HalfOpen => ProviderHealth::Degraded,
                    BreakerState::Open => ProviderHealth::Down,
                },
            })
            .collect())
    }

    /// The price table in effect (built-in prices under the operator's file).
    async fn pricing(&self, ctx: &Context<'_>) -> Result<Pricing> {
        let (state, principal) = caller(ctx)?;
        let list = pricing::list(state, principal);
        let (unpriced, fallback_price) = match list.unpriced {
            UnpricedPolicy::Refuse => (UnpricedPolicyKind::Refuse, None),
            UnpricedPolicy::Fallback(p) => (UnpricedPolicyKind::Fallback, Some(p.into())),
        };
        Ok(Pricing {
            entries: list
                .entries
                .into_iter()
                .map(|e| PriceEntry { provider: e.provider, model: e.model, price: e.price.into() })
                .collect(),
            unpriced,
            fallback_price,
        })
    }
}

/// Mutations on tenants and keys.
#[derive(Default)]
pub struct CoreMutation;

#[Object]
impl CoreMutation {
    /// Creates a stored tenant (admin only).
    async fn create_tenant(&self, ctx: &Context<'_>, input: CreateTenantInput) -> Result<Tenant> {
        let (state, principal) = caller(ctx)?;
        let change = tenants::TenantChange { limits: input.limits.into(), disabled: None };
        Ok(Tenant(svc(tenants::create_tenant(state, principal, &input.id, &change).await)?))
    }

    /// Changes a stored tenant's limits, budget or disabled flag (admin only).
    async fn update_tenant(&self, ctx: &Context<'_>, id: ID, input: UpdateTenantInput) -> Result<Tenant> {
        let (state, principal) = caller(ctx)?;
        let change = tenants::TenantChange { limits: input.limits.into(), disabled: input.disabled };
        Ok(Tenant(svc(tenants::update_tenant(state, principal, &id, &change).await)?))
    }

    /// Deletes a tenant the way the REST API does: it is disabled (its keys stop working) and its
    /// usage history is kept for invoicing (admin only).
    async fn delete_tenant(&self, ctx: &Context<'_>, id: ID) -> Result<Tenant> {
        let (state, principal) = caller(ctx)?;
        Ok(Tenant(svc(tenants::disable_tenant(state, principal, &id).await)?))
    }

    /// Issues a key: the admin for any tenant, a tenant for itself. The secret is shown only here.
    async fn create_key(&self, ctx: &Context<'_>, input: CreateKeyInput) -> Result<CreateKeyPayload> {
        let (state, principal) = caller(ctx)?;
        let request = tenants::NewKeyRequest { name: input.name, limits: input.limits.into() };
        let issued = svc(tenants::create_key(state, principal, &input.tenant_id, &request).await)?;
        Ok(CreateKeyPayload { key: ApiKey(issued.key), secret: issued.secret })
    }

    /// Revokes a key: the admin any, a tenant its own (another tenant's key is NOT_FOUND).
    async fn revoke_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let (state, principal) = caller(ctx)?;
        Ok(ApiKey(svc(tenants::revoke_key(state, principal, &id).await)?))
    }
}
