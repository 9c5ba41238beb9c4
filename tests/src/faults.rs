//! Fault-injection harness (issue 6): things the hyper mock in [`crate::mock`] cannot do.
//!
//! - [`upstream::FaultUpstream`]: a scripted HTTP/1.1 upstream on raw TCP. It can reset (RST) or close
//!   (FIN) mid-body, stall before the headers or between chunks, send garbage, push a large stream
//!   lazily under TCP backpressure, and it accounts for every connection: open, busy (a response in
//!   progress) and closed by the peer. "The gateway leaks no upstream connection" is `busy() == 0`.
//! - [`proxy::TcpProxy`]: a loopback TCP relay that can be taken down (every connection reset, new
//!   ones refused) and brought back on the same port; used in front of the machine's Postgres so a
//!   test can make "the database" go away without touching the real server.
//! - [`gateway::FaultGateway`]: `gateway::serve` on `127.0.0.1:0` whose data directory survives
//!   shutdown, so the embedded SQLite ledger can be read after the writer drained; plus `/metrics`
//!   gauges and the process RSS.
//!
//! Everything is bounded: every wait has a deadline, every stall a cap.

pub mod gateway;
pub mod proxy;
pub mod upstream;

use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resident set size of this process in KiB (`VmRSS` in `/proc/self/status`); 0 when unavailable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
