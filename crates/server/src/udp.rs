//! RFC 862 echo over UDP for the readiness models: [`ReadinessUdpEcho::serve`] drains the socket.
//!
//! Each datagram is answered with one datagram of the same bytes, sent to its sender; a
//! zero-length datagram too. There is no connection and no state between datagrams, so a
//! model only has to learn that the socket is readable — in its own mechanism: select's read
//! set, an epoll registration, a queued signal, a poll on a thread of its own — and then call
//! [`ReadinessUdpEcho::serve`], which receives and answers until the socket has no datagram left or the
//! turn's budget is spent.
//!
//! Two rules, the same for the completion models (io_uring: `models/uring/engine/udp.rs`;
//! Winsock overlapped I/O: `models/winio/udp.rs`):
//! - **No truncated echo.** A datagram is received into a buffer of
//!   [`crate::ServerConfig::udp_max_datagram`] bytes (65,536 by default: every IPv4 datagram
//!   fits, 65,507 bytes of payload at most). One that did not fit (`MSG_TRUNC`) is counted in
//!   `Stats::udp_truncated` and dropped: echoing its first bytes would answer a datagram the
//!   client never sent.
//! - **Never block on a send.** The socket is non-blocking: a send that would block (the
//!   socket's send buffer is full) drops the answer and counts it in `Stats::udp_send_dropped`,
//!   as any other send error does. UDP may lose datagrams; a server loop stuck behind one slow
//!   path may not.
//!
//! - **No echo loops** ([`LoopGuard`], the one rule every model's UDP path asks before it
//!   answers). A datagram whose answer could start a ping-pong that never ends is dropped,
//!   counted in `Stats::udp_loop_dropped` and logged (at most one line a second, with the
//!   count of those not logged): its source port is 0, the server's own UDP port, or the port
//!   of a service that answers whatever it receives ([`REFLECTING_PORTS`]: 7 echo, 13
//!   daytime, 17 qotd, 19 chargen, 37 time, plus `--udp-drop-ports`), or its source is the
//!   server's own address and port. A forged datagram from another echo server, or from the
//!   server itself, would otherwise bounce at the full speed of both for as long as both run.
//!   This is BSD inetd's `check_loop` for its builtin datagram services. What it does not
//!   catch: two echo servers on ports not in the list (list the other's port to break it).
//!
//! So every datagram received is counted once in `udp_datagrams_in` and once more in exactly
//! one of `udp_datagrams_out`, `udp_send_dropped`, `udp_truncated` and `udp_loop_dropped`.

use crate::ctx::Ctx;
use crate::log_every::LogEvery;
use crate::stats::Stats;
use crate::sys::{recv_datagram, send_datagram};
use iomodels_core::ServiceKind;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;

/// The well-known UDP services that answer any datagram, by port: a datagram from one of their
/// ports is never answered, whatever `--udp-drop-ports` says.
const REFLECTING_SERVICES: [(u16, &str); 5] = [
    (7, "echo"),
    (13, "daytime"),
    (17, "qotd"),
    (19, "chargen"),
    (37, "time"),
];

/// The ports of [`REFLECTING_SERVICES`]: 7, 13, 17, 19, 37.
pub const REFLECTING_PORTS: [u16; 5] = {
    let mut ports = [0; 5];
    let mut i = 0;
    while i < ports.len() {
        ports[i] = REFLECTING_SERVICES[i].0;
        i += 1;
    }
    ports
};

/// Why a datagram is not answered: an answer could start an echo loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopSource {
    /// Source port 0: nobody can receive an answer there; only a forged datagram has it.
    PortZero,
    /// The server's own address and port: forged; the answer would come straight back.
    OwnAddress,
    /// The server's own UDP port on another address: another echo server like this one.
    OwnPort,
    /// A reflecting service's port ([`REFLECTING_PORTS`]) or one of `--udp-drop-ports`.
    DropPort(u16),
}

