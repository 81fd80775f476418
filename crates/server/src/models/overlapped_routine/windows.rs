//! Winsock: `WSARecv` / `WSASend` with completion routines, run by the I/O thread's alertable
//! wait; an accepting thread hands each socket over with `QueueUserAPC`.
//!
//! Two threads. The thread that calls `run` is the I/O thread: it owns every connection
//! (in an `Io`, boxed so its address is fixed) and waits in `WSAWaitForMultipleEvents(...,
//! fAlertable = TRUE)` on the shutdown event. Inside that wait the system runs the completion
//! routines of the operations this thread posted, and the APCs queued to it. The accepting
//! thread waits in `select` on the listener and its shutdown socket, accepts, and queues an
//! APC to the I/O thread carrying the socket. So no state is shared between the threads but
//! the hand-off: a connection lives, and all its operations are posted and completed, on the
//! I/O thread.
//!
//! Every record is posted with `Notify::Routine { routine: on_complete, context }`, `context`
//! being the `Io`'s address (carried in `hEvent`, which the system leaves alone when a routine
//! is given). The routine borrows the `Io` through its `RefCell`: routines run only inside the
//! alertable wait, and the loop never holds that borrow across the wait, so the borrow cannot
//! collide; a collision would be a bug and aborts. The rules of the records are in
//! `models/winio`.
//!
//! Limits (`crate::limits`): the accepting thread's [`Acceptor`] keeps the connection cap,
//! counting the sockets on their way in an APC (`Stats::handoffs_in_flight`) as connections;
//! at the cap it leaves the listener out of its `select` and waits on a [`RoomSignal`] that
//! the I/O thread signals when it forgets a connection. The I/O thread sweeps its connections
//! for the idle and write timeouts (its alertable wait bounded by the next sweep) and closes
//! an expired one like any other: `closesocket`, then its aborted records are reaped by their
//! routines.
//!
//! An alertable wait returns only once the thread's APC queue is empty, and under steady load
//! every routine posts the next operation, whose routine is queued before the wait is over: the
//! wait could run routines forever, and the loop (shutdown, the drain deadline) would never see
//! a turn. So a wait runs at most [`ROUTINES_PER_WAIT`] routines' worth of new posts; the
//! connections completed past that are only noted (`Io::deferred`), the queue runs dry, the
//! wait returns, and the loop's next turn posts their next operations.

use crate::accept::{Acceptor, RoomSignal};
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::models::winio::{
    reclaim, reclaim_datagram, routine_context, Notify, OvConn, OvOp, OvUdpEcho,
};
use crate::models::Turn;
use crate::sys::apc::{current_thread, queue_apc, sleep_alertable};
use crate::sys::select::{select, SocketSet};
use crate::sys::{wait_any, Handle, Wait, Waker};
use crate::threads::join_worker;
use crate::trace::trace_event;
use slab::Slab;
use std::cell::RefCell;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::AsRawSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use windows_sys::Win32::System::IO::OVERLAPPED;

pub(crate) const MECHANISM: &str = "completion routines, alertable waits";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// Most connections accepted per turn of the accepting thread.
const ACCEPT_BATCH: usize = 64;
/// How long the final phase waits for the kernel to complete the closed sockets' operations.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The completion routines in one alertable wait that may post a connection's next operation;
/// past them, the connection waits for the loop's next turn (see the module doc).
const ROUTINES_PER_WAIT: usize = 256;

