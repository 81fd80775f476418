//! # The completion engine: what `overlapped-event`, `overlapped-routine` and `completion-port`
//! share on Linux
//!
//! Readiness models ask "which socket can I read?" and then read. Completion models *post* an
//! operation — receive into this buffer, send this buffer, accept on this listener — and are
//! told later that it is done and what it did: Winsock's overlapped I/O and completion ports,
//! Linux's io_uring. The engine here posts operations on an io_uring, reaps their completions,
//! and drives each connection's [`Connection`](iomodels_core::Connection) from them. The three
//! models differ in how a completion finds its handler and in how they receive:
//!
//! | model | dispatch | receive | accept | threads |
//! |---|---|---|---|---|
//! | `overlapped-event` | look the record up in the table, match its kind | one single-shot recv per connection, re-posted after each completion, its buffer picked from the provided-buffer ring at completion | several single-shot accepts (AcceptEx) | one |
//! | `overlapped-routine` | call the routine stored in the record | same | same | one |
//! | `completion-port` | match the kind | one multishot recv per connection from the provided-buffer ring | multishot accept | one ring per worker |
//!
//! Every receive names the ring's provided-buffer group (`IOSQE_BUFFER_SELECT`; `--recv-buffers`
//! buffers per ring) instead of a buffer: the kernel picks one only when data arrives, so an
//! idle connection pins no receive memory (the zero-byte `WSARecv` of the book, in one step).
//! A ring that runs dry completes the receives that need a buffer with `ENOBUFS`; they are
//! re-posted when buffers come back (counted in `recv_buffer_exhausted`; nothing is lost).
//!
//! ## The one rule of completion I/O
//!
//! **A buffer and its operation record live until the kernel posts the operation's final
//! completion** — for a multishot operation the completion without `IORING_CQE_F_MORE` — also
//! after a cancel, a connection reset, or shutdown. The kernel may write into a receive buffer or
//! read from a send buffer at any moment until then; freeing or reusing it earlier is a
//! use-after-free that no compiler sees.
//!
//! So in this engine:
//! - every posted operation is a [`RingOp`] in the engine's table, and owns its buffer (the send
//!   `Vec` taken from the connection; receives own none, see below); the table slot is freed
//!   only when its final completion is reaped;
//! - closing a connection *cancels* its operations (`IORING_OP_ASYNC_CANCEL`) and frees nothing:
//!   the socket is closed and the connection dropped when the last of its operations has
//!   completed (with `-ECANCELED` or otherwise);
//! - shutdown cancels everything, reaps completions until the table is empty, and only then
//!   drops the ring; if the kernel never answered, the memory is leaked on purpose rather than
//!   freed under it;
//! - provided buffers (every receive's) belong to the ring for as long as the ring exists, and
//!   a buffer the kernel handed over goes back to it only after its bytes were consumed.
//!
//! - a UDP datagram record (`engine/udp.rs`) owns its buffer, its `msghdr`, `iovec` and the
//!   sender's address, boxed so the kernel's pointers stay valid; it goes from receive to send
//!   to receive again only at each completion.
//!
//! User data is the record's slot plus a generation, so a cancel aimed at an operation that
//! completed meanwhile can never hit a newer operation that reused the slot.

mod engine;

pub(crate) use engine::{Engine, EngineConfig, Handoff, Parts, Prepared, Recv, Routines, Spill};
