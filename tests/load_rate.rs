//! `iomodels load --rate` (open loop) as a user meets it: against a server that cannot keep
//! the rate, the latency from the schedule grows with the backlog and the JSON says the
//! achieved rate fell short, where the closed loop on the same server shows a small latency
//! (coordinated omission); at a rate the real server keeps (plain TCP, TLS, UDP), the achieved
//! rate is the requested one and every echo verified; the flag's usage errors; the `--interval`
//! lines showing the sent rate.
//!
//! Linux only, like tests/cli.rs: the binary's tests share tests/support, which stops children with
//! Unix signals, and their expected errno names are Linux's. `iomodels.exe load` is run under Wine
//! by scripts/test-windows.sh instead (plain, TLS, UDP, idle, against a Linux and a Windows serve).
//! The bounds are loose by design (factors of several), never a timing target.
#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{json, run, run_usage_error, Served, BIN};

/// Bytes per message of these runs.
const SIZE: usize = 64;

/// A fake echo server on 127.0.0.1 that answers about 100 messages of [`SIZE`] bytes per
/// second per connection: it reads one message, sleeps 10 ms, echoes it. Every connection's
/// thread ends at end of stream, an error, or after 30 s.
fn slow_echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || slow_echo(stream));
        }
    });
    addr
}

fn slow_echo(mut stream: TcpStream) {
    let end = Instant::now() + Duration::from_secs(30);
    let mut msg = [0u8; SIZE];
    while Instant::now() < end {
        if stream.read_exact(&mut msg).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
        if stream.write_all(&msg).is_err() {
            return;
        }
    }
}

/// `iomodels load --connect ADDR --json ARGS`: its JSON report (whatever the exit status).
fn load_json(addr: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["load", "--connect", addr, "--json"];
    all.extend_from_slice(args);
    let (status, out, err) = run(BIN, &all);
    assert!(!out.trim().is_empty(), "no report ({status}): {err}");
    json(&out)
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn p99(v: &serde_json::Value, key: &str) -> u64 {
    v[key]["p99"]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}.p99 is not a number in {v}"))
}

#[test]
fn a_server_that_cannot_keep_the_rate_shows_in_the_latency_from_the_schedule() {
    let addr = slow_echo_server();
    // Open loop: 1000 msg/s offered to a server that answers ~100/s; depth 1 (as wrk2: the
    // next message waits for the echo of the last).
    let open = load_json(&addr, &["--rate", "1000", "--duration", "2s"]);
    assert_eq!(f(&open, "rate_requested_per_sec"), 1000.0, "{open}");
    // The achieved rates fell far short, and the JSON says so.
    for key in ["rate_sent_per_sec", "rate_received_per_sec"] {
        let r = f(&open, key);
        assert!(r < 400.0, "{key} {r}: {open}");
    }
    assert!(
        open["rate_unsent"].as_u64().unwrap() > 500,
        "unsent: {open}"
    );
    assert_eq!(open["mismatches"], 0, "{open}");
    // Message k is written only when the server is done with k earlier ones, ~10 ms each:
    // from its due time, the p99 is a second or more, far above the ~10 ms a message takes
    // the server, which the service latency (from the actual write) still shows.
    let late = p99(&open, "latency_us");
    assert!(late >= 500_000, "p99 from the schedule {late} µs: {open}");
    let service = p99(&open, "service_latency_us");
    assert!(service < 200_000, "service p99 {service} µs: {open}");
    assert!(late > 5 * service, "{open}");

    // The closed loop on the same server hides the stall: one message at a time, each
    // answered in ~10 ms, and no rate keys.
    let closed = load_json(&addr, &["--duration", "2s"]);
    let hidden = p99(&closed, "latency_us");
    assert!(hidden < 200_000, "closed-loop p99 {hidden} µs: {closed}");
    assert!(closed["messages"].as_u64().unwrap() > 0, "{closed}");
    assert!(late > 5 * hidden, "open {late} µs vs closed {hidden} µs");
    for key in [
        "rate_requested_per_sec",
        "rate_sent_per_sec",
        "rate_received_per_sec",
        "rate_unanswered",
        "service_latency_us",
    ] {
        assert!(
            closed[key].is_null(),
            "{key} in a closed-loop run: {closed}"
        );
    }
}

