//! # `async-select`: socket events as messages in a queue
//!
//! **Winsock original.** `WSAAsyncSelect(s, hwnd, WM_SOCKET, FD_ACCEPT | FD_READ | FD_WRITE |
//! FD_CLOSE)` makes the socket non-blocking and has Winsock *post a window message* whenever
//! one of those events happens: `wParam` is the socket, `lParam` holds the event
//! (`WSAGETSELECTEVENT`) and an error code (`WSAGETSELECTERROR`). One thread runs the
//! ordinary `GetMessage` / `DispatchMessage` loop and the window procedure serves the socket
//! the message names. No polling: the thread sleeps in `GetMessage` until Winsock has
//! something to say.
//!
//! **Linux counterpart.** Signal-driven I/O (`F_SETSIG` real-time signals read from a
//! `signalfd`) — issue #6; not built yet, so this model is unavailable on Linux.
//!
//! **Limits.** One thread and one message queue for every socket; a window message per event,
//! so a busy server spends its time in the message loop. Windows caps a thread's message queue
//! (10,000 posted messages by default): a queue that fills loses notifications.
//!
//! **Pitfalls.** Notifications are *re-enabling*, not level-triggered: after `FD_READ`, no
//! new `FD_READ` is posted until the program calls `recv`, and then one is posted again only
//! if data remains — so each message is answered with exactly one `recv` and the next
//! message brings the next chunk. `FD_WRITE` comes once after connect/accept and then only
//! after a `send` failed with `WSAEWOULDBLOCK` (an edge). `FD_CLOSE` may arrive while data is
//! still unread: read to the end before closing. Messages for a socket already closed can
//! still be in the queue. A hidden window needs a desktop; a *message-only* window
//! (`HWND_MESSAGE` parent) does not, which is what a service wants.

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{availability, run, MECHANISM};

#[cfg(not(windows))]
pub(crate) const MECHANISM: &str = "signal-driven I/O (F_SETSIG + signalfd)";

#[cfg(not(windows))]
pub(crate) fn availability() -> Result<(), String> {
    Err("not built yet (issue #6)".into())
}

#[cfg(not(windows))]
pub(crate) fn run(_listener: std::net::TcpListener, _ctx: &crate::Ctx) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        availability().unwrap_err(),
    ))
}
