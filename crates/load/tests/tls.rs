//! TLS load against the real server (in process, several models): echo load and handshake
//! cycles verify cleanly, mutual TLS works and fails cleanly, and the certificates a client
//! must refuse (expired, another host's, an unknown issuer) end the run with rustls' reason,
//! not with a hang or a count of mismatches. Two small blocking TLS servers of our own show
//! that a corrupted plaintext echo is a mismatch, and a plain server is a TLS failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use iomodels_core::rustls;
use iomodels_core::tls::pki::{self, Ca, Issued, Usage, Validity};
use iomodels_core::tls::{client_config, roots_from_pem, server_config};
use iomodels_load::{run, LoadConfig, LoadReport, TlsClient};
use iomodels_server::{Model, RunningServer, Server, ServerConfig};

/// A CA, a server certificate it signed for `127.0.0.1` and `localhost`, and a client
/// certificate it signed.
struct Pki {
    ca: Ca,
    server: Issued,
    client: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("iomodels test CA").unwrap();
        let server = ca
            .issue(
                &["127.0.0.1", "localhost"],
                Usage::Server,
                Validity::Current,
            )
            .unwrap();
        let client = ca
            .issue(&["load-client"], Usage::Client, Validity::Current)
            .unwrap();
        Pki { ca, server, client }
    }

    /// Trusts this CA, presents `identity` if given, expects the server to be `name`.
    fn client(&self, identity: Option<&Issued>, name: &str) -> TlsClient {
        let roots = roots_from_pem(self.ca.issued().cert_pem.as_bytes()).unwrap();
        let config = client_config(roots, identity.map(|i| (i.chain(), i.key()))).unwrap();
        TlsClient::new(config, name).unwrap()
    }
}

/// The server config for `cert`; with `client_ca`, client certificates are required.
fn tls_config(cert: &Issued, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let roots = client_ca.map(|ca| roots_from_pem(ca.issued().cert_pem.as_bytes()).unwrap());
    server_config(cert.chain(), cert.key(), roots).unwrap()
}

fn serve(model: Model, tls: Arc<rustls::ServerConfig>) -> RunningServer {
    assert!(
        model.is_available(),
        "model {model} is not available: {:?}",
        model.availability()
    );
    Server::bind(ServerConfig {
        model,
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: Some(2),
        tls: Some(tls),
        ..ServerConfig::default()
    })
    .expect("bind")
    .spawn()
    .expect("spawn")
}

/// Bounded by messages, a 30 s duration that is never reached and 5 s timeouts.
fn cfg(addr: SocketAddr, tls: TlsClient) -> LoadConfig {
    LoadConfig {
        connect: addr,
        conns: 8,
        size: 1000,
        depth: 2,
        duration: Duration::from_secs(30),
        messages_per_conn: Some(200),
        threads: 2,
        connect_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
        tls: Some(tls),
        handshakes: false,
        ..LoadConfig::default()
    }
}

fn load(cfg: &LoadConfig) -> LoadReport {
    let r = run(cfg).expect("run sets up");
    println!("{}\n{}", r.to_table(), r.to_json());
    r
}

