//! Datagram receive and send for the readiness models, under the same names on every OS:
//! [`recv_datagram`] says whether the datagram was cut short — `MSG_TRUNC` in the result flags
//! on Linux, `WSAEMSGSIZE` on Windows — which `recv_from` alone cannot tell, and where it was
//! sent to ([`Arrival`]); [`send_datagram`] answers from there.
//!
//! **Answering from the address a datagram was sent to.** A socket bound to a wildcard
//! address receives datagrams sent to any of the host's addresses; a plain `sendto` would
//! answer from whatever source the route back to the sender picks (a datagram sent to
//! 127.0.0.2 answered from 127.0.0.1), and a client with a connected socket never sees such an
//! answer. So a wildcard socket asks for the packet information ([`want_arrival`]: `IP_PKTINFO`
//! / `IPV6_RECVPKTINFO` on Linux, `IP_PKTINFO` / `IPV6_PKTINFO` on Windows), each datagram
//! received comes with its [`Arrival`], and its answer is sent with a packet-information
//! control message naming the source [`reply_source`] picks: `recvmsg` / `sendmsg` on Linux
//! (`linux/datagram.rs`), `WSARecvMsg` / `WSASendMsg` on Windows (`windows/datagram.rs`). The
//! completion models do the same in their own operations (`models/uring/engine/udp.rs`,
//! `models/winio/udp.rs`). A socket bound to one address needs none of it: its answers leave
//! from that address.

use std::net::IpAddr;

#[cfg(target_os = "linux")]
pub use super::linux::datagram::{recv_datagram, send_datagram, want_arrival};
#[cfg(windows)]
pub use super::windows::datagram::{recv_datagram, send_datagram, want_arrival};

/// One datagram taken from a socket.
pub struct Received {
    /// Bytes written to the buffer (at most its length).
    pub len: usize,
    /// The datagram was larger than the buffer: the kernel dropped the rest.
    pub truncated: bool,
    /// Its sender.
    pub from: socket2::SockAddr,
    /// Where it arrived (`None` unless the socket asked, [`want_arrival`]).
    pub arrival: Option<Arrival>,
}

/// Where a datagram arrived, as the OS reported it with the datagram: a local address (on
/// Linux IPv4 the kernel's pick of the address to answer from, `ipi_spec_dst`; elsewhere the
/// datagram's destination address) and the index of the interface it came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The local address.
    pub addr: IpAddr,
    /// The interface's index (0: none named).
    pub ifindex: u32,
}

#[cfg(test)]
impl Arrival {
    /// `addr` (parsed) on interface `ifindex`: the tests' shorthand.
    pub(crate) fn at(addr: &str, ifindex: u32) -> Arrival {
        Arrival {
            addr: addr.parse().expect("an IP address"),
            ifindex,
        }
    }
}

/// The source an answer to a datagram that arrived as `a` is sent from, sans I/O: its local
/// address, unless that is a multicast, broadcast or unspecified one, which no datagram may be
/// sent from (`None`: the OS picks, as without packet information). The interface is kept only
/// for an IPv6 link-local address, which means nothing without one; anywhere else the route
/// back to the sender decides it, as for any other datagram.
pub fn reply_source(a: Arrival) -> Option<Arrival> {
    let (unusable, link_local) = match a.addr {
        IpAddr::V4(v4) => (
            v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified(),
            false,
        ),
        IpAddr::V6(v6) => (
            v6.is_multicast() || v6.is_unspecified(),
            v6.segments()[0] & 0xffc0 == 0xfe80,
        ),
    };
    (!unusable).then_some(Arrival {
        addr: a.addr,
        ifindex: if link_local { a.ifindex } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_leaves_from_the_unicast_address_the_datagram_was_sent_to() {
        assert_eq!(
            reply_source(Arrival::at("127.0.0.2", 1)),
            Some(Arrival::at("127.0.0.2", 0))
        );
        assert_eq!(
            reply_source(Arrival::at("::1", 1)),
            Some(Arrival::at("::1", 0))
        );
        assert_eq!(
            reply_source(Arrival::at("2001:db8::5", 2)),
            Some(Arrival::at("2001:db8::5", 0))
        );
        // Link-local: the interface is part of the address.
        assert_eq!(
            reply_source(Arrival::at("fe80::1", 3)),
            Some(Arrival::at("fe80::1", 3))
        );
    }

    #[test]
    fn an_answer_to_a_group_or_broadcast_datagram_leaves_from_the_os_pick() {
        for a in ["224.0.0.251", "255.255.255.255", "0.0.0.0", "ff02::1", "::"] {
            assert_eq!(reply_source(Arrival::at(a, 2)), None, "{a}");
        }
    }
}
