//! The connection limits every model enforces with the same code: the cap on open
//! connections (`--max-conns`), the idle timeout (`--idle-timeout`), the slow-reader guard
//! (`--write-timeout`) and the TLS handshake deadline (`--handshake-timeout`).
//!
//! **The cap** is checked where connections are accepted ([`crate::accept::Acceptor`] for the
//! readiness models and the Windows models that accept with `accept`, the io_uring engine's
//! accept posting for the Linux completion models, `AcceptEx` posting for the Windows
//! completion port) against
//! [`crate::Stats::active`], the server-wide gauge every [`crate::session::Session`] keeps: at
//! the cap a model stops accepting, and connections wait in the kernel's backlog (their
//! handshake completes there, nothing reads them) until one closes. Nothing is ever accepted
//! and then dropped. Each time accepting stops at the cap counts once in
//! [`crate::Stats::conn_cap_pauses`] and logs one line.
//!
//! **The timeouts** need no timer per connection. A [`Clock`] lives in each session; the pump
//! marks it when bytes move and when backpressure is off (two stores, no clock read on the hot
//! path). A model calls [`Sweep::due`] once per loop turn and, when a sweep is due (a quarter
//! of the shorter timeout, at most once a second and at least every 10 ms apart), runs
//! [`Sweep::check`] over its connections: one `Instant::now()` per sweep. A connection is
//! closed as idle when no sweep saw a byte move for the idle timeout, and as a slow reader
//! when every sweep saw it backpressured (output at the high-water mark, reading paused) for
//! the write timeout; so it is never closed early, and at most two sweep intervals late.
//!
//! **The handshake deadline** is a hard one: a TLS connection whose handshake is not complete
//! `--handshake-timeout` after it was accepted is closed at the next sweep, whatever bytes it
//! sent meanwhile (a peer trickling a byte of its ClientHello every second keeps the idle
//! timeout away, not this one). The deadline is fixed in the [`Clock`] when the session is
//! made and dropped by the first sweep that finds the handshake complete; plaintext
//! connections have none. Counted in [`crate::Stats::tls_handshake_timeouts`] and logged at
//! most about once a second (`log_every!`), with the number of closes the log left out.
//! Models bound their waits by [`Sweep::wait_limit`] so a sweep is not missed while nothing
//! happens (the Windows group threads, I/O thread and completion-port coordinator alike; the
//! async-select window arms its timer for it).
//!
//! The thread-per-client model has no loop to sweep in: it sets the same timeouts as
//! `SO_RCVTIMEO` (idle) and `SO_SNDTIMEO` (write) on its blocking sockets; while a handshake
//! deadline runs, each recv waits at most until the deadline, and the same
//! [`Clock::handshake_expired`] decides.

use crate::log_every::log_every;
use crate::stats::Stats;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The slow-reader guard's default: a peer that reads nothing of its output for a minute is
/// gone or hostile (nginx's `send_timeout` is 60 s too).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS handshake deadline's default (`--handshake-timeout`): 10 s from accept to a
/// complete handshake, as common TLS servers allow (HAProxy's `timeout client-hs`, Go's
/// `http.Server` with a `ReadHeaderTimeout` of that order).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `--handshake-timeout` accepted: an hour is already no protection.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Descriptors the default cap leaves to the server itself (listeners, rings, epoll, eventfds,
/// log and certificate files), below the descriptor limit: at most this many, and a quarter
/// of a small limit ([`descriptor_cap`]).
pub const RESERVED_DESCRIPTORS: usize = 64;

/// The default connection cap under a descriptor limit of `nofile`: the limit less
/// [`RESERVED_DESCRIPTORS`], or less a quarter of a limit below 256, so that `ulimit -n 64`
/// leaves 48 connections, not 1; at least 1.
pub fn descriptor_cap(nofile: usize) -> usize {
    nofile
        .saturating_sub(RESERVED_DESCRIPTORS.min(nofile / 4))
        .max(1)
}

/// Slots the default cap leaves free in the direct-descriptor tables of `completion-port`
/// (connections, not the server's own descriptors, live there): room for sockets passed
/// between rings in accept hand-off.
pub const RESERVED_DIRECT_SLOTS: usize = 16;

/// The fewest time between sweeps, and the most.
const SWEEP_MIN: Duration = Duration::from_millis(10);
const SWEEP_MAX: Duration = Duration::from_secs(1);

/// Why a sweep closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No byte moved either way for the idle timeout.
    Idle,
    /// Output stayed at the high-water mark, unread by the peer, for the write timeout.
    SlowReader,
    /// The TLS handshake was not complete at the handshake deadline.
    Handshake,
}