thread_local! {
    /// Sockets the accepting thread handed to this (the I/O) thread, not adopted yet: the
    /// hand-off APC puts them here, the loop takes them after its wait.
    // Already `const`: clippy 1.96 flags it on x86_64-pc-windows-gnu, whose std keeps thread
    // locals behind OS TLS keys and wraps even a `const { }` initializer in an init function
    // (clippy::missing_const_for_thread_local, a false positive there).
    #[allow(clippy::missing_const_for_thread_local)]
    static HANDED: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    crate::sys::wsa_startup();
    crate::models::winio::warn_if_uring_flags_set(ctx);
    let io_thread = current_thread()?;
    let io_waker = ctx.shutdown.register()?;
    let accept_waker = ctx.shutdown.register()?;
    // Shared with the I/O state, which outlives `run` if it has to be leaked.
    let room = Arc::new(RoomSignal::new()?);
    let io = Io::boxed(ctx, Arc::clone(&room));
    std::thread::scope(|scope| {
        let acceptor = match listener {
            Some(listener) => Some(
                std::thread::Builder::new()
                    .name("routine-acceptor".into())
                    .spawn_scoped(scope, || {
                        let r = accept_loop(listener, ctx, &io_thread, &accept_waker, &room);
                        if let Err(e) = &r {
                            log::error!("overlapped-routine accepting thread: {e}");
                            ctx.shutdown.trigger();
                        }
                        r
                    })?,
            ),
            None => None, // UDP alone (`--no-tcp`)
        };
        let served = serve(&io, &io_waker);
        if served.is_err() {
            ctx.shutdown.trigger(); // stops the accepting thread
        }
        let accepted = acceptor.map_or(Ok(()), |a| {
            join_worker(a.join(), "the accepting thread panicked")
        });
        close_and_reap(io);
        served.and(accepted)
    })
}

/// After the accepting thread is gone: runs the hand-offs it queued last (their sockets are
/// closed: we are draining), closes everything and reaps every completion, up to
/// [`CANCEL_WAIT`]; past it, leaks the I/O state (a routine may still run later).
fn close_and_reap(io: Box<RefCell<Io<'_>>>) {
    io.borrow_mut().draining = true;
    sleep_alertable(Some(Duration::ZERO));
    io.borrow_mut().adopt_handed();
    io.borrow_mut().stop_udp();
    io.borrow_mut().close_all();
    // Closed: what completes now posts nothing; every completion is reaped in turn.
    io.borrow_mut().routines_left = usize::MAX;
    let deadline = Instant::now() + CANCEL_WAIT;
    while io.borrow().ops_in_flight() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let n = io.borrow().ops_in_flight();
            log::error!("{n} overlapped operations never completed: leaking their records");
            // A routine may still run in some later alertable wait of this thread: the
            // state it points at must outlive that.
            Box::leak(io);
            return;
        }
        sleep_alertable(Some(left));
    }
}

/// The I/O thread's loop: alertable waits until shutdown and the drain are over.
fn serve(io: &RefCell<Io>, waker: &Waker) -> io::Result<()> {
    let ctx = io.borrow().ctx;
    let mut turn = Turn::new(ctx);
    loop {
        {
            let mut io = io.borrow_mut();
            if turn.drain_begins(&ctx.shutdown) {
                io.draining = true;
                io.stop_udp(); // a datagram has nothing to drain
            }
            io.advance_deferred();
            io.adopt_handed();
            if turn.drain_is_over(io.conns.len()) {
                return Ok(());
            }
            if let Some(now) = turn.sweep_due() {
                io.expire(turn.sweep(), now);
            }
            io.udp_turn();
        } // the borrow ends here: the routines that run in the wait take it
          // The UDP budget ran out last turn: receives are held back, so do not block.
        let udp_waits = io.borrow().udp.as_ref().is_some_and(OvUdpEcho::wants_turn);
        let timeout = turn.wait_limit(udp_waits.then_some(Duration::ZERO));
        match wait_any(&[waker.event_handle()], timeout, true)? {
            Wait::Signalled(_) => waker.reset(),
            Wait::IoCompletion | Wait::TimedOut => {}
        }
        ctx.stats.count_wait();
    }
}

/// Everything the I/O thread owns.
struct Io<'a> {
    ctx: &'a Ctx,
    /// Told when a connection is forgotten: the accepting thread may wait at the cap.
    room: Arc<RoomSignal>,
    conns: Slab<OvConn>,
    draining: bool,
    /// Routines the current wait may still let post a next operation.
    routines_left: usize,
    /// Connections whose completion came past [`ROUTINES_PER_WAIT`] in a wait: advanced on the
    /// loop's next turn.
    deferred: Vec<usize>,
    /// `on_complete`, with this value's address as context.
    notify: Notify,
    /// The UDP echo (`--udp`), its records posted from this thread.
    udp: Option<OvUdpEcho>,
    /// `on_datagram`, with this value's address as context.
    udp_notify: Notify,
}

