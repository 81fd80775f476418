//! `iomodels load --idle` past its own descriptor limit, at small scale: the load generator
//! started with RLIMIT_NOFILE = 256 holds 1,000 connections to `serve --model event-select`
//! (a normal limit) by splitting the hold over shards (child processes of itself), and the
//! report sums them; killing it leaves no shard behind; connections the server closed during
//! the hold are found by the still-open check; paced echoes go through the shards; absurd
//! `--conns` values are refused with one line.
//!
//! Linux only: /proc, RLIMIT_NOFILE, PR_SET_PDEATHSIG.
#![cfg(target_os = "linux")]

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{json, num, run_fails_with, run_usage_error, Served, BIN, DEADLINE};

/// The load generator's descriptor limit (soft and hard) in these tests.
const LIMIT: libc::rlim_t = 256;
/// Connections held: about four times what one process of the load generator can hold.
const CONNS: u64 = 1000;

/// `iomodels load --idle --connect ADDR ARGS` running with RLIMIT_NOFILE = 256; killed and
/// reaped on drop.
struct Load {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Load {
    fn start(addr: SocketAddr, args: &[&str]) -> Load {
        let mut cmd = Command::new(BIN);
        cmd.args(["load", "--idle", "--connect", &addr.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
        // touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn iomodels load --idle");
        let collect = |mut r: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = Some(collect(Box::new(child.stdout.take().unwrap())));
        let stderr = Some(collect(Box::new(child.stderr.take().unwrap())));
        let load = Load {
            child,
            stdout,
            stderr,
        };
        support::assert_nofile_limit(load.pid(), 256);
        load
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill takes a pid and a signal number; the pid is our own live child.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded; killed past the deadline) for the exit: status, stdout, stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < end,
                "load --idle still running after {DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.take().unwrap().join().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status, out, err)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of `pid` (every thread's), from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(list) = std::fs::read_to_string(path) {
            kids.extend(list.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    kids
}

/// Whether `pid` is a running process (a zombie is not: its sockets are closed).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The server counts `n` connections at once.
fn server_holds(s: &mut Served, n: u64) {
    s.stats_until(&format!("{n} connections at once"), |v| v["active"] == n);
}

/// 1,000 connections with 256 descriptors: several shards, each under the limit, the parent
/// with a handful of descriptors; the server holds all 1,000 at once; the report (after
/// SIGINT ends the hold) has every one requested, established, verified and still open.
#[test]
fn an_idle_hold_past_its_own_descriptor_limit_splits_over_shards_and_holds_every_connection() {
    let mut s = Served::start(&["--model", "event-select"]);
    let load = Load::start(
        s.addr,
        &[
            "--conns",
            &CONNS.to_string(),
            "--duration",
            "120s",
            "--json",
        ],
    );
    server_holds(&mut s, CONNS);
    let shards = children_of(load.pid());
    assert!(shards.len() > 1, "one process held them: {shards:?}");
    let parent_fds = fd_count(load.pid());
    assert!(
        parent_fds < 3 * shards.len() + 16,
        "the parent has {parent_fds} descriptors: it holds connections itself"
    );
    for &shard in &shards {
        let n = fd_count(shard);
        assert!((n as u64) < LIMIT, "shard {shard} has {n} descriptors");
    }
    load.signal(libc::SIGINT);
    let (status, out, err) = load.finish();
    assert!(status.success(), "{status}: {err}");
    let r = json(&out);
    for key in [
        "conns_requested",
        "conns_established",
        "conns_held",
        "conns_still_open",
    ] {
        assert_eq!(num(&r, key), CONNS, "{key}: {r}");
    }
    assert_eq!(num(&r, "closed_by_server"), 0, "{r}");
    assert_eq!(num(&r, "shards"), shards.len() as u64, "{r}");
    assert_eq!(num(&r, "connect_errors") + num(&r, "echo_errors"), 0, "{r}");
    server_holds(&mut s, 0);
}

/// SIGKILL to the load generator mid-hold: every shard goes too (stdin's end,
/// PR_SET_PDEATHSIG), and the server sees every connection close.
#[test]
fn killing_an_idle_hold_leaves_no_shard_running() {
    let mut s = Served::start(&["--model", "event-select"]);
    let mut load = Load::start(
        s.addr,
        &["--conns", &CONNS.to_string(), "--duration", "120s"],
    );
    server_holds(&mut s, CONNS);
    let shards = children_of(load.pid());
    assert!(shards.len() > 1, "one process held them: {shards:?}");
    load.signal(libc::SIGKILL);
    load.child.wait().unwrap();
    let end = Instant::now() + DEADLINE;
    while shards.iter().any(|&p| running(p)) {
        assert!(
            Instant::now() < end,
            "shards still running after their parent died: {:?}",
            shards.iter().filter(|&&p| running(p)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
    server_holds(&mut s, 0);
}

/// One shard killed mid-hold: the hold ends with one line naming the shard, and the parent
/// kills and reaps the others (none left running; the server sees every connection close).
#[test]
fn a_shard_killed_mid_hold_ends_the_hold_with_an_error_and_leaves_no_shard() {
    let mut s = Served::start(&["--model", "event-select"]);
    let load = Load::start(
        s.addr,
        &["--conns", &CONNS.to_string(), "--duration", "120s"],
    );
    server_holds(&mut s, CONNS);
    let shards = children_of(load.pid());
    assert!(shards.len() > 1, "one process held them: {shards:?}");
    // SAFETY: kill takes a pid and a signal number, no memory. The pid is a shard of our child,
    // alive: the server still holds every connection (server_holds above).
    let rc = unsafe { libc::kill(shards[0] as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let (status, _, err) = load.finish();
    assert!(!status.success(), "it succeeded: {err}");
    // The start line, then the one line that says what went wrong.
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "not the start line and one line: {err:?}");
    assert!(lines[0].starts_with("load: "), "{err}");
    assert!(lines[1].contains("ended before its report"), "{err}");
    assert!(
        shards.iter().all(|&p| !running(p)),
        "shards still running after the parent's exit: {shards:?}"
    );
    server_holds(&mut s, 0);
}

/// The server closes every held connection (its idle timeout) during the hold: the still-open
/// check before the close finds them all closed, and the run fails saying so.
#[test]
fn connections_the_server_closed_during_the_hold_are_not_counted_still_open() {
    // 2 s: long enough that no connection is closed between its connect and its one-byte echo.
    let mut s = Served::start(&["--model", "event-select", "--idle-timeout", "2s"]);
    let load = Load::start(
        s.addr,
        &[
            "--conns",
            "300",
            "--shard-size",
            "100",
            "--duration",
            "120s",
            "--json",
        ],
    );
    s.stats_until("300 idle closes", |v| v["idle_closed"] == 300);
    load.signal(libc::SIGINT);
    let (status, out, err) = load.finish();
    assert!(!status.success(), "it succeeded: {out}");
    assert!(err.contains("closed by the server"), "{err}");
    let r = json(&out);
    assert_eq!(num(&r, "shards"), 3, "{r}");
    assert_eq!(num(&r, "conns_held"), 300, "{r}");
    assert_eq!(num(&r, "conns_still_open"), 0, "{r}");
    assert_eq!(num(&r, "closed_by_server"), 300, "{r}");
}

/// `--echo-every` through shards: every connection echoes at least its first paced message
/// (the hold starts with a round), all verified, summed over the shards.
#[test]
fn paced_echoes_through_shards_are_verified_and_summed() {
    let s = Served::start(&["--model", "event-select"]);
    let load = Load::start(
        s.addr,
        &[
            "--conns",
            "300",
            "--shard-size",
            "100",
            "--duration",
            "1s",
            "--echo-every",
            "200ms",
            "--size",
            "64",
            "--json",
        ],
    );
    let (status, out, err) = load.finish();
    assert!(status.success(), "{status}: {err}");
    let r = json(&out);
    assert_eq!(num(&r, "shards"), 3, "{r}");
    assert_eq!(num(&r, "conns_still_open"), 300, "{r}");
    assert!(num(&r, "messages") >= 300, "{r}");
    assert_eq!(num(&r, "message_errors"), 0, "{r}");
}

/// Absurd `--conns` for `--idle`, and a zero interval, are refused as usage errors (status 2).
#[test]
fn absurd_idle_flags_are_refused_as_usage_errors() {
    let idle = |extra: &[&str]| -> Vec<String> {
        ["load", "--idle", "--duration", "1s"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    for (extra, needle) in [
        (&["--conns", "0"][..], "--conns"),
        (&["--conns", "1000001"][..], "--conns"),
        // One source address to an IPv6 server: 20,000 at most.
        (
            &["--conns", "30000", "--connect", "[::1]:9"][..],
            "20000 at most",
        ),
        (&["--echo-every", "0s"][..], "--echo-every"),
    ] {
        let args = idle(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_usage_error(BIN, &args, needle);
    }
    // --echo-every belongs to --idle.
    run_usage_error(BIN, &["load", "--echo-every", "1s"], "--idle");
    // A share so small that it would take more than 64 processes: found against the
    // descriptor limit at run time, so a runtime failure in one line.
    let args = idle(&[
        "--conns",
        "1000",
        "--shard-size",
        "10",
        "--connect",
        "127.0.0.1:9",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_fails_with(BIN, &args, "more than 64");
}
