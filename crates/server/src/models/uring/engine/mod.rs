//! [`Engine`]: one io_uring, its table of operation records, and the connections they serve.
//! See the module doc of `models/uring` for the rule every function here keeps.
//!
//! The engine is cut along its concerns, one file each:
//! - this file: the engine's state, the wait loop, completions to handlers (table dispatch or
//!   a record's routine), posting and cancelling records, the sweep and shutdown;
//! - `accept.rs`: accepts within the connection cap (and the fixed-file table), the EMFILE
//!   back-off, accept hand-off between workers, and accepting for a worker whose table is full;
//! - `conn.rs`: one connection's I/O: receives (single-shot or multishot, both into provided
//!   buffers), sends, backpressure and parked bytes, half-close and close;
//! - `udp.rs`: UDP datagram records.
//!
//! **Direct descriptors** (`completion-port` where the kernel has them, see its module doc): a
//! worker's ring has a sparse fixed-file table ([`Parts::for_a_worker`]); accepts allocate a
//! slot in it, and every operation on the connection names the slot (`IOSQE_FIXED_FILE`,
//! [`conn::Target`]). Such a socket is in no descriptor table of the process, so dropping its
//! connection closes nothing: when the connection's last operation has completed the engine
//! posts `IORING_OP_CLOSE` on the slot (a record like any other), and the slot is counted
//! free at that completion. Dropping the ring closes what its table still holds.
//!
//! The idle and write timeouts and the TLS handshake deadline are a sweep after each wait
//! (`sweep_conns`, deciding with the same `limits::Sweep` as every model): an expired
//! connection is closed like any other (its operations cancelled, freed at their
//! completions).
//!
//! **One wait, one batch.** Every completion a wait returned is handled before any connection
//! moves on (`advance` defers to the end of the batch): the bytes of several receive
//! completions of one connection — a 64 KiB message in several buffers — leave in one send,
//! and nothing waits for it, since submissions reach the kernel only at the next wait.
//!
//! **Batched waits** (`--batch-wait DUR`, off by default; all three models, the code is
//! theirs in common). The wait asks for one completion per 4 connections of the engine (at
//! most 8) and holds the first at most DUR: io_uring's min-wait (Linux 6.12+,
//! `Ring::submit_and_wait_batch`, which says how the kernel treats it). With fewer than 8
//! connections, while draining, or while a connection waits for provided buffers (its receive
//! is re-armed only when the loop comes round, and a wait for completions that cannot come
//! was seen to stall such connections until the wait's timeout), the wait returns at its first
//! completion. Measured on the bench (ARCHITECTURE.md, "Batched waits"): the `c12k` load
//! already arrives in bursts (0.025 wake-ups per message without it), so it saved nothing
//! measurable there, and it cost closed loops throughput when it asked for 32; hence off.

use crate::accept::{Backoff, ConnCap};
use crate::ctx::Ctx;
use crate::models::{min_timeout, Turn};

use crate::sys::uring::{opcode, CancelBuilder, Cqe, Fd, Ring};
use crate::sys::Waker;
use crate::threads::lock;
use crate::trace::trace_event;
use slab::Slab;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod accept;
mod conn;
mod udp;

pub(crate) use accept::{Handoff, Spill};
use accept::{Listener, Tries};
use conn::UConn;
use udp::RingDatagram;

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
/// With direct descriptors a multishot accept is posted only while this many slots are free
/// in the worker's table: in one wait the kernel may accept the whole listen backlog (4,096)
/// and whatever arrives meanwhile, and an accept that finds the table full closes the socket
/// it accepted (`-ENFILE`): the one way a connection could be accepted and dropped.
const TABLE_MULTISHOT_ROOM: usize = 8192;

/// Batched waits (`--batch-wait`): the wait asks for one completion per this many
/// connections of the engine, at least 1 (then it is an ordinary wait) and at most
/// [`BATCH_MAX`]. Few connections in a closed loop have few completions in flight: asking
/// for more than can come would hold every one of them the whole bound.
const CONNS_PER_BATCHED_COMPLETION: usize = 4;
/// The most completions a batched wait asks for.
const BATCH_MAX: usize = 8;
/// How long shutdown waits for the kernel to complete cancelled operations.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Send buffers kept for reuse (beyond that they go back to the allocator).
const POOL_MAX: usize = 64;
/// Send buffers larger than this are not kept for reuse.
const POOL_BUF_MAX: usize = 64 * 1024;

