//! The adversarial suite (issue #16): the peer-side attacks, each by real peers against a real
//! server in this process, its live counters checked, generated for every model and variant
//! (Linux, and Windows under Wine).
//!
//! - **Slowloris**: silent connections (connect, send nothing) and trickling ones (a byte every
//!   [`TRICKLE_EVERY`], its echo read back) beside a client served byte for byte. Without
//!   `--idle-timeout` all stay open and nothing is reset; with it the silent ones are closed
//!   (`idle_closed`, the peers see the end of the stream) and the trickling ones, whose bytes
//!   come more often than the timeout, stay and keep getting their echoes.
//! - **Handshake slowloris**: TLS connections that send half a ClientHello and then trickle a
//!   byte every 0.3 s are all closed at `--handshake-timeout` (`tls_handshake_timeouts`), none
//!   before it, none ever answered, while a good TLS client is served.
//! - **A flood past `--max-conns`**: 200 clients at once against a cap of 20: `active` never
//!   above the cap, nobody accepted and dropped, every client served once earlier ones leave.
//! - **Urgent data** (item 9): `abc`, urgent `X`, `def` come back as `abcXdef`, no stall.
//! - **A port in use** (item 7): a second server on a port a server of any model holds
//!   (completion-port's SO_REUSEPORT listeners included) fails to bind with `AddrInUse`.
//!   `tests/cli.rs` checks the binary's one-line error and exit status.
//! - **Forged UDP sources** (item 1; Linux, a raw socket, root as CI runs): a datagram forged
//!   from the server's own address and port, from port 0, or from another echo server on its
//!   port is dropped once (`udp_loop_dropped`), never looped. Windows has no raw UDP sockets
//!   that may forge a source; the rule is the same shared function there, and
//!   `udp_conformance.rs` checks it with real sockets.
//!
//! Elsewhere, because they need a process of their own: select's default cap below
//! `FD_SETSIZE` with 1,100 idle clients (item 5, `tests/hardening.rs`), select's refusal of a
//! descriptor past `FD_SETSIZE` (`select_fd_setsize.rs`), the small-descriptor-limit reserve
//! (item 10), a client cycling at the cap and the log lines it costs (item 6), and the
//! operator's side — a broken stdout, a second stop signal, absurd flag values (items 4, 8,
//! 11) — all in `tests/hardening.rs`. Answers from the address a datagram was sent to (item 2)
//! are part of the UDP contract: `udp_conformance.rs` (127.0.0.2, `::1`, both OSes) and
//! `tests/udp_netns.rs` (a second address across a veth link, IPv4 and IPv6).
//!
//! The counts. This process holds both ends of every connection, so a connection costs two
//! descriptors here (the limit is raised to the hard one first). The heavy cases run one at a
//! time ([`alone`]). 1,000 silent + 1,000 trickling + 1 served, and 1,000 half-handshakes, on
//! every model on both OSes but `select` on Linux: 200 + 200 and 300 half-handshakes there,
//! because its clients' and its own descriptors share the 1,024 that `select(2)` can watch
//! (its default cap, 960, holds 2,001 connections to other processes no more: 450 + 450 is
//! what README measures through the binary). On Windows no default cap is in the way (no
//! descriptor limit; select's set holds 16,384, the event models spread over groups of 64).
//! Every loop is bounded in count and time; nothing asserts a speed, the
//! bounds only catch hangs. Figures (RSS, time to close) are printed (`--nocapture`).

mod common;

