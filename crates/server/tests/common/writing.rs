//! What a client sees of the server's side, shared by the server's tests (`common`) and the
//! binary's (`tests/support` includes this file by `#[path]`): a client that leaves the server
//! writing to it, silence for a while, the server ending a connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;

/// Bytes the client reads back before it stops reading.
pub const HEAD: usize = 16 * KIB;

/// Connects to the echo server at `addr` with a small receive buffer (64 KiB, no autotuning),
/// sends `data`, reads back only its first [`HEAD`] bytes (checked), and writes on until the
/// writes have been refused for 200 ms or `data` is all sent: the server then holds output it
/// cannot send. Panics if that takes longer than `deadline`. The caller checks the server's
/// side (its pending bytes) before it resets or closes the client.
pub fn leave_the_server_writing(addr: SocketAddr, data: &[u8], deadline: Duration) -> TcpStream {
    assert!(data.len() > HEAD);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * KIB).unwrap();
    sock.connect_timeout(&addr.into(), deadline)
        .expect("connect");
    let c: TcpStream = sock.into();
    c.set_nonblocking(true).unwrap();
    let (mut sent, mut head) = (0, Vec::with_capacity(HEAD));
    let mut stuck_since: Option<Instant> = None;
    let end = Instant::now() + deadline;
    while head.len() < HEAD
        || (sent < data.len()
            && stuck_since.is_none_or(|t| t.elapsed() < Duration::from_millis(200)))
    {
        assert!(Instant::now() < end, "the client never got its head back");
        if sent < data.len() {
            match (&c).write(&data[sent..(sent + 64 * KIB).min(data.len())]) {
                Ok(n) => (sent, stuck_since) = (sent + n, None),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stuck_since.get_or_insert_with(Instant::now);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("write after {sent} bytes: {e}"),
            }
        }
        if head.len() < HEAD {
            let mut buf = vec![0; HEAD - head.len()];
            match (&c).read(&mut buf) {
                Ok(0) => panic!("EOF before the echo"),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        if stuck_since.is_some() {
            thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(head == data[..HEAD], "the echo's head differs");
    c
}

/// True if nothing comes back on `s` within `wait` (the read times out); the read timeout is
/// `then` afterwards.
pub fn silent_for(s: &mut TcpStream, wait: Duration, then: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    let silent = loop {
        match s.read(&mut b) {
            // async-select's queued signals may interrupt a call of another thread.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            Ok(_) => break false,
        }
    };
    s.set_read_timeout(Some(then)).unwrap();
    silent
}

/// Reads until the server ends the connection (end of stream or a reset) or `deadline`
/// passes with nothing: returns how long it took, `None` if it never ended.
pub fn ended_by_server(s: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(deadline)).unwrap();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(started.elapsed()), // reset
        }
    }
}
