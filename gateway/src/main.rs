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

fn init_logging() -> log_writer::BatchedStderr {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colour codes only for a terminal: in a file or a log pipeline they are bytes to write and strip.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = log_writer::BatchedStderr::start();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone()).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
        if !ansi {
            gateway::services::sink::set_access_writer(log_writer::access_writer(writer.clone()));
        }
    }
    writer
}

/// Log lines to stderr in batches (issue 17: one `write` per request was a tenth of the gateway's
/// system calls, and on the request's critical path).
mod log_writer {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    /// How long an info line may wait in the buffer.
    const FLUSH_EVERY: Duration = Duration::from_millis(50);
    /// A buffer this full is written at once.
    const FLUSH_AT: usize = 32 * 1024;

    /// Lines are appended to a shared buffer, written by a background thread every [`FLUSH_EVERY`],
    /// at once when it passes [`FLUSH_AT`] bytes or when a line is WARN or ERROR, and at exit
    /// ([`BatchedStderr::flush`]). Order is kept: every write happens under the buffer's lock.
    #[derive(Clone)]
    pub struct BatchedStderr(Arc<Buffer>);

    #[expect(
        clippy::disallowed_types,
        reason = "held for a copy of one log line or one write(2), never across an await; tokio's would need a runtime"
    )]
    type Buffer = std::sync::Mutex<Vec<u8>>;

    impl BatchedStderr {
        /// The writer and its flushing thread (a thread that cannot start leaves lines to be written
        /// when the buffer fills, by a warning, or at exit).
        pub fn start() -> Self {
            let me = Self(Arc::new(Buffer::new(Vec::with_capacity(FLUSH_AT))));
            let bg = me.clone();
            let _ = std::thread::Builder::new().name("log-flush".into()).spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                bg.flush();
            });
            me
        }

        /// Writes what is buffered.
        pub fn flush(&self) {
            let mut buf = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            write_out(&mut buf);
        }
    }

    fn write_out(buf: &mut Vec<u8>) {
        if !buf.is_empty() {
            // Nowhere to report a failing stderr.
            let _ = std::io::stderr().lock().write_all(buf);
            buf.clear();
        }
    }

    /// The access line's writer (`sink::set_access_writer`): the subscriber's text prefix for an
    /// INFO event of `gateway::services::sink` (`2026-12-01T21:08:34.196128Z  INFO target: `), then
    /// the line, appended to the buffer like any INFO line.
    pub fn access_writer(to: BatchedStderr) -> Box<dyn Fn(&str) + Send + Sync> {
        Box::new(move |line: &str| {
            let mut stamp = String::with_capacity(32);
            push_timestamp(&mut stamp, std::time::SystemTime::now());
            let mut buf = to.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for part in [stamp.as_str(), "  INFO gateway::services::sink: ", line, "\n"] {
                buf.extend_from_slice(part.as_bytes());
            }
            if buf.len() >= FLUSH_AT {
                write_out(&mut buf);
            }
        })
    }

    /// RFC 3339 UTC with microseconds, as tracing-subscriber's default timer prints it.
    ///
    /// The `YYYY-MM-DDTHH:MM:SS` part is formatted once per second per thread and reused (it was
    /// most of the access line's cost, issue 17); only the microseconds are written per line.
    pub fn push_timestamp(out: &mut String, at: std::time::SystemTime) {
        use std::cell::RefCell;
        thread_local! {
            static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
        }
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let whole = since.as_secs();
        SECOND.with_borrow_mut(|(cached, text)| {
            if *cached != whole {
                use std::fmt::Write as _;
                let secs = i64::try_from(whole).unwrap_or(0);
                text.clear();
                text.push_str(&gateway::domain::time::format_day(secs.div_euclid(86_400)));
                let s = secs.rem_euclid(86_400);
                let _ = write!(text, "T{:02}:{:02}:{:02}.", s / 3600, s / 60 % 60, s % 60);
                *cached = whole;
            }
            out.push_str(text);
        });
        let mut micros = since.subsec_micros();
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out.extend(digits.iter().map(|&d| char::from(d)));
        out.push('Z');
    }

    /// One event's line; written into the buffer when tracing drops it.
    pub struct Line<'a> {
        to: &'a BatchedStderr,
        urgent: bool,
    }

    impl Write for Line<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buf = self.to.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            buf.extend_from_slice(bytes);
            if self.urgent || buf.len() >= FLUSH_AT {
                write_out(&mut buf);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
        type Writer = Line<'a>;

        fn make_writer(&'a self) -> Self::Writer {
            Line { to: self, urgent: true }
        }

        fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
            Line { to: self, urgent: *meta.level() <= tracing::Level::WARN }
        }
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
    let logs = init_logging();
    let code = run(args);
    logs.flush();
    code
}

fn run(args: Args) -> ExitCode {
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

#[cfg(test)]
mod tests {
    /// The access line's prefix has the subscriber's shape, for the same instant.
    #[test]
    fn access_prefix_is_the_subscribers() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut out = String::new();
        super::log_writer::push_timestamp(&mut out, UNIX_EPOCH + Duration::new(1_764_624_514, 196_128_999));
        assert_eq!(out, "2025-12-01T21:28:34.196128Z");
        let mut epoch = String::new();
        super::log_writer::push_timestamp(&mut epoch, UNIX_EPOCH);
        assert_eq!(epoch, "1970-01-01T00:00:00.000000Z");
        // The cached second is reused only within the same second.
        for (at, want) in [
            (Duration::new(1_764_624_514, 5_000), "2025-12-01T21:28:34.000005Z"),
            (Duration::new(1_764_624_515, 999_999_999), "2025-12-01T21:28:35.999999Z"),
            (Duration::new(1_764_624_515, 0), "2025-12-01T21:28:35.000000Z"),
            (Duration::new(1_767_225_599, 123_000), "2025-12-31T23:59:59.000123Z"),
        ] {
            let mut out = String::new();
            super::log_writer::push_timestamp(&mut out, UNIX_EPOCH + at);
            assert_eq!(out, want);
        }
    }
}
