//! `iomodels bench`: the lab that compares every model on this machine.
//!
//! For each repetition, for each scenario, for each model in turn (round-robin, so a drifting
//! machine hits every model alike), bench starts `iomodels serve` as a child process — pinned
//! to CPU 0 while the load generator (this process) runs on CPU 1 — warms it up, measures, and
//! stops it with SIGTERM. The server's CPU time and context switches come from /proc, its
//! wake-ups and system calls from its own counters (SIGUSR1 makes it print them), the rest from
//! the load generator. Each row keeps the median and the min-max of the repetitions.
//!
//! On Windows the same run uses the Windows equivalents (`os.rs`, `process_windows.rs`): the
//! served child's named events `Local\iomodels-<pid>-stats` / `-stop` for SIGUSR1 / SIGTERM,
//! process affinity masks for the pinning, the Win32 process API for /proc; what Windows (or
//! Wine) does not give is `None`. There is no descriptor limit there: the connection scenarios
//! are bounded by the models' own limits and the load generator's source addresses.
//!
//! The headline is **server CPU seconds per million messages**: on a small machine the load
//! generator costs as much CPU as the server, so messages per second are bounded by both and
//! drift with whatever else runs; CPU per message is the server's own cost.
//!
//! The connection scenarios are sized by what each server says it can hold: `max_conns` in
//! its SIGUSR1 counters (the descriptor limit less 64, or for completion-port with io_uring
//! direct descriptors what its fixed-file tables hold, a table per worker, each bounded by
//! RLIMIT_NOFILE), the model's own mechanism (select's `FD_SETSIZE`, blocking's thread cap)
//! and what the load generator holds ([`load_capacity`]). `max-conns` ramps up to that bound
//! and says what stopped it; `c100k` runs only where all its connections fit and lists the
//! others as not run, with the reason. Every ramp is bounded in time.

mod compare;
mod curve;
mod os;
// The server's CPU time, context switches, memory and descriptors: /proc on Linux, the Win32
// process API on Windows; one set of functions.
#[cfg_attr(windows, path = "process_windows.rs")]
#[cfg_attr(not(windows), path = "procfs.rs")]
mod process;
mod report;
mod results;
mod soak;
mod table;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use iomodels_load::{IdleConfig, LoadConfig, Phase};
use iomodels_server::{sys, Model};
use os::{pin_self, set_realtime, unpin_self};
use results::{BenchResults, Machine, Row, ScenarioResult, Stat};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `iomodels bench` flags.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Models to compare, comma-separated [default: every available model, and the tokio
    /// reference]; `tokio` names the reference
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    models: Vec<String>,
    /// Scenarios to run, comma-separated: pp64-1, pp64-100, pp64-1000, pp4k-100, pp64k-10,
    /// udp64-100, udp1400-100 (UDP echo: serve --udp --no-tcp, load --udp), rate64-100
    /// (latency against offered load: open loop, load --rate over 100 connections, a ladder
    /// of rates from 1,000 msg/s ×1.5 per step up to saturation; p99 from the schedule,
    /// drawn as a curve per model), idle, c12k, c100k (100,000 connections, a 64 B echo each
    /// every 10 s, held 30 s: only the models that can hold them run), max-conns (a ramp up
    /// to each model's own bound: completion-port, with direct descriptors, past 100,000 with
    /// --workers 6), soak (long: mixed load with faults, server RSS and descriptors over
    /// time; only when named, run once) [default: all but soak; with --quick: pp64-100,
    /// rate64-100 (5 short steps), idle, c12k]
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Repetitions of every model and scenario (medians and min-max are reported)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// A short subset that runs in seconds (for CI and tests; numbers not to be trusted)
    #[arg(long)]
    quick: bool,
    /// Measured time of each ping-pong and UDP run [default: 3s]; of the soak, per model
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = iomodels_core::units::parse_duration)]
    duration: Option<Duration>,
    /// Datagrams each socket keeps in flight in the UDP scenarios
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    udp_depth: u32,
    /// Idle connections the idle scenario holds
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    idle: usize,
    /// Upper bound of the max-conns ramp [default: each model's own bound: the connection cap
    /// the server reports (its descriptor limit less 64; for completion-port with direct
    /// descriptors, what its fixed-file tables hold), and what the load generator can hold]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_conns: Option<u64>,
    /// Connections the c100k scenario holds
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    c100k: u64,
    /// How often each c100k connection echoes its 64 B message (for tests: shrinks the run)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = iomodels_core::units::parse_duration, hide = true)]
    c100k_every: Duration,
    /// How long c100k holds its connections once all are open (for tests: shrinks the run)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = iomodels_core::units::parse_duration, hide = true)]
    c100k_hold: Duration,
    /// An extra `iomodels serve` argument for every model's server (not the tokio
    /// reference), e.g. --serve-arg=--batch-wait=0 --serve-arg=--recv-buffers=64x64KiB:
    /// to compare settings side by side; repeatable
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Run server and load generator as SCHED_RR real-time threads (needs root); on Windows,
    /// raise both to HIGH_PRIORITY_CLASS
    #[arg(long)]
    realtime: bool,
    /// Also write the results as JSON to FILE; `--json` alone (or `--json -`) prints them on
    /// stdout as one JSON object, as `load --json` does, and the table goes to stderr
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<std::path::PathBuf>,
    /// Where to write the HTML report
    #[arg(long, value_name = "FILE", default_value = "report.html")]
    report: std::path::PathBuf,
    /// Compare with an earlier run's --json FILE: per scenario and model, the medians, their
    /// ratio and whether the min-max ranges overlap (overlapping: no change shown), in the
    /// table and the report
    #[arg(long, value_name = "FILE")]
    baseline: Option<std::path::PathBuf>,
    /// Run nothing: take the results from FILE (an earlier run's --json) and print its table,
    /// write its report, and compare it with --baseline
    #[arg(long, value_name = "FILE")]
    results: Option<std::path::PathBuf>,
}

/// An earlier run's results, from its `--json` file (`what`: the flag that named it).
fn read_results(path: &std::path::Path, what: &str) -> Result<BenchResults> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{what} {}: not the JSON of `iomodels bench --json` ({e})",
            path.display()
        )
    })
}

/// A scenario: what load, and which columns matter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    /// Closed-loop echo: `conns` connections, one `size`-byte message in flight each.
    PingPong {
        name: &'static str,
        conns: usize,
        size: usize,
    },
    /// Closed-loop UDP echo: `conns` sockets, `depth` datagrams of `size` bytes in flight
    /// each (`--udp-depth`), against `serve --udp --no-tcp`.
    Udp {
        name: &'static str,
        conns: usize,
        size: usize,
    },
    /// Open loop: latency against offered load, a ladder of rates up to saturation.
    Rate,
    /// Hold idle connections; server RSS per connection.
    Idle,
    /// The seed's experiment: 12,000 connections, one 64 B message a second each.
    C12k,
    /// Past the descriptor cap: 100,000 connections, one 64 B message every 10 s each; only
    /// the models that can hold that many run it.
    C100k,
    /// Ramp connections up to a bound; how many each model held while still echoing.
    MaxConns,
    /// Mixed load with faults for `--duration`: the server's RSS and descriptors over time.
    /// Only when named; run once whatever `--repeat` says.
    Soak,
}

const PINGPONGS: [Scenario; 5] = [
    Scenario::PingPong {
        name: "pp64-1",
        conns: 1,
        size: 64,
    },
    Scenario::PingPong {
        name: "pp64-100",
        conns: 100,
        size: 64,
    },
    Scenario::PingPong {
        name: "pp64-1000",
        conns: 1000,
        size: 64,
    },
    Scenario::PingPong {
        name: "pp4k-100",
        conns: 100,
        size: 4096,
    },
    Scenario::PingPong {
        name: "pp64k-10",
        conns: 10,
        size: 65536,
    },
];

