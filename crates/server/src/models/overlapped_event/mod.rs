//! # `overlapped-event`: post buffers, wait for completions, look each one up
//!
//! **Winsock original.** Overlapped I/O with event notification: `WSARecv` / `WSASend` take a
//! buffer and a `WSAOVERLAPPED` whose `hEvent` the system signals when the operation is done.
//! The thread keeps an array of events (one per posted operation), blocks in
//! `WSAWaitForMultipleEvents`, and for the signalled one calls `WSAGetOverlappedResult` to learn
//! how many bytes moved, then posts the next operation. The book's point: data is copied
//! straight into the posted buffer — no "it is readable, now read it" round trip.
//!
//! **Linux counterpart.** io_uring, one thread, one ring. Every posted accept, recv and send is
//! an operation record (its buffer and state) in a table indexed by the completion's user
//! data; the loop waits in `io_uring_enter` for completions, and dispatches each by looking its
//! record up and matching on its kind — the event array plus `WSAGetOverlappedResult`. Each
//! connection keeps one recv posted into its own 16 KiB buffer (sized down to the backpressure
//! budget) and at most one send; four accepts stay posted, as several `AcceptEx` would. The
//! engine shared with the other completion models is in `models/uring`, which states the one
//! rule of completion I/O: a buffer and its record live until the kernel's final completion.
//!
//! **Limits.** One thread. A posted receive buffer per connection: 16 KiB of memory for every
//! idle connection (the completion-port model avoids that with a provided-buffer ring). Needs
//! io_uring (Linux 5.19+ here), which containers often block; the model is then unavailable and
//! says why. Winsock's version waits on at most 64 events per `WSAWaitForMultipleEvents`, so it
//! needs a thread per 64 operations (issue #5).
//!
//! **Pitfalls.** Freeing or reusing a buffer before its completion (after a close, a cancel, a
//! reset) lets the kernel write into freed memory; a completion can carry fewer bytes than
//! asked (a short send must be re-posted for the rest, first); cancelling is itself
//! asynchronous.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{availability, run, CONFIG, MECHANISM};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{availability, run, MECHANISM};

#[cfg(not(any(target_os = "linux", windows)))]
pub(crate) use super::unsupported::{availability, run, MECHANISM};
