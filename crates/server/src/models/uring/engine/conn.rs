//! One connection's I/O: a receive kept posted while backpressure allows (single-shot or
//! multishot, the buffer picked from the provided-buffer ring at completion), one send at a
//! time from the connection's output, parked bytes, half-close and close. Closing cancels the
//! connection's operations; it is dropped when the last one has completed, and a direct
//! descriptor's slot is then closed with `IORING_OP_CLOSE`.
//!
//! What a receive delivers into the provided-buffer ring is a `Piece` (`BufRing::take`): a
//! whole buffer, or, with an incrementally consumed ring, part of one that other connections'
//! receives share. Bytes the connection cannot take yet (backpressure: a multishot receive
//! delivers until its cancel lands) are copied out and parked in the connection's own memory,
//! so that no buffer waits on a peer that does not read (32 such peers used to hold all 16
//! buffers of the ring and starve every other connection); every
//! piece is released (`BufRing::release`) once consumed, and the ring recycles a buffer when
//! its last piece is back and the kernel is done with it.
//!
//! A plaintext echo connection sends what it received straight from the provided buffer it
//! arrived in (`UConn::passing`: the book's "overlapped I/O copies straight into posted
//! buffers", with no copy out of them either): the bytes go out from the ring, and the piece
//! is released when the send is done. Only while nothing copied is owed ahead of them
//! (`Connection::passes_through`), and only while the ring keeps half its buffers free after
//! the piece's buffer is held (a peer that never reads holds its piece: a handful of such
//! peers must not take every buffer from the others); otherwise the bytes are copied into the
//! session's output as for every other service.

use super::{Done, Engine, Kind, Outgoing, Recv, NO_CONN, POOL_BUF_MAX, POOL_MAX};
use crate::session::{Session, SessionSocket};
use crate::sys::uring::{opcode, BufRing, Fd, Piece};
use io_uring::squeue::{Entry, Flags};
use io_uring::types::Fixed;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;

/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19), in a receive's `ioprio`: arm the poll before
/// trying.
const POLL_FIRST: u16 = 1;

/// A connection's socket: an ordinary descriptor, or a direct descriptor — a slot in the
/// ring's fixed-file table, in no descriptor table of the process. Dropping an ordinary one
/// closes it; a slot is closed by the engine ([`Engine::close_slot`]) once the connection's
/// operations have completed.
pub(crate) enum Sock {
    Ordinary(TcpStream),
    Direct(u32),
}

impl Sock {
    fn target(&self) -> Target {
        match self {
            Sock::Ordinary(s) => Target::Fd(s.as_raw_fd()),
            Sock::Direct(slot) => Target::Slot(*slot),
        }
    }
}

impl SessionSocket for Sock {
    /// A direct descriptor cannot say: the engine asks the kernel ([`Kind::PeerAddr`]) and
    /// tells the session.
    fn peer(&self) -> Option<SocketAddr> {
        match self {
            Sock::Ordinary(s) => s.peer_addr().ok(),
            Sock::Direct(_) => None,
        }
    }

    /// A direct descriptor has no synchronous write: the engine sends a stopping TLS
    /// connection's `close_notify` itself ([`Kind::Goodbye`]).
    fn write_now(&mut self, buf: &[u8]) {
        if let Sock::Ordinary(s) = self {
            let _ = s.set_nonblocking(true);
            let _ = s.write(buf);
        }
    }
}

/// What an operation on a connection names: its descriptor, or its slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Fd(RawFd),
    Slot(u32),
}

impl Target {
    /// The submission `build` makes for the socket, given as a `Fd`: a slot's number there with
    /// `IOSQE_FIXED_FILE` set is what `types::Fixed` amounts to, for every opcode at once.
    fn sqe(self, build: impl FnOnce(Fd) -> Entry) -> Entry {
        match self {
            Target::Fd(fd) => build(Fd(fd)),
            Target::Slot(slot) => build(Fd(slot as RawFd)).flags(Flags::FIXED_FILE),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Fd(fd) => write!(f, "fd={fd}"),
            Target::Slot(slot) => write!(f, "slot={slot}"),
        }
    }
}

