//! The `ai-aggregator` binary: flags, config, logging, signals. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// OpenAI-compatible AI gateway for OpenAI, Anthropic and Ollama.
#[derive(Debug, Parser)]
#[command(name = "ai-aggregator", version, about)]
struct Args {
    /// Configuration file (YAML). Without it, providers come from the environment.
    #[arg(long, short = 'c', env = "AI_AGGREGATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Also serve `/metrics`, `/healthz` and `/readyz` on this address (e.g. 0.0.0.0:9090), apart from the API.
    #[arg(long, env = "ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Check the configuration and exit (0 when valid, 2 when not).
    #[arg(long)]
    check_config: bool,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colour codes only for a terminal: in a file or a log pipeline they are bytes to write and strip.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received: draining");
    token.cancel();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let config = match gateway::Config::load(args.config.as_deref(), &gateway::ProcessEnv) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot bind");
                return ExitCode::FAILURE;
            }
        };
        let admin = match args.admin_listen {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(listen = %addr, error = %e, "cannot bind the operations listener");
                    return ExitCode::FAILURE;
                }
            },
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(shutdown_signal(shutdown.clone()));
        match gateway::serve_with_admin(config, listener, admin, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "gateway stopped");
                ExitCode::FAILURE
            }
        }
    })
}
