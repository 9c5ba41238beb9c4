//! The jobs service under both principals, against the real embedded stores (SQLite in a temporary
//! directory) with the worker off: the test drives the batch steps itself (`batches::advance`), so
//! every state is reached deterministically. No upstream is called (its port is closed).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::domain::limits::CallerLimits;
use crate::domain::principal::{Credential, Denied, TenantCaller};
use crate::services::state::AppState;
use crate::services::tests::{fixture_with, Fixture};

async fn fixture() -> Fixture {
    fixture_with(
        "jobs",
        "admin-key-for-jobs-tests-0123",
        "batches:\n  worker: false\n\
         providers:\n  openai:\n    kind: openai\n    api_key: sk-test\n    base_url: http://127.0.0.1:9\n",
    )
    .await
}

fn tenant(id: &str) -> Principal {
    Principal::Tenant(TenantCaller {
        tenant: Arc::from(id),
        key_id: None,
        limits: CallerLimits::default(),
        credential: Credential::ApiKey,
    })
}

fn hello() -> TextJob {
    TextJob { model: "openai/gpt-4o-mini".into(), prompt: Some("Say hello".into()), ..TextJob::default() }
}

fn hello_job() -> NewJob {
    NewJob::Text(hello())
}

fn is_denied<T: std::fmt::Debug>(r: &Result<T, Error>, want: Denied) -> bool {
    matches!(r, Err(Error::Denied(d)) if *d == want)
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::NotFound(_)))
}

fn is_bad_request<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::BadRequest { .. }))
}

/// Runs the batch step the worker would run now.
async fn step(s: &Arc<AppState>, id: &str) {
    let row = s.batches.as_ref().unwrap().store.batch_any(id).await.unwrap().unwrap();
    batches::advance(s, "test-worker", id, &row.status).await.unwrap();
}

#[test]
fn job_states_map_from_every_batch_state() {
    use JobStatus::*;
    let cases = [
        ("validating", 0, false, Pending),
        ("in_progress", 0, false, Pending),
        ("in_progress", 0, true, Processing),
        ("finalizing", 0, true, Processing),
        ("cancelling", 0, false, Processing),
        ("completed", 0, true, Completed),
        ("completed", 1, true, Failed),
        ("failed", 0, false, Failed),
        ("cancelled", 0, false, Failed),
        ("expired", 0, true, Failed),
    ];
    for (batch, failed, started, want) in cases {
        assert_eq!(status_of(batch, failed, started), want, "{batch} failed={failed} started={started}");
    }
    assert!(Completed.is_terminal() && Failed.is_terminal() && !Pending.is_terminal() && !Processing.is_terminal());
}

#[test]
fn completion_text_reads_strings_and_parts() {
    let s = serde_json::json!({"choices": [{"message": {"content": "hi"}}]});
    assert_eq!(completion_text(&s).as_deref(), Some("hi"));
    let parts = serde_json::json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]});
    assert_eq!(completion_text(&parts).as_deref(), Some("ab"));
    assert_eq!(completion_text(&serde_json::json!({"error": {}})), None);
}

