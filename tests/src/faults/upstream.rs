//! A scripted HTTP/1.1 upstream on raw TCP, for faults a well-behaved HTTP server cannot produce.
//!
//! Each request takes the next queued [`Script`] (FIFO), else the sticky one, else a short text answer
//! in the flavor's format. Bodies are always sent with `transfer-encoding: chunked`, one HTTP chunk per
//! piece and flushed, so the gateway sees the pieces as the script cut them. The connection is kept
//! alive after a complete response.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::mock::{anthropic, ollama, openai, Answer, Flavor};

/// Longest a stalled response waits for the peer to hang up before the mock gives up.
pub const STALL_CAP: Duration = Duration::from_secs(60);

/// How a scripted body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every piece, then the terminating chunk.
    Complete,
    /// After `n` pieces: RST (`SO_LINGER` 0, then close).
    ResetAfter(usize),
    /// After `n` pieces: FIN without the terminating chunk (a truncated body).
    CloseAfter(usize),
    /// After `n` pieces: nothing more until the peer hangs up (capped at [`STALL_CAP`]).
    StallAfter(usize),
}

/// What to send as the body.
#[derive(Clone, Debug)]
pub enum Body {
    /// Fixed pieces.
    Pieces(Vec<Bytes>),
    /// An answer rendered in the flavor's format, streamed or not per the request's `stream`.
    Answer(Answer),
    /// An OpenAI SSE stream of `count` content chunks of `piece_bytes` ASCII bytes each, generated lazily
    /// (for large streams), then a finish chunk and `[DONE]`.
    LargeOpenAiStream {
        /// Content chunks.
        count: usize,
        /// Bytes of `delta.content` per chunk.
        piece_bytes: usize,
    },
}

/// One scripted response.
#[derive(Clone, Debug)]
pub struct Script {
    /// HTTP status.
    pub status: u16,
    /// Response headers (besides `transfer-encoding`).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// Wait before the status line (aborted early when the peer hangs up).
    pub delay: Duration,
    /// Wait between pieces.
    pub gap: Duration,
    /// How the body ends.
    pub end: End,
    /// Close (FIN) right after reading the request, without any answer.
    pub close_without_answer: bool,
    /// Reset (RST) right after reading the request, without any answer.
    pub reset_without_answer: bool,
}

impl Script {
    /// A 200 answer in the flavor's format.
    pub fn answer(answer: Answer) -> Self {
        Script {
            status: 200,
            headers: Vec::new(),
            body: Body::Answer(answer),
            delay: Duration::ZERO,
            gap: Duration::ZERO,
            end: End::Complete,
            close_without_answer: false,
            reset_without_answer: false,
        }
    }

    /// A response with the given status, content type and body pieces.
    pub fn raw(status: u16, content_type: &str, pieces: Vec<Bytes>) -> Self {
        Script {
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: Body::Pieces(pieces),
            status,
            ..Script::answer(Answer::text(""))
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: &Value) -> Self {
        Script::raw(status, "application/json", vec![Bytes::from(body.to_string())])
    }

    /// The flavor's own error envelope.
    pub fn error(flavor: Flavor, status: u16, message: &str) -> Self {
        match flavor {
            Flavor::OpenAi => Script::json(status, &openai::error_body(status, message)),
            Flavor::Anthropic => Script::json(status, &anthropic::error_body(status, message)),
            Flavor::Ollama => Script::json(status, &json!({ "error": message })),
        }
    }

    /// A large OpenAI SSE stream (see [`Body::LargeOpenAiStream`]).
    pub fn large_openai_stream(count: usize, piece_bytes: usize) -> Self {
        Script {
            headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())],
            body: Body::LargeOpenAiStream { count, piece_bytes },
            ..Script::answer(Answer::text(""))
        }
    }

    /// Closes the connection after reading the request, without answering.
    pub fn close_without_answer() -> Self {
        Script { close_without_answer: true, ..Script::answer(Answer::text("")) }
    }

    /// Resets the connection after reading the request, without answering.
    pub fn reset_without_answer() -> Self {
        Script { reset_without_answer: true, ..Script::answer(Answer::text("")) }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Delay before the status line.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Gap between pieces.
    pub fn gap(mut self, d: Duration) -> Self {
        self.gap = d;
        self
    }

    /// How the body ends.
    pub fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }
}

/// One request the fault upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request path (without query).
    pub path: String,
    /// The body parsed as JSON, when it is.
    pub json: Option<Value>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
    busy: AtomicUsize,
    peer_closed: AtomicUsize,
    completed: AtomicUsize,
    /// Responses the script itself cut short (reset, close, unanswered, stall cap reached).
    aborted: AtomicUsize,
    requests: AtomicUsize,
    bytes_written: AtomicU64,
}

struct State {
    flavor: Flavor,
    queued: Mutex<VecDeque<Script>>,
    sticky: Mutex<Option<Script>>,
    received: Mutex<Vec<Received>>,
    c: Counters,
}

