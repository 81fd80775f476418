//! What the tests of the `iomodels` binary share: the binary, a served child process with its
//! output collected as it comes, a reproducible byte stream, [`per_model!`](crate::per_model)
//! (one module of tests per model), and in `process.rs` any other child process (`udp`, iperf,
//! socat) with bounded waits.
// Each test file uses a part of this module.
#![allow(dead_code)]

mod process;
#[path = "../../crates/server/tests/common/writing.rs"]
pub mod writing;
#[allow(unused_imports)]
pub use process::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_iomodels");

/// How long the server may take to print its ready line, a stats line, or to exit.
pub const SERVER_DEADLINE: Duration = Duration::from_secs(30);

/// A run that failed at run time (a port in use, a peer refusing, a file missing) with one
/// line: status 1 (not 2, a usage error's, nor `timeout`'s 124: the command ran instead of
/// failing), exactly one line on stderr, containing every needle. A failure found once `load`
/// ran may follow `load`'s start line (`load: ...`), printed when it starts: that line is not
/// counted.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let all = String::from_utf8_lossy(&out.stderr);
    let err = match all.split_once('\n') {
        Some((first, rest)) if first.starts_with("load: ") => rest.into(),
        _ => all,
    };
    assert_ne!(
        out.status.code(),
        Some(124),
        "it ran instead of refusing its arguments: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a runtime failure (status 1), got {:?}; stderr: {err}",
        out.status
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    for needle in needles {
        assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    }
}

/// A command line refused as a usage error, in clap's layout whether clap or the command found
/// it: status 2, stderr starting with `error: ...`, which says every needle before the blank
/// line, then the usage and the `--help` hint on lines of their own.
pub fn assert_usage_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a usage error (status 2), got {:?}; stderr: {err}",
        out.status
    );
    assert!(err.starts_with("error: "), "{err:?}");
    // The error itself: up to the blank line before the usage and the hint.
    let what = err.split("\n\n").next().unwrap_or_default();
    for needle in needles {
        assert!(
            what.contains(needle),
            "{what:?} does not mention {needle:?}"
        );
    }
    assert!(
        err.lines()
            .any(|l| l == "For more information, try '--help'."),
        "no hint on a line of its own: {err:?}"
    );
    assert!(out.stdout.is_empty(), "a usage error printed on stdout");
}