impl Expiry {
    /// Counts the close in its counter and logs it at debug level.
    pub fn count(self, stats: &Stats) {
        match self {
            Expiry::Idle => {
                stats.idle_closed.fetch_add(1, Relaxed);
                log::debug!("closing a connection idle for --idle-timeout");
            }
            Expiry::SlowReader => {
                stats.slow_reader_closed.fetch_add(1, Relaxed);
                log::debug!(
                    "closing a connection whose peer left its output unread for --write-timeout"
                );
            }
            Expiry::Handshake => {
                stats.tls_handshake_timeouts.fetch_add(1, Relaxed);
                log_every!(
                    warn,
                    "tls: closing a connection whose handshake did not complete within \
                     --handshake-timeout"
                );
            }
        }
    }
}

/// One connection's view of time, as sweeps see it. The pump only sets flags.
#[derive(Debug)]
pub(crate) struct Clock {
    /// Bytes moved since the last sweep.
    touched: bool,
    /// Backpressure was off at some moment since the last sweep.
    relieved: bool,
    /// The last sweep that saw traffic (or the connection's start).
    last_traffic: Instant,
    /// The first sweep of the current unbroken stretch of backpressure.
    stalled_since: Option<Instant>,
    /// When the TLS handshake must be complete (`None`: plaintext, no deadline, or complete).
    handshake_deadline: Option<Instant>,
}

impl Clock {
    /// A connection's clock, started now (at accept); `handshake`: the TLS handshake deadline
    /// from now, if any.
    pub fn new(handshake: Option<Duration>) -> Clock {
        let now = Instant::now();
        Clock {
            touched: false,
            relieved: true,
            last_traffic: now,
            stalled_since: None,
            handshake_deadline: handshake.map(|d| now + d),
        }
    }

    /// The handshake deadline's verdict at `now`: true when it has passed while `handshaking`
    /// is still true. A finished handshake ends the deadline for good.
    pub fn handshake_expired(&mut self, handshaking: bool, now: Instant) -> bool {
        match self.handshake_deadline {
            Some(_) if !handshaking => {
                self.handshake_deadline = None;
                false
            }
            Some(deadline) => now >= deadline,
            None => false,
        }
    }

    /// The time left before the handshake deadline (`None`: no deadline runs).
    pub fn handshake_left(&self, now: Instant) -> Option<Duration> {
        self.handshake_deadline
            .map(|d| d.saturating_duration_since(now))
    }

    /// The pump's part: `moved` bytes went either way; `backpressured` is the state now.
    #[inline]
    pub fn mark(&mut self, moved: bool, backpressured: bool) {
        self.touched |= moved;
        self.relieved |= !backpressured;
    }
}

/// The sweep a model runs over its connections: when, and what it decides.
#[derive(Debug)]
pub(crate) struct Sweep {
    idle: Option<Duration>,
    write: Option<Duration>,
    /// Whether connections may carry a handshake deadline (TLS with `--handshake-timeout`).
    handshake: bool,
    every: Duration,
    next: Instant,
}

impl Sweep {
    /// `handshake`: the TLS handshake deadline, when the server speaks TLS and has one.
    pub fn new(
        idle: Option<Duration>,
        write: Option<Duration>,
        handshake: Option<Duration>,
    ) -> Sweep {
        let shortest = [idle, write, handshake]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(SWEEP_MAX);
        let every = (shortest / 4).clamp(SWEEP_MIN, SWEEP_MAX);
        Sweep {
            idle,
            write,
            handshake: handshake.is_some(),
            every,
            next: Instant::now() + every,
        }
    }

    /// True if no timeout is on: a model may skip sweeping altogether.
    pub fn is_off(&self) -> bool {
        self.idle.is_none() && self.write.is_none() && !self.handshake
    }

    /// The most a model may wait before its next sweep (`None`: no timeout is on).
    pub fn wait_limit(&self) -> Option<Duration> {
        if self.is_off() {
            return None;
        }
        Some(self.next.saturating_duration_since(Instant::now()))
    }

    /// Call once per loop turn: `Some(now)` when a sweep is due (then check every connection
    /// with that `now`).
    pub fn due(&mut self) -> Option<Instant> {
        if self.is_off() {
            return None;
        }
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + self.every;
        Some(now)
    }

