//! [`Engine`]: one io_uring, its table of operation records, and the connections they serve.
//! See the module doc of `models/uring` for the rule every function here keeps.
//!
//! Limits (`crate::limits`): the engine posts accepts only within `--max-conns` — never more
//! in flight than places left, a multishot accept only while at least [`MULTISHOT_ROOM`]
//! are, and accepts already posted are cancelled (`trim_accepts`) when they could pass the
//! cap; a socket they accepted before the cancel landed is served, never dropped. A worker
//! reaching the cap wakes the others (each keeps its own accepts), and a worker at the cap looks
//! again every [`CAP_RECHECK`], since a close on another worker does not wake it. So across
//! several `SO_REUSEPORT` listeners the cap can be passed by at most one connection per
//! other worker, in a race. The idle and write timeouts are a sweep after each wait
//! (`sweep_conns`): an expired connection is closed like any other (its operations
//! cancelled, freed at their completions).
//!
//! Out of descriptors, every accept posted (four for the overlapped models) completes with
//! EMFILE at once: that is one pause of 100 ms ([`crate::accept::Backoff`], shared with the
//! readiness models' acceptor), counted in `accept_pauses` and logged once, not once per
//! accept; no accept is posted until it ends.

use crate::accept::{Backoff, ConnCap};
use crate::limits::Sweep;
use crate::models::{min_timeout, Drain};
use crate::session::Session;
use crate::sys::uring::{opcode, CancelBuilder, Cqe, Fd, Ring};
use crate::sys::Waker;
use crate::trace::trace_event;
use crate::Ctx;
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod udp;

use udp::Datagram;

/// The `conn` of records that belong to no connection (accept, wake-up, cancel).
const NO_CONN: usize = usize::MAX;
/// User data of a completion another worker's ring posted into ours (`IORING_OP_MSG_RING`):
/// its result is an accepted socket handed to this worker. It has no record in our table.
const HANDOFF: u64 = u64::MAX;

/// How often a worker at the connection cap looks again: a connection closing on another
/// worker does not wake it.
const CAP_RECHECK: Duration = Duration::from_millis(50);
/// A multishot accept is posted only while at least this many connections fit below the cap;
/// nearer to it, one single-shot accept at a time, so the kernel cannot accept past the cap.
const MULTISHOT_ROOM: usize = 1024;
/// How long shutdown waits for the kernel to complete cancelled operations.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Send and receive buffers kept for reuse (beyond that they go back to the allocator).
const POOL_MAX: usize = 64;
/// Send buffers larger than this are not kept for reuse.
const POOL_BUF_MAX: usize = 64 * 1024;

/// How connections receive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Recv {
    /// One single-shot recv at a time per connection, into a buffer of `size` bytes that the
    /// connection's record owns (overlapped I/O: `WSARecv` with a posted buffer).
    Owned { size: usize },
    /// One multishot recv per connection, filling buffers the kernel picks from the ring's
    /// provided-buffer group (a completion port with the zero-byte-read trick: no buffer is
    /// tied up by an idle connection).
    Multishot,
}

/// A completion routine: run by the wait loop for the final completion of an operation that
/// carries it (`overlapped-routine`).
pub(crate) type Routine = fn(&mut Engine<'_>, Done);

/// The routines `overlapped-routine` attaches to every accept, receive and send it posts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routines {
    pub accept: Routine,
    pub recv: Routine,
    pub send: Routine,
    pub udp_recv: Routine,
    pub udp_send: Routine,
}

/// What distinguishes the three models.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineConfig {
    /// Owned buffers or a provided-buffer ring.
    pub recv: Recv,
    /// Single-shot accepts kept posted (several `AcceptEx`); 0 means one multishot accept.
    pub accepts: usize,
    /// `Some`: each operation carries its completion routine; `None`: the loop looks the
    /// record's kind up in a table.
    pub routines: Option<Routines>,
    /// Submission queue entries.
    pub ring_entries: u32,
}

