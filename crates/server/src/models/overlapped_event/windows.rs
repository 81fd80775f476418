//! `WSARecv` / `WSASend` with `WSAOVERLAPPED.hEvent`, `WSAWaitForMultipleEvents`,
//! `WSAGetOverlappedResult`; 62 connections per thread (`models/groups_windows.rs`), their
//! operation records and connection logic from `models/winio`. UDP (`--udp`): a thread of its
//! own waits on the shutdown waker and one event that every datagram record carries.

use crate::limits::Sweep;
use crate::models::groups_windows::{self, Flow, Member, CLOSE_WAIT};
use crate::models::winio::{InFlight, Notify, OvConn, UdpEcho};
use crate::stats::Stats;
use crate::sys::network_events::clear_event_select;
use crate::sys::{wait_any, Event};
use crate::Ctx;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;

pub(crate) const MECHANISM: &str = "overlapped I/O + events, groups of 62";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    crate::sys::wsa_startup();
    crate::models::winio::warn_if_uring_flags_set(ctx);
    let tcp = |listener| {
        groups_windows::serve(listener, ctx, "overlapped-event", |stream| {
            EventedConn::new(stream, ctx)
        })
    };
    match (listener, &ctx.udp) {
        (Some(listener), None) => tcp(listener),
        (None, Some(udp)) => serve_udp(udp, ctx),
        (Some(listener), Some(udp)) => std::thread::scope(|scope| {
            let udp = std::thread::Builder::new()
                .name("overlapped-event-udp".into())
                .spawn_scoped(scope, || {
                    let r = serve_udp(udp, ctx);
                    if let Err(e) = &r {
                        log::error!("overlapped-event UDP thread: {e}");
                        ctx.shutdown.trigger();
                    }
                    r
                })?;
            let served = tcp(listener);
            let udp = udp
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the UDP thread panicked")));
            served.and(udp)
        }),
        (None, None) => Ok(()), // Server::bind refuses this
    }
}

/// The UDP thread: keeps the datagram records posted, all with one event in their `hEvent`,
/// and reaps them when it fires, until shutdown; then cancels them and reaps until none is
/// left (up to [`CLOSE_WAIT`]; past it, the records and the event are leaked, not freed).
/// The thread that posts must be the one that reaps: Windows cancels the pending I/O of a
/// thread that exits (on a socket not bound to a completion port).
fn serve_udp(socket: &UdpSocket, ctx: &Ctx) -> io::Result<()> {
    let waker = ctx.shutdown.register()?;
    let event = ManuallyDrop::new(Event::new()?);
    let notify = Notify::Event(event.handle());
    let mut udp = UdpEcho::new(socket, ctx).with_turn_budget(crate::udp::BUDGET);
    udp.new_turn(notify);
    // Posting resets the event, which can wipe a completion's signal: reap until a pass
    // finds nothing complete (and so posts nothing), as `EventedConn::reap` does.
    let reap = |udp: &mut UdpEcho| {
        event.reset();
        while udp.reap_completed(notify) {}
    };
    reap(&mut udp);
    let served = loop {
        if ctx.shutdown.is_requested() {
            break Ok(());
        }
        // The budget ran out last turn: receives are held back, so do not block.
        let timeout = udp.wants_turn().then_some(Duration::ZERO);
        if let Err(e) = wait_any(&[waker.event_handle(), event.handle()], timeout, false) {
            break Err(e);
        }
        ctx.stats.count_wait();
        udp.new_turn(notify);
        reap(&mut udp);
    };
    udp.stop(); // a datagram has nothing to drain
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        reap(&mut udp);
        let left = deadline.saturating_duration_since(Instant::now());
        if udp.in_flight() == 0 || left.is_zero() {
            break;
        }
        if let Err(e) = wait_any(&[event.handle()], Some(left), false) {
            log::error!("overlapped-event UDP thread: {e}");
            break;
        }
    }
    if udp.in_flight() == 0 {
        drop(ManuallyDrop::into_inner(event));
    } // else: the records name the event; both are leaked (UdpEcho's drop says so)
    served
}

/// Completion passes one connection makes per turn before it lets the group's other
/// connections go first (a fast peer's operations can complete as soon as they are posted).
const PASSES_PER_TURN: usize = 4;

