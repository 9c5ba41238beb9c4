//! Files, batches and the batch queue, stored beside the ledger (its Postgres database, or its
//! embedded SQLite file `ledger.sqlite3`), so that a batch line's result and its ledger row commit in
//! one transaction (see `docs/BATCHES.md`).
//!
//! - **Files**: metadata rows in `files`; upload content in `file_chunks` (Postgres, 4 MiB rows: every
//!   replica can serve every file) or in `data_dir/files/<id>` (embedded, one node). Batch output and
//!   error files are *virtual*: their content is the `result_line`s of `batch_items`, in line order.
//! - **Queue**: one `batch_items` row per input line. A claim sets `state = 'running'`, a lease timed by
//!   the database clock and a new fencing token (`lease_token + 1`); on Postgres it takes rows with
//!   `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other. Every later write of a claimed line
//!   names its token: a replica whose lease expired (and whose line was claimed again) writes nothing.
//! - **Steps** (validate, drain, finalize) of a batch take a lease on the batch row the same way.

mod db;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use db::Db;
pub(crate) use db::{Row, Stmt, Val};

use crate::domain::limits::CallerLimits;
use crate::stores::ledger::{rollup, LedgerRecord};

/// Upload content is stored (Postgres) and read back in chunks of this size.
pub const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Result lines streamed per page when serving a virtual output file.
const LINES_PER_PAGE: i64 = 500;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("batch store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid batch store configuration: {0}")]
    Config(String),
}

/// What a file row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Uploaded bytes.
    Blob,
    /// A batch's output file (its succeeded lines).
    BatchOutput,
    /// A batch's error file (its failed, cancelled and expired lines).
    BatchError,
}

impl FileKind {
    fn as_str(self) -> &'static str {
        match self {
            FileKind::Blob => "blob",
            FileKind::BatchOutput => "batch_output",
            FileKind::BatchError => "batch_error",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "batch_output" => FileKind::BatchOutput,
            "batch_error" => FileKind::BatchError,
            _ => FileKind::Blob,
        }
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: String,
    pub tenant: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub kind: FileKind,
    pub batch_id: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

const FILE_COLS: &str = "id, tenant, purpose, filename, bytes, kind, batch_id, created_at_ms, expires_at_ms";

fn file_row(r: &Row) -> FileRow {
    FileRow {
        id: r.t(0),
        tenant: r.t(1),
        purpose: r.t(2),
        filename: r.t(3),
        bytes: r.i(4),
        kind: FileKind::parse(&r.t(5)),
        batch_id: r.ot(6),
        created_at_ms: r.i(7),
        expires_at_ms: r.oi(8),
    }
}

/// A stored batch (every column the API shows, plus the billing identity captured at create time).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchRow {
    pub id: String,
    pub tenant: String,
    pub key_id: Option<String>,
    /// The creator's limits, as JSON ([`CallerLimits`]): lines are admitted against them.
    pub caller_limits: String,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    pub model: Option<String>,
    pub metadata: Option<String>,
    pub errors: Option<String>,
    pub output_expires_after_s: Option<i64>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub expire_pending: bool,
    pub created_at_ms: i64,
    pub in_progress_at_ms: Option<i64>,
    pub expires_at_ms: i64,
    pub finalizing_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub failed_at_ms: Option<i64>,
    pub expired_at_ms: Option<i64>,
    pub cancelling_at_ms: Option<i64>,
    pub cancelled_at_ms: Option<i64>,
    pub idempotency_key: Option<String>,
}

const BATCH_COLS: &str = "id, tenant, key_id, caller_limits, endpoint, input_file_id, completion_window, status, \
    model, metadata, errors, output_expires_after_s, output_file_id, error_file_id, total, completed, failed, \
    input_tokens, cached_tokens, output_tokens, expire_pending, created_at_ms, in_progress_at_ms, expires_at_ms, \
    finalizing_at_ms, completed_at_ms, failed_at_ms, expired_at_ms, cancelling_at_ms, cancelled_at_ms, \
    idempotency_key";

fn batch_row(r: &Row) -> BatchRow {
    BatchRow {
        id: r.t(0),
        tenant: r.t(1),
        key_id: r.ot(2),
        caller_limits: r.t(3),
        endpoint: r.t(4),
        input_file_id: r.t(5),
        completion_window: r.t(6),
        status: r.t(7),
        model: r.ot(8),
        metadata: r.ot(9),
        errors: r.ot(10),
        output_expires_after_s: r.oi(11),
        output_file_id: r.ot(12),
        error_file_id: r.ot(13),
        total: r.i(14),
        completed: r.i(15),
        failed: r.i(16),
        input_tokens: r.i(17),
        cached_tokens: r.i(18),
        output_tokens: r.i(19),
        expire_pending: r.i(20) != 0,
        created_at_ms: r.i(21),
        in_progress_at_ms: r.oi(22),
        expires_at_ms: r.i(23),
        finalizing_at_ms: r.oi(24),
        completed_at_ms: r.oi(25),
        failed_at_ms: r.oi(26),
        expired_at_ms: r.oi(27),
        cancelling_at_ms: r.oi(28),
        cancelled_at_ms: r.oi(29),
        idempotency_key: r.ot(30),
    }
}

/// One validated input line, ready to queue.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub line_no: i64,
    pub custom_id: String,
    /// The ledger key and the output line's `response.request_id`; derived from the batch and line.
    pub request_id: String,
    /// The pacing lane (the primary target's provider; empty when the model does not route).
    pub provider: String,
    pub body: Vec<u8>,
}

/// A line a worker holds under lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub batch_id: String,
    pub line_no: i64,
    /// The fencing token: every write of this line must carry it.
    pub token: i64,
    pub request_id: String,
    pub custom_id: String,
    pub body: Vec<u8>,
    pub provider: String,
    /// Failed tries so far (the retry budget; 429s are not counted).
    pub failures: i64,
    /// True when the line was taken over from an expired lease: it may have reached the upstream already.
    pub redispatch: bool,
}

/// A line's final result, committed with its ledger row.
#[derive(Debug, Clone)]
pub struct LineResult {
    /// True for the output file, false for the error file.
    pub ok: bool,
    /// The exact JSONL line, `\n` included.
    pub line: Vec<u8>,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    /// The ledger row of the line (none when the line never reached the chat service); its
    /// `record_id` must be derived from the line ([`line_record_id`]) so a replay dedupes.
    pub ledger: Option<LedgerRecord>,
}

