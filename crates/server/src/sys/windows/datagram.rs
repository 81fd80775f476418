//! `WSARecvMsg` / `WSASendMsg` with `IP_PKTINFO` / `IPV6_PKTINFO`: where a datagram was sent to,
//! and answering from there — the Winsock twin of `sys/linux/datagram.rs` (`recvmsg` /
//! `sendmsg`).
//!
//! A UDP socket bound to a wildcard address receives datagrams sent to any of the host's
//! addresses, but `sendto` picks the answer's source by the route back to the sender: a
//! datagram sent to 127.0.0.2 would be answered from 127.0.0.1, which a client with a
//! connected socket drops. With the `IP_PKTINFO` (IPv4) or `IPV6_PKTINFO` (IPv6) option set
//! ([`want_arrival`]), `WSARecvMsg` returns with each datagram an `IN_PKTINFO` /
//! `IN6_PKTINFO` control message naming the address it was sent to (`ipi_addr`) and the
//! interface it came in on; `WSASendMsg` with the same kind of control message sends from that
//! address. [`PacketInfo`] is the control buffer both directions use, encoded and decoded here
//! once (safe code: the `WSA_CMSG_*` layout is spelled out below): by the readiness models'
//! [`recv_datagram`] / [`send_datagram`] and by the overlapped records of the completion
//! models (`models/winio/udp.rs`). What to answer from is decided OS-neutrally by
//! [`crate::sys::reply_source`].
//!
//! Pitfalls:
//! - **`WSARecvMsg` is not exported** by ws2_32.dll: it is reachable only through
//!   `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER, WSAID_WSARECVMSG)` ([`RecvMsg::load`]).
//!   The pointer belongs to the socket's provider, chosen from the Winsock catalog by
//!   (family, type, protocol); it is looked up once, on the first wildcard socket, and kept
//!   for the process, as quinn-udp does (every socket that uses it is a UDP socket, and the
//!   base provider's function serves both families). `WSASendMsg` is an ordinary export
//!   (Vista and later).
//! - **Control buffer sizes.** A control message is a `WSACMSGHDR` (`cmsg_len` is a
//!   `SIZE_T`: 16 bytes on x64), its data at the next 8-byte boundary, the next message at
//!   the next one after that (`WSA_CMSG_SPACE`): 40 bytes hold one `IN6_PKTINFO` (20 bytes),
//!   32 one `IN_PKTINFO` (8). A buffer too small for what arrived sets `MSG_CTRUNC` in the
//!   message's `dwFlags` on Windows; Wine fails the whole receive with `WSAEMSGSIZE`
//!   instead, like a cut datagram — so the buffer holds the largest message asked for.
//! - **Truncation** shows as `MSG_TRUNC` in `dwFlags` or as the error `WSAEMSGSIZE` (then
//!   the byte count is not reported: the whole buffer was filled); both count as cut.
//! - **Wine** (checked against its source, `dlls/ntdll/unix/socket.c` and
//!   `dlls/ws2_32/socket.c`, Wine 8.0 and later): `WSARecvMsg` reports `IN_PKTINFO` (the
//!   destination in `ipi_addr`, from Linux's `in_pktinfo.ipi_addr`) and `IN6_PKTINFO`; but
//!   `WSASendMsg` hands only the buffers and the destination to its `sendto` and drops the
//!   control data, so under Wine an answer still leaves from the address Linux's route picks.
//!   Nothing in Winsock reaches the source address another way (binding a second socket to
//!   the arrival address and port would steal that address's datagrams from the wildcard
//!   socket), so the code is what Windows documents and the tests say what Wine cannot show.
//! - A socket bound to one address needs none of it: its answers leave from that address.
//!   Without [`want_arrival`] (no wildcard socket in the process) [`recv_datagram`] is a
//!   plain `WSARecvFrom` (socket2).

use super::super::datagram::{reply_source, Arrival, Received};
use socket2::{MaybeUninitSlice, SockAddr, SockRef};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::OnceLock;
use windows_sys::core::GUID;
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::IO::OVERLAPPED;

