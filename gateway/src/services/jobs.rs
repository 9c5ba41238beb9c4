//! Jobs (issue 15): the product's simple view of one model request run in the background. A job
//! *is* a one-line batch: [`create_text_job`] writes a one-line JSONL input file through the files
//! service, creates a batch through the batches service (so it is executed, routed, limited and
//! metered exactly like any batch line, with one ledger row) and marks it as a job in the batch's
//! metadata ([`JOB_METADATA_KEY`]). A job's id is its batch's id.
//!
//! Every operation takes the caller's own tenant scope, like the Batch API: the admin key has no
//! jobs (it is refused as not a tenant), and another tenant's job ids are 404 like ids that never
//! existed. GraphQL and the dashboard both call this module; neither re-derives a state or a check.
//!
//! Job states, from the batch states ([`status_of`]):
//!
//! | batch status | job status |
//! |---|---|
//! | `validating`; `in_progress` before its line is first claimed | `PENDING` |
//! | `in_progress` once its line was claimed (also while a retry waits), `finalizing`, `cancelling` | `PROCESSING` |
//! | `completed` with its line answered 200 | `COMPLETED` |
//! | `completed` with an error line, `failed` (validation), `cancelled`, `expired` | `FAILED` |
//!
//! A cancelled job is `FAILED` with error code `cancelled`, an expired one `FAILED` with `expired`;
//! [`Job::batch_status`] keeps the precise batch status.
//!
//! Reads are bounded in queries: [`job`] is two store queries, [`list_jobs`] three for a whole page
//! (the cursor, the page, and the first lines of every job in it), whatever the page size.

use std::sync::Arc;

use serde_json::{json, Value};

use super::batches::{self, BatchError, CHAT_ENDPOINT};
use super::error::Error;
use super::files::{self, store_error};
use super::state::AppState;
use crate::domain::principal::Principal;
use crate::stores::batches::{BatchFilter, BatchRow, BatchStore, LineView, Progress};

/// The metadata key that marks a batch as a job; its value is the job's kind (`text`).
pub const JOB_METADATA_KEY: &str = "gateway.job";
/// The metadata key holding the model a job asked for (shown before validation names it).
pub const MODEL_METADATA_KEY: &str = "gateway.job.model";
/// Most jobs in one page, and the default.
pub const MAX_LIST: i64 = 100;
pub const DEFAULT_LIST: i64 = 20;
/// Longest model name accepted (batch metadata values hold at most 512 characters).
const MAX_MODEL_CHARS: usize = 256;
/// Most bytes of prompt and message text in one job.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// Roles a text job's messages may have (Chat Completions').
const ROLES: &[&str] = &["system", "developer", "user", "assistant"];
const TEXT_KIND: &str = "text";
/// The `custom_id` of a job's one line.
const LINE_ID: &str = "job";

/// A job's state, as the product defines it (see the module table for the batch states behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted, not yet picked up by a worker.
    Pending,
    /// Its request runs (or waits for a retry, or its batch is being finalized or cancelled).
    Processing,
    /// Answered successfully; the result is available.
    Completed,
    /// Ended without a result: the request failed, or the job was cancelled or expired.
    Failed,
}

impl JobStatus {
    /// True for `COMPLETED` and `FAILED`, which never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }

    fn progress(self) -> Progress {
        match self {
            JobStatus::Pending => Progress::Waiting,
            JobStatus::Processing => Progress::Running,
            JobStatus::Completed => Progress::Succeeded,
            JobStatus::Failed => Progress::Failed,
        }
    }
}

/// The job status of a batch in `batch_status` with `failed_lines` failed lines (frozen at the end)
/// whose line has `line_started` (claimed at least once). The same rule as the store's list filter
/// ([`Progress`]), so a filtered list and a single read agree.
pub fn status_of(batch_status: &str, failed_lines: i64, line_started: bool) -> JobStatus {
    match batch_status {
        "validating" => JobStatus::Pending,
        "in_progress" if line_started => JobStatus::Processing,
        "in_progress" => JobStatus::Pending,
        "finalizing" | "cancelling" => JobStatus::Processing,
        "completed" if failed_lines == 0 => JobStatus::Completed,
        _ => JobStatus::Failed,
    }
}

