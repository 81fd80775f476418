//! # iomodels-load: a closed- and open-loop echo load generator that checks every byte
//!
//! [`run`] opens [`LoadConfig::conns`] TCP connections to an echo server and keeps exactly
//! [`LoadConfig::depth`] messages of [`LoadConfig::size`] bytes in flight on each: a new message
//! starts only when an earlier one has been echoed back in full. This is a *closed loop* — the
//! offered load adapts to the server's speed, so the message rate measures how fast the server
//! (plus the loopback path and this generator) turns messages around, and the latency is the
//! round-trip time at that load, never a queue growing without bound.
//!
//! With [`LoadConfig::rate`] the loop is *open*: messages are sent on a schedule (see
//! [Open loop](#open-loop-rate) below) and timed from when they were due.
//!
//! The connections are non-blocking sockets (TCP_NODELAY on) spread over
//! [`LoadConfig::threads`] threads, each with its own poll (mio's; `WSAPoll` on Windows, see
//! [below](#windows)); all connects are issued at once, and the clock starts when every thread has finished connecting. After
//! [`LoadConfig::duration`] (or [`LoadConfig::messages_per_conn`] messages) no new message
//! starts; the generator waits up to [`LoadConfig::drain_timeout`] for the echoes still in
//! flight, shuts down its write side, reads to the server's end of stream (briefly) and closes.
//!
//! ## Verification
//!
//! Each connection sends its own deterministic byte stream: the byte at stream offset `i` of
//! connection `c` is `base[(phase(c) + i) mod P]`, where `base` is a fixed table of
//! pseudo-random bytes with prime period `P = 65521` and `phase(c)` differs for every
//! connection. Everything read back is compared, as whole slices, with what the stream should
//! hold at that offset; so corruption, loss, duplication, reordering and crossed connections
//! are all caught, and the bytes sent are written straight out of the same table. A connection
//! whose echo differs counts once in [`LoadReport::mismatches`] and is closed.
//!
//! ## The numbers
//!
//! * [`LoadReport::messages`] / [`LoadReport::bytes`]: round trips and payload bytes echoed
//!   back and verified; [`LoadReport::msgs_per_sec`] and [`LoadReport::mb_per_sec`] divide
//!   them by [`LoadReport::elapsed_secs`], the measured interval (all connects done → last echo
//!   verified, or drain timeout expired).
//! * [`LoadReport::latency_us`]: per-message round-trip time in microseconds (HDR histogram,
//!   3 significant figures), from the write of a message's first byte to the read that
//!   completed its echo.
//! * [`LoadReport::client_cpu_percent`]: the generator's own CPU use over the interval, in % of
//!   one core; when it approaches `100 × threads`, the generator is the bottleneck, not the
//!   server.
//! * [`LoadReport::connect_errors`], [`LoadReport::io_errors`], [`LoadReport::mismatches`],
//!   [`LoadReport::tls_errors`], [`LoadReport::incomplete`]: what went wrong;
//!   [`LoadReport::is_clean`] is true when nothing did.
//! * [`LoadReport::failures`] and [`LoadReport::error`]: *why* — every connection (socket,
//!   cycle) that failed is classified where it failed (see the `failure` module): refused,
//!   reset or timed out with the errno name, closed by the server mid-run, TLS records on a
//!   plain connection (add `--tls`), a server that sends nothing back (then the drain after the
//!   duration is short, [`LoadConfig::drain_timeout`] is not waited out), echoes still missing
//!   at the drain timeout, connections served only after the run (a server at its connection
//!   cap), a mismatch, a TLS failure, a UDP server that does not answer; and
//!   `error` is the one sentence that says it, the same for every mode (`None` when clean).
//! * A figure that does not exist is `None` (`null` in JSON): the latency of a run in which
//!   nothing was echoed, the rates of a run with no measured interval.
//!
//! ## Open loop (`rate`)
//!
//! With [`LoadConfig::rate`] = `R`, message `k` of connection `c` is due at
//! `start + (c + k·conns) / R` (the connections staggered by `1 / R`); a connection writes it
//! when it is due if fewer than `depth` of its messages are unanswered (depth 1: as wrk2, the
//! next waits for the echo of the last), and as soon as it can otherwise. Each completed
//! message is timed from its *due* time into [`LoadReport::latency_us`], so a server that
//! falls behind shows its backlog in the latency instead of slowing the generator down
//! unseen (coordinated omission), and from its actual write into
//! [`LoadReport::service_latency_us`]. The report adds the requested, sent and received rates
//! and the messages unanswered, unsent and held back (`rate_*`, `null` in the closed loop);
//! unanswered messages do not make a paced run unclean (a server that answers nothing
//! at all still fails it). Due times are computed, never stored;
//! on Linux a timerfd wakes the workers when a message is due (see the `schedule` module for
//! the pitfalls). The same schedule paces TCP, TLS and UDP.
//!
//! ## TLS
//!
//! With [`LoadConfig::tls`], every connection speaks TLS through a rustls client session driven
//! sans-I/O inside the same event loop (see the `tls` module): the handshake is part of
//! connecting (before the clock starts), the plaintext is verified and timed exactly as the
//! bytes of a plain connection, and each connection sends a `close_notify` before it shuts
//! its write side. A session that fails (a certificate the client refuses, a client
//! certificate the server wants, an alert) counts in [`LoadReport::tls_errors`], and the first
//! reason is kept in [`LoadReport::tls_error`].
//!
//! With [`LoadConfig::handshakes`] as well, connections are not kept: each of the `conns`
//! slots runs cycles of connect, full TLS handshake, one echo of `size` bytes, `close_notify`
//! and close, and the report counts [`LoadReport::handshakes`] (completed cycles) per second,
//! with the cycle time in [`LoadReport::latency_us`] (see the `cycle` module).
//!
//! ## UDP
//!
//! With [`LoadConfig::udp`], each of the `conns` is a UDP socket `connect`ed to the server,
//! keeping `depth` datagrams of `size` bytes in flight; each datagram carries its sequence
//! number, so every echo is verified byte for byte and matched even out of order. A datagram
//! not answered within [`LoadConfig::udp_timeout`] is counted lost and replaced, so loss never
//! stalls the run; echoes that come after their timeout, or twice, are counted apart (see the
//! `udp` module and [`UdpCounts`]).
//!
//! ## Windows
//!
//! Everything above works the same on Windows (flags, verification, report, JSON; TCP, TLS,
//! handshakes, UDP, `--rate`, idle holds). Only the poll differs: mio's epoll elsewhere, on
//! Windows an edge-triggered poll emulated over `WSAPoll` (the `poll` module: why not mio's
//! Windows backend, the re-arming rules, `WSAPoll`'s O(sockets) cost and its pitfalls), and
//! the `--rate` timer is the poll's millisecond timeout (Windows' timer ticks at 15.6 ms
//! unless a process asks for finer, so paced messages may go out up to a tick late, which the
//! latency from the schedule shows). The client CPU figure comes from `GetThreadTimes`. Tested
//! under Wine 8, whose figures measure Wine's user-space socket layer, not Winsock.
//!
//! ## Watching and stopping a run
//!
//! [`run_live`] takes a [`Live`]: [`Live::stop`] (from another thread: a signal handler's)
//! ends the run as its duration would, and the report covers what ran; with
//! [`Live::new`]`(true)` the workers publish running totals that [`Live::totals`] sums, for
//! per-interval lines (see the `live` module).
//!
//! ```no_run
//! let cfg = iomodels_load::LoadConfig {
//!     conns: 100,
//!     duration: std::time::Duration::from_secs(3),
//!     ..Default::default()
//! };
//! let report = iomodels_load::run(&cfg)?;
//! println!("{}", report.to_table());
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod cpu;
mod cycle;
mod failure;
mod idle;
mod live;
mod pattern;
mod poll;
mod report;
mod schedule;
mod sys;
mod tls;
mod udp;
mod worker;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::AddAssign;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use failure::{Failure, FailureKind};
pub use idle::{
    hold_idle, idle_sources, max_idle_conns, IdleConfig, IdlePart, IdleReport, Phase, PER_SOURCE,
};
pub use live::{Live, Totals};
pub use report::{Latency, LoadReport, UdpCounts};
pub use schedule::MAX_RATE;
pub use tls::TlsClient;
pub use udp::{HEADER as UDP_HEADER, MAX_DATAGRAM as UDP_MAX_DATAGRAM};

