//! Jobs, batches and files in the schema: queries, mutations and the two subscriptions. Every
//! resolver calls one operation of `services::jobs`, `services::batches` or `services::files` with the
//! request's principal; states, checks and the watch loop are the services' (a tenant key sees and
//! cancels its own, the admin key every tenant's; only a tenant key creates jobs).
//!
//! Lists are paged in the store (keyset on the item's id, in the cursor), so a page is a bounded
//! number of store queries whatever its size: a job list reads its jobs' results in one more query,
//! and only when the selection asks for `result` or `error`.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Subscription, ID};
use futures_util::{Stream, StreamExt};

use super::errors::{bad_input, to_graphql};
use super::schema::{caller, page_complexity, svc, DEFAULT_PAGE, MAX_PAGE};
use crate::domain::pricing::format_usd;
use crate::domain::principal::Principal;
use crate::services::jobs::{self, Detail, ListJobs, NewJob, TextJob};
use crate::services::{batches, files, AppState};

type Result<T> = std::result::Result<T, async_graphql::Error>;

fn rfc3339_s(secs: i64) -> String {
    translators::rfc3339::format_rfc3339(u64::try_from(secs.max(0)).unwrap_or(0))
}

fn rfc3339_ms(ms: i64) -> String {
    rfc3339_s(ms / 1000)
}

// ---------------------------------------------------------------- paging

/// The page size of a store-paged list: 1…100, 20 when absent.
fn page_size(first: Option<i32>) -> Result<i64> {
    match first {
        None => Ok(i64::try_from(DEFAULT_PAGE).unwrap_or(20)),
        Some(n) if n < 1 => Err(bad_input("`first` must be at least 1.")),
        Some(n) if usize::try_from(n).unwrap_or(usize::MAX) > MAX_PAGE => {
            Err(bad_input(format!("`first` must be at most {MAX_PAGE}.")))
        }
        Some(n) => Ok(i64::from(n)),
    }
}

fn cursor_of(id: &str) -> String {
    hex::encode(id.as_bytes())
}

/// The item id inside a cursor of these lists.
fn id_of_cursor(cursor: Option<String>) -> Result<Option<String>> {
    cursor
        .map(|c| {
            hex::decode(&c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad_input("`after` is not a cursor of this list."))
        })
        .transpose()
}

fn connection<T: async_graphql::OutputType>(
    items: Vec<T>,
    has_more: bool,
    after_given: bool,
    id: impl Fn(&T) -> &str,
) -> Connection<String, T, EmptyFields> {
    let mut conn = Connection::new(after_given, has_more);
    conn.edges.extend(items.into_iter().map(|item| Edge::new(cursor_of(id(&item)), item)));
    conn
}

// ---------------------------------------------------------------- jobs

/// A job's state (issue 15). A cancelled or expired job is `FAILED`, with `error.code`
/// `cancelled` or `expired`; `batchStatus` has the precise batch status behind it.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted, not yet picked up by a worker (batch `validating`, or `in_progress` with its line queued).
    Pending,
    /// Its request runs, or waits for a retry, or the job is being finalized or cancelled.
    Processing,
    /// Answered; `result` holds the answer.
    Completed,
    /// Ended without a result: see `error`.
    Failed,
}

impl From<jobs::JobStatus> for JobStatus {
    fn from(s: jobs::JobStatus) -> Self {
        match s {
            jobs::JobStatus::Pending => JobStatus::Pending,
            jobs::JobStatus::Processing => JobStatus::Processing,
            jobs::JobStatus::Completed => JobStatus::Completed,
            jobs::JobStatus::Failed => JobStatus::Failed,
        }
    }
}

impl From<JobStatus> for jobs::JobStatus {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => jobs::JobStatus::Pending,
            JobStatus::Processing => jobs::JobStatus::Processing,
            JobStatus::Completed => jobs::JobStatus::Completed,
            JobStatus::Failed => jobs::JobStatus::Failed,
        }
    }
}