/// Issue #15: the admin key creates no job (a job is billed to a tenant's key) but sees, follows
/// and cancels every tenant's.
#[tokio::test]
async fn the_admin_key_creates_no_job_but_sees_and_cancels_every_tenants() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let refused = create_text_job(s, &admin, &hello()).await;
    assert!(is_denied(&refused, Denied::JobNeedsTenant));
    assert_eq!(refused.unwrap_err().to_string(), "Jobs are billed to a tenant's key: create them with a tenant key.");
    assert!(is_denied(&create_job(s, &admin, &hello_job()).await, Denied::JobNeedsTenant));
    assert!(is_denied(&create_job(s, &admin, &NewJob::Image { prompt: "a cat".into() }).await, Denied::JobNeedsTenant));
    assert!(list_jobs(s, &admin, &ListJobs::default()).await.unwrap().jobs.is_empty(), "nothing was created");

    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let a1 = create_text_job(s, &acme, &hello()).await.unwrap();
    let g1 = create_text_job(s, &globex, &hello()).await.unwrap();
    let a2 = create_text_job(s, &acme, &hello()).await.unwrap();
    assert_eq!((a1.tenant.as_str(), g1.tenant.as_str()), ("acme", "globex"));

    // Every tenant's, newest first, paged like a tenant's list.
    let all = list_jobs(s, &admin, &ListJobs::default()).await.unwrap();
    let ids: Vec<&str> = all.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [a2.id.as_str(), g1.id.as_str(), a1.id.as_str()]);
    assert!(!all.has_more);
    let first = list_jobs(s, &admin, &ListJobs { limit: Some(2), ..ListJobs::default() }).await.unwrap();
    assert_eq!((first.jobs.len(), first.has_more), (2, true));
    let rest = ListJobs { after: Some(first.jobs[1].id.clone()), limit: Some(2), ..ListJobs::default() };
    let rest = list_jobs(s, &admin, &rest).await.unwrap();
    assert_eq!(rest.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [a1.id.as_str()]);
    assert!(!rest.has_more);
    // Filtered to one tenant; a cursor of another tenant's job is not one of that list.
    let only = ListJobs { tenant: Some("globex".into()), ..ListJobs::default() };
    let only = list_jobs(s, &admin, &only).await.unwrap();
    assert_eq!(
        only.jobs.iter().map(|j| (j.id.as_str(), j.tenant.as_str())).collect::<Vec<_>>(),
        [(g1.id.as_str(), "globex")]
    );
    let cross = ListJobs { tenant: Some("globex".into()), after: Some(a2.id.clone()), ..ListJobs::default() };
    assert!(is_bad_request(&list_jobs(s, &admin, &cross).await));
    let nobody = ListJobs { tenant: Some("initech".into()), ..ListJobs::default() };
    assert!(list_jobs(s, &admin, &nobody).await.unwrap().jobs.is_empty());

    // Reads, follows and cancels another tenant's job.
    assert_eq!(job(s, &admin, &g1.id).await.unwrap().tenant, "globex");
    assert!(is_not_found(&job(s, &admin, "batch_nope").await));
    let mut watch = Box::pin(watch_job(s.clone(), admin.clone(), g1.id.clone()));
    assert_eq!(watch.next().await.unwrap().unwrap().status, JobStatus::Pending);
    let cancelled = cancel_job(s, &admin, &g1.id).await.unwrap();
    assert_eq!((cancelled.status, cancelled.batch_status.as_str()), (JobStatus::Processing, "cancelling"));
    step(s, &g1.id).await;
    let last = job(s, &globex, &g1.id).await.unwrap();
    assert_eq!((last.status, last.error.map(|e| e.code)), (JobStatus::Failed, Some("cancelled".to_owned())));
    let mut seen = Vec::new();
    while let Some(j) = tokio::time::timeout(Duration::from_secs(3), watch.next()).await.unwrap() {
        seen.push(j.unwrap().status);
    }
    assert_eq!(seen.last(), Some(&JobStatus::Failed), "the admin's watch follows it to the end: {seen:?}");
    assert!(is_not_found(&cancel_job(s, &admin, "batch_nope").await));
}

/// A tenant naming another tenant in a list is refused as `keys(tenantId:)` is (not narrowed).
#[tokio::test]
async fn a_tenant_cannot_list_another_tenants_jobs() {
    let f = fixture().await;
    let s = &f.state;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let theirs = create_text_job(s, &globex, &hello()).await.unwrap();
    let mine = create_text_job(s, &acme, &hello()).await.unwrap();
    let other = ListJobs { tenant: Some("globex".into()), ..ListJobs::default() };
    assert!(is_denied(&list_jobs(s, &acme, &other).await, Denied::OtherTenant));
    let own = ListJobs { tenant: Some("acme".into()), ..ListJobs::default() };
    let own = list_jobs(s, &acme, &own).await.unwrap();
    assert_eq!(own.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [mine.id.as_str()]);
    assert!(is_not_found(&job(s, &acme, &theirs.id).await));
    assert!(is_not_found(&cancel_job(s, &acme, &theirs.id).await));
    assert_eq!(job(s, &globex, &theirs.id).await.unwrap().batch_status, "validating", "not cancelled");
}

