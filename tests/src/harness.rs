//! The gateway under test: `gateway::serve` on `127.0.0.1:0` inside the test's runtime, plus config
//! builders pointing providers at mock upstreams.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::{Config, MapEnv};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::TestClient;
use crate::mock::MockUpstream;

/// A running gateway; [`GatewayUnderTest::shutdown`] stops it and waits for `serve` to return.
pub struct GatewayUnderTest {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// Directory for the embedded ledger (removed on shutdown).
    pub data_dir: PathBuf,
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), gateway::StartError>>>,
}

impl GatewayUnderTest {
    /// Starts the gateway from a YAML config with an empty environment.
    ///
    /// `${DATA_DIR}` in the YAML is replaced by a fresh temporary directory (use it for
    /// `ledger.data_dir`).
    ///
    /// # Panics
    /// When the config is rejected or the port cannot be bound.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, MapEnv::default()).await
    }

    /// Starts the gateway with the given environment source.
    ///
    /// # Panics
    /// When the config is rejected or the port cannot be bound.
    pub async fn start_with_env(yaml: &str, env: MapEnv) -> Self {
        let spawned = spawn_gateway(yaml, env, "gw").await;
        GatewayUnderTest {
            addr: spawned.addr,
            data_dir: spawned.data_dir,
            token: spawned.token,
            task: Some(spawned.task),
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An HTTP/1.1 client for this gateway.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.base_url())
    }

    /// Cancels the shutdown token and waits (at most 30 s) for `serve` to return.
    ///
    /// # Panics
    /// When `serve` fails, panics, or does not return in time.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Err(_) => panic!("gateway::serve did not return within 30 s of shutdown"),
                Ok(Err(join)) => panic!("gateway::serve panicked: {join}"),
                Ok(Ok(Err(e))) => panic!("gateway::serve failed: {e}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for GatewayUnderTest {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A gateway `serve` task on a fresh loopback port and data directory, as every harness starts one.
pub struct Spawned {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub token: CancellationToken,
    pub task: JoinHandle<Result<(), gateway::StartError>>,
}

/// Starts `gateway::serve` from YAML; `${DATA_DIR}` is a fresh temporary directory named after `tag`.
///
/// # Panics
/// When the config is rejected or loopback cannot be bound.
pub async fn spawn_gateway(yaml: &str, mut env: MapEnv, tag: &str) -> Spawned {
    let data_dir = temp_dir(tag);
    env.0.insert("DATA_DIR".to_owned(), data_dir.display().to_string());
    let config = Config::from_yaml_str(yaml, &env)
        .unwrap_or_else(|e| panic!("gateway rejected the test config: {e}\n---\n{yaml}"));
    #[allow(clippy::expect_used)] // Harness cannot continue without a listener.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway listener");
    #[allow(clippy::expect_used)]
    let addr = listener.local_addr().expect("gateway local addr");
    let token = CancellationToken::new();
    let task = tokio::spawn(gateway::serve(config, listener, token.clone()));
    Spawned { addr, data_dir, token, task }
}

/// A fresh empty directory under the system temp dir.
///
/// # Panics
/// When it cannot be created.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "ai-agg-it-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Timeouts for one provider entry (milliseconds).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect_ms: u64,
    /// Request sent → first byte.
    pub first_byte_ms: u64,
    /// Longest silence mid-stream.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect_ms: 2_000, first_byte_ms: 20_000, idle_ms: 20_000 }
    }
}

/// Builds a gateway YAML config with providers `openai`, `anthropic` and `ollama` pointing at mocks.
#[derive(Default)]
pub struct ConfigBuilder {
    providers: Vec<String>,
    extra: Vec<String>,
}

/// API key the gateway is configured to send to the OpenAI mock.
pub const OPENAI_KEY: &str = "sk-upstream-openai-test";
/// API key the gateway is configured to send to the Anthropic mock.
pub const ANTHROPIC_KEY: &str = "sk-ant-upstream-test";

