//! The `iomodels` binary as a user meets it: the ready line, signals, bad input, the models
//! table, the load generator, and peers nobody here wrote (socat).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;

use support::{
    assert_one_line_error, assert_usage_error, available_models, bench_results, random_bytes,
    socat, Served, BIN,
};

fn iomodels(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run iomodels")
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
mod per_model {
    use super::*;

    pub fn ready_line_then_sigterm_exits_zero(model: &str) {
        let s = Served::start(&["--model", model]);
        assert!(
            s.ready_line.contains(&format!("(model {model}: ")),
            "{}",
            s.ready_line
        );
        let status = s.terminate();
        assert!(status.success(), "exit status {status:?}");
    }

    /// socat, a peer nobody here wrote, as the client: 1 MiB through `socat - TCP:...`.
    pub fn socat_echo_is_byte_identical(model: &str) {
        let s = Served::start(&["--model", model]);
        let data = random_bytes(1 << 20, 99);
        let back = socat(&["-t", "10", "-", &format!("TCP:{}", s.addr)], data.clone());
        assert_eq!(back.len(), data.len());
        assert!(back == data, "socat got different bytes back");
        assert!(s.terminate().success());
    }

    /// The server process's own memory stays bounded while a client floods it and never reads.
    pub fn server_rss_stays_bounded_under_a_64_mib_flood_that_is_never_read(model: &str) {
        let s = Served::start(&["--model", model, "--max-pending", "256KiB"]);
        let rss_before = vm_rss_kib(s.pid());
        let flooder = TcpStream::connect(s.addr).unwrap();
        flooder
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match (&flooder).write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let rss_after = vm_rss_kib(s.pid());
        assert!(
            sent < 64 << 20,
            "the server took all 64 MiB from a client that never reads"
        );
        assert!(
            rss_after < rss_before + 16 * 1024,
            "server RSS grew from {rss_before} KiB to {rss_after} KiB with {sent} bytes unread"
        );
        drop(flooder);
        assert!(s.terminate().success());
    }

    pub fn load_reports_a_clean_verified_run_as_json(model: &str) {
        let s = Served::start(&["--model", model]);
        let out = iomodels(&[
            "load",
            "--connect",
            &s.addr.to_string(),
            "--conns",
            "10",
            "--size",
            "100",
            "--messages",
            "50",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["messages"], 500);
        assert_eq!(v["mismatches"], 0);
        assert_eq!(v["conns_established"], 10);
        assert!(v["latency_us"]["p50"].as_u64().is_some());
        assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0);
        assert!(s.terminate().success());
    }

    /// A completion-port server (its reuse-port listeners: SO_REUSEPORT, which any socket of
    /// the same user that sets it too may join) holds a port; a second server of this model on
    /// that port, over TCP and with --udp, is refused in one line instead of starting beside it
    /// and getting part of its clients.
    pub fn a_port_a_completion_port_server_holds_is_refused_in_one_line(model: &str) {
        for udp in [false, true] {
            let mut args = vec!["--model", "completion-port", "--workers", "2"];
            args.extend(udp.then_some("--udp"));
            let first = Served::start(&args);
            let addr = first.addr.to_string();
            let mut second = vec!["10", BIN, "serve", "--model", model, "--listen", &addr];
            second.extend(["--workers", "2"]);
            second.extend(udp.then_some("--udp"));
            let out = Command::new("timeout").args(&second).output().unwrap();
            assert_one_line_error(&out, &[&addr, "in use"]);
            assert!(first.terminate().success());
        }
    }
}

per_model! {
    check: every_available_model_is_tested_through_the_cli;
    cases: [
        a_port_a_completion_port_server_holds_is_refused_in_one_line,
        ready_line_then_sigterm_exits_zero,
        socat_echo_is_byte_identical,
        server_rss_stays_bounded_under_a_64_mib_flood_that_is_never_read,
        load_reports_a_clean_verified_run_as_json,
    ];
}

#[test]
fn an_unknown_model_is_a_usage_error_naming_the_choices() {
    let out = iomodels(&["serve", "--model", "iocp"]);
    assert_usage_error(&out, &["unknown model 'iocp'"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("event-select"));
}

#[test]
fn an_unparsable_address_is_a_usage_error() {
    assert_usage_error(&iomodels(&["serve", "--listen", "nowhere"]), &["no port"]);
    assert_usage_error(
        &iomodels(&["serve", "--listen", "300.1.1.1:80"]),
        &["300.1.1.1:80"],
    );
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = iomodels(&["serve", "--model", "select", "--listen", &addr]);
    assert_one_line_error(&out, &[&format!("cannot listen on {addr}")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

/// A start refused after the options were read (here: the port is in use) leaves no file: the
/// self-signed certificate is written only once the server is bound.
#[test]
fn a_refused_start_writes_no_self_signed_certificate() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let pem = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("refused-start-cert.pem");
    let _ = std::fs::remove_file(&pem);
    let out = iomodels(&[
        "serve",
        "--listen",
        &addr,
        "--tls-self-signed",
        "--tls-cert-out",
        pem.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &[&format!("cannot listen on {addr}")]);
    assert!(!pem.exists(), "a refused start wrote {}", pem.display());
}

/// `iomodels models` says how completion-port holds its connections here (Linux): direct
/// descriptors, or ordinary ones and why; the ready line says it too.
#[cfg(target_os = "linux")]
#[test]
fn models_says_whether_completion_port_uses_direct_descriptors() {
    if !iomodels_server::Model::CompletionPort.is_available() {
        return;
    }
    let out = iomodels(&["models"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("completion-port: "))
        .unwrap_or_else(|| panic!("no completion-port line in:\n{table}"));
    match iomodels_server::direct_descriptors_support() {
        Ok(()) => assert!(line.contains("direct descriptors"), "{line}"),
        Err(why) => assert!(line.contains("ordinary descriptors") && line.contains(&why)),
    }
    let direct = iomodels_server::direct_descriptors_support().is_ok();
    for (flag, want) in [("auto", direct), ("off", false)] {
        let s = Served::start(&["--model", "completion-port", "--direct-descriptors", flag]);
        assert_eq!(
            s.ready_line.contains("direct descriptors"),
            want,
            "--direct-descriptors {flag}: {}",
            s.ready_line
        );
    }
    let out = iomodels(&["serve", "--direct-descriptors", "always"]);
    assert_usage_error(&out, &["--direct-descriptors", "auto or off"]);
}

#[test]
fn a_model_not_available_here_is_one_line_saying_why() {
    let out = iomodels(&["models"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let unavailable = table
        .lines()
        .skip(1)
        .find(|l| l.contains(" no: "))
        .map(|l| l.split_whitespace().next().unwrap().to_string());
    let Some(model) = unavailable else {
        // Every model is available: nothing to refuse. (Then the table must list all seven.)
        assert_eq!(table.lines().take_while(|l| !l.is_empty()).count(), 8);
        return;
    };
    let out = iomodels(&["serve", "--model", &model, "--listen", "127.0.0.1:0"]);
    assert_one_line_error(&out, &[&format!("model {model} is not available")]);
}

#[test]
fn a_bad_byte_count_is_a_usage_error() {
    assert_usage_error(
        &iomodels(&["serve", "--max-pending", "lots"]),
        &["byte count"],
    );
}

#[test]
fn the_models_table_lists_all_seven_with_a_default() {
    let out = iomodels(&["models"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    for m in [
        "blocking",
        "select",
        "async-select",
        "event-select",
        "overlapped-event",
        "overlapped-routine",
        "completion-port",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(m)),
            "{m} missing:\n{table}"
        );
    }
    assert_eq!(table.matches("(default)").count(), 1, "{table}");
}

#[test]
fn help_and_version_succeed() {
    let help = iomodels(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
    let version = iomodels(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn load_against_nothing_fails_with_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = iomodels(&[
        "load",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--duration",
        "1s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no connection"), "{err}");
}

#[test]
fn serve_stops_on_sigint_too() {
    let s = Served::start(&[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"abc").unwrap();
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();
    drop(c);
    let (status, _) = s.interrupt();
    assert!(status.success());
}

/// With io_uring blocked (as in many containers), the completion models say why they are
/// unavailable, asking for one fails with one line, and the default falls back to epoll.
#[test]
fn without_io_uring_the_completion_models_are_unavailable_and_the_default_falls_back() {
    for errno in ["EPERM", "ENOSYS", "ENOMEM"] {
        let env = ("IOMODELS_FAKE_URING_ERROR", errno);
        let out = Command::new(BIN)
            .arg("models")
            .env(env.0, env.1)
            .output()
            .unwrap();
        let table = String::from_utf8(out.stdout).unwrap();
        for m in ["overlapped-event", "overlapped-routine", "completion-port"] {
            let line = table.lines().find(|l| l.starts_with(m)).unwrap();
            assert!(line.contains("no: io_uring unavailable"), "{line}");
            assert!(line.contains(errno), "{line}");
        }
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("event-select") && l.contains("(default)")),
            "{table}"
        );

        let out = Command::new(BIN)
            .args([
                "serve",
                "--model",
                "completion-port",
                "--listen",
                "127.0.0.1:0",
            ])
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert_one_line_error(&out, &["model completion-port is not available"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("io_uring"));
    }

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("IOMODELS_FAKE_URING_ERROR", "EPERM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // SAFETY: kill takes a pid and a signal number; the pid is our own live child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(line.contains("(model event-select: epoll"), "{line}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(
            "default model: event-select (completion-port is unavailable: io_uring unavailable"
        ),
        "{log}"
    );
}

#[test]
fn serve_says_what_descriptor_limit_it_got() {
    let (err, status) = Served::start(&["--model", "select"]).terminate_with_stderr();
    assert!(err.contains("descriptor limit: "), "{err}");
    assert!(status.success());
}

/// `bench --quick` runs every available model (and the reference) through its scenarios and
/// writes JSON of the documented shape, with no byte mismatch anywhere.
#[test]
fn bench_quick_writes_results_for_every_model_with_zero_mismatches() {
    let (v, report) = support::bench(&["--quick", "--repeat", "1"]);
    for key in [
        "machine",
        "date",
        "command",
        "quick",
        "repeat",
        "models",
        "scenarios",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["quick"], true);
    let models: Vec<String> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    for m in available_models() {
        assert!(models.contains(&m), "{m} missing from {models:?}");
    }
    let scenarios = v["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // --quick runs c12k's pace on 200 connections, and says so.
    assert_eq!(
        names,
        ["pp64-100", "rate64-100", "idle", "c12k at 200 conns"]
    );
    for s in scenarios {
        let rows = s["rows"].as_array().unwrap();
        assert_eq!(rows.len(), models.len());
        for r in rows {
            let what = format!("{} in {}", r["model"], s["name"]);
            assert_eq!(r["ran"], true, "{what} did not run: {}", r["note"]);
            assert_eq!(r["mismatches"], 0, "{what} echoed wrong bytes");
            match s["kind"].as_str().unwrap() {
                "pingpong" => {
                    assert!(
                        r["msgs_per_sec"]["median"].as_f64().unwrap() > 0.0,
                        "{what}"
                    );
                    assert!(
                        r["cpu_secs_per_million"]["median"].as_f64().is_some(),
                        "{what}"
                    );
                    assert!(r["p99_us"]["median"].as_f64().is_some(), "{what}");
                }
                "rate" => {
                    assert!(
                        !r["curve"]["points"].as_array().unwrap().is_empty(),
                        "{what}"
                    );
                    assert_eq!(r["curve"]["points"][0]["kept"], true, "{what}");
                }
                _ => assert!(r["conns_held"].as_u64().unwrap() > 0, "{what}"),
            }
        }
    }
    assert!(report.contains("<svg"), "the report has no chart");
}

/// c100k, shrunk (1,100 connections, an echo a second, held 2 s): completion-port holds them
/// and every paced echo is verified; select cannot (FD_SETSIZE) and is listed as not run,
/// with the reason, without a ramp.
#[test]
fn bench_c100k_runs_the_models_that_can_hold_it_and_says_why_the_others_did_not() {
    let runs = if available_models().contains(&"completion-port".to_string()) {
        "completion-port"
    } else {
        "event-select"
    };
    let models = format!("{runs},select");
    let (v, report) = support::bench(&[
        "--scenario",
        "c100k",
        "--c100k",
        "1100",
        "--c100k-every",
        "1s",
        "--c100k-hold",
        "2s",
        "--models",
        &models,
        "--repeat",
        "1",
    ]);
    let sc = &v["scenarios"][0];
    assert_eq!(sc["name"], "c100k");
    assert_eq!(sc["kind"], "c100k");
    assert!(
        sc["description"]
            .as_str()
            .unwrap()
            .contains("1,100 connections"),
        "{}",
        sc["description"]
    );
    let rows = sc["rows"].as_array().unwrap();
    let ran = &rows[0];
    assert_eq!(ran["model"], runs);
    assert_eq!(ran["ran"], true, "{}", ran["note"]);
    assert_eq!(ran["conns_held"], 1100, "{ran}");
    assert_eq!(ran["conns_still_open"], 1100, "{ran}");
    assert_eq!(ran["mismatches"], 0, "{ran}");
    assert_eq!(ran["errors"], 0, "{ran}");
    // One verified echo per connection per round: a round each second of the 2 s hold (one
    // more if the hold's end comes just after a round's start, one less if a round ran late).
    let echoes = ran["verified_echoes"]["median"].as_f64().unwrap() as u64;
    assert!(
        echoes % 1100 == 0 && (1100..=3300).contains(&echoes),
        "{ran}"
    );
    assert!(ran["late_rounds"].as_u64().is_some(), "{ran}");
    assert!(
        ran["server_cpu_percent"]["median"].as_f64().is_some(),
        "{ran}"
    );
    assert!(
        ran["rss_per_conn_bytes"]["median"].as_f64().is_some(),
        "{ran}"
    );
    assert!(ran["p99_us"]["median"].as_f64().is_some(), "{ran}");
    let not = &rows[1];
    assert_eq!(not["model"], "select");
    assert_eq!(not["ran"], false);
    assert_eq!(
        not["note"],
        "cannot hold 1,100 connections: FD_SETSIZE: select(2) cannot wait on descriptors >= 1024"
    );
    assert!(
        report.contains("verified echoes"),
        "the report has no c100k column"
    );
}

/// A descriptor-bound model asked for more connections than the descriptor limit is not run:
/// it says its cap, and no ramp is tried.
#[test]
fn bench_c100k_past_the_descriptor_limit_is_not_run_on_event_select() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a live rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let want = lim.rlim_max.min(10_000_000) + 1;
    let (v, _) = support::bench(&[
        "--scenario",
        "c100k",
        "--c100k",
        &want.to_string(),
        "--models",
        "event-select",
        "--repeat",
        "1",
    ]);
    let row = &v["scenarios"][0]["rows"][0];
    assert_eq!(row["ran"], false, "{row}");
    let note = row["note"].as_str().unwrap();
    assert!(
        note.starts_with("cannot hold ") && note.contains("descriptors: its cap is"),
        "{note}"
    );
}

#[test]
fn bench_help_names_c100k_and_its_size_flag() {
    let out = iomodels(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("c100k (100,000 connections"), "{help}");
    assert!(help.contains("--c100k <N>"), "{help}");
    assert!(
        !help.contains("--c100k-every"),
        "a test-only flag is hidden: {help}"
    );
}

#[test]
fn a_bad_buffer_ring_is_a_usage_error() {
    assert_usage_error(
        &iomodels(&["serve", "--recv-buffers", "100x4KiB"]),
        &["power of two"],
    );
    assert_usage_error(
        &iomodels(&["serve", "--recv-buffers", "256"]),
        &["COUNTxSIZE"],
    );
}

#[test]
fn a_bad_batch_wait_or_recv_incremental_is_a_usage_error() {
    for (args, needles) in [
        (&["--batch-wait", "1s"][..], &["too long", "100ms"][..]),
        (&["--batch-wait", "500ns"][..], &["unknown unit"][..]),
        (&["--batch-wait", "0.5us"][..], &["resolution"][..]),
        (&["--batch-wait", "soon"][..], &["not a duration"][..]),
        (
            &["--recv-incremental", "maybe"][..],
            &["neither on nor off"][..],
        ),
        (&["--pass-through", "yes"][..], &["neither on nor off"][..]),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        assert_usage_error(&iomodels(&all), needles);
    }
}

/// `--sockets-per-window` (async-select on Windows): 1 to 1000, the most for which a window's
/// message queue cannot overflow; anything else is refused with one line saying why.
#[test]
fn a_bad_sockets_per_window_is_a_usage_error_of_one_line() {
    for (value, needles) in [
        ("0", &["--sockets-per-window", "at least 1 socket"][..]),
        (
            "1001",
            &["--sockets-per-window", "overflow", "at most 1000"][..],
        ),
        ("100000000000000000000000", &["not a number of sockets"][..]),
        ("many", &["not a number of sockets", "1 to 1000"][..]),
    ] {
        let out = iomodels(&[
            "serve",
            "--model",
            "async-select",
            "--listen",
            "127.0.0.1:0",
            "--sockets-per-window",
            value,
        ]);
        assert_usage_error(&out, needles);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = err.split("\n\n").next().unwrap_or_default();
        assert_eq!(what.lines().count(), 1, "not one line: {err:?}");
    }
}

/// On Linux `--sockets-per-window` means nothing (the signal queue is per user, not per
/// thread): async-select says so in one warning and serves as ever; the counters carry the
/// Windows gauges, zero here.
#[test]
fn sockets_per_window_is_ignored_on_linux_with_a_warning() {
    let mut s = Served::start(&["--model", "async-select", "--sockets-per-window", "10"]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    let warning = s.stderr_line_with("--sockets-per-window 10 is Windows-only");
    assert!(warning.contains("ignored"), "{warning}");
    let stats = s.stats();
    assert_eq!(stats["message_windows"], 0, "{stats}");
    assert_eq!(stats["window_sockets_peak"], 0, "{stats}");
    drop(c);
    assert!(s.terminate().success());
}

#[test]
fn serve_help_names_the_batch_wait_and_its_default() {
    let out = iomodels(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--batch-wait <DURATION>",
        "min-wait",
        "--recv-incremental <on|off>",
        "--pass-through <on|off>",
        "--sockets-per-window <N>",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
}

/// Past ~16,000 threads a new thread cannot map its signal stack and Rust aborts the whole
/// process: the thread-per-client model must refuse connections at its cap instead of dying.
#[test]
fn blocking_refuses_past_its_thread_cap_instead_of_aborting() {
    let read = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // The model's cap, computed as it does.
    let cap = (read("/proc/sys/vm/max_map_count").saturating_sub(4096) / 4)
        .min(read("/proc/sys/kernel/threads-max") / 2)
        .min(read("/proc/sys/kernel/pid_max") / 2);
    let want = cap + 300;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a live rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    assert!(
        lim.rlim_max as usize > want + 100,
        "cannot test the thread cap ({cap}) here: RLIMIT_NOFILE's hard limit {} is below the {want} connections it takes",
        lim.rlim_max
    );
    let mut s = Served::start(&["--model", "blocking"]);
    let out = iomodels(&[
        "load",
        "--connect",
        &s.addr.to_string(),
        "--idle",
        "--conns",
        &want.to_string(),
        "--duration",
        "0.5s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the server died: {report}"
    );
    let held = report["conns_held"].as_u64().unwrap() as usize;
    assert!(
        held >= cap.min(want) - 50 && held <= cap,
        "held {held}, cap {cap}"
    );
    let stats = s.stats();
    assert!(stats["refused"].as_u64().unwrap() >= 250, "{stats}");
    assert!(s.terminate().success());
}

/// Runs `serve --model M [extra]`, echoes one message through it, stops it with SIGTERM, and
/// returns its stderr.
fn serve_echo_once_stderr(model: &str, extra: &[&str]) -> String {
    let mut args = vec!["--model", model];
    args.extend_from_slice(extra);
    let s = Served::start(&args);
    {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"hello, trace\n").unwrap();
        let mut back = [0u8; 13];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello, trace\n", "{model}: echo");
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{model}: bytes after the echo");
    }
    let (err, status) = s.terminate_with_stderr();
    assert!(status.success(), "{model}: exit status {status:?}\n{err}");
    err
}

/// The trace lines a model must print for one connection that echoes a message: the accept,
/// and the notification that brought the bytes.
fn expected_trace(model: &str) -> Option<[&'static str; 2]> {
    Some(match model {
        "blocking" => ["accept fd=", "recv fd="],
        "select" => ["accept fd=", "readable fd="],
        // A connection made before the listener had O_ASYNC announces nothing, so the
        // accept is the sure line; the client's FIN comes after O_ASYNC, so an FD_READ too.
        "async-select" => ["accept fd=", "FD_READ fd="],
        "event-select" => ["accept fd=", "EPOLLIN"],
        "overlapped-event" | "overlapped-routine" => ["CQE accept res=", "CQE recv fd="],
        // A direct descriptor is a slot of the worker's table, not a descriptor.
        "completion-port" => match iomodels_server::direct_descriptors_support() {
            Ok(()) => ["CQE accept res=", "CQE recv slot="],
            Err(_) => ["CQE accept res=", "CQE recv fd="],
        },
        _ => return None,
    })
}

/// `serve --trace` prints the notifications each model receives, one `[model] ` line each.
#[test]
fn trace_prints_each_models_notifications() {
    let mut traced = 0;
    for model in available_models() {
        let Some(expected) = expected_trace(&model) else {
            continue;
        };
        let err = serve_echo_once_stderr(&model, &["--trace"]);
        let prefix = format!("[{model}] ");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&prefix)).collect();
        for needle in expected {
            assert!(
                lines.iter().any(|l| l.contains(needle)),
                "{model}: no trace line with {needle:?} in:\n{err}"
            );
        }
        traced += 1;
    }
    assert!(traced >= 3, "only {traced} models traced");
}

/// Without `--trace`, no model prints a trace line.
#[test]
fn without_trace_no_model_prints_trace_lines() {
    for model in available_models() {
        if expected_trace(&model).is_none() {
            continue;
        }
        let err = serve_echo_once_stderr(&model, &[]);
        let prefix = format!("[{model}] ");
        assert!(
            !err.lines().any(|l| l.starts_with(&prefix)),
            "{model}: trace lines without --trace:\n{err}"
        );
    }
}

#[test]
fn serve_help_names_the_limits_and_their_defaults() {
    let out = iomodels(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--max-conns <N>",
        "listen backlog",
        "the descriptor limit less 64",
        "--idle-timeout <DURATION>",
        "for echo's sake",
        "[default: off]",
        "--write-timeout <DURATION>",
        "[default: 60s]",
        "--handshake-timeout <DURATION>",
        "[default: 10s]",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn bad_limit_values_are_usage_errors() {
    for (args, needle) in [
        (&["--max-conns", "0"][..], "--max-conns"),
        (&["--max-conns", "many"][..], "--max-conns"),
        (&["--idle-timeout", "0s"][..], "--idle-timeout"),
        (&["--idle-timeout", "soon"][..], "--idle-timeout"),
        (&["--write-timeout", "1 fortnight"][..], "--write-timeout"),
        (&["--handshake-timeout", "0s"][..], "--handshake-timeout"),
        (&["--handshake-timeout", "2h"][..], "--handshake-timeout"),
        (
            &["--handshake-timeout", "9223372036854775807s"][..],
            "--handshake-timeout",
        ),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = Command::new(BIN)
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_usage_error(&out, &[needle]);
    }
}

/// `--max-conns 1`: the second client's connect completes in the backlog but it gets no echo
/// until the first leaves; `--idle-timeout` then closes the quiet one; the SIGUSR1 counters
/// show both.
#[test]
fn serve_max_conns_and_idle_timeout_through_the_binary() {
    let mut s = Served::start(&[
        "--model",
        "event-select",
        "--max-conns",
        "1",
        "--idle-timeout",
        "1s",
    ]);
    let mut first = TcpStream::connect(s.addr).unwrap();
    first.write_all(b"one").unwrap();
    let mut b = [0u8; 3];
    first.read_exact(&mut b).unwrap();
    let mut second = TcpStream::connect(s.addr).unwrap();
    second.write_all(b"two").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(second.read(&mut b).is_err(), "served past --max-conns 1");
    let stats = s.stats();
    assert_eq!(stats["accepted"], 1, "{stats}");
    assert_eq!(stats["conn_cap_pauses"], 1, "{stats}");
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    second.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"two");
    // Now quiet: closed by the idle timeout.
    assert_eq!(second.read(&mut b).unwrap_or(0), 0);
    let stats = s.stats_until("the idle close", |v| v["idle_closed"] == 1);
    assert_eq!(stats["slow_reader_closed"], 0, "{stats}");
    assert!(s.stderr_line_with("--max-conns").contains("not accepting"));
    assert!(s.terminate().success());
}

/// `bench --results NEW --baseline OLD` compares two runs' JSON without running anything: per
/// scenario and model the medians, their ratio, and better / WORSE only where the min-max
/// ranges are apart; the report gets the same table. The files: a recorded run, and a copy
/// with one metric made better and one worse by half, beyond their ranges.
#[test]
fn bench_compares_two_json_files_by_their_ranges() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-baseline");
    std::fs::create_dir_all(&dir).unwrap();
    let old_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/bench-issue15-2026-12-04.json"
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old_path).unwrap()).unwrap();
    let pp = v["scenarios"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "pp64-100")
        .unwrap();
    let scale = |stat: &mut serde_json::Value, by: f64| {
        for k in ["median", "min", "max"] {
            stat[k] = (stat[k].as_f64().unwrap() * by).into();
        }
    };
    for row in pp["rows"].as_array_mut().unwrap() {
        match row["model"].as_str().unwrap() {
            "event-select" => scale(&mut row["cpu_s_per_million"], 0.5),
            "select" => scale(&mut row["msgs_per_sec"], 0.5),
            _ => {}
        }
    }
    let new_path = dir.join("new.json");
    std::fs::write(&new_path, v.to_string()).unwrap();
    let (text, html) = bench_results(&new_path, &["--baseline", old_path]);
    let line = |model: &str, metric: &str| {
        text.lines()
            .find(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.starts_with(&["pp64-100", model]) && l.contains(metric)
            })
            .unwrap_or_else(|| panic!("no {model} {metric} line in:\n{text}"))
            .to_string()
    };
    let cpu = line("event-select", "CPU s/M msgs");
    assert!(cpu.contains("0.50×") && cpu.ends_with("better"), "{cpu}");
    let rate = line("select", "msgs/s");
    assert!(rate.contains("0.50×") && rate.ends_with("WORSE"), "{rate}");
    // Everything else is the same run: ratio 1, ranges overlapping.
    let same = line("completion-port", "CPU s/M msgs");
    assert!(
        same.contains("1.00×") && same.ends_with("ranges overlap"),
        "{same}"
    );
    assert!(text.contains("1 better, 1 worse, "), "{text}");
    assert!(html.contains("<h2>Compared with the baseline</h2>"));
    assert_eq!(html.matches("<tr class=\"worse\">").count(), 1);
    assert_eq!(html.matches("<tr class=\"better\">").count(), 1);

    // A file that is not a bench JSON: one line, before anything runs.
    let out = iomodels(&["bench", "--baseline", "Cargo.toml", "--quick"]);
    assert_one_line_error(&out, &["--baseline Cargo.toml", "not the JSON of"]);
}

/// A report whose reader has left (`iomodels bench --results F | head -1`) ends the process
/// quietly, as any Unix tool ends: killed by SIGPIPE or exit 0, never a panic on stderr (it
/// used to panic: "failed printing to stdout: Broken pipe"). The pipe's read end is closed
/// before the child starts, so its first write finds no reader, whatever the timing.
#[cfg(target_os = "linux")]
#[test]
fn a_reader_that_leaves_ends_a_report_quietly() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    let json = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/bench-udp-2026-11-27.json"
    );
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigpipe-report.html");
    for args in [
        &[
            "bench",
            "--results",
            json,
            "--report",
            report.to_str().unwrap(),
        ][..],
        &["models"][..],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into a live array of two.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just made by pipe and are owned by nobody else.
        let (read, write) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(read);
        let out = Command::new(BIN)
            .args(args)
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}\n{err}",
            out.status
        );
    }
}

// ---- Usage errors in clap's layout, status 2; runtime failures in one line, status 1 ----

/// `iomodels` alone prints clap's usage and command list as clap lays it out (a line per
/// command), not folded into one long line, with status 2.
#[test]
fn no_arguments_prints_the_usage_in_clap_layout_with_status_2() {
    let out = iomodels(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 10, "{err}");
    assert!(
        lines.contains(&"Usage: iomodels [OPTIONS] <COMMAND>"),
        "{err}"
    );
    for cmd in [
        "serve",
        "models",
        "load",
        "bench",
        "udp",
        "completions",
        "manpage",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("  {cmd} "))),
            "no line for {cmd}:\n{err}"
        );
    }
    let longest = lines.iter().map(|l| l.len()).max().unwrap();
    assert!(longest < 200, "a line of {longest} characters:\n{err}");
}

/// A typo's suggestion is clap's, on a line of its own, and the hidden subcommand `bench`
/// uses is not among them.
#[test]
fn a_typo_gets_a_suggestion_on_a_line_of_its_own() {
    for (args, tip) in [
        (&["serv"][..], "  tip: a similar subcommand exists: 'serve'"),
        (
            &["serve", "--max-con", "5"][..],
            "  tip: a similar argument exists: '--max-conns'",
        ),
    ] {
        let out = iomodels(args);
        assert_usage_error(&out, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.lines().any(|l| l == tip), "{tip:?} in:\n{err}");
    }
}

/// The same kind of mistake, the same status: a bad value is a usage error (2, clap's
/// layout with the subcommand's usage) whether clap's parser or the command found it.
#[test]
fn bad_values_are_usage_errors_with_status_2_whoever_finds_them() {
    // Found by clap's parser.
    for (args, needle) in [
        (&["serve", "--model", "foo"][..], "unknown model 'foo'"),
        (&["load", "--threads", "0"][..], "--threads"),
        (&["completions", "tcsh"][..], "tcsh"),
    ] {
        assert_usage_error(&iomodels(args), &[needle]);
    }
    // Found by the command after parsing: the same status and layout, with the subcommand's
    // usage as clap's own errors of that kind have.
    for (args, needle) in [
        (&["bench", "--models", "foo"][..], "unknown model 'foo'"),
        (
            &["bench", "--scenario", "nope"][..],
            "unknown scenario 'nope'",
        ),
        (&["load", "--size", "0"][..], "--size must be at least 1"),
        (&["load", "--udp", "--idle"][..], "drop --udp"),
        (&["manpage", "nope"][..], "no command 'nope'"),
    ] {
        let out = iomodels(args);
        assert_usage_error(&out, &[needle]);
        let err = String::from_utf8_lossy(&out.stderr);
        let usage = format!("Usage: iomodels {} ", args[0]);
        assert!(err.lines().any(|l| l.starts_with(&usage)), "{err}");
    }
}

/// Help keeps clap's layout: one line per flag, and each default said once (`--threads` had
/// two: its own words and clap's `[default: 0]`).
#[test]
fn load_help_keeps_the_layout_and_says_one_default_for_threads() {
    let out = iomodels(&["load", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.lines().count() > 20, "{help}");
    let threads = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--threads"))
        .take_while(|l| !l.trim_start().starts_with("--json"))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(threads.matches("[default:").count(), 1, "{threads}");
    assert!(threads.contains("[default: one per CPU"), "{threads}");
}

// ---- Shell completions and the manual page, generated from the clap definitions ----

#[test]
fn bash_completion_names_the_subcommands_and_flags_and_is_valid_bash() {
    let out = iomodels(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "load",
        "bench",
        "models",
        "udp",
        "--max-conns",
        "--conns",
    ] {
        assert!(script.contains(word), "{word} missing");
    }
    assert!(!script.contains("tokio-reference"), "a hidden subcommand");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iomodels.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_shell_gets_a_completion_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = iomodels(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("iomodels") && script.contains("max-conns"),
            "{shell}: {script}"
        );
    }
    // A stdout that cannot take it: a runtime failure in one line, not a panic.
    for args in [&["completions", "bash"][..], &["manpage"][..]] {
        let full = std::fs::File::create("/dev/full").unwrap();
        let out = Command::new(BIN).args(args).stdout(full).output().unwrap();
        assert_one_line_error(&out, &["cannot write", "No space left on device"]);
    }
}

/// `groff -k -man -Tutf8` (what `man -l -` runs) renders `iomodels manpage`, and a
/// subcommand's page, without a warning. (scripts/test.sh installs groff-base.)
#[test]
fn the_manual_pages_render_with_groff() {
    for (args, title, words) in [
        (
            &["manpage"][..],
            "iomodels(1)",
            &["SYNOPSIS", "iomodels-serve(1)", "iomodels-load(1)"][..],
        ),
        (
            &["manpage", "serve"][..],
            "iomodels-serve(1)",
            &["--max-conns <N>", "--model <MODEL>"][..],
        ),
        (
            &["manpage", "load"][..],
            "iomodels-load(1)",
            &["--connect <ADDR>"][..],
        ),
    ] {
        let roff = iomodels(args);
        assert!(roff.status.success(), "{roff:?}");
        assert!(roff.stdout.starts_with(b".ie"), "not roff");
        let mut groff = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("groff (Debian: groff-base; scripts/test.sh installs it)");
        groff.stdin.take().unwrap().write_all(&roff.stdout).unwrap();
        let out = groff.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warned");
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(page.starts_with(title), "{page}");
        for word in words {
            assert!(page.contains(word), "{word} missing in:\n{page}");
        }
    }
}

// ---- Small ones: the models table, localhost ----

/// Every column of `iomodels models` starts where its header does, after at least two spaces,
/// whatever the longest mechanism's name (overlapped-routine's ran into AVAILABLE).
#[test]
fn the_models_table_columns_never_run_together() {
    let out = iomodels(&["models"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let mut rows = table.lines().take_while(|l| !l.is_empty());
    let header = rows.next().unwrap();
    let cols: Vec<usize> = ["MECHANISM", "AVAILABLE"]
        .iter()
        .map(|h| header.find(h).unwrap())
        .collect();
    for row in rows {
        for &c in &cols {
            assert_eq!(&row[c - 2..c], "  ", "columns run together in {row:?}");
            assert_ne!(&row[c..c + 1], " ", "a column starts late in {row:?}");
        }
    }
}

/// `load --connect localhost:P` tries every address localhost resolves to, in order: it
/// reaches a server on [::1] only and one on 127.0.0.1 only, whichever the resolver lists
/// first. Run in a mount namespace whose /etc/hosts gives localhost both addresses (this
/// machine's may give one).
#[test]
fn load_localhost_tries_every_address_in_order() {
    let hosts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hosts-localhost");
    std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/hosts && getent ahosts localhost",
            hosts.display()
        ))
        .output()
        .unwrap();
    // Root, as CI runs: without a mount namespace this test fails and says why (a test that
    // cannot run is not a pass).
    assert!(
        probe.status.success(),
        "this test needs a mount namespace (`unshare -m`, root): {}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let resolved = String::from_utf8_lossy(&probe.stdout);
    assert!(
        resolved.contains("::1") && resolved.contains("127.0.0.1"),
        "{resolved}"
    );
    for listen in ["[::1]:0", "127.0.0.1:0"] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--model", "event-select", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let s = Served::spawn(cmd);
        let out = Command::new("timeout")
            .args(["60", "unshare", "-m", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/hosts && exec {BIN} load --connect localhost:{} \
                 --messages 5 --json",
                hosts.display(),
                s.addr.port()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "against {listen}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["messages"], 5, "against {listen}: {v}");
        assert_eq!(v["mismatches"], 0);
        assert!(s.terminate().success());
    }
}
