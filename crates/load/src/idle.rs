//! Many mostly idle connections: open them, prove each works with a one-byte echo, then hold
//! them open — silent (what a server's memory per idle connection is measured against), or
//! each echoing one small message per interval (the seed's 12,000-connection experiment).
//!
//! [`hold_idle`] holds them in this process, with blocking sockets on [`IdleConfig::threads`]
//! threads: one descriptor per connection, so at most the process's descriptor limit
//! (`RLIMIT_NOFILE`; 20,000 on the machine this was measured on). Holding more is the
//! caller's business: the `iomodels` binary splits a larger hold over several processes of
//! itself, each calling [`hold_idle`] for its part ([`IdleConfig::part`]), and sums their
//! reports (its `src/idle/mod.rs`).
//!
//! ## Source addresses
//!
//! One source address reaches one server through at most the ephemeral port range (Linux's
//! default, 32768-60999, is 28,232 ports), and Linux picks a connect's port among the even
//! ports first: past half the range (14,116) every further connect scans the taken half,
//! so opening slows down sharply (measured here: 100,000 connections at 20,000 per address
//! took 40-60 s, 75% of it in `__inet_hash_connect` / `__inet_check_established`; at
//! 10,000 per address, 3.6 s). So past [`PER_SOURCE`] (10,000) connections to an IPv4
//! loopback server, connection `i` of the whole plan binds to 127.0.0.(1 + i / [`PER_SOURCE`])
//! before it connects — with `IP_BIND_ADDRESS_NO_PORT` on Linux, so the port is chosen at
//! connect like an unbound socket's, not by bind's own search (slower still, and it fails
//! with `EADDRINUSE` well before the range is used up) — which reaches 254 × 10,000
//! connections ([`max_idle_conns`]). A process holding a part of a plan numbers its
//! connections from the part's first, so the parts never crowd one address past
//! [`PER_SOURCE`] between them. Any other server gets one source address and at most
//! 20,000 connections.
//!
//! ## What the report checks
//!
//! Every connection is *established* (connect succeeded), then *verified* (a one-byte echo
//! came back right: [`IdleReport::conns_held`]), and right before the close each held one is
//! checked to be *still open* (a non-blocking peek that finds neither the end of the stream
//! nor an error: [`IdleReport::conns_still_open`]; the others are
//! [`IdleReport::closed_by_server`]).

use iomodels_core::errno::describe;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Connections one source address opens to an IPv4 loopback server before the next address
/// is used: under half the default ephemeral range (28,232 ports), where Linux's even-first
/// port search stays quick (see the module doc).
pub const PER_SOURCE: usize = 10_000;

/// Connections to a server that gets one source address (not IPv4 loopback): most of the
/// ephemeral range, opened ever slower past half of it.
const ONE_SOURCE: usize = 20_000;

/// Source addresses 127.0.0.1 ..= 127.0.0.254 (127.0.0.255 is left alone).
const LOOPBACK_SOURCES: usize = 254;

/// The most connections the source-address plan reaches to `connect`: 254 × [`PER_SOURCE`]
/// to an IPv4 loopback server (spread over 127.0.0.x), 20,000 to any other.
pub fn max_idle_conns(connect: SocketAddr) -> usize {
    if spreads_sources(connect) {
        LOOPBACK_SOURCES * PER_SOURCE
    } else {
        ONE_SOURCE
    }
}

/// Source addresses a plan of `conns` connections to `connect` uses.
pub fn idle_sources(connect: SocketAddr, conns: usize) -> usize {
    if spreads_sources(connect) {
        conns.div_ceil(PER_SOURCE).max(1)
    } else {
        1
    }
}

fn spreads_sources(connect: SocketAddr) -> bool {
    matches!(connect.ip(), IpAddr::V4(ip) if ip.is_loopback())
}

/// A hold's place in a larger plan split over processes: its connections are numbered from
/// `first` in a plan of `total` (what source address each gets depends on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdlePart {
    /// The plan's index of this hold's first connection.
    pub first: usize,
    /// Connections in the whole plan.
    pub total: usize,
}

/// What to hold open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleConfig {
    /// The echo server.
    pub connect: SocketAddr,
    /// How many connections.
    pub conns: usize,
    /// How long to hold them once all are open (unless `stop` is set earlier).
    pub hold: Duration,
    /// Threads that open connections in parallel.
    pub threads: usize,
    /// Per-connection timeout for connect and every echo.
    pub timeout: Duration,
    /// While holding, each connection echoes one message of `size` bytes this often
    /// (`None`: silent).
    pub echo_every: Option<Duration>,
    /// Bytes per paced message.
    pub size: usize,
    /// A thread stops opening after this many failures in a row (`None`: never): how a ramp
    /// towards the server's limit ends without waiting out every timeout.
    pub give_up_after: Option<usize>,
    /// This hold is a part of a larger plan (`None`: the whole plan is `conns`).
    pub part: Option<IdlePart>,
}

