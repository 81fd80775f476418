//! Winsock: one I/O completion port, a worker per CPU dequeuing with
//! `GetQueuedCompletionStatusEx`, accepts posted ahead with `AcceptEx`.
//!
//! The thread that calls `run` coordinates: it posts the accepts (and re-posts them after a
//! back-off), runs the drain, closes everything at the end and waits until every record has
//! been reaped, then stops the workers with one `PostQueuedCompletionStatus` packet each.
//! The workers do all the I/O: each packet is an accept (adopt the socket, post its first
//! receive, post another accept) or a connection's receive or send (feed the connection, post
//! what it wants next). The rules of the records are in `models/winio`.
//!
//! **A completion finds its connection by its key: no process-wide lock.** Each connection is
//! an `Arc<Mutex<OvConn>>`, and its socket is associated with the port under the address of
//! that allocation as its *completion key* (the book's per-handle data; the listener, the UDP
//! socket and the quit packets have small constant keys, which no allocation can have). A
//! worker turns a packet's key back into a reference to the connection (one more strong
//! count) and takes only that connection's mutex, from `complete` to the end of `advance`: a
//! connection's receive and send can complete at the same moment and be dequeued by two
//! workers, and the mutex keeps the state a completion touches (the `Connection`, which record
//! is in flight, the spare buffers) from being seen half-updated. So two workers contend only
//! when they serve the same connection. The key is sound because of one invariant: *the
//! connection table holds a strong reference for as long as any record of the connection is in
//! flight* — a connection leaves it (`forget`) only once it is closed and its in-flight list,
//! updated under its mutex, is empty; a packet being handled is a record not yet fed back, so
//! its connection is still in the table when the key is read. The table (a `Slab`, behind the
//! one process-wide lock left on the TCP path) serves the coordinator's sweeps and the final
//! close; it is taken when a connection is adopted and when it is forgotten, not per message.
//! Every acquisition of a lock all threads share is counted in `Stats::shared_locks`
//! (`tests/windows_overlapped.rs` checks that 2,000 messages over 4 connections take a few per
//! connection, none per message). Locks are taken in one order — accepting state, then the
//! connection table, then one connection — and never held across a wait. A record's tag is
//! its connection's table key, which `forget` checks against the `Arc` it removes.
//!
//! **Limits** (`crate::limits`). `AcceptEx` is posted only within the connection cap: never
//! more accepts in flight than places left below `--max-conns` (open connections counted over
//! every worker, `Stats::active`), so an accept completing never passes the cap, and at the
//! cap none is posted: clients wait in the listen backlog. A worker that forgets a closed
//! connection tops the accepts up again. The coordinator sweeps the connections for the idle
//! and write timeouts (its wait bounded by the next sweep) and closes an expired one under its
//! lock like any other (`closesocket`; the workers reap its aborted records). Out of sockets
//! or buffers (`WSAEMFILE`, `WSAENOBUFS`, from `AcceptEx` or its socket), accepting pauses for a
//! back-off, logged once per pause.
//!
//! **The `AcceptEx` pool keeps up.** It starts at `max(2 × workers, 8)`. A worker re-posts the
//! accepts it reaped at the end of its turn (one `GetQueuedCompletionStatusEx` batch), not one
//! by one, so a turn that finds none left posted — every accept taken, connections arriving
//! faster than the pool — is seen: the pool then doubles, up to [`ACCEPT_POOL_MAX`] (a
//! constant: 256 sockets made ahead), unless the connection cap was the limit
//! ([`pool_after_turn`]). The book's version watches `FD_ACCEPT` on the listener
//! (`WSAEventSelect`), which fires when a client waits with no accept posted; the turn's count
//! needs no second notification on a listener that is already the port's, and no wait of its
//! own. Counted in `Stats::accept_pool_grown`, logged at info each time (at most 5 lines a
//! run: 8 → 256). The pool never shrinks (a posted accept costs a socket and 288 bytes); the
//! gauge `Stats::accepts_posted` says how many are posted now, the part of `ops_in_flight` at
//! rest that is the pool. Without growth nothing is refused while the listen backlog (4,096)
//! holds the storm; with it, accepting does not lag the storm by a pool's worth per turn.

