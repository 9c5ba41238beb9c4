//! A thin dynamic layer over the two drivers, so the batch store is written once: statements use
//! Postgres' `$N` placeholders (rewritten to SQLite's `?N`), `{now}` for the database clock, and
//! values are a small closed set ([`Val`]). Transactions are scripts of statements, each of which may
//! require a row count (the fencing checks): a failed requirement rolls the whole script back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use super::StoreError;

/// The database clock in unix milliseconds: leases are timed by the database, never by a replica.
const PG_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
const SQLITE_NOW: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
/// The ledger's migration lock (`ledger/postgres.rs`): one migrator at a time across replicas.
const MIGRATION_LOCK: i64 = 0x4c45_4447_4552;
/// The batch store's migrations, in order: (version, name, Postgres SQL, SQLite SQL).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        14,
        "files_batches",
        include_str!("../../../migrations/postgres/0014_files_batches.sql"),
        include_str!("../../../migrations/sqlite/0014_files_batches.sql"),
    ),
    (
        15,
        "lists_by_created",
        include_str!("../../../migrations/postgres/0015_lists_by_created.sql"),
        include_str!("../../../migrations/sqlite/0015_lists_by_created.sql"),
    ),
];
/// Connections per replica: a worker's lanes (lines in flight) and the API share them.
const POOL_SIZE: usize = 16;

/// One SQL value. Nulls are typed because Postgres checks parameter types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    I(i64),
    T(String),
    B(Vec<u8>),
    NullI,
    NullT,
    NullB,
}

impl Val {
    pub(crate) fn ot(v: Option<&str>) -> Val {
        v.map_or(Val::NullT, |s| Val::T(s.to_owned()))
    }
    pub(crate) fn oi(v: Option<i64>) -> Val {
        v.map_or(Val::NullI, Val::I)
    }
    pub(crate) fn t(v: impl Into<String>) -> Val {
        Val::T(v.into())
    }
}

/// A result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) Vec<Val>);

impl Row {
    pub(crate) fn i(&self, at: usize) -> i64 {
        match self.0.get(at) {
            Some(Val::I(v)) => *v,
            _ => 0,
        }
    }
    pub(crate) fn oi(&self, at: usize) -> Option<i64> {
        match self.0.get(at) {
            Some(Val::I(v)) => Some(*v),
            _ => None,
        }
    }
    pub(crate) fn t(&self, at: usize) -> String {
        self.ot(at).unwrap_or_default()
    }
    pub(crate) fn ot(&self, at: usize) -> Option<String> {
        match self.0.get(at) {
            Some(Val::T(v)) => Some(v.clone()),
            _ => None,
        }
    }
    pub(crate) fn b(&self, at: usize) -> Vec<u8> {
        match self.0.get(at) {
            Some(Val::B(v)) => v.clone(),
            Some(Val::T(v)) => v.clone().into_bytes(),
            _ => Vec::new(),
        }
    }
}

/// One statement of a transaction script.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub(crate) sql: String,
    pub(crate) params: Vec<Val>,
    /// Roll back the script unless the statement changed exactly this many rows.
    pub(crate) require: Option<u64>,
}

impl Stmt {
    pub(crate) fn new(sql: impl Into<String>, params: Vec<Val>) -> Self {
        Self { sql: sql.into(), params, require: None }
    }
    pub(crate) fn require(mut self, rows: u64) -> Self {
        self.require = Some(rows);
        self
    }
}

/// The database of the batch store: the ledger's (same Postgres `search_path`, or the same SQLite file,
/// so a line's result and its ledger row commit in one transaction).
pub(crate) enum Db {
    Postgres { pool: Pool, migrated: OnceCell<()> },
    Sqlite { path: PathBuf, conn: Arc<Mutex<Connection>> },
}

fn lite_sql(sql: &str) -> String {
    sql.replace("{now}", SQLITE_NOW).replace('$', "?")
}

fn pg_sql(sql: &str) -> String {
    sql.replace("{now}", PG_NOW)
}

fn pg_params(params: &[Val]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Val::I(i) => Box::new(*i),
                Val::T(s) => Box::new(s.clone()),
                Val::B(b) => Box::new(b.clone()),
                Val::NullI => Box::new(None::<i64>),
                Val::NullT => Box::new(None::<String>),
                Val::NullB => Box::new(None::<Vec<u8>>),
            }
        })
        .collect()
}

