//! [`Session`]: a socket joined to its [`Connection`], and the one loop that moves bytes between
//! them. Every readiness model (thread per client, select, epoll, signal-driven I/O) drives its
//! connections through [`Session::pump`]; they differ only in how they learn that a socket is
//! ready.

use crate::ctx::Ctx;
use crate::limits::{Clock, Expiry, Sweep};
use crate::log_every::log_every;
use crate::stats::Stats;
use iomodels_core::Connection;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most bytes one read asks for: the size of a model's scratch buffer.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What [`Session::pump`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for the socket to become ready again.
    Open,
    /// The read budget of this call ran out while the socket may still hold data: pump again
    /// soon (an edge-triggered model will not be told again).
    MoreToRead,
    /// The connection is over; drop the session to close the socket.
    Closed,
}

/// A client socket and the connection state machine it feeds.
///
/// `readable` and `writable` are the model's knowledge of the socket: set when the model is
/// told the socket is ready, cleared by `pump` when a call returns `WouldBlock`. Writes are
/// tried optimistically (`writable` starts true), so a reply goes out in the same turn as the
/// request that caused it.
///
/// Dropping a session closes the socket and settles its share of the server's gauges. The
/// socket is a [`TcpStream`] for every model but one: `completion-port`'s engine keeps either
/// an ordinary socket or a direct descriptor (a slot in its ring's fixed-file table, closed by
/// the engine with `IORING_OP_CLOSE`) behind [`SessionSocket`]; only `TcpStream` sessions pump.
pub(crate) struct Session<S: SessionSocket = TcpStream> {
    pub stream: S,
    pub conn: Connection,
    pub readable: bool,
    pub writable: bool,
    /// Edge-triggered readiness (epoll with `EPOLLET`): a short read or write means the socket
    /// is drained or full *now*, and any later change brings a new edge, so `pump` clears the
    /// flag without paying for the call that would return `EWOULDBLOCK`.
    pub edge_triggered: bool,
    /// The peer's FIN has been announced (`EPOLLRDHUP`): a short read is then not the end of
    /// what there is to read, since the end of stream still waits behind the data and no new
    /// edge will announce it.
    pub peer_closing: bool,
    /// The socket announced urgent data (`EPOLLPRI` / `POLL_PRI`). A recv stops short at the
    /// urgent mark (Linux's `tcp_recvmsg`, `SO_OOBINLINE` or not), so a short read is then not
    /// the end of what there is to read: an edge-triggered model reads on until `EWOULDBLOCK`,
    /// or the bytes after the mark would sit unread until the peer sent more.
    pub urgent: bool,
    /// The socket blocks (the thread-per-client model): a write can wait indefinitely, so the
    /// pending gauge is published before each write rather than after.
    pub blocking: bool,
    /// What the idle and write timeouts see of this connection ([`crate::limits`]).
    pub clock: Clock,
    /// A blocking socket's timeout fired (`SO_RCVTIMEO` / `SO_SNDTIMEO`): why it closed.
    expired: Option<Expiry>,
    /// A blocking socket's `SO_RCVTIMEO` is the handshake deadline (not the idle timeout).
    recv_waits_for_handshake: bool,
    /// The peer's address, taken at the start for a TLS connection's closing log line (at the
    /// end, `getpeername` fails once the peer has reset the connection).
    tls_peer: Option<SocketAddr>,
    stats: Arc<Stats>,
    /// Pending bytes last added to `stats.pending_bytes`.
    published_pending: usize,
}

/// What a session needs of its socket beyond what its model does with it.
pub(crate) trait SessionSocket {
    /// The peer's address, if this socket can tell it now (for a TLS connection's log line).
    fn peer(&self) -> Option<SocketAddr>;
    /// One best-effort, non-blocking write of `buf` (a TLS `close_notify` at the end).
    fn write_now(&mut self, buf: &[u8]);
}

impl SessionSocket for TcpStream {
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }

    fn write_now(&mut self, buf: &[u8]) {
        // (Fails on Windows for a socket under WSAAsyncSelect/WSAEventSelect, which are
        // non-blocking already.)
        let _ = self.set_nonblocking(true);
        let _ = self.write(buf);
    }
}

