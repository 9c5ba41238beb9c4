//! The streaming response body: polls the upstream, feeds the translator, yields SSE frames in the
//! client's dialect (OpenAI chat-completion chunks, or Anthropic Messages events).
//!
//! No task or channel per stream: the client's reads drive the upstream reads, so backpressure reaches the
//! upstream and a slow client cannot make us buffer without bound. Dropping the body (client hang-up) drops
//! the upstream connection at once and records the request as `cancelled` with the usage so far.
//!
//! Shutdown (issue 11, item 2): when the grace period is over, the server cancels
//! `AppState::cut_streams`. Every open body then ends with one OpenAI-shaped error event (code
//! `gateway_shutdown`, no `[DONE]`) and records itself as `partial` with the usage so far, before the
//! connections are closed and before the ledger writer drains.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use translators::anthropic_ingress::StreamEncoder;
use translators::openai::sse_out;
use translators::openai::{passthrough, ErrorBody};
use translators::{
    anthropic, anthropic_ingress, completions, ollama, responses, StreamEvent, StreamOutcome, StreamSummary,
    StreamTranslator,
};

use crate::services::metering::{estimate_tokens, Outcome, RequestMeter, Tokens};

/// The signal that ends every open stream at the end of the shutdown grace period (issue 11,
/// item 2). Cheap to check per frame (one atomic load: `CancellationToken::is_cancelled` takes a
/// mutex shared by every stream); the token wakes bodies that wait on their upstream.
#[derive(Debug, Clone, Default)]
pub struct StreamCut {
    inner: Arc<CutInner>,
}

#[derive(Debug, Default)]
struct CutInner {
    cut: AtomicBool,
    token: CancellationToken,
}

impl StreamCut {
    /// Ends every open stream (and makes waiting chat requests answer 503). Idempotent.
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::Release);
        self.inner.token.cancel();
    }

    /// True once [`StreamCut::cut`] ran.
    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::Acquire)
    }

    /// Completes when [`StreamCut::cut`] runs.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.token.cancelled()
    }

    fn cancelled_owned(&self) -> WaitForCancellationFutureOwned {
        self.inner.token.clone().cancelled_owned()
    }
}

/// The translator for one provider kind (static dispatch: no `dyn`).
pub enum AnyTranslator {
    OpenAi(passthrough::StreamPassthrough),
    Anthropic(anthropic::StreamDecoder),
    Ollama(ollama::StreamDecoder),
    /// A passed-through Responses stream: read for usage only, never changed.
    ResponsesUsage(Box<responses::passthrough::UsageScanner>),
}