fn pg_row(r: &tokio_postgres::Row) -> Row {
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let ty = c.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i).ok().flatten().map_or(Val::NullI, Val::I)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i).ok().flatten().map_or(Val::NullI, |v| Val::I(i64::from(v)))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i).ok().flatten().map_or(Val::NullI, |v| Val::I(i64::from(v)))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i).ok().flatten().map_or(Val::NullB, Val::B)
        } else {
            r.try_get::<_, Option<String>>(i).ok().flatten().map_or(Val::NullT, Val::T)
        };
        out.push(v);
    }
    Row(out)
}

fn lite_params(params: &[Val]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    params
        .iter()
        .map(|v| match v {
            Val::I(i) => Value::Integer(*i),
            Val::T(s) => Value::Text(s.clone()),
            Val::B(b) => Value::Blob(b.clone()),
            Val::NullI | Val::NullT | Val::NullB => Value::Null,
        })
        .collect()
}

fn lite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Val::NullT,
            ValueRef::Integer(v) => Val::I(v),
            ValueRef::Real(v) => Val::I(v as i64),
            ValueRef::Text(t) => Val::T(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Val::B(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn lite_query(conn: &Connection, sql: &str, params: &[Val]) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&lite_sql(sql))?;
    let n = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(lite_params(params)), |r| lite_row(r, n))?;
    rows.collect()
}

fn lite_execute(conn: &Connection, sql: &str, params: &[Val]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(&lite_sql(sql))?;
    Ok(stmt.execute(rusqlite::params_from_iter(lite_params(params)))? as u64)
}

