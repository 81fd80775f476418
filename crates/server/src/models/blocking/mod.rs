//! # `blocking`: a thread per client
//!
//! **Winsock original.** The simplest server of the chapter: `accept` in a loop, and a thread
//! per accepted socket that calls blocking `recv` and `send` until the client goes away. Easy to
//! write and to read — each connection's logic is straight-line code — and it scales with
//! threads, not with sockets.
//!
//! **Linux counterpart.** The same: an acceptor thread and a thread per client (64 KiB stack,
//! 64 KiB read buffer on the heap) calling [`crate::session::Session::pump`] on a blocking
//! socket — one blocking recv per call — until the connection ends. A blocking `send` is the
//! backpressure: the thread stops reading while its peer is not reading.
//!
//! **Limits.** Threads: each costs a stack, a kernel task and scheduler work, and the process
//! runs out of them long before it runs out of descriptors. On Linux the first wall is
//! `vm.max_map_count` (65,530 mappings by default; a thread takes about four — stack, signal
//! stack, their guard pages): past ~16,000 threads a new thread cannot map its signal stack and
//! Rust aborts the *whole process*. So the model caps its client threads below that (a quarter
//! of the mapping limit less a margin, and at most half of `kernel.threads-max` and of
//! `kernel.pid_max`: 15,358 here);
//! a connection past the cap, or one whose thread cannot be spawned, is closed at once, counted
//! in `Stats::refused`, and logged (at most a line a second, `log_every!`).
//!
//! **Server limits.** `--max-conns`: at the cap the acceptor stops accepting and looks again
//! every 20 ms (the listener stays readable, and a client thread ending does not wake it).
//! `--idle-timeout` and `--write-timeout` are the socket's own timeouts, `SO_RCVTIMEO` and
//! `SO_SNDTIMEO` (Windows: the same options in milliseconds): a recv that waits that long, or
//! a send that moves no byte that long, fails and the pump closes the connection and counts it
//! (`idle_closed`, `slow_reader_closed`). So here the write timeout runs whenever a send waits,
//! not only at the high-water mark: a blocking send is this model's backpressure.
//! `--handshake-timeout` (TLS): until the handshake is complete, each recv's `SO_RCVTIMEO` is
//! the time left to the deadline (or the idle timeout if shorter), set before each recv, and
//! a recv that times out then closes the connection as `tls_handshake_timeouts`; a peer
//! trickling bytes gets each recv shortened until none is left. Then the idle timeout is put
//! back: one `setsockopt` per recv during the handshake only.
//!
//! **UDP** (`--udp`). A thread of its own (the acceptor's thread when there is no TCP listener)
//! waits on the UDP socket and the shutdown waker — `poll` on Linux, `select` on Windows —
//! and answers up to 64 datagrams per wake-up (`udp.rs`): the socket stays non-blocking, so a
//! full send buffer drops an answer instead of stalling the thread. A blocking `recvfrom`
//! would be the book's version, but nothing portable interrupts it at shutdown.
//!
//! **Windows.** The same code over Winsock: the acceptor waits in `select` on the listener and
//! the waker's socket, the UDP thread in `select` on the UDP socket and the waker's socket, the
//! drain wakes client threads with `shutdown(SD_BOTH)`, and the thread cap is a plain 8,192 (no
//! mapping-count wall there). A datagram larger than the buffer makes `WSARecvFrom` fail with
//! `WSAEMSGSIZE` (the first bytes copied, the rest dropped); socket2 turns that into the
//! truncated flag, so it is counted and dropped as on Linux (Wine 8 does the same).
//!
//! **Pitfalls.** A thread blocked in `recv` does not see a shutdown flag: to end the drain the
//! acceptor shuts down (`shutdown(SHUT_RDWR)`) every socket still open, which wakes its thread.
//! The acceptor itself waits in `poll` on the listener and the wake-up eventfd, since a blocking
//! `accept` cannot be interrupted portably. Out of descriptors (EMFILE), accepting pauses for
//! 100 ms ([`crate::accept`]); the listener stays readable meanwhile, so during the pause the
//! acceptor waits on the waker alone until the pause ends — waiting on the listener too made a
//! busy loop (a million wake-ups and 1.4 s of CPU in 2 s, measured; 94 wake-ups and no measurable
//! CPU after the fix, client threads included).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

use crate::accept::Acceptor;
use crate::ctx::Ctx;
use crate::log_every::log_every;
use crate::models::{min_timeout, Drain};
use crate::session::{Session, Status, READ_CHUNK};
use crate::threads::{join_worker, lock};
use crate::trace::trace_event;
use crate::udp::{self, ReadinessUdpEcho};
use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use crate::sys::release_free_memory;
#[cfg(target_os = "linux")]
use linux::{force_shutdown, raw_id, thread_cap, wait_for_client, wait_for_datagram, RawId};
#[cfg(windows)]
use windows::{
    force_shutdown, raw_id, release_free_memory, thread_cap, wait_for_client, wait_for_datagram,
    RawId,
};

