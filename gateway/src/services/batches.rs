//! The Batch API (`/v1/batches`) and its local execution (issue 14; `docs/BATCHES.md`).
//!
//! API operations take the caller's own tenant scope (another tenant's ids are 404). Execution is in
//! steps any replica may run, each fenced in the store: [`advance`] moves one batch through
//! validate → in_progress → finalizing → completed | expired | cancelled, and [`execute`] runs one
//! claimed line through the same chat service as a live request (routes, fallbacks, breakers,
//! translation, tenant limits), with the batch's tenant as the principal, then commits the line's
//! result together with its ledger row. The worker front door (top-level `worker` module) only schedules.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use translators::openai::ErrorBody;

use super::chat::{self, Dialect, ReplyBody};
use super::error::Error;
use super::files::{store_error, MAX_BATCH_FILE_BYTES};
use super::metering::RecordCapture;
use super::state::AppState;
use crate::domain::config::BatchSettings;
use crate::domain::principal::{Credential, Principal, TenantCaller};
use crate::domain::time::now_unix_ms;
use crate::metrics::batches::BatchMetrics;
use crate::stores::batches::{line_record_id, BatchRow, BatchStore, Claimed, FileKind, LineResult, NewItem};

/// The chat completions endpoint, the batch default.
pub const CHAT_ENDPOINT: &str = "/v1/chat/completions";
/// The endpoints executed inside batches (over every provider) and the chat-service dialect that runs
/// each: the same routing, translation and metering as a live request. Embeddings are a separate
/// service and not executed in batches yet.
const EXECUTED: &[(&str, Dialect)] = &[
    (CHAT_ENDPOINT, Dialect::OpenAi),
    ("/v1/responses", Dialect::Responses),
    ("/v1/completions", Dialect::Completions),
];

/// The dialect that runs lines of `endpoint`, when batches execute it.
fn dialect_of(endpoint: &str) -> Option<Dialect> {
    EXECUTED.iter().find(|(e, _)| *e == endpoint).map(|(_, d)| *d)
}
/// OpenAI's Batch API endpoints (others are refused as unknown).
const OPENAI_ENDPOINTS: &[&str] = &[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
];
/// Most requests in one batch (OpenAI's limit).
pub const MAX_LINES: usize = 50_000;
/// Most validation errors reported for a failed batch.
const MAX_ERRORS: usize = 100;
/// Lines queued per store transaction while validating.
const INSERT_CHUNK: usize = 500;
const MAX_METADATA: usize = 16;
/// Batch lists: at most 100 per page, 20 by default (OpenAI's).
const MAX_LIST: i64 = 100;
const DEFAULT_LIST: i64 = 20;
/// Wake-ups buffered per watcher before it lags (and re-reads instead).
const UPDATES_CAPACITY: usize = 1024;
/// How often a watcher re-reads the store without a wake-up: changes made by another replica's
/// worker reach it at most this late.
pub const WATCH_FALLBACK: Duration = Duration::from_secs(2);

/// The batch store, settings and metrics, shared by the API and the worker.
pub struct Batches {
    pub store: Arc<BatchStore>,
    pub settings: BatchSettings,
    pub metrics: Option<BatchMetrics>,
    /// Batch rows by id for the worker: who is billed and at which limits never changes after create,
    /// so a line does not read its batch row again.
    identities: moka::future::Cache<String, Arc<BatchRow>>,
    /// Batch ids whose state just changed on this replica (a status step, a line claimed or
    /// finished, a cancel): wakes [`watch`] streams. Lossy by design: a watcher that lags, or a change
    /// made by another replica, is caught by the watcher's periodic re-read.
    updates: tokio::sync::broadcast::Sender<Arc<str>>,
}

impl Batches {
    /// The batch service over `store`.
    pub fn new(store: Arc<BatchStore>, settings: BatchSettings, metrics: Option<BatchMetrics>) -> Self {
        let identities =
            moka::future::Cache::builder().max_capacity(1024).time_to_live(Duration::from_secs(300)).build();
        let (updates, _) = tokio::sync::broadcast::channel(UPDATES_CAPACITY);
        Self { store, settings, metrics, identities, updates }
    }

    /// Wake-ups for changed batches (their ids), for watchers of one batch or job.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.updates.subscribe()
    }

    /// Tells watchers that batch `id` changed (nothing is sent when nobody watches).
    pub(crate) fn notify(&self, id: &str) {
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(Arc::from(id));
        }
    }

    async fn identity(&self, batch_id: &str) -> Result<Option<Arc<BatchRow>>, Error> {
        if let Some(row) = self.identities.get(batch_id).await {
            return Ok(Some(row));
        }
        let Some(row) = self.store.batch_any(batch_id).await.map_err(store_error)? else { return Ok(None) };
        let row = Arc::new(row);
        self.identities.insert(batch_id.to_owned(), row.clone()).await;
        Ok(Some(row))
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").field("store", &self.store).field("settings", &self.settings).finish()
    }
}

