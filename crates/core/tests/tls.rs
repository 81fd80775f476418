//! The TLS layer of `Connection`, driven in memory against a rustls client: no sockets.

use iomodels_core::rustls::{self, ClientConfig, ClientConnection, RootCertStore};
use iomodels_core::tls::pki::{self, Usage, Validity};
use iomodels_core::tls::{provider, server_config, MAX_RECORD_WIRE_LEN};
use iomodels_core::{Connection, Limits, ServiceKind};
use iomodels_testkit::Rng;
use proptest::prelude::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, OnceLock};

/// A CA, a server certificate for "localhost" and a client certificate, both signed by the CA,
/// and a client certificate from a CA the server does not know.
struct Pki {
    ca: pki::Ca,
    server: pki::Issued,
    client: pki::Issued,
    stranger: pki::Issued,
}

fn test_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = pki::Ca::new("iomodels test CA").unwrap();
        let other = pki::Ca::new("some other CA").unwrap();
        Pki {
            server: ca
                .issue(&["localhost"], Usage::Server, Validity::Current)
                .unwrap(),
            client: ca
                .issue(&["client"], Usage::Client, Validity::Current)
                .unwrap(),
            stranger: other
                .issue(&["stranger"], Usage::Client, Validity::Current)
                .unwrap(),
            ca,
        }
    })
}

fn roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(test_pki().ca.issued().cert.clone()).unwrap();
    roots
}

fn server_cfg(mtls: bool) -> Arc<rustls::ServerConfig> {
    let p = test_pki();
    server_config(p.server.chain(), p.server.key(), mtls.then(roots)).unwrap()
}

#[derive(Clone, Copy)]
enum ClientAuth {
    None,
    Good,
    Stranger,
}

fn client_cfg(
    version: &'static rustls::SupportedProtocolVersion,
    auth: ClientAuth,
) -> ClientConfig {
    let p = test_pki();
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots());
    match auth {
        ClientAuth::None => b.with_no_client_auth(),
        ClientAuth::Good => b
            .with_client_auth_cert(p.client.chain(), p.client.key())
            .unwrap(),
        ClientAuth::Stranger => b
            .with_client_auth_cert(p.stranger.chain(), p.stranger.key())
            .unwrap(),
    }
}

fn client(
    version: &'static rustls::SupportedProtocolVersion,
    auth: ClientAuth,
) -> ClientConnection {
    ClientConnection::new(
        Arc::new(client_cfg(version, auth)),
        "localhost".try_into().unwrap(),
    )
    .unwrap()
}

/// How the "model" sends the server's output.
#[derive(Clone, Copy, PartialEq)]
enum SendMode {
    /// Readiness: `pending_output` + `on_sent`, a random part each time.
    Readiness,
    /// Completion: `take_output` + `on_send_complete`, a random part at a time.
    Completion,
}

/// A rustls client and a TLS `Connection` joined in memory.
struct Pair {
    client: ClientConnection,
    server: Connection,
    /// Client ciphertext the server has not read yet (its read budget may be 0).
    c2s: Vec<u8>,
    /// Server ciphertext taken for a completion send and not yet delivered.
    in_flight: Vec<u8>,
    /// Plaintext the client received.
    received: Vec<u8>,
    rng: Rng,
    mode: SendMode,
    /// Largest chunk moved per step, each way.
    max_chunk: usize,
    /// The most output the server held unsent at any point.
    max_pending: usize,
    client_error: Option<rustls::Error>,
    /// The client read a clean end (close_notify) from its reader.
    client_saw_close: bool,
    /// The server shut its write side: the client's transport saw EOF.
    client_saw_eof: bool,
}

