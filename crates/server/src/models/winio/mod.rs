//! # Winsock overlapped I/O: what `overlapped-event`, `overlapped-routine` and
//! `completion-port` share on Windows
//!
//! The three models post the same operations — `AcceptEx`, `WSARecv`, `WSASend`, and for UDP
//! `WSARecvMsg`, `WSASendMsg` — and drive each connection (and the UDP socket) the same way;
//! they differ only in how a completion is announced (an event in `OVERLAPPED.hEvent`, a
//! completion routine run in an alertable wait, a packet on a completion port) and so in
//! which thread reaps it. This module is the shared part, and it
//! is notification-agnostic: [`Notify`] says, per post, which of the three to use.
//!
//! Files: `op.rs` — [`OvOp`], the operation record, posting `WSARecv` / `WSASend`, reclaiming;
//! `conn.rs` — [`OvConn`], a connection's operations and its
//! [`Connection`](iomodels_core::Connection); `accept.rs` — [`AcceptEx`], loaded through
//! `WSAIoctl`, with `SO_UPDATE_ACCEPT_CONTEXT` and `GetAcceptExSockaddrs`; `udp.rs` —
//! [`OvUdpEcho`], RFC 862 over UDP with `OvDatagram` records (`WSARecvMsg` → `WSASendMsg` →
//! `WSARecvMsg`).
//!
//! ## The one rule of completion I/O (as in `models/uring`)
//!
//! **An operation record — its `OVERLAPPED`, its `WSABUF`, its buffer and, for an accept, its
//! socket — lives at a fixed address until its completion has been reaped**: dequeued from
//! the port, delivered to the routine, or seen complete after its event fired. Also after
//! `closesocket`, which does not free anything: it completes the socket's pending operations
//! with `ERROR_OPERATION_ABORTED` (a reset peer's with `ERROR_NETNAME_DELETED`), and those
//! completions are reaped like any other. So:
//! - a record is a `Box<OvOp>` with the `OVERLAPPED` first in a `#[repr(C)]` struct; posting
//!   turns the box into a raw pointer ([`InFlight`]), and only [`reclaim`] /
//!   [`InFlight::reclaim`], called with the reaped `OVERLAPPED*`, turns it back. A record
//!   whose completion never comes is leaked, never freed;
//! - a post that returns 0 (done at once) is *also* in flight: its completion still comes
//!   (event set, routine queued, packet queued — this code never sets
//!   `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`). Only an outright error gives the record back;
//! - `Stats::ops_in_flight` counts records from post to reclaim; after a clean stop it is 0;
//! - each connection has one receive and at most one send in flight (the bytes stay in
//!   order); the receive is a zero-byte `WSARecv` (no buffer: see `conn.rs`), after whose
//!   completion non-blocking `recv`s ask for at most the read budget (backpressure: nothing is
//!   read or posted while it is 0); a short send is re-posted, from the same buffer, before
//!   new output;
//! - closing a connection is `closesocket` now; the [`OvConn`] stays, holding nothing but its
//!   in-flight records' names, until [`OvConn::is_idle`]; shutdown closes every connection and
//!   the listener, then reaps until nothing is in flight.
//!
//! ## How to use it
//!
//! 1. Adopt an accepted socket: `OvConn::new(stream, ctx)` (counts it accepted and active),
//!    then `conn.advance(tag, notify)`, which posts the first receive. `tag` is yours (a slab
//!    key): it is stored in every record the connection posts ([`OvOp::tag`]).
//! 2. When a completion is reaped, take its record back and hand it over:
//!    - completion port: `let op = unsafe { reclaim(entry.lpOverlapped, stats) };`
//!      `let r = op.result();` (the status the kernel stored in the `OVERLAPPED`);
//!    - completion routine `fn(error, bytes, ov, flags)`: `unsafe { routine_context(ov) }`
//!      is the `context` given in [`Notify::Routine`] (the routine's way back to its
//!      thread's state); `let op = unsafe { reclaim(ov, stats) };` the result is
//!      `error`/`bytes`;
//!    - event: post with `conn.advance_each(tag, Notify::Event(recv_event),
//!      Notify::Event(send_event))`, an event per kind of operation; when one fires, reset it,
//!      then take `conn.in_flight_op(kind)` if `unsafe { f.is_complete() }`: `let op = unsafe
//!      { f.reclaim(stats) }; let r = op.result();` (or `f.overlapped_result(socket)`, i.e.
//!      `WSAGetOverlappedResult`, while the socket is open). Posting resets the event in the
//!      record's `hEvent` (Windows and Wine both do; `tests.rs` checks it): one event shared
//!      by the receive and the send would lose the signal of the other's completion whenever
//!      one is posted; an event each loses nothing, as a post resets only its own, while its
//!      kind has nothing in flight.
//!
//!    then `conn.complete(op, r)` and `conn.advance(op.tag, notify)` (or `advance_each`);
//!    when `conn.is_idle()`, drop it (and free its tag).
//! 3. Accept ahead: `AcceptEx::load(&listener)` once, `accept_ex.post(&listener,
//!    AcceptEx::new_op(tag), notify, stats)` several times (`AcceptEx` takes an event or the
//!    port, not a routine: `completion-port` uses the port, `overlapped-event` an event per
//!    posted accept); on a successful completion `accept_ex.finish(&listener, &mut op)`
//!    gives the `TcpStream` (with `SO_UPDATE_ACCEPT_CONTEXT` done) and the peer's address.
//! 4. To stop: close the listener (pending accepts abort), `conn.close()` every connection,
//!    and go on reaping until `Stats::ops_in_flight` is 0 (or a deadline passes: then leak).
//!
//! ## UDP (`udp.rs`)
//!
//! The same rule for datagrams: an `OvDatagram` record holds its `OVERLAPPED` (first), its
//! `WSABUF`, its `WSAMSG`, a buffer of `udp_max_datagram` bytes, the `SOCKADDR_STORAGE` and
//! the packet-information control buffer that `WSARecvMsg` fills in after the call returned —
//! all of it stays put until the completion is reaped. [`OvUdpEcho`] keeps four receives
//! posted; a whole datagram is sent back from the same record (`WSASendMsg` to the address it
//! came from, from the address it was sent to: `IN_PKTINFO` / `IN6_PKTINFO`, see `udp.rs`),
//! then the record receives again.
//! Limits: at most 16 sends in flight (past that the answer is dropped and counted); the
//! event and routine models re-post receives for at most 64 datagrams a turn (a flood would
//! otherwise keep their thread inside the reaping). A cut datagram (larger than the buffer)
//! is counted in `udp_truncated` and received over, in whichever form it is reported:
//! `WSAEMSGSIZE` (a routine's error, `WSAGetOverlappedResult`) or `STATUS_BUFFER_OVERFLOW` in
//! the record's `OVERLAPPED` (a port's packet, an event waiter's check), which maps to
//! `ERROR_MORE_DATA`. A send refused at once or failed is counted in `udp_send_dropped`.
//! `SIO_UDP_CONNRESET` is turned off, and a `WSAECONNRESET` on a receive (an ICMP port
//! unreachable for an earlier answer) is re-posted over anyway. At shutdown `OvUdpEcho::stop`
//! cancels the socket's pending operations with `CancelIoEx` (the socket is the server's and
//! stays open) and the model reaps them like any other completion.
//! Wine 8, checked by the tests here: a port and an event waiter find `STATUS_BUFFER_OVERFLOW`,
//! a routine gets `WSAEMSGSIZE`; cancelled receives complete with `ERROR_OPERATION_ABORTED`
//! (not `ERROR_HANDLES_CLOSED`, which is what `closesocket` gives there); Wine accepts
//! `SIO_UDP_CONNRESET`, and on loopback reports no `WSAECONNRESET` on UDP even with it on, so
//! under Wine that path is not exercised; an overlapped `WSARecvMsg` on the (non-blocking)
//! UDP socket is pending, not `WSAEWOULDBLOCK`; `WSARecvMsg` reports `IN_PKTINFO` /
//! `IN6_PKTINFO`, but `WSASendMsg` ignores the control data (the answer's source is the
//! route's pick there).
//!
//! `OvConn` is `Send` (no raw pointer of the caller's in it); a multi-threaded model must
//! still make sure that two completions of one connection are not handled at once (the
//! completion-port model locks the connection).