#[tokio::test]
async fn a_tenant_sees_and_cancels_only_its_own_jobs() {
    let f = fixture().await;
    let s = &f.state;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let made = create_text_job(s, &acme, &hello()).await.unwrap();
    assert!(made.id.starts_with("batch_"));
    assert_eq!((made.status, made.batch_status.as_str()), (JobStatus::Pending, "validating"));
    assert_eq!(made.model.as_deref(), Some("openai/gpt-4o-mini"));
    assert_eq!(made.kind, JobKind::Text);

    // Another tenant: 404 everywhere, as if the job did not exist.
    assert!(is_not_found(&job(s, &globex, &made.id).await));
    assert!(is_not_found(&cancel_job(s, &globex, &made.id).await));
    let mut watch = Box::pin(watch_job(s.clone(), globex.clone(), made.id.clone()));
    assert!(matches!(watch.next().await, Some(Err(Error::NotFound(_)))));
    assert!(watch.next().await.is_none());
    assert!(list_jobs(s, &globex, &ListJobs::default()).await.unwrap().jobs.is_empty());
    let cursor = ListJobs { after: Some(made.id.clone()), ..ListJobs::default() };
    assert!(is_bad_request(&list_jobs(s, &globex, &cursor).await), "another tenant's job is no cursor");
    assert!(is_not_found(&job(s, &acme, "batch_nope").await));

    // The owner sees it, and cancels it; the other tenant's attempt changed nothing.
    assert_eq!(job(s, &acme, &made.id).await.unwrap().status, JobStatus::Pending);
    let cancelled = cancel_job(s, &acme, &made.id).await.unwrap();
    assert_eq!((cancelled.status, cancelled.batch_status.as_str()), (JobStatus::Processing, "cancelling"));
    step(s, &made.id).await;
    let ended = job(s, &acme, &made.id).await.unwrap();
    assert_eq!((ended.status, ended.batch_status.as_str()), (JobStatus::Failed, "cancelled"));
    assert_eq!(ended.error.as_ref().map(|e| e.code.as_str()), Some("cancelled"));
    assert!(ended.ended_at_ms.is_some());
    let again = cancel_job(s, &acme, &made.id).await.unwrap();
    assert_eq!(again, ended, "cancelling a cancelled job answers it as it is (like the Batch API)");
}

#[tokio::test]
async fn a_batch_that_is_not_a_job_is_not_listed_or_read_as_one() {
    let f = fixture().await;
    let s = &f.state;
    let acme = tenant("acme");
    let job_made = create_text_job(s, &acme, &hello()).await.unwrap();
    // A plain batch of the same tenant, through the batches service.
    let mut up = crate::services::files::begin_upload(s, &acme, "in.jsonl", Some("batch")).await.unwrap();
    up.write(br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"openai/gpt-4o-mini","messages":[]}}"#)
        .await
        .unwrap();
    let file = up.finish(s, None, None).await.unwrap();
    let body =
        serde_json::json!({"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let plain = batches::create(s, &acme, body.to_string().as_bytes(), None).await.unwrap();
    assert!(is_not_found(&job(s, &acme, &plain.id).await));
    assert!(is_not_found(&cancel_job(s, &acme, &plain.id).await));
    let page = list_jobs(s, &acme, &ListJobs::default()).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [job_made.id.as_str()]);
}

#[tokio::test]
async fn input_is_checked_and_images_are_refused() {
    let f = fixture().await;
    let s = &f.state;
    let acme = tenant("acme");
    let image = create_job(s, &acme, &NewJob::Image { prompt: "a cat".into() }).await;
    match &image {
        Err(e @ Error::BadRequest { .. }) => assert!(e.to_string().contains("not routed yet"), "{e}"),
        other => panic!("{other:?}"),
    }
    let both = TextJob { messages: Some(vec![]), ..hello() };
    assert!(is_bad_request(&create_text_job(s, &acme, &both).await));
    let neither = TextJob { prompt: None, ..hello() };
    assert!(is_bad_request(&create_text_job(s, &acme, &neither).await));
    let role = TextJob {
        prompt: None,
        messages: Some(vec![ChatMessage { role: "wizard".into(), content: "x".into() }]),
        ..hello()
    };
    assert!(is_bad_request(&create_text_job(s, &acme, &role).await));
    assert!(is_bad_request(&create_text_job(s, &acme, &TextJob { temperature: Some(3.0), ..hello() }).await));
    assert!(is_bad_request(&create_text_job(s, &acme, &TextJob { max_tokens: Some(0), ..hello() }).await));
    assert!(is_bad_request(&create_text_job(s, &acme, &TextJob { model: " ".into(), ..hello() }).await));
    let unknown = create_text_job(s, &acme, &TextJob { model: "nowhere/model".into(), ..hello() }).await;
    assert!(matches!(unknown, Err(Error::Route(_))), "{unknown:?}");
    // Messages work too, with the options.
    let chat = TextJob {
        prompt: None,
        messages: Some(vec![
            ChatMessage { role: "system".into(), content: "Be brief.".into() },
            ChatMessage { role: "user".into(), content: "Hi".into() },
        ]),
        max_tokens: Some(16),
        temperature: Some(0.5),
        ..hello()
    };
    assert_eq!(create_text_job(s, &acme, &chat).await.unwrap().status, JobStatus::Pending);
    assert!(list_jobs(s, &acme, &ListJobs { limit: Some(101), ..ListJobs::default() }).await.is_err());
}

