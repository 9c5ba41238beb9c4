//! In-process mock upstream: a hyper 1 server on `127.0.0.1:0` speaking one provider's wire format.
//!
//! One [`MockUpstream`] plays one provider ([`Flavor`]): OpenAI (`/v1/chat/completions`, `/v1/models`),
//! Anthropic (`/v1/messages`, `/v1/models` with `after_id` pagination) or Ollama (`/api/chat`,
//! `/api/tags`). Without a script every chat request gets a short text answer rendered in the
//! provider's exact format (JSON, SSE or NDJSON, following the request's `stream` flag), and the model
//! endpoints list [`MockUpstream::set_models`].
//!
//! Tests script replies per path with [`MockUpstream::enqueue`] (one-shot, FIFO) or
//! [`MockUpstream::always`] (sticky). A [`Reply`] is either an [`Answer`] (rendered per flavor and per the
//! request's `stream` flag) or raw bytes, plus delivery modifiers: delay before the headers, gap
//! between chunks, re-chunking into N-byte writes, and an ending (complete, abrupt disconnect, stall
//! until the peer hangs up, or an in-band error event).
//!
//! Every request is recorded (method, path, query, headers, body and parsed JSON), and streamed bodies
//! report whether the peer closed the connection before the end ([`MockUpstream::wait_peer_closed`]).

pub mod anthropic;
pub mod ollama;
pub mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;

/// Error type of the mock's response bodies; yielding one makes hyper abort the connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which provider a mock plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OpenAI Chat Completions (`{base}/v1/chat/completions`, `{base}/v1/models`).
    OpenAi,
    /// Anthropic Messages (`{base}/v1/messages`, `{base}/v1/models`).
    Anthropic,
    /// Ollama native (`{base}/api/chat`, `{base}/api/tags`).
    Ollama,
}

impl Flavor {
    /// Every provider flavour, for tests that run once per provider.
    pub const ALL: [Flavor; 3] = [Flavor::OpenAi, Flavor::Anthropic, Flavor::Ollama];
}

impl Flavor {
    /// The chat endpoint path of this provider.
    pub fn chat_path(self) -> &'static str {
        match self {
            Flavor::OpenAi => "/v1/chat/completions",
            Flavor::Anthropic => "/v1/messages",
            Flavor::Ollama => "/api/chat",
        }
    }

    /// The model-list endpoint path of this provider.
    pub fn models_path(self) -> &'static str {
        match self {
            Flavor::OpenAi | Flavor::Anthropic => "/v1/models",
            Flavor::Ollama => "/api/tags",
        }
    }
}

/// One tool call the mock model makes.
#[derive(Clone, Debug)]
pub struct ToolCall {
    /// Upstream id (`call_…`, `toolu_…`); Ollama mocks omit it when empty.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as a JSON object.
    pub input: Value,
}

impl ToolCall {
    /// A tool call with the given id, name and input object.
    pub fn new(id: &str, name: &str, input: Value) -> Self {
        ToolCall { id: id.to_owned(), name: name.to_owned(), input }
    }
}

/// Token counts the mock reports (Anthropic meaning: `input` excludes cache reads and writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation: u64,
}

impl Usage {
    /// Plain input/output counts, no cache.
    pub fn new(input: u64, output: u64) -> Self {
        Usage { input, output, ..Usage::default() }
    }
}

/// Why the mock model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Natural end (`stop`, `end_turn`, `stop`).
    End,
    /// Token limit (`length`, `max_tokens`, `length`).
    Length,
    /// Tool use (`tool_calls`, `tool_use`; Ollama still says `stop`).
    Tool,
}

/// What the mock model answers; rendered in the flavor's format, streamed or not per the request.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Text pieces; streamed one piece per delta, concatenated when not streaming.
    pub text: Vec<String>,
    /// Tool calls after the text.
    pub tool_calls: Vec<ToolCall>,
    /// Reported usage.
    pub usage: Usage,
    /// Stop reason.
    pub stop: Stop,
    /// Model name to report; `None` echoes the request's `model`.
    pub model: Option<String>,
}

impl Answer {
    /// A text answer, streamed as the given pieces.
    pub fn text_pieces(pieces: &[&str]) -> Self {
        Answer {
            text: pieces.iter().map(|p| (*p).to_owned()).collect(),
            tool_calls: Vec::new(),
            usage: Usage::new(11, 6),
            stop: Stop::End,
            model: None,
        }
    }