use crate::accept::{Backoff, ConnCap};
use crate::ctx::{AcceptMode, Ctx};
use crate::models::winio::{
    reclaim, reclaim_datagram, warn_if_uring_flags_set, AcceptEx, Notify, OpKind, OvConn, OvOp,
    OvUdpEcho,
};
use crate::models::Turn;
use crate::sys::iocp::{empty_entry, CompletionPort};
use crate::sys::{is_out_of_descriptors, wait_any, Event, Wait};
use crate::threads::{join_workers, lock};
use crate::trace::trace_event;
use slab::Slab;
use std::io;
use std::net::TcpListener;
use std::os::windows::io::AsRawSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use windows_sys::Win32::System::IO::OVERLAPPED;

pub(crate) const MECHANISM: &str = "IOCP, a worker per CPU, AcceptEx";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// The completion key of the listener's packets (its `AcceptEx` records). A connection's
/// socket has the address of its `Arc<Mutex<OvConn>>` as its key ([`conn_key`]), never as
/// small as these.
const KEY_LISTENER: usize = 1;
/// The completion key of a packet that stops one worker.
const KEY_QUIT: usize = 2;
/// The completion key of the UDP socket's packets (datagram records, not `OvOp`s).
const KEY_UDP: usize = 3;
/// The tag of accept records (connection records carry their table key).
const ACCEPT_TAG: usize = usize::MAX;
/// The most `AcceptEx` the pool grows to (from `max(2 × workers, 8)`): each holds a socket made
/// ahead and a 288-byte address buffer.
const ACCEPT_POOL_MAX: usize = 256;
/// Packets dequeued per `GetQueuedCompletionStatusEx`.
const BATCH: usize = 64;
/// How long the final phase waits for the kernel to complete the closed sockets' operations.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

type Shared = Arc<Mutex<OvConn>>;

/// Everything the coordinator and the workers share.
struct Server<'a> {
    ctx: &'a Ctx,
    port: CompletionPort,
    /// Loaded through the listener; `None` without one (`--no-tcp`).
    accept_ex: Option<AcceptEx>,
    accepting: Mutex<Accepting>,
    conns: Mutex<Slab<Shared>>,
    /// Signalled when accepting paused: the coordinator re-posts the accepts after the pause.
    kick: Event,
    /// The UDP echo (`--udp`): its records complete on any worker, one at a time.
    udp: Option<Mutex<OvUdpEcho>>,
}

