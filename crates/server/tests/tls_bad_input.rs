//! Bad input on the TLS port, for every available model: plaintext, garbage records, a
//! handshake cut short (closed, or held open), clients the server must refuse (no certificate,
//! a certificate from an unknown CA) and clients that refuse the server (an expired
//! certificate, one for another host).
//!
//! Each case runs one offending connection (or a few) against a server that is serving a good
//! client at the same time (the bystander, echoing all along), and checks that:
//! * the offender gets an alert and/or the end of its stream (or a reset), never its bytes
//!   echoed back as plaintext, and a client-side error says why;
//! * the server counts what it saw: a TLS failure per connection that ended on a TLS error
//!   (the alert it sent or received), a truncation per end of stream without `close_notify`,
//!   no I/O error, and the connection is gone;
//! * the bystander was served throughout, a new good client is served afterwards, and no
//!   server thread panicked.

mod common;

use common::Variant;

use common::{
    client_hello, client_in_2001, client_tls, connect, finish_raw, good_client, is_reset,
    read_raw_to_end, records, rustls_error, server_tls, server_tls_with, tls_clients, tls_ping_as,
    wait_for, Bystander, Identity, Rng, TlsClient, BOTH, CLIENT_TIMEOUT, TLS12, TLS13,
};
use iomodels_core::rustls::{self, AlertDescription, CertificateError, ClientConfig};
use iomodels_server::RunningServer;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long the server may take to end and count the offending connection (generous: Wine is
/// slow, and nothing here depends on it being quick).
const SETTLE: Duration = Duration::from_secs(30);

/// A good client as the server under test must serve it: its configuration and the name it
/// expects the server to have.
#[derive(Clone)]
struct Good {
    config: Arc<ClientConfig>,
    name: &'static str,
}

impl Good {
    fn usual() -> Good {
        Good {
            config: good_client(),
            name: "localhost",
        }
    }
}

/// What the server must have counted for the bad input of a case.
#[derive(Debug, Clone, Copy)]
struct Expect {
    tls_failures: u64,
    tls_truncated: u64,
    tls_handshake_timeouts: u64,
}

/// Connections that ended on a TLS error, nothing else.
const fn failures(n: u64) -> Expect {
    Expect {
        tls_failures: n,
        tls_truncated: 0,
        tls_handshake_timeouts: 0,
    }
}

/// One connection closed at the handshake deadline, nothing else.
const HANDSHAKE_TIMED_OUT: Expect = Expect {
    tls_failures: 0,
    tls_truncated: 0,
    tls_handshake_timeouts: 1,
};

/// The handshake deadline of the cases that test it (the others keep the default, 10 s).
const DEADLINE: Duration = Duration::from_secs(1);

/// Starts the variant with `tls`, runs `bad` against it beside a [`Bystander`] (both as
/// `good`), and checks what the server counted, that it serves a new good client afterwards,
/// and that it stops cleanly with no thread panicked.
fn run_case(
    v: Variant,
    tls: Arc<rustls::ServerConfig>,
    good: Good,
    expect: Expect,
    bad: impl FnOnce(SocketAddr),
) {
    run_case_with(v, tls, |_| {}, good, expect, bad)
}

/// [`run_case`], with `tweak` applied to the server's configuration.
/// [`run_case_with`] against a server with the test's handshake deadline ([`DEADLINE`]),
/// expecting the bad client's connection to be closed at it.
fn past_the_handshake_deadline(v: Variant, bad: impl FnOnce(SocketAddr)) {
    let deadline = |c: &mut iomodels_server::ServerConfig| c.handshake_timeout = Some(DEADLINE);
    run_case_with(
        v,
        server_tls(false),
        deadline,
        Good::usual(),
        HANDSHAKE_TIMED_OUT,
        bad,
    );
}

fn run_case_with(
    v: Variant,
    tls: Arc<rustls::ServerConfig>,
    tweak: impl FnOnce(&mut iomodels_server::ServerConfig),
    good: Good,
    expect: Expect,
    bad: impl FnOnce(SocketAddr),
) {
    common::watch_server_panics();
    let server = common::start(v.model, |c| {
        (v.configure)(c);
        c.tls = Some(tls);
        tweak(c);
    });
    let bystander = Bystander::start(server.addr, Arc::clone(&good.config), good.name);
    bad(server.addr);
    let st = settle(&server, 1, expect);
    // A new client while the bystander still runs, then the bystander's end.
    tls_ping_as(
        server.addr,
        Arc::clone(&good.config),
        good.name,
        b"served after the bad input",
    );
    bystander.finish();
    let end = settle(&server, 0, expect);
    assert_eq!(end.accepted, st.accepted + 1, "{end:?}");
    server.stop().expect("the server stops cleanly");
    common::assert_no_server_panic();
}

/// Waits until `open` connections are left and `expect` was counted; checks that nothing more
/// was counted and no connection ended on an I/O error.
fn settle(server: &RunningServer, open: i64, expect: Expect) -> iomodels_server::StatsSnapshot {
    let st = wait_for(
        server,
        SETTLE,
        "the bad connections to end and be counted",
        |s| {
            s.active == open
                && s.tls_failures >= expect.tls_failures
                && s.tls_truncated >= expect.tls_truncated
                && s.tls_handshake_timeouts >= expect.tls_handshake_timeouts
        },
    );
    assert_eq!(
        st.tls_handshake_timeouts, expect.tls_handshake_timeouts,
        "handshake timeouts: {st:?}"
    );
    assert_eq!(st.tls_failures, expect.tls_failures, "TLS failures: {st:?}");
    assert_eq!(
        st.tls_truncated, expect.tls_truncated,
        "truncations: {st:?}"
    );
    assert_eq!(st.errors, 0, "I/O errors: {st:?}");
    st
}

/// Sends `bytes` on a raw connection and checks the answer: only alert records (perhaps none)
/// and then the end of the stream or a reset, never `bytes` back.
fn refused_raw(addr: SocketAddr, bytes: &[u8]) {
    let mut s = connect(addr);
    s.write_all(bytes).expect("send the bad bytes");
    let (got, end) = read_raw_to_end(&s);
    let alerts = check_only_alerts(&got, bytes);
    match end {
        // A clean end of stream: nothing was lost on the way, so the alert the server sent
        // before closing must be there.
        Ok(()) => assert_eq!(alerts, 1, "closed without exactly one alert: {got:02x?}"),
        // A reset (the server closed with bytes unread) may overtake the alert.
        Err(e) => assert!(
            is_reset(&e),
            "the server neither closed nor reset the connection: {e} (after {got:02x?})"
        ),
    }
}

/// `got` (what came back on the wire) is a series of fatal alert records, none of them
/// `sent`; returns how many.
fn check_only_alerts(got: &[u8], sent: &[u8]) -> usize {
    assert!(
        sent.len() < 4 || !got.windows(sent.len()).any(|w| w == sent),
        "the bad bytes came back as they were sent"
    );
    let recs = records(got).unwrap_or_else(|e| panic!("not TLS records ({e}): {got:02x?}"));
    for (kind, body) in &recs {
        assert_eq!(*kind, 0x15, "a record other than an alert: {got:02x?}");
        assert_eq!(
            body.len(),
            2,
            "an alert of {} bytes: {got:02x?}",
            body.len()
        );
        assert_eq!(body[0], 2, "a warning, not a fatal alert: {got:02x?}");
    }
    recs.len()
}

/// The client's attempt (handshake, then a read of one byte) must fail with a TLS error; the
/// error is returned. The socket is then shut and read to its end, so that closing it is not
/// a reset (which could beat the client's alert to the server).
fn refused_tls(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> io::Error {
    let mut client = TlsClient::start(addr, config, server_name).expect("connect");
    let attempt = client.handshake().and_then(|()| {
        let mut byte = [0u8; 1];
        client.read(&mut byte)
    });
    let e = match attempt {
        Ok(n) => panic!("a client that should be refused read {n} bytes"),
        Err(e) => e,
    };
    assert!(
        rustls_error(&e).is_some(),
        "the attempt failed, but not on a TLS error: {e}"
    );
    let _ = finish_raw(client.sock().try_clone().unwrap());
    e
}

fn alert_received(e: &io::Error) -> Option<AlertDescription> {
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(a)) => Some(*a),
        _ => None,
    }
}

