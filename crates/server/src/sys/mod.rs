//! The operating-system layer: every OS resource the models use, behind an RAII type.
//!
//! Model code never calls `close` or holds a raw descriptor it must remember to free; it holds
//! one of these types, and `Drop` frees the resource. Each OS provides, under the same names:
//!
//! - [`Waker`]: a handle one thread can signal and another's wait can include, so a model
//!   blocked in its wait call (`select`, `epoll_wait`, `poll`) wakes for shutdown. On Linux an
//!   `eventfd`.
//! - [`wait_readable`]: block until one of two descriptors is readable or a timeout passes
//!   (`poll(2)`): how the thread-per-client model's acceptor waits for a client or a wake-up.
//! - [`select`]: `select(2)` with [`select::FdSet`], a descriptor set that refuses descriptors at
//!   or above `FD_SETSIZE` instead of writing past its end.
//! - [`epoll`]: an owned epoll instance and its event buffer.
//! - [`recv_datagram`] / [`send_datagram`] (every OS, `datagram.rs`): one datagram in, with
//!   whether it was cut short (`MSG_TRUNC` / `WSAEMSGSIZE`); one datagram out.
//!
//! `unsafe` lives here and in the models' OS files only; each block says why it is sound in a
//! `// SAFETY:` comment. The [`syscall!`] macro turns a `-1` return into
//! `io::Error::last_os_error()` in one place.

mod datagram;
pub use datagram::{recv_datagram, reply_source, send_datagram, want_arrival, Arrival, Received};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