struct Accepting {
    /// `None` once draining (closing it aborted the pending accepts), or without TCP.
    listener: Option<TcpListener>,
    posted: usize,
    /// How many `AcceptEx` stay posted: the pool, grown (doubled, up to [`ACCEPT_POOL_MAX`])
    /// when a worker's turn finds every one of them taken.
    wanted: usize,
    /// Out of sockets or buffers: the pause before posting again (one count and log a pause).
    backoff: Backoff,
    /// `--max-conns`: no more accepts posted than places left.
    cap: ConnCap,
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    crate::sys::wsa_startup();
    if ctx.accept_mode != AcceptMode::default() {
        log::warn!(
            "--accept {} is Linux-only (Windows has no SO_REUSEPORT): the workers share one \
             listener and its AcceptEx completions",
            ctx.accept_mode.name()
        );
    }
    warn_if_uring_flags_set(ctx);
    let workers = ctx.workers.max(1);
    let port = CompletionPort::new(workers as u32)?;
    let accept_ex = match &listener {
        Some(listener) => {
            port.associate(listener.as_raw_socket(), KEY_LISTENER)?;
            Some(AcceptEx::load(listener)?)
        }
        None => None,
    };
    let udp = match &ctx.udp {
        Some(socket) => {
            port.associate(socket.as_raw_socket(), KEY_UDP)?;
            Some(Mutex::new(OvUdpEcho::new(socket, ctx)))
        }
        None => None,
    };
    let server = Server {
        ctx,
        accept_ex,
        port,
        accepting: Mutex::new(Accepting {
            listener,
            posted: 0,
            wanted: (2 * workers).max(8),
            backoff: Backoff::default(),
            cap: ConnCap::new(ctx),
        }),
        conns: Mutex::new(Slab::new()),
        kick: Event::new()?,
        udp,
    };
    let waker = ctx.shutdown.register()?;
    std::thread::scope(|scope| {
        let server = &server;
        let mut threads = Vec::new();
        for i in 0..workers {
            let spawned = std::thread::Builder::new()
                .name(format!("iocp-worker-{i}"))
                .spawn_scoped(scope, move || {
                    let r = server.work(i);
                    if let Err(e) = &r {
                        log::error!("completion-port worker: {e}");
                        server.ctx.shutdown.trigger();
                    }
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    log::error!("cannot start a completion-port worker: {e}");
                    ctx.shutdown.trigger();
                    break;
                }
            }
        }
        let result = server.coordinate(&waker);
        server.stop(threads.len());
        let joined = threads.into_iter().map(|t| t.join());
        join_workers(result, joined, "a worker panicked")
    })
}

