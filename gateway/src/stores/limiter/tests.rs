use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::local::LocalCounters;
use super::*;
use crate::domain::limits::*;
use crate::domain::money::{format_usd_micro, parse_usd_micro};

fn check(kind: LimitKind, key: &str, limit: i64, amount: i64) -> Check {
    Check { kind, scope: ScopeKind::Tenant, key: key.to_owned(), limit, amount }
}

fn admitted(v: &Verdict) -> bool {
    matches!(v, Verdict::Admitted { .. })
}

/// 10:00:00.000 UTC on some day, aligned to a window start.
const T0: i64 = 1_764_064_800_000;

#[test]
fn sliding_window_weights_the_previous_minute() {
    assert_eq!(window_used(Seen { cur: 3, prev: 0 }, T0), 3);
    // Half-way through the window, half of the previous count still counts (floored).
    assert_eq!(window_used(Seen { cur: 0, prev: 10 }, T0 + 30_000), 5);
    assert_eq!(window_used(Seen { cur: 1, prev: 9 }, T0 + 30_000), 5);
    assert_eq!(window_used(Seen { cur: 0, prev: 10 }, T0 + 59_999), 0);
}

#[test]
fn local_rpm_admits_exactly_the_limit_then_recovers_in_later_windows() {
    let c = LocalCounters::default();
    let checks = [check(LimitKind::Requests, "t:a:rpm", 3, 1)];
    let got: Vec<bool> = (0..5).map(|i| admitted(&c.admit(&checks, T0 + i))).collect();
    assert_eq!(got, [true, true, true, false, false]);
    // Next window, 1 s in: the previous 3 still weigh floor(3 * 59/60) = 2.
    assert!(admitted(&c.admit(&checks, T0 + 61_000)));
    assert!(!admitted(&c.admit(&checks, T0 + 61_001)));
    // Two windows later everything has decayed.
    let got: Vec<bool> = (0..4).map(|i| admitted(&c.admit(&checks, T0 + 180_000 + i))).collect();
    assert_eq!(got, [true, true, true, false]);
}

#[test]
fn local_tpm_reserves_then_settles_to_real_usage() {
    let c = LocalCounters::default();
    let checks = [check(LimitKind::Tokens, "t:a:tpm", 1000, 400)];
    assert!(admitted(&c.admit(&checks, T0)));
    assert!(admitted(&c.admit(&checks, T0)));
    // 800 reserved: another 400 does not fit.
    assert!(!admitted(&c.admit(&checks, T0)));
    // Both used only 100: settle 2 x (100 - 400).
    c.settle(&checks, &[(0, -300)], T0 / WINDOW_MS);
    c.settle(&checks, &[(0, -300)], T0 / WINDOW_MS);
    assert!(admitted(&c.admit(&checks, T0 + 1)));
    assert!(admitted(&c.admit(&checks, T0 + 2)));
    assert!(!admitted(&c.admit(&checks, T0 + 3)));
}

#[test]
fn refusal_rolls_back_counters_already_booked() {
    let c = LocalCounters::default();
    let rpm = check(LimitKind::Requests, "t:a:rpm", 100, 1);
    let tpm = check(LimitKind::Tokens, "t:a:tpm", 10, 20);
    let v = c.admit(&[rpm.clone(), tpm], T0);
    assert!(matches!(v, Verdict::Refused { index: 1, .. }));
    // The refused request did not consume a request slot.
    match c.admit(&[rpm], T0) {
        Verdict::Admitted { seen } => assert_eq!(seen[0].cur, 0),
        Verdict::Refused { .. } => panic!("refused"),
    }
}

#[test]
fn concurrency_slots_are_returned_at_settlement() {
    let c = LocalCounters::default();
    let checks = [check(LimitKind::Concurrency, "t:a:conc", 2, 1)];
    assert!(admitted(&c.admit(&checks, T0)));
    assert!(admitted(&c.admit(&checks, T0)));
    assert!(!admitted(&c.admit(&checks, T0)));
    c.settle(&checks, &[(0, -1)], T0 / WINDOW_MS);
    assert!(admitted(&c.admit(&checks, T0)));
}

#[test]
fn budget_refuses_once_spend_reaches_it_and_seed_counts_past_spend() {
    let c = LocalCounters::default();
    let checks = [check(LimitKind::Budget, "t:a:budget:202611", 1_000, 300)];
    c.seed("t:a:budget:202611", 200);
    // Admitted at a spend of 200, 500 and 800 (under the budget); refused at 1100.
    let got: Vec<bool> = (0..5).map(|_| admitted(&c.admit(&checks, T0))).collect();
    assert_eq!(got, [true, true, true, false, false]);
    // Seeding again does not overwrite.
    c.seed("t:a:budget:202611", 0);
    assert!(!admitted(&c.admit(&checks, T0)));
}