/// What a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A chat completion.
    Text,
    /// Image generation: refused until it is routed.
    Image,
}

/// One chat message of a text job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A text job: a model and either a prompt (one user message) or messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextJob {
    /// A model or alias, as in `/v1/chat/completions`.
    pub model: String,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    /// `max_tokens` of the request (at least 1).
    pub max_tokens: Option<u32>,
    /// 0 to 2.
    pub temperature: Option<f64>,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub enum NewJob {
    Text(TextJob),
    /// Refused with a 400 (`BAD_USER_INPUT`): image generation is not routed yet.
    Image {
        prompt: String,
    },
}

/// The answer of a job's request (also for a failed one, when the upstream answered).
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    /// The HTTP status the request was answered with (200 for a completed job).
    pub status_code: u16,
    /// The completion's text (`choices[0].message.content`), when there is one.
    pub text: Option<String>,
    /// The full response body, as it is in the batch's output (or error) file.
    pub body: Value,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// `cancelled`, `expired`, a validation code (e.g. `model_not_found`), or the upstream's error code.
    pub code: String,
    pub message: String,
}

/// Tokens and cost of a job's request (zero until it ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobUsage {
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    /// The ledger row's cost in nano-USD; `None` until the row exists (or when the line was never billed).
    pub cost_nano_usd: Option<i64>,
}

/// A job as its owner sees it. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's (and its batch's) id, `batch_…`.
    pub id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    /// The batch status behind [`Job::status`] (`validating`, `in_progress`, …, `cancelled`).
    pub batch_status: String,
    /// The model asked for.
    pub model: Option<String>,
    pub created_at_ms: i64,
    /// When its line was validated and queued.
    pub queued_at_ms: Option<i64>,
    /// When its request was answered (or closed by a cancel or expiry).
    pub answered_at_ms: Option<i64>,
    /// When the job reached its terminal state.
    pub ended_at_ms: Option<i64>,
    /// The response, when the request was answered and details were read.
    pub result: Option<JobResult>,
    /// Set when the job is `FAILED` (and, with details, carries the upstream's error).
    pub error: Option<JobError>,
    pub usage: JobUsage,
}

/// How much of a job to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Status, timings and usage (no output file read).
    Summary,
    /// Also the result and the precise error, from the job's output or error line.
    Full,
}

/// `list_jobs` parameters.
#[derive(Debug, Clone)]
pub struct ListJobs {
    /// A job id from a previous page: the page starts after it.
    pub after: Option<String>,
    /// 1…100 (default 20).
    pub limit: Option<i64>,
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    pub detail: Detail,
}

impl Default for ListJobs {
    fn default() -> Self {
        Self { after: None, limit: None, status: None, detail: Detail::Summary }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// More jobs follow the last one.
    pub has_more: bool,
}

fn store(state: &AppState) -> Result<&Arc<BatchStore>, Error> {
    files::store(state)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("No job found with id '{}'.", crate::domain::text::Escaped(id)).into())
}

fn bad(message: impl Into<std::borrow::Cow<'static, str>>, param: &'static str) -> Error {
    Error::bad_request(message, Some(param))
}

/// True when `row` is a job (its metadata carries the job marker).
fn is_job(row: &BatchRow) -> bool {
    metadata(row).get(JOB_METADATA_KEY).and_then(Value::as_str).is_some()
}

fn metadata(row: &BatchRow) -> serde_json::Map<String, Value> {
    row.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default()
}

// ---------------------------------------------------------------- create