/// How connections receive. Either way the kernel picks the buffer from the ring's
/// provided-buffer group (`--recv-buffers`) when data arrives: an idle connection holds none
/// (the io_uring form of the zero-byte `WSARecv` trick).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Recv {
    /// One single-shot recv at a time per connection (`IOSQE_BUFFER_SELECT`), posted again
    /// after each completion: overlapped I/O, one `WSARecv` outstanding per socket.
    Single,
    /// One multishot recv per connection, posting a completion for every buffer it fills
    /// until it ends (a completion port's steady stream of completions).
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
    /// Single-shot or multishot receives.
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
    /// A single-shot receive into a buffer of the provided-buffer ring.
    Recv,
    /// A multishot receive from the provided-buffer ring.
    RecvMulti,
    /// A send of a connection's output.
    Send(Outgoing),
    /// A UDP receive (`IORING_OP_RECVMSG`) into the record's buffer and address.
    UdpRecv(Box<RingDatagram>),
    /// A UDP send (`IORING_OP_SENDMSG`) of the datagram received, back to its sender.
    UdpSend(Box<RingDatagram>),
    /// The multishot poll on the shutdown waker.
    Wake,
    /// An `ASYNC_CANCEL` of another record.
    Cancel,
    /// A `MSG_RING` that hands this accepted socket to another worker's ring. The record owns
    /// the socket until the kernel says it was delivered.
    Handoff(Option<TcpStream>),
    /// A `MSG_RING` (`IORING_MSG_SEND_FD`) that puts direct descriptor `.0` in the table of the
    /// worker whose ring is `.1`, silently; our slot is closed once it is delivered, and a
    /// [`Kind::HandoffTell`] tells that worker which slot it got.
    HandoffSlot(u32, RawFd),
    /// A `MSG_RING` telling another worker the slot of the direct descriptor just put in its
    /// table (the completion it gets carries the slot as its result).
    HandoffTell,
    /// A multishot poll on listener `.0` (ours, or a full worker's) for accept tries.
    AcceptPoll(usize),
    /// An accept try (direct, not waiting) on listener `.0`.
    TryAccept(usize),
    /// `IORING_OP_CLOSE` of a direct descriptor's slot: the slot is free at its completion.
    Close,
    /// `IORING_OP_SHUTDOWN` (write side) of a direct descriptor (the kernel runs it on a
    /// worker thread, which looks the slot up only then).
    Shutdown,
    /// `IORING_OP_FIXED_FD_INSTALL`: a temporary ordinary descriptor for a TLS connection's
    /// direct one, to read the peer's address (closed at once).
    PeerAddr,
    /// A TLS connection's last `close_notify`, sent as the server stops (no connection left to
    /// tell).
    Goodbye(Vec<u8>),
}

/// What a send sends.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// `buf[off..]`: output the session produced, moved out of it.
    Owned { buf: Vec<u8>, off: usize },
    /// The connection's received bytes going out as they are, from the provided buffer they
    /// arrived in ([`conn::UConn::passing`]).
    Passed,
}

impl Kind {
    /// The kind of a record that stays in the table (a non-final multishot completion): only
    /// buffer-less kinds are multishot.
    fn peek(&self) -> Kind {
        match self {
            Kind::Accept => Kind::Accept,
            Kind::AcceptPoll(i) => Kind::AcceptPoll(*i),
            Kind::RecvMulti => Kind::RecvMulti,
            Kind::Wake => Kind::Wake,
            other => unreachable!("{other:?} is never multishot"),
        }
    }
}

