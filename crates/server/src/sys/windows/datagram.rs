//! Datagram receive and send on Windows, for the readiness models (socket2's `WSARecvFrom` and
//! `sendto`). Packet information (`WSARecvMsg` / `WSASendMsg` with `IP_PKTINFO`) is not used
//! yet: [`want_arrival`] asks for nothing and every [`Received::arrival`] is `None`.

use super::super::datagram::{Arrival, Received};
use socket2::{MaybeUninitSlice, SockAddr, SockRef};
use std::io;
use std::mem::MaybeUninit;
use std::net::UdpSocket;

/// Asks for packet information with each datagram: nothing yet on Windows.
pub fn want_arrival(_socket: &UdpSocket) -> io::Result<()> {
    Ok(())
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
        arrival: None,
    })
}

/// Sends `buf` as one datagram to `to` (non-blocking sockets: `WouldBlock` when the send
/// buffer is full).
pub fn send_datagram(
    socket: &UdpSocket,
    buf: &[u8],
    to: &SockAddr,
    _arrival: Option<Arrival>,
) -> io::Result<usize> {
    SockRef::from(socket).send_to(buf, to)
}
