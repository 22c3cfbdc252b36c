//! The accept loop: HTTP/1 and HTTP/2 on one listener, with the limits a public server needs
//! that `axum::serve` does not set.
//!
//! - **Header-read timeout.** A client that opens a connection and sends its request headers
//!   slowly (or never) would hold the connection, and its memory and file descriptor, for as
//!   long as it likes. hyper closes it once the headers have not arrived within
//!   `http.header_read_timeout_secs`; that includes an idle keep-alive connection waiting for
//!   its next request. (hyper has the timeout, but only applies it with a timer, which
//!   `axum::serve` does not give it.)
//! - **Concurrent connections.** At most `http.max_connections` connections are served at
//!   once. At the limit, the loop stops accepting until one closes: further clients wait in the
//!   kernel's backlog instead of costing anything here.
//!
//! Shutdown stops accepting, lets requests in flight finish (long-polling syncs answer at once,
//! see `SyncService`), and closes idle connections.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::connect_info::IntoMakeServiceWithConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

/// How often an HTTP/2 connection is pinged (and must answer within the header-read timeout).
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Connection limits, from `[http]` in the config.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` flips to true, then waits for open connections.
/// With `tls`, each connection is a TLS one, whose handshake must also finish within the
/// header-read timeout.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut make_service: IntoMakeServiceWithConnectInfo<Router, SocketAddr> =
        app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    // HTTP/2 pings find peers that are gone; a dead connection then frees its slot.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_KEEP_ALIVE))
        .keep_alive_timeout(limits.header_read_timeout);
    // Over TLS, ALPN has said which protocol the connection speaks: no need to read for it.
    let http1 = Arc::new(builder.clone().http1_only());
    let http2 = Arc::new(builder.clone().http2_only());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = stopped(&mut stop) => break,
        };
        let Ok(slot) = slot else { break };
        if slots.available_permits() == 0 {
            tracing::warn!(limit = limits.max_connections, "at the connection limit: not accepting until one closes");
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the error is about this one
                    // connection or a passing shortage, so wait a little and go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Ok(service) = make_service.call(peer).await;
        let service = TowerToHyperService::new(service);
        let (builder, http1, http2) = (Arc::clone(&builder), Arc::clone(&http1), Arc::clone(&http2));
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    // hyper reads the first bytes to tell HTTP/1 from HTTP/2 with no timeout
                    // (its header-read timeout starts after): a client that connects and says
                    // nothing would hold its slot for ever. Wait for its first byte here.
                    let mut first = [0_u8; 1];
                    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("the client sent nothing".into()),
                    }
                }
                Some(tls) => match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let builder = if h2 { http2 } else { http1 };
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            // The slot frees only once the connection is gone.
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the caller.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}
