//! The Files API (`/v1/files`). Uploading and deleting take the caller's own
//! [`TenantScope`](crate::domain::principal::TenantScope) (a tenant key); reading, listing and
//! downloading take its [`OwnerScope`](crate::domain::principal::OwnerScope): a tenant its own files
//! (another tenant's file ids are 404 like ids that never existed), the admin every tenant's.
//!
//! Uploads are streamed to the store in bounded pieces ([`Upload::write`]); `purpose=batch` needs a
//! `.jsonl` name and at most 200 MB (OpenAI's Batch limits), every purpose at most 512 MB.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::error::Error;
use super::state::AppState;
use crate::domain::principal::{Principal, TenantScope};
use crate::domain::time::now_unix_ms;
use crate::stores::batches::{BatchStore, ContentReader, FileKind, FileRow, FileWriter, StoreError};

/// OpenAI's per-file limit.
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// OpenAI's Batch API input limit.
pub const MAX_BATCH_FILE_BYTES: u64 = 200 * 1024 * 1024;
/// Batch input files expire after 30 days by default (OpenAI's default for `purpose=batch`).
const BATCH_FILE_TTL_SECS: i64 = 30 * 86_400;
/// `expires_after[seconds]` bounds (OpenAI: one hour to 30 days).
const MIN_EXPIRY_SECS: i64 = 3600;
const MAX_EXPIRY_SECS: i64 = 30 * 86_400;
/// Purposes a client may upload with (OpenAI's create enum).
const PURPOSES: &[&str] = &["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];
/// Most files in one list page (OpenAI's maximum and default).
const MAX_LIST: i64 = 10_000;

/// OpenAI's `OpenAIFile` object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileObject {
    pub id: String,
    /// The tenant that owns the file. Not in OpenAI's object: shown by GraphQL.
    #[serde(skip)]
    pub tenant: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    /// Deprecated but required by the schema: every stored file is `processed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_details: Option<String>,
}

impl FileObject {
    /// The wire object of a stored file.
    pub fn of(f: &FileRow) -> Self {
        Self {
            id: f.id.clone(),
            tenant: f.tenant.clone(),
            object: "file",
            bytes: f.bytes,
            created_at: f.created_at_ms / 1000,
            expires_at: f.expires_at_ms.map(|ms| ms / 1000),
            filename: f.filename.clone(),
            purpose: f.purpose.clone(),
            status: "processed",
            status_details: None,
        }
    }
}

/// `GET /v1/files`'s answer.
#[derive(Debug, Serialize)]
pub struct FileList {
    pub object: &'static str,
    pub data: Vec<FileObject>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `DELETE /v1/files/{id}`'s answer.
#[derive(Debug, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// `GET /v1/files` parameters.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// Only this tenant's files: the admin any tenant, a tenant only itself (another is refused).
    pub tenant: Option<String>,
    pub purpose: Option<String>,
    pub after: Option<String>,
    pub limit: Option<i64>,
    /// `asc` or `desc` (default).
    pub order: Option<String>,
}

/// The store error as the API shows it: 503, retryable.
pub(crate) fn store_error(e: StoreError) -> Error {
    tracing::warn!(error = %e, "batch store failure");
    Error::StoreUnavailable(e.to_string().into())
}

/// The batch store, or 503 when the gateway runs without one.
pub(crate) fn store(state: &AppState) -> Result<&Arc<BatchStore>, Error> {
    state
        .batches
        .as_ref()
        .map(|b| &b.store)
        .ok_or_else(|| Error::StoreUnavailable("the batch store is not configured".into()))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("No such File object: {}", crate::domain::text::Escaped(id)).into())
}