/// What a job runs.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum JobType {
    /// A chat completion: a model and a prompt or messages.
    Text,
    /// Image generation: refused (`BAD_USER_INPUT`) until it is routed.
    Image,
}

/// One chat message.
#[derive(InputObject)]
pub struct ChatMessageInput {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A new job. `TEXT`: `model` and either `prompt` or `messages`, optionally `maxTokens` and `temperature`.
#[derive(InputObject)]
pub struct CreateJobInput {
    #[graphql(name = "type")]
    pub kind: JobType,
    /// A model or alias, as in `/v1/chat/completions` (required for `TEXT`).
    pub model: Option<String>,
    /// One user message.
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessageInput>>,
    pub max_tokens: Option<u32>,
    /// 0 to 2.
    pub temperature: Option<f64>,
}

impl From<CreateJobInput> for NewJob {
    fn from(i: CreateJobInput) -> Self {
        match i.kind {
            JobType::Image => NewJob::Image { prompt: i.prompt.unwrap_or_default() },
            JobType::Text => NewJob::Text(TextJob {
                model: i.model.unwrap_or_default(),
                prompt: i.prompt,
                messages: i
                    .messages
                    .map(|ms| ms.into_iter().map(|m| jobs::ChatMessage { role: m.role, content: m.content }).collect()),
                max_tokens: i.max_tokens,
                temperature: i.temperature,
            }),
        }
    }
}

/// The answer of a job's request.
#[derive(SimpleObject)]
pub struct JobResult {
    /// The HTTP status it was answered with (200 when `COMPLETED`).
    pub status_code: u16,
    /// The completion's text (`choices[0].message.content`).
    pub text: Option<String>,
    /// The full response body, as in the batch's output file.
    pub response: Json<serde_json::Value>,
}

/// Why a job failed.
#[derive(SimpleObject)]
pub struct JobError {
    /// `cancelled`, `expired`, a validation code, or the upstream's error code.
    pub code: String,
    pub message: String,
}

/// Tokens and cost of a job's request (zero until it ran).
#[derive(SimpleObject)]
pub struct JobUsage {
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Decimal USD from the job's ledger row; `null` until the row is written.
    pub cost_usd: Option<String>,
}

/// A job: one model request run in the background (a one-line batch; `batch(id:)` with the same id
/// shows the batch).
pub struct Job(jobs::Job);

#[Object]
impl Job {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The tenant that owns the job and is billed for it.
    async fn tenant_id(&self) -> ID {
        ID(self.0.tenant.clone())
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> JobType {
        match self.0.kind {
            jobs::JobKind::Text => JobType::Text,
            jobs::JobKind::Image => JobType::Image,
        }
    }
    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }
    /// The batch status behind `status`.
    async fn batch_status(&self) -> BatchStatus {
        BatchStatus::of(&self.0.batch_status)
    }
    async fn model(&self) -> Option<&str> {
        self.0.model.as_deref()
    }
    /// RFC 3339, UTC.
    async fn created_at(&self) -> String {
        rfc3339_ms(self.0.created_at_ms)
    }
    /// When its request was validated and queued.
    async fn queued_at(&self) -> Option<String> {
        self.0.queued_at_ms.map(rfc3339_ms)
    }
    /// When its request was answered (or closed by a cancel or expiry).
    async fn answered_at(&self) -> Option<String> {
        self.0.answered_at_ms.map(rfc3339_ms)
    }
    /// When it reached `COMPLETED` or `FAILED`.
    async fn ended_at(&self) -> Option<String> {
        self.0.ended_at_ms.map(rfc3339_ms)
    }
    /// Milliseconds from creation to the end (`null` while it runs).
    async fn duration_ms(&self) -> Option<i64> {
        self.0.ended_at_ms.map(|e| (e - self.0.created_at_ms).max(0))
    }
    /// The answer, once the request was answered (also for a failed request the upstream answered).
    async fn result(&self) -> Option<JobResult> {
        self.0.result.as_ref().map(|r| JobResult {
            status_code: r.status_code,
            text: r.text.clone(),
            response: Json(r.body.clone()),
        })
    }
    /// Set when `FAILED`.
    async fn error(&self) -> Option<JobError> {
        self.0.error.as_ref().map(|e| JobError { code: e.code.clone(), message: e.message.clone() })
    }
    async fn usage(&self) -> JobUsage {
        let u = self.0.usage;
        JobUsage {
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.cached_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            cost_usd: u.cost_nano_usd.map(format_usd),
        }
    }
}

// ---------------------------------------------------------------- batches and files

/// A batch's status (OpenAI's Batch statuses).
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    fn of(s: &str) -> Self {
        match s {
            "validating" => BatchStatus::Validating,
            "in_progress" => BatchStatus::InProgress,
            "finalizing" => BatchStatus::Finalizing,
            "completed" => BatchStatus::Completed,
            "expired" => BatchStatus::Expired,
            "cancelling" => BatchStatus::Cancelling,
            "cancelled" => BatchStatus::Cancelled,
            _ => BatchStatus::Failed,
        }
    }
}