fn batches(state: &AppState) -> Result<&Batches, Error> {
    state.batches.as_deref().ok_or_else(|| Error::StoreUnavailable("the batch store is not configured".into()))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("No batch found with id '{}'.", crate::domain::text::Escaped(id)).into())
}

// ------------------------------------------------------------------------------------------ wire

/// `request_counts`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// `usage` (OpenAI's Batch usage object).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BatchUsage {
    pub input_tokens: i64,
    pub input_tokens_details: CachedDetails,
    pub output_tokens: i64,
    pub output_tokens_details: ReasoningDetails,
    pub total_tokens: i64,
}

/// `input_tokens_details`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CachedDetails {
    pub cached_tokens: i64,
}

/// `output_tokens_details` (reasoning tokens are not kept per line yet: 0).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReasoningDetails {
    pub reasoning_tokens: i64,
}

/// One validation error of a failed batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    /// 1-based line of the input file.
    pub line: Option<i64>,
}

/// `errors`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BatchErrors {
    pub object: &'static str,
    pub data: Vec<BatchError>,
}

/// OpenAI's `Batch` object: every field; optional ones are left out until reached (the OpenAPI schema
/// types them non-nullable; the SDKs read a missing field as `None`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchObject {
    pub id: String,
    pub object: &'static str,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_file_id: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalizing_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelling_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    pub usage: BatchUsage,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /v1/batches`'s answer.
#[derive(Debug, Serialize)]
pub struct BatchList {
    pub object: &'static str,
    pub data: Vec<BatchObject>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

fn secs(ms: Option<i64>) -> Option<i64> {
    ms.map(|m| m / 1000)
}

/// True for a batch status that never changes again.
pub fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "expired" | "cancelled")
}

/// The wire object of a stored batch: live counts while it runs, frozen ones once finished.
async fn object(store: &BatchStore, b: &BatchRow) -> Result<BatchObject, Error> {
    let live = if needs_counts(b) { Some(store.counts(&b.id).await.map_err(store_error)?) } else { None };
    Ok(object_with(b, live))
}

/// Whether a batch's wire object reads live line counts (it is running).
fn needs_counts(b: &BatchRow) -> bool {
    !(terminal(&b.status) || b.status == "validating")
}

/// The wire object of a stored batch with its live counts (`None`: the row's frozen ones).
fn object_with(b: &BatchRow, live: Option<crate::stores::batches::Counts>) -> BatchObject {
    let (counts, input, cached, output) = match live {
        None => (
            RequestCounts { total: b.total, completed: b.completed, failed: b.failed },
            b.input_tokens,
            b.cached_tokens,
            b.output_tokens,
        ),
        Some(c) => (
            RequestCounts { total: c.total.max(b.total), completed: c.succeeded, failed: c.failed },
            c.input_tokens,
            c.cached_tokens,
            c.output_tokens,
        ),
    };
    let errors = b.errors.as_deref().and_then(|e| serde_json::from_str::<Vec<BatchError>>(e).ok());
    BatchObject {
        id: b.id.clone(),
        object: "batch",
        endpoint: b.endpoint.clone(),
        model: b.model.clone(),
        errors: errors.map(|data| BatchErrors { object: "list", data }),
        input_file_id: b.input_file_id.clone(),
        completion_window: b.completion_window.clone(),
        status: b.status.clone(),
        output_file_id: b.output_file_id.clone(),
        error_file_id: b.error_file_id.clone(),
        created_at: b.created_at_ms / 1000,
        in_progress_at: secs(b.in_progress_at_ms),
        expires_at: Some(b.expires_at_ms / 1000),
        finalizing_at: secs(b.finalizing_at_ms),
        completed_at: secs(b.completed_at_ms),
        failed_at: secs(b.failed_at_ms),
        expired_at: secs(b.expired_at_ms),
        cancelling_at: secs(b.cancelling_at_ms),
        cancelled_at: secs(b.cancelled_at_ms),
        request_counts: counts,
        usage: BatchUsage {
            input_tokens: input,
            input_tokens_details: CachedDetails { cached_tokens: cached },
            output_tokens: output,
            output_tokens_details: ReasoningDetails { reasoning_tokens: 0 },
            total_tokens: input + output,
        },
        metadata: b.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
    }
}

// ------------------------------------------------------------------------------------------ API

/// `POST /v1/batches`'s body.
#[derive(Debug, Deserialize)]
pub struct CreateBatch {
    pub input_file_id: Option<String>,
    pub endpoint: Option<String>,
    pub completion_window: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub output_expires_after: Option<ExpiresAfter>,
}

/// `output_expires_after`.
#[derive(Debug, Deserialize)]
pub struct ExpiresAfter {
    pub anchor: Option<String>,
    pub seconds: Option<i64>,
}

fn bad(message: impl Into<std::borrow::Cow<'static, str>>, param: &'static str) -> Error {
    Error::bad_request(message, Some(param))
}