    /// A text answer, streamed word by word.
    pub fn text(text: &str) -> Self {
        let mut pieces = Vec::new();
        let mut current = String::new();
        for ch in text.chars() {
            if ch == ' ' && !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
            }
            current.push(ch);
        }
        if !current.is_empty() {
            pieces.push(current);
        }
        Answer { text: pieces, ..Answer::text_pieces(&[]) }
    }

    /// A tool-calling answer without text.
    pub fn tools(calls: Vec<ToolCall>) -> Self {
        Answer { tool_calls: calls, stop: Stop::Tool, ..Answer::text_pieces(&[]) }
    }

    /// Sets the usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Adds tool calls after the text and sets the stop reason to tool use.
    pub fn with_tools(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self.stop = Stop::Tool;
        self
    }

    /// Sets the stop reason.
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Reports this model name instead of echoing the request's.
    pub fn with_model(mut self, model: &str) -> Self {
        self.model = Some(model.to_owned());
        self
    }

    /// All text pieces joined.
    pub fn full_text(&self) -> String {
        self.text.concat()
    }
}

/// How a scripted body ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// All chunks, then a clean end of body.
    Complete,
    /// After `n` chunks the connection is aborted (no terminating chunk, no final event).
    DisconnectAfter(usize),
    /// After `n` chunks nothing more is sent until the peer closes the connection.
    StallAfter(usize),
    /// After `n` chunks the flavor's in-band error event is sent, then the body ends.
    InbandErrorAfter(usize),
}

/// Body of a scripted reply.
#[derive(Clone, Debug)]
pub enum ReplyBody {
    /// Rendered from an [`Answer`] in the mock's flavor; JSON, SSE or NDJSON per the request.
    Answer(Answer),
    /// Fixed status, headers and body chunks.
    Raw {
        /// HTTP status.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// Body chunks (each an SSE event, NDJSON line or arbitrary piece).
        chunks: Vec<Bytes>,
    },
}

/// A scripted response: body plus delivery behaviour.
#[derive(Clone, Debug)]
pub struct Reply {
    /// What to send.
    pub body: ReplyBody,
    /// Extra headers added to the response.
    pub extra_headers: Vec<(String, String)>,
    /// Delay before the response headers.
    pub delay: Duration,
    /// Gap before every chunk after the first.
    pub gap: Duration,
    /// Re-chunk the body into writes of at most this many bytes.
    pub split: Option<usize>,
    /// How the body ends.
    pub ending: Ending,
}

impl Reply {
    fn with_body(body: ReplyBody) -> Self {
        Reply {
            body,
            extra_headers: Vec::new(),
            delay: Duration::ZERO,
            gap: Duration::ZERO,
            split: None,
            ending: Ending::Complete,
        }
    }

    /// Answers with `answer`, rendered in the mock's format.
    pub fn answer(answer: Answer) -> Self {
        Reply::with_body(ReplyBody::Answer(answer))
    }

    /// A raw response with the given status, content type and body chunks.
    pub fn raw(status: u16, content_type: &str, chunks: Vec<Bytes>) -> Self {
        Reply::with_body(ReplyBody::Raw {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            chunks,
        })
    }

    /// A JSON response.
    pub fn json(status: u16, body: &Value) -> Self {
        Reply::raw(status, "application/json", vec![Bytes::from(body.to_string())])
    }

    /// An HTML error page, as a CDN or load balancer sends.
    pub fn html(status: u16) -> Self {
        let page = format!(
            "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n<center><h1>{status} \
             Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
        );
        Reply::raw(status, "text/html", vec![Bytes::from(page)])
    }

    /// The flavor's own error envelope for `status` (e.g. Anthropic `rate_limit_error`).
    pub fn error(flavor: Flavor, status: u16, message: &str) -> Self {
        match flavor {
            Flavor::OpenAi => Reply::json(status, &openai::error_body(status, message)),
            Flavor::Anthropic => Reply::json(status, &anthropic::error_body(status, message)),
            Flavor::Ollama => Reply::json(status, &json!({ "error": message })),
        }
    }

    /// An SSE fixture file under `tests/fixtures/`, one chunk per event (blank-line separated).
    pub fn sse_fixture(relative: &str) -> Self {
        // The recorded files lack the final blank line; a real stream ends every event with one.
        let text = format!("{}\n\n", read_fixture(relative).trim_end());
        let chunks = split_keep_separator(&text, "\n\n");
        Reply::raw(200, "text/event-stream", chunks)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits this long before sending the response headers.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long between body chunks.
    pub fn gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }

