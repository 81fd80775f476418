//! `iomodels`: serve with any socket I/O model, list the models, generate load.
//!
//! Every subcommand is a thin shell over a library: `serve` over `iomodels-server`, `load` over
//! `iomodels-load`. A usage error (clap's own, or a [`UsageError`] found after parsing) is
//! printed in clap's layout and exits 2; a runtime failure ends the process with one line on
//! stderr and status 1.

use anyhow::{anyhow, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use iomodels_core::units::{parse_bytes, parse_duration};
use iomodels_core::ServiceKind;
use iomodels_load::LoadConfig;
use iomodels_server::{AcceptMode, Model, Server, ServerConfig, StatsSnapshot};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

mod about;
mod bench;
mod idle;
mod live;
#[cfg(all(feature = "tokio-reference", unix))]
mod reference;
mod tls;
mod udp;

#[derive(Parser)]
#[command(
    name = "iomodels",
    version,
    about = "Every classic Winsock socket I/O model and its Linux counterpart, behind one echo server",
    long_about = "Every classic Winsock socket I/O model (chapter 8 of Network Programming for \
                  Microsoft Windows) and its Linux counterpart, behind one server API: serve \
                  RFC 862 echo or RFC 863 discard with any model, list the models, drive them \
                  with a load generator that verifies every byte, and compare them all with \
                  `bench`."
)]
struct Cli {
    /// Log more (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve echo (RFC 862) or discard (RFC 863) over TCP, TLS or UDP (--udp) with one I/O model
    ///
    /// Prints one line when ready. SIGINT or SIGTERM stops accepting, lets open connections
    /// finish for --drain-timeout, and exits 0; a second one during that drain stops at once
    /// (exit 128 + the signal). SIGUSR1 prints the server's counters (connections, bytes,
    /// wake-ups, system calls, ...) as one JSON line on stdout; a closed or full stdout costs
    /// only the line. On Windows, Ctrl-C or setting the named event
    /// Local\iomodels-<pid>-stop stops it the same way (twice: at once), and Ctrl-Break or the
    /// event Local\iomodels-<pid>-stats prints the counters.
    Serve(ServeArgs),
    /// List the I/O models: the mechanism on this OS, and whether it is available
    Models,
    /// Drive an echo server (closed loop, or open loop on a schedule with --rate), verify every
    /// byte, report rate and latency
    #[command(
        after_help = "Prints a start line on stderr at once and, with --interval, one \
        line per interval. Ctrl-C (SIGINT) or SIGTERM stops the run: the messages in flight are \
        waited for, the report of what ran is printed (table or --json), and it exits 130 (143 \
        for SIGTERM); a second one exits at once, without a report."
    )]
    Load(LoadArgs),
    /// Compare every model on this machine: scenarios, medians, a table and an HTML report (Linux, Windows)
    #[command(
        after_help = "On a terminal a progress bar shows the steps done and an estimate \
        of the time left; off a terminal (CI, `| tee`) one line per finished step goes to stderr."
    )]
    Bench(bench::BenchArgs),
    /// UDP tools: send numbered datagrams, receive and count them (unicast, multicast,
    /// broadcast), discover peers
    Udp(udp::UdpArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    ///
    /// bash: `iomodels completions bash > ~/.local/share/bash-completion/completions/iomodels`;
    /// zsh: into a directory of your $fpath as `_iomodels`; fish:
    /// `~/.config/fish/completions/iomodels.fish`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout: iomodels(1), or a subcommand's
    ///
    /// Read it with `iomodels manpage | man -l -`, or `iomodels manpage serve | man -l -`.
    Manpage(ManpageArgs),
    /// Serve echo with a plain tokio server (the reference row of `bench`). Named unlike any
    /// user's command: clap suggests hidden subcommands too (`serv` -> 'serve-reference')
    #[cfg(all(feature = "tokio-reference", unix))]
    #[command(hide = true, name = "tokio-reference")]
    ServeReference(ReferenceArgs),
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct ManpageArgs {
    /// A subcommand (serve, load, bench, ...): its page instead of iomodels(1)
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

#[cfg(all(feature = "tokio-reference", unix))]
#[derive(Args)]
struct ReferenceArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9990", value_parser = parse_addr)]
    listen: SocketAddr,
    /// On SIGINT/SIGTERM, how long open connections may go on before they are closed
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Args)]
struct ServeArgs {
    /// The I/O model [default: the most scalable available; see `iomodels models`]
    #[arg(long, value_name = "MODEL", value_parser = parse_model)]
    model: Option<Model>,
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9990", value_parser = parse_addr)]
    listen: SocketAddr,
    /// The service every connection runs: echo or discard
    #[arg(long, value_name = "SERVICE", default_value = "echo", value_parser = parse_service)]
    service: ServiceKind,
    /// Unsent bytes per connection above which the server stops reading from it (backpressure;
    /// reading resumes below a quarter of it). At least 1 KiB. Units: B, KiB, MiB, KB, MB
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_max_pending)]
    max_pending: usize,
    /// On SIGINT/SIGTERM, how long open connections may go on before they are closed
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Worker threads of the completion-port model (Linux: a ring each; Windows: all on one
    /// completion port), at most 256; more than 8 per CPU is warned about [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,
    /// How completion-port workers get connections: reuseport (a listener each, the kernel
    /// spreads them) or handoff (one acceptor passes sockets round-robin). Linux only: on
    /// Windows the workers share one listener's AcceptEx completions
    #[arg(long, value_name = "MODE", default_value = "reuseport", value_parser = parse_accept_mode)]
    accept: AcceptMode,
    /// The provided-buffer ring the io_uring models receive from, as COUNTxSIZE (a power-of-two
    /// count of buffers of SIZE bytes): one ring for overlapped-event and overlapped-routine,
    /// one per completion-port worker. Linux only: on Windows each connection posts a zero-byte
    /// receive and reads into its thread's 16 KiB buffer once data is there
    #[arg(long, value_name = "COUNTxSIZE", default_value = "16x64KiB", value_parser = parse_recv_buffers)]
    recv_buffers: iomodels_server::RecvBuffers,
    /// completion-port's connections as io_uring direct descriptors (auto: where the kernel
    /// has them; `iomodels models` says whether it does), outside the process's descriptor
    /// table, so one process holds more connections than RLIMIT_NOFILE; or off: ordinary
    /// descriptors. Linux only
    #[arg(long, value_name = "auto|off", default_value = "auto", value_parser = parse_direct)]
    direct_descriptors: iomodels_server::DirectDescriptors,
    /// Consume the provided buffers incrementally (on) — a receive takes only the bytes it
    /// needs of a buffer and the next one goes on after it (IOU_PBUF_RING_INC, Linux 6.12+;
    /// without it, off with one log line) — or one whole buffer per receive (off). Linux only
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    recv_incremental: bool,
    /// A plaintext echo sends the bytes it received straight from the provided buffer they
    /// arrived in, with no copy (on), while half the buffer ring stays free (a peer that never
    /// reads holds its buffer until it does); or copies them into the connection's output
    /// first, as the other services and TLS always do (off). Counted in bytes_passed_through.
    /// Linux only
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pass_through: bool,
    /// The io_uring models (completion-port, overlapped-event, overlapped-routine on Linux):
    /// wait for several completions at once, holding the first at most DURATION (io_uring's
    /// min-wait, Linux 6.12+; without it, off with one log line). Fewer wake-ups per message
    /// at low rates for up to DURATION of added latency; 0: off (each wait returns at its
    /// first completion). At most 100ms. Units: us, ms, s
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_batch_wait)]
    batch_wait: Duration,
    /// Print every notification the model receives (readiness, completion, message) on stderr,
    /// one line each, at most 200 a second: to watch a model work
    #[arg(long)]
    trace: bool,
    /// Also serve over UDP, on the same port as TCP: each datagram is answered with one
    /// datagram of the same bytes, to its sender, by every model (no TLS: there is no DTLS)
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_self_signed"])]
    udp: bool,
    /// Serve UDP alone: no TCP listener at all (needs --udp)
    #[arg(long, requires = "udp")]
    no_tcp: bool,
    /// The largest datagram received whole; a larger one is counted (udp_truncated) and
    /// dropped, never echoed cut short. Units: B, KiB, KB
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_bytes, requires = "udp")]
    udp_max_datagram: usize,
    /// More source ports whose datagrams are never answered (counted in udp_loop_dropped and
    /// logged at most once a second), e.g. 53,123,161,1900 for services that may answer an
    /// echo; comma-separated, or none. Always dropped, whatever this says: source port 0, the
    /// server's own port, the server's own address and port, and 7,13,17,19,37 (echo,
    /// daytime, qotd, chargen, time): their answer could start an echo loop
    #[arg(long, value_name = "LIST", default_value = "none", value_parser = parse_ports, requires = "udp")]
    udp_drop_ports: Ports,
    /// The most connections open at once: at the cap the server stops accepting (new clients
    /// wait in the listen backlog, accepted as soon as a connection closes); none is ever
    /// accepted and dropped [default: the descriptor limit less 64 (less a quarter of a limit
    /// below 256), so accept stops at the cap before it would fail for lack of descriptors, and
    /// the server keeps some for itself; select at most 960, below FD_SETSIZE; completion-port
    /// on direct descriptors: what its fixed-file tables hold, less 16]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_conns: Option<u64>,
    /// async-select on Windows: the most sockets one message-only window (a thread and its
    /// message queue) serves; past it the server starts another window on a thread of its
    /// own. 1 to 1000, the default: a queue holds 10,000 messages and a socket has at most 8
    /// in it, 2,000 kept for the rest, so no notification is lost to a full queue. Windows
    /// only: ignored elsewhere, with a warning [default: 1000]
    #[arg(long, value_name = "N", value_parser = parse_sockets_per_window)]
    sockets_per_window: Option<usize>,
    /// Close a connection when no byte has moved either way for DURATION, or 'off'. Off by
    /// default for echo's sake: an echo client may wait any time between messages
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = parse_timeout)]
    idle_timeout: Timeout,
    /// Close a connection whose peer leaves its output unread at --max-pending (reading from it
    /// paused) for DURATION, or 'off': the slow-reader guard, so a peer that stops reading
    /// cannot hold its buffers forever (60s, as nginx's send_timeout)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    write_timeout: Timeout,
    /// With TLS: close a connection whose handshake is not complete DURATION after it was
    /// accepted, or 'off'. A hard deadline: bytes trickling in do not extend it (at most 1h)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_handshake_timeout)]
    handshake_timeout: Timeout,
    /// Log one line of counters (INFO, stderr) every DURATION: connections active and
    /// accepted, bytes in and out and their rate over the interval, errors (and UDP datagrams
    /// with --udp). 10ms to 1h; off by default. SIGUSR1 prints all the counters at any time
    #[arg(long, value_name = "DURATION", value_parser = parse_report_interval)]
    stats_interval: Option<Duration>,
    #[command(flatten)]
    tls: tls::ServeTlsArgs,
}

