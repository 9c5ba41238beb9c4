//! `loadgen`: a small HTTP/1.1 load generator for the bench harness.
//!
//! Two modes:
//! - closed loop (`--concurrency N`): N workers, each sending its next request when the previous one
//!   finished; measures the maximum throughput at that concurrency. Latency runs from the actual send.
//! - open loop (`--rate R`): requests are scheduled at fixed intended times (`start + i/R`) whatever the
//!   server does, and latency runs from the *intended* send time, so a stall shows up in the latency
//!   of every request that should have been sent during it (no coordinated omission).
//!
//! Every response body is read frame by frame: time to first body byte (TTFB, from the same origin as
//! the latency) and the largest gap between two body frames are recorded per request, which for
//! streams (SSE, NDJSON) are the time to first token and the worst inter-chunk stall.
//!
//! Connections are keep-alive (hyper-util's pooled client, `TCP_NODELAY`). The summary is one JSON
//! object on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::time::Instant;

/// HTTP load generator (closed or open loop) with TTFB and chunk-gap measurement.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Target URL (http only).
    #[arg(long)]
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Extra header `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Closed loop: number of concurrent workers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Open loop: requests per second (overrides --concurrency).
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many requests in total (closed loop: each worker stops when the budget is spent).
    #[arg(long)]
    requests: Option<u64>,
    /// Closed loop: spread the workers' first requests over this many milliseconds.
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Per-request timeout, seconds (headers through the end of the body).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Open loop: most requests in flight; a request due while at the cap counts as dropped.
    #[arg(long, default_value_t = 20_000)]
    max_inflight: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Whole response, microseconds (from the send or the intended send).
    total_us: u64,
    /// First body frame, microseconds (same origin).
    ttfb_us: u64,
    /// Largest gap between two body frames, microseconds.
    max_gap_us: u64,
    /// Body frames.
    frames: u32,
    /// Body bytes.
    bytes: u64,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    errors: u64,
    non_2xx: u64,
    timeouts: u64,
    first_error: Option<String>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Plan {
    client: HttpClient,
    method: Method,
    uri: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timeout: Duration,
}

enum Outcome {
    Ok(Sample),
    Status(u16),
    Timeout,
    Error(String),
}

async fn one(plan: &Plan, origin: Instant) -> Outcome {
    let mut req = Request::new(Full::new(plan.body.clone()));
    *req.method_mut() = plan.method.clone();
    *req.uri_mut() = plan.uri.clone();
    for (k, v) in &plan.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let fut = async {
        let resp = plan.client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut s = Sample::default();
        let mut last: Option<Instant> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                if d.is_empty() {
                    continue;
                }
                let now = Instant::now();
                match last {
                    None => s.ttfb_us = (now - origin).as_micros() as u64,
                    Some(prev) => s.max_gap_us = s.max_gap_us.max((now - prev).as_micros() as u64),
                }
                last = Some(now);
                s.frames += 1;
                s.bytes += d.len() as u64;
            }
        }
        s.total_us = origin.elapsed().as_micros() as u64;
        Ok::<_, String>((status, s))
    };
    match tokio::time::timeout(plan.timeout, fut).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => Outcome::Error(e),
        Ok(Ok((status, s))) if (200..300).contains(&status) => Outcome::Ok(s),
        Ok(Ok((status, _))) => Outcome::Status(status),
    }
}

fn record(t: &mut Tally, o: Outcome) {
    match o {
        Outcome::Ok(s) => t.samples.push(s),
        Outcome::Status(code) => {
            t.non_2xx += 1;
            t.first_error.get_or_insert_with(|| format!("HTTP {code}"));
        }
        Outcome::Timeout => {
            t.timeouts += 1;
            t.first_error.get_or_insert_with(|| "timeout".to_owned());
        }
        Outcome::Error(e) => {
            t.errors += 1;
            t.first_error.get_or_insert(e);
        }
    }
}

fn merge(into: &mut Tally, from: Tally) {
    into.samples.extend(from.samples);
    into.errors += from.errors;
    into.non_2xx += from.non_2xx;
    into.timeouts += from.timeouts;
    if into.first_error.is_none() {
        into.first_error = from.first_error;
    }
}

fn dist(mut v: Vec<u64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let pct = |p: f64| -> u64 {
        let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[idx.clamp(1, v.len()) - 1]
    };
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    json!({
        "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "p999": pct(99.9),
        "max": v[v.len() - 1], "min": v[0], "mean": mean.round() as u64
    })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let body = match (&args.body, &args.body_file) {
        (_, Some(path)) => Bytes::from(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
        (Some(b), None) => Bytes::from(b.clone()),
        (None, None) => Bytes::new(),
    };
    let mut headers = Vec::new();
    let mut has_ctype = false;
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| format!("bad header {h:?}"))?;
        let k = HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| e.to_string())?;
        has_ctype |= k == http::header::CONTENT_TYPE;
        headers.push((k, HeaderValue::from_str(v.trim()).map_err(|e| e.to_string())?));
    }
    if !has_ctype && !body.is_empty() {
        headers.push((http::header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(10)));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(conn);
    let plan = Arc::new(Plan {
        client,
        method: Method::from_bytes(args.method.as_bytes()).map_err(|e| e.to_string())?,
        uri: args.url.parse().map_err(|e| format!("{e}"))?,
        headers,
        body,
        timeout: Duration::from_secs_f64(args.timeout),
    });
    let duration = Duration::from_secs_f64(args.duration);
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tally = Tally::default();
    let mut dropped = 0_u64;
    let mode;

    if let Some(rate) = args.rate {
        mode = "open";
        let shared = Arc::new(Mutex::new(Tally::default()));
        let inflight = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        let mut i: u64 = 0;
        loop {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if intended >= deadline || budget.load(Ordering::Relaxed) == 0 {
                break;
            }
            budget.fetch_sub(1, Ordering::Relaxed);
            i += 1;
            if Instant::now() < intended {
                tokio::time::sleep_until(intended).await;
            }
            if inflight.load(Ordering::Relaxed) >= args.max_inflight {
                dropped += 1;
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let (plan, shared, inflight) = (plan.clone(), shared.clone(), inflight.clone());
            handles.push(tokio::spawn(async move {
                let o = one(&plan, intended).await;
                inflight.fetch_sub(1, Ordering::Relaxed);
                record(&mut shared.lock().unwrap_or_else(|e| e.into_inner()), o);
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        let t = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
        merge(&mut tally, t);
    } else {
        mode = "closed";
        let n = args.concurrency.max(1);
        let mut handles = Vec::with_capacity(n);
        for w in 0..n {
            let (plan, budget) = (plan.clone(), budget.clone());
            let delay = Duration::from_millis(args.ramp_ms) * w as u32 / n as u32;
            handles.push(tokio::spawn(async move {
                let mut t = Tally::default();
                tokio::time::sleep_until(start + delay).await;
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                        break;
                    }
                    let o = one(&plan, Instant::now()).await;
                    record(&mut t, o);
                }
                t
            }));
        }
        for h in handles {
            if let Ok(t) = h.await {
                merge(&mut tally, t);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = tally.samples.len() as u64;
    let total = |f: fn(&Sample) -> u64| tally.samples.iter().map(f).collect::<Vec<u64>>();
    let frames: u64 = tally.samples.iter().map(|s| u64::from(s.frames)).sum();
    let bytes: u64 = tally.samples.iter().map(|s| s.bytes).sum();
    let out = json!({
        "mode": mode,
        "url": args.url,
        "concurrency": if args.rate.is_some() { serde_json::Value::Null } else { json!(args.concurrency) },
        "rate": args.rate,
        "duration_s": elapsed,
        "ok": ok,
        "errors": tally.errors,
        "non_2xx": tally.non_2xx,
        "timeouts": tally.timeouts,
        "dropped": dropped,
        "first_error": tally.first_error,
        "rps": ok as f64 / elapsed.max(1e-9),
        "latency_us": dist(total(|s| s.total_us)),
        "ttfb_us": dist(total(|s| s.ttfb_us)),
        "max_gap_us": dist(total(|s| s.max_gap_us)),
        "frames_mean": if ok > 0 { frames as f64 / ok as f64 } else { 0.0 },
        "bytes_mean": if ok > 0 { bytes as f64 / ok as f64 } else { 0.0 },
    });
    println!("{out}");
    Ok(())
}
