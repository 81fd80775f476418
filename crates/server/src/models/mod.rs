//! The I/O models, one module each, and what they share: one turn's deadlines ([`Turn`]: the
//! drain on shutdown, the timeout sweep).
//!
//! Every model is a function `run(listener, ctx)` that serves until shutdown is requested,
//! then stops accepting, lets open connections finish for the drain timeout, closes what is
//! left and returns. Its loop turns the way `turn.rs` describes, so the model's code shows only
//! its wait and its dispatch. The listener is `None` when the server serves UDP alone; the UDP
//! socket, when there is one, is `ctx.udp`, and a model stops reading it when shutdown begins
//! (a datagram has nothing to drain). Each module opens with a doc naming the Winsock original,
//! the Linux counterpart, the limits and the pitfalls.

/// Declares a model's OS files, `linux.rs` and `windows.rs`, beside its `mod.rs`, and exports
/// the model's `availability`, `run` and `MECHANISM` from the one for this OS (or the
/// `unsupported` stand-in on any other OS).
macro_rules! os_files {
    () => {
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
    };
}

pub mod async_select;
pub mod blocking;
pub mod completion_port;
pub mod event_select;
#[cfg(windows)]
mod groups;
pub mod overlapped_event;
pub mod overlapped_routine;
pub mod select;
mod turn;
#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported;
#[cfg(target_os = "linux")]
mod uring;
#[cfg(windows)]
mod winio;

use crate::{Ctx, Model};
use std::io;
use std::net::TcpListener;

pub(crate) use turn::{min_timeout, Drain, Turn};

/// The mechanism behind `model` on this OS.
pub(crate) fn mechanism(model: Model) -> &'static str {
    match model {
        Model::Blocking => blocking::MECHANISM,
        Model::Select => select::MECHANISM,
        Model::EventSelect => event_select::MECHANISM,
        Model::AsyncSelect => async_select::MECHANISM,
        Model::OverlappedEvent => overlapped_event::MECHANISM,
        Model::OverlappedRoutine => overlapped_routine::MECHANISM,
        Model::CompletionPort => completion_port::MECHANISM,
    }
}

/// Whether `model` can run in this build on this OS.
pub(crate) fn availability(model: Model) -> Result<(), String> {
    match model {
        Model::Blocking => blocking::availability(),
        Model::Select => select::availability(),
        Model::EventSelect => event_select::availability(),
        Model::AsyncSelect => async_select::availability(),
        Model::OverlappedEvent => overlapped_event::availability(),
        Model::OverlappedRoutine => overlapped_routine::availability(),
        Model::CompletionPort => completion_port::availability(),
    }
}

/// What a model makes at bind, before it serves anything, so that a start that cannot succeed
/// fails there, with one line, instead of a worker failing later: on Linux, every
/// `completion-port` worker's ring, provided buffers and waker. Workers take theirs from
/// `Ctx::prepared`.
#[cfg(target_os = "linux")]
pub(crate) use uring::Prepared;

/// What a model makes at bind: nothing, on this OS.
#[cfg(not(target_os = "linux"))]
#[derive(Default)]
pub(crate) struct Prepared;

/// Makes what `model` needs before it serves ([`Prepared`]).
#[cfg(target_os = "linux")]
pub(crate) fn prepare(
    model: Model,
    listener: Option<&TcpListener>,
    ctx: &Ctx,
) -> io::Result<Prepared> {
    match model {
        Model::CompletionPort => completion_port::prepare(ctx, listener),
        _ => Ok(Prepared::default()),
    }
}

/// Makes what `model` needs before it serves: nothing, on this OS.
#[cfg(not(target_os = "linux"))]
pub(crate) fn prepare(
    _model: Model,
    _listener: Option<&TcpListener>,
    _ctx: &Ctx,
) -> io::Result<Prepared> {
    Ok(Prepared)
}

/// Serves `listener` (and `ctx.udp`) with `model` until shutdown and drain are over.
pub(crate) fn run(model: Model, listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    match model {
        Model::Blocking => blocking::run(listener, ctx),
        Model::AsyncSelect => async_select::run(listener, ctx),
        Model::Select => select::run(listener, ctx),
        Model::EventSelect => event_select::run(listener, ctx),
        Model::OverlappedEvent => overlapped_event::run(listener, ctx),
        Model::OverlappedRoutine => overlapped_routine::run(listener, ctx),
        Model::CompletionPort => completion_port::run(listener, ctx),
    }
}