/// Lines of a batch by outcome.
#[derive(SimpleObject)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// Tokens of a batch's lines so far.
#[derive(SimpleObject)]
pub struct BatchUsage {
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
}

/// A validation error of a failed batch.
#[derive(SimpleObject)]
pub struct BatchValidationError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    /// 1-based line of the input file.
    pub line: Option<i64>,
}

/// A batch of the Batch API (`/v1/batches`), as the REST API shows it.
pub struct Batch(batches::BatchObject);

#[Object]
impl Batch {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The tenant that owns the batch and is billed for it.
    async fn tenant_id(&self) -> ID {
        ID(self.0.tenant.clone())
    }
    async fn status(&self) -> BatchStatus {
        BatchStatus::of(&self.0.status)
    }
    async fn endpoint(&self) -> &str {
        &self.0.endpoint
    }
    /// The model, when every line names the same one.
    async fn model(&self) -> Option<&str> {
        self.0.model.as_deref()
    }
    /// True when this batch is a job (created by `createJob`).
    async fn is_job(&self) -> bool {
        self.0.metadata.as_ref().is_some_and(|m| m.contains_key(jobs::JOB_METADATA_KEY))
    }
    async fn input_file_id(&self) -> ID {
        ID(self.0.input_file_id.clone())
    }
    async fn output_file_id(&self) -> Option<ID> {
        self.0.output_file_id.clone().map(ID)
    }
    async fn error_file_id(&self) -> Option<ID> {
        self.0.error_file_id.clone().map(ID)
    }
    async fn completion_window(&self) -> &str {
        &self.0.completion_window
    }
    async fn request_counts(&self) -> RequestCounts {
        let c = self.0.request_counts;
        RequestCounts { total: c.total, completed: c.completed, failed: c.failed }
    }
    async fn usage(&self) -> BatchUsage {
        let u = &self.0.usage;
        BatchUsage {
            input_tokens: u.input_tokens,
            cached_tokens: u.input_tokens_details.cached_tokens,
            output_tokens: u.output_tokens,
            total_tokens: u.total_tokens,
        }
    }
    /// Validation errors of a `FAILED` batch.
    async fn errors(&self) -> Vec<BatchValidationError> {
        self.0.errors.as_ref().map_or_else(Vec::new, |e| {
            e.data
                .iter()
                .map(|e| BatchValidationError {
                    code: e.code.clone(),
                    message: e.message.clone(),
                    param: e.param.clone(),
                    line: e.line,
                })
                .collect()
        })
    }
    /// The batch's metadata (string values).
    async fn metadata(&self) -> Option<Json<serde_json::Map<String, serde_json::Value>>> {
        self.0.metadata.clone().map(Json)
    }
    /// RFC 3339, UTC (as every time below).
    async fn created_at(&self) -> String {
        rfc3339_s(self.0.created_at)
    }
    async fn in_progress_at(&self) -> Option<String> {
        self.0.in_progress_at.map(rfc3339_s)
    }
    async fn expires_at(&self) -> Option<String> {
        self.0.expires_at.map(rfc3339_s)
    }
    async fn finalizing_at(&self) -> Option<String> {
        self.0.finalizing_at.map(rfc3339_s)
    }
    async fn completed_at(&self) -> Option<String> {
        self.0.completed_at.map(rfc3339_s)
    }
    async fn failed_at(&self) -> Option<String> {
        self.0.failed_at.map(rfc3339_s)
    }
    async fn expired_at(&self) -> Option<String> {
        self.0.expired_at.map(rfc3339_s)
    }
    async fn cancelling_at(&self) -> Option<String> {
        self.0.cancelling_at.map(rfc3339_s)
    }
    async fn cancelled_at(&self) -> Option<String> {
        self.0.cancelled_at.map(rfc3339_s)
    }
}