/// A timeout flag's value: a duration, or `off` (`None`).
#[derive(Clone, Copy, Debug)]
struct Timeout(Option<Duration>);

/// Parses a timeout: `off`, or a duration longer than 0 (e.g. 30s, 500ms).
fn parse_timeout(s: &str) -> Result<Timeout, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Timeout(None));
    }
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "'{s}' is no timeout: give a duration above 0, or off"
        )),
        d => Ok(Timeout(Some(d))),
    }
}

/// Parses `--handshake-timeout`: a timeout ([`parse_timeout`]) the server takes
/// ([`iomodels_server::check_handshake_timeout`]: at most an hour).
fn parse_handshake_timeout(s: &str) -> Result<Timeout, String> {
    let t = parse_timeout(s)?;
    if let Some(d) = t.0 {
        iomodels_server::check_handshake_timeout(d)?;
    }
    Ok(t)
}

/// `--udp-drop-ports`: a list of ports (a newtype, so clap takes the whole list as one value).
#[derive(Debug, Clone)]
struct Ports(Vec<u16>);

fn parse_ports(s: &str) -> Result<Ports, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Ports(Vec::new()));
    }
    let ports = s
        .split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(0) => Err("port 0 is always dropped: list ports 1 to 65535".to_string()),
            Ok(p) => Ok(p),
            Err(_) => Err(format!(
                "'{}' is not a port: give ports 1 to 65535, comma-separated, or none",
                p.trim()
            )),
        })
        .collect::<Result<Vec<u16>, String>>()?;
    Ok(Ports(ports))
}

