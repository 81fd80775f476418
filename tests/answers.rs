//! Answers instead of zeros: `load` against servers that fail it, each faked in this test
//! process — a closed port (refused), one that resets every connection (SO_LINGER 0), one that
//! speaks TLS (a TLS alert record on the first bytes), one that reads and never answers (a
//! discard server), one that closes its connections mid-run, one that resets half of them —
//! ends with exit 1 and one stderr line naming the cause in words with its errno name, and
//! with `--json` still prints its object, `error` set to the same words and the latency of a
//! run with no echo `null`. A clean run's JSON has `error: null`, `build` and `machine`.
//! `load --udp` against nothing (refused) and against a silent UDP socket (no answer) too.
//!
//! Linux only, like tests/load_udp.rs: the binary's tests share tests/support, which stops children
//! with Unix signals, and their expected errno names are Linux's. `iomodels.exe load` is run under
//! Wine by scripts/test-windows.sh instead (plain, TLS, UDP, idle, against a Linux and a Windows
//! serve). Every fake server serves a bounded number of connections, every wait is bounded (the
//! runs by `support::DEADLINE`, the servers' reads by a read timeout).
#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Output;
use std::time::Duration;

use support::{assert_one_line_error, run, Served, BIN};

/// A fake TCP server on 127.0.0.1: the first `conns` connections it accepts are each given
/// to `serve` (with their order of arrival) on a thread of their own.
fn fake(conns: usize, serve: fn(TcpStream, usize)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, s) in l.incoming().take(conns).enumerate() {
            let Ok(s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            std::thread::spawn(move || serve(s, i));
        }
    });
    addr
}

/// Reads (and drops) until the client's end of stream, an error or the read timeout.
fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// Echoes until the client's end of stream.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        if s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Resets the connection: SO_LINGER 0, then close.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// `load --connect ADDR ARGS`, to completion (bounded), as an `Output`.
fn load(addr: &str, args: &[&str]) -> Output {
    let mut all = vec!["load", "--connect", addr];
    all.extend_from_slice(args);
    let (status, out, err) = run(BIN, &all);
    Output {
        status,
        stdout: out.into_bytes(),
        stderr: err.into_bytes(),
    }
}

/// The run failed in one stderr line with every needle, and printed no table of zeros.
fn fails_with(out: &Output, needles: &[&str]) {
    assert_one_line_error(out, needles);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("completed     0 msgs"),
        "a table of zeros: {stdout}"
    );
}

/// The run failed (one stderr line with every needle) and still printed its JSON object,
/// whose `error` says the same; returns the object.
fn json_fails_with(out: &Output, needles: &[&str]) -> serde_json::Value {
    assert_one_line_error(out, needles);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {v}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(error), "{err:?} is not {error:?}");
    for needle in needles {
        assert!(
            error.contains(needle),
            "{error:?} does not mention {needle:?}"
        );
    }
    assert!(!v["failures"].as_array().unwrap().is_empty(), "{v}");
    v
}

/// Both ways: the table run and the `--json` run of `load --connect ADDR ARGS` fail with
/// `needles`; returns the JSON.
fn both_fail_with(addr: &str, args: &[&str], needles: &[&str]) -> serde_json::Value {
    fails_with(&load(addr, args), needles);
    let mut json = args.to_vec();
    json.push("--json");
    json_fails_with(&load(addr, &json), needles)
}

#[test]
fn nothing_listening_is_connection_refused_with_its_errno() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let v = both_fail_with(
        &addr,
        &["--conns", "3", "--duration", "1s"],
        &[
            &format!("no connection to {addr} could be established"),
            "connection refused (ECONNREFUSED) on 3 of 3 connections",
        ],
    );
    assert!(v["latency_us"].is_null(), "{v}");
    assert!(v["msgs_per_sec"].is_null(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "refused");
    assert_eq!(v["failures"][0]["errno"], "ECONNREFUSED");
    assert_eq!(v["failures"][0]["conns"], 3);
}