/// An operation record, an entry of the engine's table (`ops`; the SQE's user data is its key
/// and generation): posted to the kernel, freed at its final completion. Windows' twin is
/// `winio`'s `OvOp`, which is its own `OVERLAPPED` instead of a table entry.
struct RingOp {
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

/// One ring, its operation table and its connections: the whole of a single-threaded
/// completion model, or one worker of `completion-port`.
pub(crate) struct Engine<'a> {
    ctx: &'a Ctx,
    cfg: EngineConfig,
    ops: Slab<RingOp>,
    next_generation: u32,
    conns: Slab<UConn>,
    listener: Option<Listener>,
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
    /// The drain and the sweep of `--idle-timeout`, `--write-timeout`, `--handshake-timeout`.
    turn: Turn,
    waker: Arc<Waker>,
    /// Shutdown requested: no new connections.
    draining: bool,
    /// Final phase: everything is being cancelled; nothing new is posted.
    stopping: bool,
    send_pool: Vec<Vec<u8>>,
    starved: Vec<usize>,
    /// A batch of completions is being handled: [`Engine::advance`] defers to its end.
    in_batch: bool,
    /// Connections to move on after this batch.
    deferred: Vec<usize>,
    cqes: Vec<Cqe>,
    published_ops: i64,
    /// Set on the worker that accepts for all the others (accept hand-off).
    handoff: Option<Handoff>,
    /// This engine's worker index (`completion-port`), named in `--trace` lines.
    worker: Option<usize>,
    /// Direct descriptors: this worker's fixed-file table.
    table: Option<Table>,
    /// Direct descriptors with a listener per worker: every worker's listener, and which
    /// workers' tables are full, so the others accept for them.
    spill: Option<Arc<Spill>>,
    /// Accept tries, per listener (direct descriptors near a full table or the cap).
    tries: Vec<Tries>,
    /// The UDP socket this engine serves ([`Engine::with_udp`]).
    udp: Option<RawFd>,
    /// RingDatagram records posted (receives and sends).
    udp_posted: usize,
    /// RingDatagram records back from their completion, ready to be posted again (boxed as in
    /// their records, so posting one again moves no header the kernel will point at).
    #[allow(clippy::vec_box)]
    udp_spare: Vec<Box<RingDatagram>>,
    /// Declared last: dropped after every record and buffer above (and only once the table is
    /// empty, see [`Engine::run`]).
    ring: Ring,
}

/// What an engine holds that takes descriptors or much memory: its ring (with its
/// provided-buffer ring) and its shutdown waker. Made apart from the
/// engine so a model with several workers can make every worker's parts before any worker
/// runs: a worker starting late could otherwise find the descriptors taken by connections
/// the others accepted, and fail.
pub(crate) struct Parts {
    ring: Ring,
    waker: Arc<Waker>,
    /// A listener of its own (`completion-port`'s reuse-port workers).
    listener: Option<TcpListener>,
    /// The slots of the ring's fixed-file table, when it has one (direct descriptors).
    table: Option<usize>,
}

/// A worker's fixed-file table (direct descriptors): how many slots, how many hold a socket
/// (or are being closed), and whether it was full when last looked at.
#[derive(Debug)]
struct Table {
    slots: usize,
    used: usize,
    full: bool,
}

impl Table {
    fn free(&self) -> usize {
        self.slots.saturating_sub(self.used)
    }
}

impl Parts {
    /// The parts of an engine that another thread will run ([`Ring::for_another_thread`]),
    /// with a sparse fixed-file table of `ctx.direct_table` slots when the connections are to
    /// be direct descriptors.
    pub fn for_a_worker(ctx: &Ctx, cfg: &EngineConfig) -> io::Result<Parts> {
        let mut parts = Parts::with_ring(ctx, Ring::for_another_thread(cfg.ring_entries)?)?;
        if let Some(slots) = ctx.direct_table {
            let n = u32::try_from(slots).map_err(io::Error::other)?;
            parts.ring.register_direct_table(n).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("a fixed-file table of {slots} slots: {e}"),
                )
            })?;
            parts.table = Some(slots);
        }
        Ok(parts)
    }

    fn with_ring(ctx: &Ctx, mut ring: Ring) -> io::Result<Parts> {
        ring.add_buf_ring(
            0,
            ctx.recv_buffers.count,
            ctx.recv_buffers.size,
            ctx.recv_incremental,
        )?;
        Ok(Parts {
            ring,
            waker: ctx.shutdown.register()?,
            listener: None,
            table: None,
        })
    }

    /// With a listener of its own, for the engine to accept on.
    pub fn with_listener(mut self, listener: TcpListener) -> Parts {
        self.listener = Some(listener);
        self
    }
}

/// The parts of every worker's engine, made at bind (`completion-port`'s
/// [`crate::models::Prepare`]) and handed to its `run`; each worker takes its own.
pub(crate) struct Prepared {
    parts: Mutex<Vec<Option<Parts>>>,
}

impl Prepared {
    pub fn new(parts: Vec<Parts>) -> Prepared {
        Prepared {
            parts: Mutex::new(parts.into_iter().map(Some).collect()),
        }
    }