/// What an operation record is for, and the buffer it owns.
#[derive(Debug)]
pub(crate) enum Kind {
    Accept,
    /// A single-shot receive into this buffer.
    Recv(Vec<u8>),
    /// A multishot receive from the provided-buffer ring.
    RecvMulti,
    /// A send of `buf[off..]`.
    Send {
        buf: Vec<u8>,
        off: usize,
    },
    /// A UDP receive (`IORING_OP_RECVMSG`) into the record's buffer and address.
    UdpRecv(Box<Datagram>),
    /// A UDP send (`IORING_OP_SENDMSG`) of the datagram received, back to its sender.
    UdpSend(Box<Datagram>),
    /// The multishot poll on the shutdown waker.
    Wake,
    /// An `ASYNC_CANCEL` of another record.
    Cancel,
    /// A `MSG_RING` that hands this accepted socket to another worker's ring. The record owns
    /// the socket until the kernel says it was delivered.
    Handoff(Option<TcpStream>),
}

impl Kind {
    /// The kind of a record that stays in the table (a non-final multishot completion): only
    /// buffer-less kinds are multishot.
    fn peek(&self) -> Kind {
        match self {
            Kind::Accept => Kind::Accept,
            Kind::RecvMulti => Kind::RecvMulti,
            Kind::Wake => Kind::Wake,
            other => unreachable!("{other:?} is never multishot"),
        }
    }
}

/// An operation record: posted to the kernel, freed at its final completion.
struct Op {
    generation: u32,
    conn: usize,
    kind: Kind,
    routine: Option<Routine>,
}

/// One completion, with its record's context: the connection, and (on the final completion)
/// the record's kind and buffer, handed back to the handler.
pub(crate) struct Done {
    pub conn: usize,
    pub cqe: Cqe,
    pub kind: Kind,
}

/// A provided buffer a connection could not take yet (backpressure): its bytes `off..len`
/// still wait, in order, ahead of anything received later.
struct Parked {
    bid: u16,
    off: usize,
    len: usize,
}

/// A connection of the completion models.
struct UConn {
    /// The socket, the connection state machine and the server-wide accounting.
    s: Session,
    fd: RawFd,
    /// User data of the posted receive, if any.
    recv_op: Option<u64>,
    /// User data of the posted send, if any (one at a time keeps the bytes in order).
    send_op: Option<u64>,
    /// A cancel was posted for the multishot receive (backpressure or close).
    recv_cancelled: bool,
    /// The connection is over: its operations are being cancelled; dropped when none is left.
    closing: bool,
    /// The peer's end of stream arrived (behind any parked data).
    eof_seen: bool,
    /// Multishot: the receive ended for lack of buffers; re-armed when some come back.
    starved: bool,
    parked: VecDeque<Parked>,
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

/// One ring, its operation table and its connections: the whole of a single-threaded
/// completion model, or one worker of `completion-port`.
pub(crate) struct Engine<'a> {
    ctx: &'a Ctx,
    cfg: EngineConfig,
    ops: Slab<Op>,
    next_generation: u32,
    conns: Slab<UConn>,
    listener: Option<TcpListener>,
    accepts_posted: usize,
    /// The accept posted is multishot.
    accept_multishot: bool,
    /// The accepts are being cancelled because they could accept past the cap; none is
    /// posted again until all have completed.
    accepts_trimming: bool,
    /// Out of descriptors: no accept is posted until the pause ends (one pause for all the
    /// accepts that failed together, counted and logged once).
    backoff: Backoff,
    /// `--max-conns`, counted over every worker.
    cap: ConnCap,
    /// `--idle-timeout`, `--write-timeout`.
    sweep: Sweep,
    waker: Arc<Waker>,
    /// Shutdown requested: no new connections.
    draining: bool,
    /// Final phase: everything is being cancelled; nothing new is posted.
    stopping: bool,
    send_pool: Vec<Vec<u8>>,
    recv_pool: Vec<Vec<u8>>,
    /// Provided buffers handed to us by the kernel and not yet recycled.
    bufs_out: usize,
    starved: Vec<usize>,
    cqes: Vec<Cqe>,
    published_ops: i64,
    /// Set on the worker that accepts for all the others (accept hand-off).
    handoff: Option<Handoff>,
    /// This engine's worker index (`completion-port`), named in `--trace` lines.
    worker: Option<usize>,
    /// The UDP socket this engine serves ([`Engine::with_udp`]).
    udp: Option<RawFd>,
    /// Datagram records posted (receives and sends).
    udp_posted: usize,
    /// Datagram records back from their completion, ready to be posted again (boxed as in
    /// their records, so posting one again moves no header the kernel will point at).
    #[allow(clippy::vec_box)]
    udp_spare: Vec<Box<Datagram>>,
    /// Declared last: dropped after every record and buffer above (and only once the table is
    /// empty, see [`Engine::run`]).
    ring: Ring,
}