mod cases {
    use super::*;

    pub fn plaintext_is_refused(v: Variant) {
        run_case(v, server_tls(false), Good::usual(), failures(1), |addr| {
            refused_raw(addr, b"GET / HTTP/1.0\r\n\r\n");
        });
    }

    /// 4 KiB of random bytes (the first one made an invalid record type, so that the server
    /// cannot take them for the start of a long record and wait for the rest).
    pub fn random_bytes_are_refused(v: Variant) {
        let mut garbage = Rng::seeded(11).bytes(4096);
        garbage[0] = 0xff;
        run_case(v, server_tls(false), Good::usual(), failures(1), |addr| {
            refused_raw(addr, &garbage);
        });
    }

    /// Well-formed record headers with bogus contents: a complete handshake message that is
    /// no ClientHello one can parse, and a record longer than any TLS allows.
    pub fn records_with_bogus_bodies_are_refused(v: Variant) {
        let mut hello = vec![0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc];
        hello.extend(Rng::seeded(12).bytes(252));
        let mut oversized = vec![0x16, 0x03, 0x03, 0xff, 0xff];
        oversized.extend(Rng::seeded(13).bytes(1000));
        run_case(v, server_tls(false), Good::usual(), failures(2), |addr| {
            refused_raw(addr, &hello);
            refused_raw(addr, &oversized);
        });
    }

