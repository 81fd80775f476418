//! `iomodels udp`: the UDP tools (`send`, `recv`, `discover`), a thin shell over
//! `iomodels-udp`: flags in, one report out (a table or `--json`, which carries `build` and
//! `machine` as every JSON of this tool does: `about.rs`), errors as one line (an OS error in
//! words with its errno name, e.g. `connection refused (ECONNREFUSED)`).
//!
//! SIGINT and SIGTERM (Ctrl-C on Windows) set a flag the tools poll at least every 50 ms:
//! a receiver then prints what it saw and exits 0, as if its duration had passed.

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use iomodels_core::units::{parse_bytes, parse_duration};
use iomodels_udp::discover::{self, ProbeConfig, Responder};
use iomodels_udp::{IfaceSpec, ListenOptions, Receiver, SendConfig, SendOptions, Sender};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct UdpArgs {
    #[command(subcommand)]
    command: UdpCommand,
}

#[derive(Subcommand)]
enum UdpCommand {
    /// Send numbered, timestamped datagrams at a steady rate (unicast, multicast, broadcast)
    ///
    /// Each datagram starts with a 28-byte header: magic "IOMu", run id, sequence number,
    /// send time (CLOCK_REALTIME, ns). Without --count or --duration it sends until Ctrl-C.
    Send(SendArgs),
    /// Receive datagrams (joining a multicast group if asked); report loss, duplicates,
    /// reordering and one-way latency
    ///
    /// Prints one line on stderr when bound and joined, and the report on stdout after
    /// --count datagrams, --duration, or Ctrl-C/SIGINT (exit 0 in all three cases).
    Recv(RecvArgs),
    /// Find peers before connecting: answer probes (--respond) or send them (--probe)
    Discover(DiscoverArgs),
}

/// The multicast and broadcast flags `send` and `discover --probe` share.
#[derive(Args)]
struct SendOptionArgs {
    /// Allow a broadcast destination (SO_BROADCAST)
    #[arg(long)]
    broadcast: bool,
    /// Multicast TTL / hop limit (default 1: this link); for unicast, the IP TTL
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: Option<u32>,
    /// Multicast: loop datagrams back to receivers on this host (IP_MULTICAST_LOOP)
    #[arg(long = "loop")]
    multicast_loop: bool,
    /// Multicast: the outgoing interface, by address, name (Linux) or index (IPv6)
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_iface)]
    iface: Option<IfaceSpec>,
}

impl SendOptionArgs {
    fn options(&self) -> SendOptions {
        SendOptions {
            ttl: self.ttl,
            multicast_loop: self.multicast_loop,
            iface: self.iface.clone(),
            broadcast: self.broadcast,
        }
    }
}

#[derive(Args)]
struct SendArgs {
    /// Destination: IP:PORT of a host, a multicast group or a broadcast address
    #[arg(long, value_name = "ADDR", value_parser = crate::parse_addr)]
    to: SocketAddr,
    #[command(flatten)]
    opts: SendOptionArgs,
    /// Stop after N datagrams
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Datagrams per second (0: as fast as possible)
    #[arg(long, value_name = "PPS", default_value_t = 1000.0)]
    rate: f64,
    /// Bytes per datagram (UDP payload, header included: 28 to 65507 over IPv4)
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_bytes)]
    size: usize,
    /// Stop after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

/// Where `recv` and `discover --respond` listen.
#[derive(Args)]
struct ListenArgs {
    /// Multicast group to join (IPv4 224.0.0.0/4 or IPv6 ff00::/8); the port is --listen's
    #[arg(long, value_name = "GROUP")]
    multicast: Option<IpAddr>,
    /// Interface to join the group on, by address, name (Linux) or index (IPv6)
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_iface, requires = "multicast")]
    iface: Option<IfaceSpec>,
    /// Source-specific membership: only datagrams from this sender (IPv4)
    #[arg(long, value_name = "S", requires = "multicast")]
    source: Option<IpAddr>,
}

#[derive(Args)]
struct RecvArgs {
    /// Address to bind (port 0 picks one); with --multicast, the wildcard and the group's port
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9991", value_parser = crate::parse_addr)]
    listen: SocketAddr,
    #[command(flatten)]
    group: ListenArgs,
    /// Stop after N datagrams of the followed run
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("role").required(true).args(["respond", "probe"]))]
struct DiscoverArgs {
    /// Answer probes with --service until --count, --duration or Ctrl-C
    #[arg(long)]
    respond: bool,
    /// Send probes to --to and list who answered within --timeout
    #[arg(long)]
    probe: bool,
    /// Responder: address to bind
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9992", value_parser = crate::parse_addr, conflicts_with = "probe")]
    listen: SocketAddr,
    /// Responder: multicast group to join (the port is --listen's)
    #[arg(long, value_name = "GROUP", conflicts_with = "probe")]
    multicast: Option<IpAddr>,
    /// The interface: the responder joins the group on it, the prober sends multicast
    /// probes out of it. By address, name (Linux) or index (IPv6)
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_iface)]
    iface: Option<IfaceSpec>,
    /// Responder: the TCP service address to announce (0.0.0.0: the address the answer
    /// comes from)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9990", value_parser = crate::parse_addr, conflicts_with = "probe")]
    service: SocketAddr,
    /// Responder: stop after N answers
    #[arg(long, value_name = "N", conflicts_with = "probe")]
    count: Option<u64>,
    /// Responder: stop after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "probe")]
    duration: Option<Duration>,
    /// Prober: where the probes go (broadcast address, group, or a host), IP:PORT
    #[arg(long, value_name = "ADDR", value_parser = crate::parse_addr, conflicts_with = "respond")]
    to: Option<SocketAddr>,
    /// Prober: allow a broadcast destination (SO_BROADCAST)
    #[arg(long, conflicts_with = "respond")]
    broadcast: bool,
    /// Prober: multicast TTL / hop limit (default 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=255), conflicts_with = "respond")]
    ttl: Option<u32>,
    /// Prober: loop multicast probes back to responders on this host
    #[arg(long = "loop", conflicts_with = "respond")]
    multicast_loop: bool,
    /// Prober: how long to wait for answers
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, conflicts_with = "respond")]
    timeout: Duration,
    /// Prober: probes to send, spread over the first half of --timeout
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100), conflicts_with = "respond")]
    probes: u32,
    /// Prober: print one JSON object instead of a table
    #[arg(long, conflicts_with = "respond")]
    json: bool,
}

