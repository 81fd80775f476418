//! `load --idle` past the descriptor cap: one hold split over several processes of this binary.
//!
//! A held connection costs the load generator one descriptor, and a process has at most
//! `RLIMIT_NOFILE` of them (20,000 here, a hard limit nothing in the process can raise). So
//! [`hold`], asked for more connections than one process can hold (its soft limit, raised to
//! the hard one, less [`RESERVE`]), starts K = ⌈conns / per-process⌉ *shards*: children of this
//! binary (`iomodels load --idle --shard I/K`), each holding an even share with
//! [`iomodels_load::hold_idle`], and sums their reports. At or under the cap it holds them in
//! this process, as [`iomodels_load::hold_idle`] does.
//!
//! The alternative — io_uring direct descriptors in the client, sockets that live only in a
//! ring's table (what completion-port's server does) — was set aside: the load generator is
//! portable (Windows has no descriptor cap, and needs no shards), and a process per 19,936
//! connections costs a few MiB.
//!
//! ## The shard protocol (pipes, one JSON object per line)
//!
//! ```text
//! parent -> child stdin   {IdleConfig}       the shard's part: conns, and IdlePart {first, total}
//! child  -> parent stdout {"phase":"held"}    all its connections are open and verified
//! parent -> child stdin   end                 end the hold (also sent early on `stop`)
//! child  -> parent stdout {"phase":"closing"} its hold is over, the still-open check done
//! parent -> child stdin   close               every shard is closing: close now
//! child  -> parent stdout {"phase":"done","report":{IdleReport}}
//! ```
//!
//! The parent calls `phase(Held)` when every shard is held and `phase(Closing)` when every
//! shard is closing, so a caller (the bench) reads the server at the same moments as with one
//! process. Each shard numbers its connections from its part's first in the whole plan, so the
//! source addresses (127.0.0.x, 10,000 each) are spread over the whole plan and two shards
//! never share an address's ephemeral ports beyond what it has.
//!
//! ## No orphans
//!
//! A shard holds up to ~20,000 sockets: it must not outlive its parent. It exits at once when
//! its stdin ends (the parent died: the kernel closes the pipe), and on Linux it is also
//! started with `PR_SET_PDEATHSIG` = SIGKILL (`linux.rs`). The parent kills and reaps every
//! shard still running when [`hold`] returns early (an error, a panic in `phase`). `stop` (the
//! CLI's Ctrl-C or SIGTERM; a Ctrl-C in a terminal reaches the shards too) ends the opening and
//! the hold in every shard, and the report is still summed.

use iomodels_load::{hold_idle, IdleConfig, IdlePart, IdleReport, Phase};
use serde::Deserialize;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux::die_with_parent;

/// Elsewhere a shard dies with its parent only through its stdin's end.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// Descriptors a process keeps for itself besides its connections: stdio, the shard pipes,
/// whatever the runtime opens.
pub const RESERVE: usize = 64;

/// The most shards one hold starts (1,000,000 connections at this machine's 20,000
/// descriptors take 51): a per-process share so small that more would be needed is refused.
pub const MAX_SHARDS: usize = 64;

/// A shard holds on past its parent's hold by this much at most, should the parent never say
/// `end` (it always does, or dies, and then the shard exits): the bound on a shard's hold.
const SHARD_HOLD_BOUND: Duration = Duration::from_secs(3600);

/// Connections one process of this binary can hold: its descriptor limit (the soft limit,
/// raised to the hard one) less [`RESERVE`]; no bound where there is no descriptor limit.
pub fn per_process() -> usize {
    match iomodels_server::sys::raise_nofile_limit() {
        Ok(limit) => usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVE)
            .max(1),
        Err(e) => {
            log::warn!("cannot raise RLIMIT_NOFILE: {e}; holding every connection in one process");
            usize::MAX
        }
    }
}

