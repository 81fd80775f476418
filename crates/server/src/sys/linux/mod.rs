//! Linux implementations of the `sys` contract.

/// Calls a libc function (visible to the modules below by textual scope) and turns a `-1` result into `Err(io::Error::last_os_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site documents why its arguments are valid for `$fn`.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod epoll;
mod poll;
pub mod select;
pub mod uring;
mod waker;

pub use poll::wait_readable;
pub use waker::Waker;

/// Sets SO_REUSEPORT, so several listeners can share a port and the kernel spreads incoming
/// connections over them.
pub fn set_reuse_port(socket: &socket2::Socket) -> std::io::Result<()> {
    socket.set_reuse_port(true)
}

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit, so a server
/// can hold as many connections as the system lets this process have. Returns the new limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (syscall!): getrlimit writes into a live rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY (syscall!): setrlimit reads a live rlimit.
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    }
    Ok(lim.rlim_cur)
}