#[test]
fn wait_times_cover_decay_and_next_window() {
    // Full current window: wait for the next one, then for the decay of this window's count.
    let ms = window_wait_ms(Seen { cur: 3, prev: 0 }, T0 + 10_000, 3, 1);
    assert!(ms > 50_000 && ms <= 80_000, "{ms}");
    // Only the previous window weighs: wait until it decays enough.
    let ms = window_wait_ms(Seen { cur: 0, prev: 4 }, T0, 3, 1);
    assert_eq!(ms, 30_000);
    // A demand above the limit can never fit.
    assert_eq!(window_wait_ms(Seen::default(), T0, 10, 11), 60_000);
}

#[test]
fn reset_format_matches_openai() {
    assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
    assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
    assert_eq!(format_reset(Duration::from_secs(1)), "1s");
    assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
}

#[test]
fn months_and_usd_parse() {
    assert_eq!(month_of(T0), "202511");
    assert_eq!(month_of(0), "197001");
    assert_eq!(month_start_ms(T0), 1_761_955_200_000);
    assert_eq!(ms_to_next_month(1_764_547_199_999), 1);
    assert_eq!(parse_usd_micro("12.5"), Ok(12_500_000));
    assert_eq!(parse_usd_micro("0.000001"), Ok(1));
    assert_eq!(parse_usd_micro("3"), Ok(3_000_000));
    assert!(parse_usd_micro("-1").is_err());
    assert!(parse_usd_micro("1.0000001").is_err());
    assert!(parse_usd_micro("abc").is_err());
    assert_eq!(format_usd_micro(12_500_000), "12.5");
    assert_eq!(format_usd_micro(3_000_000), "3");
}

#[test]
fn headers_render_like_openai() {
    let mut h = http::HeaderMap::new();
    RateHeaders {
        requests: Some(RateHeader { limit: 60, remaining: 59, reset: Duration::from_secs(1) }),
        tokens: Some(RateHeader { limit: 1000, remaining: 0, reset: Duration::from_millis(20) }),
    }
    .apply(&mut h);
    assert_eq!(h["x-ratelimit-limit-requests"], "60");
    assert_eq!(h["x-ratelimit-remaining-requests"], "59");
    assert_eq!(h["x-ratelimit-reset-requests"], "1s");
    assert_eq!(h["x-ratelimit-remaining-tokens"], "0");
    assert_eq!(h["x-ratelimit-reset-tokens"], "20ms");
}

fn limiter(redis_url: Option<&str>, prefix: &str) -> Arc<Limiter> {
    let settings = LimiterSettings {
        redis_url: redis_url.map(|u| crate::domain::config::Secret::new(u.to_owned())),
        redis_prefix: prefix.to_owned(),
        ..LimiterSettings::default()
    };
    Limiter::new(settings, None, None, TaskTracker::new(), CancellationToken::new()).unwrap()
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), fastrand::u64(..))
}

#[tokio::test]
async fn limiter_admits_rpm_and_renders_rejection() {
    let l = limiter(None, &unique("unit"));
    let limits = CallerLimits { tenant: LimitSpec { rpm: Some(2), ..LimitSpec::default() }, key: LimitSpec::default() };
    let a = l.admit("acme", None, &limits, Demand::default()).await.unwrap();
    let h = a.headers().unwrap().requests.unwrap();
    assert_eq!((h.limit, h.remaining), (2, 1));
    let _b = l.admit("acme", None, &limits, Demand::default()).await.unwrap();
    let r = l.admit("acme", None, &limits, Demand::default()).await.unwrap_err();
    assert_eq!(r.kind, LimitKind::Requests);
    assert_eq!(r.code(), "rate_limit_exceeded");
    assert_eq!(r.error_type(), "requests");
    assert!(r.retry_after_secs() >= 1);
    assert!(r.to_string().contains("requests per min (RPM): Limit 2"), "{r}");
    // Another tenant is unaffected; unlimited callers book nothing.
    assert!(l.admit("globex", None, &limits, Demand::default()).await.is_ok());
    assert!(l.admit("x", None, &CallerLimits::default(), Demand::default()).await.unwrap().headers().is_none());
}