    /// Re-chunks the body into writes of at most `bytes` bytes (1 = byte by byte).
    pub fn split(mut self, bytes: usize) -> Self {
        self.split = Some(bytes.max(1));
        self
    }

    /// Sets how the body ends.
    pub fn ending(mut self, ending: Ending) -> Self {
        self.ending = ending;
        self
    }
}

/// Reads a file under `tests/fixtures/`.
///
/// # Panics
/// When the file is missing: a broken fixture path is a test bug.
pub fn read_fixture(relative: &str) -> String {
    let path = fixtures_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The `tests/fixtures` directory of this crate.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn split_keep_separator(text: &str, sep: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(sep) {
        out.push(Bytes::copy_from_slice(&rest.as_bytes()[..pos + sep.len()]));
        rest = &rest[pos + sep.len()..];
    }
    if !rest.is_empty() {
        out.push(Bytes::copy_from_slice(rest.as_bytes()));
    }
    out
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// Body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl RecordedRequest {
    /// A header value as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The percent-decoded value of one query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The parsed JSON body.
    ///
    /// # Panics
    /// When the body was not JSON.
    pub fn body_json(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| panic!("request body is not JSON: {:?}", self.body))
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component; invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a streamed body ended, as seen by the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyOutcome {
    /// Every chunk was handed to hyper.
    Completed,
    /// The peer went away before the body was complete; `after` is measured from the last chunk sent
    /// (or from the stall start), so it bounds how long the peer took to hang up.
    PeerClosed {
        /// Time between the last successful write (or stall start) and noticing the close.
        after: Duration,
    },
    /// The mock aborted the connection on purpose.
    Aborted,
}

#[derive(Default)]
struct Scripts {
    queued: Vec<(String, Reply)>,
    sticky: Vec<(String, Reply)>,
}

struct State {
    flavor: Flavor,
    requests: Mutex<Vec<RecordedRequest>>,
    scripts: Mutex<Scripts>,
    models: Mutex<Vec<String>>,
    outcomes: Mutex<Vec<BodyOutcome>>,
    outcome_tx: watch::Sender<usize>,
}

/// A running mock upstream; stops accepting connections when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MockUpstream {
    /// Starts a mock of `flavor` on `127.0.0.1:0` with a default model list.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub async fn start(flavor: Flavor) -> Self {
        #[allow(clippy::expect_used)] // A test harness failing to bind loopback cannot continue.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock upstream");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("mock local addr");
        let models = match flavor {
            Flavor::OpenAi => vec!["gpt-4o-mini".to_owned(), "gpt-4o".to_owned()],
            Flavor::Anthropic => {
                vec!["claude-sonnet-4-5-20250929".to_owned(), "claude-haiku-4-5-20251001".to_owned()]
            }
            Flavor::Ollama => vec!["llama3.2:latest".to_owned(), "hf.co/org/repo:Q4_K_M".to_owned()],
        };
        let (outcome_tx, _) = watch::channel(0);
        let state = Arc::new(State {
            flavor,
            requests: Mutex::new(Vec::new()),
            scripts: Mutex::new(Scripts::default()),
            models: Mutex::new(models),
            outcomes: Mutex::new(Vec::new()),
            outcome_tx,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        MockUpstream { addr, state, stop }
    }

    /// The flavor this mock plays.
    pub fn flavor(&self) -> Flavor {
        self.state.flavor
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `base_url` to put in the gateway config: with `/v1` for OpenAI, bare for the others.
    pub fn base_url(&self) -> String {
        match self.state.flavor {
            Flavor::OpenAi => format!("http://{}/v1", self.addr),
            Flavor::Anthropic | Flavor::Ollama => self.url(),
        }
    }

    /// Replaces the model list served by the model endpoint.
    pub async fn set_models(&self, models: &[&str]) {
        *self.state.models.lock().await = models.iter().map(|m| (*m).to_owned()).collect();
    }

    /// Queues a one-shot reply for `path` (FIFO, used before sticky replies).
    pub async fn enqueue(&self, path: &str, reply: Reply) {
        self.state.scripts.lock().await.queued.push((path.to_owned(), reply));
    }

    /// Replies with `reply` on `path` from now on (after queued replies are used up).
    pub async fn always(&self, path: &str, reply: Reply) {
        let mut scripts = self.state.scripts.lock().await;
        scripts.sticky.retain(|(p, _)| p != path);
        scripts.sticky.push((path.to_owned(), reply));
    }

    /// Queues a one-shot reply on the chat endpoint.
    pub async fn enqueue_chat(&self, reply: Reply) {
        self.enqueue(self.state.flavor.chat_path(), reply).await;
    }

    /// Every request received so far, in arrival order.
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().await.clone()
    }

    /// Requests received on `path`.
    pub async fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.state.requests.lock().await.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Number of requests received on `path`.
    pub async fn calls(&self, path: &str) -> usize {
        self.state.requests.lock().await.iter().filter(|r| r.path == path).count()
    }

    /// The last request on the chat endpoint.
    ///
    /// # Panics
    /// When there was none.
    pub async fn last_chat(&self) -> RecordedRequest {
        let path = self.state.flavor.chat_path();
        let all = self.requests_to(path).await;
        all.last().cloned().unwrap_or_else(|| panic!("mock {:?} received no request on {path}", self.state.flavor))
    }

    /// Outcomes of the streamed bodies so far.
    pub async fn outcomes(&self) -> Vec<BodyOutcome> {
        self.state.outcomes.lock().await.clone()
    }

    /// Waits until some body ends with [`BodyOutcome::PeerClosed`]; returns it, or `None` on timeout.
    pub async fn wait_peer_closed(&self, timeout: Duration) -> Option<BodyOutcome> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.state.outcome_tx.subscribe();
        loop {
            if let Some(o) =
                self.state.outcomes.lock().await.iter().find(|o| matches!(o, BodyOutcome::PeerClosed { .. }))
            {
                return Some(*o);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return None;
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// Response body fed by a task through a one-slot channel, so every chunk is flushed on its own and a
/// dropped body (peer gone) is noticed by the feeding task.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

type MockResponse = Response<ChannelBody>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<MockResponse, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let json = serde_json::from_slice::<Value>(&body).ok();
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body,
        json,
    };
    state.requests.lock().await.push(recorded.clone());

    let reply = pick_reply(&state, &recorded).await;
    let (status, mut headers, chunks, inband_error) = render(&state, &recorded, &reply.body).await;
    headers.extend(reply.extra_headers.iter().cloned());
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }

    let chunks = match reply.split {
        Some(n) => rechunk(&chunks, n, &reply.ending),
        None => (chunks, reply.ending.clone()),
    };
    let (chunks, ending) = chunks;

    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(feed_body(state.clone(), tx, chunks, reply.gap, ending, inband_error));

    let mut response = Response::new(ChannelBody { rx });
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().append(k, v);
        }
    }
    Ok(response)
}

