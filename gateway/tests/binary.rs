//! Tests of the real `ai-aggregator` binary: it starts with no config and no database, drains streams
//! and flushes the ledger on SIGTERM, and replays its journal after a kill -9.
//!
//! The upstream is a tiny inline OpenAI mock (raw HTTP/1.1 over loopback) so this file needs nothing
//! beyond the gateway crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ai-aggregator");
const ADMIN_KEY: &str = "admin-key-binary-tests-0123";
const TENANT_KEY: &str = "sk-binary-tests-tenant";

/// An OpenAI-speaking mock: JSON for plain requests; for `"stream":true`, ten content chunks 100 ms apart.
struct Mock {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
        }
    }
}

fn serve_one(mut stream: TcpStream) {
    stream.set_nodelay(true).ok();
    while let Some(body) = read_request(&mut stream) {
        if body.contains("\"stream\":true") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            let mut events: Vec<String> = (0..10)
                .map(|i| {
                    format!(
                        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
                    )
                })
                .collect();
            events.push("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":10,\"total_tokens\":22}}\n\n".into());
            events.push("data: [DONE]\n\n".into());
            for e in events {
                thread::sleep(Duration::from_millis(100));
                if stream.write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes()).is_err() {
                    return;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        } else {
            let json = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                json.len()
            );
            if stream.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    }
}

impl Mock {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::Relaxed);
                thread::spawn(move || serve_one(stream));
            }
        });
        Mock { addr, calls }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ai-agg-bin-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn wait_healthy(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gateway exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/healthz", &[], "").0 == 200 {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway did not become healthy");
}

