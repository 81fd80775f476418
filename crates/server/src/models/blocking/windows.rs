//! Windows parts of the thread-per-client model: waiting for a client, and waking a blocked
//! client thread.

use crate::sys::select::{select, SocketSet};
use crate::sys::Waker;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::time::Duration;
use windows_sys::Win32::Networking::WinSock as ws;

/// How the live-socket registry names a socket.
pub(super) type RawId = RawSocket;

pub(super) fn raw_id(socket: &impl AsRawSocket) -> RawId {
    socket.as_raw_socket()
}

/// Waits until a client is waiting to be accepted or the waker fires: `(client, wake)`. The
/// acceptor's wait is a `select` on the listener and the waker's socket; without a listener
/// (accepting is paused) on the waker's socket alone, until the timeout.
pub(super) fn wait_for_client(
    listener: Option<&TcpListener>,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    wait_either(listener.map(AsRawSocket::as_raw_socket), waker, timeout)
}

/// Waits until a datagram is waiting or the waker fires: `(datagram, wake)`. The UDP thread's
/// wait is a `select` on the UDP socket and the waker's socket.
pub(super) fn wait_for_datagram(
    udp: &UdpSocket,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    wait_either(Some(udp.as_raw_socket()), waker, timeout)
}

/// `select` on one socket (if any) and the waker's socket, for reading.
fn wait_either(
    s: Option<RawSocket>,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let mut read = SocketSet::with_capacity(2);
    if let Some(s) = s {
        read.insert(s);
    }
    read.insert(waker.as_raw_socket());
    let mut write = SocketSet::with_capacity(0);
    select(&mut read, &mut write, timeout)?;
    Ok((
        s.is_some_and(|s| read.contains(s)),
        read.contains(waker.as_raw_socket()),
    ))
}

/// Shuts down both directions of a client socket, so its thread's blocking call returns.
/// Nothing to give back: Windows' heap decommits free pages itself.
pub(super) fn release_free_memory() {}

pub(super) fn force_shutdown(s: RawId) {
    // SAFETY: the caller holds the registry lock, under which every registered socket is still
    // open (a client thread unregisters and closes its socket under the same lock), so `s`
    // names the client's socket. shutdown takes no pointers.
    unsafe {
        ws::shutdown(s as ws::SOCKET, ws::SD_BOTH);
    }
}

/// The most client threads this process runs. Windows has no mapping-count wall like Linux's
/// `vm.max_map_count`; a thread costs its committed stack (64 KiB here) and a kernel object,
/// so the cap is a plain bound that keeps a connection flood from exhausting the address space
/// reservation and the scheduler.
pub(super) fn thread_cap() -> usize {
    8192
}
