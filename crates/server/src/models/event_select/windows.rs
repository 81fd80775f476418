//! `WSAEventSelect` + `WSAWaitForMultipleEvents` + `WSAEnumNetworkEvents`, in groups of 62
//! sockets per thread (`models/groups/`); the UDP socket (`--udp`) on the accepting
//! thread, its event beside the listener's.

use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::models::groups::{self, Beside, Flow, Member};
use crate::session::{Session, Status, READ_CHUNK};
use crate::stats::Stats;
use crate::sys::network_events::{
    clear_event_select, event_select, network_events, FD_CLOSE, FD_READ, FD_WRITE,
};
use crate::sys::Event;
use crate::trace::{trace_event, Trace};
use crate::udp::{self, Drained, ReadinessUdpEcho};
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use windows_sys::Win32::Foundation::HANDLE;

pub(crate) const MECHANISM: &str = "WSAEventSelect, groups of 62 sockets";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    let mut udp = ctx.udp.as_ref().map(|u| UdpSide::new(u, ctx)).transpose()?;
    let beside = udp.as_mut().map(|u| u as &mut dyn Beside);
    groups::serve_with(listener, beside, ctx, "event-select", |stream| {
        EventConn::new(stream, ctx)
    })
}

/// The UDP socket, selected for `FD_READ` on an event of its own and served on the accepting
/// thread ([`Beside`]): its event is one more handle in that thread's wait.
struct UdpSide<'c> {
    socket: &'c UdpSocket,
    event: Event,
    echo: ReadinessUdpEcho,
    ctx: &'c Ctx,
}

impl<'c> UdpSide<'c> {
    /// `WSAEventSelect(udp, event, FD_READ)`: no `FD_WRITE`, since answers never wait for room
    /// (a full send buffer drops one). Datagrams already waiting are recorded at once.
    fn new(socket: &'c UdpSocket, ctx: &'c Ctx) -> io::Result<UdpSide<'c>> {
        let event = Event::new()?;
        event_select(socket, &event, FD_READ)?;
        Ok(UdpSide {
            socket,
            event,
            echo: ReadinessUdpEcho::new(ctx),
            ctx,
        })
    }
}

impl Beside for UdpSide<'_> {
    fn handle(&self) -> HANDLE {
        self.event.handle()
    }

    fn socket(&self) -> RawSocket {
        self.socket.as_raw_socket()
    }

    /// Reads and clears the socket's record (resetting the event), then answers up to
    /// [`udp::BUDGET`] datagrams. Each recvfrom re-enables `FD_READ`, posted again while
    /// datagrams remain; a turn that ran out of budget also asks to go again, so the rest is
    /// answered after the accepting thread's other work whatever Winsock records.
    fn serve(&mut self) -> io::Result<Flow> {
        let ne = network_events(self.socket, &self.event)?;
        self.ctx.stats.syscalls.fetch_add(1, Relaxed);
        if ne.has(FD_READ) {
            trace_event!(self.ctx.trace, "FD_READ udp s={}", self.socket());
            if let Some(e) = ne.error(FD_READ) {
                // The recvfrom that follows reports whatever it is (one datagram at most).
                log::debug!("event-select: FD_READ on the UDP socket carried {e}");
            }
        }
        Ok(match self.echo.serve(self.socket, self.ctx, udp::BUDGET) {
            Drained::More => Flow::Again,
            Drained::Empty => Flow::Wait,
        })
    }
}

impl Drop for UdpSide<'_> {
    /// The socket outlives this (`ctx` owns it) but the event does not: end the selection
    /// first, so Winsock never signals a closed event.
    fn drop(&mut self) {
        if let Err(e) = clear_event_select(self.socket) {
            log::debug!("event-select: cannot end the UDP socket's selection: {e}");
        }
    }
}

/// One socket with its event object.
struct EventConn {
    /// Declared before `event`: the socket closes first, which ends the selection, so the
    /// event is never closed while Winsock may still signal it.
    session: Session,
    event: Event,
    stats: Arc<Stats>,
    trace: Trace,
    /// The group serving it, named in `--trace` lines.
    group: usize,
}