/// Splits the body into `n`-byte pieces, translating a chunk-count ending into a piece-count ending.
fn rechunk(chunks: &[Bytes], n: usize, ending: &Ending) -> (Vec<Bytes>, Ending) {
    let mut out = Vec::new();
    let mut boundaries = vec![0];
    for c in chunks {
        let mut start = 0;
        while start < c.len() {
            let end = (start + n).min(c.len());
            out.push(c.slice(start..end));
            start = end;
        }
        boundaries.push(out.len());
    }
    let map = |k: usize| boundaries.get(k).copied().unwrap_or(out.len());
    let ending = match *ending {
        Ending::Complete => Ending::Complete,
        Ending::DisconnectAfter(k) => Ending::DisconnectAfter(map(k)),
        Ending::StallAfter(k) => Ending::StallAfter(map(k)),
        Ending::InbandErrorAfter(k) => Ending::InbandErrorAfter(map(k)),
    };
    (out, ending)
}

async fn record_outcome(state: &State, outcome: BodyOutcome) {
    state.outcomes.lock().await.push(outcome);
    state.outcome_tx.send_modify(|n| *n += 1);
}

async fn feed_body(
    state: Arc<State>,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    chunks: Vec<Bytes>,
    gap: Duration,
    ending: Ending,
    inband_error: Bytes,
) {
    let limit = match ending {
        Ending::Complete => chunks.len(),
        Ending::DisconnectAfter(k) | Ending::StallAfter(k) | Ending::InbandErrorAfter(k) => k.min(chunks.len()),
    };
    let mut last_write = Instant::now();
    for (i, chunk) in chunks.into_iter().take(limit).enumerate() {
        if i > 0 && !gap.is_zero() {
            tokio::select! {
                () = tx.closed() => {
                    record_outcome(&state, BodyOutcome::PeerClosed { after: last_write.elapsed() }).await;
                    return;
                }
                () = tokio::time::sleep(gap) => {}
            }
        }
        if tx.send(Ok(Frame::data(chunk))).await.is_err() {
            record_outcome(&state, BodyOutcome::PeerClosed { after: last_write.elapsed() }).await;
            return;
        }
        last_write = Instant::now();
    }
    match ending {
        Ending::Complete => {
            // The slot frees once hyper took the last chunk; the body then ends when `tx` drops.
            let _ = tx.reserve().await;
            record_outcome(&state, BodyOutcome::Completed).await;
        }
        Ending::InbandErrorAfter(_) => {
            let sent = tx.send(Ok(Frame::data(inband_error))).await.is_ok();
            let _ = tx.reserve().await;
            record_outcome(
                &state,
                if sent { BodyOutcome::Completed } else { BodyOutcome::PeerClosed { after: last_write.elapsed() } },
            )
            .await;
        }
        Ending::DisconnectAfter(_) => {
            // Let hyper write what it has, then abort the connection mid-body.
            let _ = tx.reserve().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(Err("mock upstream: scripted disconnect".into())).await;
            record_outcome(&state, BodyOutcome::Aborted).await;
        }
        Ending::StallAfter(_) => {
            let stalled = Instant::now();
            tx.closed().await;
            record_outcome(&state, BodyOutcome::PeerClosed { after: stalled.elapsed() }).await;
        }
    }
}

