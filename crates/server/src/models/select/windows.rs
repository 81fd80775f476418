//! Winsock `select` over non-blocking sockets, with a socket set of our own size.

use crate::accept::Acceptor;
use crate::models::{min_timeout, Drain};
use crate::session::{Session, Status, READ_CHUNK};
use crate::sys::select::{select, SocketSet};
use crate::Ctx;
use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::Ordering::Relaxed;

pub(crate) const MECHANISM: &str = "select() over a sized fd_set";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// Most connections accepted per turn, so a connection storm cannot starve open sockets.
const ACCEPT_BATCH: usize = 64;

/// How many sockets one `fd_set` of ours holds: the listener, the waker and the connections.
/// Winsock has no limit on descriptor values, only this count, which bounds the O(n) cost of
/// every turn (the kernel copies and scans the whole array each call).
pub(crate) const SET_CAPACITY: usize = 16_384;

pub(crate) fn run(listener: TcpListener, ctx: &Ctx) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_s = listener.as_raw_socket();
    let waker = ctx.shutdown.register()?;
    let mut acceptor = Some(Acceptor::new(listener));
    let mut sessions: Vec<Session> = Vec::new();
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut rset = SocketSet::with_capacity(SET_CAPACITY);
    let mut wset = SocketSet::with_capacity(SET_CAPACITY);
    let mut drain = Drain::new(ctx.drain_timeout);
    let mut warned_full = false;
    let (mut readable, mut writable) = (HashSet::<RawSocket>::new(), HashSet::<RawSocket>::new());

    loop {
        if drain.begins(&ctx.shutdown) {
            acceptor = None;
        }
        if drain.is_over(sessions.len()) {
            return Ok(());
        }

        rset.clear();
        wset.clear();
        rset.insert(waker.as_raw_socket());
        let accepting = acceptor.as_mut().is_some_and(|a| a.is_accepting());
        if accepting {
            rset.insert(listen_s);
        }
        for s in &sessions {
            let sock = s.stream.as_raw_socket();
            if s.conn.wants_read() {
                rset.insert(sock);
            }
            if s.conn.wants_write() && !s.writable {
                wset.insert(sock);
            }
        }
        let pause = acceptor.as_ref().and_then(|a| a.pause_remaining());
        select(&mut rset, &mut wset, min_timeout(drain.wait_limit(), pause))?;
        ctx.stats.count_wait();

        // The sets now hold only the ready sockets: few, so a hash lookup per session beats
        // scanning the arrays per session.
        readable.clear();
        readable.extend(rset.iter());
        writable.clear();
        writable.extend(wset.iter());
        if readable.contains(&waker.as_raw_socket()) {
            waker.reset();
        }
        let mut i = 0;
        while i < sessions.len() {
            let s = &mut sessions[i];
            let sock = s.stream.as_raw_socket();
            s.readable = readable.contains(&sock);
            let writable_now = writable.contains(&sock);
            s.writable |= writable_now;
            if (s.readable || writable_now) && s.pump(&mut scratch, 1) == Status::Closed {
                sessions.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if let Some(acceptor) = acceptor
            .as_mut()
            .filter(|_| accepting && readable.contains(&listen_s))
        {
            acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
                // The listener and the waker take two places in the read set.
                if sessions.len() + 2 >= SET_CAPACITY {
                    ctx.stats.refused.fetch_add(1, Relaxed);
                    if !warned_full {
                        warned_full = true;
                        log::warn!(
                            "select: closing a connection: the socket set holds {SET_CAPACITY} \
                             sockets; further ones are counted, not logged"
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
