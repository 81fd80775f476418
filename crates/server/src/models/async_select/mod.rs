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
//! posts no further one (only an accept call re-enables it); window 0 accepts on its first
//! turn below the cap — a close in window 0 is served in its own thread, a close in another
//! window wakes it through a `RoomSignal` (`accept.rs`) whose socket is selected for
//! `FD_READ` as `WM_ROOM`. Each window sweeps its own clients on the turn a sweep is due, and
//! arms its timer (`WM_TIMER`) for the next one.
//!
//! **Overflow.** The real-time queue is bounded (`RLIMIT_SIGPENDING`, per user). A signal that
//! cannot be queued becomes a plain `SIGIO` (pending at most once, no `si_fd`): notifications
//! were lost, so the loop rescans — marks every session readable and writable, pumps each, and
//! accepts until `EAGAIN` — counts it in `Stats::notification_overflows`, logs the first and
//! every 1,000th, and traces `overflow: rescanning N sockets`. Winsock's full message queue
//! has no such fallback: there the notifications are simply gone, which is why Windows bounds
//! the sockets per queue instead (**Windows: bounded message queues** below).
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
//! **Limits.** A message per event, so a busy server spends its time in the message loop.
//! Windows caps a thread's message queue (10,000 posted messages by default): a queue that
//! fills loses notifications, so a window serves at most `--sockets-per-window` sockets (1,000
//! by default, the arithmetic below) and more windows, a thread each, serve the rest. Linux
//! serves every socket on one thread and caps queued signals per user (`RLIMIT_SIGPENDING`,
//! shared with every process of that user, whatever the thread: `--sockets-per-window` means
//! nothing there and is ignored with a warning); past it, each overflow costs a scan of every
//! socket, O(connections), like `select`.
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
//! **Windows.** The real thing: message-only windows (`sys/windows/window.rs`: a class registered
//! under a name of its own, `HWND_MESSAGE` parent), one per thread, each with its own message queue
//! and loop. Window 0 runs on the thread that called `run` and has the listener and the UDP socket;
//! windows 1, 2, ... start as its sockets outgrow it (**Windows: bounded message queues** below). A
//! window receives `WM_SOCKET` (`WM_USER + 1`) for the listener (`FD_ACCEPT`, window 0), its
//! clients (`FD_READ | FD_WRITE | FD_CLOSE`) and the UDP socket (`FD_READ`, window 0, see **UDP**
//! above), `WM_WAKE` for its shutdown waker's UDP socket, selected for `FD_READ` so that a wake-up
//! is one more message, `WM_ROOM` (window 0: a connection closed elsewhere while it waited at the
//! cap), and the messages the model posts itself: `WM_READ_ON`, `WM_UDP_ON`, `WM_RELEASE` (a slot
//! is free, below) and `WM_HANDOFF` (window 0 to another: sockets wait in its inbox). Window 0
//! answers an `FD_ACCEPT` with up to 64 accepts, with the listener deregistered meanwhile
//! (`WSAAsyncSelect(listener, hwnd, 0, 0)`, then registered again): each accept call re-enables
//! `FD_ACCEPT` and Winsock posts another at once while connections wait, so a plain batch of N
//! accepts could leave N messages queued; registering again posts one if connections still wait.
//! (One accept per message, as Winsock's documentation has it, also bounds them, but accepted so
//! slowly under a flood that a `--max-conns` cap was never reached.) Each loop blocks in
//! `GetMessageW` (one counted wait), then dispatches what is queued, at most 1,024 messages, to the
//! window procedure, then checks shutdown and the clock; a window timer (`SetTimer`) wakes it for
//! the drain deadline and for the end of an accept pause. The procedure reads the event from
//! `WSAGETSELECTEVENT(lParam)` (low word), sets the session's `readable` / `writable` flags and
//! calls `Session::pump` with one read: one recv per `FD_READ`, sends until `WSAEWOULDBLOCK` or
//! nothing is left. The recv re-enables `FD_READ`: if data remains, Winsock posts another, queued
//! behind every other socket's messages, so a busy client cannot starve the rest and the model
//! clears `readable` instead of reading again. Backpressure stops the recv, and then an `FD_READ`
//! is used up with no recv to re-enable it: the session keeps `readable`, and the pump that runs
//! when `FD_WRITE` drains its output reads again. After `FD_CLOSE` nothing promises another
//! `FD_READ`, so while data remains the model posts itself `WM_READ_ON`, one recv each, until the
//! end of stream. An error code (`WSAGETSELECTERROR`, the high word) is not acted on directly. The
//! session sets both flags and lets its next recv or send report the error, which is then counted
//! as for every model. Socket handles are reused at once, which Wine shows too, so a message for a
//! closed socket can name a new client; the worst such a stale message can do is cost the new
//! client calls that return `WSAEWOULDBLOCK`. Messages for sockets no longer open are ignored. A
//! new socket inherits the listener's selection until it is selected for its own events (an early
//! `FD_ACCEPT` for it is ignored). Under Wine 8, `FD_CLOSE` came only once the data before the FIN
//! had been read, so the `WM_READ_ON` path is there for Windows, where that order is not promised.
//! After `FD_CLOSE`, `FD_READ` messages are ignored and `WM_READ_ON` alone reads on: a recv for
//! each of them too would re-enable `FD_READ` once more per message, and the `FD_READ` messages in
//! the queue could grow with the data left.
//!
//! **Windows: bounded message queues.** A thread's message queue holds `USERPostMessageLimit`
//! posted messages (a registry value, 10,000 by default). Past it `PostMessageW` fails with
//! `ERROR_NOT_ENOUGH_QUOTA`, and so do Winsock's own posts — silently: the notification is
//! gone, and a socket whose `FD_READ` is lost waits forever, since only the `recv` that the
//! message would have caused re-enables it. A loss the program cannot see cannot be rescanned
//! for, so the model bounds what one queue can hold. Winsock posts a message when an event
//! happens, then none for that event until the *re-enabling* call (`recv` for `FD_READ`, a
//! `send` that would block for `FD_WRITE`, `accept` for `FD_ACCEPT`; nothing for `FD_CLOSE`),
//! and that call posts again at once if the condition still holds — whether or not the last
//! message is still queued. Per client socket, the most messages in its window's queue at once:
//!
//! | message | at most | why |
//! |---|---|---|
//! | `FD_READ` | 2 | one per re-enabling `recv`, and the model makes one `recv` per `FD_READ` (or per `FD_CLOSE`, or when backpressure lifts after an `FD_READ` used without a `recv`); at registration Winsock posts one if data waits, and the model's own first `recv` (for Wine, which may not) re-enables: two. After `FD_CLOSE` they are ignored (above) |
//! | `FD_WRITE` | 3 | one at registration, then one per `send` that would block; the model sends only after `FD_WRITE` came, except one retry per sweep of the timeouts (`retry_blocked_sends`), which can re-enable it while one is queued; sweeps are 1 s apart with the default timeouts (10 ms at the least, with timeouts under 40 ms) and a queue is read 1,024 messages a turn, so a third is the practical bound, not a proven one |
//! | `FD_CLOSE` | 1 | posted once, never re-enabled |
//! | `WM_READ_ON` | 1 | ours, one queued at most (`read_on_queued`) |
//! | `WM_RELEASE` | 1 | ours, posted once after the socket closed |
//! | **per socket** | **8** | `MESSAGES_PER_SOCKET` |
//!
//! Besides its clients, window 0's queue holds the listener's `FD_ACCEPT` (2 at most: none posted
//! during a batch, the listener being deregistered; one at its registration again; one when a
//! connection arrives while it is registered and `FD_ACCEPT` is enabled), the UDP socket's
//! `FD_READ` (128: a turn of 64 `recvfrom` calls re-enables 64 times, and they are ignored while
//! our `WM_UDP_ON` is queued, so two turns' worth) and one `WM_UDP_ON`, `WM_WAKE` and `WM_ROOM`
//! (one per wake-up datagram not yet read: a few), and every window one `WM_HANDOFF` at most
//! (posted when its inbox was empty): about 140, so `QUEUE_RESERVE` keeps 2,000 and the rest is
//! margin. `WM_TIMER` takes no room: it is not posted, the queue makes it when a timer is due.
//! Hence
//!
//! > sockets per window = (10,000 − 2,000) / 8 = **1,000** (`SOCKETS_PER_WINDOW`),
//!
//! the default and the most of `--sockets-per-window` (1 to 1,000; anything else is refused in
//! one line). A window's slot is taken when a socket is given to it and freed when that
//! window dispatches the `WM_RELEASE` it posted after closing the socket: by then every
//! message Winsock posted for the socket has been dispatched before it, since nothing is posted
//! for a socket after `closesocket` (one being posted at that very instant may come behind it:
//! one message, within the margin). So stale messages of closed sockets count too, and a
//! window's queue never holds more than 8 per slot plus the reserve, whatever the churn.
//!
//! **More windows.** When window 0 has no free slot, it gives a new socket to the first other
//! window that has one, and when none has, starts one more (`async-select-N`, a thread with its
//! own window and `GetMessageW` loop), as the book scales `WSAAsyncSelect` past one window;
//! a log line says so (at most one a second). Windows stay until the server stops. The hand-off:
//! window 0 accepts (the socket inherits the listener's registration: `FD_ACCEPT` to window
//! 0), puts the socket in the other window's inbox — counted in the connection cap while there
//! — and posts it `WM_HANDOFF`; that window's thread calls `WSAAsyncSelect(s, its window,
//! WM_SOCKET, FD_READ | FD_WRITE | FD_CLOSE)`, which replaces the inherited registration: from
//! then on Winsock posts for `s` to that window only, and the socket never moves again. The
//! race: a message already posted to window 0 for `s` can only be an `FD_ACCEPT` (the one event
//! the inherited registration had), which window 0 ignores for any socket but the listener —
//! also when by then the handle names one of window 0's own clients. An event that came before
//! the new registration is posted at registration on Windows (`FD_READ`, `FD_CLOSE`, which
//! hold); Wine may not post `FD_READ` for data already there, so the new window reads once at
//! once, as window 0 does for its own. A stale message for a closed socket names a handle that
//! may by then be another window's socket (not in this window's map: ignored) or this one's
//! (a call that returns `WSAEWOULDBLOCK`). Every window has its own shutdown waker and drain;
//! `run` returns when every window has drained. The counters: `message_windows` (windows
//! started), `window_sockets` (slots in use) and `window_sockets_peak` (the fullest window),
//! in the counters line of Ctrl-Break and in the exit line.
//!
//! **Detection, as a backstop.** A `PostMessageW` of the model's own (`WM_READ_ON`,
//! `WM_UDP_ON`, `WM_RELEASE`, `WM_HANDOFF`) that fails is counted in
//! `notification_overflows`, logged (at most once a second), and the window rescans on its
//! next turn: every client is served as readable and writable (a `recv` re-enables `FD_READ`,
//! a `send` that would block `FD_WRITE`), window 0 accepts and answers the UDP socket, and the
//! failed message's work is done without it (`WM_RELEASE`: the slot is freed at once;
//! `WM_HANDOFF`: window 0 wakes that window through its shutdown waker, one more message, and
//! it takes its inbox on that turn). `--trace` shows `overflow: rescanning N sockets (window
//! W)`. The tests fail every third such post on purpose (`ServerConfig::test_fail_posts`,
//! hidden), since Wine's queues never fill.
//!
//! **Wine.** Wine 8 has no such limit: 20,000 messages posted to one window before any was
//! read were all queued and all delivered (`tests/windows_async_select.rs`, `window_queue`).
//! So under Wine no notification is lost to a full queue even with one window; the bound is
//! for Windows, and the tests under Wine check the windows, not an overflow.
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

// The OS file for this OS gives the model's `availability`, `run` and `MECHANISM`.
#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(not(any(target_os = "linux", windows)), path = "../unsupported.rs")]
mod os;
pub(crate) use os::{availability, run, MECHANISM};
