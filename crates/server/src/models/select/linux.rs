//! `select(2)` over non-blocking sockets.

use crate::accept::Acceptor;
use crate::models::{min_timeout, Drain};
use crate::session::{Session, Status, READ_CHUNK};
use crate::sys::select::{select, FdSet, FD_SETSIZE};
use crate::Ctx;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) const MECHANISM: &str = "select(2)";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// Most connections accepted per turn, so a connection storm cannot starve open sockets.
const ACCEPT_BATCH: usize = 64;

pub(crate) fn run(listener: TcpListener, ctx: &Ctx) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_fd = listener.as_raw_fd();
    if !FdSet::fits(listen_fd) {
        return Err(io::Error::other(format!(
            "the listening socket is descriptor {listen_fd}, past FD_SETSIZE ({FD_SETSIZE})"
        )));
    }
    let waker = ctx.shutdown.register()?;
    let mut acceptor = Some(Acceptor::new(listener));
    let mut sessions: Vec<Session> = Vec::new();
    let mut scratch = vec![0u8; READ_CHUNK];
    let (mut rset, mut wset) = (FdSet::new(), FdSet::new());
    let mut drain = Drain::new(ctx.drain_timeout);
    let mut warned_fd_setsize = false;

    loop {
        if drain.begins(&ctx.shutdown) {
            acceptor = None;
        }
        if drain.is_over(sessions.len()) {
            return Ok(());
        }

        rset.clear();
        wset.clear();
        rset.insert(waker.as_raw_fd());
        let accepting = acceptor.as_mut().is_some_and(|a| a.is_accepting());
        if accepting {
            rset.insert(listen_fd);
        }
        for s in &sessions {
            let fd = s.stream.as_raw_fd();
            if s.conn.wants_read() {
                rset.insert(fd);
            }
            if s.conn.wants_write() && !s.writable {
                wset.insert(fd);
            }
        }
        let pause = acceptor.as_ref().and_then(|a| a.pause_remaining());
        select(&mut rset, &mut wset, min_timeout(drain.wait_limit(), pause))?;
        ctx.stats.count_wait();

        if rset.contains(waker.as_raw_fd()) {
            waker.reset();
        }
        let mut i = 0;
        while i < sessions.len() {
            let s = &mut sessions[i];
            let fd = s.stream.as_raw_fd();
            s.readable = rset.contains(fd);
            let writable_now = wset.contains(fd);
            s.writable |= writable_now;
            if (s.readable || writable_now) && s.pump(&mut scratch, 1) == Status::Closed {
                sessions.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if let Some(acceptor) = acceptor
            .as_mut()
            .filter(|_| accepting && rset.contains(listen_fd))
        {
            acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
                let fd = stream.as_raw_fd();
                if !FdSet::fits(fd) {
                    ctx.stats.refused.fetch_add(1, Relaxed);
                    if !warned_fd_setsize {
                        warned_fd_setsize = true;
                        log::warn!(
                            "select: closing a connection on descriptor {fd}: select(2) cannot \
                             wait on descriptors >= FD_SETSIZE ({FD_SETSIZE}); further ones are \
                             counted, not logged"
                        );
                    }
                    return; // dropping the stream closes it
                }
                match stream.set_nonblocking(true) {
                    Ok(()) => sessions.push(Session::new(stream, ctx)),
                    Err(e) => log::warn!("select: cannot make a socket non-blocking: {e}"),
                }
            })?;
        }
    }
}
