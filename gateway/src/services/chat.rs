//! Chat execution, shared by every front door that makes a model request: admit → route → attempt
//! (with retries and fallbacks) → encode → upstream → translate → meter.
//!
//! [`complete`] takes the caller's [`Principal`] (only tenants make model requests), the request id, the
//! client's [`Dialect`] and its request (headers and a body still to be read), and returns the reply as
//! plain parts: status, headers and either complete bytes or a translating stream, in that dialect.
//! OpenAI chat completions and Anthropic Messages share everything here (routing, admission, retries,
//! fallbacks, breakers, metering); only reading the request and writing the reply depend on the
//! dialect, through `translators` (hub and spoke: every pair goes through the OpenAI hub types, or
//! is passed through when client and upstream speak the same format). The meter records every
//! outcome exactly once, including errors and cancellations; rendering errors is the front door's job.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use translators::openai::{passthrough, ChatRequest, ErrorBody};
use translators::stream::ResponseContext;
use translators::{anthropic, anthropic_ingress, completions, ollama, responses, StreamEvent, StreamTranslator};

use super::error::{Error, Side, UpstreamError};
use super::metering::{estimate_tokens, Outcome, RequestInfo, RequestMeter, Tokens};
use super::sink::DeploymentPrice;
use super::state::AppState;
use super::stream::{AnyTranslator, Output, TranslatingBody};
use crate::domain::config::{ProviderKind, RetryOn};
use crate::domain::limits::{CallerLimits, Demand, RateHeaders};
use crate::domain::pricing::Price;
use crate::domain::principal::Principal;
use crate::domain::routing;
use crate::domain::text::MAX_CLIENT_STRING;
use crate::upstream::health::breaker_key;
use crate::upstream::provider::{Upstream, ANTHROPIC_BETA};

/// Which provider served the request.
pub const X_AGGREGATOR_PROVIDER: HeaderName = HeaderName::from_static("x-aggregator-provider");
/// The model name sent upstream.
pub const X_AGGREGATOR_MODEL: HeaderName = HeaderName::from_static("x-aggregator-model");
/// Client parameters the target provider cannot honour and that were dropped.
pub const X_GATEWAY_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-gateway-dropped-params");
/// Cost of a non-streamed request in USD.
pub const X_AGGREGATOR_COST_USD: HeaderName = HeaderName::from_static("x-aggregator-cost-usd");

const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// Above this `max_tokens`, a non-streamed Anthropic request is streamed upstream and aggregated.
const ANTHROPIC_NON_STREAM_MAX_TOKENS: u64 = 16_384;
/// Upper bound on a non-streamed upstream body we are willing to buffer.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Upper bound on an upstream error body.
const MAX_ERROR_BODY: usize = 256 * 1024;

