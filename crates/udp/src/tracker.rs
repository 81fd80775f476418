//! [`Tracker`]: what a receiver knows about one sender's run — sans-I/O, fed one arrival at a
//! time as (sequence number, send time, receive time).
//!
//! Definitions, for sequence numbers that start at 0 (as `udp send` numbers them):
//!
//! - **received**: every arrival fed in, duplicates included.
//! - **unique**: distinct sequence numbers among them (`received - duplicated`).
//! - **duplicated**: arrivals whose sequence number had already arrived (the second and later
//!   copies).
//! - **reordered**: arrivals, not duplicates, whose sequence number is below the highest one
//!   seen *before* them — they came after a later datagram. A datagram that is merely late
//!   counts once here and, having arrived, not as lost.
//! - **lost**: sequence numbers in `0..=highest` that never arrived, as of the moment the
//!   stats are read. Datagrams after the highest one received are invisible: if the last ones
//!   of a run are lost, nobody can tell from sequence numbers alone (the sender's own count
//!   can).
//! - **latency**: receive time minus send time of every unique arrival, in an HDR histogram
//!   (nanoseconds, 3 significant digits). A negative difference (clock step between the two
//!   readings) is recorded as 0 and counted in `clock_skewed`.
//!
//! Sequence numbers up to [`MAX_TRACKED_SEQ`] are remembered in a bitmap (one bit each, grown
//! as needed, at most 32 MiB); arrivals beyond it are counted in `out_of_range` and otherwise
//! ignored — at a million datagrams a second that is 4.5 minutes of one run.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The highest sequence number the tracker remembers (exclusive): 2^28.
pub const MAX_TRACKED_SEQ: u64 = 1 << 28;

/// The longest latency the histogram holds: an hour, in nanoseconds (larger ones saturate).
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// What one arrival turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A new sequence number at or above every one seen before.
    InOrder,
    /// A new sequence number below the highest seen before it.
    Reordered,
    /// A sequence number that had already arrived.
    Duplicate,
    /// Beyond [`MAX_TRACKED_SEQ`]: counted, not tracked.
    OutOfRange,
}