use common::{
    alone, cap_slack, client_hello, connect, echo_messages, good_client, is_reset, is_timeout,
    ping, server_tls, shared, tls_ping, try_connect, wait_for, Bystander, Variant, CLIENT_TIMEOUT,
};
use iomodels_server::{Model, RunningServer, Server, ServerConfig, ServerError, StatsSnapshot};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to close and count what a case expects (generous: Wine is
/// slow, and a loaded machine must not fail these tests).
const SETTLE: Duration = Duration::from_secs(60);

/// How often a trickling slowloris connection sends its byte: well inside [`IDLE`].
const TRICKLE_EVERY: Duration = Duration::from_millis(500);

/// The idle timeout of the slowloris case that has one: 2 s, and 6 s under Wine, where one
/// round of 1,000 trickled echoes took more than 2 s on a loaded machine (the blocking model,
/// two CPU burners beside it): the trickling connections must beat the timeout by a wide
/// margin for the case to test the server rather than the machine.
const IDLE: Duration = if cfg!(windows) {
    Duration::from_secs(6)
} else {
    Duration::from_secs(2)
};

/// The handshake deadline of the handshake slowloris.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);

/// How often a trickled handshake sends one more byte.
const HANDSHAKE_TRICKLE_EVERY: Duration = Duration::from_millis(300);

/// Silent connections, and as many trickling ones, of a slowloris against `v` (module doc).
fn slowloris_count(v: Variant) -> usize {
    if cfg!(target_os = "linux") && v.model == Model::Select {
        200
    } else {
        1_000
    }
}

/// Half-handshakes of the handshake slowloris against `v` (module doc).
fn handshake_slowloris_count(v: Variant) -> usize {
    if cfg!(target_os = "linux") && v.model == Model::Select {
        300
    } else {
        1_000
    }
}

/// Starts `v` as [`Variant::start`] does, and returns the connection cap it resolved.
fn start_with_cap(v: Variant, tweak: impl FnOnce(&mut ServerConfig)) -> (RunningServer, usize) {
    let mut config = ServerConfig {
        model: v.model,
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    (v.configure)(&mut config);
    tweak(&mut config);
    let server = Server::bind(config).expect("bind a loopback port");
    let cap = server.max_conns();
    (server.spawn().expect("spawn the server thread"), cap)
}

/// The process's resident set in KiB (server and test clients together), where it can be read.
#[cfg(target_os = "linux")]
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(windows)]
fn rss_kib() -> Option<u64> {
    None
}

/// The variant's name, as the test's (`completion_port_handoff::...`), for the figures.
fn variant_name() -> String {
    let name = thread::current().name().unwrap_or("?").to_string();
    name.split("::").next().unwrap_or("?").to_string()
}

fn mib(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:+.1} MiB", (a as f64 - b as f64) / 1024.0),
        _ => "not measured here".into(),
    }
}

/// How a connection the test holds stands, read without waiting.
#[derive(Debug, PartialEq, Eq)]
enum Peer {
    /// Nothing to read, not ended.
    Open,
    /// The end of the stream.
    Eof,
    /// A reset (or an abort).
    Reset,
    /// Bytes came.
    Bytes(usize),
}

fn peek_state(s: &TcpStream) -> Peer {
    s.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 64];
    let state = loop {
        match (&*s).read(&mut buf) {
            Ok(0) => break Peer::Eof,
            Ok(n) => break Peer::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => break Peer::Open,
            Err(e) if is_reset(&e) => break Peer::Reset,
            Err(e) => panic!("reading a held connection: {e}"),
        }
    };
    s.set_nonblocking(false).expect("blocking");
    state
}

/// Reads a held connection until it ends (bounded by `within`): its end, or `Open` if it
/// did not end in time.
fn wait_end(s: &TcpStream, within: Duration) -> Peer {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 64];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return Peer::Eof,
            Ok(n) => return Peer::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Peer::Open,
            Err(e) if is_reset(&e) => return Peer::Reset,
            Err(e) => panic!("reading a held connection: {e}"),
        }
    }
}

/// Trickling connections on one thread: it opens them, at most [`TRICKLE_BATCH`] a round (so
/// that none waits long for its first byte), and every [`TRICKLE_EVERY`] each open one sends
/// one byte and reads its echo back, until told to stop (after one more round at least) or a
/// bound of rounds.
struct Trickler {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicI64>,
    opened: Arc<AtomicI64>,
    thread: thread::JoinHandle<Result<Vec<TcpStream>, String>>,
}

/// Trickling connections opened per round.
const TRICKLE_BATCH: usize = 100;

