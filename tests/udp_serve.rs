//! `iomodels serve --udp` as a user meets it: socat, a peer nobody here wrote, sends datagrams
//! through every model (`socat - UDP:127.0.0.1:PORT`); `--udp --no-tcp` serves UDP alone; the
//! SIGUSR1 counters name the UDP traffic; flags that make no sense are usage errors (status 2).
//!
//! Linux: the binary's tests run socat here; under Wine, scripts/test-windows.sh runs the same
//! check (`iomodels.exe serve --udp` against socat) for every Windows model.
#![cfg(target_os = "linux")]

use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

mod support;

use support::{assert_usage_error, random_bytes, socat, Served, BIN};

fn iomodels(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run iomodels")
}

/// `socat -t 1 - UDP:ADDR` with `input` on its stdin (one datagram): what came back.
fn socat_udp(addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    socat(&["-t", "1", "-", &format!("UDP:{addr}")], input.to_vec())
}

mod per_model {
    use super::*;

    /// socat's datagram comes back byte-identical, TCP still works beside it, and the counters
    /// show one datagram in and one out.
    pub fn socat_udp_echo_is_byte_identical(model: &str) {
        let mut s = Served::start(&["--model", model, "--udp"]);
        assert!(
            s.ready_line.contains("over TCP and UDP"),
            "{}",
            s.ready_line
        );
        // Printable, so socat reads it from the pipe in one piece: one datagram.
        let data: Vec<u8> = random_bytes(1000, 7)
            .iter()
            .map(|b| b'a' + b % 26)
            .collect();
        assert!(
            socat_udp(s.addr, &data) == data,
            "socat got different bytes back"
        );
        let mut tcp = TcpStream::connect(s.addr).expect("TCP beside UDP");
        std::io::Write::write_all(&mut tcp, b"tcp").unwrap();
        let mut back = [0u8; 3];
        std::io::Read::read_exact(&mut tcp, &mut back).unwrap();
        assert_eq!(&back, b"tcp");
        drop(tcp);
        let stats = s.stats_until("one datagram echoed", |v| v["udp_datagrams_out"] == 1);
        assert_eq!(stats["udp_datagrams_in"], 1);
        assert_eq!(stats["udp_bytes_out"], 1000);
        assert_eq!(stats["udp_truncated"], 0);
        assert_eq!(stats["udp_send_dropped"], 0);
        assert!(s.terminate().success());
    }
}

per_model! {
    check: every_available_model_is_tested_over_udp;
    cases: [socat_udp_echo_is_byte_identical];
}

#[test]
fn udp_alone_refuses_tcp_and_counts_an_oversized_datagram() {
    let mut s = Served::start(&["--udp", "--no-tcp", "--udp-max-datagram", "100"]);
    assert!(s.ready_line.contains("over UDP only"), "{}", s.ready_line);
    assert!(
        TcpStream::connect_timeout(&s.addr, Duration::from_secs(5)).is_err(),
        "a TCP connect succeeded with --no-tcp"
    );
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(&[1u8; 101], s.addr).unwrap();
    s.stats_until("the oversized datagram", |v| v["udp_truncated"] == 1);
    c.send_to(b"fits", s.addr).unwrap();
    let mut buf = [0u8; 200];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"fits",
        "the first datagram back is the one that fit"
    );
    let (err, status) = s.terminate_with_stderr();
    assert!(status.success(), "{status:?}");
    assert!(
        err.contains("UDP: 2 datagrams in, 1 echoed, 0 dropped unanswered, 1 oversized"),
        "{err}"
    );
}

#[test]
fn no_tcp_without_udp_is_a_usage_error() {
    assert_usage_error(&iomodels(&["serve", "--no-tcp"]), &["--udp"]);
}

#[test]
fn udp_with_tls_is_refused_as_a_usage_error() {
    // In a directory of its own: a certificate written before the refusal would show there.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("udp-with-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--udp",
            "--tls-self-signed",
        ])
        .output()
        .expect("run iomodels");
    assert_usage_error(&out, &["cannot be used with"]);
    assert!(
        !dir.join("iomodels-self-signed.pem").exists(),
        "a refused command wrote a certificate"
    );
}

/// A port listed in --udp-drop-ports (like 7, 13, 17, 19, 37, 0 and the server's own port,
/// always dropped) gets no answer: counted in the SIGUSR1 JSON and the exit line, logged at
/// most about once a second, each line saying how many drops it did not log.
#[test]
fn a_listed_source_port_gets_no_answer_and_the_drops_are_counted_and_logged_rate_limited() {
    let dropped = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = dropped.local_addr().unwrap().port().to_string();
    let mut s = Served::start(&["--udp", "--udp-drop-ports", &format!("53,{port}")]);
    for _ in 0..100 {
        dropped.send_to(b"loop?", s.addr).unwrap();
    }
    s.stats_until("100 loop drops", |v| v["udp_loop_dropped"] == 100);
    // A second later, one more: its line says how many the first second suppressed.
    std::thread::sleep(Duration::from_millis(1100));
    dropped.send_to(b"loop?", s.addr).unwrap();
    s.stats_until("101 loop drops", |v| v["udp_loop_dropped"] == 101);
    let ordinary = UdpSocket::bind("127.0.0.1:0").unwrap();
    ordinary
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ordinary.send_to(b"echo me", s.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = ordinary.recv_from(&mut buf).expect("an ordinary echo");
    assert_eq!(&buf[..n], b"echo me");
    dropped.set_nonblocking(true).unwrap();
    assert!(
        dropped.recv_from(&mut buf).is_err(),
        "a listed port got an answer"
    );
    let (err, status) = s.terminate_with_stderr();
    assert!(status.success(), "{status:?}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not answering a datagram from"))
        .collect();
    assert!(
        (2..=10).contains(&lines.len()),
        "{} log lines for 101 drops: {err}",
        lines.len()
    );
    let logged: u64 = lines
        .iter()
        .map(|l| {
            // "... (N more such datagrams dropped since the last line)"
            1 + l
                .rsplit_once(" more such datagrams")
                .and_then(|(head, _)| head.rsplit('(').next())
                .map_or(0, |n| n.parse::<u64>().expect("a count"))
        })
        .sum();
    assert_eq!(
        logged, 101,
        "the lines do not account for every drop: {err}"
    );
    assert!(
        err.contains("102 datagrams in, 1 echoed, 0 dropped unanswered, 0 oversized, 101 dropped as possible echo loops"),
        "{err}"
    );
}

#[test]
fn a_bad_udp_drop_port_is_a_usage_error() {
    for bad in ["0", "70000", "7,x", ""] {
        let out = iomodels(&["serve", "--udp", "--udp-drop-ports", bad]);
        assert_usage_error(&out, &["--udp-drop-ports"]);
    }
}
