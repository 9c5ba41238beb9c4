//! Small HTTP client for the tests, on hyper-util's legacy client: JSON requests, raw requests, and
//! streamed SSE reads that can stop after N events and drop the connection.
//!
//! Every call has a deadline ([`DEFAULT_TIMEOUT`]) so a hanging gateway fails the test instead of
//! hanging it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Deadline for a whole non-streamed exchange, and for each SSE event.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the test client.
#[derive(Debug)]
pub enum ClientError {
    /// Connect or protocol failure.
    Http(String),
    /// No answer within the deadline.
    Timeout,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Http(e) => write!(f, "http error: {e}"),
            ClientError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A complete (non-streamed) response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
    /// HTTP version of the response.
    pub version: http::Version,
}

impl TestResponse {
    /// Asserts the status and OpenAI's error envelope (validated against the spec's schema); returns
    /// the `error` object.
    ///
    /// # Panics
    /// When the status differs or the body is not a valid OpenAI error.
    pub fn expect_error(&self, status: u16, what: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{what}: body {}", self.text());
        assert!(self.header("content-type").unwrap_or("").starts_with("application/json"), "{what}: content-type");
        let v = self.json();
        crate::schema::check_error(&v).unwrap_or_else(|e| panic!("{what}: {e}"));
        v["error"].clone()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON (the panic message shows the body).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response body is not JSON ({e}); status {}: {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One SSE event as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, if any.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// Whether this is the `[DONE]` sentinel.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// The data parsed as JSON.
    ///
    /// # Panics
    /// When the data is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Clean end of body.
    Eof,
    /// The body failed (connection reset / aborted by the server).
    Error(String),
}

/// A streamed response being read event by event. Dropping it closes the connection.
pub struct SseStream {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    end: Option<StreamEnd>,
    /// Raw bytes received so far.
    pub raw: Vec<u8>,
}

impl SseStream {
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next event, or `None` at the end of the body (see [`SseStream::end`]).
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when no complete event arrives within `timeout`.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Result<Option<SseEvent>, ClientError> {
        tokio::time::timeout(timeout, self.next_event_inner()).await.map_err(|_| ClientError::Timeout)
    }

    /// The next event within [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::Timeout`].
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, ClientError> {
        self.next_event_within(DEFAULT_TIMEOUT).await
    }

    async fn next_event_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = take_event(&mut self.buf) {
                match ev {
                    Some(ev) => return Some(ev),
                    None => continue, // comment-only or empty block
                }
            }
            if self.end.is_some() {
                // Flush a final unterminated event, as the SSE spec does not: dropped.
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.raw.extend_from_slice(&data);
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => self.end = Some(StreamEnd::Error(e.to_string())),
                None => self.end = Some(StreamEnd::Eof),
            }
        }
    }

    /// Reads every remaining event until the body ends.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when an event takes longer than [`DEFAULT_TIMEOUT`].
    pub async fn collect(&mut self) -> Result<Vec<SseEvent>, ClientError> {
        let mut out = Vec::new();
        while let Some(ev) = self.next_event().await? {
            out.push(ev);
        }
        Ok(out)
    }

    /// How the body ended (`None` while still open).
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }
}

/// Removes one complete event block from `buf`. `Some(None)` = a block with no data (comments).
fn take_event(buf: &mut Vec<u8>) -> Option<Option<SseEvent>> {
    let (end, sep_len) = find_blank_line(buf)?;
    let block: Vec<u8> = buf.drain(..end + sep_len).collect();
    let text = String::from_utf8_lossy(&block[..end]).into_owned();
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.split(['\n']).map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    Some(data.map(|data| SseEvent { event, data }))
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if i + 3 < buf.len() && &buf[i..i + 4] == b"\r\n\r\n" {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

/// The test HTTP client (HTTP/1.1, or HTTP/2 prior knowledge with [`TestClient::h2c`]).
#[derive(Clone)]
pub struct TestClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl TestClient {
    /// An HTTP/1.1 client for `base` (`http://127.0.0.1:port`).
    pub fn new(base: &str) -> Self {
        let inner = Client::builder(TokioExecutor::new()).build_http();
        TestClient { inner, base: base.trim_end_matches('/').to_owned() }
    }

    /// An HTTP/2 prior-knowledge (h2c) client for `base`.
    pub fn h2c(base: &str) -> Self {
        let inner = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        TestClient { inner, base: base.trim_end_matches('/').to_owned() }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        #[allow(clippy::expect_used)] // Only reachable with a malformed header literal in a test.
        builder.body(Full::new(body)).expect("valid test request")
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>, ClientError> {
        match tokio::time::timeout(DEFAULT_TIMEOUT, self.inner.request(req)).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(e)) => Err(ClientError::Http(format!("{e:?}"))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends a request and reads the whole body.
    ///
    /// # Errors
    /// Connection failure or timeout.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<TestResponse, ClientError> {
        let resp = self.send(self.request(method, path, headers, body.into())).await?;
        let (parts, body) = resp.into_parts();
        let body = match tokio::time::timeout(DEFAULT_TIMEOUT, body.collect()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(Err(e)) => return Err(ClientError::Http(e.to_string())),
            Ok(Ok(c)) => c.to_bytes(),
        };
        Ok(TestResponse { status: parts.status, headers: parts.headers, body, version: parts.version })
    }

    /// `GET path`.
    ///
    /// # Errors
    /// Connection failure or timeout.
    pub async fn get(&self, path: &str) -> Result<TestResponse, ClientError> {
        self.raw(Method::GET, path, &[], Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// Connection failure or timeout.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<TestResponse, ClientError> {
        self.raw(Method::POST, path, &[("content-type", "application/json")], body.to_string()).await
    }

    /// `POST /v1/chat/completions` with a JSON body.
    ///
    /// # Errors
    /// Connection failure or timeout.
    pub async fn chat(&self, body: &Value) -> Result<TestResponse, ClientError> {
        self.post_json("/v1/chat/completions", body).await
    }

    /// `POST path` and return the body unread, as an event stream.
    ///
    /// # Errors
    /// Connection failure or timeout waiting for the response head.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Result<SseStream, ClientError> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let resp = self.send(self.request(Method::POST, path, &all, Bytes::from(body.to_string()))).await?;
        let (parts, body) = resp.into_parts();
        Ok(SseStream {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: Vec::new(),
            end: None,
            raw: Vec::new(),
        })
    }

    /// Streams `POST /v1/chat/completions`.
    ///
    /// # Errors
    /// Connection failure or timeout waiting for the response head.
    pub async fn chat_stream(&self, body: &Value) -> Result<SseStream, ClientError> {
        self.stream("/v1/chat/completions", &[], body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_event_handles_crlf_comments_and_multiline_data() {
        let mut buf = b": keep-alive\n\nevent: x\r\ndata: a\r\ndata:b\r\n\r\ndata: [DONE]\n\n".to_vec();
        assert_eq!(take_event(&mut buf), Some(None));
        assert_eq!(take_event(&mut buf), Some(Some(SseEvent { event: Some("x".into()), data: "a\nb".into() })));
        assert!(take_event(&mut buf).and_then(|e| e).is_some_and(|e| e.is_done()));
        assert_eq!(take_event(&mut buf), None);
    }
}
