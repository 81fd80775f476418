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
//! **Windows.** The real thing, on one thread. A message-only window
//! (`sys/windows/window.rs`: a class registered under a name of its own, `HWND_MESSAGE` parent)
//! receives three messages: `WM_SOCKET` (`WM_USER + 1`) for the listener (`FD_ACCEPT`) and
//! every client (`FD_READ | FD_WRITE | FD_CLOSE`), `WM_WAKE` for the shutdown waker's UDP
//! socket, selected for `FD_READ` so that a wake-up is one more message, and `WM_READ_ON`, which
//! the model posts itself. The loop blocks in `GetMessageW` (one counted wait), then dispatches
//! what is queued, at most 1,024 messages, to the window procedure, then checks shutdown and
//! the clock; a window timer (`SetTimer`) wakes it for the drain deadline and for the end of an
//! accept pause. The procedure reads the event from `WSAGETSELECTEVENT(lParam)` (low word),
//! sets the session's `readable` / `writable` flags and calls `Session::pump` with one read: one
//! recv per `FD_READ`, sends until `WSAEWOULDBLOCK` or nothing is left. The recv re-enables
//! `FD_READ`: if data remains, Winsock posts another, queued behind every other socket's
//! messages, so a busy client cannot starve the rest and the model clears `readable` instead of
//! reading again. Backpressure stops the recv, and then an `FD_READ` is used up with no recv
//! to re-enable it: the session keeps `readable`, and the pump that runs when `FD_WRITE` drains
//! its output reads again. After `FD_CLOSE` nothing promises another `FD_READ`, so while data
//! remains the model posts itself `WM_READ_ON`, one recv each, until the end of stream. An
//! error code (`WSAGETSELECTERROR`, the high word) is not acted on directly. The session
//! sets both flags and lets its next recv or send report the error, which is then counted as for
//! every model. Socket handles are reused at once, which Wine shows too, so a message for a
//! closed socket can name a new client; the worst such a stale message can do is cost the new
//! client calls that return `WSAEWOULDBLOCK`. Messages for sockets no longer open are ignored. A new socket
//! inherits the listener's selection until it is selected for its own events (an early
//! `FD_ACCEPT` for it is ignored). Under Wine 8, `FD_CLOSE` came only once the data before the
//! FIN had been read, so the `WM_READ_ON` path is there for Windows, where that order is not
//! promised.
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