async fn pick_reply(state: &State, req: &RecordedRequest) -> Reply {
    let mut scripts = state.scripts.lock().await;
    if let Some(pos) = scripts.queued.iter().position(|(p, _)| *p == req.path) {
        return scripts.queued.remove(pos).1;
    }
    if let Some((_, r)) = scripts.sticky.iter().find(|(p, _)| *p == req.path) {
        return r.clone();
    }
    Reply::answer(Answer::text("Hello there!"))
}

/// Renders the reply: status, headers, body chunks, and the flavor's in-band error chunk.
async fn render(
    state: &State,
    req: &RecordedRequest,
    body: &ReplyBody,
) -> (u16, Vec<(String, String)>, Vec<Bytes>, Bytes) {
    let flavor = state.flavor;
    let inband = match flavor {
        Flavor::OpenAi => openai::inband_error(),
        Flavor::Anthropic => anthropic::inband_error(),
        Flavor::Ollama => ollama::inband_error(),
    };
    match body {
        ReplyBody::Raw { status, headers, chunks } => (*status, headers.clone(), chunks.clone(), inband),
        ReplyBody::Answer(answer) => {
            let path = req.path.as_str();
            let models = state.models.lock().await.clone();
            let (status, ct, chunks) = match (flavor, path) {
                (Flavor::OpenAi, "/v1/chat/completions") => openai::render_chat(req, answer),
                (Flavor::OpenAi, "/v1/models") => openai::render_models(&models),
                (Flavor::Anthropic, "/v1/messages") => anthropic::render_chat(req, answer),
                (Flavor::Anthropic, "/v1/models") => anthropic::render_models(req, &models),
                (Flavor::Ollama, "/api/chat") => ollama::render_chat(req, answer),
                (Flavor::Ollama, "/api/tags") => ollama::render_models(&models),
                _ => {
                    let reply = Reply::error(flavor, 404, &format!("mock: no route for {} {path}", req.method));
                    return match reply.body {
                        ReplyBody::Raw { status, headers, chunks } => (status, headers, chunks, inband),
                        ReplyBody::Answer(_) => (404, Vec::new(), Vec::new(), inband),
                    };
                }
            };
            (status, vec![("content-type".to_owned(), ct.to_owned())], chunks, inband)
        }
    }
}

/// Whether the request asked for a stream (Ollama streams unless `"stream": false`).
pub(crate) fn wants_stream(flavor: Flavor, req: &RecordedRequest) -> bool {
    let flag = req.json.as_ref().and_then(|j| j.get("stream")).and_then(Value::as_bool);
    match flavor {
        Flavor::Ollama => flag.unwrap_or(true),
        Flavor::OpenAi | Flavor::Anthropic => flag.unwrap_or(false),
    }
}

/// The request's `model`, or a placeholder.
pub(crate) fn request_model(req: &RecordedRequest, answer: &Answer) -> String {
    answer
        .model
        .clone()
        .or_else(|| req.json.as_ref()?.get("model")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "mock-model".to_owned())
}

/// Splits a JSON text into three pieces (first one empty) the way providers fragment arguments.
pub(crate) fn fragments(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let a = chars.len() / 3;
    let b = 2 * chars.len() / 3;
    vec![String::new(), chars[..a].iter().collect(), chars[a..b].iter().collect(), chars[b..].iter().collect()]
}