/// A new id: `file-` and 24 random alphanumerics, like OpenAI's.
pub fn new_file_id() -> String {
    let mut id = String::from("file-");
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// An upload in progress: the file part is streamed into it.
pub struct Upload {
    scope: TenantScope,
    id: String,
    filename: String,
    purpose: Option<String>,
    writer: FileWriter,
}

/// Starts an upload for the caller's own tenant. `purpose` is known when the form sent it before the
/// file part (the SDKs do); otherwise it is checked at [`Upload::finish`].
///
/// # Errors
/// 401 for the admin key (files belong to a tenant); 400 for a bad purpose or a batch file that is not
/// `.jsonl`; 503 when the store fails.
pub async fn begin_upload(
    state: &Arc<AppState>,
    principal: &Principal,
    filename: &str,
    purpose: Option<&str>,
) -> Result<Upload, Error> {
    let scope = principal.own_scope()?;
    if let Some(p) = purpose {
        check_purpose(p, filename)?;
    }
    let id = new_file_id();
    let writer = store(state)?.writer(&id).await.map_err(store_error)?;
    Ok(Upload { scope, id, filename: filename.to_owned(), purpose: purpose.map(str::to_owned), writer })
}

fn check_purpose(purpose: &str, filename: &str) -> Result<(), Error> {
    if !PURPOSES.contains(&purpose) {
        return Err(Error::bad_request(
            format!(
                "Invalid purpose `{}`: expected one of {}.",
                crate::domain::text::Escaped(purpose),
                PURPOSES.join(", ")
            ),
            Some("purpose"),
        ));
    }
    if purpose == "batch" && !filename.ends_with(".jsonl") {
        return Err(Error::bad_request("Invalid file format for Batch API. Must be .jsonl", Some("file")));
    }
    Ok(())
}

impl Upload {
    /// Appends a piece of the file.
    ///
    /// # Errors
    /// 413 past the size limit of the purpose; 503 when the store fails.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let limit = if self.purpose.as_deref() == Some("batch") { MAX_BATCH_FILE_BYTES } else { MAX_FILE_BYTES };
        if self.writer.len() + data.len() as u64 > limit {
            return Err(too_large(limit));
        }
        self.writer.write(data).await.map_err(store_error)
    }

    /// Completes the upload: checks the purpose (if it came after the file), makes the content durable,
    /// then inserts the file row.
    ///
    /// # Errors
    /// 400 for a missing or bad purpose or expiry; 503 when the store fails. The content is discarded.
    pub async fn finish(
        self,
        state: &Arc<AppState>,
        purpose: Option<&str>,
        expires_after_secs: Option<i64>,
    ) -> Result<FileObject, Error> {
        let Some(purpose) = purpose.map(str::to_owned).or(self.purpose.clone()) else {
            self.writer.abort().await;
            return Err(Error::bad_request("Missing required parameter: 'purpose'.", Some("purpose")));
        };
        if let Err(e) = check_purpose(&purpose, &self.filename) {
            self.writer.abort().await;
            return Err(e);
        }
        if purpose == "batch" && self.writer.len() > MAX_BATCH_FILE_BYTES {
            self.writer.abort().await;
            return Err(too_large(MAX_BATCH_FILE_BYTES));
        }
        if let Some(s) = expires_after_secs {
            if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&s) {
                self.writer.abort().await;
                return Err(Error::bad_request(
                    format!("expires_after[seconds] must be between {MIN_EXPIRY_SECS} and {MAX_EXPIRY_SECS}."),
                    Some("expires_after[seconds]"),
                ));
            }
        }
        let bytes = self.writer.finish().await.map_err(store_error)?;
        let now = now_unix_ms();
        let ttl = expires_after_secs.or((purpose == "batch").then_some(BATCH_FILE_TTL_SECS));
        let row = FileRow {
            id: self.id,
            tenant: self.scope.tenant().to_owned(),
            purpose,
            filename: self.filename,
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            kind: FileKind::Blob,
            batch_id: None,
            created_at_ms: now,
            expires_at_ms: ttl.map(|s| now + s * 1000),
        };
        store(state)?.insert_file(&row).await.map_err(store_error)?;
        tracing::info!(file_id = %row.id, tenant = %crate::domain::text::Escaped(&row.tenant), bytes = row.bytes, purpose = %row.purpose, "file uploaded");
        Ok(FileObject::of(&row))
    }

    /// Discards the upload (a broken or refused request).
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

