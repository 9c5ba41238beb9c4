//! The pages: one handler per path, each calling services with the session's principal. Layout,
//! sign-in, settings and playground are askama templates (`templates/dashboard/`); data pages build
//! their tables with [`Html`], which escapes every value it is given.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use bytes::Bytes;
use fluent_bundle::{FluentArgs, FluentValue};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};

use super::format::{self, escape};
use super::i18n::{self, Lang};
use super::{chart, form_pairs, redirect, respond, set_cookie, with_cookie, Body, Prefs, Theme};
use crate::domain::principal::Principal;
use crate::domain::time::now_unix_ms;
use crate::services::models::BreakerState;
use crate::services::sessions::{self, same_token, Resumed, SignInError};
use crate::services::tenants::{self, LimitsPatch, NewKeyRequest, TenantChange, TenantSource};
use crate::services::usage::{self, Cursor, GroupBy, UsageFilter, UsageRow};
use crate::services::{self, AppState, Error};

mod jobs;

/// Per-request page context: language, theme, zone, the principal and its CSRF token.
pub struct Ctx {
    pub prefs: Prefs,
    pub principal: Principal,
    pub csrf: String,
    pub active: String,
}

impl Ctx {
    pub(super) fn new(prefs: Prefs, session: Resumed, path: &str) -> Self {
        Ctx { prefs, principal: session.principal, csrf: session.csrf, active: path.to_owned() }
    }

    /// A message.
    pub fn t(&self, id: &str) -> String {
        i18n::message(self.prefs.lang, id, None)
    }

    /// A counted message (`$count`, `$n`).
    pub fn tn(&self, id: &str, n: u64) -> String {
        i18n::counted(self.prefs.lang, id, n)
    }

    fn ta(&self, id: &str, args: &[(&'static str, String)]) -> String {
        let mut a = FluentArgs::new();
        for (k, v) in args {
            a.set(*k, FluentValue::from(v.clone()));
        }
        i18n::message(self.prefs.lang, id, Some(&a))
    }

    fn lang(&self) -> Lang {
        self.prefs.lang
    }

    fn num(&self, n: u64) -> String {
        format::count(self.lang(), i64::try_from(n).unwrap_or(i64::MAX))
    }

    fn money(&self, nano: i64) -> String {
        format::money(self.lang(), nano)
    }

    fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::Admin)
    }

    fn who(&self) -> String {
        match &self.principal {
            Principal::Admin => self.t("role-admin"),
            Principal::Tenant(t) => t.tenant.to_string(),
        }
    }

    fn own_tenant(&self) -> Option<String> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Tenant(t) => Some(t.tenant.to_string()),
        }
    }
}

/// One navigation entry.
pub struct NavItem {
    pub href: &'static str,
    pub label: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "dashboard/layout.html")]
struct Layout<'a> {
    lang: &'static str,
    theme: &'static str,
    title: String,
    nav: Vec<NavItem>,
    who: String,
    csrf: &'a str,
    sign_out: String,
    skip: String,
    theme_toggle: String,
    /// Already-escaped page HTML.
    content: String,
    refresh: bool,
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    lang: &'static str,
    theme: &'static str,
    title: String,
    help: String,
    label: String,
    button: String,
    error: Option<String>,
    csrf: String,
}

#[derive(Template)]
#[template(path = "dashboard/settings.html")]
struct SettingsPage<'a> {
    c: &'a Ctx,
    langs: Vec<(&'static str, &'static str, bool)>,
    themes: Vec<(&'static str, String, bool)>,
    zones: Vec<(i32, String, bool)>,
    saved: bool,
}

#[derive(Template)]
#[template(path = "dashboard/playground.html")]
struct PlaygroundPage<'a> {
    c: &'a Ctx,
    models: Vec<String>,
    admin: bool,
}

fn page(ctx: &Ctx, title_id: &str, content: String, refresh: bool) -> Response {
    let mut nav = vec![
        ("/dashboard", "nav-overview"),
        ("/dashboard/usage", "nav-usage"),
        ("/dashboard/requests", "nav-requests"),
    ];
    nav.push(if ctx.is_admin() { ("/dashboard/tenants", "nav-tenants") } else { ("/dashboard/keys", "nav-keys") });
    nav.extend([
        ("/dashboard/models", "nav-models"),
        ("/dashboard/jobs", "nav-jobs"),
        ("/dashboard/playground", "nav-playground"),
        ("/dashboard/settings", "nav-settings"),
    ]);
    let nav = nav
        .into_iter()
        .map(|(href, id)| NavItem {
            href,
            label: ctx.t(id),
            current: ctx.active == href || (href != "/dashboard" && ctx.active.starts_with(href)),
        })
        .collect();
    let layout = Layout {
        lang: ctx.lang().tag(),
        theme: ctx.prefs.theme.as_str(),
        title: ctx.t(title_id),
        nav,
        who: ctx.ta("signed-in-as", &[("who", ctx.who())]),
        csrf: &ctx.csrf,
        sign_out: ctx.t("sign-out"),
        skip: ctx.t("skip-to-content"),
        theme_toggle: ctx.t("theme-toggle"),
        content,
        refresh,
    };
    render(StatusCode::OK, &layout)
}

type Response = http::Response<Body>;

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => respond(status, "text/html; charset=utf-8", html),
        Err(e) => {
            tracing::error!(error = %e, "Dashboard template failed");
            respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "template error\n")
        }
    }
}

fn error_page(ctx: &Ctx, e: &Error) -> Response {
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("error-title")).raw("</h1><p class=\"notice error\" role=\"alert\">");
    match e {
        Error::Denied(_) => html.text(&ctx.t("forbidden")),
        Error::NotFound(_) => html.text(&ctx.t("not-found")),
        other => html.text(&other.to_string()),
    };
    html.raw("</p>");
    let mut resp = page(ctx, "error-title", html.0, false);
    *resp.status_mut() = e.status();
    resp
}

/// An HTML builder: [`Html::text`] escapes, [`Html::raw`] is for literal markup only.
#[derive(Default)]
pub struct Html(pub String);