/// Received bytes going out as they are from their provided buffer: the piece's bytes from
/// `off` on are still to be sent.
pub(super) struct Passing {
    pub(super) piece: Piece,
    pub(super) off: usize,
}

/// A connection of the completion models.
pub(super) struct UConn {
    /// The socket, the connection state machine and the server-wide accounting.
    pub(super) s: Session<Sock>,
    pub(super) target: Target,
    /// Operations on a direct descriptor besides its receive and send (the `FIXED_FD_INSTALL`
    /// that reads a TLS peer's address, a `SHUTDOWN`, a last `close_notify`): the slot is closed
    /// only after they completed, or one still queued (the kernel runs `SHUTDOWN` on a worker
    /// thread) could hit the next socket given the same slot.
    pub(super) slot_ops: u32,
    /// User data of the posted receive, if any.
    pub(super) recv_op: Option<u64>,
    /// User data of the posted send, if any (one at a time keeps the bytes in order).
    pub(super) send_op: Option<u64>,
    /// A cancel was posted for the receive (a multishot one under backpressure, or close).
    pub(super) recv_cancelled: bool,
    /// The connection is over: its operations are being cancelled; dropped when none is left.
    pub(super) closing: bool,
    /// The peer's end of stream arrived (behind any parked data).
    pub(super) eof_seen: bool,
    /// The receive ended for lack of buffers (ENOBUFS); re-armed when some come back.
    pub(super) starved: bool,
    /// In the engine's list of connections to move on after this batch of completions.
    pub(super) deferred: bool,
    /// Received bytes the connection could not take yet (backpressure), copied out of their
    /// provided buffer; fed to the session in order, ahead of anything received later.
    pub(super) parked: Vec<u8>,
    /// Received bytes going out as they are, from the provided buffer they arrived in: the
    /// piece's bytes from `off` on are still to be sent, ahead of the session's output.
    pub(super) passing: Option<Passing>,
    /// The last receive left the socket empty (no `IORING_CQE_F_SOCK_NONEMPTY`): the next
    /// single-shot receive waits for data before trying (`IORING_RECVSEND_POLL_FIRST`) rather
    /// than failing once with `EAGAIN` first — in a ping-pong, the next request comes only
    /// after our reply.
    pub(super) drained: bool,
}

/// Hands received bytes to connection `u`: as they are, when they may go out from their
/// provided buffer (`--pass-through`, see the module doc), joined to bytes already waiting
/// there when they follow them in the same buffer; otherwise copied into the session and the
/// piece released. Says whether they pass through.
fn take_input(bufs: &mut BufRing, u: &mut UConn, piece: Piece, pass_through: bool) -> bool {
    let len = piece.len();
    let piece = if pass_through && u.s.conn.passes_through() {
        let held = match &mut u.passing {
            Some(p) => bufs.join(&mut p.piece, piece),
            None if bufs.can_hold_one() => {
                u.passing = Some(Passing { piece, off: 0 });
                Ok(())
            }
            None => Err(piece),
        };
        match held {
            Ok(()) => {
                u.s.conn.on_passed_through(len);
                return true;
            }
            Err(piece) => piece,
        }
    } else {
        piece
    };
    u.s.conn.on_received(bufs.bytes(&piece));
    bufs.release(piece);
    false
}

