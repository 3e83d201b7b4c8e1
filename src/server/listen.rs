//! Accepting connections and serving HTTP/1.1 and HTTP/2 (gRPC) on them: what `axum::serve`
//! does, with hyper's HTTP/1 read buffer allowed to grow further.
//!
//! hyper reads a connection into a buffer of at most about 400 KB by default, so a body of a
//! megabyte (an OTLP or remote-write batch, a line-protocol batch) arrives in three or more
//! pieces, and the pieces must be copied into one buffer before they can be decoded (see
//! `body::read_raw`). With room for [`HTTP1_MAX_BUF`] bytes, a body the client has already
//! sent usually comes in one piece, which is decoded where it lies.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How large hyper's read buffer of an HTTP/1 connection may grow. The buffer grows only
/// while reads fill it, and shrinks again when they do not.
pub const HTTP1_MAX_BUF: usize = 4 << 20;

/// How long connections that do not close after a stop are waited for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How connections are bounded: a slow or silent client holds a connection (and a file
/// descriptor) only so long, and only so many are open at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time an HTTP/1 connection has to send a request's headers, counted from the end of
    /// the previous response (hyper's header read timeout: it is also the idle timeout of a
    /// keep-alive connection). An HTTP/2 connection that does not answer a ping within it
    /// is closed.
    pub header_timeout: Duration,
    /// Connections open at once; past it, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves `router` on `listener` until `stop` completes; then stops accepting, lets every
/// connection finish the requests it has begun (HTTP/1 connections close after their
/// current response; HTTP/2 connections send GOAWAY), and returns once all are closed, or
/// after [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stopping_tx, stopping) = watch::channel(false);
    // every connection holds a clone; the channel closes when the last one ends
    let (open_tx, open) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Responses go out as soon as they are written: a streamed answer (Flight batches,
        // gRPC trailers) must not wait for the client's delayed ACK before its last segment.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(HTTP1_MAX_BUF)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_timeout)
                .keep_alive_timeout(limits.header_timeout);
            let mut conn =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let mut asked_to_stop = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!("connection ended with an error: {e}");
                        }
                        break;
                    }
                    _ = stopping.wait_for(|s| *s), if !asked_to_stop => {
                        asked_to_stop = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(open);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after the stop are left behind",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// After a failed `accept`: an error of one connection (reset before it was accepted) is
/// nothing to wait for; others (out of file descriptors) are logged, and accepting resumes
/// after a second, as `axum::serve` does.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {e}; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