#[derive(Args)]
struct LoadArgs {
    /// The echo server to load: IP:PORT, [IPv6]:PORT or HOST:PORT. A name that resolves to
    /// several addresses (localhost: ::1 and 127.0.0.1) has each tried in order with one TCP
    /// connection, and the run goes to the first that accepts (with --udp: the first address)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9990", value_parser = parse_target)]
    connect: Target,
    /// Connections to open (with --udp: UDP sockets)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    conns: u32,
    /// Bytes per message. Units: B, KiB, MiB, KB, MB
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_bytes)]
    size: usize,
    /// Messages each connection keeps in flight
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    depth: u32,
    /// How long to send (then wait for the last echoes)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop each connection after this many messages (whichever comes first with --duration)
    #[arg(long, value_name = "M")]
    messages: Option<u64>,
    /// Load-generator threads [default: one per CPU, at most one per connection]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,
    /// Print one JSON object instead of a table (the start line and --interval lines still
    /// go to stderr)
    #[arg(long)]
    json: bool,
    /// Print one line on stderr every DURATION of the run (as iperf3's -i): the span, msgs/s
    /// (with --rate, the sent rate first), MB/s, p50/p99 latency over that span, errors so far.
    /// 10ms to 1h; off by default. Not with --idle
    #[arg(long, value_name = "DURATION", conflicts_with = "idle", value_parser = parse_report_interval)]
    interval: Option<Duration>,
    /// Idle mode: open --conns connections, echo one byte on each (verified), then hold them
    /// open and silent for --duration (to measure a server's memory per idle connection), or
    /// echoing with --echo-every. Past one process's descriptor limit the hold is split over
    /// child processes of this binary (shards), their reports summed; past 10,000 connections
    /// to 127.0.0.x the source addresses 127.0.0.1, .2, ... are used in turn (254 × 10,000 at
    /// most; 20,000 to any other server)
    #[arg(long)]
    idle: bool,
    /// With --idle: while holding, each connection echoes one --size message (verified) every
    /// DURATION
    #[arg(long, value_name = "DURATION", requires = "idle", value_parser = parse_interval)]
    echo_every: Option<Duration>,
    /// With --idle: hold at most N connections per process (default: the descriptor limit
    /// less 64), to try the split over shards below the limit
    #[arg(long, value_name = "N", requires = "idle", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    shard_size: Option<u64>,
    /// Internal: this process is shard I of K of an --idle hold; its configuration comes on
    /// stdin, its phases and report go to stdout as JSON lines
    #[arg(long, value_name = "I/K", requires = "idle", hide = true)]
    shard: Option<String>,
    /// Handshake mode (needs --tls): each connection repeatedly connects, does a full TLS
    /// handshake (no session resumption), echoes one --size message (verified), sends
    /// close_notify and closes. Reports handshakes/s (completed cycles), the cycle time and
    /// the failed cycles; --messages limits the cycles per connection
    #[arg(long, conflicts_with = "idle")]
    handshakes: bool,
    /// UDP mode, for `serve --udp`: --conns UDP sockets, each connect()ed to the server and
    /// keeping --depth datagrams of --size bytes (8 to 65507; the first 8 carry a sequence
    /// number) in flight. Every echo is verified byte for byte, matched by its sequence number
    /// in any order; reports datagrams/s, latency, and sent / received / lost / late /
    /// duplicated. --messages counts the datagrams each socket sends
    #[arg(long)]
    udp: bool,
    /// With --udp: a datagram not echoed within this time is counted lost and replaced by a
    /// new one (an echo arriving later is counted late, not as an error)
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    udp_timeout: Duration,
    /// Open loop (as wrk2's -R): offer N messages (with --udp: datagrams) per second in total,
    /// spread evenly over the connections, each sent when it is due, and time every message
    /// from when it was due, so a server that stalls shows it in the latency (no coordinated
    /// omission). --depth is then the most messages a connection leaves unanswered (1: the
    /// next waits for the echo, as wrk2; more: pipelined). Adds the requested, sent and
    /// received rates and the service latency (from the actual write) to the report;
    /// unanswered messages are counted, not errors. 1 to 100M; k and M suffixes (50k = 50000).
    /// Not with --handshakes, --idle
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with_all = ["handshakes", "idle"])]
    rate: Option<u64>,
    #[command(flatten)]
    tls: tls::LoadTlsArgs,
}

/// `load --rate`: messages per second, 1 to [`iomodels_load::MAX_RATE`], with an optional k
/// (×1000) or M (×1,000,000) suffix.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, scale) = match t.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match t.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (t, 1),
        },
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a rate: give messages per second, like 5000 or 50k"))?;
    match n.checked_mul(scale) {
        Some(0) => Err(format!("'{s}' is no rate: at least 1 message per second")),
        Some(r) if r <= iomodels_load::MAX_RATE => Ok(r),
        _ => Err(format!(
            "'{s}' is too high a rate: at most {}M messages per second",
            iomodels_load::MAX_RATE / 1_000_000
        )),
    }
}

/// `--max-pending`: at least 1 KiB (0 used to be taken, and a 1 MB echo then took some two
/// million system calls, a byte or two at a time).
fn parse_max_pending(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        n if n < 1024 => Err(format!(
            "'{s}' is too small a backpressure mark: at least 1KiB (a connection would move a \
             few bytes per system call)"
        )),
        n => Ok(n),
    }
}

/// A reporting interval (`load --interval`, `serve --stats-interval`): 10ms to 1h.
fn parse_report_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_millis(10) => {
            Err(format!("'{s}' is too short an interval: at least 10ms"))
        }
        d if d > Duration::from_secs(3600) => {
            Err(format!("'{s}' is too long an interval: at most 1h"))
        }
        d => Ok(d),
    }
}

/// A pacing interval: a duration above 0.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("'{s}' is no interval: give a duration above 0")),
        d => Ok(d),
    }
}

fn parse_model(s: &str) -> Result<Model, String> {
    s.parse()
}

fn parse_recv_buffers(s: &str) -> Result<iomodels_server::RecvBuffers, String> {
    s.parse()
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}' is neither on nor off")),
    }
}

fn parse_batch_wait(s: &str) -> Result<Duration, String> {
    let wait = parse_duration(s)?;
    iomodels_server::check_batch_wait(wait)?;
    Ok(wait)
}