/// The ledger record id of a batch line: deterministic (unlike a live request's random one), so a
/// line run twice after a crash is billed once.
pub fn line_record_id(request_id: &str) -> String {
    format!("{}{request_id}", crate::stores::ledger::RECORD_ID_PREFIX)
}

/// How far a batch has come, for filtering lists (the job states of `services::jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `validating`, or `in_progress` with no line started yet.
    Waiting,
    /// `in_progress` with a line started (or retried), `finalizing`, `cancelling`.
    Running,
    /// `completed` with no failed line.
    Succeeded,
    /// `failed` (validation), `cancelled`, `expired`, or `completed` with a failed line.
    Failed,
}

/// A line has started: claimed at least once (a retry waiting in the queue counts as started).
macro_rules! line_started {
    () => {
        "EXISTS (SELECT 1 FROM batch_items s WHERE s.batch_id = batches.id AND (s.state <> 'queued' OR s.attempts > 0))"
    };
}

impl Progress {
    fn sql(self) -> &'static str {
        match self {
            Progress::Waiting => {
                concat!("(status = 'validating' OR (status = 'in_progress' AND NOT ", line_started!(), "))")
            }
            Progress::Running => {
                concat!(
                    "(status IN ('finalizing', 'cancelling') OR (status = 'in_progress' AND ",
                    line_started!(),
                    "))"
                )
            }
            Progress::Succeeded => "(status = 'completed' AND failed = 0)",
            Progress::Failed => {
                "(status IN ('failed', 'cancelled', 'expired') OR (status = 'completed' AND failed > 0))"
            }
        }
    }
}

/// What [`BatchStore::list_batches_where`] narrows a list to.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchFilter<'a> {
    /// Only batches whose metadata sets this key to this string value.
    pub metadata: Option<(&'a str, &'a str)>,
    /// Only batches this far.
    pub progress: Option<Progress>,
}

/// A batch's first line as a job reads it ([`BatchStore::first_lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineView {
    pub batch_id: String,
    pub line_no: i64,
    /// Claimed at least once.
    pub started: bool,
    /// Its result is written.
    pub done: bool,
    /// `Some(true)` for an output-file line, `Some(false)` for an error-file line.
    pub result_ok: Option<bool>,
    /// The output or error file line (OpenAI's `BatchRequestOutput`), when asked for and written.
    pub result_line: Option<Vec<u8>>,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub finished_at_ms: Option<i64>,
    /// The line's ledger row's cost, when it has one.
    pub cost_nano_usd: Option<i64>,
}

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A `LIKE` pattern (escape `!`) matching `"key":"value"` in stored metadata: metadata is stored
/// as serde_json writes it (no spaces), and a quote inside a value is escaped, so the pair cannot be
/// forged from inside another value.
fn metadata_pattern(key: &str, value: &str) -> String {
    let pair = format!("{}:{}", serde_json::Value::from(key), serde_json::Value::from(value));
    let mut out = String::from("%");
    for c in pair.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Live per-batch line counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub pending: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
}

/// Lines by queue state across every batch (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauge {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// The batch store. Cheap to share behind `Arc`.
pub struct BatchStore {
    db: Db,
    files_dir: PathBuf,
}

impl std::fmt::Debug for BatchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStore").field("postgres", &self.db.is_postgres()).finish()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where an upload is being written.
pub struct FileWriter {
    store: Arc<BatchStore>,
    id: String,
    bytes: u64,
    sink: Sink,
}

enum Sink {
    Disk { file: tokio::fs::File, path: PathBuf },
    Chunks { buf: BytesMut, seq: i64 },
}

impl FileWriter {
    /// Appends bytes. Memory stays bounded: at most one chunk is buffered.
    ///
    /// # Errors
    /// The disk or the database failed.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.bytes += data.len() as u64;
        match &mut self.sink {
            Sink::Disk { file, .. } => file.write_all(data).await.map_err(|e| StoreError::Unavailable(e.to_string())),
            Sink::Chunks { buf, seq } => {
                buf.extend_from_slice(data);
                while buf.len() >= CHUNK_BYTES {
                    let chunk = buf.split_to(CHUNK_BYTES);
                    self.store.insert_chunk(&self.id, *seq, chunk.to_vec()).await?;
                    *seq += 1;
                }
                Ok(())
            }
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Flushes and makes the content durable; the file row is inserted after this.
    ///
    /// # Errors
    /// The disk or the database failed.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        match &mut self.sink {
            Sink::Disk { file, .. } => {
                file.flush().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                file.sync_all().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            Sink::Chunks { buf, seq } => {
                if !buf.is_empty() {
                    let rest = std::mem::take(buf);
                    self.store.insert_chunk(&self.id, *seq, rest.to_vec()).await?;
                }
            }
        }
        Ok(self.bytes)
    }

    /// Discards what was written (a refused or broken upload).
    pub async fn abort(self) {
        match self.sink {
            Sink::Disk { file, path } => {
                drop(file);
                let _ = tokio::fs::remove_file(path).await;
            }
            Sink::Chunks { .. } => {
                let _ =
                    self.store.db.execute("DELETE FROM file_chunks WHERE file_id = $1", vec![Val::t(&self.id)]).await;
            }
        }
    }
}

/// Streams a file's content in bounded pieces.
pub struct ContentReader {
    store: Arc<BatchStore>,
    row: FileRow,
    state: ReadState,
}

enum ReadState {
    Disk(tokio::fs::File),
    Chunk(i64),
    Lines(i64),
    Done,
}

impl ContentReader {
    /// The next piece, or `None` at the end.
    ///
    /// # Errors
    /// The disk or the database failed (the response is then cut short).
    pub async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        match &mut self.state {
            ReadState::Done => Ok(None),
            ReadState::Disk(file) => {
                let mut buf = vec![0u8; 256 * 1024];
                let n = file.read(&mut buf).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                if n == 0 {
                    self.state = ReadState::Done;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(Bytes::from(buf)))
            }
            ReadState::Chunk(seq) => {
                let row = self
                    .store
                    .db
                    .query_opt(
                        "SELECT data FROM file_chunks WHERE file_id = $1 AND seq = $2",
                        vec![Val::t(&self.row.id), Val::I(*seq)],
                    )
                    .await?;
                match row {
                    Some(r) => {
                        *seq += 1;
                        Ok(Some(Bytes::from(r.b(0))))
                    }
                    None => {
                        self.state = ReadState::Done;
                        Ok(None)
                    }
                }
            }
            ReadState::Lines(after) => {
                let kind = if self.row.kind == FileKind::BatchOutput { "o" } else { "e" };
                let rows = self
                    .store
                    .db
                    .query(
                        "SELECT line_no, result_line FROM batch_items WHERE batch_id = $1 AND result_kind = $2 \
                         AND line_no > $3 ORDER BY line_no LIMIT $4",
                        vec![
                            Val::ot(self.row.batch_id.as_deref()),
                            Val::t(kind),
                            Val::I(*after),
                            Val::I(LINES_PER_PAGE),
                        ],
                    )
                    .await?;
                if rows.is_empty() {
                    self.state = ReadState::Done;
                    return Ok(None);
                }
                let mut out = Vec::new();
                for r in &rows {
                    *after = r.i(0);
                    out.extend_from_slice(&r.b(1));
                }
                Ok(Some(Bytes::from(out)))
            }
        }
    }
}