/// Asserts that every connection (or first cycle) failed with a TLS error whose reason
/// contains `reason`, and that nothing was counted as anything else.
fn assert_refused(r: &LoadReport, conns: u64, reason: &str) {
    let why = r
        .tls_error
        .as_deref()
        .unwrap_or_else(|| panic!("no TLS error: {r:?}"));
    assert!(why.contains(reason), "reason {why:?} should say {reason:?}");
    assert!(!why.contains('\n'), "{why:?}");
    assert_eq!(r.tls_errors, conns, "{r:?}");
    assert_eq!(
        (r.messages, r.mismatches, r.io_errors, r.incomplete),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert!(!r.is_clean());
}

mod cases {
    use super::*;

    pub fn tls_echo_load_verifies_every_byte_and_closes_with_close_notify(model: Model) {
        let pki = Pki::new();
        let server = serve(model, tls_config(&pki.server, None));
        let r = load(&cfg(server.addr, pki.client(None, "127.0.0.1")));
        assert!(r.is_clean(), "{r:?}");
        assert!(r.tls);
        assert_eq!(r.mode, "echo");
        assert_eq!(r.messages, 8 * 200);
        assert_eq!(r.bytes, 8 * 200 * 1000);
        assert_eq!((r.mismatches, r.tls_errors, r.handshakes), (0, 0, 8));
        let l = r.latency_us.as_ref().expect("echoes came back");
        assert!(l.p50 > 0 && l.p50 <= l.p99);
        let s = server.stats.snapshot();
        // Every connection ended with our close_notify, before its TCP end of stream.
        assert_eq!((s.tls_truncated, s.tls_failures), (0, 0), "{s:?}");
        assert_eq!(s.accepted, 8, "{s:?}");
    }

    pub fn messages_larger_than_a_record_verify_through_tls(model: Model) {
        let pki = Pki::new();
        let server = serve(model, tls_config(&pki.server, None));
        let r = load(&LoadConfig {
            conns: 3,
            size: 100_001,
            depth: 3,
            messages_per_conn: Some(10),
            ..cfg(server.addr, pki.client(None, "localhost"))
        });
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.messages, 30);
        assert_eq!(r.bytes, 30 * 100_001);
    }

    pub fn handshake_cycles_complete_with_no_failures(model: Model) {
        let pki = Pki::new();
        let server = serve(model, tls_config(&pki.server, None));
        let r = load(&LoadConfig {
            conns: 4,
            size: 64,
            depth: 1,
            messages_per_conn: Some(10),
            handshakes: true,
            ..cfg(server.addr, pki.client(None, "127.0.0.1"))
        });
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.mode, "handshakes");
        assert_eq!(r.handshakes, 4 * 10, "{r:?}");
        assert_eq!((r.handshake_failures, r.tls_errors), (0, 0), "{r:?}");
        assert_eq!((r.messages, r.bytes), (40, 40 * 64), "{r:?}");
        assert!(r.handshakes_per_sec > Some(0.0), "{r:?}");
        let l = r.latency_us.as_ref().expect("cycles completed");
        assert!(l.min > 0 && l.p50 <= l.p99);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["handshakes"], 40);
        assert!(json["handshakes_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r.to_table().contains("handshakes/s"), "{}", r.to_table());
        let s = server.stats.snapshot();
        // One connection per cycle, each closed with a close_notify.
        assert_eq!(s.accepted, 40, "{s:?}");
        assert_eq!((s.tls_truncated, s.tls_failures), (0, 0), "{s:?}");
    }

    pub fn mutual_tls_works_with_a_client_certificate_and_fails_cleanly_without(model: Model) {
        let pki = Pki::new();
        let server = serve(model, tls_config(&pki.server, Some(&pki.ca)));
        let with = load(&cfg(
            server.addr,
            pki.client(Some(&pki.client), "127.0.0.1"),
        ));
        assert!(with.is_clean(), "{with:?}");
        assert_eq!(with.messages, 8 * 200);

        let without = load(&cfg(server.addr, pki.client(None, "127.0.0.1")));
        // TLS 1.3: the server's alert comes after the client's half of the handshake.
        assert_refused(&without, 8, "CertificateRequired");

        let cycles = load(&LoadConfig {
            conns: 2,
            size: 64,
            depth: 1,
            handshakes: true,
            ..cfg(server.addr, pki.client(None, "127.0.0.1"))
        });
        // Each slot stops at its first failed cycle.
        assert_refused(&cycles, 2, "CertificateRequired");
        assert_eq!((cycles.handshakes, cycles.handshake_failures), (0, 2));
    }

    pub fn an_expired_server_certificate_ends_the_run_with_the_reason(model: Model) {
        let pki = Pki::new();
        let expired = pki
            .ca
            .issue(&["127.0.0.1"], Usage::Server, Validity::Expired)
            .unwrap();
        let server = serve(model, tls_config(&expired, None));
        let r = load(&cfg(server.addr, pki.client(None, "127.0.0.1")));
        assert_refused(&r, 8, "invalid peer certificate: certificate expired");
        assert_eq!(r.conns_established, 0);
        let cycles = load(&LoadConfig {
            conns: 3,
            size: 64,
            depth: 1,
            handshakes: true,
            ..cfg(server.addr, pki.client(None, "127.0.0.1"))
        });
        assert_refused(&cycles, 3, "invalid peer certificate: certificate expired");
    }

    pub fn a_certificate_for_another_host_ends_the_run_with_the_reason(model: Model) {
        let pki = Pki::new();
        let server = serve(model, tls_config(&pki.server, None));
        let r = load(&cfg(server.addr, pki.client(None, "db.example.com")));
        assert_refused(&r, 8, "certificate not valid for name");
    }

    pub fn a_certificate_from_an_unknown_issuer_ends_the_run_with_the_reason(model: Model) {
        let pki = Pki::new();
        let stranger = pki::self_signed(&["127.0.0.1"]).unwrap();
        let server = serve(model, tls_config(&stranger, None));
        let r = load(&cfg(server.addr, pki.client(None, "127.0.0.1")));
        assert_refused(&r, 8, "UnknownIssuer");
    }
}