impl Html {
    fn raw(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }
    fn text(&mut self, s: &str) -> &mut Self {
        self.0.push_str(&escape(s));
        self
    }
    fn csrf(&mut self, ctx: &Ctx) -> &mut Self {
        let _ = write!(self.0, r#"<input type="hidden" name="csrf" value="{}">"#, escape(&ctx.csrf));
        self
    }
    /// Opens a horizontally scrolling table with its caption: the scroller is a labelled region that
    /// takes keyboard focus, so a table wider than the screen can be scrolled without a mouse (WCAG
    /// 2.1.1; axe-core `scrollable-region-focusable`). Close with `</table></div>`.
    fn scroll_table(&mut self, caption: &str) -> &mut Self {
        self.raw(r#"<div class="scroll" role="region" tabindex="0" aria-label=""#)
            .text(caption)
            .raw(r#""><table><caption>"#)
            .text(caption)
            .raw("</caption>")
    }
    /// A table: `head`, rows of (text, numeric) cells, an optional total row.
    fn table(
        &mut self,
        caption: &str,
        head: &[String],
        rows: &[Vec<(String, bool)>],
        foot: Option<Vec<(String, bool)>>,
    ) {
        self.scroll_table(caption).raw("<thead><tr>");
        // A numeric column's heading is right-aligned like its cells.
        let numeric = |i: usize| rows.first().or(foot.as_ref()).and_then(|r| r.get(i)).is_some_and(|(_, num)| *num);
        for (i, h) in head.iter().enumerate() {
            self.raw(if numeric(i) { "<th scope=\"col\" class=\"num\">" } else { "<th scope=\"col\">" })
                .text(h)
                .raw("</th>");
        }
        self.raw("</tr></thead><tbody>");
        for r in rows {
            self.raw("<tr>");
            for (v, num) in r {
                self.raw(if *num { "<td class=\"num\">" } else { "<td>" }).text(v).raw("</td>");
            }
            self.raw("</tr>");
        }
        self.raw("</tbody>");
        if let Some(f) = foot {
            self.raw("<tfoot><tr>");
            for (v, num) in f {
                self.raw(if num { "<th class=\"num\" scope=\"row\">" } else { "<th scope=\"row\">" })
                    .text(&v)
                    .raw("</th>");
            }
            self.raw("</tr></tfoot>");
        }
        self.raw("</table></div>");
    }
}

fn q<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------- sign-in

/// The sign-in page, with a fresh double-submit CSRF token in a cookie and the form.
pub fn login_page(prefs: &Prefs, error: Option<&str>, status: StatusCode) -> Response {
    let token = sessions::random_token().unwrap_or_default();
    let l = prefs.lang;
    let t = |id: &str| i18n::message(l, id, None);
    let p = LoginPage {
        lang: l.tag(),
        theme: prefs.theme.as_str(),
        title: t("sign-in-title"),
        help: t("sign-in-help"),
        label: t("credential"),
        button: t("sign-in"),
        error: error.map(|e| {
            if let Some(secs) = e.strip_prefix("too-many:") {
                let mut a = FluentArgs::new();
                a.set("seconds", FluentValue::from(secs.to_owned()));
                i18n::message(l, "sign-in-too-many", Some(&a))
            } else {
                t(e)
            }
        }),
        csrf: token.clone(),
    };
    with_cookie(render(status, &p), &set_cookie(super::LOGIN_COOKIE, &token, true, Some(600), prefs.secure))
}

pub async fn login_post(
    state: &AppState,
    prefs: &Prefs,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<IpAddr>,
) -> Response {
    let sent = q(form, "csrf").unwrap_or("");
    let expected = super::cookie(headers, super::LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_token(sent, expected) {
        return login_page(prefs, Some("csrf-failed"), StatusCode::FORBIDDEN);
    }
    match sessions::sign_in(state, q(form, "credential").unwrap_or(""), peer).await {
        Ok((id, _)) => with_cookie(
            with_cookie(redirect("/dashboard"), &set_cookie(super::SESSION_COOKIE, &id, true, None, prefs.secure)),
            &set_cookie(super::LOGIN_COOKIE, "", true, Some(0), prefs.secure),
        ),
        Err(SignInError::Invalid) => login_page(prefs, Some("sign-in-invalid"), StatusCode::UNAUTHORIZED),
        Err(SignInError::Unavailable) => {
            login_page(prefs, Some("sign-in-unavailable"), StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(SignInError::TooMany { retry_after_secs }) => {
            let mut resp =
                login_page(prefs, Some(&format!("too-many:{retry_after_secs}")), StatusCode::TOO_MANY_REQUESTS);
            if let Ok(v) = HeaderValue::try_from(retry_after_secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

// ---------------------------------------------------------------- routing

#[allow(clippy::too_many_arguments)]
pub async fn route(
    state: &Arc<AppState>,
    ctx: Ctx,
    session_id: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Option<String>,
) -> Response {
    if method == "POST" {
        // Every form carries the session's token; the playground sends it in a header (JSON body).
        let sent = if path == "/dashboard/playground/chat" {
            headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        } else {
            body.as_deref().map(form_pairs).and_then(|f| q(&f, "csrf").map(str::to_owned)).unwrap_or_default()
        };
        if !same_token(&sent, &ctx.csrf) {
            let e = Error::Denied(crate::domain::principal::Denied::AdminOnly);
            let mut resp = error_page(&ctx, &e);
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return resp;
        }
    }
    let form = body.as_deref().map(form_pairs).unwrap_or_default();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (method, segs.as_slice()) {
        ("GET", ["dashboard"]) => overview(state, &ctx, query).await,
        ("GET", ["dashboard", "usage"]) => usage_page(state, &ctx, query).await,
        ("GET", ["dashboard", "usage.csv"]) => usage_csv(state, &ctx, query).await,
        ("GET", ["dashboard", "requests"]) => requests_page(state, &ctx, query).await,
        ("GET", ["dashboard", "tenants"]) => tenants_page(state, &ctx).await,
        ("POST", ["dashboard", "tenants"]) => create_tenant(state, &ctx, &form).await,
        ("GET", ["dashboard", "tenants", id]) => tenant_page(state, &ctx, id, None).await,
        ("POST", ["dashboard", "tenants", id]) => update_tenant(state, &ctx, id, &form).await,
        ("POST", ["dashboard", "tenants", id, "keys"]) => create_key(state, &ctx, id, &form).await,
        ("POST", ["dashboard", "keys", key_id, "revoke"]) => revoke_key(state, &ctx, key_id, &form).await,
        ("GET", ["dashboard", "keys"]) => match ctx.own_tenant() {
            Some(own) => tenant_page(state, &ctx, &own, None).await,
            None => Ok(redirect("/dashboard/tenants")),
        },
        ("GET", ["dashboard", "models"]) => models_page(state, &ctx).await,
        ("GET", ["dashboard", "jobs"]) => jobs::list(state, &ctx, query).await,
        ("POST", ["dashboard", "jobs"]) => jobs::upload(state, &ctx, &form).await,
        ("POST", ["dashboard", "jobs", "text"]) => jobs::text_job(state, &ctx, &form).await,
        ("GET", ["dashboard", "jobs", id]) => jobs::detail(state, &ctx, &decode(id)).await,
        ("POST", ["dashboard", "jobs", id, "cancel"]) => jobs::cancel(state, &ctx, &decode(id)).await,
        ("GET", ["dashboard", "files", id, "content"]) => jobs::download(state, &ctx, &decode(id)).await,
        ("GET", ["dashboard", "playground"]) => playground_page(state, &ctx).await,
        ("POST", ["dashboard", "playground", "chat"]) => playground_chat(state, &ctx, body.unwrap_or_default()).await,
        ("GET", ["dashboard", "settings"]) => Ok(settings_page(&ctx, q(query, "saved").is_some())),
        ("POST", ["dashboard", "settings"]) => Ok(save_settings(&ctx, &form)),
        ("POST", ["dashboard", "logout"]) => {
            sessions::sign_out(state, session_id).await;
            Ok(with_cookie(
                redirect("/dashboard/login"),
                &set_cookie(super::SESSION_COOKIE, "", true, Some(0), ctx.prefs.secure),
            ))
        }
        _ => Err(Error::NotFound("no such dashboard page".into())),
    };
    result.unwrap_or_else(|e| error_page(&ctx, &e))
}

// ---------------------------------------------------------------- overview

const DAY_MS: i64 = 86_400_000;

/// `[from, to)` covering the last `days` local days, today included.
fn last_days(days: i64, tz_min: i32) -> (i64, i64) {
    let today = format::local_midnight(now_unix_ms(), tz_min);
    (today - (days - 1) * DAY_MS, today + DAY_MS)
}

fn period_form(ctx: &Ctx, html: &mut Html, days: i64, tenant: Option<&str>) {
    html.raw(r#"<form method="get" class="filters"><label>"#).text(&ctx.t("period")).raw(r#" <select name="days">"#);
    for d in [1i64, 7, 30, 90] {
        let sel = if d == days { " selected" } else { "" };
        let _ = write!(html.0, r#"<option value="{d}"{sel}>"#);
        html.text(&ctx.tn("period-days", d as u64)).raw("</option>");
    }
    html.raw("</select></label>");
    if ctx.is_admin() {
        html.raw("<label>")
            .text(&ctx.t("tenant"))
            .raw(r#" <input name="tenant" value=""#)
            .text(tenant.unwrap_or(""))
            .raw(r#""></label>"#);
    }
    html.raw(r#"<button type="submit">"#)
        .text(&ctx.t("apply"))
        .raw("</button><span class=\"zone\">")
        .text(&format::offset_label(ctx.prefs.tz_min))
        .raw("</span></form>");
}

fn sum(rows: &[UsageRow]) -> UsageRow {
    let mut total = UsageRow::zero();
    for r in rows {
        total.add(r);
    }
    total.summed()
}

fn breakdown(ctx: &Ctx, html: &mut Html, caption: &str, label: &str, rows: &[UsageRow], key: fn(&UsageRow) -> String) {
    let head =
        vec![label.to_owned(), ctx.t("requests"), ctx.t("tokens-prompt"), ctx.t("tokens-completion"), ctx.t("spend")];
    let body: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            vec![
                (key(r), false),
                (ctx.num(r.requests), true),
                (ctx.num(r.prompt_tokens), true),
                (ctx.num(r.completion_tokens), true),
                (ctx.money(r.cost_nano_usd), true),
            ]
        })
        .collect();
    let t = sum(rows);
    let foot = vec![
        (ctx.t("total"), false),
        (ctx.num(t.requests), true),
        (ctx.num(t.prompt_tokens), true),
        (ctx.num(t.completion_tokens), true),
        (ctx.money(t.cost_nano_usd), true),
    ];
    html.raw("<section class=\"card\">");
    html.table(caption, &head, &body, Some(foot));
    html.raw("</section>");
}

async fn overview(state: &AppState, ctx: &Ctx, query: &[(String, String)]) -> Result<Response, Error> {
    let days = q(query, "days").and_then(|d| d.parse::<i64>().ok()).filter(|d| [1, 7, 30, 90].contains(d)).unwrap_or(7);
    let tenant = q(query, "tenant").map(str::to_owned);
    let (from, to) = last_days(days, ctx.prefs.tz_min);
    let base = UsageFilter {
        from_unix_ms: Some(from),
        to_unix_ms: Some(to),
        tenant: tenant.clone(),
        utc_offset_ms: i64::from(ctx.prefs.tz_min) * 60_000,
        ..UsageFilter::default()
    };
    let p = &ctx.principal;
    // One query at the finest grouping the page shows, regrouped for each breakdown: one scan of
    // the rollups instead of five, and every breakdown sums to the same total by construction.
    let mut finest = vec![GroupBy::Day, GroupBy::Provider, GroupBy::Model];
    if ctx.is_admin() {
        finest.push(GroupBy::Tenant);
    }
    let fine = usage::query(state, p, UsageFilter { group_by: finest, ..base.clone() }).await?;
    let total = sum(&fine);
    let stats = usage::latency(state, p, base.clone()).await?;
    let per_day = usage::regroup(&fine, &[GroupBy::Day]);
    let per_provider = usage::regroup(&fine, &[GroupBy::Provider]);
    let per_model = usage::regroup(&fine, &[GroupBy::Model]);

    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("nav-overview")).raw("</h1>");
    period_form(ctx, &mut html, days, tenant.as_deref());
    html.raw(r#"<div class="kpis">"#);
    let ms = |v: Option<u64>| v.map_or("—".to_owned(), |v| ctx.ta("ms", &[("n", ctx.num(v))]));
    for (label, value, id) in [
        (ctx.t("spend"), ctx.money(total.cost_nano_usd), "kpi-spend"),
        (ctx.t("requests"), ctx.tn("requests-count", total.requests), "kpi-requests"),
        (ctx.t("tokens-prompt"), ctx.num(total.prompt_tokens), "kpi-prompt"),
        (ctx.t("tokens-completion"), ctx.num(total.completion_tokens), "kpi-completion"),
        (ctx.t("tokens-cached"), ctx.num(total.cached_tokens), "kpi-cached"),
        (ctx.t("error-rate"), format::percent(ctx.lang(), stats.errors, stats.requests), "kpi-errors"),
        (ctx.t("latency-p50"), ms(stats.p50_ms), "kpi-p50"),
        (ctx.t("latency-p99"), ms(stats.p99_ms), "kpi-p99"),
    ] {
        let _ = write!(html.0, r#"<div class="kpi" id="{id}"><div class="kpi-label">"#);
        html.text(&label).raw(r#"</div><div class="kpi-value">"#).text(&value).raw("</div></div>");
    }
    html.raw("</div>");
    // Every local day of the period, zero-filled, so the chart's x axis is the period itself.
    let mut labels = Vec::new();
    let mut titles = Vec::new();
    let mut values = Vec::new();
    let mut day = from;
    while day < to {
        let label = format::day(day, ctx.prefs.tz_min);
        let v = per_day.iter().find(|r| r.day.as_deref() == Some(label.as_str())).map_or(0, |r| r.cost_nano_usd);
        titles.push(format!("{label}: {}", ctx.money(v)));
        labels.push(label.get(5..).unwrap_or(&label).to_owned());
        values.push(v);
        day += DAY_MS;
    }
    html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("spend-per-day")).raw("</h2>");
    html.raw(&chart::bars(&ctx.t("spend-per-day"), &labels, &titles, &values));
    html.raw("</section>");
    breakdown(ctx, &mut html, &ctx.t("by-provider"), &ctx.t("provider"), &per_provider, |r| {
        r.provider.clone().unwrap_or_default()
    });
    breakdown(ctx, &mut html, &ctx.t("by-model"), &ctx.t("model"), &per_model, |r| r.model.clone().unwrap_or_default());
    if ctx.is_admin() {
        let per_tenant = usage::regroup(&fine, &[GroupBy::Tenant]);
        breakdown(ctx, &mut html, &ctx.t("by-tenant"), &ctx.t("tenant"), &per_tenant, |r| {
            r.tenant.clone().unwrap_or_default()
        });
    }
    budgets(state, ctx, &mut html).await?;
    Ok(page(ctx, "nav-overview", html.0, true))
}

/// Month-to-date spend against each monthly budget (UTC month, as budgets are enforced).
async fn budgets(state: &AppState, ctx: &Ctx, html: &mut Html) -> Result<(), Error> {
    let month = crate::domain::time::month_start_ms(now_unix_ms());
    let filter = UsageFilter { from_unix_ms: Some(month), group_by: vec![GroupBy::Tenant], ..UsageFilter::default() };
    let spent = usage::query(state, &ctx.principal, filter).await?;
    let limits: Vec<(String, Option<i64>)> = match &ctx.principal {
        Principal::Admin => tenants::list_tenants(state, &ctx.principal)
            .await
            .map(|ts| ts.into_iter().map(|t| (t.id, t.limits.monthly_budget_micro_usd)).collect())
            .unwrap_or_default(),
        Principal::Tenant(t) => vec![(t.tenant.to_string(), t.limits.tenant.monthly_budget_micro_usd)],
    };
    html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("budgets")).raw("</h2>");
    let mut any = false;
    for (tenant, budget) in limits {
        let Some(budget_micro) = budget else { continue };
        any = true;
        let used = spent.iter().find(|r| r.tenant.as_deref() == Some(&tenant)).map_or(0, |r| r.cost_nano_usd);
        let budget_nano = budget_micro.saturating_mul(1000);
        let label = ctx.ta("budget-of", &[("spent", ctx.money(used)), ("budget", ctx.money(budget_nano))]);
        html.raw(r#"<div class="budget"><span>"#).text(&tenant).raw("</span> ");
        let _ = write!(
            html.0,
            r#"<meter min="0" max="{budget_nano}" value="{}" high="{}" aria-label=""#,
            used.min(budget_nano),
            budget_nano / 10 * 8
        );
        html.text(&format!("{tenant}: {label}")).raw(r#""></meter> <span>"#).text(&label).raw("</span></div>");
    }
    if !any {
        html.raw("<p>").text(&ctx.t("no-budget")).raw("</p>");
    }
    html.raw("</section>");
    Ok(())
}

// ---------------------------------------------------------------- usage explorer

/// The explorer's filter from its query: dates are local days in the chosen zone, `to` inclusive
/// in the form and exclusive in the query (`[from 00:00, to+1 00:00)`).
fn explorer_filter(ctx: &Ctx, query: &[(String, String)]) -> Result<(UsageFilter, String, String), Error> {
    let off = i64::from(ctx.prefs.tz_min) * 60_000;
    let (def_from, def_to) = last_days(30, ctx.prefs.tz_min);
    let parse = |k: &'static str| -> Result<Option<i64>, Error> {
        match q(query, k) {
            None => Ok(None),
            Some(v) => crate::domain::time::parse_time(v)
                .map(|ms| Some(if v.len() == 10 { ms - off } else { ms }))
                .map_err(|e| Error::bad_request(e, Some(k))),
        }
    };
    let from = parse("from")?.unwrap_or(def_from);
    let to = parse("to")?
        .map(|t| if q(query, "to").is_some_and(|v| v.len() == 10) { t + DAY_MS } else { t })
        .unwrap_or(def_to);
    let mut groups = Vec::new();
    for (k, v) in query {
        if k == "g" {
            if let Some(g) = GroupBy::parse(v) {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    let status = q(query, "status").filter(|s| usage::RecordStatus::parse(s).is_some()).map(str::to_owned);
    let f = UsageFilter {
        from_unix_ms: Some(from),
        to_unix_ms: Some(to),
        tenant: q(query, "tenant").map(str::to_owned),
        provider: q(query, "provider").map(str::to_owned),
        model: q(query, "model").map(str::to_owned),
        status,
        group_by: groups,
        utc_offset_ms: off,
        ..UsageFilter::default()
    };
    Ok((f, format::day(from, ctx.prefs.tz_min), format::day(to - DAY_MS, ctx.prefs.tz_min)))
}

fn filter_inputs(ctx: &Ctx, html: &mut Html, f: &UsageFilter, from: &str, to: &str) {
    // Text inputs with an explicit `YYYY-MM-DD` pattern rather than `type="date"`: a native date
    // input renders in the browser's locale, not the dashboard's chosen language, so a Russian page
    // in an English browser showed `mm/dd/yyyy`. The hint is localized; the value is always ISO.
    for (name, label, value) in [("from", ctx.t("from"), from), ("to", ctx.t("to"), to)] {
        let _ = write!(html.0, "<label>");
        html.text(&label);
        let _ = write!(
            html.0,
            r#" <input type="text" name="{name}" inputmode="numeric" pattern="[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}" maxlength="10" size="10" autocomplete="off" aria-describedby="date-hint" placeholder=""#
        );
        html.text(&ctx.t("date-hint")).raw(r#"" value=""#).text(value).raw(r#""></label>"#);
    }
    html.raw(r#"<span id="date-hint" class="hint">"#).text(&ctx.t("date-hint")).raw("</span>");
    if ctx.is_admin() {
        html.raw("<label>")
            .text(&ctx.t("tenant"))
            .raw(r#" <input name="tenant" value=""#)
            .text(f.tenant.as_deref().unwrap_or(""))
            .raw(r#""></label>"#);
    }
    html.raw("<label>")
        .text(&ctx.t("provider"))
        .raw(r#" <input name="provider" value=""#)
        .text(f.provider.as_deref().unwrap_or(""))
        .raw(r#""></label>"#);
    html.raw("<label>")
        .text(&ctx.t("model"))
        .raw(r#" <input name="model" value=""#)
        .text(f.model.as_deref().unwrap_or(""))
        .raw(r#""></label>"#);
    html.raw("<label>")
        .text(&ctx.t("status"))
        .raw(r#" <select name="status"><option value="">"#)
        .text(&ctx.t("status-any"))
        .raw("</option>");
    for st in usage::RecordStatus::ALL {
        let sel = if f.status.as_deref() == Some(st.as_str()) { " selected" } else { "" };
        let _ = write!(html.0, r#"<option value="{0}"{sel}>{0}</option>"#, st.as_str());
    }
    html.raw("</select></label>");
}

async fn usage_page(state: &AppState, ctx: &Ctx, query: &[(String, String)]) -> Result<Response, Error> {
    let (f, from, to) = explorer_filter(ctx, query)?;
    let rows = usage::query(state, &ctx.principal, f.clone()).await?;
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("nav-usage")).raw("</h1>");
    html.raw(r#"<form method="get" class="filters">"#);
    filter_inputs(ctx, &mut html, &f, &from, &to);
    html.raw("<fieldset><legend>").text(&ctx.t("group-by")).raw("</legend>");
    let mut dims = vec![(GroupBy::Provider, "provider"), (GroupBy::Model, "model"), (GroupBy::Day, "day")];
    if ctx.is_admin() {
        dims.insert(0, (GroupBy::Tenant, "tenant"));
    }
    for (g, id) in &dims {
        let checked = if f.group_by.contains(g) { " checked" } else { "" };
        let _ = write!(html.0, r#"<label><input type="checkbox" name="g" value="{id}"{checked}> "#);
        html.text(&ctx.t(id)).raw("</label>");
    }
    html.raw(r#"</fieldset><button type="submit">"#).text(&ctx.t("apply")).raw("</button></form>");
    let raw_query: String = query.iter().map(|(k, v)| format!("{}={}&", enc(k), enc(v))).collect();
    html.raw(r#"<p><a class="button" href="/dashboard/usage.csv?"#)
        .text(raw_query.trim_end_matches('&'))
        .raw(r#"" download>"#)
        .text(&ctx.t("download-csv"))
        .raw("</a></p>");
    let mut head = Vec::new();
    for (g, id) in &dims {
        if f.group_by.contains(g) {
            head.push(ctx.t(id));
        }
    }
    let n_dims = head.len();
    head.extend([
        ctx.t("requests"),
        ctx.t("tokens-prompt"),
        ctx.t("tokens-completion"),
        ctx.t("tokens-cached"),
        ctx.t("tokens-cache-write"),
        ctx.t("spend"),
    ]);
    let body: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            for (g, _) in &dims {
                if f.group_by.contains(g) {
                    let v = match g {
                        GroupBy::Tenant => &r.tenant,
                        GroupBy::Provider => &r.provider,
                        GroupBy::Model => &r.model,
                        GroupBy::Day => &r.day,
                    };
                    cells.push((v.clone().unwrap_or_default(), false));
                }
            }
            cells.extend(counters(ctx, r));
            cells
        })
        .collect();
    let t = sum(&rows);
    let mut foot = vec![(ctx.t("total"), false)];
    foot.extend((1..n_dims).map(|_| (String::new(), false)));
    if n_dims == 0 {
        foot.clear();
    }
    foot.extend(counters(ctx, &t));
    html.raw("<section class=\"card\">");
    if rows.is_empty() {
        html.raw("<p>").text(&ctx.t("no-data")).raw("</p>");
    } else {
        html.table(&ctx.t("nav-usage"), &head, &body, (n_dims > 0).then_some(foot));
    }
    html.raw("</section>");
    Ok(page(ctx, "nav-usage", html.0, false))
}

fn counters(ctx: &Ctx, r: &UsageRow) -> Vec<(String, bool)> {
    vec![
        (ctx.num(r.requests), true),
        (ctx.num(r.prompt_tokens), true),
        (ctx.num(r.completion_tokens), true),
        (ctx.num(r.cached_tokens), true),
        (ctx.num(r.cache_write_tokens), true),
        (ctx.money(r.cost_nano_usd), true),
    ]
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn usage_csv(state: &AppState, ctx: &Ctx, query: &[(String, String)]) -> Result<Response, Error> {
    let (f, _, _) = explorer_filter(ctx, query)?;
    let rows = usage::query(state, &ctx.principal, f).await?;
    let mut resp = respond(StatusCode::OK, "text/csv; charset=utf-8", usage::to_csv(&rows));
    resp.headers_mut()
        .insert(http::header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"usage.csv\""));
    Ok(resp)
}

// ---------------------------------------------------------------- requests

const PAGE_SIZE: u32 = 50;

async fn requests_page(state: &AppState, ctx: &Ctx, query: &[(String, String)]) -> Result<Response, Error> {
    let (mut f, from, to) = explorer_filter(ctx, query)?;
    f.group_by.clear();
    let before = q(query, "before").and_then(Cursor::decode);
    let rows = usage::records(state, &ctx.principal, f.clone(), before.as_ref(), PAGE_SIZE).await?;
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("nav-requests")).raw("</h1>");
    html.raw(r#"<form method="get" class="filters">"#);
    filter_inputs(ctx, &mut html, &f, &from, &to);
    html.raw(r#"<button type="submit">"#).text(&ctx.t("apply")).raw("</button></form>");
    let mut head = vec![ctx.t("time")];
    if ctx.is_admin() {
        head.push(ctx.t("tenant"));
    }
    head.extend([
        ctx.t("provider"),
        ctx.t("model"),
        ctx.t("status"),
        ctx.t("tokens-prompt"),
        ctx.t("tokens-completion"),
        ctx.t("latency"),
        ctx.t("cost"),
        ctx.t("record-id"),
    ]);
    let body: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![(format::datetime(ctx.lang(), r.ts_unix_ms, ctx.prefs.tz_min), false)];
            if ctx.is_admin() {
                c.push((r.tenant.clone(), false));
            }
            c.extend([
                (r.provider.clone(), false),
                (r.upstream_model.clone(), false),
                (format!("{} ({})", r.status, r.http_status), false),
                (ctx.num(r.prompt_tokens), true),
                (ctx.num(r.completion_tokens), true),
                (ctx.ta("ms", &[("n", ctx.num(r.latency_ms))]), true),
                (ctx.money(r.cost_nano_usd), true),
                (r.record_id.clone(), false),
            ]);
            c
        })
        .collect();
    html.raw("<section class=\"card records\">");
    if rows.is_empty() {
        html.raw("<p>").text(&ctx.t("no-records")).raw("</p>");
    } else {
        html.table(&ctx.t("nav-requests"), &head, &body, None);
    }
    html.raw("</section><nav class=\"pager\">");
    let keep: String =
        query.iter().filter(|(k, _)| k != "before").map(|(k, v)| format!("{}={}&", enc(k), enc(v))).collect();
    if before.is_some() {
        html.raw(r#"<a href="/dashboard/requests?"#)
            .text(keep.trim_end_matches('&'))
            .raw(r#"">"#)
            .text(&ctx.t("newest"))
            .raw("</a> ");
    }
    if rows.len() == PAGE_SIZE as usize {
        if let Some(last) = rows.last() {
            let c = Cursor { ts_unix_ms: last.ts_unix_ms, record_id: last.record_id.clone() };
            html.raw(r#"<a rel="next" href="/dashboard/requests?"#)
                .text(&format!("{keep}before={}", enc(&c.encode())))
                .raw(r#"">"#)
                .text(&ctx.t("older"))
                .raw("</a>");
        }
    }
    html.raw("</nav>");
    Ok(page(ctx, "nav-requests", html.0, true))
}

// ---------------------------------------------------------------- tenants and keys

fn limit_text(ctx: &Ctx, v: Option<u64>) -> String {
    v.map_or_else(|| ctx.t("unlimited"), |v| ctx.num(v))
}

fn budget_text(ctx: &Ctx, micro: Option<i64>) -> String {
    micro.map_or_else(|| ctx.t("unlimited"), |m| ctx.money(m.saturating_mul(1000)))
}

async fn tenants_page(state: &AppState, ctx: &Ctx) -> Result<Response, Error> {
    if !ctx.is_admin() {
        return Ok(redirect("/dashboard/keys"));
    }
    let list = tenants::list_tenants(state, &ctx.principal).await?;
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("tenants")).raw("</h1>");
    html.raw(r#"<section class="card"><h2>"#)
        .text(&ctx.t("new-tenant"))
        .raw(r#"</h2><form method="post" action="/dashboard/tenants" class="filters">"#)
        .csrf(ctx);
    html.raw("<label>")
        .text(&ctx.t("tenant-id"))
        .raw(r#" <input name="id" required maxlength="128" pattern="[A-Za-z0-9][A-Za-z0-9._\-]*"></label>"#);
    html.raw("<label>")
        .text(&ctx.t("monthly-budget"))
        .raw(r#" <input name="monthly_budget_usd" inputmode="decimal"></label>"#);
    html.raw(r#"<button type="submit">"#).text(&ctx.t("create")).raw("</button></form></section>");
    html.raw(r#"<section class="card">"#).scroll_table(&ctx.t("tenants")).raw("<thead><tr>");
    for h in [ctx.t("tenant"), ctx.t("source"), ctx.t("status"), ctx.t("rpm"), ctx.t("tpm"), ctx.t("monthly-budget")] {
        html.raw(r#"<th scope="col">"#).text(&h).raw("</th>");
    }
    html.raw("</tr></thead><tbody>");
    for t in &list {
        html.raw("<tr><td>");
        if t.source == TenantSource::Stored {
            html.raw(r#"<a href="/dashboard/tenants/"#).text(&enc(&t.id)).raw(r#"">"#).text(&t.id).raw("</a>");
        } else {
            html.text(&t.id);
        }
        let source = if t.source == TenantSource::Stored { ctx.t("source-stored") } else { ctx.t("source-config") };
        html.raw("</td><td>").text(&source).raw("</td><td>").text(&ctx.t(if t.disabled {
            "disabled"
        } else {
            "active"
        }));
        html.raw(r#"</td><td class="num">"#)
            .text(&limit_text(ctx, t.limits.rpm))
            .raw(r#"</td><td class="num">"#)
            .text(&limit_text(ctx, t.limits.tpm));
        html.raw(r#"</td><td class="num">"#)
            .text(&budget_text(ctx, t.limits.monthly_budget_micro_usd))
            .raw("</td></tr>");
    }
    html.raw("</tbody></table></div></section>");
    Ok(page(ctx, "nav-tenants", html.0, false))
}

fn patch_from(form: &[(String, String)]) -> Result<LimitsPatch, Error> {
    let num = |k: &'static str| -> Result<Option<Option<u64>>, Error> {
        match form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim()) {
            None => Ok(None),
            Some("") => Ok(Some(None)),
            Some(v) => v
                .parse()
                .map(|v| Some(Some(v)))
                .map_err(|_| Error::bad_request(format!("`{k}` must be a whole number."), Some(k))),
        }
    };
    Ok(LimitsPatch {
        rpm: num("rpm")?,
        tpm: num("tpm")?,
        max_concurrent: num("max_concurrent")?,
        monthly_budget_usd: form
            .iter()
            .find(|(n, _)| n == "monthly_budget_usd")
            .map(|(_, v)| Some(v.trim().to_owned()).filter(|v| !v.is_empty())),
    })
}

async fn create_tenant(state: &AppState, ctx: &Ctx, form: &[(String, String)]) -> Result<Response, Error> {
    let change = TenantChange { limits: patch_from(form)?, disabled: None };
    let t = tenants::create_tenant(state, &ctx.principal, q(form, "id").unwrap_or(""), &change).await?;
    Ok(redirect(&format!("/dashboard/tenants/{}", enc(&t.id))))
}

async fn update_tenant(state: &AppState, ctx: &Ctx, id: &str, form: &[(String, String)]) -> Result<Response, Error> {
    let id = decode(id);
    let disabled = q(form, "disabled").map(|v| v == "true");
    let change = TenantChange { limits: patch_from(form)?, disabled };
    tenants::update_tenant(state, &ctx.principal, &id, &change).await?;
    Ok(redirect(&format!("/dashboard/tenants/{}", enc(&id))))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn create_key(state: &AppState, ctx: &Ctx, id: &str, form: &[(String, String)]) -> Result<Response, Error> {
    let id = decode(id);
    let request = NewKeyRequest { name: q(form, "name").map(str::to_owned), limits: LimitsPatch::default() };
    let issued = tenants::create_key(state, &ctx.principal, &id, &request).await?;
    tenant_page(state, ctx, &id, Some(&issued.secret)).await
}

async fn revoke_key(state: &AppState, ctx: &Ctx, key_id: &str, form: &[(String, String)]) -> Result<Response, Error> {
    let row = tenants::revoke_key(state, &ctx.principal, &decode(key_id)).await?;
    let back = if ctx.is_admin() {
        format!("/dashboard/tenants/{}", enc(&row.tenant_id))
    } else {
        "/dashboard/keys".to_owned()
    };
    let _ = form;
    Ok(redirect(&back))
}

async fn tenant_page(state: &AppState, ctx: &Ctx, id: &str, new_secret: Option<&str>) -> Result<Response, Error> {
    let id = decode(id);
    let mut html = Html::default();
    html.raw("<h1>").text(&id).raw("</h1>");
    let tenant = match tenants::get_tenant(state, &ctx.principal, &id).await {
        Ok(t) => t,
        Err(Error::Conflict(_)) => {
            html.raw(r#"<p class="notice">"#).text(&ctx.t("config-tenant-keys")).raw("</p>");
            return Ok(page(ctx, "nav-keys", html.0, false));
        }
        Err(e) => return Err(e),
    };
    let enc_id = enc(&tenant.id);
    if ctx.is_admin() {
        html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("limits")).raw("</h2>");
        let _ = write!(html.0, r#"<form method="post" action="/dashboard/tenants/{enc_id}" class="filters">"#);
        html.csrf(ctx);
        for (name, label, value) in [
            ("rpm", "rpm", tenant.limits.rpm.map(|v| v.to_string())),
            ("tpm", "tpm", tenant.limits.tpm.map(|v| v.to_string())),
            ("max_concurrent", "max-concurrent", tenant.limits.max_concurrent.map(|v| v.to_string())),
            (
                "monthly_budget_usd",
                "monthly-budget",
                tenant.limits.monthly_budget_micro_usd.map(crate::domain::money::format_usd_micro),
            ),
        ] {
            let _ = write!(
                html.0,
                r#"<label>{} <input name="{name}" inputmode="decimal" value="{}"></label>"#,
                escape(&ctx.t(label)),
                escape(value.as_deref().unwrap_or(""))
            );
        }
        html.raw(r#"<button type="submit">"#).text(&ctx.t("save")).raw("</button></form>");
        let _ = write!(html.0, r#"<form method="post" action="/dashboard/tenants/{enc_id}">"#);
        html.csrf(ctx);
        let (value, label) = if tenant.disabled { ("false", "enable") } else { ("true", "disable") };
        let _ = write!(
            html.0,
            r#"<input type="hidden" name="disabled" value="{value}"><button type="submit" class="danger">{}</button></form></section>"#,
            escape(&ctx.t(label))
        );
    }
    html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("keys")).raw("</h2>");
    if let Some(secret) = new_secret {
        html.raw(r#"<div class="notice ok" role="status"><p>"#)
            .text(&ctx.t("key-created"))
            .raw(r#"</p><p><code id="new-key">"#)
            .text(secret)
            .raw(r#"</code> <button type="button" class="copy" data-copy="new-key">"#)
            .text(&ctx.t("copy"))
            .raw("</button></p></div>");
    }
    let _ = write!(html.0, r#"<form method="post" action="/dashboard/tenants/{enc_id}/keys" class="filters">"#);
    html.csrf(ctx);
    html.raw("<label>")
        .text(&ctx.t("key-name"))
        .raw(r#" <input name="name" maxlength="100"></label><button type="submit">"#)
        .text(&ctx.t("new-key"))
        .raw("</button></form>");
    let keys = tenants::list_keys(state, &ctx.principal, &tenant.id).await?;
    if keys.is_empty() {
        html.raw("<p>").text(&ctx.t("no-keys")).raw("</p>");
    } else {
        html.scroll_table(&ctx.t("keys")).raw("<thead><tr>");
        for h in [ctx.t("key-name"), ctx.t("prefix"), ctx.t("created"), ctx.t("status")] {
            html.raw(r#"<th scope="col">"#).text(&h).raw("</th>");
        }
        // The buttons' column: named for screen readers (axe-core `empty-table-header`), blank on screen.
        html.raw(r#"<th scope="col"><span class="sr-only">"#).text(&ctx.t("revoke")).raw("</span></th>");
        html.raw("</tr></thead><tbody>");
        for k in &keys {
            html.raw("<tr><td>")
                .text(k.name.as_deref().unwrap_or(&k.id))
                .raw("</td><td><code>")
                .text(&k.prefix)
                .raw("…</code></td><td>");
            html.text(&format::datetime(ctx.lang(), k.created_at_unix_ms, ctx.prefs.tz_min)).raw("</td><td>");
            match k.revoked_at_unix_ms {
                Some(at) => {
                    html.text(&format!("{} {}", ctx.t("revoked"), format::datetime(ctx.lang(), at, ctx.prefs.tz_min)))
                        .raw("</td><td></td>");
                }
                None => {
                    html.text(&ctx.t("active")).raw("</td><td>");
                    let _ = write!(html.0, r#"<form method="post" action="/dashboard/keys/{}/revoke">"#, enc(&k.id));
                    html.csrf(ctx);
                    let _ = write!(
                        html.0,
                        r#"<button type="submit" class="danger" aria-label="{} {}">{}</button></form></td>"#,
                        escape(&ctx.t("revoke")),
                        escape(k.name.as_deref().unwrap_or(&k.id)),
                        escape(&ctx.t("revoke"))
                    );
                }
            }
            html.raw("</tr>");
        }
        html.raw("</tbody></table></div>");
    }
    html.raw("</section>");
    Ok(page(ctx, if ctx.is_admin() { "nav-tenants" } else { "nav-keys" }, html.0, false))
}

// ---------------------------------------------------------------- models

async fn models_page(state: &AppState, ctx: &Ctx) -> Result<Response, Error> {
    let catalog = services::models::catalog_rows(state, &ctx.principal).await;
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("nav-models")).raw("</h1>");
    let head = [
        ctx.t("model"),
        ctx.t("provider"),
        ctx.t("price-input"),
        ctx.t("price-output"),
        ctx.t("price-cached"),
        ctx.t("price-cache-write"),
        ctx.t("health"),
    ];
    let per_m = |micro: i64| ctx.money(micro.saturating_mul(1000));
    let rows: Vec<Vec<(String, bool)>> = catalog
        .iter()
        .map(|m| {
            let mut r = vec![(m.id.clone(), false), (m.provider.clone().unwrap_or_else(|| ctx.t("alias")), false)];
            match &m.price {
                Some(p) => r.extend([
                    (per_m(p.input_micro_per_m), true),
                    (per_m(p.output_micro_per_m), true),
                    (per_m(p.cached_input_micro_per_m), true),
                    (per_m(p.cache_write_micro_per_m), true),
                ]),
                None => r.extend((0..4).map(|_| (ctx.t("unpriced"), true))),
            }
            let health = match m.breaker {
                BreakerState::Closed => "breaker-closed",
                BreakerState::Open => "breaker-open",
                BreakerState::HalfOpen => "breaker-half-open",
            };
            r.push((ctx.t(health), false));
            r
        })
        .collect();
    html.raw("<section class=\"card\">");
    html.table(&ctx.t("models"), &head, &rows, None);
    html.raw("</section>");
    Ok(page(ctx, "nav-models", html.0, false))
}

// ---------------------------------------------------------------- playground

async fn playground_page(state: &AppState, ctx: &Ctx) -> Result<Response, Error> {
    let models = services::models::list(state, &ctx.principal).await.into_iter().map(|m| m.id).collect();
    let p = PlaygroundPage { c: ctx, models, admin: ctx.is_admin() };
    let content = p.render().map_err(|e| Error::Internal(e.to_string().into()))?;
    Ok(page(ctx, "nav-playground", content, false))
}

#[derive(serde::Deserialize)]
struct PlaygroundRequest {
    model: String,
    prompt: String,
}

/// Streams one chat completion through the chat service (billed to the session's tenant). The
/// price of the deployment goes in `x-dashboard-price` (micro-USD per 1M input, output, cached,
/// cache-write tokens) so the page computes the call's cost with the ledger's own formula.
async fn playground_chat(state: &Arc<AppState>, ctx: &Ctx, body: String) -> Result<Response, Error> {
    let req: PlaygroundRequest =
        serde_json::from_str(&body).map_err(|e| Error::bad_request(format!("Bad playground request: {e}"), None))?;
    let chat_body = serde_json::json!({
        "model": req.model,
        "messages": [{"role": "user", "content": req.prompt}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let bytes = Bytes::from(serde_json::to_vec(&chat_body).map_err(|e| Error::Internal(e.to_string().into()))?);
    let http_req = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))
        .map_err(|e| Error::Internal(e.to_string().into()))?;
    let request_id = format!("dash_{}", &sessions::random_token().unwrap_or_default()[..24]);
    let reply =
        services::chat::complete(state, &ctx.principal, &request_id, services::chat::Dialect::OpenAi, http_req).await?;
    let provider =
        reply.headers().get(services::chat::X_AGGREGATOR_PROVIDER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let model =
        reply.headers().get(services::chat::X_AGGREGATOR_MODEL).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let price = match (provider, model) {
        (Some(p), Some(m)) => services::models::price(state, &p, &m),
        _ => None,
    };
    let (mut parts, body) = reply.into_parts();
    let body: Body = match body {
        services::chat::ReplyBody::Full(b) => Full::new(b).boxed_unsync(),
        services::chat::ReplyBody::Stream(s) => s.boxed_unsync(),
    };
    if let Some(p) = price {
        let v = format!(
            "{},{},{},{}",
            p.input_micro_per_m, p.output_micro_per_m, p.cached_input_micro_per_m, p.cache_write_micro_per_m
        );
        if let Ok(v) = HeaderValue::try_from(v) {
            parts.headers.insert("x-dashboard-price", v);
        }
    }
    Ok(http::Response::from_parts(parts, body))
}

// ---------------------------------------------------------------- settings

fn settings_page(ctx: &Ctx, saved: bool) -> Response {
    let p = SettingsPage {
        c: ctx,
        langs: vec![("en", "English", ctx.lang() == Lang::En), ("ru", "Русский", ctx.lang() == Lang::Ru)],
        themes: [Theme::System, Theme::Light, Theme::Dark]
            .into_iter()
            .map(|t| (t.as_str(), ctx.t(&format!("theme-{}", t.as_str())), ctx.prefs.theme == t))
            .collect(),
        zones: format::OFFSETS_MIN.iter().map(|m| (*m, format::offset_label(*m), *m == ctx.prefs.tz_min)).collect(),
        saved,
    };
    match p.render() {
        Ok(content) => page(ctx, "nav-settings", content, false),
        Err(e) => error_page(ctx, &Error::Internal(e.to_string().into())),
    }
}

fn save_settings(ctx: &Ctx, form: &[(String, String)]) -> Response {
    const YEAR: u64 = 365 * 24 * 3600;
    let mut resp = redirect("/dashboard/settings?saved=1");
    let secure = ctx.prefs.secure;
    if let Some(l) = q(form, "lang").and_then(Lang::parse) {
        resp = with_cookie(resp, &set_cookie(super::LANG_COOKIE, l.tag(), false, Some(YEAR), secure));
    }
    if let Some(t) = q(form, "theme").and_then(Theme::parse) {
        resp = with_cookie(resp, &set_cookie(super::THEME_COOKIE, t.as_str(), false, Some(YEAR), secure));
    }
    if let Some(tz) = q(form, "tz").and_then(|v| v.parse::<i32>().ok()).filter(|m| format::OFFSETS_MIN.contains(m)) {
        resp = with_cookie(resp, &set_cookie(super::TZ_COOKIE, &tz.to_string(), false, Some(YEAR), secure));
    }
    resp
}