fn new_batch_id() -> String {
    let mut id = String::from("batch_");
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// `POST /v1/batches` for the caller's own tenant. With `idempotency_key`, a repeated create returns
/// the batch made the first time. The batch is committed before this returns (it survives any crash)
/// and starts `validating`; the worker validates it.
///
/// # Errors
/// 400 for a bad body, an input file that is not `purpose=batch`, an unsupported endpoint; 404 for an
/// unknown input file.
pub async fn create(
    state: &Arc<AppState>,
    principal: &Principal,
    body: &[u8],
    idempotency_key: Option<&str>,
) -> Result<BatchObject, Error> {
    let caller = principal.caller()?;
    let scope = principal.own_scope()?;
    let req: CreateBatch =
        serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("Invalid JSON body: {e}"), None))?;
    let input_file_id =
        req.input_file_id.ok_or_else(|| bad("Missing required parameter: 'input_file_id'.", "input_file_id"))?;
    let endpoint = req.endpoint.ok_or_else(|| bad("Missing required parameter: 'endpoint'.", "endpoint"))?;
    if !OPENAI_ENDPOINTS.contains(&endpoint.as_str()) {
        return Err(bad(format!("Invalid endpoint: '{}'.", crate::domain::text::Escaped(&endpoint)), "endpoint"));
    }
    if dialect_of(&endpoint).is_none() {
        return Err(bad(
            format!(
                "Endpoint '{endpoint}' is not supported in batches by this gateway yet; use /v1/chat/completions, /v1/responses or /v1/completions."
            ),
            "endpoint",
        ));
    }
    let window = req
        .completion_window
        .ok_or_else(|| bad("Missing required parameter: 'completion_window'.", "completion_window"))?;
    if window != "24h" {
        return Err(bad("Invalid completion_window: only '24h' is supported.", "completion_window"));
    }
    if let Some(m) = &req.metadata {
        if m.len() > MAX_METADATA {
            return Err(bad("metadata: at most 16 key-value pairs.", "metadata"));
        }
        for (k, v) in m {
            let ok = k.chars().count() <= 64 && v.as_str().is_some_and(|s| s.chars().count() <= 512);
            if !ok {
                return Err(bad("metadata: keys of at most 64 characters, string values of at most 512.", "metadata"));
            }
        }
    }
    let output_expires_after_s = match req.output_expires_after {
        None => None,
        Some(e) => {
            if e.anchor.as_deref() != Some("created_at") {
                return Err(bad("output_expires_after.anchor must be 'created_at'.", "output_expires_after.anchor"));
            }
            match e.seconds {
                Some(s) if (3600..=2_592_000).contains(&s) => Some(s),
                _ => {
                    return Err(bad(
                        "output_expires_after.seconds must be between 3600 and 2592000.",
                        "output_expires_after.seconds",
                    ))
                }
            }
        }
    };
    let b = batches(state)?;
    let now = now_unix_ms();
    let file = b.store.file(scope.tenant(), &input_file_id, now).await.map_err(store_error)?.ok_or_else(|| {
        Error::NotFound(format!("No such File object: {}", crate::domain::text::Escaped(&input_file_id)).into())
    })?;
    if file.purpose != "batch" || file.kind != FileKind::Blob {
        return Err(bad("The input file must be uploaded with purpose 'batch'.", "input_file_id"));
    }
    let window_ms = i64::try_from(b.settings.window.as_millis()).unwrap_or(86_400_000);
    let row = BatchRow {
        id: new_batch_id(),
        tenant: scope.tenant().to_owned(),
        key_id: caller.key_id.as_deref().map(str::to_owned),
        caller_limits: BatchStore::limits_json(&caller.limits),
        endpoint,
        input_file_id,
        completion_window: window,
        status: "validating".into(),
        metadata: req.metadata.map(|m| serde_json::Value::Object(m).to_string()),
        output_expires_after_s,
        created_at_ms: now,
        expires_at_ms: now + window_ms,
        idempotency_key: idempotency_key.map(str::to_owned),
        ..BatchRow::default()
    };
    let (row, created) = b.store.insert_batch(&row).await.map_err(store_error)?;
    if created {
        tracing::info!(batch_id = %row.id, tenant = %crate::domain::text::Escaped(&row.tenant), step = "created", "batch progress");
    }
    object(&b.store, &row).await
}

