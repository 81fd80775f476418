//! [`AcceptEx`]: `AcceptEx` and `GetAcceptExSockaddrs`, loaded from the listener's provider,
//! posting accepts into operation records and finishing the sockets they accept.

use super::op::{post, Notify, OpKind, OvOp, Posted};
use crate::stats::Stats;
use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::windows::io::{AsRawSocket, FromRawSocket, OwnedSocket};
use windows_sys::core::GUID;
use windows_sys::Win32::Networking::WinSock as ws;

/// Bytes `AcceptEx` needs for each address: the largest sockaddr plus 16, as documented.
const ADDR_LEN: usize = size_of::<ws::SOCKADDR_STORAGE>() + 16;

type AcceptExFn = unsafe extern "system" fn(
    ws::SOCKET,
    ws::SOCKET,
    *mut c_void,
    u32,
    u32,
    u32,
    *mut u32,
    *mut windows_sys::Win32::System::IO::OVERLAPPED,
) -> i32;
type GetSockaddrsFn = unsafe extern "system" fn(
    *const c_void,
    u32,
    u32,
    u32,
    *mut *mut ws::SOCKADDR,
    *mut i32,
    *mut *mut ws::SOCKADDR,
    *mut i32,
);

/// The Microsoft extension functions for accepting ahead of time, as the listener's provider
/// implements them.
///
/// They are loaded with `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)` rather than linked from
/// mswsock.dll: that is the documented way (a provider may have its own), and Wine needs it —
/// its exported `GetAcceptExSockaddrs` finds nothing unless `AcceptEx` ran through the same
/// export.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptEx {
    accept: AcceptExFn,
    sockaddrs: GetSockaddrsFn,
}

impl AcceptEx {
    /// Loads both functions through `listener`.
    pub fn load(listener: &TcpListener) -> io::Result<AcceptEx> {
        let accept = extension(listener, ws::WSAID_ACCEPTEX)?;
        let sockaddrs = extension(listener, ws::WSAID_GETACCEPTEXSOCKADDRS)?;
        // SAFETY: the provider returned these pointers for exactly these GUIDs, whose
        // documented signatures the two types spell out (as windows-sys's LPFN_ types do).
        unsafe {
            Ok(AcceptEx {
                accept: std::mem::transmute::<usize, AcceptExFn>(accept),
                sockaddrs: std::mem::transmute::<usize, GetSockaddrsFn>(sockaddrs),
            })
        }
    }

    /// A record for [`AcceptEx::post`]: owns the address buffer `AcceptEx` writes into.
    pub fn new_op(tag: usize) -> Box<OvOp> {
        OvOp::new(OpKind::Accept, tag, vec![0; 2 * ADDR_LEN])
    }