    /// Decides one connection at the sweep of `now`; `backpressured` and `handshaking` (its
    /// TLS handshake is not complete) are its state now.
    pub fn check(
        &self,
        clock: &mut Clock,
        backpressured: bool,
        handshaking: bool,
        now: Instant,
    ) -> Option<Expiry> {
        if clock.handshake_expired(handshaking, now) {
            return Some(Expiry::Handshake);
        }
        if std::mem::take(&mut clock.touched) {
            clock.last_traffic = now;
        } else if self
            .idle
            .is_some_and(|d| now.saturating_duration_since(clock.last_traffic) >= d)
        {
            return Some(Expiry::Idle);
        }
        let relieved = std::mem::take(&mut clock.relieved);
        if !backpressured || relieved {
            // Off now, or off at some moment since the last sweep: a new stretch (if any)
            // starts here.
            clock.stalled_since = backpressured.then_some(now);
            return None;
        }
        let since = *clock.stalled_since.get_or_insert(now);
        match self.write {
            Some(d) if now.saturating_duration_since(since) >= d => Some(Expiry::SlowReader),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_closed_after_the_timeout_and_never_before() {
        let sweep = Sweep::new(Some(Duration::from_secs(10)), None, None);
        let mut c = Clock::new(None);
        let t0 = c.last_traffic;
        assert_eq!(
            sweep.check(&mut c, false, false, t0 + Duration::from_secs(9)),
            None
        );
        c.mark(true, false);
        assert_eq!(
            sweep.check(&mut c, false, false, t0 + Duration::from_secs(12)),
            None
        );
        assert_eq!(
            sweep.check(&mut c, false, false, t0 + Duration::from_secs(21)),
            None
        );
        assert_eq!(
            sweep.check(&mut c, false, false, t0 + Duration::from_secs(22)),
            Some(Expiry::Idle)
        );
    }

    #[test]
    fn a_slow_reader_needs_an_unbroken_stretch_of_backpressure() {
        let sweep = Sweep::new(None, Some(Duration::from_secs(10)), None);
        let mut c = Clock::new(None);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        c.mark(true, true);
        assert_eq!(sweep.check(&mut c, true, false, at(1)), None); // relieved at the start
        c.mark(true, true);
        assert_eq!(sweep.check(&mut c, true, false, at(2)), None); // the stretch starts at 1
        assert_eq!(sweep.check(&mut c, true, false, at(10)), None);
        c.mark(true, false); // drained below low water once, then full again
        assert_eq!(sweep.check(&mut c, true, false, at(11)), None);
        assert_eq!(sweep.check(&mut c, true, false, at(20)), None);
        assert_eq!(
            sweep.check(&mut c, true, false, at(21)),
            Some(Expiry::SlowReader)
        );
    }

    #[test]
    fn sweeps_come_a_quarter_of_the_shortest_timeout_apart_within_bounds() {
        assert_eq!(
            Sweep::new(Some(Duration::from_secs(2)), None, None).every,
            Duration::from_millis(500)
        );
        assert_eq!(
            Sweep::new(None, Some(Duration::from_secs(60)), None).every,
            SWEEP_MAX
        );
        assert_eq!(
            Sweep::new(Some(Duration::from_millis(1)), None, None).every,
            SWEEP_MIN
        );
        assert!(Sweep::new(None, None, None).wait_limit().is_none());
        assert_eq!(
            Sweep::new(None, None, Some(Duration::from_secs(1))).every,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn the_handshake_deadline_is_hard_and_ends_with_the_handshake() {
        let sweep = Sweep::new(None, None, Some(Duration::from_secs(10)));
        assert!(!sweep.is_off());
        let mut c = Clock::new(Some(Duration::from_secs(10)));
        let t0 = c.last_traffic;
        let at = |s| t0 + Duration::from_secs(s);
        // Trickling bytes does not move the deadline.
        for s in 1..10 {
            c.mark(true, false);
            assert_eq!(sweep.check(&mut c, false, true, at(s)), None);
        }
        c.mark(true, false);
        assert_eq!(
            sweep.check(&mut c, false, true, at(10)),
            Some(Expiry::Handshake)
        );
        // A handshake complete before the deadline ends it for good.
        let mut done = Clock::new(Some(Duration::from_secs(10)));
        assert_eq!(sweep.check(&mut done, false, false, at(5)), None);
        assert_eq!(done.handshake_left(at(5)), None);
        assert_eq!(sweep.check(&mut done, false, true, at(60)), None);
        // Plaintext has no deadline.
        let mut plain = Clock::new(None);
        assert_eq!(sweep.check(&mut plain, false, true, at(60)), None);
    }
}