    /// Worker `i`'s own listener, taken out of its parts (for a [`Spill`]).
    pub fn take_listener(&self, i: usize) -> Option<TcpListener> {
        let mut parts = lock(&self.parts);
        parts.get_mut(i)?.as_mut()?.listener.take()
    }

    /// Worker `i`'s parts (once).
    pub fn take(&self, i: usize) -> io::Result<Parts> {
        let mut parts = lock(&self.parts);
        parts
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| io::Error::other(format!("no io_uring ring was made for worker {i}")))
    }
}

impl<'a> Engine<'a> {
    /// Creates the ring and its provided-buffer ring. Call on the
    /// thread that will run the engine. Without a listener the engine serves only sockets other
    /// workers hand it.
    pub fn new(
        ctx: &'a Ctx,
        listener: Option<TcpListener>,
        cfg: EngineConfig,
    ) -> io::Result<Engine<'a>> {
        let parts = Parts::with_ring(ctx, Ring::new(cfg.ring_entries)?)?;
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
            table,
        } = parts;
        let listener = listener.or(own).map(Listener::Own);
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
            turn: Turn::new(ctx),
            waker,
            draining: false,
            stopping: false,
            send_pool: Vec::new(),
            starved: Vec::new(),
            in_batch: false,
            deferred: Vec::new(),
            cqes: Vec::with_capacity(1024),
            published_ops: 0,
            handoff: None,
            worker: None,
            table: table.map(|slots| Table {
                slots,
                used: 0,
                full: false,
            }),
            spill: None,
            tries: vec![Tries::default(); usize::from(table.is_some())],
            udp: None,
            udp_posted: 0,
            udp_spare: Vec::new(),
            ring,
        })
    }

    /// Accepts on listener `index` of `spill` (the worker's own) instead of a listener of its
    /// own, and on the others' while their tables are full (direct descriptors, reuse-port).
    pub fn with_spill(mut self, spill: Arc<Spill>, index: usize) -> Engine<'a> {
        self.tries = vec![Tries::default(); spill.len()];
        self.listener = Some(Listener::Shared {
            spill: Arc::clone(&spill),
            index,
        });
        self.spill = Some(spill);
        self
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
        let batch_wait = self.batch_wait();
        self.arm_wake()?;
        self.arm_accepts();
        self.arm_udp();
        let served = loop {
            if self.turn.drain_begins(&self.ctx.shutdown) {
                self.stop_accepting();
            }
            if self.turn.drain_is_over(self.conns.len()) {
                break Ok(());
            }
            self.check_table(); // full, or room again
            self.arm_accepts(); // a pause over, below the cap again, or nothing to do
            self.trim_accepts(); // another worker reached the cap
            self.try_accepts(); // near a full table, or another worker's table is full
            self.rearm_starved();
            let pause = self.backoff.remaining();
            let capped = self.cap.is_held().then_some(CAP_RECHECK);
            let timeout = self.turn.wait_limit(min_timeout(pause, capped));
            // The gauge counts what this turn posted too (the first turn's accepts and waker
            // poll included) before the worker blocks, not only after its next completion.
            self.publish_ops();
            let want = match batch_wait {
                Some(_) if !self.draining && self.starved.is_empty() => {
                    (self.conns.len() / CONNS_PER_BATCHED_COMPLETION).clamp(1, BATCH_MAX)
                }
                _ => 1,
            };
            let waited = match batch_wait {
                Some(bound) if want > 1 => {
                    self.ctx.stats.batched_waits.fetch_add(1, Relaxed);
                    self.ring.submit_and_wait_batch(want, bound, timeout)
                }
                _ => self.ring.submit_and_wait(timeout),
            };
            if let Err(e) = waited {
                break Err(e);
            }
            self.ctx.stats.count_wait();
            self.complete_all();
            if let Some(now) = self.turn.sweep_due() {
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

    /// The batch bound this engine waits with (`--batch-wait`), if batching is on and the
    /// kernel has min-wait; says once per process when it has not.
    fn batch_wait(&self) -> Option<Duration> {
        static SAID: std::sync::Once = std::sync::Once::new();
        let bound = self.ctx.batch_wait?;
        if self.ring.can_batch() {
            return Some(bound);
        }
        SAID.call_once(|| {
            log::info!(
                "io_uring: this kernel has no min-wait (IORING_FEAT_MIN_TIMEOUT, Linux 6.12+): \
                 --batch-wait is off, each wait returns at its first completion"
            );
        });
        None
    }

    // ---- the wait loop's side: completions to handlers -------------------------------------

    fn complete_all(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.ring.reap(&mut cqes);
        self.in_batch = true;
        for cqe in cqes.drain(..) {
            self.complete(cqe);
        }
        self.in_batch = false;
        self.cqes = cqes;
        self.advance_deferred();
        self.publish_ops();
    }

    fn complete(&mut self, cqe: Cqe) {
        trace_event!(self.ctx.trace, "{}", self.describe(&cqe));
        if cqe.user_data == HANDOFF {
            return self.handed_over(cqe);
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
            Some(Kind::UdpRecv(_) | Kind::UdpSend(_)) => self.udp.map(|fd| format!(" fd={fd}")),
            _ => op
                .and_then(|op| self.conns.get(op.conn))
                .map(|u| format!(" {}", u.target)),
        }
        .unwrap_or_default();
        let what = match op.map(|op| &op.kind) {
            Some(Kind::Accept) => "accept",
            Some(Kind::UdpRecv(_)) => "recvmsg",
            Some(Kind::UdpSend(_)) => "sendmsg",
            Some(Kind::Recv | Kind::RecvMulti) => "recv",
            Some(Kind::Send(_)) => "send",
            Some(Kind::Wake) => "wake",
            Some(Kind::Cancel) => "cancel",
            Some(Kind::Handoff(_) | Kind::HandoffSlot(..) | Kind::HandoffTell) => "hand-off",
            Some(Kind::AcceptPoll(_)) => "poll (listener)",
            Some(Kind::TryAccept(_)) => "accept (try)",
            Some(Kind::Close) => "close",
            Some(Kind::Shutdown) => "shutdown",
            Some(Kind::PeerAddr) => "fixed-fd-install",
            Some(Kind::Goodbye(_)) => "send (close_notify)",
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
            Kind::Recv | Kind::RecvMulti => self.recv_done(done),
            Kind::Send(_) => self.send_done(done),
            Kind::UdpRecv(_) => self.udp_recv_done(done),
            Kind::UdpSend(_) => self.udp_send_done(done),
            Kind::Wake => self.wake_done(done),
            Kind::Cancel => {}
            Kind::Shutdown => self.shutdown_done(done),
            Kind::Goodbye(_) => self.goodbye_done(done),
            Kind::Handoff(stream) => self.handoff_done(stream, done.cqe),
            Kind::HandoffSlot(slot, ring) => self.handoff_slot_done(slot, ring, done.cqe),
            Kind::HandoffTell => self.handoff_tell_done(done.cqe),
            Kind::AcceptPoll(i) => self.accept_poll_done(i, done),
            Kind::TryAccept(i) => self.try_accept_done(i, done),
            Kind::Close => self.close_done(done),
            Kind::PeerAddr => self.peer_addr_done(done),
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
            Kind::Recv => Some(r.recv),
            Kind::Send(_) => Some(r.send),
            Kind::UdpRecv(_) => Some(r.udp_recv),
            Kind::UdpSend(_) => Some(r.udp_send),
            _ => None,
        });
        let entry = self.ops.vacant_entry();
        let key = entry.key();
        let user_data = (u64::from(generation) << 32) | key as u64;
        let op = entry.insert(RingOp {
            generation,
            conn,
            kind,
            routine,
        });
        let sqe = build(&op.kind).user_data(user_data);
        // SAFETY: every buffer the submission points at is owned by the record just inserted
        // in the table (a Vec's heap block does not move with the Vec) — a receive points at
        // none: the kernel picks one of the ring's provided buffers, which live as long as the
        // ring, dropped last — and every descriptor by a connection or listener that outlives
        // its operations; the record is removed only at the operation's final completion (the
        // one rule, see the module doc).
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

    /// The sweep of the idle and write timeouts ([`crate::limits`]): closes what expired.
    fn sweep_conns(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter_mut()
            .filter(|(_, u)| !u.closing)
            .filter_map(|(c, u)| u.s.expired(self.turn.sweep(), now).map(|_| c))
            .collect();
        for c in expired {
            self.begin_close(c);
        }
    }

    fn wake_done(&mut self, done: Done) {
        self.waker.reset();
        if !done.cqe.more() && !self.stopping {
            if let Err(e) = self.arm_wake() {
                log::error!("cannot re-arm the shutdown waker: {e}");
            }
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
