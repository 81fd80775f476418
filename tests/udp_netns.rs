//! `iomodels udp` between network namespaces (Linux, root): a hub namespace holds a bridge,
//! and each endpoint namespace has a veth pair into it, with 10.77.0.N/24 and fd77::N/64 on
//! its `eth0`. Senders and receivers run in different namespaces (`ip netns exec`), so
//! datagrams cross real interfaces: multicast to members only, broadcast to everyone else,
//! IPv6 multicast, discovery by broadcast, and iperf 2 as a peer in both directions.
//!
//! The bridge floods multicast (snooping off), so a namespace that gets nothing got nothing
//! because its own stack did not join — which is the point of the non-member checks.
//! Every name carries the test process's id and a per-test tag; [`Lab`]'s `Drop` deletes
//! every namespace (and with them the veths and the bridge), also when a test panics. If
//! namespaces cannot be created (not root, no CAP_SYS_ADMIN), the tests fail and say so.

#![cfg(target_os = "linux")]

mod support;

use std::process::Command;
use support::*;

/// Three to four namespaces on one bridge, deleted on drop.
struct Lab {
    hub: String,
    nodes: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (Debian package iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Lab {
    /// `n` endpoint namespaces; node i (0-based) has 10.77.0.(i+1) and fd77::(i+1).
    fn new(tag: &str, n: usize) -> Lab {
        let base = format!("iomu{}{tag}", std::process::id());
        let mut lab = Lab::with_hub(format!("{base}h"));
        for i in 1..=n {
            lab.add_node(&format!("{base}{i}"), i);
        }
        lab
    }

    /// The hub namespace `hub` (failing, and saying why, when namespaces cannot be created)
    /// with its bridge `br0` up, multicast snooping off.
    fn with_hub(hub: String) -> Lab {
        let probe = Command::new("ip").args(["netns", "add", &hub]).output();
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "these tests need network namespaces, and `ip netns add` failed: {} (run as \
                 root with CAP_SYS_ADMIN)",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run `ip netns add` (Debian package iproute2): {e}"),
        }
        let lab = Lab {
            hub,
            nodes: Vec::new(),
        };
        let hub = &lab.hub;
        ip(&[
            "-n",
            hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", hub, "link", "set", "br0", "up"]);
        lab
    }

    /// Endpoint namespace `ns`, node number `i` (1-based): a veth pair into the hub's bridge,
    /// 10.77.0.`i`/24 and fd77::`i`/64 on its `eth0`, multicast routed out of `eth0`.
    fn add_node(&mut self, ns: &str, i: usize) {
        let hub = self.hub.clone();
        ip(&["netns", "add", ns]);
        self.nodes.push(ns.to_string());
        // No duplicate address detection: IPv6 addresses usable at once.
        let (status, _, err) = run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        );
        assert!(status.success(), "sysctl in {ns}: {err}");
        let port = format!("p{i}");
        ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &port, "netns",
            &hub,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.77.0.{i}/24"),
            "brd",
            "+",
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("fd77::{i}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        // For peers that name no interface (iperf): multicast goes out of eth0.
        ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
    }

    /// `program args` inside node `i`, as a child process.
    fn spawn(&self, i: usize, program: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", &self.nodes[i], program];
        all.extend_from_slice(args);
        Proc::spawn("ip", &all)
    }

    /// `program args` inside node `i`, to completion (bounded).
    fn run(
        &self,
        i: usize,
        program: &str,
        args: &[&str],
    ) -> (std::process::ExitStatus, String, String) {
        self.spawn(i, program, args).finish()
    }

    fn run_ok(&self, i: usize, program: &str, args: &[&str]) -> String {
        let (status, out, err) = self.run(i, program, args);
        assert!(
            status.success(),
            "in {}: {program} {args:?} failed ({status}):\n{out}\n{err}",
            self.nodes[i]
        );
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Node `i`'s UDP counters (its namespace's /proc/net/snmp and /proc/net/udp): datagrams its
/// sockets have read or dropped at a full buffer (`InDatagrams`, counted as they are read, plus
/// `InErrors`), and the bytes still queued in its sockets.
fn udp_counts(lab: &Lab, i: usize) -> (u64, u64) {
    let snmp = lab.run_ok(i, "cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let counter = |name: &str| {
        let at = names.split_whitespace().position(|n| n == name);
        at.and_then(|at| values.split_whitespace().nth(at)?.parse::<u64>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no Udp {name} in {}'s /proc/net/snmp:\n{snmp}",
                    lab.nodes[i]
                )
            })
    };
    let taken = counter("InDatagrams") + counter("InErrors");
    // sl local_address rem_address st tx_queue:rx_queue ...
    let queued = lab
        .run_ok(i, "cat", &["/proc/net/udp"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.split_once(':'))
        .filter_map(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        .sum();
    (taken, queued)
}

/// Waits (bounded) until the receivers in `nodes` are done with a run of `sent` datagrams:
/// each node's sockets have read (or dropped at a full buffer) all of them, or — some were
/// lost on the way and will never come — the counts have held still for 300 ms with nothing
/// left queued.
fn members_done_reading(lab: &Lab, nodes: &[usize], sent: u64) {
    let mut last = (Vec::new(), std::time::Instant::now());
    iomodels_testkit::wait_until(DEADLINE, "the members reading the run", || {
        let now: Vec<(u64, u64)> = nodes.iter().map(|&i| udp_counts(lab, i)).collect();
        if now.iter().all(|&(taken, _)| taken >= sent) {
            return true;
        }
        if now != last.0 {
            last = (now, std::time::Instant::now());
            return false;
        }
        now.iter().all(|&(_, queued)| queued == 0)
            && last.1.elapsed() >= std::time::Duration::from_millis(300)
    });
}

/// `udp recv --json` in node `i` with `args`, ready (bound and joined) when this returns.
fn receiver(lab: &Lab, i: usize, args: &[&str]) -> Proc {
    let mut all = vec!["udp", "recv", "--json"];
    all.extend_from_slice(args);
    let mut p = lab.spawn(i, BIN, &all);
    p.stderr_line("listening on");
    p
}

fn report(p: Proc, interrupt: bool) -> serde_json::Value {
    let (status, out, err) = if interrupt { p.interrupt() } else { p.finish() };
    assert!(status.success(), "recv failed ({status}): {err}");
    json(&out)
}

#[test]
fn multicast_reaches_every_member_and_no_non_member() {
    let lab = Lab::new("m", 4);
    let (count, rate) = ("10000", "5000");
    // Members run until interrupted, so a lost datagram costs no wait for a --count.
    let member = |i| {
        receiver(
            &lab,
            i,
            &[
                "--listen",
                "0.0.0.0:5000",
                "--multicast",
                "239.1.2.3",
                "--iface",
                "eth0",
                "--duration",
                "25s",
            ],
        )
    };
    let members = [member(1), member(2)];
    // Node 3 never joins: its stack drops the group's datagrams the bridge floods to it.
    let outsider = receiver(&lab, 3, &["--listen", "0.0.0.0:5000", "--duration", "25s"]);
    // A socket in a member's namespace, same port, no join: IP_MULTICAST_ALL off keeps the
    // group's datagrams from it.
    let neighbour = receiver(&lab, 2, &["--listen", "0.0.0.0:5000", "--duration", "25s"]);
    let sent = json(&lab.run_ok(
        0,
        BIN,
        &[
            "udp",
            "send",
            "--to",
            "239.1.2.3:5000",
            "--iface",
            "10.77.0.1",
            "--count",
            count,
            "--rate",
            rate,
            "--size",
            "200",
            "--json",
        ],
    ));
    assert_eq!(num(&sent, "sent"), 10_000, "{sent}");
    members_done_reading(&lab, &[1, 2], 10_000);
    for (m, p) in members.into_iter().enumerate() {
        let r = report(p, true);
        let l = &r["latency_us"];
        println!(
            "member {}: received {} lost {} duplicated {} reordered {}; latency p50 {} us p99 {} us max {} us",
            m + 1,
            r["received"], r["lost"], r["duplicated"], r["reordered"], l["p50"], l["p99"], l["max"]
        );
        // Every member gets the run. Not necessarily all of it: a receiver starved of CPU for
        // ~50 ms (two cores, shared with a build) overflows its 208 KiB socket buffer at
        // 5,000/s, and the tracker reports that loss; most of the run must arrive, and the
        // counters must add up.
        let (received, lost) = (num(&r, "received"), num(&r, "lost"));
        assert!(received >= 9_000, "member {}: {r}", m + 1);
        assert!(received + lost <= 10_000, "{r}");
        assert_eq!(num(&r, "duplicated"), 0, "{r}");
        assert_eq!(
            r["sender"].as_str().unwrap().split(':').next(),
            Some("10.77.0.1")
        );
    }
    for p in [outsider, neighbour] {
        let r = report(p, true);
        assert_eq!(r["stopped"], "signal");
        assert_eq!((num(&r, "received"), num(&r, "foreign")), (0, 0), "{r}");
    }
}

#[test]
fn broadcast_reaches_every_other_namespace_and_needs_the_flag() {
    let lab = Lab::new("b", 3);
    let err = lab.run(
        0,
        BIN,
        &["udp", "send", "--to", "10.77.0.255:5001", "--count", "1"],
    );
    // A usage error: clap's layout (the cause first, then the usage), exit 2.
    assert_eq!(err.0.code(), Some(2), "{}", err.2);
    assert_eq!(
        err.2.lines().next().unwrap_or(""),
        "error: 10.77.0.255 is a broadcast address: add --broadcast (the kernel refuses \
         broadcast without SO_BROADCAST: EACCES)"
    );
    assert!(err.2.contains("Usage: iomodels udp send"), "{}", err.2);
    let receivers: Vec<Proc> = (1..3)
        .map(|i| {
            receiver(
                &lab,
                i,
                &[
                    "--listen",
                    "0.0.0.0:5001",
                    "--count",
                    "500",
                    "--duration",
                    "25s",
                ],
            )
        })
        .collect();
    lab.run_ok(
        0,
        BIN,
        &[
            "udp",
            "send",
            "--to",
            "10.77.0.255:5001",
            "--broadcast",
            "--count",
            "500",
            "--rate",
            "1000",
        ],
    );
    for p in receivers {
        let r = report(p, false);
        assert_eq!((num(&r, "received"), num(&r, "lost")), (500, 0), "{r}");
    }
}

#[test]
fn ipv6_multicast_link_local_and_global_scope() {
    let lab = Lab::new("6", 3);
    // ff02:: by interface name, ff0e:: by interface address; the sender names eth0.
    for (group, iface) in [("ff02::4242", "eth0"), ("ff0e::4242", "fd77::2")] {
        let member = receiver(
            &lab,
            1,
            &[
                "--listen",
                "[::]:5002",
                "--multicast",
                group,
                "--iface",
                iface,
                "--count",
                "300",
                "--duration",
                "25s",
            ],
        );
        let outsider = receiver(&lab, 2, &["--listen", "[::]:5002", "--duration", "25s"]);
        lab.run_ok(
            0,
            BIN,
            &[
                "udp",
                "send",
                "--to",
                &format!("[{group}]:5002"),
                "--iface",
                "eth0",
                "--count",
                "300",
                "--rate",
                "1000",
            ],
        );
        let r = report(member, false);
        assert_eq!(
            (num(&r, "received"), num(&r, "lost")),
            (300, 0),
            "{group}: {r}"
        );
        let r = report(outsider, true);
        assert_eq!(num(&r, "received"), 0, "{group}: {r}");
    }
}

#[test]
fn discover_by_broadcast_finds_every_responder() {
    let lab = Lab::new("d", 3);
    let responders: Vec<Proc> = (1..3)
        .map(|i| {
            let mut p = lab.spawn(
                i,
                BIN,
                &[
                    "udp",
                    "discover",
                    "--respond",
                    "--listen",
                    "0.0.0.0:5003",
                    "--duration",
                    "25s",
                ],
            );
            p.stderr_line("answering with service");
            p
        })
        .collect();
    let out = lab.run_ok(
        0,
        BIN,
        &[
            "udp",
            "discover",
            "--probe",
            "--to",
            "10.77.0.255:5003",
            "--broadcast",
            "--timeout",
            "1s",
            "--json",
        ],
    );
    let r = json(&out);
    let mut found: Vec<(String, String)> = r["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["from"].as_str().unwrap().to_string(),
                a["service"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("10.77.0.2:5003".to_string(), "10.77.0.2:9990".to_string()),
            ("10.77.0.3:5003".to_string(), "10.77.0.3:9990".to_string()),
        ],
        "{r}"
    );
    for p in responders {
        p.interrupt();
    }
}

/// "[  1] Sent 132 datagrams" in iperf 2's client output.
fn iperf_sent(out: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let rest = l.split("Sent ").nth(1)?;
            rest.strip_suffix(" datagrams")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no \"Sent N datagrams\" in iperf's output:\n{out}"))
}

#[test]
fn iperf_multicast_client_is_counted_as_foreign_traffic() {
    let lab = Lab::new("i", 2);
    let recv = receiver(
        &lab,
        1,
        &[
            "--listen",
            "0.0.0.0:5004",
            "--multicast",
            "239.1.2.4",
            "--iface",
            "eth0",
            "--duration",
            "25s",
        ],
    );
    // iperf 2: UDP (-u), multicast TTL 1 (-T), one second at 200 kbit/s of 200-byte datagrams.
    let out = lab.run_ok(
        0,
        "iperf",
        &[
            "-c",
            "239.1.2.4",
            "-u",
            "-T",
            "1",
            "-t",
            "1",
            "-p",
            "5004",
            "-b",
            "200K",
            "-l",
            "200",
        ],
    );
    let sent = iperf_sent(&out);
    let r = report(recv, true);
    let foreign = num(&r, "foreign");
    // iperf counts its datagrams its own way (its closing datagrams among them): each one
    // arrived, none of them parsed as ours.
    assert!(
        foreign + 2 >= sent && foreign <= sent + 20 && sent > 0,
        "iperf sent {sent}, foreign {foreign}: {r}"
    );
    assert_eq!(num(&r, "received"), 0, "{r}");
}

#[test]
fn iperf_multicast_server_receives_our_datagrams() {
    let lab = Lab::new("s", 2);
    // iperf 2 server joined to the group (-B), CSV reports (-y C) every second (-i 1).
    let server = lab.spawn(
        1,
        "iperf",
        &[
            "-s",
            "-u",
            "-B",
            "239.1.2.5",
            "-p",
            "5005",
            "-i",
            "1",
            "-y",
            "C",
        ],
    );
    // iperf prints nothing when it is ready: wait until its socket shows in the namespace.
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, out, _) = lab.run(1, "cat", &["/proc/net/udp"]);
        if out.contains(&format!(":{:04X} ", 5005)) {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "iperf never bound port 5005"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    lab.run_ok(
        0,
        BIN,
        &[
            "udp",
            "send",
            "--to",
            "239.1.2.5:5005",
            "--iface",
            "eth0",
            "--count",
            "500",
            "--rate",
            "1000",
            "--size",
            "200",
        ],
    );
    // Wait for iperf's report of the whole run, then stop it.
    iomodels_testkit::wait_until(DEADLINE, "iperf reporting 500 datagrams", || {
        iperf_bytes(&server.stdout_so_far()) == Some(500 * 200)
    });
    let (_, out, err) = server.interrupt();
    let bytes =
        iperf_bytes(&out).unwrap_or_else(|| panic!("no CSV report from iperf:\n{out}\n{err}"));
    assert_eq!(bytes, 500 * 200, "iperf's report:\n{out}");
}

/// The most bytes any of iperf's CSV lines reports (time,src,sport,dst,dport,id,interval,
/// bytes,bits/s,...; the last line is the total).
fn iperf_bytes(out: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.split(',').nth(7)?.parse::<u64>().ok())
        .max()
}

per_model! {
    check: every_available_model_answers_from_the_address_a_datagram_was_sent_to;
    cases: [a_wildcard_server_answers_from_its_second_address_over_a_real_link];
}

mod per_model {
    use super::*;

