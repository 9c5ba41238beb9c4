//! Smoke test of the real `ai-aggregator` binary: started from the environment alone (no config file),
//! on `API_PORT`, it answers `GET /v1/models`, and exits cleanly on SIGTERM.
//!
//! `CARGO_BIN_EXE_ai-aggregator` only exists inside the gateway's own package, so the binary is found
//! next to this test executable (`target/<profile>/ai-aggregator`); `scripts/test` builds it first.

// Test helpers outside #[test] fns panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::client::TestClient;
use integration_tests::harness::temp_dir;
use integration_tests::mock::{Flavor, MockUpstream};
use integration_tests::schema::check_model_list;

fn gateway_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/binary_smoke-<hash> → target/<profile>/ai-aggregator
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let bin = profile_dir.join(format!("ai-aggregator{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p ai-aggregator --bin ai-aggregator` (scripts/test does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn binary_serves_models_from_env_config() {
    let ollama = MockUpstream::start(Flavor::Ollama).await;
    let dir = temp_dir("smoke");
    let port = free_port();
    let mut child = Command::new(gateway_binary())
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("API_PORT", port.to_string())
        .env("OLLAMA_URL", ollama.url())
        .env("DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ai-aggregator");

    let client = TestClient::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("ai-aggregator exited early ({status}): {}", String::from_utf8_lossy(&out.stderr));
        }
        match client.get("/v1/models").await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                let _ = child.kill();
                panic!("ai-aggregator did not answer on port {port} within 20 s: {e}");
            }
        }
    };
    assert_eq!(response.status, 200, "{}", response.text());
    let v = response.json();
    check_model_list(&v).unwrap();
    assert!(
        v["data"].as_array().unwrap().iter().any(|m| m["id"] == "ollama/llama3.2:latest"),
        "provider from OLLAMA_URL listed: {v}"
    );

    // Graceful stop on SIGTERM (the process we started, by its id).
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ai-aggregator did not exit within 15 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert!(exit.success(), "exit status {exit}; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