/// The wire format the client speaks: how its request is read and its reply (and errors) written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions (`POST /v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`): Claude Code and the `anthropic` SDKs.
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`): Codex, the Agents SDK. Passed through to OpenAI-kind
    /// backends (state lives there); a stateless translation for the others.
    Responses,
    /// Legacy completions (`POST /v1/completions`), translated through chat for every backend.
    Completions,
}

/// The client's request, read once in its dialect; the full parse is done lazily (only a translating
/// target needs it).
enum Inbound {
    OpenAi {
        head: passthrough::RequestHead,
        chat: Option<ChatRequest>,
    },
    Anthropic {
        head: anthropic_ingress::MessagesHead,
        decoded: Option<anthropic_ingress::DecodedRequest>,
    },
    Responses {
        head: responses::RequestHead,
        decoded: Option<Box<responses::DecodedRequest>>,
        options: responses::DecodeOptions,
    },
    Completions {
        decoded: Box<completions::DecodedCompletion>,
    },
}

impl Inbound {
    fn read(dialect: Dialect, body: &[u8], headers: &http::HeaderMap) -> Result<Self, Error> {
        Ok(match dialect {
            Dialect::OpenAi => Inbound::OpenAi { head: passthrough::parse_head(body)?, chat: None },
            Dialect::Anthropic => Inbound::Anthropic { head: anthropic_ingress::parse_head(body)?, decoded: None },
            Dialect::Responses => Inbound::Responses {
                head: responses::parse_head(body)?,
                decoded: None,
                // Codex declares its `web_search` tool on every turn (whatever the model): refusing it
                // would make Codex unusable on translated backends, so for Codex it is dropped (and
                // reported in `x-gateway-dropped-params`); other clients still get the 400.
                options: responses::DecodeOptions { drop_web_search: is_codex(headers) },
            },
            Dialect::Completions => Inbound::Completions { decoded: Box::new(completions::decode_request(body)?) },
        })
    }

    fn model(&self) -> &str {
        match self {
            Inbound::OpenAi { head, .. } => &head.model,
            Inbound::Anthropic { head, .. } => &head.model,
            Inbound::Responses { head, .. } => &head.model,
            Inbound::Completions { decoded } => &decoded.model,
        }
    }

    fn stream(&self) -> bool {
        match self {
            Inbound::OpenAi { head, .. } => head.stream,
            Inbound::Anthropic { head, .. } => head.stream,
            Inbound::Responses { head, .. } => head.stream,
            Inbound::Completions { decoded } => decoded.chat.is_stream(),
        }
    }

    /// Whether the translated reply needs the final usage: asked by an OpenAI client, always for
    /// Anthropic output (its `message_delta` carries the counts).
    fn include_usage(&self) -> bool {
        match self {
            Inbound::OpenAi { head, .. } => head.include_usage,
            Inbound::Anthropic { .. } | Inbound::Responses { .. } | Inbound::Completions { .. } => true,
        }
    }

    /// The request as hub types, parsed on first use.
    fn chat(&mut self, body: &[u8]) -> Result<&ChatRequest, Error> {
        match self {
            Inbound::OpenAi { chat, .. } => {
                if chat.is_none() {
                    *chat = Some(parse_chat_request(body)?);
                }
                chat.as_ref().ok_or_else(|| Error::Internal("request parse lost".into()))
            }
            Inbound::Anthropic { decoded, .. } => {
                if decoded.is_none() {
                    *decoded = Some(anthropic_ingress::decode_request(body)?);
                }
                decoded.as_ref().map(|d| &d.chat).ok_or_else(|| Error::Internal("request parse lost".into()))
            }
            Inbound::Responses { head, decoded, options } => {
                if let Some(param) = head.stateful_param {
                    return Err(Error::BadRequest {
                        message: format!(
                            "`{param}` needs server-side state, which only OpenAI-kind backends keep; this model is served statelessly."
                        )
                        .into(),
                        param: Some(param.into()),
                        code: Some("unsupported_parameter"),
                    });
                }
                if decoded.is_none() {
                    *decoded = Some(Box::new(responses::decode_request_with(body, options)?));
                }
                decoded.as_ref().map(|d| &d.chat).ok_or_else(|| Error::Internal("request parse lost".into()))
            }
            Inbound::Completions { decoded } => Ok(&decoded.chat),
        }
    }

    /// What admission reserves for the completion: the output-token cap the request sets (read once,
    /// from the same parse that decides what the upstream receives for OpenAI clients) and `n`.
    fn completion_demand(&self, body: &[u8]) -> (Option<u64>, Option<u64>) {
        #[derive(serde::Deserialize)]
        struct Caps {
            max_tokens: Option<u64>,
            max_output_tokens: Option<u64>,
        }
        let caps = || serde_json::from_slice::<Caps>(body).ok();
        match self {
            Inbound::OpenAi { head, .. } => (head.max_output_tokens, head.n),
            Inbound::Anthropic { .. } => (caps().and_then(|c| c.max_tokens), None),
            Inbound::Responses { .. } => (caps().and_then(|c| c.max_output_tokens), None),
            Inbound::Completions { decoded } => (decoded.chat.max_output_tokens(), decoded.chat.n),
        }
    }

    /// Anthropic features the translation dropped (for `x-gateway-dropped-params`).
    fn dropped(&self) -> &[&'static str] {
        match self {
            Inbound::Anthropic { decoded: Some(d), .. } => &d.dropped,
            // Only `web_search` tools and `web_search_call` items are ever dropped (Codex, see `read`).
            Inbound::Responses { decoded: Some(d), .. } if !d.dropped.is_empty() => &["web_search"],
            Inbound::Anthropic { decoded: None, .. }
            | Inbound::OpenAi { .. }
            | Inbound::Responses { .. }
            | Inbound::Completions { .. } => &[],
        }
    }

    fn thinking(&self) -> bool {
        match self {
            Inbound::Anthropic { decoded: Some(d), .. } => d.thinking,
            // Responses carry reasoning items whenever the backend reasons.
            Inbound::Responses { .. } => true,
            Inbound::Anthropic { decoded: None, .. } | Inbound::OpenAi { .. } | Inbound::Completions { .. } => false,
        }
    }
}

/// The body of a chat reply: complete bytes, or a stream the front door polls.
pub enum ReplyBody {
    Full(Bytes),
    Stream(TranslatingBody),
}

/// A successful chat reply: status, headers (content type, provider, cost, rate limits) and body.
pub type ChatReply = Response<ReplyBody>;

/// Runs one chat completion request for `principal`. The body is read here (bounded by
/// `max_body_bytes`), so a client that hangs up while sending it is metered as cancelled.
///
/// # Errors
/// Every failure, already metered: the front door only renders it.
pub async fn complete<B>(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    dialect: Dialect,
    req: Request<B>,
) -> Result<ChatReply, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let caller = principal.caller()?;
    let limits = caller.limits;
    let info = RequestInfo {
        request_id: request_id.to_owned(),
        tenant: caller.tenant.clone(),
        key_id: caller.key_id.clone(),
        // The batch worker takes the ledger record itself (`services::batches`).
        capture: req.extensions().get::<crate::services::metering::RecordCapture>().cloned(),
        session_id: session_id(req.headers()),
        ..RequestInfo::default()
    };
    let mut meter = RequestMeter::start(info, state.sink.clone());
    let mut rate_headers = None;
    let served = tokio::select! {
        res = serve(state, req, dialect, &mut meter, &limits, &mut rate_headers) => Some(res),
        // The shutdown grace period is over while we still wait for the upstream's answer: answer
        // 503 now rather than having the connection cut (issue 11, item 2).
        () = state.cut_streams.cancelled() => None,
    };
    let Some(served) = served else {
        // As when the client goes away: the upstream may still bill the prompt.
        meter.info.error_kind = Some(Error::ShuttingDown.label());
        let tokens = Tokens { prompt: meter.info.prompt_estimate, estimated: true, ..Tokens::default() };
        meter.finish(Outcome::Cancelled, tokens, Error::ShuttingDown.status().as_u16());
        return Err(Error::ShuttingDown);
    };
    match served {
        Ok(mut resp) => {
            if let Some(h) = rate_headers {
                h.apply(resp.headers_mut());
            }
            Ok(resp)
        }
        Err(error) => {
            record_failure(&mut meter, &error);
            Err(error)
        }
    }
}

/// The start of every metered model request: refused once shutdown began, the body read within
/// `max_body_bytes` and the body read timeout, and the prompt estimated from its size (used when the
/// upstream never reports usage).
///
/// # Errors
/// 503 while shutting down; the body errors of [`read_body`].
pub(super) async fn read_metered_request<B>(
    state: &AppState,
    req: Request<B>,
    meter: &mut RequestMeter,
) -> Result<(http::request::Parts, Bytes), Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if state.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let (parts, body) = req.into_parts();
    let body = read_body(
        body,
        parts.headers.get(CONTENT_LENGTH),
        state.config.max_body_bytes,
        state.config.server.body_read_timeout,
    )
    .await?;
    meter.info.prompt_estimate = estimate_tokens(body.len() as u64);
    Ok((parts, body))
}

/// Records a request that ended in `error` before any reply: cancelled when the client went away,
/// otherwise a client or upstream error. A request the upstream rejected may still have been billed
/// for its prompt only when it ran; we do not know that, so error records carry no tokens.
pub(super) fn record_failure(meter: &mut RequestMeter, error: &Error) {
    let outcome = match error.side() {
        _ if matches!(error, Error::ClientDisconnected) => Outcome::Cancelled,
        Side::Downstream => Outcome::ClientError,
        Side::Upstream | Side::Internal => Outcome::UpstreamError,
    };
    meter.info.error_kind = Some(error.label());
    meter.finish(outcome, Tokens::default(), error.status().as_u16());
}

async fn serve<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    dialect: Dialect,
    meter: &mut RequestMeter,
    limits: &CallerLimits,
    rate_headers: &mut Option<RateHeaders>,
) -> Result<ChatReply, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = read_metered_request(state, req, meter).await?;
    let mut inbound = Inbound::read(dialect, &body, &parts.headers)?;
    // Bounded before it is kept anywhere (ledger row, log line, metric label, echoed header).
    check_model_name(inbound.model())?;
    meter.info.requested_model = inbound.model().to_owned();
    meter.info.stream = inbound.stream();
    let route = routing::resolve(&state.config, inbound.model())?;
    // Never a silent $0: an unpriced target is refused before admission and any upstream call, unless
    // the operator configured a fallback price (issue 11, item 5).
    // The first target's price is kept for its attempt (one look-up per request on a one-target route).
    let mut first_price = None;
    if let Some(sink) = &state.sink {
        for (i, t) in route.targets.iter().enumerate() {
            let price = sink.deployment_price(&t.provider.id, t.provider.kind, &t.upstream_model);
            if price == DeploymentPrice::Unpriced {
                return Err(Error::PriceMissing { provider: t.provider.id.clone(), model: t.upstream_model.clone() });
            }
            if i == 0 {
                first_price = price.for_request();
            }
        }
    }
    // Tenant limits: one admission before any upstream attempt; the meter settles it at the end.
    let (max_output_tokens, n) = inbound.completion_demand(&body);
    *rate_headers = admit(state, meter, limits, max_output_tokens, n, &route).await?;
    let started = tokio::time::Instant::now();
    let mut excluded = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let index = match state.breakers.pick(&route.targets, &excluded) {
            Some(i) => i,
            // Every target was tried this round: start another round (with backoff) if the policy allows.
            None => match state.breakers.pick(&route.targets, &[]) {
                Some(i) => {
                    excluded.clear();
                    i
                }
                None => return Err(UpstreamError::Unavailable.into()),
            },
        };
        let target = &route.targets[index];
        let id = &target.provider.id;
        let price = match &state.sink {
            _ if index == 0 => first_price,
            Some(sink) => sink.deployment_price(id, target.provider.kind, &target.upstream_model).for_request(),
            None => None,
        };
        match try_target(state, &parts.headers, &body, &mut inbound, target, price, meter).await {
            Ok(resp) => {
                state.breakers.success_of(target);
                return Ok(resp);
            }
            Err(error) => {
                let deployment = breaker_key(target);
                if error.is_deployment_failure() {
                    state.breakers.failure(&deployment);
                } else {
                    state.breakers.release(&deployment);
                }
                let retryable = match route.retry.on {
                    RetryOn::Overload => error.is_overload(),
                    RetryOn::Retryable => error.is_retryable(),
                };
                if !retryable || attempt >= route.retry.attempts {
                    return Err(error);
                }
                let delay = backoff(&route.retry, attempt, retry_after_of(&error));
                if started.elapsed() + delay >= route.retry.deadline {
                    return Err(error);
                }
                tracing::debug!(provider = %id, attempt, delay_ms = delay.as_millis() as u64, error = error.label(), "retrying");
                excluded.push(index);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Admits a chat request for `limits` after routing: reserves the prompt estimate plus `max_tokens`
/// (or the model's completion allowance) times `n`, and the worst-case cost on the first target, and
/// hands the admission to the meter, which settles it when the request ends.
///
/// The token counts come from `head`, the one reading of the body: `parse_head` refused duplicated or
/// non-integer counts, so the upstream obeys the value reserved here (issue 11, item 3).
///
/// # Errors
/// [`Error::RateLimited`] when a limit refuses the request.
pub(super) async fn admit(
    state: &AppState,
    meter: &mut RequestMeter,
    limits: &CallerLimits,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    route: &routing::Route,
) -> Result<Option<RateHeaders>, Error> {
    if limits.is_unlimited() {
        return Ok(None);
    }
    let target = route.targets.first();
    let model = target.map_or(meter.info.requested_model.as_str(), |t| t.upstream_model.as_str());
    let per_choice = max_output_tokens.unwrap_or_else(|| state.limiter.completion_allowance(model));
    // `n` choices may each generate up to the per-choice limit.
    let completion = per_choice.saturating_mul(n.unwrap_or(1).max(1));
    let prompt = meter.info.prompt_estimate;
    let wants_cost = limits.tenant.monthly_budget_micro_usd.is_some() || limits.key.monthly_budget_micro_usd.is_some();
    let cost_nano_usd = match (&state.sink, target) {
        (Some(sink), Some(t)) if wants_cost => {
            let mut info = meter.info.clone();
            info.route_to(t, None);
            let tokens = Tokens { prompt, completion, ..Default::default() };
            sink.cost_nano_usd(&info, &tokens).unwrap_or(0)
        }
        _ => 0,
    };
    let demand = Demand { tokens: prompt.saturating_add(completion), cost_nano_usd };
    let tenant = Arc::clone(&meter.info.tenant);
    let key_id = meter.info.key_id.clone();
    match state.limiter.admit(&tenant, key_id.as_deref(), limits, demand).await {
        Ok(admission) => {
            let headers = admission.headers();
            meter.admission = Some(admission);
            Ok(headers)
        }
        Err(rejection) => Err(Error::RateLimited(rejection)),
    }
}

/// `POST /v1/messages/count_tokens` for `principal`: forwarded to the routed model's provider when it
/// is Anthropic (a real count), otherwise the tokenizer-free estimate the ledger uses for cut streams
/// (system, messages and tools included; never 0). Not metered: nothing is generated.
///
/// # Errors
/// 401 for the admin key; 400 for a bad body; routing errors; the upstream's error when it refuses.
pub async fn count_tokens<B>(state: &Arc<AppState>, principal: &Principal, req: Request<B>) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    principal.caller()?;
    let (parts, body) = req.into_parts();
    let body = read_body(
        body,
        parts.headers.get(CONTENT_LENGTH),
        state.config.max_body_bytes,
        state.config.server.body_read_timeout,
    )
    .await?;
    let head = anthropic_ingress::parse_head(&body)?;
    check_model_name(&head.model)?;
    let route = routing::resolve(&state.config, &head.model)?;
    let target = route.primary();
    if target.provider.kind == ProviderKind::Anthropic {
        let upstream = state
            .upstream(&target.provider.id)
            .ok_or_else(|| Error::Internal("routed to a provider that has no client".into()))?;
        let mut extra = Vec::new();
        for beta in parts.headers.get_all(ANTHROPIC_BETA) {
            extra.push((ANTHROPIC_BETA, beta.clone()));
        }
        let upstream_body = anthropic_ingress::rewrite_model(body, &head, &target.upstream_model)?;
        let req = upstream.post_request(anthropic_ingress::COUNT_TOKENS_PATH, upstream_body, &extra)?;
        let resp = upstream.send(req).await?;
        if !resp.status().is_success() {
            return Err(upstream_status_error(upstream, resp).await);
        }
        return read_upstream_body(upstream, resp.into_body()).await;
    }
    let n = anthropic_ingress::count_tokens(&body)?;
    Ok(Bytes::from(anthropic_ingress::count_tokens_json(n)))
}

/// Whether the request comes from Codex (CLI, exec mode, IDE extension): it sends `originator:
/// codex_cli_rs` / `codex_exec` / `codex_vscode` and a `codex_…/<version>` user agent.
fn is_codex(headers: &http::HeaderMap) -> bool {
    let starts = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("codex")))
    };
    starts(http::header::HeaderName::from_static("originator")) || starts(http::header::USER_AGENT)
}

