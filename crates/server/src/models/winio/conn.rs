//! [`OvConn`]: one connection of an overlapped model — its socket, its
//! [`Connection`](iomodels_core::Connection), and the (at most) one receive and one send it
//! has posted — driven the same way whatever announces the completions.
//!
//! ## Zero-byte receives (the book's scalable-server technique)
//!
//! A posted `WSARecv` locks its buffer's pages in memory for as long as it is pending, and an idle
//! connection's receive is pending for as long as the peer is silent: with a 16 KiB buffer posted
//! per connection, 40,000 idle connections lock 640 MiB (the book's test machine for its
//! scalable-server figures had 768 MB; locked pages are also bounded per process and system-wide,
//! and a post past the bound fails with `WSAENOBUFS`). The book's answer, done here: while a
//! connection waits for input it has a **zero-byte `WSARecv`** posted (a `WSABUF` of length 0: no
//! page is locked). Its completion (0 bytes, success) says only that the socket has *something* to
//! read — data, or the end of stream — so the connection then reads with ordinary **non-blocking
//! `recv`s** (the socket is put in non-blocking mode at adoption; overlapped calls ignore that
//! mode) into a per-thread scratch buffer of [`RECV_SIZE`] bytes, until `WSAEWOULDBLOCK` (drained:
//! post the zero-byte receive again), `recv` returning 0 (the end of stream: that is how the two
//! meanings of the 0-byte completion are told apart), an error (the connection closes, counted in
//! `errors`), the read budget running out (backpressure: nothing is posted; the next send
//! completion reads on), or [`READS_PER_TURN`] reads (fairness: the zero-byte receive is posted
//! again, and completes at once since data is waiting). libuv's Windows TCP does the same ("zero
//! reads"). So `Stats::recv_buffer_bytes_posted` stays 0 for these models on Windows: no connection
//! ever has a receive buffer in the kernel's hands. The cost: one more system call per burst of
//! input (the `recv` after the completion), and the final `WSAEWOULDBLOCK` one. Wine 8 behaves as
//! Windows here (checked by `winio::tests`): a zero-byte `WSARecv` stays pending on an empty socket
//! and completes with 0 bytes on data or on the peer's FIN.

use super::op::{cancel_all, post_recv, post_send, InFlight, Notify, OpKind, OvOp};
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::session::Session;
use crate::stats::Stats;
use crate::trace::{trace_event, Trace};
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// The most bytes one non-blocking `recv` asks for: the size of each thread's scratch buffer
/// (no connection has a receive buffer of its own; see the module doc).
pub(crate) const RECV_SIZE: usize = 16 * 1024;
/// Non-blocking `recv`s one turn of a connection makes before it lets the others go first
/// (it posts its zero-byte receive again, which completes at once while data is waiting).
const READS_PER_TURN: usize = 4;

thread_local! {
    /// The buffer every connection this thread serves reads into (copied out into the
    /// connection at once).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; RECV_SIZE]);
}
/// A send buffer larger than this is not kept for the next send.
const KEEP_SEND_BUF: usize = 64 * 1024;

/// A connection of an overlapped model.
///
/// The model calls [`OvConn::advance`] after adopting the socket and after every completion
/// it hands to [`OvConn::complete`]; `advance` posts what the connection wants (the rest of a
/// short send first, else a send of all unsent output; a receive sized to the read budget),
/// half-closes when everything owed is sent, and closes when the connection is over. Once
/// closed ([`OvConn::is_open`] false), the model keeps the value until [`OvConn::is_idle`]:
/// its operations' completions (aborted by the close) must still be reaped.
pub(crate) struct OvConn {
    /// The socket and the connection; `None` once closed (`closesocket`).
    session: Option<Session>,
    socket: RawSocket,
    stats: Arc<Stats>,
    /// The zero-byte receive, while posted.
    recv: Option<InFlight>,
    send: Option<InFlight>,
    /// The zero-byte receive completed: data or the end of stream waits in the socket, to be
    /// read with non-blocking `recv`s before the next zero-byte receive is posted.
    readable: bool,
    /// A short send's record, holding the unsent rest: re-posted before any new output.
    resend: Option<Box<OvOp>>,
    /// Reaped records (with their buffers) kept for the next post.
    spare_recv: Option<Box<OvOp>>,
    spare_send: Option<Box<OvOp>>,
    trace: Trace,
    /// Who reaps its completions (`("group", 3)`, `("worker", 1)`), named in `--trace`
    /// lines; set by the model.
    pub via: Option<(&'static str, usize)>,
}

impl OvConn {
    /// Adopts an accepted socket (counted as accepted and active) and makes it non-blocking
    /// (for the `recv`s after a zero-byte receive; overlapped calls ignore the mode). If that
    /// fails, the connection is closed at once (counted in `errors`).
    pub fn new(stream: TcpStream, ctx: &Ctx) -> OvConn {
        ctx.stats.syscalls.fetch_add(1, Relaxed);
        let nonblocking = stream.set_nonblocking(true);
        let mut conn = OvConn {
            socket: stream.as_raw_socket(),
            session: Some(Session::new(stream, ctx)),
            stats: Arc::clone(&ctx.stats),
            recv: None,
            send: None,
            readable: false,
            resend: None,
            spare_recv: None,
            spare_send: None,
            trace: ctx.trace.clone(),
            via: None,
        };
        if let Err(e) = nonblocking {
            conn.fail(&e);
        }
        conn
    }

