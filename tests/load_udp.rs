//! `iomodels load --udp` as a user meets it: against `iomodels serve --udp --no-tcp` in every
//! model (every echo verified, the server's counters agree), the JSON report, nobody at the
//! port (one line: no UDP echo server), and the flag combinations that make no sense.
//!
//! Linux only, like tests/load_tls.rs: the binary's tests share tests/support, which stops children
//! with Unix signals, and their expected errno names are Linux's. `iomodels.exe load` is run under
//! Wine by scripts/test-windows.sh instead (plain, TLS, UDP, idle, against a Linux and a Windows
//! serve).
#![cfg(target_os = "linux")]

mod support;

use std::process::{Command, Output};

use support::{assert_one_line_error, assert_usage_error, free_udp_port, Served, BIN};

/// Runs `iomodels ARGS` to completion, under `timeout 60` so a hang fails instead of blocking.
fn iomodels(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .args(args)
        .output()
        .expect("run timeout iomodels")
}

/// `iomodels load --udp --connect ADDR FLAGS`, to completion.
fn load_udp(addr: &str, flags: &[&str]) -> Output {
    let mut args = vec!["load", "--udp", "--connect", addr];
    args.extend_from_slice(flags);
    iomodels(&args)
}

mod per_model {
    use super::*;

    /// 20 sockets, depth 2, 300 datagrams each, through `serve --udp --no-tcp --model MODEL`:
    /// everything sent verifies (a generous loss timeout: a busy machine is slow, not lossy), and
    /// the server counted every datagram the load generator got back.
    pub fn load_udp_through_the_binary_verifies_every_echo(model: &str) {
        let mut s = Served::start(&["--model", model, "--udp", "--no-tcp"]);
        let addr = s.addr.to_string();
        let out = load_udp(
            &addr,
            &[
                "--conns",
                "20",
                "--depth",
                "2",
                "--size",
                "100",
                "--messages",
                "300",
                "--udp-timeout",
                "2s",
                "--json",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(r["mode"], "udp");
        assert_eq!(r["mismatches"], 0, "{model}: {r}");
        assert_eq!(r["udp"]["sent"], 20 * 300, "{model}: {r}");
        let received = r["udp"]["received"].as_u64().unwrap();
        assert!(received > 0, "{model}: {r}");
        assert_eq!(r["udp"]["duplicated"], 0, "{model}: {r}");
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{model}: {r}");
        let stats = s.stats_until("the echoes counted", |v| {
            v["udp_datagrams_out"].as_u64().unwrap_or(0) >= received
        });
        assert!(stats["udp_datagrams_in"].as_u64().unwrap() <= 20 * 300);
        assert_eq!(stats["udp_truncated"], 0);
        assert!(s.terminate().success());
    }
}

per_model! {
    check: every_available_model_is_loaded_over_udp;
    cases: [load_udp_through_the_binary_verifies_every_echo];
}

#[test]
fn the_table_reports_datagrams_and_loss() {
    let s = Served::start(&["--udp", "--no-tcp"]);
    let addr = s.addr.to_string();
    let out = load_udp(&addr, &["--conns", "4", "--duration", "300ms"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for want in [
        "(UDP)",
        "datagrams/s",
        "sent ",
        "lost ",
        "late ",
        "duplicated ",
        "p99.9",
    ] {
        assert!(table.contains(want), "{want:?} in\n{table}");
    }
    assert!(s.terminate().success());
}

#[test]
fn nobody_at_the_port_is_one_line_not_a_count_of_losses() {
    // A port that was just free.
    let addr = format!("127.0.0.1:{}", free_udp_port());
    let out = load_udp(&addr, &["--conns", "3", "--duration", "5s"]);
    assert_one_line_error(
        &out,
        &[
            "no UDP echo server at",
            &addr,
            "connection refused (ECONNREFUSED)",
        ],
    );
}

#[test]
fn udp_flag_combinations_that_make_no_sense_are_usage_errors() {
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--size", "7"], &["--size", "at least 8"]),
        (&["--size", "65508"], &["--size", "at most 65507"]),
        (&["--tls"], &["--udp", "TLS", "drop --tls"]),
        (&["--handshakes"], &["--handshakes", "drop --udp"]),
        (&["--idle"], &["--idle", "drop --udp"]),
        (&["--udp-timeout", "0s"], &["--udp-timeout"]),
    ];
    for (extra, needles) in cases {
        let mut flags = vec!["--duration", "1s"];
        flags.extend_from_slice(extra);
        assert_usage_error(&load_udp("127.0.0.1:9", &flags), needles);
    }
}