impl Pair {
    fn new(
        client: ClientConnection,
        server_cfg: Arc<rustls::ServerConfig>,
        limits: Limits,
        seed: u64,
    ) -> Pair {
        Pair {
            client,
            server: Connection::with_tls(ServiceKind::Echo, limits, server_cfg).unwrap(),
            c2s: Vec::new(),
            in_flight: Vec::new(),
            received: Vec::new(),
            rng: Rng(seed | 1),
            mode: SendMode::Readiness,
            max_chunk: 20_000,
            max_pending: 0,
            client_error: None,
            client_saw_close: false,
            client_saw_eof: false,
        }
    }

    /// Moves client records to the server, within its read budget, in random chunks.
    fn client_to_server(&mut self) {
        while self.client.wants_write() {
            self.client.write_tls(&mut self.c2s).unwrap();
        }
        loop {
            let budget = self.server.read_budget();
            if budget == 0 || self.c2s.is_empty() {
                break;
            }
            let n = self
                .rng
                .size(self.max_chunk)
                .min(budget)
                .min(self.c2s.len());
            let chunk: Vec<u8> = self.c2s.drain(..n).collect();
            self.server.on_received(&chunk);
            self.max_pending = self.max_pending.max(self.server.pending_len());
        }
    }

    /// Sends (part of) the server's output to the client, if `client_reads`.
    fn server_to_client(&mut self, client_reads: bool) {
        if !client_reads {
            return;
        }
        let mut delivered = Vec::new();
        match self.mode {
            SendMode::Readiness => {
                let pending = self.server.pending_output();
                if !pending.is_empty() {
                    let n = self.rng.size(self.max_chunk).min(pending.len());
                    delivered.extend_from_slice(&pending[..n]);
                    self.server.on_sent(n);
                }
            }
            SendMode::Completion => {
                if self.in_flight.is_empty() && self.server.wants_write() {
                    self.in_flight = self.server.take_output(Vec::new());
                }
                if !self.in_flight.is_empty() {
                    let n = self.rng.size(self.max_chunk).min(self.in_flight.len());
                    delivered.extend(self.in_flight.drain(..n));
                    self.server.on_send_complete(n);
                }
            }
        }
        if self.server.should_shutdown_write() {
            self.server.on_write_shutdown();
        }
        self.feed_client(&delivered);
        if self.server.is_finished() && !self.client_saw_eof && self.server.pending_len() == 0 {
            self.client_saw_eof = true;
            // The transport's EOF, as a socket read returning 0 would give it.
            let _ = self.client.read_tls(&mut &[][..]);
            self.client_process();
        }
    }

    fn feed_client(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.client_error.is_none() {
            match self.client.read_tls(&mut data) {
                Ok(_) => self.client_process(),
                Err(e) => panic!("client read_tls: {e}"),
            }
        }
    }

