//! `iomodels serve --udp` as a user meets it: socat, a peer nobody here wrote, sends datagrams
//! through every model (`socat - UDP:127.0.0.1:PORT`); `--udp --no-tcp` serves UDP alone; the
//! SIGUSR1 counters name the UDP traffic; flags that make no sense are one-line errors.
//!
//! Linux: the binary's tests run socat here; under Wine, scripts/test-windows.sh runs the same
//! check (`iomodels.exe serve --udp` against socat) for every Windows model.
#![cfg(target_os = "linux")]

use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

mod support;

use support::{random_bytes, socat, Served, BIN};

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
fn no_tcp_without_udp_is_one_line() {
    let out = iomodels(&["serve", "--no-tcp"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("--udp"), "{err:?}");
}

#[test]
fn udp_with_tls_is_refused_in_one_line() {
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
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("cannot be used with"), "{err:?}");
    assert!(
        !dir.join("iomodels-self-signed.pem").exists(),
        "a refused command wrote a certificate"
    );
}