impl<S: SessionSocket> Session<S> {
    /// Wraps an accepted stream and counts it as active.
    pub fn new(stream: S, ctx: &Ctx) -> Session<S> {
        ctx.stats.accepted.fetch_add(1, Relaxed);
        ctx.stats.active.fetch_add(1, Relaxed);
        let tls_peer = ctx.tls.as_ref().and_then(|_| stream.peer());
        Session {
            stream,
            conn: match &ctx.tls {
                None => Connection::new(ctx.service, ctx.limits),
                Some(tls) => Connection::with_tls(ctx.service, ctx.limits, Arc::clone(tls))
                    .expect("Server::bind made a session from this TLS configuration"),
            },
            readable: false,
            writable: true,
            edge_triggered: false,
            peer_closing: false,
            urgent: false,
            blocking: false,
            clock: Clock::new(ctx.tls_handshake_deadline()),
            expired: None,
            recv_waits_for_handshake: false,
            tls_peer,
            stats: Arc::clone(&ctx.stats),
            published_pending: 0,
        }
    }

    /// Records the peer's address for a TLS connection's closing log line, when the socket
    /// could not tell it at [`Session::new`] (a direct descriptor learns it later).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // io_uring's direct descriptors
    pub fn set_tls_peer(&mut self, peer: SocketAddr) {
        if self.conn.is_tls() {
            self.tls_peer = Some(peer);
        }
    }

    /// Adds traffic to the server's counters and moves the pending gauge to this connection's
    /// current unsent bytes.
    pub fn publish(&mut self, bytes_in: u64, bytes_out: u64) {
        self.clock
            .mark(bytes_in + bytes_out > 0, self.conn.is_backpressured());
        if bytes_in > 0 {
            self.stats.bytes_in.fetch_add(bytes_in, Relaxed);
        }
        if bytes_out > 0 {
            self.stats.bytes_out.fetch_add(bytes_out, Relaxed);
        }
        self.publish_pending();
    }

    /// Moves the pending gauge to this connection's current unsent bytes (and the peak).
    fn publish_pending(&mut self) {
        let pending = self.conn.pending_len();
        if pending != self.published_pending {
            let delta = pending as i64 - self.published_pending as i64;
            self.stats.pending_bytes.fetch_add(delta, Relaxed);
            self.published_pending = pending;
            self.stats.peak_conn_pending.fetch_max(pending, Relaxed);
        }
    }
}

/// What one read or write of a pump round did.
enum Step {
    /// Bytes moved (or the peer's EOF, or an interrupted call): the round made progress.
    Progress,
    /// Nothing moved: the socket would block.
    Idle,
    /// The pump is over, with this result.
    Stop(io::Result<Status>),
}

impl Session {
    /// Reads (at most `max_reads` times) and writes until neither makes progress, handles
    /// half-close, and says whether the connection is still open.
    ///
    /// On a blocking socket each read waits for data: the thread-per-client model calls this
    /// with `max_reads == 1` until the connection is closed, one blocking recv per call.
    pub fn pump(&mut self, scratch: &mut [u8], max_reads: usize) -> Status {
        self.pump_counted(scratch, max_reads).0
    }

    /// [`Session::pump`], also saying how many bytes it read (for a model's `--trace`).
    pub fn pump_counted(&mut self, scratch: &mut [u8], max_reads: usize) -> (Status, u64) {
        let (result, bytes_in) = self.pump_inner(scratch, max_reads);
        if let Some(why) = self.expired.take() {
            why.count(&self.stats);
            return (Status::Closed, bytes_in);
        }
        let status = result.unwrap_or_else(|e| {
            log::debug!("connection closed on error: {e}");
            self.stats.errors.fetch_add(1, Relaxed);
            Status::Closed
        });
        (status, bytes_in)
    }