    fn client_process(&mut self) {
        if self.client_error.is_some() {
            return;
        }
        if let Err(e) = self.client.process_new_packets() {
            self.client_error = Some(e);
            return;
        }
        let mut buf = [0u8; 16384];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => {
                    self.client_saw_close = true;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }

    fn step(&mut self, client_reads: bool) {
        self.client_to_server();
        self.server_to_client(client_reads);
    }

    /// Steps until the handshake is done both ways.
    fn handshake(&mut self) {
        for _ in 0..1000 {
            if !self.client.is_handshaking() && self.server.tls_handshake_complete() {
                return;
            }
            self.step(true);
            assert!(self.client_error.is_none(), "{:?}", self.client_error);
            assert_eq!(self.server.tls_error(), None);
        }
        panic!("handshake did not complete");
    }

    /// Sends `data` from the client in random chunks and steps until it all came back.
    fn echo(&mut self, data: &[u8]) {
        let start = self.received.len();
        let mut sent = 0;
        let mut steps = 0;
        while self.received.len() < start + data.len() {
            if sent < data.len() {
                let n = self.rng.size(self.max_chunk).min(data.len() - sent);
                sent += self.client.writer().write(&data[sent..sent + n]).unwrap();
            }
            self.step(true);
            assert!(self.client_error.is_none(), "{:?}", self.client_error);
            assert_eq!(self.server.tls_error(), None);
            steps += 1;
            assert!(steps < 1_000_000, "echo stalled");
        }
        assert!(self.received[start..] == *data, "echo differs");
    }

    /// Steps until the server is finished and its output delivered.
    fn run_to_close(&mut self) {
        for _ in 0..100_000 {
            if self.server.is_finished() && self.client_saw_eof {
                return;
            }
            self.step(true);
        }
        panic!("connection did not close: {:?}", self.server);
    }
}

fn echo_both_ways(version: &'static rustls::SupportedProtocolVersion, mode: SendMode, seed: u64) {
    let mut p = Pair::new(
        client(version, ClientAuth::None),
        server_cfg(false),
        Limits::with_high_water(64 * 1024),
        seed,
    );
    p.mode = mode;
    p.handshake();
    let data = Rng(seed ^ 0xdead_beef).bytes(1 << 20);
    p.echo(&data);
    assert_eq!(
        p.server.tls_session().unwrap().protocol_version(),
        Some(version.version)
    );
    p.client.send_close_notify();
    p.run_to_close();
    assert!(p.client_saw_close, "client saw the server's close_notify");
    assert!(p.server.tls_close_notify_received());
    assert!(!p.server.tls_truncated());
    assert_eq!(p.server.tls_error(), None);
    assert!(p.client_error.is_none());
}

#[test]
fn tls13_echoes_one_mib_in_random_chunks_readiness() {
    echo_both_ways(&rustls::version::TLS13, SendMode::Readiness, 1);
}

#[test]
fn tls13_echoes_one_mib_in_random_chunks_completion() {
    echo_both_ways(&rustls::version::TLS13, SendMode::Completion, 2);
}

#[test]
fn tls12_echoes_one_mib_in_random_chunks_readiness() {
    echo_both_ways(&rustls::version::TLS12, SendMode::Readiness, 3);
}

#[test]
fn tls12_echoes_one_mib_in_random_chunks_completion() {
    echo_both_ways(&rustls::version::TLS12, SendMode::Completion, 4);
}

#[test]
fn plaintext_connection_reports_no_tls() {
    let c = Connection::new(ServiceKind::Echo, Limits::default());
    assert!(!c.is_tls());
    assert!(c.tls_session().is_none());
    assert_eq!(c.tls_error(), None);
    assert!(!c.tls_truncated());
    assert!(!c.tls_handshake_complete());
}

#[test]
fn peer_close_notify_gets_close_notify_then_eof() {
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::default(),
        5,
    );
    p.handshake();
    p.echo(b"hello");
    p.client.send_close_notify();
    p.client_to_server();
    assert!(p.server.tls_close_notify_received());
    assert_eq!(
        p.server.read_budget(),
        0,
        "input is over after close_notify"
    );
    assert!(p.server.wants_write(), "our close_notify is queued");
    assert!(!p.server.should_shutdown_write(), "not before it is sent");
    p.run_to_close();
    assert!(p.client_saw_close);
    assert!(p.client_saw_eof);
    assert!(!p.server.tls_truncated());
}

#[test]
fn eof_without_close_notify_is_truncation_and_owed_echo_comes_first() {
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::default(),
        6,
    );
    p.handshake();
    p.client.writer().write_all(b"owed bytes").unwrap();
    p.client_to_server();
    p.server.on_peer_eof();
    assert!(p.server.tls_truncated());
    assert_eq!(p.server.tls_error(), None);
    p.run_to_close();
    assert_eq!(p.received, b"owed bytes");
    assert!(
        p.client_saw_close,
        "the server still ends with close_notify"
    );
}

#[test]
fn handshake_cut_short_is_truncation() {
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::default(),
        7,
    );
    while p.client.wants_write() {
        p.client.write_tls(&mut p.c2s).unwrap();
    }
    let half = p.c2s.len() / 2;
    p.server.on_received(&p.c2s[..half]);
    p.server.on_peer_eof();
    assert!(p.server.tls_truncated());
    assert!(p.server.should_shutdown_write());
    p.server.on_write_shutdown();
    assert!(p.server.is_finished());
}

