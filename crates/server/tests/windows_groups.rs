#![cfg(windows)]
//! The two Winsock models that wait in `WSAWaitForMultipleEvents` (`event-select`,
//! `overlapped-event`), where one wait holds at most 64 handles and connections are served in
//! groups of threads: more clients than one wait can hold, large and stalled streams, resets,
//! groups that retire, and shutdown with connections open.
//!
//! Real sockets against the real server, blocking std clients with timeouts, every byte checked.

use iomodels_server::{Model, RunningServer, Server, ServerConfig};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The most bytes a model reads in one call: a connection may overshoot the high-water mark by
/// less than one read.
const READ_CHUNK: usize = 64 * 1024;

fn config(model: Model) -> ServerConfig {
    ServerConfig {
        model,
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> RunningServer {
    Server::bind(config)
        .expect("bind a loopback port")
        .spawn()
        .expect("spawn the server thread")
}

fn connect(server: &RunningServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A deterministic pseudo-random byte stream (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Polls `cond` for up to `limit`; true if it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `messages` messages of `size` bytes one at a time and checks each echo byte for byte.
fn echo_messages(s: &mut TcpStream, seed: u64, messages: usize, size: usize) -> io::Result<()> {
    let mut rng = Rng(seed);
    let mut back = vec![0u8; size];
    for m in 0..messages {
        let msg = rng.bytes(size);
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if back != msg {
            return Err(io::Error::other(format!(
                "client {seed}: message {m} came back different"
            )));
        }
    }
    Ok(())
}

/// Runs `clients` threads that each echo `messages` x `size` bytes; returns their errors.
fn echo_clients(addr: SocketAddr, clients: usize, messages: usize, size: usize) -> Vec<io::Error> {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> io::Result<()> {
                    let mut s = TcpStream::connect(addr)?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    s.set_write_timeout(Some(Duration::from_secs(30)))?;
                    echo_messages(&mut s, 1000 + i as u64, messages, size)?;
                    s.shutdown(Shutdown::Write)?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest)?;
                    if rest.is_empty() {
                        Ok(())
                    } else {
                        Err(io::Error::other("bytes after the last echo"))
                    }
                })
                .unwrap()
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|t| t.join().expect("client thread panicked").err())
        .collect()
}

mod cases {
    use super::*;

    /// 200 clients connected at once (more than three waits' worth of handles), each echoing
    /// 20 messages of 1000 bytes, every byte verified.
    pub fn more_than_64_clients_at_once_are_each_echoed(model: Model) {
        const CLIENTS: usize = 200;
        let server = start(config(model));
        let addr = server.addr;
        let connected = Arc::new(Barrier::new(CLIENTS + 1));
        let counted = Arc::new(Barrier::new(CLIENTS + 1));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (connected, counted) = (Arc::clone(&connected), Arc::clone(&counted));
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || -> io::Result<()> {
                        let s = TcpStream::connect(addr);
                        connected.wait();
                        counted.wait();
                        let mut s = s?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        s.set_write_timeout(Some(Duration::from_secs(30)))?;
                        echo_messages(&mut s, i as u64 + 1, 20, 1000)
                    })
                    .unwrap()
            })
            .collect();
        connected.wait();
        // Every client is connected and none has sent yet: all 200 are held by the server at
        // the same time.
        let all_open = eventually(Duration::from_secs(20), || {
            let s = server.stats.snapshot();
            s.accepted == CLIENTS as u64 && s.active == CLIENTS as i64
        });
        counted.wait();
        let errors: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("client thread panicked").err())
            .collect();
        assert!(
            all_open,
            "the server did not hold {CLIENTS} connections at once: {:?}",
            server.stats.snapshot()
        );
        assert!(
            errors.is_empty(),
            "{} clients failed: {errors:?}",
            errors.len()
        );
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, CLIENTS as u64);
        assert_eq!(s.bytes_in, (CLIENTS * 20 * 1000) as u64);
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().bytes_out == (CLIENTS * 20 * 1000) as u64
        }));
        assert_eq!(s.refused, 0);
        server.stop().unwrap();
    }

    /// One thread writes 4 MiB in random chunks of 1 byte to 64 KiB while another reads.
    pub fn a_4_mib_echo_in_random_chunks_comes_back_byte_identical(model: Model) {
        let server = start(config(model));
        let data = Rng(0x1234_5678).bytes(4 << 20);
        let mut writer = connect(&server);
        let mut reader = writer.try_clone().unwrap();
        let to_send = data.clone();
        let sender = thread::spawn(move || -> io::Result<()> {
            let mut rng = Rng(42);
            let mut off = 0;
            while off < to_send.len() {
                let n = (1 + rng.next() as usize % 65536).min(to_send.len() - off);
                writer.write_all(&to_send[off..off + n])?;
                off += n;
            }
            writer.shutdown(Shutdown::Write)
        });
        let mut echoed = Vec::with_capacity(data.len());
        let read = reader.read_to_end(&mut echoed);
        sender.join().unwrap().expect("the writer failed");
        read.expect("read the echo to EOF");
        assert_eq!(echoed.len(), data.len(), "echoed length");
        assert!(echoed == data, "echoed bytes differ from what was sent");
        server.stop().unwrap();
    }

    /// A client that sends without reading is held to the high-water mark (its sends stall),
    /// others are served meanwhile, and once it reads it gets every byte back.
    pub fn a_client_that_never_reads_is_held_to_the_high_water_mark(model: Model) {
        const HIGH_WATER: usize = 256 * 1024;
        // More than the kernel's buffers can take on loopback (Linux autotunes a receive
        // buffer up to tcp_rmem's maximum, 32 MiB here), so only backpressure stops it.
        const FLOOD: usize = 256 << 20;
        let mut cfg = config(model);
        cfg.max_pending = HIGH_WATER;
        let server = start(cfg);
        let flooder = connect(&server);
        let mut f = flooder.try_clone().unwrap();
        let flood = thread::spawn(move || -> io::Result<usize> {
            // Non-blocking, so a stall is seen without relying on send timeouts.
            f.set_nonblocking(true)?;
            let chunk = vec![0x5a; 64 * 1024];
            let mut sent = 0;
            let mut stalled_since: Option<Instant> = None;
            while sent < FLOOD {
                match f.write(&chunk[..chunk.len().min(FLOOD - sent)]) {
                    Ok(n) => {
                        sent += n;
                        stalled_since = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let since = *stalled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(2) {
                            break; // backpressure reached us
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            }
            f.set_nonblocking(false)?;
            Ok(sent)
        });
        // While the flood is stuck, other clients are served.
        let errors = echo_clients(server.addr, 10, 100, 4096);
        let sent = flood.join().unwrap().expect("the flooding client failed");
        let stats = server.stats.snapshot();
        assert!(
            errors.is_empty(),
            "other clients were not served: {errors:?}"
        );
        assert!(
            sent < FLOOD,
            "all {FLOOD} bytes were accepted from a client that never reads: no backpressure \
             ({stats:?})"
        );
        assert!(
            stats.peak_conn_pending <= HIGH_WATER + READ_CHUNK,
            "one connection held {} unsent bytes, above the high-water mark {HIGH_WATER} plus \
             one read",
            stats.peak_conn_pending
        );
        // Reading resumes the connection: every byte it took comes back, then EOF.
        let mut reader = flooder;
        reader.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        reader.read_to_end(&mut back).expect("read the held echo");
        assert_eq!(back.len(), sent, "bytes echoed after the stall");
        assert!(
            back.iter().all(|&b| b == 0x5a),
            "the held echo was corrupted"
        );
        server.stop().unwrap();
    }

    /// Clients that reset their connection (SO_LINGER 0, then close) with echo data unread do
    /// not disturb the others, and leave nothing behind.
    pub fn a_client_reset_mid_stream_does_not_disturb_others(model: Model) {
        let server = start(config(model));
        let addr = server.addr;
        let others = thread::spawn(move || echo_clients(addr, 20, 200, 512));
        for i in 0..20 {
            let mut s = connect(&server);
            // One echo first, so the server has surely accepted the connection (one reset in
            // the backlog is skipped by accept and never becomes a connection).
            echo_messages(&mut s, 900 + i, 1, 10).expect("served before the reset");
            s.write_all(&Rng(i + 1).bytes(50_000)).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s); // an RST, with echo data unread on both sides
        }
        let errors = others.join().unwrap();
        assert!(
            errors.is_empty(),
            "the other clients were disturbed: {errors:?}"
        );
        assert!(
            eventually(Duration::from_secs(10), || server.stats.snapshot().active
                == 0),
            "reset connections leaked: {:?}",
            server.stats.snapshot()
        );
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, 40, "{s:?}");
        assert!(s.errors >= 1, "no reset was seen as an error: {s:?}");
        let mut c = connect(&server);
        echo_messages(&mut c, 77, 3, 100).expect("the server still serves");
        drop(c);
        let stats = Arc::clone(&server.stats);
        server.stop().unwrap();
        // Every operation the resets aborted was reaped (its record freed after its completion).
        assert_eq!(stats.snapshot().ops_in_flight, 0, "{:?}", stats.snapshot());
    }

    /// A client held by backpressure (the server waits to send, reads nothing) that then
    /// resets is closed while the server runs, not left until shutdown.
    pub fn a_stalled_client_that_resets_is_closed_at_once(model: Model) {
        let mut cfg = config(model);
        cfg.max_pending = 128 * 1024;
        let server = start(cfg);
        let mut c = connect(&server);
        c.set_nonblocking(true).unwrap();
        let chunk = vec![0x33; 64 * 1024];
        let mut stalled_since: Option<Instant> = None;
        let mut sent = 0usize;
        loop {
            match c.write(&chunk) {
                Ok(n) => {
                    sent += n;
                    stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("flooding failed after {sent} bytes: {e}"),
            }
            assert!(sent < 256 << 20, "no backpressure after {sent} bytes");
        }
        assert!(
            server.stats.snapshot().active == 1,
            "{:?}",
            server.stats.snapshot()
        );
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
        assert!(
            eventually(Duration::from_secs(5), || server.stats.snapshot().active
                == 0),
            "a reset connection stayed open: {:?}",
            server.stats.snapshot()
        );
        assert_eq!(server.stats.snapshot().errors, 1);
        let stats = Arc::clone(&server.stats);
        server.stop().unwrap();
        assert_eq!(stats.snapshot().ops_in_flight, 0);
    }

    /// Groups that emptied retire (their threads end); clients that come later are served by
    /// new groups.
    pub fn groups_that_emptied_retire_and_later_clients_are_served(model: Model) {
        let server = start(config(model));
        for round in 0..2 {
            let errors = echo_clients(server.addr, 80, 5, 300);
            assert!(errors.is_empty(), "round {round}: {errors:?}");
            assert!(
                eventually(Duration::from_secs(10), || server.stats.snapshot().active
                    == 0),
                "round {round}: connections left open: {:?}",
                server.stats.snapshot()
            );
            // Longer than a group's idle linger (1 s): every group retires.
            thread::sleep(Duration::from_millis(1600));
        }
        assert_eq!(server.stats.snapshot().accepted, 160);
        server.stop().unwrap();
    }

    /// Shutdown with 100 connections open (two groups or more) and a short drain: stop returns,
    /// the clients see their connections end, and new clients are refused.
    pub fn shutdown_with_connections_open_returns(model: Model) {
        let mut cfg = config(model);
        cfg.drain_timeout = Duration::from_millis(500);
        let server = start(cfg);
        let addr = server.addr;
        let mut clients: Vec<TcpStream> = (0..100)
            .map(|i| {
                let mut s = connect(&server);
                echo_messages(&mut s, i, 1, 10).expect("served before shutdown");
                s
            })
            .collect();
        // One client is mid-message: 3 bytes of an echo not read yet.
        clients[0].write_all(b"abc").unwrap();
        let stats = Arc::clone(&server.stats);
        let (tx, rx) = mpsc::channel();
        let stopper = thread::spawn(move || {
            let started = Instant::now();
            let result = server.stop();
            tx.send((result.map_err(|e| e.to_string()), started.elapsed()))
                .ok();
        });
        let (result, took) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("stop() did not return with connections open");
        stopper.join().unwrap();
        assert!(result.is_ok(), "stop failed: {result:?}");
        assert!(took < Duration::from_secs(10), "stop took {took:?}");
        let after = stats.snapshot();
        assert_eq!(after.active, 0, "{after:?}");
        assert_eq!(
            after.ops_in_flight, 0,
            "operations left in flight after stop: {after:?}"
        );
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            let mut got = 0;
            // The echo of "abc" may come first; then EOF or a reset, never a timeout.
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        panic!("client {i}: still open after stop()")
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        panic!("client {i}: still open after stop()")
                    }
                    Err(_) => break, // reset: closed by the server
                }
            }
            assert!(got <= 3, "client {i}: {got} unexpected bytes");
        }
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener is still open after shutdown"
        );
    }
}

