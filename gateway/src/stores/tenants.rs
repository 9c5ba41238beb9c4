//! Tenants and API keys created through the admin API, stored beside the ledger: in its Postgres
//! database (same URL, same `search_path`) or in its embedded SQLite file (`ledger.sqlite3`).
//!
//! The schema is migration 2 (`migrations/{postgres,sqlite}/0002_tenants_keys.sql`) and 18 (the
//! dashboard's persisted sessions, `sessions.rs`), recorded in the ledger's `schema_migrations` table; on Postgres it runs under the ledger's advisory lock, so replicas
//! starting together migrate once. Keys are stored as SHA-256 hex digests only.
//!
//! Nothing here is on the hot path: `auth` caches look-ups (see `docs/ACCESS_CONTROL.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

use crate::domain::limits::LimitSpec;

/// Version, name, Postgres SQL, SQLite SQL.
const MIGRATIONS: [(i64, &str, &str, &str); 2] = [
    (
        2,
        "tenants_keys",
        include_str!("../../migrations/postgres/0002_tenants_keys.sql"),
        include_str!("../../migrations/sqlite/0002_tenants_keys.sql"),
    ),
    (
        18,
        "dashboard_sessions",
        include_str!("../../migrations/postgres/0018_dashboard_sessions.sql"),
        include_str!("../../migrations/sqlite/0018_dashboard_sessions.sql"),
    ),
];
/// The ledger's migration lock (`ledger/postgres.rs`): one migrator at a time across replicas.
const MIGRATION_LOCK: i64 = 0x4c45_4447_4552;
/// Serialises tenant creation across replicas (Postgres), so the case-insensitive uniqueness check and
/// the insert are one step: `Acme` and `acme` cannot both be created by two racing requests.
const TENANT_CREATE_LOCK: i64 = 0x5445_4e41_4e54;
/// The ledger's embedded database file.
const SQLITE_FILE: &str = "ledger.sqlite3";
const POOL_SIZE: usize = 4;

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: String,
    pub limits: LimitSpec,
    pub disabled: bool,
    pub created_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
}

/// A stored API key (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    /// The first characters of the secret, to recognise it in listings.
    pub prefix: String,
    pub name: Option<String>,
    pub limits: LimitSpec,
    pub created_at_unix_ms: i64,
    pub revoked_at_unix_ms: Option<i64>,
}