/// Creates a job for the caller's own tenant: a text job runs as a one-line batch; an image job
/// is refused.
///
/// # Errors
/// Those of [`create_text_job`]; 400 for [`NewJob::Image`] ("image generation is not routed yet").
pub async fn create_job(state: &Arc<AppState>, principal: &Principal, job: &NewJob) -> Result<Job, Error> {
    principal.caller()?;
    match job {
        NewJob::Text(text) => create_text_job(state, principal, text).await,
        NewJob::Image { .. } => {
            Err(bad("IMAGE jobs are refused: image generation is not routed yet. Create a TEXT job.", "type"))
        }
    }
}

/// Creates a text job: checks the input, writes the one-line input file (`purpose=batch`) and
/// creates its batch on `/v1/chat/completions`, then answers the new job (`PENDING`). The worker
/// runs it like any batch line: the same routing, limits and metering, one ledger row.
///
/// # Errors
/// Refused for the admin key (not a tenant); 400 for a missing model, both or neither of prompt and
/// messages, an empty message, an unknown role, `max_tokens` < 1, `temperature` outside 0…2, or more
/// than [`MAX_INPUT_BYTES`] of text; 404 for a model that routes nowhere; 503 when the store fails.
pub async fn create_text_job(state: &Arc<AppState>, principal: &Principal, job: &TextJob) -> Result<Job, Error> {
    principal.caller()?;
    let model = job.model.trim();
    if model.is_empty() {
        return Err(bad("A job needs a `model`.", "model"));
    }
    if model.chars().count() > MAX_MODEL_CHARS {
        return Err(bad(format!("`model` is longer than {MAX_MODEL_CHARS} characters."), "model"));
    }
    crate::domain::routing::resolve(&state.config, model)?;
    let messages: Vec<Value> = match (&job.prompt, &job.messages) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(bad("Give either `prompt` or `messages`, not both or neither.", "prompt"))
        }
        (Some(p), None) => {
            if p.trim().is_empty() {
                return Err(bad("`prompt` is empty.", "prompt"));
            }
            vec![json!({"role": "user", "content": p})]
        }
        (None, Some(ms)) => {
            if ms.is_empty() {
                return Err(bad("`messages` is empty.", "messages"));
            }
            let mut out = Vec::with_capacity(ms.len());
            for m in ms {
                if !ROLES.contains(&m.role.as_str()) {
                    return Err(bad(
                        format!(
                            "Unknown message role '{}': expected one of {}.",
                            crate::domain::text::Escaped(&m.role),
                            ROLES.join(", ")
                        ),
                        "messages",
                    ));
                }
                out.push(json!({"role": m.role, "content": m.content}));
            }
            out
        }
    };
    let text_bytes = job.prompt.as_ref().map_or(0, String::len)
        + job.messages.as_ref().map_or(0, |ms| ms.iter().map(|m| m.content.len()).sum());
    if text_bytes > MAX_INPUT_BYTES {
        return Err(bad(format!("A job's text is at most {MAX_INPUT_BYTES} bytes."), "messages"));
    }
    let mut body = json!({"model": model, "messages": messages});
    if let Some(n) = job.max_tokens {
        if n == 0 {
            return Err(bad("`maxTokens` must be at least 1.", "max_tokens"));
        }
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = job.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(bad("`temperature` must be between 0 and 2.", "temperature"));
        }
        body["temperature"] = json!(t);
    }
    let mut line =
        serde_json::to_vec(&json!({"custom_id": LINE_ID, "method": "POST", "url": CHAT_ENDPOINT, "body": body}))
            .map_err(|e| Error::Internal(format!("job line: {e}").into()))?;
    line.push(b'\n');

    let mut upload = files::begin_upload(state, principal, "job.jsonl", Some("batch")).await?;
    if let Err(e) = upload.write(&line).await {
        upload.abort().await;
        return Err(e);
    }
    let file = upload.finish(state, None, None).await?;
    let create = json!({
        "input_file_id": file.id,
        "endpoint": CHAT_ENDPOINT,
        "completion_window": "24h",
        "metadata": {JOB_METADATA_KEY: TEXT_KIND, MODEL_METADATA_KEY: model},
    });
    let batch = batches::create(state, principal, create.to_string().as_bytes(), None).await?;
    tracing::info!(job_id = %batch.id, "job created");
    job_by_id(state, principal, &batch.id, Detail::Full).await
}