/// A connection and the one event both of its operations signal.
struct EventedConn {
    conn: OvConn,
    /// Named in the `hEvent` of every record the connection posts, so it must outlive them:
    /// dropped only when nothing is in flight (see `Drop`).
    event: ManuallyDrop<Event>,
    stats: Arc<Stats>,
}

impl EventedConn {
    /// On the accepting thread: the socket inherited the listener's `WSAEventSelect`; end it
    /// (overlapped calls ignore the non-blocking mode it left behind). Nothing is posted yet.
    fn new(stream: TcpStream, ctx: &Ctx) -> io::Result<EventedConn> {
        clear_event_select(&stream)?;
        let event = Event::new()?;
        Ok(EventedConn {
            conn: OvConn::new(stream, ctx),
            event: ManuallyDrop::new(event),
            stats: Arc::clone(&ctx.stats),
        })
    }

    /// Reaps every completed operation, feeds it to the connection, and posts what the
    /// connection wants next; again, until a pass neither reaps nor posts anything.
    ///
    /// Why again: posting an overlapped operation resets its `hEvent` (Wine's server does it
    /// for every asynchronous request; Windows documents it for `ReadFile` / `WriteFile`).
    /// Both records share the event, so a post can wipe the signal of the other record's
    /// completion that landed after it was checked. Checking again after every post catches
    /// it; a completion after that check sets the event anew.
    fn reap(&mut self) -> Flow {
        let notify = Notify::Event(self.event.handle());
        for _ in 0..PASSES_PER_TURN {
            let mut reaped = false;
            for op in self.in_flight_set().into_iter().flatten() {
                // Complete yet? `WSAGetOverlappedResult(fWait = FALSE)` while the socket is
                // open; after `closesocket`, the status the kernel stored in the record.
                let outcome = if self.conn.is_open() {
                    // SAFETY: `op` is one of this connection's records, still in flight (just
                    // listed by `in_flight`, not reclaimed), posted on this open socket.
                    match unsafe { op.overlapped_result(self.conn.socket()) } {
                        Some(result) => Some(result),
                        None => continue,
                    }
                } else {
                    // SAFETY: as above; only the record's status word is read.
                    if !unsafe { op.is_complete() } {
                        continue;
                    }
                    None
                };
                // SAFETY: the operation is complete (its outcome is stored), and this is its
                // only reclaim: `complete` takes it off the connection's in-flight list.
                let record = unsafe { op.reclaim(&self.stats) };
                let result = outcome.unwrap_or_else(|| record.result());
                self.conn.complete(record, result);
                reaped = true;
            }
            let before = self.in_flight_set();
            self.conn.advance(0, notify);
            if self.conn.is_idle() {
                return Flow::Done;
            }
            if !reaped && self.in_flight_set() == before {
                return Flow::Wait;
            }
        }
        Flow::Again
    }

    /// The connection's records in flight, as a value to compare before and after a post.
    fn in_flight_set(&self) -> [Option<InFlight>; 2] {
        let mut set = [None; 2];
        for (slot, op) in set.iter_mut().zip(self.conn.in_flight()) {
            *slot = Some(op);
        }
        set
    }
}

impl Member for EventedConn {
    type Local = ();
    const HANDLES: usize = 1;

    fn local() {}

    fn handle(&self, _k: usize) -> HANDLE {
        self.event.handle()
    }

    fn signalled(&mut self, _k: usize, _: &mut ()) -> Flow {
        // Reset before looking: a completion after this sets it again.
        self.event.reset();
        self.reap()
    }

    fn again(&mut self, _: &mut ()) -> Flow {
        self.reap() // the first turn posts the first receive
    }

    fn expired(&mut self, sweep: &Sweep, now: Instant) -> bool {
        self.conn.expired(sweep, now)
    }

    fn close(&mut self, _: &mut ()) -> Flow {
        // closesocket: pending operations complete, aborted, and signal the event.
        self.conn.close();
        self.reap()
    }

    fn joined(&mut self, group: usize) {
        self.conn.via = Some(("group", group));
    }
}

impl Drop for EventedConn {
    fn drop(&mut self) {
        if self.conn.is_idle() {
            // SAFETY: dropped once, here; no record in flight names the event any more.
            unsafe { ManuallyDrop::drop(&mut self.event) };
        } else {
            // A group that failed drops its members with operations in flight: close the
            // socket so they end, and leave the records (OvConn never frees them) and the
            // event they will signal to the leak, rather than free them under the kernel.
            self.conn.close();
        }
    }
}
