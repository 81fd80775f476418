//! `iomodels load --tls` as a user meets it: the flag errors (usage errors, exit 2; a file
//! that cannot be read or used: one line, exit 1), a run against
//! `iomodels serve --tls-self-signed` in echo and in --handshakes mode, mutual TLS with
//! certificate files, and the certificates a client must refuse, each ending the run with one
//! line that names the problem.
//!
//! Linux only, like tests/cli.rs: the binary's tests share tests/support, which stops children with
//! Unix signals, and their expected errno names are Linux's. `iomodels.exe load` is run under Wine
//! by scripts/test-windows.sh instead (plain, TLS, UDP, idle, against a Linux and a Windows serve).
#![cfg(target_os = "linux")]

mod support;

use support::{Served, BIN};

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iomodels_core::tls::pki::{Ca, Issued, Usage, Validity};

/// Runs `iomodels ARGS` to completion, killing it (and failing) after 60 s.
fn iomodels(args: &[&str]) -> Output {
    iomodels_in(&scratch_dir(), args)
}

/// [`iomodels`] with `dir` as the working directory (where `load --tls` looks for
/// iomodels-self-signed.pem when --tls-ca is not given).
fn iomodels_in(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iomodels");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("iomodels {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A fresh directory for this test's certificate files.
fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "load_tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path as a string.
fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// TLS serving, for these tests.
impl Served {
    /// `serve --tls-cert/--tls-key` with `issued` (completion-port), optionally requiring
    /// client certificates from `client_ca`.
    fn with_cert(dir: &std::path::Path, issued: &Issued, client_ca: Option<&str>) -> Served {
        let cert = write(dir, "server.pem", &issued.cert_pem);
        let key = write(dir, "server.key", &issued.key_pem);
        let mut args = vec![
            "--model",
            "completion-port",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        if let Some(ca) = client_ca {
            args.extend(["--tls-client-ca", ca]);
        }
        Served::start(&args)
    }
}

/// Asserts a failed run: non-zero status, exactly one line on stderr containing `needle`, and
/// no report on stdout.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    support::assert_one_line_error(out, needles);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tls_without_tls_ca_is_a_usage_error_saying_what_to_add() {
    // (In an empty directory: no iomodels-self-signed.pem to default to.)
    support::assert_usage_error(
        &iomodels(&["load", "--tls"]),
        &["--tls needs --tls-ca FILE"],
    );
}

/// `serve --tls-self-signed` and `load --tls`, run from one directory with no other TLS flag:
/// load trusts the certificate serve wrote there by default.
#[test]
fn load_tls_trusts_the_self_signed_file_serve_wrote_in_its_directory() {
    let dir = scratch_dir();
    let s = Served::start_in(
        Some(&dir),
        &["--model", "event-select", "--tls-self-signed"],
    );
    assert!(dir.join("iomodels-self-signed.pem").is_file());
    let addr = s.addr.to_string();
    let v = json(&iomodels_in(
        &dir,
        &[
            "load",
            "--connect",
            &addr,
            "--tls",
            "--messages",
            "20",
            "--json",
        ],
    ));
    assert_eq!(v["messages"], 20);
    assert_eq!(v["tls"], true);
    assert_eq!(v["mismatches"], 0);
}

#[test]
fn a_tls_option_without_tls_is_a_usage_error() {
    support::assert_usage_error(
        &iomodels(&["load", "--tls-ca", "ca.pem"]),
        &["--tls-ca is a TLS option: add --tls"],
    );
    support::assert_usage_error(
        &iomodels(&["load", "--tls-server-name", "localhost"]),
        &["--tls-server-name is a TLS option"],
    );
}

#[test]
fn a_missing_ca_file_is_one_line_naming_it() {
    let out = iomodels(&["load", "--tls", "--tls-ca", "/nonexistent/ca.pem"]);
    assert_one_line_error(&out, &["--tls-ca /nonexistent/ca.pem: cannot read it"]);
}

#[test]
fn a_ca_file_without_a_certificate_is_one_line() {
    let dir = scratch_dir();
    let empty = write(&dir, "empty.pem", "not PEM at all\n");
    let out = iomodels(&["load", "--tls", "--tls-ca", &empty]);
    assert_one_line_error(&out, &["no CERTIFICATE in it"]);
}

#[test]
fn a_client_certificate_without_its_key_is_a_usage_error() {
    let out = iomodels(&["load", "--tls", "--tls-ca", "a.pem", "--tls-cert", "c.pem"]);
    support::assert_usage_error(&out, &["--tls-key"]);
}

#[test]
fn handshakes_without_tls_are_a_usage_error() {
    support::assert_usage_error(
        &iomodels(&["load", "--handshakes"]),
        &["--handshakes measures TLS handshakes: add --tls --tls-ca FILE"],
    );
}

#[test]
fn help_describes_every_tls_flag() {
    let out = iomodels(&["load", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--tls ",
        "--tls-ca",
        "--tls-server-name",
        "--tls-cert",
        "--tls-key",
        "--handshakes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
}

#[test]
fn load_over_tls_against_serve_tls_self_signed_verifies_every_byte() {
    let dir = scratch_dir();
    let (s, cert) = Served::self_signed(&dir);
    let addr = s.addr.to_string();
    let common = ["load", "--connect", &addr, "--tls", "--tls-ca", &cert];
    let v = json(&iomodels(
        &[
            &common[..],
            &[
                "--conns",
                "4",
                "--size",
                "100",
                "--messages",
                "50",
                "--json",
            ],
        ]
        .concat(),
    ));
    assert_eq!(v["messages"], 200);
    assert_eq!(
        (v["mismatches"].as_u64(), v["tls_errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["tls"], true);

    // The certificate names localhost too.
    let named = iomodels(
        &[
            &common[..],
            &["--tls-server-name", "localhost", "--messages", "10"],
        ]
        .concat(),
    );
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    assert!(String::from_utf8_lossy(&named.stdout).contains("(clean)"));

    let v = json(&iomodels(
        &[
            &common[..],
            &["--handshakes", "--conns", "3", "--messages", "5", "--json"],
        ]
        .concat(),
    ));
    assert_eq!(v["mode"], "handshakes");
    assert_eq!(v["handshakes"], 15);
    assert_eq!(v["handshake_failures"], 0);
    assert!(v["handshakes_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us"]["p99"].as_u64().unwrap() > 0);

    let table = iomodels(&[&common[..], &["--handshakes", "--messages", "3"]].concat());
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("handshakes/s") && table.contains("cycle (us)"),
        "{table}"
    );
}

#[test]
fn a_server_name_the_certificate_does_not_have_is_one_line() {
    let dir = scratch_dir();
    let (s, cert) = Served::self_signed(&dir);
    let addr = s.addr.to_string();
    let out = iomodels(&[
        "load",
        "--connect",
        &addr,
        "--tls",
        "--tls-ca",
        &cert,
        "--tls-server-name",
        "db.example.com",
    ]);
    assert_one_line_error(
        &out,
        &[&format!("TLS handshake with {addr} failed: invalid peer certificate: certificate not valid for name")],
    );
}

#[test]
fn an_expired_server_certificate_is_one_line() {
    let dir = scratch_dir();
    let ca = Ca::new("load_tls CA").unwrap();
    let expired = ca
        .issue(&["127.0.0.1"], Usage::Server, Validity::Expired)
        .unwrap();
    let s = Served::with_cert(&dir, &expired, None);
    let ca_file = write(&dir, "ca.pem", &ca.issued().cert_pem);
    let addr = s.addr.to_string();
    for mode in [&[][..], &["--handshakes"][..]] {
        let args = [
            &["load", "--connect", &addr, "--tls", "--tls-ca", &ca_file][..],
            mode,
        ]
        .concat();
        assert_one_line_error(
            &iomodels(&args),
            &[&format!(
                "TLS handshake with {addr} failed: invalid peer certificate: certificate expired"
            )],
        );
    }
}

#[test]
fn an_unknown_issuer_is_one_line() {
    let dir = scratch_dir();
    let (s, _) = Served::self_signed(&dir);
    let other = Ca::new("someone else").unwrap();
    let ca_file = write(&dir, "other-ca.pem", &other.issued().cert_pem);
    let out = iomodels(&[
        "load",
        "--connect",
        &s.addr.to_string(),
        "--tls",
        "--tls-ca",
        &ca_file,
    ]);
    assert_one_line_error(&out, &["invalid peer certificate: UnknownIssuer"]);
}

#[test]
fn mutual_tls_with_tls_cert_and_key_works_and_without_them_is_one_line() {
    let dir = scratch_dir();
    let ca = Ca::new("load_tls CA").unwrap();
    let server = ca
        .issue(&["127.0.0.1"], Usage::Server, Validity::Current)
        .unwrap();
    let client = ca
        .issue(&["load client"], Usage::Client, Validity::Current)
        .unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.issued().cert_pem);
    let s = Served::with_cert(&dir, &server, Some(&ca_file));
    let addr = s.addr.to_string();
    let client_cert = write(&dir, "client.pem", &client.cert_pem);
    let client_key = write(&dir, "client.key", &client.key_pem);
    let base = ["load", "--connect", &addr, "--tls", "--tls-ca", &ca_file];
    let v = json(&iomodels(
        &[
            &base[..],
            &[
                "--tls-cert",
                &client_cert,
                "--tls-key",
                &client_key,
                "--conns",
                "2",
                "--messages",
                "20",
                "--json",
            ],
        ]
        .concat(),
    ));
    assert_eq!(v["messages"], 40);
    assert_eq!(v["mismatches"], 0);
    assert_one_line_error(
        &iomodels(&[&base[..], &["--messages", "20"]].concat()),
        &[&format!(
            "TLS handshake with {addr} failed: received fatal alert: CertificateRequired"
        )],
    );
}