    /// Half a ClientHello, then the end of the stream: a truncation (no TLS error was seen),
    /// and nothing is sent back.
    pub fn a_handshake_cut_in_half_then_closed_is_a_truncation(v: Variant) {
        let hello = client_hello(good_client());
        let expect = Expect {
            tls_failures: 0,
            tls_truncated: 1,
            tls_handshake_timeouts: 0,
        };
        run_case(v, server_tls(false), Good::usual(), expect, |addr| {
            let mut s = connect(addr);
            s.write_all(&hello[..hello.len() / 2]).expect("send");
            let got = finish_raw(s);
            assert!(got.is_empty(), "{} bytes for half a ClientHello", got.len());
        });
    }

    /// Half a ClientHello held open: the server waits for the rest on that connection only;
    /// new clients handshake and are served meanwhile.
    pub fn a_handshake_cut_in_half_and_held_open_does_not_stall_the_server(v: Variant) {
        let hello = client_hello(good_client());
        let expect = Expect {
            tls_failures: 0,
            tls_truncated: 1,
            tls_handshake_timeouts: 0,
        };
        let no_deadline = |c: &mut iomodels_server::ServerConfig| c.handshake_timeout = None;
        run_case_with(
            v,
            server_tls(false),
            no_deadline,
            Good::usual(),
            expect,
            |addr| {
                let mut held = connect(addr);
                held.write_all(&hello[..hello.len() / 2]).expect("send");
                let clients = if cfg!(windows) { 10 } else { 20 };
                let report = tls_clients(addr, good_client(), clients, 20, 1000);
                assert!(
                    report.is_clean(),
                    "clients were not served beside a stalled handshake: {report:?}"
                );
                assert_eq!(report.conns_established, clients);
                let got = finish_raw(held);
                assert!(got.is_empty(), "{} bytes for half a ClientHello", got.len());
            },
        );
    }

