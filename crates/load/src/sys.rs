//! What the load generator needs from the OS beyond socket2: a source address without a port
//! until connect (`IP_BIND_ADDRESS_NO_PORT`, Linux).
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
