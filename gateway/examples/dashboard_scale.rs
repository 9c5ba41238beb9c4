//! Fills a ledger for the dashboard scale benchmark (issue 16): `records` records spread over the
//! last `days` days, through the store's own batch path (`ledger::start` + `submit`, so the
//! rollups are maintained exactly as in production, in the insert transactions).
//!
//! ```sh
//! cargo run --release -p ai-aggregator --example dashboard_scale -- <data_dir> [records] [days]
//! ```
//!
//! Without `LEDGER_BENCH_DATABASE_URL` the embedded SQLite store under `data_dir` is filled; with
//! it, that Postgres. Driven by `bench/dashboard/run`, which then starts the gateway on the data
//! and times every dashboard page.
//!
//! The data set (deterministic, seed 16): 50 tenants with a skewed share of the traffic (tenant
//! `t00` is the largest), 1–3 keys each, 5 providers × 4 models, each tenant using 3 models;
//! 94 % `ok`, the rest spread over the error statuses; log-normal-ish latencies. Record ids are
//! sequential (`rec_` + 32 hex digits, the production shape) so the fill appends to the indexes
//! instead of inserting at random places (a production ledger is filled at the traffic's pace).
#![expect(clippy::print_stdout, reason = "an example that reports its figures")]

use std::error::Error;
use std::time::Duration;

use gateway::domain::pricing::{cost_nano_usd, Price};
use gateway::stores::ledger::{self, LedgerConfig, LedgerRecord, RecordStatus, UsageQuery};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROVIDERS: [(&str, [&str; 4]); 5] = [
    ("openai", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o4-mini"]),
    ("anthropic", ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-3-5-haiku"]),
    ("groq", ["llama-3.3-70b", "llama-3.1-8b", "mixtral-8x7b", "gemma2-9b"]),
    ("mistral", ["mistral-large", "mistral-small", "codestral", "ministral-8b"]),
    ("ollama", ["qwen3:8b", "llama3.2:3b", "phi4", "deepseek-r1:7b"]),
];
const TENANTS: u64 = 50;

fn record(rng: &mut fastrand::Rng, i: u64, ts: i64) -> LedgerRecord {
    // Skewed: u³ puts about a fifth of the traffic on the first tenant.
    let u = rng.f64();
    let t = ((u * u * u) * TENANTS as f64) as u64;
    let keys = 1 + t % 3;
    let model_slot = rng.u64(..3);
    let m = (t * 7 + model_slot * 5) % 20;
    let (provider, models) = PROVIDERS[(m / 4) as usize];
    let model = models[(m % 4) as usize];
    let status = match rng.u8(..100) {
        0..=93 => RecordStatus::Ok,
        94..=96 => RecordStatus::UpstreamError,
        97 => RecordStatus::ClientError,
        98 => RecordStatus::Cancelled,
        _ => RecordStatus::Partial,
    };
    let price = Price {
        input_micro_per_m: 2_500_000,
        output_micro_per_m: 10_000_000,
        cached_input_micro_per_m: 1_250_000,
        cache_write_micro_per_m: 3_125_000,
    };
    let prompt = 50 + rng.u64(..4_000);
    let cached = rng.u64(..=prompt / 3);
    let cache_write = if rng.u8(..10) == 0 { rng.u64(..=prompt / 4) } else { 0 };
    let completion = 10 + rng.u64(..1_500);
    // Sum of three uniforms: a bell around ~1.2 s with a long tail.
    let latency =
        80 + rng.u64(..800) + rng.u64(..800) + if rng.u8(..20) == 0 { rng.u64(..30_000) } else { rng.u64(..800) };
    LedgerRecord {
        record_id: format!("rec_{i:032x}"),
        session_id: None,
        request_id: format!("req_{i:032x}"),
        ts_unix_ms: ts,
        tenant: format!("t{t:02}"),
        key_id: Some(format!("key_t{t:02}_{}", rng.u64(..keys))),
        provider: provider.to_owned(),
        requested_model: model.to_owned(),
        upstream_model: model.to_owned(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
        cache_write_tokens: cache_write,
        usage_estimated: false,
        cost_nano_usd: cost_nano_usd(&price, prompt, completion, cached, cache_write),
        price,
        status,
        stream: rng.bool(),
        latency_ms: latency,
        ttft_ms: Some(latency / 4),
        attempts: 1,
        http_status: if status == RecordStatus::Ok { 200 } else { 502 },
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().ok_or("usage: dashboard_scale <data_dir> [records] [days]")?;
    let n: u64 = args.next().map_or(Ok(10_000_000), |a| a.parse())?;
    let days: i64 = args.next().map_or(Ok(90), |a| a.parse())?;
    let cfg = LedgerConfig {
        database_url: std::env::var("LEDGER_BENCH_DATABASE_URL").ok(),
        data_dir: data_dir.into(),
        queue_capacity: 200_000,
        batch_rows: 10_000,
        batch_interval: Duration::from_millis(50),
    };
    let (handle, writer) = ledger::start(cfg).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(writer.run(shutdown.clone()));

    let now = gateway::domain::time::now_unix_ms();
    let span = days * 86_400_000;
    let first = now - span;
    let step = span as f64 / n as f64;
    let mut rng = fastrand::Rng::with_seed(16);
    let start = Instant::now();
    for i in 0..n {
        // Back-pressure instead of the journal: keep the queue under its capacity.
        while handle.stats().queue_depth > 150_000 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ts = first + (i as f64 * step) as i64;
        handle.submit(record(&mut rng, i, ts));
        if i % 1_000_000 == 999_999 {
            println!("{} records submitted, {:.0} s", i + 1, start.elapsed().as_secs_f64());
        }
    }
    while handle.stats().written < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await?;
    let stats = handle.stats();
    let total = handle.usage(&UsageQuery::default()).await?;
    println!(
        "filled {n} records over {days} days in {:.1} s = {:.0} records/s (journaled {}, rows {})",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        stats.journaled,
        total.first().map_or(0, |r| r.requests)
    );
    if stats.journaled != 0 {
        return Err("records were journaled: the fill is incomplete".into());
    }
    Ok(())
}