/// A file of the Files API (uploads, and batch output and error files).
pub struct File(files::FileObject);

#[Object]
impl File {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The tenant that owns the file.
    async fn tenant_id(&self) -> ID {
        ID(self.0.tenant.clone())
    }
    async fn filename(&self) -> &str {
        &self.0.filename
    }
    /// `batch`, `batch_output`, `user_data`, …
    async fn purpose(&self) -> &str {
        &self.0.purpose
    }
    async fn bytes(&self) -> i64 {
        self.0.bytes
    }
    /// RFC 3339, UTC.
    async fn created_at(&self) -> String {
        rfc3339_s(self.0.created_at)
    }
    async fn expires_at(&self) -> Option<String> {
        self.0.expires_at.map(rfc3339_s)
    }
}

// ---------------------------------------------------------------- roots

/// Queries on jobs, batches and files: a tenant key's own, the admin key's every tenant's (narrowed
/// with `tenantId`; a tenant naming another tenant is NOT_FOUND, as in `keys(tenantId:)`).
#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// Jobs, newest first, optionally only those in one state: a tenant's own; for the admin every
    /// tenant's, or only `tenantId`'s.
    #[graphql(complexity = "page_complexity(child_complexity, first)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<JobStatus>,
        tenant_id: Option<ID>,
    ) -> Result<Connection<String, Job, EmptyFields>> {
        let (state, principal) = owned_caller(ctx)?;
        let node = ctx.look_ahead().field("edges").field("node");
        let detail =
            if node.field("result").exists() || node.field("error").exists() { Detail::Full } else { Detail::Summary };
        let after_id = id_of_cursor(after)?;
        let params = ListJobs {
            tenant: tenant_id.map(|t| t.0),
            after: after_id.clone(),
            limit: Some(page_size(first)?),
            status: status.map(Into::into),
            detail,
        };
        let page = svc(jobs::list_jobs(&state, &principal, &params).await)?;
        Ok(connection(page.jobs.into_iter().map(Job).collect(), page.has_more, after_id.is_some(), |j| &j.0.id))
    }

    /// A job: a tenant's own (another tenant's is NOT_FOUND), any for the admin.
    async fn job(&self, ctx: &Context<'_>, id: ID) -> Result<Job> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(Job(svc(jobs::job(&state, &principal, &id).await)?))
    }

    /// Batches (jobs included), newest first: a tenant's own; for the admin every tenant's, or only
    /// `tenantId`'s.
    #[graphql(complexity = "page_complexity(child_complexity, first)")]
    async fn batches(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        tenant_id: Option<ID>,
    ) -> Result<Connection<String, Batch, EmptyFields>> {
        let (state, principal) = owned_caller(ctx)?;
        let after_id = id_of_cursor(after)?;
        let tenant = tenant_id.as_ref().map(|t| t.as_str());
        let list = svc(batches::list(&state, &principal, tenant, after_id.as_deref(), Some(page_size(first)?)).await)?;
        Ok(connection(list.data.into_iter().map(Batch).collect(), list.has_more, after_id.is_some(), |b| &b.0.id))
    }

    /// A batch: a tenant's own (another tenant's is NOT_FOUND), any for the admin.
    async fn batch(&self, ctx: &Context<'_>, id: ID) -> Result<Batch> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(Batch(svc(batches::retrieve(&state, &principal, &id).await)?))
    }

    /// Files, newest first (uploads, job inputs, batch output and error files): a tenant's own; for
    /// the admin every tenant's, or only `tenantId`'s.
    #[graphql(complexity = "page_complexity(child_complexity, first)")]
    async fn files(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        tenant_id: Option<ID>,
    ) -> Result<Connection<String, File, EmptyFields>> {
        let (state, principal) = owned_caller(ctx)?;
        let after_id = id_of_cursor(after)?;
        let params = files::ListParams {
            tenant: tenant_id.map(|t| t.0),
            after: after_id.clone(),
            limit: Some(page_size(first)?),
            ..Default::default()
        };
        let list = svc(files::list(&state, &principal, &params).await)?;
        Ok(connection(list.data.into_iter().map(File).collect(), list.has_more, after_id.is_some(), |f| &f.0.id))
    }
}