// ---------------------------------------------------------------- read

/// One of the caller's jobs, with its result and error (two store queries).
///
/// # Errors
/// Refused for the admin key; 404 for an unknown id, another tenant's job, or a batch that is not a job.
pub async fn job(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<Job, Error> {
    job_by_id(state, principal, id, Detail::Full).await
}

async fn job_by_id(state: &Arc<AppState>, principal: &Principal, id: &str, detail: Detail) -> Result<Job, Error> {
    let scope = principal.own_scope()?;
    let store = store(state)?;
    let row =
        store.batch(scope.tenant(), id).await.map_err(store_error)?.filter(is_job).ok_or_else(|| not_found(id))?;
    let lines = store.first_lines(std::slice::from_ref(&row.id), detail == Detail::Full).await.map_err(store_error)?;
    Ok(view(&row, lines.first(), detail))
}

/// A page of the caller's jobs, newest first, optionally only those in one state: three store
/// queries (cursor, page, first lines) whatever the page size.
///
/// # Errors
/// Refused for the admin key; 400 for a limit outside 1…100 or an `after` that is not one of the
/// caller's jobs.
pub async fn list_jobs(state: &Arc<AppState>, principal: &Principal, p: &ListJobs) -> Result<JobPage, Error> {
    let scope = principal.own_scope()?;
    let limit = p.limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_LIST}."), "limit"));
    }
    let store = store(state)?;
    let after = match &p.after {
        Some(a) => Some(
            store
                .batch(scope.tenant(), a)
                .await
                .map_err(store_error)?
                .filter(is_job)
                .ok_or_else(|| bad("`after` is not a job of this tenant.", "after"))?,
        ),
        None => None,
    };
    let filter =
        BatchFilter { metadata: Some((JOB_METADATA_KEY, TEXT_KIND)), progress: p.status.map(JobStatus::progress) };
    let (rows, has_more) =
        store.list_batches_where(scope.tenant(), after.as_ref(), limit, &filter).await.map_err(store_error)?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let lines = store.first_lines(&ids, p.detail == Detail::Full).await.map_err(store_error)?;
    let jobs: Vec<Job> = rows.iter().map(|r| view(r, lines.iter().find(|l| l.batch_id == r.id), p.detail)).collect();
    Ok(JobPage { has_more: has_more && !jobs.is_empty(), jobs })
}

/// Cancels one of the caller's jobs (its batch): a `PENDING` or `PROCESSING` job becomes `FAILED`
/// with error code `cancelled` once its batch is cancelled (a request already running finishes
/// first). Cancelling a job already cancelling or cancelled answers it as it is, like the Batch API.
///
/// # Errors
/// Refused for the admin key; 404 for an unknown or other tenant's job; 400 for a job that ended
/// otherwise (completed, failed validation, expired).
pub async fn cancel_job(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<Job, Error> {
    job_by_id(state, principal, id, Detail::Summary).await?;
    batches::cancel(state, principal, id).await?;
    job_by_id(state, principal, id, Detail::Full).await
}

/// Follows one of the caller's jobs: the current state at once, then every change (a new status,
/// its result, its usage), ending after `COMPLETED` or `FAILED`, at shutdown, or with an error (404
/// for a job the caller may not see, checked on every read). Woken by this replica's batch steps
/// and worker, and re-read every [`batches::WATCH_FALLBACK`] for changes made by another replica.
pub fn watch_job(
    state: Arc<AppState>,
    principal: Principal,
    id: String,
) -> impl futures_util::Stream<Item = Result<Job, Error>> + Send + 'static {
    let read_state = state.clone();
    let read_id = id.clone();
    batches::watch_with(
        state,
        id,
        move || {
            let (state, principal, id) = (read_state.clone(), principal.clone(), read_id.clone());
            async move { job(&state, &principal, &id).await }
        },
        |j: &Job| j.status.is_terminal(),
    )
}

