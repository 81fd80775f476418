//! RFC 862 echo over UDP for the readiness models: [`UdpEcho::serve`] drains the socket.
//!
//! Each datagram is answered with one datagram of the same bytes, sent to its sender; a
//! zero-length datagram too. There is no connection and no state between datagrams, so a
//! model only has to learn that the socket is readable — in its own mechanism: select's read
//! set, an epoll registration, a queued signal, a poll on a thread of its own — and then call
//! [`UdpEcho::serve`], which receives and answers until the socket has no datagram left or the
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
//! So every datagram received is counted once in `udp_datagrams_in` and once more in exactly
//! one of `udp_datagrams_out`, `udp_send_dropped` and `udp_truncated`.

use crate::sys::{recv_datagram, send_datagram};
use crate::Ctx;
use iomodels_core::ServiceKind;
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;

/// The largest datagram a socket can deliver: an IPv4 UDP payload is at most 65,507 bytes (an
/// IPv6 one, without jumbograms, 65,527), so a buffer of 64 KiB holds any of them.
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Datagrams answered per call before the model goes back to its other sockets.
pub(crate) const BUDGET: usize = 64;

/// What a call to [`UdpEcho::serve`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The socket said `WouldBlock`: nothing waits; the next datagram will announce itself.
    Empty,
    /// The budget ran out with datagrams perhaps still waiting: an edge-triggered model must
    /// call again without waiting for a new notification.
    More,
}

/// The echo's receive buffer (one per serving thread).
pub(crate) struct UdpEcho {
    buf: Vec<u8>,
}

impl UdpEcho {
    pub fn new(ctx: &Ctx) -> UdpEcho {
        UdpEcho {
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
            if ctx.service != ServiceKind::Echo {
                stats.count_datagram_out(None);
                continue;
            }
            stats.syscalls.fetch_add(1, Relaxed);
            stats.count_answer(
                got.len,
                send_datagram(socket, &self.buf[..got.len], &got.from),
            );
        }
        Drained::More
    }
}