impl EventConn {
    /// On the accepting thread: the accepted socket inherited the listener's selection
    /// (`FD_ACCEPT` on the listener's event); select it again on an event of its own. Events
    /// that already hold (data that arrived meanwhile, room to send) are recorded at once.
    fn new(stream: TcpStream, ctx: &Ctx) -> io::Result<EventConn> {
        let event = Event::new()?;
        event_select(&stream, &event, FD_READ | FD_WRITE | FD_CLOSE)?;
        let mut session = Session::new(stream, ctx);
        // The first turn tries a recv: whatever happened before the selection is not missed.
        session.readable = true;
        Ok(EventConn {
            session,
            event,
            stats: Arc::clone(&ctx.stats),
            trace: ctx.trace.clone(),
            group: 0,
        })
    }

    /// One read at most: FD_READ is posted again after a recv that leaves data behind, so the
    /// next wait brings this socket back, after the group's other signalled sockets.
    fn pump(&mut self, scratch: &mut [u8]) -> Flow {
        match self.session.pump(scratch, 1) {
            Status::Closed => Flow::Done,
            // After FD_CLOSE no FD_READ announces the data still queued: read on unasked.
            Status::MoreToRead if self.session.peer_closing => Flow::Again,
            Status::MoreToRead | Status::Open => Flow::Wait,
        }
    }

    fn fail(&self, e: &io::Error) -> Flow {
        log::debug!("connection closed on error: {e}");
        self.stats.errors.fetch_add(1, Relaxed);
        Flow::Done
    }
}

impl Member for EventConn {
    type Local = Vec<u8>;
    const HANDLES: usize = 1;

    fn local() -> Vec<u8> {
        vec![0; READ_CHUNK]
    }

    fn handle(&self, _k: usize) -> HANDLE {
        self.event.handle()
    }

    fn signalled(&mut self, _k: usize, scratch: &mut Vec<u8>) -> Flow {
        // Reads and clears the socket's record of events and resets the event.
        let ne = match network_events(&self.session.stream, &self.event) {
            Ok(ne) => ne,
            Err(e) => return self.fail(&e),
        };
        self.stats.syscalls.fetch_add(1, Relaxed);
        trace_event!(
            self.trace,
            "{} s={} (group {})",
            event_names(|bit| ne.has(bit)),
            self.session.stream.as_raw_socket(),
            self.group
        );
        // A reset (FD_CLOSE with WSAECONNRESET / WSAECONNABORTED): the connection is gone,
        // whatever it still owed; do not wait for an FD_WRITE that will never come.
        for bit in [FD_CLOSE, FD_READ, FD_WRITE] {
            if let Some(e) = ne.error(bit) {
                return self.fail(&e);
            }
        }
        let s = &mut self.session;
        if ne.has(FD_READ) {
            s.readable = true;
        }
        if ne.has(FD_WRITE) {
            s.writable = true;
        }
        if ne.has(FD_CLOSE) {
            // Data may still wait ahead of the end of stream, and no FD_READ will announce it.
            // Wine also reports a reset this way (error code 0, queued data still readable):
            // try a send too, so a connection held by backpressure learns of a reset from the
            // send's error instead of waiting for an FD_WRITE.
            s.readable = true;
            s.writable = true;
            s.peer_closing = true;
        }
        self.pump(scratch)
    }

    fn again(&mut self, scratch: &mut Vec<u8>) -> Flow {
        self.pump(scratch)
    }

    fn expired(&mut self, sweep: &Sweep, now: Instant) -> bool {
        self.session.expired(sweep, now).is_some()
    }

    fn close(&mut self, _scratch: &mut Vec<u8>) -> Flow {
        Flow::Done // nothing posted: dropping closes the socket
    }

    fn joined(&mut self, group: usize) {
        self.group = group;
    }
}

/// `FD_READ|FD_WRITE|FD_CLOSE`: the network events a trace line names.
fn event_names(has: impl Fn(u32) -> bool) -> String {
    let named: Vec<&str> = [
        (FD_READ, "FD_READ"),
        (FD_WRITE, "FD_WRITE"),
        (FD_CLOSE, "FD_CLOSE"),
    ]
    .into_iter()
    .filter(|&(bit, _)| has(bit))
    .map(|(_, name)| name)
    .collect();
    if named.is_empty() {
        "(no network event)".to_string()
    } else {
        named.join("|")
    }
}