#[tokio::test]
async fn per_key_limits_apply_beside_the_tenant_ones() {
    let l = limiter(None, &unique("unit"));
    let limits = CallerLimits {
        tenant: LimitSpec { rpm: Some(10), ..LimitSpec::default() },
        key: LimitSpec { rpm: Some(1), ..LimitSpec::default() },
    };
    let _a = l.admit("acme", Some("key_1"), &limits, Demand::default()).await.unwrap();
    let r = l.admit("acme", Some("key_1"), &limits, Demand::default()).await.unwrap_err();
    assert_eq!(r.scope, ScopeKind::Key);
    assert!(l.admit("acme", Some("key_2"), &limits, Demand::default()).await.is_ok());
}

#[tokio::test]
async fn dropping_an_admission_frees_its_concurrency_slot() {
    let l = limiter(None, &unique("unit"));
    let limits = CallerLimits {
        tenant: LimitSpec { max_concurrent: Some(1), ..LimitSpec::default() },
        key: LimitSpec::default(),
    };
    let a = l.admit("acme", None, &limits, Demand::default()).await.unwrap();
    let r = l.admit("acme", None, &limits, Demand::default()).await.unwrap_err();
    assert_eq!(r.kind, LimitKind::Concurrency);
    drop(a);
    let b = l.admit("acme", None, &limits, Demand::default()).await.unwrap();
    b.settle(0, 0);
    assert!(l.admit("acme", None, &limits, Demand::default()).await.is_ok());
}

/// Waits out the last 3 s of a minute so a short test does not straddle two rate windows.
async fn avoid_minute_edge() {
    let into = now_ms().rem_euclid(WINDOW_MS);
    if into > WINDOW_MS - 3000 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(WINDOW_MS - into + 50).unwrap_or(0))).await;
    }
}

fn redis_available() -> bool {
    std::process::Command::new("redis-cli")
        .arg("ping")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
        .unwrap_or(false)
}

/// The Redis backend gives the same answers as the local one, shared by two limiters (two replicas).
#[tokio::test]
async fn redis_counters_are_shared_between_limiters() {
    if !redis_available() {
        eprintln!("skipped: no Redis on 127.0.0.1:6379");
        return;
    }
    let prefix = unique("unit-redis");
    let a = limiter(Some("redis://127.0.0.1:6379"), &prefix);
    let b = limiter(Some("redis://127.0.0.1:6379"), &prefix);
    a.check_redis().await;
    b.check_redis().await;
    assert!(a.redis_up() && b.redis_up());
    avoid_minute_edge().await;
    let limits = CallerLimits {
        tenant: LimitSpec { rpm: Some(5), tpm: Some(1000), max_concurrent: Some(4), ..LimitSpec::default() },
        key: LimitSpec::default(),
    };
    let demand = Demand { tokens: 100, cost_nano_usd: 0 };
    let mut held = Vec::new();
    let mut admitted = 0;
    for i in 0..8 {
        let l = if i % 2 == 0 { &a } else { &b };
        match l.admit("acme", None, &limits, demand).await {
            Ok(adm) => {
                admitted += 1;
                held.push(adm);
            }
            Err(r) => assert_eq!(r.kind, LimitKind::Concurrency, "{r}"),
        }
    }
    assert_eq!(admitted, 4, "four concurrency slots across both replicas");
    for adm in held.drain(..) {
        adm.settle(50, 0);
    }
    // Settlement runs on the tracker; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 4 of 5 requests used; one more fits, then the RPM limit refuses on either replica.
    let last = b.admit("acme", None, &limits, demand).await.unwrap();
    let r = a.admit("acme", None, &limits, demand).await.unwrap_err();
    assert_eq!(r.kind, LimitKind::Requests);
    let h = last.headers().unwrap();
    assert_eq!(h.requests.unwrap().remaining, 0);
    // 4 settled at 50 tokens + 100 reserved.
    assert_eq!(h.tokens.unwrap().remaining, 1000 - 300);
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_local_counters() {
    // Nothing listens on port 1.
    let l = limiter(Some("redis://127.0.0.1:1"), &unique("unit"));
    l.check_redis().await;
    assert!(!l.redis_up());
    let limits = CallerLimits { tenant: LimitSpec { rpm: Some(1), ..LimitSpec::default() }, key: LimitSpec::default() };
    assert!(l.admit("acme", None, &limits, Demand::default()).await.is_ok());
    assert!(l.admit("acme", None, &limits, Demand::default()).await.is_err());
}