#[test]
fn eof_with_no_bytes_is_not_truncation() {
    let mut c =
        Connection::with_tls(ServiceKind::Echo, Limits::default(), server_cfg(false)).unwrap();
    c.on_peer_eof();
    assert!(!c.tls_truncated());
    assert!(c.should_shutdown_write());
}

/// Feeds `input` to a fresh TLS connection and checks it fails with an alert and finishes.
fn rejects(input: &[u8]) -> String {
    let mut c =
        Connection::with_tls(ServiceKind::Echo, Limits::default(), server_cfg(false)).unwrap();
    c.on_received(input);
    let err = c.tls_error().expect("a TLS error").to_string();
    assert_eq!(c.read_budget(), 0);
    let alert = c.pending_output().to_vec();
    assert!(!alert.is_empty(), "an alert is sent");
    assert_eq!(alert[0], 21, "content type alert");
    let n = c.pending_len();
    c.on_sent(n);
    assert!(c.should_shutdown_write());
    c.on_write_shutdown();
    assert!(c.is_finished());
    err
}

#[test]
fn plaintext_http_gets_an_alert_and_an_error() {
    let err = rejects(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(!err.is_empty());
}

#[test]
fn garbage_gets_an_alert_and_an_error() {
    rejects(&Rng(99).bytes(4096));
    // A plausible record header with a nonsense handshake body.
    rejects(&[22, 3, 1, 0, 8, 1, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn garbage_after_handshake_fails_the_session() {
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::default(),
        8,
    );
    p.handshake();
    p.server.on_received(&[23, 3, 3, 0, 40]);
    p.server.on_received(&[0x55; 40]);
    assert!(p.server.tls_error().is_some());
    assert_eq!(p.server.read_budget(), 0);
    p.run_to_close();
    assert!(p.client_error.is_some(), "the client got the alert");
}

#[test]
fn a_client_that_never_reads_holds_server_output_near_high_water() {
    for (version, hw) in [
        (&rustls::version::TLS13, 64 * 1024),
        (&rustls::version::TLS12, 64 * 1024),
        (&rustls::version::TLS13, 1000),
        (&rustls::version::TLS13, 1),
    ] {
        let limits = Limits::with_high_water(hw);
        let mut p = Pair::new(
            client(version, ClientAuth::None),
            server_cfg(false),
            limits,
            9,
        );
        p.handshake();
        let start_pending = p.server.pending_len();
        let data = Rng(10).bytes(1 << 20);
        let mut sent = 0;
        for _ in 0..2000 {
            if sent < data.len() {
                let n = 8192.min(data.len() - sent);
                sent += p.client.writer().write(&data[sent..sent + n]).unwrap();
            }
            p.step(false);
            assert!(
                p.server.pending_len() <= start_pending.max(hw) + MAX_RECORD_WIRE_LEN,
                "pending {} above {hw} + one record",
                p.server.pending_len()
            );
        }
        assert_eq!(p.server.read_budget(), 0, "reading stopped");
        assert!(p.server.is_backpressured());
        assert!(!p.c2s.is_empty(), "the client's bytes wait");
        // Once the client reads, everything comes back.
        p.echo(&[]);
        while p.received.len() < sent {
            p.step(true);
        }
        assert!(p.received[..] == data[..sent]);
    }
}

#[test]
fn mutual_tls_accepts_a_client_certificate_from_the_ca() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut p = Pair::new(
            client(version, ClientAuth::Good),
            server_cfg(true),
            Limits::default(),
            11,
        );
        p.handshake();
        let certs = p.server.tls_session().unwrap().peer_certificates().unwrap();
        assert_eq!(certs[0], test_pki().client.cert);
        p.echo(b"authenticated");
        p.client.send_close_notify();
        p.run_to_close();
        assert!(p.client_saw_close);
    }
}

fn mtls_rejects(version: &'static rustls::SupportedProtocolVersion, auth: ClientAuth) {
    let mut p = Pair::new(
        client(version, auth),
        server_cfg(true),
        Limits::default(),
        12,
    );
    for _ in 0..100 {
        p.step(true);
        if p.server.is_finished() {
            break;
        }
    }
    let err = p
        .server
        .tls_error()
        .expect("the server failed the handshake");
    assert!(p.server.is_finished(), "alert sent, connection over: {err}");
    p.run_to_close();
    assert!(p.client_error.is_some(), "the client got an alert");
}

#[test]
fn mutual_tls_rejects_a_client_without_a_certificate() {
    mtls_rejects(&rustls::version::TLS13, ClientAuth::None);
    mtls_rejects(&rustls::version::TLS12, ClientAuth::None);
}

#[test]
fn mutual_tls_rejects_a_certificate_from_another_ca() {
    mtls_rejects(&rustls::version::TLS13, ClientAuth::Stranger);
    mtls_rejects(&rustls::version::TLS12, ClientAuth::Stranger);
}

#[test]
fn a_session_fed_byte_by_byte_echoes() {
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::with_high_water(4096),
        13,
    );
    p.max_chunk = 1;
    p.handshake();
    p.echo(&Rng(14).bytes(3000));
}