/// `GET /v1/batches/{id}`. Never bills.
///
/// # Errors
/// 404 for an unknown or other tenant's batch.
pub async fn retrieve(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<BatchObject, Error> {
    let scope = principal.own_scope()?;
    let b = batches(state)?;
    let row = b.store.batch(scope.tenant(), id).await.map_err(store_error)?.ok_or_else(|| not_found(id))?;
    object(&b.store, &row).await
}

/// `GET /v1/batches`: newest first, `limit` 1…100 (default 20), `after` a batch id.
///
/// # Errors
/// 400 for a bad limit or cursor.
pub async fn list(
    state: &Arc<AppState>,
    principal: &Principal,
    after: Option<&str>,
    limit: Option<i64>,
) -> Result<BatchList, Error> {
    let scope = principal.own_scope()?;
    let limit = limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_LIST}."), "limit"));
    }
    let b = batches(state)?;
    let cursor = match after {
        Some(a) => Some(
            b.store
                .batch(scope.tenant(), a)
                .await
                .map_err(store_error)?
                .ok_or_else(|| bad("`after` is not a batch of this tenant.", "after"))?,
        ),
        None => None,
    };
    let (rows, has_more) = b.store.list_batches(scope.tenant(), cursor.as_ref(), limit).await.map_err(store_error)?;
    // One counts query for the running batches of the page, not one per batch.
    let running: Vec<String> = rows.iter().filter(|r| needs_counts(r)).map(|r| r.id.clone()).collect();
    let mut counts = b.store.counts_many(&running).await.map_err(store_error)?;
    let data: Vec<BatchObject> = rows
        .iter()
        .map(|r| {
            let live = needs_counts(r).then(|| counts.remove(&r.id).unwrap_or_default());
            object_with(r, live)
        })
        .collect();
    Ok(BatchList {
        object: "list",
        first_id: data.first().map(|d| d.id.clone()),
        last_id: data.last().map(|d| d.id.clone()),
        has_more: has_more && !data.is_empty(),
        data,
    })
}

/// `POST /v1/batches/{id}/cancel`: `validating`/`in_progress` → `cancelling` (then `cancelled` once
/// running lines finish; unrun lines become `batch_cancelled` error lines). Repeating it returns the
/// batch as it is; cancelling a finished batch is a 400.
///
/// # Errors
/// 404 for an unknown or other tenant's batch; 400 for a finished one.
pub async fn cancel(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<BatchObject, Error> {
    let scope = principal.own_scope()?;
    let b = batches(state)?;
    let now = now_unix_ms();
    if b.store.request_cancel(scope.tenant(), id, now).await.map_err(store_error)? {
        tracing::info!(batch_id = %crate::domain::text::Escaped(id), step = "cancelling", "batch progress");
        b.notify(id);
    }
    let row = b.store.batch(scope.tenant(), id).await.map_err(store_error)?.ok_or_else(|| not_found(id))?;
    if !matches!(row.status.as_str(), "cancelling" | "cancelled") {
        return Err(Error::bad_request(format!("Cannot cancel a batch with status '{}'.", row.status), None));
    }
    object(&b.store, &row).await
}

/// Follows one of the caller's batches: the current state at once, then every change, ending after a
/// terminal status (`completed`, `failed`, `expired`, `cancelled`), at shutdown, or with an error
/// (404 for an unknown or other tenant's batch, checked on every read). See [`watch_with`].
pub fn watch(
    state: Arc<AppState>,
    principal: Principal,
    id: String,
) -> impl futures_util::Stream<Item = Result<BatchObject, Error>> + Send + 'static {
    let read_state = state.clone();
    let read_id = id.clone();
    watch_with(
        state,
        id,
        move || {
            let (state, principal, id) = (read_state.clone(), principal.clone(), read_id.clone());
            async move { retrieve(&state, &principal, &id).await }
        },
        |b: &BatchObject| terminal(&b.status),
    )
}

/// The watch loop shared by batches and jobs: reads with `read` (which checks the caller), yields
/// the value when it differs from the last one, and waits for a wake-up for `id` from this
/// replica ([`Batches::notify`]) or at most [`WATCH_FALLBACK`] (a change made by another replica's
/// worker): no busy polling. Ends after a value `done` accepts, at shutdown, or after an error.
pub fn watch_with<T, R, Fut>(
    state: Arc<AppState>,
    id: String,
    read: R,
    done: fn(&T) -> bool,
) -> impl futures_util::Stream<Item = Result<T, Error>> + Send + 'static
where
    T: Clone + PartialEq + Send + 'static,
    R: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>> + Send,
{
    struct Watch<T, R> {
        // Subscribed before the first read, so no change between the read and the wait is missed.
        rx: Option<tokio::sync::broadcast::Receiver<Arc<str>>>,
        read: R,
        last: Option<T>,
        first: bool,
        finished: bool,
        id: String,
        shutdown: tokio_util::sync::CancellationToken,
    }
    let w = Watch {
        rx: state.batches.as_ref().map(|b| b.subscribe()),
        read,
        last: None,
        first: true,
        finished: false,
        id,
        shutdown: state.shutdown.clone(),
    };
    futures_util::stream::unfold(w, move |mut w| async move {
        if w.finished {
            return None;
        }
        loop {
            if !w.first {
                tokio::select! {
                    () = w.shutdown.cancelled() => return None,
                    () = tokio::time::sleep(WATCH_FALLBACK) => {}
                    () = woken(&mut w.rx, &w.id) => {}
                }
            }
            w.first = false;
            match (w.read)().await {
                Err(e) => {
                    w.finished = true;
                    return Some((Err(e), w));
                }
                Ok(v) => {
                    if w.last.as_ref() == Some(&v) {
                        continue;
                    }
                    w.finished = done(&v);
                    w.last = Some(v.clone());
                    return Some((Ok(v), w));
                }
            }
        }
    })
}

