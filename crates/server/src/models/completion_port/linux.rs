//! io_uring: a ring per worker, SO_REUSEPORT listeners, multishot accept and recv, a
//! provided-buffer ring per worker.

use crate::models::uring::{Engine, EngineConfig, Recv};
use crate::Ctx;
use std::io;
use std::net::TcpListener;

pub(crate) const MECHANISM: &str = "io_uring, a ring per worker, multishot recv";

pub(crate) fn availability() -> Result<(), String> {
    crate::sys::uring::probe()
}

const CONFIG: EngineConfig = EngineConfig {
    recv: Recv::Multishot,
    accepts: 0,
    routines: None,
    ring_entries: 4096,
};

pub(crate) fn run(listener: TcpListener, ctx: &Ctx) -> io::Result<()> {
    let addr = listener.local_addr()?;
    // Every worker's listener exists before any worker runs, so no connection lands on a port
    // nobody serves; worker 0 uses the one `Server::bind` opened (with SO_REUSEPORT).
    let mut listeners = vec![listener];
    for _ in 1..ctx.workers {
        listeners.push(crate::listen(addr, true)?);
    }
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        let mut rest = listeners.into_iter();
        let first = rest.next().expect("at least one worker");
        for (i, listener) in rest.enumerate() {
            let worker = std::thread::Builder::new()
                .name(format!("cp-worker-{}", i + 1))
                .spawn_scoped(scope, move || Engine::new(ctx, listener, CONFIG)?.run())?;
            workers.push(worker);
        }
        let mut result = Engine::new(ctx, first, CONFIG).and_then(Engine::run);
        if result.is_err() {
            // One worker failed: stop the others too.
            ctx.shutdown.trigger();
        }
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a completion-port worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}
