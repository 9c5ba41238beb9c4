//! An enabled provider ready to be called: its pooled client, precomputed URIs and auth headers.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;

use super::client::{self, HttpClient};
use super::error::UpstreamError;
use crate::domain::config::{ProviderConfig, ProviderKind};

/// `x-api-key`, Anthropic's key header.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `anthropic-version`.
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `anthropic-beta`, passed on from the client.
pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Chat endpoint of OpenAI-kind providers, under a base URL ending in `/v1`.
pub const OPENAI_CHAT_PATH: &str = "/chat/completions";
/// Anthropic Messages endpoint, under the bare host.
pub const ANTHROPIC_MESSAGES_PATH: &str = "/v1/messages";
/// Ollama's native chat endpoint.
pub const OLLAMA_CHAT_PATH: &str = "/api/chat";

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A provider plus everything needed to call it.
#[derive(Debug)]
pub struct Upstream {
    pub config: Arc<ProviderConfig>,
    client: HttpClient,
    chat_uri: Uri,
    /// Auth, version and configured extra headers, sent on every request.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Upstream {
    /// Prepares a provider: builds its client and precomputes what every request needs.
    pub fn new(config: Arc<ProviderConfig>) -> Result<Self, String> {
        let client = client::build(config.timeouts.connect).map_err(|e| format!("TLS set-up failed: {e}"))?;
        let chat_path = match config.kind {
            ProviderKind::OpenAi => OPENAI_CHAT_PATH,
            ProviderKind::Anthropic => ANTHROPIC_MESSAGES_PATH,
            ProviderKind::Ollama => OLLAMA_CHAT_PATH,
        };
        let chat_uri = format!("{}{}", config.base_url, chat_path)
            .parse()
            .map_err(|e| format!("bad base_url for `{}`: {e}", config.id))?;
        let mut headers = Vec::new();
        if let Some(key) = &config.api_key {
            let (name, value) = match config.kind {
                ProviderKind::Anthropic => (X_API_KEY, key.expose().to_owned()),
                ProviderKind::OpenAi | ProviderKind::Ollama => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            };
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| format!("api_key of `{}` is not a valid header value", config.id))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        if config.kind == ProviderKind::Anthropic {
            let version = HeaderValue::try_from(config.anthropic_version.as_str())
                .map_err(|_| format!("anthropic_version of `{}` is not a valid header value", config.id))?;
            headers.push((ANTHROPIC_VERSION, version));
        }
        headers.extend(config.headers.iter().cloned());
        Ok(Self { config, client, chat_uri, headers })
    }

    /// A POST of `body` to the provider's chat endpoint, with auth and any extra per-request headers.
    pub fn chat_request(&self, body: Bytes, extra: &[(HeaderName, HeaderValue)]) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.chat_uri.clone();
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, APPLICATION_JSON);
        for (name, value) in self.headers.iter().chain(extra) {
            h.append(name.clone(), value.clone());
        }
        req
    }

    /// A POST of `body` to `path` under the base URL (e.g. Anthropic's `/v1/messages/count_tokens`), with
    /// auth and any extra per-request headers.
    ///
    /// # Errors
    /// [`UpstreamError::Protocol`] when the URL does not parse.
    pub fn post_request(
        &self,
        path: &str,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let uri: Uri = format!("{}{}", self.config.base_url, path)
            .parse()
            .map_err(|_| UpstreamError::Protocol("bad upstream URL".into()))?;
        let mut req = self.chat_request(body, extra);
        *req.uri_mut() = uri;
        Ok(req)
    }

    /// A GET of `path_and_query` under the base URL (model listings).
    pub fn get_request(&self, path_and_query: &str) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let uri: Uri = format!("{}{}", self.config.base_url, path_and_query)
            .parse()
            .map_err(|_| UpstreamError::Protocol("bad upstream URL".into()))?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        for (name, value) in &self.headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        Ok(req)
    }

    /// Sends a request, waiting at most the first-byte timeout for the response headers.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.config.timeouts.first_byte, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout),
            Ok(Err(e)) => Err(UpstreamError::from_client(&e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}
