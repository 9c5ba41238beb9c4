//! The streaming response body: polls the upstream, feeds the translator, yields SSE frames.
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
use translators::openai::sse_out;
use translators::openai::{passthrough, ErrorBody};
use translators::{anthropic, ollama, StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};

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
}

impl StreamTranslator for AnyTranslator {
    fn feed(&mut self, input: &[u8], out: &mut Vec<StreamEvent>) {
        match self {
            AnyTranslator::OpenAi(t) => t.feed(input, out),
            AnyTranslator::Anthropic(t) => t.feed(input, out),
            AnyTranslator::Ollama(t) => t.feed(input, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamSummary {
        match self {
            AnyTranslator::OpenAi(t) => t.finish(out),
            AnyTranslator::Anthropic(t) => t.finish(out),
            AnyTranslator::Ollama(t) => t.finish(out),
        }
    }

    fn is_terminal(&self) -> bool {
        match self {
            AnyTranslator::OpenAi(t) => t.is_terminal(),
            AnyTranslator::Anthropic(t) => t.is_terminal(),
            AnyTranslator::Ollama(t) => t.is_terminal(),
        }
    }

    fn summary(&self) -> StreamSummary {
        match self {
            AnyTranslator::OpenAi(t) => t.summary(),
            AnyTranslator::Anthropic(t) => t.summary(),
            AnyTranslator::Ollama(t) => t.summary(),
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
        first: Bytes,
        idle_timeout: Duration,
        meter: RequestMeter,
        upstream_ended: bool,
        cut: StreamCut,
    ) -> Self {
        if let Some(m) = meter.metrics() {
            m.open_streams.inc();
        }
        Self {
            upstream: if upstream_ended { None } else { Some(upstream) },
            translator,
            events: Vec::with_capacity(8),
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
            sse_out::encode_all(&self.events, &mut self.buf);
            self.events.clear();
            self.pending = Some(self.buf.split().freeze());
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
        self.meter.info.error_kind = match &summary.outcome {
            StreamOutcome::Completed => None,
            StreamOutcome::UpstreamError(_) => Some("stream_error"),
            StreamOutcome::Truncated if forced_kind.is_some() => forced_kind,
            StreamOutcome::Truncated | StreamOutcome::Open => Some("stream_truncated"),
        };
        let outcome = match &summary.outcome {
            StreamOutcome::Completed => {
                let mut done = self.pending.take().map(BytesMut::from).unwrap_or_default();
                done.extend_from_slice(sse_out::DONE);
                self.pending = Some(done.freeze());
                Outcome::Ok
            }
            // The 200 and the first event already went out: whatever failed, the client got part of a stream.
            StreamOutcome::UpstreamError(_) | StreamOutcome::Truncated | StreamOutcome::Open => Outcome::Partial,
        };
        let tokens = tokens_of(&summary, self.meter.info.prompt_estimate);
        self.meter.finish(outcome, tokens, 200);
        self.phase = Phase::Done;
    }
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