    /// [`Session::pump_counted`]'s rounds: a read (while the budget lasts), a write, the
    /// half-close, until a round makes no progress; then the counters are published.
    fn pump_inner(&mut self, scratch: &mut [u8], max_reads: usize) -> (io::Result<Status>, u64) {
        let mut reads = 0;
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        let mut calls = 0u64;
        let result = loop {
            let mut progress = false;
            let budget = self.conn.read_budget().min(scratch.len());
            if self.readable && budget > 0 && reads < max_reads {
                reads += 1;
                calls += 1;
                match self.read_once(&mut scratch[..budget], &mut bytes_in) {
                    Step::Progress => progress = true,
                    Step::Idle => {}
                    Step::Stop(r) => break r,
                }
            }
            if self.writable && self.conn.wants_write() {
                calls += 1;
                match self.write_once(&mut bytes_out) {
                    Step::Progress => progress = true,
                    Step::Idle => {}
                    Step::Stop(r) => break r,
                }
            }
            if self.conn.should_shutdown_write() {
                calls += 1;
                match self.stream.shutdown(Shutdown::Write) {
                    // The peer may have closed completely already: the connection is over
                    // either way.
                    Ok(()) | Err(_) => self.conn.on_write_shutdown(),
                }
            }
            if let Some(status) = self.after_round(progress, reads >= max_reads) {
                break Ok(status);
            }
        };
        if calls > 0 {
            self.stats.syscalls.fetch_add(calls, Relaxed);
        }
        self.publish(bytes_in, bytes_out);
        (result, bytes_in)
    }

