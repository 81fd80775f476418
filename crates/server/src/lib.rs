//! # iomodels-server: every socket I/O model behind one server API
//!
//! [`Server::bind`] opens a listening socket (and, with [`ServerConfig::udp`], a UDP socket on
//! the same port) for a [`ServerConfig`]; [`Server::run`] serves them with the configured
//! [`Model`] until [`Shutdown::trigger`] is called. The protocol (echo or
//! discard), the buffering and the backpressure come from `iomodels-core`; a model only decides
//! how the server learns that a socket is ready or that an operation completed.
//!
//! Map: `model.rs` has the table of models, from which [`Model`] and the dispatch are made;
//! `ctx.rs` the shared context every model gets; `models/` has one module per model (its doc
//! first, its OS file beside it); `sys/` owns every OS resource behind an RAII type;
//! `session.rs` is the read/write loop the readiness models share; `accept.rs` the accept loop
//! with its descriptor-exhaustion back-off; `udp.rs` the datagram echo the readiness models
//! share; `limits.rs` the connection cap and the idle and write timeouts every model enforces
//! with the same code.
#![warn(missing_docs)]

mod accept;
mod ctx;
mod limits;
pub mod log_every;
mod model;
pub mod models;
mod session;
mod shutdown;
mod stats;
pub mod sys;
mod threads;
mod trace;
mod udp;

pub use ctx::{AcceptMode, RecvBuffers};
pub use limits::{
    descriptor_cap, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_WRITE_TIMEOUT, MAX_HANDSHAKE_TIMEOUT,
    RESERVED_DESCRIPTORS, RESERVED_DIRECT_SLOTS,
};
pub use model::Model;
pub use shutdown::Shutdown;
pub use stats::{Stats, StatsSnapshot};
pub use udp::REFLECTING_PORTS as UDP_REFLECTING_PORTS;

use ctx::Ctx;
use iomodels_core::{Limits, ServiceKind};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The listen backlog: the kernel queues this many completed handshakes before `accept`.
const BACKLOG: i32 = 4096;

