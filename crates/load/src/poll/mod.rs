//! The readiness poll the load generator's workers run on: mio's on Linux (and other Unix
//! systems), a small edge-triggered poll over `WSAPoll` on Windows — the same surface either
//! way, so `worker.rs`, `conn.rs`, `cycle.rs` and `udp.rs` are written once.
//!
//! The surface (mio's names and contract): [`Poll`] (`new`, `registry`, `poll` with a timeout),
//! [`Registry`] (`register`, `deregister` of a socket under a [`Token`] with an [`Interest`]),
//! [`Events`] (`with_capacity`, `iter`) of [`Event`]s (`token`, `is_readable`, `is_writable`,
//! `is_read_closed`, `is_error`), and the non-blocking sockets [`TcpStream`] (`connect`,
//! `Read`/`Write`, `shutdown`, `take_error`, `peer_addr`, `set_nodelay`) and [`UdpSocket`]
//! (`bind`, `connect`, `send`, `recv`).
//!
//! The contract both sides keep: readiness is **edge-triggered** — an interest is reported
//! once, and comes back only once the caller has read (written) what there was. With mio on
//! Linux (epoll, `EPOLLET`) every later arrival is a new edge, so the workers end a read loop
//! at a short read (less than the buffer: the receive queue is empty) without the extra read
//! that returns `WouldBlock`; `WouldBlock` ends it too. The Windows poll re-arms at exactly
//! those two points.
//!
//! ## Why not mio on Windows
//!
//! mio's Windows backend emulates edges over AFD polling (`IOCTL_AFD_POLL` on `\Device\Afd`)
//! and re-arms an interest only when a call returns `WouldBlock` (or at `reregister`). Two
//! things follow, both seen under Wine 8 with `iomodels.exe load`:
//!
//! * the workers' short-read shortcut leaves the socket unarmed: every connection got its
//!   first echoes and then nothing more (8 connections × depth 4: 32 messages, then 12 s of
//!   silence) — the stall that kept the load generator's tests off Windows;
//! * reading on to `WouldBlock` instead livelocks the closed loop: a read completes an echo,
//!   the next message is written, and its echo is back before the next read, so a fast
//!   connection never sees `WouldBlock` and holds its worker in the read loop; the other
//!   connections starve and the deadlines go unchecked (a 3 s run of 1,000 connections
//!   lasted 14 to 28 s and ended with 500 messages unanswered, one whole worker's share).
//!
//! `WSAPoll` underneath is level-triggered, so the Windows poll can also re-arm at a short
//! read (if more arrived in between, the next call reports it at once): the read loop stays
//! as it is on Linux, fair, with no `reregister` per event. See `windows.rs` for the rest.

#[cfg(not(windows))]
pub(crate) use mio::event::Event;
#[cfg(not(windows))]
pub(crate) use mio::net::{TcpStream, UdpSocket};
#[cfg(not(windows))]
pub(crate) use mio::{Events, Interest, Poll, Registry, Token};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{Event, Events, Interest, Poll, Registry, TcpStream, Token, UdpSocket};