use cpu::{cpu_time, Who};
use cycle::run_cycle_worker;
use udp::run_udp_worker;
use worker::{run_worker, Counters, Gate, WorkerResult};

/// The largest accepted [`LoadConfig::depth`].
const MAX_DEPTH: usize = 1 << 20;

/// What load to generate, and against which server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// Address of the echo server.
    pub connect: SocketAddr,
    /// Number of connections, at least 1.
    pub conns: usize,
    /// Bytes per message, at least 1.
    pub size: usize,
    /// Messages kept in flight per connection, at least 1.
    pub depth: usize,
    /// Stop starting new messages after this long, measured from when all connects finished.
    pub duration: Duration,
    /// If `Some(m)`, each connection sends exactly `m` messages and then finishes (or stops
    /// earlier, when `duration` runs out first).
    pub messages_per_conn: Option<u64>,
    /// Threads to spread the connections over; 0 means `min(conns, available_parallelism)`.
    pub threads: usize,
    /// How long all the connects together may take; connects still pending then fail.
    pub connect_timeout: Duration,
    /// After sending stops, how long to wait for outstanding echoes.
    pub drain_timeout: Duration,
    /// Speak TLS on every connection (`None`: plain TCP).
    pub tls: Option<TlsClient>,
    /// Measure handshakes instead of messages: each connection repeatedly connects, does a
    /// full TLS handshake, echoes one message of `size` bytes and closes; `messages_per_conn`
    /// then limits the cycles per connection. Needs `tls`, and `depth` 1.
    pub handshakes: bool,
    /// Load a UDP echo server: `conns` UDP sockets, each with `depth` datagrams of `size`
    /// bytes in flight ([`UDP_HEADER`] ≤ `size` ≤ [`UDP_MAX_DATAGRAM`]); `messages_per_conn`
    /// then counts the datagrams each socket sends. No TLS, no handshakes.
    pub udp: bool,
    /// With `udp`: a datagram not echoed within this time is counted lost and replaced.
    pub udp_timeout: Duration,
    /// Open loop: send `rate` messages (datagrams) per second in total, each connection on a
    /// schedule, and time each message from when it was due (see the `schedule` module);
    /// `None`: the closed loop of `depth` messages in flight. With a rate, `depth` is the most
    /// messages a connection leaves unanswered (1: as wrk2, the next waits for the echo, timed
    /// from its due time). Not with `handshakes`.
    pub rate: Option<u64>,
}