    /// The socket (closed once [`OvConn::is_open`] is false: then only a name).
    #[allow(dead_code)] // overlapped-event's
    pub fn socket(&self) -> RawSocket {
        self.socket
    }

    /// True until the connection is closed.
    #[allow(dead_code)] // overlapped-event's
    pub fn is_open(&self) -> bool {
        self.session.is_some()
    }

    /// Closed, and no operation in flight: the model may drop it now.
    pub fn is_idle(&self) -> bool {
        self.session.is_none() && self.recv.is_none() && self.send.is_none()
    }

    /// The connection's operations the kernel holds (for an event model's completion checks).
    #[allow(dead_code)] // overlapped-event's
    pub fn in_flight(&self) -> impl Iterator<Item = InFlight> {
        [self.recv, self.send].into_iter().flatten()
    }

    /// Its receive (`OpKind::Recv`) or its send (`OpKind::Send`) while the kernel holds it:
    /// what an event model with one event per operation checks when that event fires.
    #[allow(dead_code)] // overlapped-event's
    pub fn in_flight_op(&self, kind: OpKind) -> Option<InFlight> {
        match kind {
            OpKind::Recv => self.recv,
            OpKind::Send => self.send,
            OpKind::Accept => None,
        }
    }

    /// How many of its operations the kernel holds.
    pub fn ops_in_flight(&self) -> usize {
        self.recv.is_some() as usize + self.send.is_some() as usize
    }

    /// Posts what the connection wants now; half-closes; closes when it is over. Every record
    /// it posts carries `tag` and is announced by `notify`. A no-op once closed.
    pub fn advance(&mut self, tag: usize, notify: Notify) {
        self.advance_each(tag, notify, notify);
    }