impl Trickler {
    fn start(addr: SocketAddr, n: usize) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicI64::new(0));
        let opened = Arc::new(AtomicI64::new(0));
        let (flag, count, made) = (Arc::clone(&stop), Arc::clone(&rounds), Arc::clone(&opened));
        let thread = thread::spawn(move || -> Result<Vec<TcpStream>, String> {
            let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
            // Bounded: at most 400 rounds (200 s), stopped long before.
            for round in 0..400u32 {
                let started = Instant::now();
                for _ in 0..TRICKLE_BATCH.min(n - conns.len()) {
                    let i = conns.len();
                    conns.push(try_connect(addr).map_err(|e| format!("trickler {i}: {e}"))?);
                }
                made.store(conns.len() as i64, Ordering::SeqCst);
                let byte = [b'a' + (round % 26) as u8];
                for (i, mut s) in conns.iter().enumerate() {
                    s.write_all(&byte)
                        .map_err(|e| format!("trickler {i}: send in round {round}: {e}"))?;
                }
                for (i, mut s) in conns.iter().enumerate() {
                    let mut back = [0u8; 1];
                    s.read_exact(&mut back)
                        .map_err(|e| format!("trickler {i}: echo in round {round}: {e}"))?;
                    if back != byte {
                        return Err(format!("trickler {i}: round {round} came back different"));
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                if flag.load(Ordering::SeqCst) {
                    return Ok(conns);
                }
                if let Some(rest) = TRICKLE_EVERY.checked_sub(started.elapsed()) {
                    thread::sleep(rest);
                }
            }
            Err("the trickle was never told to stop".into())
        });
        Trickler {
            stop,
            rounds,
            opened,
            thread,
        }
    }

    fn rounds(&self) -> i64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until all `n` are open and a round ran over them all.
    fn wait_open(&self, n: usize) {
        let ran = common::eventually(SETTLE, || {
            self.opened.load(Ordering::SeqCst) == n as i64 || self.thread.is_finished()
        });
        assert!(ran, "the trickling connections were not all opened");
        self.wait_rounds(1);
    }

    /// Waits (bounded) until `n` more rounds ran (or the trickle failed: [`Trickler::finish`]
    /// says why).
    fn wait_rounds(&self, n: i64) {
        let target = self.rounds() + n;
        let ran = common::eventually(SETTLE, || {
            self.rounds() >= target || self.thread.is_finished()
        });
        assert!(ran, "the trickle stalled at round {}", self.rounds());
    }

    /// Stops it; fails the test if any trickling connection lost an echo or its connection.
    fn finish(self) -> (Vec<TcpStream>, i64) {
        self.stop.store(true, Ordering::SeqCst);
        let conns = self
            .thread
            .join()
            .expect("the trickler panicked")
            .unwrap_or_else(|e| panic!("a trickling connection was not served: {e}"));
        (conns, self.rounds.load(Ordering::SeqCst))
    }
}

/// `n` connections to `addr`.
fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| try_connect(addr).unwrap_or_else(|e| panic!("connection {i} of {n}: {e}")))
        .collect()
}

/// The served client of a slowloris: 100 messages of 1,000 bytes, each echo checked.
fn served_client(addr: SocketAddr) -> thread::JoinHandle<io::Result<()>> {
    thread::spawn(move || {
        let mut s = try_connect(addr)?;
        s.set_nodelay(true)?;
        echo_messages(&mut s, 0x51_0e, 100, 1000)
    })
}

/// `conns` clients, a thread each, that all connect first (those past the cap complete their
/// handshake in the listen backlog) and meet at a gate — so the flood is at the server all at
/// once, however slowly threads start (Wine) — then each echoes `messages` messages of `size`
/// bytes two deep, every byte checked, half-closes and must read the end of the stream with
/// nothing after its echoes.
fn flood(addr: SocketAddr, conns: usize, messages: u64, size: usize) -> common::ClientsReport {
    let gate = Arc::new(common::Gate::new(conns));
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let gate = Arc::clone(&gate);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(u64, u64), String> {
                    let s = try_connect(addr).map_err(|e| format!("client {i}: connect: {e}"));
                    gate.arrive_and_wait(CLIENT_TIMEOUT * 3);
                    let mut s = s?;
                    s.set_nodelay(true).unwrap();
                    let done = common::echo_two_deep(&mut s, i, messages, size)?;
                    s.shutdown(std::net::Shutdown::Write)
                        .map_err(|e| format!("client {i}: shutdown: {e}"))?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest)
                        .map_err(|e| format!("client {i}: read to EOF: {e}"))?;
                    if !rest.is_empty() {
                        return Err(format!("client {i}: {} bytes after its echoes", rest.len()));
                    }
                    Ok(done)
                })
                .expect("spawn a client thread")
        })
        .collect();
    common::ClientsReport::collect(threads)
}

/// What a slowloris run saw: its count of each kind, and the counters with the served client gone.
struct Slowloris {
    count: usize,
    st: StatsSnapshot,
}

/// Opens `count` silent and `count` trickling connections, serves a client beside them, and
/// checks what `idle` (the `--idle-timeout`) does to them.
fn slowloris(v: Variant, idle: Option<Duration>) -> Slowloris {
    let count = slowloris_count(v);
    let (server, cap) = start_with_cap(v, |c| c.idle_timeout = idle);
    assert!(
        cap > 2 * count,
        "{count} + {count} + 1 connections do not fit the cap {cap}"
    );
    let addr = server.addr;
    let (trickler, silent, rss_held) = open_slowloris(&server, count, idle);
    let client = served_client(addr);
    client
        .join()
        .expect("the served client panicked")
        .unwrap_or_else(|e| panic!("the client beside the slowloris was not served: {e}"));
    idle_timeout_takes_only_the_silent(&server, &trickler, &silent, count, idle);
    let (trickling, rounds) = trickler.finish();
    let st = slowloris_counted(&server, &trickling, count, idle);
    eprintln!(
        "slowloris {} idle {idle:?}: {count} silent + {count} trickling held: RSS {rss_held}, \
         active {}, idle_closed {}, {rounds} trickle rounds",
        variant_name(),
        st.active,
        st.idle_closed
    );
    drop((silent, trickling));
    wait_for(&server, SETTLE, "every connection gone", |s| s.active == 0);
    ping(&mut connect(addr), b"still serving");
    server.stop().expect("the server stops cleanly");
    common::assert_no_server_panic();
    Slowloris { count, st }
}