/// A stored-response call (`GET`/`DELETE /responses/{id}`, `/cancel`, `/input_items`) for `principal`,
/// forwarded to the first OpenAI-kind provider (where `store: true` responses live). Nothing is
/// generated, so nothing is metered; the upstream's status and body come back as they are.
///
/// # Errors
/// 401 for the admin key; 404 when no OpenAI-kind provider is enabled; upstream failures.
pub async fn stored_response(
    state: &Arc<AppState>,
    principal: &Principal,
    method: http::Method,
    path_and_query: &str,
) -> Result<(http::StatusCode, Bytes), Error> {
    principal.caller()?;
    let upstream = state
        .config
        .providers
        .iter()
        .find(|p| p.kind == ProviderKind::OpenAi)
        .and_then(|p| state.upstream(&p.id))
        .ok_or_else(|| {
            Error::NotFound(
                "Stored responses live at an OpenAI-kind provider, and none is enabled: this gateway serves the Responses API statelessly.".into(),
            )
        })?;
    let mut req = match method {
        http::Method::POST => upstream.post_request(path_and_query, Bytes::new(), &[])?,
        _ => upstream.get_request(path_and_query)?,
    };
    *req.method_mut() = method;
    let resp = upstream.send(req).await?;
    let status = resp.status();
    if !status.is_success() && !status.is_client_error() {
        return Err(upstream_status_error(upstream, resp).await);
    }
    let bytes = read_upstream_body(upstream, resp.into_body()).await?;
    Ok((status, bytes))
}

