//! The accepting thread of [`super::serve_with`] (`event-select`): `FD_ACCEPT` on the
//! listener's event, then `accept`; the Wine `select` fallback; a socket served beside.

use super::group::Groups;
use super::{Beside, Flow, Member};
use crate::accept::{Acceptor, RoomSignal};
use crate::ctx::Ctx;
use crate::models::min_timeout;
use crate::sys::network_events::{network_events, FD_ACCEPT};
use crate::sys::select::{select, SocketSet};
use crate::sys::{wait_any, Event, Wait, Waker};
use crate::trace::trace_event;
use std::io;
use std::net::TcpStream;
use std::os::windows::io::AsRawSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Connections accepted per `FD_ACCEPT` before the acceptor looks at its waker again.
const ACCEPT_BATCH: usize = 256;

/// What a handle in the accepting thread's wait stands for.
#[derive(Clone, Copy)]
enum Source {
    Waker,
    Beside,
    Listener,
    /// A connection closed while accepting stopped at the cap.
    Room,
}

/// The accepting thread's loop and what it keeps between turns; [`ReadyAccept::run`] returns
/// when shutdown is requested (having closed the listener) or the listener (or `beside`)
/// fails.
pub(super) struct ReadyAccept<'a, 'b, A> {
    ctx: &'a Ctx,
    /// `None` without a listener (`--no-tcp`); dropping it closes the listener.
    acceptor: Option<Acceptor>,
    listen_event: &'a Event,
    beside: Option<&'a mut (dyn Beside + 'b)>,
    waker: &'a Waker,
    room: &'a RoomSignal,
    adopt: A,
    /// Accept without waiting: at first (a client may have connected before the selection),
    /// after a full batch, an `FD_ACCEPT`, the end of a pause or room below the cap.
    accept_now: bool,
    /// Whether FD_ACCEPT can be waited for. Windows re-enables it with every accept call; Wine
    /// only with an accept that *succeeds*, and it can signal an FD_ACCEPT whose connection an
    /// earlier accept already took: the accept that follows finds nothing, and FD_ACCEPT stays
    /// disabled while clients queue up. So after a wake-up that accepted nothing, the listener
    /// is waited for with `select` (level-triggered) until an accept succeeds again.
    fd_accept_enabled: bool,
    /// The accepts about to run follow an FD_ACCEPT (or a pause), not the first try.
    woken: bool,
    /// Serve `beside` now: at first (what came before its selection), after its event, or
    /// when it asked to go again.
    beside_now: bool,
}