/// Returns when `id` is announced, or when wake-ups were lost (lagged: re-read to be safe); never
/// when there is no channel.
async fn woken(rx: &mut Option<tokio::sync::broadcast::Receiver<Arc<str>>>, id: &str) {
    let Some(rx) = rx else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(changed) if &*changed == id => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

// ------------------------------------------------------------------------------------------ steps

/// Moves one batch forward if it needs it (validation, expiry, cancel drain, finalization); does
/// nothing when another replica holds its step lease or nothing is due. Idempotent and fenced.
///
/// # Errors
/// Store failures (retried at the next tick).
pub async fn advance(state: &Arc<AppState>, owner: &str, id: &str, status: &str) -> Result<(), Error> {
    let b = batches(state)?;
    let now = now_unix_ms();
    if status == "in_progress" {
        // Cheap read first: most ticks find lines still pending and the window open.
        let Some(row) = b.store.batch_any(id).await.map_err(store_error)? else { return Ok(()) };
        let c = b.store.counts(id).await.map_err(store_error)?;
        if c.pending > 0 && now < row.expires_at_ms {
            return Ok(());
        }
    }
    let lease_ms = i64::try_from(b.settings.lease.as_millis()).unwrap_or(60_000);
    let Some(token) = b.store.take_step(id, owner, lease_ms).await.map_err(store_error)? else { return Ok(()) };
    let result = step(state, b, id, token).await;
    let _ = b.store.release_step(id, token).await;
    if matches!(result, Ok(true)) {
        b.notify(id);
    }
    result.map(|_| ())
}

/// One step of a batch; true when it changed something a watcher sees.
async fn step(state: &Arc<AppState>, b: &Batches, id: &str, token: i64) -> Result<bool, Error> {
    let Some(row) = b.store.batch_any(id).await.map_err(store_error)? else { return Ok(false) };
    let now = now_unix_ms();
    match row.status.as_str() {
        "validating" => validate(state, b, &row, token).await.map(|()| true),
        "in_progress" | "finalizing" | "cancelling" => {
            let cancelling = row.status == "cancelling" || row.cancelling_at_ms.is_some();
            let expiring = !cancelling && (row.expire_pending || now >= row.expires_at_ms);
            if expiring && !row.expire_pending {
                b.store.mark_expiring(id).await.map_err(store_error)?;
                tracing::info!(batch_id = %id, step = "expiring", "batch progress");
            }
            let mut changed = false;
            if cancelling || expiring {
                changed = drain(b, &row, if cancelling { "batch_cancelled" } else { "batch_expired" }).await?;
            }
            let c = b.store.counts(id).await.map_err(store_error)?;
            if c.pending > 0 {
                return Ok(changed);
            }
            b.store.mark_finalizing(id, token, now).await.map_err(store_error)?;
            let status = if cancelling {
                "cancelled"
            } else if expiring {
                "expired"
            } else {
                "completed"
            };
            let finalized = b.store.finalize(&row, token, status, now_unix_ms()).await.map_err(store_error)?;
            if finalized {
                tracing::info!(
                    batch_id = %id,
                    step = status,
                    total = c.total,
                    succeeded = c.succeeded,
                    failed = c.failed,
                    "batch progress"
                );
            }
            Ok(changed || finalized)
        }
        _ => Ok(false),
    }
}

/// Closes every unrun line of a cancelled or expired batch with its error line; true when it closed any.
async fn drain(b: &Batches, row: &BatchRow, code: &'static str) -> Result<bool, Error> {
    let message = if code == "batch_cancelled" {
        "This request was not executed because the batch was cancelled."
    } else {
        "This request could not be executed before the completion window expired."
    };
    let mut closed_any = false;
    loop {
        let lines = b.store.unrun(&row.id, 500).await.map_err(store_error)?;
        if lines.is_empty() {
            return Ok(closed_any);
        }
        closed_any = true;
        let n = lines.len() as u64;
        let closed = lines
            .into_iter()
            .map(|(line_no, custom_id, token, request_id)| {
                let line = OutputLine {
                    id: &request_id,
                    custom_id: &custom_id,
                    response: None,
                    error: Some(LineError { code, message }),
                };
                (line_no, token, line.to_bytes())
            })
            .collect();
        b.store.close_unrun(&row.id, closed).await.map_err(store_error)?;
        if let Some(m) = &b.metrics {
            m.finished.with_label_values(&[if code == "batch_cancelled" { "cancelled" } else { "expired" }]).inc_by(n);
        }
    }
}

/// One input line, as far as validation reads it.
#[derive(Deserialize)]
struct InputLine<'a> {
    #[serde(borrow)]
    custom_id: Option<&'a RawValue>,
    method: Option<String>,
    url: Option<String>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct BodyHead {
    model: Option<String>,
    stream: Option<bool>,
}

struct Checked {
    custom_id: String,
    model: Option<String>,
    body: Vec<u8>,
}

fn check_line(text: &[u8], endpoint: &str, line: i64) -> Result<Checked, BatchError> {
    let err = |code: &str, message: String, param: Option<&str>| BatchError {
        code: code.to_owned(),
        message,
        param: param.map(str::to_owned),
        line: Some(line),
    };
    let parsed: InputLine<'_> = serde_json::from_slice(text)
        .map_err(|e| err("invalid_json_line", format!("This line is not a valid JSON object: {e}."), None))?;
    let custom_id = match parsed.custom_id.map(|r| serde_json::from_str::<String>(r.get())) {
        Some(Ok(s)) if !s.is_empty() && !s.contains('\0') => s,
        Some(Ok(_)) | Some(Err(_)) => {
            return Err(err("invalid_custom_id", "custom_id must be a non-empty string.".into(), Some("custom_id")))
        }
        None => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.".into(),
                Some("custom_id"),
            ))
        }
    };
    if parsed.method.as_deref() != Some("POST") {
        return Err(err("invalid_method", "method must be 'POST'.".into(), Some("method")));
    }
    if parsed.url.as_deref() != Some(endpoint) {
        return Err(err(
            "mismatched_endpoint",
            format!("The url of this line must match the batch endpoint '{endpoint}'."),
            Some("url"),
        ));
    }
    let body = parsed
        .body
        .ok_or_else(|| err("missing_required_parameter", "Missing required parameter: 'body'.".into(), Some("body")))?;
    let head: BodyHead = serde_json::from_str(body.get())
        .map_err(|_| err("invalid_body", "body must be a JSON object.".into(), Some("body")))?;
    if head.stream == Some(true) {
        return Err(err("stream_unsupported", "Streaming is not supported in batches.".into(), Some("body.stream")));
    }
    Ok(Checked { custom_id, model: head.model, body: body.get().as_bytes().to_vec() })
}