/// Longest client session id kept for attribution.
const MAX_SESSION_ID: usize = 128;

/// The client's session id (Claude Code's `X-Claude-Code-Session-Id`), when it is short and printable
/// ASCII: it lands in the ledger and the logs, so anything else is ignored rather than kept.
fn session_id(headers: &http::HeaderMap) -> Option<Arc<str>> {
    let v = headers.get(anthropic_ingress::SESSION_HEADER)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= MAX_SESSION_ID && v.bytes().all(|b| b.is_ascii_graphic())).then(|| Arc::from(v))
}

/// Exponential backoff with full jitter in [d/2, d], at least the upstream's `retry-after`, capped.
fn backoff(
    policy: &crate::domain::config::RetryPolicy,
    attempt: u32,
    retry_after: Option<std::time::Duration>,
) -> std::time::Duration {
    let exp = policy.backoff.saturating_mul(1u32 << (attempt - 1).min(16));
    let capped = exp.min(policy.max_backoff);
    let jittered = capped.mul_f64(0.5 + fastrand::f64() / 2.0);
    match retry_after {
        Some(ra) => jittered.max(ra.min(policy.max_backoff)),
        None => jittered,
    }
}

/// `retry-after` in seconds from an upstream error, when it sent one.
fn retry_after_of(error: &Error) -> Option<std::time::Duration> {
    match error {
        Error::Upstream(UpstreamError::Status { retry_after: Some(v), .. }) => {
            v.to_str().ok()?.trim().parse::<u64>().ok().map(std::time::Duration::from_secs)
        }
        _ => None,
    }
}

