//! `IP_PKTINFO` / `IPV6_PKTINFO`: where a datagram was sent to, and answering from there.
//!
//! A UDP socket bound to a wildcard address (`0.0.0.0:P`, `[::]:P`) receives datagrams sent to
//! any of the host's addresses, but a plain `sendto` picks the answer's source address by the
//! route back to the sender: a datagram sent to 127.0.0.2 is answered from 127.0.0.1, and a
//! client with a connected socket (which accepts datagrams from the address it connected to
//! only) never sees it. With `IP_PKTINFO` (IPv4) or `IPV6_RECVPKTINFO` (IPv6) set, each
//! `recvmsg` carries a control message naming the address the datagram arrived on; `sendmsg`
//! with the same kind of control message sends from that address.
//!
//! [`PacketInfo`] is the control buffer both directions use: the readiness models' `recvmsg` and
//! `sendmsg` calls ([`recv_datagram`], [`send_datagram`]) and the io_uring models' `IORING_OP_RECVMSG` /
//! `IORING_OP_SENDMSG` records (`models/uring/engine/udp.rs`). What to answer from is decided
//! once, OS-neutrally, by [`crate::sys::reply_source`].
//!
//! For IPv4 the address read is `ipi_spec_dst`, not `ipi_addr`: the kernel fills it with the
//! local address an answer should come from — the header's destination for a unicast datagram,
//! the receiving interface's address for a broadcast or multicast one — so a datagram sent to
//! a subnet's broadcast address is answered from an address of the host, not from the
//! broadcast address.

use super::super::datagram::{reply_source, Arrival, Received};
use socket2::{SockAddr, SockRef};
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// Bytes of one control message holding the larger of `in_pktinfo` and `in6_pktinfo`.
// SAFETY: CMSG_SPACE is plain arithmetic on its argument (it is `unsafe` only as a C macro's
// port); nothing is dereferenced.
const SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;

