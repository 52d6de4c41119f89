//! [`TestServer`]: serves one [`State`] over HTTP/1.1 on a local TCP port.
//!
//! Receives TCP connections; hands each to hyper with the [`Frontend`] service.
//! Invariants: the listener is bound before `start` returns, so a client may connect at
//! once (no sleep); `shutdown` returns only after the listener and every connection,
//! including idle keep-alive ones, are closed, so the port can be bound again.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::frontend::Frontend;
use crate::state::State;

/// An S3 server running on the current tokio runtime. Dropping it stops it too, but only
/// `shutdown` waits for the port to be free.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl TestServer {
    /// A server with a fresh [`State`] on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no local port can be bound.
    pub async fn start() -> TestServer {
        TestServer::start_with(State::new(), None)
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// A server for `state` on `addr` (default `127.0.0.1:0`); pass a stopped server's
    /// `addr()` and `state()` to restart it on the same port with the same data.
    pub async fn start_with(state: Arc<State>, addr: Option<SocketAddr>) -> io::Result<TestServer> {
        let addr = addr.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let frontend = Frontend::new(state.clone());
        let accept_loop = tokio::spawn(accept_loop(listener, frontend, stopped));
        Ok(TestServer {
            addr,
            state,
            stop,
            accept_loop,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stops accepting, closes every open connection (requests in progress get no answer)
    /// and returns once the port is free.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    frontend: Frontend,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        // Cancel safety: `accept` is cancel safe (a pending connection stays queued and is
        // closed with the listener); `changed` is too. Ready on `send(true)` and on the
        // sender's drop alike.
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    connections.spawn(serve(socket, frontend.clone()));
                }
                // Out of file descriptors and the like: don't spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Aborting a connection task drops its socket: idle keep-alive connections close too.
    connections.shutdown().await;
}

async fn serve(socket: TcpStream, frontend: Frontend) {
    let _ = socket.set_nodelay(true);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(socket), frontend)
        .await;
}
