#![cfg(windows)]
//! The two Winsock models that wait in `WSAWaitForMultipleEvents` (`event-select`,
//! `overlapped-event`), where one wait holds at most 64 handles and connections are served in
//! groups of threads: more clients than one wait can hold, large and stalled streams, resets,
//! groups that retire, and shutdown with connections open.
//!
//! Real sockets against the real server, blocking std clients with timeouts, every byte checked.

mod common;

use common::{
    clients, connect, echo_messages, eventually, reset, start, try_connect, wait_for, Rng,
};
use iomodels_server::Model;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The most bytes a model reads in one call: a connection may overshoot the high-water mark by
/// less than one read.
const READ_CHUNK: usize = 64 * 1024;

/// Writes `byte`s to `s` without blocking until `limit` bytes went in or the writes have
/// stalled (would block) for `stall`: backpressure. Returns the bytes written.
fn flood(s: &mut TcpStream, byte: u8, limit: usize, stall: Duration) -> io::Result<usize> {
    s.set_nonblocking(true)?;
    let chunk = vec![byte; 64 * 1024];
    let mut sent = 0;
    let mut stalled_since: Option<Instant> = None;
    while sent < limit {
        match s.write(&chunk[..chunk.len().min(limit - sent)]) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > stall {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    s.set_nonblocking(false)?;
    Ok(sent)
}

mod cases {
    use super::*;

    /// 200 clients connected at once (more than three waits' worth of handles), each echoing
    /// 20 messages of 1000 bytes, every byte verified.
    pub fn more_than_64_clients_at_once_are_each_echoed(model: Model) {
        const CLIENTS: usize = 200;
        let server = start(model, |_| {});
        let addr = server.addr;
        let connected = Arc::new(Barrier::new(CLIENTS + 1));
        let counted = Arc::new(Barrier::new(CLIENTS + 1));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (connected, counted) = (Arc::clone(&connected), Arc::clone(&counted));
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || -> io::Result<()> {
                        let s = try_connect(addr);
                        connected.wait();
                        counted.wait();
                        echo_messages(&mut s?, i as u64 + 1, 20, 1000)
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
        common::check_4_mib_echo_in_random_chunks(start(model, |_| {}));
    }

    /// A client that sends without reading is held to the high-water mark (its sends stall),
    /// others are served meanwhile, and once it reads it gets every byte back.
    pub fn a_client_that_never_reads_is_held_to_the_high_water_mark(model: Model) {
        const HIGH_WATER: usize = 256 * 1024;
        // More than the kernel's buffers can take on loopback (Linux autotunes a receive
        // buffer up to tcp_rmem's maximum, 32 MiB here), so only backpressure stops it.
        const FLOOD: usize = 256 << 20;
        let server = start(model, |c| c.max_pending = HIGH_WATER);
        let flooder = connect(server.addr);
        let mut f = flooder.try_clone().unwrap();
        // Non-blocking, so a stall is seen without relying on send timeouts.
        let flooding = thread::spawn(move || flood(&mut f, 0x5a, FLOOD, Duration::from_secs(2)));
        // While the flood is stuck, other clients are served.
        let report = clients(server.addr, 10, 100, 4096);
        let sent = flooding
            .join()
            .unwrap()
            .expect("the flooding client failed");
        let stats = server.stats.snapshot();
        assert!(
            report.is_clean(),
            "other clients were not served: {report:?}"
        );
        assert_eq!(report.messages, 10 * 100, "{report:?}");
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
        let server = start(model, |_| {});
        let addr = server.addr;
        let others = thread::spawn(move || clients(addr, 20, 200, 512));
        for i in 0..20 {
            let mut s = connect(server.addr);
            // One echo first, so the server has surely accepted the connection (one reset in
            // the backlog is skipped by accept and never becomes a connection).
            echo_messages(&mut s, 900 + i, 1, 10).expect("served before the reset");
            s.write_all(&Rng(i + 1).bytes(50_000)).unwrap();
            reset(s); // an RST, with echo data unread on both sides
        }
        let report = others.join().unwrap();
        assert!(
            report.is_clean(),
            "the other clients were disturbed: {report:?}"
        );
        assert_eq!(report.messages, 20 * 200, "{report:?}");
        wait_for(
            &server,
            Duration::from_secs(10),
            "the reset connections to close",
            |s| s.active == 0,
        );
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, 40, "{s:?}");
        assert!(s.errors >= 1, "no reset was seen as an error: {s:?}");
        let mut c = connect(server.addr);
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
        let server = start(model, |c| c.max_pending = 128 * 1024);
        let mut c = connect(server.addr);
        let sent =
            flood(&mut c, 0x33, 256 << 20, Duration::from_millis(500)).expect("flooding failed");
        assert!(sent < 256 << 20, "no backpressure after {sent} bytes");
        assert!(
            server.stats.snapshot().active == 1,
            "{:?}",
            server.stats.snapshot()
        );
        reset(c);
        wait_for(
            &server,
            Duration::from_secs(5),
            "the reset connection to close",
            |s| s.active == 0,
        );
        assert_eq!(server.stats.snapshot().errors, 1);
        let stats = Arc::clone(&server.stats);
        server.stop().unwrap();
        assert_eq!(stats.snapshot().ops_in_flight, 0);
    }

    /// Groups that emptied retire (their threads end); clients that come later are served by
    /// new groups.
    pub fn groups_that_emptied_retire_and_later_clients_are_served(model: Model) {
        let server = start(model, |_| {});
        for round in 0..2 {
            // A connection held open keeps its group: the gauge counts it.
            let mut held = connect(server.addr);
            echo_messages(&mut held, round, 1, 10).expect("the held connection is served");
            let groups = server.stats.snapshot().wait_groups;
            assert!(groups >= 1, "round {round}: {groups} groups with a member");
            let report = clients(server.addr, 80, 5, 300);
            assert!(report.is_clean(), "round {round}: {report:?}");
            drop(held);
            assert_eq!(report.messages, 80 * 5, "round {round}: {report:?}");
            wait_for(
                &server,
                Duration::from_secs(10),
                &format!("round {round}'s connections to close"),
                |s| s.active == 0,
            );
            // Every group retires a second after its last member left (`wait_groups` counts
            // the group threads still running); the clients of the next round get new ones.
            wait_for(
                &server,
                Duration::from_secs(10),
                &format!("round {round}'s groups to retire"),
                |s| s.wait_groups == 0,
            );
        }
        assert_eq!(server.stats.snapshot().accepted, 162);
        server.stop().unwrap();
    }

    /// Shutdown with 100 connections open (two groups or more) and a short drain: stop returns,
    /// the clients see their connections end, and new clients are refused.
    pub fn shutdown_with_connections_open_returns(model: Model) {
        let server = start(model, |c| c.drain_timeout = Duration::from_millis(500));
        let addr = server.addr;
        let mut clients: Vec<TcpStream> = (0..100)
            .map(|i| {
                let mut s = connect(server.addr);
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
