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
//! **Direct descriptors** (`completion-port`): accepts allocate a slot in the worker's
//! fixed-file table, so they are also posted only within the table's free slots. A multishot
//! accept only while [`super::TABLE_MULTISHOT_ROOM`] slots are free (and the cap allows one):
//! the kernel may accept the whole backlog in one wait, and an accept that finds the table full
//! closes what it accepted. Nearer to full (or to the cap): accept tries
//! ([`Engine::try_accepts`]), which never wait, so they hold no slot for long and lose no
//! wake-up. A full table must not strand its listener's backlog: with `SO_REUSEPORT` the
//! kernel keeps hashing new connections to that listener. So every worker's listener is in a
//! shared [`Spill`]; a worker whose table is full says so there (counted in
//! `direct_table_full`, logged once) and wakes the others, which then make accept tries on
//! that listener too, until the full worker has room again. Nothing waits longer than it would
//! for a free slot anywhere, and nothing is accepted and dropped.
//!
//! Out of descriptors, every accept posted (four for the overlapped models) completes with
//! EMFILE at once: that is one pause of 100 ms ([`crate::accept::Backoff`], shared with the
//! readiness models' acceptor), counted in `accept_pauses` and logged once, not once per
//! accept; no accept is posted until it ends.

use super::conn::Sock;
use super::{Done, Engine, Kind, HANDOFF, MULTISHOT_ROOM, NO_CONN, TABLE_MULTISHOT_ROOM};
use crate::sys::uring::{opcode, CancelBuilder, Cqe, Fd};
use io_uring::types::{DestinationSlot, Fixed};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

/// `IORING_MSG_RING_CQE_SKIP` (the `io-uring` crate does not export it): the target ring gets
/// no completion for the message.
const MSG_RING_CQE_SKIP: u32 = 1;

/// Every worker's listener (direct descriptors with reuse-port), and whose table is full: a
/// worker with free slots accepts on a full worker's listener for it. The listeners close when
/// the last engine lets go of the spill (after every worker has stopped); an engine that stops
/// accepting shuts its own listener down for reading instead, which takes it out of the
/// reuse-port group and refuses new connections as a close would.
pub(crate) struct Spill {
    listeners: Vec<TcpListener>,
    full: Vec<AtomicBool>,
}

impl Spill {
    pub fn new(listeners: Vec<TcpListener>) -> Spill {
        let full = listeners.iter().map(|_| AtomicBool::new(false)).collect();
        Spill { listeners, full }
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }
}

/// Accept tries made at once on one listener: each takes at most one slot and completes at
/// once, so a batch reserves nothing for long.
const TRY_BATCH: usize = 16;

/// Accept tries on one listener ([`Engine::try_accepts`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tries {
    /// The multishot poll on the listener, if posted.
    pub(super) poll: Option<u64>,
    /// Its cancel was posted.
    pub(super) cancelled: bool,
    /// Worth a try: the listener became readable (or a slot freed) since the last try was
    /// made, or that try succeeded.
    pub(super) ready: bool,
    /// Accept tries in flight (a batch: each completes at once, with a connection or not).
    pub(super) in_flight: usize,
}

