//! One turn of a model's loop: its deadlines (the drain on shutdown, the timeout sweep).
//!
//! Every model's loop repeats the same skeleton around its own wait and dispatch; [`Turn`]
//! owns the deadlines of that skeleton so the loop shows only what is its own. Each turn, in
//! this order:
//! 1. [`Turn::drain_begins`]: true once, on the first turn that sees shutdown requested: the
//!    loop stops accepting (drops its listener) and stops reading its UDP socket (a datagram
//!    has nothing to drain).
//! 2. [`Turn::drain_is_over`]: true when draining and no connection is left or the drain
//!    timeout passed: the loop closes what is left and returns.
//! 3. [`Turn::wait_limit`]: the most the loop may block, given its accept pause: until the
//!    drain deadline, the next sweep or the end of the pause, whichever comes first.
//! 4. The loop waits and dispatches (serves UDP, connections, accepts): its own part.
//! 5. [`Turn::sweep_due`]: `Some(now)` when the sweep is due: the loop checks every
//!    connection against [`Turn::sweep`] at `now` and closes what expired.
//!
//! (Steps 3 to 5 may come in another order in a model; each model's doc says where its sweep
//! runs.)

use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::shutdown::Shutdown;
use std::time::{Duration, Instant};

/// This turn's deadlines: the drain and the sweep of the idle, write and handshake timeouts.
pub(crate) struct Turn {
    drain: Drain,
    sweep: Sweep,
}

impl Turn {
    /// Serving, with the drain timeout and the sweep of `ctx`.
    pub fn new(ctx: &Ctx) -> Turn {
        Turn {
            drain: Drain::new(ctx.drain_timeout),
            sweep: ctx.sweep(),
        }
    }

    /// True exactly once, on the turn that first sees the shutdown request: the loop then
    /// drops its listener and its UDP socket.
    pub fn drain_begins(&mut self, shutdown: &Shutdown) -> bool {
        self.drain.begins(shutdown)
    }

    /// True from the turn the drain began on.
    #[cfg_attr(not(windows), allow(dead_code))] // the Windows groups
    pub fn is_draining(&self) -> bool {
        self.drain.deadline.is_some()
    }

    /// True when the loop should return: draining, and no connection (of `open`) is left or
    /// the drain timeout passed.
    pub fn drain_is_over(&self, open: usize) -> bool {
        self.drain.is_over(open)
    }

    /// The most the loop may block in its wait (`None`: until something happens): until the
    /// drain deadline, the next sweep or the end of `pause` (the accept pause, or any other
    /// bound the model has), whichever comes first.
    pub fn wait_limit(&self, pause: Option<Duration>) -> Option<Duration> {
        min_timeout(
            min_timeout(self.drain.wait_limit(), self.sweep.wait_limit()),
            pause,
        )
    }

    /// `Some(now)` when a sweep is due: check every connection against [`Turn::sweep`] at
    /// `now`.
    pub fn sweep_due(&mut self) -> Option<Instant> {
        self.sweep.due()
    }

    /// The timeouts a connection is checked against when a sweep is due.
    pub fn sweep(&self) -> &Sweep {
        &self.sweep
    }
}

/// The shutdown sequence as a model's loop sees it: serving, then draining until the
/// connections are gone or the deadline passes. Most loops hold it in a [`Turn`]; `blocking`'s
/// acceptor, which has no sweep (its client threads time out on their own), holds it alone.
pub(crate) struct Drain {
    timeout: Duration,
    deadline: Option<Instant>,
}

impl Drain {
    pub fn new(timeout: Duration) -> Drain {
        Drain {
            timeout,
            deadline: None,
        }
    }

    /// Call once per loop turn: returns true exactly once, on the turn that first sees the
    /// shutdown request; the model then closes its listener.
    pub fn begins(&mut self, shutdown: &Shutdown) -> bool {
        if self.deadline.is_none() && shutdown.is_requested() {
            // However long the timeout (a library caller's is not bounded by the CLI's parser),
            // the deadline is a time: a year at most.
            let timeout = self.timeout.min(Duration::from_secs(365 * 24 * 3600));
            self.deadline = Some(Instant::now() + timeout);
            return true;
        }
        false
    }

    /// True when the model should stop: draining, and no connection is left or time is up.
    pub fn is_over(&self, open_connections: usize) -> bool {
        match self.deadline {
            Some(d) => {
                let over = open_connections == 0 || Instant::now() >= d;
                if over && open_connections > 0 {
                    log::info!("drain deadline passed: closing {open_connections} connections");
                }
                over
            }
            None => false,
        }
    }

    /// The most a model may block in its wait: until the deadline, when draining.
    pub fn wait_limit(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The shorter of two optional timeouts (`None` = forever).
pub(crate) fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