/// A running fault upstream; stops accepting when dropped (open connections end with their tasks).
pub struct FaultUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn up(a: &'a AtomicUsize) -> Self {
        a.fetch_add(1, Ordering::SeqCst);
        Gauge(a)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultUpstream {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When loopback cannot be bound.
    pub async fn start(flavor: Flavor) -> Self {
        #[allow(clippy::expect_used)]
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fault upstream");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("fault upstream addr");
        let state = Arc::new(State {
            flavor,
            queued: Mutex::new(VecDeque::new()),
            sticky: Mutex::new(None),
            received: Mutex::new(Vec::new()),
            c: Counters::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        FaultUpstream { addr, state, stop }
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.state.flavor
    }

    /// The `base_url` for the gateway config (with `/v1` for OpenAI).
    pub fn base_url(&self) -> String {
        match self.state.flavor {
            Flavor::OpenAi => format!("http://{}/v1", self.addr),
            Flavor::Anthropic | Flavor::Ollama => format!("http://{}", self.addr),
        }
    }

    /// Queues a one-shot script.
    pub async fn enqueue(&self, s: Script) {
        self.state.queued.lock().await.push_back(s);
    }

    /// Uses `s` for every request once the queue is empty (`None`: the default answer).
    pub async fn always(&self, s: Option<Script>) {
        *self.state.sticky.lock().await = s;
    }

    /// Requests received so far.
    pub async fn received(&self) -> Vec<Received> {
        self.state.received.lock().await.clone()
    }

    /// Number of requests received.
    pub fn calls(&self) -> usize {
        self.state.c.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.c.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open (idle keep-alive ones included).
    pub fn open(&self) -> usize {
        self.state.c.open.load(Ordering::SeqCst)
    }

    /// Connections with a request being answered (the leak check: 0 when the gateway let go of all).
    pub fn busy(&self) -> usize {
        self.state.c.busy.load(Ordering::SeqCst)
    }

    /// Responses abandoned because the peer hung up (write failed, or EOF while stalled/delayed).
    pub fn peer_closed(&self) -> usize {
        self.state.c.peer_closed.load(Ordering::SeqCst)
    }

    /// Responses written completely.
    pub fn completed(&self) -> usize {
        self.state.c.completed.load(Ordering::SeqCst)
    }

    /// Body bytes written to the gateway so far.
    pub fn bytes_written(&self) -> u64 {
        self.state.c.bytes_written.load(Ordering::SeqCst)
    }

    /// Waits until no response is in progress; returns whether that happened within `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        super::wait_for(timeout, || async { self.busy() == 0 }).await
    }

    /// Waits until `peer_closed() >= n`.
    pub async fn wait_peer_closed(&self, n: usize, timeout: Duration) -> bool {
        super::wait_for(timeout, || async { self.peer_closed() >= n }).await
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
        state.c.accepted.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _open = Gauge::up(&state.c.open);
            tokio::select! {
                () = stop.cancelled() => {}
                () = serve_connection(&state, tcp) => {}
            }
        });
    }
}

/// Reads one request (head + content-length body). `None` on EOF or garbage.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Bytes)> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split(' ').nth(1)?.split('?').next()?.to_owned();
            let len: usize = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 16 * 1024];
                let n = tcp.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = Bytes::copy_from_slice(&buf[end + 4..total]);
            buf.drain(..total);
            return Some((path, body));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Resolves when the peer closes (EOF or error); extra bytes are discarded (no pipelining here).
