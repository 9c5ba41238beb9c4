//! Ledger tests against the embedded SQLite store (temp dir) and the machine's Postgres
//! (`127.0.0.1:5432`, database `test`, user `postgres`; override with `LEDGER_TEST_DATABASE_URL`).
//! Every Postgres test runs in a fresh schema (via `search_path`) that is dropped afterwards.

use crate::domain::time::{format_day, parse_time};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::journal::{encode_line, parse_segment};
use super::*;
use crate::domain::pricing::{cost_nano_usd, Price};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const DAY: i64 = 86_400_000;
/// 2025-03-01T00:00:00Z
const T0: i64 = 1_740_787_200_000;

fn pg_base() -> String {
    std::env::var("LEDGER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ledger-{tag}-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh Postgres schema, dropped (CASCADE) on drop.
struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn new() -> Self {
        let name = format!("ledger_t_{:016x}", fastrand::u64(..));
        let (client, conn) = tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls)
            .await
            .expect("Postgres at 127.0.0.1:5432 (start it with pg_ctlcluster)");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        Self { name }
    }

    fn url(&self) -> String {
        let sep = if pg_base().contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", pg_base(), self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
                }
            });
        })
        .join();
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A test environment: data dir plus (for Postgres) a schema.
struct Env {
    dir: TempDir,
    pg: Option<PgSchema>,
}

impl Env {
    async fn new(backend: Backend) -> Self {
        let dir = TempDir::new(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "pg",
        });
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgSchema::new().await),
        };
        Self { dir, pg }
    }

    fn cfg(&self) -> LedgerConfig {
        LedgerConfig {
            database_url: self.pg.as_ref().map(PgSchema::url),
            data_dir: self.dir.path().to_owned(),
            queue_capacity: 10_000,
            batch_rows: 100,
            batch_interval: Duration::from_millis(20),
        }
    }

    fn journal_dir(&self) -> PathBuf {
        self.dir.path().join(JOURNAL_DIR)
    }
}

const PRICE: Price = Price {
    input_micro_per_m: 2_500_000,
    output_micro_per_m: 10_000_000,
    cached_input_micro_per_m: 1_250_000,
    cache_write_micro_per_m: 3_125_000,
};