fn write_config(dir: &Path, port: u16, mock: &Mock, database_url: Option<&str>) -> PathBuf {
    let ledger = match database_url {
        Some(url) => format!("ledger:\n  data_dir: {}\n  database_url: \"{url}\"\n", dir.join("data").display()),
        None => format!("ledger:\n  data_dir: {}\n", dir.join("data").display()),
    };
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nshutdown_grace_secs: 10\nadmin_api_key: {ADMIN_KEY}\n\
         tenants:\n  - id: team\n    api_keys: [\"{TENANT_KEY}\"]\n\
         providers:\n  openai:\n    kind: openai\n    base_url: http://{}/v1\n    api_key: sk-upstream\n{ledger}",
        mock.addr
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn spawn(config: &Path, cwd: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn usage_requests(port: u16) -> u64 {
    let (status, body) = http(port, "GET", "/admin/usage", &[("authorization", &format!("Bearer {ADMIN_KEY}"))], "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"][0]["requests"].as_u64().unwrap_or(0)
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn starts_with_no_config_and_no_database_and_exits_cleanly_on_sigterm() {
    let dir = temp_dir("noconfig");
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .env("API_PORT", port.to_string())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("DATABASE_URL")
        .env("OLLAMA_URL", "http://127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child);
    assert_eq!(http(port, "GET", "/readyz", &[], "").0, 200);
    let (status, body) = http(port, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200, "a provider that is down is skipped: {body}");
    assert!(body.contains("\"object\":\"list\""));
    assert!(dir.join("data").exists(), "the embedded ledger lives under ./data");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn a_bad_config_is_refused_with_exit_code_2_listing_every_error() {
    let dir = temp_dir("badconfig");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "listen: nowhere\nproviders:\n  x:\n    kind: martian\nsurprise: 1\n").unwrap();
    let out = Command::new(BIN).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["listen", "providers.x.kind", "surprise"] {
        assert!(err.contains(field), "missing {field} in: {err}");
    }
}

#[test]
fn sigterm_lets_open_streams_finish_and_flushes_every_record() {
    let mock = Mock::start();
    let dir = temp_dir("sigterm");
    let port = free_port();
    let config = write_config(&dir, port, &mock, None);
    let mut child = spawn(&config, &dir);
    wait_healthy(port, &mut child);
    let auth = format!("Bearer {TENANT_KEY}");
    // Three streams of ~1.2 s each; SIGTERM arrives while all are open.
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let auth = auth.clone();
            thread::spawn(move || http(port, "POST", "/v1/chat/completions", &[("authorization", &auth)], CHAT_STREAM))
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    sigterm(&child);
    thread::sleep(Duration::from_millis(200));
    // Readiness is false during the drain, or the listener is already closed.
    let refused = TcpStream::connect(("127.0.0.1", port)).is_err() || http(port, "GET", "/readyz", &[], "").0 == 503;
    assert!(refused, "no new work is accepted once shutdown begins");
    for s in streams {
        let (status, body) = s.join().unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("w9 "), "the stream ran to its end: {body}");
        assert!(body.contains("data: [DONE]"), "the stream completed: {body}");
    }
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit code {status}");
    // Every record is in the embedded store.
    let conn = rusqlite::Connection::open(dir.join("data").join("ledger.sqlite3")).unwrap();
    let (n, ok): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(status = 'ok') FROM ledger_records", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, ok), (3, 3));
    let completion: i64 =
        conn.query_row("SELECT SUM(completion_tokens) FROM ledger_records", [], |r| r.get(0)).unwrap();
    assert_eq!(completion, 30, "usage comes from the upstream's usage chunk");
}

#[test]
fn kill_9_then_restart_replays_the_journal_exactly_once() {
    let mock = Mock::start();
    let dir = temp_dir("kill9");
    let port = free_port();
    // The database is unreachable: every record goes to the on-disk journal.
    let config = write_config(&dir, port, &mock, Some("postgres://postgres@127.0.0.1:1/test?connect_timeout=1"));
    let mut child = spawn(&config, &dir);
    wait_healthy(port, &mut child);
    let auth = format!("Bearer {TENANT_KEY}");
    const N: u64 = 25;
    for _ in 0..N {
        let (status, body) = http(port, "POST", "/v1/chat/completions", &[("authorization", &auth)], CHAT);
        assert_eq!(status, 200, "{body}");
    }
    // Let the writer journal its last batch (batch interval 100 ms, fsync per batch).
    thread::sleep(Duration::from_millis(800));
    child.kill().unwrap(); // SIGKILL: no flush, no goodbye.
    let _ = child.wait();
    let journal = dir.join("data").join("journal");
    assert!(journal.exists(), "records were journaled while the database was down");

    // Restart on the embedded store: the journal is replayed into it.
    let config = write_config(&dir, port, &mock, None);
    let mut child = spawn(&config, &dir);
    wait_healthy(port, &mut child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while usage_requests(port) < N && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(usage_requests(port), N, "every journaled record replayed");
    // A second restart must not replay them again.
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    let mut child = spawn(&config, &dir);
    wait_healthy(port, &mut child);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(usage_requests(port), N, "replay is exactly once");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    assert!(mock.calls.load(Ordering::Relaxed) >= 1);
}

#[test]
fn logs_never_contain_keys_or_prompts() {
    let mock = Mock::start();
    let dir = temp_dir("logs");
    let port = free_port();
    let config = write_config(&dir, port, &mock, None);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child);
    let secret_prompt = "my-very-private-prompt-text-42";
    let body = CHAT.replace("\"hi\"", &format!("\"{secret_prompt}\""));
    let auth = format!("Bearer {TENANT_KEY}");
    assert_eq!(http(port, "POST", "/v1/chat/completions", &[("authorization", &auth)], &body).0, 200);
    assert_eq!(
        http(port, "POST", "/v1/chat/completions", &[("authorization", "Bearer sk-wrong-key-1234")], &body).0,
        401
    );
    sigterm(&child);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
    assert!(stderr.contains("request finished"), "one line per request is logged: {stderr}");
    for secret in [TENANT_KEY, "sk-upstream", "sk-wrong-key-1234", ADMIN_KEY, secret_prompt] {
        assert!(!stderr.contains(secret), "`{secret}` leaked into the logs");
    }
}
