//! The limits of `serve`, for every model on Linux and on Windows: the connection cap
//! (`--max-conns`), the idle timeout and the slow-reader guard (`--write-timeout`).
//!
//! Bounds are generous (seconds): a timeout is checked to fire, not to fire on the dot, and a
//! loaded machine must not fail these tests.

mod common;

use common::Variant;

use common::{cap_slack, clients, connect, ping, wait_for, CLIENT_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod cases {
    use super::*;

    pub fn at_the_cap_new_clients_wait_in_the_backlog_and_are_served_when_one_closes(v: Variant) {
        const CAP: usize = 3;
        let server = v.start(|c| c.max_conns = Some(CAP));
        let mut admitted: Vec<TcpStream> = (0..CAP)
            .map(|_| {
                let mut s = connect(server.addr);
                ping(&mut s, b"admitted");
                s
            })
            .collect();
        // Their handshake completes in the kernel's backlog; nobody reads them.
        let mut waiting: Vec<TcpStream> = (0..2).map(|_| connect(server.addr)).collect();
        for w in &mut waiting {
            w.write_all(b"waiting").unwrap();
        }
        for w in &mut waiting {
            assert!(
                common::writing::silent_for(w, Duration::from_millis(500), CLIENT_TIMEOUT),
                "a client past the cap was served"
            );
        }
        for s in &mut admitted {
            ping(s, b"still served at the cap");
        }
        let at_cap = server.stats.snapshot();
        assert_eq!(at_cap.accepted, CAP as u64, "{at_cap:?}");
        assert_eq!(at_cap.active, CAP as i64, "{at_cap:?}");
        assert_eq!(
            at_cap.refused, 0,
            "nothing is accepted and dropped: {at_cap:?}"
        );
        assert!(at_cap.conn_cap_pauses >= 1, "{at_cap:?}");

        // One place frees up: one waiting client is accepted, and the cap holds.
        drop(admitted.pop());
        let s = wait_for(&server, Duration::from_secs(10), "a waiting client", |s| {
            s.accepted > CAP as u64
        });
        assert!(
            s.active <= (CAP + cap_slack(v)) as i64,
            "past the cap after a close: {s:?}"
        );
        // Another: both waiting clients get their echo.
        drop(admitted.pop());
        for w in &mut waiting {
            let mut back = [0u8; 7];
            w.read_exact(&mut back)
                .expect("the echo once below the cap");
            assert_eq!(&back, b"waiting");
            ping(w, b"served");
        }
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, CAP as u64 + 2, "{s:?}");
        assert_eq!(s.refused, 0, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        drop(waiting);
        drop(admitted);
        server.stop().unwrap();
    }

    pub fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not(v: Variant) {
        let server = v.start(|c| c.idle_timeout = Some(Duration::from_secs(2)));
        let addr = server.addr;
        let mut idle = connect(addr);
        ping(&mut idle, b"then silence");
        let busy = std::thread::spawn(move || {
            let mut s = connect(addr);
            let end = Instant::now() + Duration::from_secs(5);
            let mut n = 0u64;
            while Instant::now() < end {
                ping(&mut s, b"busy");
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (s, n)
        });
        let start = Instant::now();
        assert!(
            common::writing::ended_by_server(&mut idle, CLIENT_TIMEOUT).is_some(),
            "the idle connection was not closed"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "closed after {took:?}, before the 2 s idle timeout"
        );
        let (busy, pings) = busy.join().expect("the busy client was served throughout");
        assert!(pings > 10);
        let s = server.stats.snapshot();
        assert_eq!(s.idle_closed, 1, "only the idle connection: {s:?}");
        assert_eq!(s.slow_reader_closed, 0, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        drop(busy);
        server.stop().unwrap();
    }

    pub fn a_flooding_client_that_never_reads_is_closed_after_the_write_timeout(v: Variant) {
        let server = v.start(|c| {
            c.max_pending = 256 * 1024;
            c.write_timeout = Some(Duration::from_secs(1));
        });
        let mut flooder = connect(server.addr);
        let flood = std::thread::spawn(move || {
            let chunk = vec![0x5a; 64 * 1024];
            let mut sent = 0usize;
            // Ends when the server closes the connection (reset) or after 256 MiB.
            while sent < 256 << 20 {
                match flooder.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return (sent, Some(e.kind())),
                }
            }
            (sent, None)
        });
        // Meanwhile another client is served.
        let report = clients(server.addr, 5, 50, 4096);
        assert!(report.is_clean(), "others starved: {report:?}");
        let s = wait_for(
            &server,
            Duration::from_secs(20),
            "the slow reader's close",
            |s| s.slow_reader_closed == 1,
        );
        let (sent, end) = flood.join().unwrap();
        assert!(
            !matches!(
                end,
                Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) | None
            ),
            "the flooder was not cut off ({sent} bytes sent, ended by {end:?})"
        );
        assert_eq!(s.idle_closed, 0, "{s:?}");
        let s = wait_for(
            &server,
            Duration::from_secs(10),
            "no connection left",
            |s| s.active == 0,
        );
        assert_eq!(s.slow_reader_closed, 1, "{s:?}");
        server.stop().unwrap();
    }

    /// `--handshake-timeout` is for TLS: a plaintext connection quiet past it (1 s here, and
    /// the sweeps it brings) is served as before, and nothing is counted.
    pub fn the_handshake_deadline_leaves_plaintext_connections_alone(v: Variant) {
        let server = v.start(|c| c.handshake_timeout = Some(Duration::from_secs(1)));
        let mut s = connect(server.addr);
        ping(&mut s, b"\x16\x03\x01 not a ClientHello");
        std::thread::sleep(Duration::from_millis(2500));
        ping(&mut s, b"still here");
        let st = server.stats.snapshot();
        assert_eq!(
            (st.tls_handshake_timeouts, st.idle_closed),
            (0, 0),
            "{st:?}"
        );
        drop(s);
        server.stop().unwrap();
    }

    pub fn with_the_defaults_a_quiet_connection_stays_open(v: Variant) {
        let server = v.start(|_| {});
        let mut s = connect(server.addr);
        ping(&mut s, b"hello");
        std::thread::sleep(Duration::from_millis(1500));
        ping(&mut s, b"still here");
        let st = server.stats.snapshot();
        assert_eq!(
            (st.idle_closed, st.slow_reader_closed, st.conn_cap_pauses),
            (0, 0, 0)
        );
        drop(s);
        server.stop().unwrap();
    }
}

model_suite! {
    check: every_available_model_runs_the_limits_suite, "the limits suite";
    cases: [
        at_the_cap_new_clients_wait_in_the_backlog_and_are_served_when_one_closes,
        an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not,
        a_flooding_client_that_never_reads_is_closed_after_the_write_timeout,
        with_the_defaults_a_quiet_connection_stays_open,
        the_handshake_deadline_leaves_plaintext_connections_alone,
    ];
    every_model
}