/// One attempt against one target; errors before the first byte sent downstream may be retried.
async fn try_target(
    state: &Arc<AppState>,
    client_headers: &http::HeaderMap,
    body: &Bytes,
    inbound: &mut Inbound,
    target: &routing::RouteTarget,
    price: Option<Price>,
    meter: &mut RequestMeter,
) -> Result<ChatReply, Error> {
    let upstream = state
        .upstream(&target.provider.id)
        .ok_or_else(|| Error::Internal("routed to a provider that has no client".into()))?
        .clone();
    meter.info.route_to(target, price);

    let client_stream = inbound.stream();
    let mut extra_headers = Vec::new();
    // Long non-streamed Anthropic generations are streamed upstream and folded back into one response:
    // Anthropic (and its SDK) refuse non-streaming requests expected to run past ~10 minutes.
    let mut upstream_stream = client_stream;
    // Client and upstream speak the same format: the bytes pass through, only the model is renamed.
    let same_dialect = matches!(
        (&*inbound, target.provider.kind),
        (Inbound::OpenAi { .. } | Inbound::Responses { .. }, ProviderKind::OpenAi)
            | (Inbound::Anthropic { .. }, ProviderKind::Anthropic)
    );
    // Where the request goes when it is not the provider's chat endpoint.
    let mut upstream_path: Option<&'static str> = None;
    let (upstream_body, dropped, json_mode) = match (&*inbound, target.provider.kind) {
        (Inbound::OpenAi { head, .. }, ProviderKind::OpenAi) => {
            (passthrough::rewrite_request(body.clone(), head, &target.upstream_model)?, Vec::new(), None)
        }
        (Inbound::Anthropic { head, .. }, ProviderKind::Anthropic) => {
            for beta in client_headers.get_all(ANTHROPIC_BETA) {
                extra_headers.push((ANTHROPIC_BETA, beta.clone()));
            }
            (anthropic_ingress::rewrite_model(body.clone(), head, &target.upstream_model)?, Vec::new(), None)
        }
        (Inbound::Responses { head, .. }, ProviderKind::OpenAi) => {
            upstream_path = Some(responses::RESPONSES_PATH);
            (responses::passthrough::rename_model(body.clone(), &head.model, &target.upstream_model)?, Vec::new(), None)
        }
        (Inbound::Anthropic { .. } | Inbound::Completions { .. }, ProviderKind::OpenAi) => {
            // Translated to an OpenAI chat request; the usage chunk is always asked for, since Anthropic's
            // `message_delta` needs the final counts.
            let mut chat = inbound.chat(body)?.clone();
            chat.model.clone_from(&target.upstream_model);
            chat.stream = Some(client_stream);
            chat.stream_options = client_stream
                .then(|| translators::openai::StreamOptions { include_usage: Some(true), ..Default::default() });
            let encoded = serde_json::to_vec(&chat).map_err(|e| Error::Internal(e.to_string().into()))?;
            (Bytes::from(encoded), inbound.dropped().to_vec(), None)
        }
        (_, ProviderKind::Anthropic) => {
            let chat = inbound.chat(body)?;
            let max_tokens = chat
                .max_output_tokens()
                .or(target.provider.default_max_tokens)
                .unwrap_or_else(|| anthropic::default_max_tokens(&target.upstream_model));
            upstream_stream = client_stream || max_tokens > ANTHROPIC_NON_STREAM_MAX_TOKENS;
            let opts = anthropic::EncodeOptions {
                upstream_model: &target.upstream_model,
                stream: upstream_stream,
                default_max_tokens: target.provider.default_max_tokens,
            };
            let encoded = anthropic::encode_request(chat, &opts)?;
            for beta in client_headers.get_all(ANTHROPIC_BETA) {
                extra_headers.push((ANTHROPIC_BETA, beta.clone()));
            }
            let json_mode = json_mode_tool(chat);
            let mut dropped = encoded.dropped_params;
            dropped.extend_from_slice(inbound.dropped());
            (Bytes::from(encoded.body), dropped, json_mode)
        }
        (_, ProviderKind::Ollama) => {
            let chat = inbound.chat(body)?;
            let opts = ollama::EncodeOptions {
                upstream_model: &target.upstream_model,
                stream: client_stream,
                num_ctx: target.provider.num_ctx,
                keep_alive: target.provider.keep_alive.as_deref(),
            };
            let encoded = ollama::encode_request(chat, &opts)?;
            let mut dropped = encoded.dropped_params;
            dropped.extend_from_slice(inbound.dropped());
            (Bytes::from(encoded.body), dropped, None)
        }
    };
    let ctx = ResponseContext {
        id: new_completion_id(),
        created: unix_now(),
        model: inbound.model().to_owned(),
        include_usage: inbound.include_usage(),
        include_reasoning: state.config.include_reasoning || inbound.thinking(),
        id_seed: fastrand::u64(..),
    };

    meter.attempt();
    let request = match upstream_path {
        Some(path) => upstream.post_request(path, upstream_body, &extra_headers)?,
        None => upstream.chat_request(upstream_body, &extra_headers),
    };
    let resp = upstream.send(request).await?;
    if !resp.status().is_success() {
        return Err(upstream_status_error(&upstream, resp).await);
    }

    let mut headers = vec![
        (X_AGGREGATOR_PROVIDER, header_value(&target.provider.id)),
        (X_AGGREGATOR_MODEL, header_value(&target.upstream_model)),
    ];
    if !dropped.is_empty() {
        tracing::debug!(params = ?dropped, "dropped parameters the provider cannot honour");
        headers.push((X_GATEWAY_DROPPED_PARAMS, header_value(&dropped.join(","))));
    }

    let responses_ctx = || responses::EncodeContext {
        response_id: responses::response_id(fastrand::u64(..)),
        created_at: unix_now(),
        completed_at: unix_now(),
        id_seed: fastrand::u64(..),
    };
    let encode_ctx = || anthropic_ingress::EncodeContext {
        message_id: String::new(),
        model: inbound.model().to_owned(),
        include_thinking: inbound.thinking(),
        input_tokens_hint: 0,
        id_seed: fastrand::u64(..),
    };
    // A hub response in the client's dialect.
    let encode_hub = |decoded: &translators::openai::ChatResponse| -> Result<Bytes, Error> {
        match &*inbound {
            Inbound::OpenAi { .. } => serde_json::to_vec(decoded).map_err(|e| Error::Internal(e.to_string().into())),
            Inbound::Anthropic { .. } => Ok(anthropic_ingress::encode_response(decoded, &encode_ctx())?),
            Inbound::Responses { decoded: Some(d), .. } => {
                serde_json::to_vec(&responses::encode_response(decoded, &d.echo, &responses_ctx()))
                    .map_err(|e| Error::Internal(e.to_string().into()))
            }
            Inbound::Responses { decoded: None, .. } => Err(Error::Internal("responses request not decoded".into())),
            Inbound::Completions { decoded: d } => serde_json::to_vec(&completions::encode_response(decoded, d))
                .map_err(|e| Error::Internal(e.to_string().into())),
        }
        .map(Bytes::from)
    };

    if client_stream {
        let translator = match target.provider.kind {
            ProviderKind::OpenAi if matches!(&*inbound, Inbound::Responses { .. }) => {
                AnyTranslator::ResponsesUsage(Box::default())
            }
            ProviderKind::OpenAi => AnyTranslator::OpenAi(passthrough::StreamPassthrough::new(ctx.include_usage)),
            ProviderKind::Anthropic => AnyTranslator::Anthropic(match json_mode {
                Some(tool) => anthropic::StreamDecoder::with_json_mode(ctx, tool),
                None => anthropic::StreamDecoder::new(ctx),
            }),
            ProviderKind::Ollama => AnyTranslator::Ollama(ollama::StreamDecoder::new(ctx)),
        };
        let output = match &*inbound {
            Inbound::OpenAi { .. } => Output::OpenAi,
            Inbound::Anthropic { .. } if same_dialect => Output::AnthropicRelay,
            Inbound::Anthropic { .. } => {
                Output::Anthropic(Box::new(anthropic_ingress::StreamEncoder::new(encode_ctx())))
            }
            Inbound::Responses { .. } if same_dialect => Output::ResponsesRelay,
            Inbound::Responses { decoded, .. } => {
                let echo = decoded
                    .as_ref()
                    .map(|d| d.echo.clone())
                    .ok_or_else(|| Error::Internal("responses request not decoded".into()))?;
                Output::Responses(Box::new(responses::StreamEncoder::new(echo, responses_ctx())))
            }
            Inbound::Completions { decoded } => Output::Completions(Box::new(completions::StreamEncoder::new(decoded))),
        };
        stream_response(&upstream, resp, translator, output, headers, meter, &state.cut_streams).await
    } else {
        let (out, usage) = if upstream_stream {
            let decoder = match json_mode {
                Some(tool) => {
                    anthropic::StreamDecoder::with_json_mode(ResponseContext { include_usage: true, ..ctx }, tool)
                }
                None => anthropic::StreamDecoder::new(ResponseContext { include_usage: true, ..ctx }),
            };
            let decoded = aggregate_stream(&upstream, resp.into_body(), AnyTranslator::Anthropic(decoder)).await?;
            (encode_hub(&decoded)?, decoded.usage)
        } else {
            let bytes = read_upstream_body(&upstream, resp.into_body()).await?;
            match (same_dialect, target.provider.kind) {
                (true, ProviderKind::OpenAi) if matches!(&*inbound, Inbound::Responses { .. }) => {
                    // A Responses object, forwarded untouched; read for the usage.
                    if serde_json::from_slice::<ResponseShape>(&bytes).is_err() {
                        return Err(UpstreamError::Protocol(
                            "the upstream answered 200 with a body that is not a response object".into(),
                        )
                        .into());
                    }
                    let usage = responses::passthrough::extract_usage(&bytes);
                    (bytes, usage)
                }
                (true, ProviderKind::OpenAi) => {
                    // Forwarded untouched, but never a 200 that is not a chat completion (HTML from a
                    // proxy, truncated or garbage bytes).
                    let usage = passthrough::completion_usage(&bytes).map_err(|_| {
                        UpstreamError::Protocol(
                            "the upstream answered 200 with a body that is not a chat completion".into(),
                        )
                    })?;
                    (bytes, usage)
                }
                (true, ProviderKind::Anthropic) => {
                    // Forwarded untouched (thinking signatures, cache fields and all); decoded only to
                    // check it is a message and to read the usage.
                    let usage = anthropic::decode_response(&bytes, &ctx)?.usage;
                    (bytes, usage)
                }
                (false, ProviderKind::OpenAi) => {
                    let decoded: translators::openai::ChatResponse = serde_json::from_slice(&bytes).map_err(|e| {
                        UpstreamError::Protocol(
                            format!("the upstream answered 200 with a body that is not a chat completion: {e}").into(),
                        )
                    })?;
                    (encode_hub(&decoded)?, decoded.usage)
                }
                (_, ProviderKind::Anthropic) => {
                    let decoded = match json_mode {
                        Some(tool) => anthropic::decode_response_json_mode(&bytes, &ctx, tool)?,
                        None => anthropic::decode_response(&bytes, &ctx)?,
                    };
                    (encode_hub(&decoded)?, decoded.usage)
                }
                (_, ProviderKind::Ollama) => {
                    let decoded = ollama::decode_response(&bytes, &ctx)?;
                    (encode_hub(&decoded)?, decoded.usage)
                }
            }
        };
        meter.first_token();
        let tokens = match &usage {
            Some(u) => Tokens::from_usage(u),
            None => Tokens {
                prompt: meter.info.prompt_estimate,
                completion: estimate_tokens(out.len() as u64),
                estimated: true,
                ..Tokens::default()
            },
        };
        let cost = state.sink.as_ref().and_then(|s| s.cost_nano_usd(&meter.info, &tokens));
        meter.finish(Outcome::Ok, tokens, 200);
        let mut resp = Response::new(ReplyBody::Full(out));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, APPLICATION_JSON);
        if let Some(cost) = cost {
            headers.push((X_AGGREGATOR_COST_USD, header_value(&crate::domain::pricing::format_usd(cost))));
        }
        for (n, v) in headers {
            h.insert(n, v);
        }
        Ok(resp)
    }
}

