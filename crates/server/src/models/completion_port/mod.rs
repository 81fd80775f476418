//! # `completion-port`: a few workers, each its own ring, serving every socket
//!
//! **Winsock original.** An I/O completion port (`CreateIoCompletionPort`) collects the
//! completions of every socket associated with it; a small pool of worker threads — one per
//! CPU — loops on `GetQueuedCompletionStatus`, and the completion key and OVERLAPPED of each
//! packet say which connection and operation it was. `AcceptEx` posts accepts ahead of time,
//! and the "zero-byte read" trick (post a `WSARecv` of 0 bytes, read for real only when it
//! completes) keeps idle connections from pinning receive buffers. The book's claim: one worker
//! per CPU serves tens of thousands of sockets (40,000+ on a 2003 PC; 12,000 at ~40% CPU).
//!
//! **Linux counterpart.** io_uring, one ring per worker, one worker per CPU (`--workers N`).
//! Each worker has its own `SO_REUSEPORT` listener on the same port, so the kernel spreads new
//! connections over the workers and no accepted socket crosses threads. `SO_REUSEPORT` would let
//! a second server of the same user (root, often) join that group unnoticed and take part of
//! the clients, so `Server::bind` first binds a plain socket to the address and refuses a port
//! in use in one line, as every other model does (the race left: two servers starting within
//! the same microseconds). The alternative,
//! `--accept handoff` — worker 0 accepts for all and passes each socket to the next worker's
//! ring with `IORING_OP_MSG_RING` — was measured against it and is kept as an option
//! (ARCHITECTURE.md gives the figures and why reuse-port is the default). What a
//! modern kernel offers replaces the Windows tricks:
//! - a **multishot accept** per worker instead of a batch of `AcceptEx`;
//! - a **multishot recv** per connection, filling buffers the kernel picks from the worker's
//!   **provided-buffer ring** only when data arrives — an idle connection holds no receive
//!   buffer, the zero-byte-read trick done by the kernel;
//! - an **incrementally consumed** buffer ring (`IOU_PBUF_RING_INC`, 6.12+;
//!   `--recv-incremental`): a receive takes only the bytes it needs of the buffer at the ring's
//!   head and the next receive, for any connection, goes on after it — a 64 B message takes
//!   64 B, not a buffer, so a few large buffers (16 × 64 KiB by default) serve many
//!   connections and a 64 KiB message arrives in one or two completions;
//! - **batching**: submissions queue up during a turn and go to the kernel in the one
//!   `io_uring_enter` that also waits; with `DEFER_TASKRUN` the completion work runs there too.
//!   The completions of one wait are all handled before any connection moves on, so the bytes
//!   of several receives leave in one send. `--batch-wait DUR` (off by default) makes the wait
//!   itself ask for several completions, bounded by io_uring's min-wait (6.12+): see
//!   `models/uring/engine` for when it applies and what it was measured to give.
//!
//! **Direct descriptors** (Linux, `--direct-descriptors auto`, the default where the kernel has
//! what they need: `sys::uring::probe_direct`, said by `iomodels models` and in the ready line;
//! without them, or with `off`, connections are ordinary descriptors as in every other model,
//! said in one log line). Each worker's ring registers a sparse fixed-file table of
//! `RLIMIT_NOFILE` slots (the soft limit, which `serve` raises to the hard one; the kernel bounds
//! each *table* by it, not their sum); the multishot accept allocates each new socket a slot
//! (`IORING_FILE_INDEX_ALLOC`), and its receives, sends, shutdown and close name the slot
//! (`IOSQE_FIXED_FILE`). A connection is then in no descriptor table of the process: N workers
//! hold up to N × the descriptor limit, with the process's descriptors flat (rings, listeners,
//! eventfds). `--max-conns` defaults to the slots of all tables less 16. Closing is
//! `IORING_OP_CLOSE` on the slot, posted once every operation of the connection has completed
//! (a `SHUTDOWN` runs on a kernel worker thread and looks its slot up late: closing first could
//! let it hit the next socket given that slot). What needed a call on the socket:
//! - `TCP_NODELAY` is set on the listeners: Linux copies it to every accepted socket (checked:
//!   `getsockopt` on an accepted socket says 1 with it, 0 without), so no per-connection
//!   `setsockopt` is needed — `IORING_OP_URING_CMD`'s `SOCKET_URING_OP_SETSOCKOPT` (6.7+) would
//!   do it per socket, at a submission each, for nothing;
//! - `SO_OOBINLINE` (urgent bytes echoed in place, never left out of band): the same — set on
//!   the listeners, copied by Linux to every accepted socket (a sock flag `sk_clone_lock`
//!   copies; `sys::linux` tests it: 1 on an accepted socket with it on the listener, 0
//!   without), so no socket command per connection;
//! - the peer address in a TLS connection's closing log line: multishot accept cannot return
//!   addresses and this kernel (6.18) has no `getpeername` socket command, so for TLS
//!   connections only, `IORING_OP_FIXED_FD_INSTALL` (6.8+) makes a temporary ordinary
//!   descriptor, `getpeername` reads the address and the descriptor is closed at once (one
//!   submission and two system calls per TLS connection, nothing for plain ones; without a
//!   descriptor to spare the line says "a client");
//! - a TLS `close_notify` when the drain runs out is a send on the slot, not a write on a
//!   descriptor.
//!
//! A full table stops its worker accepting and must strand nothing: `SO_REUSEPORT` keeps
//! hashing connections to that worker's listener. Every worker's listener is shared
//! (`engine/accept.rs`: `Spill`): a worker whose table is full says so (counted in
//! `direct_table_full`, logged once), and the others accept on its listener for it until it has
//! room (counted in `direct_accepted_for_others`). Chosen over closing the full worker's
//! listener (its backlog would be reset unless `net.ipv4.tcp_migrate_req` is on) and over one
//! listener shared by every worker's accept (the kernel wakes one waiting accept per connection,
//! the first in its queue, so one worker would take every connection until its table filled;
//! reasoned from the kernel, not measured). Near a full table (fewer than 8,192 free slots: one
//! wait may accept the whole backlog with a multishot accept, and an accept that finds the
//! table full closes the socket it took) and near the cap, a worker makes *accept tries*
//! instead: batches of accepts that do not wait (`IORING_ACCEPT_DONTWAIT`, 6.10+), each into
//! one slot, on its own listener and on every full worker's, whenever a multishot poll on that
//! listener fires and whenever one of its slots frees. Single-shot accepts left waiting would
//! hold slots for connections that may never come, and on a listener that several rings wait
//! on they lose wake-ups: the kernel wakes one exclusive waiter per connection, a waiter still
//! busy with the previous one swallows it, and the connection waits in the backlog while
//! another ring's accept sleeps — seen in testing (1,000 clients, 4 workers of 256 slots: 2 to
//! 4 left waiting for good in one run of three) before tries replaced them. `--accept handoff`
//! passes direct descriptors too: `IORING_OP_MSG_RING` with `IORING_MSG_SEND_FD` moves the
//! socket into a slot the target ring allocates (silently: the completion it would post does
//! not name the slot), the acceptor closes its own slot and tells the target which slot it got
//! with a second message.
//!
//! Measured here (release build, `serve --workers 6` against `iomodels load --idle --conns
//! 100000`, three runs): 100,000 connections held in one process, each echoed one byte
//! (verified), all still open at the end; the server's descriptor table at 25 entries
//! throughout; RSS 7.5 MB before, 47.3 MB with all held: 0.40 KiB per connection (the provided
//! buffers' first touch included); opened in 3.4 s (3.2–3.5); a fresh client served at once
//! meanwhile. The same server on ordinary descriptors holds at most the descriptor limit
//! (19,000 held: 19,025 descriptors; 0.67 KiB per connection at that count, as on direct ones:
//! the fixed ~6 MB of provided buffers touched once weighs more there). With the default worker
//! count (one per CPU: 2 here) the tables hold 2 × 20,000. Server CPU per message, one worker,
//! direct against ordinary descriptors (three alternating runs each, medians): 4.98 against
//! 5.09 s per million 64-byte echoes with 100 connections, 5.54 against 5.98 with 1,000.
//!
//! Sends take the connection's output as an owned buffer (one send in flight per connection,
//! re-posted for the rest after a short write, freed only at its completion); a plaintext echo
//! sends the received bytes straight from the provided buffer they arrived in instead, while
//! half the ring stays free (`bytes_passed_through`; see `models/uring/engine/conn.rs`).
//! Backpressure cancels a connection's multishot recv; bytes already delivered in provided
//! buffers are copied out, parked in order and fed as the output drains, then the recv is
//! re-armed (parking them in their buffers let 32 peers that never read hold the whole ring).
//! When the buffer ring runs dry, a multishot recv ends with `ENOBUFS`: the connection is
//! re-armed once buffers come back — the bytes wait in the socket meanwhile, nothing is lost
//! or reordered.
//!
//! **On Windows** (`windows.rs`, on the shared overlapped core in `models/winio`): the
//! original design. One completion port; `ctx.workers` threads (one per CPU by default) loop
//! on `GetQueuedCompletionStatusEx`, 64 packets per call. Windows has no `SO_REUSEPORT`, so
//! the workers share one listener associated with the port, and `--accept` (`AcceptMode`) is
//! Linux-only and ignored here, as is `--recv-buffers`. Receives are the book's zero-byte
//! reads (`models/winio/conn.rs`): a waiting connection has a `WSARecv` of 0 bytes posted (no
//! buffer, no locked page: `recv_buffer_bytes_posted` stays 0, also with 2,000 idle
//! connections under Wine, where it was 2,000 × 16 KiB = 32 MB with a 16 KiB buffer posted
//! each), and reads with non-blocking `recv`s into the worker's 16 KiB buffer once it completes.
//! `AcceptEx` and `GetAcceptExSockaddrs` are loaded with `WSAIoctl`
//! (`SIO_GET_EXTENSION_FUNCTION_POINTER`); 2 × workers (at least 8) accepts stay posted at
//! first, each into a socket made ahead with `WSASocketW`, finished with
//! `SO_UPDATE_ACCEPT_CONTEXT`. Taken accepts are re-posted at the end of the worker's turn, and
//! a turn that finds every posted accept taken doubles the pool, up to 256 (the book watches
//! `FD_ACCEPT` on the listener for the same sign; counted in `accept_pool_grown`, logged; the
//! pool never shrinks, the gauge `accepts_posted` shows it). 2,000 clients connecting at once
//! under Wine (one worker) are all accepted, none refused (`tests/windows_overlapped.rs`). A
//! failure to post one (`WSAENOBUFS`, `WSAEMFILE`, ...) pauses accepting for 100 ms instead of
//! spinning. A connection's socket has the address of its `Arc<Mutex<OvConn>>` as its
//! completion key (the book's per-handle data), so a worker finds the connection a packet is
//! for without a lookup and takes only that connection's mutex, held from feeding the
//! completion to posting the next operation: two workers contend only when they dequeue
//! completions of the same connection (its receive and its send). The connection table, the
//! one process-wide lock on the TCP path, is taken per accept and per close, never per
//! message (`shared_locks` counts it; `windows.rs` says why the key and the lock order are
//! sound). The thread that called `run` coordinates: re-posts accepts after a pause, runs the
//! drain, then closes the listener and every connection — their pending operations complete
//! with errors and the workers reap them — waits until `Stats::ops_in_flight` is 0, and stops
//! each worker with a `PostQueuedCompletionStatus` packet.
//!
//! **UDP** (`--udp`). Linux: worker 0 owns the one UDP socket: four `IORING_OP_RECVMSG`
//! posted on its ring, each whole datagram sent back with `IORING_OP_SENDMSG`
//! (`models/uring/engine/udp.rs`). One socket on one ring keeps the bind as it is;
//! `SO_REUSEPORT` sockets, one per worker, would spread datagrams by the sender's address
//! hash, worth it once one ring is the UDP bottleneck. Windows: the UDP socket is associated
//! with the port under a key of its own; the coordinator posts four overlapped `WSARecvFrom`
//! and any worker reaps a datagram's packet (a cut datagram's status is
//! `STATUS_BUFFER_OVERFLOW`, i.e. `ERROR_MORE_DATA`: counted, received over), sends a whole one
//! back with `WSASendTo` from the same record and re-posts; the echo's state is behind one
//! mutex (held only to count and post, never across a wait). When shutdown begins the
//! coordinator cancels the pending receives (`CancelIoEx`) and waits, as for connections,
//! until `Stats::ops_in_flight` is 0. Without a TCP listener (`--no-tcp`) no `AcceptEx` is
//! loaded or posted.
//!
//! **Limits.** Descriptors (`RLIMIT_NOFILE`; `serve` raises the soft limit to the hard one)
//! on ordinary descriptors; on direct ones the tables (a descriptor limit per worker);
//! buffer-ring size (`RecvBuffers`, `--recv-buffers`, 16 × 64 KiB per worker by default,
//! consumed incrementally; on a kernel without `IOU_PBUF_RING_INC` each receive takes a whole
//! buffer, said in one log line, and more, smaller buffers serve many connections better; a
//! ring that runs dry ends receives with `ENOBUFS`, re-armed when buffers come back); io_uring
//! must be allowed (containers often block it: the model is then unavailable and says why,
//! and the default model falls back to `event-select`). `SO_REUSEPORT` spreads connections by hash,
//! not by load.
//!
//! **Server limits** (`--max-conns`, `--idle-timeout`, `--write-timeout`,
//! `--handshake-timeout`; both OSes). Windows:
//! `AcceptEx` is posted only within the cap (open connections plus posted accepts never pass
//! it; a worker that forgets a closed connection tops the accepts up again), and the
//! coordinator sweeps the connections, its wait bounded by the next sweep, closing an expired
//! one under its lock (`CancelIoEx` + `closesocket`; the workers reap its aborted records).
//! Linux: they come from the shared engine (`models/uring/engine/accept.rs`, see its module
//! doc): accepts are posted only within the cap (a multishot accept only while 1,024 or more
//! places are left; nearer the cap one single-shot accept; a worker reaching the cap wakes the
//! others, which cancel their accepts; sockets in hand-off count), and the connection timeouts
//! are a sweep after each wait, which is bounded by the next sweep.
//!
//! **Pitfalls.** The one rule of completion I/O (in `models/uring`): nothing a posted operation
//! points at may be freed before its final completion — after a cancel, a reset, or at
//! shutdown, which cancels everything and reaps until the table is empty. Provided buffers must
//! be returned to the ring, or it runs dry. A multishot operation's completions keep coming
//! until one arrives without `IORING_CQE_F_MORE`. An incrementally consumed buffer is shared by
//! the pieces of several receives: it goes back to the ring only after a completion without
//! `IORING_CQE_F_BUF_MORE` and once every piece of it has been consumed (`BufRing` in
//! `sys/linux/uring.rs`). Every worker's ring (with its provided
//! buffers) and waker is made at bind (`prepare`), disabled (`IORING_SETUP_R_DISABLED`) and
//! enabled by its worker, which so becomes the ring's single issuer: a worker making its own
//! ring once running could find the descriptors taken by connections the others had already
//! accepted, fail with EMFILE and stop the server; now a limit too low for every ring refuses
//! the start with one line, and nothing is made later. With hand-off, a socket accepted in the last
//! instant before shutdown can reach a worker that has already stopped reaping: it is then
//! closed only at process exit. On Windows: a closed socket's pending operations still come
//! out of the port (with `ERROR_OPERATION_ABORTED`, or `ERROR_NETNAME_DELETED` for a reset
//! peer; Wine 8 reports the aborted ones as `ERROR_HANDLES_CLOSED`), and each record is
//! freed only when its packet is dequeued; a worker must not keep a connection's lock while
//! it waits on the port.

// The OS file for this OS gives the model's `availability`, `run` and `MECHANISM`.
#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(not(any(target_os = "linux", windows)), path = "../unsupported.rs")]
mod os;
pub(crate) use os::{availability, run, MECHANISM};

#[cfg(target_os = "linux")]
pub(crate) use os::{direct_support, direct_table};

/// Direct descriptors are io_uring's: elsewhere `completion-port` has ordinary sockets.
#[cfg(not(target_os = "linux"))]
pub(crate) fn direct_support() -> Result<(), String> {
    Err("direct descriptors are io_uring's (Linux only)".into())
}

/// Direct descriptors are io_uring's: elsewhere no table.
#[cfg(not(target_os = "linux"))]
pub(crate) fn direct_table(_config: &crate::ServerConfig) -> Option<usize> {
    None
}