impl fmt::Display for LoopSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopSource::PortZero => f.write_str("source port 0"),
            LoopSource::OwnAddress => f.write_str("the server's own address and port"),
            LoopSource::OwnPort => f.write_str("the server's own UDP port"),
            LoopSource::DropPort(p) => match REFLECTING_SERVICES.iter().find(|(q, _)| q == p) {
                Some((_, name)) => write!(f, "port {p}, {name}"),
                None => write!(f, "port {p}, in --udp-drop-ports"),
            },
        }
    }
}

/// The decision itself, sans I/O: `Some(why)` if a datagram from `from`, received on a socket
/// bound to `local`, must not be answered. `drop_ports` is sorted.
pub(crate) fn loop_risk(
    from: SocketAddr,
    local: SocketAddr,
    drop_ports: &[u16],
) -> Option<LoopSource> {
    let port = from.port();
    if port == 0 {
        Some(LoopSource::PortZero)
    } else if port == local.port() && from.ip() == local.ip() {
        Some(LoopSource::OwnAddress)
    } else if port == local.port() {
        Some(LoopSource::OwnPort)
    } else if drop_ports.binary_search(&port).is_ok() {
        Some(LoopSource::DropPort(port))
    } else {
        None
    }
}

/// [`loop_risk`] for one server's UDP socket, with its counter and its rate-limited log line;
/// shared by every thread of the server (`Ctx::udp_guard`).
#[derive(Debug)]
pub(crate) struct LoopGuard {
    /// The UDP socket's address (`None` when not serving UDP: nothing is checked).
    local: Option<SocketAddr>,
    /// [`REFLECTING_PORTS`] and `--udp-drop-ports`, sorted.
    drop_ports: Vec<u16>,
    log: LogEvery,
}

impl LoopGuard {
    /// The guard of a UDP socket bound to `local`; `extra`: `--udp-drop-ports`.
    pub fn new(local: Option<SocketAddr>, extra: &[u16]) -> LoopGuard {
        let mut drop_ports: Vec<u16> = REFLECTING_PORTS.iter().chain(extra).copied().collect();
        drop_ports.sort_unstable();
        drop_ports.dedup();
        LoopGuard {
            local,
            drop_ports,
            log: LogEvery::new(),
        }
    }

    /// True if the datagram from `from` must not be answered (then it is counted in
    /// `udp_loop_dropped` and logged, rate-limited, here). A sender whose address the model
    /// could not read (`None`) is answered as before: the send goes nowhere new.
    pub fn drops(&self, from: Option<SocketAddr>, stats: &Stats) -> bool {
        let (Some(from), Some(local)) = (from, self.local) else {
            return false;
        };
        let Some(why) = loop_risk(from, local, &self.drop_ports) else {
            return false;
        };
        stats.udp_loop_dropped.fetch_add(1, Relaxed);
        self.log(from, why);
        true
    }

    /// At most one line a second; the next line says how many drops went unlogged.
    fn log(&self, from: SocketAddr, why: LoopSource) {
        let Some(more) = self.log.allow() else {
            return;
        };
        let more = match more {
            0 => String::new(),
            n => format!(" ({n} more such datagrams dropped since the last line)"),
        };
        log::warn!(
            "udp: not answering a datagram from {from} ({why}): the answer could start an \
             echo loop{more}"
        );
    }
}

/// The largest datagram a socket can deliver: an IPv4 UDP payload is at most 65,507 bytes (an
/// IPv6 one, without jumbograms, 65,527), so a buffer of 64 KiB holds any of them.
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Datagrams answered per call before the model goes back to its other sockets.
pub(crate) const BUDGET: usize = 64;

/// What a call to [`ReadinessUdpEcho::serve`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The socket said `WouldBlock`: nothing waits; the next datagram will announce itself.
    Empty,
    /// The budget ran out with datagrams perhaps still waiting: an edge-triggered model must
    /// call again without waiting for a new notification.
    More,
}

/// The readiness models' UDP echo: the receive buffer of one serving thread, which reads the
/// socket until it would block when told it is readable (the overlapped models' twin, which
/// posts its receives, is `winio`'s `OvUdpEcho`).
pub(crate) struct ReadinessUdpEcho {
    buf: Vec<u8>,
}

