//! The I/O models, one module each, the dispatch to them, and what they share: one turn's
//! deadlines ([`Turn`]: the drain on shutdown, the timeout sweep).
//!
//! Every model is a function `run(listener, ctx)` that serves until shutdown is requested,
//! then stops accepting, lets open connections finish for the drain timeout, closes what is
//! left and returns. Its loop turns the way `turn.rs` describes, so the model's code shows only
//! its wait and its dispatch. The listener is `None` when the server serves UDP alone; the UDP
//! socket, when there is one, is `ctx.udp`, and a model stops reading it when shutdown begins
//! (a datagram has nothing to drain). `ctx` is the shared context (`crate::ctx`, which knows
//! nothing of this module). A model that must make something before it serves (so that a start
//! that cannot succeed fails at bind) takes it as a third argument, `run(listener, ctx,
//! prepared)`, of a type that implements `Prepare`: `start` makes it at bind and hands it
//! over; a model that makes nothing does not know about it. Each module opens with a doc
//! naming the Winsock original, the Linux counterpart, the limits and the pitfalls.
//!
//! The list of models is one table, [`crate::for_each_model!`] (in `model.rs`): the
//! dispatch below (`mechanism`, `availability`, `start`) is made from its rows, each
//! naming the model's module here, which provides `MECHANISM`, `availability()` and `run`.

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

use crate::ctx::Ctx;
use crate::Model;
use std::io;
use std::net::TcpListener;

pub(crate) use turn::{min_timeout, Drain, Turn};

/// A model ready to serve: its `run` with what it made at bind moved in ([`start`]).
pub(crate) type Run = Box<dyn FnOnce(Option<TcpListener>, &Ctx) -> io::Result<()> + Send>;

/// What a model makes at bind, before it serves anything, so that a start that cannot succeed
/// fails there, with one line, instead of a worker failing later (on Linux, `completion-port`'s
/// rings, provided buffers and wakers, one set per worker). A model whose `run` takes a third
/// argument gets it made by that type's `prepare` at bind ([`Start`]).
pub(crate) trait Prepare: Sized + Send + 'static {
    /// Makes it: `listener` is the one `Server::bind` opened, `ctx` complete.
    fn prepare(listener: Option<&TcpListener>, ctx: &Ctx) -> io::Result<Self>;
}

/// A model's `run` of either shape: `run(listener, ctx)`, for a model that makes nothing at
/// bind (it need not know this trait exists), or `run(listener, ctx, prepared)` with
/// `prepared` of a type that implements [`Prepare`]. `Shape` only tells the two apart.
pub(crate) trait Start<Shape> {
    /// Makes what the model needs at bind (if anything) and returns its `run` with it.
    fn start(self, listener: Option<&TcpListener>, ctx: &Ctx) -> io::Result<Run>;
}

impl<F> Start<()> for F
where
    F: FnOnce(Option<TcpListener>, &Ctx) -> io::Result<()> + Send + 'static,
{
    fn start(self, _listener: Option<&TcpListener>, _ctx: &Ctx) -> io::Result<Run> {
        Ok(Box::new(self))
    }
}

impl<F, P> Start<(P,)> for F
where
    F: FnOnce(Option<TcpListener>, &Ctx, P) -> io::Result<()> + Send + 'static,
    P: Prepare,
{
    fn start(self, listener: Option<&TcpListener>, ctx: &Ctx) -> io::Result<Run> {
        let prepared = P::prepare(listener, ctx)?;
        Ok(Box::new(move |listener, ctx: &Ctx| {
            self(listener, ctx, prepared)
        }))
    }
}

/// The dispatch to a model, made from the table of models ([`crate::for_each_model!`]): a
/// row's `module` provides `MECHANISM`, `availability()` and `run` (from its OS file, `linux.rs` or `windows.rs`).
macro_rules! dispatch {
    (models: [$($(#[$doc:meta])* $variant:ident, $name:literal, $module:ident;)*]) => {
        /// The mechanism behind `model` on this OS.
        pub(crate) fn mechanism(model: Model) -> &'static str {
            match model {
                $(Model::$variant => $module::MECHANISM,)*
            }
        }

        /// Whether `model` can run in this build on this OS.
        pub(crate) fn availability(model: Model) -> Result<(), String> {
            match model {
                $(Model::$variant => $module::availability(),)*
            }
        }

        /// Makes what `model` needs before it serves ([`Prepare`], if its `run` asks for
        /// anything) and returns its `run`, which serves `listener` (and `ctx.udp`) until
        /// shutdown and drain are over.
        pub(crate) fn start(
            model: Model,
            listener: Option<&TcpListener>,
            ctx: &Ctx,
        ) -> io::Result<Run> {
            match model {
                $(Model::$variant => Start::start($module::run, listener, ctx),)*
            }
        }
    };
}

crate::for_each_model!(dispatch! {});
