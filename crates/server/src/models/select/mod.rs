//! # `select`: one thread asks which sockets are ready
//!
//! **Winsock original.** `select()` over non-blocking sockets: the thread fills `fd_set`s with
//! the sockets it wants to read and write, blocks in `select`, and then serves the ones that
//! came back ready. The book's point: it only removes the *blocking* (one thread serves many
//! sockets, `accept` no longer stalls the rest); it still *polls* — every call hands the kernel
//! the whole set and scans it again on return, so each turn costs O(connections).
//!
//! **Linux counterpart.** `select(2)` itself, over non-blocking sockets. One thread; each turn
//! rebuilds a read set (the listener, the wake-up eventfd, and every connection whose
//! backpressure allows reading) and a write set (connections whose last send hit a full socket
//! buffer), then serves what is ready: one read of up to 64 KiB per ready socket per turn
//! (level-triggered, so a busy socket cannot starve the others), and optimistic writes — a reply
//! is sent in the same turn as the request that caused it, and only a send that would block puts
//! the socket in the write set.
//!
//! **UDP** (`--udp`). The UDP socket is one more descriptor in the read set, on both OSes (on
//! Windows one more entry of the `fd_set`: it takes a place of the count cap); when `select`
//! reports it readable the loop answers up to 64 datagrams (`udp.rs`), then goes on with the
//! connections. Level-triggered: datagrams still waiting make the next `select` return at
//! once. With `--no-tcp` the read set holds the waker and the UDP socket only.
//!
//! **Limits.** An `fd_set` is a bitmap indexed by descriptor *value*, `FD_SETSIZE` = 1024 bits:
//! a descriptor numbered 1024 or above cannot be waited on at all, whatever the number of
//! sockets. Such a connection is closed as soon as it is accepted, counted in
//! `Stats::refused` and logged, at most a line a second ([`crate::sys::select::FdSet`] refuses
//! it rather than write past the bitmap, which is undefined behaviour). The default
//! `--max-conns` (`SELECT_DEFAULT_CAP`, 960) stops accepting before that happens.
//!
//! **Windows.** The real `select()`, but Winsock's `fd_set` is no bitmap: it is a count and an
//! array of `SOCKET` handles (`FD_SETSIZE` = 64 entries unless redefined), and `select` reads as
//! many entries as the count says. So Windows has no limit on a socket's *value* — handles are
//! opaque numbers, not indexes — only on how many sockets one set holds.
//! [`crate::sys::select::SocketSet`] is a set laid out as an `fd_set` with room chosen at run
//! time (16,384 here); past that a connection is closed at once and counted in
//! `Stats::refused`, as on Linux. Each turn still copies and scans the whole array: the
//! O(connections) cost is the same.
//!
//! **Limits of the server** (`--max-conns`, `--idle-timeout`, `--write-timeout`,
//! `--handshake-timeout`, both OSes):
//! at the cap the listener leaves the read set until a connection closes; the timeouts are a
//! sweep over the sessions every loop turn that one is due (`crate::limits`), and `select`'s
//! timeout is bounded by the next sweep.
//!
//! **Pitfalls.** The sets are overwritten by the call and must be rebuilt every turn; `nfds` is
//! the highest descriptor plus one, not a count; a socket reported readable may still return
//! `EWOULDBLOCK`; the wait must include something shutdown can signal (here an eventfd).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "linux")]
pub(crate) use linux::{availability, MECHANISM};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;
#[cfg(windows)]
pub(crate) use windows::{availability, MECHANISM};

#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use super::unsupported::{availability, run, MECHANISM};

/// Windows: the most connections one server holds, its socket set's capacity less the
/// listener and the waker (Winsock's `select` bounds the count, not the values): what `bench`
/// compares a ramp against, as FD_SETSIZE on Linux.
#[cfg(windows)]
pub fn max_conns() -> usize {
    windows::SET_CAPACITY - 2
}

#[cfg(any(target_os = "linux", windows))]
pub(crate) use serve::run;

/// The loop, the same on both OSes: `os` supplies the sets (`Sets`), a socket's raw name
/// (`raw`, of type `Raw`) and the admission rule (`admit`).
#[cfg(any(target_os = "linux", windows))]
mod serve {
    use super::os::{self, Raw, Sets};
    use crate::accept::Acceptor;
    use crate::ctx::Ctx;
    use crate::log_every::log_every;
    use crate::models::Turn;
    use crate::session::{Session, Status, READ_CHUNK};
    use crate::sys::Waker;
    use crate::trace::trace_event;
    use crate::udp::{self, ReadinessUdpEcho};
    use std::io;
    use std::net::{TcpListener, UdpSocket};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    /// Most connections accepted per turn, so a connection storm cannot starve open sockets.
    const ACCEPT_BATCH: usize = 64;

    pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
        let mut model = Select::new(listener, ctx)?;
        let mut turn = Turn::new(ctx);
        loop {
            if turn.drain_begins(&ctx.shutdown) {
                model.acceptor = None;
                model.udp = None;
            }
            if turn.drain_is_over(model.sessions.len()) {
                return Ok(());
            }
            let accepting = model.fill_sets();
            let pause = model.acceptor.as_ref().and_then(|a| a.pause_remaining());
            let ready = model.sets.select(turn.wait_limit(pause))?;
            ctx.stats.count_wait();
            trace_event!(ctx.trace, "select: {ready} ready");
            model.serve_ready();
            if let Some(now) = turn.sweep_due() {
                let sweep = turn.sweep();
                model
                    .sessions
                    .retain_mut(|s| s.expired(sweep, now).is_none());
            }
            if accepting && model.listen.is_some_and(|l| model.sets.readable(l)) {
                model.accept()?;
            }
        }
    }

    /// What the loop keeps between turns.
    struct Select<'a> {
        ctx: &'a Ctx,
        /// The listener's raw name, when there is one (it stays the same after the acceptor
        /// is dropped: it is only looked up in the sets the acceptor filled).
        listen: Option<Raw>,
        /// `None` once shutdown begins (the listener is closed) or without TCP.
        acceptor: Option<Acceptor>,
        /// The UDP socket (non-blocking since bind), its raw name and its echo buffer; `None`
        /// once shutdown begins.
        udp: Option<(&'a UdpSocket, Raw, ReadinessUdpEcho)>,
        waker: Arc<Waker>,
        wake: Raw,
        sessions: Vec<Session>,
        scratch: Vec<u8>,
        sets: Sets,
    }

    impl<'a> Select<'a> {
        /// Checks that the listener and the UDP socket can be waited on, registers the waker.
        fn new(listener: Option<TcpListener>, ctx: &'a Ctx) -> io::Result<Select<'a>> {
            let mut listen = None;
            if let Some(l) = &listener {
                l.set_nonblocking(true)?;
                let raw = os::raw(l);
                os::admit(raw, 0).map_err(|why| {
                    io::Error::other(format!("select cannot wait on the listening socket: {why}"))
                })?;
                listen = Some(raw);
            }
            let udp = match &ctx.udp {
                Some(u) => {
                    os::admit(os::raw(u), 0).map_err(|why| {
                        io::Error::other(format!("select cannot wait on the UDP socket: {why}"))
                    })?;
                    Some((u, os::raw(u), ReadinessUdpEcho::new(ctx)))
                }
                None => None,
            };
            let waker = ctx.shutdown.register()?;
            Ok(Select {
                ctx,
                listen,
                acceptor: listener.map(|l| Acceptor::new(l, ctx)),
                udp,
                wake: os::raw(&*waker),
                waker,
                sessions: Vec::new(),
                scratch: vec![0u8; READ_CHUNK],
                sets: Sets::new(),
            })
        }

        /// Rebuilds the sets: the waker, the listener while accepting, the UDP socket, every
        /// session that may read, every session whose last send would have blocked. Returns
        /// whether the listener is in.
        fn fill_sets(&mut self) -> bool {
            let sets = &mut self.sets;
            sets.clear();
            sets.want_read(self.wake);
            let accepting = self.acceptor.as_mut().is_some_and(|a| a.is_accepting());
            if let Some(listen) = self.listen.filter(|_| accepting) {
                sets.want_read(listen);
            }
            if let Some((_, raw, _)) = &self.udp {
                sets.want_read(*raw);
            }
            for s in &self.sessions {
                let raw = os::raw(&s.stream);
                if s.conn.wants_read() {
                    sets.want_read(raw);
                }
                if s.conn.wants_write() && !s.writable {
                    sets.want_write(raw);
                }
            }
            accepting
        }

        /// Serves what `select` reported: the waker, the UDP socket, then every session (one
        /// read each), closing the ones that are over.
        fn serve_ready(&mut self) {
            let (ctx, sets) = (self.ctx, &self.sets);
            if sets.readable(self.wake) {
                self.waker.reset();
            }
            if let Some((socket, raw, echo)) = self.udp.as_mut().filter(|u| sets.readable(u.1)) {
                trace_event!(ctx.trace, "udp readable {}={raw}", os::RAW_NAME);
                echo.serve(socket, ctx, udp::BUDGET);
            }
            let mut i = 0;
            while i < self.sessions.len() {
                let s = &mut self.sessions[i];
                let raw = os::raw(&s.stream);
                s.readable = sets.readable(raw);
                let writable_now = sets.writable(raw);
                if s.readable {
                    trace_event!(ctx.trace, "readable {}={raw}", os::RAW_NAME);
                }
                if writable_now {
                    trace_event!(ctx.trace, "writable {}={raw}", os::RAW_NAME);
                }
                s.writable |= writable_now;
                if (s.readable || writable_now) && s.pump(&mut self.scratch, 1) == Status::Closed {
                    self.sessions.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }

        /// The listener was readable: accepts a batch; a socket the sets cannot hold is
        /// closed at once and counted as refused.
        fn accept(&mut self) -> io::Result<()> {
            let (ctx, sessions) = (self.ctx, &mut self.sessions);
            let Some(acceptor) = self.acceptor.as_mut() else {
                return Ok(());
            };
            acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
                if let Err(why) = os::admit(os::raw(&stream), sessions.len()) {
                    ctx.stats.refused.fetch_add(1, Relaxed);
                    log_every!(warn, "select: closing a connection: {why}");
                    return; // dropping the stream closes it
                }
                let raw = os::raw(&stream);
                trace_event!(ctx.trace, "accept {}={raw}", os::RAW_NAME);
                match stream.set_nonblocking(true) {
                    Ok(()) => sessions.push(Session::new(stream, ctx)),
                    Err(e) => log::warn!("select: cannot make a socket non-blocking: {e}"),
                }
            })?;
            Ok(())
        }
    }
}
