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
//! **Limits.** Descriptors (`RLIMIT_NOFILE`) and memory; one thread, so one core.
//!
//! **Pitfalls.** Edge-triggered mode loses data if a handler stops before `EWOULDBLOCK` without
//! remembering that the socket is still readable (hence the flags and the ready list); a
//! descriptor must be removed from epoll before being closed if a duplicate of it exists; the
//! Winsock version must split sockets into groups of 63 plus a wake-up event per thread.

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