/// The listener an engine accepts on: its own, or its place in a [`Spill`]. Dropping it stops
/// the listening (closes an own one; shuts a shared one down for reading).
pub(super) enum Listener {
    Own(TcpListener),
    Shared { spill: Arc<Spill>, index: usize },
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Own(l) => l.as_raw_fd(),
            Listener::Shared { spill, index } => spill.listeners[*index].as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Shared { spill, index } = self {
            let l = &spill.listeners[*index];
            if let Err(e) = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read) {
                log::debug!("shutting a listener down: {e}");
            }
            spill.full[*index].store(false, SeqCst);
        }
    }
}

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
    /// How many connections this worker may accept now (below the cap, and into its table's
    /// free slots less those its accept tries may take), and whether a multishot accept is
    /// safe.
    fn accept_room(&mut self) -> (usize, bool) {
        let trying = self.tries_in_flight();
        let cap = self.cap.room().saturating_sub(trying);
        let mut multishot = cap >= MULTISHOT_ROOM;
        let mut room = cap;
        if let Some(t) = &self.table {
            let free = t.free().saturating_sub(trying);
            room = room.min(free);
            multishot &= free >= TABLE_MULTISHOT_ROOM;
        }
        (room, multishot)
    }

    fn tries_in_flight(&self) -> usize {
        self.tries.iter().map(|t| t.in_flight).sum()
    }

    pub(super) fn arm_accepts(&mut self) {
        let Some(fd) = self.listener.as_ref().map(Listener::fd) else {
            return;
        };
        if self.draining || self.backoff.is_paused() || self.accepts_trimming {
            return;
        }
        // Never more accepts in flight than connections fit below the cap (and in the table).
        let (room, multishot) = self.accept_room();
        let multishot = self.cfg.accepts == 0 && multishot;
        if self.table.is_some() && !multishot {
            return; // near a full table or the cap: accept tries ([`Engine::try_accepts`])
        }
        let want = match multishot {
            true => 1,
            false => self.cfg.accepts.max(1).min(room),
        };
        if self.accepts_posted < want {
            self.accept_multishot = multishot;
        }
        let direct = self.table.is_some();
        // The kernel refuses SOCK_CLOEXEC (a descriptor flag) with a direct descriptor.
        let flags = if direct { 0 } else { libc::SOCK_CLOEXEC };
        while self.accepts_posted < want {
            let posted = self.post(NO_CONN, Kind::Accept, |_| {
                if multishot {
                    opcode::AcceptMulti::new(Fd(fd))
                        .allocate_file_index(direct)
                        .flags(flags)
                        .build()
                } else {
                    opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .file_index(direct.then(DestinationSlot::auto_target))
                        .flags(flags)
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
        let (room, multishot) = self.accept_room();
        if self.accepts_posted <= room && (multishot || !self.accept_multishot) {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(Listener::fd) else {
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
        let polls: Vec<u64> = self.tries.iter().filter_map(|t| t.poll).collect();
        for ud in polls {
            self.cancel(ud);
        }
        if let Some(fd) = self.listener.as_ref().map(Listener::fd) {
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
            let sock = self.accepted(res);
            if !self.draining {
                self.distribute(sock);
            } else {
                self.discard(sock);
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

    /// The socket a successful accept's result names: a slot of our table (direct), or a new
    /// descriptor.
    fn accepted(&mut self, res: i32) -> Sock {
        match self.table.as_mut() {
            Some(t) => {
                t.used += 1;
                Sock::Direct(res as u32)
            }
            // SAFETY: a successful accept completion's result is a new descriptor that nothing
            // else owns; the TcpStream now owns (and will close) it.
            None => Sock::Ordinary(unsafe { TcpStream::from_raw_fd(res) }),
        }
    }

    /// Closes a socket accepted while shutting down.
    pub(super) fn discard(&mut self, sock: Sock) {
        match sock {
            Sock::Ordinary(stream) => drop(stream),
            Sock::Direct(slot) => self.close_slot(slot),
        }
    }

    /// Looks whether this worker's table is full, or has room again: says so (counted and
    /// logged once per time it fills) and, with a [`Spill`], tells the other workers, which
    /// then accept on this worker's listener for it.
    pub(super) fn check_table(&mut self) {
        let Some(t) = self.table.as_mut() else {
            return;
        };
        let full = t.free() == 0;
        if full == t.full {
            return;
        }
        t.full = full;
        let (slots, worker) = (t.slots, self.worker.unwrap_or(0));
        if full {
            self.ctx.stats.direct_table_full.fetch_add(1, Relaxed);
            log::warn!(
                "completion-port worker {worker}: its {slots}-slot descriptor table is full: \
                 it stops accepting (other workers accept on its listener for it)"
            );
        } else {
            log::info!("completion-port worker {worker}: room in its descriptor table again");
        }
        if let (Some(spill), Some(Listener::Shared { index, .. })) = (&self.spill, &self.listener) {
            spill.full[*index].store(full, SeqCst);
            if full {
                self.ctx.shutdown.wake_all();
            }
        }
    }

    /// Accept tries (direct descriptors, when a multishot accept is not safe: near a full
    /// table or the cap), on this worker's own listener and on the listener of every worker
    /// whose table is full. A try is an accept that does not wait (`IORING_ACCEPT_DONTWAIT`),
    /// into one slot, made in batches of up to [`TRY_BATCH`] (within the free slots) when a
    /// multishot poll (not exclusive: every worker's poll wakes) says the listener is
    /// readable, again after a batch accepted something, and on every listener once a slot
    /// frees. No accept sleeps on a listener holding a slot for a connection that may
    /// never come, and no wake-up is lost: a sleeping single-shot accept on a listener several
    /// rings wait on can swallow the wake-up of a second connection (the kernel wakes one
    /// exclusive waiter per connection, and a waiter already busy with the first still counts),
    /// stranding it.
    pub(super) fn try_accepts(&mut self) {
        if self.table.is_none() || self.stopping {
            return;
        }
        for i in 0..self.tries.len() {
            let Some(fd) = self.try_target(i) else {
                if let Some(ud) = self.tries[i].poll.filter(|_| !self.tries[i].cancelled) {
                    self.tries[i].cancelled = true;
                    self.cancel(ud);
                }
                continue;
            };
            if self.tries[i].poll.is_none() {
                match self.post(NO_CONN, Kind::AcceptPoll(i), |_| {
                    opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                        .multi(true)
                        .build()
                }) {
                    Ok(ud) => {
                        let t = &mut self.tries[i];
                        (t.poll, t.cancelled, t.ready) = (Some(ud), false, true);
                    }
                    Err(e) => log::error!("cannot poll a listener: {e}"),
                }
            }
            if !self.tries[i].ready || self.tries[i].in_flight > 0 {
                continue;
            }
            let room = self.accept_room().0;
            if room == 0 {
                return;
            }
            // Near the cap one try at a time, as one single-shot accept: every worker may try
            // at once, and the cap may be passed by one connection per other worker at most.
            let batch = match self.cap.room() >= MULTISHOT_ROOM {
                true => TRY_BATCH,
                false => 1,
            };
            // Worth another batch only if the listener becomes readable (or a slot frees)
            // after this one was made, or one of it succeeds.
            self.tries[i].ready = false;
            for _ in 0..room.min(batch) {
                let entry = opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .file_index(Some(DestinationSlot::auto_target()))
                    .build();
                match self.post(NO_CONN, Kind::TryAccept(i), |_| {
                    crate::sys::uring::accept_dontwait(entry)
                }) {
                    Ok(_) => self.tries[i].in_flight += 1,
                    Err(e) => {
                        log::error!("cannot post an accept: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// The listener accept tries go to at index `i`: our own while a multishot accept is not
    /// safe (and none is left in flight), another worker's while its table is full.
    fn try_target(&mut self, i: usize) -> Option<RawFd> {
        if self.draining {
            return None;
        }
        let own = match (&self.listener, &self.spill) {
            (Some(Listener::Shared { index, .. }), _) => *index,
            (Some(Listener::Own(_)), None) => 0,
            _ => return None,
        };
        if i == own {
            let multishot = self.cfg.accepts == 0 && self.accept_room().1;
            let quiet = self.accepts_posted == 0 && !self.backoff.is_paused();
            return (!multishot && quiet).then(|| self.listener.as_ref().map(Listener::fd))?;
        }
        let spill = self.spill.as_ref()?;
        spill.full[i]
            .load(SeqCst)
            .then(|| spill.listeners[i].as_raw_fd())
    }

    /// A listener's poll fired (readable: try), or ended.
    pub(super) fn accept_poll_done(&mut self, i: usize, done: Done) {
        let t = &mut self.tries[i];
        if done.cqe.result > 0 {
            t.ready = true;
        }
        if !done.cqe.more() {
            t.poll = None;
        }
        self.try_accepts();
    }

    /// An accept try completed: serve the connection (and try again at once: more may wait),
    /// or nothing was there.
    pub(super) fn try_accept_done(&mut self, i: usize, done: Done) {
        self.tries[i].in_flight -= 1;
        let res = done.cqe.result;
        if res >= 0 {
            self.tries[i].ready = true; // more may wait
            let sock = self.accepted(res);
            if self.draining {
                self.discard(sock);
            } else {
                let own = matches!(&self.listener, Some(Listener::Shared { index, .. }) if *index == i)
                    || self.spill.is_none();
                if !own {
                    self.ctx
                        .stats
                        .direct_accepted_for_others
                        .fetch_add(1, Relaxed);
                }
                self.distribute(sock);
            }
        } else {
            match -res {
                libc::EAGAIN | libc::ECANCELED => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    let e = io::Error::from_raw_os_error(-res);
                    self.backoff.begin(&e, &self.ctx.stats);
                }
                errno => log::debug!("accept: {}", io::Error::from_raw_os_error(errno)),
            }
        }
        self.try_accepts();
    }

    /// A slot freed: every listener tries may go to is worth a try again (a connection may
    /// wait there since a try found no room).
    pub(super) fn retry_accepts(&mut self) {
        for t in &mut self.tries {
            t.ready = true;
        }
    }

    /// Serves an accepted socket here, or (accept hand-off) passes it to the next worker.
    pub(super) fn distribute(&mut self, sock: Sock) {
        let Some(h) = self.handoff.as_mut() else {
            return self.adopt(sock);
        };
        h.next = (h.next + 1) % h.rings.len();
        if h.next == h.me {
            return self.adopt(sock);
        }
        let target = h.rings[h.next];
        let posted = match sock {
            Sock::Ordinary(stream) => {
                let fd = stream.as_raw_fd();
                self.post(NO_CONN, Kind::Handoff(Some(stream)), |_| {
                    opcode::MsgRingData::new(Fd(target), fd, HANDOFF, None).build()
                })
            }
            // The slot moves to a slot the other ring allocates in its table, without a
            // completion there (the result it would carry is not the slot); ours is closed and
            // the other worker told its slot once the kernel says it was delivered.
            Sock::Direct(slot) => self.post(NO_CONN, Kind::HandoffSlot(slot, target), |_| {
                opcode::MsgRingSendFd::new(
                    Fd(target),
                    Fixed(slot),
                    DestinationSlot::auto_target(),
                    HANDOFF,
                )
                .opcode_flags(MSG_RING_CQE_SKIP)
                .build()
            }),
        };
        match posted {
            // Until the other worker adopts it, the cap counts it here.
            Ok(_) => drop(self.ctx.stats.handoffs_in_flight.fetch_add(1, Relaxed)),
            // The record (and the socket in it) was dropped: the connection is closed (a
            // slot stays taken until the ring is dropped).
            Err(e) => log::warn!("cannot hand a connection to another worker: {e}"),
        }
    }

    /// Telling the other worker its slot completed; if it failed, that connection stays in its
    /// table, unserved, until its ring is dropped.
    pub(super) fn handoff_tell_done(&mut self, cqe: Cqe) {
        if cqe.result < 0 {
            self.lost_handoff(&io::Error::from_raw_os_error(-cqe.result));
        }
    }

    fn lost_handoff(&mut self, e: &io::Error) {
        log::error!("cannot tell a worker the connection handed to it: {e}");
        self.ctx.stats.errors.fetch_add(1, Relaxed);
        self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
    }

    /// A socket another worker's ring handed to this one (`IORING_OP_MSG_RING`, no record in
    /// our table): serve it.
    pub(super) fn handed_over(&mut self, cqe: Cqe) {
        if cqe.result >= 0 {
            // Direct: the kernel put the socket in a slot of our table (its index is the
            // result); ordinary: the descriptor is ours.
            let sock = self.accepted(cqe.result);
            if !self.draining {
                self.adopt(sock);
            } else {
                self.discard(sock);
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
            self.hand_off_failed(Sock::Ordinary(stream), cqe.result);
        }
    }

    /// Our `MSG_RING` of a direct descriptor completed: the other worker's table has the
    /// socket in the slot our result names (close ours, tell it which), or (it failed: that
    /// table is full) it is served here.
    pub(super) fn handoff_slot_done(&mut self, slot: u32, ring: RawFd, cqe: Cqe) {
        if cqe.result >= 0 {
            self.close_slot(slot);
            let theirs = cqe.result;
            if let Err(e) = self.post(NO_CONN, Kind::HandoffTell, |_| {
                opcode::MsgRingData::new(Fd(ring), theirs, HANDOFF, None).build()
            }) {
                self.lost_handoff(&e);
            }
        } else {
            self.hand_off_failed(Sock::Direct(slot), cqe.result);
        }
    }

    /// A hand-off failed (`res` is its `-errno`; for a slot: the other table is full): the
    /// connection is served here, or closed if shutdown has begun. Either way it is no longer
    /// in transit.
    fn hand_off_failed(&mut self, sock: Sock, res: i32) {
        if !self.draining {
            log::debug!(
                "hand-off failed ({}); serving the connection here",
                io::Error::from_raw_os_error(-res)
            );
            self.adopt(sock);
        } else if let Sock::Direct(slot) = sock {
            self.close_slot(slot);
        } // (an ordinary socket closes as it drops)
        self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
    }
}
