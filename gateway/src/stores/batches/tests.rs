//! The queue's guarantees on both stores (issue 14): claims hand each line to one holder, leases
//! expire by the database clock and are taken over with a new fencing token, a stale holder writes
//! nothing, and a line's ledger row is written once. Postgres tests run in a fresh schema.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::domain::pricing::Price;
use crate::stores::ledger::{self, LedgerConfig, RecordStatus};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test?connect_timeout=2";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct PgSchema(String);

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(DEFAULT_PG, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
                }
            });
        })
        .join();
    }
}

struct Env {
    store: Arc<BatchStore>,
    _dir: TempDir,
    _schema: Option<PgSchema>,
}

/// A store of each kind, each over a migrated ledger.
async fn envs() -> Vec<(&'static str, Env)> {
    let mut out = Vec::new();
    for pg in [false, true] {
        let dir = TempDir(std::env::temp_dir().join(format!("batches_t_{:016x}", fastrand::u64(..))));
        std::fs::create_dir_all(&dir.0).unwrap();
        let (url, schema) = if pg {
            let name = format!("batches_t_{:016x}", fastrand::u64(..));
            let (client, conn) =
                tokio_postgres::connect(DEFAULT_PG, tokio_postgres::NoTls).await.expect("Postgres at 127.0.0.1:5432");
            tokio::spawn(conn);
            client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
            (Some(format!("{DEFAULT_PG}&options=-c%20search_path%3D{name}")), Some(PgSchema(name)))
        } else {
            (None, None)
        };
        let cfg = LedgerConfig { database_url: url.clone(), data_dir: dir.0.clone(), ..LedgerConfig::default() };
        let _ledger = ledger::start(cfg).await.unwrap();
        let store = Arc::new(BatchStore::open(url.as_deref(), &dir.0).await.unwrap());
        out.push((if pg { "postgres" } else { "sqlite" }, Env { store, _dir: dir, _schema: schema }));
    }
    out
}