fn parse_sockets_per_window(s: &str) -> Result<usize, String> {
    let n = s.trim().parse().map_err(|_| {
        format!(
            "'{s}' is not a number of sockets (1 to {})",
            iomodels_server::SOCKETS_PER_WINDOW
        )
    })?;
    iomodels_server::check_sockets_per_window(n)?;
    Ok(n)
}

fn parse_accept_mode(s: &str) -> Result<AcceptMode, String> {
    s.parse()
}

fn parse_direct(s: &str) -> Result<iomodels_server::DirectDescriptors, String> {
    s.parse()
}

fn parse_service(s: &str) -> Result<ServiceKind, String> {
    s.parse()
}

/// `load --connect`: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`, kept as given and resolved when
/// the run starts ([`Target::pick`]), so that a name's every address can be tried.
#[derive(Clone, Debug)]
struct Target(String);

/// Parses `load --connect`: an address, or a name with a port (not resolved here).
fn parse_target(s: &str) -> Result<Target, String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(Target(s.to_string()));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(Target(s.to_string()))
        }
        Some((_, port)) if !port.is_empty() => Err(format!(
            "'{s}' has no valid port ('{port}'; expected HOST:PORT, e.g. 127.0.0.1:9990)"
        )),
        _ => Err(format!(
            "'{s}' has no port (expected IP:PORT, e.g. 127.0.0.1:9990)"
        )),
    }
}

impl Target {
    /// Every address the target resolves to, in the resolver's order, each once.
    fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let mut addrs = Vec::new();
        for a in self
            .0
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve --connect {}", self.0))?
        {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        match addrs.is_empty() {
            true => Err(anyhow!("--connect {} resolves to no address", self.0)),
            false => Ok(addrs),
        }
    }

    /// The address to load: the only one, or (`tcp`) the first of several that accepts a TCP
    /// connection, tried in order as other clients do (that connection is closed at once;
    /// the server sees one more connection). None accepting (or UDP, where nothing can be
    /// tried without sending): the first, and the run says what went wrong with it.
    fn pick(&self, tcp: bool) -> Result<SocketAddr> {
        let addrs = self.resolve()?;
        if addrs.len() == 1 || !tcp {
            return Ok(addrs[0]);
        }
        Ok(
            first_accepting(&addrs, Duration::from_secs(5)).unwrap_or_else(|| {
                log::warn!(
                    "--connect {}: no address accepted a connection ({}); loading {}",
                    self.0,
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    addrs[0]
                );
                addrs[0]
            }),
        )
    }
}

/// The first of `addrs` that accepts a TCP connection within `timeout`, tried in order; each
/// refusal said in one log line.
fn first_accepting(addrs: &[SocketAddr], timeout: Duration) -> Option<SocketAddr> {
    addrs
        .iter()
        .copied()
        .find(|a| match std::net::TcpStream::connect_timeout(a, timeout) {
            Ok(_) => true,
            Err(e) => {
                log::info!("{a}: {e}; trying the next address");
                false
            }
        })
}

/// An address as `IP:PORT`, `[IPv6]:PORT` or `host:PORT` (the first address it resolves to).
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "'{s}' has no port (expected IP:PORT, e.g. 127.0.0.1:9990)"
        ));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not an address: {e}"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

fn main() -> ExitCode {
    // clap's own usage errors, help and version keep clap's layout (several lines: the error,
    // the usage, a hint); a usage error exits 2, help and version 0.
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose, is_server(&cli.command));
    #[cfg(target_os = "linux")]
    if !is_server(&cli.command) {
        // A report whose reader left (`| head`) ends quietly (serve: README "A broken stdout").
        iomodels_server::sys::default_sigpipe();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Models => {
            print!("{}", models_table());
            Ok(())
        }
        Command::Load(args) => load(args),
        Command::Bench(args) => bench::command(args),
        Command::Udp(args) => udp::command(args),
        Command::Completions(args) => completions(args.shell),
        Command::Manpage(args) => manpage(args),
        #[cfg(all(feature = "tokio-reference", unix))]
        Command::ServeReference(args) => {
            reference::serve(args.listen, args.drain_timeout, |addr| {
                println!(
                    "listening on {addr} (reference: tokio, current-thread runtime, service echo)"
                );
                let _ = std::io::stdout().flush();
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A value or a combination of flags found wrong after parsing: a usage error like
        // clap's own, in its layout and with its status (2), with the subcommand's usage.
        Err(e) if is_usage(&e) => {
            let _ = usage_error(&matches, &causes(&e)).print();
            ExitCode::from(2)
        }
        // A runtime failure (a port in use, a peer refusing, a file missing): one line, 1.
        Err(e) => {
            eprintln!("error: {}", one_line(&causes(&e)));
            ExitCode::FAILURE
        }
    }
}

/// `serve` and the tokio reference server: processes that must outlive their stdout (and
/// that log their peers' TLS failures).
fn is_server(command: &Command) -> bool {
    match command {
        Command::Serve(_) => true,
        #[cfg(all(feature = "tokio-reference", unix))]
        Command::ServeReference(_) => true,
        _ => false,
    }
}

/// A usage error found after clap parsed the command line: a bad value (`--size 0`, `bench
/// --models foo`) or flags that do not go together. `main` prints it as clap prints its own
/// (`error: ...`, the subcommand's usage, a hint) and exits 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether `e` is a usage error: a [`UsageError`], or the UDP tools' own
/// ([`iomodels_udp::UdpError::Usage`]: a unicast group, a payload too large, ...).
pub(crate) fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || matches!(
                c.downcast_ref::<iomodels_udp::UdpError>(),
                Some(iomodels_udp::UdpError::Usage(_))
            )
    })
}

/// A [`UsageError`] as an [`anyhow::Error`].
pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// `msg` as a clap error of the subcommand `matches` ran (its usage line, clap's layout).
fn usage_error(matches: &clap::ArgMatches, msg: &str) -> clap::Error {
    let mut cmd = Cli::command();
    cmd.build(); // names each subcommand `iomodels load`, ... for its usage line
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        match cmd.find_subcommand(name) {
            Some(c) => cmd = c.clone(),
            None => break,
        }
        m = sub;
    }
    cmd.error(clap::error::ErrorKind::ValueValidation, msg)
}