/// The UDP scenarios: not in `--quick` (CI), in the full list.
const UDPS: [Scenario; 2] = [
    Scenario::Udp {
        name: "udp64-100",
        conns: 100,
        size: 64,
    },
    Scenario::Udp {
        name: "udp1400-100",
        conns: 100,
        size: 1400,
    },
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::PingPong { name, .. } | Scenario::Udp { name, .. } => name,
            Scenario::Rate => curve::NAME,
            Scenario::Idle => "idle",
            Scenario::C12k => "c12k",
            Scenario::C100k => "c100k",
            Scenario::MaxConns => "max-conns",
            Scenario::Soak => "soak",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Scenario::PingPong { .. } => "pingpong",
            Scenario::Udp { .. } => "udp",
            Scenario::Rate => "rate",
            Scenario::Idle => "idle",
            Scenario::C12k => "c12k",
            Scenario::C100k => "c100k",
            Scenario::MaxConns => "max-conns",
            Scenario::Soak => "soak",
        }
    }

    /// Every scenario the default run has (all but the soak, which is long).
    fn all() -> Vec<Scenario> {
        let mut v = PINGPONGS.to_vec();
        v.extend(UDPS);
        v.extend([
            Scenario::Rate,
            Scenario::Idle,
            Scenario::C12k,
            Scenario::C100k,
            Scenario::MaxConns,
        ]);
        v
    }

    /// The `--quick` subset (CI's): seconds, no UDP, no c100k, no max-conns ramp; a short
    /// rate ladder.
    fn quick() -> Vec<Scenario> {
        vec![PINGPONGS[1], Scenario::Rate, Scenario::Idle, Scenario::C12k]
    }

    fn parse(s: &str) -> Result<Scenario> {
        let known = || Scenario::all().into_iter().chain([Scenario::Soak]);
        known().find(|sc| sc.name() == s).ok_or_else(|| {
            let names: Vec<_> = known().map(|s| s.name()).collect();
            crate::usage(format!(
                "unknown scenario '{s}' (expected one of: {})",
                names.join(", ")
            ))
        })
    }
}

/// Sizes of the scenarios for this run (`--quick` shrinks them).
struct Plan {
    duration: Duration,
    warmup: Duration,
    idle: usize,
    idle_hold: Duration,
    c12k: usize,
    c12k_hold: Duration,
    /// c100k: connections, how often each echoes, how long they are held.
    c100k: usize,
    c100k_every: Duration,
    c100k_hold: Duration,
    /// The max-conns bound given with `--max-conns` (`None`: each model's own bound).
    max_conns: Option<usize>,
    /// The process descriptor limit (RLIMIT_NOFILE, raised to the hard limit): it bounds this
    /// process, each server process, and each io_uring fixed-file table.
    nofile: usize,
    /// Connections the load generator can hold, and why no more ([`load_capacity`]).
    load_capacity: Bound,
    /// Longest a ramp of connections may take; then it stops opening and holds what it has.
    ramp_limit: Duration,
    pinned: bool,
    /// `--realtime`: the servers get the raised class too (Windows: set on each child).
    realtime: bool,
    /// Extra `serve` arguments (`--serve-arg`).
    serve_args: Vec<String>,
    /// Datagrams in flight per socket in the UDP scenarios.
    udp_depth: usize,
    /// Length of the soak, per model (after its warm-up).
    soak: Duration,
    /// The offered rates of the rate scenario.
    ladder: curve::Ladder,
}

/// One server to measure: a model, or the tokio reference.
#[derive(Debug, Clone, PartialEq)]
enum Participant {
    Model(Model),
    Tokio,
}

impl Participant {
    fn name(&self) -> String {
        match self {
            Participant::Model(m) => m.name().to_string(),
            Participant::Tokio => "reference: tokio".to_string(),
        }
    }

    /// `iomodels serve` arguments; `udp`: UDP only (`--udp --no-tcp`); `workers`: the
    /// completion-port's worker count when a scenario needs more than one.
    fn serve_args(&self, plan: &Plan, udp: bool, workers: Option<usize>) -> Vec<String> {
        let pinned = plan.pinned;
        let listen = ["--listen".to_string(), "127.0.0.1:0".to_string()];
        match self {
            Participant::Model(m) => {
                let mut a = vec!["serve".into(), "--model".into(), m.name().into()];
                if udp {
                    a.extend(["--udp".into(), "--no-tcp".into()]);
                }
                if *m == Model::CompletionPort {
                    if let Some(n) = workers {
                        // A fixed-file table per worker: capacity, not speed.
                        a.extend(["--workers".into(), n.to_string()]);
                    } else if pinned {
                        // One CPU for the server: one worker (two would only contend for it).
                        a.extend(["--workers".into(), "1".into()]);
                    }
                }
                a.extend(plan.serve_args.iter().cloned());
                a.extend(listen);
                a
            }
            Participant::Tokio => {
                let mut a = vec!["tokio-reference".to_string()];
                a.extend(listen);
                a
            }
        }
    }
}

/// A running `iomodels serve` child.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
    counters: bool,
}

impl Server {
    fn start(p: &Participant, plan: &Plan) -> Result<Server> {
        Server::start_serving(p, plan, false, None)
    }