fn open_sqlite(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL (in WAL mode) survives a process crash; a power loss may drop the last commits. That
    // keeps exactly-once billing: a line's result and its ledger row are one transaction, lost or kept
    // together, and a lost line simply runs again (its upstream call repeats, its bill does not).
    // What the API acknowledges (a file, a batch, a cancel) is written with `execute_durable` (FULL).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Plan stability: without it SQLite re-prepares a cached statement whenever a bound value could
    // change its plan (the claim and lease queries bind times against partial indexes), so the
    // worker's idle poll re-compiled its statements twice a second.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

fn migrate_sqlite(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at_unix_ms INTEGER NOT NULL
         )",
    )?;
    for &(version, name, _, sql) in MIGRATIONS {
        let done: i64 =
            tx.query_row("SELECT COUNT(*) FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0))?;
        if done == 0 {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, crate::domain::time::now_unix_ms()],
            )?;
            tracing::info!(version, name, "Batch store SQLite migration applied");
        }
    }
    tx.commit()
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Db {
    /// Opens Postgres (lazily connected, migrated on first use) or `data_dir/ledger.sqlite3`.
    pub(crate) async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                let mut pg: tokio_postgres::Config =
                    url.parse().map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
                if pg.get_connect_timeout().is_none() {
                    pg.connect_timeout(Duration::from_secs(5));
                }
                if pg.get_application_name().is_none() {
                    pg.application_name("ai-aggregator-batches");
                }
                let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
                let pool = Pool::builder(mgr)
                    .max_size(POOL_SIZE)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(Duration::from_secs(10)))
                    .create_timeout(Some(Duration::from_secs(5)))
                    .build()
                    .map_err(|e| StoreError::Config(e.to_string()))?;
                Ok(Db::Postgres { pool, migrated: OnceCell::new() })
            }
            None => {
                std::fs::create_dir_all(data_dir).map_err(unavailable)?;
                let path = data_dir.join("ledger.sqlite3");
                let p = path.clone();
                let conn = tokio::task::spawn_blocking(move || {
                    let mut conn = open_sqlite(&p)?;
                    migrate_sqlite(&mut conn)?;
                    Ok::<_, rusqlite::Error>(conn)
                })
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
                Ok(Db::Sqlite { path, conn: Arc::new(Mutex::new(conn)) })
            }
        }
    }

    /// True on Postgres (several replicas may share the queue).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    /// The SQLite file (for logs).
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Db::Sqlite { path, .. } => Some(path),
            Db::Postgres { .. } => None,
        }
    }

    async fn pg(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let Db::Postgres { pool, migrated } = self else {
            return Err(StoreError::Config("not Postgres".into()));
        };
        let client = pool.get().await.map_err(unavailable)?;
        if migrated.get().is_none() {
            migrated.get_or_try_init(|| migrate_pg(pool)).await?;
        }
        Ok(client)
    }

    /// Runs a query and returns every row.
    pub(crate) async fn query(&self, sql: &str, params: Vec<Val>) -> Result<Vec<Row>, StoreError> {
        match self {
            Db::Postgres { .. } => {
                let client = self.pg().await?;
                let boxed = pg_params(&params);
                let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
                let rows = client.query(&pg_sql(sql), &refs).await.map_err(unavailable)?;
                Ok(rows.iter().map(pg_row).collect())
            }
            Db::Sqlite { conn, .. } => {
                let conn = Arc::clone(conn).lock_owned().await;
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || lite_query(&conn, &sql, &params))
                    .await
                    .map_err(unavailable)?
                    .map_err(unavailable)
            }
        }
    }

    /// The first row, if any.
    pub(crate) async fn query_opt(&self, sql: &str, params: Vec<Val>) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs one statement; returns the rows changed.
    pub(crate) async fn execute(&self, sql: &str, params: Vec<Val>) -> Result<u64, StoreError> {
        match self {
            Db::Postgres { .. } => {
                let client = self.pg().await?;
                let boxed = pg_params(&params);
                let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
                client.execute(&pg_sql(sql), &refs).await.map_err(unavailable)
            }
            Db::Sqlite { conn, .. } => {
                let conn = Arc::clone(conn).lock_owned().await;
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || lite_execute(&conn, &sql, &params))
                    .await
                    .map_err(unavailable)?
                    .map_err(unavailable)
            }
        }
    }

    /// Like [`Db::execute`], but on SQLite the commit is fsynced (`synchronous = FULL` for this
    /// statement): for writes the API acknowledges, which must survive a power loss too.
    pub(crate) async fn execute_durable(&self, sql: &str, params: Vec<Val>) -> Result<u64, StoreError> {
        match self {
            Db::Postgres { .. } => self.execute(sql, params).await,
            Db::Sqlite { conn, .. } => {
                let conn = Arc::clone(conn).lock_owned().await;
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || -> rusqlite::Result<u64> {
                    conn.pragma_update(None, "synchronous", "FULL")?;
                    let n = lite_execute(&conn, &sql, &params);
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                    n
                })
                .await
                .map_err(unavailable)?
                .map_err(unavailable)
            }
        }
    }

    /// Runs `stmts` in one transaction. Returns false (everything rolled back) when a statement's
    /// row-count requirement failed.
    pub(crate) async fn script(&self, stmts: Vec<Stmt>) -> Result<bool, StoreError> {
        match self {
            Db::Postgres { .. } => {
                let mut client = self.pg().await?;
                let tx = client.transaction().await.map_err(unavailable)?;
                for s in &stmts {
                    let boxed = pg_params(&s.params);
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
                    let n = tx.execute(&pg_sql(&s.sql), &refs).await.map_err(unavailable)?;
                    if s.require.is_some_and(|r| r != n) {
                        tx.rollback().await.map_err(unavailable)?;
                        return Ok(false);
                    }
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(true)
            }
            Db::Sqlite { conn, .. } => {
                let conn = Arc::clone(conn).lock_owned().await;
                tokio::task::spawn_blocking(move || -> rusqlite::Result<bool> {
                    let mut conn = conn;
                    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    for s in &stmts {
                        let n = lite_execute(&tx, &s.sql, &s.params)?;
                        if s.require.is_some_and(|r| r != n) {
                            tx.rollback()?;
                            return Ok(false);
                        }
                    }
                    tx.commit()?;
                    Ok(true)
                })
                .await
                .map_err(unavailable)?
                .map_err(unavailable)
            }
        }
    }
}

async fn migrate_pg(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
    // The ledger migrates its own table first; until it has, the batch store waits (it alters it).
    let ledger = tx
        .query_opt("SELECT 1 FROM information_schema.tables WHERE table_name = 'ledger_records' AND table_schema = current_schema()", &[])
        .await
        .map_err(unavailable)?;
    if ledger.is_none() {
        return Err(StoreError::Unavailable("the ledger table is not migrated yet".into()));
    }
    for &(version, name, sql, _) in MIGRATIONS {
        let done = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version])
            .await
            .map_err(unavailable)?;
        if done.is_none() {
            tx.batch_execute(sql).await.map_err(unavailable)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_unix_ms) VALUES ($1, $2, $3)",
                &[&version, &name, &crate::domain::time::now_unix_ms()],
            )
            .await
            .map_err(unavailable)?;
            tracing::info!(version, name, "Batch store Postgres migration applied");
        }
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(())
}
