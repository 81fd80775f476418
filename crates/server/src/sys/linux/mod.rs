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
mod waker;

pub use poll::wait_readable;
pub use waker::Waker;
