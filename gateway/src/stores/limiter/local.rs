//! In-memory counters for one replica (and the fallback when Redis is down).
//!
//! Each counter is one `DashMap` entry, updated under that entry's lock. An admission checks and books
//! its counters one by one and rolls back the ones already booked when a later one refuses, so a
//! refused request leaves no trace (a concurrent request may briefly see the rolled-back amount).

use dashmap::DashMap;

use super::{window_used, Check, LimitKind, Seen, Verdict, WINDOW_MS};

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    index: i64,
    cur: i64,
    prev: i64,
}

impl Window {
    /// Moves the window forward to `index`.
    fn roll(&mut self, index: i64) {
        if self.index == index {
            return;
        }
        self.prev = if self.index == index - 1 { self.cur } else { 0 };
        self.cur = 0;
        self.index = index;
    }
}

/// The counters of one process.
#[derive(Debug, Default)]
pub(crate) struct LocalCounters {
    windows: DashMap<String, Window>,
    /// Concurrency slots and budget spend (nano-USD; the key carries the month).
    gauges: DashMap<String, i64>,
}

impl LocalCounters {
    /// Checks and books every counter, all or nothing.
    pub(crate) fn admit(&self, checks: &[Check], now_ms: i64) -> Verdict {
        let index = now_ms.div_euclid(WINDOW_MS);
        let mut seen = Vec::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let (ok, s) = self.book(check, index, now_ms);
            if !ok {
                self.unbook(&checks[..i], index);
                return Verdict::Refused { index: i, seen: s };
            }
            seen.push(s);
        }
        Verdict::Admitted { seen }
    }

    fn book(&self, check: &Check, index: i64, now_ms: i64) -> (bool, Seen) {
        match check.kind {
            LimitKind::Requests | LimitKind::Tokens => {
                let mut w = self.windows.entry(check.key.clone()).or_default();
                w.roll(index);
                let seen = Seen { cur: w.cur, prev: w.prev };
                let ok = window_used(seen, now_ms).saturating_add(check.amount) <= check.limit;
                if ok {
                    w.cur = w.cur.saturating_add(check.amount);
                }
                (ok, seen)
            }
            LimitKind::Concurrency => {
                let mut g = self.gauges.entry(check.key.clone()).or_default();
                let seen = Seen { cur: *g, prev: 0 };
                let ok = g.saturating_add(1) <= check.limit;
                if ok {
                    *g += 1;
                }
                (ok, seen)
            }
            LimitKind::Budget => {
                let mut g = self.gauges.entry(check.key.clone()).or_default();
                let seen = Seen { cur: *g, prev: 0 };
                // Refused once the spend (reservations included) reaches the budget.
                let ok = *g < check.limit;
                if ok {
                    *g = g.saturating_add(check.amount);
                }
                (ok, seen)
            }
        }
    }

    fn unbook(&self, booked: &[Check], index: i64) {
        for check in booked {
            let amount = match check.kind {
                LimitKind::Concurrency => 1,
                LimitKind::Requests | LimitKind::Tokens | LimitKind::Budget => check.amount,
            };
            self.add(check, -amount, index);
        }
    }

    fn add(&self, check: &Check, delta: i64, index: i64) {
        match check.kind {
            LimitKind::Requests | LimitKind::Tokens => {
                if let Some(mut w) = self.windows.get_mut(&check.key) {
                    if w.index == index {
                        w.cur = (w.cur + delta).max(0);
                    } else if w.index == index + 1 {
                        w.prev = (w.prev + delta).max(0);
                    }
                }
            }
            LimitKind::Concurrency | LimitKind::Budget => {
                if let Some(mut g) = self.gauges.get_mut(&check.key) {
                    *g = (*g + delta).max(0);
                }
            }
        }
    }

    /// Applies settlement deltas (`(check index, delta)`) to the counters booked in window `index`.
    pub(crate) fn settle(&self, checks: &[Check], deltas: &[(usize, i64)], index: i64) {
        for (i, delta) in deltas {
            if let Some(check) = checks.get(*i) {
                self.add(check, *delta, index);
            }
        }
    }

    /// Raises a budget counter to the ledger's spend. Never lowers it: what this process booked
    /// since (reservations in flight, spend not committed yet) may already exceed that.
    pub(crate) fn seed(&self, key: &str, spent_nano_usd: i64) {
        let mut g = self.gauges.entry(key.to_owned()).or_insert(0);
        *g = (*g).max(spent_nano_usd.max(0));
    }
}