/// `sizeof(WSACMSGHDR)`: `cmsg_len` (`SIZE_T`), `cmsg_level`, `cmsg_type`.
const HDR: usize = size_of::<ws::CMSGHDR>();
/// `WSA_CMSGHDR_ALIGN` / `WSA_CMSGDATA_ALIGN`: the alignment of a `WSACMSGHDR` (its `SIZE_T`).
const ALIGN: usize = std::mem::align_of::<ws::CMSGHDR>();
/// `sizeof(IN_PKTINFO)`: a 4-byte address and a `ULONG` interface index.
const IN_INFO: usize = size_of::<ws::IN_PKTINFO>();
/// `sizeof(IN6_PKTINFO)`: a 16-byte address and a `ULONG` interface index.
const IN6_INFO: usize = size_of::<ws::IN6_PKTINFO>();
/// `WSA_CMSG_SPACE(sizeof(IN6_PKTINFO))`: one message, the larger of the two.
const SPACE: usize = space(IN6_INFO);

/// Rounds `n` up to the control messages' alignment.
const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// `WSA_CMSG_DATA`'s offset: the data follows the header at the next aligned offset.
const DATA: usize = align(HDR);

/// `WSA_CMSG_SPACE(len)`: the room one message with `len` bytes of data takes.
const fn space(len: usize) -> usize {
    align(DATA + align(len))
}

/// `WSA_CMSG_LEN(len)`: a message's `cmsg_len`.
const fn cmsg_len(len: usize) -> usize {
    DATA + len
}