impl ReadinessUdpEcho {
    pub fn new(ctx: &Ctx) -> ReadinessUdpEcho {
        ReadinessUdpEcho {
            buf: vec![0; ctx.udp_max_datagram],
        }
    }

    /// Receives and answers up to `budget` datagrams; see the module doc for what is counted.
    pub fn serve(&mut self, socket: &UdpSocket, ctx: &Ctx, budget: usize) -> Drained {
        let stats = &ctx.stats;
        for _ in 0..budget {
            stats.syscalls.fetch_add(1, Relaxed);
            let got = match recv_datagram(socket, &mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // An unconnected UDP socket reports no ICMP errors; whatever this is, it
                    // concerns one datagram, not the server.
                    log::debug!("udp: recv failed: {e}");
                    continue;
                }
            };
            stats.count_datagram_in(got.len, got.truncated);
            if got.truncated {
                log::debug!(
                    "udp: a datagram from {:?} is larger than {} bytes: dropped",
                    got.from.as_socket(),
                    self.buf.len()
                );
                continue;
            }
            if ctx.udp_guard.drops(got.from.as_socket(), stats) {
                continue;
            }
            if ctx.service != ServiceKind::Echo {
                stats.count_datagram_out(None);
                continue;
            }
            stats.syscalls.fetch_add(1, Relaxed);
            stats.count_answer(
                got.len,
                send_datagram(socket, &self.buf[..got.len], &got.from, got.arrival),
            );
        }
        Drained::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PORTS: [u16; 6] = [7, 13, 17, 19, 37, 53];

    #[test]
    fn a_datagram_from_an_ordinary_port_is_answered() {
        let local = at("127.0.0.1:9000");
        assert_eq!(loop_risk(at("127.0.0.1:40000"), local, &PORTS), None);
        assert_eq!(loop_risk(at("10.1.2.3:8999"), local, &PORTS), None);
        assert_eq!(loop_risk(at("[::1]:1"), at("[::1]:9000"), &PORTS), None);
    }

    #[test]
    fn a_datagram_that_could_start_a_loop_is_not_answered() {
        let local = at("127.0.0.1:9000");
        let risk = |from: &str| loop_risk(at(from), local, &PORTS);
        assert_eq!(risk("127.0.0.9:0"), Some(LoopSource::PortZero));
        assert_eq!(risk("127.0.0.1:9000"), Some(LoopSource::OwnAddress));
        assert_eq!(risk("127.0.0.2:9000"), Some(LoopSource::OwnPort));
        for p in REFLECTING_PORTS {
            assert_eq!(
                risk(&format!("192.0.2.1:{p}")),
                Some(LoopSource::DropPort(p))
            );
        }
        assert_eq!(risk("192.0.2.1:53"), Some(LoopSource::DropPort(53)));
        let v6 = at("[::1]:9000");
        assert_eq!(
            loop_risk(at("[::1]:9000"), v6, &PORTS),
            Some(LoopSource::OwnAddress)
        );
        // A wildcard socket: its own port from any address (its own addresses among them).
        let any = at("0.0.0.0:9000");
        assert_eq!(
            loop_risk(at("127.0.0.1:9000"), any, &PORTS),
            Some(LoopSource::OwnPort)
        );
    }

    #[test]
    fn the_guard_counts_every_drop_and_keeps_the_reflecting_ports_whatever_the_extra_list() {
        let guard = LoopGuard::new(Some(at("127.0.0.1:9000")), &[5353]);
        let stats = Stats::default();
        assert!(guard.drops(Some(at("127.0.0.1:19")), &stats));
        assert!(guard.drops(Some(at("127.0.0.1:5353")), &stats));
        assert!(guard.drops(Some(at("127.0.0.1:9000")), &stats));
        assert!(!guard.drops(Some(at("127.0.0.1:5354")), &stats));
        assert!(!guard.drops(None, &stats));
        assert_eq!(stats.udp_loop_dropped.load(Relaxed), 3);
        let off = LoopGuard::new(None, &[]);
        assert!(!off.drops(Some(at("127.0.0.1:7")), &stats));
    }
}
