//! What the load generator needs from the OS beyond socket2 and mio: a source address without
//! a port until connect (`IP_BIND_ADDRESS_NO_PORT`, Linux), a precise timer for `--rate`
//! ([`Timer`]: a timerfd, Linux), and on Windows the one call the workers' poll makes
//! (`WSAPoll`, see `poll/windows.rs`).
//!
//! Binding a client socket to `127.0.0.x:0` makes the kernel pick the port at `bind`, among
//! the ports no socket on that address holds — a search that grows slow as thousands are taken
//! and fails (`EADDRINUSE`) long before the ephemeral range is used up (measured: 100,000
//! connections over 127.0.0.1-5 took 310 s, 4 min of it in the kernel, and 987 binds failed).
//! With `IP_BIND_ADDRESS_NO_PORT` the port is picked at `connect`, knowing the destination,
//! as for an unbound socket. Other systems bind as they always did.

use socket2::Socket;
use std::io;

/// Asks the kernel to leave the port of a later `bind` to `connect` (Linux).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int; the descriptor
    // is the open socket `socket` borrows.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the port is picked at `bind`, as it always was.
#[cfg(not(target_os = "linux"))]
pub(crate) fn bind_address_no_port(_socket: &Socket) -> io::Result<()> {
    Ok(())
}

/// The `--rate` timer: wakes a worker's poll when the next message is due. A poll's own
/// timeout has a resolution of a millisecond (epoll_wait's; Windows' wait is coarser), so a
/// message would go out up to that late, and the latency from the schedule would include it.
/// On Linux this is a `timerfd` (CLOCK_MONOTONIC, as `Instant`), registered in the poll under
/// its own token, armed with a relative nanosecond timeout; elsewhere it does nothing and the
/// poll's timeout is the timer.
#[cfg(target_os = "linux")]
pub(crate) struct Timer {
    fd: std::os::fd::OwnedFd,
    /// When it is armed to fire (so that re-arming at the same time costs no system call).
    armed: Option<std::time::Instant>,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
impl Timer {
    /// A disarmed timer, registered in `registry` as `token`.
    pub(crate) fn new(
        registry: &crate::poll::Registry,
        token: crate::poll::Token,
    ) -> io::Result<Timer> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just created above and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(Timer { fd, armed: None })
    }

    /// Arms the timer to fire at `at` (at once if that has passed).
    pub(crate) fn arm(&mut self, at: std::time::Instant) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if self.armed == Some(at) {
            return Ok(());
        }
        // A zero it_value disarms: the earliest is one nanosecond from now.
        let after = at
            .saturating_duration_since(std::time::Instant::now())
            .max(std::time::Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads one live itimerspec; the old value is not asked for
        // (null); the descriptor is the timerfd this Timer owns.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }

    /// Takes the expirations after the timer's event (the poll is edge-triggered; this keeps
    /// the descriptor's count from growing). It is disarmed until armed again.
    pub(crate) fn fired(&mut self) {
        use std::os::fd::AsRawFd;
        let mut ticks = [0u8; 8];
        // SAFETY: read writes at most 8 bytes into a live 8-byte buffer; the descriptor is the
        // timerfd this Timer owns (non-blocking: with nothing to read it fails with EAGAIN).
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), ticks.as_mut_ptr().cast(), ticks.len()) };
        self.armed = None;
    }
}

/// Elsewhere the poll's own timeout is the `--rate` timer.
#[cfg(not(target_os = "linux"))]
pub(crate) struct Timer;

#[cfg(not(target_os = "linux"))]
impl Timer {
    /// No timer: the poll's timeout does the waking.
    pub(crate) fn new(
        _registry: &crate::poll::Registry,
        _token: crate::poll::Token,
    ) -> io::Result<Timer> {
        Ok(Timer)
    }

    /// Nothing to arm.
    pub(crate) fn arm(&mut self, _at: std::time::Instant) -> io::Result<()> {
        Ok(())
    }

    /// Nothing fired.
    pub(crate) fn fired(&mut self) {}
}

/// `WSAPoll` over `fds` for up to `timeout_ms` milliseconds (-1: no limit): the number of
/// sockets with something in `revents`, 0 at the timeout.
#[cfg(windows)]
#[allow(unsafe_code)]
pub(crate) fn wsapoll(
    fds: &mut [windows_sys::Win32::Networking::WinSock::WSAPOLLFD],
    timeout_ms: i32,
) -> io::Result<usize> {
    use windows_sys::Win32::Networking::WinSock::{WSAGetLastError, WSAPoll, SOCKET_ERROR};
    let count = u32::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets to poll"))?;
    // SAFETY: WSAPoll reads `count` WSAPOLLFD entries from the live, exclusively borrowed
    // slice and writes only their `revents`; it keeps no pointer after returning.
    let rc = unsafe { WSAPoll(fds.as_mut_ptr(), count, timeout_ms) };
    if rc == SOCKET_ERROR {
        // SAFETY: WSAGetLastError takes no arguments and reads this thread's last error.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(rc as usize)
}