    /// Starts `p`; with `udp`, serving UDP alone; with `workers`, completion-port runs that
    /// many workers (see [`Participant::serve_args`]).
    fn start_serving(
        p: &Participant,
        plan: &Plan,
        udp: bool,
        workers: Option<usize>,
    ) -> Result<Server> {
        // The child inherits the affinity of the thread that starts it: pin this thread to
        // the server's CPU for the spawn, then back to the load generator's.
        if plan.pinned {
            pin_self(0).context("cannot pin to CPU 0")?;
        }
        let spawn = || {
            Command::new(std::env::current_exe()?)
                .args(p.serve_args(plan, udp, workers))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        };
        let mut spawned = spawn();
        // Wine's CreateProcess fails now and then on a busy machine (ERROR_INTERNAL_ERROR,
        // 1359, seen once in a quick run): once more before the step is lost.
        if let (true, Err(e)) = (cfg!(windows), &spawned) {
            log::warn!(
                "cannot start iomodels serve for {} ({e}): trying once more",
                p.name()
            );
            spawned = spawn();
        }
        if plan.pinned {
            pin_self(1).context("cannot pin to CPU 1")?;
        }
        let mut child = spawned.context("cannot start iomodels serve")?;
        if let Err(e) = os::place_child(&child, plan.pinned.then_some(0), plan.realtime) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cannot place {} on CPU 0: {e}", p.name());
        }
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split(' ').next())
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not start (it printed {line:?})", p.name());
        };
        Ok(Server {
            child,
            pid,
            addr,
            stdout,
            counters: matches!(p, Participant::Model(_)),
        })
    }

    /// The server's counters (`iomodels serve` prints them as one JSON line on SIGUSR1);
    /// `None` for the reference, which has none.
    fn stats(&mut self) -> Option<serde_json::Value> {
        if !self.counters {
            return None;
        }
        os::request_stats(self.pid).ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        let mut v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(v["stats"].take())
    }

    /// The connection cap the server has in effect (`max_conns` in its counters): its
    /// `--max-conns` default, resolved from its descriptor limit or its fixed-file tables.
    fn max_conns(&mut self) -> Option<usize> {
        let s = self.stats()?;
        usize::try_from(s["max_conns"].as_u64()?).ok()
    }

    /// Wake-ups and system calls so far.
    fn counters(&mut self) -> Option<(f64, f64)> {
        let s = self.stats()?;
        Some((s["waits"].as_f64()?, s["syscalls"].as_f64()?))
    }

    fn stop(mut self) {
        let _ = os::request_stop(self.pid);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one repetition of one model in one scenario measured.
#[derive(Default, Clone)]
struct Sample {
    msgs_per_sec: Option<f64>,
    mb_per_sec: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    cpu_s_per_million: Option<f64>,
    server_cpu_percent: Option<f64>,
    ctx_per_1k: Option<f64>,
    wakeups_per_msg: Option<f64>,
    syscalls_per_msg: Option<f64>,
    loss_percent: Option<f64>,
    rss_per_conn: Option<f64>,
    /// Private-bytes growth per connection (Windows; `None` on Linux and under Wine).
    private_per_conn: Option<f64>,
    conns_held: Option<u64>,
    /// Paced echoes that came back right (c100k).
    verified_echoes: Option<u64>,
    /// Connections still open when the hold ended (c100k).
    still_open: Option<u64>,
    /// Paced rounds the load generator could not finish within their interval (c100k).
    late_rounds: Option<u64>,
    stop_reason: Option<String>,
    /// Anything else worth knowing about this repetition.
    note: Option<String>,
    mismatches: u64,
    errors: u64,
    /// CPU others used during the run, in % of one core.
    others_percent: f64,
    /// The soak scenario's time series and figures.
    soak: Option<results::Soak>,
    /// The rate scenario's ladder.
    curve: Option<curve::Run>,
}

/// Server-side readings at one moment.
struct Reading {
    at: Instant,
    cpu: f64,
    /// This process's CPU time (the load generator's threads).
    own_cpu: f64,
    /// `None` where the OS does not count them (Wine).
    ctx: Option<u64>,
    counters: Option<(f64, f64)>,
    machine_busy: f64,
}

fn read(server: &mut Server) -> Reading {
    Reading {
        at: Instant::now(),
        cpu: process::cpu_seconds(server.pid).unwrap_or(0.0),
        own_cpu: process::cpu_seconds(std::process::id()).unwrap_or(0.0),
        ctx: process::context_switches(server.pid),
        counters: server.counters(),
        machine_busy: process::machine_busy_seconds().unwrap_or(0.0),
    }
}

/// Fills the per-message server figures of `s` from two readings around `messages` messages,
/// and how much CPU processes other than the server and this one used meanwhile.
fn per_message(s: &mut Sample, a: &Reading, b: &Reading, messages: u64) {
    let load_cpu = b.own_cpu - a.own_cpu;
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let cpu = b.cpu - a.cpu;
    s.server_cpu_percent = Some(100.0 * cpu / secs);
    if messages > 0 {
        let m = messages as f64;
        s.cpu_s_per_million = Some(cpu / m * 1e6);
        s.ctx_per_1k = a
            .ctx
            .zip(b.ctx)
            .map(|(a, b)| b.saturating_sub(a) as f64 / m * 1e3);
        if let (Some((w0, c0)), Some((w1, c1))) = (a.counters, b.counters) {
            s.wakeups_per_msg = Some((w1 - w0) / m);
            s.syscalls_per_msg = Some((c1 - c0) / m);
        }
    }
    let others = (b.machine_busy - a.machine_busy) - cpu - load_cpu;
    s.others_percent = (100.0 * others / secs).max(0.0);
}

/// Closed-loop echo, one message (or datagram) in flight per connection (UDP: `plan.udp_depth`
/// per socket, against the model serving UDP alone): a warm-up run, then the measured one
/// between two readings of the server.
fn echo_loop(p: &Participant, plan: &Plan, conns: usize, size: usize, udp: bool) -> Result<Sample> {
    if udp && matches!(p, Participant::Tokio) {
        bail!("the tokio reference serves TCP only");
    }
    let mut server = Server::start_serving(p, plan, udp, None)?;
    let addr = server.addr;
    let cfg = |duration| LoadConfig {
        connect: addr,
        conns,
        size,
        depth: if udp { plan.udp_depth } else { 1 },
        duration,
        udp,
        ..LoadConfig::default()
    };
    let warm = iomodels_load::run(&cfg(plan.warmup))?;
    let a = read(&mut server);
    let report = iomodels_load::run(&cfg(plan.duration))?;
    let b = read(&mut server);
    server.stop();
    let mut s = Sample {
        msgs_per_sec: report.msgs_per_sec,
        mb_per_sec: report.mb_per_sec,
        p50: report.latency_us.as_ref().map(|l| l.p50 as f64),
        p99: report.latency_us.as_ref().map(|l| l.p99 as f64),
        p999: report.latency_us.as_ref().map(|l| l.p999 as f64),
        mismatches: report.mismatches + warm.mismatches,
        errors: report.connect_errors + report.io_errors + report.incomplete,
        ..Sample::default()
    };
    if let Some(u) = &report.udp {
        s.loss_percent = u.loss_percent;
        s.errors += u.refused;
    }
    per_message(&mut s, &a, &b, report.messages);
    Ok(s)
}

/// What a hold measured, with the server still running (for a last look at its counters).
struct Held {
    sample: Sample,
    server: Server,
    report: iomodels_load::IdleReport,
    /// Readings when every connection was open, and when the hold ended.
    start: Reading,
    end: Reading,
    /// The ramp ran out of time ([`Plan::ramp_limit`]) and stopped opening.
    cut: bool,
}

/// Connections the load generator can hold, and what bounds it. [`hold`] spreads them over
/// shards past this process's descriptor limit (`crate::idle`): at most
/// [`crate::idle::MAX_SHARDS`] processes of RLIMIT_NOFILE less [`crate::idle::RESERVE`] each,
/// and what the source-address plan reaches (127.0.0.x; every server here is on 127.0.0.1).
fn load_capacity(nofile: usize) -> Bound {
    // (Windows has no descriptor limit: `nofile` is then usize::MAX.)
    let shards =
        crate::idle::MAX_SHARDS.saturating_mul(nofile.saturating_sub(crate::idle::RESERVE));
    let sources =
        iomodels_load::max_idle_conns(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)));
    Bound {
        conns: shards.min(sources),
        why: if shards < sources {
            format!(
                "the load generator's limit ({} shards of RLIMIT_NOFILE less {})",
                crate::idle::MAX_SHARDS,
                crate::idle::RESERVE
            )
        } else {
            "the load generator's limit (its source addresses, 127.0.0.x)".into()
        },
    }
}

