//! `WSARecv` / `WSASend` with `WSAOVERLAPPED.hEvent`, `WSAWaitForMultipleEvents`,
//! `WSAGetOverlappedResult`; 62 connections per thread (`models/groups_windows.rs`), their
//! operation records and connection logic from `models/winio`.

use crate::models::groups_windows::{self, Flow, Member};
use crate::models::winio::{InFlight, Notify, OvConn};
use crate::stats::Stats;
use crate::sys::network_events::clear_event_select;
use crate::sys::Event;
use crate::Ctx;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use windows_sys::Win32::Foundation::HANDLE;

pub(crate) const MECHANISM: &str = "overlapped I/O + events, groups of 62";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    let listener = crate::models::tcp_only(listener)?;
    groups_windows::serve(listener, ctx, "overlapped-event", |stream| {
        EventedConn::new(stream, ctx)
    })
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