/// The input file's lines, read as chunks arrive (bounded memory: one chunk plus one line). Blank
/// lines are skipped but counted, so `line` numbers match the file.
struct Lines {
    reader: crate::stores::batches::ContentReader,
    buf: Vec<u8>,
    pos: usize,
    line_no: i64,
    eof: bool,
}

impl Lines {
    async fn open(b: &Batches, input_file_id: &str) -> Result<Result<Self, BatchError>, Error> {
        let missing = |message: &str| BatchError {
            code: "input_file_missing".into(),
            message: message.into(),
            param: Some("input_file_id".into()),
            line: None,
        };
        let Some(file) = b.store.file_any(input_file_id).await.map_err(store_error)? else {
            return Ok(Err(missing("The input file no longer exists.")));
        };
        if u64::try_from(file.bytes).unwrap_or(0) > MAX_BATCH_FILE_BYTES {
            return Ok(Err(BatchError {
                code: "file_too_large".into(),
                message: "The input file is larger than 200 MB.".into(),
                param: Some("input_file_id".into()),
                line: None,
            }));
        }
        match b.store.content(file).await {
            Ok(reader) => Ok(Ok(Self { reader, buf: Vec::new(), pos: 0, line_no: 0, eof: false })),
            Err(_) => Ok(Err(missing("The input file's content is gone (deleted)."))),
        }
    }

    async fn next(&mut self) -> Result<Option<(i64, Vec<u8>)>, Error> {
        loop {
            if let Some(off) = self.buf[self.pos..].iter().position(|&c| c == b'\n') {
                let line = self.buf[self.pos..self.pos + off].to_vec();
                self.pos += off + 1;
                self.line_no += 1;
                if let Some(l) = self.keep(line) {
                    return Ok(Some((self.line_no, l)));
                }
                continue;
            }
            if self.eof {
                if self.pos < self.buf.len() {
                    let line = self.buf[self.pos..].to_vec();
                    self.pos = self.buf.len();
                    self.line_no += 1;
                    if let Some(l) = self.keep(line) {
                        return Ok(Some((self.line_no, l)));
                    }
                }
                return Ok(None);
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            match self.reader.next().await.map_err(store_error)? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => self.eof = true,
            }
        }
    }