/// Where [`hold_idle`] is, for its caller's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every connection is open and checked; the hold starts.
    Held,
    /// The hold is over; the connections are about to close.
    Closing,
}

impl IdleConfig {
    /// The plan's whole: this hold, or the larger one [`IdleConfig::part`] says it is part of.
    fn plan(&self) -> IdlePart {
        self.part.unwrap_or(IdlePart {
            first: 0,
            total: self.conns,
        })
    }

    /// Source addresses this hold's connections use (see the module doc).
    pub fn sources(&self) -> usize {
        let plan = self.plan();
        if idle_sources(self.connect, plan.total) > 1 && self.conns > 0 {
            (plan.first + self.conns - 1) / PER_SOURCE - plan.first / PER_SOURCE + 1
        } else {
            1
        }
    }
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            connect: SocketAddr::from((Ipv4Addr::LOCALHOST, 9990)),
            conns: 1000,
            hold: Duration::from_secs(10),
            threads: 8,
            timeout: Duration::from_secs(10),
            echo_every: None,
            size: 64,
            give_up_after: None,
            part: None,
        }
    }
}

/// What [`hold_idle`] achieved (or, summed, several processes' parts of one hold).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub conns_requested: usize,
    /// Connections whose connect succeeded.
    pub conns_established: usize,
    /// Connections *verified*: established, and their one-byte echo came back right; these
    /// are held.
    pub conns_held: usize,
    /// Held connections found still open right before the close (a non-blocking peek saw
    /// neither the end of the stream nor an error).
    pub conns_still_open: usize,
    /// Held connections found closed (end of stream) or reset by the server by then.
    pub closed_by_server: usize,
    /// Connections that could not be opened.
    pub connect_errors: u64,
    /// Connections whose one-byte echo failed or came back wrong.
    pub echo_errors: u64,
    /// The first connect or echo error's reason (`None`: there was none).
    pub first_error: Option<String>,
    /// Source addresses used (127.0.0.1, 127.0.0.2, ...: more than one past 10,000
    /// connections to an IPv4 loopback server).
    pub sources: usize,
    /// Processes that held the connections (1: this one).
    pub shards: usize,
    /// Seconds it took to open and check them all.
    pub open_secs: f64,
    /// Seconds they were held.
    pub held_secs: f64,
    /// Paced messages echoed and verified while holding.
    pub messages: u64,
    /// Paced messages that failed (I/O error) or came back wrong; a failed connection stops.
    pub message_errors: u64,
    /// Paced message rounds that could not be completed within their interval (the client
    /// fell behind).
    pub late_rounds: u64,
    /// Paced messages' round trip, median, in µs: from the message's write to the end of its
    /// echo's read. A round writes every message of a thread first and then reads them back in
    /// order, so this includes the client's own writing and reading of the thread's others.
    /// Summed over shards: the largest of theirs. `None` (`null`) with no paced message.
    pub paced_p50_us: Option<u64>,
    /// Paced messages' round trip, 99th percentile, in µs (as [`IdleReport::paced_p50_us`]).
    pub paced_p99_us: Option<u64>,
}

impl IdleReport {
    /// A few readable lines.
    pub fn to_table(&self) -> String {
        format!(
            "held          {} of {} connections for {:.1} s, from {} source address(es) in \
             {} process(es)\n\
             connections   requested {}  established {}  verified {}  still open at the end {}  \
             closed by the server {}\n\
             opened in     {:.2} s\n\
             paced         {} messages echoed, {} failed, {} late rounds, round trip {}\n\
             errors        connect {}  echo {}{}\n",
            self.conns_held,
            self.conns_requested,
            self.held_secs,
            self.sources,
            self.shards,
            self.conns_requested,
            self.conns_established,
            self.conns_held,
            self.conns_still_open,
            self.closed_by_server,
            self.open_secs,
            self.messages,
            self.message_errors,
            self.late_rounds,
            match (self.paced_p50_us, self.paced_p99_us) {
                (Some(p50), Some(p99)) => format!("p50 {p50} µs p99 {p99} µs"),
                _ => "-".to_string(),
            },
            self.connect_errors,
            self.echo_errors,
            match &self.first_error {
                Some(why) => format!("  (first: {why})"),
                None => String::new(),
            }
        )
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serialises")
    }

