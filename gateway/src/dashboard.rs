//! The web dashboard at `/dashboard`: server-rendered HTML (askama templates compiled into the
//! binary), Fluent strings in English and Russian, ICU4X numbers, inline SVG charts and a few KB of
//! optional JavaScript, all embedded. A front door like `http`: it parses requests, calls the
//! services with the session's `Principal` and renders the result; it never checks permissions
//! itself, and it imports only services and domain (never `http`: the two doors stay independent).
//!
//! Security: the session cookie is `HttpOnly; SameSite=Strict` (and `Secure` off loopback or behind
//! TLS); every form carries a CSRF token tied to the session (the sign-in form a double-submit token);
//! responses carry a strict `Content-Security-Policy` with no inline script or style; sign-in failures
//! are limited per client address (`services::sessions`).

pub mod chart;
pub mod format;
pub mod i18n;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};

use crate::services::AppState;
use i18n::Lang;

/// The response body type every front door shares (the same type as `http::body::Body`).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Path prefix of every dashboard page.
pub const PREFIX: &str = "/dashboard";
/// The session cookie.
pub const SESSION_COOKIE: &str = "agg_session";
/// The sign-in form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "agg_login";
const LANG_COOKIE: &str = "agg_lang";
const THEME_COOKIE: &str = "agg_theme";
const TZ_COOKIE: &str = "agg_tz";
/// Largest form or playground body.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The policy on every dashboard response: scripts, styles and fetches from this origin only, no
/// inline script or style, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("dashboard/assets/app.css");
const APP_JS: &str = include_str!("dashboard/assets/app.js");
/// The page icon: linked from every page, so browsers do not ask for `/favicon.ico` (which, outside the
/// dashboard, is an unauthenticated API request answered 401 and logged as an error in the console).
const ICON_SVG: &str = include_str!("dashboard/assets/icon.svg");

/// Whether a path belongs to the dashboard.
pub fn is_dashboard_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/dashboard/")
}

/// The theme preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    System,
    Light,
    Dark,
}

impl Theme {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Theme::System),
            "light" => Some(Theme::Light),
            "dark" => Some(Theme::Dark),
            _ => None,
        }
    }

    /// `system`, `light`, `dark`.
    pub fn as_str(self) -> &'static str {
        match self {
            Theme::System => "system",
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }
}

/// What a request says about its caller's preferences and session.
#[derive(Debug, Clone)]
pub struct Prefs {
    pub lang: Lang,
    pub theme: Theme,
    /// Minutes east of UTC, one of [`format::OFFSETS_MIN`].
    pub tz_min: i32,
    /// Whether cookies get `Secure`.
    pub secure: bool,
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Decoded `application/x-www-form-urlencoded` pairs (also query strings).
pub fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

fn prefs(state: &AppState, headers: &HeaderMap, query: &[(String, String)]) -> Prefs {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let lang = q("lang")
        .and_then(Lang::parse)
        .or_else(|| cookie(headers, LANG_COOKIE).and_then(Lang::parse))
        .unwrap_or_else(|| {
            Lang::from_accept_language(
                headers.get(http::header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or(""),
            )
        });
    let theme = cookie(headers, THEME_COOKIE).and_then(Theme::parse).unwrap_or(Theme::System);
    let tz_min = cookie(headers, TZ_COOKIE)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|m| format::OFFSETS_MIN.contains(m))
        .unwrap_or(0);
    let forwarded_https =
        headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = forwarded_https || !state.config.listen.ip().is_loopback();
    Prefs { lang, theme, tz_min, secure }
}

/// A `Set-Cookie` value scoped to the dashboard.
pub fn set_cookie(name: &str, value: &str, http_only: bool, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path={PREFIX}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// Security headers of every dashboard response.
fn harden(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A response with `body` and `content_type`.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A `303 See Other` to `location` (after a form post).
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// Adds a `Set-Cookie` header.
pub fn with_cookie(mut resp: Response<Body>, cookie: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::try_from(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// Reads a bounded request body as text.
async fn read_body<B>(body: B) -> Option<String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = Limited::new(body, MAX_FORM_BYTES).collect().await.ok()?.to_bytes();
    String::from_utf8(bytes.to_vec()).ok()
}

/// Serves one dashboard request (`path` starts with `/dashboard`). Authentication is the session's:
/// the sign-in page and the assets are the only pages served without one.
pub async fn handle<B>(state: &Arc<AppState>, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let prefs = prefs(state, &parts.headers, &query);
    let peer = parts.extensions.get::<SocketAddr>().map(SocketAddr::ip);
    let mut resp = match (parts.method.as_str(), path.as_str()) {
        ("GET", "/dashboard/assets/app.css") => asset(APP_CSS, "text/css; charset=utf-8"),
        ("GET", "/dashboard/assets/app.js") => asset(APP_JS, "text/javascript; charset=utf-8"),
        ("GET", "/dashboard/assets/icon.svg") => asset(ICON_SVG, "image/svg+xml"),
        ("GET", "/dashboard/login") => pages::login_page(&prefs, None, StatusCode::OK),
        ("POST", "/dashboard/login") => {
            let form = read_body(body).await.map(|b| form_pairs(&b)).unwrap_or_default();
            pages::login_post(state, &prefs, &parts.headers, &form, peer).await
        }
        _ => {
            let session_id = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned);
            let resumed = match &session_id {
                Some(id) => crate::services::sessions::resume(state, id).await,
                None => None,
            };
            match (resumed, session_id) {
                (Some(session), Some(id)) => {
                    let ctx = pages::Ctx::new(prefs, session, &path);
                    let is_post = parts.method == http::Method::POST;
                    let body = if is_post { read_body(body).await } else { None };
                    pages::route(state, ctx, &id, parts.method.as_str(), &path, &query, &parts.headers, body).await
                }
                _ if parts.method == http::Method::GET => redirect("/dashboard/login"),
                _ => pages::login_page(&prefs, Some("csrf-failed"), StatusCode::FORBIDDEN),
            }
        }
    };
    harden(&mut resp);
    resp
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = respond(StatusCode::OK, content_type, Bytes::from_static(text.as_bytes()));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_forms() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; agg_session=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(form_pairs("a=x+y&b=%3Cs%3E"), vec![("a".into(), "x y".into()), ("b".into(), "<s>".into())]);
        let c = set_cookie(SESSION_COOKIE, "v", true, None, true);
        assert_eq!(c, "agg_session=v; Path=/dashboard; SameSite=Strict; HttpOnly; Secure");
        assert!(!CSP.contains("unsafe-inline"));
    }
}