async fn peer_gone(tcp: &mut TcpStream) {
    let mut b = [0u8; 1024];
    loop {
        match tcp.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

enum Written {
    Done,
    PeerClosed,
}

async fn serve_connection(state: &Arc<State>, mut tcp: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some((path, body)) = read_request(&mut tcp, &mut buf).await else { return };
        let busy = Gauge::up(&state.c.busy);
        state.c.requests.fetch_add(1, Ordering::SeqCst);
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        state.received.lock().await.push(Received { path: path.clone(), json: json.clone() });
        let script = {
            let next = state.queued.lock().await.pop_front();
            match next {
                Some(s) => s,
                None => match state.sticky.lock().await.clone() {
                    Some(s) => s,
                    None => Script::answer(Answer::text("Hello there!")),
                },
            }
        };
        if script.reset_without_answer {
            state.c.aborted.fetch_add(1, Ordering::SeqCst);
            drop(busy);
            let _ = tcp.set_zero_linger();
            return;
        }
        if script.close_without_answer {
            state.c.aborted.fetch_add(1, Ordering::SeqCst);
            drop(busy);
            let _ = tcp.shutdown().await;
            return;
        }
        match respond(state, &mut tcp, &script, json.as_ref()).await {
            Written::Done => {}
            Written::PeerClosed => {
                state.c.peer_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        match script.end {
            End::Complete => {
                state.c.completed.fetch_add(1, Ordering::SeqCst);
            }
            End::ResetAfter(_) => {
                state.c.aborted.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_zero_linger();
                return;
            }
            End::CloseAfter(_) => {
                state.c.aborted.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.shutdown().await;
                return;
            }
            End::StallAfter(_) => {
                let closed = tokio::time::timeout(STALL_CAP, peer_gone(&mut tcp)).await.is_ok();
                if closed {
                    state.c.peer_closed.fetch_add(1, Ordering::SeqCst);
                } else {
                    state.c.aborted.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
        drop(busy);
    }
}

fn render(flavor: Flavor, answer: &Answer, req: Option<&Value>) -> (&'static str, Vec<Bytes>) {
    let model = answer
        .model
        .clone()
        .or_else(|| req?.get("model")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "mock-model".to_owned());
    let flag = req.and_then(|j| j.get("stream")).and_then(Value::as_bool);
    let stream = match flavor {
        Flavor::Ollama => flag.unwrap_or(true),
        Flavor::OpenAi | Flavor::Anthropic => flag.unwrap_or(false),
    };
    match (flavor, stream) {
        (Flavor::OpenAi, true) => {
            let usage =
                req.and_then(|j| j.pointer("/stream_options/include_usage")).and_then(Value::as_bool).unwrap_or(false);
            ("text/event-stream", openai::sse_chunks(&model, answer, usage))
        }
        (Flavor::OpenAi, false) => {
            ("application/json", vec![Bytes::from(openai::completion_json(&model, answer).to_string())])
        }
        (Flavor::Anthropic, true) => ("text/event-stream", anthropic::sse_events(&model, answer)),
        (Flavor::Anthropic, false) => {
            ("application/json", vec![Bytes::from(anthropic::message_json(&model, answer).to_string())])
        }
        (Flavor::Ollama, true) => ("application/x-ndjson", ollama::ndjson_lines(&model, answer)),
        (Flavor::Ollama, false) => {
            ("application/json", vec![Bytes::from(ollama::chat_json(&model, answer).to_string())])
        }
    }
}

fn large_piece(i: usize, count: usize, piece_bytes: usize) -> Bytes {
    if i < count {
        let text: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), piece_bytes).collect();
        let chunk = json!({"id": "chatcmpl-large", "object": "chat.completion.chunk", "created": 1_760_000_000u64,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        Bytes::from(format!("data: {chunk}\n\n"))
    } else if i == count {
        let chunk = json!({"id": "chatcmpl-large", "object": "chat.completion.chunk", "created": 1_760_000_000u64,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": count as u64, "total_tokens": 5 + count as u64}});
        Bytes::from(format!("data: {chunk}\n\n"))
    } else {
        Bytes::from_static(b"data: [DONE]\n\n")
    }
}

#[expect(clippy::needless_range_loop, reason = "large bodies are generated by index, not stored")]
async fn respond(state: &State, tcp: &mut TcpStream, s: &Script, req: Option<&Value>) -> Written {
    if !s.delay.is_zero() {
        tokio::select! {
            () = peer_gone(tcp) => return Written::PeerClosed,
            () = tokio::time::sleep(s.delay) => {}
        }
    }
    let mut headers = s.headers.clone();
    let (pieces, total): (Vec<Bytes>, usize) = match &s.body {
        Body::Pieces(p) => (p.clone(), p.len()),
        Body::Answer(a) => {
            let (ct, p) = render(state.flavor, a, req);
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                headers.push(("content-type".to_owned(), ct.to_owned()));
            }
            let n = p.len();
            (p, n)
        }
        Body::LargeOpenAiStream { count, .. } => (Vec::new(), count + 2),
    };
    let mut head = format!("HTTP/1.1 {} X\r\ntransfer-encoding: chunked\r\n", s.status);
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return Written::PeerClosed;
    }
    let limit = match s.end {
        End::Complete => total,
        End::ResetAfter(n) | End::CloseAfter(n) | End::StallAfter(n) => n.min(total),
    };
    for i in 0..limit {
        if i > 0 && !s.gap.is_zero() {
            tokio::select! {
                () = peer_gone(tcp) => return Written::PeerClosed,
                () = tokio::time::sleep(s.gap) => {}
            }
        }
        let piece = match &s.body {
            Body::LargeOpenAiStream { count, piece_bytes } => large_piece(i, *count, *piece_bytes),
            Body::Pieces(_) | Body::Answer(_) => pieces[i].clone(),
        };
        if piece.is_empty() {
            continue;
        }
        let mut frame = Vec::with_capacity(piece.len() + 16);
        frame.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        frame.extend_from_slice(&piece);
        frame.extend_from_slice(b"\r\n");
        if tcp.write_all(&frame).await.is_err() || tcp.flush().await.is_err() {
            return Written::PeerClosed;
        }
        state.c.bytes_written.fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    if s.end == End::Complete && tcp.write_all(b"0\r\n\r\n").await.is_err() {
        return Written::PeerClosed;
    }
    // Give the kernel a moment to deliver the last bytes before an RST discards them.
    if matches!(s.end, End::ResetAfter(_)) {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Written::Done
}