/// [`iomodels_load::hold_idle`] with no cap but the source-address plan's: in this process
/// when it can hold `cfg.conns`, else over shards (see the module doc). Same phases, same
/// report (summed), [`IdleReport::shards`] says how many processes held them.
pub fn hold(
    cfg: &IdleConfig,
    stop: &AtomicBool,
    phase: &mut dyn FnMut(Phase),
) -> io::Result<IdleReport> {
    hold_split(cfg, per_process(), stop, phase)
}

/// [`hold`] with at most `per_process` connections in each process.
pub fn hold_split(
    cfg: &IdleConfig,
    per_process: usize,
    stop: &AtomicBool,
    phase: &mut dyn FnMut(Phase),
) -> io::Result<IdleReport> {
    if cfg.conns <= per_process {
        return hold_idle(cfg, stop, phase);
    }
    let per_process = per_process.max(1);
    if cfg.conns.div_ceil(per_process) > MAX_SHARDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} connections at {per_process} per process would take {} processes, more \
                 than {MAX_SHARDS}",
                cfg.conns,
                cfg.conns.div_ceil(per_process)
            ),
        ));
    }
    sharded(cfg, per_process, stop, phase)
}

/// One shard: the child process, the pipe to its stdin (kept apart from `child`, so that
/// waiting for the child does not close it first), its state.
struct Shard {
    child: Child,
    stdin: Option<ChildStdin>,
    held: bool,
    closing: bool,
    report: Option<IdleReport>,
}

