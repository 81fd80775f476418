//! # `overlapped-routine`: each posted operation carries the routine that finishes it
//!
//! **Winsock original.** Overlapped I/O with completion routines: `WSARecv` / `WSASend` take a
//! buffer, a `WSAOVERLAPPED` and an `lpCompletionRoutine`. When the operation is done the
//! system queues the routine as an APC to the thread that posted it, and runs it the next time
//! that thread waits *alertably* (`SleepEx(INFINITE, TRUE)`, or `WSAWaitForMultipleEvents` with
//! `fAlertable`). The routine gets the error, the byte count and the OVERLAPPED (the
//! operation's context), and typically posts the next operation. No event array, so no
//! 64-handle limit; but routines run only on the posting thread, and the accepting thread must
//! hand sockets over (an event, or `QueueUserAPC`).
//!
//! **Linux counterpart.** io_uring, one thread, one ring. The kernel has no APCs, so the
//! engine makes the same shape: every accept, recv and send record carries its completion
//! routine (a function pointer, as `lpCompletionRoutine` is) next to its context (connection,
//! buffer); the wait in `io_uring_enter` is the alertable wait, and after it the loop runs each
//! completed record's routine, which posts the next operation. Accepting happens on the same
//! thread (posted accepts), so no hand-over is needed. Receives are single-shot and carry the
//! receive routine, but no buffer of their own: as in `overlapped-event` (the zero-byte receive,
//! io_uring style: see its module doc), the kernel picks one from the ring's provided buffers
//! (`--recv-buffers`) when data arrives, so an idle connection pins none (measured 395 B of
//! server RSS per idle connection at 19,000, against 15.5 KiB with a posted buffer each). The
//! engine and the one rule of completion I/O are in `models/uring`.
//!
//! **On Windows** (`windows.rs`, on the shared overlapped core in `models/winio`): the real
//! thing, with two threads. The accepting thread waits in `select` on the listener and its
//! shutdown socket, accepts, and hands each socket to the I/O thread with `QueueUserAPC`: the
//! APC, like the routines, runs only inside the I/O thread's alertable wait, so no lock is
//! needed anywhere. The I/O thread owns every connection and waits in
//! `WSAWaitForMultipleEvents(fAlertable = TRUE)` on its shutdown event; each `WSARecv` /
//! `WSASend` carries the one routine `on_complete`, and the routine's way back to the
//! connection table is the table's address, passed in `hEvent` (which the system ignores when
//! a routine is given). A receive is the book's zero-byte `WSARecv` (`models/winio/conn.rs`):
//! once its routine runs, the connection reads with non-blocking `recv`s (16 KiB at most each,
//! never more than the read budget) into the I/O thread's buffer;
//! one receive and at most one send per connection are in flight. At shutdown the I/O thread
//! joins the accepting thread, runs the hand-offs it queued last (closing their sockets),
//! closes every connection and waits alertably until every routine has run
//! (`Stats::ops_in_flight` is then 0).
//!
//! **UDP** (`--udp`). Linux: as for `overlapped-event` (`models/uring/engine/udp.rs`), with a
//! routine in every datagram record too: four `IORING_OP_RECVMSG` posted, a whole datagram
//! sent back with `IORING_OP_SENDMSG` from the same record. Windows: the I/O thread posts four
//! overlapped `WSARecvFrom` with the routine `on_datagram` (`models/winio/udp.rs`: the
//! records, the truncation forms, `SIO_UDP_CONNRESET` off); the routine sends a whole datagram
//! back with `WSASendTo` from the same record and counts a cut one (its error is
//! `WSAEMSGSIZE`). Routines run inside the alertable wait, and under a flood each re-posted
//! receive completes at once and queues the next routine, so the wait would never return:
//! the routines re-post receives for at most 64 datagrams per turn of the loop, which then
//! re-posts the rest itself (and does not block while some are held back). When shutdown
//! begins, `CancelIoEx` aborts the pending receives; the final alertable waits reap them.
//! Without a TCP listener (`--no-tcp`) no accepting thread is started.
//!
//! **Limits.** One thread; needs io_uring on Linux. Linux: a burst from many connections can
//! drain the shared buffer ring; the receives that find it empty complete with `ENOBUFS`
//! (`recv_buffer_exhausted`) and are re-posted when buffers come back, nothing lost. Windows:
//! no posted receive buffer, idle or not (zero-byte receives: `recv_buffer_bytes_posted` stays
//! 0; it was 16 KiB per connection before them).
//!
//! **Server limits** (`--max-conns`, `--idle-timeout`, `--write-timeout`,
//! `--handshake-timeout`; both OSes). Linux:
//! from the shared engine (`models/uring/engine/accept.rs`, see its module doc): accepts are posted
//! only within the cap, and the connection timeouts are a sweep after each wait, which is
//! bounded by the next sweep. Windows: the accepting thread keeps the cap (sockets on their
//! way in an APC count as connections) and, at the cap, waits on a room signal the I/O thread
//! sets when it forgets a connection; the I/O thread sweeps its connections, its alertable
//! wait bounded by the next sweep, and closes an expired one like any other (`CancelIoEx` +
//! `closesocket`; the routines reap its aborted records).
//!
//! **Pitfalls.** A routine must not block (it runs inside the wait loop, delaying every other
//! completion); the buffer and context a routine receives belong to it — it must re-post or
//! free them, never leave the kernel holding a buffer that is freed; on Windows the routines
//! never run unless the thread waits alertably, and they run in *any* alertable wait of that
//! thread — the loop must not hold the state they borrow across one. A post that succeeds at
//! once still queues its routine. `closesocket` runs the routines of the socket's pending
//! operations with an error (Windows: `WSA_OPERATION_ABORTED`; Wine 8: `WSAEINVAL`); their
//! records are freed only then.

// The OS file for this OS gives the model's `availability`, `run` and `MECHANISM`.
#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(windows, path = "windows.rs")]
#[cfg_attr(not(any(target_os = "linux", windows)), path = "../unsupported.rs")]
mod os;
pub(crate) use os::{availability, run, MECHANISM};