/// The minimum a pass-through Responses object must have.
#[derive(serde::Deserialize)]
struct ResponseShape {
    #[serde(rename = "output")]
    _output: serde::de::IgnoredAny,
}

/// Anthropic has no JSON mode: `response_format` json becomes a forced tool whose input is unwrapped.
fn json_mode_tool(chat: &ChatRequest) -> Option<&'static str> {
    match chat.response_format {
        Some(
            translators::openai::ResponseFormat::JsonObject | translators::openai::ResponseFormat::JsonSchema { .. },
        ) => Some(anthropic::JSON_TOOL_NAME),
        Some(translators::openai::ResponseFormat::Text) | None => None,
    }
}

/// Reads the request body, refusing more than `limit` bytes (413) without reading the rest, and a
/// body that sends nothing for `idle` (408: a stalled upload must not hold its buffer forever).
///
/// # Errors
/// [`Error::PayloadTooLarge`]; [`Error::BodyTimeout`]; a 400 for a malformed body (broken chunked
/// encoding); [`Error::ClientDisconnected`] when the client hung up while sending it.
pub async fn read_body<B>(
    body: B,
    content_length: Option<&HeaderValue>,
    limit: u64,
    idle: std::time::Duration,
) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(len) = content_length.and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()) {
        if len > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
    }
    let limit_bytes = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = std::pin::pin!(Limited::new(body, limit_bytes));
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Error::BodyTimeout { secs: idle.as_secs() }),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return Err(body_error(&*e, limit)),
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Why reading a request body failed: over the limit (413), malformed (400: hyper's decoder reports
/// a bad chunk size or framing as `InvalidInput`/`InvalidData`), or the client went away (its
/// connection closed mid-body: `UnexpectedEof`, an incomplete message, a reset stream).
fn body_error(e: &(dyn std::error::Error + Send + Sync + 'static), limit: u64) -> Error {
    if e.is::<http_body_util::LengthLimitError>() {
        return Error::PayloadTooLarge { limit };
    }
    let e: &(dyn std::error::Error + 'static) = e;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) {
                return Error::BadRequest {
                    message: format!("Malformed request body: {io}.").into(),
                    param: None,
                    code: Some("invalid_body"),
                };
            }
        }
        cause = c.source();
    }
    Error::ClientDisconnected
}

