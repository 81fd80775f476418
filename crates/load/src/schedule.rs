//! Open-loop pacing (`--rate`): when each message is due, and the counts of a paced run.
//!
//! With [`LoadConfig::rate`](crate::LoadConfig::rate) = `R` messages per second over `C`
//! connections, message `k` of connection `c` is *due* at `start + (c + k·C) / R`: each
//! connection sends every `C / R` seconds, and the connections' offsets are staggered by
//! `1 / R`, so the whole run offers one message every `1 / R` seconds. A connection writes a
//! message when it is due, and the message's latency is measured from its due time, not from
//! when it was actually written. A sender that falls behind (the server has not answered, the
//! socket buffer is full, the poll timer is late) sends as soon as it can, and the delay counts
//! in the latency: a stalled server cannot hide its stall by holding the generator back
//! (*coordinated omission*, Gil Tene's term; wrk2 corrects it the same way). The round trip
//! from the actual write is kept as well, as the *service* latency, so the difference is
//! visible.
//!
//! `depth` bounds the messages a connection leaves unanswered, as in the closed loop. With
//! `depth` 1 (the default) a connection behaves as wrk2's: the next message waits for the
//! echo of the last, so against a server that cannot keep up the latency from the schedule
//! grows while the service latency stays the server's time per message. With a larger `depth`
//! the messages are pipelined, up to `depth` unanswered; their service latency then includes
//! the time they queue in the socket buffers and the server. Due messages a full window holds
//! back are counted ([`Pacing::held_back`]), and still timed from their due time when they go;
//! those never written before the run's sending ended are counted as unsent.
//!
//! Due times are computed from `k`, never stored, so a server that falls behind costs no
//! memory for the schedule; what is stored per connection is the actual send time of each of
//! its (at most `depth`) unanswered messages.
//!
//! The workers wake for due messages with a timerfd on Linux (the `sys` module's `Timer`):
//! a message goes out some tens of µs after its due time when nothing is behind (the timer's
//! wake-up), which the latency from the schedule includes. Elsewhere the poll's own timeout
//! wakes them, to the millisecond (Windows: the system tick, ~15.6 ms unless raised), and at
//! low load the latency from the schedule then sits up to that much above the service latency.
//!
//! Pitfall: only answered messages are in the percentiles; messages unanswered at the end of
//! the drain, or never sent, are counted beside them (`rate_unanswered`, `rate_unsent`).

use std::time::{Duration, Instant};

/// The highest accepted `--rate`, in messages per second (in total).
pub const MAX_RATE: u64 = 100_000_000;

/// The due times of one connection's messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    start: Instant,
    /// The connection's index (its offset in the stagger).
    index: u64,
    /// Connections in the run.
    conns: u64,
    /// Messages per second, in total.
    rate: u64,
}

impl Schedule {
    /// The schedule of connection `index` of `conns`, at `rate` messages/s in total from
    /// `start`.
    pub(crate) fn new(start: Instant, index: usize, conns: usize, rate: u64) -> Schedule {
        Schedule {
            start,
            index: index as u64,
            conns: conns.max(1) as u64,
            rate: rate.max(1),
        }
    }

    /// When message `k` is due: `start + ⌈(index + k·conns) · 10⁹ / rate⌉` ns.
    pub(crate) fn due(&self, k: u64) -> Instant {
        let g = u128::from(self.index) + u128::from(k) * u128::from(self.conns);
        let ns = (g * 1_000_000_000).div_ceil(u128::from(self.rate));
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        self.start
            .checked_add(Duration::from_nanos(ns))
            .unwrap_or(self.start + Duration::from_secs(86_400 * 365))
    }

    /// How many messages are due at `now` (the `k` with `due(k) <= now`).
    pub(crate) fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let g = elapsed * u128::from(self.rate) / 1_000_000_000;
        let index = u128::from(self.index);
        if g < index {
            return 0;
        }
        u64::try_from((g - index) / u128::from(self.conns) + 1).unwrap_or(u64::MAX)
    }

    /// The latency of a message `k` completed at `now`, from its due time, in µs.
    pub(crate) fn latency_us(&self, k: u64, now: Instant) -> u64 {
        micros(now.saturating_duration_since(self.due(k)))
    }
}

/// A duration in whole microseconds, at least 1 (the histogram's lowest value).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The pacing counts of one connection (summed per worker and run).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pacing {
    /// Messages whose first byte was written (datagrams sent).
    pub(crate) sent: u64,
    /// Messages that fell due while `depth` were unanswered (each counted once).
    pub(crate) held_back: u64,
    /// Messages due before sending stopped that were never written.
    pub(crate) unsent: u64,
    /// The highest message index already counted in `held_back`.
    held_mark: u64,
}

impl Pacing {
    /// Counts messages `started..due` as held back (those not counted before).
    pub(crate) fn hold(&mut self, started: u64, due: u64) {
        let from = started.max(self.held_mark);
        if due > from {
            self.held_back += due - from;
            self.held_mark = due;
        }
    }

    /// Adds another connection's counts.
    pub(crate) fn add(&mut self, other: &Pacing) {
        self.sent += other.sent;
        self.held_back += other.held_back;
        self.unsent += other.unsent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_staggered_evenly_over_the_connections() {
        let t0 = Instant::now();
        // 1000 msg/s over 4 connections: every 4 ms per connection, offsets 1 ms apart.
        let s: Vec<Schedule> = (0..4).map(|c| Schedule::new(t0, c, 4, 1000)).collect();
        assert_eq!(s[0].due(0), t0);
        assert_eq!(s[1].due(0), t0 + Duration::from_millis(1));
        assert_eq!(s[3].due(2), t0 + Duration::from_millis(11));
        // Every message of the run is due at a distinct millisecond.
        let mut all: Vec<Instant> = s.iter().flat_map(|s| (0..5).map(|k| s.due(k))).collect();
        all.sort();
        for (i, at) in all.iter().enumerate() {
            assert_eq!(*at, t0 + Duration::from_millis(i as u64));
        }
    }

    #[test]
    fn due_by_agrees_with_due_at_every_boundary() {
        let t0 = Instant::now();
        for (index, conns, rate) in [(0, 1, 1), (2, 3, 7), (5, 10, 333), (0, 1, MAX_RATE)] {
            let s = Schedule::new(t0, index, conns, rate);
            assert_eq!(
                s.due_by(t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0)),
                u64::from(index == 0)
            );
            for k in 0..50 {
                let at = s.due(k);
                assert_eq!(s.due_by(at), k + 1, "{index} {conns} {rate} k {k}");
                if at > t0 {
                    assert_eq!(
                        s.due_by(at - Duration::from_nanos(1)),
                        k,
                        "{index} {rate} {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 0, 1, 100);
        // Message 3 is due at 30 ms; echoed at 250 ms: 220 ms from its schedule.
        assert_eq!(s.latency_us(3, t0 + Duration::from_millis(250)), 220_000);
        // Echoed "before" its due time (cannot happen, but never underflows): the floor.
        assert_eq!(s.latency_us(3, t0), 1);
    }

    #[test]
    fn held_back_messages_are_counted_once() {
        let mut p = Pacing::default();
        p.hold(10, 15);
        p.hold(10, 17);
        p.hold(12, 17);
        assert_eq!(p.held_back, 7);
        p.hold(20, 21);
        assert_eq!(p.held_back, 8);
    }
}
