//! io_uring: a ring per worker, multishot accept and recv, a provided-buffer ring per worker;
//! connections spread by SO_REUSEPORT listeners or handed out by one acceptor.

use crate::ctx::{AcceptMode, Ctx};
use crate::models::uring::{Engine, EngineConfig, Handoff, Parts, Prepared, Recv, Spill};
use crate::models::Prepare;
use crate::threads::{join_workers, lock};
use crate::{DirectDescriptors, Model, ServerConfig};
use std::io;
use std::net::TcpListener;
use std::os::fd::RawFd;
use std::sync::{Arc, Barrier, Mutex};

pub(crate) const MECHANISM: &str = "io_uring, a ring per worker, multishot recv";

pub(crate) fn availability() -> Result<(), String> {
    crate::sys::uring::probe()
}

/// Whether the kernel supports what direct descriptors need (probed once).
pub(crate) fn direct_support() -> Result<(), String> {
    crate::sys::uring::probe_direct()
}

/// The slots of each worker's fixed-file table when `config` runs `completion-port` on direct
/// descriptors: the descriptor limit (`RLIMIT_NOFILE`'s soft limit, which `serve` raises to the
/// hard one; the kernel refuses a larger table), `None` for ordinary descriptors — said in one
/// log line when direct descriptors were wanted but are not supported here.
pub(crate) fn direct_table(config: &ServerConfig) -> Option<usize> {
    if config.model != Model::CompletionPort || !config.tcp {
        return None;
    }
    if config.direct_descriptors == DirectDescriptors::Off {
        log::debug!("completion-port: ordinary descriptors (--direct-descriptors off)");
        return None;
    }
    if let Err(why) = direct_support() {
        log::info!("completion-port: ordinary descriptors (direct descriptors unavailable: {why})");
        return None;
    }
    let limit = crate::sys::nofile_soft_limit().unwrap_or(1024);
    Some(usize::try_from(limit.min(u64::from(u32::MAX / 2))).unwrap_or(1024))
}

const CONFIG: EngineConfig = EngineConfig {
    recv: Recv::Multishot,
    accepts: 0,
    routines: None,
    ring_entries: 4096,
};

/// At bind: every worker's ring (with its provided buffers) and waker, and with reuse-port
/// the listeners of workers 1.. (worker 0 has `listener`, the one `Server::bind` opened), so
/// that nothing is made once connections are being accepted (a worker starting late would
/// find the descriptors taken, fail, and stop the server), the server holds every descriptor
/// it keeps from its ready line on, and a limit too low for them all refuses the start with
/// one line.
fn prepare(ctx: &Ctx, listener: Option<&TcpListener>) -> io::Result<Prepared> {
    let reuse_port = match (ctx.accept_mode, listener) {
        (AcceptMode::ReusePort, Some(l)) => Some(l.local_addr()?),
        _ => None,
    };
    let parts = (0..ctx.workers)
        .map(|i| {
            let why = |e: io::Error, what| {
                let n = ctx.workers;
                io::Error::new(
                    e.kind(),
                    format!("cannot make the {what} of completion-port worker {i} of {n}: {e}"),
                )
            };
            let parts = Parts::for_a_worker(ctx, &CONFIG).map_err(|e| why(e, "io_uring ring"))?;
            match reuse_port {
                Some(addr) if i > 0 => {
                    let own = crate::listen(addr, true).map_err(|e| why(e, "listener"))?;
                    Ok(parts.with_listener(own))
                }
                _ => Ok(parts),
            }
        })
        .collect::<io::Result<Vec<Parts>>>()?;
    Ok(Prepared::new(parts))
}

/// What `run` gets from bind: every worker's parts ([`prepare`]).
impl Prepare for Prepared {
    fn prepare(listener: Option<&TcpListener>, ctx: &Ctx) -> io::Result<Prepared> {
        prepare(ctx, listener)
    }
}

/// The engine of worker `i`, on its parts made at bind; `listener` is worker 0's.
fn engine<'a>(
    ctx: &'a Ctx,
    prepared: &Prepared,
    i: usize,
    listener: Option<TcpListener>,
) -> io::Result<Engine<'a>> {
    Engine::from_parts(ctx, listener, CONFIG, prepared.take(i)?)
}

/// Serves with the workers' parts made at bind ([`Prepared`]).
pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx, prepared: Prepared) -> io::Result<()> {
    match ctx.accept_mode {
        AcceptMode::ReusePort => run_reuseport(listener, ctx, &prepared),
        AcceptMode::Handoff => run_handoff(listener, ctx, &prepared),
    }
}