/// `iomodels completions SHELL`: the completion script, generated from the clap definitions.
/// Hidden subcommands (`bench`'s tokio-reference) are left out: clap_complete would offer them.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    let full = Cli::command();
    let mut cmd = clap::Command::new("iomodels")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    // Into a buffer first: clap_complete panics on a failed write (a full or closed stdout).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "iomodels", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script")
}

/// `iomodels manpage [COMMAND]`: iomodels(1), or a subcommand's page (iomodels-serve(1), ...),
/// in roff, generated from the clap definitions, on stdout.
fn manpage(args: ManpageArgs) -> Result<()> {
    let mut cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    cmd.build(); // names each subcommand's page: iomodels-serve, ...
    let page = match &args.command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name).filter(|s| !s.is_hide_set()) {
            Some(sub) => sub.clone().version(env!("CARGO_PKG_VERSION")),
            None => return Err(usage(format!("no command '{name}' has a manual page"))),
        },
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the manual page")
}

/// An error and its causes, `: `-separated, each said once: a cause whose text its error's
/// message already ends with (`ServerError` shows its source) is not repeated.
pub(crate) fn causes(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Folds a multi-line message (clap's, with its hints) into the one line the CLI promises.
pub(crate) fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logging at `info` (`-v` debug, `-vv` trace; `RUST_LOG` overrides). A client (`load`,
/// `bench`) keeps rustls' own warnings out unless `-v`: a TLS failure is its one error line
/// (`TLS handshake with ... failed: ...`), not that line after a log line per connection.
fn init_logging(verbose: u8, server: bool) {
    let level = match (verbose, server) {
        (0, true) => "info",
        (0, false) => "info,rustls=error",
        (1, _) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
}

fn serve(args: ServeArgs) -> Result<()> {
    let model = args.model.unwrap_or_else(Model::best);
    let tls = tls::server_config(&args.tls, args.listen)?;
    let config = server_config(&args, model, tls.as_ref());
    // Raised before bind, since the default --max-conns comes from it; said after bind, so a
    // refused start stays one line. (Windows has no descriptor limit: nothing to say there.)
    let nofile = iomodels_server::sys::raise_nofile_limit();
    // Before bind: from listen() on, clients (and an operator's script) see a server, and a
    // SIGUSR1 then, whose default action ends the process, must find its handler.
    let signals = early_signals()?;
    let server = Server::bind(config.clone())?;
    say_limits(nofile, args.workers);
    if let Some(t) = &tls {
        t.write_cert()?;
    }
    for note in tls.iter().flat_map(|t| &t.notes) {
        log::info!("{note}");
    }
    if args.model.is_none() {
        if let Err(why) = Model::CompletionPort.availability() {
            log::info!("default model: {model} (completion-port is unavailable: {why})");
        }
    }
    let shutdown = server.shutdown_handle();
    let stats = server.stats();
    let drain = args.drain_timeout;
    let live = server.stats();
    let max_conns = server.max_conns();
    watch_signals(
        signals,
        move |sig| {
            log::info!(
                "{sig}: no longer accepting; open connections may finish for {drain:?} \
                 (the same signal again stops at once)"
            );
            shutdown.trigger();
        },
        move || {
            // `bench` reads the counters this way, before and after each run.
            say(&stats_json(&live.snapshot(), max_conns), "the counters");
        },
    )?;
    say(&ready_line(&server, &config), "the ready line");
    let stats_lines = args
        .stats_interval
        .map(|every| stats_lines(server.stats(), every, config.udp))
        .transpose()?;
    let ran = server.run();
    drop(stats_lines);
    ran?;
    say_stopped(&stats.snapshot(), config.udp);
    Ok(())
}

/// The server's configuration, from `serve`'s flags.
fn server_config(args: &ServeArgs, model: Model, tls: Option<&tls::ServerTls>) -> ServerConfig {
    ServerConfig {
        model,
        listen: args.listen,
        service: args.service,
        max_pending: args.max_pending,
        drain_timeout: args.drain_timeout,
        workers: args.workers.map(|n| n as usize),
        accept_mode: args.accept,
        recv_buffers: args.recv_buffers,
        recv_incremental: args.recv_incremental,
        pass_through: args.pass_through,
        batch_wait: Some(args.batch_wait),
        trace: args.trace,
        tls: tls.map(|t| t.config.clone()),
        tcp: !args.no_tcp,
        udp: args.udp,
        udp_max_datagram: args.udp_max_datagram,
        udp_drop_ports: args.udp_drop_ports.0.clone(),
        max_conns: args
            .max_conns
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        idle_timeout: args.idle_timeout.0,
        write_timeout: args.write_timeout.0,
        handshake_timeout: args.handshake_timeout.0,
        direct_descriptors: args.direct_descriptors,
        sockets_per_window: args.sockets_per_window,
        test_fail_posts: None,
    }
}

/// Said after bind, so that a refused start stays one line: the descriptor limit (`nofile`,
/// as raised), and a warning for far more `--workers` than CPUs.
fn say_limits(nofile: std::io::Result<u64>, workers: Option<u32>) {
    #[cfg(unix)]
    match nofile {
        Ok(n) => {
            log::info!("descriptor limit: {n} (RLIMIT_NOFILE soft limit raised to the hard limit)")
        }
        Err(e) => log::warn!("cannot raise RLIMIT_NOFILE: {e}"),
    }
    #[cfg(not(unix))]
    let _ = nofile;
    if let (Some(n), Ok(cpus)) = (workers, std::thread::available_parallelism()) {
        if n as usize > 8 * cpus.get() {
            log::warn!(
                "--workers {n} on {cpus} CPUs: {n} threads and rings; more than 8 per CPU adds \
                 no speed (only fixed-file tables, for completion-port past the descriptor limit)"
            );
        }
    }
}

/// The ready line: where the server listens, its model and mechanism, its service and
/// transports.
fn ready_line(server: &Server, config: &ServerConfig) -> String {
    let model = server.model();
    let transport = match (config.tcp, config.udp, config.tls.is_some()) {
        (true, false, false) => "",
        (true, false, true) => " over TLS",
        (true, true, _) => " over TCP and UDP",
        (false, _, _) => " over UDP only",
    };
    let direct = match server.direct_descriptors() {
        true => ", direct descriptors",
        false => "",
    };
    format!(
        "listening on {} (model {}: {}{direct}, service {}{transport})",
        server.local_addr(),
        model,
        model.mechanism(),
        config.service,
    )
}

/// The log lines of a server that stopped: what it served, its windows, its UDP counts.
fn say_stopped(s: &StatsSnapshot, udp: bool) {
    log::info!(
        "stopped: {} connections served, {} refused, {} closed on errors; {} bytes in, {} out; \
         receive buffers posted to the kernel for connections: peak {} bytes, {} at exit",
        s.accepted,
        s.refused,
        s.errors,
        s.bytes_in,
        s.bytes_out,
        s.recv_buffer_bytes_posted_peak,
        s.recv_buffer_bytes_posted
    );
    if s.message_windows > 0 {
        log::info!(
            "async-select: {} message windows (a thread each), the fullest held {} sockets; \
             {} notification overflows (rescans)",
            s.message_windows,
            s.window_sockets_peak,
            s.notification_overflows
        );
    }
    if udp {
        log::info!(
            "UDP: {} datagrams in, {} echoed, {} dropped unanswered, {} oversized, {} dropped \
             as possible echo loops",
            s.udp_datagrams_in,
            s.udp_datagrams_out,
            s.udp_send_dropped,
            s.udp_truncated,
            s.udp_loop_dropped
        );
    }
}

/// `serve --stats-interval`: logs one line of counters every `every`, from a thread of its own,
/// until the returned sender is dropped.
fn stats_lines(
    stats: std::sync::Arc<iomodels_server::Stats>,
    every: Duration,
    udp: bool,
) -> Result<std::sync::mpsc::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("stats-interval".into())
        .spawn(move || {
            let mut prev = stats.snapshot();
            let mut at = std::time::Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout((at + every).saturating_duration_since(std::time::Instant::now()))
            {
                let now = std::time::Instant::now();
                let s = stats.snapshot();
                log::info!("{}", stats_line(&prev, &s, now.duration_since(at), udp));
                prev = s;
                at = now;
            }
        })
        .context("cannot start the --stats-interval thread")?;
    Ok(tx)
}

/// One `--stats-interval` line: the counters in `now`, with the rates since `prev`, `span` ago.
fn stats_line(
    prev: &iomodels_server::StatsSnapshot,
    now: &iomodels_server::StatsSnapshot,
    span: Duration,
    udp: bool,
) -> String {
    let secs = span.as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs / 1e6;
    let mut line = format!(
        "stats: connections {} active, {} accepted, {} refused; bytes in {} ({:.2} MB/s), \
         out {} ({:.2} MB/s); errors {}",
        now.active,
        now.accepted,
        now.refused,
        now.bytes_in,
        rate(prev.bytes_in, now.bytes_in),
        now.bytes_out,
        rate(prev.bytes_out, now.bytes_out),
        now.errors
    );
    if udp {
        line.push_str(&format!(
            "; UDP datagrams in {} ({:.0}/s), out {}",
            now.udp_datagrams_in,
            now.udp_datagrams_in.saturating_sub(prev.udp_datagrams_in) as f64 / secs,
            now.udp_datagrams_out
        ));
    }
    line
}

/// Writes `line` on stdout, never panicking and never failing the server: a closed or full
/// stdout (its reader gone, `/dev/full`) costs the line, said on stderr at most once a second.
/// `what` names the line for that message.
fn say(line: &str, what: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        use iomodels_server::log_every::LogEvery;
        static EVERY: LogEvery = LogEvery::new();
        if let Some(n) = EVERY.allow() {
            log::warn!("cannot print {what} on stdout: {e}{}", LogEvery::more(n));
        }
    }
}

/// Runs `stats` on a thread of its own for each request, coalescing requests made while it
/// runs: printing may block on a full stdout, and whoever asks (the signal thread) must not.
fn stats_printer(stats: impl Fn() + Send + 'static) -> Result<std::sync::mpsc::SyncSender<()>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("counters".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                stats();
            }
        })
        .context("cannot start the counters thread")?;
    Ok(tx)
}

