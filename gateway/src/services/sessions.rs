//! Browser sessions for the dashboard: a signed-in credential (admin key, tenant key or JWT) kept
//! behind a random session id, re-authenticated through [`Authenticator`] on every request, so a
//! revoked key or a disabled tenant ends its sessions within the key cache's TTL. Failed sign-ins
//! are limited per client address.
//!
//! Where sessions live:
//! - **In memory** (the default): a restart signs everyone out.
//! - **In the tenant store** when `dashboard.session_secret` is configured: they survive restarts
//!   and are shared by replicas, and a sign-out is final everywhere. The row is keyed by the
//!   SHA-256 of the session id and holds the credential sealed with ChaCha20-Poly1305 under a key
//!   derived from the secret (bound to the row by its id hash), so the database alone yields
//!   neither a usable session id nor a credential. The idle timeout counts from the last use,
//!   recorded at most once a minute.
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

/// How often a persisted session's last use is written (the idle timeout is 12 h: a minute of
/// slack is nothing, a write per page view would be).
const TOUCH_EVERY_MS: i64 = 60_000;

/// Sessions (in memory, or the sealing key for persisted ones) and the sign-in limiter.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Session>,
    failures: DashMap<IpAddr, Failures>,
    /// Set when sessions are persisted (`dashboard.session_secret`).
    sealing: Option<ring::aead::LessSafeKey>,
}

impl Sessions {
    /// Sessions persisted in the tenant store when `secret` is set, else in memory.
    pub fn new(secret: Option<&crate::domain::config::Secret>) -> Self {
        use sha2::Digest;
        let sealing = secret.and_then(|s| {
            let mut h = sha2::Sha256::new();
            h.update(b"ai-aggregator dashboard sessions v1\0");
            h.update(s.expose().as_bytes());
            let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &h.finalize()).ok()?;
            Some(ring::aead::LessSafeKey::new(key))
        });
        Sessions { sealing, ..Sessions::default() }
    }

    /// Whether sessions are persisted.
    pub fn persisted(&self) -> bool {
        self.sealing.is_some()
    }
}

fn id_hash(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// `nonce || ciphertext || tag`, hex; the id hash is the associated data.
fn seal(key: &ring::aead::LessSafeKey, id_hash: &str, credential: &str) -> Option<String> {
    let mut nonce = [0u8; ring::aead::NONCE_LEN];
    getrandom::getrandom(&mut nonce).ok()?;
    let mut data = credential.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(id_hash.as_bytes()),
        &mut data,
    )
    .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Some(hex::encode(out))
}

fn unseal(key: &ring::aead::LessSafeKey, id_hash: &str, sealed: &str) -> Option<String> {
    let bytes = hex::decode(sealed).ok()?;
    if bytes.len() < ring::aead::NONCE_LEN {
        return None;
    }
    let (nonce, data) = bytes.split_at(ring::aead::NONCE_LEN);
    let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let plain = key.open_in_place(nonce, ring::aead::Aad::from(id_hash.as_bytes()), &mut data).ok()?;
    String::from_utf8(plain.to_vec()).ok()
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
    if let Some(key) = &sessions.sealing {
        if let Some(store) = state.auth.store().map(|c| c.store()) {
            let hash = id_hash(&id);
            let sealed = seal(key, &hash, credential).ok_or(SignInError::Unavailable)?;
            let now_ms = crate::domain::time::now_unix_ms();
            // Sessions idle past the timeout are removed as new ones are made (cheap: indexed).
            let _ = store.prune_sessions(now_ms - idle_ms()).await;
            let row = crate::stores::tenants::SessionRow {
                id_hash: hash,
                sealed,
                csrf: csrf.clone(),
                created_at_ms: now_ms,
                last_seen_ms: now_ms,
            };
            store.put_session(row).await.map_err(|_| SignInError::Unavailable)?;
            return Ok((id, Resumed { principal, csrf }));
        }
    }
    if sessions.map.len() >= MAX_ENTRIES {
        sessions.map.retain(|_, s| now.duration_since(s.last_seen) < IDLE_TIMEOUT);
    }
    sessions.map.insert(id.clone(), Session { credential: credential.to_owned(), csrf: csrf.clone(), last_seen: now });
    Ok((id, Resumed { principal, csrf }))
}

/// The session behind `id`, re-authenticated now; `None` when unknown, idle too long, or its
/// credential no longer valid (then the session is dropped).
pub async fn resume(state: &AppState, id: &str) -> Option<Resumed> {
    if let (Some(key), Some(cache)) = (&state.sessions.sealing, state.auth.store()) {
        return resume_persisted(state, key, cache.store(), id).await;
    }
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

fn idle_ms() -> i64 {
    i64::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(i64::MAX)
}

async fn resume_persisted(
    state: &AppState,
    key: &ring::aead::LessSafeKey,
    store: &crate::stores::tenants::TenantStore,
    id: &str,
) -> Option<Resumed> {
    let hash = id_hash(id);
    let row = store.session(&hash).await.ok()??;
    let now_ms = crate::domain::time::now_unix_ms();
    let Some(credential) = (now_ms - row.last_seen_ms < idle_ms()).then(|| unseal(key, &hash, &row.sealed)).flatten()
    else {
        // Idle too long, or sealed under another secret (rotated): gone.
        let _ = store.delete_session(&hash).await;
        return None;
    };
    match state.auth.authenticate(&bearer(&credential)).await {
        Ok(principal) => {
            if now_ms - row.last_seen_ms >= TOUCH_EVERY_MS {
                let _ = store.touch_session(&hash, now_ms).await;
            }
            Some(Resumed { principal, csrf: row.csrf })
        }
        Err(AuthError::Unavailable) => None,
        Err(_) => {
            let _ = store.delete_session(&hash).await;
            None
        }
    }
}

/// Ends a session (everywhere, when sessions are persisted).
pub async fn sign_out(state: &AppState, id: &str) {
    state.sessions.map.remove(id);
    if let (Some(_), Some(cache)) = (&state.sessions.sealing, state.auth.store()) {
        if let Err(e) = cache.store().delete_session(&id_hash(id)).await {
            tracing::warn!(error = %e, "Dashboard sign-out could not be recorded in the tenant store");
        }
    }
}
