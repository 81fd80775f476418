//! Idle connections: open many, prove each works with a one-byte echo, then hold them open
//! doing nothing — what a server's memory per idle connection is measured against.

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Per-connection timeout for connect and the one-byte echo.
    pub timeout: Duration,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            connect: SocketAddr::from((Ipv4Addr::LOCALHOST, 9990)),
            conns: 1000,
            hold: Duration::from_secs(10),
            threads: 8,
            timeout: Duration::from_secs(10),
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
}

impl IdleReport {
    /// A few readable lines.
    pub fn to_table(&self) -> String {
        format!(
            "held          {} of {} idle connections for {:.1} s (from {} source address(es))\n\
             opened in     {:.2} s\n\
             errors        connect {}  echo {}\n",
            self.conns_held,
            self.conns_requested,
            self.held_secs,
            self.sources,
            self.open_secs,
            self.connect_errors,
            self.echo_errors
        )
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serialises")
    }
}

/// Opens `cfg.conns` connections, echoes one byte on each (checked), holds them idle for
/// `cfg.hold` or until `stop` is set, then closes them all.
///
/// Past 20,000 connections to a loopback IPv4 server, connections are spread over source
/// addresses 127.0.0.1, 127.0.0.2, ... so the ephemeral port range does not run out.
pub fn hold_idle(cfg: &IdleConfig, stop: &AtomicBool) -> io::Result<IdleReport> {
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
    let results: Vec<(Vec<TcpStream>, u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut held = Vec::new();
                    let (mut connect_errors, mut echo_errors) = (0, 0);
                    for i in (t..cfg.conns).step_by(threads) {
                        let source = (sources > 1)
                            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8));
                        match open(cfg, source) {
                            Ok(s) => match echo_one_byte(&s, i as u8) {
                                Ok(()) => held.push(s),
                                Err(_) => echo_errors += 1,
                            },
                            Err(_) => connect_errors += 1,
                        }
                    }
                    (held, connect_errors, echo_errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an idle-connection thread panicked"))
            .collect()
    });
    let open_secs = start.elapsed().as_secs_f64();
    let mut report = IdleReport {
        conns_requested: cfg.conns,
        conns_held: 0,
        connect_errors: 0,
        echo_errors: 0,
        sources,
        open_secs,
        held_secs: 0.0,
    };
    let mut streams = Vec::with_capacity(cfg.conns);
    for (held, c, e) in results {
        report.connect_errors += c;
        report.echo_errors += e;
        streams.extend(held);
    }
    report.conns_held = streams.len();
    let held_from = Instant::now();
    while held_from.elapsed() < cfg.hold && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(50).min(cfg.hold.saturating_sub(held_from.elapsed())),
        );
    }
    report.held_secs = held_from.elapsed().as_secs_f64();
    drop(streams);
    Ok(report)
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

fn echo_one_byte(mut s: &TcpStream, byte: u8) -> io::Result<()> {
    s.write_all(&[byte])?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back)?;
    if back[0] == byte {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "wrong byte echoed",
        ))
    }
}
