//! Browser sessions for the dashboard: a signed-in credential (admin key, tenant key or JWT) kept in
//! memory behind a random session id, re-authenticated through [`Authenticator`] on every request,
//! so a revoked key or a disabled tenant ends its sessions within the key cache's TTL. Sessions do
//! not survive a restart (nothing is persisted). Failed sign-ins are limited per client address.
//!
//! [`Authenticator`]: super::auth::Authenticator

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::AuthError;
use super::state::AppState;
use crate::domain::principal::Principal;

/// A session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per client address per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed sign-ins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most sessions and tracked addresses kept (a flood evicts the oldest, never grows memory).
const MAX_ENTRIES: usize = 100_000;

struct Session {
    credential: String,
    csrf: String,
    last_seen: Instant,
}

struct Failures {
    since: Instant,
    count: u32,
}

/// In-memory sessions and the sign-in limiter.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Session>,
    failures: DashMap<IpAddr, Failures>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("open", &self.map.len()).finish()
    }
}

/// A signed-in session: who, and the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub principal: Principal,
    pub csrf: String,
}

/// Why a sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// Not a valid admin key, tenant key or JWT (or the tenant is disabled).
    Invalid,
    /// Too many failures from this address; try again after this many seconds.
    TooMany { retry_after_secs: u64 },
    /// The tenant store cannot be read right now.
    Unavailable,
}

/// 32 random bytes from the OS CSPRNG, hex.
///
/// # Errors
/// When the OS source fails (no fallback: a guessable session id is worse than no sign-in).
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

fn bearer(credential: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::try_from(format!("Bearer {credential}")) {
        h.insert(http::header::AUTHORIZATION, v);
    }
    h
}

/// Compares two tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn blocked(&self, peer: Option<IpAddr>, now: Instant) -> Option<u64> {
        let f = self.failures.get(&peer?)?;
        let elapsed = now.duration_since(f.since);
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn failed(&self, peer: Option<IpAddr>, now: Instant) {
        let Some(ip) = peer else { return };
        if self.failures.len() >= MAX_ENTRIES {
            self.failures.retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
        }
        let mut f = self.failures.entry(ip).or_insert(Failures { since: now, count: 0 });
        if now.duration_since(f.since) >= FAILURE_WINDOW {
            *f = Failures { since: now, count: 0 };
        }
        f.count += 1;
    }
}

/// Signs in with `credential` from `peer`: returns the new session id and its CSRF token.
///
/// # Errors
/// [`SignInError::TooMany`] after [`MAX_FAILURES`] failures from the address within a minute (checked
/// before the credential, so guessing stays slow); [`SignInError::Invalid`] otherwise.
pub async fn sign_in(
    state: &AppState,
    credential: &str,
    peer: Option<IpAddr>,
) -> Result<(String, Resumed), SignInError> {
    let sessions = &state.sessions;
    let now = Instant::now();
    if let Some(retry_after_secs) = sessions.blocked(peer, now) {
        return Err(SignInError::TooMany { retry_after_secs });
    }
    let credential = credential.trim();
    let principal = match state.auth.authenticate(&bearer(credential)).await {
        Ok(p) if !credential.is_empty() => p,
        Err(AuthError::Unavailable) => return Err(SignInError::Unavailable),
        Ok(_) | Err(_) => {
            sessions.failed(peer, now);
            tracing::info!(peer = ?peer, "Dashboard sign-in refused");
            return Err(SignInError::Invalid);
        }
    };
    let (Ok(id), Ok(csrf)) = (random_token(), random_token()) else { return Err(SignInError::Unavailable) };
    if sessions.map.len() >= MAX_ENTRIES {
        sessions.map.retain(|_, s| now.duration_since(s.last_seen) < IDLE_TIMEOUT);
    }
    sessions.map.insert(id.clone(), Session { credential: credential.to_owned(), csrf: csrf.clone(), last_seen: now });
    Ok((id, Resumed { principal, csrf }))
}

/// The session behind `id`, re-authenticated now; `None` when unknown, idle too long, or its
/// credential no longer valid (then the session is dropped).
pub async fn resume(state: &AppState, id: &str) -> Option<Resumed> {
    let now = Instant::now();
    let (credential, csrf) = {
        let mut s = state.sessions.map.get_mut(id)?;
        if now.duration_since(s.last_seen) >= IDLE_TIMEOUT {
            drop(s);
            state.sessions.map.remove(id);
            return None;
        }
        s.last_seen = now;
        (s.credential.clone(), s.csrf.clone())
    };
    match state.auth.authenticate(&bearer(&credential)).await {
        Ok(principal) => Some(Resumed { principal, csrf }),
        Err(_) => {
            state.sessions.map.remove(id);
            None
        }
    }
}

/// Ends a session.
pub fn sign_out(state: &AppState, id: &str) {
    state.sessions.map.remove(id);
}