impl Default for LoadConfig {
    /// 127.0.0.1:9990, 1 connection, 64 B messages, depth 1, 10 s, no message limit, automatic
    /// threads, 5 s connect timeout, 5 s drain timeout, plain TCP, messages (not handshakes);
    /// with `udp`, a 200 ms loss timeout.
    fn default() -> LoadConfig {
        LoadConfig {
            connect: SocketAddr::from((Ipv4Addr::LOCALHOST, 9990)),
            conns: 1,
            size: 64,
            depth: 1,
            duration: Duration::from_secs(10),
            messages_per_conn: None,
            threads: 0,
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            tls: None,
            handshakes: false,
            udp: false,
            udp_timeout: Duration::from_millis(200),
            rate: None,
        }
    }
}

impl LoadConfig {
    /// Checks the settings; the error is a one-line reason naming the command-line option.
    pub fn validate(&self) -> Result<(), String> {
        if self.conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        if self.size == 0 {
            return Err("--size must be at least 1".into());
        }
        if self.depth == 0 {
            return Err("--depth must be at least 1".into());
        }
        if self.depth > MAX_DEPTH {
            return Err(format!("--depth must be at most {MAX_DEPTH}"));
        }
        if self.duration.is_zero() {
            return Err("--duration must be greater than zero".into());
        }
        if self.messages_per_conn == Some(0) {
            return Err("--messages must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("--connect-timeout must be greater than zero".into());
        }
        if self.connect.port() == 0 {
            return Err("--connect needs a non-zero port".into());
        }
        if self.udp {
            if self.tls.is_some() {
                return Err("--udp has no TLS (there is no DTLS here): drop --tls".into());
            }
            if self.handshakes {
                return Err("--handshakes measures TLS handshakes over TCP: drop --udp".into());
            }
            if self.size < udp::HEADER {
                return Err(format!(
                    "--size must be at least {} with --udp (each datagram starts with its \
                     {}-byte sequence number)",
                    udp::HEADER,
                    udp::HEADER
                ));
            }
            if self.size > udp::MAX_DATAGRAM {
                return Err(format!(
                    "--size must be at most {} with --udp (the largest UDP payload over IPv4)",
                    udp::MAX_DATAGRAM
                ));
            }
            if self.udp_timeout.is_zero() {
                return Err("--udp-timeout must be greater than zero".into());
            }
        }
        if let Some(rate) = self.rate {
            if rate == 0 {
                return Err("--rate must be at least 1 message per second".into());
            }
            if rate > MAX_RATE {
                return Err(format!(
                    "--rate must be at most {MAX_RATE} messages per second"
                ));
            }
            if self.handshakes {
                return Err(
                    "--rate paces messages; --handshakes measures cycles: drop one of them".into(),
                );
            }
        }
        if self.handshakes && self.tls.is_none() {
            return Err("--handshakes measures TLS handshakes: add --tls --tls-ca FILE".into());
        }
        if self.handshakes && self.depth != 1 {
            return Err("--handshakes sends one message per connection: --depth must be 1".into());
        }
        Ok(())
    }

    /// The number of threads `run` will use.
    fn effective_threads(&self) -> usize {
        let wanted = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        };
        wanted.clamp(1, self.conns.max(1))
    }
}