/// What to serve, where and how.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The I/O model.
    pub model: Model,
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The service every connection runs.
    pub service: ServiceKind,
    /// The high-water mark of unsent output per connection, in bytes (backpressure).
    pub max_pending: usize,
    /// How long open connections may go on after shutdown is requested.
    pub drain_timeout: Duration,
    /// Worker threads of the `completion-port` model (`None`: one per CPU).
    pub workers: Option<usize>,
    /// The provided-buffer ring the io_uring models receive from (Linux: one ring for
    /// `overlapped-event` and `overlapped-routine`, one per `completion-port` worker).
    pub recv_buffers: RecvBuffers,
    /// The provided-buffer ring is consumed incrementally (`--recv-incremental`,
    /// `IOU_PBUF_RING_INC`, Linux 6.12+): a receive takes only the bytes it needs of a buffer,
    /// the next one goes on after it. On by default; without kernel support, off with one
    /// log line.
    pub recv_incremental: bool,
    /// A plaintext echo on the io_uring models sends received bytes straight from their
    /// provided buffer, while half the ring stays free (`--pass-through`, on by default);
    /// off: copied into the connection's output first.
    pub pass_through: bool,
    /// How the `completion-port` workers get their connections.
    pub accept_mode: AcceptMode,
    /// The io_uring models (`completion-port`, `overlapped-event`, `overlapped-routine` on
    /// Linux) wait for several completions at once, holding the first for at most this long
    /// (`--batch-wait`, io_uring's min-wait, Linux 6.12+): fewer wake-ups per message at low
    /// rates, at the cost of up to this much added latency. `None` (or zero): each wait returns
    /// at its first completion. [`DEFAULT_BATCH_WAIT`] (off) by default; at most
    /// [`BATCH_WAIT_MAX`].
    /// Ignored elsewhere, and with one log line where the kernel has no min-wait.
    pub batch_wait: Option<Duration>,
    /// Print every notification the model receives on stderr (`--trace`), rate-limited.
    pub trace: bool,
    /// Speak TLS on every connection with this configuration (see
    /// [`iomodels_core::tls::server_config`]); `None`: plain TCP. The model does not change:
    /// the TLS session lives inside each connection's state machine.
    pub tls: Option<Arc<iomodels_core::rustls::ServerConfig>>,
    /// Serve TCP (the default). With `tcp: false` there is no listener at all (a TCP connect
    /// is refused); `udp` must then be on.
    pub tcp: bool,
    /// Also serve the service over UDP (RFC 862 echo: each datagram answered with one datagram
    /// of the same bytes, to its sender), on the TCP listener's port, by every model.
    pub udp: bool,
    /// The largest datagram the server receives whole (its UDP receive buffer), 65,536 bytes
    /// by default: every IPv4 datagram fits. A larger one is counted
    /// ([`Stats::udp_truncated`]) and dropped, never echoed cut short.
    pub udp_max_datagram: usize,
    /// More source ports whose datagrams are never answered (`--udp-drop-ports`), besides
    /// those always dropped: 0, the server's own UDP port and [`UDP_REFLECTING_PORTS`] (and a
    /// datagram from the server's own address and port). Counted in
    /// [`Stats::udp_loop_dropped`]. Empty by default; no port 0.
    pub udp_drop_ports: Vec<u16>,
    /// The most connections open at once (`--max-conns`): at the cap the model stops accepting
    /// and new clients wait in the kernel's listen backlog until a connection closes; none is
    /// ever accepted and dropped. `None` (the default): the descriptor limit (`RLIMIT_NOFILE`
    /// when the server binds) less 64, or a quarter of a limit below 256 ([`descriptor_cap`]),
    /// so accept stops at the cap before it would fail with `EMFILE`, and the server keeps
    /// descriptors for itself; `select` on Linux at most [`SELECT_DEFAULT_CAP`]; on Windows
    /// (no descriptor limit) no cap. `completion-port` on direct descriptors: the slots of
    /// every worker's table (the descriptor limit each) less [`RESERVED_DIRECT_SLOTS`].
    pub max_conns: Option<usize>,
    /// Close a connection when no byte has moved either way for this long (`--idle-timeout`).
    /// `None` (the default): never, for echo's sake — an echo client may legitimately wait
    /// forever between messages.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose peer leaves its output unread at the high-water mark
    /// (`max_pending`, reading from it paused) for this long (`--write-timeout`), the
    /// slow-reader guard. [`DEFAULT_WRITE_TIMEOUT`] (60 s) by default; `None`: never.
    pub write_timeout: Option<Duration>,
    /// With TLS, close a connection whose handshake is not complete this long after it was
    /// accepted (`--handshake-timeout`): a hard deadline that no trickle of bytes extends,
    /// counted in [`Stats::tls_handshake_timeouts`]. [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s) by
    /// default, at most [`MAX_HANDSHAKE_TIMEOUT`]; `None`: never. Plaintext ignores it.
    pub handshake_timeout: Option<Duration>,
    /// Whether `completion-port` (Linux) keeps its connections as io_uring direct descriptors,
    /// outside the process's descriptor table (`--direct-descriptors`): `Auto` (the default)
    /// where the kernel supports them ([`direct_descriptors_support`]), `Off` for ordinary
    /// descriptors. Other models and OSes ignore it.
    pub direct_descriptors: DirectDescriptors,
    /// `async-select` on Windows: the most sockets one message-only window (one thread, one
    /// message queue) serves (`--sockets-per-window`); past it the model starts another
    /// window on a thread of its own. `None`: [`SOCKETS_PER_WINDOW`], the most for which a
    /// window's message queue cannot overflow ([`models::async_select`] has the arithmetic);
    /// 1 to that. Linux ignores it (its signal queue is per user, not per thread), with one
    /// log line.
    pub sockets_per_window: Option<usize>,
    /// Tests only: `async-select` on Windows fails every Nth message it posts itself
    /// (`WM_READ_ON`, `WM_UDP_ON`, `WM_RELEASE`, `WM_HANDOFF`) as a post to a full message
    /// queue fails, so that the detection and rescan can be tested where queues never fill
    /// (Wine). `None` (the default): never.
    #[doc(hidden)]
    pub test_fail_posts: Option<std::num::NonZeroU32>,
}