// ---------------------------------------------------------------- the view

fn view(row: &BatchRow, line: Option<&LineView>, detail: Detail) -> Job {
    let meta = metadata(row);
    let status = status_of(&row.status, row.failed, line.is_some_and(|l| l.started));
    let parsed: Option<Value> =
        line.and_then(|l| l.result_line.as_deref()).and_then(|b| serde_json::from_slice(b).ok());
    let result = parsed.as_ref().and_then(result_of);
    let error = match status {
        JobStatus::Failed => Some(error_of(row, parsed.as_ref(), detail)),
        JobStatus::Pending | JobStatus::Processing | JobStatus::Completed => None,
    };
    Job {
        id: row.id.clone(),
        kind: JobKind::Text,
        status,
        batch_status: row.status.clone(),
        model: meta.get(MODEL_METADATA_KEY).and_then(Value::as_str).map(str::to_owned).or_else(|| row.model.clone()),
        created_at_ms: row.created_at_ms,
        queued_at_ms: row.in_progress_at_ms,
        answered_at_ms: line.and_then(|l| l.finished_at_ms),
        ended_at_ms: row.completed_at_ms.or(row.failed_at_ms).or(row.cancelled_at_ms).or(row.expired_at_ms),
        result,
        error,
        usage: line.map_or_else(JobUsage::default, |l| JobUsage {
            prompt_tokens: l.prompt_tokens,
            cached_tokens: l.cached_tokens,
            completion_tokens: l.completion_tokens,
            cost_nano_usd: l.cost_nano_usd,
        }),
    }
}

/// The response of an output or error file line (`{"response": {"status_code", "body"}}`).
fn result_of(line: &Value) -> Option<JobResult> {
    let response = line.get("response").filter(|r| !r.is_null())?;
    let status_code = response.get("status_code").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok())?;
    let body = response.get("body").cloned().unwrap_or(Value::Null);
    Some(JobResult { status_code, text: completion_text(&body), body })
}

/// `choices[0].message.content`: a string, or the text parts of a content array.
pub fn completion_text(body: &Value) -> Option<String> {
    let content = body.get("choices")?.get(0)?.get("message")?.get("content")?;
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
        }
        _ => None,
    }
}

fn error_of(row: &BatchRow, line: Option<&Value>, detail: Detail) -> JobError {
    match row.status.as_str() {
        "cancelled" => return JobError { code: "cancelled".into(), message: "The job was cancelled.".into() },
        "expired" => {
            return JobError {
                code: "expired".into(),
                message: "The job was not run before its completion window ended.".into(),
            }
        }
        "failed" => {
            let first = row.errors.as_deref().and_then(|e| serde_json::from_str::<Vec<BatchError>>(e).ok()).and_then(
                |mut v| {
                    if v.is_empty() {
                        None
                    } else {
                        Some(v.swap_remove(0))
                    }
                },
            );
            return first.map_or_else(
                || JobError { code: "invalid_job".into(), message: "The job's input was refused.".into() },
                |e| JobError { code: e.code, message: e.message },
            );
        }
        _ => {}
    }
    // A completed batch whose line failed: the upstream's (or the gateway's) error body.
    let from_line = line.and_then(|l| {
        let err =
            l.get("response").and_then(|r| r.get("body")).and_then(|b| b.get("error")).or_else(|| l.get("error"))?;
        let message = err.get("message").and_then(Value::as_str).unwrap_or("The request failed.").to_owned();
        let code = err
            .get("code")
            .and_then(Value::as_str)
            .or_else(|| err.get("type").and_then(Value::as_str))
            .unwrap_or("request_failed")
            .to_owned();
        Some(JobError { code, message })
    });
    from_line.unwrap_or_else(|| JobError {
        code: "request_failed".into(),
        message: match detail {
            Detail::Full => "The request failed.".into(),
            Detail::Summary => "The request failed; read the job for details.".into(),
        },
    })
}

#[cfg(test)]
mod tests;
