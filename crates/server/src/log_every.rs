//! Log lines for conditions that repeat — the connection cap reached and left, descriptor
//! exhaustion, refused connections, TLS failures, UDP drops: at most about one line a second
//! per call site, each saying how many like it were left out since the last one. A client
//! cycling one connection at `--max-conns 1` used to write 10–16 thousand identical lines in
//! 3 s. What a line leaves out is still counted in the server's counters.

use crate::threads::lock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One call site's limiter: at most one line a second, counting the ones left out.
#[derive(Debug)]
pub struct LogEvery {
    last: Mutex<Option<Instant>>,
    left_out: AtomicU64,
}

impl LogEvery {
    /// The shortest time between two lines of one call site.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// A limiter that has logged nothing yet (for a `static`).
    pub const fn new() -> LogEvery {
        LogEvery {
            last: Mutex::new(None),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log the line now, saying that `n` were left out since the last one; `None`:
    /// leave it out (counted for the next line).
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = lock(&self.last);
        if last.is_some_and(|t| now.saturating_duration_since(t) < Self::INTERVAL) {
            self.left_out.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.left_out.swap(0, Relaxed))
    }

    /// What a line adds for the `n` left out before it: nothing, or ` (N more like it since
    /// the last such line)`.
    pub fn more(n: u64) -> String {
        match n {
            0 => String::new(),
            n => format!(" ({n} more like it since the last such line)"),
        }
    }
}

impl Default for LogEvery {
    fn default() -> Self {
        LogEvery::new()
    }
}

/// `log_every!(warn, "accept: {e}")`: logs at that level at most about once a second from
/// this call site (server-wide), with the count of lines left out.
macro_rules! log_every {
    ($level:ident, $($arg:tt)+) => {{
        static EVERY: $crate::log_every::LogEvery = $crate::log_every::LogEvery::new();
        if let Some(n) = EVERY.allow() {
            log::$level!(
                "{}{}",
                format_args!($($arg)+),
                $crate::log_every::LogEvery::more(n)
            );
        }
    }};
}
pub(crate) use log_every;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_left_out() {
        let every = LogEvery::new();
        assert_eq!(every.allow(), Some(0), "the first line goes out");
        assert_eq!((every.allow(), every.allow()), (None, None));
        *every.last.lock().unwrap() = Some(Instant::now() - LogEvery::INTERVAL);
        assert_eq!(every.allow(), Some(2), "the next says two were left out");
        assert_eq!(every.allow(), None);
        assert_eq!(LogEvery::more(0), "");
        assert!(LogEvery::more(7).contains("7 more"));
    }
}