/// Opens `cfg.conns` connections to `server` (one-byte echo each) — past this process's
/// descriptor limit over shards (`crate::idle`) — and holds them as `cfg` says; fills the
/// connection count and RSS per connection of the sample. Opening stops after
/// `plan.ramp_limit` (then the hold ends at once: `Held::cut`).
fn hold(mut server: Server, plan: &Plan, cfg: IdleConfig) -> Result<Held> {
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = process::rss_bytes(server.pid).unwrap_or(0);
    let private_before = process::private_bytes(server.pid);
    let cfg = IdleConfig {
        connect: server.addr,
        ..cfg
    };
    let (stop, opened, cut) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let mut at_held = None;
    let mut at_closing = None;
    let mut rss_held = 0;
    let mut private_held = None;
    let report = std::thread::scope(|scope| {
        let (stop, opened, cut) = (&stop, &opened, &cut);
        // The ramp's time bound: past it, stop opening.
        scope.spawn(move || {
            let end = Instant::now() + plan.ramp_limit;
            while !opened.load(Ordering::Relaxed) {
                if Instant::now() >= end {
                    cut.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // The one call of the load generator's hold.
        let report = crate::idle::hold(&cfg, stop, &mut |phase| match phase {
            Phase::Held => {
                opened.store(true, Ordering::Relaxed);
                rss_held = process::rss_bytes(server.pid).unwrap_or(0);
                private_held = process::private_bytes(server.pid);
                at_held = Some(read(&mut server));
            }
            Phase::Closing => at_closing = Some(read(&mut server)),
        });
        opened.store(true, Ordering::Relaxed);
        report
    })?;
    let (a, b) = (at_held.expect("held"), at_closing.expect("closing"));
    let mut s = Sample {
        conns_held: Some(report.conns_held as u64),
        errors: report.connect_errors + report.echo_errors + report.message_errors,
        ..Sample::default()
    };
    if report.conns_held > 0 {
        s.rss_per_conn =
            Some(rss_held.saturating_sub(rss_before) as f64 / report.conns_held as f64);
        s.private_per_conn = private_before
            .zip(private_held)
            .map(|(a, b)| b.saturating_sub(a) as f64 / report.conns_held as f64);
    }
    Ok(Held {
        sample: s,
        server,
        report,
        start: a,
        end: b,
        cut: cut.load(Ordering::Relaxed),
    })
}

/// Holding `conns` connections for `hold`: what every connection scenario starts from. A
/// ramp gives up after 20 failures in a row per opening thread.
fn held_conns(conns: usize, hold: Duration) -> IdleConfig {
    IdleConfig {
        conns,
        hold,
        timeout: Duration::from_secs(3),
        give_up_after: Some(20),
        ..IdleConfig::default()
    }
}

fn idle(p: &Participant, plan: &Plan) -> Result<Sample> {
    let cfg = held_conns(plan.idle, plan.idle_hold);
    let held = hold(Server::start(p, plan)?, plan, cfg)?;
    held.server.stop();
    Ok(held.sample)
}

fn c12k(p: &Participant, plan: &Plan) -> Result<Sample> {
    let (mut sample, report, _) = paced_hold(
        Server::start(p, plan)?,
        plan,
        plan.c12k,
        Duration::from_secs(1),
        plan.c12k_hold,
    )?;
    sample.errors += report.late_rounds;
    Ok(sample)
}

/// `server` holding `conns` connections for `hold_for`, each echoing one 64 B message every
/// `every` (c12k, c100k); the server is stopped after. The sample with its paced figures, the
/// load's report, and whether the ramp was cut.
fn paced_hold(
    server: Server,
    plan: &Plan,
    conns: usize,
    every: Duration,
    hold_for: Duration,
) -> Result<(Sample, iomodels_load::IdleReport, bool)> {
    let cfg = IdleConfig {
        echo_every: Some(every),
        size: 64,
        ..held_conns(conns, hold_for)
    };
    let Held {
        mut sample,
        server,
        report,
        start,
        end,
        cut,
    } = hold(server, plan, cfg)?;
    server.stop();
    paced(&mut sample, &report, &start, &end);
    Ok((sample, report, cut))
}

/// What a paced hold (c12k, c100k) measured: CPU per message between the two readings, the
/// echo rate, and the paced echoes' round trip.
fn paced(sample: &mut Sample, report: &iomodels_load::IdleReport, start: &Reading, end: &Reading) {
    per_message(sample, start, end, report.messages);
    sample.msgs_per_sec = Some(report.messages as f64 / report.held_secs.max(1e-9));
    if report.messages > 0 {
        sample.p50 = report.paced_p50_us.map(|us| us as f64);
        sample.p99 = report.paced_p99_us.map(|us| us as f64);
    }
}

/// How many connections the scenarios past the descriptor cap aim at: c100k's full size, and
/// what completion-port's worker count in max-conns is chosen for.
const PAST_THE_CAP: usize = 100_000;

/// Slots of a fixed-file table counted on when choosing completion-port's worker count: the
/// kernel bounds each table by RLIMIT_NOFILE; the server keeps a few slots in reserve.
fn table_room(nofile: usize) -> usize {
    nofile.saturating_sub(100).max(1)
}

/// completion-port's worker count for `conns` connections, a fixed-file table each:
/// ceil(conns / table room) (with RLIMIT_NOFILE 20,000: 6 for 100,000). `None` — the usual
/// placement — when one table holds them, and for every other server.
fn tables_for(p: &Participant, conns: usize, nofile: usize) -> Option<usize> {
    let n = conns.div_ceil(table_room(nofile));
    (*p == Participant::Model(Model::CompletionPort) && n > 1).then_some(n)
}

/// `select(2)`'s bitmap size (glibc): the `select` model waits only on descriptors below it.
#[cfg_attr(windows, allow(dead_code))]
const FD_SETSIZE: usize = 1024;

/// What sets the blocking model's thread cap (`models/blocking`'s OS file).
const THREAD_CAP_SOURCE: &str = if cfg!(windows) {
    "its thread cap on Windows"
} else {
    "vm.max_map_count"
};

/// The most connections a server can hold, and what sets that bound.
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    conns: usize,
    why: String,
}

/// What bounds `p`'s connections: its mechanism (select's FD_SETSIZE, blocking's thread cap)
/// or its connection cap `cap` as the server reports it (`None`: the reference, which has
/// none: its descriptor limit). A cap above the process's descriptor limit `nofile` can only
/// be fixed-file tables (completion-port with direct descriptors, `workers` tables).
fn model_bound(p: &Participant, cap: Option<usize>, nofile: usize, workers: usize) -> Bound {
    let by_descriptors = |cap: usize| Bound {
        conns: cap,
        why: format!(
            "descriptors: its cap is {} (RLIMIT_NOFILE {} less {})",
            table::thousands(cap as u64),
            table::thousands(nofile as u64),
            nofile.saturating_sub(cap)
        ),
    };
    let Participant::Model(m) = p else {
        return Bound {
            conns: iomodels_server::descriptor_cap(nofile),
            why: format!(
                "descriptors: a descriptor per connection (RLIMIT_NOFILE {})",
                table::thousands(nofile as u64)
            ),
        };
    };
    let cap = cap.unwrap_or_else(|| iomodels_server::descriptor_cap(nofile));
    match m {
        #[cfg(windows)]
        Model::Select => {
            let set = iomodels_server::models::select::max_conns();
            Bound {
                conns: cap.min(set),
                why: format!(
                    "the socket set: select's fd_set holds {} connections (Winsock bounds the count)",
                    table::thousands(set as u64)
                ),
            }
        }
        // The server's own cap (960 by default: FD_SETSIZE less its own descriptors), or
        // FD_SETSIZE for an older server that reported the descriptor limit's.
        #[cfg(not(windows))]
        Model::Select
            if cap.saturating_add(iomodels_server::RESERVED_DESCRIPTORS) >= FD_SETSIZE =>
        {
            Bound {
                conns: cap.min(FD_SETSIZE),
                why: "FD_SETSIZE: select(2) cannot wait on descriptors >= 1024".into(),
            }
        }
        Model::Blocking if iomodels_server::models::blocking::max_threads() < cap => {
            let threads = iomodels_server::models::blocking::max_threads();
            Bound {
                conns: threads,
                why: format!(
                    "threads: a thread per connection, at most {} here ({})",
                    table::thousands(threads as u64),
                    THREAD_CAP_SOURCE
                ),
            }
        }
        // Windows: no descriptor limit, so no cap unless --serve-arg=--max-conns gave one.
        _ if cap == usize::MAX => Bound {
            conns: cap,
            why: "none of its own (no descriptor limit on Windows)".into(),
        },
        _ if cap > nofile => Bound {
            conns: cap,
            why: format!(
                "the fixed-file tables: {workers} workers' tables hold {} (direct descriptors)",
                table::thousands(cap as u64)
            ),
        },
        _ => by_descriptors(cap),
    }
}

/// c100k: only a server that says it can hold `plan.c100k` connections runs it (a ramp that
/// would fail at 20,000 after minutes is not run); the others are not run, with the reason.
fn c100k(p: &Participant, plan: &Plan) -> Result<Sample> {
    let want = plan.c100k;
    let workers = tables_for(p, want, plan.nofile);
    let mut server = Server::start_serving(p, plan, false, workers)?;
    let cap = server.max_conns();
    let bound = model_bound(p, cap, plan.nofile, workers.unwrap_or(1));
    let why_not = if bound.conns < want {
        Some(format!(
            "cannot hold {} connections: {}",
            table::thousands(want as u64),
            bound.why
        ))
    } else if plan.load_capacity.conns < want {
        Some(format!(
            "cannot open {} connections: {} is {}",
            table::thousands(want as u64),
            plan.load_capacity.why,
            table::thousands(plan.load_capacity.conns as u64)
        ))
    } else {
        None
    };
    if let Some(why) = why_not {
        server.stop();
        bail!(why);
    }
    let (mut sample, report, cut) =
        paced_hold(server, plan, want, plan.c100k_every, plan.c100k_hold)?;
    sample.verified_echoes = Some(report.messages);
    sample.still_open = Some(report.conns_still_open as u64);
    sample.late_rounds = Some(report.late_rounds);
    if let Some(why) = report.first_error.as_ref().filter(|_| sample.errors > 0) {
        sample.note = Some(format!("the first connect or echo error: {why}"));
    }
    if cut {
        sample.note = Some(format!(
            "the ramp was cut after {:.0} s: {} of {} connections opened, not held",
            plan.ramp_limit.as_secs_f64(),
            table::thousands(report.conns_held as u64),
            table::thousands(want as u64)
        ));
    }
    Ok(sample)
}

/// The max-conns ramp's bound for one server: the smallest of `--max-conns`, the server's
/// connection cap `cap` as it reports it (`None`, the reference: its descriptor limit) and
/// what the load generator can hold.
fn ramp_bound(plan: &Plan, cap: Option<usize>, nofile: usize, workers: usize) -> Bound {
    let mut candidates = vec![plan.load_capacity.clone()];
    if let Some(n) = plan.max_conns {
        candidates.push(Bound {
            conns: n,
            why: "--max-conns".into(),
        });
    }
    candidates.push(match cap {
        Some(cap) if cap > nofile => Bound {
            conns: cap,
            why: format!(
                "the fixed-file tables are full: {workers} workers' tables (direct descriptors)"
            ),
        },
        Some(cap) => Bound {
            conns: cap,
            why: "the server's cap (RLIMIT_NOFILE less its reserve)".into(),
        },
        // The reference has no cap of its own: a descriptor per connection.
        None => Bound {
            conns: iomodels_server::descriptor_cap(nofile),
            why: "the server's descriptor limit (RLIMIT_NOFILE less 64)".into(),
        },
    });
    candidates
        .into_iter()
        .min_by_key(|b| b.conns)
        .expect("the load generator's bound is always there")
}

/// How a max-conns ramp ended, for [`stop_reason`].
struct RampEnd {
    model: Option<Model>,
    bound: Bound,
    /// Connections that echoed the paced message after the ramp.
    echoing: u64,
    /// Connections that failed: to open, to echo their first byte, or the paced message.
    failed: u64,
    /// The server's counters: connections refused (FD_SETSIZE, thread cap), accepts that
    /// failed for lack of descriptors, pauses at the connection cap, times a completion-port
    /// worker's fixed-file table filled (`direct_table_full`; 0 where the server has none).
    refused: u64,
    accept_pauses: u64,
    cap_pauses: u64,
    tables_full: u64,
    /// The ramp ran out of time after this long.
    cut: Option<Duration>,
    /// The load generator's first connect or echo error.
    first_error: Option<String>,
}

/// Why a max-conns ramp stopped, in words.
fn stop_reason(e: &RampEnd) -> String {
    if e.failed == 0 && e.echoing as usize >= e.bound.conns {
        format!(
            "reached the bound ({}: {})",
            table::thousands(e.bound.conns as u64),
            e.bound.why
        )
    } else if let Some(after) = e.cut {
        format!("time: the ramp was cut after {:.0} s", after.as_secs_f64())
    } else if e.model == Some(Model::Select) && e.refused > 0 && cfg!(windows) {
        format!(
            "the socket set: select's fd_set is full ({} refused)",
            e.refused
        )
    } else if e.model == Some(Model::Select) && e.refused > 0 {
        format!(
            "FD_SETSIZE: select(2) cannot wait on descriptors >= 1024 ({} refused)",
            e.refused
        )
    } else if e.model == Some(Model::Blocking) && e.refused > 0 {
        format!(
            "threads: {} connections refused at the thread cap ({THREAD_CAP_SOURCE})",
            e.refused
        )
    } else if e.accept_pauses > 0 && cfg!(windows) {
        "sockets: accept failed with WSAEMFILE or WSAENOBUFS (out of sockets or buffer space)"
            .to_string()
    } else if e.accept_pauses > 0 {
        "descriptors: accept failed with EMFILE (RLIMIT_NOFILE)".to_string()
    } else if e.tables_full > 0 {
        format!(
            "the fixed-file tables are full (a worker's table filled {} times; direct descriptors)",
            e.tables_full
        )
    } else if e.cap_pauses > 0 {
        format!(
            "the server stopped accepting at its cap ({}: {})",
            table::thousands(e.bound.conns as u64),
            e.bound.why
        )
    } else {
        match &e.first_error {
            Some(why) => format!("{} connections failed (the first: {why})", e.failed),
            None => format!("{} connections failed (connect or echo)", e.failed),
        }
    }
}

fn max_conns(p: &Participant, plan: &Plan) -> Result<Sample> {
    let workers = tables_for(p, plan.max_conns.unwrap_or(PAST_THE_CAP), plan.nofile);
    let mut server = Server::start_serving(p, plan, false, workers)?;
    let cap = server.max_conns();
    let bound = ramp_bound(plan, cap, plan.nofile, workers.unwrap_or(1));
    let cfg = IdleConfig {
        // One paced round at the start of the hold: every held connection must still echo.
        echo_every: Some(Duration::from_secs(3600)),
        size: 64,
        timeout: Duration::from_secs(2),
        ..held_conns(bound.conns, Duration::from_millis(100))
    };
    let Held {
        sample: mut s,
        mut server,
        report,
        cut,
        ..
    } = hold(server, plan, cfg)?;
    let stats = server.stats().unwrap_or_default();
    let counter = |name: &str| stats[name].as_u64().unwrap_or(0);
    let end = RampEnd {
        model: match p {
            Participant::Model(m) => Some(*m),
            Participant::Tokio => None,
        },
        bound,
        echoing: report.messages,
        failed: report.connect_errors + report.echo_errors + report.message_errors,
        refused: counter("refused"),
        accept_pauses: counter("accept_pauses"),
        cap_pauses: counter("conn_cap_pauses"),
        tables_full: counter("direct_table_full"),
        cut: cut.then_some(plan.ramp_limit),
        first_error: report.first_error.clone(),
    };
    server.stop();
    // Held and still echoing; a cut ramp never echoed: what it opened.
    s.conns_held = Some(if cut {
        report.conns_held as u64
    } else {
        report.messages
    });
    s.errors = 0; // failures are how a ramp ends; the reason says which
    s.stop_reason = Some(stop_reason(&end));
    Ok(s)
}

/// The rate scenario: a closed-loop warm-up, then the ladder of offered rates (see `curve`).
fn rate_curve(p: &Participant, plan: &Plan) -> Result<Sample> {
    let server = Server::start(p, plan)?;
    let addr = server.addr;
    let run = (|| {
        iomodels_load::run(&LoadConfig {
            connect: addr,
            conns: curve::CONNS,
            size: curve::SIZE,
            duration: plan.warmup,
            ..LoadConfig::default()
        })?;
        curve::ladder(addr, &plan.ladder)
    })();
    server.stop();
    let run = run?;
    let sat = run.saturation();
    Ok(Sample {
        msgs_per_sec: sat.map(|s| s.received_per_sec),
        p50: sat.map(|s| s.p50_us as f64),
        p99: sat.map(|s| s.p99_us as f64),
        mismatches: run.mismatches,
        errors: run.errors,
        stop_reason: Some(run.stop_reason.clone()),
        curve: Some(run),
        ..Sample::default()
    })
}

fn run_one(p: &Participant, sc: Scenario, plan: &Plan) -> Result<Sample> {
    match sc {
        Scenario::PingPong { conns, size, .. } => echo_loop(p, plan, conns, size, false),
        Scenario::Udp { conns, size, .. } => echo_loop(p, plan, conns, size, true),
        Scenario::Rate => rate_curve(p, plan),
        Scenario::Idle => idle(p, plan),
        Scenario::C12k => c12k(p, plan),
        Scenario::C100k => c100k(p, plan),
        Scenario::MaxConns => max_conns(p, plan),
        Scenario::Soak => soak::soak(p, plan),
    }
}

fn row(model: &str, samples: &[Sample]) -> Row {
    let stat = |f: &dyn Fn(&Sample) -> Option<f64>| {
        Stat::of(&samples.iter().filter_map(f).collect::<Vec<_>>())
    };
    let busy: Vec<String> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.others_percent > 10.0)
        .map(|(i, s)| {
            format!(
                "repetition {}: other processes used {:.0}% of a core",
                i + 1,
                s.others_percent
            )
        })
        .collect();
    Row {
        model: model.to_string(),
        ran: true,
        msgs_per_sec: stat(&|s| s.msgs_per_sec),
        mb_per_sec: stat(&|s| s.mb_per_sec),
        p50_us: stat(&|s| s.p50),
        p99_us: stat(&|s| s.p99),
        p999_us: stat(&|s| s.p999),
        cpu_s_per_million: stat(&|s| s.cpu_s_per_million),
        server_cpu_percent: stat(&|s| s.server_cpu_percent),
        ctx_switches_per_1k: stat(&|s| s.ctx_per_1k),
        wakeups_per_msg: stat(&|s| s.wakeups_per_msg),
        syscalls_per_msg: stat(&|s| s.syscalls_per_msg),
        loss_percent: stat(&|s| s.loss_percent),
        rss_per_conn_bytes: stat(&|s| s.rss_per_conn),
        private_per_conn_bytes: stat(&|s| s.private_per_conn),
        conns_held: {
            let mut v: Vec<u64> = samples.iter().filter_map(|s| s.conns_held).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        },
        verified_echoes: stat(&|s| s.verified_echoes.map(|n| n as f64)),
        conns_still_open: {
            let mut v: Vec<u64> = samples.iter().filter_map(|s| s.still_open).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        },
        late_rounds: samples
            .iter()
            .filter_map(|s| s.late_rounds)
            .reduce(|a, b| a + b),
        stop_reason: samples.iter().rev().find_map(|s| s.stop_reason.clone()),
        mismatches: samples.iter().map(|s| s.mismatches).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
        busy: (!busy.is_empty()).then(|| busy.join("; ")),
        note: samples.iter().rev().find_map(|s| s.note.clone()),
        soak: samples.iter().find_map(|s| s.soak.clone()),
        curve: curve::merge(
            &samples
                .iter()
                .filter_map(|s| s.curve.as_ref())
                .collect::<Vec<_>>(),
        ),
    }
}

/// Runs the benchmark and returns what it measured.
fn run(args: &BenchArgs, command: String) -> Result<BenchResults> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2;
    let plan = plan(args, pinned)?;
    let participants = participants(args)?;
    let scenarios = scenarios(args)?;
    if args.realtime {
        set_realtime().with_context(|| match cfg!(windows) {
            true => "--realtime: cannot raise this process to HIGH_PRIORITY_CLASS",
            false => "--realtime needs root (SCHED_RR)",
        })?;
    }
    let placement = placement(pinned);
    if !pinned {
        log::warn!("only one CPU: server and load generator cannot be pinned apart");
    }
    if pinned {
        pin_self(1).context("cannot pin the load generator to CPU 1")?;
    }

    let repeat = args.repeat as usize;
    let grid = Grid::run(&scenarios, &participants, &plan, repeat);
    if pinned {
        let _ = unpin_self(cores);
    }
    Ok(BenchResults {
        machine: Machine {
            host: crate::about::Machine {
                cores,
                ..crate::about::Machine::this()
            },
            placement,
            realtime: args.realtime,
        },
        build: crate::about::build(),
        date: utc_now(),
        command,
        quick: args.quick,
        // A soak-only run ran everything once.
        repeat: scenarios
            .iter()
            .map(|sc| runs(sc, repeat))
            .max()
            .unwrap_or(repeat),
        models: participants.iter().map(Participant::name).collect(),
        scenarios: grid.results(&scenarios, &participants, &plan),
    })
}

/// What the bench will run, from its flags (`--quick`: everything smaller and shorter).
fn plan(args: &BenchArgs, pinned: bool) -> Result<Plan> {
    if args.c100k_every.is_zero() {
        return Err(crate::usage("--c100k-every must be longer than 0"));
    }
    let nofile = sys::raise_nofile_limit().unwrap_or(1024) as usize;
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let plan = Plan {
        duration: args.duration.unwrap_or(Duration::from_secs(3)),
        warmup: Duration::from_millis(500),
        idle: args.idle,
        idle_hold: Duration::from_secs(1),
        c12k: 12_000,
        c12k_hold: Duration::from_secs(10),
        c100k: count(args.c100k),
        c100k_every: args.c100k_every,
        c100k_hold: args.c100k_hold,
        max_conns: args.max_conns.map(count),
        nofile,
        load_capacity: load_capacity(nofile),
        ramp_limit: Duration::from_secs(300),
        pinned,
        realtime: args.realtime,
        serve_args: args.serve_arg.clone(),
        udp_depth: args.udp_depth as usize,
        soak: args.duration.unwrap_or(Duration::from_secs(60)),
        ladder: curve::Ladder::full(),
    };
    if !args.quick {
        return Ok(plan);
    }
    Ok(Plan {
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        idle: 200,
        idle_hold: Duration::from_millis(200),
        c12k: 200,
        c12k_hold: Duration::from_millis(1500),
        max_conns: Some(plan.max_conns.unwrap_or(1500)),
        ramp_limit: Duration::from_secs(60),
        ladder: curve::Ladder::quick(),
        ..plan
    })
}

/// The models (and the tokio reference) to bench: `--models`, or every one available here.
fn participants(args: &BenchArgs) -> Result<Vec<Participant>> {
    if args.models.is_empty() {
        let mut v: Vec<Participant> = Model::available()
            .into_iter()
            .map(Participant::Model)
            .collect();
        if cfg!(all(feature = "tokio-reference", unix)) {
            v.push(Participant::Tokio);
        }
        return Ok(v);
    }
    args.models
        .iter()
        .map(|m| match m.as_str() {
            "tokio" | "reference: tokio" if cfg!(all(feature = "tokio-reference", unix)) => {
                Ok(Participant::Tokio)
            }
            "tokio" => Err(crate::usage(
                "the tokio reference is not built (cargo feature tokio-reference, Unix only)",
            )),
            other => other
                .parse::<Model>()
                .map(Participant::Model)
                .map_err(crate::usage),
        })
        .collect()
}

/// The scenarios to run: `--scenario`, or all of them (`--quick`: the quick set).
fn scenarios(args: &BenchArgs) -> Result<Vec<Scenario>> {
    if !args.scenario.is_empty() {
        args.scenario.iter().map(|s| Scenario::parse(s)).collect()
    } else if args.quick {
        Ok(Scenario::quick())
    } else {
        Ok(Scenario::all())
    }
}

/// Where the server and the load generator run, in words, for the results.
fn placement(pinned: bool) -> String {
    if pinned && cfg!(windows) {
        "server process pinned to CPU 0, load generator to CPU 1 (SetProcessAffinityMask; completion-port runs one worker)"
            .to_string()
    } else if pinned {
        "server pinned to CPU 0, load generator to CPU 1 (completion-port runs one worker; in c100k and max-conns a worker per fixed-file table)"
            .to_string()
    } else {
        "one CPU: server and load generator share it (cannot pin apart)".to_string()
    }
}

/// How many times scenario `sc` runs: `repeat`, but the soak once (in the first repetition).
fn runs(sc: &Scenario, repeat: usize) -> usize {
    if *sc == Scenario::Soak {
        1
    } else {
        repeat
    }
}

/// What every run of every scenario on every participant gave, indexed
/// `[scenario][participant]`.
struct Grid {
    /// One sample per repetition that ran.
    samples: Vec<Vec<Vec<Sample>>>,
    /// Why a participant did not run or failed (the last reason).
    failures: Vec<Vec<Option<String>>>,
}

impl Grid {
    /// Runs every scenario on every participant, `repeat` times over, with a progress bar.
    fn run(
        scenarios: &[Scenario],
        participants: &[Participant],
        plan: &Plan,
        repeat: usize,
    ) -> Grid {
        let total = (scenarios.iter().map(|sc| runs(sc, repeat)).sum::<usize>()
            * participants.len()) as u64;
        let bar = Progress::new(total);
        let mut grid = Grid {
            samples: vec![vec![Vec::<Sample>::new(); participants.len()]; scenarios.len()],
            failures: vec![vec![None; participants.len()]; scenarios.len()],
        };
        for rep in 0..repeat {
            for (si, &sc) in scenarios.iter().enumerate() {
                if rep >= runs(&sc, repeat) {
                    continue;
                }
                for (pi, p) in participants.iter().enumerate() {
                    bar.set_message(format!(
                        "repetition {}/{repeat}: {} on {}",
                        rep + 1,
                        sc.name(),
                        p.name()
                    ));
                    let step = (sc.name(), p.name(), rep + 1, repeat);
                    let done = grid.run_once(si, pi, p, sc, plan);
                    bar.step_done(step, done);
                }
            }
        }
        bar.finish_and_clear();
        grid
    }

    /// Runs scenario `sc` (number `si`) once on `p` (number `pi`); returns how it went, in
    /// words for the progress.
    fn run_once(
        &mut self,
        si: usize,
        pi: usize,
        p: &Participant,
        sc: Scenario,
        plan: &Plan,
    ) -> &'static str {
        if let Participant::Model(m) = p {
            if let Err(why) = m.availability() {
                self.failures[si][pi] = Some(format!("not available here: {why}"));
                return "not available";
            }
        }
        match run_one(p, sc, plan) {
            Ok(s) => {
                self.samples[si][pi].push(s);
                "done"
            }
            Err(e) => {
                self.failures[si][pi] = Some(format!("{e:#}"));
                "failed"
            }
        }
    }

    /// The results: one row per participant of each scenario, from its samples (or why
    /// there are none).
    fn results(
        &self,
        scenarios: &[Scenario],
        participants: &[Participant],
        plan: &Plan,
    ) -> Vec<ScenarioResult> {
        let row_of = |si: usize, pi: usize, p: &Participant| {
            let got = &self.samples[si][pi];
            let failure = self.failures[si][pi].clone();
            if got.is_empty() {
                Row::not_run(&p.name(), failure.unwrap_or_else(|| "did not run".into()))
            } else {
                let mut r = row(&p.name(), got);
                r.note = failure.or(r.note);
                r
            }
        };
        scenarios
            .iter()
            .enumerate()
            .map(|(si, sc)| ScenarioResult {
                name: result_name(*sc, plan),
                description: describe(*sc, plan),
                kind: sc.kind().to_string(),
                rows: participants
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| row_of(si, pi, p))
                    .collect(),
            })
            .collect()
    }
}

