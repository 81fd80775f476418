//! Many mostly idle connections: open them, prove each works with a one-byte echo, then hold
//! them open — silent (what a server's memory per idle connection is measured against), or
//! each echoing one small message per interval (the seed's 12,000-connection experiment).

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Connections one source address can open to one server before the ephemeral ports run out
/// (Linux's default range, 32768-60999, is 28,232 ports; leave room for other sockets).
const PER_SOURCE: usize = 20_000;

/// What to hold open.
#[derive(Debug, Clone)]
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
}

/// Where [`hold_idle`] is, for its caller's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every connection is open and checked; the hold starts.
    Held,
    /// The hold is over; the connections are about to close.
    Closing,
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
        }
    }
}

/// What [`hold_idle`] achieved.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub conns_requested: usize,
    /// Connections opened whose one-byte echo came back right, and that were then held.
    pub conns_held: usize,
    /// Connections that could not be opened.
    pub connect_errors: u64,
    /// Connections whose one-byte echo failed or came back wrong.
    pub echo_errors: u64,
    /// Source addresses used (127.0.0.1, 127.0.0.2, ...: more than one past 20,000
    /// connections to a loopback server).
    pub sources: usize,
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
}

impl IdleReport {
    /// A few readable lines.
    pub fn to_table(&self) -> String {
        format!(
            "held          {} of {} idle connections for {:.1} s (from {} source address(es))\n\
             opened in     {:.2} s\n\
             paced         {} messages echoed, {} failed, {} late rounds\n\
             errors        connect {}  echo {}\n",
            self.conns_held,
            self.conns_requested,
            self.held_secs,
            self.sources,
            self.open_secs,
            self.messages,
            self.message_errors,
            self.late_rounds,
            self.connect_errors,
            self.echo_errors
        )
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serialises")
    }
}

/// Opens `cfg.conns` connections, echoes one byte on each (checked), holds them for
/// `cfg.hold` or until `stop` is set — silent, or echoing a message per `cfg.echo_every` —
/// then closes them all. `phase` is called on this thread when every connection is open
/// ([`Phase::Held`]) and when the hold is over ([`Phase::Closing`]), so the caller can read
/// the server's memory and CPU at those moments.
///
/// Past 20,000 connections to a loopback IPv4 server, connections are spread over source
/// addresses 127.0.0.1, 127.0.0.2, ... so the ephemeral port range does not run out.
pub fn hold_idle(
    cfg: &IdleConfig,
    stop: &AtomicBool,
    phase: &mut dyn FnMut(Phase),
) -> io::Result<IdleReport> {
    if cfg.conns == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--conns must be at least 1",
        ));
    }
    let loopback_v4 = matches!(cfg.connect.ip(), IpAddr::V4(ip) if ip.is_loopback());
    let sources = if loopback_v4 {
        cfg.conns.div_ceil(PER_SOURCE)
    } else {
        1
    };
    let threads = cfg.threads.clamp(1, cfg.conns);
    let start = Instant::now();
    let opened = Barrier::new(threads + 1);
    let held = Barrier::new(threads + 1);
    let mut report = IdleReport {
        conns_requested: cfg.conns,
        conns_held: 0,
        connect_errors: 0,
        echo_errors: 0,
        sources,
        open_secs: 0.0,
        held_secs: 0.0,
        messages: 0,
        message_errors: 0,
        late_rounds: 0,
    };
    let held_conns = AtomicUsize::new(0);
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (opened, held, held_conns) = (&opened, &held, &held_conns);
                scope.spawn(move || {
                    let mut r = ThreadResult::default();
                    let mut failures_in_a_row = 0;
                    for i in (t..cfg.conns).step_by(threads) {
                        if cfg.give_up_after.is_some_and(|n| failures_in_a_row >= n)
                            || stop.load(Ordering::Relaxed)
                        {
                            break;
                        }
                        let before = r.streams.len();
                        let source = (sources > 1)
                            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8));
                        match open(cfg, source) {
                            Ok(s) => match echo(&s, &[i as u8]) {
                                Ok(()) => r.streams.push(s),
                                Err(_) => r.echo_errors += 1,
                            },
                            Err(_) => r.connect_errors += 1,
                        }
                        if r.streams.len() > before {
                            failures_in_a_row = 0;
                        } else {
                            failures_in_a_row += 1;
                        }
                    }
                    held_conns.fetch_add(r.streams.len(), Ordering::Relaxed);
                    opened.wait();
                    hold(cfg, stop, t, &mut r);
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
    for r in results {
        report.connect_errors += r.connect_errors;
        report.echo_errors += r.echo_errors;
        report.messages += r.messages;
        report.message_errors += r.message_errors;
        report.late_rounds += r.late_rounds;
    }
    Ok(report)
}

/// One opening thread's connections and counts.
#[derive(Default)]
struct ThreadResult {
    streams: Vec<TcpStream>,
    connect_errors: u64,
    echo_errors: u64,
    messages: u64,
    message_errors: u64,
    late_rounds: u64,
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
    while !over() {
        round += 1;
        for (k, b) in msg.iter_mut().enumerate() {
            *b = (round as u8)
                .wrapping_mul(31)
                .wrapping_add(k as u8)
                .wrapping_add(t as u8);
        }
        for (s, ok) in r.streams.iter().zip(alive.iter_mut()) {
            if *ok && (&*s).write_all(&msg).is_err() {
                *ok = false;
                r.message_errors += 1;
            }
        }
        for (s, ok) in r.streams.iter().zip(alive.iter_mut()) {
            if !*ok {
                continue;
            }
            match (&*s).read_exact(&mut back) {
                Ok(()) if back == msg => r.messages += 1,
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

fn open(cfg: &IdleConfig, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(cfg.connect),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = source {
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