/// The models `iomodels models` says this build can run, in its order.
pub fn available_models() -> Vec<String> {
    let out = Command::new(BIN)
        .arg("models")
        .output()
        .expect("run iomodels models");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.contains(" yes"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// One module per model of the table (`iomodels_server::for_each_model!`, each named after the
/// model's module), each with a test per case that calls `per_model::CASE("model")` of the file
/// using it, and the test `check`, which fails unless `iomodels models` lists the table's
/// models, in its order, as available (so no model goes untested or unserved):
/// `per_model! { check: every_model_is_tested; cases: [socat_echo_is_byte_identical] }`.
#[macro_export]
macro_rules! per_model {
    (check: $check:ident; cases: $cases:tt $(;)?) => {
        iomodels_server::for_each_model!($crate::per_model! { @models $check; $cases; });
    };
    (
        @models $check:ident; $cases:tt;
        models: [$($(#[$doc:meta])* $variant:ident, $model:literal, $name:ident;)*]
    ) => {
        $(
            mod $name {
                $crate::per_model!(@cases $model; $cases);
            }
        )*

        #[test]
        fn $check() {
            assert_eq!(
                $crate::support::available_models(),
                [$($model),*],
                "`iomodels models` and this suite disagree"
            );
        }
    };
    (@cases $model:literal; [$($case:ident),* $(,)?]) => {
        $(
            #[test]
            fn $case() {
                super::per_model::$case($model)
            }
        )*
    };
}

/// Runs `iomodels bench --results JSON --report FILE ARGS` (nothing is measured), checks
/// that it succeeded, and returns its stdout (the table) and the HTML report.
pub fn bench_results(json: &Path, args: &[&str]) -> (String, String) {
    let html = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "bench-results-{}-{}.html",
        std::process::id(),
        json.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let out = Command::new(BIN)
        .args(["bench", "--results"])
        .arg(json)
        .arg("--report")
        .arg(&html)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(&html).unwrap();
    let _ = std::fs::remove_file(&html);
    (text, report)
}

/// Runs `iomodels bench ARGS --json FILE --report FILE` in a directory of its own, checks that
/// it succeeded, and returns the JSON results and the HTML report.
pub fn bench(args: &[&str]) -> (serde_json::Value, String) {
    let dir = std::env::temp_dir().join(format!(
        "iomodels-bench-{}-{}",
        std::process::id(),
        args.join("-").replace(['/', ' '], "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, html) = (dir.join("bench.json"), dir.join("report.html"));
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let report = std::fs::read_to_string(&html).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (v, report)
}

/// Fails unless process `pid` runs with `RLIMIT_NOFILE` = `n` (soft and hard): a test of a
/// low descriptor limit must not pass because the limit never took effect.
#[allow(dead_code)] // not every test file starts a process with a limit
pub fn assert_nofile_limit(pid: u32, n: u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n = n.to_string();
    assert_eq!(
        line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        [n.as_str(), n.as_str()],
        "the limit did not take effect: {line}"
    );
}

/// `n` bytes of the seeded stream every test crate shares (`crates/testkit`).
#[allow(unused_imports)] // not every test file uses it
pub use iomodels_testkit::random_bytes;

/// A `iomodels serve` child process: its stdout lines come through a channel, its stderr is
/// collected as it comes; killed if a test fails before stopping it.
pub struct Served {
    pub child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
    pub ready_line: String,
}

impl Served {
    pub fn start(args: &[&str]) -> Served {
        Served::start_in(None, args)
    }

    /// `serve --tls-self-signed` (event-select) writing its certificate to
    /// `dir/self-signed.pem`, and that file's path (for `load --tls-ca`).
    pub fn self_signed(dir: &Path) -> (Served, String) {
        let cert = dir.join("self-signed.pem").to_str().unwrap().to_string();
        let s = Served::start(&[
            "--model",
            "event-select",
            "--tls-self-signed",
            "--tls-cert-out",
            &cert,
        ]);
        (s, cert)
    }

    /// Starts `serve --listen 127.0.0.1:0 ARGS` (in `dir` if given) and waits for its ready
    /// line.
    pub fn start_in(dir: Option<&Path>, args: &[&str]) -> Served {
        let mut cmd = Served::command(args);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        Served::spawn(cmd)
    }

    /// The command `start` runs: `iomodels serve --listen 127.0.0.1:0 ARGS`, its stdout and
    /// stderr piped. A test that needs more (a resource limit in the child) adds it and hands
    /// the command to [`Served::spawn`].
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns `cmd` (made by [`Served::command`]) and waits for its ready line.
    pub fn spawn(mut cmd: Command) -> Served {
        let mut child = cmd.spawn().expect("spawn iomodels serve");
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let stderr_thread = std::thread::spawn(move || {
            let mut line = Vec::new();
            loop {
                line.clear();
                match err.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line)),
                }
            }
        });
        let mut served = Served {
            child,
            lines,
            stderr,
            stderr_thread: Some(stderr_thread),
            addr: "0.0.0.0:0".parse().unwrap(),
            ready_line: String::new(),
        };
        let line = served.next_line("the ready line");
        served.addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"));
        served.ready_line = line;
        served
    }

    pub fn next_line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(SERVER_DEADLINE) {
            Ok(line) => line,
            Err(e) => {
                let status = self.child.try_wait().unwrap();
                panic!(
                    "no {what} from the server ({}; status {status:?}); stderr:\n{}",
                    match e {
                        RecvTimeoutError::Timeout => "timed out",
                        RecvTimeoutError::Disconnected => "stdout closed",
                    },
                    self.stderr_text()
                )
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill takes a pid and a signal number; the pid is our own live child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// The server's counters (SIGUSR1 prints them as one JSON line).
    pub fn stats(&mut self) -> serde_json::Value {
        self.signal(libc::SIGUSR1);
        let line = self.next_line("stats line after SIGUSR1");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        v["stats"].clone()
    }

    /// Polls the counters until `done` says yes, for at most SERVER_DEADLINE (a bound, not a
    /// timing assertion: the server counts a connection when it has finished with it, which
    /// can be a moment after the client saw the end).
    pub fn stats_until(
        &mut self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + SERVER_DEADLINE;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < end,
                "the server's counters never showed {what}: {stats}\nstderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stderr holds a line containing `needle` (bounded), and returns that line.
    pub fn stderr_line_with(&self, needle: &str) -> String {
        let end = Instant::now() + SERVER_DEADLINE;
        loop {
            let err = self.stderr_text();
            if let Some(line) = err.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(Instant::now() < end, "no {needle:?} on stderr:\n{err}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the exit status, after a signal.
    pub fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + SERVER_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "the server did not exit after the signal; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.stop(libc::SIGTERM).0
    }

    /// Sends SIGTERM, waits (bounded) for the exit, and returns all of stderr and the status.
    pub fn terminate_with_stderr(self) -> (String, ExitStatus) {
        let (status, err) = self.stop(libc::SIGTERM);
        (err, status)
    }

    /// Sends SIGINT, waits (bounded) for the exit, and returns the status and all of stderr.
    pub fn interrupt(self) -> (ExitStatus, String) {
        self.stop(libc::SIGINT)
    }

    /// Sends `signal`, waits (bounded) for the exit, and returns the status and all of stderr.
    pub fn stop(mut self, signal: libc::c_int) -> (ExitStatus, String) {
        self.signal(signal);
        let status = self.wait();
        // The process is gone, so its stderr is at EOF: the thread ends.
        self.stderr_thread.take().unwrap().join().unwrap();
        (status, self.stderr_text())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