/// What an engine holds that takes descriptors or much memory: its ring (with the
/// provided-buffer ring, for multishot receives) and its shutdown waker. Made apart from the
/// engine so a model with several workers can make every worker's parts before any worker
/// runs: a worker starting late could otherwise find the descriptors taken by connections
/// the others accepted, and fail.
pub(crate) struct Parts {
    ring: Ring,
    waker: Arc<Waker>,
    /// A listener of its own (`completion-port`'s reuse-port workers).
    listener: Option<TcpListener>,
}

impl Parts {
    /// The parts of an engine that another thread will run ([`Ring::for_another_thread`]).
    pub fn for_a_worker(ctx: &Ctx, cfg: &EngineConfig) -> io::Result<Parts> {
        Parts::with_ring(ctx, cfg, Ring::for_another_thread(cfg.ring_entries)?)
    }

    fn with_ring(ctx: &Ctx, cfg: &EngineConfig, mut ring: Ring) -> io::Result<Parts> {
        if let Recv::Multishot = cfg.recv {
            ring.add_buf_ring(0, ctx.recv_buffers.count, ctx.recv_buffers.size)?;
        }
        Ok(Parts {
            ring,
            waker: ctx.shutdown.register()?,
            listener: None,
        })
    }

    /// With a listener of its own, for the engine to accept on.
    pub fn with_listener(mut self, listener: TcpListener) -> Parts {
        self.listener = Some(listener);
        self
    }
}

/// The parts of every worker's engine, made at bind ([`crate::models::prepare`]); each worker
/// takes its own.
#[derive(Default)]
pub(crate) struct Prepared {
    parts: Mutex<Vec<Option<Parts>>>,
}

impl Prepared {
    pub fn new(parts: Vec<Parts>) -> Prepared {
        Prepared {
            parts: Mutex::new(parts.into_iter().map(Some).collect()),
        }
    }

    /// Worker `i`'s parts (once).
    pub fn take(&self, i: usize) -> io::Result<Parts> {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| io::Error::other(format!("no io_uring ring was made for worker {i}")))
    }
}

