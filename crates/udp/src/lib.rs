//! iomodels-udp: the UDP side of the seed — unicast, multicast and broadcast datagrams, and
//! peer discovery — as tools that measure what the network did to the datagrams.
//!
//! - [`Sender`] (`iomodels udp send`) numbers and timestamps each datagram ([`Header`]) and
//!   paces them at a fixed rate; it sets the multicast TTL, loop and outgoing interface, and
//!   `SO_BROADCAST` only when asked, so that a broadcast sent by mistake fails with EACCES.
//! - [`Receiver`] (`iomodels udp recv`) binds with `SO_REUSEADDR` (several receivers share a
//!   port), joins a group on an interface (any-source, or source-specific for IPv4), turns
//!   `IP_MULTICAST_ALL` off on Linux, and feeds a [`Tracker`].
//! - [`Tracker`] is sans-I/O: sequence numbers and timestamps in, received / lost /
//!   duplicated / reordered counts and an HDR latency histogram out.
//! - [`discover`]: a probe to a broadcast address or a group, answered by every responder
//!   with its TCP service address.
//!
//! Everything portable is written once; what only Linux has (interface names from /sys and
//! `getifaddrs`, `IP_MULTICAST_ALL`) is in `sys/linux.rs`, and elsewhere `sys/other.rs`
//! refuses names with a line that says what to give instead. socket2 sets every socket
//! option; the only `unsafe` is `getifaddrs` in `sys/linux.rs`, and the sans-I/O parts
//! (header, tracker) have none.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod discover;
mod error;
mod header;
mod net;
mod recv;
mod send;
mod sys;
pub mod tracker;

pub use error::{Result, UdpError};
pub use header::{Discovery, Header, HEADER_LEN, MAGIC, MAX_PAYLOAD_V4, MAX_PAYLOAD_V6};
pub use net::{realtime_ns, IfaceSpec, ListenOptions, SendOptions};
pub use recv::{Receiver, RecvReport};
pub use send::{due, SendConfig, SendReport, Sender, Stopped};
pub use tracker::{Arrival, LatencyUs, Tracker, TrackerStats};