    /// Adds another part's counts to these (the times and the plan's figures — requested,
    /// sources, shards — are the caller's to set).
    pub fn add_part(&mut self, part: &IdleReport) {
        self.conns_established += part.conns_established;
        self.conns_held += part.conns_held;
        self.conns_still_open += part.conns_still_open;
        self.closed_by_server += part.closed_by_server;
        self.connect_errors += part.connect_errors;
        self.echo_errors += part.echo_errors;
        self.messages += part.messages;
        self.message_errors += part.message_errors;
        self.late_rounds += part.late_rounds;
        // Percentiles do not add up: the worst part's, an upper bound of the whole's.
        self.paced_p50_us = self.paced_p50_us.max(part.paced_p50_us);
        self.paced_p99_us = self.paced_p99_us.max(part.paced_p99_us);
        if self.first_error.is_none() {
            self.first_error.clone_from(&part.first_error);
        }
    }
}

/// Opens `cfg.conns` connections, echoes one byte on each (checked), holds them for
/// `cfg.hold` or until `stop` is set — silent, or echoing a message per `cfg.echo_every` —
/// then closes them all. `phase` is called on this thread when every connection is open
/// ([`Phase::Held`]) and when the hold is over ([`Phase::Closing`]), so the caller can read
/// the server's memory and CPU at those moments.
///
/// Past 10,000 connections to a loopback IPv4 server, connections are spread over source
/// addresses 127.0.0.1, 127.0.0.2, ... so the ephemeral port range does not run out (see the
/// module doc; with [`IdleConfig::part`], over the whole plan's addresses).
pub fn hold_idle(
    cfg: &IdleConfig,
    stop: &AtomicBool,
    phase: &mut dyn FnMut(Phase),
) -> io::Result<IdleReport> {
    let part = cfg.plan();
    check(cfg, part)?;
    // Bind to a source address only when the whole plan needs more than one.
    let bind = idle_sources(cfg.connect, part.total) > 1;
    let threads = cfg.threads.clamp(1, cfg.conns);
    let start = Instant::now();
    let opened = Barrier::new(threads + 1);
    let held = Barrier::new(threads + 1);
    let mut report = IdleReport {
        conns_requested: cfg.conns,
        sources: cfg.sources(),
        shards: 1,
        ..IdleReport::default()
    };
    let held_conns = AtomicUsize::new(0);
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (opened, held, held_conns) = (&opened, &held, &held_conns);
                scope.spawn(move || {
                    let source = |i: usize| bind.then(|| source_address(part.first + i));
                    let mut r = open_share(cfg, stop, t, threads, source);
                    held_conns.fetch_add(r.streams.len(), Ordering::Relaxed);
                    opened.wait();
                    hold(cfg, stop, t, &mut r);
                    for s in &r.streams {
                        if still_open(s) {
                            r.still_open += 1;
                        } else {
                            r.closed_by_server += 1;
                        }
                    }
                    held.wait();
                    r
                })
            })
            .collect();
        opened.wait();
        report.open_secs = start.elapsed().as_secs_f64();
        report.conns_held = held_conns.load(Ordering::Relaxed);
        let held_from = Instant::now();
        phase(Phase::Held);
        held.wait();
        report.held_secs = held_from.elapsed().as_secs_f64();
        phase(Phase::Closing);
        handles
            .into_iter()
            .map(|h| h.join().expect("an idle-connection thread panicked"))
            .collect()
    });
    add_up(&mut report, results);
    Ok(report)
}

/// Refuses a hold of no connections, or of more than the source addresses reach.
fn check(cfg: &IdleConfig, part: IdlePart) -> io::Result<()> {
    if cfg.conns == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--conns must be at least 1",
        ));
    }
    if part.first + cfg.conns > part.total || part.total > max_idle_conns(cfg.connect) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "connections {}..{} of {} to {}: beyond what the source addresses reach ({})",
                part.first,
                part.first + cfg.conns,
                part.total,
                cfg.connect,
                max_idle_conns(cfg.connect)
            ),
        ));
    }
    Ok(())
}

/// Opening thread `t` of `threads`: opens its share of the connections (numbers `t`, `t +
/// threads`, ..., each from `source(i)`), echoing one byte on each, until done, `stop`, or
/// `cfg.give_up_after` failures in a row.
fn open_share(
    cfg: &IdleConfig,
    stop: &AtomicBool,
    t: usize,
    threads: usize,
    source: impl Fn(usize) -> Option<Ipv4Addr>,
) -> ThreadResult {
    let mut r = ThreadResult::default();
    let mut failures_in_a_row = 0;
    for i in (t..cfg.conns).step_by(threads) {
        if cfg.give_up_after.is_some_and(|n| failures_in_a_row >= n) || stop.load(Ordering::Relaxed)
        {
            break;
        }
        let before = r.streams.len();
        let source = source(i);
        match open(cfg, source) {
            Ok(s) => {
                r.established += 1;
                match echo(&s, &[i as u8]) {
                    Ok(()) => r.streams.push(s),
                    Err(e) => {
                        r.echo_errors += 1;
                        r.first_error
                            .get_or_insert(format!("echo: {}", describe(&e)));
                    }
                }
            }
            Err(e) => {
                r.connect_errors += 1;
                r.first_error.get_or_insert(format!(
                    "connect from {}: {}",
                    source.map_or("any address".into(), |ip| ip.to_string()),
                    describe(&e)
                ));
            }
        }
        if r.streams.len() > before {
            failures_in_a_row = 0;
        } else {
            failures_in_a_row += 1;
        }
    }
    r
}

