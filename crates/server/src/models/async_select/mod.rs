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
//! **Linux counterpart.** Signal-driven I/O, the kernel's own "post a message per event". Each
//! socket gets `fcntl(F_SETOWN_EX, F_OWNER_TID = the serving thread)`, `F_SETSIG` = a real-time
//! signal (the first from `SIGRTMIN + 2` that nothing in the process handles) and
//! `O_ASYNC | O_NONBLOCK`: every event then *queues* one signal to that thread, whose
//! `si_fd` names the socket and `si_band` says what happened (`POLLIN` for data and for the
//! FIN, `POLLOUT`, `POLLERR`, `POLLHUP`) — `wParam` and `lParam` again. The thread blocks the
//! signal and `SIGIO` (`pthread_sigmask`) and reads them as messages, 64 per `read`, from a
//! `signalfd` (`sys/linux/signalfd.rs`); the message loop waits in `poll(2)` on the signalfd
//! and the shutdown waker's eventfd (one counted wait). A batch of messages sets the named
//! sessions' `readable` / `writable` flags (`--trace` prints them as `FD_ACCEPT`, `FD_READ`,
//! `FD_WRITE`, `FD_CLOSE`), then each named session is pumped once. Unlike Winsock's
//! re-enabling messages, a signal is not repeated for data already announced, so the model acts
//! until the call would block: accept until `EAGAIN`, recv until `EAGAIN` (a short read proves
//! nothing: the FIN comes as `POLLIN` too), send until `EAGAIN`; a session that used its 16
//! reads with data still waiting goes on a ready list served next turn, and a session paused by
//! backpressure keeps `readable` and reads again when its output drains. A new socket is pumped
//! once at once, since data that came before `O_ASYNC` was set announced nothing. The mask is
//! the caller's thread's: when `run` returns, every socket has had `O_ASYNC` cleared and been
//! closed, the signals still queued are read and dropped, and the thread's old mask is restored.
//!
//! **Server limits** (both OSes): at `--max-conns` the loop stops accepting and keeps the
//! listener's "connections wait" flag (the backlog will announce nothing new), accepting again
//! on the turn after a connection closes; the idle and write timeouts are a sweep over the
//! sessions (`crate::limits`), and the `poll` on the signalfd is bounded by the next sweep.
//! Windows: an `FD_ACCEPT` that comes at the cap is not answered with `accept`, so Winsock
//! posts no further one (only an accept call re-enables it); the loop accepts on its first
//! turn below the cap (a close is served in the same thread). The sweep runs on the turn one
//! is due, and the window's timer (`WM_TIMER`) is armed for the next one.
//!
//! **Overflow.** The real-time queue is bounded (`RLIMIT_SIGPENDING`, per user). A signal that
//! cannot be queued becomes a plain `SIGIO` (pending at most once, no `si_fd`): notifications
//! were lost, so the loop rescans — marks every session readable and writable, pumps each, and
//! accepts until `EAGAIN` — counts it in `Stats::notification_overflows`, logs the first and
//! every 1,000th, and traces `overflow: rescanning N sockets`. Winsock's full message queue
//! has no such fallback: there the notifications are simply gone.
//!
//! **UDP** (`--udp`). On Linux the UDP socket is set up like a client (`F_SETOWN_EX`,
//! `F_SETSIG`, `O_ASYNC`), and only its `POLL_IN` messages — `FD_READ` — are acted on: answers
//! never wait for room (a full send buffer drops one), so there is no `FD_WRITE` to wait for.
//! A message marks it ready, and the loop answers up to 64 datagrams per turn (`udp.rs`),
//! staying ready while the budget runs out before `EAGAIN` (signals are edges); an overflow
//! rescan marks it ready too. `--trace` shows `FD_READ fd=N (udp)`.
//! On Windows `WSAAsyncSelect(udp, hwnd, WM_SOCKET, FD_READ)`: an `FD_READ` message answers up
//! to 64 datagrams (`--trace`: `FD_READ udp s=N`). When the budget runs out first, the model
//! posts itself `WM_UDP_ON` (like `WM_READ_ON`), so the rest is answered behind the messages
//! already queued, and ignores the socket's `FD_READ` messages until it comes: every recvfrom
//! re-enables `FD_READ`, and Winsock posts one more for each while datagrams remain (as its
//! documentation warns for several `recv` per message), so serving each of them with 64 more
//! recvfrom calls multiplies the messages in the queue — seen under Wine: a flood of datagrams
//! kept the loop inside one batch of messages for 30 s, and shutdown waited for it. A turn that
//! ends on `WSAEWOULDBLOCK` has re-enabled `FD_READ` with that very call, so the next datagram
//! posts a message. The first turn runs unasked (what came before the registration). At
//! shutdown the socket is detached from the window (`WSAAsyncSelect(udp, hwnd, 0, 0)`) and
//! its messages still queued are ignored. With `--no-tcp` there is no listener to register:
//! the window serves the waker and the UDP socket only. A datagram larger than the buffer
//! fails `WSARecvFrom` with `WSAEMSGSIZE`, counted and dropped (Wine 8 does the same).
//!
//! **Limits.** One thread and one message queue for every socket; a message per event, so a
//! busy server spends its time in the message loop. Windows caps a thread's message queue
//! (10,000 posted messages by default): a queue that fills loses notifications. Linux caps
//! queued signals per user (`RLIMIT_SIGPENDING`, shared with every process of that user); past
//! it, each overflow costs a scan of every socket, O(connections), like `select`.
//!
//! **Why production servers rarely use it.** Signals are process-wide plumbing: one
//! disposition per signal number for the whole process, so a library cannot own "its" signal
//! without coordinating with every other user of it (here: the first real-time signal nobody
//! handles, and the serving thread takes over `SIGIO`); the queue limit is per *user*, shared
//! with every other process of that user, so an unrelated process can push the server into the
//! overflow path; an overflow loses *which* sockets were ready, so the fallback is a full scan;
//! and every event costs a queued signal plus a `read` of the signalfd, and the loop must still
//! read until `EAGAIN` to learn that a socket is drained. Measured here (100 connections, 64 B
//! echo, 3 runs, medians): 3.43 system calls per message against 2.05 for `select` and 2.38 for
//! epoll, at about the same server CPU per message (10.7 µs against 10.4 and 9.8). epoll gives
//! the same "the kernel tells you" without any of it.
//!
//! **Windows.** The real thing, on one thread. A message-only window
//! (`sys/windows/window.rs`: a class registered under a name of its own, `HWND_MESSAGE` parent)
//! receives four messages: `WM_SOCKET` (`WM_USER + 1`) for the listener (`FD_ACCEPT`), every
//! client (`FD_READ | FD_WRITE | FD_CLOSE`) and the UDP socket (`FD_READ`, see **UDP** above),
//! `WM_WAKE` for the shutdown waker's UDP socket, selected for `FD_READ` so that a wake-up is
//! one more message, and `WM_READ_ON` and `WM_UDP_ON`, which the model posts itself. The loop blocks in `GetMessageW` (one counted wait), then dispatches
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
//!
//! On Linux the signals are edges: a handler that stops before `EAGAIN` waits forever for data
//! already announced, and `POLLOUT` comes only after a send hit a full buffer. A queued signal
//! can outlive its socket and name a descriptor a new client reuses: unknown descriptors are
//! ignored and a stale message costs the new client a call that says `EAGAIN`. The signals
//! must be blocked in the thread they are directed to (`F_OWNER_TID`; a process-wide
//! `F_SETOWN` would deliver them to any thread, whose default action is to kill the process),
//! and left blocked until the last queued one is read. `SIGIO` is taken over by the serving
//! thread, so the process must not use it for anything else.