/// After a warm-up client, opens the `count` trickling and the `count` silent connections and
/// waits until the server has accepted them all: the trickler, the silent ones, and the RSS
/// they added (as [`mib`] shows it).
fn open_slowloris(
    server: &RunningServer,
    count: usize,
    idle: Option<Duration>,
) -> (Trickler, Vec<TcpStream>, String) {
    ping(&mut connect(server.addr), b"warm up");
    wait_for(server, SETTLE, "the warm-up gone", |s| s.active == 0);
    let rss_before = rss_kib();
    let trickler = Trickler::start(server.addr, count);
    trickler.wait_open(count);
    let silent = open(server.addr, count);
    // With the idle timeout, the first silent ones may be closed already.
    let held = wait_for(server, SETTLE, "every slowloris connection accepted", |s| {
        s.accepted == 2 * count as u64 + 1
    });
    let rss_held = mib(rss_before, rss_kib());
    if idle.is_none() {
        assert_eq!(held.active, 2 * count as i64, "{held:?}");
    }
    (trickler, silent, rss_held)
}

/// Without an idle timeout every silent connection is still open after twice [`IDLE`] of
/// trickling; with one, every silent connection is closed (counted, and the peer reads the
/// end of the stream), and the trickle goes on past two more idle timeouts.
fn idle_timeout_takes_only_the_silent(
    server: &RunningServer,
    trickler: &Trickler,
    silent: &[TcpStream],
    count: usize,
    idle: Option<Duration>,
) {
    if idle.is_some() {
        wait_for(server, SETTLE, "the silent connections closed", |s| {
            s.idle_closed >= count as u64
        });
        for (i, s) in silent.iter().enumerate() {
            assert_eq!(
                wait_end(s, CLIENT_TIMEOUT),
                Peer::Eof,
                "silent connection {i} after --idle-timeout"
            );
        }
    }
    // Past what an idle timeout of IDLE would have allowed, twice over.
    let rounds = (2 * IDLE.as_millis() / TRICKLE_EVERY.as_millis()) as i64;
    trickler.wait_rounds(rounds);
    if idle.is_none() {
        for (i, s) in silent.iter().enumerate() {
            assert_eq!(peek_state(s), Peer::Open, "silent connection {i}");
        }
    }
}

/// The counters once the served client is gone: the silent ones closed by the idle timeout
/// (if any) and nothing else, every connection accepted, no refusal, error or slow-reader
/// close; and every trickling connection still open.
fn slowloris_counted(
    server: &RunningServer,
    trickling: &[TcpStream],
    count: usize,
    idle: Option<Duration>,
) -> StatsSnapshot {
    let st = wait_for(server, SETTLE, "the served client gone", |s| {
        s.active
            == match idle {
                None => 2 * count as i64,
                Some(_) => count as i64,
            }
    });
    let idle_closed = if idle.is_some() { count as u64 } else { 0 };
    assert_eq!(st.idle_closed, idle_closed, "{st:?}");
    assert_eq!(st.accepted, 2 * count as u64 + 2, "{st:?}");
    assert_eq!(st.refused, 0, "{st:?}");
    assert_eq!(st.errors, 0, "{st:?}");
    assert_eq!(st.slow_reader_closed, 0, "{st:?}");
    for (i, s) in trickling.iter().enumerate() {
        assert_eq!(peek_state(s), Peer::Open, "trickling connection {i}");
    }
    st
}

/// One half-handshake of the handshake slowloris.
struct HalfHandshake {
    sock: TcpStream,
    connected: Instant,
    sent: usize,
    ended: Option<(Duration, Peer)>,
}