fn too_large(limit: u64) -> Error {
    Error::bad_request(format!("File is larger than the {limit}-byte limit for its purpose."), Some("file"))
}

/// `GET /v1/files/{id}`: a tenant's own file, or any file for the admin.
///
/// # Errors
/// 404 for an unknown, deleted, expired or (for a tenant) other tenant's file.
pub async fn retrieve(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<FileObject, Error> {
    let scope = principal.owner_scope(None)?;
    let row = store(state)?.file(scope.tenant(), id, now_unix_ms()).await.map_err(store_error)?;
    row.map(|r| FileObject::of(&r)).ok_or_else(|| not_found(id))
}

/// `GET /v1/files`: `limit` 1…10,000 (default 10,000), `order` by `created_at` (default `desc`),
/// `after` an id from a previous page, `purpose` a filter. Never an empty page with `has_more`. A
/// tenant lists its own files; the admin every tenant's, or only `p.tenant`'s.
///
/// # Errors
/// 400 for bad parameters (an unknown cursor included); 404 (`Denied::OtherTenant`) when a tenant
/// names another tenant.
pub async fn list(state: &Arc<AppState>, principal: &Principal, p: &ListParams) -> Result<FileList, Error> {
    let scope = principal.owner_scope(p.tenant.as_deref())?;
    let limit = p.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(Error::bad_request(format!("limit must be between 1 and {MAX_LIST}."), Some("limit")));
    }
    let ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(Error::bad_request("order must be `asc` or `desc`.", Some("order"))),
    };
    let store = store(state)?;
    let now = now_unix_ms();
    let after = match &p.after {
        Some(a) => Some(
            store
                .file(scope.tenant(), a, now)
                .await
                .map_err(store_error)?
                .ok_or_else(|| Error::bad_request("`after` is not a file of this list.", Some("after")))?,
        ),
        None => None,
    };
    let (rows, has_more) = store
        .list_files(scope.tenant(), p.purpose.as_deref(), after.as_ref(), limit, ascending, now)
        .await
        .map_err(store_error)?;
    let data: Vec<FileObject> = rows.iter().map(FileObject::of).collect();
    Ok(FileList {
        object: "list",
        first_id: data.first().map(|f| f.id.clone()),
        last_id: data.last().map(|f| f.id.clone()),
        has_more: has_more && !data.is_empty(),
        data,
    })
}

/// `DELETE /v1/files/{id}`: a tenant deletes only its own files; the admin key deletes none (it is
/// refused as not a tenant, as before: deleting a tenant's batch input is the tenant's decision).
///
/// # Errors
/// 404 for an unknown or other tenant's file.
pub async fn delete(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<Deleted, Error> {
    let scope = principal.own_scope()?;
    let deleted = store(state)?.delete_file(scope.tenant(), id, now_unix_ms()).await.map_err(store_error)?;
    if !deleted {
        return Err(not_found(id));
    }
    Ok(Deleted { id: id.to_owned(), object: "file", deleted: true })
}

/// An open file content stream and its length.
pub struct Content {
    pub bytes: u64,
    pub filename: String,
    pub reader: ContentReader,
}

impl Content {
    /// The next piece (`None` at the end; a store failure ends the stream early, which the client sees
    /// as a body shorter than its `Content-Length`).
    pub async fn next(&mut self) -> Option<Bytes> {
        match self.reader.next().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "file content stream failed");
                None
            }
        }
    }
}

/// `GET /v1/files/{id}/content`: the bytes, streamed (a tenant's own file, any file for the admin).
///
/// # Errors
/// 404 for an unknown or (for a tenant) other tenant's file.
pub async fn content(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<Content, Error> {
    let scope = principal.owner_scope(None)?;
    let store = store(state)?;
    let row = store.file(scope.tenant(), id, now_unix_ms()).await.map_err(store_error)?.ok_or_else(|| not_found(id))?;
    let bytes = u64::try_from(row.bytes).unwrap_or(0);
    let filename = row.filename.clone();
    let reader = store.content(row).await.map_err(store_error)?;
    Ok(Content { bytes, filename, reader })
}