#[test]
fn a_server_that_resets_is_named_with_econnreset() {
    let addr = fake(6, |s, _| reset(s)).to_string();
    let v = both_fail_with(
        &addr,
        &["--conns", "3", "--duration", "1s"],
        &[
            "the server reset 3 of 3 connections (connection reset by peer, ECONNRESET)",
            "see the server's log",
        ],
    );
    assert!(v["latency_us"].is_null(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "reset");
}

#[test]
fn a_tls_server_answering_a_plain_run_says_add_tls() {
    // The first bytes back are a TLS alert record (fatal, handshake_failure), as a TLS
    // server sends to bytes that are no ClientHello.
    let addr = fake(6, |mut s, _| {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        let _ = s.shutdown(Shutdown::Write);
        drain(s);
    })
    .to_string();
    let v = both_fail_with(
        &addr,
        &["--conns", "3", "--duration", "1s"],
        &["the server answered with TLS records: add --tls"],
    );
    assert!(v["latency_us"].is_null(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "tls_records");
    assert_eq!(v["mismatches"], 3, "{v}");
}

#[test]
fn a_server_that_never_answers_is_called_a_discard_server_after_a_short_drain() {
    let addr = fake(6, |s, _| drain(s)).to_string();
    let v = both_fail_with(
        &addr,
        &["--conns", "3", "--duration", "1s"],
        &[
            "the server sends nothing back (a discard server?)",
            "on 3 of 3 connections",
        ],
    );
    assert!(v["latency_us"].is_null(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "silent");
    assert_eq!(v["incomplete_messages"], 3, "{v}");
    // It did not wait out the whole drain timeout (5 s) after its 1 s: with nothing ever
    // echoed, the drain is short.
    let elapsed = v["elapsed_secs"].as_f64().unwrap();
    assert!(elapsed < 1.0 + 5.0, "the full drain was waited: {v}");
}

#[test]
fn a_server_that_closes_mid_run_gives_the_figures_and_the_count_it_closed() {
    // Echoes 10 messages of 64 bytes on each connection, then closes its side.
    let addr = fake(4, |mut s, _| {
        let mut left = 640usize;
        let mut buf = [0u8; 640];
        while left > 0 {
            match s.read(&mut buf[..left]) {
                Ok(n @ 1..) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
                _ => return,
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        drain(s);
    })
    .to_string();
    let args = ["--conns", "2", "--duration", "5s"];
    let needles = [
        "was not clean",
        "the server closed 2 of 2 connections before their echoes were done",
        "see the server's log",
    ];
    // Partial: the figures of what ran (a table), then the line.
    let out = load(&addr, &args);
    assert_one_line_error(&out, &needles);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("completed     20 msgs"), "{table}");
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert_eq!(v["messages"], 20, "{v}");
    assert!(v["latency_us"]["p50"].as_u64().is_some(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "closed");
    assert!(v["failures"][0]["errno"].is_null(), "{v}");
}

#[test]
fn a_partial_failure_is_the_figures_plus_the_failures() {
    // The first connection accepted is echoed, the second reset.
    let addr = fake(4, |s, i| if i % 2 == 0 { echo(s) } else { reset(s) }).to_string();
    let args = ["--conns", "2", "--messages", "50", "--duration", "10s"];
    let needles = [
        "was not clean",
        "the server reset 1 of 2 connections",
        "ECONNRESET",
    ];
    let out = load(&addr, &args);
    assert_one_line_error(&out, &needles);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("completed     50 msgs"), "{table}");
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert_eq!(v["messages"], 50, "{v}");
    assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn a_clean_runs_json_has_no_error_and_says_its_build_and_machine() {
    let s = Served::start(&[]);
    let out = load(
        &s.addr.to_string(),
        &["--conns", "2", "--messages", "20", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["failures"], serde_json::json!([]));
    assert_eq!(v["build"]["version"], env!("CARGO_PKG_VERSION"));
    // Tests run from the checkout: its commit is known.
    assert!(v["build"]["commit"].as_str().unwrap().len() >= 12, "{v}");
    assert!(
        !v["machine"]["cpu_model"].as_str().unwrap().is_empty(),
        "{v}"
    );
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1, "{v}");
    assert!(!v["machine"]["kernel"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["machine"]["os"], "linux");
    // The naming scheme: bytes, counts, rates, units.
    assert_eq!(v["size_bytes"], 64);
    assert_eq!(v["incomplete_messages"], 0);
    assert!(v["elapsed_secs"].as_f64().unwrap() > 0.0);
    assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us"]["p99"].as_u64().is_some());
    for old in ["size", "incomplete"] {
        assert!(v.get(old).is_none(), "old key {old}: {v}");
    }
    // Not a handshake run: its rate does not exist.
    assert!(v["handshakes_per_sec"].is_null(), "{v}");
}

#[test]
fn load_udp_against_nothing_prints_its_json_with_the_error() {
    let addr = {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap().to_string()
    };
    let args = ["--udp", "--conns", "3", "--duration", "5s"];
    let needles = [
        &format!("no UDP echo server at {addr}") as &str,
        "connection refused (ECONNREFUSED) on 3 of 3 sockets",
    ];
    fails_with(&load(&addr, &args), &needles);
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert_eq!(v["mode"], "udp");
    assert!(v["latency_us"].is_null(), "{v}");
    assert_eq!(v["udp"]["refused"], 3, "{v}");
    assert_eq!(v["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["machine"]["cores"].as_u64().is_some(), "{v}");
}

#[test]
fn load_udp_against_a_silent_socket_says_the_server_did_not_answer() {
    // Bound (no ICMP port unreachable), never read: every datagram is lost.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let args = [
        "--udp",
        "--conns",
        "2",
        "--duration",
        "300ms",
        "--udp-timeout",
        "50ms",
    ];
    let needles = ["the server did not answer", "within --udp-timeout 50 ms"];
    fails_with(&load(&addr, &args), &needles);
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert_eq!(v["failures"][0]["kind"], "no_answer");
    assert!(v["latency_us"].is_null(), "{v}");
    assert!(v["udp"]["lost"].as_u64().unwrap() > 0, "{v}");
    drop(silent);
}

#[test]
fn bench_files_of_earlier_versions_load_and_come_out_in_the_scheme() {
    let dir = std::env::temp_dir().join(format!("iomodels-answers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");
    let bench = |file: &str| {
        let path = format!("{}/docs/{file}", env!("CARGO_MANIFEST_DIR"));
        let (status, out, err) = run(
            BIN,
            &[
                "bench",
                "--results",
                &path,
                "--json",
                "--report",
                report.to_str().unwrap(),
            ],
        );
        assert!(status.success(), "{file}: {err}");
        // `--json` alone: the JSON on stdout (one object), the table on stderr.
        assert!(err.contains("report: "), "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    // Written with `cpu_s_per_million` (an earlier name): read, and written under the new one.
    let v = bench("bench-pingpong-2026-12-05.json");
    let row = &v["scenarios"][0]["rows"][0];
    assert!(
        row["cpu_secs_per_million"]["median"].as_f64().is_some(),
        "{row}"
    );
    assert!(row.get("cpu_s_per_million").is_none(), "{row}");
    assert_eq!(v["machine"]["cpu_model"], "AMD EPYC");
    assert!(v["machine"]["cores"].as_u64().is_some());
    assert!(v["build"]["version"].as_str().is_some());
    // A soak of an earlier version: rss_before / rss / t read as the byte and second names.
    let v = bench("bench-soak-2026-11-27.json");
    let soak = v["scenarios"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r["soak"].as_object())
        .expect("a soak row");
    assert!(soak["rss_before_bytes"].as_u64().unwrap() > 0, "{soak:?}");
    assert!(soak["rss_bytes"]["max"].as_u64().unwrap() > 0, "{soak:?}");
    let sample = &soak["samples"][0];
    assert!(sample["t_secs"].as_f64().is_some(), "{sample}");
    assert!(sample["rss_bytes"].as_u64().is_some(), "{sample}");
    assert!(soak.get("rss_before").is_none() && sample.get("t").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_against_a_plain_echo_server_says_drop_tls_in_one_line() {
    let dir = std::env::temp_dir().join(format!("iomodels-answers-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("self-signed.pem").to_str().unwrap().to_string();
    // A TLS server only to get a certificate file for --tls-ca; the load goes to a plain one.
    let tls = Served::start(&["--tls-self-signed", "--tls-cert-out", &cert]);
    let plain = Served::start(&[]);
    let addr = plain.addr.to_string();
    let args = [
        "--tls",
        "--tls-ca",
        &cert,
        "--conns",
        "2",
        "--duration",
        "1s",
    ];
    // One line: rustls' own per-connection warnings are not logged by a client.
    let needles = [
        &format!("TLS handshake with {addr} failed") as &str,
        "it speaks no TLS; drop --tls",
    ];
    fails_with(&load(&addr, &args), &needles);
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert!(v["latency_us"].is_null(), "{v}");
    assert_eq!(v["failures"][0]["kind"], "tls");
    drop((tls, plain));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn udp_tool_errors_say_the_errno_once() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, out, err) = run(BIN, &["udp", "recv", "--listen", &addr, "--duration", "1s"]);
    let out = Output {
        status,
        stdout: out.into_bytes(),
        stderr: err.into_bytes(),
    };
    assert_one_line_error(
        &out,
        &[&format!("bind {addr}: address already in use (EADDRINUSE)")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("os error"), "said twice: {err}");
    // With --json, the failure is still one JSON object on stdout, its `error` the same words.
    {
        let args = [
            "udp",
            "recv",
            "--listen",
            &addr,
            "--duration",
            "1s",
            "--json",
        ];
        let (status, out, err) = run(BIN, &args);
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {out:?}"));
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(error.contains("address already in use (EADDRINUSE)"), "{v}");
        assert!(err.contains(error), "stderr {err:?} differs from {error:?}");
        assert_eq!(v["build"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(v["machine"]["cores"].as_u64().is_some(), "{v}");
    }
    drop(taken);
}

#[test]
fn an_idle_hold_against_nothing_says_refused_without_a_table_of_zeros() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let args = ["--idle", "--conns", "3", "--duration", "1s"];
    let needles = [
        "held 0 of 3 connections",
        "connection refused (ECONNREFUSED)",
    ];
    let out = load(&addr, &args);
    assert_one_line_error(&out, &needles);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = load(&addr, &[&args[..], &["--json"]].concat());
    assert_one_line_error(&out, &needles);
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(v["paced_p50_us"].is_null(), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("connection refused (ECONNREFUSED)"), "{v}");
    assert_eq!(v["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["machine"]["cpu_model"].as_str().is_some(), "{v}");
}

#[test]
fn a_connect_nobody_answers_is_timed_out_with_its_errno() {
    // A listener with a backlog of 0 that never accepts: the kernel queues one connection,
    // then drops the SYNs of the others, whose connects hang until the connect timeout (5 s).
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap().to_string();
    let out = load(&addr, &["--conns", "4", "--duration", "1s", "--json"]);
    let v = json_fails_with(
        &out,
        &["connect timed out (no answer within 5s", "(ETIMEDOUT)"],
    );
    assert!(v["latency_us"].is_null(), "{v}");
    let timed_out = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "timed_out")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(timed_out["errno"], "ETIMEDOUT");
    assert!(timed_out["conns"].as_u64().unwrap() >= 1, "{v}");
    drop(l);
}

#[test]
fn connections_left_in_the_backlog_at_a_servers_cap_are_named() {
    // A server with a cap of 2 connections: it accepts the third only once the first two
    // closed (after the run), as `serve --model select` at its FD_SETSIZE cap does.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let first: Vec<_> = (0..2)
                .filter_map(|_| l.accept().ok())
                .map(|(s, _)| std::thread::spawn(move || echo(s)))
                .collect();
            for t in first {
                let _ = t.join();
            }
            if let Ok((s, _)) = l.accept() {
                echo(s);
            }
        }
    });
    let args = ["--conns", "3", "--threads", "1", "--duration", "1s"];
    let needles = [
        "was not clean",
        "the server left 1 of 3 connections without an echo while the run lasted",
        "at its connection cap?",
    ];
    let out = load(&addr, &args);
    assert_one_line_error(&out, &needles);
    let v = json_fails_with(&load(&addr, &[&args[..], &["--json"]].concat()), &needles);
    assert_eq!(v["failures"][0]["kind"], "unserved");
    assert_eq!(v["conns_established"], 3, "{v}");
    assert_eq!(v["incomplete_messages"], 0, "{v}");
}
