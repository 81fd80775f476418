//! `iomodels udp` on loopback, through the binary: unicast counting, multicast to two
//! receivers, the JSON report, SIGINT, discovery, socat as a peer in both directions, and
//! every argument error as a usage error (status 2, clap's layout).
//!
//! Linux only: the children are stopped with kill(2) (SIGINT), and socat is a Linux process.
#![cfg(target_os = "linux")]

mod support;

use support::*;

/// Starts `iomodels udp recv --listen 127.0.0.1:0 FLAGS`; returns it, once it listens, and
/// its port.
fn udp_recv(flags: &[&str]) -> (Proc, u16) {
    let mut args = vec!["udp", "recv", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let mut recv = Proc::spawn(BIN, &args);
    let port = port_in(&recv.stderr_line("listening on"));
    (recv, port)
}

/// Runs `iomodels udp send --to TO FLAGS`, expects success, returns its stdout.
fn udp_send(to: &str, flags: &[&str]) -> String {
    let mut args = vec!["udp", "send", "--to", to];
    args.extend_from_slice(flags);
    run_ok(BIN, &args)
}

#[test]
fn unicast_thousand_datagrams_all_arrive_and_none_is_lost() {
    let (recv, port) = udp_recv(&["--count", "1000", "--duration", "25s", "--json"]);
    let to = format!("127.0.0.1:{port}");
    let sent = json(&udp_send(
        &to,
        &[
            "--count", "1000", "--rate", "1000", "--size", "100", "--json",
        ],
    ));
    assert_eq!(num(&sent, "sent"), 1000, "{sent}");
    // The JSON naming scheme (README "JSON output"): seconds, rates, bytes; and where it came
    // from, as in every JSON of this tool.
    assert!(sent["elapsed_secs"].as_f64().unwrap() > 0.0, "{sent}");
    assert!(sent["msgs_per_sec"].as_f64().unwrap() > 0.0, "{sent}");
    assert_eq!(num(&sent, "size_bytes"), 100, "{sent}");
    for old in ["elapsed_s", "rate_pps", "size"] {
        assert!(sent.get(old).is_none(), "old key {old}: {sent}");
    }
    assert_eq!(sent["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(sent["machine"]["cpu_model"].as_str().is_some(), "{sent}");
    let (status, out, err) = recv.finish();
    assert!(status.success(), "{err}");
    let r = json(&out);
    assert_eq!(num(&r, "received"), 1000, "{r}");
    assert_eq!(num(&r, "unique"), 1000, "{r}");
    assert_eq!(num(&r, "lost"), 0, "{r}");
    assert_eq!(num(&r, "duplicated"), 0, "{r}");
    assert_eq!(num(&r, "foreign"), 0, "{r}");
    assert_eq!(num(&r, "bytes"), 100_000, "{r}");
    assert_eq!(r["stopped"], "count");
    assert_eq!(r["run_id"], sent["run_id"]);
}

/// The table says why the receiver stopped in words, not as an enum's name (`Count`).
#[test]
fn recv_table_says_why_it_stopped_in_words() {
    let (recv, port) = udp_recv(&["--count", "5", "--duration", "25s"]);
    udp_send(&format!("127.0.0.1:{port}"), &["--count", "5"]);
    let (status, out, err) = recv.finish();
    assert!(status.success(), "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("received "))
        .unwrap_or_else(|| panic!("no received line in:\n{out}"));
    assert!(line.ends_with("; stopped: --count reached"), "{line}");
    assert!(!out.contains("Count"), "{out}");
}

#[test]
fn recv_json_has_every_counter_and_the_latency_percentiles() {
    let (recv, port) = udp_recv(&["--count", "5", "--duration", "25s", "--json"]);
    udp_send(&format!("127.0.0.1:{port}"), &["--count", "5"]);
    let (status, out, _) = recv.finish();
    assert!(status.success());
    assert_eq!(out.lines().count(), 1, "one JSON object on one line: {out}");
    let r = json(&out);
    for key in [
        "received",
        "unique",
        "lost",
        "duplicated",
        "reordered",
        "foreign",
        "other_runs",
        "out_of_range",
        "clock_skewed",
        "bytes",
    ] {
        num(&r, key);
    }
    for key in ["min", "p50", "p99", "max", "mean"] {
        assert!(
            r["latency_us"][key].as_f64().is_some(),
            "latency_us.{key}: {r}"
        );
    }
    assert!(r["elapsed_secs"].as_f64().is_some());
    assert!(r.get("elapsed_s").is_none(), "old key: {r}");
    assert!(r["error"].is_null(), "a run that worked: {r}");
    assert_eq!(r["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(num(&r, "highest_seq"), 4);
    assert_eq!(r["run_id"].as_str().unwrap().len(), 16);
    assert!(r["sender"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[test]
fn multicast_on_loopback_reaches_both_receivers_entirely() {
    let port = free_udp_port().to_string();
    let group = group(1);
    let listen = format!("0.0.0.0:{port}");
    // One receiver names the interface by address, the other by name.
    let mut receivers: Vec<Proc> = ["127.0.0.1", "lo"]
        .iter()
        .map(|iface| {
            let mut r = Proc::spawn(
                BIN,
                &[
                    "udp",
                    "recv",
                    "--listen",
                    &listen,
                    "--multicast",
                    &group,
                    "--iface",
                    iface,
                    "--count",
                    "1000",
                    "--duration",
                    "25s",
                    "--json",
                ],
            );
            let line = r.stderr_line("joined");
            assert!(
                line.contains(&format!("joined {group} on {iface}")),
                "{line}"
            );
            r
        })
        .collect();
    udp_send(
        &format!("{group}:{port}"),
        &[
            "--loop",
            "--iface",
            "127.0.0.1",
            "--count",
            "1000",
            "--rate",
            "1000",
        ],
    );
    for r in receivers.drain(..) {
        let (status, out, err) = r.finish();
        assert!(status.success(), "{err}");
        let r = json(&out);
        assert_eq!((num(&r, "received"), num(&r, "lost")), (1000, 0), "{r}");
        assert_eq!(num(&r, "duplicated"), 0, "{r}");
    }
}

#[test]
fn sigint_ends_recv_with_its_report_and_status_0() {
    let (recv, port) = udp_recv(&["--json"]);
    udp_send(
        &format!("127.0.0.1:{port}"),
        &["--count", "10", "--rate", "0"],
    );
    // The datagrams are in the receiver's socket buffer once send has returned (loopback
    // delivers in the send): wait until it has read them all, then interrupt it.
    iomodels_testkit::wait_until(DEADLINE, "the receiver reading the 10 datagrams", || {
        udp_queue(port) == Some(0)
    });
    let (status, out, err) = recv.interrupt();
    assert!(status.success(), "status {status}; stderr:\n{err}");
    let r = json(&out);
    assert_eq!(r["stopped"], "signal", "{r}");
    assert_eq!(num(&r, "received"), 10, "{r}");
}

#[test]
fn foreign_datagrams_from_socat_are_counted_apart() {
    let (recv, port) = udp_recv(&["--count", "10", "--duration", "25s", "--json"]);
    for i in 0..3 {
        // `-u`: one direction, stdin to the socket; one short line, one datagram.
        let to = format!("UDP4-SENDTO:127.0.0.1:{port}");
        let (status, _, err) = run(
            "sh",
            &["-c", &format!("printf 'not ours {i}' | socat -u - {to}")],
        );
        assert!(status.success(), "socat: {err}");
    }
    udp_send(&format!("127.0.0.1:{port}"), &["--count", "10"]);
    let (status, out, _) = recv.finish();
    assert!(status.success());
    let r = json(&out);
    assert_eq!(num(&r, "foreign"), 3, "{r}");
    assert_eq!((num(&r, "received"), num(&r, "lost")), (10, 0), "{r}");
}

/// The bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port`, from
/// /proc/net/udp; `None` if no socket is bound there.
fn udp_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    // sl local_address rem_address st tx_queue:rx_queue ...
    table.lines().find_map(|l| {
        let mut fields = l.split_whitespace().skip(1);
        if fields.next() != Some(&want) {
            return None;
        }
        let queues = fields.nth(2)?;
        u64::from_str_radix(queues.split_once(':')?.1, 16).ok()
    })
}

/// Whether a UDP socket is bound to 127.0.0.1:`port`, from /proc/net/udp.
fn udp_bound(port: u16) -> bool {
    udp_queue(port).is_some()
}

#[test]
fn socat_receives_our_numbered_datagrams() {
    let port = free_udp_port();
    let socat = Proc::spawn(
        "socat",
        &["-u", &format!("UDP4-RECV:{port},bind=127.0.0.1"), "-"],
    );
    iomodels_testkit::wait_until(DEADLINE, &format!("socat binding 127.0.0.1:{port}"), || {
        udp_bound(port)
    });
    udp_send(
        &format!("127.0.0.1:{port}"),
        &["--count", "20", "--size", "100", "--rate", "1000"],
    );
    // Loopback delivers in the send: wait until socat has written all 20 out.
    iomodels_testkit::wait_until(DEADLINE, "socat printing the 20 datagrams", || {
        socat.stdout_so_far().matches("IOMu").count() >= 20
    });
    let (_, out, _) = socat.interrupt();
    // socat writes each datagram's payload as it came, 20 of them, each with our header; the
    // run id's bytes are not text, but the ASCII magic survives the lossy conversion.
    assert_eq!(
        out.matches("IOMu").count(),
        20,
        "socat got {} bytes",
        out.len()
    );
}

#[test]
fn discover_lists_both_responders_on_a_loopback_group() {
    let port = free_udp_port().to_string();
    let group = group(2);
    let listen = format!("0.0.0.0:{port}");
    let responders: Vec<Proc> = ["127.0.0.1:7001", "127.0.0.1:7002"]
        .iter()
        .map(|service| {
            let mut r = Proc::spawn(
                BIN,
                &[
                    "udp",
                    "discover",
                    "--respond",
                    "--listen",
                    &listen,
                    "--multicast",
                    &group,
                    "--iface",
                    "lo",
                    "--service",
                    service,
                    "--duration",
                    "25s",
                ],
            );
            r.stderr_line("answering with service");
            r
        })
        .collect();
    let out = run_ok(
        BIN,
        &[
            "udp",
            "discover",
            "--probe",
            "--to",
            &format!("{group}:{port}"),
            "--iface",
            "127.0.0.1",
            "--loop",
            "--timeout",
            "1s",
            "--json",
        ],
    );
    let r = json(&out);
    let mut services: Vec<&str> = r["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["service"].as_str().unwrap())
        .collect();
    services.sort();
    assert_eq!(services, ["127.0.0.1:7001", "127.0.0.1:7002"], "{r}");
    for a in r["answers"].as_array().unwrap() {
        assert!(a["rtt_us"].as_f64().unwrap() > 0.0, "{a}");
    }
    for p in responders {
        let (status, out, _) = p.interrupt();
        assert!(status.success());
        assert_eq!(out.trim(), "answered 1 probes");
    }
}

#[test]
fn every_argument_error_is_a_usage_error() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["udp", "recv", "--multicast", "10.1.2.3"],
            "10.1.2.3 is not a multicast address",
        ),
        (
            &[
                "udp",
                "recv",
                "--multicast",
                "239.1.2.3",
                "--iface",
                "nosuch0",
            ],
            "--iface nosuch0: no interface has this name",
        ),
        (
            &[
                "udp",
                "recv",
                "--multicast",
                "239.1.2.3",
                "--iface",
                "10.255.254.253",
            ],
            "--iface 10.255.254.253: no interface has this address",
        ),
        (
            &["udp", "recv", "--multicast", "ff02::1:3"],
            "name the interface with --iface",
        ),
        (&["udp", "recv", "--iface", "lo"], "--multicast"),
        (
            &["udp", "recv", "--multicast", "ff0e::1", "--source", "::1"],
            "IPv4 only",
        ),
        (
            // Nothing is sent: the kernel refuses the first datagram.
            &["udp", "send", "--to", "255.255.255.255:9", "--count", "1"],
            "255.255.255.255 is a broadcast address: add --broadcast (the kernel refuses \
             broadcast without SO_BROADCAST: EACCES)",
        ),
        (
            &["udp", "send", "--to", "127.0.0.1:9", "--size", "65508"],
            "the largest UDP payload over IPv4 is 65507 bytes",
        ),
        (
            &["udp", "send", "--to", "127.0.0.1:9", "--size", "27"],
            "28-byte header",
        ),
        (
            &["udp", "send", "--to", "127.0.0.1:9", "--loop"],
            "apply to multicast destinations",
        ),
        (
            &["udp", "send", "--to", "[::1]:9", "--broadcast"],
            "IPv6 has no broadcast",
        ),
        (
            &["udp", "send", "--to", "239.1.2.3:9", "--iface", "nosuch0"],
            "no interface has this name",
        ),
        (&["udp", "send", "--to", "nowhere"], "has no port"),
        (&["udp", "discover", "--probe"], "--probe needs --to"),
        (
            &["udp", "discover", "--probe", "--respond"],
            "cannot be used with",
        ),
    ];
    for (args, needle) in cases {
        run_usage_error(BIN, args, needle);
    }
}

#[test]
fn a_probe_nobody_answers_fails_in_one_line() {
    let port = free_udp_port();
    let (status, out, err) = run(
        BIN,
        &[
            "udp",
            "discover",
            "--probe",
            "--to",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "200ms",
            "--json",
        ],
    );
    assert!(!status.success());
    let v = json(&out);
    assert_eq!(v["answers"], serde_json::json!([]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no answer to 1 probe(s)"), "{err}");
    // The JSON says the same as the stderr line.
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {v}"));
    assert!(err.contains(error), "{err:?} vs {error:?}");
    assert!(error.contains("no answer to 1 probe(s)"), "{v}");
}
