//! Echo loops started by a forged source (issue #16), generated for every model: a raw socket
//! (root, as CI runs) sends a UDP datagram whose source is the server's own address and port,
//! port 0, or another echo server on the server's port. Before the loop rule, the first
//! bounced between the server and itself at the full speed of the model (160k–250k
//! datagrams/s here) until the process died; now each is dropped once, counted in
//! `udp_loop_dropped`, and the server goes on answering ordinary senders.
//!
//! Linux only: Windows has no raw UDP sockets that may forge a source address (the rule is
//! the same shared function there; `udp_conformance.rs` checks it with real sockets).
#![cfg(target_os = "linux")]

mod common;

use common::{wait_for, Variant};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

fn v4(addr: SocketAddr) -> (Ipv4Addr, u16) {
    match addr.ip() {
        IpAddr::V4(ip) => (ip, addr.port()),
        IpAddr::V6(_) => panic!("an IPv4 address"),
    }
}

/// Sends `payload` to `to` as a UDP datagram from `from`, whatever socket holds `from` (a raw
/// socket: the kernel writes the IP header with the source address the socket is bound to; the
/// UDP header, source port included, is ours; checksum 0: none, legal over IPv4).
fn forge(from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    let ((src, sport), (dst, dport)) = (v4(from), v4(to));
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (needs root, as CI runs)");
    raw.bind(&SocketAddr::from((src, 0)).into())
        .expect("bind the raw socket");
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    raw.send_to(&d, &SocketAddr::from((dst, 0)).into())
        .expect("send the forged datagram");
}

/// An ordinary sender's datagram is echoed (after whatever was forged before it).
fn echoed(to: SocketAddr) {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.connect(to).unwrap();
    c.send(b"ordinary").unwrap();
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).expect("the ordinary datagram's echo");
    assert_eq!(&buf[..n], b"ordinary");
}

mod cases {
    use super::*;

    pub fn a_datagram_forged_from_the_servers_own_address_is_dropped_once_not_looped(v: Variant) {
        let server = v.start_udp(|_| {});
        let to = server.udp_addr.unwrap();
        forge(to, to, b"to myself");
        wait_for(&server, WAIT, "the loop drop", |s| s.udp_loop_dropped == 1);
        echoed(to);
        let st = wait_for(&server, WAIT, "the echo counted", |s| {
            s.udp_datagrams_out == 1
        });
        // Looping, the forged datagram would have come in again and again.
        assert_eq!(st.udp_datagrams_in, 2, "{st:?}");
        assert_eq!(st.udp_loop_dropped, 1, "{st:?}");
        server.stop().unwrap();
    }

    pub fn a_datagram_forged_from_port_0_is_dropped(v: Variant) {
        let server = v.start_udp(|_| {});
        let to = server.udp_addr.unwrap();
        forge("127.0.0.1:0".parse().unwrap(), to, b"from nowhere");
        wait_for(&server, WAIT, "the loop drop", |s| s.udp_loop_dropped == 1);
        echoed(to);
        let st = wait_for(&server, WAIT, "the echo counted", |s| {
            s.udp_datagrams_out == 1
        });
        assert_eq!(st.udp_datagrams_in, 2, "{st:?}");
        assert_eq!(
            st.udp_send_dropped, 0,
            "an answer to port 0 was tried: {st:?}"
        );
        server.stop().unwrap();
    }

    /// Two echo servers on one port (127.0.0.1:P and 127.0.0.2:P): a datagram forged from A to
    /// B would ping-pong between them forever; B drops it (its own port), A never sees one.
    pub fn a_datagram_forged_from_another_echo_server_on_the_same_port_is_not_bounced(v: Variant) {
        let a = v.start_udp(|_| {});
        let a_addr = a.udp_addr.unwrap();
        let b_listen = SocketAddr::from(([127, 0, 0, 2], a_addr.port()));
        let b = v.start_udp(|c| c.listen = b_listen);
        let b_addr = b.udp_addr.unwrap();
        assert_eq!(b_addr, b_listen);
        forge(a_addr, b_addr, b"ping-pong");
        wait_for(&b, WAIT, "B's loop drop", |s| s.udp_loop_dropped == 1);
        echoed(b_addr);
        echoed(a_addr);
        let (sa, sb) = (a.stats.snapshot(), b.stats.snapshot());
        assert_eq!(sb.udp_datagrams_in, 2, "B: {sb:?}");
        assert_eq!(
            sa.udp_datagrams_in, 1,
            "A got more than its own echo: {sa:?}"
        );
        a.stop().unwrap();
        b.stop().unwrap();
    }
}

model_suite! {
    check: every_available_model_runs_the_forged_source_suite, "the forged-source suite";
    cases: [
        a_datagram_forged_from_the_servers_own_address_is_dropped_once_not_looped,
        a_datagram_forged_from_port_0_is_dropped,
        a_datagram_forged_from_another_echo_server_on_the_same_port_is_not_bounced,
    ];
    every_model
}
