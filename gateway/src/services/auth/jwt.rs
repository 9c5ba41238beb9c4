//! JWT bearer tokens: HS256 shared secrets, RS256/ES256 public keys (PEM) and JWKS files.
//!
//! The algorithm always comes from the configured key, never from the token alone: a token is tried
//! only against keys of the algorithm its header names (and of its `kid`, when both have one), which
//! rules out algorithm-confusion attacks. `exp` is required; `nbf`, `iss` and `aud` are checked
//! (the last two when configured), with `leeway_secs` of clock skew.
//!
//! A verified token's tenant is cached, keyed by the token's SHA-256, until the token's `exp`; the
//! cache is emptied whenever the JWKS file changes, so a key removed from the set stops working at the
//! next reload (checked every `jwks_reload_ms`, default 2 s).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use crate::domain::config::{JwtSettings, PublicKeySpec};
use crate::services::error::AuthError;

/// Most cached tokens.
const CACHE_CAPACITY: u64 = 100_000;

#[derive(Clone)]
struct KeyEntry {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens against the configured keys.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: JwtSettings,
    /// Secret and PEM keys (fixed) followed by the JWKS keys (reloaded).
    keys: ArcSwap<Vec<KeyEntry>>,
    fixed: Vec<KeyEntry>,
    cache: Cache<[u8; 32], (Arc<str>, u64)>,
    jwks_stamp: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("keys", &self.inner.keys.load().len()).finish()
    }
}

/// Expires each cached token at its own `exp`.
struct UntilExp;

impl moka::Expiry<[u8; 32], (Arc<str>, u64)> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &(Arc<str>, u64),
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.1.saturating_sub(unix_now())))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// True for `xxx.yyy.zzz` with base64url segments: the shape of a JWS compact token.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    parts == 3
}

fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(ka) = jwk.common.key_algorithm {
        return ka.to_string().parse().ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        // `AlgorithmParameters` is non-exhaustive.
        _ => None,
    }
}

/// Parses a JWKS document into keys; keys that cannot be used are skipped with a warning.
///
/// # Errors
/// Not a JWKS document.
fn parse_jwks(text: &str) -> Result<Vec<KeyEntry>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let (Some(algorithm), Ok(key)) = (jwk_algorithm(jwk), DecodingKey::from_jwk(jwk)) else {
            tracing::warn!(kid = %crate::domain::text::Escaped(kid.as_deref().unwrap_or("-")), "Skipping a JWKS key of an unsupported type");
            continue;
        };
        out.push(KeyEntry { kid, algorithm, key });
    }
    Ok(out)
}

fn file_stamp(path: &std::path::Path) -> u64 {
    std::fs::metadata(path)
        .ok()
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            mtime ^ m.len().rotate_left(32)
        })
        .unwrap_or(0)
}

