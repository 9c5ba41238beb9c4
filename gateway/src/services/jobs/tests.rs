//! The jobs service under both principals, against the real embedded stores (SQLite in a temporary
//! directory) with the worker off: the test drives the batch steps itself (`batches::advance`), so
//! every state is reached deterministically. No upstream is called (its port is closed).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::config::{Config, MapEnv};
use crate::domain::limits::CallerLimits;
use crate::domain::principal::{Credential, Denied, TenantCaller};
use crate::services::state::AppState;

struct Fixture {
    state: Arc<AppState>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("ai-agg-jobs-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_api_key: admin-key-for-jobs-tests-0123\nledger:\n  data_dir: {}\n\
         batches:\n  worker: false\n\
         providers:\n  openai:\n    kind: openai\n    api_key: sk-test\n    base_url: http://127.0.0.1:9\n",
        dir.display()
    );
    let config = Config::from_yaml_str(&yaml, &MapEnv::default()).unwrap();
    let built = crate::build(Arc::new(config), true, CancellationToken::new()).await.unwrap();
    Fixture { state: built.state, dir }
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

#[tokio::test]
async fn the_admin_key_has_no_jobs() {
    let f = fixture().await;
    let s = &f.state;
    let admin = Principal::Admin;
    assert!(is_denied(&create_text_job(s, &admin, &hello()).await, Denied::NotATenant));
    assert!(is_denied(&create_job(s, &admin, &NewJob::Image { prompt: "a cat".into() }).await, Denied::NotATenant));
    assert!(is_denied(&list_jobs(s, &admin, &ListJobs::default()).await, Denied::NotATenant));
    let own = create_text_job(s, &tenant("acme"), &hello()).await.unwrap();
    assert!(is_denied(&job(s, &admin, &own.id).await, Denied::NotATenant));
    assert!(is_denied(&cancel_job(s, &admin, &own.id).await, Denied::NotATenant));
    let mut watch = Box::pin(watch_job(s.clone(), admin, own.id.clone()));
    assert!(matches!(watch.next().await, Some(Err(Error::Denied(Denied::NotATenant)))));
    assert!(watch.next().await.is_none(), "the stream ends after the refusal");
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
    let mut admins = Box::pin(batches::watch(s.clone(), Principal::Admin, made.id.clone()));
    assert!(matches!(admins.next().await, Some(Err(Error::Denied(Denied::NotATenant)))));
    let mut own = Box::pin(batches::watch(s.clone(), acme.clone(), made.id.clone()));
    assert_eq!(own.next().await.unwrap().unwrap().status, "validating");
    batches::cancel(s, &acme, &made.id).await.unwrap();
    assert_eq!(own.next().await.unwrap().unwrap().status, "cancelling");
    step(s, &made.id).await;
    assert_eq!(own.next().await.unwrap().unwrap().status, "cancelled");
    assert!(own.next().await.is_none());
}