impl BatchStore {
    /// Opens the store next to the ledger: Postgres when `database_url` is set (migrated on first
    /// use, after the ledger's own migration), else `data_dir/ledger.sqlite3` (migrated now).
    ///
    /// # Errors
    /// A URL that does not parse, or a SQLite file that cannot be opened or migrated.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        let db = Db::open(database_url, data_dir).await?;
        let files_dir = data_dir.join("files");
        if !db.is_postgres() {
            std::fs::create_dir_all(&files_dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        if let Some(p) = db.sqlite_path() {
            tracing::debug!(file = %p.display(), "batch store on the embedded ledger file");
        }
        Ok(Self { db, files_dir })
    }

    /// True when replicas share the store (Postgres).
    pub fn is_shared(&self) -> bool {
        self.db.is_postgres()
    }

    // ---------------------------------------------------------------- files

    /// Starts writing an upload's content.
    ///
    /// # Errors
    /// The file cannot be created.
    pub async fn writer(self: &Arc<Self>, id: &str) -> Result<FileWriter, StoreError> {
        let sink = if self.db.is_postgres() {
            Sink::Chunks { buf: BytesMut::with_capacity(CHUNK_BYTES), seq: 0 }
        } else {
            let path = self.files_dir.join(id);
            let file = tokio::fs::File::create(&path).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Sink::Disk { file, path }
        };
        Ok(FileWriter { store: Arc::clone(self), id: id.to_owned(), bytes: 0, sink })
    }

    async fn insert_chunk(&self, id: &str, seq: i64, data: Vec<u8>) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)",
                vec![Val::t(id), Val::I(seq), Val::B(data)],
            )
            .await
            .map(|_| ())
    }

    /// Records a file's metadata (after its content is durable).
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert_file(&self, f: &FileRow) -> Result<(), StoreError> {
        self.db
            .execute_durable(
                &format!("INSERT INTO files ({FILE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                file_params(f),
            )
            .await
            .map(|_| ())
    }

    /// A live file (not deleted, not expired) of `tenant`, or of any tenant when `None`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn file(&self, tenant: Option<&str>, id: &str, now_ms: i64) -> Result<Option<FileRow>, StoreError> {
        let mut params = vec![Val::t(id), Val::I(now_ms)];
        let mut sql = format!(
            "SELECT {FILE_COLS} FROM files WHERE id = $1 AND deleted_at_ms IS NULL \
             AND (expires_at_ms IS NULL OR expires_at_ms > $2)"
        );
        if let Some(t) = tenant {
            params.push(Val::t(t));
            sql.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        Ok(self.db.query_opt(&sql, params).await?.map(|r| file_row(&r)))
    }

    /// A page of `tenant`'s files (every tenant's when `None`) by `created_at` (then id), after the
    /// cursor file `after`; one more row than `limit` is read to tell whether there are more. One query
    /// (`files_list_idx`, or `files_created_idx` without a tenant).
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_files(
        &self,
        tenant: Option<&str>,
        purpose: Option<&str>,
        after: Option<&FileRow>,
        limit: i64,
        ascending: bool,
        now_ms: i64,
    ) -> Result<(Vec<FileRow>, bool), StoreError> {
        let (cmp, order) = if ascending { (">", "ASC") } else { ("<", "DESC") };
        let mut sql = format!(
            "SELECT {FILE_COLS} FROM files WHERE deleted_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > $1)"
        );
        let mut params = vec![Val::I(now_ms)];
        if let Some(t) = tenant {
            params.push(Val::t(t));
            sql.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        if let Some(p) = purpose {
            params.push(Val::t(p));
            sql.push_str(&format!(" AND purpose = ${}", params.len()));
        }
        if let Some(a) = after {
            params.push(Val::I(a.created_at_ms));
            let c = params.len();
            params.push(Val::t(&a.id));
            let i = params.len();
            sql.push_str(&format!(" AND (created_at_ms {cmp} ${c} OR (created_at_ms = ${c} AND id {cmp} ${i}))"));
        }
        params.push(Val::I(limit + 1));
        sql.push_str(&format!(" ORDER BY created_at_ms {order}, id {order} LIMIT ${}", params.len()));
        let mut rows: Vec<FileRow> = self.db.query(&sql, params).await?.iter().map(file_row).collect();
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// Deletes a tenant's file: the row is marked and an upload's content removed. False when there is
    /// no such live file.
    ///
    /// # Errors
    /// The database failed.
    pub async fn delete_file(&self, tenant: &str, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let Some(row) = self.file(Some(tenant), id, now_ms).await? else { return Ok(false) };
        let n = self
            .db
            .execute(
                "UPDATE files SET deleted_at_ms = $1 WHERE tenant = $2 AND id = $3 AND deleted_at_ms IS NULL",
                vec![Val::I(now_ms), Val::t(tenant), Val::t(id)],
            )
            .await?;
        if n == 1 && row.kind == FileKind::Blob {
            // Input files of unfinished batches keep their bytes until validation read them: a batch's
            // items hold their own copy of each line, so only `validating` batches still need the file.
            let busy = self
                .db
                .query_opt("SELECT 1 FROM batches WHERE input_file_id = $1 AND status = 'validating'", vec![Val::t(id)])
                .await?
                .is_some();
            if !busy {
                self.remove_content(id).await?;
            }
        }
        Ok(n == 1)
    }

    async fn remove_content(&self, id: &str) -> Result<(), StoreError> {
        if self.db.is_postgres() {
            self.db.execute("DELETE FROM file_chunks WHERE file_id = $1", vec![Val::t(id)]).await?;
        } else {
            let _ = tokio::fs::remove_file(self.files_dir.join(id)).await;
        }
        Ok(())
    }

    /// Opens a file's content for streaming.
    ///
    /// # Errors
    /// The content is missing or cannot be opened.
    pub async fn content(self: &Arc<Self>, row: FileRow) -> Result<ContentReader, StoreError> {
        let state = match (row.kind, self.db.is_postgres()) {
            (FileKind::Blob, false) => ReadState::Disk(
                tokio::fs::File::open(self.files_dir.join(&row.id))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            ),
            (FileKind::Blob, true) => ReadState::Chunk(0),
            (FileKind::BatchOutput | FileKind::BatchError, _) => ReadState::Lines(-1),
        };
        Ok(ContentReader { store: Arc::clone(self), row, state })
    }

    // ---------------------------------------------------------------- batches (API)

    /// Inserts a new batch; with an idempotency key already used by this tenant, returns that batch
    /// instead (and `false`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert_batch(&self, b: &BatchRow) -> Result<(BatchRow, bool), StoreError> {
        if let Some(key) = &b.idempotency_key {
            if let Some(existing) = self.batch_by_key(&b.tenant, key).await? {
                return Ok((existing, false));
            }
        }
        let sql = format!(
            "INSERT INTO batches (id, tenant, key_id, caller_limits, endpoint, input_file_id, completion_window, \
             status, metadata, output_expires_after_s, created_at_ms, expires_at_ms, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        );
        let n = self
            .db
            .execute_durable(
                &sql,
                vec![
                    Val::t(&b.id),
                    Val::t(&b.tenant),
                    Val::ot(b.key_id.as_deref()),
                    Val::t(&b.caller_limits),
                    Val::t(&b.endpoint),
                    Val::t(&b.input_file_id),
                    Val::t(&b.completion_window),
                    Val::t(&b.status),
                    Val::ot(b.metadata.as_deref()),
                    Val::oi(b.output_expires_after_s),
                    Val::I(b.created_at_ms),
                    Val::I(b.expires_at_ms),
                    Val::ot(b.idempotency_key.as_deref()),
                ],
            )
            .await?;
        if n == 0 {
            // Lost a race on the idempotency key: the winner's batch is the answer.
            if let Some(key) = &b.idempotency_key {
                if let Some(existing) = self.batch_by_key(&b.tenant, key).await? {
                    return Ok((existing, false));
                }
            }
        }
        let row = self.batch_any(&b.id).await?.ok_or_else(|| StoreError::Unavailable("batch vanished".into()))?;
        Ok((row, true))
    }

    async fn batch_by_key(&self, tenant: &str, key: &str) -> Result<Option<BatchRow>, StoreError> {
        Ok(self
            .db
            .query_opt(
                &format!("SELECT {BATCH_COLS} FROM batches WHERE tenant = $1 AND idempotency_key = $2"),
                vec![Val::t(tenant), Val::t(key)],
            )
            .await?
            .map(|r| batch_row(&r)))
    }

    /// A batch by id, whoever owns it (the worker's view).
    ///
    /// # Errors
    /// The database failed.
    pub async fn batch_any(&self, id: &str) -> Result<Option<BatchRow>, StoreError> {
        Ok(self
            .db
            .query_opt(&format!("SELECT {BATCH_COLS} FROM batches WHERE id = $1"), vec![Val::t(id)])
            .await?
            .map(|r| batch_row(&r)))
    }

    /// A batch of `tenant` (of any tenant when `None`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn batch(&self, tenant: Option<&str>, id: &str) -> Result<Option<BatchRow>, StoreError> {
        let Some(tenant) = tenant else { return self.batch_any(id).await };
        Ok(self
            .db
            .query_opt(
                &format!("SELECT {BATCH_COLS} FROM batches WHERE tenant = $1 AND id = $2"),
                vec![Val::t(tenant), Val::t(id)],
            )
            .await?
            .map(|r| batch_row(&r)))
    }

    /// A page of `tenant`'s batches (every tenant's when `None`), newest first, after the cursor batch.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_batches(
        &self,
        tenant: Option<&str>,
        after: Option<&BatchRow>,
        limit: i64,
    ) -> Result<(Vec<BatchRow>, bool), StoreError> {
        self.list_batches_where(tenant, after, limit, &BatchFilter::default()).await
    }

    /// Moves a `validating` or `in_progress` batch of `tenant` (of any tenant when `None`) to
    /// `cancelling`. False when it is in another status (or not the tenant's).
    ///
    /// # Errors
    /// The database failed.
    pub async fn request_cancel(&self, tenant: Option<&str>, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut sql = String::from(
            "UPDATE batches SET status = 'cancelling', cancelling_at_ms = $1 \
             WHERE id = $2 AND status IN ('validating', 'in_progress')",
        );
        let mut params = vec![Val::I(now_ms), Val::t(id)];
        if let Some(t) = tenant {
            params.push(Val::t(t));
            sql.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        let n = self.db.execute_durable(&sql, params).await?;
        Ok(n == 1)
    }

    /// Live line counts and usage of a batch.
    ///
    /// # Errors
    /// The database failed.
    pub async fn counts(&self, batch_id: &str) -> Result<Counts, StoreError> {
        let r = self
            .db
            .query_opt(
                "SELECT COUNT(*), \
                 CAST(COALESCE(SUM(CASE WHEN result_kind = 'o' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN result_kind = 'e' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN state <> 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
                 FROM batch_items WHERE batch_id = $1",
                vec![Val::t(batch_id)],
            )
            .await?;
        // Postgres sums are NUMERIC: cast in Rust-readable form.
        Ok(r.map(|r| Counts {
            total: num(&r, 0),
            succeeded: num(&r, 1),
            failed: num(&r, 2),
            pending: num(&r, 3),
            input_tokens: num(&r, 4),
            cached_tokens: num(&r, 5),
            output_tokens: num(&r, 6),
        })
        .unwrap_or_default())
    }

    /// Live line counts of several batches in one query (lists: no query per batch). A batch with no
    /// lines yet is absent from the map.
    ///
    /// # Errors
    /// The database failed.
    pub async fn counts_many(
        &self,
        batch_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Counts>, StoreError> {
        if batch_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let sql = format!(
            "SELECT batch_id, COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN result_kind = 'o' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN result_kind = 'e' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN state <> 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
             FROM batch_items WHERE batch_id IN ({}) GROUP BY batch_id",
            placeholders(1, batch_ids.len())
        );
        let rows = self.db.query(&sql, batch_ids.iter().map(Val::t).collect()).await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.t(0),
                    Counts {
                        total: num(r, 1),
                        succeeded: num(r, 2),
                        failed: num(r, 3),
                        pending: num(r, 4),
                        input_tokens: num(r, 5),
                        cached_tokens: num(r, 6),
                        output_tokens: num(r, 7),
                    },
                )
            })
            .collect())
    }

    /// A page of `tenant`'s batches (every tenant's when `None`), newest first, after the cursor
    /// batch, narrowed by `filter`; one query (the progress test reads `batch_items` in a subquery),
    /// ordered along `batches_list_idx`, or `batches_created_idx` without a tenant.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_batches_where(
        &self,
        tenant: Option<&str>,
        after: Option<&BatchRow>,
        limit: i64,
        filter: &BatchFilter<'_>,
    ) -> Result<(Vec<BatchRow>, bool), StoreError> {
        let mut sql = format!("SELECT {BATCH_COLS} FROM batches WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(t) = tenant {
            params.push(Val::t(t));
            sql.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        if let Some(a) = after {
            params.push(Val::I(a.created_at_ms));
            let c = params.len();
            params.push(Val::t(&a.id));
            let i = params.len();
            sql.push_str(&format!(" AND (created_at_ms < ${c} OR (created_at_ms = ${c} AND id < ${i}))"));
        }
        if let Some((key, value)) = filter.metadata {
            params.push(Val::t(metadata_pattern(key, value)));
            sql.push_str(&format!(" AND metadata LIKE ${} ESCAPE '!'", params.len()));
        }
        if let Some(p) = filter.progress {
            sql.push_str(" AND ");
            sql.push_str(p.sql());
        }
        params.push(Val::I(limit + 1));
        sql.push_str(&format!(" ORDER BY created_at_ms DESC, id DESC LIMIT ${}", params.len()));
        let mut rows: Vec<BatchRow> = self.db.query(&sql, params).await?.iter().map(batch_row).collect();
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok((rows, more))
    }

    /// The first input line of each of `batch_ids` (a job is a one-line batch), with its result when
    /// `with_result` and its ledger cost: one query for a whole list.
    ///
    /// # Errors
    /// The database failed.
    pub async fn first_lines(&self, batch_ids: &[String], with_result: bool) -> Result<Vec<LineView>, StoreError> {
        if batch_ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = if with_result { "i.result_line" } else { "NULL" };
        let sql = format!(
            "SELECT i.batch_id, i.line_no, i.state, i.attempts, i.result_kind, {result}, i.prompt_tokens, \
             i.cached_tokens, i.completion_tokens, i.finished_at_ms, l.cost_nano_usd \
             FROM batch_items i LEFT JOIN ledger_records l ON l.record_id = CAST($1 AS TEXT) || i.request_id \
             WHERE i.batch_id IN ({}) \
             AND i.line_no = (SELECT MIN(m.line_no) FROM batch_items m WHERE m.batch_id = i.batch_id)",
            placeholders(2, batch_ids.len())
        );
        let mut params = vec![Val::t(crate::stores::ledger::RECORD_ID_PREFIX)];
        params.extend(batch_ids.iter().map(Val::t));
        let rows = self.db.query(&sql, params).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let state = r.t(2);
                let started = state != "queued" || num(r, 3) > 0;
                let line = r.b(5);
                LineView {
                    batch_id: r.t(0),
                    line_no: num(r, 1),
                    result_ok: r.ot(4).map(|k| k == "o"),
                    result_line: (!line.is_empty()).then_some(line),
                    done: state == "done",
                    started,
                    prompt_tokens: num(r, 6),
                    cached_tokens: num(r, 7),
                    completion_tokens: num(r, 8),
                    finished_at_ms: r.oi(9),
                    cost_nano_usd: r.oi(10),
                }
            })
            .collect())
    }

    /// Lines by state across all batches, for `/metrics`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_gauge(&self) -> Result<QueueGauge, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT state, COALESCE(result_kind, ''), COUNT(*) FROM batch_items i JOIN batches b ON b.id = i.batch_id \
                 WHERE b.status IN ('validating', 'in_progress', 'cancelling', 'finalizing') GROUP BY state, result_kind",
                vec![],
            )
            .await?;
        let mut g = QueueGauge::default();
        for r in rows {
            let n = num(&r, 2);
            match (r.t(0).as_str(), r.t(1).as_str()) {
                ("queued", _) => g.queued += n,
                ("running", _) => g.running += n,
                (_, "o") => g.succeeded += n,
                _ => g.failed += n,
            }
        }
        Ok(g)
    }

    /// Batches by status (for `/metrics`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self.db.query("SELECT status, COUNT(*) FROM batches GROUP BY status", vec![]).await?;
        Ok(rows.iter().map(|r| (r.t(0), num(r, 1))).collect())
    }

    // ---------------------------------------------------------------- batch steps (worker)

    /// Batches that may need a step: validating, cancelling, or in progress.
    ///
    /// # Errors
    /// The database failed.
    pub async fn active_batches(&self, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id, status FROM batches WHERE status IN ('validating', 'in_progress', 'cancelling', 'finalizing') \
                 AND (step_until_ms IS NULL OR step_until_ms < {now}) ORDER BY created_at_ms LIMIT $1",
                vec![Val::I(limit)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.t(0), r.t(1))).collect())
    }

    /// Takes the step lease of a batch; returns its fencing token.
    ///
    /// # Errors
    /// The database failed.
    pub async fn take_step(&self, id: &str, owner: &str, lease_ms: i64) -> Result<Option<i64>, StoreError> {
        let row = self
            .db
            .query_opt(
                "UPDATE batches SET step_owner = $1, step_token = step_token + 1, step_until_ms = {now} + $2 \
                 WHERE id = $3 AND (step_until_ms IS NULL OR step_until_ms < {now}) RETURNING step_token",
                vec![Val::t(owner), Val::I(lease_ms), Val::t(id)],
            )
            .await?;
        Ok(row.map(|r| r.i(0)))
    }

    /// Gives the step lease back early (the step is done).
    ///
    /// # Errors
    /// The database failed.
    pub async fn release_step(&self, id: &str, token: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE batches SET step_until_ms = NULL WHERE id = $1 AND step_token = $2",
                vec![Val::t(id), Val::I(token)],
            )
            .await
            .map(|_| ())
    }

    /// Queues validated lines (idempotent: a retried validation skips lines already queued).
    ///
    /// # Errors
    /// The database failed.
    pub async fn insert_items(&self, batch_id: &str, items: &[NewItem]) -> Result<(), StoreError> {
        let stmts = items
            .iter()
            .map(|it| {
                Stmt::new(
                    "INSERT INTO batch_items (batch_id, line_no, custom_id, request_id, provider, body, state) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued') ON CONFLICT DO NOTHING",
                    vec![
                        Val::t(batch_id),
                        Val::I(it.line_no),
                        Val::t(&it.custom_id),
                        Val::t(&it.request_id),
                        Val::t(&it.provider),
                        Val::B(it.body.clone()),
                    ],
                )
            })
            .collect();
        self.db.script(stmts).await.map(|_| ())
    }

    /// `validating` → `in_progress` (fenced by the step token). False if the batch left `validating`
    /// meanwhile (cancelled).
    ///
    /// # Errors
    /// The database failed.
    pub async fn start(
        &self,
        id: &str,
        token: i64,
        total: i64,
        model: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .db
            .execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at_ms = $1, total = $2, model = $3 \
                 WHERE id = $4 AND step_token = $5 AND status = 'validating'",
                vec![Val::I(now_ms), Val::I(total), Val::ot(model), Val::t(id), Val::I(token)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records the total of a batch that was cancelled while validating (its items are queued and
    /// will be drained as cancelled).
    ///
    /// # Errors
    /// The database failed.
    pub async fn set_total(&self, id: &str, token: i64, total: i64, model: Option<&str>) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE batches SET total = $1, model = $2 WHERE id = $3 AND step_token = $4",
                vec![Val::I(total), Val::ot(model), Val::t(id), Val::I(token)],
            )
            .await
            .map(|_| ())
    }

    /// `validating` → `failed` with `errors` (JSON list), fenced by the step token.
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail(&self, id: &str, token: i64, errors_json: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .db
            .execute(
                "UPDATE batches SET status = 'failed', failed_at_ms = $1, errors = $2 \
                 WHERE id = $3 AND step_token = $4 AND status IN ('validating', 'cancelling')",
                vec![Val::I(now_ms), Val::t(errors_json), Val::t(id), Val::I(token)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a batch past its window: no line is claimed any more, unrun lines become `batch_expired`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn mark_expiring(&self, id: &str) -> Result<(), StoreError> {
        self.db.execute("UPDATE batches SET expire_pending = 1 WHERE id = $1", vec![Val::t(id)]).await.map(|_| ())
    }

    /// Lines not yet run (queued, or running under an expired lease) of a batch, up to `limit`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn unrun(&self, batch_id: &str, limit: i64) -> Result<Vec<(i64, String, i64, String)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT line_no, custom_id, lease_token, request_id FROM batch_items WHERE batch_id = $1 \
                 AND (state = 'queued' OR (state = 'running' AND lease_until_ms < {now})) ORDER BY line_no LIMIT $2",
                vec![Val::t(batch_id), Val::I(limit)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.i(0), r.t(1), r.i(2), r.t(3))).collect())
    }

    /// Closes unrun lines with their error lines (`batch_cancelled` / `batch_expired`), each fenced on
    /// the token read, so a line claimed meanwhile is left to its worker.
    ///
    /// # Errors
    /// The database failed.
    pub async fn close_unrun(&self, batch_id: &str, lines: Vec<(i64, i64, Vec<u8>)>) -> Result<(), StoreError> {
        let stmts = lines
            .into_iter()
            .map(|(line_no, token, line)| {
                Stmt::new(
                    "UPDATE batch_items SET state = 'done', result_kind = 'e', result_line = $1, finished_at_ms = {now}, \
                     lease_owner = NULL WHERE batch_id = $2 AND line_no = $3 AND lease_token = $4 AND state <> 'done'",
                    vec![Val::B(line), Val::t(batch_id), Val::I(line_no), Val::I(token)],
                )
            })
            .collect();
        self.db.script(stmts).await.map(|_| ())
    }

    /// Finalizes a batch whose lines are all done: freezes counts and usage, creates the output and
    /// error file rows (virtual), and moves it to `status` (`completed`, `cancelled` or `expired`).
    /// Fenced by the step token and a status check, in one transaction.
    ///
    /// # Errors
    /// The database failed.
    pub async fn finalize(&self, b: &BatchRow, token: i64, status: &str, now_ms: i64) -> Result<bool, StoreError> {
        let c = self.counts(&b.id).await?;
        if c.pending > 0 {
            return Ok(false);
        }
        let sizes = self
            .db
            .query(
                "SELECT result_kind, COUNT(*), CAST(COALESCE(SUM(LENGTH(result_line)), 0) AS BIGINT) FROM batch_items \
                 WHERE batch_id = $1 GROUP BY result_kind",
                vec![Val::t(&b.id)],
            )
            .await?;
        let size = |k: &str| sizes.iter().find(|r| r.t(0) == k).map(|r| num(r, 2));
        let expires = b.output_expires_after_s.map(|s| now_ms + s * 1000).unwrap_or(now_ms + 30 * 86_400_000);
        let mut stmts = Vec::new();
        let mut out_id = None;
        let mut err_id = None;
        for (kind, fk, slot) in [("o", FileKind::BatchOutput, &mut out_id), ("e", FileKind::BatchError, &mut err_id)] {
            let Some(bytes) = size(kind) else { continue };
            let id = format!("file-{}", &b.id["batch_".len().min(b.id.len())..]) + if kind == "o" { "o" } else { "e" };
            let f = FileRow {
                id: id.clone(),
                tenant: b.tenant.clone(),
                purpose: "batch_output".into(),
                filename: format!("{}_{}.jsonl", b.id, if kind == "o" { "output" } else { "error" }),
                bytes,
                kind: fk,
                batch_id: Some(b.id.clone()),
                created_at_ms: now_ms,
                expires_at_ms: Some(expires),
            };
            stmts.push(Stmt::new(
                format!("INSERT INTO files ({FILE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"),
                file_params(&f),
            ));
            *slot = Some(id);
        }
        let at_col = match status {
            "cancelled" => "cancelled_at_ms",
            "expired" => "expired_at_ms",
            _ => "completed_at_ms",
        };
        stmts.insert(
            0,
            Stmt::new(
                format!(
                    "UPDATE batches SET status = '{status}', finalizing_at_ms = COALESCE(finalizing_at_ms, $1), {at_col} = $1, \
                     output_file_id = $2, error_file_id = $3, total = $4, completed = $5, failed = $6, input_tokens = $7, \
                     cached_tokens = $8, output_tokens = $9, step_until_ms = NULL \
                     WHERE id = $10 AND step_token = $11 AND status IN ('in_progress', 'cancelling', 'finalizing')"
                ),
                vec![
                    Val::I(now_ms),
                    Val::ot(out_id.as_deref()),
                    Val::ot(err_id.as_deref()),
                    Val::I(c.total.max(b.total)),
                    Val::I(c.succeeded),
                    Val::I(c.failed),
                    Val::I(c.input_tokens),
                    Val::I(c.cached_tokens),
                    Val::I(c.output_tokens),
                    Val::t(&b.id),
                    Val::I(token),
                ],
            )
            .require(1),
        );
        self.db.script(stmts).await
    }

    /// Marks a batch `finalizing` (its files are being assembled), fenced by the step token.
    ///
    /// # Errors
    /// The database failed.
    pub async fn mark_finalizing(&self, id: &str, token: i64, now_ms: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE batches SET finalizing_at_ms = COALESCE(finalizing_at_ms, $1) WHERE id = $2 AND step_token = $3",
                vec![Val::I(now_ms), Val::t(id), Val::I(token)],
            )
            .await
            .map(|_| ())
    }

    /// Reads the whole input of a blob file (validation), up to `limit` bytes.
    ///
    /// # Errors
    /// The content is missing or larger than `limit`.
    pub async fn read_all(self: &Arc<Self>, row: FileRow, limit: u64) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.content(row).await?;
        let mut out = Vec::new();
        while let Some(chunk) = reader.next().await? {
            out.extend_from_slice(&chunk);
            if out.len() as u64 > limit {
                return Err(StoreError::Unavailable("input file larger than the batch limit".into()));
            }
        }
        Ok(out)
    }

    /// A file row by id, whoever owns it, deleted or not (the worker reads a batch's input).
    ///
    /// # Errors
    /// The database failed.
    pub async fn file_any(&self, id: &str) -> Result<Option<FileRow>, StoreError> {
        Ok(self
            .db
            .query_opt(&format!("SELECT {FILE_COLS} FROM files WHERE id = $1"), vec![Val::t(id)])
            .await?
            .map(|r| file_row(&r)))
    }

    // ---------------------------------------------------------------- the queue (worker)

    /// Claims up to `n` runnable lines of `provider`'s lane for `owner`: queued lines that are due, and
    /// running lines whose lease expired (taken over: the previous holder may have died mid-call).
    /// Oldest batch first, then line order.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim(&self, provider: &str, n: i64, owner: &str, lease_ms: i64) -> Result<Vec<Claimed>, StoreError> {
        if n <= 0 {
            return Ok(Vec::new());
        }
        let pick = "SELECT i.batch_id, i.line_no FROM batch_items i JOIN batches b ON b.id = i.batch_id \
             WHERE b.status = 'in_progress' AND b.expire_pending = 0 AND b.expires_at_ms > {now} AND i.provider = $1 \
             AND ((i.state = 'queued' AND i.not_before_ms <= {now}) OR (i.state = 'running' AND i.lease_until_ms < {now})) \
             ORDER BY b.created_at_ms, i.batch_id, i.line_no LIMIT $2";
        let set = "state = 'running', lease_owner = $3, lease_token = lease_token + 1, lease_until_ms = {now} + $4, \
                   attempts = attempts + 1";
        let returning = "RETURNING batch_id, line_no, lease_token, request_id, custom_id, body, provider, failures, attempts, requeues";
        let sql = if self.db.is_postgres() {
            format!(
                "WITH picked AS ({pick} FOR UPDATE OF i SKIP LOCKED) UPDATE batch_items SET {set} FROM picked \
                 WHERE batch_items.batch_id = picked.batch_id AND batch_items.line_no = picked.line_no {returning}"
            )
        } else {
            format!(
                "UPDATE batch_items SET {set} WHERE rowid IN (SELECT i.rowid FROM batch_items i JOIN batches b ON b.id = i.batch_id \
                 WHERE b.status = 'in_progress' AND b.expire_pending = 0 AND b.expires_at_ms > {{now}} AND i.provider = $1 \
                 AND ((i.state = 'queued' AND i.not_before_ms <= {{now}}) OR (i.state = 'running' AND i.lease_until_ms < {{now}})) \
                 ORDER BY b.created_at_ms, i.batch_id, i.line_no LIMIT $2) {returning}"
            )
        };
        // Postgres: `SET` columns of the target table may not be qualified, but the `RETURNING` ones must
        // not be ambiguous with the CTE's: qualify them.
        let sql = if self.db.is_postgres() {
            sql.replace(
                "RETURNING batch_id, line_no, lease_token, request_id, custom_id, body, provider, failures, attempts, requeues",
                "RETURNING batch_items.batch_id, batch_items.line_no, batch_items.lease_token, batch_items.request_id, \
                 batch_items.custom_id, batch_items.body, batch_items.provider, batch_items.failures, batch_items.attempts, \
                 batch_items.requeues",
            )
            .replace("lease_token = lease_token + 1", "lease_token = batch_items.lease_token + 1")
            .replace("attempts = attempts + 1", "attempts = batch_items.attempts + 1")
        } else {
            sql
        };
        let rows = self.db.query(&sql, vec![Val::t(provider), Val::I(n), Val::t(owner), Val::I(lease_ms)]).await?;
        Ok(rows
            .iter()
            .map(|r| Claimed {
                batch_id: r.t(0),
                line_no: r.i(1),
                token: r.i(2),
                request_id: r.t(3),
                custom_id: r.t(4),
                body: r.b(5),
                provider: r.t(6),
                failures: r.i(7),
                // Every claim but the first of each queued period follows a lease that ran out.
                redispatch: r.i(8) > r.i(9) + 1,
            })
            .collect())
    }

    /// Extends a held lease. False when the lease was lost (the line belongs to someone else now).
    ///
    /// # Errors
    /// The database failed.
    pub async fn heartbeat(&self, c: &Claimed, lease_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .db
            .execute(
                "UPDATE batch_items SET lease_until_ms = {now} + $1 WHERE batch_id = $2 AND line_no = $3 \
                 AND lease_token = $4 AND state = 'running'",
                vec![Val::I(lease_ms), Val::t(&c.batch_id), Val::I(c.line_no), Val::I(c.token)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Puts a held line back in the queue, due after `delay_ms`; `failed` spends one try of its retry
    /// budget (429s do not). False when the lease was lost.
    ///
    /// # Errors
    /// The database failed.
    pub async fn requeue(&self, c: &Claimed, delay_ms: i64, failed: bool) -> Result<bool, StoreError> {
        let n = self
            .db
            .execute(
                "UPDATE batch_items SET state = 'queued', not_before_ms = {now} + $1, failures = failures + $2, \
                 requeues = requeues + 1, lease_owner = NULL WHERE batch_id = $3 AND line_no = $4 AND lease_token = $5 \
                 AND state = 'running'",
                vec![
                    Val::I(delay_ms),
                    Val::I(i64::from(failed)),
                    Val::t(&c.batch_id),
                    Val::I(c.line_no),
                    Val::I(c.token),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Commits a held line's result and its ledger row in one transaction, fenced by the lease token.
    /// False (nothing written) when the lease was lost: another replica owns the line now. The ledger
    /// insert is idempotent on the line's request id, so even a replayed commit bills once.
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete(&self, c: &Claimed, r: &LineResult) -> Result<bool, StoreError> {
        let mut stmts = vec![Stmt::new(
            "UPDATE batch_items SET state = 'done', result_kind = $1, result_line = $2, prompt_tokens = $3, \
             cached_tokens = $4, completion_tokens = $5, finished_at_ms = {now}, lease_owner = NULL \
             WHERE batch_id = $6 AND line_no = $7 AND lease_token = $8 AND state = 'running'",
            vec![
                Val::t(if r.ok { "o" } else { "e" }),
                Val::B(r.line.clone()),
                Val::I(r.prompt_tokens),
                Val::I(r.cached_tokens),
                Val::I(r.completion_tokens),
                Val::t(&c.batch_id),
                Val::I(c.line_no),
                Val::I(c.token),
            ],
        )
        .require(1)];
        if let Some(rec) = &r.ledger {
            // The rollups change in the same transaction as the ledger row (issue 16), as for every
            // other ledger write: Postgres in the insert's own statement, SQLite right after it
            // (hourly then daily: each counts the record only if the statement before it did).
            let insert = ledger_insert(rec, &c.batch_id);
            if self.db.is_postgres() {
                stmts.push(Stmt::new(rollup::postgres_insert_sql(&insert.sql), insert.params));
            } else {
                stmts.push(insert);
                for sql in rollup::sqlite_upsert_after_insert_sql("$1") {
                    stmts.push(Stmt::new(sql, vec![Val::t(&rec.record_id)]));
                }
            }
        }
        self.db.script(stmts).await
    }

    /// Ledger rows of a batch (tests and the usage API read them through the ledger).
    ///
    /// # Errors
    /// The database failed.
    pub async fn ledger_rows_of(&self, batch_id: &str) -> Result<i64, StoreError> {
        let r = self
            .db
            .query_opt("SELECT COUNT(*) FROM ledger_records WHERE batch_id = $1", vec![Val::t(batch_id)])
            .await?;
        Ok(r.map(|r| num(&r, 0)).unwrap_or(0))
    }

    /// Parses a batch's stored caller limits.
    pub fn limits_of(b: &BatchRow) -> CallerLimits {
        serde_json::from_str::<StoredLimits>(&b.caller_limits)
            .map(|s| CallerLimits { tenant: s.tenant, key: s.key })
            .unwrap_or_default()
    }

    /// Serialises caller limits for [`BatchRow::caller_limits`].
    pub fn limits_json(l: &CallerLimits) -> String {
        serde_json::to_string(&StoredLimits { tenant: l.tenant, key: l.key }).unwrap_or_else(|_| "{}".into())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLimits {
    tenant: crate::domain::limits::LimitSpec,
    key: crate::domain::limits::LimitSpec,
}

/// A count or sum: Postgres returns NUMERIC for `SUM(bigint)` (read as text), SQLite an integer.
fn num(r: &Row, at: usize) -> i64 {
    r.oi(at).or_else(|| r.ot(at).and_then(|s| s.parse::<f64>().ok()).map(|f| f as i64)).unwrap_or(0)
}

fn file_params(f: &FileRow) -> Vec<Val> {
    vec![
        Val::t(&f.id),
        Val::t(&f.tenant),
        Val::t(&f.purpose),
        Val::t(&f.filename),
        Val::I(f.bytes),
        Val::t(f.kind.as_str()),
        Val::ot(f.batch_id.as_deref()),
        Val::I(f.created_at_ms),
        Val::oi(f.expires_at_ms),
    ]
}

/// The ledger insert of a batch line, idempotent on `record_id` like every ledger write (a batch line's
/// record id is derived from the line, so a replayed line dedupes). Casts keep
/// one statement valid on both stores (integers bound as BIGINT; booleans as `<> 0`).
fn ledger_insert(r: &LedgerRecord, batch_id: &str) -> Stmt {
    Stmt::new(
        "INSERT INTO ledger_records (record_id, request_id, ts_unix_ms, tenant, key_id, provider, requested_model, upstream_model, \
         prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, usage_estimated, cost_nano_usd, \
         price_input_micro_per_m, price_output_micro_per_m, price_cached_input_micro_per_m, price_cache_write_micro_per_m, \
         status, stream, latency_ms, ttft_ms, attempts, http_status, batch_id) VALUES ($25, $1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, (CAST($12 AS BIGINT) <> 0), $13, $14, $15, $16, $17, $18, (CAST($19 AS BIGINT) <> 0), $20, $21, \
         CAST($22 AS BIGINT), CAST($23 AS BIGINT), $24) ON CONFLICT (record_id) DO NOTHING",
        vec![
            Val::t(&r.request_id),
            Val::I(r.ts_unix_ms),
            Val::t(&r.tenant),
            Val::ot(r.key_id.as_deref()),
            Val::t(&r.provider),
            Val::t(&r.requested_model),
            Val::t(&r.upstream_model),
            Val::I(to_i64(r.prompt_tokens)),
            Val::I(to_i64(r.completion_tokens)),
            Val::I(to_i64(r.cached_tokens)),
            Val::I(to_i64(r.cache_write_tokens)),
            Val::I(i64::from(r.usage_estimated)),
            Val::I(r.cost_nano_usd),
            Val::I(r.price.input_micro_per_m),
            Val::I(r.price.output_micro_per_m),
            Val::I(r.price.cached_input_micro_per_m),
            Val::I(r.price.cache_write_micro_per_m),
            Val::t(r.status.as_str()),
            Val::I(i64::from(r.stream)),
            Val::I(to_i64(r.latency_ms)),
            Val::oi(r.ttft_ms.map(to_i64)),
            Val::I(i64::from(r.attempts)),
            Val::I(i64::from(r.http_status)),
            Val::t(batch_id),
            Val::t(&r.record_id),
        ],
    )
}

#[cfg(test)]
mod tests;
