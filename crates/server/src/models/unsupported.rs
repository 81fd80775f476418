//! Stand-in for a model's OS file on an OS that has none: each model's `mod os` takes this file
//! by `#[path]` there, and `select` re-exports it.

use crate::ctx::Ctx;
use std::io;
use std::net::TcpListener;

pub(crate) const MECHANISM: &str = "none on this OS";

pub(crate) fn availability() -> Result<(), String> {
    Err("not built for this OS yet (issue #5)".into())
}

pub(crate) fn run(_listener: Option<TcpListener>, _ctx: &Ctx) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        availability().unwrap_err(),
    ))
}
