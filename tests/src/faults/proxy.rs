//! A loopback TCP relay that can go down and come back on the same port.
//!
//! While down, every relayed connection is reset and new connections are accepted and reset at once
//! (the port stays bound, so nothing else can take it and the gateway's URL stays valid).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

struct State {
    target: SocketAddr,
    up: AtomicBool,
    /// Cancelled when the proxy goes down: every relay of the current generation ends.
    generation: Mutex<CancellationToken>,
    relays: AtomicUsize,
    refused: AtomicUsize,
}

/// A running relay; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TcpProxy {
    /// Relays `127.0.0.1:0` → `target`, initially up.
    ///
    /// # Panics
    /// When loopback cannot be bound.
    pub async fn start(target: SocketAddr) -> Self {
        #[allow(clippy::expect_used)]
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            target,
            up: AtomicBool::new(true),
            generation: Mutex::new(CancellationToken::new()),
            relays: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        TcpProxy { addr, state, stop }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the proxy down: resets every relayed connection and refuses new ones.
    pub async fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        let mut g = self.state.generation.lock().await;
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Brings the proxy back.
    pub fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Connections currently relayed.
    pub fn relays(&self) -> usize {
        self.state.relays.load(Ordering::SeqCst)
    }

    /// Connections refused while down.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else { continue };
        if !state.up.load(Ordering::SeqCst) {
            state.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let token = state.generation.lock().await.clone();
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(state.target).await else {
                let _ = client.set_zero_linger();
                return;
            };
            state.relays.fetch_add(1, Ordering::SeqCst);
            let (mut client, mut server) = (client, server);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                () = token.cancelled() => {
                    let _ = client.set_zero_linger();
                    let _ = server.set_zero_linger();
                }
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
            state.relays.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
