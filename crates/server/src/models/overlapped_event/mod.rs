//! # `overlapped-event`: post buffers, wait for completions, look each one up
//!
//! **Winsock original.** Overlapped I/O with event notification: `WSARecv` / `WSASend` take a
//! buffer and a `WSAOVERLAPPED` whose `hEvent` the system signals when the operation is done.
//! The thread keeps an array of events (one per posted operation), blocks in
//! `WSAWaitForMultipleEvents`, and for the signalled one calls `WSAGetOverlappedResult` to learn
//! how many bytes moved, then posts the next operation. Connections come in the same way: the
//! book's server posts `AcceptEx` with an event of its own and waits for it with the rest. The
//! book's point: data is copied straight into the posted buffer — no "it is readable, now read
//! it" round trip.
//!
//! **Linux counterpart.** io_uring, one thread, one ring. Every posted accept, recv and send is
//! an operation record (its buffer and state) in a table indexed by the completion's user
//! data; the loop waits in `io_uring_enter` for completions, and dispatches each by looking its
//! record up and matching on its kind — the event array plus `WSAGetOverlappedResult`. Each
//! connection keeps one single-shot recv posted (re-posted after each completion: overlapped
//! I/O, not completion-port's multishot stream) and at most one send; four accepts stay
//! posted, as several `AcceptEx` would. The engine shared with the other completion models is
//! in `models/uring`, which states the one rule of completion I/O: a buffer and its record
//! live until the kernel's final completion.
//!
//! **The zero-byte receive, io_uring style.** The book's servers that hold many idle connections
//! post a `WSARecv` with a *zero-length* buffer: it completes when data arrives and pins no memory
//! meanwhile; only then does the server read for real. Here the recv carries no buffer either: it
//! names the ring's provided-buffer group (`IOSQE_BUFFER_SELECT`), and the kernel picks a buffer
//! only when data arrives (one of `--recv-buffers`, 16 × 64 KiB consumed incrementally on the one
//! ring by default, whose pages become resident only as traffic fills them), at most the
//! connection's read budget of it; the bytes are consumed and the buffer goes back to the ring at
//! once, or, for a plaintext echo, once they have been sent from it (no copy: the reply goes out of
//! the buffer the kernel filled). One step, where Winsock needs two. A receive that finds the
//! socket drained is posted with `IORING_RECVSEND_POLL_FIRST`: in a ping-pong the next request
//! comes only after the reply, so a first try would only fail with `EAGAIN`. An idle connection
//! costs its socket, its state and its posted record: measured 395 B of server RSS per idle
//! connection at 19,000 (`bench --scenario idle`), against 15.5 KiB when each connection posted its
//! own 16 KiB buffer. `Stats::recv_buffer_bytes_posted` is 0 here.
//!
//! **UDP** (`--udp`). Linux: the engine keeps four `IORING_OP_RECVMSG` posted on the UDP
//! socket, each with a 64 KiB buffer and room for the sender's address in its record; a whole
//! datagram goes back with `IORING_OP_SENDMSG` from the same record (`MSG_TRUNC` in the
//! completion's `msg_flags`: counted, received over). See `models/uring/engine/udp.rs`.
//! Windows: a thread of its own (beside the accepting thread and the groups, or alone with
//! `--no-tcp`) posts four overlapped `WSARecvFrom`, every datagram record carrying one
//! manual-reset event in its `hEvent`, and waits on that event and the shutdown waker. When
//! it fires it resets it and reaps each record whose status is stored
//! (`HasOverlappedIoCompleted`, then the status in the record: a cut datagram's is
//! `STATUS_BUFFER_OVERFLOW`), sends whole datagrams back with `WSASendTo` from the same
//! record, and checks the records again after every pass that posted (posting resets the
//! event). At most 64 datagrams a turn re-post their receive; past that the loop takes a turn
//! without blocking, so a flood cannot keep it from seeing shutdown. At shutdown `CancelIoEx`
//! aborts the pending receives and the thread reaps until none is left (records in
//! `models/winio/udp.rs`).
//!
//! **Limits.** Linux: one thread. The buffers are shared by every connection, so a burst from
//! many connections at once can drain the ring: the receives that find it empty complete with
//! `ENOBUFS` (counted in `recv_buffer_exhausted`) and are re-posted as soon as buffers come
//! back — nothing is lost, the bytes wait in the socket; a larger `--recv-buffers` makes it
//! rarer. Needs io_uring (Linux 5.19+ here), which containers often block; the model is then
//! unavailable and says why. Windows: a thread per 31 connections (two events each in a
//! 64-handle wait), plus the accepting thread; no posted receive buffer, idle or not
//! (zero-byte receives, see `models/winio/conn.rs`: `recv_buffer_bytes_posted` stays 0).
//!
//! **Server limits** (`--max-conns`, `--idle-timeout`, `--write-timeout`,
//! `--handshake-timeout`; both OSes). Linux:
//! from the shared engine (`models/uring/engine/accept.rs`, see its module doc): accepts are posted
//! only within the cap, and the connection timeouts are a sweep after each wait, which is
//! bounded by the next sweep. Windows: from the groups (`models/groups/`, as
//! `event-select`, accepting with `AcceptEx`): the accepting thread never has more `AcceptEx`
//! posted than places left below `--max-conns` (none at the cap: clients wait in the backlog),
//! and a group that drops a member wakes it to post again; each group sweeps its members, and
//! closes an expired one as the drain does (`CancelIoEx` + `closesocket`, then its aborted
//! records are reaped). Out of sockets (`WSAEMFILE`, `WSAENOBUFS`, for the socket an `AcceptEx`
//! needs or in its completion), posting accepts pauses for the back-off (`accept_pauses`).
//!
//! **Windows.** The real thing, in groups: one `WSAWaitForMultipleEvents` holds at most 64
//! handles, so connections are served by group threads (`models/groups/`, shared with
//! `event-select`), each waiting on the shutdown waker's event, its hand-off event and **31
//! connections' two events each** (2 + 31 × 2 = 64). As the book writes it, every operation has
//! its own manual-reset event: a connection's receive record carries its receive event in
//! `OVERLAPPED.hEvent`, its send record its send event. When one is signalled the group resets
//! it, asks `WSAGetOverlappedResult(fWait = FALSE)` about that one record, feeds the completion
//! to the connection and posts what it wants next — the zero-byte receive, then non-blocking
//! `recv`s of up to 16 KiB within the read budget into the group thread's buffer, one receive
//! and at most one send in flight, short sends re-posted first, half-close and backpressure all
//! come from the overlapped connection logic the three Winsock completion models share
//! (`models/winio`). Posting resets the `hEvent` it carries (Wine's server does it as it queues
//! the request, `create_async` in `server/async.c`; Windows documents it for `ReadFile`;
//! `winio`'s tests check it under Wine): with one event shared by both records, posting the
//! receive could wipe the signal of a send that had just completed, and the records had to be
//! checked again after every post. With an event per operation that cannot happen: a post
//! resets only its own event, and only while its kind has nothing in flight (one receive, one
//! send), so there is no signal on it to lose. As a guard against a platform that clears
//! something else, a signalled turn also reads the other record's status word (no system
//! call) and reaps it if it has completed.
//!
//! **Accepting** (`groups::serve_accept_ex`): the accepting thread keeps 16 `AcceptEx`
//! posted (fewer below the cap), each with an event of its own, and waits on them with the
//! waker and the groups' room signal. A completed accept's socket is finished
//! (`SO_UPDATE_ACCEPT_CONTEXT`), handed to a group, and the record posted again. The socket
//! never inherited a `WSAEventSelect` (as one from `accept` on a selected listener would), so
//! nothing has to be cleared before overlapped calls. Each posted accept counts in
//! `Stats::ops_in_flight`, as `completion-port`'s: at rest the model holds its 16 posted accepts
//! plus one zero-byte receive per idle connection. At shutdown `CancelIoEx` aborts the posted
//! accepts, the listener is closed, and every accept record (each holds a socket) is reaped
//! before the accepting thread returns.
//!
//! A record lives, at a fixed address, until its completion is reaped — also after
//! `closesocket`, which completes pending operations with an error: a closed connection stays
//! in its group until both of its records are back (and only then are its two events closed),
//! and at shutdown each group closes its connections and reaps for up to 5 s, then leaks what
//! never completed rather than free it.
//!
//! **Pitfalls.** Freeing or reusing a buffer before its completion (after a close, a cancel, a
//! reset) lets the kernel write into freed memory; a completion can carry fewer bytes than
//! asked (a short send must be re-posted for the rest, first); cancelling is itself
//! asynchronous. Closing an event that a posted record names (in its `hEvent`) before the
//! completion lets the kernel signal a handle that may have been reused; and sharing one event
//! between operations that are posted separately loses signals, since each post resets it.
//! `WSAWaitForMultipleEvents` names only the lowest signalled event: the rest must be looked at
//! too, or the low slots starve the high ones.

// The OS file for this OS gives the model's `availability`, `run` and `MECHANISM`.
#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(not(any(target_os = "linux", windows)), path = "../unsupported.rs")]
mod os;
#[cfg(target_os = "linux")]
pub(crate) use os::CONFIG;
pub(crate) use os::{availability, run, MECHANISM};
