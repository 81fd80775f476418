//! [`Waker`]: an `eventfd(2)` that wakes a thread blocked in select, poll or epoll_wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A wake-up signal that can sit in any readiness wait as one more readable descriptor.
///
/// [`Waker::wake`] may be called from any thread any number of times; the waiting side sees the
/// descriptor readable until it calls [`Waker::reset`]. Closed on drop.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY (syscall!): eventfd takes an initial value and flags; no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: eventfd just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Makes the descriptor readable (wakes the waiter).
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY (syscall!): writes 8 bytes from a live u64 to our own eventfd.
        match syscall!(write(
            self.fd.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>()
        )) {
            Ok(_) => Ok(()),
            // The counter is saturated: the waiter is already due to wake.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Consumes pending wake-ups, so the descriptor is no longer readable.
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY (syscall!): reads 8 bytes into a live u64 from our own eventfd. An error means
        // there was nothing to consume (EAGAIN), which is the state we want.
        let _ = syscall!(read(
            self.fd.as_raw_fd(),
            (&mut v as *mut u64).cast(),
            std::mem::size_of::<u64>()
        ));
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