impl Server<'_> {
    /// The coordinator: accepts ahead, runs the drain, then closes and reaps everything.
    fn coordinate(&self, waker: &crate::sys::Waker) -> io::Result<()> {
        self.post_accepts();
        if let Some(udp) = &self.udp {
            self.shared(udp).arm(Notify::Port);
        }
        let mut turn = Turn::new(self.ctx);
        let served = loop {
            if turn.drain_begins(&self.ctx.shutdown) {
                self.stop_accepting();
                self.stop_udp();
            }
            if turn.drain_is_over(self.shared(&self.conns).len()) {
                break Ok(());
            }
            let pause = self.shared(&self.accepting).backoff.remaining();
            let handles = [waker.event_handle(), self.kick.handle()];
            match wait_any(&handles, turn.wait_limit(pause), false) {
                Ok(Wait::Signalled(0)) => waker.reset(),
                Ok(Wait::Signalled(_)) => self.kick.reset(),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if let Some(now) = turn.sweep_due() {
                self.close_where(|c| c.expired(turn.sweep(), now));
            }
            self.post_accepts();
        };
        self.stop_accepting();
        self.stop_udp();
        self.close_where(|_| true);
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.ctx.stats.ops_in_flight.load(Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = self.ctx.stats.ops_in_flight.load(Relaxed);
        if left > 0 {
            log::error!("{left} overlapped operations never completed: leaking their records");
        }
        served
    }

    /// One quit packet per worker. A worker that dequeues several passes the extras on.
    fn stop(&self, workers: usize) {
        for _ in 0..workers {
            if let Err(e) = self.port.post(0, KEY_QUIT) {
                log::error!("cannot stop a completion-port worker: {e}");
            }
        }
    }

    /// A worker: dequeue packets and handle each, until a quit packet.
    fn work(&self, worker: usize) -> io::Result<()> {
        let stats = &self.ctx.stats;
        let mut entries = vec![empty_entry(); BATCH];
        loop {
            let n = self.port.wait(&mut entries, None)?;
            stats.count_wait();
            let mut quits = 0;
            let mut accepts = false;
            for e in &entries[..n] {
                if e.lpCompletionKey == KEY_QUIT {
                    quits += 1;
                    continue;
                }
                if e.lpCompletionKey == KEY_UDP {
                    self.datagram_done(e.lpOverlapped, worker);
                    continue;
                }
                // SAFETY: every other packet is the completion of a record posted through
                // winio on a socket associated with this port (the listener or a connection),
                // dequeued once, here.
                let op = unsafe { reclaim(e.lpOverlapped, stats) };
                let result = op.result();
                if e.lpCompletionKey == KEY_LISTENER {
                    debug_assert_eq!(op.kind(), OpKind::Accept);
                    accepts = true;
                    self.accept_done(op, result, worker);
                } else {
                    // SAFETY: any other key is a connection's (its socket was associated under
                    // `conn_key` in `adopt`), and this packet is one of its records, still in
                    // the connection's in-flight list: the table holds the connection.
                    let conn = unsafe { conn_of_key(e.lpCompletionKey) };
                    self.io_done(&conn, op, result, worker);
                }
            }
            if accepts {
                self.accepts_turn();
            }
            if quits > 0 {
                // Packets beyond our own quit belong to other workers.
                self.stop(quits - 1);
                return Ok(());
            }
        }
    }

    // ---- accepting ------------------------------------------------------------------------

    /// Tops the posted accepts up to what is wanted and fits below the cap (unless draining
    /// or paused).
    fn post_accepts(&self) {
        let mut a = self.shared(&self.accepting);
        self.post_accepts_locked(&mut a);
    }

    fn post_accepts_locked(&self, a: &mut Accepting) {
        if a.backoff.is_paused() {
            return;
        }
        if a.listener.is_none() {
            return;
        }
        // Every posted accept becomes a connection: open + posted never passes the cap.
        let want = a.wanted.min(a.cap.room());
        while a.posted < want {
            let (Some(listener), Some(accept_ex)) = (a.listener.as_ref(), &self.accept_ex) else {
                return;
            };
            let op = AcceptEx::new_op(ACCEPT_TAG);
            match accept_ex.post(listener, op, Notify::Port, &self.ctx.stats) {
                Ok(_) => a.posted += 1,
                Err((_, e)) => {
                    // Whatever it was (out of sockets, out of buffers), retrying at once would
                    // spin: back off, and let the coordinator try again.
                    self.pause_accepting(a, &e);
                    return;
                }
            }
        }
    }

    /// The end of a worker's turn that reaped accepts (which did not re-post: see
    /// `accept_done`): if every posted accept was taken (none left posted), connections came
    /// faster than the pool, so it doubles, up to [`ACCEPT_POOL_MAX`] (counted in
    /// `accept_pool_grown`, logged each time: at most 5 lines a run), unless the connection
    /// cap rather than the pool was the limit; then the accepts are topped up.
    fn accepts_turn(&self) {
        let mut a = self.shared(&self.accepting);
        let grown = if a.listener.is_none() || a.backoff.is_paused() {
            a.wanted
        } else {
            pool_after_turn(a.wanted, a.posted, a.cap.room())
        };
        if grown > a.wanted {
            a.wanted = grown;
            self.ctx.stats.accept_pool_grown.fetch_add(1, Relaxed);
            log::info!(
                "completion-port: a turn found every posted AcceptEx taken: the pool grows to {} \
                 (at most {ACCEPT_POOL_MAX})",
                a.wanted
            );
        }
        self.post_accepts_locked(&mut a);
    }

    fn pause_accepting(&self, a: &mut Accepting, e: &io::Error) {
        if a.backoff.begin(e, &self.ctx.stats) {
            if let Err(e) = self.kick.set() {
                log::error!("cannot wake the coordinator: {e}");
            }
        }
    }

    /// Closes the listener: its pending accepts complete with `ERROR_OPERATION_ABORTED` (and
    /// their records, with the sockets they hold, are freed as the workers reap them).
    fn stop_accepting(&self) {
        self.shared(&self.accepting).listener = None;
    }

    /// An accept completed: adopt its socket. Another accept is posted at the end of the
    /// worker's turn (`accepts_turn`), so a turn that took them all can be seen.
    fn accept_done(&self, mut op: Box<OvOp>, result: io::Result<usize>, worker: usize) {
        match &result {
            Ok(_) => trace_event!(self.ctx.trace, "AcceptEx done (worker {worker})"),
            Err(e) => trace_event!(self.ctx.trace, "AcceptEx error={e} (worker {worker})"),
        }
        let mut a = self.shared(&self.accepting);
        a.posted -= 1;
        let adopted = match (result, a.listener.as_ref()) {
            (_, None) => None, // draining: the record's socket is closed with it
            (Ok(_), Some(listener)) => match self.adopt(listener, &mut op) {
                Ok(adopted) => Some(adopted),
                Err(e) => {
                    log::debug!("accepted socket dropped: {e}");
                    None
                }
            },
            (Err(e), Some(_)) if is_out_of_descriptors(&e) => {
                self.pause_accepting(&mut a, &e);
                None
            }
            // The client reset or aborted before the accept completed
            // (ERROR_NETNAME_DELETED, WSAECONNRESET, ...): nothing to serve.
            (Err(e), Some(_)) => {
                log::debug!("accept: {e}");
                None
            }
        };
        drop(a);
        if let Some((key, conn)) = adopted {
            self.advance(key, &conn);
        }
    }

    /// Finishes an accepted socket, associates it with the port and puts it in the table.
    /// Runs under the accepting lock, so a connection is in the table before the listener can
    /// be closed: the final `close_all` cannot miss it.
    fn adopt(&self, listener: &TcpListener, op: &mut OvOp) -> io::Result<(usize, Shared)> {
        let accept_ex = self
            .accept_ex
            .as_ref()
            .expect("a listener has its AcceptEx");
        let (stream, peer) = accept_ex.finish(listener, op)?;
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
        }
        crate::sys::set_oob_inline_accepted(&stream);
        log::trace!("accepted {peer:?}");
        trace_event!(
            self.ctx.trace,
            "accept s={} peer={}",
            stream.as_raw_socket(),
            peer.map_or("?".to_string(), |p| p.to_string())
        );
        let socket = stream.as_raw_socket();
        let conn = Arc::new(Mutex::new(OvConn::new(stream, self.ctx)));
        // Nothing is posted on the socket yet: its packets can only come after this.
        self.port.associate(socket, conn_key(&conn))?;
        let key = self.shared(&self.conns).insert(Arc::clone(&conn));
        Ok((key, conn))
    }

    // ---- UDP ------------------------------------------------------------------------------

    /// A datagram record's packet: echo, count, re-post (under the UDP lock).
    fn datagram_done(&self, overlapped: *mut OVERLAPPED, worker: usize) {
        let Some(udp) = &self.udp else {
            return;
        };
        // SAFETY: a KEY_UDP packet is the completion of a datagram record the OvUdpEcho posted
        // on the UDP socket (associated with this port under that key), dequeued once, here.
        let d = unsafe { reclaim_datagram(overlapped, &self.ctx.stats) };
        let result = d.result();
        let mut udp = self.shared(udp);
        udp.via = Some(("worker", worker));
        udp.complete(d, result, Notify::Port);
    }

    /// Shutdown began: no more receives; the pending ones are cancelled and reaped.
    fn stop_udp(&self) {
        if let Some(udp) = &self.udp {
            self.shared(udp).stop();
        }
    }

    // ---- connections ----------------------------------------------------------------------

    /// A connection's receive or send completed: only the connection's own lock is taken
    /// (and, once it is closed and idle, the shared ones of `forget`).
    fn io_done(&self, conn: &Shared, op: Box<OvOp>, result: io::Result<usize>, worker: usize) {
        let key = op.tag;
        let idle = {
            let mut c = lock(conn);
            c.via = Some(("worker", worker));
            c.complete(op, result);
            c.advance(key, Notify::Port);
            c.is_idle()
        };
        if idle {
            self.forget(key, conn);
        }
    }

    /// Posts what the connection wants; forgets it once it is closed and idle.
    fn advance(&self, key: usize, conn: &Shared) {
        let idle = {
            let mut c = lock(conn);
            c.advance(key, Notify::Port);
            c.is_idle()
        };
        if idle {
            self.forget(key, conn);
        }
    }

    /// A closed connection with nothing in flight leaves the table; its place below the cap
    /// may take an accept again.
    fn forget(&self, key: usize, conn: &Shared) {
        {
            let mut conns = self.shared(&self.conns);
            if conns.get(key).is_some_and(|c| Arc::ptr_eq(c, conn)) {
                conns.remove(key);
            }
        }
        self.post_accepts();
    }

    /// Closes every connection `pred` picks (`closesocket`: their pending operations complete,
    /// aborted, and the workers reap them): expired ones, or all of them at the end.
    fn close_where(&self, mut pred: impl FnMut(&mut OvConn) -> bool) {
        let all: Vec<(usize, Shared)> = self
            .shared(&self.conns)
            .iter()
            .map(|(k, c)| (k, Arc::clone(c)))
            .collect();
        for (key, conn) in all {
            let idle = {
                let mut c = lock(&conn);
                if !pred(&mut c) {
                    continue;
                }
                c.close();
                c.is_idle()
            };
            if idle {
                self.forget(key, &conn);
            }
        }
    }
}

