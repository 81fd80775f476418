//! [`Acceptor`]: the listening socket and the accept loop every model shares.
//!
//! It accepts in batches until `WouldBlock`, skips connections the peer aborted before they
//! were accepted (ECONNABORTED), and when the process is out of descriptors (EMFILE/ENFILE)
//! pauses accepting for a short back-off instead of spinning on a listener that stays
//! readable, logging once per pause (as nginx and HAProxy do). Existing connections keep being
//! served meanwhile.
//!
//! It also keeps the connection cap (`--max-conns`, [`crate::limits`]): while the server holds
//! that many connections [`Acceptor::is_accepting`] says no (counted and logged once per
//! pause), a batch never accepts past the cap, and the rest wait in the kernel's backlog.
//! Where connections close on another thread than the one that accepts (the Windows models
//! with group threads, an I/O thread or completion workers), a [`RoomSignal`] wakes the
//! accepting side when one closes while it waits at the cap.

use crate::ctx::Ctx;
use crate::log_every::log_every;
use crate::stats::Stats;
use crate::sys;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
#[cfg(windows)]
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long accepting pauses after EMFILE/ENFILE.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket with its accept loop.
pub(crate) struct Acceptor {
    pub listener: TcpListener,
    backoff: Backoff,
    cap: ConnCap,
}

/// The pause after EMFILE/ENFILE (out of descriptors, or of kernel memory for the io_uring
/// models; on Windows `WSAEMFILE`/`WSAENOBUFS`): one pause is counted in
/// [`Stats::accept_pauses`] and logged once, however many accepts fail while it lasts (the
/// io_uring models and Windows' `AcceptEx` keep several posted: they fail together).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    until: Option<Instant>,
}

impl Backoff {
    /// An accept failed (`e`: for want of descriptors, or anything retrying at once would spin
    /// on): a pause begins, logged, and counted when it is for want of descriptors, unless one
    /// is already on (then nothing changes: it ends when it was going to). True if it began.
    pub fn begin(&mut self, e: &io::Error, stats: &Stats) -> bool {
        if self.is_paused() {
            log::debug!("accept: {e} (accepting is paused)");
            return false;
        }
        if sys::is_out_of_descriptors(e) {
            stats.accept_pauses.fetch_add(1, Relaxed);
        }
        log_every!(
            warn,
            "accept: {e}; pausing accepts for {} ms, serving existing connections",
            EMFILE_BACKOFF.as_millis()
        );
        self.until = Some(Instant::now() + EMFILE_BACKOFF);
        true
    }

    /// True while a pause is on; a pause that has ended is forgotten here.
    pub fn is_paused(&mut self) -> bool {
        match self.until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                self.until = None;
                false
            }
            None => false,
        }
    }

    /// How long until the pause ends, if one is on: the most a model may wait.
    pub fn remaining(&self) -> Option<Duration> {
        self.until
            .map(|t| t.saturating_duration_since(Instant::now()))
    }
}

/// The connection cap: the server-wide count of open connections against `--max-conns`.
pub(crate) struct ConnCap {
    max: usize,
    stats: Arc<Stats>,
    /// At the cap when last asked (a pause is counted and logged once, when it begins).
    held: bool,
    /// Wake every server thread when a pause begins ([`ConnCap::waking_others`]).
    others: Option<crate::Shutdown>,
}

impl ConnCap {
    pub fn new(ctx: &Ctx) -> ConnCap {
        ConnCap {
            max: ctx.max_conns,
            stats: Arc::clone(&ctx.stats),
            held: false,
            others: None,
        }
    }

    /// When this cap's pause begins, wake every other thread of the server too: workers that
    /// accept on listeners of their own must stop their accepts as well (they see the same
    /// count once awake).
    #[cfg(target_os = "linux")] // the io_uring engine's
    pub fn waking_others(mut self, ctx: &Ctx) -> ConnCap {
        self.others = Some(ctx.shutdown.clone());
        self
    }