    /// Issue #16, item 2, across a veth link: node 1 has a second address on its `eth0`
    /// (10.77.0.101, fd77::101) and serves UDP on the wildcard address; node 2's load
    /// generator, its sockets connected to the second address, must get every echo. Before,
    /// each answer left from the first address (the kernel's pick for the route back) and the
    /// connected sockets dropped all of them: 100% lost.
    pub fn a_wildcard_server_answers_from_its_second_address_over_a_real_link(model: &str) {
        // A lab of its own per model (the models' cases run at once).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let tag = format!(
            "w{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let lab = Lab::new(&tag, 2);
        let server_ns = &lab.nodes[0];
        for addr in ["10.77.0.101/24", "fd77::101/64"] {
            let mut args = vec!["-n", server_ns, "addr", "add", addr, "dev", "eth0"];
            if addr.contains(':') {
                args.push("nodad");
            }
            ip(&args);
        }
        for (listen, targets) in [
            ("0.0.0.0:9990", ["10.77.0.101:9990", "10.77.0.1:9990"]),
            ("[::]:9990", ["[fd77::101]:9990", "[fd77::1]:9990"]),
        ] {
            let args = [
                "serve", "--model", model, "--listen", listen, "--udp", "--no-tcp",
            ];
            let server = lab.spawn(0, BIN, &args);
            // Ready: a datagram to the first address is echoed (its stdout's ready line is
            // read only at the end).
            let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let probe = ["load", "--udp", "--connect", targets[1], "--messages", "1"];
                let (_, out, _) = lab.run(1, BIN, &[&probe[..], &["--json"][..]].concat());
                if serde_json::from_str::<serde_json::Value>(&out)
                    .is_ok_and(|v| v["udp"]["received"] == 1)
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "{model} on {listen} never answered"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            for target in targets {
                let args = ["load", "--udp", "--connect", target, "--conns", "4"];
                let more = ["--messages", "500", "--duration", "10s", "--json"];
                let out = lab.run_ok(1, BIN, &[&args[..], &more[..]].concat());
                let udp = &json(&out)["udp"];
                assert_eq!(
                    (udp["sent"].as_u64(), udp["received"].as_u64()),
                    (Some(2000), Some(2000)),
                    "{model} on {listen}, load to {target}: {udp}"
                );
            }
            let (status, _, err) = server.interrupt();
            assert!(status.success(), "{model} on {listen}: {status}\n{err}");
        }
    }
}