/// `WSARecvMsg`'s signature (`LPFN_WSARECVMSG` without the `Option`).
type RecvMsgFn = unsafe extern "system" fn(
    ws::SOCKET,
    *mut ws::WSAMSG,
    *mut u32,
    *mut OVERLAPPED,
    ws::LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32;

/// `WSARecvMsg`, as the provider of the first wildcard UDP socket returned it (see the module
/// doc): a function pointer, valid for the life of the process.
#[derive(Clone, Copy)]
pub struct RecvMsg(RecvMsgFn);

/// The pointer, once looked up.
static RECV_MSG: OnceLock<RecvMsg> = OnceLock::new();

impl RecvMsg {
    /// `WSARecvMsg` for `socket`: the cached pointer, or `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_
    /// POINTER, WSAID_WSARECVMSG)` on `socket` the first time (a failure is not cached).
    pub fn load(socket: RawSocket) -> io::Result<RecvMsg> {
        if let Some(f) = RECV_MSG.get() {
            return Ok(*f);
        }
        let f = extension(socket, ws::WSAID_WSARECVMSG)?;
        // SAFETY: the provider returned this pointer for WSAID_WSARECVMSG, whose documented
        // signature (windows-sys's LPFN_WSARECVMSG) `RecvMsgFn` spells out.
        let f = RecvMsg(unsafe { std::mem::transmute::<usize, RecvMsgFn>(f) });
        Ok(*RECV_MSG.get_or_init(|| f))
    }

    /// The pointer if some socket asked for arrivals ([`want_arrival`]) already.
    pub fn cached() -> Option<RecvMsg> {
        RECV_MSG.get().copied()
    }

    /// Calls `WSARecvMsg(socket, msg, received, overlapped, routine)`; returns its result (0 or
    /// `SOCKET_ERROR`).
    ///
    /// # Safety
    /// As for `WSARecvMsg`: `msg` and everything it points at (name, buffers, control) must be
    /// valid for the kernel to write until the call returns or, when `overlapped` is not null,
    /// until the operation completes; so must `overlapped`.
    pub unsafe fn call(
        self,
        socket: RawSocket,
        msg: *mut ws::WSAMSG,
        received: *mut u32,
        overlapped: *mut OVERLAPPED,
        routine: ws::LPWSAOVERLAPPED_COMPLETION_ROUTINE,
    ) -> i32 {
        // SAFETY: forwarded contract; the pointer is WSARecvMsg (`load`).
        unsafe { (self.0)(socket as ws::SOCKET, msg, received, overlapped, routine) }
    }
}

/// `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)` for `guid` on `socket`: the function's address.
fn extension(socket: RawSocket, guid: GUID) -> io::Result<usize> {
    let mut f: usize = 0;
    let mut bytes = 0u32;
    // SAFETY: input is a live GUID, output a live pointer-sized word; no overlapped.
    let rc = unsafe {
        ws::WSAIoctl(
            socket as ws::SOCKET,
            ws::SIO_GET_EXTENSION_FUNCTION_POINTER,
            (&guid as *const GUID).cast(),
            size_of::<GUID>() as u32,
            (&mut f as *mut usize).cast(),
            size_of::<usize>() as u32,
            &mut bytes,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(super::last_wsa_error());
    }
    if f == 0 {
        return Err(io::Error::other("the provider returned no WSARecvMsg"));
    }
    Ok(f)
}

/// Asks for the address each datagram was sent to (`IP_PKTINFO` on an IPv4 socket,
/// `IPV6_PKTINFO` on an IPv6 one) and loads `WSARecvMsg`, which alone reports it. An error
/// (either refused) fails the bind: a wildcard socket without it would answer from the wrong
/// address.
pub fn want_arrival(socket: &UdpSocket) -> io::Result<()> {
    let (level, name) = match socket.local_addr()?.ip() {
        IpAddr::V4(_) => (ws::IPPROTO_IP, ws::IP_PKTINFO),
        IpAddr::V6(_) => (ws::IPPROTO_IPV6, ws::IPV6_PKTINFO),
    };
    let on: u32 = 1;
    // SAFETY: the socket is live; the value is a 4-byte BOOL that outlives the call, and its
    // size is passed.
    let rc = unsafe {
        ws::setsockopt(
            socket.as_raw_socket() as ws::SOCKET,
            level,
            name,
            (&on as *const u32).cast(),
            size_of::<u32>() as i32,
        )
    };
    if rc != 0 {
        return Err(super::last_wsa_error());
    }
    RecvMsg::load(socket.as_raw_socket())?;
    Ok(())
}

/// Receives one datagram into `buf` (non-blocking sockets: `WouldBlock` when none waits): its
/// length, whether it was cut short (`MSG_TRUNC` or `WSAEMSGSIZE`), its sender, and where it
/// arrived if the socket asked ([`want_arrival`]): `WSARecvMsg` then, a plain `WSARecvFrom`
/// when no socket of the process asked.
pub fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let Some(recv_msg) = RecvMsg::cached() else {
        return recv_from(socket, buf);
    };
    let mut control = PacketInfo::default();
    let mut wsabuf = ws::WSABUF {
        len: buf.len().min(u32::MAX as usize) as u32,
        buf: buf.as_mut_ptr(),
    };
    // SAFETY: try_init hands a zeroed SOCKADDR_STORAGE and its length for the closure to fill
    // and reads back as many bytes as the length then says.
    let ((len, truncated, control_len), from) = unsafe {
        SockAddr::try_init(|name, namelen| {
            let mut msg = ws::WSAMSG {
                name: name.cast(),
                namelen: *namelen,
                lpBuffers: &mut wsabuf,
                dwBufferCount: 1,
                Control: control.wsabuf(PacketInfo::LEN),
                dwFlags: 0,
            };
            let mut received = 0u32;
            // SAFETY: a call without OVERLAPPED: the message's name, buffer and control
            // point at live buffers of the sizes they state, which outlive the call.
            let rc = recv_msg.call(
                socket.as_raw_socket(),
                &mut msg,
                &mut received,
                std::ptr::null_mut(),
                None,
            );
            *namelen = msg.namelen;
            if rc == 0 {
                let cut = msg.dwFlags & ws::MSG_TRUNC != 0;
                Ok((received as usize, cut, msg.Control.len as usize))
            } else {
                let e = super::last_wsa_error();
                match e.raw_os_error() {
                    // Cut short: the buffer was filled; the count is not reported.
                    Some(ws::WSAEMSGSIZE) => Ok((wsabuf.len as usize, true, 0)),
                    _ => Err(e),
                }
            }
        })?
    };
    Ok(Received {
        len: len.min(buf.len()),
        truncated,
        from,
        arrival: control.arrival(control_len),
    })
}

/// The plain receive (socket2's `WSARecvFrom`): no arrival.
fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the kernel (through socket2) only
    // writes initialized bytes into the buffer, never uninitialized ones, so `buf` stays a
    // valid `[u8]` afterwards.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let mut bufs = [MaybeUninitSlice::new(uninit)];
    let (len, flags, from) = SockRef::from(socket).recv_from_vectored_with_flags(&mut bufs, 0)?;
    Ok(Received {
        len,
        truncated: flags.is_truncated(),
        from,
        arrival: None,
    })
}