impl<'a> Io<'a> {
    /// The I/O thread's state, boxed (the routines get its address as their context), its
    /// routines wired and the UDP echo's first receives posted.
    fn boxed(ctx: &'a Ctx, room: Arc<RoomSignal>) -> Box<RefCell<Io<'a>>> {
        let io = Box::new(RefCell::new(Io {
            ctx,
            room,
            conns: Slab::new(),
            draining: false,
            routines_left: ROUTINES_PER_WAIT,
            deferred: Vec::new(),
            notify: Notify::Port, // replaced below, once the box has its address
            udp: ctx
                .udp
                .as_ref()
                .map(|socket| OvUdpEcho::new(socket, ctx).with_turn_budget(crate::udp::BUDGET)),
            udp_notify: Notify::Port, // likewise
        }));
        {
            let context = (&*io as *const RefCell<Io>).cast();
            let mut io = io.borrow_mut();
            io.notify = Notify::Routine {
                routine: on_complete,
                context,
            };
            io.udp_notify = Notify::Routine {
                routine: on_datagram,
                context,
            };
            io.udp_turn();
        }
        io
    }

    fn adopt_handed(&mut self) {
        let handed = HANDED.with(|h| std::mem::take(&mut *h.borrow_mut()));
        let handoffs = &self.ctx.stats.handoffs_in_flight;
        for stream in handed {
            if self.draining {
                drop(stream); // closed
                handoffs.fetch_sub(1, Relaxed);
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
            }
            // Counted active now: no longer on its way.
            let key = self.conns.insert(OvConn::new(stream, self.ctx));
            handoffs.fetch_sub(1, Relaxed);
            self.advance(key);
        }
    }

    /// A completion routine's work: feed the record to its connection, post what is next.
    fn complete(&mut self, op: Box<OvOp>, result: io::Result<usize>) {
        let key = op.tag;
        let Some(conn) = self.conns.get_mut(key) else {
            log::error!("completion for a connection that is gone");
            return;
        };
        conn.complete(op, result);
        if self.routines_left == 0 {
            self.deferred.push(key);
            return;
        }
        self.routines_left -= 1;
        self.advance(key);
    }

    /// A new turn of the loop: the connections the last wait deferred post their next
    /// operations (a connection that closed meanwhile is gone), and the budget is whole again.
    fn advance_deferred(&mut self) {
        self.routines_left = ROUTINES_PER_WAIT;
        for key in std::mem::take(&mut self.deferred) {
            if self.conns.contains(key) {
                self.advance(key);
            }
        }
    }

    fn advance(&mut self, key: usize) {
        self.conns[key].advance(key, self.notify);
        self.forget_if_idle(key);
    }

    /// A connection closed with nothing in flight leaves the table.
    fn forget_if_idle(&mut self, key: usize) {
        if self.conns[key].is_idle() {
            self.conns.remove(key);
            self.room.freed();
        }
    }

    /// Closes the connections whose idle or write timeout expired at `now`.
    fn expire(&mut self, timeouts: &Sweep, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(k, c)| c.expired(timeouts, now).then_some(k))
            .collect();
        for key in expired {
            self.conns[key].close();
            self.forget_if_idle(key);
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns[key].close();
            self.forget_if_idle(key);
        }
    }

    fn ops_in_flight(&self) -> usize {
        let udp = self.udp.as_ref().map_or(0, OvUdpEcho::in_flight);
        self.conns
            .iter()
            .map(|(_, c)| c.ops_in_flight())
            .sum::<usize>()
            + udp
    }

    /// A new turn of the loop: the UDP budget is whole again (the held-back receives go out).
    fn udp_turn(&mut self) {
        let notify = self.udp_notify;
        if let Some(udp) = &mut self.udp {
            udp.new_turn(notify);
        }
    }

    fn stop_udp(&mut self) {
        if let Some(udp) = &mut self.udp {
            udp.stop();
        }
    }
}

/// The completion routine of every receive and send: runs on the I/O thread, inside its
/// alertable wait, once per posted record.
unsafe extern "system" fn on_complete(error: u32, bytes: u32, ov: *mut OVERLAPPED, _flags: u32) {
    // SAFETY: `ov` is the OVERLAPPED of a live record posted with this routine, whose
    // context is the address of the boxed `RefCell<Io>`; that box lives until every record is
    // reaped (or is leaked with them).
    let io = unsafe { &*routine_context(ov).cast::<RefCell<Io>>() };
    let mut io = io
        .try_borrow_mut()
        .expect("a completion routine ran while the I/O thread held its state");
    // SAFETY: the system calls the routine once per operation, after it completed.
    let op = unsafe { reclaim(ov, &io.ctx.stats) };
    let result = match error {
        0 => Ok(bytes as usize),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    };
    io.complete(op, result);
}