    fn keep(&self, mut line: Vec<u8>) -> Option<Vec<u8>> {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

/// Validation: a first pass checks every line (JSON, `custom_id` present and unique, `POST`, `url`,
/// no `stream`, at most 50,000 lines); any error fails the batch with `errors.data[].line`, before any
/// line is queued (no upstream call, no ledger row). A second pass queues the lines in chunks.
async fn validate(state: &Arc<AppState>, b: &Batches, row: &BatchRow, token: i64) -> Result<(), Error> {
    let mut errors: Vec<BatchError> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut count = 0usize;
    let mut models: HashSet<String> = HashSet::new();
    match Lines::open(b, &row.input_file_id).await? {
        Err(e) => errors.push(e),
        Ok(mut lines) => {
            while let Some((line, text)) = lines.next().await? {
                count += 1;
                if count > MAX_LINES {
                    errors.push(BatchError {
                        code: "too_many_requests".into(),
                        message: format!("A batch may contain at most {MAX_LINES} requests."),
                        param: None,
                        line: Some(line),
                    });
                    break;
                }
                match check_line(&text, &row.endpoint, line) {
                    Ok(c) => {
                        if !seen.insert(c.custom_id.clone()) {
                            errors.push(BatchError {
                                code: "duplicate_custom_id".into(),
                                message: format!("The custom_id '{}' is used by an earlier line.", c.custom_id),
                                param: Some("custom_id".into()),
                                line: Some(line),
                            });
                        }
                        if models.len() < 2 {
                            models.insert(c.model.unwrap_or_default());
                        }
                    }
                    Err(e) => errors.push(e),
                }
                if errors.len() >= MAX_ERRORS {
                    break;
                }
            }
        }
    }
    if count == 0 && errors.is_empty() {
        errors.push(BatchError {
            code: "empty_file".into(),
            message: "The input file has no requests.".into(),
            param: Some("input_file_id".into()),
            line: None,
        });
    }
    let now = now_unix_ms();
    if !errors.is_empty() {
        let json = serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into());
        if b.store.fail(&row.id, token, &json, now).await.map_err(store_error)? {
            tracing::info!(batch_id = %row.id, step = "failed", errors = errors.len(), "batch progress");
        }
        return Ok(());
    }
    // Second pass: queue, a chunk per transaction. Routing here only picks the pacing lane; the line
    // routes again (fallbacks, breakers) when it runs.
    let suffix = row.id.strip_prefix("batch_").unwrap_or(&row.id).to_owned();
    let mut chunk: Vec<NewItem> = Vec::with_capacity(INSERT_CHUNK);
    let mut lines = match Lines::open(b, &row.input_file_id).await? {
        Ok(l) => l,
        Err(e) => return Err(Error::Internal(e.message.into())),
    };
    while let Some((line, text)) = lines.next().await? {
        let Ok(c) = check_line(&text, &row.endpoint, line) else { continue };
        let provider = c
            .model
            .as_deref()
            .and_then(|m| crate::domain::routing::resolve(&state.config, m).ok())
            .map(|r| r.primary().provider.id.clone())
            .unwrap_or_default();
        chunk.push(NewItem {
            line_no: line,
            custom_id: c.custom_id,
            request_id: format!("batch_req_{suffix}_{line}"),
            provider,
            body: c.body,
        });
        if chunk.len() >= INSERT_CHUNK {
            b.store.insert_items(&row.id, &chunk).await.map_err(store_error)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        b.store.insert_items(&row.id, &chunk).await.map_err(store_error)?;
    }
    let model = (models.len() == 1).then(|| models.into_iter().next().unwrap_or_default()).filter(|m| !m.is_empty());
    let total = i64::try_from(count).unwrap_or(0);
    if b.store.start(&row.id, token, total, model.as_deref(), now_unix_ms()).await.map_err(store_error)? {
        tracing::info!(batch_id = %row.id, step = "in_progress", total, "batch progress");
    } else {
        // Cancelled while validating: the lines are queued and the cancel drain closes them.
        b.store.set_total(&row.id, token, total, model.as_deref()).await.map_err(store_error)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------ lines

/// An output or error file line (OpenAI's `BatchRequestOutput`).
#[derive(Serialize)]
struct OutputLine<'a> {
    id: &'a str,
    custom_id: &'a str,
    response: Option<LineResponse<'a>>,
    error: Option<LineError>,
}

#[derive(Serialize)]
struct LineResponse<'a> {
    status_code: u16,
    request_id: &'a str,
    body: &'a RawValue,
}

#[derive(Serialize)]
struct LineError {
    code: &'static str,
    message: &'static str,
}

impl OutputLine<'_> {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What became of one executed line (for the worker's pacing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// The result and its ledger row are committed.
    Done { ok: bool },
    /// Put back: rate limited (the provider's or the tenant's); the lane should pause this long.
    RateLimited { retry_after: Duration },
    /// Put back after a retryable failure (one try of the budget spent), or at shutdown.
    Retry,
    /// The lease was lost meanwhile: another replica owns the line, nothing was written.
    Stale,
}

/// The OpenAI error body of a service error (the same fields `http::rescue` renders).
fn error_body(error: &Error) -> ErrorBody {
    if let Error::Upstream(super::error::UpstreamError::Status { mapped, .. }) = error {
        return mapped.body.clone();
    }
    ErrorBody {
        message: error.to_string(),
        kind: error.kind().to_owned(),
        param: error.param().map(str::to_owned),
        code: error.code().map(str::to_owned),
    }
}

fn retry_after(error: &Error) -> Option<Duration> {
    match error {
        Error::Upstream(super::error::UpstreamError::Status { retry_after: Some(v), .. }) => v
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        Error::RateLimited(r) => Some(r.retry_after),
        _ => None,
    }
}

/// Runs one claimed line through the chat service as its batch's tenant and commits the outcome:
/// the result line and its ledger row together (fenced by the lease token), or a requeue. A 429 (the
/// provider's, or the tenant's rate limits) never spends the line's retry budget; a budget refusal is
/// a final error line.
///
/// # Errors
/// Store failures: the line stays leased and is taken over when the lease expires.
pub async fn execute(state: &Arc<AppState>, line: &Claimed) -> Result<Executed, Error> {
    let b = batches(state)?;
    let Some(batch) = b.identity(&line.batch_id).await? else { return Ok(Executed::Stale) };
    // The line was just claimed: its batch (a job) is now processing.
    b.notify(&line.batch_id);
    let principal = Principal::Tenant(TenantCaller {
        tenant: Arc::from(batch.tenant.as_str()),
        key_id: batch.key_id.as_deref().map(Arc::from),
        limits: BatchStore::limits_of(&batch),
        credential: Credential::ApiKey,
    });
    let capture = RecordCapture::new();
    let mut req = Request::new(Full::new(Bytes::from(line.body.clone())));
    *req.method_mut() = Method::POST;
    // Validated at create time; a row from an older version without a known endpoint runs as chat.
    let dialect = dialect_of(&batch.endpoint).unwrap_or(Dialect::OpenAi);
    *req.uri_mut() = http::Uri::try_from(batch.endpoint.as_str()).unwrap_or(http::Uri::from_static(CHAT_ENDPOINT));
    req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    req.extensions_mut().insert(capture.clone());
    let outcome = chat::complete(state, &principal, &line.request_id, dialect, req).await;
    let (status, body): (u16, Vec<u8>) = match outcome {
        Ok(reply) => {
            let status = reply.status().as_u16();
            match reply.into_body() {
                ReplyBody::Full(bytes) => (status, bytes.to_vec()),
                // Validation refuses `stream: true`, so a stream cannot come back; treat it as an error.
                ReplyBody::Stream(_) => (
                    502,
                    br#"{"error":{"message":"unexpected stream","type":"server_error","param":null,"code":null}}"#
                        .to_vec(),
                ),
            }
        }
        Err(error) => {
            let status = error.status().as_u16();
            let rate_limited = status == 429 && error.is_retryable();
            if matches!(error, Error::ShuttingDown) {
                return requeue(b, line, Duration::ZERO, false, "shutdown").await;
            }
            if rate_limited {
                let wait = retry_after(&error).unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(120));
                return match requeue(b, line, wait, false, "rate_limited").await? {
                    Executed::Retry => Ok(Executed::RateLimited { retry_after: wait }),
                    other => Ok(other),
                };
            }
            if error.is_retryable() && line.failures + 1 < i64::from(b.settings.max_retries) {
                let backoff =
                    Duration::from_millis(500u64 << line.failures.clamp(0, 8)).mul_f64(0.5 + fastrand::f64() / 2.0);
                return requeue(b, line, backoff, true, "retry").await;
            }
            let json = serde_json::to_vec(&translators::openai::ErrorEnvelope { error: error_body(&error) })
                .unwrap_or_else(|_| b"{}".to_vec());
            (status, json)
        }
    };
    let ok = status == 200;
    let raw: Box<RawValue> = serde_json::from_slice(&body)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_else(|_| Box::<RawValue>::default()));
    let out = OutputLine {
        id: &line.request_id,
        custom_id: &line.custom_id,
        response: Some(LineResponse { status_code: status, request_id: &line.request_id, body: &raw }),
        error: None,
    };
    let record = capture.get().map(|mut r| {
        // Deterministic identity: a line re-run after a crash dedupes on the ledger's key.
        r.record_id = line_record_id(&line.request_id);
        r
    });
    let result = LineResult {
        ok,
        line: out.to_bytes(),
        prompt_tokens: record.as_ref().map_or(0, |r| i64::try_from(r.prompt_tokens).unwrap_or(0)),
        cached_tokens: record.as_ref().map_or(0, |r| i64::try_from(r.cached_tokens).unwrap_or(0)),
        completion_tokens: record.as_ref().map_or(0, |r| i64::try_from(r.completion_tokens).unwrap_or(0)),
        ledger: record,
    };
    if b.store.complete(line, &result).await.map_err(store_error)? {
        b.notify(&line.batch_id);
        if let Some(m) = &b.metrics {
            m.finished.with_label_values(&[if ok { "succeeded" } else { "failed" }]).inc();
        }
        Ok(Executed::Done { ok })
    } else {
        if let Some(m) = &b.metrics {
            m.stale_commits.inc();
        }
        Ok(Executed::Stale)
    }
}

async fn requeue(b: &Batches, line: &Claimed, delay: Duration, failed: bool, reason: &str) -> Result<Executed, Error> {
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    if b.store.requeue(line, delay_ms, failed).await.map_err(store_error)? {
        if let Some(m) = &b.metrics {
            m.requeues.with_label_values(&[reason]).inc();
        }
        Ok(Executed::Retry)
    } else {
        Ok(Executed::Stale)
    }
}