fn parse_iface(s: &str) -> Result<IfaceSpec, String> {
    s.parse()
}

/// Runs `iomodels udp ...`.
pub fn command(args: UdpArgs) -> Result<()> {
    let stop = stop_flag()?;
    match args.command {
        UdpCommand::Send(a) => send(a, &stop),
        UdpCommand::Recv(a) => recv(a, &stop),
        UdpCommand::Discover(a) if a.respond => respond(a, &stop),
        UdpCommand::Discover(a) => probe(a, &stop),
    }
}

/// A flag that SIGINT and SIGTERM (Ctrl-C, on Windows) set.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

fn ready(line: &str) {
    eprintln!("{line}");
    let _ = std::io::stderr().flush();
}

fn send(a: SendArgs, stop: &AtomicBool) -> Result<()> {
    let report = (|| {
        Sender::new(SendConfig {
            to: a.to,
            opts: a.opts.options(),
            count: a.count,
            duration: a.duration,
            rate: a.rate,
            size: a.size,
        })?
        .run(stop)
        .map_err(anyhow::Error::from)
    })();
    print_report(a.json, report, |r| r.to_table(), |_| None)
}

/// Prints a command's report: a table, or with `json` one JSON object (with `build` and
/// `machine`) whose `error` is null or says why the command failed, `failed(report)` or the
/// error itself, in the words of its stderr line. So a script reading stdout gets one object
/// whether the run failed at its start (a port in use: only `error`, `build` and `machine`)
/// or after it (no answer to the probes: the report too); a usage error prints none. The
/// error is passed on for `main` to print and exit 1.
fn print_report<T: serde::Serialize>(
    json: bool,
    report: Result<T>,
    table: impl Fn(&T) -> String,
    failed: impl Fn(&T) -> Option<anyhow::Error>,
) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Outcome<'a, T> {
        #[serde(flatten)]
        report: Option<&'a T>,
        error: Option<String>,
    }
    let error = match &report {
        Ok(r) => failed(r).map_or(Ok(()), Err),
        Err(_) => Ok(()),
    };
    let words = |e: &anyhow::Error| crate::one_line(&crate::causes(e));
    match (&report, json) {
        (Err(e), true) if !crate::is_usage(e) => {
            let out = Outcome::<T> {
                report: None,
                error: Some(words(e)),
            };
            println!("{}", crate::about::stamped(&out));
        }
        (Ok(r), true) => {
            let out = Outcome {
                report: Some(r),
                error: error.as_ref().err().map(words),
            };
            println!("{}", crate::about::stamped(&out));
        }
        (Ok(r), false) => print!("{}", table(r)),
        (Err(_), _) => {}
    }
    report.and(error)
}

fn listen_options(listen: SocketAddr, g: &ListenArgs) -> ListenOptions {
    ListenOptions {
        listen,
        group: g.multicast,
        iface: g.iface.clone(),
        source: g.source,
    }
}

fn recv(a: RecvArgs, stop: &AtomicBool) -> Result<()> {
    let report = Receiver::bind(&listen_options(a.listen, &a.group))
        .map_err(anyhow::Error::from)
        .and_then(|receiver| {
            ready(&format!("udp recv: {}", receiver.description()));
            Ok(receiver.run(a.count, a.duration, stop)?)
        });
    print_report(a.json, report, |r| r.to_table(), |_| None)
}

fn respond(a: DiscoverArgs, stop: &AtomicBool) -> Result<()> {
    let opts = ListenOptions {
        listen: a.listen,
        group: a.multicast,
        iface: a.iface.clone(),
        source: None,
    };
    let responder = Responder::bind(&opts, a.service)?;
    ready(&format!(
        "udp discover: {}, answering with service {}",
        responder.description(),
        a.service
    ));
    let (answers, _) = responder.run(a.count, a.duration, stop, |from| {
        log::info!("answered a probe from {from}");
    })?;
    println!("answered {answers} probes");
    Ok(())
}

fn probe(a: DiscoverArgs, stop: &AtomicBool) -> Result<()> {
    let to = a.to.ok_or_else(|| {
        crate::usage("--probe needs --to ADDR (a broadcast address, a group or a host)")
    })?;
    let report = discover::probe(
        &ProbeConfig {
            to,
            opts: SendOptions {
                ttl: a.ttl,
                multicast_loop: a.multicast_loop,
                iface: a.iface.clone(),
                broadcast: a.broadcast,
            },
            timeout: a.timeout,
            probes: a.probes,
        },
        stop,
    );
    print_report(
        a.json,
        report.map_err(anyhow::Error::from),
        |r| r.to_table(),
        |r| {
            r.answers.is_empty().then(|| {
                anyhow!(
                    "no answer to {} probe(s) sent to {to} within {:?}",
                    r.probes,
                    a.timeout
                )
            })
        },
    )
}
