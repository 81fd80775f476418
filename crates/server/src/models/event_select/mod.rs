//! # `event-select`: the kernel tells the thread which sockets changed
//!
//! **Winsock original.** `WSAEventSelect(socket, event, FD_READ | FD_WRITE | FD_CLOSE ...)`
//! ties a socket's network events to an event object; one thread blocks in
//! `WSAWaitForMultipleEvents` on up to 64 (`WSA_MAXIMUM_WAIT_EVENTS`) of them, and
//! `WSAEnumNetworkEvents` says which events fired (and resets them). The book's point: the
//! notification models stop polling — the thread learns which socket changed instead of
//! scanning all of them.
//!
//! **Linux counterpart.** epoll: one `epoll_wait` returns just the sockets that changed, with
//! no 64-handle cap, in O(ready) rather than O(registered). Each socket is registered once,
//! edge-triggered, for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`; an edge sets the session's
//! `readable`/`writable` flag, and the session reads and writes until `EWOULDBLOCK` clears it.
//! Like `FD_READ` and `FD_WRITE`, an edge is not repeated for data already announced, so the
//! model must act on it fully. A read that returns less than asked means the socket is drained
//! for now (new data brings a new edge), so the model skips the read that would only say
//! `EWOULDBLOCK` — except after `EPOLLRDHUP`, when the end of stream waits behind the data
//! and no further edge will announce it. A session that used its read budget for this turn (16 reads) with
//! data still waiting goes on a ready list served next turn, so one fast client cannot starve
//! the rest. Backpressure needs no `epoll_ctl`: a paused session keeps its `readable` flag and
//! resumes reading as soon as its output drains.
//!
//! **UDP** (`--udp`). On Linux the UDP socket is registered with epoll too, edge-triggered
//! for `EPOLLIN`; an edge marks it ready and the loop answers up to 64 datagrams per turn
//! (`udp.rs`), staying ready (the next wait has a zero timeout) while the budget runs out
//! before `EAGAIN`. On Windows `WSAEventSelect(udp, event, FD_READ)` (no `FD_WRITE`: answers
//! never wait for room) ties it to an event of its own, and the *accepting* thread serves it:
//! its wait holds the waker's event, the UDP socket's and the listener's (3 handles), and it
//! probes the handles above the one the wait names, so neither starves the other.
//! `WSAEnumNetworkEvents` clears the socket's record and resets the event (`--trace`:
//! `FD_READ udp s=N`), then up to 64 datagrams are answered; each recvfrom re-enables
//! `FD_READ`, and a turn that ran out of budget is served again without waiting. A datagram
//! socket has no connection to hand to a group, and one thread serving it keeps datagrams in
//! order. While the acceptor waits in `select` (the Wine fallback below) the UDP socket is in
//! that read set too. With `--no-tcp` the accepting thread waits on the waker and the UDP event
//! only, and no group ever starts. At shutdown the selection is ended (`WSAEventSelect(udp,
//! NULL, 0)`) before its event closes: the socket outlives the model. A datagram larger than
//! the buffer fails `WSARecvFrom` with `WSAEMSGSIZE`, counted and dropped (Wine 8 does the
//! same).
//!
//! **Limits.** Descriptors (`RLIMIT_NOFILE`) and memory; one thread, so one core.
//!
//! **Server limits** (both OSes): at `--max-conns` the listener leaves the epoll set until a
//! connection closes; the idle and write timeouts are a sweep over the sessions
//! (`crate::limits`), and `epoll_wait` is bounded by the next sweep. Windows: at the cap the
//! accepting thread leaves the listener's event out of its wait (`FD_ACCEPT` is not taken)
//! and waits instead on a room signal that a group sets when a member leaves; every group
//! thread sweeps its own members, its `WSAWaitForMultipleEvents` bounded by the next sweep
//! (`models/groups/`).
//!
//! **Windows.** The real thing. One wait holds at most 64 handles, so sockets are served in
//! groups, a thread each (`models/groups/`): every group waits on the shutdown
//! waker's event, its hand-off event and up to **62 sockets' events** (62 + 2 = 64). The
//! accepting thread selects the listener for `FD_ACCEPT` on an event of its own and waits on
//! that and the waker (falling back to `select` after a wake-up that accepted nothing: Wine
//! re-enables `FD_ACCEPT` only with a successful accept); each accepted socket — which inherits the listener's selection — is
//! selected again for `FD_READ | FD_WRITE | FD_CLOSE` on a new event of its own, then handed to
//! the first group with room (a new group thread when all are full; a group left empty for a
//! second ends). `WSAEnumNetworkEvents` on a signalled socket reads and clears its events and
//! resets its event; they set the session's `readable` / `writable` flags (an error code closes
//! the connection) and `Session::pump` does one recv and writes until `WSAEWOULDBLOCK`, as
//! for `select`. Winsock's re-enabling rules make this enough: `FD_READ` is posted again by a
//! recv that leaves data behind, so a busy socket comes back on the next wait after the
//! others; `FD_WRITE` comes only after a send failed with `WSAEWOULDBLOCK`, and the pump sends
//! until it does (or until nothing is left); a socket whose backpressure stopped reading keeps
//! its `readable` flag and reads again as soon as its output drains. `FD_CLOSE` is never
//! re-posted and may arrive with data still unread: after it the session reads on without
//! waiting for a signal until the end of stream.
//! `WSAWaitForMultipleEvents` names only the *lowest* signalled handle, so after every wake-up
//! the group probes the handles above it with a zero timeout until none is signalled: every
//! signalled socket is served each turn, whatever its slot.
//!
//! **Pitfalls.** Edge-triggered mode loses data if a handler stops before `EWOULDBLOCK` without
//! remembering that the socket is still readable (hence the flags and the ready list); a
//! descriptor must be removed from epoll before being closed if a duplicate of it exists. On
//! Windows: serving only the index the wait returns starves the higher slots; `WSAEventSelect`
//! makes the socket non-blocking for good (and an accepted socket inherits its listener's
//! selection); an event must outlive the socket selected on it (close the socket first); and
//! `FD_WRITE` waits for a send that would block, so a send that merely came up short must be
//! retried, not waited on.
//!
//! **Urgent data** (`MSG_OOB`). Every accepted socket has `SO_OOBINLINE` (Windows: set on each
//! accepted socket; Linux: copied from the listener), so an urgent byte is plain data, echoed
//! in place, and on Windows announced by `FD_READ` like any other (without it only `FD_OOB`,
//! which this model does not select, would say it is there). On Linux a recv stops short at
//! the urgent mark even inline, and this model's edge-triggered loop takes a short read for
//! "drained": `abc`, urgent `X`, `def` came back as `abc`, the rest unread until the peer sent
//! more. So sockets also ask for `EPOLLPRI`, and after one the session reads on until
//! `EAGAIN`.

// The OS file for this OS gives the model's `availability`, `run` and `MECHANISM`.
#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(not(any(target_os = "linux", windows)), path = "../unsupported.rs")]
mod os;
pub(crate) use os::{availability, run, MECHANISM};
