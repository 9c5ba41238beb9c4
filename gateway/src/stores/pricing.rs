//! The live price table: the operator's `pricing.yaml` layered over the built-in table, loaded at start,
//! re-read when the file changes, swapped atomically; a reload that fails keeps the previous table.
//! Without a file the built-in table alone is used. The table and the cost arithmetic are
//! `domain::pricing`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use crate::domain::pricing::{PricingError, PricingTable};

/// How often [`Pricing::watch`] looks at the file's modification time.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The live pricing table: swapped atomically on reload, read without locks.
#[derive(Clone)]
pub struct Pricing {
    table: Arc<ArcSwap<PricingTable>>,
    path: PathBuf,
}

impl std::fmt::Debug for Pricing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pricing").field("path", &self.path).finish()
    }
}

impl Pricing {
    /// Reads and validates the pricing file; called once at start, failure refuses the start.
    ///
    /// # Errors
    /// [`PricingError::Io`] when unreadable, otherwise as [`PricingTable::parse`].
    pub fn load(path: &Path) -> Result<Self, PricingError> {
        let table = read_table(path)?;
        Ok(Self { table: Arc::new(ArcSwap::from_pointee(table)), path: path.to_owned() })
    }

    /// A pricing with a fixed table and no file (tests).
    pub fn from_table(table: PricingTable) -> Self {
        Self { table: Arc::new(ArcSwap::from_pointee(table)), path: PathBuf::new() }
    }

    /// The built-in table alone (no `pricing_file` configured).
    ///
    /// # Errors
    /// As [`PricingTable::builtin`].
    pub fn builtin() -> Result<Self, PricingError> {
        Ok(Self::from_table(PricingTable::builtin()?))
    }

    /// The current table; cheap (no lock), hold the guard only briefly.
    pub fn current(&self) -> arc_swap::Guard<Arc<PricingTable>> {
        self.table.load()
    }

    /// Re-reads the file now; on error the current table is kept and the error returned.
    ///
    /// # Errors
    /// As [`Pricing::load`].
    pub fn reload(&self) -> Result<usize, PricingError> {
        let table = read_table(&self.path)?;
        let entries = table.len();
        self.table.store(Arc::new(table));
        Ok(entries)
    }

    /// Polls the file's modification time every [`WATCH_INTERVAL`] and hot-reloads on change until
    /// `shutdown` is cancelled. A broken edit keeps the old prices and logs a warning; the caller
    /// spawns the returned future on its task tracker.
    pub fn watch(&self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        self.watch_every(WATCH_INTERVAL, shutdown)
    }

    /// [`Pricing::watch`] with a custom poll interval (tests).
    pub fn watch_every(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let mut last = file_stamp(&this.path);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let stamp = file_stamp(&this.path);
                if stamp == last {
                    continue;
                }
                last = stamp;
                match this.reload() {
                    Ok(entries) => tracing::info!(
                        path = %this.path.display(), entries, "Pricing file reloaded"
                    ),
                    Err(error) => tracing::warn!(
                        path = %this.path.display(), %error,
                        "Pricing file edit refused; keeping the previous prices"
                    ),
                }
            }
        }
    }
}

/// Modification time and length: a change in either triggers a reload (mtime alone can be coarse).
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The file's table over the built-in one.
fn read_table(path: &Path) -> Result<PricingTable, PricingError> {
    let text = std::fs::read_to_string(path).map_err(|source| PricingError::Io { path: path.to_owned(), source })?;
    Ok(PricingTable::parse(&text)?.over(&PricingTable::builtin()?))
}

#[cfg(test)]
mod tests;
