//! Helpers shared by the server's integration tests (each test file says `mod common;`): a
//! server on a free loopback port, blocking std clients with timeouts, a reproducible byte
//! stream, polling, and echo clients that check every byte.
//!
//! Std sockets and a thread per client, so the same client code runs on Linux and on Windows
//! under Wine (where the mio-based load generator does not run).

// Each test binary uses a part of this module.
#![allow(dead_code)]

use iomodels_server::{Model, RunningServer, Server, ServerConfig, StatsSnapshot};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// A client call (connect, read, write) that takes longer than this means the server is stuck:
/// the call fails instead of hanging the test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `model` on a free loopback port with a 10 s drain timeout, `tweak` applied last.
pub fn start(model: Model, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        model,
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config)
        .expect("bind a loopback port")
        .spawn()
        .expect("spawn the server thread")
}

/// Connects to `addr`, with [`CLIENT_TIMEOUT`] on the connect and on every read and write.
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(s)
}

/// [`try_connect`], failing the test if it fails.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).expect("connect to the server")
}

/// A deterministic pseudo-random byte stream (xorshift), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    /// A stream for any seed, 0 included (a xorshift state of 0 would stay 0 forever).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Polls `cond` for up to `limit`; true if it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// Polls the server's stats until `done` holds and returns them, or fails the test (naming
/// `what`) after `within`.
pub fn wait_for(
    server: &RunningServer,
    within: Duration,
    what: &str,
    done: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let mut last = server.stats.snapshot();
    let held = eventually(within, || {
        last = server.stats.snapshot();
        done(&last)
    });
    assert!(held, "timed out waiting for {what}: {last:?}");
    last
}

/// Sends `messages` messages of `size` bytes from [`Rng::seeded`]`(seed)` one at a time and
/// checks each echo byte for byte.
pub fn echo_messages(s: &mut TcpStream, seed: u64, messages: usize, size: usize) -> io::Result<()> {
    let mut rng = Rng::seeded(seed);
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

/// Sends `msg` and checks that exactly it comes back.
pub fn ping(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("send");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg, "the echo differs");
}

/// Writes all of `data`, shuts the write side and returns what came back until EOF. Everything
/// is written before anything is read: for data the socket buffers can hold.
pub fn send_and_close(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).expect("send");
    s.shutdown(Shutdown::Write).expect("shut the write side");
    let mut echoed = Vec::new();
    s.read_to_end(&mut echoed).expect("read to EOF");
    echoed
}

/// [`send_and_close`], checking that exactly `data` came back before the EOF.
pub fn check_echo_then_eof(s: &mut TcpStream, data: &[u8]) {
    check_echo(&send_and_close(s, data), data);
}

/// Fails the test unless `echoed` is exactly `data`.
pub fn check_echo(echoed: &[u8], data: &[u8]) {
    assert!(
        echoed == data,
        "{} bytes sent: got {} bytes back{}",
        data.len(),
        echoed.len(),
        if echoed.len() == data.len() {
            ", different"
        } else {
            ""
        }
    );
}

/// Closes `s` with SO_LINGER 0: a reset (RST) instead of a FIN, whatever is unread dropped.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(s);
}

/// Writes `data` from a thread of its own with `write`, then shuts the write side; returns what
/// came back until EOF. Reading and writing at once, so neither side's buffers can deadlock the
/// test.
pub fn echo_through(
    s: TcpStream,
    data: Vec<u8>,
    write: impl FnOnce(&mut TcpStream, &[u8]) + Send + 'static,
) -> Vec<u8> {
    let mut writer = s.try_clone().unwrap();
    let mut reader = s;
    let sender = thread::spawn(move || {
        write(&mut writer, &data);
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let read = reader.read_to_end(&mut echoed);
    sender.join().expect("the writer failed");
    read.expect("read the echo to EOF");
    echoed
}

/// Writes `data` in chunks of 1 to `max_chunk` bytes, their sizes drawn from `Rng(seed)`.
pub fn write_in_random_chunks(w: &mut TcpStream, data: &[u8], seed: u64, max_chunk: usize) {
    let mut rng = Rng(seed);
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.next() as usize % max_chunk).min(data.len() - off);
        w.write_all(&data[off..off + n]).expect("write a chunk");
        off += n;
    }
}

/// Echoes `data` through `s`, written by a thread of its own in chunks of 1 to `max_chunk`
/// bytes (their sizes from `Rng(chunk_seed)`) while this one reads, and checks that every byte
/// came back, in order.
pub fn check_random_chunks_echo(s: TcpStream, data: &[u8], chunk_seed: u64, max_chunk: usize) {
    let echoed = echo_through(s, data.to_vec(), move |w, d| {
        write_in_random_chunks(w, d, chunk_seed, max_chunk)
    });
    assert_eq!(echoed.len(), data.len(), "echoed length");
    assert!(echoed == data, "echoed bytes differ from what was sent");
}

/// A case that more than one file runs: 4 MiB written in random chunks of 1 byte to 64 KiB by
/// one thread while another reads comes back byte for byte. Stops the server.
pub fn check_4_mib_echo_in_random_chunks(server: RunningServer) {
    let data = Rng(0x1234_5678).bytes(4 << 20);
    check_random_chunks_echo(connect(server.addr), &data, 42, 65536);
    server.stop().unwrap();
}

/// What a group of [`clients`] saw.
#[derive(Debug, Default)]
pub struct ClientsReport {
    pub conns_established: usize,
    pub messages: u64,
    pub mismatches: u64,
    pub errors: Vec<String>,
}

impl ClientsReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.errors.is_empty()
    }
}

/// `conns` clients, a thread each, each echoing `messages` messages of `size` bytes two deep
/// (the next message is sent before the previous echo is read) and checking every byte, then
/// shutting its write side: the server must answer with EOF, nothing after the echoes.
pub fn clients(addr: SocketAddr, conns: usize, messages: u64, size: usize) -> ClientsReport {
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(u64, u64), String> {
                    let mut s =
                        try_connect(addr).map_err(|e| format!("client {i}: connect: {e}"))?;
                    s.set_nodelay(true).unwrap();
                    let mut rng = Rng(0x9e37_79b9 ^ (i as u64 + 1));
                    let sent: Vec<Vec<u8>> = (0..messages).map(|_| rng.bytes(size)).collect();
                    let (mut done, mut mismatches) = (0u64, 0u64);
                    let mut buf = vec![0u8; size];
                    for m in sent.iter().take(2) {
                        s.write_all(m)
                            .map_err(|e| format!("client {i}: send: {e}"))?;
                    }
                    for k in 0..sent.len() {
                        s.read_exact(&mut buf)
                            .map_err(|e| format!("client {i}: recv #{k}: {e}"))?;
                        if buf != sent[k] {
                            mismatches += 1;
                        }
                        done += 1;
                        if let Some(next) = sent.get(k + 2) {
                            s.write_all(next)
                                .map_err(|e| format!("client {i}: send: {e}"))?;
                        }
                    }
                    s.shutdown(Shutdown::Write)
                        .map_err(|e| format!("client {i}: shutdown: {e}"))?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest)
                        .map_err(|e| format!("client {i}: read to EOF: {e}"))?;
                    if !rest.is_empty() {
                        return Err(format!("client {i}: {} bytes after its echoes", rest.len()));
                    }
                    Ok((done, mismatches))
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut report = ClientsReport::default();
    for t in threads {
        match t.join().expect("a client thread panicked") {
            Ok((done, bad)) => {
                report.conns_established += 1;
                report.messages += done;
                report.mismatches += bad;
            }
            Err(e) => report.errors.push(e),
        }
    }
    report
}
