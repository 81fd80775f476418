//! Live output, as a user watching a run meets it: `load`'s start line and `--interval` lines,
//! Ctrl-C (SIGINT) or SIGTERM on `load` printing the report of what ran (TCP, TLS, UDP; table
//! and JSON), `serve --stats-interval`, and `bench`'s step lines off a terminal.
//!
//! Linux only, like tests/cli.rs: the binary's tests share tests/support, which stops children with
//! Unix signals, and their expected errno names are Linux's. `iomodels.exe load` is run under Wine
//! by scripts/test-windows.sh instead (plain, TLS, UDP, idle, against a Linux and a Windows serve).
//! No assertion is on a timing figure: counts of lines are bounded loosely, and a run is
//! interrupted only once an interval line shows messages flowing.
#![cfg(target_os = "linux")]

mod support;

use support::{assert_usage_error, Proc, Served, BIN};

/// `iomodels load --connect ADDR ARGS`, running.
fn load(addr: &str, args: &[&str]) -> Proc {
    let mut all = vec!["load", "--connect", addr];
    all.extend_from_slice(args);
    Proc::spawn(BIN, &all)
}

/// The number after `label` in a report table line `completed     N msgs, ...`.
fn completed_msgs(table: &str) -> u64 {
    let line = table
        .lines()
        .find(|l| l.starts_with("completed"))
        .unwrap_or_else(|| panic!("no 'completed' line in:\n{table}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"))
}

/// Runs a 60 s load with `--interval 100ms` and `args`, waits for an interval line (so
/// messages flow), sends `signal`, and returns the exit code, stdout and stderr.
fn interrupted(addr: &str, args: &[&str], signal: libc::c_int) -> (Option<i32>, String, String) {
    let mut all = vec!["--duration", "60s", "--interval", "100ms"];
    all.extend_from_slice(args);
    let mut p = load(addr, &all);
    p.stderr_line("msgs/s");
    p.signal(signal);
    let (status, out, err) = p.finish();
    (status.code(), out, err)
}

#[test]
fn load_prints_its_start_line_while_the_run_goes_on() {
    let s = Served::start(&["--model", "event-select"]);
    let addr = s.addr.to_string();
    let mut p = load(
        &addr,
        &["--duration", "60s", "--conns", "3", "--depth", "2"],
    );
    let line = p.stderr_line("load: ");
    assert_eq!(
        line,
        format!("load: {addr} (plain TCP), 3 connections, depth 2, 64 B messages, for 60s")
    );
    // Still running (a finished run would exit 0, not 130): the line came before the end.
    let (status, out, _) = p.interrupt();
    assert_eq!(status.code(), Some(130), "{out}");
}