/// Connects `count` clients to `addr`, each sending `first` (half a ClientHello) at once.
fn open_half_handshakes(addr: SocketAddr, count: usize, first: &[u8]) -> Vec<HalfHandshake> {
    (0..count)
        .map(|i| {
            let mut sock =
                try_connect(addr).unwrap_or_else(|e| panic!("half-handshake {i} of {count}: {e}"));
            let connected = Instant::now();
            sock.write_all(first)
                .unwrap_or_else(|e| panic!("half-handshake {i}: send: {e}"));
            HalfHandshake {
                sock,
                connected,
                sent: first.len(),
                ended: None,
            }
        })
        .collect()
}

/// Every [`HANDSHAKE_TRICKLE_EVERY`] (a pace on purpose: the trickle is the attack), sends
/// each open peer one more byte of `hello` (never the last) and notes when and how the server
/// ended it, until the server has ended every one (bounded: the deadline plus [`SETTLE`] from
/// `started`, the first connect).
fn trickle_until_closed(peers: &mut [HalfHandshake], hello: &[u8], started: Instant) {
    let count = peers.len();
    // Bounded: the deadline plus generous slack (a hang fails, speed is not tested).
    let bound = started + HANDSHAKE_DEADLINE + SETTLE;
    let mut open = count;
    while open > 0 {
        assert!(
            Instant::now() < bound,
            "{open} of {count} half-handshakes still open {:?} after the first connect",
            started.elapsed()
        );
        let round = Instant::now();
        for p in peers.iter_mut().filter(|p| p.ended.is_none()) {
            if p.sent < hello.len() - 1 && (&p.sock).write_all(&hello[p.sent..p.sent + 1]).is_ok() {
                p.sent += 1;
            }
            let state = peek_state(&p.sock);
            if state != Peer::Open {
                p.ended = Some((p.connected.elapsed(), state));
                open -= 1;
            }
        }
        if let Some(rest) = HANDSHAKE_TRICKLE_EVERY.checked_sub(round.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// Every half-handshake ended in an end of stream or a reset (no byte back), none before
/// [`HANDSHAKE_DEADLINE`] from its connect, and the trickle ran (some sent 2 bytes or more
/// past the first `half`).
fn closed_at_the_deadline_never_answered(peers: &[HalfHandshake], half: usize) {
    let count = peers.len();
    for (i, p) in peers.iter().enumerate() {
        let (after, how) = p.ended.as_ref().unwrap();
        assert!(
            matches!(how, Peer::Eof | Peer::Reset),
            "half-handshake {i}: {how:?} (bytes back for an incomplete ClientHello)"
        );
        assert!(
            *after >= HANDSHAKE_DEADLINE,
            "half-handshake {i} closed ({how:?}) {after:?} after its connect, before the \
             {HANDSHAKE_DEADLINE:?} deadline"
        );
    }
    // Each trickled until the server closed it, and none was kept past the deadline for it
    // (checked above). How many got a second byte in depends on how long connecting them all
    // took (under Wine on a loaded machine, most of the deadline): the trickle ran is all
    // this asserts, with the count printed.
    let trickled = peers.iter().filter(|p| p.sent >= half + 2).count();
    println!("handshake slowloris: {trickled} of {count} trickled 2 bytes or more");
    assert!(
        trickled > 0,
        "the trickle did not run: none of {count} sent 2 bytes or more"
    );
}

#[cfg(target_os = "linux")]
mod forged {
    //! Forged UDP sources through a raw socket (root).
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};

    pub const WAIT: Duration = Duration::from_secs(5);

    fn v4(addr: SocketAddr) -> (Ipv4Addr, u16) {
        match addr.ip() {
            IpAddr::V4(ip) => (ip, addr.port()),
            IpAddr::V6(_) => panic!("an IPv4 address"),
        }
    }

    /// Sends `payload` to `to` as a UDP datagram from `from`, whatever socket holds `from` (a
    /// raw socket: the kernel writes the IP header with the source address the socket is bound
    /// to; the UDP header, source port included, is ours; checksum 0: none, legal over IPv4).
    pub fn forge(from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let ((src, sport), (dst, dport)) = (v4(from), v4(to));
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .expect("a raw socket (needs root, as CI runs)");
        raw.bind(&SocketAddr::from((src, 0)).into())
            .expect("bind the raw socket");
        let mut d = Vec::with_capacity(8 + payload.len());
        d.extend_from_slice(&sport.to_be_bytes());
        d.extend_from_slice(&dport.to_be_bytes());
        d.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        raw.send_to(&d, &SocketAddr::from((dst, 0)).into())
            .expect("send the forged datagram");
    }

    /// An ordinary sender's datagram is echoed (after whatever was forged before it).
    pub fn echoed(to: SocketAddr) {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.connect(to).unwrap();
        c.send(b"ordinary").unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).expect("the ordinary datagram's echo");
        assert_eq!(&buf[..n], b"ordinary");
    }
}

mod cases {
    use super::*;

    /// Slowloris without `--idle-timeout` (module doc for the counts): the served client gets
    /// its 100 echoes byte for byte, the silent and the trickling connections all stay open
    /// (`active`), the trickling ones get every echo, nothing is reset or refused.
    pub fn slowloris_without_an_idle_timeout_holds_every_connection_and_serves_a_client(
        v: Variant,
    ) {
        let _process = alone();
        let run = slowloris(v, None);
        assert_eq!(run.st.active, 2 * run.count as i64);
    }

    /// Slowloris with `--idle-timeout` 2 s: the silent connections are closed (`idle_closed`
    /// counts exactly them, each peer reads the end of its stream), the trickling ones (a
    /// byte every 0.5 s) stay open through two more timeouts and get every echo, and the
    /// client beside them is served.
    pub fn slowloris_with_an_idle_timeout_closes_the_silent_and_keeps_the_trickling(v: Variant) {
        let _process = alone();
        let run = slowloris(v, Some(IDLE));
        assert_eq!(run.st.active, run.count as i64);
    }

    /// Handshake slowloris (module doc for the counts): TLS connections that send half a
    /// ClientHello, then one more byte every 0.3 s (never the last), against
    /// `--handshake-timeout` 2 s. Every one is closed — no earlier than the deadline from its
    /// connect, the trickle does not extend it — with no byte ever sent back (no ServerHello,
    /// no alert), counted once each in `tls_handshake_timeouts`; `active` comes back to the
    /// good client alone, which echoes all along, and a new good client is served after.
    pub fn handshake_slowloris_is_closed_at_the_handshake_deadline_while_a_client_is_served(
        v: Variant,
    ) {
        let _process = alone();
        let count = handshake_slowloris_count(v);
        let hello = client_hello(good_client());
        let half = hello.len() / 2;
        let (server, cap) = start_with_cap(v, |c| {
            c.tls = Some(server_tls(false));
            c.handshake_timeout = Some(HANDSHAKE_DEADLINE);
        });
        assert!(
            cap > count + 2,
            "{count} handshakes do not fit the cap {cap}"
        );
        let addr = server.addr;
        let bystander = Bystander::start(addr, good_client(), "localhost");
        let rss_before = rss_kib();
        let started = Instant::now();
        let mut peers = open_half_handshakes(addr, count, &hello[..half]);
        let held = server.stats.snapshot();
        let held = wait_for(&server, SETTLE, "every half-handshake accepted", |s| {
            s.accepted == count as u64 + 1
        })
        .active
        .max(held.active);
        let rss_held = mib(rss_before, rss_kib());
        trickle_until_closed(&mut peers, &hello, started);
        let last = started.elapsed();
        closed_at_the_deadline_never_answered(&peers, half);
        let st = wait_for(&server, SETTLE, "every half-handshake counted", |s| {
            s.tls_handshake_timeouts >= count as u64 && s.active == 1
        });
        assert_eq!(st.tls_handshake_timeouts, count as u64, "{st:?}");
        assert_eq!(st.tls_failures, 0, "{st:?}");
        assert_eq!(st.tls_truncated, 0, "{st:?}");
        assert_eq!(st.errors, 0, "{st:?}");
        tls_ping(addr, good_client(), b"served after the handshake slowloris");
        let echoed = bystander.finish();
        assert!(echoed > 0);
        let end = wait_for(&server, SETTLE, "the good clients gone", |s| s.active == 0);
        assert_eq!(end.tls_handshake_timeouts, count as u64, "{end:?}");
        eprintln!(
            "handshake slowloris {}: {count} half-handshakes held: active {held}, RSS \
             {rss_held}; the last closed {last:?} after the first connect; \
             tls_handshake_timeouts {}; the bystander echoed {echoed} times",
            variant_name(),
            end.tls_handshake_timeouts
        );
        server.stop().expect("the server stops cleanly");
        common::assert_no_server_panic();
    }

    /// A flood past `--max-conns` 20: 200 clients connect at once (all connected before any
    /// sends: [`flood`]), each then echoes 10
    /// messages of 1,000 bytes (every byte checked) and half-closes. `active`, polled all the
    /// while, never exceeds the cap (completion-port with a listener per worker: a worker's
    /// race may admit one more per extra worker, as `limits.rs` says); no client is accepted and
    /// dropped (`refused` 0) or sees an end or a reset before its last echo; the cap paused
    /// accepting (`conn_cap_pauses`), and every one of the 200 was served once earlier ones
    /// left.
    pub fn a_flood_past_max_conns_waits_in_the_backlog_and_is_served_in_full(v: Variant) {
        const CAP: usize = 20;
        const FLOOD: usize = 200;
        let _process = alone();
        let (server, cap) = start_with_cap(v, |c| c.max_conns = Some(CAP));
        assert_eq!(cap, CAP);
        let stats = Arc::clone(&server.stats);
        let flooding = Arc::new(AtomicBool::new(true));
        let still = Arc::clone(&flooding);
        // Bounded: stops when told, or after two minutes.
        let poller = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            let (mut peak, mut samples) = (0i64, 0u64);
            while still.load(Ordering::SeqCst) && Instant::now() < end {
                peak = peak.max(stats.snapshot().active);
                samples += 1;
                thread::sleep(Duration::from_micros(200));
            }
            (peak, samples)
        });
        let report = flood(server.addr, FLOOD, 10, 1000);
        flooding.store(false, Ordering::SeqCst);
        let (peak, samples) = poller.join().expect("the poller");
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.conns_established, FLOOD);
        assert_eq!(report.messages, FLOOD as u64 * 10);
        let st = wait_for(&server, SETTLE, "every flood client gone", |s| {
            s.active == 0
        });
        assert!(
            peak as usize <= CAP + cap_slack(v),
            "{peak} connections open at once, past the cap {CAP}"
        );
        assert!(peak > 0 && samples > 0, "the poller saw nothing");
        assert_eq!(st.accepted, FLOOD as u64, "{st:?}");
        assert_eq!(st.refused, 0, "{st:?}");
        assert_eq!(st.errors, 0, "{st:?}");
        assert!(st.conn_cap_pauses > 0, "{st:?}");
        eprintln!(
            "flood {}: {FLOOD} clients at --max-conns {CAP}: peak active {peak} ({samples} \
             samples), conn_cap_pauses {}, all served",
            variant_name(),
            st.conn_cap_pauses
        );
        server.stop().expect("the server stops cleanly");
        common::assert_no_server_panic();
    }

    /// `abc`, an urgent (`MSG_OOB`) `X`, `def`, sent back to back: all seven bytes come back,
    /// the urgent one in place (`SO_OOBINLINE`), without the client sending anything more (a
    /// read stops short at the urgent mark; an edge-triggered model must not take that for
    /// "drained"). Bounded: at most 20 s for seven bytes, a stall fails.
    pub fn urgent_data_is_echoed_inline_and_never_stalls_the_connection(v: Variant) {
        let _process = shared();
        let server = v.start(|_| {});
        let mut s = connect(server.addr);
        s.set_nodelay(true).unwrap();
        s.write_all(b"abc").unwrap();
        let urgent = socket2::SockRef::from(&s).send_out_of_band(b"X").unwrap();
        assert_eq!(urgent, 1);
        s.write_all(b"def").unwrap();
        let mut back = Vec::new();
        let mut buf = [0u8; 64];
        let end = Instant::now() + Duration::from_secs(20);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while back.len() < 7 && Instant::now() < end {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading the echo: {e}"),
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&back),
            "abcXdef",
            "the echo of abc, urgent X, def"
        );
        ping(&mut s, b"and on");
        drop(s);
        server.stop().unwrap();
    }

    /// A second server on a port a server holds fails to bind with `AddrInUse` ("cannot
    /// listen on ADDR: ... in use"), over TCP and with UDP: behind a server of the same
    /// variant, and behind a completion-port one (its reuse-port listeners would let a second
    /// SO_REUSEPORT socket join them and split the clients). The first goes on serving.
    pub fn a_second_server_on_a_port_in_use_fails_to_bind(v: Variant) {
        let _process = shared();
        let holders: [(&str, Variant); 2] = [
            ("the same variant", v),
            (
                "completion-port",
                Variant {
                    model: Model::CompletionPort,
                    configure: |c| c.workers = Some(2),
                },
            ),
        ];
        for (holder, first_v) in holders {
            for udp in [false, true] {
                let first = first_v.start(|c| c.udp = udp);
                let mut config = ServerConfig {
                    model: v.model,
                    listen: first.addr,
                    ..ServerConfig::default()
                };
                (v.configure)(&mut config);
                config.udp = udp;
                match Server::bind(config) {
                    Ok(_) => panic!("a second server bound {} held by {holder}", first.addr),
                    Err(ServerError::Bind { addr, source }) => {
                        assert_eq!(addr, first.addr);
                        assert_eq!(
                            source.kind(),
                            io::ErrorKind::AddrInUse,
                            "{holder}, udp {udp}: {source}"
                        );
                        if cfg!(unix) {
                            let line = ServerError::Bind { addr, source }.to_string();
                            assert!(line.contains("in use"), "{line}");
                        }
                    }
                    Err(e) => panic!("{holder}, udp {udp}: not a bind error: {e}"),
                }
                ping(&mut connect(first.addr), b"the first still serves");
                first.stop().unwrap();
            }
        }
    }

    #[cfg(target_os = "linux")]
    pub use super::forged_cases::*;
}