impl<'a> Engine<'a> {
    /// Creates the ring (and, for multishot receives, its provided-buffer ring). Call on the
    /// thread that will run the engine. Without a listener the engine serves only sockets other
    /// workers hand it.
    pub fn new(
        ctx: &'a Ctx,
        listener: Option<TcpListener>,
        cfg: EngineConfig,
    ) -> io::Result<Engine<'a>> {
        let parts = Parts::with_ring(ctx, &cfg, Ring::new(cfg.ring_entries)?)?;
        Engine::from_parts(ctx, listener, cfg, parts)
    }

    /// An engine on parts made beforehand ([`Parts::for_a_worker`]), accepting on `listener`
    /// or else on the parts' own. Call on the thread that will run the engine: it enables the
    /// ring for this thread.
    pub fn from_parts(
        ctx: &'a Ctx,
        listener: Option<TcpListener>,
        cfg: EngineConfig,
        parts: Parts,
    ) -> io::Result<Engine<'a>> {
        let Parts {
            mut ring,
            waker,
            listener: own,
        } = parts;
        let listener = listener.or(own);
        ring.enable()?;
        Ok(Engine {
            ctx,
            cfg,
            ops: Slab::new(),
            next_generation: 0,
            conns: Slab::new(),
            listener,
            accepts_posted: 0,
            accept_multishot: false,
            accepts_trimming: false,
            backoff: Backoff::default(),
            cap: match ctx.workers > 1 {
                true => ConnCap::new(ctx).waking_others(ctx),
                false => ConnCap::new(ctx),
            },
            sweep: ctx.sweep(),
            waker,
            draining: false,
            stopping: false,
            send_pool: Vec::new(),
            recv_pool: Vec::new(),
            bufs_out: 0,
            starved: Vec::new(),
            cqes: Vec::with_capacity(1024),
            published_ops: 0,
            handoff: None,
            worker: None,
            udp: None,
            udp_posted: 0,
            udp_spare: Vec::new(),
            ring,
        })
    }

    /// Names this engine's worker index in its `--trace` lines (`completion-port`).
    pub fn with_worker(mut self, index: usize) -> Engine<'a> {
        self.worker = Some(index);
        self
    }

    /// This engine's ring descriptor, for other workers to hand sockets to.
    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Makes this engine accept for every worker, handing sockets out round-robin.
    pub fn hand_off_to(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    /// Serves until shutdown and drain are over, then cancels everything in flight and waits
    /// for every final completion before the ring and the buffers are freed.
    pub fn run(mut self) -> io::Result<()> {
        self.arm_wake()?;
        self.arm_accepts();
        self.arm_udp();
        let mut drain = Drain::new(self.ctx.drain_timeout);
        let served = loop {
            if drain.begins(&self.ctx.shutdown) {
                self.stop_accepting();
            }
            if drain.is_over(self.conns.len()) {
                break Ok(());
            }
            self.arm_accepts(); // a pause over, below the cap again, or nothing to do
            self.trim_accepts(); // another worker reached the cap
            self.rearm_starved();
            let pause = self.backoff.remaining();
            let capped = self.cap.is_held().then_some(CAP_RECHECK);
            let timeout = min_timeout(drain.wait_limit(), min_timeout(pause, capped));
            // The gauge counts what this turn posted too (the first turn's accepts and waker
            // poll included) before the worker blocks, not only after its next completion.
            self.publish_ops();
            if let Err(e) = self
                .ring
                .submit_and_wait(min_timeout(timeout, self.sweep.wait_limit()))
            {
                break Err(e);
            }
            self.ctx.stats.count_wait();
            self.complete_all();
            if let Some(now) = self.sweep.due() {
                self.sweep_conns(now);
            }
        };
        if self.cancel_everything() {
            served
        } else {
            let left = self.ops.len();
            log::error!("{left} io_uring operations never completed: leaking their buffers");
            std::mem::forget(self);
            served
        }
    }

    // ---- the wait loop's side: completions to handlers -------------------------------------

    fn complete_all(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.ring.reap(&mut cqes);
        for cqe in cqes.drain(..) {
            self.complete(cqe);
        }
        self.cqes = cqes;
        self.publish_ops();
    }

    fn complete(&mut self, cqe: Cqe) {
        trace_event!(self.ctx.trace, "{}", self.describe(&cqe));
        if cqe.user_data == HANDOFF {
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
            return;
        }
        let key = (cqe.user_data & 0xffff_ffff) as usize;
        let generation = (cqe.user_data >> 32) as u32;
        let Some(op) = self.ops.get(key) else {
            log::error!("completion for unknown operation {:#x}", cqe.user_data);
            return;
        };
        debug_assert_eq!(op.generation, generation, "stale user data");
        if cqe.more() {
            let done = Done {
                conn: op.conn,
                cqe,
                kind: op.kind.peek(),
            };
            return self.dispatch(done);
        }
        // The final completion: the record leaves the table, and its buffer goes to the
        // handler, which may reuse it or drop it.
        let op = self.ops.remove(key);
        let done = Done {
            conn: op.conn,
            cqe,
            kind: op.kind,
        };
        match op.routine {
            Some(routine) => routine(self, done),
            None => self.dispatch(done),
        }
    }

    /// One completion as a `--trace` line: `CQE recv fd=7 res=5 more (worker 1)`.
    fn describe(&self, cqe: &Cqe) -> String {
        let res = errno_name(cqe.result);
        let more = if cqe.more() { " more" } else { "" };
        let worker = self
            .worker
            .map_or(String::new(), |w| format!(" (worker {w})"));
        if cqe.user_data == HANDOFF {
            return format!("CQE handed-off fd={res}{worker}");
        }
        let op = self.ops.get((cqe.user_data & 0xffff_ffff) as usize);
        let fd = match op.map(|op| &op.kind) {
            Some(Kind::UdpRecv(_) | Kind::UdpSend(_)) => self.udp,
            _ => op.and_then(|op| self.conns.get(op.conn)).map(|u| u.fd),
        }
        .map_or(String::new(), |fd| format!(" fd={fd}"));
        let what = match op.map(|op| &op.kind) {
            Some(Kind::Accept) => "accept",
            Some(Kind::UdpRecv(_)) => "recvmsg",
            Some(Kind::UdpSend(_)) => "sendmsg",
            Some(Kind::Recv(_) | Kind::RecvMulti) => "recv",
            Some(Kind::Send { .. }) => "send",
            Some(Kind::Wake) => "wake",
            Some(Kind::Cancel) => "cancel",
            Some(Kind::Handoff(_)) => "hand-off",
            None => "unknown",
        };
        let buf = cqe
            .buffer_id()
            .map_or(String::new(), |b| format!(" buf={b}"));
        let buf = match op.map(|op| &op.kind) {
            Some(Kind::UdpRecv(d)) if cqe.result >= 0 && d.truncated() => buf + " MSG_TRUNC",
            _ => buf,
        };
        format!("CQE {what}{fd} res={res}{buf}{more}{worker}")
    }

    /// Table dispatch: the record's kind says which handler runs (`WSAGetOverlappedResult`
    /// on the looked-up OVERLAPPED, or the completion key of a completion port).
    pub fn dispatch(&mut self, done: Done) {
        match done.kind {
            Kind::Accept => self.accept_done(done),
            Kind::Recv(_) => self.recv_done(done),
            Kind::RecvMulti => self.recv_multi_done(done),
            Kind::Send { .. } => self.send_done(done),
            Kind::UdpRecv(_) => self.udp_recv_done(done),
            Kind::UdpSend(_) => self.udp_send_done(done),
            Kind::Wake => self.wake_done(done),
            Kind::Cancel => {}
            Kind::Handoff(stream) => {
                let stream = stream.expect("a hand-off record owns its socket");
                if done.cqe.result >= 0 {
                    // Delivered: the other worker owns the descriptor now.
                    let _ = std::os::fd::IntoRawFd::into_raw_fd(stream);
                } else {
                    if !self.draining {
                        log::debug!(
                            "hand-off failed ({}); serving the connection here",
                            io::Error::from_raw_os_error(-done.cqe.result)
                        );
                        self.adopt(stream);
                    }
                    self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    // ---- posting ------------------------------------------------------------------------

    /// Puts a record in the table and posts its submission. `build` makes the submission from
    /// the record's kind, after the record is in place, so pointers into its buffer are final.
    fn post(
        &mut self,
        conn: usize,
        kind: Kind,
        build: impl FnOnce(&Kind) -> io_uring::squeue::Entry,
    ) -> io::Result<u64> {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let routine = self.cfg.routines.and_then(|r| match kind {
            Kind::Accept => Some(r.accept),
            Kind::Recv(_) => Some(r.recv),
            Kind::Send { .. } => Some(r.send),
            Kind::UdpRecv(_) => Some(r.udp_recv),
            Kind::UdpSend(_) => Some(r.udp_send),
            _ => None,
        });
        let entry = self.ops.vacant_entry();
        let key = entry.key();
        let user_data = (u64::from(generation) << 32) | key as u64;
        let op = entry.insert(Op {
            generation,
            conn,
            kind,
            routine,
        });
        let sqe = build(&op.kind).user_data(user_data);
        // SAFETY: every buffer the submission points at is owned by the record just inserted
        // in the table (a Vec's heap block does not move with the Vec), and every descriptor by
        // a connection or listener that outlives its operations; the record is removed only at
        // the operation's final completion (the one rule, see the module doc).
        if let Err(e) = unsafe { self.ring.push(&sqe) } {
            self.ops.remove(key);
            return Err(e);
        }
        Ok(user_data)
    }

    fn cancel(&mut self, target: u64) {
        if let Err(e) = self.post(NO_CONN, Kind::Cancel, |_| {
            opcode::AsyncCancel::new(target).build()
        }) {
            log::error!("cannot post a cancel: {e}");
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let fd = self.waker.as_raw_fd();
        self.post(NO_CONN, Kind::Wake, |_| {
            opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
        })
        .map(drop)
    }

    fn arm_accepts(&mut self) {
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
    fn trim_accepts(&mut self) {
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

    /// The sweep of the idle and write timeouts ([`crate::limits`]): closes what expired.
    fn sweep_conns(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter_mut()
            .filter(|(_, u)| !u.closing)
            .filter_map(|(c, u)| u.s.expired(&self.sweep, now).map(|_| c))
            .collect();
        for c in expired {
            self.begin_close(c);
        }
    }

    fn stop_accepting(&mut self) {
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

    fn post_recv(&mut self, c: usize) {
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
        let fd = u.fd;
        let posted = match self.cfg.recv {
            Recv::Owned { size } => {
                let len = u.s.conn.read_budget().min(size) as u32;
                let mut buf = self.recv_pool.pop().unwrap_or_else(|| vec![0; size]);
                let ptr = buf.as_mut_ptr();
                self.post(c, Kind::Recv(buf), |_| {
                    opcode::Recv::new(Fd(fd), ptr, len).build()
                })
            }
            Recv::Multishot => {
                let group = self.ring.bufs().map_or(0, |b| b.group());
                self.post(c, Kind::RecvMulti, |_| {
                    opcode::RecvMulti::new(Fd(fd), group).build()
                })
            }
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

    fn try_send(&mut self, c: usize) {
        let u = &mut self.conns[c];
        if self.stopping || u.closing || u.send_op.is_some() || !u.s.conn.wants_write() {
            return;
        }
        let spare = self.send_pool.pop().unwrap_or_default();
        let buf = u.s.conn.take_output(spare);
        self.post_send(c, buf, 0);
    }

    fn post_send(&mut self, c: usize, buf: Vec<u8>, off: usize) {
        let fd = self.conns[c].fd;
        let rest = &buf[off..];
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        match self.post(c, Kind::Send { buf, off }, |_| {
            opcode::Send::new(Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }) {
            Ok(ud) => self.conns[c].send_op = Some(ud),
            Err(e) => self.fail(c, &e),
        }
    }

    // ---- handlers -------------------------------------------------------------------------

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
    fn distribute(&mut self, stream: TcpStream) {
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

    fn adopt(&mut self, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
        }
        let fd = stream.as_raw_fd();
        let c = self.conns.insert(UConn {
            s: Session::new(stream, self.ctx),
            fd,
            recv_op: None,
            send_op: None,
            recv_cancelled: false,
            closing: false,
            eof_seen: false,
            starved: false,
            parked: VecDeque::new(),
        });
        self.post_recv(c);
    }

    /// A single-shot receive into the record's own buffer completed.
    pub fn recv_done(&mut self, done: Done) {
        let Kind::Recv(buf) = done.kind else {
            unreachable!()
        };
        let c = done.conn;
        let res = done.cqe.result;
        let u = &mut self.conns[c];
        u.recv_op = None;
        if res > 0 {
            let n = res as usize;
            u.s.conn.on_received(&buf[..n]);
            u.s.publish(n as u64, 0);
        } else if res == 0 {
            u.eof_seen = true;
            u.s.conn.on_peer_eof();
        } else if !(u.closing && res == -libc::ECANCELED) {
            self.fail(c, &io::Error::from_raw_os_error(-res));
        }
        if self.recv_pool.len() < POOL_MAX {
            self.recv_pool.push(buf);
        }
        self.advance(c);
    }

    /// A multishot receive posted a completion: bytes in a provided buffer, the end of
    /// stream, or its end (cancelled, out of buffers, error).
    pub fn recv_multi_done(&mut self, done: Done) {
        let c = done.conn;
        let cqe = done.cqe;
        let u = &mut self.conns[c];
        let mut error = None;
        if let Some(bid) = cqe.buffer_id() {
            self.bufs_out += 1;
            let len = cqe.result.max(0) as usize;
            let bufs = self
                .ring
                .bufs()
                .expect("multishot receives have a buffer ring");
            if u.closing {
                self.recycle(bid); // the connection is going: its bytes have nowhere to go
            } else if u.parked.is_empty() && len <= u.s.conn.read_budget() {
                u.s.conn.on_received(bufs.get(bid, len));
                u.s.publish(len as u64, 0);
                self.recycle(bid);
            } else {
                // Backpressure: keep the bytes in their buffer, in order, until the connection
                // can take them; the buffer stays out of the ring meanwhile.
                u.parked.push_back(Parked { bid, off: 0, len });
            }
        } else if cqe.result == 0 {
            u.eof_seen = true;
        } else if cqe.result == -libc::ENOBUFS {
            self.ctx.stats.recv_buffer_exhausted.fetch_add(1, Relaxed);
            if !u.closing && !u.starved {
                u.starved = true;
                self.starved.push(c);
            }
        } else if cqe.result < 0 && cqe.result != -libc::ECANCELED {
            error = Some(io::Error::from_raw_os_error(-cqe.result));
        }
        if !cqe.more() {
            let u = &mut self.conns[c];
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
        let Kind::Send { buf, off } = done.kind else {
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
            if off + n < buf.len() && !u.closing {
                // A short write: the rest goes first, from the same buffer.
                self.post_send(c, buf, off + n);
            } else if buf.capacity() <= POOL_BUF_MAX && self.send_pool.len() < POOL_MAX {
                self.send_pool.push(buf);
            }
        } else if !(u.closing && res == -libc::ECANCELED) {
            self.fail(c, &io::Error::from_raw_os_error(-res.max(1)));
        }
        self.feed_parked(c);
        self.advance(c);
    }

    fn wake_done(&mut self, done: Done) {
        self.waker.reset();
        if !done.cqe.more() && !self.stopping {
            if let Err(e) = self.arm_wake() {
                log::error!("cannot re-arm the shutdown waker: {e}");
            }
        }
    }

    // ---- connection logic -------------------------------------------------------------------

    /// Moves a connection on after any completion: send what is owed, keep a receive posted
    /// while backpressure allows (or cancel it when it does not), half-close, close.
    fn advance(&mut self, c: usize) {
        let Some(u) = self.conns.get_mut(c) else {
            return;
        };
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
            let _ = u.s.stream.shutdown(Shutdown::Write);
            u.s.conn.on_write_shutdown();
        }
        u.s.publish(0, 0);
        if u.s.conn.is_finished() {
            self.begin_close(c);
        }
    }

    /// Hands parked bytes to the connection as far as its read budget allows, in order,
    /// returning each buffer to the ring once empty; applies a waiting end of stream.
    fn feed_parked(&mut self, c: usize) {
        let Some(u) = self.conns.get_mut(c) else {
            return;
        };
        while let Some(p) = u.parked.front_mut() {
            let budget = u.s.conn.read_budget();
            if budget == 0 || u.closing {
                break;
            }
            let n = budget.min(p.len - p.off);
            let bufs = self.ring.bufs().expect("parked buffers come from the ring");
            u.s.conn
                .on_received(&bufs.get(p.bid, p.len)[p.off..p.off + n]);
            u.s.publish(n as u64, 0);
            p.off += n;
            if p.off == p.len {
                let bid = p.bid;
                u.parked.pop_front();
                recycle(&mut self.ring, &mut self.bufs_out, bid);
            }
        }
        let u = &mut self.conns[c];
        if u.eof_seen && u.parked.is_empty() && !u.s.conn.peer_eof() {
            u.s.conn.on_peer_eof();
        }
    }

    fn recycle(&mut self, bid: u16) {
        recycle(&mut self.ring, &mut self.bufs_out, bid);
    }

    /// Re-arms receives that ended for lack of buffers, as far as buffers are back.
    fn rearm_starved(&mut self) {
        let Some(count) = self.ring.bufs().map(|b| usize::from(b.count())) else {
            return;
        };
        let mut available = count.saturating_sub(self.bufs_out);
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
    fn fail(&mut self, c: usize, e: &io::Error) {
        if !self.conns[c].closing {
            log::debug!("connection closed on error: {e}");
            self.ctx.stats.errors.fetch_add(1, Relaxed);
            self.begin_close(c);
        }
    }

    /// Starts closing: cancels the connection's operations and returns its parked buffers;
    /// the connection (and its socket) is dropped when its last operation has completed.
    fn begin_close(&mut self, c: usize) {
        let u = &mut self.conns[c];
        if !u.closing {
            u.closing = true;
            let recv = u.recv_op.filter(|_| !u.recv_cancelled);
            let send = u.send_op;
            u.recv_cancelled = true;
            let parked: Vec<u16> = u.parked.drain(..).map(|p| p.bid).collect();
            for bid in parked {
                self.recycle(bid);
            }
            if !self.stopping {
                for ud in [recv, send].into_iter().flatten() {
                    self.cancel(ud);
                }
            }
        }
        self.release_if_idle(c);
    }

    fn release_if_idle(&mut self, c: usize) {
        let u = &self.conns[c];
        if u.closing && u.recv_op.is_none() && u.send_op.is_none() {
            drop(self.conns.remove(c)); // closes the socket; Session settles the gauges
        }
    }

    /// Final phase: cancel every operation in the ring and reap until the table is empty.
    /// Returns false if the kernel did not complete them all in time.
    fn cancel_everything(&mut self) -> bool {
        self.stopping = true;
        self.draining = true;
        let open: Vec<usize> = self.conns.iter().map(|(c, _)| c).collect();
        for c in open {
            self.begin_close(c);
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while !self.ops.is_empty() && Instant::now() < deadline {
            let cancels_pending = self
                .ops
                .iter()
                .any(|(_, op)| matches!(op.kind, Kind::Cancel));
            if !cancels_pending {
                let any = opcode::AsyncCancel2::new(CancelBuilder::any()).build();
                if let Err(e) = self.post(NO_CONN, Kind::Cancel, |_| any) {
                    log::error!("cannot cancel the remaining operations: {e}");
                }
            }
            if let Err(e) = self.ring.submit_and_wait(Some(Duration::from_millis(100))) {
                log::error!("waiting for cancelled operations: {e}");
                break;
            }
            self.complete_all();
        }
        self.listener = None;
        self.publish_ops();
        self.ops.is_empty()
    }

    fn publish_ops(&mut self) {
        let now = self.ops.len() as i64;
        if now != self.published_ops {
            self.ctx
                .stats
                .ops_in_flight
                .fetch_add(now - self.published_ops, Relaxed);
            self.published_ops = now;
        }
    }
}

/// Gives a provided buffer back to the ring (a free function, so it can run while a
/// connection is borrowed).
/// A completion's result for `--trace`: a count or descriptor, or the errno's name.
fn errno_name(res: i32) -> String {
    let name = match -res {
        _ if res >= 0 => return res.to_string(),
        libc::ECANCELED => "ECANCELED",
        libc::ENOBUFS => "ENOBUFS",
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOENT => "ENOENT",
        libc::EALREADY => "EALREADY",
        libc::EINVAL => "EINVAL",
        _ => return res.to_string(),
    };
    name.to_string()
}

fn recycle(ring: &mut Ring, bufs_out: &mut usize, bid: u16) {
    *bufs_out -= 1;
    if let Some(b) = ring.bufs_mut() {
        b.recycle(bid);
    }
}