#[test]
fn load_interval_prints_a_line_per_interval_and_json_stays_one_object() {
    let s = Served::start(&["--model", "select"]);
    let addr = s.addr.to_string();
    let p = load(
        &addr,
        &[
            "--duration",
            "1s",
            "--interval",
            "200ms",
            "--conns",
            "2",
            "--json",
        ],
    );
    let (status, out, err) = p.finish();
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert!(
        (3..=7).contains(&lines.len()),
        "{} interval lines:\n{err}",
        lines.len()
    );
    for l in &lines {
        for part in [" s]", "msgs/s", "MB/s", "p50 ", "p99 ", "errors 0"] {
            assert!(l.contains(part), "{l:?} lacks {part:?}");
        }
    }
    assert!(lines[0].starts_with("[  0.00-  0.20 s]"), "{}", lines[0]);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .ends_with("; a line every 200ms"),
        "{err}"
    );
    // stdout: the one JSON object, nothing else.
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn sigint_mid_load_prints_the_report_of_what_ran_and_exits_130() {
    let s = Served::start(&["--model", "completion-port"]);
    let (code, out, err) = interrupted(&s.addr.to_string(), &["--conns", "4"], libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    assert!(completed_msgs(&out) > 0, "{out}");
    assert!(out.contains("(clean)"), "{out}");
    assert!(err.contains("SIGINT: stopping"), "{err}");
}

#[test]
fn sigterm_mid_load_prints_the_json_report_and_exits_143() {
    let s = Served::start(&["--model", "blocking"]);
    let (code, out, err) = interrupted(&s.addr.to_string(), &["--json"], libc::SIGTERM);
    assert_eq!(code, Some(143), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["incomplete_messages"], 0, "{v}");
}

#[test]
fn sigint_mid_tls_load_prints_the_report() {
    let dir = std::env::temp_dir().join(format!("iomodels-live-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (s, cert) = Served::self_signed(&dir);
    let (code, out, err) = interrupted(
        &s.addr.to_string(),
        &["--tls", "--tls-ca", &cert, "--json"],
        libc::SIGINT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("(TLS)"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["tls"], true, "{v}");
}

#[test]
fn sigint_mid_udp_load_prints_the_report() {
    let s = Served::start(&["--model", "select", "--udp"]);
    let (code, out, err) = interrupted(&s.addr.to_string(), &["--udp"], libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("(UDP)"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with('[') && l.contains("lost ")),
        "{err}"
    );
    assert!(out.contains("received"), "{out}");
}

#[test]
fn serve_stats_interval_logs_counters_lines() {
    let s = Served::start(&["--model", "event-select", "--stats-interval", "100ms"]);
    let (status, _, err) = load(&s.addr.to_string(), &["--duration", "300ms"]).finish();
    assert!(status.success(), "{err}");
    // A line counting the connection the load opened (bounded wait, no timing assertion).
    let line = s.stderr_line_with("stats: connections 0 active, 1 accepted");
    for part in ["bytes in ", "MB/s), out ", "errors 0"] {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    assert!(line.contains(" INFO "), "{line}");
    let (err, status) = s.terminate_with_stderr();
    assert!(status.success());
    assert!(err.matches("stats: connections").count() >= 2, "{err}");
}

#[test]
fn bench_off_a_terminal_prints_a_line_per_finished_step() {
    let dir = std::env::temp_dir().join(format!("iomodels-live-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html").to_str().unwrap().to_string();
    let args = [
        "bench",
        "--scenario",
        "pp64-1",
        "--duration",
        "200ms",
        "--models",
        "select,event-select",
        "--repeat",
        "2",
        "--report",
        &report,
    ];
    let (status, _, err) = Proc::spawn(BIN, &args).finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{err}");
    let steps: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("bench: step"))
        .collect();
    assert_eq!(steps.len(), 4, "{err}");
    let want = [
        ("1/4", "select", "1/2"),
        ("2/4", "event-select", "1/2"),
        ("3/4", "select", "2/2"),
        ("4/4", "event-select", "2/2"),
    ];
    for (line, (n, model, rep)) in steps.iter().zip(want) {
        assert!(
            line.starts_with(&format!(
                "bench: step {n} done: pp64-1 on {model}, repetition {rep}; elapsed "
            )),
            "{line}"
        );
        assert!(line.ends_with(" left"), "{line}");
    }
}

#[test]
fn bad_interval_flags_are_usage_errors() {
    for (args, needle) in [
        (vec!["load", "--interval", "0"], "at least 10ms"),
        (vec!["load", "--interval", "5ms"], "at least 10ms"),
        (vec!["load", "--interval", "2h"], "at most 1h"),
        (vec!["load", "--interval", "soon"], "--interval"),
        (vec!["load", "--idle", "--interval", "1s"], "--idle"),
        (vec!["serve", "--stats-interval", "0"], "at least 10ms"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        assert_usage_error(&out, &[needle]);
    }
}

#[test]
fn help_names_the_live_output_flags() {
    for (cmd, needles) in [
        ("load", &["--interval <DURATION>", "exits 130 (143"][..]),
        ("serve", &["--stats-interval <DURATION>"][..]),
        (
            "bench",
            &["estimate of the time left", "one line per finished step"][..],
        ),
    ] {
        let out = std::process::Command::new(BIN)
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(
                help.contains(needle),
                "{cmd} --help lacks {needle:?}:\n{help}"
            );
        }
    }
}