macro_rules! grouped_models {
    ($($name:ident => $model:expr;)*) => {
        $(
            mod $name {
                use super::*;
                const MODEL: Model = $model;
                #[test] fn more_than_64_clients_at_once_are_each_echoed() {
                    cases::more_than_64_clients_at_once_are_each_echoed(MODEL)
                }
                #[test] fn a_4_mib_echo_in_random_chunks_comes_back_byte_identical() {
                    cases::a_4_mib_echo_in_random_chunks_comes_back_byte_identical(MODEL)
                }
                #[test] fn a_client_that_never_reads_is_held_to_the_high_water_mark() {
                    cases::a_client_that_never_reads_is_held_to_the_high_water_mark(MODEL)
                }
                #[test] fn a_client_reset_mid_stream_does_not_disturb_others() {
                    cases::a_client_reset_mid_stream_does_not_disturb_others(MODEL)
                }
                #[test] fn a_stalled_client_that_resets_is_closed_at_once() {
                    cases::a_stalled_client_that_resets_is_closed_at_once(MODEL)
                }
                #[test] fn groups_that_emptied_retire_and_later_clients_are_served() {
                    cases::groups_that_emptied_retire_and_later_clients_are_served(MODEL)
                }
                #[test] fn shutdown_with_connections_open_returns() {
                    cases::shutdown_with_connections_open_returns(MODEL)
                }
            }
        )*
    };
}

/// Named after the file, so `scripts/test-windows.sh windows_groups` selects these tests.
mod windows_groups {
    use super::*;

    grouped_models! {
        event_select => Model::EventSelect;
        overlapped_event => Model::OverlappedEvent;
    }
}