impl<'a, 'b, A> ReadyAccept<'a, 'b, A> {
    pub(super) fn new(
        ctx: &'a Ctx,
        acceptor: Option<Acceptor>,
        listen_event: &'a Event,
        beside: Option<&'a mut (dyn Beside + 'b)>,
        waker: &'a Waker,
        room: &'a RoomSignal,
        adopt: A,
    ) -> Self {
        ReadyAccept {
            ctx,
            acceptor,
            listen_event,
            beside_now: beside.is_some(),
            beside,
            waker,
            room,
            adopt,
            accept_now: true,
            fd_accept_enabled: true,
            woken: false,
        }
    }

    /// Accepts and serves `beside` until shutdown, handing each connection to `groups`.
    pub(super) fn run<M>(mut self, groups: &mut Groups<'_, '_, M>) -> io::Result<()>
    where
        M: Member,
        A: FnMut(TcpStream) -> io::Result<M>,
    {
        loop {
            if self.ctx.shutdown.is_requested() {
                // Dropping the acceptor closes the listener; `beside` is not served any more.
                return Ok(());
            }
            groups.reap();
            if let Some(b) = self.beside.as_deref_mut().filter(|_| self.beside_now) {
                self.beside_now = b.serve()? == Flow::Again;
            }
            if self.accept(groups)? {
                continue; // more may be waiting: look at the waker, then go on
            }
            // At the connection cap the listener's event is left out of the wait (FD_ACCEPT
            // is not taken: nothing is accepted and dropped) and the groups' room signal goes
            // in: a member leaving wakes this thread.
            let room = self.room;
            let accepting = self
                .acceptor
                .as_mut()
                .is_some_and(|a| a.is_accepting_armed(room));
            // A `beside` that asked to go again must not wait.
            let hurry = self.beside_now.then_some(Duration::ZERO);
            if !self.fd_accept_enabled && accepting {
                self.wait_in_select(hurry)?;
            } else {
                self.wait_for_events(accepting, hurry)?;
            }
        }
    }

    /// Accepts a batch when one is due, each connection handed to a group; notes whether
    /// FD_ACCEPT is to be trusted (see `fd_accept_enabled`). True after a full batch.
    fn accept<M>(&mut self, groups: &mut Groups<'_, '_, M>) -> io::Result<bool>
    where
        M: Member,
        A: FnMut(TcpStream) -> io::Result<M>,
    {
        let ready = self.accept_now && self.acceptor.as_mut().is_some_and(|a| a.is_accepting());
        let Some(acceptor) = self.acceptor.as_mut().filter(|_| ready) else {
            return Ok(false);
        };
        self.accept_now = false;
        let (ctx, adopt) = (self.ctx, &mut self.adopt);
        let n = acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
            trace_event!(ctx.trace, "accept s={}", stream.as_raw_socket());
            match adopt(stream) {
                Ok(member) => groups.hand(member),
                // Dropping the stream (inside adopt) closed it.
                Err(e) => log::warn!("cannot take a connection into a group: {e}"),
            }
        })?;
        if n > 0 {
            self.fd_accept_enabled = true;
        } else if self.woken {
            self.fd_accept_enabled = false;
        }
        if n == ACCEPT_BATCH {
            self.accept_now = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// The Wine fallback while FD_ACCEPT cannot be waited for: `select` on the listener, the
    /// waker's socket (readable once shutdown is requested, never drained) and `beside`'s.
    fn wait_in_select(&mut self, hurry: Option<Duration>) -> io::Result<()> {
        let Some(acceptor) = &self.acceptor else {
            return Ok(());
        };
        let mut read = SocketSet::with_capacity(3);
        read.insert(acceptor.listener.as_raw_socket());
        read.insert(self.waker.as_raw_socket());
        if let Some(b) = &self.beside {
            read.insert(b.socket());
        }
        select(&mut read, &mut SocketSet::with_capacity(0), hurry)?;
        self.ctx.stats.count_wait();
        self.accept_now = read.contains(acceptor.listener.as_raw_socket());
        self.beside_now |= self
            .beside
            .as_ref()
            .is_some_and(|b| read.contains(b.socket()));
        self.woken = true;
        Ok(())
    }

    /// Waits on the waker's event, `beside`'s, and the listener's (while `accepting`) or the
    /// room signal (at the cap), then takes every signalled one.
    fn wait_for_events(&mut self, accepting: bool, hurry: Option<Duration>) -> io::Result<()> {
        // While accepting is paused (out of sockets), leave the listener's event out: a failed
        // accept re-enables FD_ACCEPT, so it would be signalled again at once.
        let mut handles = [self.waker.event_handle(); 4];
        let mut sources = [Source::Waker; 4];
        let mut n = 1;
        if let Some(b) = &self.beside {
            (handles[n], sources[n]) = (b.handle(), Source::Beside);
            n += 1;
        }
        if accepting {
            (handles[n], sources[n]) = (self.listen_event.handle(), Source::Listener);
            n += 1;
        } else if self.acceptor.is_some() {
            (handles[n], sources[n]) = (self.room.waker().event_handle(), Source::Room);
            n += 1;
        }
        let pause = self.acceptor.as_ref().and_then(|a| a.pause_remaining());
        let mut wait = wait_any(&handles[..n], min_timeout(hurry, pause), false)?;
        self.ctx.stats.count_wait();
        if matches!(wait, Wait::TimedOut) && pause.is_some() {
            // The pause is over: the event was consumed by the accept that failed, so try.
            self.accept_now = true;
            self.woken = true;
        }
        // WSAWaitForMultipleEvents names only the lowest signalled handle: probe the ones above
        // it, so a busy UDP socket cannot keep FD_ACCEPT from being seen (nor the reverse).
        let mut base = 0;
        while let Wait::Signalled(i) = wait {
            let slot = base + i;
            self.signalled(sources[slot])?;
            base = slot + 1;
            if base >= n {
                break;
            }
            wait = wait_any(&handles[base..n], Some(Duration::ZERO), false)?;
            self.ctx.stats.syscalls.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Takes one signalled handle of the wait.
    fn signalled(&mut self, source: Source) -> io::Result<()> {
        match source {
            // Shutdown, seen at the top.
            Source::Waker => {}
            Source::Beside => self.beside_now = true,
            Source::Room => {
                // Below the cap again: accept what waits (`select` finds out, if the
                // FD_ACCEPT that came at the cap is not signalled again).
                self.room.waker().reset();
                self.accept_now = true;
                self.woken = true;
            }
            Source::Listener => {
                if let Some(acceptor) = &self.acceptor {
                    // Reads and clears the record (and resets the event); FD_ACCEPT is
                    // re-enabled by the accepts that follow.
                    let ne = network_events(&acceptor.listener, self.listen_event)?;
                    self.ctx.stats.syscalls.fetch_add(1, Ordering::Relaxed);
                    trace_event!(
                        self.ctx.trace,
                        "FD_ACCEPT s={}",
                        acceptor.listener.as_raw_socket()
                    );
                    if let Some(e) = ne.error(FD_ACCEPT) {
                        log::debug!("FD_ACCEPT carried an error: {e}");
                    }
                    self.accept_now = true;
                    self.woken = true;
                }
            }
        }
        Ok(())
    }
}
