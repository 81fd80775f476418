//! `iomodels serve` over TLS against peers nobody here wrote: `openssl s_client` and
//! `socat OPENSSL:` echo a random payload byte-identically through every model, with and
//! without a client certificate (mutual TLS), over TLS 1.2 and 1.3; a client the server must
//! refuse is refused and the next one is served; and `serve`'s TLS flags, good and bad.
//!
//! openssl and socat are required: a test that cannot find them fails and says so
//! (scripts/test.sh installs both). Every external command runs under `timeout`, every read
//! from the server has a deadline.
#![cfg(target_os = "linux")]

mod support;

use support::{assert_one_line_error, assert_usage_error, random_bytes, Served, BIN};

use iomodels_core::tls::pki::{Ca, Usage, Validity};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;

/// How long any external client may run (`timeout`'s limit).
const CLIENT_LIMIT: &str = "60";
/// The payload every client echoes.
const PAYLOAD_LEN: usize = 256 * 1024;

/// Fails the test, saying so, when `tool` (openssl or socat) is not installed.
fn require(tool: &str) {
    let arg = if tool == "socat" { "-V" } else { "version" };
    let ok = Command::new("timeout")
        .args(["10", tool, arg])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is not installed (or `{tool} {arg}` fails): this test needs it as a peer \
         nobody here wrote; scripts/test.sh installs it (apt-get install {tool})"
    );
}