/// Each worker accepts on its own SO_REUSEPORT listener (none when serving UDP alone).
fn run_reuseport(listener: Option<TcpListener>, ctx: &Ctx, prepared: &Prepared) -> io::Result<()> {
    // Every worker's listener exists before any worker runs (made at bind with its ring), so
    // no connection lands on a port nobody serves; worker 0 uses the one `Server::bind`
    // opened (with SO_REUSEPORT).
    let listener = match (ctx.direct_table, listener) {
        (Some(_), Some(listener)) => {
            // Direct descriptors: a worker whose table is full must not strand its listener's
            // backlog, so every worker can accept on every listener (`engine/accept.rs`).
            let spill = spill(listener, ctx, prepared);
            return run_workers(ctx, |i| {
                let engine = engine(ctx, prepared, i, None)?.with_spill(Arc::clone(&spill), i);
                worker(engine, i).run()
            });
        }
        (_, listener) => listener,
    };
    let listener = Mutex::new(listener);
    run_workers(ctx, |i| {
        let own = if i == 0 { lock(&listener).take() } else { None };
        worker(engine(ctx, prepared, i, own)?, i).run()
    })
}

/// Every worker's listener, `listener` as worker 0's (the others were made at bind), in one
/// [`Spill`], worker `i`'s at index `i`.
fn spill(listener: TcpListener, ctx: &Ctx, prepared: &Prepared) -> Arc<Spill> {
    let mut listeners = vec![listener];
    listeners.extend((1..ctx.workers).filter_map(|i| prepared.take_listener(i)));
    Arc::new(Spill::new(listeners))
}

/// Names the engine's worker; worker 0 also serves the UDP socket. One socket read by one ring
/// keeps the datagram path simple and the bind unchanged; `SO_REUSEPORT` UDP sockets, one per
/// worker, would spread datagrams by the sender's address hash — worth it once one worker's
/// ring is the UDP bottleneck, which two cores here cannot show.
fn worker(engine: Engine<'_>, i: usize) -> Engine<'_> {
    let engine = engine.with_worker(i);
    if i == 0 {
        engine.with_udp()
    } else {
        engine
    }
}

/// Worker 0 accepts for everyone and hands sockets out round-robin through the other
/// workers' rings.
fn run_handoff(listener: Option<TcpListener>, ctx: &Ctx, prepared: &Prepared) -> io::Result<()> {
    let listener = Mutex::new(listener);
    let rings: Mutex<Vec<Option<RawFd>>> = Mutex::new(vec![None; ctx.workers]);
    // The rings exist since bind, but each is enabled by its own worker, and a ring still
    // disabled refuses a MSG_RING: worker 0 hands out nothing until every worker has enabled
    // its ring.
    let all_created = Barrier::new(ctx.workers);
    run_workers(ctx, |i| {
        let own = if i == 0 { lock(&listener).take() } else { None };
        let engine = engine(ctx, prepared, i, own);
        lock(&rings)[i] = engine.as_ref().ok().map(Engine::ring_fd);
        all_created.wait();
        let mut engine = worker(engine?, i);
        if i == 0 {
            let fds: Option<Vec<RawFd>> = lock(&rings).iter().copied().collect();
            let fds =
                fds.ok_or_else(|| io::Error::other("a worker's ring could not be enabled"))?;
            engine.hand_off_to(Handoff::new(fds, 0));
        }
        engine.run()
    })
}

/// Runs `worker(i)` for every worker, 0 on this thread; if one fails, stops the others, and
/// returns the first error.
fn run_workers(ctx: &Ctx, worker: impl Fn(usize) -> io::Result<()> + Sync) -> io::Result<()> {
    std::thread::scope(|scope| {
        let worker = &worker;
        let mut threads = Vec::new();
        for i in 1..ctx.workers {
            let t = std::thread::Builder::new()
                .name(format!("cp-worker-{i}"))
                .spawn_scoped(scope, move || {
                    let r = worker(i);
                    if r.is_err() {
                        ctx.shutdown.trigger();
                    }
                    r
                })?;
            threads.push(t);
        }
        let result = worker(0);
        if result.is_err() {
            ctx.shutdown.trigger();
        }
        let joined = threads.into_iter().map(|t| t.join());
        join_workers(result, joined, "a completion-port worker panicked")
    })
}
