//! The jobs and batches page (`/dashboard/jobs`): the tenant's batches with status and progress, one
//! batch's counts and timings, a JSONL upload (a textarea, so it works without JavaScript), a text
//! job (one model and one prompt: a one-line batch), downloads of the output and error files, and
//! cancel. Every operation is one call to `services::files` / `services::batches` with the session's
//! principal, which scope everything to its tenant (another tenant's ids are 404). Files and batches
//! belong to tenants: the admin key gets a notice, not a list.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::StreamExt as _;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};

use super::{format, page, q, redirect, Ctx, Html, Response};
use crate::services::batches::{self, BatchObject};
use crate::services::{self, files, jobs, AppState, Error};

/// The file name a dashboard upload gets (the Batch API wants `.jsonl`).
const UPLOAD_NAME: &str = "dashboard-upload.jsonl";
/// Batches listed per page.
const PAGE: i64 = 50;

/// Status → message id (OpenAI's statuses; the message says it in the page's language).
fn status_id(status: &str) -> &'static str {
    match status {
        "validating" => "job-validating",
        "in_progress" => "job-in-progress",
        "finalizing" => "job-finalizing-status",
        "completed" => "job-completed",
        "failed" => "job-failed",
        "expired" => "job-expired",
        "cancelling" => "job-cancelling",
        "cancelled" => "job-cancelled",
        _ => "job-unknown",
    }
}

fn when(ctx: &Ctx, unix_s: Option<i64>) -> String {
    unix_s.map_or_else(|| "—".to_owned(), |s| format::datetime(ctx.prefs.lang, s * 1000, ctx.prefs.tz_min))
}