impl Shard {
    /// Starts shard `i` of `k` (this program, `load --idle --shard`), with a thread that
    /// forwards its stdout lines to `tx` (then `None` at its end), and hands it `part`.
    fn spawn(
        exe: &Path,
        i: usize,
        k: usize,
        part: &IdleConfig,
        tx: Sender<(usize, Option<String>)>,
    ) -> io::Result<Shard> {
        let mut cmd = Command::new(exe);
        cmd.args(["load", "--idle", "--shard", &format!("{}/{k}", i + 1)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start shard {}/{k}: {e}", i + 1))
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        let mut shard = Shard {
            child,
            stdin,
            held: false,
            closing: false,
            report: None,
        };
        shard.say(&serde_json::to_string(part).expect("a configuration serialises"));
        Ok(shard)
    }

    /// Sends one line; a shard that has gone away shows it as the end of its stdout.
    fn say(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        }
    }
}

/// The shards, killed and reaped if still running when dropped.
struct Shards(Vec<Shard>);

impl Drop for Shards {
    fn drop(&mut self) {
        for s in &mut self.0 {
            if let Ok(None) = s.child.try_wait() {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
            s.stdin = None;
        }
    }
}

/// A line of a shard's stdout.
#[derive(Deserialize)]
struct Said {
    phase: String,
    #[serde(default)]
    report: Option<IdleReport>,
}

/// Holds `cfg` over ⌈conns / per_process⌉ shards (see the module doc).
fn sharded(
    cfg: &IdleConfig,
    per_process: usize,
    stop: &AtomicBool,
    phase: &mut dyn FnMut(Phase),
) -> io::Result<IdleReport> {
    let k = cfg.conns.div_ceil(per_process);
    let plan = cfg.part.unwrap_or(IdlePart {
        first: 0,
        total: cfg.conns,
    });
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut shards = Shards(Vec::with_capacity(k));
    let mut first = plan.first;
    for i in 0..k {
        let conns = cfg.conns / k + usize::from(i < cfg.conns % k);
        let part = IdleConfig {
            conns,
            hold: cfg.hold + SHARD_HOLD_BOUND,
            part: Some(IdlePart {
                first,
                total: plan.total,
            }),
            ..cfg.clone()
        };
        first += conns;
        shards.0.push(Shard::spawn(&exe, i, k, &part, tx.clone())?);
    }
    drop(tx);
    let s = &mut shards.0;

    // Opening: until every shard is held; `stop` ends the opening in every shard.
    let mut told_to_end = false;
    while !s.iter().all(|s| s.held) {
        if stop.load(Ordering::Relaxed) && !told_to_end {
            s.iter_mut().for_each(|s| s.say("end"));
            told_to_end = true;
        }
        next(&rx, s, k)?;
    }
    let open_secs = start.elapsed().as_secs_f64();
    phase(Phase::Held);

    // Holding: the parent's clock ends it, for every shard at once.
    let held_from = Instant::now();
    while held_from.elapsed() < cfg.hold && !stop.load(Ordering::Relaxed) {
        next(&rx, s, k)?;
    }
    if !told_to_end {
        s.iter_mut().for_each(|s| s.say("end"));
    }
    while !s.iter().all(|s| s.closing) {
        next(&rx, s, k)?;
    }
    let held_secs = held_from.elapsed().as_secs_f64();
    phase(Phase::Closing);

    // Closing: every shard closes and reports.
    s.iter_mut().for_each(|s| s.say("close"));
    while !s.iter().all(|s| s.report.is_some()) {
        next(&rx, s, k)?;
    }
    let mut report = IdleReport {
        conns_requested: cfg.conns,
        sources: cfg.sources(),
        shards: k,
        open_secs,
        held_secs,
        ..IdleReport::default()
    };
    for shard in s.iter_mut() {
        report.add_part(shard.report.as_ref().expect("reported"));
        let _ = shard.child.wait();
        shard.stdin = None;
    }
    Ok(report)
}

/// Waits up to 20 ms for a line from any shard and records what it says; a shard whose
/// stdout ends before its report is an error.
fn next(rx: &Receiver<(usize, Option<String>)>, s: &mut [Shard], k: usize) -> io::Result<()> {
    let (i, line) = match rx.recv_timeout(Duration::from_millis(20)) {
        Ok(m) => m,
        Err(RecvTimeoutError::Timeout) => return Ok(()),
        Err(RecvTimeoutError::Disconnected) => {
            return Err(io::Error::other("every shard's output ended"))
        }
    };
    let shard = &mut s[i];
    let Some(line) = line else {
        if shard.report.is_some() {
            return Ok(());
        }
        let status = shard
            .child
            .wait()
            .map_or("unknown".into(), |st| st.to_string());
        return Err(io::Error::other(format!(
            "shard {}/{k} ended before its report ({status})",
            i + 1
        )));
    };
    let said: Said = serde_json::from_str(&line)
        .map_err(|e| io::Error::other(format!("shard {}/{k} said {line:?}: {e}", i + 1)))?;
    match (said.phase.as_str(), said.report) {
        ("held", _) => shard.held = true,
        ("closing", _) => shard.closing = true,
        ("done", Some(r)) => shard.report = Some(r),
        _ => {
            return Err(io::Error::other(format!(
                "shard {}/{k} said {line:?}",
                i + 1
            )))
        }
    }
    Ok(())
}

/// The shard's side (`load --idle --shard I/K`): reads its [`IdleConfig`] from the first line
/// of stdin, holds it with [`hold_idle`] speaking the protocol of the module doc, and exits at
/// once (status 3) if stdin ends before `close`: the parent is gone.
pub fn run_shard(stop: std::sync::Arc<AtomicBool>) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut stdin = io::stdin().lock();
    let mut first = String::new();
    stdin
        .read_line(&mut first)
        .context("reading the shard's configuration")?;
    let cfg: IdleConfig =
        serde_json::from_str(&first).context("the shard's configuration (a JSON line on stdin)")?;
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let stop_on_end = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            match line.as_deref().map(str::trim) {
                Ok("end") => stop_on_end.store(true, Ordering::Relaxed),
                Ok("close") => {
                    let _ = close_tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The parent is gone (or closed the pipe): no orphan holds its connections.
        std::process::exit(3);
    });
    drop(stdin);
    let say = |line: &str| {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let report = hold_idle(&cfg, &stop, &mut |p| match p {
        Phase::Held => say(r#"{"phase":"held"}"#),
        Phase::Closing => {
            say(r#"{"phase":"closing"}"#);
            // Until every shard is closing; then they close together.
            let _ = close_rx.recv();
        }
    })?;
    say(&serde_json::json!({"phase": "done", "report": report}).to_string());
    Ok(())
}
