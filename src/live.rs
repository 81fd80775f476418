//! `load`'s live output: the start line, the `--interval` lines (as iperf3's `-i`), and
//! stopping on Ctrl-C / SIGINT / SIGTERM with the report for what ran.
//!
//! Everything here goes to stderr, so `--json` keeps stdout to its one object. The interval
//! lines difference the running totals the load workers publish ([`iomodels_load::Live`]),
//! so a line's latency percentiles are those of its span alone.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use iomodels_load::{Live, LoadConfig, Totals};

/// The line `load` prints on stderr before it connects.
pub(crate) fn start_line(cfg: &LoadConfig, interval: Option<Duration>) -> String {
    let mode = match (cfg.udp, cfg.tls.is_some(), cfg.handshakes) {
        (true, _, _) => "UDP",
        (false, true, true) => "TLS handshakes",
        (false, true, false) => "TLS",
        (false, false, _) => "plain TCP",
    };
    let unit = match (cfg.udp, cfg.conns) {
        (true, 1) => "socket",
        (true, _) => "sockets",
        (false, 1) => "connection",
        (false, _) => "connections",
    };
    let length = match cfg.messages_per_conn {
        Some(m) => format!("{m} messages per connection (at most {:?})", cfg.duration),
        None => format!("for {:?}", cfg.duration),
    };
    let every = match interval {
        Some(d) => format!("; a line every {d:?}"),
        None => String::new(),
    };
    let shape = match cfg.rate {
        Some(r) => format!("open loop at {r} msg/s"),
        None => format!("depth {}", cfg.depth),
    };
    format!(
        "load: {} ({mode}), {} {unit}, {shape}, {} B messages, {length}{every}",
        cfg.connect, cfg.conns, cfg.size
    )
}

/// What an `--interval` line counts: `msgs` (messages; with `udp`, datagrams, and the lost ones
/// too) or, with `--handshakes`, `handshakes` (completed cycles, the latency their cycle time).
#[derive(Clone, Copy)]
struct Unit {
    udp: bool,
    handshakes: bool,
    /// `--rate`: the lines show the sent rate too.
    rate: bool,
}

impl Unit {
    fn of(cfg: &LoadConfig) -> Unit {
        Unit {
            udp: cfg.udp,
            handshakes: cfg.handshakes,
            rate: cfg.rate.is_some(),
        }
    }
}

/// One `--interval` line: the span `from`–`to` (seconds since the start) and what `d` holds.
fn interval_line(from: f64, to: f64, d: &Totals, unit: Unit) -> String {
    let secs = (to - from).max(1e-9);
    let latency = if d.latency_us.is_empty() {
        "p50 - µs  p99 - µs".to_string()
    } else {
        format!(
            "p50 {} µs  p99 {} µs",
            d.latency_us.value_at_quantile(0.50),
            d.latency_us.value_at_quantile(0.99)
        )
    };
    let lost = if unit.udp {
        format!("  lost {}", d.lost)
    } else {
        String::new()
    };
    // Under --rate: the achieved send rate, beside the echoes.
    let sent = if unit.rate {
        format!("sent {:.0}/s  ", d.sent as f64 / secs)
    } else {
        String::new()
    };
    format!(
        "[{from:6.2}-{to:6.2} s]  {sent}{:.0} {}/s  {:.2} MB/s  {latency}  errors {}{lost}",
        d.messages as f64 / secs,
        if unit.handshakes {
            "handshakes"
        } else {
            "msgs"
        },
        d.bytes as f64 / secs / 1e6,
        d.errors
    )
}

/// The thread that prints the `--interval` lines until [`Intervals::finish`].
pub(crate) struct Intervals {
    done: mpsc::Sender<f64>,
    thread: JoinHandle<()>,
}

