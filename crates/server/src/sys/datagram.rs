//! Datagram receive and send, the same on every OS (socket2 underneath): [`recv_datagram`]
//! says whether the datagram was cut short — `MSG_TRUNC` in the result flags on Unix,
//! `WSAEMSGSIZE` on Windows — which `recv_from` alone cannot tell.

use socket2::{MaybeUninitSlice, SockAddr, SockRef};
use std::io;
use std::mem::MaybeUninit;
use std::net::UdpSocket;

/// One datagram taken from a socket.
pub struct Received {
    /// Bytes written to the buffer (at most its length).
    pub len: usize,
    /// The datagram was larger than the buffer: the kernel dropped the rest.
    pub truncated: bool,
    /// Its sender.
    pub from: SockAddr,
}

/// Receives one datagram into `buf` (non-blocking sockets: `WouldBlock` when none waits).
pub fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
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
    })
}

/// Sends `buf` as one datagram to `to` (non-blocking sockets: `WouldBlock` when the send
/// buffer is full).
pub fn send_datagram(socket: &UdpSocket, buf: &[u8], to: &SockAddr) -> io::Result<usize> {
    SockRef::from(socket).send_to(buf, to)
}
