//! Ledger write throughput: records/s from `submit` to committed rows, for Postgres and SQLite.
//!
//! ```sh
//! cargo run --release -p ai-aggregator --example ledger_throughput -- [records] [batch_rows]
//! ```
//!
//! Postgres: `LEDGER_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); a
//! fresh schema is created and dropped. SQLite: a temp directory, removed afterwards. The queue is
//! sized to hold every record so nothing overflows to the journal (the journal count is printed
//! to prove it); the figure is end-to-end: submit → batch → insert → commit.
#![expect(clippy::print_stdout, reason = "an example that reports its figures")]

use std::error::Error;
use std::time::Duration;

use gateway::domain::pricing::{cost_nano_usd, Price};
use gateway::stores::ledger::{self, LedgerConfig, LedgerRecord, RecordStatus, UsageQuery};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn record(i: u64, run: u64) -> LedgerRecord {
    let price = Price {
        input_micro_per_m: 2_500_000,
        output_micro_per_m: 10_000_000,
        cached_input_micro_per_m: 1_250_000,
        cache_write_micro_per_m: 2_500_000,
    };
    let (prompt, completion, cached) = (500 + i % 1000, 50 + i % 300, i % 200);
    LedgerRecord {
        session_id: None,
        record_id: format!("rec-bench-{run:x}-{i:010}"),
        request_id: format!("bench-{run:x}-{i:010}"),
        ts_unix_ms: 1_740_787_200_000 + (i as i64) * 10,
        tenant: format!("tenant-{}", i % 50),
        key_id: Some(format!("key-{}", i % 200)),
        provider: if i.is_multiple_of(3) { "anthropic" } else { "openai" }.to_owned(),
        requested_model: "gpt-4o".to_owned(),
        upstream_model: "gpt-4o-2024-08-06".to_owned(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
        cache_write_tokens: 0,
        usage_estimated: false,
        cost_nano_usd: cost_nano_usd(&price, prompt, completion, cached, 0),
        price,
        status: RecordStatus::Ok,
        stream: i.is_multiple_of(2),
        latency_ms: 800 + i % 5000,
        ttft_ms: Some(200 + i % 700),
        attempts: 1,
        http_status: 200,
    }
}

async fn measure(label: &str, cfg: LedgerConfig, n: u64) -> Result<f64, Box<dyn Error + Send + Sync>> {
    let (handle, writer) = ledger::start(cfg).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(writer.run(shutdown.clone()));
    let run = fastrand::u64(..);
    let records: Vec<LedgerRecord> = (0..n).map(|i| record(i, run)).collect();

    let start = Instant::now();
    for r in records {
        handle.submit(r);
    }
    let submitted = start.elapsed();
    while handle.stats().written < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if start.elapsed() > Duration::from_secs(600) {
            return Err("timed out".into());
        }
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await?;
    let stats = handle.stats();
    let rows = handle.usage(&UsageQuery::default()).await?;
    let stored = rows.first().map_or(0, |r| r.requests);
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{label:<9} {n} records in {:>7.3} s = {:>9.0} records/s  (submit: {:.0} ns/record, \
         batches: {}, journaled: {}, rows stored: {stored})",
        elapsed.as_secs_f64(),
        rate,
        submitted.as_nanos() as f64 / n as f64,
        stats.batches,
        stats.journaled,
    );
    if stored != n || stats.journaled != 0 {
        return Err(format!("{label}: expected {n} rows and no journaling").into());
    }
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let batch_rows: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    let queue_capacity = usize::try_from(n)?.max(1);

    // Postgres, in a throwaway schema.
    let base = std::env::var("LEDGER_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    let schema = format!("ledger_bench_{:016x}", fastrand::u64(..));
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
    let conn_task = tokio::spawn(conn);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    let pg_dir = std::env::temp_dir().join(format!("{schema}-data"));
    let sep = if base.contains('?') { '&' } else { '?' };
    let pg_cfg = LedgerConfig {
        database_url: Some(format!("{base}{sep}options=-c%20search_path%3D{schema}")),
        data_dir: pg_dir.clone(),
        queue_capacity,
        batch_rows,
        batch_interval: Duration::from_millis(50),
    };
    let pg = measure("postgres", pg_cfg, n).await;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    drop(client);
    let _ = conn_task.await;
    let _ = std::fs::remove_dir_all(&pg_dir);

    // SQLite, in a temp directory.
    let lite_dir = std::env::temp_dir().join(format!("ledger_bench_sqlite_{:016x}", fastrand::u64(..)));
    let lite_cfg = LedgerConfig {
        database_url: None,
        data_dir: lite_dir.clone(),
        queue_capacity,
        batch_rows,
        batch_interval: Duration::from_millis(50),
    };
    let lite = measure("sqlite", lite_cfg, n).await;
    let _ = std::fs::remove_dir_all(&lite_dir);

    let (pg, lite) = (pg?, lite?);
    println!("summary: postgres {pg:.0} records/s, sqlite {lite:.0} records/s (batch_rows {batch_rows})");
    Ok(())
}
