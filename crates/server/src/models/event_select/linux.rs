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
use crate::models::{min_timeout, Drain};
use crate::session::{Session, Status, READ_CHUNK};
use crate::sys::epoll::{
    Epoll, Events, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP,
};
use crate::trace::trace_event;
use crate::udp::{self, Drained, ReadinessUdpEcho};
use slab::Slab;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

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
    let epoll = Epoll::new()?;
    let waker = ctx.shutdown.register()?;
    epoll.add(waker.as_raw_fd(), WAKER, EPOLLIN)?;
    if let Some(l) = &listener {
        l.set_nonblocking(true)?;
        epoll.add(l.as_raw_fd(), LISTENER, EPOLLIN)?;
    }
    let mut acceptor = listener.map(|l| Acceptor::new(l, ctx));
    let mut listener_registered = true;
    // The UDP socket, edge-triggered like the connections; `udp_ready` remembers that it may
    // hold datagrams no edge will announce again (the budget ran out). Datagrams that came
    // before the registration announced nothing: start ready.
    let mut udp = match &ctx.udp {
        Some(u) => {
            epoll.add(u.as_raw_fd(), UDP, EPOLLIN | EPOLLET)?;
            Some((u, ReadinessUdpEcho::new(ctx)))
        }
        None => None,
    };
    let mut udp_ready = udp.is_some();
    let mut sessions: Slab<Session> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut ready: Vec<usize> = Vec::new();
    let mut still_ready: Vec<usize> = Vec::new();
    let mut drain = Drain::new(ctx.drain_timeout);
    let mut sweep = ctx.sweep();

    loop {
        if drain.begins(&ctx.shutdown) {
            if let Some(a) = acceptor.take() {
                let _ = epoll.delete(a.listener.as_raw_fd());
            }
            if let Some((u, _)) = udp.take() {
                let _ = epoll.delete(u.as_raw_fd());
            }
            udp_ready = false;
        }
        if drain.is_over(sessions.len()) {
            return Ok(());
        }
        // While accepting is paused (out of descriptors), the level-triggered listener would
        // wake us at once: take it out of the set until the pause ends.
        if let Some(a) = acceptor.as_mut() {
            let accepting = a.is_accepting();
            if accepting != listener_registered {
                if accepting {
                    epoll.add(a.listener.as_raw_fd(), LISTENER, EPOLLIN)?;
                } else {
                    epoll.delete(a.listener.as_raw_fd())?;
                }
                listener_registered = accepting;
            }
        }
        let timeout = if ready.is_empty() && !udp_ready {
            let pause = acceptor.as_ref().and_then(|a| a.pause_remaining());
            min_timeout(min_timeout(drain.wait_limit(), pause), sweep.wait_limit())
        } else {
            Some(std::time::Duration::ZERO)
        };
        epoll.wait(&mut events, timeout)?;
        ctx.stats.count_wait();

        for (token, bits) in events.iter() {
            match token {
                WAKER => waker.reset(),
                UDP => {
                    if let Some((u, _)) = &udp {
                        trace_event!(ctx.trace, "udp readable fd={}", u.as_raw_fd());
                        udp_ready = true;
                    }
                }
                LISTENER => {
                    let Some(a) = acceptor.as_mut() else { continue };
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
                }
                key => {
                    let key = key as usize;
                    let Some(s) = sessions.get_mut(key) else {
                        continue;
                    };
                    let bits = bits as i32;
                    trace_event!(
                        ctx.trace,
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
                    serve(&mut sessions, key, &mut scratch, &mut still_ready);
                }
            }
        }
        if let Some((u, echo)) = udp.as_mut().filter(|_| udp_ready) {
            udp_ready = echo.serve(u, ctx, udp::BUDGET) == Drained::More;
        }
        for key in ready.drain(..) {
            if sessions.contains(key) {
                serve(&mut sessions, key, &mut scratch, &mut still_ready);
            }
        }
        if let Some(now) = sweep.due() {
            // A key left in `ready` may name a slot reused later: pumping it is harmless.
            sessions.retain(|_, s| s.expired(&sweep, now).is_none());
        }
        std::mem::swap(&mut ready, &mut still_ready);
        ready.sort_unstable();
        ready.dedup();
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