/// Asks the kernel to report, with each datagram, the address it was sent to (`IP_PKTINFO` on
/// an IPv4 socket, `IPV6_RECVPKTINFO` on an IPv6 one).
pub fn want_arrival(socket: &UdpSocket) -> io::Result<()> {
    let (level, name) = match socket.local_addr()?.ip() {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY (syscall!): the descriptor is the live socket; the option value is a c_int that
    // outlives the call, and its size is passed.
    syscall!(setsockopt(
        socket.as_raw_fd(),
        level,
        name,
        (&on as *const libc::c_int).cast(),
        size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    Ok(())
}

/// Receives one datagram into `buf` with `recvmsg` (non-blocking sockets: `WouldBlock` when
/// none waits): its length, whether it was cut short (`MSG_TRUNC`), its sender, and where it
/// arrived if the socket asked ([`want_arrival`]).
pub fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = PacketInfo::default();
    // SAFETY: sockaddr_storage and msghdr are plain C structs: all-zero bytes are valid values.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr();
    hdr.msg_controllen = PacketInfo::LEN as _;
    // SAFETY (syscall!): the header points at live buffers of the sizes it states — `buf`,
    // `name` and `control` — which outlive the call; the kernel writes within them only.
    let len = syscall!(recvmsg(socket.as_raw_fd(), &mut hdr, 0))? as usize;
    let namelen = hdr
        .msg_namelen
        .min(size_of::<libc::sockaddr_storage>() as libc::socklen_t);
    Ok(Received {
        len: len.min(buf.len()),
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        // SAFETY: `name` is a sockaddr_storage the kernel filled, `namelen` bytes of it valid
        // (at most its size); socket2 reads it by its family and length only.
        from: unsafe { SockAddr::new(name, namelen) },
        arrival: control.arrival(hdr.msg_controllen),
    })
}

/// Sends `buf` as one datagram to `to` (non-blocking sockets: `WouldBlock` when the send buffer
/// is full), from the address `arrival` names when [`reply_source`] allows one (`sendmsg` with
/// a packet-information control message); otherwise a plain `sendto`.
pub fn send_datagram(
    socket: &UdpSocket,
    buf: &[u8],
    to: &SockAddr,
    arrival: Option<Arrival>,
) -> io::Result<usize> {
    let Some(from) = arrival.and_then(reply_source) else {
        return SockRef::from(socket).send_to(buf, to);
    };
    let mut control = PacketInfo::default();
    let controllen = control.source(from);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct: all-zero bytes are a valid value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = to.as_ptr() as *mut libc::c_void;
    hdr.msg_namelen = to.len();
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr();
    hdr.msg_controllen = controllen as _;
    // SAFETY (syscall!): the header points at live buffers of the sizes it states — `buf`,
    // `to` and `control` — which outlive the call; sendmsg only reads them.
    let sent = syscall!(sendmsg(socket.as_raw_fd(), &hdr, 0))?;
    Ok(sent as usize)
}

/// Room for one packet-info control message, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct PacketInfo([u8; SPACE]);

impl Default for PacketInfo {
    fn default() -> Self {
        PacketInfo([0; SPACE])
    }
}

impl PacketInfo {
    /// The buffer's size, for `msg_controllen` before a receive.
    pub const LEN: usize = SPACE;

    /// The buffer's address, for `msg_control`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }

    /// A header over the first `len` bytes of the buffer, for the `CMSG_*` walk.
    fn header(&mut self, len: usize) -> libc::msghdr {
        // SAFETY: msghdr is a plain C struct (integers and raw pointers): all-zero bytes are a
        // valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_control = self.as_mut_ptr();
        hdr.msg_controllen = len.min(SPACE) as _;
        hdr
    }

    /// The address a received datagram was sent to, from the `len` bytes of control data the
    /// kernel wrote (`msg_controllen` after the receive); `None` if it reported none.
    pub fn arrival(&mut self, len: usize) -> Option<Arrival> {
        let hdr = self.header(len);
        // SAFETY: `hdr` points at this buffer's first `len` (at most SPACE) bytes, which the
        // kernel filled with whole control messages; CMSG_FIRSTHDR / CMSG_NXTHDR stay within
        // msg_controllen, and each message's data is read unaligned, as long as its header says.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
            while !cmsg.is_null() {
                let c = &*cmsg;
                let data = libc::CMSG_DATA(cmsg);
                let room = c.cmsg_len as usize - (data as usize - cmsg as usize);
                match (c.cmsg_level, c.cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO)
                        if room >= size_of::<libc::in_pktinfo>() =>
                    {
                        let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                        return Some(Arrival {
                            addr: IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                info.ipi_spec_dst.s_addr,
                            ))),
                            ifindex: info.ipi_ifindex as u32,
                        });
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                        if room >= size_of::<libc::in6_pktinfo>() =>
                    {
                        let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                        return Some(Arrival {
                            addr: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                            ifindex: info.ipi6_ifindex,
                        });
                    }
                    _ => cmsg = libc::CMSG_NXTHDR(&hdr, cmsg),
                }
            }
        }
        None
    }

    /// Writes the control message that makes a `sendmsg` leave from `from` (a source address
    /// [`crate::sys::reply_source`] chose, and an interface or 0); returns its length, for
    /// `msg_controllen`.
    pub fn source(&mut self, from: Arrival) -> usize {
        let (level, kind, len) = match from.addr {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                size_of::<libc::in6_pktinfo>(),
            ),
        };
        self.0 = [0; SPACE];
        // SAFETY: as above; CMSG_SPACE(len) <= SPACE, so the one message fits the buffer.
        let space = unsafe { libc::CMSG_SPACE(len as u32) } as usize;
        let hdr = self.header(space);
        // SAFETY: the buffer holds `space` bytes, room for one header and `len` bytes of data;
        // CMSG_FIRSTHDR is not null (space >= the header's size); the data is written unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
            let data = libc::CMSG_DATA(cmsg);
            match from.addr {
                IpAddr::V4(a) => {
                    data.cast::<libc::in_pktinfo>()
                        .write_unaligned(libc::in_pktinfo {
                            ipi_ifindex: from.ifindex as libc::c_int,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from(a).to_be(),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        })
                }
                IpAddr::V6(a) => {
                    data.cast::<libc::in6_pktinfo>()
                        .write_unaligned(libc::in6_pktinfo {
                            ipi6_addr: libc::in6_addr {
                                s6_addr: a.octets(),
                            },
                            ipi6_ifindex: from.ifindex,
                        })
                }
            }
        }
        space
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_written_is_read_back() {
        for from in [Arrival::at("127.0.0.2", 0), Arrival::at("fe80::1", 3)] {
            let mut c = PacketInfo::default();
            let len = c.source(from);
            assert!(len <= PacketInfo::LEN);
            // IPv4's field read back is ipi_spec_dst, the one written.
            assert_eq!(c.arrival(len), Some(from));
        }
        assert_eq!(PacketInfo::default().arrival(0), None);
    }
}