/// Sends `buf` as one datagram to `to` (non-blocking sockets: `WouldBlock` when the send buffer
/// is full), from the address `arrival` names when [`reply_source`] allows one (`WSASendMsg`
/// with a packet-information control message); otherwise a plain `sendto`.
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
    let control_len = control.source(from);
    let mut wsabuf = ws::WSABUF {
        len: buf.len().min(u32::MAX as usize) as u32,
        buf: buf.as_ptr().cast_mut(),
    };
    let msg = ws::WSAMSG {
        name: to.as_ptr().cast_mut().cast(),
        namelen: to.len(),
        lpBuffers: &mut wsabuf,
        dwBufferCount: 1,
        Control: control.wsabuf(control_len),
        dwFlags: 0,
    };
    let mut sent = 0u32;
    // SAFETY: a call without OVERLAPPED: the message points at live buffers of the sizes it
    // states — `buf`, `to` and `control` — which outlive the call; WSASendMsg only reads them.
    let rc = unsafe {
        ws::WSASendMsg(
            socket.as_raw_socket() as ws::SOCKET,
            &msg,
            0,
            &mut sent,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(super::last_wsa_error());
    }
    Ok(sent as usize)
}

/// Room for one packet-information control message (`WSA_CMSG_SPACE(sizeof(IN6_PKTINFO))`),
/// aligned as `WSACMSGHDR` requires: what `WSARecvMsg` fills in, then what `WSASendMsg`
/// reads. Encoding and decoding are plain byte arithmetic (no pointer casts).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct PacketInfo([u8; SPACE]);

impl Default for PacketInfo {
    fn default() -> Self {
        PacketInfo([0; SPACE])
    }
}

impl PacketInfo {
    /// The buffer's size, for `Control.len` before a receive.
    pub const LEN: usize = SPACE;

    /// A `WSABUF` over the buffer's first `len` bytes, for `WSAMSG.Control` (null when 0).
    pub fn wsabuf(&mut self, len: usize) -> ws::WSABUF {
        let len = len.min(SPACE);
        ws::WSABUF {
            len: len as u32,
            buf: if len == 0 {
                std::ptr::null_mut()
            } else {
                self.0.as_mut_ptr()
            },
        }
    }

    /// The address a received datagram was sent to, from the `len` bytes of control data the
    /// receive reported (`Control.len` after it); `None` if it reported none. Walks the
    /// messages as `WSA_CMSG_FIRSTHDR` / `WSA_CMSG_NXTHDR` do.
    pub fn arrival(&self, len: usize) -> Option<Arrival> {
        let bytes = &self.0[..len.min(SPACE)];
        let mut at = 0;
        while at + HDR <= bytes.len() {
            let word = |i: usize| -> [u8; 4] { bytes[at + i..at + i + 4].try_into().unwrap() };
            let clen = usize::from_ne_bytes(bytes[at..at + size_of::<usize>()].try_into().ok()?);
            let level = i32::from_ne_bytes(word(size_of::<usize>()));
            let kind = i32::from_ne_bytes(word(size_of::<usize>() + 4));
            if clen < DATA || at + clen > bytes.len() {
                return None;
            }
            let data = &bytes[at + DATA..at + clen];
            match (level, kind) {
                (ws::IPPROTO_IP, ws::IP_PKTINFO) if data.len() >= IN_INFO => {
                    let addr: [u8; 4] = data[..4].try_into().ok()?;
                    return Some(Arrival {
                        addr: IpAddr::V4(Ipv4Addr::from(addr)),
                        ifindex: u32::from_ne_bytes(data[4..8].try_into().ok()?),
                    });
                }
                (ws::IPPROTO_IPV6, ws::IPV6_PKTINFO) if data.len() >= IN6_INFO => {
                    let addr: [u8; 16] = data[..16].try_into().ok()?;
                    return Some(Arrival {
                        addr: IpAddr::V6(Ipv6Addr::from(addr)),
                        ifindex: u32::from_ne_bytes(data[16..20].try_into().ok()?),
                    });
                }
                _ => at += align(clen),
            }
        }
        None
    }

