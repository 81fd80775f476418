//! The deterministic byte stream every connection sends and expects back.
//!
//! One table of pseudo-random bytes with a prime period [`PERIOD`] is built once per process.
//! Connection number `c` gets its own *phase* `φ(c)`, and the byte at stream offset `i` of that
//! connection is `base[(φ(c) + i) % PERIOD]`: each connection's pattern is its own rotation of
//! the base table. The phases are `c · STRIDE mod PERIOD` with `STRIDE` coprime to the prime
//! period, so the first `PERIOD` connections all have distinct phases (two streams are never
//! the same sequence), and since the base bytes are random, a stream shifted by anything but a
//! multiple of the period (a lost, duplicated or reordered chunk) or crossed with another
//! connection's stream no longer matches.
//!
//! The table is stored as `PERIOD + CHUNK` bytes (the period followed by its own first `CHUNK`
//! bytes again), so any `CHUNK`-long window of a stream is one contiguous slice: sending is a
//! `write` straight from the table and checking an echo is one slice comparison, with no
//! per-byte arithmetic.

use std::sync::OnceLock;

/// The period of every stream, in bytes. Prime, so that no message size divides it and a
/// message-sized shift of the stream never lines up with itself.
pub(crate) const PERIOD: usize = 65_521;

/// The longest contiguous window handed out by [`Pattern::window`], and the size of the
/// per-thread read buffer.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Distance between the phases of consecutive connections: about `PERIOD / φ` (golden ratio),
/// which spreads the phases evenly; coprime to the prime `PERIOD`.
const STRIDE: u64 = 40_499;

/// The shared base table (`PERIOD + CHUNK` bytes, periodic with period `PERIOD`).
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut state: u64 = 0x1F0_DE15_C0DE_D00D;
        let mut base = Vec::with_capacity(PERIOD + CHUNK);
        while base.len() < PERIOD {
            // splitmix64: fast, deterministic, good enough to make every window unique.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let take = (PERIOD - base.len()).min(8);
            base.extend_from_slice(&z.to_le_bytes()[..take]);
        }
        for i in 0..CHUNK {
            base.push(base[i % PERIOD]);
        }
        base.into_boxed_slice()
    })
}

/// One connection's view of the pattern: the byte at stream offset `i` is
/// `base[(phase + i) % PERIOD]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern {
    phase: usize,
    table: &'static [u8],
}

impl Pattern {
    /// The pattern of the connection with global number `index` (0-based).
    pub(crate) fn for_connection(index: u64) -> Pattern {
        let phase = ((index % PERIOD as u64) * STRIDE % PERIOD as u64) as usize;
        Pattern {
            phase,
            table: table(),
        }
    }

    /// Where in the table stream offset `offset` lives.
    #[inline]
    fn position(&self, offset: u64) -> usize {
        let p = (offset % PERIOD as u64) as usize + self.phase;
        if p >= PERIOD {
            p - PERIOD
        } else {
            p
        }
    }

    /// The `len` bytes of the stream starting at `offset`, as one slice; `len <= CHUNK`.
    #[inline]
    pub(crate) fn window(&self, offset: u64, len: usize) -> &'static [u8] {
        debug_assert!(len <= CHUNK);
        let start = self.position(offset);
        &self.table[start..start + len]
    }

    /// Whether `data` equals the stream from `offset` on (any length).
    #[inline]
    pub(crate) fn matches(&self, mut offset: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            if self.window(offset, n) != &data[..n] {
                return false;
            }
            offset += n as u64;
            data = &data[n..];
        }
        true
    }

    /// The single byte at stream offset `offset` (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn byte_at(&self, offset: u64) -> u8 {
        self.table[self.position(offset)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_is_prime() {
        let p = PERIOD as u64;
        assert!((2..).take_while(|d| d * d <= p).all(|d| p % d != 0));
        assert_ne!(STRIDE % p, 0);
    }

    #[test]
    fn streams_are_periodic_with_the_declared_period() {
        let pat = Pattern::for_connection(7);
        let p = PERIOD as u64;
        for i in (0..3 * p).step_by(97).chain(p - 5..p + 5) {
            assert_eq!(pat.byte_at(i), pat.byte_at(i + p), "offset {i}");
            assert_eq!(pat.byte_at(i), pat.byte_at(i + 5 * p), "offset {i}");
        }
        // ... and not with a message-sized or otherwise short period.
        for shift in [1u64, 64, 100, 1000, 4096, 65_536] {
            let w0 = pat.window(0, 256);
            let w1 = pat.window(shift, 256);
            assert_ne!(w0, w1, "stream repeats after {shift} bytes");
        }
    }

    #[test]
    fn window_agrees_with_byte_at_across_the_wrap() {
        let pat = Pattern::for_connection(3);
        for start in [
            0u64,
            1,
            PERIOD as u64 - 10,
            PERIOD as u64 - 1,
            5 * PERIOD as u64 - 3,
        ] {
            let w = pat.window(start, CHUNK);
            for (k, &b) in w.iter().enumerate().step_by(13) {
                assert_eq!(b, pat.byte_at(start + k as u64));
            }
            assert!(pat.matches(start, w));
        }
    }

    #[test]
    fn different_connections_have_different_streams() {
        let pats: Vec<Pattern> = (0..2000).map(Pattern::for_connection).collect();
        let mut phases: Vec<usize> = pats.iter().map(|p| p.phase).collect();
        phases.sort_unstable();
        phases.dedup();
        assert_eq!(phases.len(), pats.len(), "phases must be distinct");
        let a = pats[0];
        let b = pats[1];
        assert_ne!(a.window(0, 64), b.window(0, 64));
        // Crossed streams: b's bytes do not verify as a's at the same offset, nor a's shifted.
        assert!(!a.matches(0, b.window(0, 64)));
        assert!(!a.matches(64, a.window(0, 64)));
        assert!(!a.matches(0, a.window(64, 64)));
    }

    #[test]
    fn matches_detects_a_single_flipped_byte_anywhere() {
        let pat = Pattern::for_connection(42);
        let mut data = Vec::new();
        let mut off = 1234u64;
        while data.len() < 3 * CHUNK + 17 {
            let n = CHUNK.min(3 * CHUNK + 17 - data.len());
            data.extend_from_slice(pat.window(off, n));
            off += n as u64;
        }
        assert!(pat.matches(1234, &data));
        for at in [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 5, data.len() - 1] {
            data[at] ^= 0x01;
            assert!(!pat.matches(1234, &data), "flip at {at} not caught");
            data[at] ^= 0x01;
        }
    }
}
