//! Any child process (ours, iperf, socat) with every wait bounded, and what the `udp` tool
//! tests read from one: a free UDP port, the JSON report of `udp recv`, a ready line's port.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any child may take to get ready or to finish.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running child: stdout collected as it comes (readable meanwhile), stderr line by line
/// (for ready lines); killed and reaped on drop, so a failing test leaves nothing behind.
pub struct Proc {
    child: Child,
    what: String,
    /// What the child has written to stdout so far.
    stdout: Arc<Mutex<Vec<u8>>>,
    /// The thread that collects stdout: it ends at the child's exit.
    stdout_thread: Option<std::thread::JoinHandle<()>>,
    stderr_lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `program args` with stdout and stderr piped.
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        let what = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let mut out = child.stdout.take().unwrap();
        // Bytes, not text: socat prints our datagrams' binary headers.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stdout);
        let stdout_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (tx, stderr_lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            what,
            stdout,
            stdout_thread: Some(stdout_thread),
            stderr_lines,
            stderr,
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`, and returns it.
    pub fn stderr_line(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let status = self.child.try_wait().unwrap();
                    panic!(
                        "{}: no stderr line with {needle:?} (status {status:?}); stderr:\n{}",
                        self.what,
                        self.stderr.lock().unwrap()
                    )
                }
            }
        }
    }

    /// What the child has written to stdout so far, as text (lossy: socat's output holds
    /// binary headers).
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill takes a pid and a signal number; the pid is our own live child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded; killed past the deadline) for the exit; returns the status, all of
    /// stdout and all of stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {DEADLINE:?}; stderr:\n{}",
                    self.what,
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stdout_thread.take().unwrap().join().unwrap();
        let out = self.stdout_so_far();
        // stderr's reader ends at EOF, which the exit brings; give it a moment (bounded).
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                self.stderr_lines.recv_timeout(Duration::from_millis(50))
            {
                break;
            }
        }
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }

    /// Sends SIGINT and returns what `finish` returns.
    pub fn interrupt(self) -> (ExitStatus, String, String) {
        self.signal(libc::SIGINT);
        self.finish()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stdout_thread.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `program args` to completion (bounded) and returns status, stdout, stderr.
pub fn run(program: &str, args: &[&str]) -> (ExitStatus, String, String) {
    Proc::spawn(program, args).finish()
}

/// Runs the binary, expects success, returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let (status, out, err) = run(program, args);
    assert!(
        status.success(),
        "{program} {args:?} failed ({status}):\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Runs `program args`, expects a usage error whose message contains `needle` (the check of
/// [`assert_usage_error`](super::assert_usage_error): status 2, clap's layout).
pub fn run_usage_error(program: &str, args: &[&str], needle: &str) {
    super::assert_usage_error(&run_output(program, args), &[needle]);
}

/// Runs `program args`, expects a runtime failure in one line containing `needle` (the check
/// of [`assert_one_line_error`](super::assert_one_line_error): status 1).
pub fn run_fails_with(program: &str, args: &[&str], needle: &str) {
    super::assert_one_line_error(&run_output(program, args), &[needle]);
}

fn run_output(program: &str, args: &[&str]) -> std::process::Output {
    let (status, out, err) = run(program, args);
    std::process::Output {
        status,
        stdout: out.into_bytes(),
        stderr: err.into_bytes(),
    }
}

/// A UDP port free at this moment on the wildcard address (receivers that share a port
/// bind it with SO_REUSEADDR).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one JSON object a `--json` run printed.
pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: not one JSON object: {out:?}"))
}

/// A value of a report as u64, or a panic naming it.
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

/// The port of the address in a ready line ("udp recv: listening on 127.0.0.1:40000...").
pub fn port_in(line: &str) -> u16 {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A multicast group of 239.255.0.0/16 (administratively scoped) that differs per process
/// and per `n`, so parallel test runs do not hear each other.
pub fn group(n: u8) -> String {
    format!("239.255.{}.{}", std::process::id() % 251, n)
}

/// Runs `socat ARGS` with `input` written to its stdin (from a thread, so a large input cannot
/// deadlock against its output), expects success, returns all it printed on stdout.
pub fn socat(args: &[&str], input: Vec<u8>) -> Vec<u8> {
    let mut child = Command::new("socat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("socat must be installed (scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().expect("write socat's stdin");
    assert!(
        out.status.success(),
        "socat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