macro_rules! tls_suite {
    ($($name:ident => $model:expr;)*) => {
        $(
            mod $name {
                use super::*;
                const MODEL: Model = $model;
                #[test] fn tls_echo_load_verifies_every_byte_and_closes_with_close_notify() {
                    cases::tls_echo_load_verifies_every_byte_and_closes_with_close_notify(MODEL)
                }
                #[test] fn messages_larger_than_a_record_verify_through_tls() {
                    cases::messages_larger_than_a_record_verify_through_tls(MODEL)
                }
                #[test] fn handshake_cycles_complete_with_no_failures() {
                    cases::handshake_cycles_complete_with_no_failures(MODEL)
                }
                #[test] fn mutual_tls_works_with_a_client_certificate_and_fails_cleanly_without() {
                    cases::mutual_tls_works_with_a_client_certificate_and_fails_cleanly_without(MODEL)
                }
                #[test] fn an_expired_server_certificate_ends_the_run_with_the_reason() {
                    cases::an_expired_server_certificate_ends_the_run_with_the_reason(MODEL)
                }
                #[test] fn a_certificate_for_another_host_ends_the_run_with_the_reason() {
                    cases::a_certificate_for_another_host_ends_the_run_with_the_reason(MODEL)
                }
                #[test] fn a_certificate_from_an_unknown_issuer_ends_the_run_with_the_reason() {
                    cases::a_certificate_from_an_unknown_issuer_ends_the_run_with_the_reason(MODEL)
                }
            }
        )*
    };
}

tls_suite! {
    event_select => Model::EventSelect;
    completion_port => Model::CompletionPort;
    select => Model::Select;
    blocking => Model::Blocking;
}

/// A blocking TLS server of our own that serves `connections` clients one by one, echoing
/// the plaintext with the byte at stream offset `flip_at` (if any) flipped.
fn corrupting_tls_server(pki: &Pki, connections: usize, flip_at: Option<u64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls_config(&pki.server, None);
    thread::spawn(move || {
        for _ in 0..connections {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            thread::spawn(move || {
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let mut buf = [0u8; 4096];
                let mut offset = 0u64;
                loop {
                    let n = match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(at) = flip_at {
                        if (offset..offset + n as u64).contains(&at) {
                            buf[(at - offset) as usize] ^= 0x20;
                        }
                    }
                    offset += n as u64;
                    if tls.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

#[test]
fn a_corrupted_plaintext_echo_is_a_mismatch_not_a_tls_error() {
    let pki = Pki::new();
    let addr = corrupting_tls_server(&pki, 3, Some(1000));
    let r = load(&LoadConfig {
        conns: 3,
        size: 64,
        depth: 1,
        messages_per_conn: Some(100),
        ..cfg(addr, pki.client(None, "127.0.0.1"))
    });
    assert_eq!(r.mismatches, 3, "{r:?}");
    assert_eq!((r.tls_errors, r.io_errors), (0, 0), "{r:?}");
    // Each connection stops at the message holding byte 1000.
    assert_eq!(r.messages, 3 * (1000 / 64), "{r:?}");
}

#[test]
fn our_own_tls_echo_server_verifies_clean_so_the_mismatch_test_means_something() {
    let pki = Pki::new();
    let addr = corrupting_tls_server(&pki, 2, None);
    let r = load(&LoadConfig {
        conns: 2,
        messages_per_conn: Some(50),
        ..cfg(addr, pki.client(None, "127.0.0.1"))
    });
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.messages, 100);
}

#[test]
fn tls_to_a_plain_echo_server_is_a_tls_failure_not_a_mismatch() {
    let pki = Pki::new();
    let server = Server::bind(ServerConfig {
        model: Model::EventSelect,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let r = load(&LoadConfig {
        conns: 2,
        ..cfg(server.addr, pki.client(None, "127.0.0.1"))
    });
    assert_eq!(r.tls_errors, 2, "{r:?}");
    assert_eq!((r.messages, r.mismatches), (0, 0), "{r:?}");
    assert!(r.tls_error.is_some(), "{r:?}");
}

#[test]
fn handshakes_need_tls_and_depth_one() {
    let pki = Pki::new();
    let plain = LoadConfig {
        handshakes: true,
        ..LoadConfig::default()
    };
    assert_eq!(
        plain.validate(),
        Err("--handshakes measures TLS handshakes: add --tls --tls-ca FILE".to_string())
    );
    let deep = LoadConfig {
        handshakes: true,
        depth: 2,
        tls: Some(pki.client(None, "127.0.0.1")),
        ..LoadConfig::default()
    };
    let e = deep.validate().unwrap_err();
    assert!(
        e.starts_with("--handshakes") && e.contains("--depth"),
        "{e}"
    );
    assert!(TlsClient::new(Arc::clone(&pki.client(None, "x").config), "not a name!").is_err());
}

#[test]
fn the_report_names_tls_in_table_and_json() {
    let pki = Pki::new();
    let server = serve(Model::EventSelect, tls_config(&pki.server, None));
    let r = load(&LoadConfig {
        conns: 1,
        messages_per_conn: Some(10),
        ..cfg(server.addr, pki.client(None, "127.0.0.1"))
    });
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["tls"], true);
    assert_eq!(v["mode"], "echo");
    assert_eq!(v["tls_errors"], 0);
    assert!(v["tls_error"].is_null());
    assert_eq!(v["handshakes"], 1);
    let table = r.to_table();
    assert!(
        table.contains("(TLS)") && table.contains("tls 0"),
        "{table}"
    );
}
