//! # iomodels-core: the sans-I/O heart of every server model
//!
//! This crate holds everything a connection *means* and nothing about how bytes reach it: no
//! sockets, no system calls, no `unsafe`. Every I/O model in `iomodels-server` — a thread per
//! client, `select`, epoll, and the rest — drives the same [`Connection`] the same way:
//!
//! 1. Ask [`Connection::read_budget`] how many bytes it may read now (zero while backpressure is
//!    on or after the peer's end of stream), read at most that many, and hand them to
//!    [`Connection::on_received`] (or call [`Connection::on_peer_eof`] when a read returns 0).
//! 2. Send [`Connection::pending_output`] and report what the socket took with
//!    [`Connection::on_sent`].
//! 3. When [`Connection::should_shutdown_write`] says so, shut the socket's write side and call
//!    [`Connection::on_write_shutdown`]; when [`Connection::is_finished`], close it.
//!
//! So the only difference between two runs of the server is the model: the protocol, the
//! buffering and the backpressure are written once, here.
//!
//! The services are RFC 862 echo and RFC 863 discard, chosen by [`ServiceKind`].
//!
//! TLS is one more layer in the same place: [`Connection::with_tls`] wraps the service in a
//! rustls session (module [`tls`]), and the model keeps moving bytes exactly as above — they are
//! just ciphertext.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
pub mod errno;
mod outbuf;
mod service;
pub mod tls;
pub mod units;

pub use connection::{Connection, Limits};
pub use outbuf::OutBuf;
/// The rustls this crate is built with, so that every crate builds its configurations with the
/// same version.
pub use rustls;
pub use service::{Service, ServiceKind};