    /// How many more connections may be accepted now (0 at the cap: the pause begins, counted
    /// and logged once; it ends, logged, when a connection has closed).
    pub fn room(&mut self) -> usize {
        // Sockets handed between workers are connections too, though no session counts them yet.
        let open = self.stats.active.load(Relaxed) + self.stats.handoffs_in_flight.load(Relaxed);
        let active = usize::try_from(open).unwrap_or(0);
        let room = self.max.saturating_sub(active);
        if room == 0 && !self.held {
            self.held = true;
            self.stats.conn_cap_pauses.fetch_add(1, Relaxed);
            if let Some(s) = &self.others {
                s.wake_all();
            }
            log_every!(
                warn,
                "{active} connections open, the --max-conns cap: not accepting until one closes \
                 (new clients wait in the listen backlog)"
            );
        } else if room > 0 && self.held {
            self.held = false;
            log_every!(info, "below --max-conns again ({active} open): accepting");
        }
        room
    }

    /// At the cap when last asked ([`ConnCap::room`]).
    #[cfg(target_os = "linux")] // the io_uring engine's
    pub fn is_held(&self) -> bool {
        self.held
    }
}

/// Wakes an acceptor that waits at the connection cap when a connection closes on another
/// thread: no polling, and no wake-up per close while below the cap.
///
/// The acceptor calls [`RoomSignal::arm`] once it finds itself at the cap and then looks at
/// the count again before it waits (on [`RoomSignal::waker`] among its other handles); a
/// thread that closes a connection calls [`RoomSignal::freed`] after the close. Either the
/// acceptor's second look sees the freed place, or `freed` sees the signal armed and wakes it.
#[cfg(windows)]
pub(crate) struct RoomSignal {
    armed: AtomicBool,
    waker: sys::Waker,
}

#[cfg(windows)]
impl RoomSignal {
    pub fn new() -> io::Result<RoomSignal> {
        Ok(RoomSignal {
            armed: AtomicBool::new(false),
            waker: sys::Waker::new()?,
        })
    }

    /// The acceptor is at the cap: the next close wakes it.
    pub fn arm(&self) {
        self.armed.store(true, SeqCst);
    }

    /// A connection closed (its session is dropped): wake the acceptor if it waits at the cap.
    pub fn freed(&self) {
        if self.armed.swap(false, SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the accepting thread at the cap: {e}");
            }
        }
    }

    /// What the acceptor waits on (its event or its socket); reset it once woken.
    pub fn waker(&self) -> &sys::Waker {
        &self.waker
    }
}

impl Acceptor {
    pub fn new(listener: TcpListener, ctx: &Ctx) -> Acceptor {
        Acceptor {
            listener,
            backoff: Backoff::default(),
            cap: ConnCap::new(ctx),
        }
    }

    /// True if the server holds `--max-conns` connections now: the model should not wait for
    /// the listener (it stays readable) until a connection has closed.
    pub fn at_cap(&mut self) -> bool {
        self.cap.room() == 0
    }

    /// [`Acceptor::is_accepting`] for an acceptor whose connections close on other threads:
    /// at the cap, `room` is armed first, so a close after this look wakes the acceptor.
    #[cfg(windows)]
    pub fn is_accepting_armed(&mut self, room: &RoomSignal) -> bool {
        if self.at_cap() {
            room.arm();
        }
        self.is_accepting()
    }

    /// True if the model should wait for the listener to become readable now: accepting is
    /// neither paused (out of descriptors) nor at the connection cap.
    pub fn is_accepting(&mut self) -> bool {
        self.cap.room() > 0 && !self.backoff.is_paused()
    }

    /// How long until a pause ends, if accepting is paused: the most a model may wait.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.backoff.remaining()
    }

    /// Accepts up to `max` pending connections and hands each to `serve`. Returns how many were
    /// accepted. Errors on the listener itself are returned; per-connection ones are absorbed.
    pub fn accept_batch(
        &mut self,
        max: usize,
        stats: &Stats,
        mut serve: impl FnMut(TcpStream),
    ) -> io::Result<usize> {
        let mut accepted = 0;
        let max = max.min(self.cap.room());
        while accepted < max {
            stats.syscalls.fetch_add(1, Relaxed);
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
                    }
                    sys::set_oob_inline_accepted(&stream);
                    accepted += 1;
                    serve(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if sys::is_transient_accept_error(&e) => continue,
                Err(e) if sys::is_out_of_descriptors(&e) => {
                    self.backoff.begin(&e, stats);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(accepted)
    }
}