/// A recorded client transcript: a real ClientHello and what follows, for mutation.
fn client_hello() -> Vec<u8> {
    let mut c = client(&rustls::version::TLS13, ClientAuth::None);
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// A live session in random chunk sizes (from 1 byte) both ways, either send mode.
    #[test]
    fn random_chunkings_of_a_live_session_echo(seed in 1u64.., max_chunk in 1usize..600, completion: bool) {
        let mut p = Pair::new(
            client(&rustls::version::TLS13, ClientAuth::None),
            server_cfg(false),
            Limits::with_high_water(2048),
            seed,
        );
        p.max_chunk = max_chunk;
        p.mode = if completion { SendMode::Completion } else { SendMode::Readiness };
        p.handshake();
        p.echo(&Rng(seed).bytes(5000));
        p.client.send_close_notify();
        p.run_to_close();
        prop_assert!(p.client_saw_close);
    }

    /// Arbitrary bytes in arbitrary chunks, after nothing or after a real ClientHello (possibly
    /// mutated): never a panic, and the connection always gets to finished.
    #[test]
    fn arbitrary_input_never_panics(
        prefix in any::<bool>(),
        flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..)),
        garbage in proptest::collection::vec(any::<u8>(), 0..3000),
        chunks in proptest::collection::vec(1usize..300, 1..20),
        eof in any::<bool>(),
    ) {
        let mut input = if prefix { client_hello() } else { Vec::new() };
        if let (Some((i, x)), false) = (flip, input.is_empty()) {
            let i = i.index(input.len());
            input[i] ^= x;
        }
        input.extend_from_slice(&garbage);
        let mut c = Connection::with_tls(ServiceKind::Echo, Limits::with_high_water(1024), server_cfg(false)).unwrap();
        let mut at = 0;
        let mut k = 0;
        while at < input.len() && c.read_budget() > 0 {
            let n = chunks[k % chunks.len()].min(input.len() - at).min(c.read_budget());
            c.on_received(&input[at..at + n]);
            at += n;
            k += 1;
            let n = c.pending_len();
            c.on_sent(n);
        }
        if eof && !c.peer_eof() {
            c.on_peer_eof();
        }
        if c.tls_error().is_some() || c.tls_close_notify_received() || c.peer_eof() {
            let n = c.pending_len();
            c.on_sent(n);
            prop_assert!(c.should_shutdown_write());
            c.on_write_shutdown();
            prop_assert!(c.is_finished());
        }
    }
}