    /// One recv into `buf` (the read budget), adding what it read to `bytes_in`.
    fn read_once(&mut self, buf: &mut [u8], bytes_in: &mut u64) -> Step {
        let budget = buf.len();
        // A blocking recv hands its buffer to the kernel until it returns: counted
        // while it waits (`Stats::recv_buffer_bytes_posted`).
        if self.blocking {
            self.stats.recv_buffer_posted(budget);
        }
        let read = self.stream.read(buf);
        if self.blocking {
            self.stats.recv_buffer_returned(budget);
        }
        match read {
            Ok(0) => {
                self.conn.on_peer_eof();
                Step::Progress
            }
            Ok(n) => {
                self.conn.on_received(&buf[..n]);
                *bytes_in += n as u64;
                if n < budget && self.edge_triggered && !self.peer_closing && !self.urgent {
                    self.readable = false;
                }
                Step::Progress
            }
            Err(e) if self.blocking && is_timeout(&e) => {
                self.expired = Some(if self.recv_waits_for_handshake {
                    Expiry::Handshake
                } else {
                    Expiry::Idle
                });
                Step::Stop(Ok(Status::Closed))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                self.urgent = false;
                Step::Idle
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
            Err(e) => Step::Stop(Err(e)),
        }
    }

    /// One send of the pending output, adding what it sent to `bytes_out`.
    fn write_once(&mut self, bytes_out: &mut u64) -> Step {
        let want = self.conn.pending_len();
        if self.blocking {
            // The write may block for as long as the client does not read: show what
            // this connection holds now, not when the write returns.
            self.publish_pending();
        }
        match self.stream.write(self.conn.pending_output()) {
            Ok(n) => {
                if n < want && self.edge_triggered {
                    self.writable = false;
                }
                self.conn.on_sent(n);
                *bytes_out += n as u64;
                Step::Progress
            }
            Err(e) if self.blocking && is_timeout(&e) => {
                self.expired = Some(Expiry::SlowReader);
                Step::Stop(Ok(Status::Closed))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable = false;
                Step::Idle
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
            Err(e) => Step::Stop(Err(e)),
        }
    }

    /// After a round: the status to return, or `None` to go round again (progress, and
    /// reads left or a write to make).
    fn after_round(&self, progress: bool, out_of_reads: bool) -> Option<Status> {
        if self.conn.is_finished() {
            return Some(Status::Closed);
        }
        if !progress {
            return Some(Status::Open);
        }
        if out_of_reads && self.readable && self.conn.wants_read() {
            if self.conn.wants_write() && self.writable {
                return None;
            }
            return Some(Status::MoreToRead);
        }
        None
    }

    /// The thread-per-client model's part of the handshake deadline (it has no sweep): call
    /// before each blocking recv. While a deadline runs, the recv waits at most until it
    /// (`SO_RCVTIMEO`, shorter than `idle` if need be), so a trickling peer cannot stretch it;
    /// once the handshake is complete the idle timeout is put back. False (counted) when the
    /// deadline has passed: close the connection.
    pub fn arm_handshake_deadline(&mut self, idle: Option<Duration>) -> bool {
        let now = Instant::now();
        if self.clock.handshake_left(now).is_none() {
            return true;
        }
        if self
            .clock
            .handshake_expired(!self.conn.tls_handshake_complete(), now)
        {
            Expiry::Handshake.count(&self.stats);
            return false;
        }
        let wait = match self.clock.handshake_left(now) {
            Some(left) if idle.is_none_or(|i| left <= i) => {
                self.recv_waits_for_handshake = true;
                Some(left)
            }
            _ => {
                // Shorter, or the handshake is complete: the idle timeout.
                self.recv_waits_for_handshake = false;
                idle
            }
        };
        if let Err(e) = self.stream.set_read_timeout(wait) {
            log::debug!("SO_RCVTIMEO for the handshake deadline: {e}");
        }
        true
    }
}

impl<S: SessionSocket> Session<S> {
    /// The sweep's verdict on this connection ([`crate::limits`]): `Some` (counted) means
    /// drop it now.
    pub fn expired(&mut self, sweep: &Sweep, now: Instant) -> Option<Expiry> {
        let why = sweep.check(
            &mut self.clock,
            self.conn.is_backpressured(),
            !self.conn.tls_handshake_complete(),
            now,
        )?;
        why.count(&self.stats);
        Some(why)
    }
}

/// A blocking call's `SO_RCVTIMEO` / `SO_SNDTIMEO` ran out (Linux: `EAGAIN`; Windows:
/// `WSAETIMEDOUT`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl<S: SessionSocket> Session<S> {
    /// A TLS connection the server closes before it is over (the drain at shutdown ran out):
    /// one non-blocking send of our `close_notify` (behind any owed output), so the client
    /// sees a close, not a truncation. Skipped while a completion model has a send in flight
    /// (its bytes must go first) and on blocking sockets, whose drain has already shut the
    /// socket down to wake the thread. Best effort: a full send buffer or a dead peer loses it.
    fn tls_goodbye(&mut self) {
        if self.blocking || self.conn.is_finished() {
            return;
        }
        if self.conn.send_in_flight() || !self.conn.close_notify_now() {
            return;
        }
        self.stream.write_now(self.conn.pending_output());
    }

    /// One line for a TLS connection that did not end cleanly: a TLS error (the alert rustls
    /// sent says the same to the peer), or an end of stream without the peer's `close_notify`
    /// (truncation: the peer's last bytes may not be all it meant to send).
    fn log_tls_end(&self) {
        if !self.conn.is_tls() {
            return;
        }
        let peer = || {
            self.tls_peer
                .or_else(|| self.stream.peer())
                .map_or_else(|| "a client".to_string(), |a| a.to_string())
        };
        if let Some(e) = self.conn.tls_error() {
            self.stats.tls_failures.fetch_add(1, Relaxed);
            log_every!(warn, "tls: {}: {e}; connection closed", peer());
        } else if self.conn.tls_truncated() {
            self.stats.tls_truncated.fetch_add(1, Relaxed);
            log_every!(
                warn,
                "tls: {}: end of stream without close_notify (truncated)",
                peer()
            );
        }
    }
}

impl<S: SessionSocket> Drop for Session<S> {
    fn drop(&mut self) {
        self.tls_goodbye();
        self.log_tls_end();
        self.stats.active.fetch_sub(1, Relaxed);
        if self.published_pending > 0 {
            self.stats
                .pending_bytes
                .fetch_sub(self.published_pending as i64, Relaxed);
        }
    }
}