/// Mutations on jobs and batches.
#[derive(Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// Creates a job for the caller's tenant (`PENDING`); follow it with `jobUpdated` or `job`. A
    /// tenant key only: the admin key is FORBIDDEN (a job is billed to a tenant's key). `IMAGE` is
    /// refused with BAD_USER_INPUT until image generation is routed.
    async fn create_job(&self, ctx: &Context<'_>, input: CreateJobInput) -> Result<Job> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(Job(svc(jobs::create_job(&state, &principal, &input.into()).await)?))
    }

    /// Cancels a job (a tenant its own, the admin any): it ends `FAILED` with `error.code` `cancelled`. A finished
    /// job is BAD_USER_INPUT.
    async fn cancel_job(&self, ctx: &Context<'_>, id: ID) -> Result<Job> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(Job(svc(jobs::cancel_job(&state, &principal, &id).await)?))
    }

    /// Cancels a batch (a tenant its own, the admin any) (`CANCELLING`, then `CANCELLED`), like
    /// `POST /v1/batches/{id}/cancel`.
    async fn cancel_batch(&self, ctx: &Context<'_>, id: ID) -> Result<Batch> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(Batch(svc(batches::cancel(&state, &principal, &id).await)?))
    }
}

/// Subscriptions (graphql-sse: `POST /graphql` with `Accept: text/event-stream`).
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The job now, then at every change, until it is `COMPLETED` or `FAILED` (the stream then ends).
    /// A tenant follows its own jobs, the admin any.
    async fn job_updated(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = Result<Job>>> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(jobs::watch_job(state, principal, id.0).map(|r| r.map(Job).map_err(to_graphql)))
    }

    /// The batch now, then at every change, until it is `COMPLETED`, `FAILED`, `EXPIRED` or `CANCELLED`.
    /// A tenant follows its own batches, the admin any.
    async fn batch_updated(&self, ctx: &Context<'_>, id: ID) -> Result<impl Stream<Item = Result<Batch>>> {
        let (state, principal) = owned_caller(ctx)?;
        Ok(batches::watch(state, principal, id.0).map(|r| r.map(Batch).map_err(to_graphql)))
    }
}

/// The services and principal, owned (subscriptions outlive the resolver's borrow).
fn owned_caller(ctx: &Context<'_>) -> Result<(Arc<AppState>, Principal)> {
    let (_, principal) = caller(ctx)?;
    Ok((ctx.data::<Arc<AppState>>()?.clone(), principal.clone()))
}
