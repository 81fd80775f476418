//! [`wait_readable`]: `poll(2)` on two descriptors.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Blocks until `a` or `b` is readable or `timeout` passes (`None`: no timeout). Returns which
/// were readable, `(a, b)`. Interrupted waits (EINTR) return `(false, false)`. A negative
/// descriptor is ignored (`poll` skips its entry): `b` alone is waited for.
pub fn wait_readable(a: RawFd, b: RawFd, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Rounded up: a deadline less than a millisecond away must not become a zero wait, which
    // returns at once and is asked again, a spin until the deadline.
    let ms = timeout.map_or(-1, |t| {
        t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
    });
    // SAFETY (syscall!): `fds` is a live array of two pollfd and we pass its length.
    match syscall!(poll(fds.as_mut_ptr(), 2, ms)) {
        Ok(_) => Ok((fds[0].revents != 0, fds[1].revents != 0)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((false, false)),
        Err(e) => Err(e),
    }
}
