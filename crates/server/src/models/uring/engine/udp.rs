//! UDP in the engine: RFC 862 echo with `IORING_OP_RECVMSG` and `IORING_OP_SENDMSG`.
//!
//! [`UDP_RECVS`] datagram records circulate: each is posted as a receive into its own buffer
//! (with room for the sender's address and, on a wildcard socket, the `IP_PKTINFO` /
//! `IPV6_PKTINFO` control message naming the address the datagram was sent to); when it
//! completes whole, the same record is posted as a send of those bytes back to that address,
//! from the address it was sent to (the same control message, `crate::sys::reply_source`), and when the send completes it is posted as a
//! receive again. A receive that completes with `MSG_TRUNC` in the header's `msg_flags` is
//! counted and received over, never echoed; so is one the shared echo-loop rule
//! (`crate::udp::LoopGuard`: source port 0, the server's own port or address, a reflecting
//! service's port) refuses, counted in `udp_loop_dropped`. Sends carry `MSG_DONTWAIT`: a full
//! send buffer completes them with `-EAGAIN` — counted as dropped — instead of parking them in
//! the ring.
//! The one rule holds as for connections: a record (its header, address and buffer) is freed
//! or reused only at its completion. When shutdown begins the receives are cancelled; their
//! records come back with `-ECANCELED` and are dropped.

use super::{Done, Engine, Kind, NO_CONN};
use crate::sys::uring::{opcode, CancelBuilder, Fd};
use crate::sys::{reply_source, PacketInfo};
use iomodels_core::ServiceKind;
use std::fmt;
use std::mem::size_of;
use std::os::fd::AsRawFd;

/// Datagram records kept circulating (receives posted at once).
const UDP_RECVS: usize = 4;

/// A datagram's operation data, held by an io_uring operation record (`RECVMSG`, then
/// `SENDMSG`): the `msghdr` and `iovec` the kernel reads, the address and the buffer it writes.
/// Boxed, so the pointers between them (and the kernel's pointers into them) stay valid while
/// the record moves around the engine's table. Windows' twin is `winio`'s `OvDatagram`.
pub(crate) struct RingDatagram {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    /// Where the datagram arrived, then where its answer leaves from (`IP_PKTINFO` /
    /// `IPV6_PKTINFO`: `sys/linux/datagram.rs`).
    info: PacketInfo,
    buf: Vec<u8>,
}