impl ConfigBuilder {
    /// An empty config (no providers yet).
    pub fn new() -> Self {
        ConfigBuilder::default()
    }

    /// Adds a provider entry `id` of the mock's kind at the mock's base URL.
    pub fn provider(self, id: &str, mock: &MockUpstream) -> Self {
        self.provider_with(id, mock, Timeouts::default())
    }

    /// Adds a provider entry with explicit timeouts.
    pub fn provider_with(self, id: &str, mock: &MockUpstream, t: Timeouts) -> Self {
        self.provider_at(id, mock.flavor(), &mock.base_url(), t)
    }

    /// Adds a provider entry of `flavor` at an arbitrary base URL (e.g. a closed port).
    pub fn provider_at(mut self, id: &str, flavor: crate::mock::Flavor, base_url: &str, t: Timeouts) -> Self {
        use crate::mock::Flavor;
        let kind_specific = match flavor {
            Flavor::OpenAi => format!("    kind: openai\n    api_key: {OPENAI_KEY}\n"),
            Flavor::Anthropic => {
                format!("    kind: anthropic\n    api_key: {ANTHROPIC_KEY}\n    anthropic_version: \"2023-06-01\"\n")
            }
            Flavor::Ollama => "    kind: ollama\n    num_ctx: 8192\n    keep_alive: 5m\n".to_owned(),
        };
        self.providers.push(format!(
            "  {id}:\n{kind_specific}    base_url: {base_url}\n    timeouts:\n      connect_ms: {}\n      \
             first_byte_ms: {}\n      idle_ms: {}\n",
            t.connect_ms, t.first_byte_ms, t.idle_ms
        ));
        self
    }

    /// Appends raw top-level YAML (e.g. `max_body_bytes: 1024`).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push(yaml.to_owned());
        self
    }

    /// The YAML text.
    pub fn build(&self) -> String {
        let mut out = String::from("listen: 127.0.0.1:0\nmodels_cache_ttl_secs: 0\n");
        out.push_str("ledger:\n  data_dir: ${DATA_DIR}\n");
        out.push_str("providers:\n");
        for p in &self.providers {
            out.push_str(p);
        }
        for e in &self.extra {
            out.push_str(e);
            if !e.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// The three mocks plus a gateway configured for all of them (`openai`, `anthropic`, `ollama`).
pub struct Stack {
    /// OpenAI mock.
    pub openai: MockUpstream,
    /// Anthropic mock.
    pub anthropic: MockUpstream,
    /// Ollama mock.
    pub ollama: MockUpstream,
    /// The gateway.
    pub gateway: GatewayUnderTest,
}

impl Stack {
    /// The mock that plays `flavor`.
    pub fn mock(&self, flavor: crate::mock::Flavor) -> &MockUpstream {
        match flavor {
            crate::mock::Flavor::OpenAi => &self.openai,
            crate::mock::Flavor::Anthropic => &self.anthropic,
            crate::mock::Flavor::Ollama => &self.ollama,
        }
    }

    /// Starts three mocks and a gateway with default timeouts.
    pub async fn start() -> Self {
        Self::start_with(Timeouts::default(), "").await
    }

    /// Starts three mocks and a gateway with the given timeouts and extra YAML.
    pub async fn start_with(t: Timeouts, extra: &str) -> Self {
        use crate::mock::Flavor;
        let openai = MockUpstream::start(Flavor::OpenAi).await;
        let anthropic = MockUpstream::start(Flavor::Anthropic).await;
        let ollama = MockUpstream::start(Flavor::Ollama).await;
        let yaml = ConfigBuilder::new()
            .provider_with("openai", &openai, t)
            .provider_with("anthropic", &anthropic, t)
            .provider_with("ollama", &ollama, t)
            .extra(extra)
            .build();
        let gateway = GatewayUnderTest::start(&yaml).await;
        Stack { openai, anthropic, ollama, gateway }
    }

    /// A client for the gateway.
    pub fn client(&self) -> TestClient {
        self.gateway.client()
    }
}
