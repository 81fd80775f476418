//! epoll, edge-triggered.
//!
//! Urgent data (`MSG_OOB`): accepted sockets have `SO_OOBINLINE` (from the listener), so the
//! urgent byte is echoed in place; but a recv stops short at the urgent mark, and a short read
//! is how this edge-triggered loop knows a socket is drained. So sockets also ask for
//! `EPOLLPRI`, and a socket that reported it reads until `EAGAIN` ([`Session::urgent`]):
//! `abc`, urgent `X`, `def` come back as `abcXdef` without the peer sending more (before, the
//! bytes after the mark sat unread until it did).
//!
//! Limits (`--max-conns`, `--idle-timeout`, `--write-timeout`, `--handshake-timeout`): at the
//! cap the listener leaves the epoll set (as during an `EMFILE` pause) and comes back when a
//! connection has closed;
//! the timeouts are a sweep over the sessions ([`crate::limits`]) when one is due, and
//! `epoll_wait`'s timeout is bounded by the next sweep.

use crate::accept::Acceptor;
use crate::ctx::Ctx;
use crate::models::Turn;
use crate::session::{Session, Status, READ_CHUNK};
use crate::sys::epoll::{
    Epoll, Events, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP,
};
use crate::sys::Waker;
use crate::trace::trace_event;
use crate::udp::{self, Drained, ReadinessUdpEcho};
use slab::Slab;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const MECHANISM: &str = "epoll";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;
const UDP: u64 = u64::MAX - 2;
/// Reads one session may do per turn before yielding to the others.
const READS_PER_TURN: usize = 16;
/// Connections accepted per listener event.
const ACCEPT_BATCH: usize = 256;

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    let mut model = EventLoop::new(listener, ctx)?;
    let mut events = Events::with_capacity(1024);
    let mut turn = Turn::new(ctx);
    loop {
        if turn.drain_begins(&ctx.shutdown) {
            model.stop_taking_in();
        }
        if turn.drain_is_over(model.sessions.len()) {
            return Ok(());
        }
        model.track_pause()?;
        let timeout = if model.ready.is_empty() && !model.udp_ready {
            let pause = model.acceptor.as_ref().and_then(|a| a.pause_remaining());
            turn.wait_limit(pause)
        } else {
            Some(Duration::ZERO)
        };
        model.epoll.wait(&mut events, timeout)?;
        ctx.stats.count_wait();
        for (token, bits) in events.iter() {
            model.dispatch(token, bits)?;
        }
        model.serve_left_over();
        if let Some(now) = turn.sweep_due() {
            // A key left in `ready` may name a slot reused later: pumping it is harmless.
            let sweep = turn.sweep();
            model
                .sessions
                .retain(|_, s| s.expired(sweep, now).is_none());
        }
        model.queue_next_turn();
    }
}

/// What the loop keeps between turns.
struct EventLoop<'a> {
    ctx: &'a Ctx,
    epoll: Epoll,
    waker: Arc<Waker>,
    /// `None` once shutdown begins (the listener is closed) or without TCP.
    acceptor: Option<Acceptor>,
    /// The listener is in the epoll set (it leaves it while accepting is paused).
    listener_registered: bool,
    /// The UDP socket and its echo buffer; `None` once shutdown begins.
    udp: Option<(&'a UdpSocket, ReadinessUdpEcho)>,
    /// The UDP socket may hold datagrams no edge will announce again (the budget ran out).
    udp_ready: bool,
    sessions: Slab<Session>,
    scratch: Vec<u8>,
    /// Sessions that used their read budget last turn: served again this turn.
    ready: Vec<usize>,
    /// Sessions that used their read budget this turn.
    still_ready: Vec<usize>,
}