impl JwtVerifier {
    /// Loads the keys.
    ///
    /// # Errors
    /// A PEM that does not parse, an unreadable or invalid JWKS file, or no key at all.
    pub fn new(settings: JwtSettings) -> Result<Self, String> {
        let mut fixed = Vec::new();
        if let Some(secret) = &settings.hs256_secret {
            fixed.push(KeyEntry {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.expose().as_bytes()),
            });
        }
        for pk in &settings.public_keys {
            let key = match pk.algorithm {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(pk.pem.as_bytes()),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pk.pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pk.pem.as_bytes()),
                // HMAC takes `hs256_secret`; `Algorithm` is non-exhaustive.
                _ => return Err(format!("{:?} is not a public-key algorithm", pk.algorithm)),
            }
            .map_err(|e| format!("public key ({:?}): {e}", pk.algorithm))?;
            fixed.push(KeyEntry { kid: None, algorithm: pk.algorithm, key });
        }
        let mut keys = fixed.clone();
        let mut stamp = 0;
        if let Some(path) = &settings.jwks_file {
            stamp = file_stamp(path);
            let text = std::fs::read_to_string(path).map_err(|e| format!("jwks_file {}: {e}", path.display()))?;
            keys.extend(parse_jwks(&text).map_err(|e| format!("jwks_file {}: {e}", path.display()))?);
        }
        if keys.is_empty() && settings.jwks_file.is_none() {
            return Err("no key: set hs256_secret, public_key_file or jwks_file".into());
        }
        let cache = Cache::builder().max_capacity(CACHE_CAPACITY).expire_after(UntilExp).build();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                keys: ArcSwap::from_pointee(keys),
                fixed,
                cache,
                jwks_stamp: std::sync::atomic::AtomicU64::new(stamp),
            }),
        })
    }

    /// Whether unknown tenants are created.
    pub fn auto_create(&self) -> bool {
        self.inner.settings.auto_create_tenants
    }

    /// Re-reads the JWKS file when it changed; a bad file keeps the old keys.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.inner.settings.jwks_file else { return };
        let stamp = file_stamp(path);
        if stamp == self.inner.jwks_stamp.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let parsed = std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| parse_jwks(&t));
        match parsed {
            Ok(jwks) => {
                let mut keys = self.inner.fixed.clone();
                let n = jwks.len();
                keys.extend(jwks);
                self.inner.keys.store(Arc::new(keys));
                self.inner.cache.invalidate_all();
                self.inner.jwks_stamp.store(stamp, std::sync::atomic::Ordering::Release);
                tracing::info!(file = %path.display(), keys = n, "JWKS reloaded");
            }
            Err(error) => {
                // Do not retry the same broken content every tick.
                self.inner.jwks_stamp.store(stamp, std::sync::atomic::Ordering::Release);
                tracing::warn!(file = %path.display(), %error, "JWKS reload failed; keeping the previous keys");
            }
        }
    }

    /// Polls the JWKS file until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        if self.inner.settings.jwks_file.is_none() {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.settings.jwks_reload) => self.reload_if_changed(),
            }
        }
    }

    /// The tenant named by a valid token.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] with the reason (expired, wrong audience, bad signature, ...).
    pub async fn verify(&self, token: &str) -> Result<Arc<str>, AuthError> {
        let digest = super::sha256(token.as_bytes());
        if let Some((tenant, exp)) = self.inner.cache.get(&digest).await {
            if exp > unix_now() {
                return Ok(tenant);
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken("malformed token"))?;
        let keys = self.inner.keys.load();
        let mut last = AuthError::InvalidToken("no configured key matches the token's algorithm or kid");
        for entry in keys.iter().filter(|k| k.algorithm == header.alg) {
            if let (Some(want), Some(have)) = (&header.kid, &entry.kid) {
                if want != have {
                    continue;
                }
            }
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &entry.key,
                &self.validation(entry.algorithm),
            ) {
                Ok(data) => return self.accept(digest, &data.claims).await,
                Err(e) => {
                    last = classify(&e);
                    if !matches!(last, AuthError::InvalidToken("invalid signature")) {
                        // The signature matched this key: a claim is wrong; no other key will do better.
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let s = &self.inner.settings;
        let mut v = Validation::new(algorithm);
        v.leeway = s.leeway.as_secs();
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_required_spec_claims(&["exp"]);
        match &s.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &s.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    async fn accept(&self, digest: [u8; 32], claims: &serde_json::Map<String, Value>) -> Result<Arc<str>, AuthError> {
        let tenant = claims
            .get(&self.inner.settings.tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| crate::domain::config::is_valid_tenant_id(t))
            .ok_or(AuthError::InvalidToken("the tenant claim is missing or not a valid tenant id"))?;
        let tenant: Arc<str> = Arc::from(tenant);
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        self.inner.cache.insert(digest, (tenant.clone(), exp)).await;
        Ok(tenant)
    }
}

fn classify(e: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    AuthError::InvalidToken(match e.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidSignature => "invalid signature",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        _ => "invalid token",
    })
}