/// The stop and counters signals, caught from before the server binds until [`watch_signals`]
/// handles them: one that arrives while the server starts is held, not fatal (SIGUSR1's and
/// SIGTERM's default actions end the process at once). On Windows nothing is caught early:
/// [`watch_signals`] installs the console handler.
#[cfg(unix)]
struct EarlySignals(signal_hook::iterator::Signals);
#[cfg(windows)]
struct EarlySignals;

#[cfg(unix)]
fn early_signals() -> Result<EarlySignals> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .context("cannot install signal handlers")?;
    Ok(EarlySignals(signals))
}

#[cfg(windows)]
fn early_signals() -> Result<EarlySignals> {
    Ok(EarlySignals)
}

/// Calls `stop` on SIGINT or SIGTERM, and `stats` (on a thread of its own, so that a stdout
/// nobody reads cannot hold signals up) on every SIGUSR1, from a thread of its own; signals
/// caught since [`early_signals`] are handled first. A second SIGINT or SIGTERM while the
/// first one's drain goes on exits at once (128 + the signal's number), as most daemons do.
#[cfg(unix)]
fn watch_signals(
    EarlySignals(mut signals): EarlySignals,
    stop: impl FnOnce(&str) + Send + 'static,
    stats: impl Fn() + Send + Sync + 'static,
) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGUSR1};
    let print = stats_printer(stats)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stop = Some(stop);
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    // Full: a print is pending already, which will show the latest counters.
                    let _ = print.try_send(());
                    continue;
                }
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                match stop.take() {
                    Some(stop) => stop(name),
                    None => stop_now(name, 128 + sig),
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// A second stop signal during the drain: the connections still open are cut (the process
/// exits; the kernel resets them), with `code`.
fn stop_now(what: &str, code: i32) -> ! {
    log::warn!("{what} again during the drain: stopping now, open connections are cut");
    std::process::exit(code)
}

/// Windows: Ctrl-C (Wine turns a SIGINT into it), the console closing or the control event
/// `Local\iomodels-<pid>-stop` calls `stop` once, and exits at once the second time;
/// Ctrl-Break, which has no Unix twin, or the event `Local\iomodels-<pid>-stats` prints the
/// counters as SIGUSR1 does on Unix. The events (`sys::windows::control`) are how `bench`
/// asks its servers: they reach one process, where a console event reaches its whole console.
#[cfg(windows)]
fn watch_signals(
    _: EarlySignals,
    stop: impl FnOnce(&str) + Send + 'static,
    stats: impl Fn() + Send + Sync + 'static,
) -> Result<()> {
    use iomodels_server::sys::{Control, ControlEvents, CtrlEvent};
    use std::sync::{Arc, Mutex};
    type Stop = Box<dyn FnOnce(&str) + Send>;
    let stop: Arc<Mutex<Option<Stop>>> = Arc::new(Mutex::new(Some(Box::new(stop))));
    let stop_once = |stop: &Mutex<Option<Stop>>, what: &str| {
        let once = stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        match once {
            Some(stop) => stop(what),
            None => stop_now(what, 130),
        }
    };
    let print = stats_printer(stats)?;
    let events = ControlEvents::create().context("cannot create the control events")?;
    let (stop2, print2) = (Arc::clone(&stop), print.clone());
    std::thread::Builder::new()
        .name("control-events".into())
        .spawn(move || loop {
            match events.wait() {
                Ok(Control::Stats) => {
                    let _ = print2.try_send(());
                }
                Ok(Control::Stop) => stop_once(&stop2, "the stop event"),
                Err(e) => {
                    log::warn!("the control events cannot be waited on: {e}");
                    return;
                }
            }
        })
        .context("cannot start the control-events thread")?;
    iomodels_server::sys::on_console_ctrl(move |event| match event {
        CtrlEvent::Break => {
            let _ = print.try_send(());
        }
        CtrlEvent::CtrlC | CtrlEvent::Close => stop_once(
            &stop,
            if event == CtrlEvent::CtrlC {
                "Ctrl-C"
            } else {
                "console closing"
            },
        ),
    })
    .context("cannot install the console control handler")
}

/// The server's counters as one JSON line: `{"stats":{...}}` (printed on SIGUSR1), with
/// `max_conns`, the connection cap in effect (`bench` sizes its ramps by it).
fn stats_json(s: &iomodels_server::StatsSnapshot, max_conns: usize) -> String {
    // A list of pairs, not one `json!` literal: the macro recurses once per key and past 40
    // keys hits the compiler's recursion limit.
    let counters: [(&str, serde_json::Value); 41] = [
        ("max_conns", max_conns.into()),
        ("accepted", s.accepted.into()),
        ("refused", s.refused.into()),
        ("active", s.active.into()),
        ("errors", s.errors.into()),
        ("bytes_in", s.bytes_in.into()),
        ("bytes_out", s.bytes_out.into()),
        ("pending_bytes", s.pending_bytes.into()),
        ("peak_conn_pending_bytes", s.peak_conn_pending.into()),
        ("accept_pauses", s.accept_pauses.into()),
        ("conn_cap_pauses", s.conn_cap_pauses.into()),
        ("idle_closed", s.idle_closed.into()),
        ("direct_table_full", s.direct_table_full.into()),
        ("accept_pool_grown", s.accept_pool_grown.into()),
        ("accepts_posted", s.accepts_posted.into()),
        ("shared_locks", s.shared_locks.into()),
        (
            "direct_accepted_for_others",
            s.direct_accepted_for_others.into(),
        ),
        ("slow_reader_closed", s.slow_reader_closed.into()),
        ("ops_in_flight", s.ops_in_flight.into()),
        ("recv_buffer_exhausted", s.recv_buffer_exhausted.into()),
        ("bytes_passed_through", s.bytes_passed_through.into()),
        (
            "recv_buffer_bytes_posted",
            s.recv_buffer_bytes_posted.into(),
        ),
        (
            "recv_buffer_bytes_posted_peak",
            s.recv_buffer_bytes_posted_peak.into(),
        ),
        ("notification_overflows", s.notification_overflows.into()),
        ("message_windows", s.message_windows.into()),
        ("window_sockets", s.window_sockets.into()),
        ("window_sockets_peak", s.window_sockets_peak.into()),
        ("wait_groups", s.wait_groups.into()),
        ("tls_failures", s.tls_failures.into()),
        ("tls_truncated", s.tls_truncated.into()),
        ("tls_handshake_timeouts", s.tls_handshake_timeouts.into()),
        ("udp_datagrams_in", s.udp_datagrams_in.into()),
        ("udp_datagrams_out", s.udp_datagrams_out.into()),
        ("udp_truncated", s.udp_truncated.into()),
        ("udp_send_dropped", s.udp_send_dropped.into()),
        ("udp_loop_dropped", s.udp_loop_dropped.into()),
        ("udp_bytes_in", s.udp_bytes_in.into()),
        ("udp_bytes_out", s.udp_bytes_out.into()),
        ("waits", s.waits.into()),
        ("syscalls", s.syscalls.into()),
        ("batched_waits", s.batched_waits.into()),
    ];
    let counters: serde_json::Map<String, serde_json::Value> = counters
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    serde_json::json!({ "stats": counters }).to_string()
}

/// `iomodels models`: a table whose columns are as wide as their longest cell, two spaces
/// apart, so that no two run together whatever the mechanisms' names on this OS.
fn models_table() -> String {
    let best = Model::best();
    let mut rows = vec![[
        "MODEL".to_string(),
        "MECHANISM".to_string(),
        "AVAILABLE".to_string(),
    ]];
    for m in Model::ALL {
        let avail = match m.availability() {
            Ok(()) if m == best => "yes (default)".to_string(),
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        };
        rows.push([m.name().to_string(), m.mechanism().to_string(), avail]);
    }
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for [model, mechanism, avail] in &rows {
        out.push_str(&format!("{model:<w0$}  {mechanism:<w1$}  {avail}\n"));
    }
    if cfg!(target_os = "linux") && Model::CompletionPort.is_available() {
        out.push_str(&match iomodels_server::direct_descriptors_support() {
            Ok(()) => "\ncompletion-port: direct descriptors (each worker's connections live in its ring's \
                       fixed-file table, not in the process's descriptor table; --direct-descriptors off \
                       for ordinary ones)\n"
                .to_string(),
            Err(why) => format!("\ncompletion-port: ordinary descriptors (direct descriptors unavailable: {why})\n"),
        });
    }
    out
}

fn load(args: LoadArgs) -> Result<()> {
    let connect = args.connect.pick(!args.udp)?;
    if let Err(e) = iomodels_server::sys::raise_nofile_limit() {
        log::warn!("cannot raise RLIMIT_NOFILE: {e}");
    }
    if args.udp {
        if args.idle {
            return Err(usage("--idle holds TCP connections: drop --udp"));
        }
        if args.tls.tls {
            return Err(usage(
                "--udp has no TLS (there is no DTLS here): drop --tls",
            ));
        }
    }
    if args.idle {
        if args.tls.tls {
            return Err(usage("--idle holds plain TCP connections: drop --tls"));
        }
        return load_idle(&args, connect);
    }
    let tls = tls::load_client(&args.tls, connect)?;
    let cfg = LoadConfig {
        connect,
        conns: args.conns as usize,
        size: args.size,
        depth: args.depth as usize,
        duration: args.duration,
        messages_per_conn: args.messages,
        threads: args.threads.map_or(0, |n| n as usize),
        tls,
        handshakes: args.handshakes,
        udp: args.udp,
        udp_timeout: args.udp_timeout,
        rate: args.rate,
        ..LoadConfig::default()
    };
    cfg.validate().map_err(usage)?;
    let run = std::sync::Arc::new(iomodels_load::Live::new(args.interval.is_some()));
    let stopped = live::stop_on_signals(std::sync::Arc::clone(&run))?;
    eprintln!("{}", live::start_line(&cfg, args.interval));
    let intervals = args
        .interval
        .map(|every| live::Intervals::start(std::sync::Arc::clone(&run), every, &cfg))
        .transpose()?;
    let report = iomodels_load::run_live(&cfg, &run);
    if let Some(intervals) = intervals {
        intervals.finish(report.as_ref().map_or(0.0, |r| r.elapsed_secs));
    }
    let report = report.with_context(|| format!("load against {connect}"))?;
    let verdict = load_verdict(&args, &report);
    if let Some(code) = stopped.exit_code() {
        // Stopped by a signal: the report of what ran, then 128 + the signal.
        if let Err(e) = verdict {
            eprintln!("error: {}", one_line(&causes(&e)));
        }
        let _ = std::io::stdout().flush();
        std::process::exit(i32::from(code));
    }
    verdict
}

/// Prints `report` (a table, or JSON with --json) and says whether the run was clean: when it
/// was not, the report's `error` (the causes in words, with their errno names; see
/// `iomodels_load::Failure`) is the one error line. A run in which nothing came back prints
/// no table of zeros, only that line (the JSON is printed all the same, `error` set).
fn load_verdict(args: &LoadArgs, report: &iomodels_load::LoadReport) -> Result<()> {
    let nothing = report.messages == 0 && report.error.is_some();
    if args.json {
        println!("{}", about::stamped(report));
    } else if !nothing {
        print!("{}", report.to_table());
    }
    match &report.error {
        Some(why) => Err(anyhow!("{why}")),
        None => Ok(()),
    }
}

fn load_idle(args: &LoadArgs, connect: SocketAddr) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    if args.shard.is_some() {
        return idle::run_shard(stop);
    }
    let cfg = idle_config(args, connect)?;
    eprintln!(
        "load: {} (idle), {} connections held for {:?}{}",
        connect,
        cfg.conns,
        args.duration,
        match args.echo_every {
            Some(d) => format!(", each echoing one {} B message every {d:?}", args.size),
            None => ", silent".to_string(),
        }
    );
    let per_process = match args.shard_size {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => idle::per_process(),
    };
    let report = idle::hold_split(&cfg, per_process, &stop, &mut |_| {})
        .with_context(|| format!("idle connections to {connect}"))?;
    let error = idle_error(&report);
    // Nothing held: the error line says why, without a table of zeros. The JSON has the
    // same `error` (null when the hold was clean), as `load`'s.
    #[derive(serde::Serialize)]
    struct WithError<'a> {
        #[serde(flatten)]
        report: &'a iomodels_load::IdleReport,
        error: &'a Option<String>,
    }
    if args.json {
        let report = WithError {
            report: &report,
            error: &error,
        };
        println!("{}", about::stamped(&report));
    } else if report.conns_held > 0 {
        print!("{}", report.to_table());
    }
    match error {
        Some(why) => Err(anyhow!("{why}")),
        None => Ok(()),
    }
}