impl<'a> EventLoop<'a> {
    /// Registers the waker, the listener (level-triggered) and the UDP socket
    /// (edge-triggered, like the connections).
    fn new(listener: Option<TcpListener>, ctx: &'a Ctx) -> io::Result<EventLoop<'a>> {
        let epoll = Epoll::new()?;
        let waker = ctx.shutdown.register()?;
        epoll.add(waker.as_raw_fd(), WAKER, EPOLLIN)?;
        if let Some(l) = &listener {
            l.set_nonblocking(true)?;
            epoll.add(l.as_raw_fd(), LISTENER, EPOLLIN)?;
        }
        let udp = match &ctx.udp {
            Some(u) => {
                epoll.add(u.as_raw_fd(), UDP, EPOLLIN | EPOLLET)?;
                Some((u, ReadinessUdpEcho::new(ctx)))
            }
            None => None,
        };
        Ok(EventLoop {
            ctx,
            epoll,
            waker,
            acceptor: listener.map(|l| Acceptor::new(l, ctx)),
            listener_registered: true,
            // Datagrams that came before the registration announced nothing: start ready.
            udp_ready: udp.is_some(),
            udp,
            sessions: Slab::new(),
            scratch: vec![0u8; READ_CHUNK],
            ready: Vec::new(),
            still_ready: Vec::new(),
        })
    }

    /// The drain began: closes the listener, stops reading the UDP socket.
    fn stop_taking_in(&mut self) {
        if let Some(a) = self.acceptor.take() {
            let _ = self.epoll.delete(a.listener.as_raw_fd());
        }
        if let Some((u, _)) = self.udp.take() {
            let _ = self.epoll.delete(u.as_raw_fd());
        }
        self.udp_ready = false;
    }

    /// While accepting is paused (out of descriptors), the level-triggered listener would
    /// wake us at once: takes it out of the set until the pause ends.
    fn track_pause(&mut self) -> io::Result<()> {
        if let Some(a) = self.acceptor.as_mut() {
            let accepting = a.is_accepting();
            if accepting != self.listener_registered {
                if accepting {
                    self.epoll.add(a.listener.as_raw_fd(), LISTENER, EPOLLIN)?;
                } else {
                    self.epoll.delete(a.listener.as_raw_fd())?;
                }
                self.listener_registered = accepting;
            }
        }
        Ok(())
    }

    /// Serves one event: the waker, the UDP socket (served after the events), the listener
    /// (a batch of accepts) or a session.
    fn dispatch(&mut self, token: u64, bits: u32) -> io::Result<()> {
        match token {
            WAKER => self.waker.reset(),
            UDP => {
                if let Some((u, _)) = &self.udp {
                    trace_event!(self.ctx.trace, "udp readable fd={}", u.as_raw_fd());
                    self.udp_ready = true;
                }
            }
            LISTENER => self.accept()?,
            key => self.on_socket(key as usize, bits as i32),
        }
        Ok(())
    }

    /// Accepts a batch, each socket registered edge-triggered for everything it may report.
    fn accept(&mut self) -> io::Result<()> {
        let (ctx, epoll, sessions) = (self.ctx, &self.epoll, &mut self.sessions);
        let Some(a) = self.acceptor.as_mut() else {
            return Ok(());
        };
        a.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("epoll: cannot make a socket non-blocking: {e}");
                return;
            }
            let fd = stream.as_raw_fd();
            trace_event!(ctx.trace, "accept fd={fd}");
            let entry = sessions.vacant_entry();
            let key = entry.key();
            let flags = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
            match epoll.add(fd, key as u64, flags) {
                Ok(()) => {
                    let s = entry.insert(Session::new(stream, ctx));
                    s.edge_triggered = true;
                }
                Err(e) => log::warn!("epoll: cannot register a socket: {e}"),
            }
        })?;
        Ok(())
    }

    /// Session `key` reported `bits`: notes what they say, then pumps it.
    fn on_socket(&mut self, key: usize, bits: i32) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        trace_event!(
            self.ctx.trace,
            "{} fd={}",
            epoll_names(bits),
            s.stream.as_raw_fd()
        );
        if bits & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR) != 0 {
            s.readable = true;
        }
        if bits & EPOLLPRI != 0 {
            // Urgent data: the next read stops short at its mark.
            s.urgent = true;
        }
        if bits & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) != 0 {
            s.peer_closing = true;
        }
        if bits & (EPOLLOUT | EPOLLHUP | EPOLLERR) != 0 {
            s.writable = true;
        }
        serve(
            &mut self.sessions,
            key,
            &mut self.scratch,
            &mut self.still_ready,
        );
    }

    /// What no event announces again: the UDP socket's datagrams left over, and the sessions
    /// that used their read budget last turn.
    fn serve_left_over(&mut self) {
        if let Some((u, echo)) = self.udp.as_mut().filter(|_| self.udp_ready) {
            self.udp_ready = echo.serve(u, self.ctx, udp::BUDGET) == Drained::More;
        }
        for key in self.ready.drain(..) {
            if self.sessions.contains(key) {
                serve(
                    &mut self.sessions,
                    key,
                    &mut self.scratch,
                    &mut self.still_ready,
                );
            }
        }
    }

    /// The sessions that used their read budget this turn are next turn's `ready`.
    fn queue_next_turn(&mut self) {
        std::mem::swap(&mut self.ready, &mut self.still_ready);
        self.ready.sort_unstable();
        self.ready.dedup();
    }
}

/// Pumps one session; closes it when it is over, queues it when it has more to read.
fn serve(sessions: &mut Slab<Session>, key: usize, scratch: &mut [u8], again: &mut Vec<usize>) {
    match sessions[key].pump(scratch, READS_PER_TURN) {
        Status::Open => {}
        Status::MoreToRead => again.push(key),
        // Closing the socket removes it from the epoll set (no duplicates of it exist).
        Status::Closed => drop(sessions.remove(key)),
    }
}

/// `EPOLLIN|EPOLLOUT|EPOLLRDHUP`: the event bits a trace line names.
fn epoll_names(bits: i32) -> String {
    let names = [
        (EPOLLIN, "EPOLLIN"),
        (EPOLLPRI, "EPOLLPRI"),
        (EPOLLOUT, "EPOLLOUT"),
        (EPOLLRDHUP, "EPOLLRDHUP"),
        (EPOLLHUP, "EPOLLHUP"),
        (EPOLLERR, "EPOLLERR"),
    ];
    let named: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|&(_, name)| name)
        .collect();
    if named.is_empty() {
        format!("events={bits:#x}")
    } else {
        named.join("|")
    }
}