fn progress(ctx: &Ctx, html: &mut Html, b: &BatchObject) {
    let c = &b.request_counts;
    let done = c.completed + c.failed;
    let label =
        ctx.ta("job-progress", &[("done", ctx.num(done.max(0) as u64)), ("total", ctx.num(c.total.max(0) as u64))]);
    let _ = write!(html.0, r#"<progress max="{}" value="{}" aria-label=""#, c.total.max(1), done.max(0));
    html.text(&format!("{}: {label}", b.id)).raw(r#""></progress> "#).text(&label);
}

/// `GET /dashboard/jobs`: the forms and the newest batches (`after` pages on).
pub(super) async fn list(state: &Arc<AppState>, ctx: &Ctx, query: &[(String, String)]) -> Result<Response, Error> {
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("nav-jobs")).raw("</h1>");
    // The admin sees every tenant's batches (the service's rule) but creates none: jobs are billed
    // to a tenant's key.
    if ctx.is_admin() {
        html.raw(r#"<p class="notice">"#).text(&ctx.t("jobs-admin")).raw("</p>");
    } else {
        forms(state, ctx, &mut html).await;
    }
    let after = q(query, "after");
    let list = batches::list(state, &ctx.principal, None, after, Some(PAGE)).await?;
    html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("jobs-list")).raw("</h2>");
    if list.data.is_empty() {
        html.raw("<p>").text(&ctx.t("no-jobs")).raw("</p>");
    } else {
        let caption = ctx.t("jobs-list");
        html.scroll_table(&caption).raw("<thead><tr>");
        for h in
            [ctx.t("job-id"), ctx.t("status"), ctx.t("job-progress-col"), ctx.t("job-failed-col"), ctx.t("created")]
        {
            html.raw(r#"<th scope="col">"#).text(&h).raw("</th>");
        }
        html.raw("</tr></thead><tbody>");
        for b in &list.data {
            html.raw(r#"<tr><td><a href="/dashboard/jobs/"#)
                .text(&urlencoding(&b.id))
                .raw(r#"">"#)
                .text(&b.id)
                .raw("</a></td><td>")
                .text(&ctx.t(status_id(&b.status)))
                .raw("</td><td>");
            progress(ctx, &mut html, b);
            html.raw(r#"</td><td class="num">"#)
                .text(&ctx.num(b.request_counts.failed.max(0) as u64))
                .raw("</td><td>")
                .text(&when(ctx, Some(b.created_at)))
                .raw("</td></tr>");
        }
        html.raw("</tbody></table></div>");
        if list.has_more {
            if let Some(last) = &list.last_id {
                html.raw(r#"<p><a href="/dashboard/jobs?after="#)
                    .text(&urlencoding(last))
                    .raw(r#"">"#)
                    .text(&ctx.t("older"))
                    .raw("</a></p>");
            }
        }
    }
    html.raw("</section>");
    // Auto-refresh while anything is still running.
    let running = list
        .data
        .iter()
        .any(|b| matches!(b.status.as_str(), "validating" | "in_progress" | "finalizing" | "cancelling"));
    Ok(page(ctx, "nav-jobs", html.0, running))
}

async fn forms(state: &AppState, ctx: &Ctx, html: &mut Html) {
    // A text job: one model, one prompt.
    html.raw(r#"<section class="card"><h2>"#).text(&ctx.t("job-text")).raw("</h2>");
    html.raw(r#"<form method="post" action="/dashboard/jobs/text" class="stack">"#).csrf(ctx);
    html.raw(r#"<label>"#).text(&ctx.t("model")).raw(r#" <select name="model" required>"#);
    for m in services::models::list(state, &ctx.principal).await {
        html.raw(r#"<option value=""#).text(&m.id).raw(r#"">"#).text(&m.id).raw("</option>");
    }
    html.raw("</select></label><label>")
        .text(&ctx.t("prompt"))
        .raw(
            r#" <textarea name="prompt" rows="3" required maxlength="20000"></textarea></label><button type="submit">"#,
        )
        .text(&ctx.t("job-create"))
        .raw("</button></form></section>");
    // A batch: JSONL pasted (works without JavaScript; larger files go through `/v1/files`).
    html.raw(r#"<section class="card"><h2>"#)
        .text(&ctx.t("job-upload"))
        .raw("</h2><p>")
        .text(&ctx.t("job-upload-help"))
        .raw("</p>");
    html.raw(r#"<form method="post" action="/dashboard/jobs" class="stack">"#).csrf(ctx);
    html.raw("<label>")
        .text(&ctx.t("job-jsonl"))
        .raw(r#" <textarea name="jsonl" rows="6" required spellcheck="false" class="mono"></textarea></label><button type="submit">"#)
        .text(&ctx.t("job-upload-submit"))
        .raw("</button></form></section>");
}

/// What an id keeps unescaped in a path segment: ids are alphanumeric with `_` and `-`.
const ID_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// Percent-encodes an id for a path segment (anything but `[A-Za-z0-9_-]` is escaped).
fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ID_SET).to_string()
}

/// Uploads `jsonl` as a batch file and creates a chat-completions batch over it; the batch id.
async fn create_batch(state: &Arc<AppState>, ctx: &Ctx, jsonl: &str) -> Result<String, Error> {
    let mut upload = files::begin_upload(state, &ctx.principal, UPLOAD_NAME, Some("batch")).await?;
    let body = if jsonl.ends_with('\n') { jsonl.to_owned() } else { format!("{jsonl}\n") };
    if let Err(e) = upload.write(body.as_bytes()).await {
        upload.abort().await;
        return Err(e);
    }
    let file = upload.finish(state, None, None).await?;
    let req = serde_json::json!({
        "input_file_id": file.id,
        "endpoint": batches::CHAT_ENDPOINT,
        "completion_window": "24h",
        "metadata": {"source": "dashboard"},
    });
    let body = serde_json::to_vec(&req).map_err(|e| Error::Internal(e.to_string().into()))?;
    Ok(batches::create(state, &ctx.principal, &body, None).await?.id)
}

/// `POST /dashboard/jobs`: the pasted JSONL becomes a file and a batch; then its page.
pub(super) async fn upload(state: &Arc<AppState>, ctx: &Ctx, form: &[(String, String)]) -> Result<Response, Error> {
    // Browsers send textarea lines with CRLF; JSONL lines end with LF.
    let jsonl = q(form, "jsonl").unwrap_or("").replace("\r\n", "\n");
    if jsonl.trim().is_empty() {
        return Err(Error::bad_request("The JSONL is empty.", Some("jsonl")));
    }
    let id = create_batch(state, ctx, jsonl.trim_start()).await?;
    Ok(redirect(&format!("/dashboard/jobs/{}", urlencoding(&id))))
}

/// `POST /dashboard/jobs/text`: a text job (a one-line batch) through `services::jobs`.
pub(super) async fn text_job(state: &Arc<AppState>, ctx: &Ctx, form: &[(String, String)]) -> Result<Response, Error> {
    let job = jobs::TextJob {
        model: q(form, "model").unwrap_or("").to_owned(),
        prompt: Some(q(form, "prompt").unwrap_or("").replace("\r\n", "\n")),
        ..jobs::TextJob::default()
    };
    let created = jobs::create_text_job(state, &ctx.principal, &job).await?;
    Ok(redirect(&format!("/dashboard/jobs/{}", urlencoding(&created.id))))
}

/// `GET /dashboard/jobs/{id}`: counts, timings, files, cancel.
pub(super) async fn detail(state: &Arc<AppState>, ctx: &Ctx, id: &str) -> Result<Response, Error> {
    let b = batches::retrieve(state, &ctx.principal, id).await?;
    let mut html = Html::default();
    html.raw("<h1>").text(&ctx.t("job")).raw(" <code>").text(&b.id).raw("</code></h1>");
    html.raw(r#"<p><a href="/dashboard/jobs">"#).text(&ctx.t("back")).raw("</a></p>");
    html.raw(r#"<section class="card"><dl class="facts">"#);
    let c = &b.request_counts;
    let facts = [
        (ctx.t("status"), ctx.t(status_id(&b.status)), "job-status"),
        (ctx.t("job-total"), ctx.num(c.total.max(0) as u64), "job-total"),
        (ctx.t("job-completed-col"), ctx.num(c.completed.max(0) as u64), "job-completed"),
        (ctx.t("job-failed-col"), ctx.num(c.failed.max(0) as u64), "job-failed"),
        (ctx.t("endpoint"), b.endpoint.clone(), "job-endpoint"),
        (ctx.t("created"), when(ctx, Some(b.created_at)), "job-created"),
        (ctx.t("job-started"), when(ctx, b.in_progress_at), "job-started"),
        (ctx.t("job-finalizing"), when(ctx, b.finalizing_at), "job-finalizing-at"),
        (
            ctx.t("job-finished"),
            when(ctx, b.completed_at.or(b.failed_at).or(b.expired_at).or(b.cancelled_at)),
            "job-finished",
        ),
        (ctx.t("job-expires"), when(ctx, b.expires_at), "job-expires"),
    ];
    for (label, value, dom_id) in facts {
        html.raw("<dt>").text(&label).raw("</dt>");
        let _ = write!(html.0, r#"<dd id="{dom_id}">"#);
        html.text(&value).raw("</dd>");
    }
    html.raw("</dl><p>");
    progress(ctx, &mut html, &b);
    html.raw("</p>");
    if let Some(errors) = &b.errors {
        html.raw("<ul class=\"notice error\">");
        for e in errors.data.iter().take(20) {
            html.raw("<li>").text(&e.message).raw("</li>");
        }
        html.raw("</ul>");
    }
    // A text job: its answer (the jobs service reads it from the output or error line).
    if b.metadata.as_ref().and_then(|m| m.get(jobs::JOB_METADATA_KEY)).is_some() {
        if let Ok(job) = jobs::job(state, &ctx.principal, &b.id).await {
            if let Some(text) = job.result.as_ref().and_then(|r| r.text.as_deref()) {
                html.raw("<h2>").text(&ctx.t("answer")).raw(r#"</h2><pre id="job-answer">"#).text(text).raw("</pre>");
            }
            if let Some(e) = &job.error {
                html.raw(r#"<p class="notice error" id="job-error">"#)
                    .text(&e.code)
                    .raw(": ")
                    .text(&e.message)
                    .raw("</p>");
            }
        }
    }
    html.raw("<p class=\"actions\">");
    for (file, label) in [(&b.output_file_id, "job-output"), (&b.error_file_id, "job-errors")] {
        if let Some(f) = file {
            html.raw(r#"<a class="button" download href="/dashboard/files/"#)
                .text(&urlencoding(f))
                .raw(r#"/content">"#)
                .text(&ctx.t(label))
                .raw("</a> ");
        }
    }
    html.raw("</p>");
    if matches!(b.status.as_str(), "validating" | "in_progress") {
        html.raw(r#"<form method="post" action="/dashboard/jobs/"#).text(&urlencoding(&b.id)).raw(r#"/cancel">"#);
        html.csrf(ctx)
            .raw(r#"<button type="submit" class="danger">"#)
            .text(&ctx.t("job-cancel"))
            .raw("</button></form>");
    }
    html.raw("</section>");
    let running = matches!(b.status.as_str(), "validating" | "in_progress" | "finalizing" | "cancelling");
    Ok(page(ctx, "nav-jobs", html.0, running))
}

/// `POST /dashboard/jobs/{id}/cancel`.
pub(super) async fn cancel(state: &Arc<AppState>, ctx: &Ctx, id: &str) -> Result<Response, Error> {
    let b = batches::cancel(state, &ctx.principal, id).await?;
    Ok(redirect(&format!("/dashboard/jobs/{}", urlencoding(&b.id))))
}

/// `GET /dashboard/files/{id}/content`: the file, streamed as a download (the tenant's own only).
pub(super) async fn download(state: &Arc<AppState>, ctx: &Ctx, id: &str) -> Result<Response, Error> {
    let content = files::content(state, &ctx.principal, id).await?;
    let len = content.bytes;
    let filename = content.filename.replace(['"', '\\', '\r', '\n'], "_");
    let stream = futures_util::stream::unfold(content, |mut c| async move { c.next().await.map(|b| (b, c)) })
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = http::Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/jsonl; charset=utf-8"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{filename}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