/// A payload that differs from run to run (the seed is in every failure message).
fn payload() -> (Vec<u8>, u64) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let seed = (nanos << 20) ^ u64::from(std::process::id());
    (random_bytes(PAYLOAD_LEN, seed), seed)
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("iomodels-tls-interop-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test PKI on disk: a CA, a server certificate for localhost/127.0.0.1 it signed, a client
/// certificate it signed, and a client certificate from a CA the server does not trust.
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = Ca::new("iomodels interop test CA").unwrap();
        let server = ca
            .issue(
                &["localhost", "127.0.0.1"],
                Usage::Server,
                Validity::Current,
            )
            .unwrap();
        let client = ca
            .issue(&["interop-client"], Usage::Client, Validity::Current)
            .unwrap();
        let other_ca = Ca::new("some other CA").unwrap();
        let stranger = other_ca
            .issue(&["stranger"], Usage::Client, Validity::Current)
            .unwrap();
        Pki {
            ca: dir.write("ca.pem", &ca.issued().cert_pem),
            server_cert: dir.write("server.pem", &server.cert_pem),
            server_key: dir.write("server.key", &server.key_pem),
            client_cert: dir.write("client.pem", &client.cert_pem),
            client_key: dir.write("client.key", &client.key_pem),
            stranger_cert: dir.write("stranger.pem", &stranger.cert_pem),
            stranger_key: dir.write("stranger.key", &stranger.key_pem),
            dir,
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// When a client's stdin is closed.
#[derive(Clone, Copy, PartialEq)]
enum StdinEnd {
    /// Right after the payload: socat half-closes (its `close_notify`) and reads on.
    AfterPayload,
    /// Once the whole echo came back, or the client ended: `openssl s_client -no_ign_eof`
    /// shuts the connection down (`close_notify`) and exits at its input's end, without
    /// reading what is still on its way.
    AfterEcho,
}

/// What a client process did.
struct ClientRun {
    what: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl ClientRun {
    fn timed_out(&self) -> bool {
        self.status.code() == Some(124) || self.status.code() == Some(137)
    }

    /// The client succeeded and its output is the payload, byte for byte.
    fn assert_echoed(&self, payload: &[u8], seed: u64) {
        assert!(
            self.status.success(),
            "{}: failed ({:?}{}); stderr:\n{}",
            self.what,
            self.status,
            if self.timed_out() { ", timed out" } else { "" },
            self.stderr
        );
        assert_eq!(
            self.stdout.len(),
            payload.len(),
            "{}: echoed {} bytes of {} (seed {seed}); stderr:\n{}",
            self.what,
            self.stdout.len(),
            payload.len(),
            self.stderr
        );
        if let Some(at) = self.stdout.iter().zip(payload).position(|(a, b)| a != b) {
            panic!(
                "{}: the echo differs from the payload at byte {at} (seed {seed})",
                self.what
            );
        }
    }

    /// The client got nothing back.
    fn assert_nothing_echoed(&self) {
        assert!(
            !self.timed_out(),
            "{}: timed out instead of being refused; stderr:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "{}: {} bytes came back from a server that should have refused it",
            self.what,
            self.stdout.len()
        );
    }

    /// The client failed (non-zero exit, not a timeout) and got nothing back.
    fn assert_refused(&self) {
        self.assert_nothing_echoed();
        assert!(
            !self.status.success(),
            "{}: exited 0 although the server refused it; stderr:\n{}",
            self.what,
            self.stderr
        );
    }
}

/// Runs `timeout LIMIT program args`, writes `payload` to its stdin (closed as `end` says),
/// and collects its stdout and stderr.
fn run_client(
    what: &str,
    program: &str,
    args: &[String],
    payload: &[u8],
    end: StdinEnd,
) -> ClientRun {
    require(program);
    let mut child = Command::new("timeout")
        .args(["-k", "5", CLIENT_LIMIT, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run `timeout {program}`: {e}"));
    let (echoed_tx, echoed_rx) = mpsc::channel::<()>();
    let mut stdin = child.stdin.take().unwrap();
    let to_send = payload.to_vec();
    let writer = std::thread::spawn(move || {
        // A client that quits early (refused) breaks the pipe: not an error here.
        let _ = stdin.write_all(&to_send);
        if end == StdinEnd::AfterEcho {
            // Until the echo is complete or the client's stdout ended (bounded by the
            // client's own `timeout`, which ends its stdout).
            let _ = echoed_rx.recv();
        }
        drop(stdin);
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut err);
        String::from_utf8_lossy(&err).into_owned()
    });
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stdout = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut told = false;
    loop {
        match stdout_pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stdout.extend_from_slice(&buf[..n]);
                if !told && stdout.len() >= payload.len() {
                    let _ = echoed_tx.send(());
                    told = true;
                }
            }
        }
    }
    drop(echoed_tx);
    let status = child.wait().unwrap();
    writer.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    ClientRun {
        what: what.to_string(),
        status,
        stdout,
        stderr,
    }
}

/// `openssl s_client` to `addr`, verifying the server against `ca` for the name localhost,
/// stopping at the first verification error; binary-clean (-quiet -nocommands) and shutting
/// down at its input's end (-no_ign_eof).
fn s_client(
    addr: SocketAddr,
    ca: &Path,
    version: Option<&str>,
    identity: Option<(&Path, &Path)>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &addr.to_string(),
        "-CAfile",
        s(ca),
        "-verify_return_error",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-quiet",
        "-no_ign_eof",
        "-nocommands",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(version.map(String::from));
    if let Some((cert, key)) = identity {
        args.extend(["-cert", s(cert), "-key", s(key)].map(String::from));
    }
    args
}

fn openssl(
    what: &str,
    addr: SocketAddr,
    ca: &Path,
    version: Option<&str>,
    identity: Option<(&Path, &Path)>,
    payload: &[u8],
) -> ClientRun {
    let args = s_client(addr, ca, version, identity);
    run_client(what, "openssl", &args, payload, StdinEnd::AfterEcho)
}

/// `socat - OPENSSL:ADDR,cafile=CA,commonname=localhost[,cert=,key=][,openssl-max-proto-version=V]`.
fn socat(
    what: &str,
    addr: SocketAddr,
    ca: &Path,
    max_version: Option<&str>,
    identity: Option<(&Path, &Path)>,
    payload: &[u8],
) -> ClientRun {
    let mut address = format!("OPENSSL:{addr},cafile={},commonname=localhost", s(ca));
    if let Some((cert, key)) = identity {
        address.push_str(&format!(",cert={},key={}", s(cert), s(key)));
    }
    if let Some(v) = max_version {
        address.push_str(&format!(",openssl-max-proto-version={v}"));
    }
    let args = ["-t", "10", "-", &address].map(String::from);
    run_client(what, "socat", &args, payload, StdinEnd::AfterPayload)
}

/// The server's per-connection TLS warnings (`WARN ] tls: PEER: ...`).
fn tls_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tls: "))
        .collect()
}

/// A clean stop: SIGINT -> exit 0, and no connection was logged as truncated.
fn assert_clean_stop(served: Served, model: &str) -> String {
    let (status, err) = served.interrupt();
    assert!(
        status.success(),
        "{model}: exit status {status:?} after SIGINT; stderr:\n{err}"
    );
    assert!(
        !err.contains("truncated"),
        "{model}: a connection was logged as truncated (a client's close_notify missed?):\n{err}"
    );
    err
}

mod per_model {
    use super::*;

    /// Server authentication only: openssl over TLS 1.3 and over TLS 1.2, socat (its default,
    /// TLS 1.3), none with a client certificate.
    pub fn openssl_and_socat_echo_without_client_certificates(model: &str) {
        require("openssl");
        require("socat");
        let pki = Pki::new(&format!("{model}-server-auth"));
        let mut served = Served::start(&[
            "--model",
            model,
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
        ]);
        assert!(
            served.ready_line.contains(&format!("(model {model}: "))
                && served.ready_line.ends_with("over TLS)"),
            "{}",
            served.ready_line
        );
        let addr = served.addr;
        let (data, seed) = payload();
        openssl(
            &format!("{model}: openssl s_client -tls1_3"),
            addr,
            &pki.ca,
            Some("-tls1_3"),
            None,
            &data,
        )
        .assert_echoed(&data, seed);
        openssl(
            &format!("{model}: openssl s_client -tls1_2"),
            addr,
            &pki.ca,
            Some("-tls1_2"),
            None,
            &data,
        )
        .assert_echoed(&data, seed);
        socat(
            &format!("{model}: socat OPENSSL:"),
            addr,
            &pki.ca,
            None,
            None,
            &data,
        )
        .assert_echoed(&data, seed);
        let stats = served.stats_until("3 connections closed", |s| {
            s["accepted"] == 3 && s["active"] == 0
        });
        assert_eq!(stats["tls_failures"], 0, "{model}: {stats}");
        assert_eq!(stats["tls_truncated"], 0, "{model}: {stats}");
        assert_eq!(stats["errors"], 0, "{model}: {stats}");
        let err = assert_clean_stop(served, model);
        assert!(
            tls_warnings(&err).is_empty(),
            "{model}: TLS warnings for clean clients:\n{err}"
        );
    }

    /// Mutual TLS: clients with a certificate from the trusted CA are served (openssl over
    /// TLS 1.2, socat over TLS 1.3); clients without one, or with one from another CA, are
    /// refused with nothing echoed, and the next good client is served.
    pub fn mutual_tls_serves_certified_clients_and_refuses_the_rest(model: &str) {
        require("openssl");
        require("socat");
        let pki = Pki::new(&format!("{model}-mutual"));
        let mut served = Served::start(&[
            "--model",
            model,
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--tls-client-ca",
            s(&pki.ca),
        ]);
        let (data, seed) = payload();
        let mutual = Mutual {
            model,
            addr: served.addr,
            pki: &pki,
            data,
            seed,
        };
        mutual.certified_clients_are_served();
        mutual.uncertified_clients_are_refused_and_the_next_is_served();

        let stats = served.stats_until("8 connections closed", |s| {
            s["accepted"] == 8 && s["active"] == 0
        });
        assert_eq!(stats["tls_failures"], 4, "{model}: {stats}");
        assert_eq!(stats["tls_truncated"], 0, "{model}: {stats}");
        let err = assert_clean_stop(served, model);
        assert_refusals_logged(model, &err);
    }

    /// [`openssl`] or [`socat`]: runs a client (what, server, CA, version, identity, payload).
    type Client =
        fn(&str, SocketAddr, &Path, Option<&str>, Option<(&Path, &Path)>, &[u8]) -> ClientRun;

    /// The clients of one mutual-TLS run: the model, the server's address, the PKI and the
    /// payload every client sends.
    struct Mutual<'a> {
        model: &'a str,
        addr: SocketAddr,
        pki: &'a Pki,
        data: Vec<u8>,
        seed: u64,
    }

    impl Mutual<'_> {
        /// The client certificate the trusted CA signed.
        fn me(&self) -> Option<(&Path, &Path)> {
            Some((
                self.pki.client_cert.as_path(),
                self.pki.client_key.as_path(),
            ))
        }

        /// A client certificate from a CA the server does not trust.
        fn stranger(&self) -> Option<(&Path, &Path)> {
            Some((
                self.pki.stranger_cert.as_path(),
                self.pki.stranger_key.as_path(),
            ))
        }

        /// `client` ([`openssl`] or [`socat`]; `what`, after the model's name) sends the
        /// payload, at protocol `version` (each tool's spelling), with `identity` if any.
        fn run(
            &self,
            client: Client,
            what: &str,
            version: Option<&str>,
            identity: Option<(&Path, &Path)>,
        ) -> ClientRun {
            let what = format!("{}: {what}", self.model);
            client(
                &what,
                self.addr,
                &self.pki.ca,
                version,
                identity,
                &self.data,
            )
        }

        /// openssl over TLS 1.2 and socat (TLS 1.3), each with a trusted certificate, echo.
        fn certified_clients_are_served(&self) {
            let (data, seed) = (&self.data, self.seed);
            self.run(
                openssl,
                "openssl s_client -tls1_2 -cert",
                Some("-tls1_2"),
                self.me(),
            )
            .assert_echoed(data, seed);
            self.run(socat, "socat OPENSSL:...,cert=,key=", None, self.me())
                .assert_echoed(data, seed);
        }

        /// Four clients without a trusted certificate are refused (nothing echoed), and a
        /// certified client after the first refusal and after the last is served.
        fn uncertified_clients_are_refused_and_the_next_is_served(&self) {
            let (data, seed) = (&self.data, self.seed);
            // Refused: openssl without a certificate (TLS 1.3: its handshake completes, then the
            // server's certificate_required alert ends the session before any data).
            self.run(
                openssl,
                "openssl s_client without a certificate",
                None,
                None,
            )
            .assert_refused();
            // The server keeps serving.
            self.run(
                socat,
                "socat with a certificate after a refused client",
                None,
                self.me(),
            )
            .assert_echoed(data, seed);

            // Refused: socat without a certificate over TLS 1.2 (the handshake itself fails).
            self.run(
                socat,
                "socat -tls1.2 without a certificate",
                Some("TLS1.2"),
                None,
            )
            .assert_refused();
            // Refused: socat without a certificate over TLS 1.3. socat 1.7 takes the alert that
            // arrives on its read side for an end of stream and may exit 0 (seen), so only
            // "nothing echoed" is asserted for it, and the server's count of refusals.
            self.run(socat, "socat without a certificate", None, None)
                .assert_nothing_echoed();
            // Refused: a certificate from a CA the server does not trust.
            self.run(
                openssl,
                "openssl s_client with an untrusted certificate",
                Some("-tls1_3"),
                self.stranger(),
            )
            .assert_refused();
            self.run(
                openssl,
                "openssl s_client -tls1_3 -cert after the refusals",
                Some("-tls1_3"),
                self.me(),
            )
            .assert_echoed(data, seed);
        }
    }

    /// The server's log of the 4 refusals (`err`, its stderr): every warning names its peer,
    /// the lines and the counts they left out account for at most the 4, and the first says
    /// "no certificates".
    fn assert_refusals_logged(model: &str, err: &str) {
        // Each names its peer (it once said "a client" when the peer had reset the connection
        // before the server logged it).
        assert!(
            !err.contains("tls: a client"),
            "{model}: a warning that does not name its peer:\n{err}"
        );
        let warnings = tls_warnings(err);
        assert!(
            warnings.iter().all(|l| l.contains("tls: 127.0.0.1:")),
            "{model}: {warnings:#?}"
        );
        // Refusals log at most about one line a second (log_every!), each saying how many
        // like it it left out: the lines and their counts account for at most the 4 refusals,
        // which the server's counter holds every one of.
        let left_out: u64 = warnings
            .iter()
            .filter_map(|l| l.split(" (").last()?.split(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(
            !warnings.is_empty() && warnings.len() as u64 + left_out <= 4,
            "{model}: {} lines leaving out {left_out} for 4 refusals:\n{err}",
            warnings.len()
        );
        assert!(
            warnings[0].contains("no certificates"),
            "{model}: the first refusal's reason: {warnings:#?}"
        );
    }
}

per_model! {
    check: every_model_is_tested;
    cases: [
        openssl_and_socat_echo_without_client_certificates,
        mutual_tls_serves_certified_clients_and_refuses_the_rest,
    ];
}

// ---- serve's TLS flags ----

/// `iomodels serve --listen 127.0.0.1:0 ARGS`, bounded: a run that should have failed but
/// serves instead is stopped by `timeout` and fails the test.
fn serve_bounded(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", "20", BIN, "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run timeout iomodels serve")
}

#[test]
fn tls_cert_without_tls_key_is_a_usage_error() {
    let pki = Pki::new("flag-cert-only");
    let out = serve_bounded(&["--tls-cert", s(&pki.server_cert)]);
    assert_usage_error(&out, &["--tls-key", "required"]);
}

#[test]
fn tls_key_without_tls_cert_is_a_usage_error() {
    let pki = Pki::new("flag-key-only");
    let out = serve_bounded(&["--tls-key", s(&pki.server_key)]);
    assert_usage_error(&out, &["--tls-cert", "required"]);
}

#[test]
fn a_missing_certificate_or_key_file_is_one_line() {
    let pki = Pki::new("flag-missing");
    let nowhere = pki.dir.path("nowhere.pem");
    let out = serve_bounded(&["--tls-cert", s(&nowhere), "--tls-key", s(&pki.server_key)]);
    assert_one_line_error(&out, &["--tls-cert", s(&nowhere), "cannot read"]);
    let out = serve_bounded(&["--tls-cert", s(&pki.server_cert), "--tls-key", s(&nowhere)]);
    assert_one_line_error(&out, &["--tls-key", s(&nowhere), "cannot read"]);
    let out = serve_bounded(&[
        "--tls-cert",
        s(&pki.server_cert),
        "--tls-key",
        s(&pki.server_key),
        "--tls-client-ca",
        s(&nowhere),
    ]);
    assert_one_line_error(&out, &["--tls-client-ca", s(&nowhere), "cannot read"]);
}

#[test]
fn a_file_with_no_certificate_is_one_line() {
    let pki = Pki::new("flag-no-cert");
    // The key file where the certificate should be.
    let out = serve_bounded(&[
        "--tls-cert",
        s(&pki.server_key),
        "--tls-key",
        s(&pki.server_key),
    ]);
    assert_one_line_error(&out, &["--tls-cert", "no CERTIFICATE"]);
    let empty = pki.dir.write("empty.pem", "");
    let out = serve_bounded(&[
        "--tls-cert",
        s(&pki.server_cert),
        "--tls-key",
        s(&pki.server_key),
        "--tls-client-ca",
        s(&empty),
    ]);
    assert_one_line_error(&out, &["--tls-client-ca", "no CERTIFICATE"]);
}

#[test]
fn a_file_with_no_key_is_one_line() {
    let pki = Pki::new("flag-no-key");
    // The certificate where the key should be.
    let out = serve_bounded(&[
        "--tls-cert",
        s(&pki.server_cert),
        "--tls-key",
        s(&pki.server_cert),
    ]);
    assert_one_line_error(&out, &["--tls-key", "no PRIVATE KEY"]);
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_one_line() {
    let pki = Pki::new("flag-mismatch");
    let out = serve_bounded(&[
        "--tls-cert",
        s(&pki.server_cert),
        "--tls-key",
        s(&pki.client_key),
    ]);
    assert_one_line_error(
        &out,
        &[
            "--tls-key",
            s(&pki.client_key),
            "not the private key",
            "--tls-cert",
        ],
    );
}

#[test]
fn tls_client_ca_without_tls_is_a_usage_error() {
    let pki = Pki::new("flag-client-ca");
    let out = serve_bounded(&["--tls-client-ca", s(&pki.ca)]);
    assert_usage_error(&out, &["--tls-client-ca", "needs TLS"]);
}

/// The SHA-256 fingerprint `openssl x509` computes for a PEM file (`AB:CD:...`).
fn openssl_fingerprint(pem: &Path) -> String {
    require("openssl");
    let out = Command::new("timeout")
        .args([
            "20",
            "openssl",
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
        ])
        .arg(pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openssl x509 {}: {text}{}",
        pem.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // "sha256 Fingerprint=AB:CD:..." (the prefix's case differs between versions).
    text.trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("openssl x509 printed {text:?}"))
        .1
        .to_string()
}

/// The fingerprint a `tls: self-signed certificate ...` log line gives.
fn logged_fingerprint(line: &str) -> String {
    line.split("SHA-256 ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
        .trim()
        .to_string()
}

/// `--tls-self-signed --tls-cert-out FILE`: FILE's fingerprint per `openssl x509` is the one
/// the server logged, and clients that trust FILE (and nothing else) connect and echo.
#[test]
fn tls_self_signed_writes_the_certificate_it_logs_and_clients_trusting_it_connect() {
    require("openssl");
    require("socat");
    let dir = TempDir::new("self-signed");
    let out = dir.path("server.pem");
    let served = Served::start(&[
        "--model",
        "event-select",
        "--tls-self-signed",
        "--tls-cert-out",
        s(&out),
    ]);
    let line = served.stderr_line_with("tls: self-signed certificate");
    assert!(line.contains(s(&out)), "{line}");
    let logged = logged_fingerprint(&line);
    assert_eq!(logged.len(), 32 * 3 - 1, "{line}");
    assert_eq!(openssl_fingerprint(&out), logged, "{line}");
    let addr = served.addr;
    let (data, seed) = payload();
    socat(
        "socat trusting the self-signed certificate",
        addr,
        &out,
        None,
        None,
        &data,
    )
    .assert_echoed(&data, seed);
    openssl(
        "openssl s_client trusting the self-signed certificate",
        addr,
        &out,
        None,
        None,
        &data,
    )
    .assert_echoed(&data, seed);
    // Trusting something else, the same client is refused by its own verification.
    let pki = Pki::new("self-signed-other-ca");
    openssl(
        "openssl s_client trusting another CA",
        addr,
        &pki.ca,
        None,
        None,
        &data,
    )
    .assert_refused();
    let (status, err) = served.interrupt();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(!err.contains("truncated"), "{err}");
}

/// Without --tls-cert-out, the certificate goes to iomodels-self-signed.pem in the working
/// directory.
#[test]
fn tls_self_signed_writes_iomodels_self_signed_pem_by_default() {
    require("openssl");
    let dir = TempDir::new("self-signed-default");
    let served = Served::start_in(Some(&dir.0), &["--model", "select", "--tls-self-signed"]);
    let line = served.stderr_line_with("tls: self-signed certificate");
    let file = dir.path("iomodels-self-signed.pem");
    assert_eq!(
        openssl_fingerprint(&file),
        logged_fingerprint(&line),
        "{line}"
    );
    let (status, err) = served.interrupt();
    assert!(status.success(), "{status:?}\n{err}");
}

/// The PKI helper's own certificates are what the interop tests assume: openssl verifies the
/// server's for localhost and 127.0.0.1 against the CA (so a failure above is the server's).
#[test]
fn the_test_pki_verifies_with_openssl() {
    require("openssl");
    let pki = Pki::new("pki-check");
    for (cert, purpose, host) in [
        (&pki.server_cert, "sslserver", Some("localhost")),
        (&pki.client_cert, "sslclient", None),
    ] {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "20",
            "openssl",
            "verify",
            "-CAfile",
            s(&pki.ca),
            "-purpose",
            purpose,
        ]);
        if let Some(host) = host {
            cmd.args(["-verify_hostname", host]);
        }
        let out = cmd.arg(cert).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            cert.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
