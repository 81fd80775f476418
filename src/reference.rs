//! The reference row of the benchmark: a plain tokio echo server ("reference: tokio").
//!
//! This is the server a Rust user would otherwise write instead of picking one of the I/O
//! models: `TcpListener::accept` in a loop, one task per connection that reads into a 16 KiB
//! buffer and `write_all`s what it read (so a slow reader stops the task from reading more:
//! natural backpressure). It runs on a current-thread runtime, so like the single-threaded
//! models it uses one core, and the comparison is one event loop against another.
//!
//! It has none of the models' instrumentation: wake-ups and syscalls per message are not
//! counted, so the benchmark reports only its rate and latency.
//!
//! Half-close: when a client shuts down its write side, the task sees a read of 0 bytes,
//! everything read before it has been echoed, so it shuts down its own write side and closes.
//!
//! Shutdown: on the first SIGINT or SIGTERM it stops accepting (the listener is closed), then
//! waits up to the drain timeout for the open connections to end; those still open then are
//! closed. A second signal during the drain closes them at once.

use anyhow::{Context, Result};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

/// Bytes each connection reads at a time.
const BUFFER_SIZE: usize = 16 * 1024;

/// How long to pause accepting after an accept error that is not about one connection (out of
/// file descriptors, out of memory), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Serves RFC 862 echo on `listen` with a plain tokio server until SIGINT or SIGTERM, then
/// stops accepting, lets connections finish for up to `drain`, and returns Ok.
///
/// Calls `ready(local_addr)` once the listener is bound and the signal handlers are installed
/// (the caller prints the ready line), so a signal sent after that line is always handled.
///
/// # Errors
///
/// When the runtime cannot be built, the address cannot be bound ("cannot listen on ADDR"), or
/// the signal handlers cannot be installed. Errors on one connection end that connection only
/// and are logged at debug level.
pub fn serve(listen: SocketAddr, drain: Duration, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    // Dropping the runtime afterwards cancels any connection task still alive.
    runtime.block_on(run(listen, drain, ready))
}

/// The body of [`serve`], on the runtime.
async fn run(listen: SocketAddr, drain: Duration, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {listen}"))?;
    ready(local);

    let mut conns = JoinSet::new();
    let signal_name = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(async move {
                        if let Err(e) = echo(stream).await {
                            log::debug!("connection from {peer}: {e}");
                        }
                    });
                }
                Err(e) if is_connection_error(&e) => log::debug!("accept: {e}"),
                Err(e) => {
                    log::warn!("accept: {e}; pausing for {ACCEPT_ERROR_PAUSE:?}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            // Reap finished tasks: a JoinSet keeps each one until it is joined.
            Some(joined) = conns.join_next(), if !conns.is_empty() => log_join(joined),
        }
    };

    drop(listener);
    let open = conns.len();
    log::info!(
        "{signal_name}: stopped accepting; draining {open} connection(s) for up to {drain:?}"
    );
    let drained = tokio::select! {
        () = join_all(&mut conns) => true,
        () = tokio::time::sleep(drain) => false,
        _ = sigint.recv() => false,
        _ = sigterm.recv() => false,
    };
    if !drained {
        log::info!("closing {} connection(s) still open", conns.len());
        conns.shutdown().await;
    }
    Ok(())
}

/// Echoes everything read from `stream` back to it until the peer shuts down its write side,
/// then shuts down ours.
async fn echo(mut stream: TcpStream) -> io::Result<()> {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {e}");
    }
    let mut buf = vec![0u8; BUFFER_SIZE].into_boxed_slice();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // Everything the peer sent has been echoed: half-close, then close on drop.
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Waits for every task of `conns` to end.
async fn join_all(conns: &mut JoinSet<()>) {
    while let Some(joined) = conns.join_next().await {
        log_join(joined);
    }
}

/// Logs a connection task that panicked (one that ended normally logged its own errors).
fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            log::error!("connection task panicked: {e}");
        }
    }
}

/// Whether an accept error is about the one connection being accepted (so accepting again at
/// once is right) rather than about the process or the system.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
