//! Linux parts of the thread-per-client model: waiting for a client, and waking a blocked
//! client thread.

use crate::sys::{wait_readable, Waker};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// How the live-socket registry names a socket.
pub(super) type RawId = RawFd;

pub(super) fn raw_id(stream: &TcpStream) -> RawId {
    stream.as_raw_fd()
}

/// Waits until a client is waiting to be accepted or the waker fires: `(client, wake)`.
pub(super) fn wait_for_client(
    listener: &TcpListener,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    wait_readable(listener.as_raw_fd(), waker.as_raw_fd(), timeout)
}

/// Shuts down both directions of a client socket, so its thread's blocking call returns.
pub(super) fn force_shutdown(fd: RawId) {
    // SAFETY: the caller holds the registry lock, under which every registered descriptor is
    // still open (a client thread unregisters and closes its socket under the same lock), so
    // `fd` names the client's socket and not a reused descriptor. shutdown takes no pointers.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