/// A new key to insert.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tenant_id: String,
    pub digest_hex: String,
    pub prefix: String,
    pub name: Option<String>,
    pub limits: LimitSpec,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` already exists")]
    Conflict(String),
    #[error("tenant store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid tenant store configuration: {0}")]
    Config(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict("row".to_owned());
        }
        StoreError::Unavailable(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                return StoreError::Conflict("row".to_owned());
            }
        }
        StoreError::Unavailable(e.to_string())
    }
}

/// Where tenants and keys live.
pub enum TenantStore {
    Postgres { pool: Pool, migrated: tokio::sync::OnceCell<()> },
    Sqlite { path: PathBuf, conn: Arc<Mutex<Connection>> },
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantStore::Postgres { .. } => f.write_str("TenantStore::Postgres"),
            TenantStore::Sqlite { path, .. } => write!(f, "TenantStore::Sqlite({})", path.display()),
        }
    }
}

const TENANT_COLS: &str =
    "id, rpm, tpm, max_concurrent, monthly_budget_micro_usd, disabled, created_at_unix_ms, updated_at_unix_ms";
const KEY_COLS: &str = "id, tenant_id, prefix, name, rpm, tpm, max_concurrent, monthly_budget_micro_usd, \
                        created_at_unix_ms, revoked_at_unix_ms";

fn to_db(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn from_db(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

fn pg_tenant(r: &tokio_postgres::Row) -> TenantRow {
    TenantRow {
        id: r.get(0),
        limits: LimitSpec {
            rpm: from_db(r.get(1)),
            tpm: from_db(r.get(2)),
            max_concurrent: from_db(r.get(3)),
            monthly_budget_micro_usd: r.get(4),
        },
        disabled: r.get(5),
        created_at_unix_ms: r.get(6),
        updated_at_unix_ms: r.get(7),
    }
}

fn pg_key(r: &tokio_postgres::Row) -> KeyRow {
    KeyRow {
        id: r.get(0),
        tenant_id: r.get(1),
        prefix: r.get(2),
        name: r.get(3),
        limits: LimitSpec {
            rpm: from_db(r.get(4)),
            tpm: from_db(r.get(5)),
            max_concurrent: from_db(r.get(6)),
            monthly_budget_micro_usd: r.get(7),
        },
        created_at_unix_ms: r.get(8),
        revoked_at_unix_ms: r.get(9),
    }
}

fn lite_tenant(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok(TenantRow {
        id: r.get(0)?,
        limits: LimitSpec {
            rpm: from_db(r.get(1)?),
            tpm: from_db(r.get(2)?),
            max_concurrent: from_db(r.get(3)?),
            monthly_budget_micro_usd: r.get(4)?,
        },
        disabled: r.get::<_, i64>(5)? != 0,
        created_at_unix_ms: r.get(6)?,
        updated_at_unix_ms: r.get(7)?,
    })
}

fn lite_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        prefix: r.get(2)?,
        name: r.get(3)?,
        limits: LimitSpec {
            rpm: from_db(r.get(4)?),
            tpm: from_db(r.get(5)?),
            max_concurrent: from_db(r.get(6)?),
            monthly_budget_micro_usd: r.get(7)?,
        },
        created_at_unix_ms: r.get(8)?,
        revoked_at_unix_ms: r.get(9)?,
    })
}

fn sqlite_migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at_unix_ms INTEGER NOT NULL
         )",
    )?;
    for (version, name, _, sql) in MIGRATIONS {
        let applied: Option<i64> = tx
            .query_row("SELECT version FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0))
            .optional()?;
        if applied.is_none() {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES (?1, ?2, ?3)",
                params![version, name, crate::domain::time::now_unix_ms()],
            )?;
            tracing::info!(version, name, "Tenant store SQLite migration applied");
        }
    }
    tx.commit()
}

impl TenantStore {
    /// Opens the store next to the ledger: Postgres when `database_url` is set (the pool connects
    /// lazily; migrations run on first use), else `data_dir/ledger.sqlite3` (migrated now).
    ///
    /// # Errors
    /// A URL that does not parse, or a SQLite file that cannot be opened or migrated.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                let mut pg: tokio_postgres::Config =
                    url.parse().map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
                if pg.get_connect_timeout().is_none() {
                    pg.connect_timeout(Duration::from_secs(5));
                }
                if pg.get_application_name().is_none() {
                    pg.application_name("ai-aggregator-tenants");
                }
                let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
                let pool = Pool::builder(mgr)
                    .max_size(POOL_SIZE)
                    .runtime(Runtime::Tokio1)
                    .create_timeout(Some(Duration::from_secs(6)))
                    .wait_timeout(Some(Duration::from_secs(10)))
                    .recycle_timeout(Some(Duration::from_secs(5)))
                    .build()
                    .map_err(|e| StoreError::Config(e.to_string()))?;
                Ok(TenantStore::Postgres { pool, migrated: tokio::sync::OnceCell::new() })
            }
            None => {
                tokio::fs::create_dir_all(data_dir).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let path = data_dir.join(SQLITE_FILE);
                let p = path.clone();
                let conn = tokio::task::spawn_blocking(move || {
                    let mut conn = Connection::open_with_flags(
                        &p,
                        OpenFlags::SQLITE_OPEN_READ_WRITE
                            | OpenFlags::SQLITE_OPEN_CREATE
                            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(Duration::from_secs(10))?;
                    conn.pragma_update(None, "journal_mode", "WAL")?;
                    conn.pragma_update(None, "foreign_keys", "ON")?;
                    sqlite_migrate(&mut conn)?;
                    Ok::<_, rusqlite::Error>(conn)
                })
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                Ok(TenantStore::Sqlite { path, conn: Arc::new(Mutex::new(conn)) })
            }
        }
    }

    async fn pg(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let TenantStore::Postgres { pool, migrated } = self else {
            return Err(StoreError::Config("not a Postgres store".into()));
        };
        // Migrate first, on its own connection: holding one while waiting for the migration would let
        // concurrent first callers exhaust the pool.
        migrated
            .get_or_try_init(|| async {
                let mut c = pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version BIGINT PRIMARY KEY,
                         name TEXT NOT NULL,
                         applied_at_unix_ms BIGINT NOT NULL
                     )",
                )
                .await?;
                for (version, name, sql, _) in MIGRATIONS {
                    let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version]).await?;
                    if done.is_none() {
                        tx.batch_execute(sql).await?;
                        tx.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES ($1, $2, $3)",
                            &[&version, &name, &crate::domain::time::now_unix_ms()],
                        )
                        .await?;
                        tracing::info!(version, name, "Tenant store Postgres migration applied");
                    }
                }
                tx.commit().await?;
                Ok::<_, StoreError>(())
            })
            .await?;
        pool.get().await.map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs `f` on the SQLite connection on a blocking thread.
    async fn lite<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let TenantStore::Sqlite { conn, .. } = self else {
            return Err(StoreError::Config("not a SQLite store".into()));
        };
        let guard = Arc::clone(conn).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .map_err(StoreError::from)
    }

    /// Makes sure the schema exists (and, on Postgres, that the database answers).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database is down.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let _client = self.pg().await?;
                Ok(())
            }
            TenantStore::Sqlite { .. } => Ok(()),
        }
    }

    /// Inserts a tenant. Ids are unique regardless of ASCII case: `Acme` is refused when `acme`
    /// exists. (Rows stored before this rule are kept, and stay addressable by their exact id.)
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id exists in any case; [`StoreError::Unavailable`].
    pub async fn create_tenant(&self, id: &str, limits: LimitSpec) -> Result<TenantRow, StoreError> {
        let now = crate::domain::time::now_unix_ms();
        let row =
            TenantRow { id: id.to_owned(), limits, disabled: false, created_at_unix_ms: now, updated_at_unix_ms: now };
        let sql = "INSERT INTO tenants (id, rpm, tpm, max_concurrent, monthly_budget_micro_usd, disabled, \
                   created_at_unix_ms, updated_at_unix_ms) SELECT ";
        let res = match self {
            TenantStore::Postgres { .. } => {
                let mut c = self.pg().await?;
                async {
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TENANT_CREATE_LOCK]).await?;
                    let n = tx
                        .execute(
                            &format!(
                                "{sql}$1, $2, $3, $4, $5, FALSE, $6, $6 \
                                 WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE lower(id) = lower($1))"
                            ),
                            &[
                                &id,
                                &to_db(limits.rpm),
                                &to_db(limits.tpm),
                                &to_db(limits.max_concurrent),
                                &limits.monthly_budget_micro_usd,
                                &now,
                            ],
                        )
                        .await?;
                    tx.commit().await?;
                    Ok::<_, tokio_postgres::Error>(n)
                }
                .await
                .map_err(StoreError::from)
            }
            TenantStore::Sqlite { .. } => {
                let id = id.to_owned();
                // One statement: SQLite runs it under its write lock, check and insert together.
                self.lite(move |c| {
                    c.execute(
                        &format!(
                            "{sql}?1, ?2, ?3, ?4, ?5, 0, ?6, ?6 \
                             WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE lower(id) = lower(?1))"
                        ),
                        params![
                            id,
                            to_db(limits.rpm),
                            to_db(limits.tpm),
                            to_db(limits.max_concurrent),
                            limits.monthly_budget_micro_usd,
                            now
                        ],
                    )
                    .map(|n| n as u64)
                })
                .await
            }
        };
        match res {
            Ok(0) | Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(id.to_owned())),
            Ok(_) => Ok(row),
            Err(e) => Err(e),
        }
    }

    /// Every stored tenant, by id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn list_tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY id");
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                Ok(c.query(&sql, &[]).await?.iter().map(pg_tenant).collect())
            }
            TenantStore::Sqlite { .. } => {
                self.lite(move |c| {
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map([], lite_tenant)?;
                    rows.collect()
                })
                .await
            }
        }
    }

    /// One tenant.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn get_tenant(&self, id: &str) -> Result<Option<TenantRow>, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1");
                Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(pg_tenant))
            }
            TenantStore::Sqlite { .. } => {
                let id = id.to_owned();
                self.lite(move |c| {
                    let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1");
                    c.query_row(&sql, [id], lite_tenant).optional()
                })
                .await
            }
        }
    }

    /// Replaces a tenant's limits and disabled flag; `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn update_tenant(
        &self,
        id: &str,
        limits: LimitSpec,
        disabled: bool,
    ) -> Result<Option<TenantRow>, StoreError> {
        let now = crate::domain::time::now_unix_ms();
        let n = match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                c.execute(
                    "UPDATE tenants SET rpm = $2, tpm = $3, max_concurrent = $4, monthly_budget_micro_usd = $5, \
                     disabled = $6, updated_at_unix_ms = $7 WHERE id = $1",
                    &[
                        &id,
                        &to_db(limits.rpm),
                        &to_db(limits.tpm),
                        &to_db(limits.max_concurrent),
                        &limits.monthly_budget_micro_usd,
                        &disabled,
                        &now,
                    ],
                )
                .await?
            }
            TenantStore::Sqlite { .. } => {
                let id = id.to_owned();
                self.lite(move |c| {
                    c.execute(
                        "UPDATE tenants SET rpm = ?2, tpm = ?3, max_concurrent = ?4, monthly_budget_micro_usd = ?5, \
                         disabled = ?6, updated_at_unix_ms = ?7 WHERE id = ?1",
                        params![
                            id,
                            to_db(limits.rpm),
                            to_db(limits.tpm),
                            to_db(limits.max_concurrent),
                            limits.monthly_budget_micro_usd,
                            disabled,
                            now
                        ],
                    )
                })
                .await? as u64
            }
        };
        if n == 0 {
            return Ok(None);
        }
        self.get_tenant(id).await
    }

    /// How many tenants are stored (disabled ones included).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                Ok(c.query_one("SELECT COUNT(*) FROM tenants", &[]).await?.get(0))
            }
            TenantStore::Sqlite { .. } => {
                self.lite(|c| c.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get(0))).await
            }
        }
    }

    /// Inserts a key.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate id or digest; [`StoreError::Unavailable`].
    pub async fn create_key(&self, key: NewKey) -> Result<KeyRow, StoreError> {
        let now = crate::domain::time::now_unix_ms();
        let row = KeyRow {
            id: key.id.clone(),
            tenant_id: key.tenant_id.clone(),
            prefix: key.prefix.clone(),
            name: key.name.clone(),
            limits: key.limits,
            created_at_unix_ms: now,
            revoked_at_unix_ms: None,
        };
        let sql = "INSERT INTO api_keys (id, tenant_id, digest_sha256, prefix, name, rpm, tpm, max_concurrent, \
                   monthly_budget_micro_usd, created_at_unix_ms) VALUES ";
        let l = key.limits;
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                c.execute(
                    &format!("{sql}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
                    &[
                        &key.id,
                        &key.tenant_id,
                        &key.digest_hex,
                        &key.prefix,
                        &key.name,
                        &to_db(l.rpm),
                        &to_db(l.tpm),
                        &to_db(l.max_concurrent),
                        &l.monthly_budget_micro_usd,
                        &now,
                    ],
                )
                .await?;
            }
            TenantStore::Sqlite { .. } => {
                self.lite(move |c| {
                    c.execute(
                        &format!("{sql}(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                        params![
                            key.id,
                            key.tenant_id,
                            key.digest_hex,
                            key.prefix,
                            key.name,
                            to_db(l.rpm),
                            to_db(l.tpm),
                            to_db(l.max_concurrent),
                            l.monthly_budget_micro_usd,
                            now
                        ],
                    )
                })
                .await?;
            }
        }
        Ok(row)
    }

    /// A tenant's keys, newest first (revoked ones included).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn list_keys(&self, tenant_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                let sql = format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at_unix_ms DESC, id"
                );
                Ok(c.query(&sql, &[&tenant_id]).await?.iter().map(pg_key).collect())
            }
            TenantStore::Sqlite { .. } => {
                let tenant_id = tenant_id.to_owned();
                self.lite(move |c| {
                    let sql = format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at_unix_ms DESC, id"
                    );
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map([tenant_id], lite_key)?;
                    rows.collect()
                })
                .await
            }
        }
    }

    /// Revokes a key; the revoked row when it existed (already revoked keys keep their first time).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn revoke_key(&self, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        let now = crate::domain::time::now_unix_ms();
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                c.execute(
                    "UPDATE api_keys SET revoked_at_unix_ms = COALESCE(revoked_at_unix_ms, $2) WHERE id = $1",
                    &[&key_id, &now],
                )
                .await?;
                let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1");
                Ok(c.query_opt(&sql, &[&key_id]).await?.as_ref().map(pg_key))
            }
            TenantStore::Sqlite { .. } => {
                let key_id = key_id.to_owned();
                self.lite(move |c| {
                    c.execute(
                        "UPDATE api_keys SET revoked_at_unix_ms = COALESCE(revoked_at_unix_ms, ?2) WHERE id = ?1",
                        params![key_id, now],
                    )?;
                    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1");
                    c.query_row(&sql, [key_id], lite_key).optional()
                })
                .await
            }
        }
    }

    /// The key with this SHA-256 (hex), revoked or not.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn key_by_digest(&self, digest_hex: &str) -> Result<Option<KeyRow>, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE digest_sha256 = $1");
                Ok(c.query_opt(&sql, &[&digest_hex]).await?.as_ref().map(pg_key))
            }
            TenantStore::Sqlite { .. } => {
                let digest_hex = digest_hex.to_owned();
                self.lite(move |c| {
                    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE digest_sha256 = ?1");
                    c.query_row(&sql, [digest_hex], lite_key).optional()
                })
                .await
            }
        }
    }
}

mod sessions;
pub use sessions::SessionRow;

#[cfg(test)]
mod tests;
