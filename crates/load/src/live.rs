//! Watching and stopping a run while it goes on: [`Live`].
//!
//! A run started with [`crate::run_live`] checks its [`Live`] at least every
//! [`STOP_CHECK`]: once [`Live::stop`] was called, no new message (datagram, cycle) starts,
//! exactly as when `duration` runs out, and the run drains and reports what it did (the
//! command line calls `stop` on Ctrl-C / SIGINT / SIGTERM). With [`Live::new`]`(true)`, each
//! worker also publishes its running totals (messages, bytes, errors and its cumulative latency
//! histogram) every [`PUBLISH_EVERY`], and [`Live::totals`] sums them: the difference of two
//! totals is what happened in between (the `--interval` lines). Publishing copies a
//! histogram (some 200 KB) per worker 50 times a second; it is off unless asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::worker::Counters;

/// How often a worker of a live run publishes its totals.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// The longest a worker waits before it looks at [`Live::stop`] again.
pub(crate) const STOP_CHECK: Duration = Duration::from_millis(50);

/// A handle on a running load: ask it to stop, read its running totals.
#[derive(Debug, Default)]
pub struct Live {
    publish: bool,
    stop: AtomicBool,
    started: OnceLock<Instant>,
    slots: Mutex<Vec<Option<Totals>>>,
}

/// Running totals of a live run (all workers summed), as of their last publication.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Messages (datagrams; with handshakes: echoes of completed cycles) echoed and verified.
    pub messages: u64,
    /// Messages (datagrams; with handshakes: echoes of completed cycles) sent: whose first
    /// byte was written.
    pub sent: u64,
    /// Payload bytes echoed and verified.
    pub bytes: u64,
    /// Connect, I/O, mismatch and TLS errors.
    pub errors: u64,
    /// `--udp`: datagrams counted lost.
    pub lost: u64,
    /// Every latency recorded so far (µs; under `--rate`, from the schedule); with
    /// handshakes, cycle times.
    pub latency_us: Histogram<u64>,
}

impl Totals {
    fn empty() -> Totals {
        Totals {
            messages: 0,
            sent: 0,
            bytes: 0,
            errors: 0,
            lost: 0,
            latency_us: crate::new_histogram(),
        }
    }

    /// What happened between `earlier` and these totals (the latencies of that span only).
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut latency_us = self.latency_us.clone();
        // Totals only grow, so this cannot go negative; on the off chance, keep all.
        if latency_us.subtract(&earlier.latency_us).is_err() {
            latency_us = self.latency_us.clone();
        }
        Totals {
            messages: self.messages.saturating_sub(earlier.messages),
            sent: self.sent.saturating_sub(earlier.sent),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            errors: self.errors.saturating_sub(earlier.errors),
            lost: self.lost.saturating_sub(earlier.lost),
            latency_us,
        }
    }
}

impl Live {
    /// A handle for one run; `publish`: workers publish their totals for [`Live::totals`].
    pub fn new(publish: bool) -> Live {
        Live {
            publish,
            ..Live::default()
        }
    }

    /// Asks the run to stop starting messages, drain and report (idempotent; from any thread).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Live::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// When the measurement started (every connection connected); `None` before.
    pub fn started(&self) -> Option<Instant> {
        self.started.get().copied()
    }

    /// The workers' totals as last published (all zero without publishing).
    pub fn totals(&self) -> Totals {
        let mut sum = Totals::empty();
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for t in slots.iter().flatten() {
            sum.messages += t.messages;
            sum.sent += t.sent;
            sum.bytes += t.bytes;
            sum.errors += t.errors;
            sum.lost += t.lost;
            // Auto-resizing histograms cannot fail to add.
            let _ = sum.latency_us.add(&t.latency_us);
        }
        sum
    }

    /// A worker's measurement starts now.
    pub(crate) fn mark_started(&self, at: Instant) {
        let _ = self.started.set(at);
    }

    /// Worker `index`'s publisher.
    pub(crate) fn publisher(&self, index: usize) -> Publisher<'_> {
        Publisher {
            live: self,
            index,
            next: Instant::now(),
        }
    }
}

/// One worker's side of a [`Live`]: when to look at it again, and its publications.
pub(crate) struct Publisher<'a> {
    live: &'a Live,
    index: usize,
    next: Instant,
}

impl Publisher<'_> {
    /// Whether the run was asked to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.live.is_stopped()
    }

    /// The latest a worker may sleep until, from `wake_at`: soon enough to see a stop, and
    /// the next publication.
    pub(crate) fn cap(&self, now: Instant, wake_at: Instant) -> Instant {
        let mut at = wake_at.min(now + STOP_CHECK);
        if self.live.publish {
            at = at.min(self.next.max(now));
        }
        at
    }

    /// Whether a publication is due at `now` (never without publishing).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if self.live.publish && now >= self.next {
            self.next = now + PUBLISH_EVERY;
            return true;
        }
        false
    }

    /// Publishes this worker's totals: `messages` echoed, `bytes` of them, `sent` messages.
    pub(crate) fn publish(
        &self,
        messages: u64,
        bytes: u64,
        sent: u64,
        r: &Counters,
        hist: &Histogram<u64>,
    ) {
        if !self.live.publish {
            return;
        }
        let totals = Totals {
            messages,
            sent,
            bytes,
            errors: r.connect_errors + r.io_errors + r.mismatches + r.tls_errors,
            lost: r.udp_lost,
            latency_us: hist.clone(),
        };
        let mut slots = self.live.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= self.index {
            slots.resize(self.index + 1, None);
        }
        slots[self.index] = Some(totals);
    }
}