/// The most client threads this model runs on this machine (past it a client is refused):
/// what `bench` compares a ramp against. The OS file says how it is computed.
#[cfg(any(target_os = "linux", windows))]
pub fn max_threads() -> usize {
    thread_cap()
}

/// What `--trace` calls a socket's raw name.
#[cfg(target_os = "linux")]
const RAW_NAME: &str = "fd";
#[cfg(windows)]
const RAW_NAME: &str = "s";

/// How often the acceptor looks again while the server is at its connection cap: it cannot
/// wait for the listener (it stays readable with clients in the backlog), and a client thread
/// ending does not wake it.
const CAP_RECHECK: Duration = Duration::from_millis(20);

/// Stack size of a client thread: the pump needs little, and thousands of threads add up.
const CLIENT_STACK: usize = 64 * 1024;

pub(crate) const MECHANISM: &str = "a thread per client, blocking recv/send";

pub(crate) fn availability() -> Result<(), String> {
    if cfg!(any(target_os = "linux", windows)) {
        Ok(())
    } else {
        Err("not built for this OS yet (issue #5)".into())
    }
}

/// The sockets of live client threads, so the drain can wake them. A thread removes its entry
/// and closes its socket under this lock, so a socket found here is always still open.
type Live = Arc<Mutex<HashMap<u64, RawId>>>;

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    match (listener, &ctx.udp) {
        (Some(listener), None) => serve_tcp(listener, ctx),
        (None, Some(udp)) => serve_udp(udp, ctx),
        // UDP gets a thread of its own beside the acceptor, as a client would.
        (Some(listener), Some(udp)) => std::thread::scope(|scope| {
            let udp_thread = std::thread::Builder::new()
                .name("udp".into())
                .spawn_scoped(scope, || {
                    let served = serve_udp(udp, ctx);
                    if served.is_err() {
                        ctx.shutdown.trigger(); // as a failed acceptor does: stop, and say why
                    }
                    served
                })?;
            let tcp = serve_tcp(listener, ctx);
            if tcp.is_err() {
                ctx.shutdown.trigger(); // the UDP thread must not outlive a failed acceptor
            }
            let udp = join_worker(udp_thread.join(), "the UDP thread panicked");
            tcp.and(udp)
        }),
        (None, None) => Ok(()),
    }
}

/// The UDP thread: waits in `poll` until the socket is readable (or shutdown wakes it), then
/// answers what waits, until shutdown begins.
fn serve_udp(udp: &UdpSocket, ctx: &Ctx) -> io::Result<()> {
    let waker = ctx.shutdown.register()?;
    let mut echo = ReadinessUdpEcho::new(ctx);
    let raw = raw_id(udp);
    while !ctx.shutdown.is_requested() {
        let (readable, wake) = wait_for_datagram(udp, &waker, None)?;
        ctx.stats.count_wait();
        if wake {
            waker.reset();
        }
        if readable {
            trace_event!(ctx.trace, "udp readable {RAW_NAME}={raw}");
            echo.serve(udp, ctx, udp::BUDGET);
        }
    }
    Ok(())
}

/// Gives the memory freed by ended client threads back to the OS, at most once a second and
/// only when some have ended since the last time ([`release_free_memory`]: glibc keeps it
/// otherwise, scattered over its arenas, and the RSS of a server with connection churn grew
/// by megabytes of free memory).
struct Trim {
    /// Connections over (`accepted - active`) at the last trim.
    over_at: i64,
    last: Instant,
}

impl Trim {
    const EVERY: Duration = Duration::from_secs(1);

    fn new() -> Trim {
        Trim {
            over_at: 0,
            last: Instant::now(),
        }
    }

    fn over(ctx: &Ctx) -> i64 {
        ctx.stats.accepted.load(Relaxed) as i64 - ctx.stats.active.load(Relaxed)
    }

    /// How long the acceptor may wait before a trim is due; `None` when none is.
    fn wait_limit(&self, ctx: &Ctx) -> Option<Duration> {
        (Trim::over(ctx) != self.over_at).then(|| Trim::EVERY.saturating_sub(self.last.elapsed()))
    }

    fn run_if_due(&mut self, ctx: &Ctx) {
        let over = Trim::over(ctx);
        if over != self.over_at && self.last.elapsed() >= Trim::EVERY {
            release_free_memory();
            self.over_at = over;
            self.last = Instant::now();
        }
    }
}

