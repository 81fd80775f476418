//! End-to-end tests of the load generator against small blocking in-test servers.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iomodels_load::{run, FailureKind, LoadConfig, LoadReport};

/// What an in-test server does with each connection (numbered in accept order from 0).
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Echo everything.
    Echo,
    /// Echo, but flip one byte at stream offset `at` on connections whose number is a
    /// multiple of `every`.
    Corrupt { at: u64, every: usize },
    /// Echo the first `after` bytes, then close.
    CloseAfter { after: u64 },
    /// Read everything, echo nothing.
    Swallow,
}

/// A blocking thread-per-connection server on 127.0.0.1; stops accepting when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let acceptor = thread::spawn(move || {
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut number = 0usize;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < give_up {
                match listener.accept() {
                    Ok((s, _)) => {
                        let n = number;
                        number += 1;
                        thread::spawn(move || serve(s, mode, n));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Server {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut s: TcpStream, mode: Mode, number: usize) {
    s.set_nonblocking(false).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        match mode {
            Mode::Echo => {}
            Mode::Corrupt { at, every } => {
                if number % every == 0 && (offset..offset + n as u64).contains(&at) {
                    chunk[(at - offset) as usize] ^= 0x20;
                }
            }
            Mode::CloseAfter { after } => {
                if offset + n as u64 >= after {
                    let keep = (after - offset) as usize;
                    let _ = s.write_all(&chunk[..keep]);
                    let _ = s.shutdown(Shutdown::Both);
                    return;
                }
            }
            Mode::Swallow => {
                offset += n as u64;
                continue;
            }
        }
        offset += n as u64;
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

/// The report's causes of failure: kind and connections.
fn causes(r: &LoadReport) -> Vec<(FailureKind, u64)> {
    r.failures.iter().map(|f| (f.kind, f.conns)).collect()
}

fn cfg(addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        connect: addr,
        conns: 4,
        size: 64,
        depth: 1,
        duration: Duration::from_secs(10),
        messages_per_conn: None,
        threads: 2,
        connect_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(2),
        tls: None,
        handshakes: false,
        udp: false,
        udp_timeout: Duration::from_millis(200),
        rate: None,
    }
}

fn timed(cfg: &LoadConfig) -> (LoadReport, Duration) {
    let t = Instant::now();
    let r = run(cfg).expect("run sets up");
    let took = t.elapsed();
    println!("{}\n{}", r.to_table(), r.to_json());
    (r, took)
}

#[test]
fn clean_run_counts_exactly_the_messages_asked_for() {
    let server = Server::start(Mode::Echo);
    let c = LoadConfig {
        conns: 8,
        size: 100,
        depth: 4,
        messages_per_conn: Some(500),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.conns_established, 8);
    assert_eq!(r.messages, 8 * 500);
    assert_eq!(r.bytes, 8 * 500 * 100);
    assert_eq!(
        (r.mismatches, r.io_errors, r.connect_errors, r.incomplete),
        (0, 0, 0, 0)
    );
    assert_eq!(r.threads, 2);
    assert!(r.elapsed_secs > 0.0 && r.msgs_per_sec > Some(0.0) && r.mb_per_sec > Some(0.0));
    let l = r.latency_us.as_ref().expect("messages completed");
    assert!(l.min <= l.p50 && l.p50 <= l.p99);
    assert!(l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(r.error.is_none() && r.failures.is_empty(), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn large_messages_with_short_writes_and_partial_reads_verify() {
    let server = Server::start(Mode::Echo);
    let c = LoadConfig {
        conns: 3,
        size: 300_001,
        depth: 3,
        messages_per_conn: Some(10),
        ..cfg(server.addr)
    };
    let (r, _) = timed(&c);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.messages, 30);
    assert_eq!(r.bytes, 30 * 300_001);
}

#[test]
fn duration_limited_run_stops_on_time_and_drains() {
    let server = Server::start(Mode::Echo);
    let c = LoadConfig {
        duration: Duration::from_millis(300),
        depth: 2,
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert!(r.is_clean(), "{r:?}");
    assert!(r.messages > 100, "{r:?}");
    assert!(r.elapsed_secs >= 0.29 && r.elapsed_secs < 1.5, "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn corrupting_server_counts_one_mismatch_per_bad_connection() {
    // Connections 0, 2, 4 (in accept order) get one flipped byte at offset 1000.
    let server = Server::start(Mode::Corrupt { at: 1000, every: 2 });
    let c = LoadConfig {
        conns: 6,
        messages_per_conn: Some(200),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert_eq!(r.mismatches, 3, "{r:?}");
    assert_eq!(r.io_errors, 0, "{r:?}");
    assert!(!r.is_clean());
    // Good connections finish; bad ones stop at the message holding byte 1000.
    assert_eq!(r.messages, 3 * 200 + 3 * (1000 / 64), "{r:?}");
    assert_eq!(causes(&r), [(FailureKind::Mismatch, 3)]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn corruption_in_the_first_byte_is_caught_too() {
    let server = Server::start(Mode::Corrupt { at: 0, every: 1 });
    let c = LoadConfig {
        messages_per_conn: Some(50),
        ..cfg(server.addr)
    };
    let (r, _) = timed(&c);
    assert_eq!(r.mismatches, 4, "{r:?}");
    assert_eq!(r.messages, 0);
    assert_eq!(causes(&r), [(FailureKind::Mismatch, 4)]);
}

#[test]
fn early_close_counts_io_errors() {
    let server = Server::start(Mode::CloseAfter { after: 640 });
    let c = LoadConfig {
        messages_per_conn: Some(100),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert!(r.io_errors > 0, "{r:?}");
    assert_eq!(r.io_errors, 4, "one per connection: {r:?}");
    assert_eq!(r.mismatches, 0, "{r:?}");
    assert_eq!(r.messages, 4 * 10, "{r:?}");
    assert!(!r.is_clean());
    // An end of stream mid-run: the server closed them.
    assert_eq!(causes(&r), [(FailureKind::Closed, 4)]);
    let why = r.error.as_deref().unwrap();
    assert!(
        why.contains("the server closed 4 of 4 connections"),
        "{why}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn silent_server_leaves_messages_incomplete_after_the_drain_timeout() {
    let server = Server::start(Mode::Swallow);
    let c = LoadConfig {
        depth: 3,
        duration: Duration::from_millis(100),
        drain_timeout: Duration::from_millis(200),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert_eq!(r.incomplete, 4 * 3, "{r:?}");
    assert_eq!(r.messages, 0);
    assert!(!r.is_clean());
    assert_eq!(causes(&r), [(FailureKind::Silent, 4)]);
    assert!(r.latency_us.is_none(), "{r:?}");
    assert!(r.elapsed_secs >= 0.29 && r.elapsed_secs < 1.0, "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn paced_run_sends_each_connections_messages_on_schedule_and_verifies_them() {
    let server = Server::start(Mode::Echo);
    // 2,000 msg/s over 4 connections, 50 each: 200 messages due over 0.1 s.
    let c = LoadConfig {
        rate: Some(2000),
        messages_per_conn: Some(50),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.messages, 200, "{r:?}");
    assert_eq!(r.rate_sent, Some(200), "{r:?}");
    // Every message went out (a late echo may have held one back a while: not asserted).
    assert_eq!(
        (r.rate_unsent, r.rate_unanswered),
        (Some(0), Some(0)),
        "{r:?}"
    );
    assert_eq!(r.rate_requested_per_sec, Some(2000.0));
    let service = r.service_latency_us.as_ref().expect("echoes came back");
    // From the schedule is never shorter than from the write (written at or after due).
    let latency = r.latency_us.as_ref().expect("echoes came back");
    assert!(latency.max >= service.min, "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn paced_run_catches_corruption_as_the_closed_loop_does() {
    let server = Server::start(Mode::Corrupt { at: 1000, every: 2 });
    let c = LoadConfig {
        conns: 6,
        rate: Some(6000),
        messages_per_conn: Some(200),
        ..cfg(server.addr)
    };
    let (r, _) = timed(&c);
    assert_eq!(r.mismatches, 3, "{r:?}");
    assert_eq!(r.messages, 3 * 200 + 3 * (1000 / 64), "{r:?}");
    assert!(!r.is_clean());
}

#[test]
fn paced_run_against_a_server_that_echoes_nothing_sends_at_the_rate_and_says_so() {
    let server = Server::start(Mode::Swallow);
    // Pipelined (depth 1,000): every due message is sent, none answered. Unanswered messages
    // are measured, but a server that answers nothing at all is a failure with its cause.
    let c = LoadConfig {
        rate: Some(1000),
        depth: 1000,
        duration: Duration::from_millis(200),
        drain_timeout: Duration::from_millis(200),
        ..cfg(server.addr)
    };
    let (r, took) = timed(&c);
    let sent = r.rate_sent.unwrap();
    assert!((150..=250).contains(&sent), "{r:?}");
    assert_eq!(r.messages, 0, "{r:?}");
    assert_eq!(r.rate_unanswered, Some(sent), "{r:?}");
    assert_eq!(r.incomplete, sent, "{r:?}");
    assert_eq!(r.rate_unsent, Some(0), "{r:?}");
    assert!(r.service_latency_us.is_none(), "{r:?}");
    assert!(!r.is_clean(), "{r:?}");
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("sends nothing back"), "{error}");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // Depth 1 (as wrk2): one message per connection, the rest held back and never sent.
    let c = LoadConfig { depth: 1, ..c };
    let (r, _) = timed(&c);
    assert_eq!(r.rate_sent, Some(4), "{r:?}");
    let unsent = r.rate_unsent.unwrap();
    assert!((150..=250).contains(&unsent), "{r:?}");
    assert!(r.rate_held_back.unwrap() >= unsent, "{r:?}");
}

#[test]
fn unreachable_port_counts_every_connect_as_an_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = LoadConfig {
        conns: 5,
        ..cfg(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let (r, took) = timed(&c);
    assert_eq!(r.connect_errors, 5, "{r:?}");
    assert_eq!(r.conns_established, 0);
    assert_eq!((r.messages, r.io_errors, r.mismatches), (0, 0, 0));
    assert_eq!(r.elapsed_secs, 0.0);
    // No interval, no echo: the rates and the latency do not exist.
    assert_eq!((r.msgs_per_sec, r.mb_per_sec), (None, None));
    assert!(r.latency_us.is_none());
    assert!(!r.is_clean());
    // The cause, classified where the connects failed: every one refused, by its errno.
    assert_eq!(r.failures.len(), 1, "{r:?}");
    let f = &r.failures[0];
    assert_eq!(f.kind, FailureKind::Refused);
    assert_eq!(f.conns, 5);
    let errno = if cfg!(windows) {
        "WSAECONNREFUSED"
    } else {
        "ECONNREFUSED"
    };
    assert_eq!(f.errno.as_deref(), Some(errno));
    let why = r.error.as_deref().unwrap();
    assert!(
        why.contains(&format!(
            "connection refused ({errno}) on 5 of 5 connections"
        )),
        "{why}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn report_renders_as_table_and_one_line_json() {
    let server = Server::start(Mode::Echo);
    let c = LoadConfig {
        conns: 1,
        messages_per_conn: Some(10),
        ..cfg(server.addr)
    };
    let (r, _) = timed(&c);
    let json = r.to_json();
    assert!(!json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["messages"], 10);
    assert_eq!(v["conns_requested"], 1);
    assert_eq!(v["connect"], server.addr.to_string());
    assert!(v["latency_us"]["p999"].is_u64());
    assert!(v["client_cpu_percent"].is_f64());
    let table = r.to_table();
    assert!(table.lines().count() >= 4, "{table}");
    assert!(
        table.contains("latency") && table.contains("msg/s"),
        "{table}"
    );
}

fn idle_cfg(addr: SocketAddr, conns: usize) -> iomodels_load::IdleConfig {
    iomodels_load::IdleConfig {
        connect: addr,
        conns,
        hold: Duration::from_millis(1200),
        threads: 4,
        timeout: Duration::from_secs(5),
        ..iomodels_load::IdleConfig::default()
    }
}

#[test]
fn held_connections_echo_one_paced_message_per_interval_and_the_phases_are_reported() {
    let server = Server::start(Mode::Echo);
    let cfg = iomodels_load::IdleConfig {
        echo_every: Some(Duration::from_millis(300)),
        size: 64,
        ..idle_cfg(server.addr, 20)
    };
    let mut phases = Vec::new();
    let report =
        iomodels_load::hold_idle(&cfg, &AtomicBool::new(false), &mut |p| phases.push(p)).unwrap();
    assert_eq!(
        phases,
        [iomodels_load::Phase::Held, iomodels_load::Phase::Closing]
    );
    assert_eq!(report.conns_held, 20);
    assert_eq!(report.message_errors, 0);
    // 1.2 s at one round per 0.3 s: 4 rounds of 20 messages, give or take one round.
    assert!(
        (60..=100).contains(&report.messages),
        "{} messages",
        report.messages
    );
}

#[test]
fn a_corrupted_paced_echo_is_counted_as_a_message_error() {
    // Flips a byte past the one-byte greeting, inside the first paced message.
    let server = Server::start(Mode::Corrupt { at: 10, every: 1 });
    let cfg = iomodels_load::IdleConfig {
        echo_every: Some(Duration::from_millis(300)),
        ..idle_cfg(server.addr, 5)
    };
    let report = iomodels_load::hold_idle(&cfg, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(report.conns_held, 5);
    assert_eq!(report.message_errors, 5, "{report:?}");
}

#[test]
fn a_ramp_gives_up_after_consecutive_failures() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = iomodels_load::IdleConfig {
        give_up_after: Some(3),
        threads: 1,
        ..idle_cfg(SocketAddr::from(([127, 0, 0, 1], port)), 1000)
    };
    let report = iomodels_load::hold_idle(&cfg, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(report.conns_held, 0);
    assert_eq!(report.connect_errors, 3);
}

/// A part of a larger plan numbers its connections from the part's first: 20 connections
/// from index 19,990 of a 40,000 plan straddle two source addresses (127.0.0.2 and .3), all
/// verified and still open at the end; the plan's reach and address counts.
#[test]
fn a_part_of_a_larger_plan_uses_the_plans_source_addresses() {
    let server = Server::start(Mode::Echo);
    let cfg = iomodels_load::IdleConfig {
        part: Some(iomodels_load::IdlePart {
            first: 19_990,
            total: 40_000,
        }),
        hold: Duration::from_millis(100),
        ..idle_cfg(server.addr, 20)
    };
    assert_eq!(cfg.sources(), 2);
    let report = iomodels_load::hold_idle(&cfg, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(report.sources, 2, "{report:?}");
    assert_eq!(report.conns_established, 20, "{report:?}");
    assert_eq!(report.conns_held, 20, "{report:?}");
    assert_eq!(report.conns_still_open, 20, "{report:?}");
    let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert_eq!(iomodels_load::max_idle_conns(v4), 254 * 10_000);
    assert_eq!(iomodels_load::max_idle_conns(v6), 20_000);
    assert_eq!(iomodels_load::idle_sources(v4, 100_000), 10);
    assert_eq!(iomodels_load::idle_sources(v6, 100_000), 1);
    // A plan past the reach is refused, not wrapped round the addresses.
    let too_far = iomodels_load::IdleConfig {
        part: Some(iomodels_load::IdlePart {
            first: 0,
            total: 254 * 10_000 + 1,
        }),
        ..idle_cfg(server.addr, 1)
    };
    let e = iomodels_load::hold_idle(&too_far, &AtomicBool::new(false), &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}