impl Intervals {
    /// Starts printing a line every `every` of the measurement, while messages are sent (until
    /// `cfg.duration`, or a stop).
    pub(crate) fn start(live: Arc<Live>, every: Duration, cfg: &LoadConfig) -> Result<Self> {
        let (done, rx) = mpsc::channel::<f64>();
        let (duration, unit) = (cfg.duration, Unit::of(cfg));
        let thread = std::thread::Builder::new()
            .name("intervals".into())
            .spawn(move || print_intervals(&live, every, duration, unit, &rx))
            .context("cannot start the --interval thread")?;
        Ok(Intervals { done, thread })
    }

    /// The run is over after `elapsed_secs`: prints the last, partial span, and stops.
    pub(crate) fn finish(self, elapsed_secs: f64) {
        let _ = self.done.send(elapsed_secs);
        let _ = self.thread.join();
    }
}

fn print_intervals(
    live: &Live,
    every: Duration,
    duration: Duration,
    unit: Unit,
    rx: &mpsc::Receiver<f64>,
) {
    let mut prev = live.totals();
    let start = loop {
        if let Some(s) = live.started() {
            break s;
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Finished (or failed) before it started: nothing to print.
            _ => return,
        }
    };
    let mut from = Duration::ZERO;
    loop {
        let to = from + every;
        // Past the sending window (or after a stop) only the drain is left: wait for the end.
        let sending = to <= duration && !live.is_stopped();
        let wait = if sending {
            (start + to).saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) if sending => {
                let now = live.totals();
                let line = interval_line(
                    from.as_secs_f64(),
                    to.as_secs_f64(),
                    &now.since(&prev),
                    unit,
                );
                eprintln!("{line}");
                prev = now;
                from = to;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(elapsed) => {
                let now = live.totals();
                let d = now.since(&prev);
                let span = elapsed - from.as_secs_f64();
                if d.messages > 0 && span >= 0.01 {
                    eprintln!("{}", interval_line(from.as_secs_f64(), elapsed, &d, unit));
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Which stop signal arrived (0: none yet): SIGINT / Ctrl-C or SIGTERM.
pub(crate) struct Stopped(Arc<AtomicI32>);

impl Stopped {
    /// The exit status the run ends with after its report: 128 + the signal, or `None`.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            sig => Some(128 + sig as u8),
        }
    }
}

/// Unix: the first SIGINT or SIGTERM stops the run (it drains and reports what ran); a second
/// one exits at once with 128 + its number.
#[cfg(unix)]
pub(crate) fn stop_on_signals(live: Arc<Live>) -> Result<Stopped> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    let which = Arc::new(AtomicI32::new(0));
    let seen = Arc::clone(&which);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                stopping(&live, &seen, name, sig);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(Stopped(which))
}

/// Windows: Ctrl-C (Ctrl-Break, the console closing) stops the run; a second one exits at once
/// (130).
#[cfg(windows)]
pub(crate) fn stop_on_signals(live: Arc<Live>) -> Result<Stopped> {
    use iomodels_server::sys::CtrlEvent;
    let which = Arc::new(AtomicI32::new(0));
    let seen = Arc::clone(&which);
    iomodels_server::sys::on_console_ctrl(move |event| match event {
        CtrlEvent::CtrlC => stopping(&live, &seen, "Ctrl-C", 2),
        CtrlEvent::Break => stopping(&live, &seen, "Ctrl-Break", 2),
        CtrlEvent::Close => stopping(&live, &seen, "console closing", 2),
    })
    .context("cannot install the console control handler")?;
    Ok(Stopped(which))
}

/// The first stop signal stops the run; the second exits at once.
fn stopping(live: &Live, seen: &AtomicI32, name: &str, sig: i32) {
    if seen
        .compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        eprintln!(
            "{name}: stopping; waiting for the messages in flight, then the report of what ran \
             ({name} again stops at once)"
        );
        live.stop();
    } else {
        eprintln!("{name} again: stopping now, no report");
        std::process::exit(128 + sig);
    }
}