    /// Creates an overlapped socket of the listener's family and posts `AcceptEx` into it
    /// (no data is received with the connection: it completes as soon as a client connects).
    /// The record owns the new socket until [`AcceptEx::finish`] takes it; a record dropped
    /// without that (an aborted accept) closes it. `AcceptEx` takes no completion routine:
    /// `notify` must be an event or the port.
    pub fn post(
        &self,
        listener: &TcpListener,
        mut op: Box<OvOp>,
        notify: Notify,
        stats: &Stats,
    ) -> Posted {
        if let Notify::Routine { .. } = notify {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "AcceptEx takes no completion routine",
            );
            return Err((op, e));
        }
        let family = match listener.local_addr() {
            Ok(SocketAddr::V4(_)) => ws::AF_INET,
            Ok(SocketAddr::V6(_)) => ws::AF_INET6,
            Err(e) => return Err((op, e)),
        };
        stats
            .syscalls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: no pointers; returns a new socket or INVALID_SOCKET.
        let raw = unsafe {
            ws::WSASocketW(
                i32::from(family),
                ws::SOCK_STREAM,
                ws::IPPROTO_TCP,
                std::ptr::null(),
                0,
                ws::WSA_FLAG_OVERLAPPED | ws::WSA_FLAG_NO_HANDLE_INHERIT,
            )
        };
        if raw == ws::INVALID_SOCKET {
            return Err((op, crate::sys::last_wsa_error()));
        }
        // SAFETY: a socket just created, owned by nothing else.
        let accepted = unsafe { OwnedSocket::from_raw_socket(raw as u64) };
        op.reuse(OpKind::Accept, op.tag);
        op.buf.resize(2 * ADDR_LEN, 0);
        op.socket = Some(accepted);
        let data = op.buf.as_mut_ptr();
        let listen = listener.as_raw_socket() as ws::SOCKET;
        let accept = self.accept;
        let call = |_, ov, _, bytes| {
            // SAFETY: pointers into the live record only (its address buffer, its OVERLAPPED,
            // its flags word as the byte count), which stays put until reaped; `raw` is the
            // record's socket, open while the record lives.
            let ok = unsafe {
                accept(
                    listen,
                    raw,
                    data.cast(),
                    0,
                    ADDR_LEN as u32,
                    ADDR_LEN as u32,
                    bytes,
                    ov,
                )
            };
            if ok != 0 {
                0
            } else {
                ws::SOCKET_ERROR
            }
        };
        // SAFETY: `call` hands the kernel only pointers into the record; the listener
        // outlives the accept (the model closes it only to cancel accepts, and their
        // completions still come).
        unsafe { post(op, notify, data, 0, stats, call) }
    }

    /// After an accept completed successfully: gives the accepted socket the listener's
    /// properties (`SO_UPDATE_ACCEPT_CONTEXT`, without which `shutdown`, `getpeername` and
    /// friends fail on it), and returns it with the peer's address (`GetAcceptExSockaddrs`).
    pub fn finish(
        &self,
        listener: &TcpListener,
        op: &mut OvOp,
    ) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let socket = op
            .socket
            .take()
            .ok_or_else(|| io::Error::other("an accept record without its socket"))?;
        let listen = listener.as_raw_socket() as ws::SOCKET;
        // SAFETY: the option value is a live SOCKET of the given size.
        let rc = unsafe {
            ws::setsockopt(
                socket.as_raw_socket() as ws::SOCKET,
                ws::SOL_SOCKET,
                ws::SO_UPDATE_ACCEPT_CONTEXT,
                (&listen as *const ws::SOCKET).cast(),
                size_of::<ws::SOCKET>() as i32,
            )
        };
        if rc != 0 {
            return Err(crate::sys::last_wsa_error());
        }
        let mut local: *mut ws::SOCKADDR = std::ptr::null_mut();
        let mut remote: *mut ws::SOCKADDR = std::ptr::null_mut();
        let (mut local_len, mut remote_len) = (0i32, 0i32);
        // SAFETY: the buffer is the one AcceptEx filled (2 * ADDR_LEN bytes, no data); the
        // function stores pointers into it in the live out-parameters.
        unsafe {
            (self.sockaddrs)(
                op.buf.as_ptr().cast(),
                0,
                ADDR_LEN as u32,
                ADDR_LEN as u32,
                &mut local,
                &mut local_len,
                &mut remote,
                &mut remote_len,
            )
        };
        let peer = to_socket_addr(remote, remote_len, &op.buf);
        Ok((TcpStream::from(socket), peer))
    }
}

/// `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)` for `guid`: the function's address.
fn extension(listener: &TcpListener, guid: GUID) -> io::Result<usize> {
    let mut f: usize = 0;
    let mut bytes = 0u32;
    // SAFETY: input is a live GUID, output a live pointer-sized word; no overlapped.
    let rc = unsafe {
        ws::WSAIoctl(
            listener.as_raw_socket() as ws::SOCKET,
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
        return Err(crate::sys::last_wsa_error());
    }
    if f == 0 {
        return Err(io::Error::other("the provider returned no function"));
    }
    Ok(f)
}

/// Reads the sockaddr at `sa`, `len` bytes that must lie inside `buf` (unaligned, as
/// GetAcceptExSockaddrs leaves it); `None` if they do not, or for another family.
fn to_socket_addr(sa: *const ws::SOCKADDR, len: i32, buf: &[u8]) -> Option<SocketAddr> {
    let start = buf.as_ptr() as usize;
    let at = sa as usize;
    let len = usize::try_from(len).ok()?;
    if sa.is_null() || at < start || at + len > start + buf.len() {
        return None;
    }
    let bytes = &buf[at - start..at - start + len];
    let family = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
    match family {
        ws::AF_INET if len >= size_of::<ws::SOCKADDR_IN>() => {
            // SAFETY: enough bytes for a SOCKADDR_IN, read unaligned.
            let a = unsafe { bytes.as_ptr().cast::<ws::SOCKADDR_IN>().read_unaligned() };
            // SAFETY: every view of IN_ADDR's union is plain bytes.
            let ip = Ipv4Addr::from(u32::from_be(unsafe { a.sin_addr.S_un.S_addr }));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        ws::AF_INET6 if len >= size_of::<ws::SOCKADDR_IN6>() => {
            // SAFETY: enough bytes for a SOCKADDR_IN6, read unaligned.
            let a = unsafe { bytes.as_ptr().cast::<ws::SOCKADDR_IN6>().read_unaligned() };
            // SAFETY: every view of these unions is plain bytes.
            let (ip, scope) = unsafe {
                (
                    Ipv6Addr::from(a.sin6_addr.u.Byte),
                    a.Anonymous.sin6_scope_id,
                )
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}