impl fmt::Debug for RingDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingDatagram")
            .field("buf", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl RingDatagram {
    fn new(size: usize) -> Box<RingDatagram> {
        Box::new(RingDatagram {
            // SAFETY: msghdr and sockaddr_storage are plain C structs (integers and raw
            // pointers), for which all-zero bytes are a valid value.
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: as above.
            addr: unsafe { std::mem::zeroed() },
            info: PacketInfo::default(),
            buf: vec![0; size],
        })
    }

    /// Points the header at the whole buffer and at room for the sender's address.
    fn for_recv(&mut self) -> *mut libc::msghdr {
        self.iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        self.hdr.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
        self.hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = self.info.as_mut_ptr();
        self.hdr.msg_controllen = PacketInfo::LEN as _;
        self.hdr.msg_flags = 0;
        &mut self.hdr
    }

    /// Points the header at the `len` bytes received, to the address the receive filled in,
    /// from the address the datagram was sent to (when the socket reported it and
    /// [`reply_source`] allows it).
    fn for_send(&mut self, len: usize) -> *const libc::msghdr {
        self.iov.iov_len = len;
        let from = self
            .info
            .arrival(self.hdr.msg_controllen)
            .and_then(reply_source);
        self.hdr.msg_controllen = match from {
            Some(from) => self.info.source(from) as _,
            None => 0,
        };
        self.hdr.msg_flags = 0;
        &self.hdr
    }

    /// The sender's address a completed receive filled in (`None`: not an IP address).
    fn peer(&self) -> Option<std::net::SocketAddr> {
        let len = self
            .hdr
            .msg_namelen
            .min(size_of::<libc::sockaddr_storage>() as u32);
        // SAFETY: `addr` is a sockaddr_storage the kernel filled in, `len` bytes of it valid
        // (at most its size); socket2 reads it by its family and length only.
        let addr = unsafe { socket2::SockAddr::new(self.addr, len) };
        addr.as_socket()
    }

    /// The receive's datagram did not fit the buffer.
    pub(super) fn truncated(&self) -> bool {
        self.hdr.msg_flags & libc::MSG_TRUNC != 0
    }
}

impl Engine<'_> {
    /// Makes this engine serve the server's UDP socket (`completion-port`: one worker does).
    pub fn with_udp(mut self) -> Self {
        self.udp = self.ctx.udp.as_ref().map(|u| u.as_raw_fd());
        self
    }

    /// Keeps [`UDP_RECVS`] datagram records posted (reusing returned ones).
    pub(super) fn arm_udp(&mut self) {
        let Some(fd) = self.udp else { return };
        while !self.draining && self.udp_posted < UDP_RECVS {
            let mut d = self
                .udp_spare
                .pop()
                .unwrap_or_else(|| RingDatagram::new(self.ctx.udp_max_datagram));
            let hdr = d.for_recv();
            match self.post(NO_CONN, Kind::UdpRecv(d), |_| {
                opcode::RecvMsg::new(Fd(fd), hdr).build()
            }) {
                Ok(_) => self.udp_posted += 1,
                Err(e) => {
                    log::error!("cannot post a UDP receive: {e}");
                    break;
                }
            }
        }
    }

    /// Shutdown began: cancel the receives (their records come back with `-ECANCELED`).
    pub(super) fn stop_udp(&mut self) {
        let Some(fd) = self.udp.filter(|_| self.udp_posted > 0) else {
            return;
        };
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all()).build();
        if let Err(e) = self.post(NO_CONN, Kind::Cancel, |_| cancel) {
            log::error!("cannot cancel the UDP receives: {e}");
        }
    }

    /// A receive completed: echo the datagram if it came whole, then keep receiving.
    pub fn udp_recv_done(&mut self, done: Done) {
        let Kind::UdpRecv(mut d) = done.kind else {
            unreachable!()
        };
        self.udp_posted -= 1;
        let res = done.cqe.result;
        let stats = &self.ctx.stats;
        if res >= 0 {
            let len = res as usize;
            let truncated = d.truncated();
            stats.count_datagram_in(len, truncated);
            if truncated {
                log::debug!("udp: a datagram larger than {} bytes: dropped", d.buf.len());
            } else if self.ctx.udp_guard.drops(d.peer(), stats) {
                // Not answered: it could start an echo loop (counted and logged).
            } else if self.draining || self.ctx.service != ServiceKind::Echo {
                stats.count_datagram_out(None);
            } else if let Some(fd) = self.udp {
                let hdr = d.for_send(len);
                let flags = libc::MSG_DONTWAIT as u32;
                match self.post(NO_CONN, Kind::UdpSend(d), |_| {
                    opcode::SendMsg::new(Fd(fd), hdr).flags(flags).build()
                }) {
                    Ok(_) => self.udp_posted += 1,
                    Err(e) => {
                        log::debug!("udp: cannot post a send: {e}");
                        self.ctx.stats.count_datagram_out(None);
                    }
                }
                return self.arm_udp();
            }
        } else if res != -libc::ECANCELED {
            log::debug!(
                "udp: recvmsg failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
        }
        self.udp_spare.push(d);
        self.arm_udp();
    }

    /// A send completed (or failed: dropped); the record goes back to receiving.
    pub fn udp_send_done(&mut self, done: Done) {
        let Kind::UdpSend(d) = done.kind else {
            unreachable!()
        };
        self.udp_posted -= 1;
        let res = done.cqe.result;
        let result = usize::try_from(res).map_err(|_| std::io::Error::from_raw_os_error(-res));
        self.ctx.stats.count_answer(d.iov.iov_len, result);
        self.udp_spare.push(d);
        self.arm_udp();
    }
}
