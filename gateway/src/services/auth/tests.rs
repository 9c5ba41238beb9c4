use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::domain::config::Secret;
use crate::stores::tenants::{NewKey, TenantStore};

fn auth() -> Authenticator {
    let hashed = sha256(b"sk-hashed-key-2");
    Authenticator::new(
        &[
            TenantConfig {
                id: "acme".into(),
                api_keys: vec![KeySpec::Plain(Secret::new("sk-acme-key-1".into()))],
                limits: LimitSpec { rpm: Some(7), ..LimitSpec::default() },
            },
            TenantConfig { id: "globex".into(), api_keys: vec![KeySpec::Sha256(hashed)], limits: LimitSpec::default() },
        ],
        Some("admin-key-0123456789"),
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

fn bearer(token: &str) -> HeaderMap {
    headers(&[("authorization", &format!("Bearer {token}"))])
}

#[tokio::test]
async fn bearer_and_x_api_key_both_work_and_hashes_match() {
    let a = auth().with_defaults(LimitSpec { tpm: Some(100), ..LimitSpec::default() });
    let c = a.authenticate_tenant(&bearer("sk-acme-key-1")).await.unwrap();
    assert_eq!(&*c.tenant, "acme");
    assert!(c.key_id.unwrap().starts_with("key_"));
    // Own limits first, then the defaults.
    assert_eq!(c.limits.tenant, LimitSpec { rpm: Some(7), tpm: Some(100), ..LimitSpec::default() });
    let c = a.authenticate_tenant(&headers(&[("x-api-key", "sk-hashed-key-2")])).await.unwrap();
    assert_eq!(&*c.tenant, "globex");
}

#[tokio::test]
async fn wrong_or_missing_keys_are_refused() {
    let a = auth();
    assert_eq!(a.authenticate_tenant(&headers(&[])).await.unwrap_err(), AuthError::Missing);
    assert_eq!(a.authenticate_tenant(&bearer("nope-nope")).await.unwrap_err(), AuthError::Invalid);
    assert_eq!(
        a.authenticate_tenant(&headers(&[("authorization", "Basic abc")])).await.unwrap_err(),
        AuthError::Missing
    );
}

#[tokio::test]
async fn admin_key_is_separate_from_tenant_keys() {
    let a = auth();
    assert!(a.authenticate(&bearer("admin-key-0123456789")).await.is_ok_and(|p| p.is_admin()));
    assert!(a.authenticate(&bearer("sk-acme-key-1")).await.is_ok_and(|p| !p.is_admin()));
    assert!(a.authenticate_tenant(&bearer("admin-key-0123456789")).await.is_err());
}

#[tokio::test]
async fn open_mode_meters_anonymous() {
    let a = Authenticator::new(&[], None);
    assert!(a.is_open().await);
    assert_eq!(&*a.authenticate_tenant(&HeaderMap::new()).await.unwrap().tenant, ANONYMOUS);
    // Not on a non-loopback listener.
    let a = Authenticator::new(&[], None).with_open_allowed(false);
    assert_eq!(a.authenticate_tenant(&HeaderMap::new()).await.unwrap_err(), AuthError::Missing);
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ai-agg-auth-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn sqlite_store(tag: &str) -> Arc<TenantStore> {
    Arc::new(TenantStore::open(None, &temp_dir(tag)).await.unwrap())
}

#[tokio::test]
async fn stored_keys_authenticate_and_revocation_applies_after_the_cache_ttl() {
    let store = sqlite_store("keys").await;
    let ttl = Duration::from_millis(300);
    let a = Authenticator::new(&[], None).with_store(KeyCache::new(store.clone(), ttl));
    assert!(a.is_open().await, "no tenant anywhere yet");
    store.create_tenant("initech", LimitSpec { rpm: Some(5), ..LimitSpec::default() }).await.unwrap();
    let digest = sha256(b"sk-stored-secret");
    store
        .create_key(NewKey {
            id: "key_abc".into(),
            tenant_id: "initech".into(),
            digest_hex: hex::encode(digest),
            prefix: "sk-stored-".into(),
            name: None,
            limits: LimitSpec { tpm: Some(50), ..LimitSpec::default() },
        })
        .await
        .unwrap();
    // The "no tenants" answer is cached for the TTL, then open mode ends.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(!a.is_open().await);
    assert_eq!(a.authenticate_tenant(&HeaderMap::new()).await.unwrap_err(), AuthError::Missing);
    let c = a.authenticate_tenant(&bearer("sk-stored-secret")).await.unwrap();
    assert_eq!((&*c.tenant, c.key_id.as_deref()), ("initech", Some("key_abc")));
    assert_eq!(c.limits.tenant.rpm, Some(5));
    assert_eq!(c.limits.key.tpm, Some(50));
    // Revoked behind the cache's back (another replica): still cached, refused after the TTL.
    store.revoke_key("key_abc").await.unwrap();
    assert!(a.authenticate_tenant(&bearer("sk-stored-secret")).await.is_ok());
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(a.authenticate_tenant(&bearer("sk-stored-secret")).await.unwrap_err(), AuthError::Invalid);
}

#[tokio::test]
async fn disabled_tenants_are_refused() {
    let store = sqlite_store("disabled").await;
    let cache = KeyCache::new(store.clone(), Duration::from_secs(60));
    let a = Authenticator::new(&[], None).with_store(cache.clone());
    store.create_tenant("hooli", LimitSpec::default()).await.unwrap();
    let digest = sha256(b"sk-hooli-secret");
    store
        .create_key(NewKey {
            id: "key_h".into(),
            tenant_id: "hooli".into(),
            digest_hex: hex::encode(digest),
            prefix: "sk-hooli-".into(),
            name: Some("ci".into()),
            limits: LimitSpec::default(),
        })
        .await
        .unwrap();
    assert!(a.authenticate_tenant(&bearer("sk-hooli-secret")).await.is_ok());
    store.update_tenant("hooli", LimitSpec::default(), true).await.unwrap();
    // This replica's admin API invalidates at once.
    cache.changed_tenant("hooli").await;
    assert_eq!(a.authenticate_tenant(&bearer("sk-hooli-secret")).await.unwrap_err(), AuthError::TenantDisabled);
}

// JWT.

const SECRET: &str = "an-hs256-secret-of-at-least-32-characters";

fn jwt_settings() -> JwtSettings {
    JwtSettings {
        hs256_secret: Some(Secret::new(SECRET.into())),
        public_keys: Vec::new(),
        jwks_file: None,
        jwks_reload: Duration::from_millis(100),
        issuer: Some("https://issuer.example".into()),
        audience: Some("ai-aggregator".into()),
        tenant_claim: "sub".into(),
        leeway: Duration::from_secs(0),
        auto_create_tenants: false,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": "https://issuer.example", "aud": "ai-aggregator", "exp": now() + 600, "nbf": now() - 10})
}

fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn jwt_auth(settings: JwtSettings) -> Authenticator {
    auth().with_jwt(JwtVerifier::new(settings).unwrap())
}

#[tokio::test]
async fn jwt_valid_token_names_the_tenant() {
    let a = jwt_auth(jwt_settings());
    let c = a.authenticate_tenant(&bearer(&hs256(&claims("acme"), SECRET))).await.unwrap();
    assert_eq!(&*c.tenant, "acme");
    assert_eq!(c.key_id, None);
    assert_eq!(c.limits.tenant.rpm, Some(7), "the config tenant's limits apply");
    // Cached: the same token verifies again without a key.
    let token = hs256(&claims("globex"), SECRET);
    assert_eq!(&*a.authenticate_tenant(&bearer(&token)).await.unwrap().tenant, "globex");
    assert_eq!(&*a.authenticate_tenant(&bearer(&token)).await.unwrap().tenant, "globex");
}

#[tokio::test]
async fn jwt_expired_wrong_audience_issuer_or_signature_are_refused() {
    let a = jwt_auth(jwt_settings());
    let mut expired = claims("acme");
    expired["exp"] = json!(now() - 60);
    assert_eq!(
        a.authenticate_tenant(&bearer(&hs256(&expired, SECRET))).await.unwrap_err(),
        AuthError::InvalidToken("token expired")
    );
    let mut aud = claims("acme");
    aud["aud"] = json!("someone-else");
    assert_eq!(
        a.authenticate_tenant(&bearer(&hs256(&aud, SECRET))).await.unwrap_err(),
        AuthError::InvalidToken("wrong audience")
    );
    let mut iss = claims("acme");
    iss["iss"] = json!("https://evil.example");
    assert_eq!(
        a.authenticate_tenant(&bearer(&hs256(&iss, SECRET))).await.unwrap_err(),
        AuthError::InvalidToken("wrong issuer")
    );
    let forged = hs256(&claims("acme"), "another-secret-that-is-also-32-chars-long");
    assert_eq!(
        a.authenticate_tenant(&bearer(&forged)).await.unwrap_err(),
        AuthError::InvalidToken("invalid signature")
    );
    let mut early = claims("acme");
    early["nbf"] = json!(now() + 600);
    assert_eq!(
        a.authenticate_tenant(&bearer(&hs256(&early, SECRET))).await.unwrap_err(),
        AuthError::InvalidToken("token not valid yet (nbf)")
    );
    let mut no_exp = claims("acme");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(a.authenticate_tenant(&bearer(&hs256(&no_exp, SECRET))).await.is_err());
    // An alg the configuration does not accept (none, or RS256 with the HMAC secret) never verifies.
    let none = format!("{}.{}.", "eyJhbGciOiJub25lIn0", "eyJzdWIiOiJhY21lIn0");
    assert!(a.authenticate_tenant(&bearer(&none)).await.is_err());
}

#[tokio::test]
async fn jwt_unknown_tenants_are_refused_unless_auto_created() {
    let a = jwt_auth(jwt_settings());
    assert_eq!(
        a.authenticate_tenant(&bearer(&hs256(&claims("nobody"), SECRET))).await.unwrap_err(),
        AuthError::UnknownTenant
    );
    let store = sqlite_store("jwt-auto").await;
    let a = auth()
        .with_store(KeyCache::new(store.clone(), Duration::from_secs(5)))
        .with_jwt(JwtVerifier::new(JwtSettings { auto_create_tenants: true, ..jwt_settings() }).unwrap());
    let c = a.authenticate_tenant(&bearer(&hs256(&claims("newco"), SECRET))).await.unwrap();
    assert_eq!(&*c.tenant, "newco");
    assert!(store.get_tenant("newco").await.unwrap().is_some());
}

#[tokio::test]
async fn jwt_tenant_claim_is_configurable() {
    let a = jwt_auth(JwtSettings { tenant_claim: "org".into(), ..jwt_settings() });
    let mut c = claims("user-1");
    c["org"] = json!("globex");
    assert_eq!(&*a.authenticate_tenant(&bearer(&hs256(&c, SECRET))).await.unwrap().tenant, "globex");
}

const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCM/1oE52AIeZGeLd
QC2QfZFrv92pAs0BnB7UUYIwdf6hRANCAAQdTHvBGcsttzyWTodWzEHzouESUbRq
G+LwoN/Aujo+KvXK1/c787109SkRMV10lNi6Tfm9zFcvyTysy9EVr83q
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHUx7wRnLLbc8lk6HVsxB86LhElG0
ahvi8KDfwLo6Pir1ytf3O/O9dPUpETFddJTYuk35vcxXL8k8rMvRFa/N6g==
-----END PUBLIC KEY-----
";
/// The public half of `EC_PRIVATE` as JWK coordinates.
const EC_X: &str = "HUx7wRnLLbc8lk6HVsxB86LhElG0ahvi8KDfwLo6Pio";
const EC_Y: &str = "9crX9zvzvXT1KRExXXSU2LpN-b3MVy_JPKzL0RWvzeo";
const EC2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZzdRY4wnOZ07+MvO
8e/N16TNQPqj/Hl3hyGWtAK/dq+hRANCAATPUn2+ATq5I/Ce2kU8geAUhZHB2PsJ
9skt2Dt/Jy+jyUZRniXpfQ6fsocVsXhRLTJ0Q/A+EHC/sOKdXk2ENy4B
-----END PRIVATE KEY-----
";
const EC2_X: &str = "z1J9vgE6uSPwntpFPIHgFIWRwdj7CfbJLdg7fycvo8k";
const EC2_Y: &str = "RlGeJel9Dp-yhxWxeFEtMnRD8D4QcL-w4p1eTYQ3LgE";

fn es256(claims: &serde_json::Value, private_pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn jwt_es256_public_key_pem() {
    let a = jwt_auth(JwtSettings {
        hs256_secret: None,
        public_keys: vec![PublicKeySpec { algorithm: Algorithm::ES256, pem: EC_PUBLIC.into() }],
        ..jwt_settings()
    });
    assert_eq!(
        &*a.authenticate_tenant(&bearer(&es256(&claims("acme"), EC_PRIVATE, None))).await.unwrap().tenant,
        "acme"
    );
    assert_eq!(
        a.authenticate_tenant(&bearer(&es256(&claims("acme"), EC2_PRIVATE, None))).await.unwrap_err(),
        AuthError::InvalidToken("invalid signature")
    );
    // An HS256 token is not tried against the EC key (no algorithm confusion).
    assert!(a.authenticate_tenant(&bearer(&hs256(&claims("acme"), SECRET))).await.is_err());
}

fn jwks(keys: &[(&str, &str, &str)]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, x, y)| json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": x, "y": y}))
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn jwt_jwks_rotation_is_picked_up_on_reload() {
    let dir = temp_dir("jwks");
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(&[("k1", EC_X, EC_Y)])).unwrap();
    let verifier =
        JwtVerifier::new(JwtSettings { hs256_secret: None, jwks_file: Some(path.clone()), ..jwt_settings() }).unwrap();
    let a = auth().with_jwt(verifier.clone());
    let old = es256(&claims("acme"), EC_PRIVATE, Some("k1"));
    let new = es256(&claims("globex"), EC2_PRIVATE, Some("k2"));
    assert_eq!(&*a.authenticate_tenant(&bearer(&old)).await.unwrap().tenant, "acme");
    assert!(a.authenticate_tenant(&bearer(&new)).await.is_err(), "k2 is not published yet");
    // Rotate: publish k2, retire k1. (Different length, so the change is seen even within one mtime tick.)
    std::fs::write(&path, jwks(&[("k2", EC2_X, EC2_Y)]) + "\n").unwrap();
    verifier.reload_if_changed();
    assert_eq!(&*a.authenticate_tenant(&bearer(&new)).await.unwrap().tenant, "globex");
    assert!(a.authenticate_tenant(&bearer(&old)).await.is_err(), "k1 was retired (and the token cache emptied)");
    // A broken file keeps the last good keys.
    std::fs::write(&path, "{ not json").unwrap();
    verifier.reload_if_changed();
    assert_eq!(&*a.authenticate_tenant(&bearer(&new)).await.unwrap().tenant, "globex");
    // The watcher reloads on its own.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(verifier.clone().watch(shutdown.clone()));
    std::fs::write(&path, jwks(&[("k1", EC_X, EC_Y), ("k2", EC2_X, EC2_Y)])).unwrap();
    let fresh_old = es256(&claims("acme"), EC_PRIVATE, Some("k1"));
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if a.authenticate_tenant(&bearer(&fresh_old)).await.is_ok() {
            ok = true;
            break;
        }
    }
    shutdown.cancel();
    task.await.unwrap();
    assert!(ok, "the watcher reloaded the JWKS file");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn jwt_shape_detection() {
    assert!(jwt::looks_like_jwt("eyJh.eyJz.c2ln"));
    assert!(!jwt::looks_like_jwt("sk-acme-key-1"));
    assert!(!jwt::looks_like_jwt("a.b"));
    assert!(!jwt::looks_like_jwt("a..c"));
}

/// Regression: concurrent first requests on a replica that has not counted the store's tenants yet must
/// not be let through as `anonymous` while one of them asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_never_see_open_mode_when_tenants_exist() {
    let store = sqlite_store("race").await;
    store.create_tenant("acme", LimitSpec::default()).await.unwrap();
    let a = Arc::new(Authenticator::new(&[], None).with_store(KeyCache::new(store, Duration::from_secs(60))));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.authenticate_tenant(&HeaderMap::new()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), AuthError::Missing);
    }
}