    /// [`OvConn::advance`] with a notification per kind of operation: its receives are
    /// announced by `recv`, its sends by `send` (`overlapped-event`: an event each, so posting
    /// one resets only its own event, never the signal of the other's completion).
    pub fn advance_each(&mut self, tag: usize, recv: Notify, send: Notify) {
        if self.session.is_none() {
            return;
        }
        if self.readable {
            self.read_now();
            if self.session.is_none() {
                return;
            }
        }
        if self.send.is_none() {
            if let Some(op) = self.next_send(tag) {
                match post_send(self.socket, op, send, &self.stats) {
                    Ok(f) => self.send = Some(f),
                    Err((op, e)) => {
                        self.spare_send = Some(op);
                        return self.fail(&e);
                    }
                }
            }
        }
        let budget = self.session.as_ref().map_or(0, |s| s.conn.read_budget());
        if self.recv.is_none() && budget > 0 {
            // The zero-byte receive (no buffer: `recv_buffer_bytes_posted` stays 0).
            let op = match self.spare_recv.take() {
                Some(mut op) => {
                    op.reuse(OpKind::Recv, tag);
                    op
                }
                None => OvOp::new(OpKind::Recv, tag, Vec::new()),
            };
            match post_recv(self.socket, op, 0, recv, &self.stats) {
                Ok(f) => self.recv = Some(f),
                Err((op, e)) => {
                    self.spare_recv = Some(op);
                    return self.fail(&e);
                }
            }
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.conn.should_shutdown_write() {
            self.stats.syscalls.fetch_add(1, Relaxed);
            // The peer may be gone already: the connection is over either way.
            let _ = s.stream.shutdown(Shutdown::Write);
            s.conn.on_write_shutdown();
        }
        s.publish(0, 0);
        if s.conn.is_finished() {
            self.close();
        }
    }

    /// After a zero-byte receive completed: non-blocking `recv`s into the thread's scratch
    /// buffer, fed to the connection, until the socket is drained (`WSAEWOULDBLOCK`), the end
    /// of stream (`recv` returns 0), an error (closes), the read budget is 0 (`readable`
    /// stays set: the next completion's `advance` reads on), or [`READS_PER_TURN`] reads.
    fn read_now(&mut self) {
        let mut failed = None;
        if let Some(s) = self.session.as_mut() {
            for _ in 0..READS_PER_TURN {
                let budget = s.conn.read_budget().min(RECV_SIZE);
                if budget == 0 {
                    break;
                }
                self.stats.syscalls.fetch_add(1, Relaxed);
                let read = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let read = (&s.stream).read(&mut scratch[..budget]);
                    if let Ok(n @ 1..) = read {
                        s.conn.on_received(&scratch[..n]);
                    }
                    read
                });
                trace_event!(
                    self.trace,
                    "recv s={} {}",
                    self.socket,
                    match &read {
                        Ok(n) => format!("bytes={n}"),
                        Err(e) => format!("error={e}"),
                    }
                );
                match read {
                    Ok(0) => {
                        self.readable = false;
                        s.conn.on_peer_eof();
                        break;
                    }
                    Ok(n) => s.publish(n as u64, 0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            self.fail(&e);
        }
    }

    /// The record to send next: the rest of a short send, else every unsent byte (moved out of
    /// the connection, still counted as pending until its completion), else nothing.
    fn next_send(&mut self, tag: usize) -> Option<Box<OvOp>> {
        if let Some(op) = self.resend.take() {
            return Some(op);
        }
        let s = self.session.as_mut()?;
        if !s.conn.wants_write() {
            return None;
        }
        let mut op = match self.spare_send.take() {
            Some(mut op) => {
                op.reuse(OpKind::Send, tag);
                op
            }
            None => OvOp::new(OpKind::Send, tag, Vec::new()),
        };
        let mut spare = std::mem::take(&mut op.buf);
        if spare.capacity() > KEEP_SEND_BUF {
            spare = Vec::new();
        }
        op.buf = s.conn.take_output(spare);
        Some(op)
    }

    /// Feeds the connection a reaped completion of one of its records. Errors close it (and
    /// count in `Stats::errors`); after the close, completions (aborted ones) are only
    /// collected. Call [`OvConn::advance`] next.
    pub fn complete(&mut self, mut op: Box<OvOp>, result: io::Result<usize>) {
        trace_event!(
            self.trace,
            "completion {} s={} {}{}",
            match op.kind() {
                OpKind::Recv => "recv",
                OpKind::Send => "send",
                OpKind::Accept => "accept",
            },
            self.socket,
            match &result {
                Ok(n) => format!("bytes={n}"),
                Err(e) => format!("error={e}"),
            },
            self.via
                .map_or(String::new(), |(what, n)| format!(" ({what} {n})"))
        );
        match op.kind() {
            OpKind::Recv => {
                debug_assert_eq!(self.recv.map(InFlight::overlapped), Some(op_ptr(&mut op)));
                self.recv = None;
                if self.session.is_none() {
                    return; // closed: the record is freed here
                }
                match result {
                    // A zero-byte receive's completion: data, or the end of stream, waits;
                    // `advance` reads it (and the `recv` tells which).
                    Ok(_) => self.readable = true,
                    Err(e) => return self.fail(&e),
                }
                self.spare_recv = Some(op);
            }
            OpKind::Send => {
                debug_assert_eq!(self.send.map(InFlight::overlapped), Some(op_ptr(&mut op)));
                self.send = None;
                let Some(s) = self.session.as_mut() else {
                    return;
                };
                let n = match result {
                    Ok(0) => return self.fail(&io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => n,
                    Err(e) => return self.fail(&e),
                };
                s.conn.on_send_complete(n);
                s.publish(0, n as u64);
                op.off += n;
                if op.off < op.buf.len() {
                    self.resend = Some(op); // a short send: the rest goes first
                } else {
                    self.spare_send = Some(op);
                }
            }
            OpKind::Accept => unreachable!("an accept record handed to a connection"),
        }
    }

    /// An I/O error ends this connection (only this one): counted, then closed.
    fn fail(&mut self, e: &io::Error) {
        if self.session.is_some() {
            log::debug!("connection closed on error: {e}");
            self.stats.errors.fetch_add(1, Relaxed);
            self.close();
        }
    }

    /// The sweep of the idle and write timeouts ([`crate::limits`]) at `now`: true (counted)
    /// if the open connection expired. The model then closes it ([`OvConn::close`]) as any
    /// other: its records are reaped as their aborted completions come.
    pub fn expired(&mut self, sweep: &Sweep, now: Instant) -> bool {
        self.session
            .as_mut()
            .is_some_and(|s| s.expired(sweep, now).is_some())
    }

    /// Closes the socket now: `CancelIoEx` if anything is pending (Wine's `closesocket` alone
    /// leaves it pending, see [`cancel_all`]), then `closesocket`. Its pending operations
    /// complete with `ERROR_OPERATION_ABORTED`; their records stay in flight until reaped
    /// ([`OvConn::is_idle`]).
    pub fn close(&mut self) {
        if let Some(s) = self.session.take() {
            if self.ops_in_flight() > 0 {
                cancel_all(self.socket, &self.stats);
            }
            self.stats.syscalls.fetch_add(1, Relaxed);
            drop(s); // closesocket; Session settles the active and pending gauges
            self.resend = None;
            self.spare_recv = None;
            self.spare_send = None;
        }
    }
}

fn op_ptr(op: &mut OvOp) -> *mut windows_sys::Win32::System::IO::OVERLAPPED {
    (op as *mut OvOp).cast()
}

impl Drop for OvConn {
    fn drop(&mut self) {
        if !self.is_idle() {
            // Dropping would free nothing the kernel holds (records are freed only when
            // reaped), but a model that drops a busy connection has lost track of its
            // completions: say so.
            log::error!(
                "a connection was dropped with {} operations in flight",
                self.ops_in_flight()
            );
        }
    }
}