/// Counts received, lost, duplicated and reordered datagrams of one run, and their one-way
/// latency. See the module documentation for the exact definitions.
pub struct Tracker {
    seen: Vec<u64>,
    highest: Option<u64>,
    received: u64,
    duplicated: u64,
    reordered: u64,
    out_of_range: u64,
    clock_skewed: u64,
    latency_ns: Histogram<u64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Tracker {
        Tracker {
            seen: Vec::new(),
            highest: None,
            received: 0,
            duplicated: 0,
            reordered: 0,
            out_of_range: 0,
            clock_skewed: 0,
            latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Feeds one arrival: its sequence number, the sender's timestamp and the receiver's,
    /// both in nanoseconds on the same clock.
    pub fn record(&mut self, seq: u64, sent_ns: u64, recv_ns: u64) -> Arrival {
        if seq >= MAX_TRACKED_SEQ {
            self.out_of_range += 1;
            return Arrival::OutOfRange;
        }
        self.received += 1;
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        let latency = match recv_ns.checked_sub(sent_ns) {
            Some(ns) => ns,
            None => {
                self.clock_skewed += 1;
                0
            }
        };
        self.latency_ns.saturating_record(latency.max(1));
        match self.highest {
            Some(h) if seq < h => {
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// Arrivals so far, duplicates included (cheap: no percentiles).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The counters and latency percentiles as of now.
    pub fn stats(&self) -> TrackerStats {
        let unique = self.received - self.duplicated;
        let h = &self.latency_ns;
        let us = |ns: u64| ns as f64 / 1000.0;
        let latency_us = (unique > 0).then(|| LatencyUs {
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
            mean: (h.mean() / 10.0).round() / 100.0,
        });
        TrackerStats {
            received: self.received,
            unique,
            lost: self.highest.map_or(0, |h| h + 1 - unique),
            duplicated: self.duplicated,
            reordered: self.reordered,
            highest_seq: self.highest,
            out_of_range: self.out_of_range,
            clock_skewed: self.clock_skewed,
            latency_us,
        }
    }
}

/// A [`Tracker`]'s counters at one moment (definitions in the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackerStats {
    /// Every arrival, duplicates included.
    pub received: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers in `0..=highest_seq` that never arrived.
    pub lost: u64,
    /// Second and later copies of a sequence number.
    pub duplicated: u64,
    /// New sequence numbers that arrived below the highest one seen before them.
    pub reordered: u64,
    /// The highest sequence number received, if any.
    pub highest_seq: Option<u64>,
    /// Arrivals with a sequence number >= [`MAX_TRACKED_SEQ`], not otherwise counted.
    pub out_of_range: u64,
    /// Arrivals whose receive time was before their send time (recorded as 0 latency).
    pub clock_skewed: u64,
    /// One-way latency of the unique arrivals, in microseconds; `None` before any.
    pub latency_us: Option<LatencyUs>,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyUs {
    /// The smallest.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn feed(seqs: &[u64]) -> TrackerStats {
        let mut t = Tracker::new();
        for &s in seqs {
            t.record(s, 1_000, 2_000 + s);
        }
        t.stats()
    }

    #[test]
    fn nothing_received_means_nothing_lost() {
        let s = Tracker::new().stats();
        assert_eq!((s.received, s.lost, s.highest_seq), (0, 0, None));
        assert_eq!(s.latency_us, None);
    }

    #[test]
    fn in_order_run_is_clean() {
        let s = feed(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (s.received, s.unique, s.lost, s.duplicated, s.reordered),
            (1000, 1000, 0, 0, 0)
        );
        assert_eq!(s.highest_seq, Some(999));
    }

    #[test]
    fn gaps_are_lost_until_filled_and_late_arrivals_are_reordered() {
        let mut t = Tracker::new();
        for s in [0, 1, 4, 5] {
            assert_eq!(t.record(s, 0, 1), Arrival::InOrder);
        }
        assert_eq!(t.stats().lost, 2);
        assert_eq!(t.record(2, 0, 1), Arrival::Reordered);
        let s = t.stats();
        assert_eq!((s.lost, s.reordered, s.unique), (1, 1, 5));
    }

    #[test]
    fn duplicates_count_once_and_are_not_reordered() {
        let mut t = Tracker::new();
        assert_eq!(t.record(0, 0, 1), Arrival::InOrder);
        assert_eq!(t.record(1, 0, 1), Arrival::InOrder);
        assert_eq!(t.record(0, 0, 1), Arrival::Duplicate);
        assert_eq!(t.record(1, 0, 1), Arrival::Duplicate);
        let s = t.stats();
        assert_eq!(
            (s.received, s.unique, s.duplicated, s.reordered, s.lost),
            (4, 2, 2, 0, 0)
        );
    }

    #[test]
    fn losing_the_first_datagrams_counts_them() {
        let s = feed(&[3, 4]);
        assert_eq!(s.lost, 3);
    }

    #[test]
    fn latency_is_receive_minus_send_and_a_clock_step_is_zero() {
        let mut t = Tracker::new();
        t.record(0, 1_000_000, 1_250_000); // 250 us
        t.record(1, 5_000, 1_000); // receive before send: skewed
        let s = t.stats();
        assert_eq!(s.clock_skewed, 1);
        let l = s.latency_us.unwrap();
        assert!(l.max >= 249.0 && l.max <= 251.0, "{l:?}");
        assert!(l.min < 0.01, "{l:?}");
    }

    #[test]
    fn sequence_numbers_beyond_the_bitmap_are_counted_apart() {
        let mut t = Tracker::new();
        assert_eq!(t.record(MAX_TRACKED_SEQ, 0, 1), Arrival::OutOfRange);
        assert_eq!(t.record(u64::MAX, 0, 1), Arrival::OutOfRange);
        let s = t.stats();
        assert_eq!((s.received, s.out_of_range, s.lost), (0, 2, 0));
    }

    /// The definitions, computed the slow and obvious way.
    fn model(arrivals: &[u64]) -> (u64, u64, u64, u64, u64) {
        let mut seen = HashSet::new();
        let mut highest: Option<u64> = None;
        let (mut dup, mut reord) = (0, 0);
        for &s in arrivals {
            if !seen.insert(s) {
                dup += 1;
                continue;
            }
            if highest.is_some_and(|h| s < h) {
                reord += 1;
            }
            highest = highest.max(Some(s));
        }
        let unique = seen.len() as u64;
        let lost = highest.map_or(0, |h| h + 1 - unique);
        (arrivals.len() as u64, unique, lost, dup, reord)
    }

    proptest! {
        /// A run of `n` datagrams, some dropped, some duplicated, delivered in a random order:
        /// the tracker agrees with the definitions, and the counters add up.
        #[test]
        fn counters_match_the_definitions(
            n in 1u64..400,
            drop_mask in proptest::collection::vec(any::<bool>(), 400),
            dups in proptest::collection::vec(0usize..400, 0..50),
            shuffle_seed in any::<u64>(),
            shuffle in any::<bool>(),
        ) {
            let mut arrivals: Vec<u64> = (0..n).filter(|&s| !drop_mask[s as usize]).collect();
            let kept = arrivals.clone();
            for d in dups {
                if !kept.is_empty() {
                    arrivals.push(kept[d % kept.len()]);
                }
            }
            if shuffle {
                // Fisher-Yates with the tests' seeded stream: a random permutation per seed.
                let mut rng = iomodels_testkit::Rng(shuffle_seed | 1);
                for i in (1..arrivals.len()).rev() {
                    arrivals.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            let s = feed(&arrivals);
            let (received, unique, lost, dup, reord) = model(&arrivals);
            prop_assert_eq!((s.received, s.unique, s.lost, s.duplicated, s.reordered),
                            (received, unique, lost, dup, reord));
            prop_assert_eq!(s.unique, kept.len() as u64);
            prop_assert_eq!(s.received, s.unique + s.duplicated);
            prop_assert!(s.reordered < s.unique.max(1));
            // Nothing dropped below the highest arrival: nothing lost.
            let highest = kept.iter().copied().max();
            let dropped_below = highest.map_or(0, |h| (0..=h).filter(|&q| drop_mask[q as usize]).count() as u64);
            prop_assert_eq!(s.lost, dropped_below);
            if !shuffle {
                prop_assert_eq!(s.reordered, 0);
            }
        }
    }
}