/// Runs the load described by `cfg` and reports what it measured.
///
/// Returns `Err` only when the run cannot be set up (an invalid configuration, as
/// [`io::ErrorKind::InvalidInput`], or no poll instance or thread can be created); failures of
/// individual connections are counted in the report instead.
pub fn run(cfg: &LoadConfig) -> io::Result<LoadReport> {
    run_live(cfg, &Live::default())
}

/// [`run`], watched through `live`: [`Live::stop`] ends the run early (no new message starts;
/// the run drains and reports what it did), and with [`Live::new`]`(true)` its running totals
/// can be read while it goes on ([`Live::totals`]).
pub fn run_live(cfg: &LoadConfig, live: &Live) -> io::Result<LoadReport> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = cfg.effective_threads();
    let polls = (0..threads)
        .map(|_| poll::Poll::new())
        .collect::<io::Result<Vec<_>>>()?;

    // Every cycle of `--handshakes` is a full handshake: no session is resumed.
    let cycle_tls = match (&cfg.tls, cfg.handshakes) {
        (Some(tls), true) => Some(tls.without_resumption()),
        _ => None,
    };
    let gate = Gate::new();
    let barrier = Barrier::new(threads);
    let process_cpu_start = cpu_time(Who::Process);
    let wall_start = Instant::now();
    let results: io::Result<Vec<WorkerResult>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut spawn_error = None;
        for (i, poll) in polls.into_iter().enumerate() {
            let (gate, barrier, cycle_tls) = (&gate, &barrier, cycle_tls.as_ref());
            let spawned = std::thread::Builder::new()
                .name(format!("iomodels-load-{i}"))
                .spawn_scoped(scope, move || {
                    gate.wait().then(|| match cycle_tls {
                        Some(tls) => run_cycle_worker(poll, i, threads, cfg, tls, barrier, live),
                        None if cfg.udp => run_udp_worker(poll, i, threads, cfg, barrier, live),
                        None => run_worker(poll, i, threads, cfg, barrier, live),
                    })
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        gate.open(spawn_error.is_none());
        let mut results = Vec::with_capacity(threads);
        for h in handles {
            match h.join() {
                Ok(Some(r)) => results.push(r),
                Ok(None) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match spawn_error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    });
    let results = results?;
    let wall = wall_start.elapsed();
    let process_cpu = match (process_cpu_start, cpu_time(Who::Process)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(merge(cfg, threads, results, process_cpu.map(|c| (c, wall))))
}

/// An empty latency histogram: microseconds, 3 significant figures, sized for up to 10 s so
/// that the hot path does not have to grow it, but auto-resizing beyond that.
pub(crate) fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)
        .expect("1 µs .. 10 s at 3 significant figures is a valid histogram");
    h.auto(true);
    h
}

/// Combines the workers' results into one report.
fn merge(
    cfg: &LoadConfig,
    threads: usize,
    results: Vec<WorkerResult>,
    process_cpu: Option<(Duration, Duration)>,
) -> LoadReport {
    let mut sum = Sum::default();
    for w in &results {
        sum += w;
    }
    sum.into_report(cfg, threads, process_cpu)
}

/// The workers' results added up (see [`merge`]).
struct Sum {
    /// Every counter of every worker (see `Counters`'s `AddAssign`).
    counters: Counters,
    hist: Histogram<u64>,
    established: usize,
    /// The earliest start and the latest end of the workers' measurements.
    start: Option<Instant>,
    end: Option<Instant>,
    /// The threads' CPU time; `None` if a worker could not tell.
    thread_cpu: Option<Duration>,
}

impl Default for Sum {
    fn default() -> Sum {
        Sum {
            counters: Counters {
                service: Some(new_histogram()),
                ..Counters::default()
            },
            hist: new_histogram(),
            established: 0,
            start: None,
            end: None,
            thread_cpu: Some(Duration::ZERO),
        }
    }
}

impl AddAssign<&WorkerResult> for Sum {
    fn add_assign(&mut self, w: &WorkerResult) {
        self.counters += &w.counters;
        // Auto-resizing histograms cannot fail to add.
        let _ = self.hist.add(&w.hist);
        self.established += w.established;
        self.start = worker::earliest(self.start, Some(w.start));
        self.end = worker::latest(self.end, w.end);
        self.thread_cpu = match (self.thread_cpu, w.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

impl Sum {
    /// The report: the sums, then the figures computed from them.
    fn into_report(
        mut self,
        cfg: &LoadConfig,
        threads: usize,
        process_cpu: Option<(Duration, Duration)>,
    ) -> LoadReport {
        let mut report = self.counts(cfg, threads);
        if let Some(u) = report.udp.as_mut() {
            if u.sent > 0 {
                u.loss_percent = Some(100.0 * u.lost as f64 / u.sent as f64);
            }
            // Datagrams went out and not one came back, with no refusal to say why: nobody
            // answers there (or a firewall drops them).
            if u.sent > 0 && u.received == 0 && u.refused == 0 {
                self.counters.failures.add(Failure {
                    conns: report.conns_established as u64,
                    ..Failure::of(FailureKind::NoAnswer)
                });
            }
        }
        report.elapsed_secs = seconds(self.start, self.end);
        if let Some(rate) = cfg.rate {
            self.rate_figures(&mut report, rate);
        }
        if report.elapsed_secs > 0.0 {
            self.speeds(&mut report, cfg, process_cpu);
        }
        report.failures = std::mem::take(&mut self.counters.failures).into_list();
        report.error = failure::explain(&report);
        report
    }

    /// The report's totals, as summed; the figures computed from them still unset.
    fn counts(&self, cfg: &LoadConfig, threads: usize) -> LoadReport {
        let c = &self.counters;
        LoadReport {
            connect: cfg.connect.to_string(),
            conns_requested: cfg.conns,
            conns_established: self.established,
            size: cfg.size,
            depth: cfg.depth,
            threads,
            connect_errors: c.connect_errors,
            io_errors: c.io_errors,
            mismatches: c.mismatches,
            messages: c.messages,
            bytes: c.bytes,
            elapsed_secs: 0.0,
            msgs_per_sec: None,
            mb_per_sec: None,
            latency_us: Latency::from_histogram(&self.hist),
            client_cpu_percent: None,
            incomplete: c.incomplete,
            tls: cfg.tls.is_some(),
            mode: if cfg.handshakes {
                "handshakes"
            } else if cfg.udp {
                "udp"
            } else {
                "echo"
            }
            .to_string(),
            handshakes: c.handshakes,
            handshakes_per_sec: None,
            handshake_failures: c.cycle_failures,
            tls_errors: c.tls_errors,
            tls_error: c.tls_error.clone(),
            error: None,
            failures: Vec::new(),
            udp: cfg.udp.then_some(UdpCounts {
                sent: c.udp_sent,
                received: c.messages,
                lost: c.udp_lost,
                loss_percent: None,
                late: c.udp_late,
                duplicated: c.udp_duplicated,
                refused: c.udp_refused,
                timeout_ms: cfg.udp_timeout.as_millis() as u64,
            }),
            rate_requested_per_sec: None,
            rate_sent_per_sec: None,
            rate_received_per_sec: None,
            rate_sent: None,
            rate_unanswered: None,
            rate_unsent: None,
            rate_held_back: None,
            service_latency_us: None,
        }
    }

    /// The `--rate` figures of the report: rates asked, sent and received, and the pacing.
    fn rate_figures(&self, report: &mut LoadReport, rate: u64) {
        let pacing = &self.counters.pacing;
        let sending = seconds(self.start, self.counters.send_end);
        let elapsed = report.elapsed_secs;
        report.rate_requested_per_sec = Some(rate as f64);
        report.rate_sent_per_sec = Some(if sending > 0.0 {
            pacing.sent as f64 / sending
        } else {
            0.0
        });
        report.rate_received_per_sec = Some(if elapsed > 0.0 {
            report.messages as f64 / elapsed
        } else {
            0.0
        });
        report.rate_sent = Some(pacing.sent);
        report.rate_unanswered = Some(pacing.sent.saturating_sub(report.messages));
        report.rate_unsent = Some(pacing.unsent);
        report.rate_held_back = Some(pacing.held_back);
        let service = self.counters.service.as_ref();
        report.service_latency_us = service.and_then(Latency::from_histogram);
    }

    /// The report's figures per second of a measured interval, and the client's CPU use.
    fn speeds(
        &self,
        report: &mut LoadReport,
        cfg: &LoadConfig,
        process_cpu: Option<(Duration, Duration)>,
    ) {
        let elapsed = report.elapsed_secs;
        report.msgs_per_sec = Some(report.messages as f64 / elapsed);
        report.mb_per_sec = Some(report.bytes as f64 / elapsed / 1e6);
        if cfg.handshakes {
            report.handshakes_per_sec = Some(report.handshakes as f64 / elapsed);
        }
        report.client_cpu_percent = match (self.thread_cpu, process_cpu) {
            (Some(cpu), _) => Some(cpu.as_secs_f64() / elapsed * 100.0),
            (None, Some((cpu, wall))) if !wall.is_zero() => {
                Some(cpu.as_secs_f64() / wall.as_secs_f64() * 100.0)
            }
            _ => None,
        };
    }
}

/// Seconds from `start` to `end`; 0 when either is unknown.
fn seconds(start: Option<Instant>, end: Option<Instant>) -> f64 {
    match (start, end) {
        (Some(s), Some(e)) => e.saturating_duration_since(s).as_secs_f64(),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_as_documented() {
        let c = LoadConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.connect, "127.0.0.1:9990".parse().unwrap());
        assert_eq!((c.conns, c.size, c.depth, c.threads), (1, 64, 1, 0));
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.messages_per_conn, None);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!((c.tls.is_none(), c.handshakes), (true, false));
    }

    #[test]
    fn validate_rejects_zeroes_with_one_line_reasons() {
        let bad = [
            LoadConfig {
                conns: 0,
                ..Default::default()
            },
            LoadConfig {
                size: 0,
                ..Default::default()
            },
            LoadConfig {
                depth: 0,
                ..Default::default()
            },
            LoadConfig {
                depth: MAX_DEPTH + 1,
                ..Default::default()
            },
            LoadConfig {
                duration: Duration::ZERO,
                ..Default::default()
            },
            LoadConfig {
                messages_per_conn: Some(0),
                ..Default::default()
            },
            LoadConfig {
                connect_timeout: Duration::ZERO,
                ..Default::default()
            },
            LoadConfig {
                connect: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            },
            LoadConfig {
                handshakes: true,
                ..Default::default()
            },
        ];
        for cfg in bad {
            let e = cfg.validate().unwrap_err();
            assert!(e.starts_with("--") && !e.contains('\n'), "{e}");
        }
        assert_eq!(
            LoadConfig {
                conns: 0,
                ..Default::default()
            }
            .validate(),
            Err("--conns must be at least 1".to_string())
        );
        let err = run(&LoadConfig {
            conns: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn validate_rejects_udp_combinations_with_one_line_reasons() {
        let udp = |c: LoadConfig| LoadConfig { udp: true, ..c };
        let cases = [
            (
                udp(LoadConfig {
                    size: 7,
                    ..Default::default()
                }),
                "at least 8",
            ),
            (
                udp(LoadConfig {
                    size: 65_508,
                    ..Default::default()
                }),
                "at most 65507",
            ),
            (
                udp(LoadConfig {
                    handshakes: true,
                    ..Default::default()
                }),
                "drop --udp",
            ),
            (
                udp(LoadConfig {
                    udp_timeout: Duration::ZERO,
                    ..Default::default()
                }),
                "--udp-timeout",
            ),
        ];
        for (cfg, want) in cases {
            let e = cfg.validate().unwrap_err();
            assert!(
                e.starts_with("--") && !e.contains('\n') && e.contains(want),
                "{e}"
            );
        }
        for size in [UDP_HEADER, 64, UDP_MAX_DATAGRAM] {
            assert_eq!(
                udp(LoadConfig {
                    size,
                    ..Default::default()
                })
                .validate(),
                Ok(())
            );
        }
    }

    #[test]
    fn rate_is_checked_and_goes_with_depth_and_udp_not_handshakes() {
        let rate = |rate, more: LoadConfig| LoadConfig {
            rate: Some(rate),
            ..more
        };
        for (cfg, want) in [
            (rate(0, LoadConfig::default()), "at least 1"),
            (rate(MAX_RATE + 1, LoadConfig::default()), "at most"),
            (
                rate(
                    10,
                    LoadConfig {
                        handshakes: true,
                        tls: None,
                        ..Default::default()
                    },
                ),
                "--handshakes",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(
                e.starts_with("--") && !e.contains('\n') && e.contains(want),
                "{e}"
            );
        }
        for ok in [
            rate(1, LoadConfig::default()),
            rate(MAX_RATE, LoadConfig::default()),
            rate(
                1000,
                LoadConfig {
                    depth: 64,
                    ..Default::default()
                },
            ),
            rate(
                1000,
                LoadConfig {
                    udp: true,
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(ok.validate(), Ok(()));
        }
    }

    #[test]
    fn merge_reports_the_sum_of_every_counter_of_every_worker() {
        let t0 = Instant::now();
        let worker = |n: u64| {
            let mut hist = new_histogram();
            hist.record(n).unwrap();
            WorkerResult {
                hist,
                established: n as usize / 100,
                counters: worker::tests::every_field_set(n, t0),
                start: t0,
                end: Some(t0 + Duration::from_secs(1)),
                cpu: Some(Duration::from_millis(n)),
            }
        };
        let cfg = LoadConfig {
            udp: true,
            rate: Some(1000),
            ..Default::default()
        };
        let r = merge(&cfg, 2, vec![worker(100), worker(1000)], None);
        let counts = [
            r.connect_errors,
            r.io_errors,
            r.mismatches,
            r.messages,
            r.bytes,
            r.incomplete,
            r.tls_errors,
            r.handshakes,
            r.handshake_failures,
        ];
        assert_eq!(
            counts.to_vec(),
            (0..9).map(|i| 1100 + 2 * i).collect::<Vec<_>>()
        );
        let u = r.udp.as_ref().expect("a UDP run");
        let udp = [u.sent, u.lost, u.late, u.duplicated, u.refused, u.received];
        assert_eq!(udp, [1118, 1120, 1122, 1124, 1126, r.messages]);
        let pacing = (r.rate_sent, r.rate_held_back, r.rate_unsent);
        assert_eq!(pacing, (Some(1132), Some(1134), Some(1136)));
        assert_eq!(r.rate_unanswered, Some(1132 - 1106));
        // Sending ended 1 s after the start (the later worker's end), as the measurement.
        assert_eq!(r.rate_sent_per_sec, Some(1132.0));
        assert_eq!(r.elapsed_secs, 1.0);
        assert_eq!(r.conns_established, 11);
        assert_eq!(r.tls_error.as_deref(), Some("tls 100"));
        assert_eq!(
            r.latency_us.as_ref().map(|l| (l.min, l.max)),
            Some((100, 1000))
        );
        let service = r.service_latency_us.as_ref().map(|l| (l.min, l.max));
        assert_eq!(service, Some((100, 1000)));
        // 1.1 s of thread CPU over 1 s.
        let cpu = r.client_cpu_percent.expect("every worker told its CPU");
        assert!((cpu - 110.0).abs() < 1e-9, "{cpu}");
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].conns, 1100);
    }

    #[test]
    fn threads_are_capped_by_conns() {
        let c = LoadConfig {
            conns: 3,
            threads: 8,
            ..Default::default()
        };
        assert_eq!(c.effective_threads(), 3);
        let c = LoadConfig {
            conns: 1,
            threads: 0,
            ..Default::default()
        };
        assert_eq!(c.effective_threads(), 1);
        let c = LoadConfig {
            conns: 100,
            threads: 2,
            ..Default::default()
        };
        assert_eq!(c.effective_threads(), 2);
    }
}