/// The default and the most of [`ServerConfig::sockets_per_window`]: a window's message queue
/// holds 10,000 posted messages, of which 2,000 are kept for the listener, the UDP socket and
/// the model's own messages, and a socket has at most 8 outstanding: (10,000 - 2,000) / 8.
pub const SOCKETS_PER_WINDOW: usize = models::async_select::SOCKETS_PER_WINDOW;

/// Checks [`ServerConfig::sockets_per_window`]: 1 to [`SOCKETS_PER_WINDOW`].
pub fn check_sockets_per_window(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("a window must serve at least 1 socket".into());
    }
    if n > SOCKETS_PER_WINDOW {
        return Err(format!(
            "{n} sockets per window could overflow its message queue (10,000 messages, 8 per              socket, 2,000 kept for the model's own): at most {SOCKETS_PER_WINDOW}"
        ));
    }
    Ok(())
}

/// Whether `completion-port` keeps its connections as io_uring direct descriptors (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectDescriptors {
    /// Direct descriptors where the kernel supports them, else ordinary ones (said in one log
    /// line at bind).
    #[default]
    Auto,
    /// Ordinary descriptors, as every other model.
    Off,
}

impl std::str::FromStr for DirectDescriptors {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DirectDescriptors::Auto),
            "off" => Ok(DirectDescriptors::Off),
            _ => Err(format!(
                "unknown --direct-descriptors value '{s}' (expected auto or off)"
            )),
        }
    }
}

/// Whether `completion-port` runs on direct descriptors on this machine with
/// `--direct-descriptors auto`: `Ok`, or why it runs on ordinary descriptors.
pub fn direct_descriptors_support() -> Result<(), String> {
    models::completion_port::direct_support()
}

/// The UDP socket's kernel buffers requested at bind (`SO_RCVBUF` / `SO_SNDBUF`); the kernel
/// clamps them to `net.core.rmem_max` / `wmem_max` (212,992 bytes by default), so this asks for
/// as much as the machine allows, up to 4 MiB: a burst of datagrams waits there for the model.
const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// The default of [`ServerConfig::batch_wait`]: zero, off, by measurement (ARCHITECTURE.md,
/// "Batched waits": the bench's loads already arrive in batches, and a bound cost closed
/// loops throughput while saving nothing measurable).
pub const DEFAULT_BATCH_WAIT: Duration = Duration::ZERO;

/// The largest [`ServerConfig::batch_wait`] accepted: every completion may be held this long.
pub const BATCH_WAIT_MAX: Duration = Duration::from_millis(100);

/// Checks a batch wait ([`ServerConfig::batch_wait`]): zero (off) or 1 µs to
/// [`BATCH_WAIT_MAX`].
pub fn check_batch_wait(wait: Duration) -> Result<(), String> {
    if wait > BATCH_WAIT_MAX {
        return Err(format!(
            "a batch wait of {wait:?} is too long: it delays every completion by up to that much (at most {BATCH_WAIT_MAX:?}; 0 turns batching off)"
        ));
    }
    if !wait.is_zero() && wait < Duration::from_micros(1) {
        return Err(format!(
            "a batch wait of {wait:?} is below the kernel's resolution of 1 µs (0 turns batching off)"
        ));
    }
    Ok(())
}

