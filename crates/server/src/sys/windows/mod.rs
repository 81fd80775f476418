//! Windows implementations of the `sys` contract: Winsock through `windows-sys`.
//!
//! Every handle the models hold is owned by an RAII type here: sockets by std's
//! [`OwnedSocket`](std::os::windows::io::OwnedSocket) (`closesocket` on drop), event objects
//! by [`Event`] (`WSACloseEvent`), kernel handles by [`Handle`] (`CloseHandle`), the wake-up by
//! [`Waker`]. [`wsa_startup`] initialises Winsock once per process (std does it too, lazily, on
//! its first socket; a model that calls Winsock directly first must not depend on that).

pub mod apc;
pub mod console;
pub mod control;
pub(super) mod datagram;
#[doc(hidden)]
pub use datagram::wine_skips;
pub use datagram::{PacketInfo, RecvMsg};
pub mod event;
pub mod iocp;
pub mod network_events;
pub mod process;
pub mod select;
mod waker;
pub mod window;

pub use console::{on_console_ctrl, CtrlEvent};
pub use control::{send_control, Control, ControlEvents};
pub use event::{wait_any, Event, Handle, Wait};
pub use waker::Waker;

use std::io;
use std::sync::Once;
use windows_sys::Win32::Networking::WinSock as ws;

/// Calls `WSAStartup(2.2)` once for the process. Winsock counts startups; this one is never
/// undone (the process owns Winsock until it exits).
pub fn wsa_startup() {
    static START: Once = Once::new();
    START.call_once(|| {
        // SAFETY: WSADATA is plain old data that WSAStartup fills in.
        let mut data: ws::WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: `data` is a live WSADATA for the call to write.
        let rc = unsafe { ws::WSAStartup(0x0202, &mut data) };
        if rc != 0 {
            // Every later Winsock call fails with WSANOTINITIALISED and says so.
            log::error!("WSAStartup failed: {}", io::Error::from_raw_os_error(rc));
        }
    });
}

/// The Wine version this process runs under (`wine_get_version`, which ntdll.dll exports under
/// Wine only), or `None` on Windows. For the tests that must tell a Wine limit from a failure.
pub fn wine_version() -> Option<String> {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; ntdll.dll is loaded in every process and never unloaded.
    let f = unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        if ntdll.is_null() {
            return None;
        }
        GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast())?
    };
    // SAFETY: Wine's `const char *wine_get_version(void)`: a static NUL-terminated string.
    let version = unsafe {
        let get: unsafe extern "C" fn() -> *const std::ffi::c_char = std::mem::transmute(f);
        std::ffi::CStr::from_ptr(get())
    };
    Some(version.to_string_lossy().into_owned())
}

/// The last Winsock error of this thread, as an `io::Error`.
pub fn last_wsa_error() -> io::Error {
    // SAFETY: WSAGetLastError reads thread-local state; no arguments.
    io::Error::from_raw_os_error(unsafe { ws::WSAGetLastError() })
}

/// Windows has no `SO_REUSEPORT`: the completion-port model shares one listener between its
/// workers instead (its AcceptEx completions go to whichever worker dequeues them).
pub fn set_reuse_port(_socket: &socket2::Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows has no SO_REUSEPORT",
    ))
}

/// `SO_OOBINLINE` on an accepted socket: set on each one (as `TCP_NODELAY` is), since an
/// accepted socket is not relied on to copy it from the listener (`AcceptEx`'s socket is
/// made before the connection; Wine maps options onto host sockets of its own).
pub fn set_oob_inline_accepted(stream: &std::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_out_of_band_inline(true) {
        log::debug!("SO_OOBINLINE on an accepted socket failed: {e}");
    }
}

/// Windows has no `RLIMIT_NOFILE`: sockets are limited by memory (non-paged pool) and by the
/// ephemeral port range, not by a descriptor table. Returns `u64::MAX`.
pub fn raise_nofile_limit() -> io::Result<u64> {
    Ok(u64::MAX)
}

/// Windows has no descriptor limit: `None` (the default connection cap is then none).
pub fn nofile_soft_limit() -> Option<u64> {
    None
}

/// An accept error that concerns one would-be connection (the peer reset or aborted it before
/// it was accepted), not the listener: accept the next one. Wine reports a connection reset
/// in the backlog as `WSAENOTCONN` from `accept` (Windows: `WSAECONNRESET`).
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(ws::WSAECONNRESET | ws::WSAECONNABORTED | ws::WSAENOTCONN | ws::WSAEINTR)
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// An accept error that means the process or system is out of sockets or buffer space: pause
/// accepting for a while instead of spinning.
pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ws::WSAEMFILE | ws::WSAENOBUFS))
}