/// The name a scenario's results carry (JSON, tables, chart panels): its own, but c12k run
/// at another size (`--quick`: 200 connections) is `c12k at 200 conns`, so nothing calls 200
/// connections c12k.
fn result_name(sc: Scenario, plan: &Plan) -> String {
    match sc {
        Scenario::C12k if plan.c12k != 12_000 => format!("c12k at {} conns", plan.c12k),
        _ => sc.name().to_string(),
    }
}

/// `bench`'s progress: on a terminal (stderr), a bar with the steps done, the time elapsed and
/// an estimate of the time left (from the steps done so far); off a terminal (CI, `| tee`), one
/// plain line on stderr per finished step.
struct Progress {
    bar: ProgressBar,
    plain: bool,
    total: u64,
    done: std::cell::Cell<u64>,
    start: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {elapsed_precise} (about {left} left) {msg}",
            )
            .expect("a valid template")
            // indicatif's own {eta} says 0s before the first step is done.
            .with_key(
                "left",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = match state.pos() {
                        0 => w.write_str("?"),
                        _ => write!(w, "{}", indicatif::HumanDuration(state.eta())),
                    };
                },
            ),
        );
        Progress {
            bar,
            plain: !std::io::stderr().is_terminal(),
            total,
            done: std::cell::Cell::new(0),
            start: Instant::now(),
        }
    }

    fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// A step (scenario, model, repetition, of repetitions) is over, with `outcome`.
    fn step_done(&self, step: (&str, String, usize, usize), outcome: &str) {
        self.bar.inc(1);
        let done = self.done.get() + 1;
        self.done.set(done);
        if self.plain {
            let (scenario, model, rep, reps) = step;
            let elapsed = self.start.elapsed();
            let left = elapsed.mul_f64((self.total.saturating_sub(done)) as f64 / done as f64);
            eprintln!(
                "bench: step {done}/{} {outcome}: {scenario} on {model}, repetition {rep}/{reps}; \
                 elapsed {}, about {} left",
                self.total,
                clock(elapsed),
                clock(left)
            );
        }
    }

    fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// A duration as H:MM:SS.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn describe(sc: Scenario, plan: &Plan) -> String {
    match sc {
        Scenario::PingPong { conns, size, .. } => format!(
            "closed-loop echo: {conns} connection(s), one {size} B message in flight each, {:.1} s measured after a {:.1} s warm-up",
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64()
        ),
        Scenario::Udp { conns, size, .. } => format!(
            "closed-loop UDP echo (serve --udp --no-tcp): {conns} socket(s), {} {size} B datagram(s) in flight each, lost after 200 ms and replaced, {:.1} s measured after a {:.1} s warm-up",
            plan.udp_depth,
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64()
        ),
        Scenario::Rate => plan.ladder.describe(),
        Scenario::Idle => format!(
            "{} idle connections (each echoed one byte first): server RSS growth per connection",
            plan.idle
        ),
        Scenario::C12k => format!(
            "the book's experiment: {} connections, each echoing one 64 B message a second, for {:.0} s: server CPU %",
            plan.c12k,
            plan.c12k_hold.as_secs_f64()
        ),
        Scenario::C100k if cfg!(windows) => format!(
            "{} connections, each echoing one 64 B message every {} s (verified) for {} s: connections held, verified echoes, server CPU %, working set per connection; Windows has no descriptor limit, so the bounds are the models' own (select's socket set, blocking's thread cap: those are not run) and the load generator's source addresses (127.0.0.x, {} each, within the ephemeral port range)",
            table::thousands(plan.c100k as u64),
            trim_secs(plan.c100k_every),
            trim_secs(plan.c100k_hold),
            table::thousands(iomodels_load::PER_SOURCE as u64)
        ),
        Scenario::C100k => {
            let workers = plan.c100k.div_ceil(table_room(plan.nofile));
            format!(
                "past the descriptor cap: {} connections, each echoing one 64 B message every {} s (verified) for {} s: connections held, verified echoes, server CPU %, RSS per connection; completion-port runs --workers {workers} (a fixed-file table each, each at most RLIMIT_NOFILE {}: direct descriptors); a model that cannot hold them all (descriptor limit, FD_SETSIZE, thread cap) is not run",
                table::thousands(plan.c100k as u64),
                trim_secs(plan.c100k_every),
                trim_secs(plan.c100k_hold),
                table::thousands(plan.nofile as u64)
            )
        }
        Scenario::MaxConns => format!(
            "connections opened one after another up to {}, then one echo on each: how many still echo, and why the ramp stopped (after 20 failures in a row per opening thread, or {} s)",
            match plan.max_conns {
                Some(n) => format!("{} (--max-conns)", table::thousands(n as u64)),
                None if cfg!(windows) => format!(
                    "each model's own bound (Windows has no descriptor limit: select's socket set, blocking's thread cap, otherwise none) and what the load generator holds ({}: 127.0.0.x source addresses, {} each)",
                    table::thousands(plan.load_capacity.conns as u64),
                    table::thousands(iomodels_load::PER_SOURCE as u64)
                ),
                None => format!(
                    "each model's own bound: the connection cap the server reports (its descriptor limit less 64; completion-port runs --workers {} and, with direct descriptors, holds what its fixed-file tables hold) and what the load generator holds ({})",
                    PAST_THE_CAP.div_ceil(table_room(plan.nofile)),
                    table::thousands(plan.load_capacity.conns as u64)
                ),
            },
            trim_secs(plan.ramp_limit)
        ),
        Scenario::Soak => format!(
            "{:.0} s per model (after a {:.1} s warm-up) of 16 verified 1 KiB echo connections beside fault clients (connect/close churn, reset mid-echo, slow reader, half-close): server RSS and descriptors sampled every {:.1} s, slopes by least squares; run once",
            plan.soak.as_secs_f64(),
            soak::warmup(plan.soak).as_secs_f64(),
            soak::interval(plan.soak).as_secs_f64()
        ),
    }
}