/// Checks a handshake deadline ([`ServerConfig::handshake_timeout`]): above 0 and at most
/// [`MAX_HANDSHAKE_TIMEOUT`].
pub fn check_handshake_timeout(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err("a handshake timeout must be longer than 0 (or 'off')".into());
    }
    if d > MAX_HANDSHAKE_TIMEOUT {
        return Err(format!(
            "a handshake timeout of {d:?} is too long: at most {MAX_HANDSHAKE_TIMEOUT:?} (or 'off')"
        ));
    }
    Ok(())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model: Model::best(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9990)),
            service: ServiceKind::Echo,
            max_pending: Limits::DEFAULT_HIGH_WATER,
            drain_timeout: Duration::from_secs(5),
            workers: None,
            recv_buffers: RecvBuffers::default(),
            recv_incremental: true,
            pass_through: true,
            accept_mode: AcceptMode::default(),
            batch_wait: Some(DEFAULT_BATCH_WAIT).filter(|w| !w.is_zero()),
            trace: false,
            tls: None,
            tcp: true,
            udp: false,
            udp_max_datagram: udp::MAX_DATAGRAM,
            udp_drop_ports: Vec::new(),
            max_conns: None,
            idle_timeout: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            direct_descriptors: DirectDescriptors::Auto,
            sockets_per_window: None,
            test_fail_posts: None,
        }
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// The model cannot run in this build or on this OS.
    Unavailable {
        /// The model asked for.
        model: Model,
        /// Why it cannot run.
        reason: String,
    },
    /// The listening socket could not be created, bound or put to listen.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The model's loop failed (its wait call or its listener, not one connection).
    Io(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Unavailable { model, reason } => {
                write!(
                    f,
                    "model {model} is not available on {}: {reason}",
                    std::env::consts::OS
                )
            }
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Io(e) => write!(f, "server failed: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind { source, .. } => Some(source),
            ServerError::Io(e) => Some(e),
            ServerError::Unavailable { .. } => None,
        }
    }
}

/// A bound server, ready to run.
pub struct Server {
    model: Model,
    /// `None` when serving UDP alone.
    listener: Option<TcpListener>,
    ctx: Ctx,
    /// The model's `run`, with what it made at bind ([`models::start`]).
    run: models::Run,
}