#[tokio::test]
async fn pages_run_to_the_end_and_filter_by_state() {
    let f = fixture().await;
    let s = &f.state;
    let acme = tenant("acme");
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(create_text_job(s, &acme, &hello()).await.unwrap().id);
    }
    // One queued (validated: in_progress, line not started), one cancelled; the rest validating.
    step(s, &made[0]).await;
    cancel_job(s, &acme, &made[1]).await.unwrap();
    step(s, &made[1]).await;

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list_jobs(s, &acme, &ListJobs { after: after.clone(), limit: Some(2), ..ListJobs::default() })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        if !page.has_more {
            break;
        }
        after = page.jobs.last().map(|j| j.id.clone());
    }
    let mut want = made.clone();
    want.reverse();
    assert_eq!(seen, want, "newest first, each once");

    let by = |status| ListJobs { status: Some(status), ..ListJobs::default() };
    let pending = list_jobs(s, &acme, &by(JobStatus::Pending)).await.unwrap();
    assert_eq!(pending.jobs.len(), 4, "validating and queued");
    assert!(pending.jobs.iter().all(|j| j.status == JobStatus::Pending));
    let failed = list_jobs(s, &acme, &by(JobStatus::Failed)).await.unwrap();
    assert_eq!(failed.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [made[1].as_str()]);
    assert!(list_jobs(s, &acme, &by(JobStatus::Completed)).await.unwrap().jobs.is_empty());
    assert!(list_jobs(s, &acme, &by(JobStatus::Processing)).await.unwrap().jobs.is_empty());
    let queued = job(s, &acme, &made[0]).await.unwrap();
    assert_eq!((queued.status, queued.batch_status.as_str()), (JobStatus::Pending, "in_progress"));
    assert!(queued.queued_at_ms.is_some());
}

#[tokio::test]
async fn a_watch_yields_the_state_now_then_each_change_and_ends() {
    let f = fixture().await;
    let s = &f.state;
    let acme = tenant("acme");
    let made = create_text_job(s, &acme, &hello()).await.unwrap();
    let mut watch = Box::pin(watch_job(s.clone(), acme.clone(), made.id.clone()));
    let first = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.batch_status, "validating");

    // Each step notifies the watcher at once (well before the fallback re-read).
    step(s, &made.id).await;
    let queued = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((queued.status, queued.batch_status.as_str()), (JobStatus::Pending, "in_progress"));
    cancel_job(s, &acme, &made.id).await.unwrap();
    let cancelling = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(cancelling.status, JobStatus::Processing);
    step(s, &made.id).await;
    let last = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((last.status, last.error.map(|e| e.code)), (JobStatus::Failed, Some("cancelled".to_owned())));
    assert!(tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().is_none(), "ends after FAILED");
}

#[tokio::test]
async fn a_batch_watch_follows_the_same_rules() {
    let f = fixture().await;
    let s = &f.state;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let made = create_text_job(s, &acme, &hello()).await.unwrap();
    let mut theirs = Box::pin(batches::watch(s.clone(), globex, made.id.clone()));
    assert!(matches!(theirs.next().await, Some(Err(Error::NotFound(_)))));
    // The admin follows any tenant's batch (issue #15).
    let mut admins = Box::pin(batches::watch(s.clone(), Principal::Admin, made.id.clone()));
    let seen = admins.next().await.unwrap().unwrap();
    assert_eq!((seen.status.as_str(), seen.tenant.as_str()), ("validating", "acme"));
    let mut own = Box::pin(batches::watch(s.clone(), acme.clone(), made.id.clone()));
    assert_eq!(own.next().await.unwrap().unwrap().status, "validating");
    batches::cancel(s, &acme, &made.id).await.unwrap();
    assert_eq!(own.next().await.unwrap().unwrap().status, "cancelling");
    step(s, &made.id).await;
    assert_eq!(own.next().await.unwrap().unwrap().status, "cancelled");
    assert!(own.next().await.is_none());
}