/// The hold `load --idle` asks for; more connections than the source addresses reach is a
/// usage error.
fn idle_config(args: &LoadArgs, connect: SocketAddr) -> Result<iomodels_load::IdleConfig> {
    let conns = args.conns as usize;
    let reach = iomodels_load::max_idle_conns(connect);
    if conns > reach {
        return Err(usage(format!(
            "--conns {conns} is more than --idle can open to {}: {reach} at most ({})",
            connect,
            if reach > iomodels_load::PER_SOURCE {
                "254 source addresses 127.0.0.x, 10,000 connections each"
            } else {
                "one source address, 20,000 connections; only an IPv4 loopback server gets \
                 127.0.0.x source addresses"
            }
        )));
    }
    Ok(iomodels_load::IdleConfig {
        connect,
        conns,
        hold: args.duration,
        echo_every: args.echo_every,
        size: args.size,
        threads: match args.threads {
            None => iomodels_load::IdleConfig::default().threads,
            Some(n) => n as usize,
        },
        ..iomodels_load::IdleConfig::default()
    })
}

/// Why an idle hold failed: connections not held, or closed by the server, or paced echoes
/// that failed; `None` when it was clean.
fn idle_error(report: &iomodels_load::IdleReport) -> Option<String> {
    if report.conns_held < report.conns_requested {
        Some(format!(
            "held {} of {} connections ({} connect errors, {} echo errors{})",
            report.conns_held,
            report.conns_requested,
            report.connect_errors,
            report.echo_errors,
            match &report.first_error {
                Some(why) => format!("; first: {why}"),
                None => String::new(),
            }
        ))
    } else if report.conns_still_open < report.conns_held || report.message_errors > 0 {
        Some(format!(
            "of {} connections held, {} were closed by the server before the end (see its log) \
             and {} paced echoes failed",
            report.conns_held, report.closed_by_server, report.message_errors
        ))
    } else {
        None
    }
}