impl Server {
    /// Checks that the model is available and opens the listening socket; the model makes
    /// what it needs before it serves here too (its rings, say), so that a start that cannot
    /// succeed fails at bind.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        check_settings(&config)?;
        let workers = config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        // Windows has no SO_REUSEPORT: its completion port shares one listener among workers.
        let reuse_port = cfg!(target_os = "linux")
            && config.model == Model::CompletionPort
            && workers > 1
            && config.accept_mode == AcceptMode::ReusePort;
        check_transports(&config)?;
        let direct_table = models::completion_port::direct_table(&config);
        let max_conns = check_limits(&config, direct_table.map(|slots| slots * workers))?;
        let (listener, udp) = bind_sockets(&config, reuse_port)?;
        let ctx = Ctx {
            service: config.service,
            limits: Limits::with_high_water(config.max_pending),
            stats: Arc::new(Stats::default()),
            shutdown: Shutdown::new(),
            drain_timeout: config.drain_timeout,
            workers,
            recv_buffers: config.recv_buffers,
            recv_incremental: config.recv_incremental,
            pass_through: config.pass_through,
            accept_mode: config.accept_mode,
            batch_wait: config.batch_wait.filter(|w| !w.is_zero()),
            trace: trace::Trace::new(config.model.name(), config.trace),
            tls: config.tls,
            udp_guard: Arc::new(udp::LoopGuard::new(
                udp.as_ref().and_then(|u| u.local_addr().ok()),
                &config.udp_drop_ports,
            )),
            udp,
            udp_max_datagram: config.udp_max_datagram,
            max_conns,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            handshake_timeout: config.handshake_timeout,
            direct_table,
            sockets_per_window: config.sockets_per_window,
            test_fail_posts: config.test_fail_posts,
        };
        let run = models::start(config.model, listener.as_ref(), &ctx).map_err(ServerError::Io)?;
        Ok(Server {
            model: config.model,
            listener,
            ctx,
            run,
        })
    }

    /// The address actually bound (with the real port when port 0 was asked for): the TCP
    /// listener's, or the UDP socket's when serving UDP alone (the port is the same for both).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .as_ref()
            .map(TcpListener::local_addr)
            .or_else(|| self.ctx.udp.as_ref().map(UdpSocket::local_addr))
            .expect("a server has a listener or a UDP socket")
            .expect("a bound socket has an address")
    }

    /// The UDP socket's address, when serving UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.ctx
            .udp
            .as_ref()
            .map(|u| u.local_addr().expect("a bound socket has an address"))
    }

    /// The model this server runs.
    pub fn model(&self) -> Model {
        self.model
    }

    /// True if the model keeps its connections as io_uring direct descriptors
    /// (`completion-port` on Linux, see [`ServerConfig::direct_descriptors`]).
    pub fn direct_descriptors(&self) -> bool {
        self.ctx.direct_table.is_some()
    }

    /// The connection cap in effect: `--max-conns`, or its default resolved at bind (what the
    /// descriptors, or the model's tables, can hold). `usize::MAX`: none.
    pub fn max_conns(&self) -> usize {
        self.ctx.max_conns
    }

    /// The server's live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.ctx.stats)
    }

    /// A handle that stops the server from any thread (a signal handler thread, a test).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.ctx.shutdown.clone()
    }

    /// Serves until shutdown is requested and the drain is over.
    pub fn run(self) -> Result<(), ServerError> {
        (self.run)(self.listener, &self.ctx).map_err(ServerError::Io)
    }

    /// Runs the server on a thread of its own (for tests and embedding).
    pub fn spawn(self) -> io::Result<RunningServer> {
        let addr = self.local_addr();
        let udp_addr = self.udp_addr();
        let stats = self.stats();
        let shutdown = self.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name(format!("iomodels-{}", self.model))
            .spawn(move || self.run())?;
        Ok(RunningServer {
            addr,
            udp_addr,
            stats,
            shutdown,
            thread: Some(thread),
        })
    }
}

