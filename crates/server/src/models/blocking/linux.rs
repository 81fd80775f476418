//! Linux parts of the thread-per-client model: waiting for a client, and waking a blocked
//! client thread.

use crate::sys::{wait_readable, Waker};
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// How the live-socket registry names a socket.
pub(super) type RawId = RawFd;

pub(super) fn raw_id(socket: &impl AsRawFd) -> RawId {
    socket.as_raw_fd()
}

/// Waits until a client is waiting to be accepted or the waker fires: `(client, wake)`.
/// Without a listener (accepting is paused) it waits for the waker or the timeout alone:
/// `poll` ignores an entry whose descriptor is negative.
pub(super) fn wait_for_client(
    listener: Option<&TcpListener>,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let listener = listener.map_or(-1, AsRawFd::as_raw_fd);
    wait_readable(listener, waker.as_raw_fd(), timeout)
}

/// Waits until a datagram is waiting or the waker fires: `(datagram, wake)`.
pub(super) fn wait_for_datagram(
    udp: &UdpSocket,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    wait_readable(udp.as_raw_fd(), waker.as_raw_fd(), timeout)
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

/// The most client threads this process can safely run.
///
/// Each thread maps its stack, a signal stack and a guard page for each (about four memory
/// mappings), and the kernel caps mappings per process (`vm.max_map_count`, 65,530 by
/// default): past roughly 16,000 threads a new thread's signal stack cannot be mapped, and Rust
/// aborts the whole process. So the model stops well before: a quarter of the mapping limit,
/// less room for the rest of the process, and at most half of `kernel.threads-max` and of
/// `kernel.pid_max` (every thread takes a task id, system-wide).
pub(super) fn thread_cap() -> usize {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let by_maps =
        read("/proc/sys/vm/max_map_count").map_or(usize::MAX, |m| m.saturating_sub(4096) / 4);
    let by_threads = read("/proc/sys/kernel/threads-max").map_or(usize::MAX, |t| t / 2);
    let by_pids = read("/proc/sys/kernel/pid_max").map_or(usize::MAX, |p| p / 2);
    by_maps.min(by_threads).min(by_pids).max(1)
}