    /// Half a ClientHello, a pause until the server has closed the connection at the
    /// deadline, then the rest: no ServerHello ever comes, the handshake cannot complete late.
    pub fn a_handshake_cannot_complete_after_the_deadline(v: Variant) {
        let hello = client_hello(good_client());
        past_the_handshake_deadline(v, |addr| {
            let mut s = connect(addr);
            let half = hello.len() / 2;
            s.write_all(&hello[..half])
                .expect("send half a ClientHello");
            let mut peek = [0u8; 1];
            s.set_read_timeout(Some(DEADLINE + SETTLE)).unwrap();
            let r = loop {
                match s.peek(&mut peek) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            match r {
                Ok(0) => {}
                Ok(_) => panic!("bytes back for half a ClientHello"),
                Err(e) if common::is_timeout(&e) => panic!("not closed at the deadline"),
                Err(_) => {} // reset
            }
            let _ = s.write_all(&hello[half..]);
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            let (got, _end) = read_raw_to_end(&s);
            assert!(
                got.is_empty(),
                "{} bytes (a ServerHello?) after the deadline",
                got.len()
            );
        });
    }

    pub fn a_client_without_a_certificate_is_refused_when_one_is_required(v: Variant) {
        run_case(v, server_tls(true), Good::usual(), failures(2), |addr| {
            for versions in [TLS12, TLS13] {
                let e = refused_tls(addr, client_tls(versions, Identity::Anonymous), "localhost");
                assert_eq!(
                    alert_received(&e),
                    Some(AlertDescription::CertificateRequired),
                    "{e}"
                );
            }
        });
    }

    pub fn a_client_certificate_from_an_unknown_ca_is_refused(v: Variant) {
        run_case(v, server_tls(true), Good::usual(), failures(2), |addr| {
            for versions in [TLS12, TLS13] {
                let e = refused_tls(addr, client_tls(versions, Identity::Stranger), "localhost");
                assert_eq!(alert_received(&e), Some(AlertDescription::UnknownCA), "{e}");
            }
        });
    }

    /// The client refuses: its handshake fails on the expired certificate, its alert reaches
    /// the server, which counts a TLS failure. (The good clients' clock says 2001.)
    pub fn a_client_refuses_an_expired_server_certificate(v: Variant) {
        let tls = server_tls_with(&common::pki().expired_server, None);
        let good = Good {
            config: client_in_2001(),
            name: "localhost",
        };
        run_case(v, tls, good, failures(2), |addr| {
            for versions in [TLS12, TLS13] {
                let e = refused_tls(addr, client_tls(versions, Identity::Anonymous), "localhost");
                assert!(
                    matches!(
                        rustls_error(&e),
                        Some(rustls::Error::InvalidCertificate(
                            CertificateError::Expired | CertificateError::ExpiredContext { .. }
                        ))
                    ),
                    "not refused as expired: {e}"
                );
            }
        });
    }

    /// The client refuses a certificate for another host (the good clients ask for that host).
    pub fn a_client_refuses_a_certificate_for_another_host(v: Variant) {
        let tls = server_tls_with(&common::pki().other_host_server, None);
        let good = Good {
            config: good_client(),
            name: "other.example",
        };
        run_case(v, tls, good, failures(1), |addr| {
            let e = refused_tls(addr, client_tls(BOTH, Identity::Anonymous), "localhost");
            assert!(
                matches!(
                    rustls_error(&e),
                    Some(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. }
                    ))
                ),
                "not refused for its name: {e}"
            );
        });
    }
}

/// Under a `tls` module, so that every test's name says TLS (`tls::select::small_echo`) and
/// `cargo test tls` picks this file's tests out of the server's.
mod tls {
    use super::*;

    model_suite! {
        check: every_available_model_runs_the_bad_input_suite, "the TLS bad-input suite";
        cases: [
            plaintext_is_refused,
            random_bytes_are_refused,
            records_with_bogus_bodies_are_refused,
            a_handshake_cut_in_half_then_closed_is_a_truncation,
            a_handshake_cut_in_half_and_held_open_does_not_stall_the_server,
            a_handshake_cannot_complete_after_the_deadline,
            a_client_without_a_certificate_is_refused_when_one_is_required,
            a_client_certificate_from_an_unknown_ca_is_refused,
            a_client_refuses_an_expired_server_certificate,
            a_client_refuses_a_certificate_for_another_host,
        ];
        every_model
    }
}