/// The forged-source cases (item 1), Linux only.
#[cfg(target_os = "linux")]
mod forged_cases {
    use super::forged::{echoed, forge, WAIT};
    use super::*;

    /// Before the loop rule it bounced between the server and itself at the full speed of the
    /// model (160k–250k datagrams/s here) until the process died; now it is dropped once.
    pub fn a_datagram_forged_from_the_servers_own_address_is_dropped_once_not_looped(v: Variant) {
        let _process = shared();
        let server = v.start_udp(|_| {});
        let to = server.udp_addr.unwrap();
        forge(to, to, b"to myself");
        wait_for(&server, WAIT, "the loop drop", |s| s.udp_loop_dropped == 1);
        echoed(to);
        let st = wait_for(&server, WAIT, "the echo counted", |s| {
            s.udp_datagrams_out == 1
        });
        // Looping, the forged datagram would have come in again and again.
        assert_eq!(st.udp_datagrams_in, 2, "{st:?}");
        assert_eq!(st.udp_loop_dropped, 1, "{st:?}");
        server.stop().unwrap();
    }

    pub fn a_datagram_forged_from_port_0_is_dropped(v: Variant) {
        let _process = shared();
        let server = v.start_udp(|_| {});
        let to = server.udp_addr.unwrap();
        forge("127.0.0.1:0".parse().unwrap(), to, b"from nowhere");
        wait_for(&server, WAIT, "the loop drop", |s| s.udp_loop_dropped == 1);
        echoed(to);
        let st = wait_for(&server, WAIT, "the echo counted", |s| {
            s.udp_datagrams_out == 1
        });
        assert_eq!(st.udp_datagrams_in, 2, "{st:?}");
        assert_eq!(
            st.udp_send_dropped, 0,
            "an answer to port 0 was tried: {st:?}"
        );
        server.stop().unwrap();
    }

