//! `WSARecv` / `WSASend` with `WSAOVERLAPPED.hEvent` — an event per operation, a
//! connection's receive and its send each with its own —, `WSAWaitForMultipleEvents`,
//! `WSAGetOverlappedResult`; 31 connections per thread (`models/groups/`), their
//! operation records and connection logic from `models/winio`; connections accepted with
//! `AcceptEx` posted ahead, an event each (`groups::serve_accept_ex`). UDP (`--udp`):
//! a thread of its own waits on the shutdown waker and one event that every datagram record
//! carries.

use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::models::groups::{self, Flow, Member, CLOSE_WAIT};
use crate::models::winio::{Notify, OpKind, OvConn, OvUdpEcho};
use crate::stats::Stats;
use crate::sys::{wait_any, Event};
use crate::threads::join_worker;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;

pub(crate) const MECHANISM: &str =
    "overlapped I/O + an event per operation, AcceptEx, groups of 31";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    crate::sys::wsa_startup();
    crate::models::winio::warn_if_uring_flags_set(ctx);
    let tcp = |listener| {
        groups::serve_accept_ex(listener, ctx, "overlapped-event", |stream| {
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
            let udp = join_worker(udp.join(), "the UDP thread panicked");
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
    let mut udp = OvUdpEcho::new(socket, ctx).with_turn_budget(crate::udp::BUDGET);
    udp.new_turn(notify);
    // Posting resets the event, which can wipe a completion's signal: reap until a pass
    // finds nothing complete (and so posts nothing), as `EventedConn::reap` does.
    let reap = |udp: &mut OvUdpEcho| {
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
    } // else: the records name the event; both are leaked (OvUdpEcho's drop says so)
    served
}

/// A connection and its two events: one for its receive, one for its send, each in the
/// `hEvent` of its own operation's record (the book's event per operation).
///
/// Why two: posting an overlapped operation resets the event in its `hEvent` (Wine's server
/// resets it when it queues the request, `create_async` in `server/async.c`; Windows documents
/// it for `ReadFile` / `WriteFile`). With one event shared by both records, posting the next
/// receive could wipe the signal of the send's completion that landed just before, so every
/// post had to be followed by another look at both records. With an event per operation, a
/// post resets only its own event, and only when that operation is not in flight (a
/// connection has at most one receive and one send posted): there is no other signal on it to
/// lose. So a signalled event is reset, its one operation reaped, the next operations posted,
/// and the group waits again.
struct EventedConn {
    conn: OvConn,
    /// `events[0]` in the receive's `hEvent`, `events[1]` in the send's. Named in records the
    /// kernel holds, so they must outlive them: dropped only when nothing is in flight (see
    /// `Drop`).
    events: ManuallyDrop<[Event; 2]>,
    stats: Arc<Stats>,
}

/// The kind of operation whose event is at slot `k` of a member.
const KINDS: [OpKind; 2] = [OpKind::Recv, OpKind::Send];

impl EventedConn {
    /// On the accepting thread, from an `AcceptEx` socket: no `WSAEventSelect` was ever set on
    /// it (a socket `accept` returns would inherit the listener's). Nothing is posted yet.
    fn new(stream: TcpStream, ctx: &Ctx) -> io::Result<EventedConn> {
        let events = [Event::new()?, Event::new()?];
        Ok(EventedConn {
            conn: OvConn::new(stream, ctx),
            events: ManuallyDrop::new(events),
            stats: Arc::clone(&ctx.stats),
        })
    }

    /// Reaps the connection's `kind` operation if it has completed: `WSAGetOverlappedResult`
    /// (`fWait = FALSE`) while the socket is open, else the status the kernel stored in the
    /// record. With `peek`, only if the record's status word says complete (no system call).
    fn reap(&mut self, kind: OpKind, peek: bool) {
        let Some(op) = self.conn.in_flight_op(kind) else {
            return;
        };
        // SAFETY: `op` is this connection's record of `kind`, still in flight (just named by
        // `in_flight_op`, not reclaimed); only its status word is read.
        if (peek || !self.conn.is_open()) && !unsafe { op.is_complete() } {
            return;
        }
        let outcome = if self.conn.is_open() {
            // SAFETY: as above, and it was posted on this socket, still open.
            match unsafe { op.overlapped_result(self.conn.socket()) } {
                Some(result) => Some(result),
                None => return, // still pending
            }
        } else {
            None // complete (checked above): the stored status
        };
        // SAFETY: the operation is complete (its outcome is stored), and this is its only
        // reclaim: `complete` takes it off the connection's in-flight list.
        let record = unsafe { op.reclaim(&self.stats) };
        let result = outcome.unwrap_or_else(|| record.result());
        self.conn.complete(record, result);
    }

    /// Posts what the connection wants next, each operation with its own event.
    fn advance(&mut self) -> Flow {
        let recv = Notify::Event(self.events[0].handle());
        let send = Notify::Event(self.events[1].handle());
        self.conn.advance_each(0, recv, send);
        if self.conn.is_idle() {
            Flow::Done
        } else {
            Flow::Wait
        }
    }
}

impl Member for EventedConn {
    type Local = ();
    const HANDLES: usize = 2;

    fn local() {}

    fn handle(&self, k: usize) -> HANDLE {
        self.events[k].handle()
    }

    fn signalled(&mut self, k: usize, _: &mut ()) -> Flow {
        // Reset before looking: its operation's completion after this sets it again.
        self.events[k].reset();
        self.reap(KINDS[k], false);
        // Belt and braces: the other operation's status word (no system call). If anything
        // but its own post had cleared its signal, its completion is still reaped here; if
        // its event is still set, the next wait finds nothing more to do for it.
        self.reap(KINDS[1 - k], true);
        self.advance()
    }

    fn again(&mut self, _: &mut ()) -> Flow {
        self.advance() // the first turn posts the first receive
    }

    fn expired(&mut self, sweep: &Sweep, now: Instant) -> bool {
        self.conn.expired(sweep, now)
    }

    fn close(&mut self, _: &mut ()) -> Flow {
        // CancelIoEx + closesocket: pending operations complete, aborted, and signal their
        // events; any that already have are reaped now.
        self.conn.close();
        for kind in KINDS {
            self.reap(kind, true);
        }
        self.advance()
    }

    fn joined(&mut self, group: usize) {
        self.conn.via = Some(("group", group));
    }
}

impl Drop for EventedConn {
    fn drop(&mut self) {
        if self.conn.is_idle() {
            // SAFETY: dropped once, here; no record in flight names either event any more.
            unsafe { ManuallyDrop::drop(&mut self.events) };
        } else {
            // A group that failed drops its members with operations in flight: close the
            // socket so they end, and leave the records (OvConn never frees them) and the
            // events they will signal to the leak, rather than free them under the kernel.
            self.conn.close();
        }
    }
}