#[test]
fn pipelined_open_loop_keeps_sending_and_counts_the_unanswered() {
    let addr = slow_echo_server();
    // --depth 5000: the generator keeps the schedule whatever the server does; the backlog
    // queues in the socket buffers and the server, so the service latency grows too.
    let v = load_json(
        &addr,
        &["--rate", "1000", "--duration", "2s", "--depth", "5000"],
    );
    let sent = f(&v, "rate_sent_per_sec");
    assert!((500.0..=1500.0).contains(&sent), "sent {sent}/s: {v}");
    let received = f(&v, "rate_received_per_sec");
    assert!(received < 400.0, "received {received}/s: {v}");
    // Unanswered at the end of the drain: counted, not an error (the run is measured).
    assert!(v["rate_unanswered"].as_u64().unwrap() > 500, "{v}");
    assert_eq!(v["rate_unanswered"], v["incomplete_messages"], "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert!(p99(&v, "latency_us") >= 500_000, "{v}");
}

/// Asserts a run at 200 msg/s that the server keeps: achieved ≈ requested, all verified.
fn assert_kept(v: &serde_json::Value) {
    assert_eq!(f(v, "rate_requested_per_sec"), 200.0, "{v}");
    for key in ["rate_sent_per_sec", "rate_received_per_sec"] {
        let r = f(v, key);
        assert!((140.0..=260.0).contains(&r), "{key} {r}: {v}");
    }
    assert_eq!(v["rate_unanswered"], 0, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert_eq!(v["io_errors"], 0, "{v}");
    assert_eq!(v["messages"], v["rate_sent"], "{v}");
    // 200/s for 1 s, give or take the messages due at the very edges.
    let n = v["messages"].as_u64().unwrap();
    assert!((150..=250).contains(&n), "{n} messages: {v}");
    assert!(!v["service_latency_us"].is_null(), "{v}");
}

#[test]
fn at_a_rate_the_server_keeps_the_achieved_rate_is_the_requested_one() {
    let s = Served::start(&["--model", "completion-port", "--udp"]);
    let addr = s.addr.to_string();
    let args = ["--rate", "200", "--duration", "1s", "--conns", "3"];
    let (status, out, err) = run(
        BIN,
        &[&["load", "--connect", &addr, "--json"][..], &args].concat(),
    );
    assert!(status.success(), "{err}");
    assert_kept(&json(&out));
    // UDP: the same schedule, datagrams.
    let (status, out, err) = run(
        BIN,
        &[&["load", "--connect", &addr, "--json", "--udp"][..], &args].concat(),
    );
    assert!(status.success(), "{err}");
    let v = json(&out);
    assert_kept(&v);
    assert_eq!(v["udp"]["lost"], 0, "{v}");
}

#[test]
fn at_a_rate_the_server_keeps_tls_too() {
    let dir = std::env::temp_dir().join(format!("iomodels-load-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (s, cert) = Served::self_signed(&dir);
    let addr = s.addr.to_string();
    let (status, out, err) = run(
        BIN,
        &[
            "load",
            "--connect",
            &addr,
            "--json",
            "--tls",
            "--tls-ca",
            &cert,
            "--rate",
            "200",
            "--duration",
            "1s",
            "--conns",
            "2",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{err}");
    let v = json(&out);
    assert_eq!(v["tls"], true);
    assert_kept(&v);
}

#[test]
fn rate_interval_lines_show_the_sent_rate() {
    let s = Served::start(&["--model", "select"]);
    let addr = s.addr.to_string();
    let (status, out, err) = run(
        BIN,
        &[
            "load",
            "--connect",
            &addr,
            "--rate",
            "500",
            "--duration",
            "1s",
            "--interval",
            "250ms",
        ],
    );
    assert!(status.success(), "{err}");
    let first = err.lines().next().unwrap();
    assert!(first.contains("open loop at 500 msg/s"), "{first}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert!((2..=6).contains(&lines.len()), "{err}");
    for l in &lines {
        assert!(l.contains("sent ") && l.contains("/s  "), "{l}");
    }
    for needle in ["rate ", "requested 500/s", "service (us)", "(clean)"] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}

#[test]
fn rate_flag_errors_are_usage_errors() {
    for (args, needle) in [
        (&["--rate", "0"][..], "at least 1"),
        (&["--rate", "101M"][..], "too high a rate"),
        (&["--rate", "fast"][..], "not a rate"),
        (&["--rate=-5"][..], "not a rate"),
        (&["--rate", "1.5"][..], "not a rate"),
        (&["--rate", "100", "--handshakes"][..], "--handshakes"),
        (&["--rate", "100", "--idle"][..], "--idle"),
    ] {
        let all = [&["load", "--connect", "127.0.0.1:9"][..], args].concat();
        run_usage_error(BIN, &all, needle);
    }
    // k and M suffixes are taken (the run itself fails: nobody listens on port 9).
    let (status, _, err) = run(
        BIN,
        &[
            "load",
            "--connect",
            "127.0.0.1:9",
            "--rate",
            "5k",
            "--duration",
            "100ms",
        ],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("open loop at 5000 msg/s"), "{err}");
}
