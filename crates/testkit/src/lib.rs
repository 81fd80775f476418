//! What the workspace's test suites share, so that each exists once: a seeded pseudo-random
//! generator ([`Rng`], whose streams every test crate draws its data, chunk sizes and
//! permutations from), connect/close cycles against a server ([`connect_close_cycles`]), and
//! bounded waits on a condition ([`eventually`], [`wait_until`], [`until_still`]) for the
//! tests that used to sleep and hope.
//!
//! A dev-dependency of the tests that use it: the core's (its unit tests, `tls.rs`), the
//! server's (`tests/common`), the UDP tools' (the tracker's unit tests) and the binary's
//! (`tests/`, through `tests/support`). Never published, and only std, so it builds for Linux
//! and for Windows (the Winsock suites run under Wine) alike.

#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A deterministic pseudo-random stream (Marsaglia's xorshift64, shifts 13, 7, 17), so that a
/// failure reproduces: the same state gives the same numbers on every run and platform.
///
/// `Rng(state)` starts from `state` as it is (a state of 0 stays 0 forever: pass a non-zero
/// one); [`Rng::seeded`] takes any seed, 0 included.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A stream for any seed, 0 included: the seed spread by the golden ratio, made odd.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 bits of the stream.
    #[allow(clippy::should_implement_trait)] // an infinite stream, not an `Iterator` of options
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A size in `1..=max` (`max` > 0).
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// The next `n` bytes: the low byte of each number.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `n` bytes of the stream that starts at `seed | 1` (the same bytes for the same seed): the
/// binary's tests' data (`tests/support`).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    Rng(seed | 1).bytes(n)
}

/// The longest one connect of [`connect_close_cycles`] may take: a bound, not a measurement.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens and closes up to `n` connections to `addr` with no data, from 4 threads, until
/// `limit` has passed: returns how many were made (`n` unless the limit cut them short). A
/// connect that fails or takes [`CONNECT_TIMEOUT`] fails the test.
pub fn connect_close_cycles(addr: SocketAddr, n: usize, limit: Duration) -> usize {
    let claimed = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + limit;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let claimed = Arc::clone(&claimed);
            thread::spawn(move || {
                let mut made = 0;
                while Instant::now() < end && claimed.fetch_add(1, Relaxed) < n {
                    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                        .unwrap_or_else(|e| panic!("cycle {made}: connect {addr}: {e}"));
                    made += 1;
                }
                made
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a connect/close thread"))
        .sum()
}

/// How often the waits below look again.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` every [`POLL`] for up to `limit`; true if it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Polls `cond` for up to `limit` and fails the test, naming `what`, if it never held.
pub fn wait_until(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        eventually(limit, cond),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Reads `read` every [`POLL`] until its value has held still for `still` (the thing it
/// measures settled: a count nothing changes any more), for up to `limit`; returns the last
/// value and whether it held still.
pub fn until_still<T: PartialEq>(
    limit: Duration,
    still: Duration,
    mut read: impl FnMut() -> T,
) -> (T, bool) {
    let end = Instant::now() + limit;
    let mut last = read();
    let mut since = Instant::now();
    while since.elapsed() < still {
        if Instant::now() >= end {
            return (last, false);
        }
        thread::sleep(POLL);
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    (last, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_xorshift64_and_reproduces() {
        let mut r = Rng(1);
        // 1 ^ 1 << 13 = 0x2001; ^ >> 7 = 0x2041; ^ << 17 = 0x4082_2041.
        assert_eq!(r.next(), 0x4082_2041);
        assert_eq!(Rng::seeded(7).bytes(64), Rng::seeded(7).bytes(64));
        assert_ne!(Rng::seeded(0).next(), 0, "seed 0 is a stream too");
        assert_eq!(random_bytes(32, 6), Rng(7).bytes(32));
    }

    #[test]
    fn sizes_stay_in_range() {
        let mut r = Rng::seeded(3);
        for max in 1..100 {
            let s = r.size(max);
            assert!((1..=max).contains(&s));
            assert!(r.below(max as u64) < max as u64);
        }
    }

    #[test]
    fn until_still_sees_a_value_hold_still_and_eventually_sees_a_condition() {
        let mut n = 0;
        let (v, held) = until_still(Duration::from_secs(5), Duration::from_millis(50), || {
            n = (n + 1).min(5);
            n
        });
        assert_eq!((v, held), (5, true));
        let mut k = 0;
        assert!(eventually(Duration::from_secs(5), || {
            k += 1;
            k == 3
        }));
        assert!(!eventually(Duration::ZERO, || false));
    }
}
