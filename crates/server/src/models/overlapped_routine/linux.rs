//! io_uring with a completion routine in every operation record.

use crate::ctx::Ctx;
use crate::models::overlapped_event;
use crate::models::uring::{Engine, EngineConfig, Routines};
use std::io;
use std::net::TcpListener;

pub(crate) const MECHANISM: &str = "io_uring, a completion routine per operation";

pub(crate) fn availability() -> Result<(), String> {
    crate::sys::uring::probe()
}

/// The routines posted with each operation: each finishes its operation and posts the next.
const ROUTINES: Routines = Routines {
    accept: |engine, done| engine.accept_done(done),
    recv: |engine, done| engine.recv_done(done),
    send: |engine, done| engine.send_done(done),
    udp_recv: |engine, done| engine.udp_recv_done(done),
    udp_send: |engine, done| engine.udp_send_done(done),
};

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    let config = EngineConfig {
        routines: Some(ROUTINES),
        ..overlapped_event::CONFIG
    };
    Engine::new(ctx, listener, config)?.with_udp().run()
}