/// Parses the full OpenAI request for translated providers, with the JSON path of any type error.
fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, Error> {
    // Plain serde first (the path tracking costs about a third more on every valid request, issue
    // 17); a body that fails is read again with the path, for the error message. Neither checks for
    // trailing bytes, so both accept the same bodies.
    use serde::Deserialize as _;
    if let Ok(request) = ChatRequest::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        return Ok(request);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, ChatRequest>(de).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("Invalid request body at `{path}`: {}", e.inner());
        Error::BadRequest { message: message.into(), param: Some(path.into()), code: Some("invalid_value") }
    })
}

/// Drives a stream translator over a whole upstream stream and folds its chunks into one response.
async fn aggregate_stream(
    upstream: &Upstream,
    mut incoming: Incoming,
    mut translator: AnyTranslator,
) -> Result<translators::openai::ChatResponse, Error> {
    let mut aggregator = translators::openai::aggregate::Aggregator::new();
    let mut events = Vec::new();
    let mut timeout = upstream.config.timeouts.first_byte;
    while !translator.is_terminal() {
        match tokio::time::timeout(timeout, incoming.frame()).await {
            Err(_) => return Err(UpstreamError::FirstByteTimeout.into()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    translator.feed(&data, &mut events);
                    aggregator.push(&events);
                    events.clear();
                }
                timeout = upstream.config.timeouts.idle;
            }
            Ok(Some(Err(_)) | None) => break,
        }
    }
    let _summary = translator.finish(&mut events);
    aggregator.push(&events);
    aggregator.finish().map_err(|body| in_band_error_to_status(&body))
}

