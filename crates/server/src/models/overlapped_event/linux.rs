//! io_uring with table dispatch and owned receive buffers.

use crate::ctx::Ctx;
use crate::models::uring::{Engine, EngineConfig, Recv};
use std::io;
use std::net::TcpListener;

pub(crate) const MECHANISM: &str = "io_uring, one ring, a table of operations";

pub(crate) fn availability() -> Result<(), String> {
    crate::sys::uring::probe()
}

/// The engine configured as overlapped I/O with event notification.
pub(crate) const CONFIG: EngineConfig = EngineConfig {
    recv: Recv::Single,
    accepts: 4,
    routines: None,
    ring_entries: 4096,
};

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    Engine::new(ctx, listener, CONFIG)?.with_udp().run()
}
