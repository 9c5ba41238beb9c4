//! The dashboard (issue 16) over loopback: sign-in, sessions, CSRF and cookie flags, every page for
//! the admin and a tenant, isolation, totals that reconcile with `/admin/usage` and the CSV, exact
//! English and Russian formatting, escaping of client-chosen text, key creation and revocation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::Method;
use integration_tests::client::{TestClient, TestResponse};
use integration_tests::harness::{ConfigBuilder, GatewayUnderTest};
use integration_tests::mock::{Answer, Flavor, MockUpstream, Reply, Usage};
use serde_json::json;

const ADMIN: &str = "admin-key-dashboard-0123456789";
const NBSP: char = '\u{a0}';

struct Browser {
    c: TestClient,
    cookies: Vec<(String, String)>,
    lang: &'static str,
}

impl Browser {
    fn new(gw: &GatewayUnderTest, lang: &'static str) -> Self {
        Browser { c: gw.client(), cookies: Vec::new(), lang }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, r: &TestResponse) {
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), val.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> TestResponse {
        let cookie = self.cookie_header();
        let lang = if self.lang == "ru" { "ru-RU,ru;q=0.9" } else { "en-US,en;q=0.9" };
        let r = self
            .c
            .raw(Method::GET, path, &[("cookie", &cookie), ("accept-language", lang)], Bytes::new())
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> TestResponse {
        let body: String = form
            .iter()
            .map(|(k, v)| {
                format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
            })
            .collect::<Vec<_>>()
            .join("&");
        let cookie = self.cookie_header();
        let lang = if self.lang == "ru" { "ru-RU,ru;q=0.9" } else { "en-US,en;q=0.9" };
        let r = self
            .c
            .raw(
                Method::POST,
                path,
                &[
                    ("cookie", &cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept-language", lang),
                ],
                body,
            )
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    async fn sign_in(&mut self, credential: &str) -> TestResponse {
        let page = self.get("/dashboard/login").await;
        let csrf = hidden(&page.text(), "csrf");
        self.post("/dashboard/login", &[("csrf", &csrf), ("credential", credential)]).await
    }

    async fn csrf(&mut self) -> String {
        let page = self.get("/dashboard/settings").await;
        hidden(&page.text(), "csrf")
    }
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in {html}")) + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The text of the element with `id` (its first text up to `<`).
fn by_id(html: &str, id: &str) -> String {
    let marker = format!(r#"id="{id}""#);
    let at = html.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let value = &html[at..];
    let v = value.find(r#"class="kpi-value">"#).unwrap() + r#"class="kpi-value">"#.len();
    value[v..].split('<').next().unwrap().to_owned()
}

/// The cells of the `<tfoot>` row of the first table after `caption`.
fn total_row(html: &str, caption: &str) -> Vec<String> {
    let at = html.find(&format!("<caption>{caption}</caption>")).unwrap_or_else(|| panic!("no table {caption}"));
    let foot = &html[at..];
    let foot = &foot[foot.find("<tfoot>").unwrap()..foot.find("</tfoot>").unwrap()];
    foot.split("<th").skip(1).map(|c| c.split_once('>').unwrap().1.split('<').next().unwrap().to_owned()).collect()
}

fn body_rows(html: &str, caption: &str) -> Vec<Vec<String>> {
    let at = html.find(&format!("<caption>{caption}</caption>")).unwrap();
    let t = &html[at..];
    let body = &t[t.find("<tbody>").unwrap()..t.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|r| {
            r.split("<td").skip(1).map(|c| c.split_once('>').unwrap().1.split('<').next().unwrap().to_owned()).collect()
        })
        .collect()
}

struct Setup {
    gw: GatewayUnderTest,
    _mock: MockUpstream,
    acme_key: String,
    globex_key: String,
}

async fn setup() -> Setup {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let dir = integration_tests::harness::temp_dir("dash-pricing");
    let pricing = dir.join("pricing.yaml");
    // $1000 / $2000 per million tokens: 100 + 200 tokens cost $0.50 a call.
    std::fs::write(&pricing, "providers:\n  openai:\n    \"*\": { input: \"1000\", output: \"2000\" }\n").unwrap();
    let yaml = ConfigBuilder::new()
        .provider("openai", &mock)
        .extra(&format!("admin_api_key: {ADMIN}\npricing_file: {}\n", pricing.display()))
        .build();
    let gw = GatewayUnderTest::start(&yaml).await;
    let mut admin = Browser::new(&gw, "en");
    assert_eq!(admin.sign_in(ADMIN).await.status, 303);
    let mut keys = Vec::new();
    for t in ["acme", "globex"] {
        let csrf = admin.csrf().await;
        let r = admin.post("/dashboard/tenants", &[("csrf", &csrf), ("id", t), ("monthly_budget_usd", "100")]).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let r = admin
            .post(&format!("/dashboard/tenants/{t}/keys"), &[("csrf", &csrf), ("name", "<script>alert(1)</script>")])
            .await;
        assert_eq!(r.status, 200);
        let html = r.text();
        assert!(!html.contains("<script>alert(1)</script>"), "a key name is escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let at = html.find(r#"<code id="new-key">"#).unwrap() + r#"<code id="new-key">"#.len();
        keys.push(html[at..].split('<').next().unwrap().to_owned());
    }
    // acme: 3 calls (one to a model named like markup and a formula); globex: 1 call.
    let calls = [
        (0usize, "openai/gpt-4o-mini"),
        (0, "openai/gpt-4o-mini"),
        (0, "openai/<img src=x onerror=alert(1)>"),
        (1, "openai/globex-secret-model"),
    ];
    for (who, model) in calls {
        mock.enqueue_chat(Reply::answer(Answer::text("hello").with_usage(Usage::new(100, 200)))).await;
        let r = gw
            .client()
            .raw(
                Method::POST,
                "/v1/chat/completions",
                &[("authorization", &format!("Bearer {}", keys[who])), ("content-type", "application/json")],
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The ledger writer batches for up to 100 ms.
    for _ in 0..50 {
        let r = gw
            .client()
            .raw(Method::GET, "/admin/usage", &[("authorization", &format!("Bearer {ADMIN}"))], Bytes::new())
            .await
            .unwrap();
        if r.json()["data"][0]["requests"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Setup { gw, _mock: mock, acme_key: keys[0].clone(), globex_key: keys[1].clone() }
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_headers() {
    let s = setup().await;
    let mut b = Browser::new(&s.gw, "en");
    // No session: pages redirect to the sign-in page; posts are refused.
    let r = b.get("/dashboard").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/dashboard/login"));
    // The sign-in form itself needs its double-submit token.
    let r = b.post("/dashboard/login", &[("credential", ADMIN)]).await;
    assert_eq!(r.status, 403);
    let r = b.sign_in(ADMIN).await;
    assert_eq!(r.status, 303);
    let set: Vec<&str> = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let session = set.iter().find(|c| c.starts_with("agg_session=")).expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/dashboard"),
        "{session}"
    );
    let page = b.get("/dashboard").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(!page.text().contains("<script>") && !page.text().contains("style=\""), "no inline script or style");
    // A form post without the session's CSRF token is refused and changes nothing.
    let r = b.post("/dashboard/tenants", &[("id", "sneaky")]).await;
    assert_eq!(r.status, 403);
    let r = b.post("/dashboard/tenants", &[("csrf", "0000"), ("id", "sneaky")]).await;
    assert_eq!(r.status, 403);
    assert!(!b.get("/dashboard/tenants").await.text().contains("sneaky"));
    // Sign-out ends the session on the server: the old cookie no longer works.
    let old = b.cookie_header();
    let csrf = b.csrf().await;
    assert_eq!(b.post("/dashboard/logout", &[("csrf", &csrf)]).await.status, 303);
    let r = s.gw.client().raw(Method::GET, "/dashboard", &[("cookie", &old)], Bytes::new()).await.unwrap();
    assert_eq!(r.status, 303);
    // Brute force: after 5 failures from this address, even the right key waits.
    let mut m = Browser::new(&s.gw, "en");
    for _ in 0..5 {
        assert_eq!(m.sign_in("wrong-key").await.status, 401);
    }
    let r = m.sign_in(ADMIN).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    s.gw.shutdown().await;
}

#[tokio::test]
async fn every_page_for_admin_and_tenant_with_isolation_and_escaping() {
    let s = setup().await;
    let pages = [
        "/dashboard",
        "/dashboard/usage?g=model",
        "/dashboard/requests",
        "/dashboard/models",
        "/dashboard/jobs",
        "/dashboard/playground",
        "/dashboard/settings",
    ];
    let mut admin = Browser::new(&s.gw, "en");
    admin.sign_in(ADMIN).await;
    for p in pages.iter().chain(["/dashboard/tenants", "/dashboard/tenants/acme"].iter()) {
        let r = admin.get(p).await;
        assert_eq!(r.status, 200, "admin {p}: {}", r.text());
        let html = r.text();
        assert!(!html.contains("<img src=x"), "{p}: a model name is escaped");
    }
    let admin_requests = admin.get("/dashboard/requests").await.text();
    assert!(admin_requests.contains("globex"));
    assert!(admin_requests.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let mut acme = Browser::new(&s.gw, "en");
    assert_eq!(acme.sign_in(&s.acme_key).await.status, 303);
    for p in pages.iter().chain(["/dashboard/keys"].iter()) {
        let r = acme.get(p).await;
        assert_eq!(r.status, 200, "tenant {p}: {}", r.text());
        let html = r.text();
        assert!(!html.contains("globex"), "tenant page {p} shows another tenant");
        assert!(!html.contains("<img src=x"), "{p}: escaped");
    }
    // Another tenant's pages and filters are refused, not narrowed silently.
    assert_eq!(acme.get("/dashboard/tenants/globex").await.status, 404);
    assert_eq!(acme.get("/dashboard/usage?tenant=globex").await.status, 400);
    assert_eq!(acme.get("/dashboard/usage.csv?tenant=globex").await.status, 400);
    let r = acme.get("/dashboard/tenants").await;
    assert_eq!(r.status, 303, "tenants list is the admin's");
    // The tenant's overview counts its own 3 requests only.
    let html = acme.get("/dashboard").await.text();
    assert_eq!(by_id(&html, "kpi-requests"), "3 requests");
    assert_eq!(by_id(&html, "kpi-spend"), "$1.50");
    // The tenant manages its own keys: create and revoke.
    let csrf = acme.csrf().await;
    let r = acme.post("/dashboard/tenants/acme/keys", &[("csrf", &csrf), ("name", "second")]).await;
    assert_eq!(r.status, 200);
    let html = r.text();
    let row = &html[html.find("<td>second</td>").expect("the new key is listed")..];
    let action_at = row.find(r#"action="/dashboard/keys/"#).unwrap();
    let key_path = row[action_at + 8..].split('"').next().unwrap().to_owned();
    let r = acme.post(&key_path, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert!(acme.get("/dashboard/keys").await.text().contains("Revoked"));
    // The other tenant's key cannot be revoked by acme (404 from the service).
    let mut globex = Browser::new(&s.gw, "en");
    globex.sign_in(&s.globex_key).await;
    let gh = globex.get("/dashboard/keys").await.text();
    let gk = gh[gh.find(r#"action="/dashboard/keys/"#).unwrap() + 8..].split('"').next().unwrap().to_owned();
    assert_eq!(acme.post(&gk, &[("csrf", &csrf)]).await.status, 404);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn totals_reconcile_with_admin_usage_and_csv() {
    let s = setup().await;
    let mut admin = Browser::new(&s.gw, "en");
    admin.sign_in(ADMIN).await;
    let html = admin.get("/dashboard/usage?from=2020-01-01&to=2099-12-31&g=tenant&g=model").await.text();
    let rows = body_rows(&html, "Usage");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let total = total_row(&html, "Usage");
    // tenant, model, requests, prompt, completion, cached, cache write, spend.
    assert_eq!(total[2], "4");
    assert_eq!(total[3], "400");
    assert_eq!(total[4], "800");
    assert_eq!(total[7], "$2.00");
    let sum: u64 = rows.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
    assert_eq!(sum, 4, "the total row is the sum of the rows");
    // The overview total for the same records.
    let overview = admin.get("/dashboard?days=1").await.text();
    assert_eq!(by_id(&overview, "kpi-spend"), "$2.00");
    assert_eq!(by_id(&overview, "kpi-requests"), "4 requests");
    // The dashboard CSV is byte for byte the admin API's for the same filter.
    let csv = admin.get("/dashboard/usage.csv?from=2020-01-01&to=2099-12-31&g=tenant&g=model").await.text();
    let api =
        s.gw.client()
            .raw(
                Method::GET,
                "/admin/usage?from=2020-01-01&to=2100-01-01&group_by=tenant,model&format=csv",
                &[("authorization", &format!("Bearer {ADMIN}"))],
                Bytes::new(),
            )
            .await
            .unwrap()
            .text();
    assert_eq!(csv, api);
    let csv_cost: f64 = csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap()).sum();
    assert!((csv_cost - 2.0).abs() < 1e-9);
    let json =
        s.gw.client()
            .raw(Method::GET, "/admin/usage", &[("authorization", &format!("Bearer {ADMIN}"))], Bytes::new())
            .await
            .unwrap()
            .json();
    assert_eq!(json["data"][0]["requests"], 4);
    assert_eq!(json["data"][0]["cost_nano_usd"], 2_000_000_000i64);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn russian_formatting_plurals_and_settings() {
    let s = setup().await;
    let mut ru = Browser::new(&s.gw, "ru");
    ru.sign_in(ADMIN).await;
    let html = ru.get("/dashboard?days=1").await.text();
    assert!(html.contains(r#"<html lang="ru""#));
    assert_eq!(by_id(&html, "kpi-requests"), "4 запроса");
    assert_eq!(by_id(&html, "kpi-spend"), format!("2,00{NBSP}$"));
    assert_eq!(by_id(&html, "kpi-prompt"), "400");
    let acme = ru.get("/dashboard/usage?from=2020-01-01&to=2099-12-31&g=tenant").await.text();
    let rows = body_rows(&acme, "Использование");
    assert_eq!(rows[0][0], "acme");
    assert_eq!(rows[0][6], format!("1,50{NBSP}$"));
    // Switching language and zone by the settings form (cookies), then English comes back.
    let csrf = ru.csrf().await;
    let r = ru.post("/dashboard/settings", &[("csrf", &csrf), ("lang", "en"), ("theme", "dark"), ("tz", "180")]).await;
    assert_eq!(r.status, 303);
    let html = ru.get("/dashboard").await.text();
    assert!(html.contains(r#"<html lang="en" data-theme="dark""#), "{}", &html[..200]);
    assert!(html.contains("UTC+03:00"));
    s.gw.shutdown().await;
}

/// Found by the browser tests (tests/python/test_dashboard_browser.py): without an icon of its own a
/// page makes the browser fetch `/favicon.ico`, an unauthenticated API request answered 401 (a console
/// error on every page); a table wider than the screen scrolls in a region keyboard users could not
/// reach (axe-core `scrollable-region-focusable`, serious).
#[tokio::test]
async fn page_icon_and_keyboard_reachable_table_scrollers() {
    let s = setup().await;
    let mut admin = Browser::new(&s.gw, "ru");
    let login = admin.get("/dashboard/login").await.text();
    assert!(login.contains(r#"<link rel="icon" href="/dashboard/assets/icon.svg" type="image/svg+xml">"#));
    admin.sign_in(ADMIN).await;
    let icon = admin.get("/dashboard/assets/icon.svg").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(icon.text().starts_with("<svg"));
    for p in ["/dashboard", "/dashboard/requests", "/dashboard/tenants", "/dashboard/tenants/acme", "/dashboard/models"]
    {
        let html = admin.get(p).await.text();
        assert!(html.contains(r#"<link rel="icon" href="/dashboard/assets/icon.svg""#), "{p}: no page icon");
        let scrollers: Vec<&str> = html.split(r#"<div class="scroll""#).skip(1).collect();
        assert!(!scrollers.is_empty(), "{p}: no table");
        for sc in scrollers {
            let tag = sc.split('>').next().unwrap();
            assert!(tag.contains(r#"role="region""#) && tag.contains(r#"tabindex="0""#), "{p}: {tag}");
            let label = tag.split(r#"aria-label=""#).nth(1).unwrap().split('"').next().unwrap();
            let caption = sc.split("<caption>").nth(1).unwrap().split('<').next().unwrap();
            assert_eq!(label, caption, "{p}: the region is named by its table's caption");
        }
    }
    // The keys table's button column has a heading for screen readers (axe-core `empty-table-header`).
    let keys = admin.get("/dashboard/tenants/acme").await.text();
    assert!(keys.contains(r#"<th scope="col"><span class="sr-only">Отозвать</span></th>"#), "keys table heading");
    // A numeric column's heading is aligned with its numbers.
    let html = admin.get("/dashboard").await.text();
    assert!(html.contains(r#"<th scope="col" class="num">Запросы</th>"#), "numeric heading");
    assert!(html.contains(r#"<th scope="col">Провайдер</th>"#), "text heading");
    s.gw.shutdown().await;
}

/// The value of `attr` on the first element after `marker`.
fn attr_after(html: &str, marker: &str, attr: &str) -> String {
    let at = html.find(marker).unwrap_or_else(|| panic!("no {marker} in {html}"));
    let rest = &html[at..];
    let a = rest.find(&format!(r#"{attr}=""#)).unwrap() + attr.len() + 2;
    rest[a..].split('"').next().unwrap().to_owned()
}

/// The text of the `<dd id=...>` fact on a job page.
fn fact(html: &str, id: &str) -> String {
    let marker = format!(r#"<dd id="{id}">"#);
    let at = html.find(&marker).unwrap_or_else(|| panic!("no fact {id}")) + marker.len();
    html[at..].split('<').next().unwrap().to_owned()
}

async fn wait_for_status(who: &mut Browser, path: &str, want: &str) -> String {
    for _ in 0..200 {
        let html = who.get(path).await.text();
        if fact(&html, "job-status") == want {
            return html;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} never reached {want}: {}", who.get(path).await.text());
}

/// Issue 16, jobs and batches: a tenant creates a text job and uploads a batch JSONL from the page
/// (CSRF enforced), sees them complete with their counts, downloads the output and error files,
/// cancels a batch; another tenant sees none of it (404), the admin gets a notice; Russian page.
#[tokio::test]
async fn jobs_page_text_job_upload_download_cancel_and_isolation() {
    let s = setup().await;
    s._mock
        .always("/v1/chat/completions", Reply::answer(Answer::text("batch answer").with_usage(Usage::new(10, 5))))
        .await;
    let mut acme = Browser::new(&s.gw, "en");
    acme.sign_in(&s.acme_key).await;
    let csrf = acme.csrf().await;
    let jobs = acme.get("/dashboard/jobs").await;
    assert_eq!(jobs.status, 200);
    assert!(jobs.text().contains("No batches or jobs yet."));
    // No token, no job.
    let r = acme.post("/dashboard/jobs/text", &[("model", "openai/gpt-4o-mini"), ("prompt", "hi")]).await;
    assert_eq!(r.status, 403);
    // A text job: a one-line batch.
    let r = acme
        .post("/dashboard/jobs/text", &[("csrf", &csrf), ("model", "openai/gpt-4o-mini"), ("prompt", "Say <b>hi</b>")])
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let text_job = r.headers["location"].to_str().unwrap().to_owned();
    assert!(text_job.starts_with("/dashboard/jobs/batch_"), "{text_job}");
    let html = wait_for_status(&mut acme, &text_job, "completed").await;
    assert_eq!(
        (fact(&html, "job-total"), fact(&html, "job-completed"), fact(&html, "job-failed")),
        ("1".into(), "1".into(), "0".into())
    );
    assert_ne!(fact(&html, "job-finished"), "—");
    let output = acme.get(&attr_after(&html, r#"class="button" download"#, "href")).await;
    assert_eq!(output.status, 200);
    let line: serde_json::Value = serde_json::from_str(output.text().lines().next().unwrap()).unwrap();
    assert_eq!(line["custom_id"], "job");
    assert!(html.contains(r#"<pre id="job-answer">batch answer</pre>"#), "{html}");
    assert_eq!(line["response"]["status_code"], 200);
    assert_eq!(line["response"]["body"]["choices"][0]["message"]["content"], "batch answer");
    // A pasted batch (CRLF line ends, as browsers send textareas) with one bad line: 2 done, 1 failed.
    let good = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
        .to_string()
    };
    let bad = json!({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "no-such/model", "messages": [{"role": "user", "content": "hi"}]}})
    .to_string();
    let jsonl = format!("{}\r\n{}\r\n{bad}\r\n", good("a"), good("b"));
    let r = acme.post("/dashboard/jobs", &[("csrf", &csrf), ("jsonl", &jsonl)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let batch = r.headers["location"].to_str().unwrap().to_owned();
    let html = wait_for_status(&mut acme, &batch, "completed").await;
    assert_eq!(
        (fact(&html, "job-total"), fact(&html, "job-completed"), fact(&html, "job-failed")),
        ("3".into(), "2".into(), "1".into())
    );
    assert!(html.contains("3 of 3 done"), "{html}");
    assert!(html.contains("Download errors"));
    let downloads: Vec<String> = html
        .match_indices(r#"class="button" download href=""#)
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(downloads.len(), 2, "{html}");
    let errors = acme.get(&downloads[1]).await.text();
    assert!(errors.contains(r#""custom_id":"bad""#), "{errors}");
    // The list shows both with status and progress.
    let list = acme.get("/dashboard/jobs").await.text();
    assert_eq!(list.matches("<td>completed</td>").count(), 2, "{list}");
    // Cancel: a malformed JSONL fails validation; a cancel of a finished batch is refused (400).
    let id = batch.rsplit('/').next().unwrap();
    assert_eq!(acme.post(&format!("/dashboard/jobs/{id}/cancel"), &[("csrf", &csrf)]).await.status, 400);
    // Cancel a running batch (slow upstream): cancelling → cancelled, the cancel form then gone.
    s._mock
        .always("/v1/chat/completions", Reply::answer(Answer::text("slow")).delay(std::time::Duration::from_secs(2)))
        .await;
    let r =
        acme.post("/dashboard/jobs", &[("csrf", &csrf), ("jsonl", &format!("{}\n{}\n", good("s1"), good("s2")))]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let slow = r.headers["location"].to_str().unwrap().to_owned();
    assert!(acme.get(&slow).await.text().contains(&format!(r#"action="{slow}/cancel""#)));
    assert_eq!(acme.post(&format!("{slow}/cancel"), &[("csrf", &csrf)]).await.status, 303);
    let html = wait_for_status(&mut acme, &slow, "cancelled").await;
    assert!(!html.contains("/cancel\""), "{html}");
    // Isolation: globex sees neither the batches nor the files; the admin sees them all, creates none.
    let mut globex = Browser::new(&s.gw, "en");
    globex.sign_in(&s.globex_key).await;
    assert!(!globex.get("/dashboard/jobs").await.text().contains(id));
    assert_eq!(globex.get(&batch).await.status, 404);
    assert_eq!(globex.get(&downloads[0]).await.status, 404);
    let gcsrf = globex.csrf().await;
    assert_eq!(globex.post(&format!("/dashboard/jobs/{id}/cancel"), &[("csrf", &gcsrf)]).await.status, 404);
    let mut admin = Browser::new(&s.gw, "en");
    admin.sign_in(ADMIN).await;
    let admin_jobs = admin.get("/dashboard/jobs").await.text();
    assert!(admin_jobs.contains("Every tenant&#39;s jobs and batches are listed here"), "{admin_jobs}");
    assert!(admin_jobs.contains(id), "the admin lists every tenant's batches");
    assert_eq!(admin.get(&batch).await.status, 200);
    // Russian.
    let mut ru = Browser::new(&s.gw, "ru");
    ru.sign_in(&s.acme_key).await;
    let html = ru.get(&batch).await.text();
    assert_eq!(fact(&html, "job-status"), "выполнено");
    assert!(html.contains("3 из 3 готово"), "{html}");
    s.gw.shutdown().await;
}