/// Issue #15 for batches and files: the admin lists, reads and cancels every tenant's batches and
/// reads every tenant's files, but creates neither (they are billed to, and owned by, a tenant).
#[tokio::test]
async fn the_admin_key_sees_every_tenants_batches_and_files() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let a = create_text_job(s, &acme, &hello()).await.unwrap();
    let g = create_text_job(s, &globex, &hello()).await.unwrap();

    // Batches: every tenant's, newest first, paged; filtered; another tenant's read and cancelled.
    let all = batches::list(s, &admin, None, None, None).await.unwrap();
    let ids: Vec<(&str, &str)> = all.data.iter().map(|b| (b.id.as_str(), b.tenant.as_str())).collect();
    assert_eq!(ids, [(g.id.as_str(), "globex"), (a.id.as_str(), "acme")]);
    let first = batches::list(s, &admin, None, None, Some(1)).await.unwrap();
    assert_eq!((first.data.len(), first.has_more), (1, true));
    let next = batches::list(s, &admin, None, first.last_id.as_deref(), Some(1)).await.unwrap();
    assert_eq!((next.data[0].id.as_str(), next.has_more), (a.id.as_str(), false));
    let only = batches::list(s, &admin, Some("acme"), None, None).await.unwrap();
    assert_eq!(only.data.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()]);
    assert_eq!(batches::retrieve(s, &admin, &a.id).await.unwrap().tenant, "acme");
    assert!(is_not_found(&batches::retrieve(s, &admin, "batch_nope").await));
    assert_eq!(batches::cancel(s, &admin, &a.id).await.unwrap().status, "cancelling");
    assert_eq!(batches::retrieve(s, &acme, &a.id).await.unwrap().status, "cancelling", "the owner sees the cancel");
    // Creating a batch stays a tenant's (401 over REST, as before).
    let body = format!(r#"{{"input_file_id":"{}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#, a.id);
    assert!(is_denied(&batches::create(s, &admin, body.as_bytes(), None).await, Denied::NotATenant));

    // A tenant: only its own; naming another tenant is refused, another tenant's id is 404.
    assert!(is_denied(&batches::list(s, &acme, Some("globex"), None, None).await, Denied::OtherTenant));
    let own = batches::list(s, &acme, Some("acme"), None, None).await.unwrap();
    assert_eq!(own.data.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()]);
    assert!(is_not_found(&batches::retrieve(s, &acme, &g.id).await));
    assert!(is_not_found(&batches::cancel(s, &acme, &g.id).await));
    assert_eq!(batches::retrieve(s, &globex, &g.id).await.unwrap().status, "validating", "not cancelled");

    // Files: each job wrote one input file.
    let files_of = |l: &files::FileList| l.data.iter().map(|f| f.tenant.clone()).collect::<Vec<_>>();
    let all = files::list(s, &admin, &files::ListParams::default()).await.unwrap();
    assert_eq!(files_of(&all), ["globex", "acme"]);
    let paged = files::ListParams { limit: Some(1), ..Default::default() };
    let page = files::list(s, &admin, &paged).await.unwrap();
    assert_eq!((files_of(&page), page.has_more), (vec!["globex".to_owned()], true));
    let rest = files::ListParams { limit: Some(1), after: page.last_id.clone(), ..Default::default() };
    let rest = files::list(s, &admin, &rest).await.unwrap();
    assert_eq!((files_of(&rest), rest.has_more), (vec!["acme".to_owned()], false));
    let only = files::ListParams { tenant: Some("globex".into()), ..Default::default() };
    let only = files::list(s, &admin, &only).await.unwrap();
    assert_eq!(files_of(&only), ["globex"]);
    let globex_file = only.data[0].id.clone();
    assert_eq!(files::retrieve(s, &admin, &globex_file).await.unwrap().tenant, "globex");
    let content = files::content(s, &admin, &globex_file).await.unwrap();
    assert_eq!(content.bytes, u64::try_from(only.data[0].bytes).unwrap());
    // Deleting and uploading stay a tenant's.
    assert!(is_denied(&files::delete(s, &admin, &globex_file).await, Denied::NotATenant));
    assert!(is_denied(&files::begin_upload(s, &admin, "x.jsonl", Some("batch")).await.map(|_| ()), Denied::NotATenant));
    assert!(files::retrieve(s, &globex, &globex_file).await.is_ok(), "not deleted");

    let other = files::ListParams { tenant: Some("globex".into()), ..Default::default() };
    assert!(is_denied(&files::list(s, &acme, &other).await, Denied::OtherTenant));
    assert!(is_not_found(&files::retrieve(s, &acme, &globex_file).await));
    assert!(files::content(s, &acme, &globex_file).await.is_err());
    assert_eq!(files_of(&files::list(s, &acme, &files::ListParams::default()).await.unwrap()), ["acme"]);
}