/// The completion routine of every datagram record: runs on the I/O thread, inside its
/// alertable wait, once per posted record.
unsafe extern "system" fn on_datagram(error: u32, bytes: u32, ov: *mut OVERLAPPED, _flags: u32) {
    // SAFETY: as in `on_complete`: `ov` is a live datagram record posted with this routine and
    // the boxed `RefCell<Io>`'s address as context.
    let io = unsafe { &*routine_context(ov).cast::<RefCell<Io>>() };
    let mut io = io
        .try_borrow_mut()
        .expect("a completion routine ran while the I/O thread held its state");
    // SAFETY: the system calls the routine once per operation, after it completed.
    let d = unsafe { reclaim_datagram(ov, &io.ctx.stats) };
    // The routine's error is a Winsock one (a datagram cut short: WSAEMSGSIZE).
    let result = match error {
        0 => Ok(bytes as usize),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    };
    let notify = io.udp_notify;
    if let Some(udp) = &mut io.udp {
        udp.complete(d, result, notify);
    }
}

/// The hand-off APC: runs on the I/O thread, inside its alertable wait.
unsafe extern "system" fn adopt_apc(data: usize) {
    // SAFETY: `data` is the box `hand_over` leaked for exactly this call.
    let stream = unsafe { Box::from_raw(data as *mut TcpStream) };
    HANDED.with(|h| h.borrow_mut().push(*stream));
}

/// The accepting thread: `select` on the listener and the shutdown socket, accept, hand over.
fn accept_loop(
    listener: TcpListener,
    ctx: &Ctx,
    io_thread: &Handle,
    waker: &Waker,
    room: &RoomSignal,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen = listener.as_raw_socket();
    let mut acceptor = Acceptor::new(listener, ctx);
    let mut none = SocketSet::with_capacity(0);
    while !ctx.shutdown.is_requested() {
        let mut read = SocketSet::with_capacity(2);
        read.insert(waker.as_raw_socket());
        // At the cap (or paused) the listener stays out; a connection forgotten by the I/O
        // thread makes the room signal's socket readable.
        let accepting = acceptor.is_accepting_armed(room);
        read.insert(match accepting {
            true => listen,
            false => room.waker().as_raw_socket(),
        });
        select(&mut read, &mut none, acceptor.pause_remaining())?;
        ctx.stats.count_wait();
        if read.contains(waker.as_raw_socket()) {
            waker.reset();
        }
        if read.contains(room.waker().as_raw_socket()) {
            room.waker().reset();
        }
        if accepting && read.contains(listen) && !ctx.shutdown.is_requested() {
            acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
                trace_event!(ctx.trace, "accept s={}", stream.as_raw_socket());
                hand_over(stream, io_thread, ctx)
            })?;
        }
    }
    Ok(()) // the listener closes here
}

/// Queues the socket to the I/O thread.
fn hand_over(stream: TcpStream, io_thread: &Handle, ctx: &Ctx) {
    // The listener is non-blocking and its sockets inherit that: as `OvConn` wants them (its
    // `recv`s after a zero-byte receive must not block; overlapped calls ignore the mode).
    ctx.stats.syscalls.fetch_add(1, Relaxed);
    // A connection for the cap from now on, though no session counts it yet.
    ctx.stats.handoffs_in_flight.fetch_add(1, Relaxed);
    let data = Box::into_raw(Box::new(stream)) as usize;
    // SAFETY: `adopt_apc` takes back exactly this box, once, on the I/O thread; that thread
    // runs its queued APCs (a last alertable wait) after this thread has been joined.
    if let Err(e) = unsafe { queue_apc(io_thread, adopt_apc, data) } {
        // SAFETY: the APC was not queued: the box is still ours alone.
        drop(unsafe { Box::from_raw(data as *mut TcpStream) });
        ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
        log::error!("cannot hand a connection to the I/O thread: {e}");
    }
}