    /// Two echo servers on one port (127.0.0.1:P and 127.0.0.2:P): a datagram forged from A to
    /// B would ping-pong between them forever; B drops it (its own port), A never sees one.
    pub fn a_datagram_forged_from_another_echo_server_on_the_same_port_is_not_bounced(v: Variant) {
        let _process = shared();
        let a = v.start_udp(|_| {});
        let a_addr = a.udp_addr.unwrap();
        let b_listen = SocketAddr::from(([127, 0, 0, 2], a_addr.port()));
        let b = v.start_udp(|c| c.listen = b_listen);
        let b_addr = b.udp_addr.unwrap();
        assert_eq!(b_addr, b_listen);
        forge(a_addr, b_addr, b"ping-pong");
        wait_for(&b, WAIT, "B's loop drop", |s| s.udp_loop_dropped == 1);
        echoed(b_addr);
        echoed(a_addr);
        let (sa, sb) = (a.stats.snapshot(), b.stats.snapshot());
        assert_eq!(sb.udp_datagrams_in, 2, "B: {sb:?}");
        assert_eq!(
            sa.udp_datagrams_in, 1,
            "A got more than its own echo: {sa:?}"
        );
        a.stop().unwrap();
        b.stop().unwrap();
    }
}

model_suite! {
    check: every_available_model_runs_the_adversarial_suite, "the adversarial suite";
    cases: [
        slowloris_without_an_idle_timeout_holds_every_connection_and_serves_a_client,
        slowloris_with_an_idle_timeout_closes_the_silent_and_keeps_the_trickling,
        handshake_slowloris_is_closed_at_the_handshake_deadline_while_a_client_is_served,
        a_flood_past_max_conns_waits_in_the_backlog_and_is_served_in_full,
        urgent_data_is_echoed_inline_and_never_stalls_the_connection,
        a_second_server_on_a_port_in_use_fails_to_bind,
        #[cfg(target_os = "linux")]
        a_datagram_forged_from_the_servers_own_address_is_dropped_once_not_looped,
        #[cfg(target_os = "linux")]
        a_datagram_forged_from_port_0_is_dropped,
        #[cfg(target_os = "linux")]
        a_datagram_forged_from_another_echo_server_on_the_same_port_is_not_bounced,
    ];
    every_model
}