/// An `in_progress` batch with `n` queued lines on lane `p`.
async fn batch_with_lines(store: &BatchStore, n: i64) -> String {
    let id = format!("batch_{:016x}", fastrand::u64(..));
    let now = crate::domain::time::now_unix_ms();
    let row = BatchRow {
        id: id.clone(),
        tenant: "acme".into(),
        caller_limits: "{}".into(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: "file-x".into(),
        completion_window: "24h".into(),
        status: "validating".into(),
        created_at_ms: now,
        expires_at_ms: now + 86_400_000,
        ..BatchRow::default()
    };
    let (row, created) = store.insert_batch(&row).await.unwrap();
    assert!(created);
    let items: Vec<NewItem> = (1..=n)
        .map(|i| NewItem {
            line_no: i,
            custom_id: format!("c{i}"),
            request_id: format!("batch_req_{id}_{i}"),
            provider: "p".into(),
            body: br#"{"model":"m"}"#.to_vec(),
        })
        .collect();
    store.insert_items(&row.id, &items).await.unwrap();
    // Re-queuing the same lines (a retried validation) is a no-op.
    store.insert_items(&row.id, &items).await.unwrap();
    let token = store.take_step(&row.id, "test", 60_000).await.unwrap().unwrap();
    assert!(store.start(&row.id, token, n, Some("m"), now).await.unwrap());
    store.release_step(&row.id, token).await.unwrap();
    id
}

fn result(c: &Claimed) -> LineResult {
    let request_id = c.request_id.clone();
    LineResult {
        ok: true,
        line: format!("{{\"custom_id\":\"{}\"}}\n", c.custom_id).into_bytes(),
        prompt_tokens: 11,
        cached_tokens: 0,
        completion_tokens: 6,
        ledger: Some(LedgerRecord {
            record_id: line_record_id(&request_id),
            session_id: None,
            request_id,
            ts_unix_ms: 1,
            tenant: "acme".into(),
            key_id: None,
            provider: "p".into(),
            requested_model: "m".into(),
            upstream_model: "m".into(),
            prompt_tokens: 11,
            completion_tokens: 6,
            cached_tokens: 0,
            cache_write_tokens: 0,
            usage_estimated: false,
            cost_nano_usd: 5,
            price: Price::default(),
            status: RecordStatus::Ok,
            stream: false,
            latency_ms: 3,
            ttft_ms: None,
            attempts: 1,
            http_status: 200,
        }),
    }
}

#[tokio::test]
async fn claims_hand_each_line_to_one_holder_and_commits_are_fenced() {
    for (kind, env) in envs().await {
        let s = &env.store;
        let id = batch_with_lines(s, 3).await;
        let first = s.claim("p", 2, "w1", 60_000).await.unwrap();
        assert_eq!(first.len(), 2, "{kind}");
        assert!(first.iter().all(|c| c.token == 1 && !c.redispatch), "{kind}");
        assert!(s.claim("other-lane", 5, "w1", 60_000).await.unwrap().is_empty(), "{kind}: lanes are separate");
        let rest = s.claim("p", 5, "w2", 60_000).await.unwrap();
        assert_eq!(rest.len(), 1, "{kind}");
        assert!(s.claim("p", 5, "w3", 60_000).await.unwrap().is_empty(), "{kind}: nothing left");
        let mut lines: Vec<i64> = first.iter().chain(&rest).map(|c| c.line_no).collect();
        lines.sort_unstable();
        assert_eq!(lines, vec![1, 2, 3], "{kind}");
        assert!(s.complete(&first[0], &result(&first[0])).await.unwrap(), "{kind}");
        assert!(!s.complete(&first[0], &result(&first[0])).await.unwrap(), "{kind}: a second commit writes nothing");
        assert_eq!(s.ledger_rows_of(&id).await.unwrap(), 1, "{kind}");
        let c = s.counts(&id).await.unwrap();
        assert_eq!((c.total, c.succeeded, c.failed, c.pending, c.input_tokens), (3, 1, 0, 2, 11), "{kind}");
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_stale_holder_writes_nothing() {
    for (kind, env) in envs().await {
        let s = &env.store;
        let id = batch_with_lines(s, 1).await;
        let old = s.claim("p", 1, "zombie", 200).await.unwrap().remove(0);
        assert!(s.claim("p", 1, "w2", 60_000).await.unwrap().is_empty(), "{kind}: leased");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let new = s.claim("p", 1, "w2", 60_000).await.unwrap().remove(0);
        assert_eq!(new.line_no, old.line_no, "{kind}");
        assert_eq!(new.token, old.token + 1, "{kind}: a new fencing token");
        assert!(new.redispatch, "{kind}: counted as a possible duplicate dispatch");
        assert!(!s.heartbeat(&old, 60_000).await.unwrap(), "{kind}: the zombie's heartbeat fails");
        assert!(!s.complete(&old, &result(&old)).await.unwrap(), "{kind}: the zombie's result is dropped");
        assert!(!s.requeue(&old, 0, true).await.unwrap(), "{kind}: the zombie cannot requeue");
        assert!(s.heartbeat(&new, 60_000).await.unwrap(), "{kind}");
        assert!(s.complete(&new, &result(&new)).await.unwrap(), "{kind}");
        assert_eq!(s.ledger_rows_of(&id).await.unwrap(), 1, "{kind}: billed once");
    }
}

#[tokio::test]
async fn a_requeued_line_waits_for_its_time_and_counts_failures_only_when_asked() {
    for (kind, env) in envs().await {
        let s = &env.store;
        let _ = batch_with_lines(s, 1).await;
        let c = s.claim("p", 1, "w", 60_000).await.unwrap().remove(0);
        assert!(s.requeue(&c, 300, false).await.unwrap(), "{kind}");
        assert!(s.claim("p", 1, "w", 60_000).await.unwrap().is_empty(), "{kind}: not due yet");
        tokio::time::sleep(std::time::Duration::from_millis(450)).await;
        let again = s.claim("p", 1, "w", 60_000).await.unwrap().remove(0);
        assert_eq!(again.failures, 0, "{kind}: a 429 requeue spends no retry");
        assert!(!again.redispatch, "{kind}: a requeue is not a lost lease");
        assert!(s.requeue(&again, 0, true).await.unwrap(), "{kind}");
        let third = s.claim("p", 1, "w", 60_000).await.unwrap().remove(0);
        assert_eq!(third.failures, 1, "{kind}");
    }
}

#[tokio::test]
async fn concurrent_claims_never_share_a_line() {
    for (kind, env) in envs().await {
        let s = &env.store;
        let _ = batch_with_lines(s, 100).await;
        let (a, b, c) =
            tokio::join!(s.claim("p", 40, "a", 60_000), s.claim("p", 40, "b", 60_000), s.claim("p", 40, "c", 60_000));
        let mut all: Vec<i64> = [a.unwrap(), b.unwrap(), c.unwrap()].concat().iter().map(|c| c.line_no).collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "{kind}: no line claimed twice");
        assert_eq!(n, 100, "{kind}: every line claimed");
    }
}

#[tokio::test]
async fn step_leases_are_exclusive_and_finalize_freezes_counts() {
    for (kind, env) in envs().await {
        let s = &env.store;
        let id = batch_with_lines(s, 2).await;
        let t1 = s.take_step(&id, "a", 60_000).await.unwrap().unwrap();
        assert!(s.take_step(&id, "b", 60_000).await.unwrap().is_none(), "{kind}: one step at a time");
        let row = s.batch_any(&id).await.unwrap().unwrap();
        assert!(!s.finalize(&row, t1, "completed", 5).await.unwrap(), "{kind}: lines still pending");
        for c in s.claim("p", 2, "w", 60_000).await.unwrap() {
            assert!(s.complete(&c, &result(&c)).await.unwrap());
        }
        assert!(!s.finalize(&row, t1 + 7, "completed", 5).await.unwrap(), "{kind}: a stale step token writes nothing");
        assert!(s.finalize(&row, t1, "completed", 5).await.unwrap(), "{kind}");
        let done = s.batch_any(&id).await.unwrap().unwrap();
        assert_eq!((done.status.as_str(), done.total, done.completed, done.failed), ("completed", 2, 2, 0), "{kind}");
        let out = s.file_any(done.output_file_id.as_deref().unwrap()).await.unwrap().unwrap();
        let body = s.read_all(out, 1 << 20).await.unwrap();
        assert_eq!(body, b"{\"custom_id\":\"c1\"}\n{\"custom_id\":\"c2\"}\n", "{kind}: the virtual output file");
        assert!(done.error_file_id.is_none(), "{kind}");
    }
}