impl Engine<'_> {
    pub(super) fn post_recv(&mut self, c: usize) {
        let u = &self.conns[c];
        if self.stopping
            || u.closing
            || u.recv_op.is_some()
            || u.eof_seen
            || u.starved
            || !u.parked.is_empty()
            || !u.s.conn.wants_read()
        {
            return;
        }
        let target = u.target;
        let bufs = self.ring.bufs().expect("every engine has a buffer ring");
        let group = bufs.group();
        let posted = match self.cfg.recv {
            Recv::Single => {
                // At most the read budget: the kernel fills that much of the buffer it picks.
                let len = u.s.conn.read_budget().min(bufs.size()) as u32;
                let poll_first = if u.drained { POLL_FIRST } else { 0 };
                self.post(c, Kind::Recv, |_| {
                    target.sqe(|fd| {
                        opcode::Recv::new(fd, std::ptr::null_mut(), len)
                            .buf_group(group)
                            .ioprio(poll_first)
                            .build()
                            .flags(Flags::BUFFER_SELECT)
                    })
                })
            }
            Recv::Multishot => self.post(c, Kind::RecvMulti, |_| {
                target.sqe(|fd| opcode::RecvMulti::new(fd, group).build())
            }),
        };
        match posted {
            Ok(ud) => {
                let u = &mut self.conns[c];
                u.recv_op = Some(ud);
                u.recv_cancelled = false;
            }
            Err(e) => self.fail(c, &e),
        }
    }

    /// Sends what the connection owes, one send at a time: received bytes going out as they
    /// are first, then the session's output.
    pub(super) fn try_send(&mut self, c: usize) {
        let u = &mut self.conns[c];
        if self.stopping || u.closing || u.send_op.is_some() {
            return;
        }
        if u.passing.is_some() {
            return self.post_passed(c);
        }
        if !u.s.conn.wants_write() {
            return;
        }
        let spare = self.send_pool.pop().unwrap_or_default();
        let buf = u.s.conn.take_output(spare);
        self.post_send(c, buf, 0);
    }

    pub(super) fn post_send(&mut self, c: usize, buf: Vec<u8>, off: usize) {
        let rest = &buf[off..];
        let (ptr, len) = (rest.as_ptr(), rest.len());
        self.post_send_op(c, Outgoing::Owned { buf, off }, ptr, len);
    }

    /// Sends the rest of the connection's passing bytes from their provided buffer.
    fn post_passed(&mut self, c: usize) {
        let bufs = self.ring.bufs().expect("passing bytes come from the ring");
        let p = self.conns[c].passing.as_ref().expect("bytes to pass");
        let rest = &bufs.bytes(&p.piece)[p.off..];
        let (ptr, len) = (rest.as_ptr(), rest.len());
        self.post_send_op(c, Outgoing::Passed, ptr, len);
    }

    /// Posts a send of `len` bytes at `ptr`, memory that `what` keeps alive until it completes:
    /// the record's own buffer, or the ring's buffer the connection's passing piece holds.
    fn post_send_op(&mut self, c: usize, what: Outgoing, ptr: *const u8, len: usize) {
        let target = self.conns[c].target;
        match self.post(c, Kind::Send(what), |_| {
            target.sqe(|fd| {
                opcode::Send::new(fd, ptr, len as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            })
        }) {
            Ok(ud) => self.conns[c].send_op = Some(ud),
            Err(e) => self.fail(c, &e),
        }
    }

    /// Serves an accepted socket. A direct descriptor has `TCP_NODELAY` from its listener
    /// (Linux copies it to accepted sockets); a TLS one gets its peer address looked up.
    pub(super) fn adopt(&mut self, sock: Sock) {
        if let Sock::Ordinary(stream) = &sock {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
            }
        }
        let target = sock.target();
        let c = self.conns.insert(UConn {
            s: Session::new(sock, self.ctx),
            target,
            slot_ops: 0,
            recv_op: None,
            send_op: None,
            recv_cancelled: false,
            closing: false,
            eof_seen: false,
            starved: false,
            deferred: false,
            parked: Vec::new(),
            passing: None,
            drained: false,
        });
        if let (Target::Slot(slot), Some(_)) = (target, &self.ctx.tls) {
            self.look_up_peer(c, slot);
        }
        self.post_recv(c);
    }

    /// A direct TLS connection's peer address, for its closing log line: there is no
    /// descriptor to call `getpeername` on, so `IORING_OP_FIXED_FD_INSTALL` makes a temporary
    /// one, closed as soon as the address is read ([`Engine::peer_addr_done`]). Without it
    /// (the process out of descriptors) the line says "a client".
    fn look_up_peer(&mut self, c: usize, slot: u32) {
        match self.post(c, Kind::PeerAddr, |_| {
            opcode::FixedFdInstall::new(Fixed(slot), 0).build()
        }) {
            Ok(_) => self.conns[c].slot_ops += 1,
            Err(e) => log::debug!("cannot look up a TLS peer's address: {e}"),
        }
    }

    /// The temporary descriptor of a direct TLS connection: read its peer, close it.
    pub fn peer_addr_done(&mut self, done: Done) {
        let c = done.conn;
        let res = done.cqe.result;
        let u = &mut self.conns[c];
        u.slot_ops -= 1;
        if res >= 0 {
            // SAFETY: a successful FIXED_FD_INSTALL's result is a new descriptor (a second
            // reference to the connection's socket) that nothing else owns; it is closed here.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if let Some(peer) = socket2::SockRef::from(&fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
            {
                u.s.set_tls_peer(peer);
            }
        } else {
            log::debug!(
                "no temporary descriptor for a TLS peer's address: {}",
                io::Error::from_raw_os_error(-res)
            );
        }
        self.advance(c);
    }

    /// A receive posted a completion: bytes in a provided buffer, the end of stream, or (the
    /// final completion of a multishot receive, the only one of a single-shot receive) its
    /// end: cancelled, out of buffers, an error.
    pub fn recv_done(&mut self, done: Done) {
        let c = done.conn;
        let cqe = done.cqe;
        let u = &mut self.conns[c];
        let mut error = None;
        if cqe.result == 0 {
            // The end of stream, behind any parked bytes (a buffer the kernel may have
            // picked for it comes back empty: `take` gives a whole one back at once).
            u.eof_seen = true;
        }
        let bufs = self.ring.bufs_mut().expect("receives have a buffer ring");
        if let Some(piece) = bufs.take(&cqe) {
            let len = piece.len();
            if u.closing {
                bufs.release(piece); // the connection is going: its bytes have nowhere to go
            } else if u.parked.is_empty() && len <= u.s.conn.read_budget() {
                if take_input(bufs, u, piece, self.ctx.pass_through) {
                    self.ctx
                        .stats
                        .bytes_passed_through
                        .fetch_add(len as u64, Relaxed);
                }
                u.s.publish(len as u64, 0);
            } else {
                // Backpressure: keep the bytes, in order, until the connection can take them;
                // not in their buffer, which a peer that never reads would hold for good.
                u.parked.extend_from_slice(bufs.bytes(&piece));
                bufs.release(piece);
            }
        } else if cqe.result == -libc::ENOBUFS {
            self.ctx.stats.recv_buffer_exhausted.fetch_add(1, Relaxed);
            if !u.closing && !u.starved {
                u.starved = true;
                self.starved.push(c);
            }
        } else if cqe.result < 0 && cqe.result != -libc::ECANCELED {
            error = Some(io::Error::from_raw_os_error(-cqe.result));
        }
        let u = &mut self.conns[c];
        u.drained = cqe.result >= 0 && !cqe.sock_nonempty();
        if !cqe.more() {
            u.recv_op = None;
            u.recv_cancelled = false;
        }
        if let Some(e) = error {
            self.fail(c, &e);
        }
        self.feed_parked(c);
        self.advance(c);
    }

    /// A send completed: report the bytes, send the rest of a short write, or recycle the
    /// buffer.
    pub fn send_done(&mut self, done: Done) {
        let Kind::Send(what) = done.kind else {
            unreachable!()
        };
        let c = done.conn;
        let res = done.cqe.result;
        let u = &mut self.conns[c];
        u.send_op = None;
        if res > 0 {
            let n = res as usize;
            u.s.conn.on_send_complete(n);
            u.s.publish(0, n as u64);
            match what {
                // A short write: the rest goes first, from the same buffer.
                Outgoing::Owned { buf, off } if off + n < buf.len() && !u.closing => {
                    self.post_send(c, buf, off + n)
                }
                Outgoing::Owned { buf, .. } => {
                    if buf.capacity() <= POOL_BUF_MAX && self.send_pool.len() < POOL_MAX {
                        self.send_pool.push(buf);
                    }
                }
                Outgoing::Passed => {
                    let sent_all = u.passing.as_mut().is_some_and(|p| {
                        p.off += n;
                        p.off == p.piece.len()
                    });
                    if sent_all {
                        self.release_passing(c);
                    }
                    // The rest of a short write, or bytes joined meanwhile, go from advance.
                }
            }
        } else if !(u.closing && res == -libc::ECANCELED) {
            self.fail(c, &io::Error::from_raw_os_error(-res.max(1)));
        }
        self.feed_parked(c);
        self.advance(c);
    }

    /// Moves a connection on after any completion: send what is owed, keep a receive posted
    /// while backpressure allows (or cancel it when it does not), half-close, close.
    ///
    /// While a batch of completions is being handled, this only notes the connection; it is
    /// moved on once, after the batch ([`Engine::advance_deferred`]): the bytes of several
    /// receive completions (a large message in several buffers) leave in one send, and
    /// nothing is lost by waiting, since submissions reach the kernel only at the next wait.
    pub(super) fn advance(&mut self, c: usize) {
        let Some(u) = self.conns.get_mut(c) else {
            return;
        };
        if self.in_batch {
            if !u.deferred {
                u.deferred = true;
                self.deferred.push(c);
            }
            return;
        }
        if u.closing {
            return self.release_if_idle(c);
        }
        self.try_send(c);
        let Some(u) = self.conns.get_mut(c) else {
            return; // the send failed and the connection is gone
        };
        let wants_read = u.s.conn.wants_read();
        match (self.cfg.recv, u.recv_op) {
            (Recv::Multishot, Some(ud)) if !wants_read && !u.recv_cancelled => {
                u.recv_cancelled = true;
                self.cancel(ud);
            }
            (_, None) if wants_read => self.post_recv(c),
            _ => {}
        }
        let Some(u) = self.conns.get_mut(c) else {
            return;
        };
        if u.closing {
            return;
        }
        if u.s.conn.should_shutdown_write() {
            // The peer may be gone already: the connection is over either way.
            u.s.conn.on_write_shutdown();
            match &u.s.stream {
                Sock::Ordinary(s) => drop(s.shutdown(Shutdown::Write)),
                // A connection over now is closed at once, which sends the FIN (its input is
                // all read): no shutdown to wait for.
                Sock::Direct(_) if u.s.conn.is_finished() => {}
                Sock::Direct(slot) => {
                    let slot = *slot;
                    match self.post(c, Kind::Shutdown, |_| {
                        opcode::Shutdown::new(Fixed(slot), libc::SHUT_WR).build()
                    }) {
                        Ok(_) => self.conns[c].slot_ops += 1,
                        Err(e) => log::debug!("cannot post a shutdown: {e}"),
                    }
                }
            }
        }
        let u = &mut self.conns[c];
        u.s.publish(0, 0);
        if u.s.conn.is_finished() {
            self.begin_close(c);
        }
    }

    /// Moves on every connection a batch of completions touched ([`Engine::advance`]).
    pub(super) fn advance_deferred(&mut self) {
        let mut deferred = std::mem::take(&mut self.deferred);
        for c in deferred.drain(..) {
            if let Some(u) = self.conns.get_mut(c) {
                u.deferred = false;
                self.advance(c);
            }
        }
        self.deferred = deferred;
    }

    /// Hands parked bytes to the connection as far as its read budget allows, in order;
    /// applies a waiting end of stream.
    pub(super) fn feed_parked(&mut self, c: usize) {
        let Some(u) = self.conns.get_mut(c) else {
            return;
        };
        let mut fed = 0;
        while fed < u.parked.len() && !u.closing {
            let n = u.s.conn.read_budget().min(u.parked.len() - fed);
            if n == 0 {
                break;
            }
            u.s.conn.on_received(&u.parked[fed..fed + n]);
            u.s.publish(n as u64, 0);
            fed += n;
        }
        u.parked.drain(..fed);
        if u.parked.is_empty() && u.parked.capacity() > POOL_BUF_MAX {
            u.parked = Vec::new(); // a burst's worth, not kept for the connection's life
        }
        if u.eof_seen && u.parked.is_empty() && !u.s.conn.peer_eof() {
            u.s.conn.on_peer_eof();
        }
    }

    /// Re-arms receives that ended for lack of buffers, as far as buffers are back.
    pub(super) fn rearm_starved(&mut self) {
        let Some(mut available) = self.ring.bufs().map(|b| b.available()) else {
            return;
        };
        while available > 0 {
            let Some(c) = self.starved.pop() else { break };
            if let Some(u) = self.conns.get_mut(c) {
                u.starved = false;
                self.post_recv(c);
                available -= 1;
            }
        }
    }

    /// An I/O error ends this connection (and only this one).
    pub(super) fn fail(&mut self, c: usize, e: &io::Error) {
        if !self.conns[c].closing {
            log::debug!("connection closed on error: {e}");
            self.ctx.stats.errors.fetch_add(1, Relaxed);
            self.begin_close(c);
        }
    }

    /// Gives the connection's passing bytes back to the ring (all sent, or the connection is
    /// gone and no send reads them any more).
    fn release_passing(&mut self, c: usize) {
        if let Some(p) = self.conns[c].passing.take() {
            let bufs = self
                .ring
                .bufs_mut()
                .expect("passing bytes come from the ring");
            bufs.release(p.piece);
        }
    }

    /// Starts closing: cancels the connection's operations and drops its parked bytes;
    /// the connection (and its socket) is dropped when its last operation has completed.
    pub(super) fn begin_close(&mut self, c: usize) {
        let u = &mut self.conns[c];
        if !u.closing {
            u.closing = true;
            let recv = u.recv_op.filter(|_| !u.recv_cancelled);
            let send = u.send_op;
            u.recv_cancelled = true;
            u.parked = Vec::new();
            if !self.stopping {
                for ud in [recv, send].into_iter().flatten() {
                    self.cancel(ud);
                }
            } else {
                self.goodbye(c);
            }
        }
        self.release_if_idle(c);
    }

    /// The server stops with this direct TLS connection open: its `close_notify` (behind any
    /// owed output) goes out in one send, so the client sees a close, not a truncation (what
    /// [`Session`]'s drop does with a write on an ordinary socket). Best effort.
    fn goodbye(&mut self, c: usize) {
        let u = &mut self.conns[c];
        let Target::Slot(slot) = u.target else {
            return; // the session's drop writes it
        };
        let conn = &mut u.s.conn;
        if conn.is_finished() || conn.send_in_flight() || !conn.close_notify_now() {
            return;
        }
        let buf = conn.take_output(Vec::new());
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        match self.post(c, Kind::Goodbye(buf), |_| {
            opcode::Send::new(Fixed(slot), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }) {
            Ok(_) => self.conns[c].slot_ops += 1,
            Err(e) => log::debug!("cannot send a close_notify: {e}"),
        }
    }

    /// A stopping TLS connection's `close_notify` went out (or did not: best effort).
    pub fn goodbye_done(&mut self, done: Done) {
        let Kind::Goodbye(buf) = done.kind else {
            unreachable!()
        };
        drop(buf); // the kernel is done with it
        let c = done.conn;
        self.conns[c].slot_ops -= 1;
        self.release_if_idle(c);
    }

    pub(super) fn release_if_idle(&mut self, c: usize) {
        let u = &self.conns[c];
        if u.closing && u.recv_op.is_none() && u.send_op.is_none() && u.slot_ops == 0 {
            self.release_passing(c); // no send reads it any more
                                     // Closes an ordinary socket; Session settles the gauges.
            let u = self.conns.remove(c);
            let slot = match u.s.stream {
                Sock::Direct(slot) => Some(slot),
                Sock::Ordinary(_) => None,
            };
            drop(u);
            if let Some(slot) = slot {
                self.close_slot(slot);
            }
        }
    }

    /// Closes a direct descriptor (`IORING_OP_CLOSE` on its slot): the slot counts as taken
    /// until the close completes. If the close cannot be posted, the slot stays taken until
    /// the ring is dropped (which closes it).
    pub(super) fn close_slot(&mut self, slot: u32) {
        if let Err(e) = self.post(NO_CONN, Kind::Close, |_| {
            opcode::Close::new(Fixed(slot)).build()
        }) {
            log::error!("cannot close a direct descriptor (slot {slot}): {e}");
        }
    }

    /// A direct descriptor's shutdown completed.
    pub fn shutdown_done(&mut self, done: Done) {
        let c = done.conn;
        self.conns[c].slot_ops -= 1;
        self.advance(c);
    }

    /// A slot's close completed: it is free for an accept.
    pub fn close_done(&mut self, done: Done) {
        if done.cqe.result < 0 {
            log::debug!(
                "closing a direct descriptor: {}",
                io::Error::from_raw_os_error(-done.cqe.result)
            );
        }
        if let Some(t) = self.table.as_mut() {
            t.used = t.used.saturating_sub(1);
        }
        self.retry_accepts();
    }
}
