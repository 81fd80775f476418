//! Accepting: accepts posted within `--max-conns`, the EMFILE back-off, and accept hand-off
//! between `completion-port` workers.
//!
//! Limits (`crate::limits`): the engine posts accepts only within `--max-conns` — never more
//! in flight than places left, a multishot accept only while at least [`super::MULTISHOT_ROOM`]
//! are, and accepts already posted are cancelled (`trim_accepts`) when they could pass the
//! cap; a socket they accepted before the cancel landed is served, never dropped. A worker
//! reaching the cap wakes the others (each keeps its own accepts), and a worker at the cap looks
//! again every [`super::CAP_RECHECK`], since a close on another worker does not wake it. So across
//! several `SO_REUSEPORT` listeners the cap can be passed by at most one connection per
//! other worker, in a race.
//!
//! Out of descriptors, every accept posted (four for the overlapped models) completes with
//! EMFILE at once: that is one pause of 100 ms ([`crate::accept::Backoff`], shared with the
//! readiness models' acceptor), counted in `accept_pauses` and logged once, not once per
//! accept; no accept is posted until it ends.

use super::{Done, Engine, Kind, HANDOFF, MULTISHOT_ROOM, NO_CONN};
use crate::sys::uring::{opcode, CancelBuilder, Cqe, Fd};
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;

/// The acceptor's side of accept hand-off: every worker's ring, and whose turn it is.
pub(crate) struct Handoff {
    /// The ring descriptor of each worker, this one included.
    pub rings: Vec<RawFd>,
    /// This worker's index in `rings`.
    pub me: usize,
    next: usize,
}

impl Handoff {
    /// Round-robin over `rings`, starting after `me`.
    pub fn new(rings: Vec<RawFd>, me: usize) -> Handoff {
        Handoff {
            rings,
            me,
            next: me,
        }
    }
}

impl Engine<'_> {
    pub(super) fn arm_accepts(&mut self) {
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        if self.draining || self.backoff.is_paused() || self.accepts_trimming {
            return;
        }
        // Never more accepts in flight than connections fit below the cap.
        let room = self.cap.room();
        let multishot = self.cfg.accepts == 0 && room >= MULTISHOT_ROOM;
        let want = self.cfg.accepts.max(1).min(room);
        if self.accepts_posted < want {
            self.accept_multishot = multishot;
        }
        while self.accepts_posted < want {
            let posted = self.post(NO_CONN, Kind::Accept, |_| {
                if multishot {
                    opcode::AcceptMulti::new(Fd(fd))
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                }
            });
            match posted {
                Ok(_) => self.accepts_posted += 1,
                Err(e) => {
                    log::error!("cannot post an accept: {e}");
                    break;
                }
            }
        }
    }

    /// Cancels the accepts in flight when they could accept past the cap: more posted than
    /// connections fit, or a multishot one too near the cap. Sockets they accepted before the
    /// cancel landed are served (never dropped); [`Engine::arm_accepts`] posts again, within
    /// the cap, once all have completed.
    pub(super) fn trim_accepts(&mut self) {
        if self.draining || self.accepts_trimming || self.accepts_posted == 0 {
            return;
        }
        let room = self.cap.room();
        if self.accepts_posted <= room && !(self.accept_multishot && room < MULTISHOT_ROOM) {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all()).build();
        match self.post(NO_CONN, Kind::Cancel, |_| cancel) {
            Ok(_) => self.accepts_trimming = true,
            Err(e) => log::error!("cannot cancel the accepts at the cap: {e}"),
        }
    }

    pub(super) fn stop_accepting(&mut self) {
        self.draining = true;
        self.stop_udp();
        if let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) {
            if self.accepts_posted == 0 {
                self.listener = None;
            } else {
                // The listener stays open until the accepts' final completions arrive.
                let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all()).build();
                if let Err(e) = self.post(NO_CONN, Kind::Cancel, |_| cancel) {
                    log::error!("cannot cancel the accepts: {e}");
                }
            }
        }
    }

    /// An accept completed: adopt the new socket and post its first receive.
    pub fn accept_done(&mut self, done: Done) {
        let last = !done.cqe.more();
        if last {
            self.accepts_posted -= 1;
        }
        let res = done.cqe.result;
        if res >= 0 {
            // SAFETY: a successful accept completion's result is a new descriptor that nothing
            // else owns; the TcpStream now owns (and will close) it.
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            if !self.draining {
                self.distribute(stream);
            }
        } else {
            match -res {
                libc::ECANCELED => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    // Every accept posted fails at once: one pause, counted and logged once.
                    let e = io::Error::from_raw_os_error(-res);
                    self.backoff.begin(&e, &self.ctx.stats);
                }
                errno => log::debug!("accept: {}", io::Error::from_raw_os_error(errno)),
            }
        }
        if last && self.accepts_posted == 0 {
            self.accepts_trimming = false;
        }
        if last {
            if self.draining && self.accepts_posted == 0 {
                self.listener = None; // no operation uses it any more: close it
            } else {
                self.arm_accepts();
            }
        }
        self.trim_accepts();
    }

    /// Serves an accepted socket here, or (accept hand-off) passes it to the next worker.
    pub(super) fn distribute(&mut self, stream: TcpStream) {
        let Some(h) = self.handoff.as_mut() else {
            return self.adopt(stream);
        };
        h.next = (h.next + 1) % h.rings.len();
        if h.next == h.me {
            return self.adopt(stream);
        }
        let target = h.rings[h.next];
        let fd = stream.as_raw_fd();
        let posted = self.post(NO_CONN, Kind::Handoff(Some(stream)), |_| {
            opcode::MsgRingData::new(Fd(target), fd, HANDOFF, None).build()
        });
        match posted {
            // Until the other worker adopts it, the cap counts it here.
            Ok(_) => drop(self.ctx.stats.handoffs_in_flight.fetch_add(1, Relaxed)),
            // The record (and the socket in it) was dropped: the connection is closed.
            Err(e) => log::warn!("cannot hand a connection to another worker: {e}"),
        }
    }

    /// A socket another worker's ring handed to this one (`IORING_OP_MSG_RING`, no record in
    /// our table): serve it.
    pub(super) fn handed_over(&mut self, cqe: Cqe) {
        if cqe.result >= 0 {
            // SAFETY: the acceptor handed this descriptor to us and gave up owning it
            // (its record forgot the socket once the kernel confirmed delivery).
            let stream = unsafe { TcpStream::from_raw_fd(cqe.result) };
            if !self.draining {
                self.adopt(stream);
            }
            // Counted as a session now (or closed): no longer in transit.
            self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
        }
    }

    /// Our `MSG_RING` hand-off completed: the other worker has the socket, or (it failed) it
    /// is served here.
    pub(super) fn handoff_done(&mut self, stream: Option<TcpStream>, cqe: Cqe) {
        let stream = stream.expect("a hand-off record owns its socket");
        if cqe.result >= 0 {
            // Delivered: the other worker owns the descriptor now.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(stream);
        } else {
            if !self.draining {
                log::debug!(
                    "hand-off failed ({}); serving the connection here",
                    io::Error::from_raw_os_error(-cqe.result)
                );
                self.adopt(stream);
            }
            self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
        }
    }
}