fn rec(i: u64, tenant: &str, provider: &str, model: &str, ts: i64) -> LedgerRecord {
    let prompt = 100 + i % 50;
    let cached = i % 7;
    let cache_write = i % 3;
    let completion = 10 + i % 13;
    LedgerRecord {
        record_id: format!("rec-{i:08}"),
        session_id: None,
        request_id: format!("req-{i:08}"),
        ts_unix_ms: ts,
        tenant: tenant.to_owned(),
        key_id: i.is_multiple_of(2).then(|| format!("key-{}", i % 5)),
        provider: provider.to_owned(),
        requested_model: format!("alias-{model}"),
        upstream_model: model.to_owned(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
        cache_write_tokens: cache_write,
        usage_estimated: i.is_multiple_of(11),
        cost_nano_usd: cost_nano_usd(&PRICE, prompt, completion, cached, cache_write),
        price: PRICE,
        status: RecordStatus::ALL[(i % 5) as usize],
        stream: i % 2 == 1,
        latency_ms: 100 + i,
        ttft_ms: i.is_multiple_of(3).then_some(20 + i),
        attempts: 1 + (i % 2) as u32,
        http_status: 200,
    }
}

fn simple(i: u64) -> LedgerRecord {
    rec(i, "acme", "openai", "gpt-4o", T0 + i as i64)
}

/// Expected totals of a set of records (one row, no grouping).
fn totals(records: &[LedgerRecord]) -> UsageRow {
    let cost: i64 = records.iter().map(|r| r.cost_nano_usd).sum();
    UsageRow {
        tenant: None,
        provider: None,
        model: None,
        day: None,
        bucket_start_unix_ms: None,
        requests: records.len() as u64,
        prompt_tokens: records.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: records.iter().map(|r| r.completion_tokens).sum(),
        cached_tokens: records.iter().map(|r| r.cached_tokens).sum(),
        cache_write_tokens: records.iter().map(|r| r.cache_write_tokens).sum(),
        cost_nano_usd: cost,
        cost_usd: crate::domain::pricing::format_usd(cost),
    }
}

async fn total_row(handle: &LedgerHandle) -> Option<UsageRow> {
    let rows = handle.usage(&UsageQuery::default()).await.unwrap();
    assert!(rows.len() <= 1, "{rows:?}");
    rows.into_iter().next()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn journal_segments(dir: &Path) -> Vec<PathBuf> {
    journal::list_segments(dir).unwrap_or_default()
}

/// Starts the ledger, runs the writer in the background, and returns a stopper.
async fn run(cfg: LedgerConfig) -> (LedgerHandle, Stopper) {
    let (handle, writer) = start(cfg).await.unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(writer.run(token.clone()));
    (handle, Stopper { token, task })
}

struct Stopper {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Stopper {
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("writer drains within 30 s").unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// N records in → exactly N rows, matching sums; records round-trip field by field.

async fn n_records_exact(backend: Backend) {
    let env = Env::new(backend).await;
    let (handle, stop) = run(env.cfg()).await;
    let records: Vec<LedgerRecord> = (0..2_345).map(simple).collect();
    for r in &records {
        handle.submit(r.clone());
    }
    wait_until("all written", || handle.stats().written == 2_345).await;
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
    for i in [0, 1, 3, 6, 1_000, 2_344] {
        let got = handle.fetch(&records[i].record_id).await.unwrap();
        assert_eq!(got.as_ref(), Some(&records[i]), "record {i} round-trips");
    }
    let stats = handle.stats();
    assert_eq!(stats.written, 2_345);
    assert_eq!(stats.journaled, 0);
    assert!(stats.batches >= 24, "{stats:?}");
    assert!(stats.database_ok && handle.is_writable());
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

#[tokio::test]
async fn sqlite_n_records_exact() {
    n_records_exact(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_n_records_exact() {
    n_records_exact(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Duplicate request ids: within a batch, across batches, and via journal replay.

async fn duplicates_ignored(backend: Backend) {
    let env = Env::new(backend).await;
    let (handle, stop) = run(env.cfg()).await;
    let records: Vec<LedgerRecord> = (0..300).map(simple).collect();
    for r in &records {
        handle.submit(r.clone());
        handle.submit(r.clone()); // same batch (most likely)
    }
    wait_until("written", || handle.stats().written == 600).await;
    for r in records.iter().take(100) {
        handle.submit(r.clone()); // later batches
    }
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));

    // A journal segment holding already-committed records (crash between commit and delete).
    let seg = env.journal_dir().join(format!("{:020}.jsonl", 999));
    let mut bytes = Vec::new();
    for r in records.iter().take(50) {
        bytes.extend(encode_line(r));
    }
    std::fs::write(&seg, bytes).unwrap();
    drop(handle);
    let (handle, stop) = run(env.cfg()).await;
    assert_eq!(handle.stats().replayed, 50);
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

#[tokio::test]
async fn sqlite_duplicates_ignored() {
    duplicates_ignored(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_duplicates_ignored() {
    duplicates_ignored(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Database unreachable → journaled; next start with a good URL replays exactly once.

#[tokio::test]
async fn postgres_unreachable_journals_then_replays_exactly_once() {
    let env = Env::new(Backend::Postgres).await;
    let mut bad = env.cfg();
    bad.database_url = Some("postgres://postgres@127.0.0.1:1/test?connect_timeout=2".to_owned());
    let (handle, stop) = run(bad).await;
    let stats = handle.stats();
    assert!(!stats.database_ok, "{stats:?}");
    assert!(stats.last_error.is_some());
    assert!(handle.is_writable(), "journal keeps the ledger writable");
    let records: Vec<LedgerRecord> = (0..1_234).map(simple).collect();
    for r in &records {
        handle.submit(r.clone());
    }
    wait_until("journaled", || handle.stats().journaled == 1_234).await;
    stop.stop().await;
    let stats = handle.stats();
    assert_eq!(stats.written, 0);
    assert_eq!(stats.journaled, 1_234);
    assert!(handle.usage(&UsageQuery::default()).await.is_err());
    assert!(!journal_segments(&env.journal_dir()).is_empty());
    drop(handle);

    // Next start against the real database, same data_dir: replayed during start.
    let (handle, writer) = start(env.cfg()).await.unwrap();
    let stats = handle.stats();
    assert!(stats.database_ok);
    assert_eq!(stats.replayed, 1_234);
    assert!(journal_segments(&env.journal_dir()).is_empty());
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
    let token = CancellationToken::new();
    token.cancel();
    writer.run(token).await;
    drop(handle);

    // And never again.
    let (handle, stop) = run(env.cfg()).await;
    assert_eq!(handle.stats().replayed, 0);
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
}

/// A TCP proxy to the real Postgres that can be switched off (connections refused and the
/// established ones cut) and on again: a database outage inside one process.
struct FlakyProxy {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl FlakyProxy {
    async fn new() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn postgres_outage_and_recovery_while_running() {
    let env = Env::new(Backend::Postgres).await;
    let proxy = FlakyProxy::new().await;
    let mut cfg = env.cfg();
    cfg.database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{}/test?connect_timeout=2&options=-c%20search_path%3D{}",
        proxy.port,
        env.pg.as_ref().unwrap().name
    ));
    let (handle, stop) = run(cfg).await;
    for i in 0..100 {
        handle.submit(simple(i));
    }
    wait_until("first records written", || handle.stats().written == 100).await;

    proxy.set(false);
    for i in 100..300 {
        handle.submit(simple(i));
    }
    wait_until("outage records journaled", || handle.stats().journaled == 200).await;
    let stats = handle.stats();
    assert!(!stats.database_ok, "{stats:?}");
    assert!(handle.is_writable());
    assert_eq!(stats.written, 100);

    proxy.set(true);
    wait_until("journal replayed", || handle.stats().replayed == 200).await;
    assert!(handle.stats().database_ok);
    for i in 300..400 {
        handle.submit(simple(i));
    }
    wait_until("later records written", || handle.stats().written == 200).await;
    stop.stop().await;
    let all: Vec<LedgerRecord> = (0..400).map(simple).collect();
    assert_eq!(total_row(&handle).await, Some(totals(&all)));
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Torn journal tail (crash mid-write) and a corrupt line are skipped; the rest is replayed.

async fn torn_tail_skipped(backend: Backend) {
    let env = Env::new(backend).await;
    std::fs::create_dir_all(env.journal_dir()).unwrap();
    let records: Vec<LedgerRecord> = (0..10).map(simple).collect();
    // Segment 1: 5 good lines, one with a flipped byte, and a torn last line.
    let mut seg1 = Vec::new();
    for r in &records[..5] {
        seg1.extend(encode_line(r));
    }
    let mut corrupt = encode_line(&simple(100));
    corrupt[30] ^= 0x01;
    seg1.extend(corrupt);
    let torn = encode_line(&simple(101));
    seg1.extend(&torn[..torn.len() / 2]);
    std::fs::write(env.journal_dir().join(format!("{:020}.jsonl", 1)), seg1).unwrap();
    // Segment 2 (written after a restart): 5 more good lines.
    let mut seg2 = Vec::new();
    for r in &records[5..] {
        seg2.extend(encode_line(r));
    }
    std::fs::write(env.journal_dir().join(format!("{:020}.jsonl", 2)), seg2).unwrap();

    let (handle, stop) = run(env.cfg()).await;
    let stats = handle.stats();
    assert_eq!(stats.replayed, 10, "{stats:?}");
    assert_eq!(stats.journal_skipped, 2, "{stats:?}");
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
    assert!(handle.fetch(&simple(100).record_id).await.unwrap().is_none());
    assert!(handle.fetch(&simple(101).record_id).await.unwrap().is_none());
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

#[tokio::test]
async fn sqlite_torn_tail_skipped() {
    torn_tail_skipped(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_torn_tail_skipped() {
    torn_tail_skipped(Backend::Postgres).await;
}

#[test]
fn journal_lines_parse_and_torn_lines_are_detected() {
    let a = simple(1);
    let b = simple(2);
    let mut bytes = encode_line(&a);
    bytes.extend(encode_line(&b));
    let seg = parse_segment(&bytes, Path::new("x"));
    assert_eq!(seg.records, vec![a.clone(), b.clone()]);
    assert_eq!(seg.skipped, 0);
    // Every possible truncation point of the second line keeps the first and skips the rest.
    let first_len = encode_line(&a).len();
    for cut in first_len + 1..bytes.len() {
        let seg = parse_segment(&bytes[..cut], Path::new("x"));
        assert_eq!(seg.records, vec![a.clone()], "cut at {cut}");
        assert_eq!(seg.skipped, 1, "cut at {cut}");
    }
    // Garbage lines are skipped, not fatal.
    let seg = parse_segment(b"nonsense\n\n0123456789abcdef\t{}\n", Path::new("x"));
    assert!(seg.records.is_empty());
    assert_eq!(seg.skipped, 3);
}

// ---------------------------------------------------------------------------------------------
// Queue full → journal, without blocking; everything lands in the store eventually.

async fn queue_full_journals(backend: Backend) {
    let env = Env::new(backend).await;
    let mut cfg = env.cfg();
    cfg.queue_capacity = 4;
    let (handle, writer) = start(cfg).await.unwrap();
    let records: Vec<LedgerRecord> = (0..50).map(simple).collect();
    // The writer is not running: 4 fit in the queue, 46 overflow to the journal.
    for r in &records {
        handle.submit(r.clone());
    }
    assert_eq!(handle.stats().queue_depth, 4);
    wait_until("overflow journaled", || handle.stats().journaled == 46).await;
    assert_eq!(journal_segments(&env.journal_dir()).len(), 1);
    // Now run the writer: the queue drains into the store and the journal is replayed.
    let token = CancellationToken::new();
    let task = tokio::spawn(writer.run(token.clone()));
    wait_until("replayed", || handle.stats().replayed == 46).await;
    token.cancel();
    task.await.unwrap();
    let stats = handle.stats();
    assert_eq!(stats.written, 4, "{stats:?}");
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

#[tokio::test]
async fn sqlite_queue_full_journals() {
    queue_full_journals(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_queue_full_journals() {
    queue_full_journals(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown flushes everything, even a batch that would wait a minute to fill.

async fn graceful_shutdown_flushes(backend: Backend) {
    let env = Env::new(backend).await;
    let mut cfg = env.cfg();
    cfg.batch_rows = 100_000;
    cfg.batch_interval = Duration::from_secs(60);
    let (handle, writer) = start(cfg.clone()).await.unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(writer.run(token.clone()));
    let records: Vec<LedgerRecord> = (0..777).map(simple).collect();
    for r in &records {
        handle.submit(r.clone());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handle.stats().written, 0, "still filling its batch");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shutdown does not wait for the batch interval")
        .unwrap();
    assert_eq!(handle.stats().written, 777);
    assert_eq!(total_row(&handle).await, Some(totals(&records)));

    // Submitted after the writer stopped: journaled, replayed at the next start.
    let late = simple(5_000);
    handle.submit(late.clone());
    wait_until("late record journaled", || handle.stats().journaled == 1).await;
    drop(handle);
    let (handle, stop) = run(cfg).await;
    assert_eq!(handle.stats().replayed, 1);
    stop.stop().await;
    assert_eq!(handle.fetch(&late.record_id).await.unwrap(), Some(late));
}

#[tokio::test]
async fn sqlite_graceful_shutdown_flushes() {
    graceful_shutdown_flushes(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_graceful_shutdown_flushes() {
    graceful_shutdown_flushes(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Usage queries: grouping and filters, identical on both stores.

fn usage_dataset() -> Vec<LedgerRecord> {
    let mut out = Vec::new();
    let combos = [
        ("acme", "openai", "gpt-4o"),
        ("acme", "openai", "gpt-4o-mini"),
        ("acme", "anthropic", "claude-sonnet-4-5"),
        ("globex", "openai", "gpt-4o"),
        ("globex", "anthropic", "claude-haiku-4-5"),
    ];
    let mut i = 0;
    for day in 0..3 {
        for (k, (tenant, provider, model)) in combos.iter().enumerate() {
            for n in 0..(k + day as usize + 1) {
                let ts = T0 + day * DAY + (n as i64) * 3_600_000;
                out.push(rec(i, tenant, provider, model, ts));
                i += 1;
            }
        }
    }
    out
}

/// The reference implementation of a usage query, in plain Rust.
fn expected(records: &[LedgerRecord], q: &UsageQuery) -> Vec<UsageRow> {
    type Key = (Option<String>, Option<String>, Option<String>, Option<String>);
    let mut groups: std::collections::BTreeMap<Key, Vec<LedgerRecord>> = std::collections::BTreeMap::new();
    for r in records {
        if q.from_unix_ms.is_some_and(|f| r.ts_unix_ms < f)
            || q.to_unix_ms.is_some_and(|t| r.ts_unix_ms >= t)
            || q.tenant.as_ref().is_some_and(|t| &r.tenant != t)
            || q.provider.as_ref().is_some_and(|p| &r.provider != p)
            || q.model.as_ref().is_some_and(|m| &r.upstream_model != m)
        {
            continue;
        }
        let g = |d: GroupBy, v: String| q.group_by.contains(&d).then_some(v);
        let key = (
            g(GroupBy::Day, format_day(r.ts_unix_ms.div_euclid(DAY))),
            g(GroupBy::Tenant, r.tenant.clone()),
            g(GroupBy::Provider, r.provider.clone()),
            g(GroupBy::Model, r.upstream_model.clone()),
        );
        groups.entry(key).or_default().push(r.clone());
    }
    groups
        .into_iter()
        .map(|((day, tenant, provider, model), rs)| UsageRow { day, tenant, provider, model, ..totals(&rs) })
        .collect()
}

fn usage_queries() -> Vec<UsageQuery> {
    let g = |s: &str| GroupBy::parse_list(s).unwrap();
    vec![
        UsageQuery::default(),
        UsageQuery { group_by: g("tenant"), ..Default::default() },
        UsageQuery { group_by: g("day"), ..Default::default() },
        UsageQuery { group_by: g("model,provider"), ..Default::default() },
        UsageQuery { group_by: g("tenant,provider,model,day"), ..Default::default() },
        UsageQuery { tenant: Some("acme".into()), group_by: g("day,model"), ..Default::default() },
        UsageQuery {
            from_unix_ms: Some(T0 + DAY),
            to_unix_ms: Some(T0 + 2 * DAY),
            group_by: g("tenant"),
            ..Default::default()
        },
        UsageQuery {
            from_unix_ms: Some(T0 + 3_600_000),
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            group_by: g("tenant,day"),
            ..Default::default()
        },
        UsageQuery { tenant: Some("nobody".into()), ..Default::default() },
        UsageQuery { tenant: Some("nobody".into()), group_by: g("tenant"), ..Default::default() },
    ]
}

async fn usage_results(backend: Backend) -> Vec<Vec<UsageRow>> {
    let env = Env::new(backend).await;
    let (handle, stop) = run(env.cfg()).await;
    let data = usage_dataset();
    for r in &data {
        handle.submit(r.clone());
    }
    stop.stop().await;
    let mut out = Vec::new();
    for q in usage_queries() {
        let got = handle.usage(&q).await.unwrap();
        assert_eq!(got, expected(&data, &q), "{backend:?} {q:?}");
        out.push(got);
    }
    // Spot checks on the shape.
    let by_day = &out[2];
    assert_eq!(
        by_day.iter().map(|r| r.day.clone().unwrap()).collect::<Vec<_>>(),
        ["2025-03-01", "2025-03-02", "2025-03-03"]
    );
    assert!(out[8].is_empty() && out[9].is_empty());
    assert_eq!(out[1].len(), 2);
    assert_eq!(out[1][0].tenant.as_deref(), Some("acme"));
    assert!(out[1][0].provider.is_none() && out[1][0].day.is_none());
    out
}

#[tokio::test]
async fn sqlite_usage_grouping_and_filters() {
    usage_results(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_usage_grouping_and_filters() {
    usage_results(Backend::Postgres).await;
}

#[tokio::test]
async fn usage_is_identical_on_both_stores() {
    let lite = usage_results(Backend::Sqlite).await;
    let pg = usage_results(Backend::Postgres).await;
    assert_eq!(lite, pg);
}

// ---------------------------------------------------------------------------------------------
// Retention and migrations.

async fn prune(backend: Backend) {
    let env = Env::new(backend).await;
    let (handle, stop) = run(env.cfg()).await;
    let data = usage_dataset();
    for r in &data {
        handle.submit(r.clone());
    }
    stop.stop().await;
    let cut = T0 + DAY;
    let old = data.iter().filter(|r| r.ts_unix_ms < cut).count() as u64;
    assert_eq!(handle.prune_before(cut).await.unwrap(), old);
    assert_eq!(handle.prune_before(cut).await.unwrap(), 0);
    let kept: Vec<LedgerRecord> = data.into_iter().filter(|r| r.ts_unix_ms >= cut).collect();
    assert_eq!(total_row(&handle).await, Some(totals(&kept)));
}

#[tokio::test]
async fn sqlite_prune_before() {
    prune(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_prune_before() {
    prune(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_migrations_apply_once() {
    let env = Env::new(Backend::Postgres).await;
    for _ in 0..3 {
        let (handle, writer) = start(env.cfg()).await.unwrap();
        assert!(handle.stats().database_ok);
        drop(writer);
    }
    let pg = env.pg.as_ref().unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // Issue 11 adds migration 3 (record ids), issue 12 migration 4 (session ids): the expectation grows
    // from [1] to [1, 3, 4].
    let rows = client.query("SELECT version, name FROM schema_migrations ORDER BY version", &[]).await.unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [1, 3, 4, 16, 17]);
    let idx = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'ledger_records' ORDER BY indexname",
            &[&pg.name],
        )
        .await
        .unwrap();
    let names: Vec<String> = idx.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        [
            "ledger_records_key_ts_idx",
            "ledger_records_pkey",
            "ledger_records_request_id_idx",
            "ledger_records_tenant_ts_idx",
            "ledger_records_ts_idx"
        ]
    );
}

#[tokio::test]
async fn sqlite_migrations_apply_once_and_use_wal() {
    let env = Env::new(Backend::Sqlite).await;
    for _ in 0..3 {
        let (_handle, _writer) = start(env.cfg()).await.unwrap();
    }
    let conn = rusqlite::Connection::open(env.dir.path().join(sqlite::FILE_NAME)).unwrap();
    // Issue 11 adds migration 3 (record ids), issue 12 migration 4 (session ids), issue 16 the
    // hourly (16) and daily (17) rollups.
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 5);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

// ---------------------------------------------------------------------------------------------
// Issue 11, item 1: the record id (server-generated) is the ledger's identity; the client's
// request id is only a correlation column. Databases and journals of the previous schema upgrade
// in place.

/// Issue 11, item 1: records that share a request id (one client reusing `x-request-id`, or two
/// tenants sending the same one) are distinct rows; replaying them is still exactly-once.
async fn shared_request_id_is_not_an_identity(backend: Backend) {
    let env = Env::new(backend).await;
    let (handle, stop) = run(env.cfg()).await;
    let records: Vec<LedgerRecord> = (0..6)
        .map(|i| {
            let mut r = simple(i);
            r.request_id = "client-chosen-id".to_owned();
            r.tenant = if i < 3 { "tenant-a" } else { "tenant-b" }.to_owned();
            r
        })
        .collect();
    for r in &records {
        handle.submit(r.clone());
    }
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)), "one row per record id");
    // The same records replayed from a journal (crash between commit and delete): no new rows.
    let seg = env.journal_dir().join(format!("{:020}.jsonl", 999));
    std::fs::write(&seg, records.iter().flat_map(encode_line).collect::<Vec<u8>>()).unwrap();
    drop(handle);
    let (handle, stop) = run(env.cfg()).await;
    assert_eq!(handle.stats().replayed, 6);
    stop.stop().await;
    assert_eq!(total_row(&handle).await, Some(totals(&records)));
}

#[tokio::test]
async fn sqlite_shared_request_id_is_not_an_identity() {
    shared_request_id_is_not_an_identity(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_shared_request_id_is_not_an_identity() {
    shared_request_id_is_not_an_identity(Backend::Postgres).await;
}

/// A journal line as the previous version wrote it: no `record_id` field.
fn legacy_line(r: &LedgerRecord) -> Vec<u8> {
    use sha2::Digest;
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("record_id");
    let json = serde_json::to_vec(&v).unwrap();
    let digest = sha2::Sha256::digest(&json);
    let mut out = hex::encode(&digest[..8]).into_bytes();
    out.push(b'\t');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Inserts `r` with the version-1 schema (no record id).
const LEGACY_INSERT: &str = "INSERT INTO ledger_records (request_id, ts_unix_ms, tenant, key_id, provider, \
     requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, \
     usage_estimated, cost_nano_usd, price_input_micro_per_m, price_output_micro_per_m, \
     price_cached_input_micro_per_m, price_cache_write_micro_per_m, status, stream, latency_ms, ttft_ms, \
     attempts, http_status) VALUES ";

fn legacy_values(r: &LedgerRecord, bool_of: fn(bool) -> &'static str) -> String {
    format!(
        "('{}', {}, '{}', {}, '{}', '{}', '{}', {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, '{}', {}, {}, {}, {}, {})",
        r.request_id,
        r.ts_unix_ms,
        r.tenant,
        r.key_id.as_deref().map_or("NULL".to_owned(), |k| format!("'{k}'")),
        r.provider,
        r.requested_model,
        r.upstream_model,
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        bool_of(r.usage_estimated),
        r.cost_nano_usd,
        r.price.input_micro_per_m,
        r.price.output_micro_per_m,
        r.price.cached_input_micro_per_m,
        r.price.cache_write_micro_per_m,
        r.status.as_str(),
        bool_of(r.stream),
        r.latency_ms,
        r.ttft_ms.map_or("NULL".to_owned(), |t| t.to_string()),
        r.attempts,
        r.http_status,
    )
}

/// Issue 11, item 1: a store created by the previous version (primary key on `request_id`, one
/// committed row, and a journal holding that row again plus one uncommitted record, both without
/// `record_id`) upgrades in place: the old row keeps its request id as its record id, the replay
/// adds only the uncommitted record, and new records sharing an old request id are stored.
async fn legacy_store_upgrades_in_place(backend: Backend) {
    let env = Env::new(backend).await;
    // The old rows' record id is their request id; the test records model exactly that.
    let legacy = |i: u64| {
        let mut r = simple(i);
        r.record_id.clone_from(&r.request_id);
        r
    };
    let (committed, uncommitted) = (legacy(1), legacy(2));
    let v1_sql: &str = match backend {
        Backend::Sqlite => include_str!("../../../migrations/sqlite/0001_ledger_records.sql"),
        Backend::Postgres => include_str!("../../../migrations/postgres/0001_ledger_records.sql"),
    };
    let migrations = "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                      applied_at_unix_ms BIGINT NOT NULL); \
                      INSERT INTO schema_migrations VALUES (1, 'ledger_records', 0);";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(env.dir.path().join(sqlite::FILE_NAME)).unwrap();
            conn.execute_batch(migrations).unwrap();
            conn.execute_batch(v1_sql).unwrap();
            let sql = format!("{LEGACY_INSERT}{}", legacy_values(&committed, |b| if b { "1" } else { "0" }));
            conn.execute_batch(&sql).unwrap();
        }
        Backend::Postgres => {
            let url = env.pg.as_ref().unwrap().url();
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(migrations).await.unwrap();
            client.batch_execute(v1_sql).await.unwrap();
            let sql = format!("{LEGACY_INSERT}{}", legacy_values(&committed, |b| if b { "TRUE" } else { "FALSE" }));
            client.batch_execute(&sql).await.unwrap();
        }
    }
    std::fs::create_dir_all(env.journal_dir()).unwrap();
    let mut seg = legacy_line(&committed);
    seg.extend(legacy_line(&uncommitted));
    std::fs::write(env.journal_dir().join(format!("{:020}.jsonl", 7)), seg).unwrap();

    let (handle, stop) = run(env.cfg()).await;
    assert!(handle.stats().database_ok, "{:?}", handle.stats());
    assert_eq!(handle.stats().replayed, 2);
    // A new request reusing the old request id is a new record.
    let mut reused = simple(3);
    reused.request_id.clone_from(&committed.request_id);
    handle.submit(reused.clone());
    stop.stop().await;
    assert_eq!(handle.fetch(&committed.record_id).await.unwrap().as_ref(), Some(&committed));
    assert_eq!(handle.fetch(&uncommitted.record_id).await.unwrap().as_ref(), Some(&uncommitted));
    assert_eq!(handle.fetch(&reused.record_id).await.unwrap().as_ref(), Some(&reused));
    assert_eq!(total_row(&handle).await, Some(totals(&[committed, uncommitted, reused])));
    assert!(journal_segments(&env.journal_dir()).is_empty());
}

#[tokio::test]
async fn sqlite_legacy_store_upgrades_in_place() {
    legacy_store_upgrades_in_place(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_legacy_store_upgrades_in_place() {
    legacy_store_upgrades_in_place(Backend::Postgres).await;
}

#[test]
fn record_ids_are_fresh_and_well_formed() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_record_id()).collect();
    assert_eq!(ids.len(), 1000);
    for id in &ids {
        assert_eq!(id.len(), 36, "{id}");
        assert!(id.starts_with(RECORD_ID_PREFIX) && id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}

#[tokio::test]
async fn bad_config_is_refused() {
    let dir = TempDir::new("cfg");
    let cfg = LedgerConfig {
        database_url: Some("postgres://[::1".to_owned()),
        data_dir: dir.path().to_owned(),
        ..LedgerConfig::default()
    };
    assert!(matches!(start(cfg).await, Err(LedgerError::Config(_))));
    let cfg = LedgerConfig { queue_capacity: 0, data_dir: dir.path().to_owned(), ..LedgerConfig::default() };
    assert!(matches!(start(cfg).await, Err(LedgerError::Config(_))));
}

#[tokio::test]
async fn postgres_nul_bytes_do_not_poison_a_batch() {
    let env = Env::new(Backend::Postgres).await;
    let (handle, stop) = run(env.cfg()).await;
    let mut r = simple(1);
    r.requested_model = "evil\0model".to_owned();
    handle.submit(r);
    handle.submit(simple(2));
    stop.stop().await;
    assert_eq!(total_row(&handle).await.unwrap().requests, 2);
    assert_eq!(handle.stats().journaled, 0);
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

#[test]
fn status_names() {
    for s in RecordStatus::ALL {
        assert_eq!(RecordStatus::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
    }
    assert_eq!(RecordStatus::UpstreamError.as_str(), "upstream_error");
}

#[test]
fn times_and_days() {
    assert_eq!(format_day(0), "1970-01-01");
    assert_eq!(format_day(T0 / DAY), "2025-03-01");
    assert_eq!(format_day(-1), "1969-12-31");
    assert_eq!(format_day(11_016), "2000-02-29");
    assert_eq!(parse_time("1740787200000").unwrap(), T0);
    assert_eq!(parse_time("2025-03-01").unwrap(), T0);
    assert_eq!(parse_time("2025-03-01T00:00:00Z").unwrap(), T0);
    assert_eq!(parse_time("2025-03-01T01:30:00.250Z").unwrap(), T0 + 5_400_250);
    assert_eq!(parse_time("2025-03-01T02:00:00+02:00").unwrap(), T0);
    assert_eq!(parse_time("2025-02-28T23:00:00-01:00").unwrap(), T0);
    for bad in ["", "yesterday", "2025-13-01", "2025-03-01T25:00:00Z", "2025-03-01T00:00:00"] {
        assert!(parse_time(bad).is_err(), "{bad}");
    }
    assert_eq!(GroupBy::parse_list("tenant, day,tenant").unwrap(), vec![GroupBy::Tenant, GroupBy::Day]);
    assert!(GroupBy::parse_list("tenant,week").is_err());
}

// ---------------------------------------------------------------------------------------------
// Issue 16: hourly rollups, exact, in the same transaction, idempotent, back-filled, pruned.

/// The rollup table as text cells, in key order, and the same aggregate computed by a `GROUP BY`
/// over `ledger_records` right now.
async fn rollup_and_group_by(env: &Env, tier: rollup::Tier) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let keys = tier.key_columns().len();
    let order: Vec<String> = (1..=keys).map(|i| i.to_string()).collect();
    let order = order.join(", ");
    let table = format!("SELECT * FROM {} ORDER BY {order}", tier.table());
    let group_by =
        format!("{} ORDER BY {order}", rollup::aggregate_select(tier, "FROM ledger_records WHERE 1 = 1", ""));
    match &env.pg {
        None => {
            let conn = rusqlite::Connection::open(env.dir.path().join(sqlite::FILE_NAME)).unwrap();
            let read = |sql: &str| -> Vec<Vec<String>> {
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |row| {
                        Ok((0..n)
                            .map(|i| match row.get_ref(i).unwrap() {
                                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                                other => format!("{other:?}"),
                            })
                            .collect::<Vec<String>>())
                    })
                    .unwrap();
                rows.map(Result::unwrap).collect()
            };
            (read(&table), read(&group_by))
        }
        Some(pg) => {
            let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let mut out = Vec::new();
            for sql in [&table, &group_by] {
                let rows = client.query(sql.as_str(), &[]).await.unwrap();
                out.push(
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| {
                                    if (1..keys).contains(&i) {
                                        r.get::<_, String>(i)
                                    } else {
                                        r.get::<_, i64>(i).to_string()
                                    }
                                })
                                .collect()
                        })
                        .collect(),
                );
            }
            let group_by = out.pop().unwrap();
            (out.pop().unwrap(), group_by)
        }
    }
}

async fn assert_rollups_exact(env: &Env, what: &str) {
    for tier in rollup::Tier::ALL {
        let (table, group_by) = rollup_and_group_by(env, tier).await;
        assert!(!table.is_empty() || group_by.is_empty(), "{what}: {tier:?} rollups empty");
        assert_eq!(table, group_by, "{what}: {tier:?} rollups == GROUP BY over the records");
    }
}

/// A random data set: records over three days (plus an hour before), many combinations,
/// latencies spread over every histogram bucket.
fn random_records(rng: &mut fastrand::Rng, n: u64, id_base: u64) -> Vec<LedgerRecord> {
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let providers = [
        ("openai", ["gpt-4o", "gpt-4o-mini"]),
        ("anthropic", ["claude-sonnet-4-5", "claude-haiku-4-5"]),
        ("groq", ["llama-3.3-70b", "gpt-4o"]),
    ];
    (0..n)
        .map(|k| {
            let i = id_base + k;
            let tenant = tenants[rng.usize(..tenants.len())];
            let (provider, models) = providers[rng.usize(..providers.len())];
            let model = models[rng.usize(..2)];
            let ts = T0 - 3_600_000 + rng.i64(0..3 * DAY + 3_600_000);
            let mut r = rec(i, tenant, provider, model, ts);
            r.key_id = match rng.u8(..3) {
                0 => None,
                k => Some(format!("key-{tenant}-{k}")),
            };
            r.status = if rng.u8(..10) < 7 { RecordStatus::Ok } else { RecordStatus::ALL[rng.usize(..5)] };
            // Log-uniform 1 ms .. 120 s.
            r.latency_ms = (2f64.powf(rng.f64() * 17.0)) as u64;
            r.prompt_tokens = rng.u64(0..5_000);
            r.cached_tokens = rng.u64(0..=r.prompt_tokens / 2);
            r.cache_write_tokens = rng.u64(0..=r.prompt_tokens / 4);
            r.completion_tokens = rng.u64(0..2_000);
            r.cost_nano_usd =
                cost_nano_usd(&PRICE, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens);
            r
        })
        .collect()
}

/// The reference of any usage query (filters, groups, offsets, buckets), in plain Rust.
fn expected_usage(records: &[LedgerRecord], q: &UsageQuery) -> Vec<UsageRow> {
    type Key = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);
    let mut groups: std::collections::BTreeMap<Key, Vec<LedgerRecord>> = std::collections::BTreeMap::new();
    for r in selected(records, q) {
        let g = |d: GroupBy, v: String| q.group_by.contains(&d).then_some(v);
        let (bucket_start, day) = if q.group_by.contains(&GroupBy::Day) {
            match q.bucket {
                Some(b) => {
                    let width = if b == Bucket::new(3_600_000, b.offset_ms()).unwrap() { 3_600_000 } else { DAY };
                    let n = (r.ts_unix_ms + b.offset_ms()) / width;
                    (Some(n * width - b.offset_ms()), None)
                }
                None => (None, Some(format_day((r.ts_unix_ms + q.utc_offset_ms) / DAY))),
            }
        } else {
            (None, None)
        };
        let key = (
            bucket_start,
            day,
            g(GroupBy::Tenant, r.tenant.clone()),
            g(GroupBy::Provider, r.provider.clone()),
            g(GroupBy::Model, r.upstream_model.clone()),
        );
        groups.entry(key).or_default().push(r.clone());
    }
    groups
        .into_iter()
        .map(|((bucket_start_unix_ms, day, tenant, provider, model), rs)| UsageRow {
            day,
            tenant,
            provider,
            model,
            bucket_start_unix_ms,
            ..totals(&rs)
        })
        .collect()
}

fn selected<'a>(records: &'a [LedgerRecord], q: &'a UsageQuery) -> impl Iterator<Item = &'a LedgerRecord> + 'a {
    records.iter().filter(move |r| {
        !(q.from_unix_ms.is_some_and(|f| r.ts_unix_ms < f)
            || q.to_unix_ms.is_some_and(|t| r.ts_unix_ms >= t)
            || q.tenant.as_ref().is_some_and(|t| &r.tenant != t)
            || q.key_id.as_ref().is_some_and(|k| r.key_id.as_ref() != Some(k))
            || q.provider.as_ref().is_some_and(|p| &r.provider != p)
            || q.model.as_ref().is_some_and(|m| &r.upstream_model != m)
            || q.status.as_ref().is_some_and(|s| r.status.as_str() != s))
    })
}

fn expected_latency(records: &[LedgerRecord], q: &UsageQuery) -> LatencyStats {
    let mut hist = [0i64; rollup::LATENCY_BUCKETS];
    let (mut requests, mut errors) = (0, 0);
    for r in selected(records, q) {
        requests += 1;
        errors += u64::from(r.status != RecordStatus::Ok);
        hist[rollup::bucket_of(r.latency_ms)] += 1;
    }
    LatencyStats { requests, errors, p50_ms: rollup::percentile(&hist, 50), p99_ms: rollup::percentile(&hist, 99) }
}

fn random_query(rng: &mut fastrand::Rng, records: &[LedgerRecord]) -> UsageQuery {
    const H: i64 = 3_600_000;
    let pick = |rng: &mut fastrand::Rng, f: &dyn Fn(&LedgerRecord) -> Option<String>| {
        (rng.u8(..4) == 0).then(|| f(&records[rng.usize(..records.len())])).flatten()
    };
    let mut from = (rng.u8(..5) > 0).then(|| T0 - H + rng.i64(0..3 * DAY));
    let mut to = match from {
        None => T0 + rng.i64(0..3 * DAY),
        Some(f) => f + rng.i64(0..2 * DAY),
    };
    if rng.bool() {
        // On hour boundaries (the dashboard's own ranges).
        from = from.map(|f| f.div_euclid(H) * H);
        to = to.div_euclid(H) * H;
    } else if rng.u8(..3) == 0 {
        // On UTC days (the daily tier alone, or with hours around it).
        from = from.map(|f| f.div_euclid(DAY) * DAY);
        to = to.div_euclid(DAY) * DAY + if rng.bool() { DAY } else { 0 };
    }
    let to = (rng.u8(..5) > 0).then_some(to);
    let mut group_by: Vec<GroupBy> = [GroupBy::Tenant, GroupBy::Provider, GroupBy::Model, GroupBy::Day]
        .into_iter()
        .filter(|_| rng.u8(..3) == 0)
        .collect();
    rng.shuffle(&mut group_by);
    let utc_offset_ms = [0, 3 * H, -5 * H, 19_800_000, 14 * H, 20_700_000][rng.usize(..6)];
    let bucket = (group_by.contains(&GroupBy::Day) && rng.bool())
        .then(|| Bucket::new(if rng.bool() { H } else { DAY }, utc_offset_ms).unwrap());
    UsageQuery {
        from_unix_ms: from,
        to_unix_ms: to,
        tenant: pick(rng, &|r| Some(r.tenant.clone())),
        key_id: pick(rng, &|r| r.key_id.clone()),
        provider: pick(rng, &|r| Some(r.provider.clone())),
        model: pick(rng, &|r| Some(r.upstream_model.clone())),
        status: pick(rng, &|r| Some(r.status.as_str().to_owned())),
        group_by,
        utc_offset_ms,
        bucket,
    }
}

/// Property-style: for several seeds, random records (with replayed duplicates) → the rollup
/// table equals a GROUP BY over the records, and random usage/latency queries (unaligned ranges,
/// every filter, whole- and half-hour offsets, buckets) equal the plain-Rust reference.
async fn rollups_match_raw(backend: Backend) {
    for seed in [1u64, 16, 2026] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let env = Env::new(backend).await;
        let (handle, stop) = run(env.cfg()).await;
        let data = random_records(&mut rng, 1_200, seed * 1_000_000);
        for r in &data {
            handle.submit(r.clone());
        }
        // Replays of already-stored records (journal replay, retried batch): counted once.
        wait_until("first half written", || handle.stats().written >= 1_200).await;
        for r in data.iter().step_by(7) {
            handle.submit(r.clone());
        }
        stop.stop().await;
        assert_eq!(total_row(&handle).await, Some(totals(&data)), "seed {seed}");
        assert_rollups_exact(&env, &format!("{backend:?} seed {seed}")).await;
        for k in 0..60 {
            let q = random_query(&mut rng, &data);
            assert_eq!(
                handle.usage(&q).await.unwrap(),
                expected_usage(&data, &q),
                "{backend:?} seed {seed} query {k}: {q:?}"
            );
            assert_eq!(
                handle.latency(&q).await.unwrap(),
                expected_latency(&data, &q),
                "{backend:?} seed {seed} query {k}: {q:?}"
            );
            // The dashboard's one-scan breakdowns: the finest grouping, regrouped, is the query.
            let mut finest = q.clone();
            for g in [GroupBy::Tenant, GroupBy::Provider, GroupBy::Model] {
                if !finest.group_by.contains(&g) {
                    finest.group_by.push(g);
                }
            }
            let fine = handle.usage(&finest).await.unwrap();
            assert_eq!(
                super::regroup(&fine, &q.group_by),
                expected_usage(&data, &q),
                "{backend:?} seed {seed} query {k} regrouped: {q:?}"
            );
        }
        // Local days in whole-hour zones east and west (midnight before and after noon UTC), built
        // from daily rows plus and minus hours: whole local days, open ends, and a partial hour.
        for off_h in [3i64, -5, 14, 10, -12, 12, 1, -1, -11, 13] {
            let off = off_h * 3_600_000;
            let midnight = T0 - off;
            for (from, to) in [
                (Some(midnight), Some(midnight + 2 * DAY)),
                (Some(midnight - DAY), None),
                (None, Some(midnight + DAY)),
                (Some(midnight + 7), Some(midnight + 3 * DAY - 3_600_000)),
            ] {
                for groups in
                    [vec![GroupBy::Day], vec![GroupBy::Day, GroupBy::Model], vec![GroupBy::Day, GroupBy::Tenant]]
                {
                    for bucket in [None, Some(Bucket::new(DAY, off).unwrap())] {
                        let q = UsageQuery {
                            from_unix_ms: from,
                            to_unix_ms: to,
                            group_by: groups.clone(),
                            utc_offset_ms: off,
                            bucket,
                            ..UsageQuery::default()
                        };
                        assert_eq!(handle.usage(&q).await.unwrap(), expected_usage(&data, &q), "{backend:?} {q:?}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn sqlite_rollups_match_raw() {
    rollups_match_raw(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_rollups_match_raw() {
    rollups_match_raw(Backend::Postgres).await;
}

/// Pruning subtracts from the rollups in the same transaction: afterwards they still equal the
/// records, whole pruned hours are gone, and queries over the kept range are unchanged.
async fn prune_keeps_rollups_exact(backend: Backend) {
    let mut rng = fastrand::Rng::with_seed(7);
    let env = Env::new(backend).await;
    // A queue that holds the whole data set: no record takes the journal's slower path.
    let (handle, stop) = run(LedgerConfig { queue_capacity: 30_000, batch_rows: 1_000, ..env.cfg() }).await;
    let data = random_records(&mut rng, 25_000, 0);
    for r in &data {
        handle.submit(r.clone());
    }
    stop.stop().await;
    assert_eq!(handle.stats().journaled, 0);
    assert_eq!(total_row(&handle).await, Some(totals(&data)));
    // Mid-hour cut-off: the cut hour keeps part of its records; 2+ prune chunks.
    let cut = T0 + 2 * DAY + 1_234_567;
    let old = data.iter().filter(|r| r.ts_unix_ms < cut).count() as u64;
    assert!(old > 10_000, "{old}");
    assert_eq!(handle.prune_before(cut).await.unwrap(), old);
    assert_rollups_exact(&env, "after prune").await;
    let kept: Vec<LedgerRecord> = data.into_iter().filter(|r| r.ts_unix_ms >= cut).collect();
    assert_eq!(total_row(&handle).await, Some(totals(&kept)));
    let by_day = UsageQuery { group_by: vec![GroupBy::Day, GroupBy::Tenant], ..UsageQuery::default() };
    assert_eq!(handle.usage(&by_day).await.unwrap(), expected_usage(&kept, &by_day));
}

#[tokio::test]
async fn sqlite_prune_keeps_rollups_exact() {
    prune_keeps_rollups_exact(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_prune_keeps_rollups_exact() {
    prune_keeps_rollups_exact(Backend::Postgres).await;
}

/// The back-fill migration: a ledger created at the schema before issue 16 (migrations 1, 3, 4)
/// holding records is opened → its rollups equal a GROUP BY over the records, and usage queries
/// answer as before.
async fn backfill_migration(backend: Backend) {
    let mut rng = fastrand::Rng::with_seed(99);
    let env = Env::new(backend).await;
    let mut data = random_records(&mut rng, 800, 0);
    for r in &mut data {
        r.record_id.clone_from(&r.request_id); // rows of schema 1 get their request id as record id
    }
    let (v1, v3, v4): (&str, &str, &str) = match backend {
        Backend::Sqlite => (
            include_str!("../../../migrations/sqlite/0001_ledger_records.sql"),
            include_str!("../../../migrations/sqlite/0003_record_id.sql"),
            include_str!("../../../migrations/sqlite/0004_session_id.sql"),
        ),
        Backend::Postgres => (
            include_str!("../../../migrations/postgres/0001_ledger_records.sql"),
            include_str!("../../../migrations/postgres/0003_record_id.sql"),
            include_str!("../../../migrations/postgres/0004_session_id.sql"),
        ),
    };
    let bool_of: fn(bool) -> &'static str = match backend {
        Backend::Sqlite => |b| if b { "1" } else { "0" },
        Backend::Postgres => |b| if b { "TRUE" } else { "FALSE" },
    };
    let mut sql = String::from(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at_unix_ms BIGINT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, 'ledger_records', 0), (3, 'record_id', 0), (4, 'session_id', 0);",
    );
    sql.push_str(v1);
    let values: Vec<String> = data.iter().map(|r| legacy_values(r, bool_of)).collect();
    sql.push_str(&format!("{LEGACY_INSERT}{};", values.join(", ")));
    sql.push_str(v3);
    sql.push_str(v4);
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(env.dir.path().join(sqlite::FILE_NAME)).unwrap();
            conn.execute_batch(&sql).unwrap();
        }
        Backend::Postgres => {
            let (client, conn) =
                tokio_postgres::connect(&env.pg.as_ref().unwrap().url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(&sql).await.unwrap();
        }
    }
    let (handle, stop) = run(env.cfg()).await;
    stop.stop().await;
    assert_rollups_exact(&env, &format!("{backend:?} back-fill")).await;
    let (table, _) = rollup_and_group_by(&env, rollup::Tier::Hourly).await;
    assert!(table.len() > 100, "{}", table.len());
    let (days, _) = rollup_and_group_by(&env, rollup::Tier::Daily).await;
    assert!(!days.is_empty() && days.len() < table.len(), "{} daily rows, {} hourly", days.len(), table.len());
    assert_eq!(total_row(&handle).await, Some(totals(&data)));
    for k in 0..20 {
        let q = random_query(&mut rng, &data);
        assert_eq!(handle.usage(&q).await.unwrap(), expected_usage(&data, &q), "{backend:?} query {k}: {q:?}");
    }
    // Records written after the upgrade go to the rollups too.
    let (handle, stop) = run(env.cfg()).await;
    let more = random_records(&mut rng, 300, 10_000_000);
    for r in &more {
        handle.submit(r.clone());
    }
    stop.stop().await;
    assert_rollups_exact(&env, &format!("{backend:?} after the upgrade")).await;
}

#[tokio::test]
async fn sqlite_backfill_migration() {
    backfill_migration(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_backfill_migration() {
    backfill_migration(Backend::Postgres).await;
}