/// A server running on its own thread; dropping it stops it and waits for the drain.
pub struct RunningServer {
    /// The address it listens on (see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// The address of its UDP socket, when it serves UDP (the same port as `addr`).
    pub udp_addr: Option<SocketAddr>,
    /// Its live counters.
    pub stats: Arc<Stats>,
    /// Its shutdown handle.
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Requests shutdown and waits for the server to return.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        self.shutdown.trigger();
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(ServerError::Io(io::Error::other("server thread panicked")))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Opens a listening TCP socket: SO_REUSEADDR (so a restarted server can bind over
/// TIME_WAIT), a deep backlog, IPv6 sockets v6-only; with `reuse_port`, SO_REUSEPORT too, so
/// each worker of a model can open its own listener on the same port and the kernel spreads
/// the connections over them.
pub(crate) fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = bound_stream_socket(addr, reuse_port)?;
    // Linux copies it to every accepted socket: what `completion-port`'s direct descriptors
    // (no descriptor to call setsockopt on) rely on. The models still set it on each socket
    // they hold a descriptor of (Windows does not copy it).
    socket.set_nodelay(true)?;
    // Urgent (MSG_OOB) bytes stay in the stream, echoed in place like any other: never
    // pulled out of band, where nothing reads them. Linux copies it to accepted sockets;
    // Windows sets it on each ([`sys::set_oob_inline_accepted`]).
    socket.set_out_of_band_inline(true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A TCP socket bound to `addr` as [`listen`] binds its listeners: SO_REUSEADDR on Unix, v6-only
/// for IPv6, SO_REUSEPORT if asked.
fn bound_stream_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // On Windows SO_REUSEADDR would let another process bind over a live listener, and a
    // restarted server can bind over TIME_WAIT anyway.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if reuse_port {
        sys::set_reuse_port(&socket)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `Err(AddrInUse)` if another socket listens on `addr`, found by binding a plain socket to it
/// (SO_REUSEADDR as [`listen`] sets it, no SO_REUSEPORT) and closing it again.
///
/// `completion-port`'s reuse-port listeners need it: SO_REUSEPORT lets any socket of the same
/// user that sets it too join the group on a port, so a second server (run by the same user,
/// or by root, as servers often are) would bind beside the first, silently, and the kernel
/// would split the clients between them. A plain socket cannot bind over a listening one,
/// whoever owns it. The race this leaves: two such servers starting on one port within the
/// same few microseconds both pass the probe and share it.
fn probe_port_free(addr: SocketAddr) -> io::Result<()> {
    bound_stream_socket(addr, false).map(drop)
}

/// `Ok` if the model is available here and the settings checked on their own are usable: the
/// receive buffers, the batch wait, the sockets per window and the TLS configuration.
fn check_settings(config: &ServerConfig) -> Result<(), ServerError> {
    config
        .model
        .availability()
        .map_err(|reason| ServerError::Unavailable {
            model: config.model,
            reason,
        })?;
    config
        .recv_buffers
        .check()
        .map_err(|e| ServerError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    if let Some(wait) = config.batch_wait {
        check_batch_wait(wait)
            .map_err(|e| ServerError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    }
    if let Some(n) = config.sockets_per_window {
        check_sockets_per_window(n).map_err(|e| {
            ServerError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--sockets-per-window: {e}"),
            ))
        })?;
    }
    if let Some(tls) = &config.tls {
        // Every connection makes a session from this configuration; one that rustls
        // refuses is refused here, once, rather than at each accept.
        iomodels_core::rustls::ServerConnection::new(Arc::clone(tls)).map_err(|e| {
            ServerError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unusable TLS configuration: {e}"),
            ))
        })?;
    }
    Ok(())
}

/// `Ok` if the configuration asks for something this build can serve: at least one of TCP and
/// UDP; UDP without TLS, with a usable receive buffer.
fn check_transports(config: &ServerConfig) -> Result<(), ServerError> {
    let invalid = |why: &str| {
        Err(ServerError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            why.to_string(),
        )))
    };
    if !config.tcp && !config.udp {
        return invalid("nothing to serve: TCP is off and UDP is not on");
    }
    if !config.udp {
        return Ok(());
    }
    if config.tls.is_some() {
        return invalid("UDP has no TLS (DTLS is not implemented): serve UDP without TLS");
    }
    if config.udp_max_datagram == 0 || config.udp_max_datagram > udp::MAX_DATAGRAM {
        return invalid(&format!(
            "the UDP receive buffer must hold 1 to {} bytes, not {}",
            udp::MAX_DATAGRAM,
            config.udp_max_datagram
        ));
    }
    if config.udp_drop_ports.contains(&0) {
        return invalid("--udp-drop-ports: port 0 is always dropped; list ports 1 to 65535");
    }
    Ok(())
}

/// `select`'s default connection cap on Linux: `FD_SETSIZE` (1024) less
/// [`RESERVED_DESCRIPTORS`] for the server's own descriptors, which take the lowest numbers.
#[cfg(target_os = "linux")]
pub const SELECT_DEFAULT_CAP: usize = sys::select::FD_SETSIZE - RESERVED_DESCRIPTORS;

