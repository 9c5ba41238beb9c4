//! `GET /v1/usage` (a tenant's own totals) and `GET /admin/usage` (everyone's, with filters), JSON or CSV.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use serde::Serialize;

use super::body::{self, Body};
use crate::domain::principal::Principal;
use crate::domain::time::parse_time;
use crate::services::usage::{self, to_csv, GroupBy, LedgerError, UsageFilter, UsageRow};
use crate::services::{AppState, Error};

#[derive(Serialize)]
struct UsageResponse<'a> {
    object: &'static str,
    data: &'a [UsageRow],
}

/// Which operation a path names: the caller's own usage, or everyone's (the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `GET /v1/usage`: what the principal may see (its own, for a tenant).
    Visible,
    /// `GET /admin/usage`: every tenant's (admin only).
    All,
}

/// Answers a usage request.
pub async fn handle(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
    which: Which,
) -> Result<Response<Body>, Error> {
    let (filter, csv) = parse_query(query.unwrap_or(""))?;
    let rows = match which {
        Which::Visible => usage::query(state, principal, filter).await?,
        Which::All => usage::query_all(state, principal, filter).await?,
    };
    let (content_type, bytes) = if csv {
        ("text/csv; charset=utf-8", to_csv(&rows).into_bytes())
    } else {
        let json = serde_json::to_vec(&UsageResponse { object: "list", data: &rows })
            .map_err(|e| Error::Internal(e.to_string().into()))?;
        ("application/json", json)
    };
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// `DELETE /admin/usage?before=<time>`: prunes older records (admin only, see
/// [`usage::prune`]); answers `{"object":"usage.prune","before":…,"deleted":n}`.
///
/// # Errors
/// 400 without a valid `before` or with another parameter, otherwise as [`usage::prune`].
pub async fn prune(state: &AppState, principal: &Principal, query: Option<&str>) -> Result<Response<Body>, Error> {
    let mut before = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        match k {
            "before" => before = Some(parse_time(&v).map_err(|e| Error::bad_request(e, Some("before")))?),
            _ => {
                return Err(Error::bad_request(
                    format!("Unknown query parameter `{}`.", k.chars().take(64).collect::<String>()),
                    None,
                ))
            }
        }
    }
    let before = before
        .ok_or_else(|| Error::bad_request("`before` is required (unix ms, YYYY-MM-DD or RFC 3339).", Some("before")))?;
    let deleted = usage::prune(state, principal, before).await?;
    let json = serde_json::to_vec(&serde_json::json!({"object": "usage.prune", "before": before, "deleted": deleted}))
        .map_err(|e| Error::Internal(e.to_string().into()))?;
    let mut resp = Response::new(body::full(Bytes::from(json)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Parses `from`, `to`, `tenant`, `provider`, `model`, `group_by` and `format` (json|csv).
fn parse_query(raw: &str) -> Result<(UsageFilter, bool), Error> {
    let mut q = UsageFilter::default();
    let mut csv = false;
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        let bad = |e: LedgerError, param: &'static str| Error::bad_request(e.to_string(), Some(param));
        match k {
            "from" => q.from_unix_ms = Some(parse_time(&v).map_err(|e| Error::bad_request(e, Some("from")))?),
            "to" => q.to_unix_ms = Some(parse_time(&v).map_err(|e| Error::bad_request(e, Some("to")))?),
            "tenant" => q.tenant = Some(v),
            "provider" => q.provider = Some(v),
            "model" => q.model = Some(v),
            "status" => q.status = Some(v),
            "group_by" => q.group_by = GroupBy::parse_list(&v).map_err(|e| bad(e, "group_by"))?,
            "format" => match v.as_str() {
                "csv" => csv = true,
                "json" | "" => csv = false,
                _ => return Err(Error::bad_request("`format` must be json or csv.", Some("format"))),
            },
            _ => return Err(Error::bad_request(format!("Unknown query parameter `{k}`."), None)),
        }
    }
    Ok((q, csv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::usage::csv_field;

    #[test]
    fn query_parsing_and_errors() {
        let (q, csv) =
            parse_query("from=2026-01-01&to=1767225600000&tenant=acme&group_by=tenant,model&format=csv").unwrap();
        assert!(csv);
        assert_eq!(q.from_unix_ms, Some(1_767_225_600_000));
        assert_eq!(q.to_unix_ms, Some(1_767_225_600_000));
        assert_eq!(q.tenant.as_deref(), Some("acme"));
        assert_eq!(q.group_by, vec![GroupBy::Tenant, GroupBy::Model]);
        assert!(parse_query("group_by=colour").is_err());
        assert!(parse_query("from=yesterday").is_err());
        assert!(parse_query("format=xml").is_err());
        assert!(parse_query("sneaky=1").is_err());
    }

    #[test]
    fn csv_quotes_awkward_values() {
        let row = UsageRow {
            tenant: Some("a,b".into()),
            provider: None,
            model: Some("m\"x".into()),
            day: None,
            requests: 2,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 1,
            cache_write_tokens: 0,
            cost_nano_usd: 1500,
            cost_usd: "0.0000015".into(),
        };
        let csv = to_csv(&[row]);
        assert_eq!(csv.lines().nth(1).unwrap(), "\"a,b\",,\"m\"\"x\",,2,10,5,1,0,0.0000015");
    }

    /// Issue #11, item 10: cells a spreadsheet would evaluate as formulas are neutralised with `'`.
    #[test]
    fn csv_neutralises_formula_cells() {
        let cell = |v: &str| {
            let mut out = String::new();
            csv_field(&mut out, v);
            out
        };
        assert_eq!(cell("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-2+3"), "\"'-2+3\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx"), "\"'\tx\"");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        // Ordinary names, and a dash inside a name, are left alone.
        assert_eq!(cell("gpt-4o"), "gpt-4o");
        assert_eq!(cell(""), "");
    }
}