impl StreamTranslator for AnyTranslator {
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) {
        match self {
            AnyTranslator::OpenAi(t) => t.feed(input, out),
            AnyTranslator::Anthropic(t) => t.feed(input, out),
            AnyTranslator::Ollama(t) => t.feed(input, out),
            AnyTranslator::ResponsesUsage(t) => t.feed(input),
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary {
        match self {
            AnyTranslator::OpenAi(t) => t.finish(out),
            AnyTranslator::Anthropic(t) => t.finish(out),
            AnyTranslator::Ollama(t) => t.finish(out),
            AnyTranslator::ResponsesUsage(t) => t.finish(),
        }
    }

    fn is_terminal(&self) -> bool {
        match self {
            AnyTranslator::OpenAi(t) => t.is_terminal(),
            AnyTranslator::Anthropic(t) => t.is_terminal(),
            AnyTranslator::Ollama(t) => t.is_terminal(),
            AnyTranslator::ResponsesUsage(t) => t.is_terminal(),
        }
    }

    fn summary(&self) -> StreamSummary {
        match self {
            AnyTranslator::OpenAi(t) => t.summary(),
            AnyTranslator::Anthropic(t) => t.summary(),
            AnyTranslator::Ollama(t) => t.summary(),
            AnyTranslator::ResponsesUsage(t) => t.summary(),
        }
    }
}

/// Token counts for the ledger from a stream summary: the provider's own counts when they arrived,
/// otherwise what was reported so far topped up with an estimate of what was streamed (never zero).
pub fn tokens_of(summary: &StreamSummary, prompt_estimate: u64) -> Tokens {
    let mut tokens = Tokens::from_usage(&summary.usage);
    if !summary.usage_is_final {
        tokens.estimated = true;
        if tokens.prompt == 0 {
            tokens.prompt = prompt_estimate;
        }
        tokens.completion = tokens.completion.max(estimate_tokens(summary.streamed_bytes));
    }
    tokens
}

/// How hub events become the client's bytes.
pub enum Output {
    /// OpenAI chat-completion SSE (`data: {chunk}`), `[DONE]` after a completed stream.
    OpenAi,
    /// Anthropic Messages SSE re-encoded from hub events (Claude Code and the `anthropic` SDKs in front
    /// of a non-Anthropic backend).
    Anthropic(Box<StreamEncoder>),
    /// The upstream's own SSE bytes relayed untouched (an Anthropic client in front of Anthropic): the
    /// translator only accounts (usage, outcome). A stream that ends without `message_stop` gets one
    /// Anthropic `error` event appended.
    AnthropicRelay,
    /// Responses API events re-encoded from hub events (Codex, the Agents SDK in front of a
    /// non-OpenAI backend).
    Responses(Box<responses::StreamEncoder>),
    /// An OpenAI Responses stream relayed untouched; a gateway-forced failure is one `error` event.
    ResponsesRelay,
    /// Legacy `text_completion` chunks, `[DONE]` after success.
    Completions(Box<completions::StreamEncoder>),
}

impl Output {
    /// True when the client gets the upstream's own bytes.
    pub fn is_relay(&self) -> bool {
        matches!(self, Output::AnthropicRelay | Output::ResponsesRelay)
    }
}

/// How often an Anthropic stream with a silent upstream gets a `ping` (Claude Code drops a stream that
/// sends nothing for 5 minutes; its SDKs skip pings).
const PING_INTERVAL: Duration = Duration::from_secs(15);

enum Phase {
    Streaming,
    /// The upstream ended or the translator reached its terminal event: flush and record.
    Finishing,
    Done,
}

/// The SSE body sent to the client.
pub struct TranslatingBody {
    upstream: Option<Incoming>,
    translator: AnyTranslator,
    output: Output,
    /// Next keep-alive for Anthropic output (`None` for OpenAI output).
    ping: Option<Pin<Box<Sleep>>>,
    events: Vec<StreamEvent>,
    buf: BytesMut,
    pending: Option<Bytes>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    phase: Phase,
    meter: RequestMeter,
    /// Set when the shutdown grace period is over (`AppState::cut_streams`).
    cut: StreamCut,
    /// Wakes this body when `cut` fires while it waits on the upstream. Polled once, at the first
    /// wait, to register the waker (the same task polls the body from then on); later polls would
    /// take the token's shared lock on every chunk.
    cut_wait: Pin<Box<WaitForCancellationFutureOwned>>,
    cut_registered: bool,
}

/// Metric label of a stream cut because the shutdown grace period ended.
const SHUTDOWN_KIND: &str = "stream_shutdown";
/// Metric label of a stream whose upstream went silent for longer than the idle timeout.
const IDLE_KIND: &str = "stream_idle_timeout";

fn shutdown_error() -> ErrorBody {
    ErrorBody::new(
        "the gateway is shutting down and ended this stream before it was complete; retry the request",
        "server_error",
        Some("gateway_shutdown"),
    )
}

impl TranslatingBody {
    /// `first` holds the SSE bytes produced while peeking; `upstream_ended` says the upstream already closed;
    /// `cut` ends the stream with a shutdown error event when it fires.
    pub fn new(
        upstream: Incoming,
        translator: AnyTranslator,
        output: Output,
        first: Bytes,
        idle_timeout: Duration,
        meter: RequestMeter,
        upstream_ended: bool,
        cut: StreamCut,
    ) -> Self {
        if let Some(m) = meter.metrics() {
            m.open_streams.inc();
        }
        let ping = match output {
            Output::Anthropic(_) | Output::AnthropicRelay => Some(Box::pin(tokio::time::sleep(PING_INTERVAL))),
            Output::OpenAi | Output::Responses(_) | Output::ResponsesRelay | Output::Completions(_) => None,
        };
        Self {
            upstream: if upstream_ended { None } else { Some(upstream) },
            translator,
            output,
            ping,
            // Grows to what the translator emits per read (1–3 events): 8 preallocated was 1.8 KB per stream.
            events: Vec::new(),
            // Starts empty: an idle stream should hold no buffer (10k idle streams × 4 KB adds up).
            buf: BytesMut::new(),
            pending: (!first.is_empty()).then_some(first),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            phase: if upstream_ended { Phase::Finishing } else { Phase::Streaming },
            meter,
            cut_wait: Box::pin(cut.cancelled_owned()),
            cut_registered: false,
            cut,
        }
    }

    fn encode_events(&mut self) {
        if !self.events.is_empty() {
            encode(&mut self.output, &self.events, &mut self.buf);
            self.events.clear();
        }
        if !self.buf.is_empty() {
            let mut out = self.pending.take().map(BytesMut::from).unwrap_or_default();
            out.extend_from_slice(&self.buf.split());
            self.pending = Some(out.freeze());
        }
    }

    /// Flushes the translator, writes `[DONE]` on success, and records the outcome. A forced error
    /// (idle timeout, shutdown) comes with its metric label and ends the stream as `partial`.
    fn finish(&mut self, forced_error: Option<(ErrorBody, &'static str)>) {
        self.upstream = None;
        let forced_kind = forced_error.as_ref().map(|(_, kind)| *kind);
        let summary = if let Some((error, _)) = forced_error {
            self.events.push(StreamEvent::Error(error));
            let mut s = self.translator.summary();
            s.outcome = StreamOutcome::Truncated;
            s
        } else {
            self.translator.finish(&mut self.events)
        };
        self.encode_events();
        finish_output(&mut self.output, &summary, &mut self.buf);
        self.encode_events();
        self.meter.info.error_kind = match &summary.outcome {
            StreamOutcome::Completed => None,
            StreamOutcome::UpstreamError(_) => Some("stream_error"),
            StreamOutcome::Truncated if forced_kind.is_some() => forced_kind,
            StreamOutcome::Truncated | StreamOutcome::Open => Some("stream_truncated"),
        };
        let outcome = match &summary.outcome {
            StreamOutcome::Completed => Outcome::Ok,
            // The 200 and the first event already went out: whatever failed, the client got part of a stream.
            StreamOutcome::UpstreamError(_) | StreamOutcome::Truncated | StreamOutcome::Open => Outcome::Partial,
        };
        let tokens = tokens_of(&summary, self.meter.info.prompt_estimate);
        self.meter.finish(outcome, tokens, 200);
        self.phase = Phase::Done;
    }
}

/// The first bytes of a stream, from what was read while peeking: the upstream's own bytes for a
/// relay; otherwise the dialect's opening event (Anthropic `message_start`, Responses
/// `response.created`) and the first events.
pub fn first_bytes(output: &mut Output, events: &[StreamEvent], relayed: BytesMut) -> BytesMut {
    if output.is_relay() {
        return relayed;
    }
    let mut buf = BytesMut::with_capacity(1024);
    match output {
        Output::Anthropic(encoder) => encoder.start(&mut buf),
        Output::Responses(encoder) => {
            let mut out = Vec::new();
            encoder.start(&mut out);
            responses::write_sse(&out, &mut buf);
        }
        Output::OpenAi | Output::Completions(_) | Output::AnthropicRelay | Output::ResponsesRelay => {}
    }
    encode(output, events, &mut buf);
    buf
}

/// Hub events → the client's SSE bytes.
fn encode(output: &mut Output, events: &[StreamEvent], buf: &mut BytesMut) {
    match output {
        Output::OpenAi => sse_out::encode_all(events, buf),
        Output::Anthropic(encoder) => encoder.push_all(events, buf),
        // The upstream's bytes are copied as they arrive; an event produced here is the gateway's own
        // (a forced error: stall, shutdown), written in Anthropic's shape.
        Output::AnthropicRelay => {
            for event in events {
                if let StreamEvent::Error(body) = event {
                    write_anthropic_error(body, buf);
                }
            }
        }
        Output::Responses(encoder) => {
            let mut out = Vec::new();
            encoder.push(events, &mut out);
            responses::write_sse(&out, buf);
        }
        Output::ResponsesRelay => {
            for event in events {
                if let StreamEvent::Error(body) = event {
                    let error =
                        serde_json::json!({"type": "error", "code": body.code, "message": body.message, "param": null});
                    buf.extend_from_slice(b"event: error\ndata: ");
                    buf.extend_from_slice(error.to_string().as_bytes());
                    buf.extend_from_slice(b"\n\n");
                }
            }
        }
        Output::Completions(encoder) => encoder.push(events, buf),
    }
}

/// The end of the stream in the client's dialect: `[DONE]` for OpenAI after success; Anthropic's closing
/// `message_delta`/`message_stop` (or an `error` event) when re-encoding; for a relay, an `error` event
/// when the upstream ended without its own `message_stop`.
fn finish_output(output: &mut Output, summary: &StreamSummary, buf: &mut BytesMut) {
    match output {
        Output::OpenAi => {
            if summary.outcome == StreamOutcome::Completed {
                buf.extend_from_slice(sse_out::DONE);
            }
        }
        Output::Anthropic(encoder) => encoder.finish(summary, buf),
        Output::Responses(encoder) => {
            let mut out = Vec::new();
            encoder.finish(Some(summary), &mut out);
            responses::write_sse(&out, buf);
        }
        Output::Completions(encoder) => encoder.finish(Some(summary), buf),
        Output::AnthropicRelay | Output::ResponsesRelay => {}
    }
}

fn write_ping(output: &mut Output, buf: &mut BytesMut) {
    match output {
        Output::OpenAi | Output::Responses(_) | Output::ResponsesRelay | Output::Completions(_) => {}
        Output::Anthropic(encoder) => encoder.ping(buf),
        Output::AnthropicRelay => buf.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
    }
}

fn write_anthropic_error(body: &ErrorBody, buf: &mut BytesMut) {
    let (kind, message) = anthropic_ingress::stream_error_type(body);
    buf.extend_from_slice(b"event: error\ndata: ");
    buf.extend_from_slice(&anthropic_ingress::error_json(kind, &message, None));
    buf.extend_from_slice(b"\n\n");
}

impl HttpBody for TranslatingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.take() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Finishing => this.finish(None),
                Phase::Streaming => {
                    if this.translator.is_terminal() {
                        this.phase = Phase::Finishing;
                        continue;
                    }
                    if this.cut.is_cut() {
                        this.finish(Some((shutdown_error(), SHUTDOWN_KIND)));
                        continue;
                    }
                    let Some(upstream) = this.upstream.as_mut() else {
                        this.phase = Phase::Finishing;
                        continue;
                    };
                    match Pin::new(upstream).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                this.translator.feed(&data, &mut this.events);
                                if this.output.is_relay() {
                                    // Relayed as received: the events only fed the accounting.
                                    this.events.clear();
                                    this.buf.extend_from_slice(&data);
                                }
                                if let Some(ping) = this.ping.as_mut() {
                                    ping.as_mut().reset(tokio::time::Instant::now() + PING_INTERVAL);
                                }
                                let deadline = tokio::time::Instant::now() + this.idle_timeout;
                                this.idle.as_mut().reset(deadline);
                                this.encode_events();
                            }
                        }
                        Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.phase = Phase::Finishing,
                        Poll::Pending => {
                            if !this.cut_registered {
                                if this.cut_wait.as_mut().poll(cx).is_ready() {
                                    this.finish(Some((shutdown_error(), SHUTDOWN_KIND)));
                                    continue;
                                }
                                // From now on the cut wakes this task, and `is_cut` above sees it.
                                this.cut_registered = true;
                            }
                            if let Some(ping) = this.ping.as_mut() {
                                if ping.as_mut().poll(cx).is_ready() {
                                    ping.as_mut().reset(tokio::time::Instant::now() + PING_INTERVAL);
                                    write_ping(&mut this.output, &mut this.buf);
                                    this.encode_events();
                                    continue;
                                }
                            }
                            if this.idle.as_mut().poll(cx).is_ready() {
                                let error = ErrorBody::new(
                                    "upstream stream stalled: no data within the idle timeout",
                                    "server_error",
                                    Some("timeout"),
                                );
                                this.finish(Some((error, IDLE_KIND)));
                                continue;
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.phase, Phase::Done) && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for TranslatingBody {
    fn drop(&mut self) {
        if let Some(m) = self.meter.metrics() {
            m.open_streams.dec();
        }
        if !self.meter.is_finished() {
            // The client went away mid-stream. `upstream` is dropped with us, which closes that connection
            // at once (hyper does not drain a body dropped half-read).
            let summary = self.translator.summary();
            let tokens = tokens_of(&summary, self.meter.info.prompt_estimate);
            self.meter.finish(Outcome::Cancelled, tokens, 200);
        }
    }
}
