//! `--trace`: every notification a model receives, one line each on stderr, so a learner can
//! watch the model work (`FD_READ fd=7`, `overflow: rescanning 812 sockets`).
//!
//! Off by default, and then free: [`trace_event!`] tests one bool before it formats anything.
//! Bounded: lines are for humans, so at most [`MAX_LINES_PER_SECOND`] a second are printed; the
//! rest are counted and reported as one `... N more trace lines` line when the second ends.

use crate::threads::lock;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most trace lines printed per second.
pub const MAX_LINES_PER_SECOND: u64 = 200;

/// A model's trace: off, or on with a rate limit shared by the model's threads.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    model: &'static str,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    printed: u64,
    suppressed: u64,
}

impl Trace {
    /// A trace for `model`, on if `on`.
    pub fn new(model: &'static str, on: bool) -> Trace {
        Trace {
            inner: on.then(|| {
                Arc::new(Inner {
                    model,
                    window: Mutex::new(Window {
                        start: Instant::now(),
                        printed: 0,
                        suppressed: 0,
                    }),
                })
            }),
        }
    }

    /// True if tracing is on (the only cost when it is off).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Prints one line `[model] <args>` on stderr, within the rate limit; false if the line
    /// was suppressed (or tracing is off). Use [`trace_event!`].
    pub fn emit(&self, args: fmt::Arguments<'_>) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let mut w = lock(&inner.window);
        let now = Instant::now();
        let stderr = std::io::stderr();
        let mut out = stderr.lock();
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            if w.suppressed > 0 {
                let _ = writeln!(
                    out,
                    "[{}] ... {} more trace lines (at most {MAX_LINES_PER_SECOND} a second)",
                    inner.model, w.suppressed
                );
            }
            *w = Window {
                start: now,
                printed: 0,
                suppressed: 0,
            };
        }
        if w.printed >= MAX_LINES_PER_SECOND {
            w.suppressed += 1;
            return false;
        }
        w.printed += 1;
        let _ = writeln!(out, "[{}] {}", inner.model, args);
        true
    }
}

/// `trace_event!(ctx.trace, "FD_READ fd={}", fd)`: prints a trace line if tracing is on;
/// formats nothing otherwise.
macro_rules! trace_event {
    ($trace:expr, $($arg:tt)*) => {
        if $trace.is_on() {
            let _ = $trace.emit(format_args!($($arg)*));
        }
    };
}
pub(crate) use trace_event;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_prints_nothing_and_on_is_bounded() {
        let off = Trace::new("test", false);
        assert!(!off.emit(format_args!("never")));
        let on = Trace::new("test", true);
        let printed = (0..MAX_LINES_PER_SECOND + 50)
            .filter(|i| on.emit(format_args!("line {i}")))
            .count() as u64;
        assert_eq!(printed, MAX_LINES_PER_SECOND);
    }
}