/// Adds the opening threads' counts into `report`, with the paced round trips' percentiles.
fn add_up(report: &mut IdleReport, results: Vec<ThreadResult>) {
    let mut round_trips: Vec<u64> = Vec::new();
    for r in results {
        report.conns_established += r.established;
        report.conns_still_open += r.still_open;
        report.closed_by_server += r.closed_by_server;
        round_trips.extend_from_slice(&r.round_trips_us);
        report.connect_errors += r.connect_errors;
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
        report.echo_errors += r.echo_errors;
        report.messages += r.messages;
        report.message_errors += r.message_errors;
        report.late_rounds += r.late_rounds;
    }
    round_trips.sort_unstable();
    let percentile = |q: f64| match round_trips.len() {
        0 => None,
        n => Some(round_trips[((n as f64 * q) as usize).min(n - 1)]),
    };
    report.paced_p50_us = percentile(0.50);
    report.paced_p99_us = percentile(0.99);
}

/// One opening thread's connections and counts.
#[derive(Default)]
struct ThreadResult {
    streams: Vec<TcpStream>,
    established: usize,
    still_open: usize,
    closed_by_server: usize,
    connect_errors: u64,
    echo_errors: u64,
    first_error: Option<String>,
    messages: u64,
    message_errors: u64,
    late_rounds: u64,
    /// Each paced message's round trip, in µs.
    round_trips_us: Vec<u64>,
}

/// Holds this thread's connections: sleeps, or echoes one message on each per interval
/// (all written first, then all read back, so the round costs one interval at most).
fn hold(cfg: &IdleConfig, stop: &AtomicBool, t: usize, r: &mut ThreadResult) {
    let from = Instant::now();
    let over = || from.elapsed() >= cfg.hold || stop.load(Ordering::Relaxed);
    let Some(every) = cfg.echo_every else {
        while !over() {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    };
    let mut msg = vec![0u8; cfg.size.max(1)];
    let mut back = vec![0u8; msg.len()];
    let mut round = 0u64;
    let mut alive = vec![true; r.streams.len()];
    let mut written = vec![Instant::now(); r.streams.len()];
    while !over() {
        round += 1;
        for (k, b) in msg.iter_mut().enumerate() {
            *b = (round as u8)
                .wrapping_mul(31)
                .wrapping_add(k as u8)
                .wrapping_add(t as u8);
        }
        for ((s, ok), at) in r
            .streams
            .iter()
            .zip(alive.iter_mut())
            .zip(written.iter_mut())
        {
            *at = Instant::now();
            if *ok && (&*s).write_all(&msg).is_err() {
                *ok = false;
                r.message_errors += 1;
            }
        }
        for ((s, ok), at) in r.streams.iter().zip(alive.iter_mut()).zip(written.iter()) {
            if !*ok {
                continue;
            }
            match (&*s).read_exact(&mut back) {
                Ok(()) if back == msg => {
                    r.messages += 1;
                    r.round_trips_us.push(at.elapsed().as_micros() as u64);
                }
                _ => {
                    *ok = false;
                    r.message_errors += 1;
                }
            }
        }
        let next = from + every * round as u32;
        let now = Instant::now();
        if now > next {
            r.late_rounds += 1;
        } else {
            let end = from + cfg.hold;
            while Instant::now() < next.min(end) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep((next.min(end) - Instant::now()).min(Duration::from_millis(20)));
            }
        }
    }
}

/// The source address of the plan's connection `i` (when the plan binds at all).
fn source_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8)
}

/// Whether the server has left `s` alone: a non-blocking peek finds nothing to read (no end of
/// stream, no error). Bytes waiting (none are expected) also count as open.
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    match s.peek(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

fn open(cfg: &IdleConfig, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(cfg.connect),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = source {
        // The port is picked at connect, not here (see the sys module).
        crate::sys::bind_address_no_port(&socket)?;
        socket.bind(&SockAddr::from(SocketAddr::from((ip, 0))))?;
    }
    socket.connect_timeout(&cfg.connect.into(), cfg.timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(cfg.timeout))?;
    stream.set_write_timeout(Some(cfg.timeout))?;
    Ok(stream)
}

fn echo(mut s: &TcpStream, msg: &[u8]) -> io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back == msg {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "wrong byte echoed",
        ))
    }
}
