//! What `iomodels bench` needs from `iomodels.exe serve` on Windows, checked under Wine (and
//! on Windows): the control events ask a served child for its counters and stop it cleanly;
//! the process API measures it from outside (CPU time grows under load, working set, handle
//! count) and places it (processor affinity, priority class); Wine is told apart. The bench
//! end to end (`iomodels.exe bench --quick`) is in scripts/test-windows.sh.
#![cfg(windows)]

use iomodels_server::sys::process::{self, ProcessProbe};
use iomodels_server::sys::{send_control, wine_version, Control};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::windows::io::AsHandle;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_iomodels");

/// Echoes `n` 64-byte messages through `conn`; returns the bytes sent.
fn echo(conn: &mut TcpStream, n: usize) -> u64 {
    let msg = [0x5a_u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        conn.write_all(&msg).unwrap();
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    (n * msg.len()) as u64
}

#[test]
fn a_served_child_is_measured_placed_asked_for_counters_and_stopped() {
    let (mut child, mut out, addr) = serve();
    let pid = child.id();
    let (conn, sent) = measured_from_outside(pid, &addr);
    placed(&child);
    counters_asked_for(pid, &mut out, sent);
    // The stop event: a graceful stop (exit 0, the exit line), within a bound.
    drop(conn);
    stopped(&mut child, pid);
}

/// Starts `iomodels.exe serve --model event-select` on an ephemeral port; returns the child,
/// its stdout (past the ready line) and the address it listens on.
fn serve() -> (Child, BufReader<ChildStdout>, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--model",
            "event-select",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iomodels.exe serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no ready line: {line:?}"))
        .to_string();
    (child, out, addr)
}

/// Measured from outside: CPU time grows while it echoes (bounded: at most 200,000
/// messages), the working set and the handles are there; Wine is told apart. Returns the
/// connection (still open) and the bytes it echoed.
fn measured_from_outside(pid: u32, addr: &str) -> (TcpStream, u64) {
    let probe = ProcessProbe::open(pid).unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cpu0 = probe.cpu_seconds().unwrap();
    let mut sent = 0;
    let mut rounds = 0;
    while probe.cpu_seconds().unwrap() <= cpu0 && rounds < 100 {
        sent += echo(&mut conn, 2000);
        rounds += 1;
    }
    assert!(
        probe.cpu_seconds().unwrap() > cpu0,
        "the server's CPU time did not grow over {sent} bytes echoed"
    );
    let (working_set, private) = probe.memory().unwrap();
    assert!(working_set > 1024 * 1024, "{working_set}");
    assert!(probe.handle_count().unwrap() > 0);
    // Wine is told apart (its Z: drive maps the host's /): it counts no context switches
    // and no private bytes, which the bench shows as "-".
    let wine = wine_version().is_some();
    assert_eq!(wine, std::path::Path::new(r"Z:\proc\version").exists());
    assert_eq!(private.is_some(), !wine);
    assert_eq!(probe.context_switches().is_some(), !wine);
    (conn, sent)
}

/// Placed: pinned to CPU 0 (given two CPUs or more), raised to HIGH_PRIORITY_CLASS.
fn placed(child: &Child) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        process::pin_process(child.as_handle(), 0).unwrap();
        assert_eq!(process::process_affinity(child.as_handle()).unwrap(), 1);
    }
    process::raise_priority(Some(child.as_handle())).unwrap();
    assert!(process::is_high_priority(child.as_handle()));
}

/// The counters, as bench asks for them: one JSON line on stdout, with the `sent` bytes in
/// from the one connection accepted.
fn counters_asked_for(pid: u32, out: &mut BufReader<ChildStdout>, sent: u64) {
    send_control(pid, Control::Stats).unwrap();
    let mut json = String::new();
    out.read_line(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stats"]["bytes_in"].as_u64(), Some(sent), "{json}");
    assert_eq!(v["stats"]["accepted"].as_u64(), Some(1), "{json}");
    assert!(v["stats"]["waits"].as_u64().unwrap() > 0, "{json}");
    assert!(v["stats"]["syscalls"].as_u64().unwrap() > 0, "{json}");
}

/// The stop event stops the child gracefully within 60 s (exit 0, the exit line; killed
/// otherwise), and its control events go with it.
fn stopped(child: &mut Child, pid: u32) {
    send_control(pid, Control::Stop).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("no stop within 60 s of the event: {err}"));
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("the stop event: no longer accepting"), "{err}");
    assert!(err.contains("stopped: 1 connections served"), "{err}");
    // The events went with the process.
    assert!(send_control(pid, Control::Stats).is_err());
}
