//! # `select`: one thread asks which sockets are ready
//!
//! **Winsock original.** `select()` over non-blocking sockets: the thread fills `fd_set`s with
//! the sockets it wants to read and write, blocks in `select`, and then serves the ones that
//! came back ready. The book's point: it only removes the *blocking* (one thread serves many
//! sockets, `accept` no longer stalls the rest); it still *polls* — every call hands the kernel
//! the whole set and scans it again on return, so each turn costs O(connections).
//!
//! **Linux counterpart.** `select(2)` itself, over non-blocking sockets. One thread; each turn
//! rebuilds a read set (the listener, the wake-up eventfd, and every connection whose
//! backpressure allows reading) and a write set (connections whose last send hit a full socket
//! buffer), then serves what is ready: one read of up to 64 KiB per ready socket per turn
//! (level-triggered, so a busy socket cannot starve the others), and optimistic writes — a reply
//! is sent in the same turn as the request that caused it, and only a send that would block puts
//! the socket in the write set.
//!
//! **Limits.** An `fd_set` is a bitmap indexed by descriptor *value*, `FD_SETSIZE` = 1024 bits:
//! a descriptor numbered 1024 or above cannot be waited on at all, whatever the number of
//! sockets. Such a connection is closed as soon as it is accepted, counted in
//! `Stats::refused` and logged once ([`crate::sys::select::FdSet`] refuses it rather than write
//! past the bitmap, which is undefined behaviour).
//!
//! **Windows.** The real `select()`, but Winsock's `fd_set` is no bitmap: it is a count and an
//! array of `SOCKET` handles (`FD_SETSIZE` = 64 entries unless redefined), and `select` reads as
//! many entries as the count says. So Windows has no limit on a socket's *value* — handles are
//! opaque numbers, not indexes — only on how many sockets one set holds.
//! [`crate::sys::select::SocketSet`] is a set laid out as an `fd_set` with room chosen at run
//! time (16,384 here); past that a connection is closed at once and counted in
//! `Stats::refused`, as on Linux. Each turn still copies and scans the whole array: the
//! O(connections) cost is the same.
//!
//! **Pitfalls.** The sets are overwritten by the call and must be rebuilt every turn; `nfds` is
//! the highest descriptor plus one, not a count; a socket reported readable may still return
//! `EWOULDBLOCK`; the wait must include something shutdown can signal (here an eventfd).

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