/// Reads a non-streamed upstream body within the provider's timeouts.
pub(super) async fn read_upstream_body(upstream: &Upstream, body: Incoming) -> Result<Bytes, Error> {
    let read = Limited::new(body, MAX_UPSTREAM_BODY).collect();
    match tokio::time::timeout(upstream.config.timeouts.first_byte, read).await {
        Err(_) => Err(UpstreamError::FirstByteTimeout.into()),
        Ok(Err(_)) => Err(UpstreamError::Transport.into()),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Turns a non-2xx upstream response into the client's error, keeping `retry-after` and the request id.
pub(super) async fn upstream_status_error(upstream: &Upstream, resp: Response<Incoming>) -> Error {
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get(RETRY_AFTER).cloned();
    let upstream_request_id = resp.headers().get("request-id").or_else(|| resp.headers().get("x-request-id")).cloned();
    let body = match tokio::time::timeout(
        upstream.config.timeouts.idle,
        Limited::new(resp.into_body(), MAX_ERROR_BODY).collect(),
    )
    .await
    {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let mapped = match upstream.config.kind {
        ProviderKind::OpenAi => passthrough::map_error(status, &body),
        ProviderKind::Anthropic => anthropic::map_error(status, &body),
        ProviderKind::Ollama => ollama::map_error(status, &body),
    };
    tracing::debug!(provider = %upstream.config.id, upstream_status = status, client_status = mapped.status, "upstream error");
    let retry_after = match (mapped.status, retry_after) {
        (429 | 503, Some(v)) => Some(v),
        (503, None) => Some(HeaderValue::from_static("1")),
        _ => None,
    };
    let anthropic_verbatim = (upstream.config.kind == ProviderKind::Anthropic
        && !matches!(status, 401 | 403)
        && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["type"] == "error"))
    .then(|| (status, body));
    Error::Upstream(UpstreamError::Status {
        mapped,
        upstream_status: status,
        retry_after,
        upstream_request_id,
        anthropic_verbatim,
    })
}

/// Peeks at the stream until the first event so that an immediate upstream failure keeps a real HTTP
/// status, then hands the rest to a `TranslatingBody`.
async fn stream_response(
    upstream: &Arc<Upstream>,
    resp: Response<Incoming>,
    mut translator: AnyTranslator,
    mut output: Output,
    headers: Vec<(HeaderName, HeaderValue)>,
    meter: &mut RequestMeter,
    cut_streams: &super::stream::StreamCut,
) -> Result<ChatReply, Error> {
    let mut incoming = resp.into_body();
    let mut events = Vec::new();
    // What was read while peeking, for a relay (the client gets the upstream's own bytes).
    let mut relayed = BytesMut::new();
    let relay = output.is_relay();
    let deadline = tokio::time::Instant::now() + upstream.config.timeouts.first_byte;
    let mut ended = false;
    // Until the first event (or, for a relay, the first bytes: a usage-only scanner emits no events).
    while events.is_empty() && relayed.is_empty() && !translator.is_terminal() {
        match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => return Err(UpstreamError::FirstByteTimeout.into()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    translator.feed(&data, &mut events);
                    if relay {
                        relayed.extend_from_slice(&data);
                    }
                }
            }
            Ok(Some(Err(_))) | Ok(None) => {
                ended = true;
                break;
            }
        }
    }
    if ended && events.is_empty() {
        // The upstream closed before sending anything we could use.
        let _ = translator.finish(&mut Vec::new());
        return Err(UpstreamError::Protocol("upstream closed the stream before the first event".into()).into());
    }
    if let Some(StreamEvent::Error(body)) = events.first() {
        // Failed before any content: answer with a real status instead of a 200 stream.
        return Err(in_band_error_to_status(body));
    }
    if translator.is_terminal() {
        // Pass-through forwards an in-band error as raw bytes: same rule when nothing else was streamed.
        let summary = translator.summary();
        if let (translators::StreamOutcome::UpstreamError(body), 0) = (&summary.outcome, summary.streamed_bytes) {
            return Err(in_band_error_to_status(body));
        }
    }
    let first = super::stream::first_bytes(&mut output, &events, relayed);
    events.clear();
    meter.first_token();
    let body = TranslatingBody::new(
        incoming,
        translator,
        output,
        first.freeze(),
        upstream.config.timeouts.idle,
        meter.hand_over(),
        ended,
        cut_streams.clone(),
    );
    let mut resp = Response::new(ReplyBody::Stream(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, TEXT_EVENT_STREAM);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    for (n, v) in headers {
        h.insert(n, v);
    }
    Ok(resp)
}

/// Maps an in-band error that arrived before any content to an HTTP status the SDKs understand.
fn in_band_error_to_status(body: &ErrorBody) -> Error {
    let hay = format!("{} {}", body.kind, body.code.as_deref().unwrap_or(""));
    let status = if hay.contains("overloaded") {
        503
    } else if hay.contains("rate_limit") {
        429
    } else {
        502
    };
    let retry_after = (status == 503 || status == 429).then(|| HeaderValue::from_static("1"));
    Error::Upstream(UpstreamError::Status {
        mapped: translators::error::MappedError { status, body: body.clone() },
        upstream_status: status,
        retry_after,
        upstream_request_id: None,
        anthropic_verbatim: None,
    })
}

/// Refuses a model name longer than [`MAX_CLIENT_STRING`] bytes (issue #11, item 7: a 2 MiB name was
/// stored, echoed, logged and kept as a metric label).
///
/// # Errors
/// 400 with `param: "model"`.
pub(super) fn check_model_name(model: &str) -> Result<(), Error> {
    if model.len() > MAX_CLIENT_STRING {
        return Err(Error::BadRequest {
            message: format!("`model` is longer than {MAX_CLIENT_STRING} bytes.").into(),
            param: Some("model".into()),
            code: Some("invalid_value"),
        });
    }
    Ok(())
}

/// A response header value; `-` for text that is not a valid header value or longer than
/// [`MAX_CLIENT_STRING`] bytes (we never echo an unbounded value).
pub(super) fn header_value(s: &str) -> HeaderValue {
    if s.len() > MAX_CLIENT_STRING {
        return HeaderValue::from_static("-");
    }
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `chatcmpl-` plus 24 random alphanumerics.
pub fn new_completion_id() -> String {
    let mut id = String::with_capacity(33);
    id.push_str("chatcmpl-");
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