/// A client that trusts the test CA, against a server presenting `server`: the client's
/// handshake error, once it fails, and what the server made of the alert it got.
fn client_refuses(server: &pki::Issued, name: &str) -> (rustls::Error, Option<String>) {
    let cfg = server_config(server.chain(), server.key(), None).unwrap();
    let mut p = Pair::new(
        ClientConnection::new(
            Arc::new(client_cfg(&rustls::version::TLS13, ClientAuth::None)),
            name.to_string().try_into().unwrap(),
        )
        .unwrap(),
        cfg,
        Limits::with_high_water(64 * 1024),
        5,
    );
    for _ in 0..1000 {
        if let Some(e) = p.client_error.clone() {
            // The client's alert reaches the server.
            p.client_to_server();
            return (e, p.server.tls_error().map(str::to_string));
        }
        p.step(true);
    }
    panic!("the client accepted the certificate");
}

#[test]
fn a_client_refuses_an_expired_server_certificate_and_the_server_hears_why() {
    let ca = &test_pki().ca;
    let expired = ca
        .issue(&["localhost"], Usage::Server, Validity::Expired)
        .unwrap();
    let (client, server) = client_refuses(&expired, "localhost");
    assert!(
        matches!(
            client,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ExpiredContext { .. }
                )
        ),
        "{client:?}"
    );
    let server = server.expect("the server saw the client's alert as an error");
    assert!(server.contains("alert"), "{server}");
}

#[test]
fn a_client_refuses_a_certificate_for_another_host() {
    let ca = &test_pki().ca;
    let other = ca
        .issue(&["example.org"], Usage::Server, Validity::Current)
        .unwrap();
    let (client, _) = client_refuses(&other, "localhost");
    assert!(
        matches!(
            client,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
        ),
        "{client:?}"
    );
}

#[test]
fn pem_helpers_read_what_pki_writes_and_say_what_is_missing() {
    use iomodels_core::tls::{certs_from_pem, fingerprint, key_from_pem, roots_from_pem};
    let p = test_pki();
    let chain = format!("{}{}", p.server.cert_pem, p.ca.issued().cert_pem);
    let certs = certs_from_pem(chain.as_bytes()).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0], p.server.cert);
    assert!(key_from_pem(p.server.key_pem.as_bytes()).is_ok());
    assert_eq!(roots_from_pem(chain.as_bytes()).unwrap().len(), 2);
    // A key file given as the certificate, and the other way round.
    let e = certs_from_pem(p.server.key_pem.as_bytes()).unwrap_err();
    assert!(e.contains("no CERTIFICATE"), "{e}");
    let e = key_from_pem(p.server.cert_pem.as_bytes()).unwrap_err();
    assert!(e.contains("no PRIVATE KEY"), "{e}");
    assert!(certs_from_pem(b"").is_err());
    // 32 bytes as colon-separated upper-case hex, distinct per certificate.
    let f = fingerprint(&p.server.cert);
    assert_eq!(f.len(), 32 * 3 - 1);
    assert!(f
        .chars()
        .all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_ne!(f, fingerprint(&p.client.cert));
}

#[test]
fn close_notify_now_says_goodbye_once_after_the_handshake_and_never_on_plaintext() {
    let mut plain = Connection::new(ServiceKind::Echo, Limits::default());
    assert!(!plain.close_notify_now());
    let mut p = Pair::new(
        client(&rustls::version::TLS13, ClientAuth::None),
        server_cfg(false),
        Limits::with_high_water(64 * 1024),
        9,
    );
    p.handshake();
    p.echo(b"before the close");
    assert!(p.server.close_notify_now());
    assert!(p.server.wants_write(), "the close_notify is queued");
    assert!(!p.server.close_notify_now(), "said once");
    // The client reads the server's close_notify: a clean close, no error.
    p.step(true);
    p.step(true);
    assert!(p.client_saw_close, "the client saw no close_notify");
    assert!(p.client_error.is_none(), "{:?}", p.client_error);
}