/// The acceptor: a thread per client until shutdown, then the drain.
fn serve_tcp(listener: TcpListener, ctx: &Ctx) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let waker = ctx.shutdown.register()?;
    let mut acceptor = Acceptor::new(listener, ctx);
    let live: Live = Arc::default();
    let mut next_id = 0u64;
    let cap = thread_cap();
    let mut drain = Drain::new(ctx.drain_timeout);
    let mut trim = Trim::new();

    while !drain.begins(&ctx.shutdown) {
        if acceptor.at_cap() {
            std::thread::sleep(CAP_RECHECK);
            continue;
        }
        // Out of descriptors (the EMFILE back-off), the listener stays readable: waiting on
        // it would return at once, again and again, until the pause ends. Wait for the waker
        // or the end of the pause instead.
        let accepting = acceptor.is_accepting();
        let listener = accepting.then_some(&acceptor.listener);
        let limit = min_timeout(acceptor.pause_remaining(), trim.wait_limit(ctx));
        let (client, wake) = wait_for_client(listener, &waker, limit)?;
        ctx.stats.count_wait();
        trim.run_if_due(ctx);
        if wake {
            waker.reset();
        }
        if client && accepting {
            acceptor.accept_batch(64, &ctx.stats, |stream| {
                next_id += 1;
                let refused = match spawn_client(stream, next_id, ctx, &live, cap) {
                    Ok(()) => return,
                    Err(Refused::AtCap) => format!(
                        "{cap} client threads is the most this process can run \
                         (vm.max_map_count, threads-max, pid_max)"
                    ),
                    Err(Refused::Failed(e)) => {
                        format!("cannot serve a client on a thread of its own ({e})")
                    }
                };
                ctx.stats.refused.fetch_add(1, Relaxed);
                log_every!(warn, "blocking: {refused}; connection closed");
            })?;
        }
    }
    drop(acceptor);

    // Drain: client threads go on until their clients leave or the deadline passes.
    let open = || lock(&live).len();
    while !drain.is_over(open()) {
        std::thread::sleep(Duration::from_millis(10).min(drain.wait_limit().unwrap_or_default()));
    }
    for id in lock(&live).values() {
        force_shutdown(*id);
    }
    // The woken threads exit at once; give them a moment so their sockets close before we
    // return.
    for _ in 0..100 {
        if open() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Why a connection got no thread (it was closed).
enum Refused {
    /// The process is at its thread cap.
    AtCap,
    /// The socket could not be made blocking, or the OS would not start another thread.
    Failed(io::Error),
}

/// Serves `stream` on a thread of its own, or closes it.
fn spawn_client(
    stream: TcpStream,
    id: u64,
    ctx: &Ctx,
    live: &Live,
    cap: usize,
) -> Result<(), Refused> {
    stream.set_nonblocking(false).map_err(Refused::Failed)?;
    // The limits of a blocking socket: a recv that waits longer than the idle timeout, or a
    // send that moves nothing for the write timeout, fails, and the pump closes the connection
    // as idle or as a slow reader.
    stream
        .set_read_timeout(ctx.idle_timeout)
        .and_then(|()| stream.set_write_timeout(ctx.write_timeout))
        .map_err(Refused::Failed)?;
    // Registering, spawning and (on failure) closing all happen under the lock, so the
    // registry never names a closed socket.
    let mut registry = lock(live);
    if registry.len() >= cap {
        return Err(Refused::AtCap);
    }
    let raw = raw_id(&stream);
    registry.insert(id, raw);
    trace_event!(ctx.trace, "accept {RAW_NAME}={raw} (thread client-{id})");
    let mut session = Session::new(stream, ctx);
    session.readable = true;
    session.blocking = true;
    let stats = Arc::clone(&ctx.stats);
    let trace = ctx.trace.clone();
    let thread_live = Arc::clone(live);
    let idle = ctx.idle_timeout;
    let spawned = std::thread::Builder::new()
        .name(format!("client-{id}"))
        .stack_size(CLIENT_STACK)
        .spawn(move || {
            let mut scratch = vec![0u8; READ_CHUNK];
            // One blocking recv per call: each is this thread's wait for its client.
            loop {
                // TLS: until the handshake is complete, each recv waits at most until the
                // handshake deadline.
                if !session.arm_handshake_deadline(idle) {
                    break;
                }
                let eof_before = session.conn.peer_eof();
                let (status, n) = session.pump_counted(&mut scratch, 1);
                stats.waits.fetch_add(1, Relaxed);
                if n > 0 || session.conn.peer_eof() != eof_before {
                    trace_event!(trace, "recv {RAW_NAME}={raw} n={n}");
                }
                if status == Status::Closed {
                    break;
                }
            }
            trace_event!(trace, "thread client-{id} ends ({RAW_NAME}={raw} closed)");
            let mut live = lock(&thread_live);
            live.remove(&id);
            drop(session); // closes the socket while the lock is held
        });
    spawned.map(drop).map_err(|e| {
        // The closure (and the session in it) was dropped, closing the socket.
        registry.remove(&id);
        Refused::Failed(e)
    })
}
