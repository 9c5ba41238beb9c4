//! `mock-upstream`: a fast mock of the OpenAI, Anthropic and Ollama chat APIs for load tests.
//!
//! One process answers all three wire formats on one port:
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/chat/completions` | OpenAI JSON, or SSE `data:` chunks + `[DONE]` (a usage chunk when `stream_options.include_usage`) |
//! | `POST /v1/messages` | Anthropic JSON, or SSE with `event:` lines (message_start … message_stop) |
//! | `POST /api/chat` | Ollama JSON, or NDJSON ending with a `done: true` line carrying the counts |
//! | `GET /v1/models` | Anthropic list when the request has `anthropic-version`/`x-api-key`, OpenAI list otherwise |
//! | `GET /api/tags` | Ollama tag list |
//! | `GET/POST /_mock/config` | read / change the delivery parameters at run time (JSON, partial updates) |
//! | `GET /_mock/stats` | requests served |
//!
//! Delivery parameters: latency before the response headers (the first byte), number of content
//! chunks, gap between chunks, and content size in bytes. They come from the CLI flags, can be changed
//! with `POST /_mock/config`, and can be overridden per request with `x-mock-latency-ms`,
//! `x-mock-chunks`, `x-mock-gap-ms` and `x-mock-size` headers.
//!
//! Speed: all bodies are rendered once per parameter set and shared (`Bytes` clones), the request body
//! is scanned for the two flags it needs instead of being parsed, sockets get `TCP_NODELAY`, and the
//! server runs on a multi-threaded runtime with plain HTTP/1.1 keep-alive connections.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Sleep;

/// Fast mock upstream speaking the OpenAI, Anthropic and Ollama chat APIs.
#[derive(Debug, Parser)]
#[command(name = "mock-upstream")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Delay before the response headers (time to first byte), milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Number of content chunks (stream deltas).
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Gap between two stream chunks, milliseconds.
    #[arg(long, default_value_t = 0)]
    gap_ms: u64,
    /// Size of the generated answer text, bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
}

/// Delivery parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Params {
    latency_ms: u64,
    chunks: usize,
    gap_ms: u64,
    size: usize,
}

/// Partial update of [`Params`] (`POST /_mock/config`).
#[derive(Debug, Default, Deserialize)]
struct ParamsPatch {
    latency_ms: Option<u64>,
    chunks: Option<usize>,
    gap_ms: Option<u64>,
    size: Option<usize>,
}

/// One streamed frame: bytes, and whether the chunk gap is waited before it.
type Frames = Arc<[(Bytes, bool)]>;

/// Every body for one parameter set, rendered once.
struct Bodies {
    params: Params,
    openai_json: Bytes,
    openai_sse: Frames,
    openai_sse_usage: Frames,
    anthropic_json: Bytes,
    anthropic_sse: Frames,
    ollama_json: Bytes,
    ollama_ndjson: Frames,
    openai_models: Bytes,
    anthropic_models: Bytes,
    ollama_tags: Bytes,
}

const OPENAI_MODEL: &str = "gpt-4o-mini";
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
const OLLAMA_MODEL: &str = "llama3.2";
const PROMPT_TOKENS: usize = 12;

/// `size` bytes of ASCII text split into `chunks` pieces (the last takes the remainder).
fn pieces(size: usize, chunks: usize) -> Vec<String> {
    const WORDS: &[u8] = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";
    let text: String = (0..size).map(|i| WORDS[i % WORDS.len()] as char).collect();
    let n = chunks.max(1);
    let per = size / n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = i * per;
        let end = if i + 1 == n { size } else { start + per };
        out.push(text[start..end].to_owned());
    }
    out
}

fn sse_data(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_event(name: &str, v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

fn render(params: Params) -> Bodies {
    let parts = pieces(params.size, params.chunks);
    let full: String = parts.concat();
    let out_tokens = parts.len();
    let created = 1_735_689_600_u64;

    // OpenAI.
    let openai_json = Bytes::from(
        json!({
            "id": "chatcmpl-mock0001", "object": "chat.completion", "created": created, "model": OPENAI_MODEL,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": full, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out_tokens,
                      "total_tokens": PROMPT_TOKENS + out_tokens}
        })
        .to_string(),
    );
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id": "chatcmpl-mock0001", "object": "chat.completion.chunk", "created": created,
               "model": OPENAI_MODEL, "system_fingerprint": "fp_mock",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut oa: Vec<(Bytes, bool)> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let delta = if i == 0 { json!({"role": "assistant", "content": p}) } else { json!({"content": p}) };
        oa.push((sse_data(&chunk(delta, serde_json::Value::Null)), i > 0));
    }
    let finish = sse_data(&chunk(json!({}), json!("stop")));
    let done = Bytes::from_static(b"data: [DONE]\n\n");
    let usage_chunk = sse_data(&json!({
        "id": "chatcmpl-mock0001", "object": "chat.completion.chunk", "created": created, "model": OPENAI_MODEL,
        "system_fingerprint": "fp_mock", "choices": [],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out_tokens,
                  "total_tokens": PROMPT_TOKENS + out_tokens}
    }));
    let mut openai_sse = oa.clone();
    openai_sse.push((concat(&[&finish, &done]), false));
    let mut openai_sse_usage = oa;
    openai_sse_usage.push((concat(&[&finish, &usage_chunk, &done]), false));

    // Anthropic.
    let anthropic_json = Bytes::from(
        json!({
            "id": "msg_01MockXFDUDYJgAACzvnptvV", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": full}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": out_tokens, "service_tier": "standard"}
        })
        .to_string(),
    );
    let start = sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_01MockXFDUDYJgAACzvnptvV", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"}}}),
    );
    let block_start = sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    let mut an: Vec<(Bytes, bool)> = vec![(concat(&[&start, &block_start]), false)];
    for (i, p) in parts.iter().enumerate() {
        an.push((
            sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            ),
            i > 0,
        ));
    }
    let tail = concat(&[
        &sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
        &sse_event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": out_tokens}}),
        ),
        &sse_event("message_stop", &json!({"type": "message_stop"})),
    ]);
    an.push((tail, false));

    // Ollama.
    let metrics = |v: &mut serde_json::Value| {
        v["done"] = json!(true);
        v["done_reason"] = json!("stop");
        v["total_duration"] = json!(3_244_883_583_u64);
        v["load_duration"] = json!(2_969_184_542_u64);
        v["prompt_eval_count"] = json!(PROMPT_TOKENS);
        v["prompt_eval_duration"] = json!(141_656_333_u64);
        v["eval_count"] = json!(out_tokens);
        v["eval_duration"] = json!(133_293_625_u64);
    };
    let mut oj = json!({"model": OLLAMA_MODEL, "created_at": "2025-07-07T20:32:53.844124Z",
                        "message": {"role": "assistant", "content": full}});
    metrics(&mut oj);
    let ollama_json = Bytes::from(oj.to_string());
    let mut ol: Vec<(Bytes, bool)> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let line = json!({"model": OLLAMA_MODEL, "created_at": "2025-10-26T17:15:24.000000Z",
                          "message": {"role": "assistant", "content": p}, "done": false});
        ol.push((Bytes::from(format!("{line}\n")), i > 0));
    }
    let mut last = json!({"model": OLLAMA_MODEL, "created_at": "2025-10-26T17:15:26.000000Z",
                          "message": {"role": "assistant", "content": ""}});
    metrics(&mut last);
    ol.push((Bytes::from(format!("{last}\n")), false));

    // Model lists.
    let openai_models = Bytes::from(
        json!({"object": "list", "data": [
            {"id": OPENAI_MODEL, "object": "model", "created": created, "owned_by": "mock"},
            {"id": "gpt-4o", "object": "model", "created": created, "owned_by": "mock"}]})
        .to_string(),
    );
    let anthropic_models = Bytes::from(
        json!({"data": [{"type": "model", "id": ANTHROPIC_MODEL, "display_name": "Claude Sonnet 4.5",
                          "created_at": "2025-09-29T00:00:00Z"}],
               "has_more": false, "first_id": ANTHROPIC_MODEL, "last_id": ANTHROPIC_MODEL})
        .to_string(),
    );
    let ollama_tags = Bytes::from(
        json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest",
                            "modified_at": "2025-05-04T17:37:44.706015396-07:00", "size": 2_019_393_189_u64,
                            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                        "families": ["llama"], "parameter_size": "3.2B",
                                        "quantization_level": "Q4_K_M"}}]})
        .to_string(),
    );

    Bodies {
        params,
        openai_json,
        openai_sse: openai_sse.into(),
        openai_sse_usage: openai_sse_usage.into(),
        anthropic_json,
        anthropic_sse: an.into(),
        ollama_json,
        ollama_ndjson: ol.into(),
        openai_models,
        anthropic_models,
        ollama_tags,
    }
}

fn concat(parts: &[&Bytes]) -> Bytes {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    Bytes::from(v)
}

/// Response body: one buffer, or frames spaced by the chunk gap.
enum MockBody {
    Full(Option<Bytes>),
    Stream { frames: Frames, next: usize, gap: Duration, sleep: Option<Pin<Box<Sleep>>>, armed: bool },
}

impl MockBody {
    fn stream(frames: Frames, gap: Duration) -> Self {
        MockBody::Stream { frames, next: 0, gap, sleep: None, armed: false }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream { frames, next, gap, sleep, armed } => {
                let Some((bytes, wait)) = frames.get(*next) else {
                    return Poll::Ready(None);
                };
                if *wait && !gap.is_zero() {
                    let deadline = tokio::time::Instant::now() + *gap;
                    let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if !*armed {
                        s.as_mut().reset(deadline);
                        *armed = true;
                    }
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *armed = false;
                }
                *next += 1;
                Poll::Ready(Some(Ok(Frame::data(bytes.clone()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Stream { frames, next, .. } => *next >= frames.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Stream { .. } => SizeHint::default(),
        }
    }
}

use std::future::Future;

struct State {
    current: ArcSwap<Bodies>,
    overrides: Mutex<HashMap<Params, Arc<Bodies>>>,
    requests: AtomicU64,
}

/// Finds `"key"` followed by `:` and `true` (whitespace allowed) anywhere in a JSON body.
fn json_flag(body: &[u8], key: &str) -> Option<bool> {
    let needle = format!("\"{key}\"");
    let n = needle.as_bytes();
    let mut i = 0;
    while i + n.len() <= body.len() {
        if &body[i..i + n.len()] == n {
            let mut j = i + n.len();
            while j < body.len() && body[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < body.len() && body[j] == b':' {
                j += 1;
                while j < body.len() && body[j].is_ascii_whitespace() {
                    j += 1;
                }
                if body[j..].starts_with(b"true") {
                    return Some(true);
                }
                if body[j..].starts_with(b"false") {
                    return Some(false);
                }
            }
        }
        i += 1;
    }
    None
}

fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl State {
    fn bodies_for(&self, h: &HeaderMap) -> Arc<Bodies> {
        let cur = self.current.load_full();
        let lat = header_num(h, "x-mock-latency-ms");
        let chunks = header_num(h, "x-mock-chunks");
        let gap = header_num(h, "x-mock-gap-ms");
        let size = header_num(h, "x-mock-size");
        if lat.is_none() && chunks.is_none() && gap.is_none() && size.is_none() {
            return cur;
        }
        let p = Params {
            latency_ms: lat.unwrap_or(cur.params.latency_ms),
            chunks: chunks.map_or(cur.params.chunks, |c| c as usize),
            gap_ms: gap.unwrap_or(cur.params.gap_ms),
            size: size.map_or(cur.params.size, |s| s as usize),
        };
        let mut cache = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 64 {
            cache.clear();
        }
        cache.entry(p).or_insert_with(|| Arc::new(render(p))).clone()
    }
}

fn respond(status: StatusCode, ctype: &'static str, body: MockBody) -> Response<MockBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    respond(status, "application/json", MockBody::Full(Some(body)))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path();
    if path == "/_mock/config" {
        if parts.method == Method::POST {
            let patch: ParamsPatch = serde_json::from_slice(&body).unwrap_or_default();
            let cur = state.current.load().params;
            let p = Params {
                latency_ms: patch.latency_ms.unwrap_or(cur.latency_ms),
                chunks: patch.chunks.unwrap_or(cur.chunks),
                gap_ms: patch.gap_ms.unwrap_or(cur.gap_ms),
                size: patch.size.unwrap_or(cur.size),
            };
            state.current.store(Arc::new(render(p)));
        }
        let p = state.current.load().params;
        return Ok(json_response(StatusCode::OK, Bytes::from(json!(p).to_string())));
    }
    if path == "/_mock/stats" {
        let n = state.requests.load(Ordering::Relaxed);
        return Ok(json_response(StatusCode::OK, Bytes::from(json!({"requests": n}).to_string())));
    }
    let b = state.bodies_for(&parts.headers);
    let (latency, gap) = (Duration::from_millis(b.params.latency_ms), Duration::from_millis(b.params.gap_ms));
    let resp = match (&parts.method, path) {
        (&Method::POST, "/v1/chat/completions") => {
            if json_flag(&body, "stream") == Some(true) {
                let frames = if json_flag(&body, "include_usage") == Some(true) {
                    b.openai_sse_usage.clone()
                } else {
                    b.openai_sse.clone()
                };
                respond(StatusCode::OK, "text/event-stream", MockBody::stream(frames, gap))
            } else {
                json_response(StatusCode::OK, b.openai_json.clone())
            }
        }
        (&Method::POST, "/v1/messages") => {
            if json_flag(&body, "stream") == Some(true) {
                respond(
                    StatusCode::OK,
                    "text/event-stream; charset=utf-8",
                    MockBody::stream(b.anthropic_sse.clone(), gap),
                )
            } else {
                json_response(StatusCode::OK, b.anthropic_json.clone())
            }
        }
        (&Method::POST, "/api/chat") => {
            // Ollama streams unless told `"stream": false`.
            if json_flag(&body, "stream") != Some(false) {
                respond(StatusCode::OK, "application/x-ndjson", MockBody::stream(b.ollama_ndjson.clone(), gap))
            } else {
                respond(StatusCode::OK, "application/json; charset=utf-8", MockBody::Full(Some(b.ollama_json.clone())))
            }
        }
        (&Method::GET, "/v1/models") => {
            if parts.headers.contains_key("anthropic-version") || parts.headers.contains_key("x-api-key") {
                json_response(StatusCode::OK, b.anthropic_models.clone())
            } else {
                json_response(StatusCode::OK, b.openai_models.clone())
            }
        }
        (&Method::GET, "/api/tags") => json_response(StatusCode::OK, b.ollama_tags.clone()),
        _ => {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                Bytes::from_static(br#"{"error":{"message":"mock: no such route","type":"not_found"}}"#),
            ))
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let params = Params { latency_ms: args.latency_ms, chunks: args.chunks, gap_ms: args.gap_ms, size: args.size };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    rt.block_on(async move {
        let socket =
            if args.listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(args.listen)?;
        let listener = socket.listen(65_535)?;
        let local = listener.local_addr()?;
        println!("listening on {local}");
        let state = Arc::new(State {
            current: ArcSwap::from_pointee(render(params)),
            overrides: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(true);
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