impl Server<'_> {
    /// Takes a lock every thread of the server shares, counted in `Stats::shared_locks`.
    fn shared<'m, T>(&self, m: &'m Mutex<T>) -> MutexGuard<'m, T> {
        self.ctx.stats.shared_locks.fetch_add(1, Relaxed);
        lock(m)
    }
}

/// A connection's completion key: the address of its shared allocation.
fn conn_key(conn: &Shared) -> usize {
    Arc::as_ptr(conn) as usize
}

/// The connection a packet's completion key names, as one more strong reference.
///
/// # Safety
/// `key` must be [`conn_key`] of a connection that is still alive: one that, with a record
/// in flight, the connection table still holds.
unsafe fn conn_of_key(key: usize) -> Shared {
    let ptr = key as *const Mutex<OvConn>;
    // SAFETY: `ptr` is `Arc::as_ptr` of a live `Arc` (the caller's contract: the table's
    // strong reference keeps it alive while this adds one of its own).
    unsafe {
        Arc::increment_strong_count(ptr);
        Arc::from_raw(ptr)
    }
}

/// The accept pool after a worker's turn that reaped accepts: `wanted` doubled (up to
/// [`ACCEPT_POOL_MAX`]) when none is left `posted` — every accept was taken — unless the
/// connection cap (`room`, places left below it) rather than the pool was the limit; else
/// `wanted` as it was.
fn pool_after_turn(wanted: usize, posted: usize, room: usize) -> usize {
    if posted == 0 && wanted < ACCEPT_POOL_MAX && room > wanted {
        (2 * wanted).min(ACCEPT_POOL_MAX)
    } else {
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::{pool_after_turn, ACCEPT_POOL_MAX};

    #[test]
    fn the_accept_pool_doubles_only_when_a_turn_took_every_accept_and_the_cap_allows() {
        // Every accept taken: doubles.
        assert_eq!(pool_after_turn(8, 0, 10_000), 16);
        // Some left posted: the pool kept up.
        assert_eq!(pool_after_turn(8, 1, 10_000), 8);
        // Up to the bound, never past it.
        assert_eq!(pool_after_turn(192, 0, 10_000), ACCEPT_POOL_MAX);
        assert_eq!(pool_after_turn(ACCEPT_POOL_MAX, 0, 10_000), ACCEPT_POOL_MAX);
        // The connection cap was the limit (no more room than the pool): no growth.
        assert_eq!(pool_after_turn(8, 0, 8), 8);
        assert_eq!(pool_after_turn(8, 0, 3), 8);
    }
}