mod accept;
mod conn;
mod op;
mod udp;

pub(crate) use accept::AcceptEx;
pub(crate) use conn::{OvConn, RECV_SIZE};
pub(crate) use op::{reclaim, routine_context, Notify, OpKind, OvOp};
pub(crate) use udp::{reclaim_datagram, OvUdpEcho};
// The rest of the API (posting single records, the event notification's checks) serves
// `overlapped-event` and this module's tests.
#[allow(unused_imports)]
pub(crate) use op::{cancel_all, post_recv, post_send, CompletionRoutine, InFlight, Posted};

/// Says once, at start, which io_uring-only flags were set and do nothing here:
/// `--recv-buffers` and `--recv-incremental` (the provided-buffer ring is io_uring's; on Windows
/// each connection posts its own [`RECV_SIZE`] receive buffer) and `--batch-wait` (io_uring's
/// min-wait; a completion port hands out whatever packets are queued).
pub(crate) fn warn_if_uring_flags_set(ctx: &crate::ctx::Ctx) {
    if ctx.recv_buffers != crate::RecvBuffers::default()
        || !ctx.recv_incremental
        || !ctx.pass_through
    {
        log::warn!(
            "--recv-buffers, --recv-incremental and --pass-through are Linux-only (a \
             provided-buffer ring): here each connection posts a zero-byte receive and reads \
             into its thread's {} KiB buffer once data is there",
            RECV_SIZE / 1024
        );
    }
    if ctx.batch_wait.is_some() {
        log::warn!("--batch-wait is Linux-only (io_uring's min-wait): ignored here");
    }
}

#[cfg(test)]
mod tests;
