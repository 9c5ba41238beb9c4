//! `hyper-floor`: the smallest pass-through proxy the gateway's HTTP stack allows, as a bench target.
//!
//! A hyper 1.x HTTP/1.1 server and a hyper-util pooled keep-alive client (the gateway's two halves),
//! `TCP_NODELAY` on both sides, a multi-threaded tokio runtime with the gateway's worker count. Each
//! request is forwarded to `--upstream` with its method, path, headers and body stream untouched, and
//! the upstream's response comes back the same way: no parsing, no routing, no ledger, no logging,
//! no metrics. Whatever this costs per request (CPU, added latency) is the floor hyper's own server
//! and client set; the gateway's cost above it is its own work.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Minimal hyper pass-through proxy (the HTTP stack's floor).
#[derive(Debug, Parser)]
#[command(name = "hyper-floor")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream `host:port` (plain HTTP/1.1).
    #[arg(long)]
    upstream: String,
    /// Runtime worker threads (default: one per core, as the gateway).
    #[arg(long)]
    threads: Option<usize>,
    /// Read the whole request body before forwarding it, as the gateway must (it parses the JSON to
    /// route and meter); the body goes upstream as one buffer. `bench/wakeups` uses this to show
    /// what buffering alone costs in cross-thread wake-ups at c=1.
    #[arg(long)]
    buffer_request: bool,
}

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: Client<HttpConnector, ProxyBody>,
    authority: Authority,
    buffer_request: bool,
}

async fn forward(proxy: Arc<Proxy>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(proxy.authority.clone());
    parts.uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let body = if proxy.buffer_request {
        match body.collect().await {
            Ok(collected) => Full::new(collected.to_bytes()).map_err(|never| match never {}).boxed_unsync(),
            Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
        }
    } else {
        body.boxed_unsync()
    };
    match proxy.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed_unsync)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = code;
    resp
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let authority: Authority = args.upstream.parse().map_err(std::io::Error::other)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(conn);
        let proxy = Arc::new(Proxy { client, authority, buffer_request: args.buffer_request });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(true);
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (proxy, builder) = (proxy.clone(), builder.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| forward(proxy.clone(), req));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
