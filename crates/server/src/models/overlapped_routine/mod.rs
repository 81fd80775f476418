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
//! thread (posted accepts), so no hand-over is needed. Receives use the connection's own
//! posted 16 KiB buffer, as in `overlapped-event`; the engine and the one rule of completion
//! I/O are in `models/uring`.
//!
//! **Limits.** One thread; 16 KiB of posted buffer per idle connection; needs io_uring.
//!
//! **Pitfalls.** A routine must not block (it runs inside the wait loop, delaying every other
//! completion); the buffer and context a routine receives belong to it — it must re-post or
//! free them, never leave the kernel holding a buffer that is freed; on Windows the routines
//! never run unless the thread waits alertably.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{availability, run, MECHANISM};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{availability, run, MECHANISM};

#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use super::unsupported::{availability, run, MECHANISM};