/// Checks the limits and resolves the connection cap (see [`ServerConfig::max_conns`]).
/// Every model enforces them, on Linux and on Windows. `direct_slots`: the slots of every
/// worker's fixed-file table (`completion-port` on direct descriptors), whose sum less
/// [`RESERVED_DIRECT_SLOTS`] is then the default cap.
fn check_limits(config: &ServerConfig, direct_slots: Option<usize>) -> Result<usize, ServerError> {
    let invalid = |why: String| ServerError::Io(io::Error::new(io::ErrorKind::InvalidInput, why));
    if config.max_conns == Some(0) {
        return Err(invalid("--max-conns must be at least 1".into()));
    }
    let zero = Some(Duration::ZERO);
    if config.idle_timeout == zero || config.write_timeout == zero {
        return Err(invalid(
            "a timeout must be longer than 0 (leave it out, or 'off', for none)".into(),
        ));
    }
    if let Some(d) = config.handshake_timeout {
        check_handshake_timeout(d).map_err(|why| invalid(format!("--handshake-timeout: {why}")))?;
    }
    if let (Some(slots), Some(max)) = (direct_slots, config.max_conns) {
        if max > slots {
            log::info!(
                "--max-conns {max} is more than the direct-descriptor tables hold ({slots}): \
                 a worker whose table is full stops accepting"
            );
        }
    }
    if let Some(slots) = direct_slots {
        return Ok(config
            .max_conns
            .unwrap_or_else(|| slots.saturating_sub(RESERVED_DIRECT_SLOTS).max(1)));
    }
    Ok(config.max_conns.unwrap_or_else(|| {
        let by_descriptors = sys::nofile_soft_limit().map_or(usize::MAX, |n| {
            descriptor_cap(usize::try_from(n).unwrap_or(usize::MAX))
        });
        match config.model {
            // select(2) watches descriptors below FD_SETSIZE only: past it a connection could
            // only be accepted and reset, so the default cap stops short of it.
            #[cfg(target_os = "linux")]
            Model::Select => by_descriptors.min(SELECT_DEFAULT_CAP),
            _ => by_descriptors,
        }
    }))
}

/// Opens the TCP listener and the UDP socket the configuration asks for, the UDP one on the
/// listener's actual port. With port 0 the kernel picks the TCP port, which may be taken for
/// UDP by another program: then both are opened again on a new port, a few times.
fn bind_sockets(
    config: &ServerConfig,
    reuse_port: bool,
) -> Result<(Option<TcpListener>, Option<UdpSocket>), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: config.listen,
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        if reuse_port && config.tcp && config.listen.port() != 0 {
            probe_port_free(config.listen).map_err(bind_error)?;
        }
        let listener = match config.tcp {
            true => Some(listen(config.listen, reuse_port).map_err(bind_error)?),
            false => None,
        };
        if !config.udp {
            return Ok((listener, None));
        }
        let addr = match &listener {
            Some(l) => l.local_addr().map_err(bind_error)?,
            None => config.listen,
        };
        match bind_udp(addr) {
            Ok(udp) => return Ok((listener, Some(udp))),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && listener.is_some()
                    && config.listen.port() == 0
                    && attempts < 8 =>
            {
                log::debug!("UDP port {} is taken: picking another port", addr.port());
            }
            Err(e) => {
                return Err(ServerError::Bind {
                    addr,
                    source: io::Error::new(e.kind(), format!("UDP: {e}")),
                })
            }
        }
    }
}

/// Opens the UDP socket: non-blocking, IPv6 sockets v6-only, kernel buffers as large as the
/// system allows up to [`UDP_SOCKET_BUFFER`]; on a wildcard address, with packet information
/// asked for, so each answer leaves from the address its datagram was sent to.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A request above the system's maximum is clamped, not refused; a failure costs only
    // burst tolerance.
    if let Err(e) = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER) {
        log::debug!("SO_RCVBUF on the UDP socket: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_SOCKET_BUFFER) {
        log::debug!("SO_SNDBUF on the UDP socket: {e}");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    if addr.ip().is_unspecified() {
        // Answers leave from the address each datagram was sent to (`sys/datagram.rs`).
        crate::sys::want_arrival(&socket)?;
    }
    Ok(socket)
}
