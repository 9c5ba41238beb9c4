//! Persisted dashboard sessions (issue 16), used only when `dashboard.session_secret` is configured:
//! rows keyed by the SHA-256 of the session id, holding the credential sealed by the sessions
//! service (this store never sees it in the clear) and the session's CSRF token.

use rusqlite::{params, OptionalExtension};

use super::{StoreError, TenantStore};

/// One persisted session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 hex of the session id (the cookie value).
    pub id_hash: String,
    /// The sealed credential (hex).
    pub sealed: String,
    /// The CSRF token forms of this session carry.
    pub csrf: String,
    /// When it was signed in, unix ms.
    pub created_at_ms: i64,
    /// Last request seen (updated at most once a minute), unix ms.
    pub last_seen_ms: i64,
}

const COLS: &str = "id_hash, sealed, csrf, created_at_ms, last_seen_ms";

impl TenantStore {
    /// Stores a new session.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put_session(&self, row: SessionRow) -> Result<(), StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                c.execute(
                    &format!("INSERT INTO dashboard_sessions ({COLS}) VALUES ($1, $2, $3, $4, $5)"),
                    &[&row.id_hash, &row.sealed, &row.csrf, &row.created_at_ms, &row.last_seen_ms],
                )
                .await?;
                Ok(())
            }
            TenantStore::Sqlite { .. } => {
                self.lite(move |c| {
                    c.execute(
                        &format!("INSERT INTO dashboard_sessions ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                        params![row.id_hash, row.sealed, row.csrf, row.created_at_ms, row.last_seen_ms],
                    )
                    .map(|_| ())
                })
                .await
            }
        }
    }

    /// The session with this id hash.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                let row = c
                    .query_opt(&format!("SELECT {COLS} FROM dashboard_sessions WHERE id_hash = $1"), &[&id_hash])
                    .await?;
                Ok(row.map(|r| SessionRow {
                    id_hash: r.get(0),
                    sealed: r.get(1),
                    csrf: r.get(2),
                    created_at_ms: r.get(3),
                    last_seen_ms: r.get(4),
                }))
            }
            TenantStore::Sqlite { .. } => {
                let id_hash = id_hash.to_owned();
                self.lite(move |c| {
                    c.query_row(&format!("SELECT {COLS} FROM dashboard_sessions WHERE id_hash = ?1"), [id_hash], |r| {
                        Ok(SessionRow {
                            id_hash: r.get(0)?,
                            sealed: r.get(1)?,
                            csrf: r.get(2)?,
                            created_at_ms: r.get(3)?,
                            last_seen_ms: r.get(4)?,
                        })
                    })
                    .optional()
                })
                .await
            }
        }
    }

    /// Records that the session was used at `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<(), StoreError> {
        self.session_exec(
            "UPDATE dashboard_sessions SET last_seen_ms = $2 WHERE id_hash = $1",
            id_hash.to_owned(),
            Some(now_ms),
        )
        .await
    }

    /// Ends the session (sign-out, or found idle or invalid).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.session_exec("DELETE FROM dashboard_sessions WHERE id_hash = $1", id_hash.to_owned(), None).await
    }

    /// Deletes sessions last used before `before_ms`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn prune_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                Ok(c.execute("DELETE FROM dashboard_sessions WHERE last_seen_ms < $1", &[&before_ms]).await?)
            }
            TenantStore::Sqlite { .. } => {
                self.lite(move |c| {
                    c.execute("DELETE FROM dashboard_sessions WHERE last_seen_ms < ?1", [before_ms]).map(|n| n as u64)
                })
                .await
            }
        }
    }

    /// One statement over `$1` = id hash and, when given, `$2` = a time.
    async fn session_exec(&self, sql: &'static str, id_hash: String, at: Option<i64>) -> Result<(), StoreError> {
        match self {
            TenantStore::Postgres { .. } => {
                let c = self.pg().await?;
                match at {
                    Some(t) => c.execute(sql, &[&id_hash, &t]).await?,
                    None => c.execute(sql, &[&id_hash]).await?,
                };
                Ok(())
            }
            TenantStore::Sqlite { .. } => {
                let sql = sql.replace('$', "?");
                self.lite(move |c| {
                    match at {
                        Some(t) => c.execute(&sql, params![id_hash, t])?,
                        None => c.execute(&sql, params![id_hash])?,
                    };
                    Ok(())
                })
                .await
            }
        }
    }
}