/// Windows: the posted messages a thread's message queue holds (`USERPostMessageLimit`, a
/// registry value, 10,000 by default). Past it `PostMessageW` fails and Winsock's
/// notifications are lost.
pub const QUEUE_LIMIT: usize = 10_000;
/// Windows: the messages of a window's queue kept for what is not a client (the listener's
/// `FD_ACCEPT`, the UDP socket's `FD_READ` and `WM_UDP_ON`, the wakers, `WM_HANDOFF`): about
/// 140 at most (see **Windows: bounded message queues**); the rest is margin.
pub const QUEUE_RESERVE: usize = 2_000;
/// Windows: the most messages one client has in its window's queue at once (see **Windows:
/// bounded message queues**: 2 `FD_READ`, 3 `FD_WRITE`, 1 `FD_CLOSE`, 1 `WM_READ_ON`, 1
/// `WM_RELEASE`).
pub const MESSAGES_PER_SOCKET: usize = 8;
/// Windows: the most clients one window serves, so that its queue cannot overflow:
/// (10,000 - 2,000) / 8 = 1,000. `--sockets-per-window` may set fewer.
pub const SOCKETS_PER_WINDOW: usize = (QUEUE_LIMIT - QUEUE_RESERVE) / MESSAGES_PER_SOCKET;

os_files!();
