//! Embeddings (`POST /v1/embeddings`) for every provider that has them: passed through to OpenAI-kind
//! backends (model renamed), translated to Ollama's `/api/embed` (batched, vectors re-encoded as the
//! client asked: floats or base64). Anthropic has no embeddings: a clear 400 before any call.
//!
//! Same admission (tenant limits), breakers and metering as chat: one ledger record per request, prompt
//! tokens from the provider's count (or an estimate when it gives none).

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use translators::embeddings;

use super::chat::{
    admit, check_model_name, header_value, read_metered_request, read_upstream_body, record_failure,
    upstream_status_error, X_AGGREGATOR_COST_USD, X_AGGREGATOR_MODEL, X_AGGREGATOR_PROVIDER,
};
use super::error::{Error, Side, UpstreamError};
use super::metering::{Outcome, RequestInfo, RequestMeter, Tokens};
use super::state::AppState;
use crate::domain::config::ProviderKind;
use crate::domain::principal::Principal;
use crate::domain::routing;

/// OpenAI's embeddings path under an OpenAI-kind base URL.
const OPENAI_EMBEDDINGS_PATH: &str = "/embeddings";
/// Ollama's native embeddings endpoint.
const OLLAMA_EMBED_PATH: &str = "/api/embed";
/// Inputs per Ollama call.
const OLLAMA_MAX_BATCH: usize = 256;

/// Runs one embeddings request for `principal`; the reply is the complete JSON body and its headers.
///
/// # Errors
/// Every failure, already metered.
pub async fn embed<B>(
    state: &Arc<AppState>,
    principal: &Principal,
    request_id: &str,
    req: Request<B>,
) -> Result<Response<Bytes>, Error>
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
        ..RequestInfo::default()
    };
    let mut meter = RequestMeter::start(info, state.sink.clone());
    match run(state, req, &mut meter, &limits).await {
        Ok(resp) => Ok(resp),
        Err(error) => {
            record_failure(&mut meter, &error);
            Err(error)
        }
    }
}

async fn run<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    meter: &mut RequestMeter,
    limits: &crate::domain::limits::CallerLimits,
) -> Result<Response<Bytes>, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (_parts, body) = read_metered_request(state, req, meter).await?;
    let request = embeddings::parse_request(&body)?;
    check_model_name(&request.model)?;
    meter.info.requested_model.clone_from(&request.model);
    let route = routing::resolve(&state.config, &request.model)?;
    let index = state.breakers.pick(&route.targets, &[]).ok_or(Error::Upstream(UpstreamError::Unavailable))?;
    let target = &route.targets[index];
    if target.provider.kind == ProviderKind::Anthropic {
        return Err(Error::BadRequest {
            message: format!(
                "`{}` is served by Anthropic, which has no embeddings endpoint; use an OpenAI-kind or Ollama embedding model.",
                request.model
            )
            .into(),
            param: Some("model".into()),
            code: Some("model_not_found"),
        });
    }
    // Only the prompt is reserved: embeddings produce no completion tokens.
    let rate_headers = admit(state, meter, limits, Some(0), None, &route).await?;
    let upstream = state
        .upstream(&target.provider.id)
        .ok_or_else(|| Error::Internal("routed to a provider that has no client".into()))?
        .clone();
    let price = state.sink.as_ref().and_then(|s| {
        s.deployment_price(&target.provider.id, target.provider.kind, &target.upstream_model).for_request()
    });
    meter.info.route_to(target, price);
    meter.attempt();
    let result = match target.provider.kind {
        ProviderKind::OpenAi => {
            let upstream_body =
                translators::responses::passthrough::rename_model(body, &request.model, &target.upstream_model)?;
            let resp = upstream.send(upstream.post_request(OPENAI_EMBEDDINGS_PATH, upstream_body, &[])?).await?;
            if !resp.status().is_success() {
                Err(upstream_status_error(&upstream, resp).await)
            } else {
                let bytes = read_upstream_body(&upstream, resp.into_body()).await?;
                let usage = embeddings::extract_usage(&bytes);
                Ok((bytes, usage))
            }
        }
        ProviderKind::Ollama | ProviderKind::Anthropic => {
            let opts = embeddings::OllamaEmbedOptions {
                upstream_model: &target.upstream_model,
                truncate: false,
                keep_alive: target.provider.keep_alive.as_deref(),
                max_batch: OLLAMA_MAX_BATCH,
            };
            let mut answers = Vec::new();
            let mut failure = None;
            for upstream_body in embeddings::encode_ollama(&request, &opts) {
                let resp = upstream.send(upstream.post_request(OLLAMA_EMBED_PATH, upstream_body, &[])?).await?;
                if !resp.status().is_success() {
                    failure = Some(upstream_status_error(&upstream, resp).await);
                    break;
                }
                answers.push(read_upstream_body(&upstream, resp.into_body()).await?);
            }
            match failure {
                Some(e) => Err(e),
                None => {
                    let bodies: Vec<&[u8]> = answers.iter().map(|b| b.as_ref()).collect();
                    let decoded = embeddings::decode_ollama(&bodies, &request)?;
                    Ok((decoded.to_bytes(), Some(decoded.usage())))
                }
            }
        }
    };
    let (bytes, usage) = match result {
        Ok(ok) => {
            state.breakers.success(&target.provider.id);
            ok
        }
        Err(error) => {
            if error.side() == Side::Upstream {
                state.breakers.failure(&target.provider.id);
            } else {
                state.breakers.release(&target.provider.id);
            }
            return Err(error);
        }
    };
    meter.first_token();
    let tokens = match usage {
        Some(u) => Tokens::from_usage(&u),
        None => Tokens { prompt: meter.info.prompt_estimate, estimated: true, ..Tokens::default() },
    };
    let cost = state.sink.as_ref().and_then(|s| s.cost_nano_usd(&meter.info, &tokens));
    meter.finish(Outcome::Ok, tokens, 200);
    let mut resp = Response::new(bytes);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(X_AGGREGATOR_PROVIDER, header_value(&target.provider.id));
    h.insert(X_AGGREGATOR_MODEL, header_value(&target.upstream_model));
    if let Some(cost) = cost {
        h.insert(X_AGGREGATOR_COST_USD, header_value(&crate::domain::pricing::format_usd(cost)));
    }
    if let Some(r) = rate_headers {
        r.apply(h);
    }
    Ok(resp)
}