/// Seconds, without a fraction when whole: `10`, `1.5`.
fn trim_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// The current time in UTC, RFC 3339, without a date library.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `iomodels bench`: run, print the table, write the JSON and the report.
pub fn command(args: BenchArgs) -> Result<()> {
    // Read first: a bad file is refused before a run of minutes, not after.
    let baseline = match &args.baseline {
        Some(path) => Some(read_results(path, "--baseline")?),
        None => None,
    };
    let results = match &args.results {
        Some(path) => read_results(path, "--results")?,
        None => {
            os::supported()?;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            run(&args, command)?
        }
    };
    // With `--json` alone stdout is the JSON's: the text goes to stderr.
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let say = |text: &str| {
        if json_to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    };
    say(&table::render_table(&results));
    let comparison = baseline.as_ref().map(|old| {
        let lines = compare::compare(old, &results);
        say(&compare::render_text(old, &lines));
        (old, lines)
    });
    match &args.json {
        Some(_) if json_to_stdout => println!("{}", serde_json::to_string(&results)?),
        Some(path) => {
            let json = serde_json::to_string_pretty(&results)?;
            std::fs::write(path, json)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {}
    }
    let comparison = comparison
        .as_ref()
        .map(|(old, lines)| (*old, lines.as_slice()));
    std::fs::write(&args.report, report::render_html(&results, comparison))
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    say(&format!("report: {}\n", args.report.display()));
    let bad: Vec<String> = results
        .scenarios
        .iter()
        .flat_map(|s| {
            s.rows
                .iter()
                .filter(|r| r.mismatches > 0)
                .map(move |r| format!("{} in {}", r.model, s.name))
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "echoed bytes differed from what was sent: {}",
            bad.join(", ")
        );
    }
    let dead: Vec<String> = results
        .scenarios
        .iter()
        .flat_map(|s| s.rows.iter())
        .filter(|r| r.soak.as_ref().is_some_and(|k| !k.alive))
        .map(|r| r.model.clone())
        .collect();
    if !dead.is_empty() {
        bail!("the server did not survive the soak: {}", dead.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for sc in Scenario::all() {
            assert_eq!(Scenario::parse(sc.name()).unwrap(), sc);
        }
        assert_eq!(Scenario::parse("soak").unwrap(), Scenario::Soak);
        assert!(
            !Scenario::all().contains(&Scenario::Soak),
            "the soak is long"
        );
        assert!(Scenario::parse("pp1")
            .unwrap_err()
            .to_string()
            .contains("pp64-100"));
    }

    #[test]
    fn c100k_and_max_conns_are_in_the_full_run_not_in_quick() {
        for sc in [Scenario::C100k, Scenario::MaxConns] {
            assert!(Scenario::all().contains(&sc), "{}", sc.name());
            assert!(!Scenario::quick().contains(&sc), "{}", sc.name());
        }
        assert_eq!(Scenario::parse("c100k").unwrap(), Scenario::C100k);
        assert_eq!(Scenario::C100k.kind(), "c100k");
    }

    fn plan(max_conns: Option<usize>, load_capacity: usize) -> Plan {
        let load_capacity = Bound {
            conns: load_capacity,
            why: "the load generator's limit (its own descriptors)".into(),
        };
        Plan {
            duration: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            idle: 10_000,
            idle_hold: Duration::from_secs(1),
            c12k: 12_000,
            c12k_hold: Duration::from_secs(10),
            c100k: 100_000,
            c100k_every: Duration::from_secs(10),
            c100k_hold: Duration::from_secs(30),
            max_conns,
            nofile: 20_000,
            load_capacity,
            ramp_limit: Duration::from_secs(300),
            pinned: true,
            realtime: false,
            serve_args: Vec::new(),
            udp_depth: 1,
            soak: Duration::from_secs(60),
            ladder: curve::Ladder::full(),
        }
    }

    #[test]
    fn completion_port_gets_a_table_per_twenty_thousand_connections() {
        let cp = Participant::Model(Model::CompletionPort);
        assert_eq!(tables_for(&cp, 100_000, 20_000), Some(6));
        assert_eq!(tables_for(&cp, 19_900, 20_000), None);
        assert_eq!(tables_for(&cp, 19_901, 20_000), Some(2));
        assert_eq!(
            tables_for(&Participant::Model(Model::EventSelect), 100_000, 20_000),
            None
        );
        assert_eq!(tables_for(&Participant::Tokio, 100_000, 20_000), None);
    }

    #[test]
    #[cfg(not(windows))]
    fn what_bounds_each_model() {
        let es = Participant::Model(Model::EventSelect);
        let b = model_bound(&es, Some(19_936), 20_000, 1);
        assert_eq!(b.conns, 19_936);
        assert!(b.why.contains("RLIMIT_NOFILE 20,000 less 64"), "{}", b.why);
        let b = model_bound(&Participant::Model(Model::Select), Some(19_936), 20_000, 1);
        assert_eq!(b.conns, FD_SETSIZE);
        assert!(b.why.starts_with("FD_SETSIZE"), "{}", b.why);
        let b = model_bound(&Participant::Model(Model::Select), Some(960), 20_000, 1);
        assert_eq!(b.conns, 960);
        assert!(b.why.starts_with("FD_SETSIZE"), "{}", b.why);
        // A cap past the process's descriptor limit: fixed-file tables.
        let cp = Participant::Model(Model::CompletionPort);
        let b = model_bound(&cp, Some(119_616), 20_000, 6);
        assert_eq!(b.conns, 119_616);
        assert!(
            b.why.contains("6 workers' tables hold 119,616"),
            "{}",
            b.why
        );
        let b = model_bound(&Participant::Tokio, None, 20_000, 1);
        assert_eq!(b.conns, 20_000 - iomodels_server::RESERVED_DESCRIPTORS);
    }

    #[test]
    fn the_ramp_stops_at_the_smallest_bound() {
        let b = ramp_bound(&plan(None, 19_900), Some(19_936), 20_000, 1);
        assert_eq!(b.conns, 19_900);
        assert!(b.why.contains("load generator"), "{}", b.why);
        let b = ramp_bound(&plan(None, usize::MAX), Some(119_616), 20_000, 6);
        assert_eq!(b.conns, 119_616);
        assert!(b.why.contains("fixed-file tables are full"), "{}", b.why);
        let b = ramp_bound(&plan(Some(1500), usize::MAX), Some(19_936), 20_000, 1);
        assert_eq!((b.conns, b.why.as_str()), (1500, "--max-conns"));
        let b = ramp_bound(&plan(None, usize::MAX), Some(19_936), 20_000, 1);
        assert!(b.why.contains("server's cap"), "{}", b.why);
        let b = ramp_bound(&plan(None, usize::MAX), None, 20_000, 1);
        assert_eq!(b.conns, 20_000 - iomodels_server::RESERVED_DESCRIPTORS);
    }

    #[test]
    #[cfg(windows)]
    fn what_bounds_each_model_on_windows() {
        // No descriptor limit: the server reports no cap; the bench's own arithmetic holds.
        let nofile = usize::MAX;
        assert!(load_capacity(nofile).conns >= 100_000);
        let b = model_bound(
            &Participant::Model(Model::EventSelect),
            Some(usize::MAX),
            nofile,
            1,
        );
        assert_eq!(b.conns, usize::MAX);
        assert!(b.why.contains("no descriptor limit"), "{}", b.why);
        let b = model_bound(
            &Participant::Model(Model::Select),
            Some(usize::MAX),
            nofile,
            1,
        );
        assert_eq!(b.conns, 16_382);
        assert!(b.why.starts_with("the socket set"), "{}", b.why);
        let b = model_bound(
            &Participant::Model(Model::Blocking),
            Some(usize::MAX),
            nofile,
            1,
        );
        assert!(b.why.contains("thread cap on Windows"), "{}", b.why);
        let cp = Participant::Model(Model::CompletionPort);
        assert_eq!(tables_for(&cp, 100_000, nofile), None);
    }

    #[test]
    #[cfg(not(windows))]
    fn why_a_ramp_stopped() {
        let end = |model, echoing, failed, refused, pauses: (u64, u64, u64), cut| RampEnd {
            model,
            bound: Bound {
                conns: 19_900,
                why: "the load generator's limit (its own descriptors)".into(),
            },
            echoing,
            failed,
            refused,
            accept_pauses: pauses.0,
            cap_pauses: pauses.1,
            tables_full: pauses.2,
            cut,
            first_error: None,
        };
        let r = |e: RampEnd| stop_reason(&e);
        assert_eq!(
            r(end(None, 19_900, 0, 0, (0, 0, 0), None)),
            "reached the bound (19,900: the load generator's limit (its own descriptors))"
        );
        let sel = Some(Model::Select);
        assert!(r(end(sel, 1015, 160, 160, (0, 0, 0), None)).starts_with("FD_SETSIZE"));
        let blk = Some(Model::Blocking);
        assert!(r(end(blk, 15_358, 160, 160, (0, 0, 0), None)).starts_with("threads: 160"));
        let es = Some(Model::EventSelect);
        assert!(r(end(es, 19_000, 9, 0, (3, 0, 0), None)).contains("EMFILE"));
        assert!(r(end(es, 19_000, 9, 0, (0, 2, 0), None)).contains("stopped accepting at its cap"));
        assert!(r(end(es, 19_000, 9, 0, (0, 0, 0), None)).starts_with("9 connections failed"));
        let cp = Some(Model::CompletionPort);
        assert!(r(end(cp, 99_000, 9, 0, (0, 1, 4), None)).contains("fixed-file tables are full"));
        let cut = Some(Duration::from_secs(300));
        assert_eq!(
            r(end(es, 0, 0, 0, (0, 0, 0), cut)),
            "time: the ramp was cut after 300 s"
        );
    }

    #[test]
    fn utc_dates() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