    /// Writes the control message that makes a `WSASendMsg` leave from `from` (a source
    /// address [`reply_source`] chose, and an interface or 0: `IN_PKTINFO` / `IN6_PKTINFO`);
    /// returns its length, for `Control.len`.
    pub fn source(&mut self, from: Arrival) -> usize {
        self.0 = [0; SPACE];
        let (level, kind, data_len) = match from.addr {
            IpAddr::V4(_) => (ws::IPPROTO_IP, ws::IP_PKTINFO, IN_INFO),
            IpAddr::V6(_) => (ws::IPPROTO_IPV6, ws::IPV6_PKTINFO, IN6_INFO),
        };
        let n = size_of::<usize>();
        self.0[..n].copy_from_slice(&cmsg_len(data_len).to_ne_bytes());
        self.0[n..n + 4].copy_from_slice(&level.to_ne_bytes());
        self.0[n + 4..n + 8].copy_from_slice(&kind.to_ne_bytes());
        let data = &mut self.0[DATA..DATA + data_len];
        match from.addr {
            IpAddr::V4(a) => {
                data[..4].copy_from_slice(&a.octets());
                data[4..8].copy_from_slice(&from.ifindex.to_ne_bytes());
            }
            IpAddr::V6(a) => {
                data[..16].copy_from_slice(&a.octets());
                data[16..20].copy_from_slice(&from.ifindex.to_ne_bytes());
            }
        }
        space(data_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_layout_is_the_documented_wsa_cmsg_one() {
        // x64: a 16-byte WSACMSGHDR, data right after it, messages 8-aligned.
        assert_eq!((HDR, DATA, ALIGN), (16, 16, 8));
        assert_eq!((IN_INFO, IN6_INFO), (8, 20));
        assert_eq!(space(IN_INFO), 24);
        assert_eq!(SPACE, 40);
        assert_eq!(cmsg_len(IN6_INFO), 36);
    }

    #[test]
    fn a_source_written_is_read_back() {
        for from in [
            Arrival::at("127.0.0.2", 0),
            Arrival::at("::1", 0),
            Arrival::at("fe80::1", 3),
        ] {
            let mut c = PacketInfo::default();
            let len = c.source(from);
            assert!(len <= PacketInfo::LEN);
            assert_eq!(c.arrival(len), Some(from), "{from:?}");
        }
        assert_eq!(PacketInfo::default().arrival(0), None);
        assert_eq!(PacketInfo::default().arrival(PacketInfo::LEN), None);
    }

    #[test]
    fn a_control_message_reads_as_windows_writes_it() {
        // IN_PKTINFO for 127.0.0.2 on interface 1, as WSARecvMsg fills it (Wine's
        // fill_control_message too): cmsg_len = 16 + 8, level 0, type 19, address in network
        // order, then the index.
        let mut c = PacketInfo::default();
        c.0[..8].copy_from_slice(&24usize.to_ne_bytes());
        c.0[8..12].copy_from_slice(&0i32.to_ne_bytes());
        c.0[12..16].copy_from_slice(&19i32.to_ne_bytes());
        c.0[16..20].copy_from_slice(&[127, 0, 0, 2]);
        c.0[20..24].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(c.arrival(24), Some(Arrival::at("127.0.0.2", 1)));
        // Cut to less than one header or one message: nothing, never a panic.
        assert_eq!(c.arrival(8), None);
        assert_eq!(c.arrival(20), None);
        // Another message first (IP_TOS, 4 bytes of data), then the packet information.
        let mut c = PacketInfo::default();
        c.0[..8].copy_from_slice(&20usize.to_ne_bytes());
        c.0[8..12].copy_from_slice(&0i32.to_ne_bytes());
        c.0[12..16].copy_from_slice(&3i32.to_ne_bytes());
        assert_eq!(c.arrival(24), None, "a lone IP_TOS is no arrival");
    }

    #[test]
    fn an_encoded_ipv4_message_is_byte_for_byte_in_pktinfo() {
        let mut c = PacketInfo::default();
        assert_eq!(c.source(Arrival::at("127.0.0.2", 0)), 24);
        assert_eq!(&c.0[..8], &24usize.to_ne_bytes());
        assert_eq!(&c.0[12..16], &19i32.to_ne_bytes());
        assert_eq!(&c.0[16..24], &[127, 0, 0, 2, 0, 0, 0, 0]);
        let mut c = PacketInfo::default();
        assert_eq!(c.source(Arrival::at("::1", 0)), 40);
        assert_eq!(&c.0[..8], &36usize.to_ne_bytes());
        assert_eq!(&c.0[8..12], &41i32.to_ne_bytes());
        assert_eq!(c.0[31], 1);
    }
}

/// For tests, here and in `tests/udp_conformance.rs`: says on the test's own stderr (past the
/// harness's capture, so it shows in every run, and `scripts/test-windows.sh` counts it) which
/// check Wine cannot pass: an answer's source.
pub fn wine_skips(check: &str) {
    use std::io::Write;
    let why = "Wine's WSASendMsg drops the control data (dlls/ws2_32/socket.c: WSASendMsg \
               passes only the buffers and the name to WS2_sendto)";
    let _ = std::io::stderr()
        .write_all(format!("\nwindows skipped: 1 check under Wine: {check}: {why}\n").as_bytes());
}

/// The calls themselves, on real sockets (loopback: 127.0.0.1, 127.0.0.2 and ::1).
#[cfg(test)]
mod calls {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    const WAIT: Option<Duration> = Some(Duration::from_secs(10));

    /// A wildcard socket of `listen`'s family that asked for arrivals, as `bind_udp` makes it.
    fn wildcard(listen: &str) -> UdpSocket {
        let s = UdpSocket::bind(listen).unwrap();
        s.set_read_timeout(WAIT).unwrap();
        want_arrival(&s).unwrap();
        s
    }

    fn client(bind: &str) -> UdpSocket {
        let c = UdpSocket::bind(bind).unwrap();
        c.set_read_timeout(WAIT).unwrap();
        c
    }

    /// `recv_datagram` on a wildcard socket reports where the datagram was sent to, and
    /// `send_datagram` answers from there (`WSASendMsg` with `IN_PKTINFO` / `IN6_PKTINFO`).
    fn round_trip(listen: &str, client_at: &str, to_ip: &str) {
        let s = wildcard(listen);
        let port = s.local_addr().unwrap().port();
        let to = SocketAddr::new(to_ip.parse().unwrap(), port);
        let c = client(client_at);
        c.send_to(b"where to?", to).unwrap();
        let mut buf = [0u8; 64];
        let got = recv_datagram(&s, &mut buf).unwrap();
        assert_eq!((&buf[..got.len], got.truncated), (&b"where to?"[..], false));
        assert_eq!(got.from.as_socket(), Some(c.local_addr().unwrap()));
        let arrival = got
            .arrival
            .expect("WSARecvMsg reported no IN_PKTINFO / IN6_PKTINFO");
        assert_eq!(arrival.addr, to.ip());
        assert_eq!(
            send_datagram(&s, &buf[..got.len], &got.from, got.arrival).unwrap(),
            got.len
        );
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"where to?");
        if from != to && crate::sys::wine_version().is_some() {
            super::wine_skips(&format!(
                "an answer to {to} leaves from {to} (it left from {from})"
            ));
        } else {
            assert_eq!(from, to, "the answer left from another address");
        }
    }

    #[test]
    fn a_wildcard_socket_reports_127_0_0_2_and_answers_from_it() {
        round_trip("0.0.0.0:0", "127.0.0.1:0", "127.0.0.2");
    }

    #[test]
    fn an_ipv6_wildcard_socket_reports_loopback_and_answers_through_wsasendmsg() {
        round_trip("[::]:0", "[::1]:0", "::1");
    }

    #[test]
    fn a_cut_datagram_is_reported_truncated_with_its_arrival_read_or_not() {
        let s = wildcard("0.0.0.0:0");
        let to = SocketAddr::from(([127, 0, 0, 1], s.local_addr().unwrap().port()));
        let c = client("127.0.0.1:0");
        c.send_to(&[9u8; 100], to).unwrap();
        c.send_to(b"whole", to).unwrap();
        let mut small = [0u8; 10];
        let got = recv_datagram(&s, &mut small).unwrap();
        assert!(got.truncated, "100 bytes into 10 must say cut");
        assert_eq!(got.len, 10);
        let mut buf = [0u8; 64];
        let got = recv_datagram(&s, &mut buf).unwrap();
        assert_eq!((&buf[..got.len], got.truncated), (&b"whole"[..], false));
    }

    #[test]
    fn a_nonblocking_wildcard_socket_with_nothing_waiting_would_block() {
        let s = wildcard("0.0.0.0:0");
        s.set_nonblocking(true).unwrap();
        let Err(e) = recv_datagram(&s, &mut [0u8; 8]) else {
            panic!("a datagram from nowhere");
        };
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    }
}
