//! The gateway for fault tests: like [`crate::harness::GatewayUnderTest`], but the data directory
//! outlives shutdown so the embedded ledger can be read once the writer has drained, and with helpers
//! for the `/metrics` gauges.
//!
//! The SQLite ledger is read with the `sqlite3` command-line shell (`-json`), falling back to
//! `python3`'s `sqlite3` module: the `tests` crate does not link rusqlite.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::MapEnv;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::TestClient;

/// A running gateway whose data directory is kept after [`FaultGateway::shutdown`].
pub struct FaultGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ledger's data directory (SQLite file and journal).
    pub data_dir: PathBuf,
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), gateway::StartError>>>,
}

impl Drop for FaultGateway {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl FaultGateway {
    /// Starts from YAML; `${DATA_DIR}` is a fresh temporary directory.
    ///
    /// # Panics
    /// When the config is rejected or loopback cannot be bound.
    pub async fn start(yaml: &str) -> Self {
        let spawned = crate::harness::spawn_gateway(yaml, MapEnv::default(), "faults").await;
        FaultGateway { addr: spawned.addr, data_dir: spawned.data_dir, token: spawned.token, task: Some(spawned.task) }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An HTTP/1.1 client.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.base_url())
    }

    /// A gauge or counter from `/metrics` (the sum over its label sets; 0 when absent).
    ///
    /// # Panics
    /// When `/metrics` cannot be fetched.
    pub async fn metric(&self, name: &str) -> f64 {
        let r = self.client().get("/metrics").await.unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        let text = r.text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (at most `timeout`) until `aggregator_open_streams` and `aggregator_inflight_requests` are
    /// back to 0; returns the last values seen.
    pub async fn wait_gauges_zero(&self, timeout: Duration) -> (f64, f64) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let streams = self.metric("aggregator_open_streams").await;
            // `/metrics` itself is not a chat request, so it does not count as in flight.
            let inflight = self.metric("aggregator_inflight_requests").await;
            if (streams == 0.0 && inflight == 0.0) || std::time::Instant::now() >= deadline {
                return (streams, inflight);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the gateway, waits for `serve` to return (ledger drained), and returns the data directory.
    ///
    /// # Panics
    /// When `serve` fails, panics or takes longer than 30 s.
    pub async fn shutdown(mut self) -> PathBuf {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Err(_) => panic!("gateway::serve did not return within 30 s of shutdown"),
                Ok(Err(join)) => panic!("gateway::serve panicked: {join}"),
                Ok(Ok(Err(e))) => panic!("gateway::serve failed: {e}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
        self.data_dir.clone()
    }

    /// Shuts down, reads every ledger record, and removes the data directory.
    pub async fn shutdown_and_read_ledger(self) -> Vec<LedgerRow> {
        let dir = self.shutdown().await;
        let rows = read_sqlite_ledger(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        rows
    }
}

/// One ledger record, as the fault tests check it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LedgerRow {
    /// The request id (the client's `x-request-id` when it sent one).
    pub request_id: String,
    /// `ok`, `upstream_error`, `client_error`, `cancelled` or `partial`.
    pub status: String,
    /// Upstream attempts.
    pub attempts: i64,
    /// Status returned downstream (499 for a request abandoned before its answer).
    pub http_status: i64,
    /// Provider id that served (or last tried).
    pub provider: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// 1 when estimated.
    pub usage_estimated: i64,
    /// 1 for a stream.
    pub stream: i64,
}

const LEDGER_SQL: &str = "SELECT request_id, status, attempts, http_status, provider, prompt_tokens, \
     completion_tokens, CAST(usage_estimated AS INTEGER) AS usage_estimated, CAST(stream AS INTEGER) AS stream \
     FROM ledger_records ORDER BY ts_unix_ms, request_id";

/// Reads every record of the embedded ledger under `data_dir`.
///
/// # Panics
/// When neither `sqlite3` nor `python3` can read the file.
pub fn read_sqlite_ledger(data_dir: &Path) -> Vec<LedgerRow> {
    let file = data_dir.join("ledger.sqlite3");
    let out = std::process::Command::new("sqlite3").arg("-json").arg(&file).arg(LEDGER_SQL).output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            let script = "import json,sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.row_factory=sqlite3.Row\n\
                          print(json.dumps([dict(r) for r in c.execute(sys.argv[2])]))";
            let o = std::process::Command::new("python3")
                .args(["-c", script])
                .arg(&file)
                .arg(LEDGER_SQL)
                .output()
                .unwrap_or_else(|e| panic!("neither sqlite3 nor python3 could read {}: {e}", file.display()));
            assert!(o.status.success(), "python3 sqlite3: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    };
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ledger rows ({e}): {text}"))
}

/// The record for `request_id`.
///
/// # Panics
/// When there is not exactly one.
pub fn record<'a>(rows: &'a [LedgerRow], request_id: &str) -> &'a LedgerRow {
    let found: Vec<&LedgerRow> = rows.iter().filter(|r| r.request_id == request_id).collect();
    assert_eq!(found.len(), 1, "exactly one ledger record for `{request_id}`; all rows: {rows:#?}");
    found[0]
}
