//! The conformance suite over TLS: what every model promises, checked through real sockets
//! against the real server with `ServerConfig::tls` set, generated for every available model.
//!
//! The clients are rustls clients driven by hand over blocking std sockets (`common::tls`), a
//! thread per client, so the same code runs on Linux and on Windows under Wine. Every client
//! ends with its `close_notify` and must get the server's: a clean end counts neither a TLS
//! failure nor a truncation, and each case checks that the server counted none.

mod common;

use common::Variant;

use common::{
    check_echo, client_tls, good_client, read_raw_to_end, rustls_error, server_tls, tls_clients,
    tls_echo_through, tls_ping, wait_for, Identity, Rng, TlsClient, TLS12, TLS13,
};
use iomodels_core::rustls::{self, AlertDescription, ProtocolVersion};
use iomodels_core::tls::MAX_RECORD_WIRE_LEN;
use iomodels_core::ServiceKind;
use iomodels_server::{Model, RunningServer, ServerConfig, StatsSnapshot};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// How long the server may take to close its side of every connection once the clients are
/// done (generous: Wine's sockets are slow, and nothing here depends on it being quick).
const SETTLE: Duration = Duration::from_secs(30);

/// Starts the variant over TLS (the test server certificate, no client certificates) on a
/// free loopback port, with `tweak` applied last.
fn start(v: Variant, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    common::watch_server_panics();
    common::start(v.model, |c| {
        (v.configure)(c);
        c.tls = Some(server_tls(false));
        tweak(c);
    })
}

/// Stops the server: its thread must return cleanly, and no thread of it may have panicked.
fn stop(server: RunningServer) {
    server.stop().expect("the server stops cleanly");
    common::assert_no_server_panic();
}

/// Waits until no connection is open, then checks that none ended on an I/O error, a TLS error
/// or a truncation.
fn settle_clean(server: &RunningServer) -> StatsSnapshot {
    let s = wait_for(server, SETTLE, "every connection to close", |s| {
        s.active == 0
    });
    assert_eq!(s.tls_failures, 0, "TLS failures: {s:?}");
    assert_eq!(s.tls_truncated, 0, "truncations: {s:?}");
    assert_eq!(s.errors, 0, "I/O errors: {s:?}");
    s
}

/// Concurrent clients: 100+ (each handshake is real work for a single-threaded model, and
/// every Winsock call under Wine is a round trip to wineserver).
const CONCURRENT: usize = 120;

mod cases {
    use super::*;

    pub fn small_echo(v: Variant) {
        let server = start(v, |_| {});
        tls_ping(server.addr, good_client(), b"hello, world\n");
        settle_clean(&server);
        stop(server);
    }

    pub fn a_4_mib_message_in_random_chunks_comes_back_byte_identical(v: Variant) {
        let server = start(v, |_| {});
        let data = Rng(0x1234_5678).bytes(4 << 20);
        let client = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        let echoed = tls_echo_through(client, data.clone(), 42, 65536)
            .expect("echo 4 MiB and end with close_notify both ways");
        assert_eq!(echoed.len(), data.len(), "echoed length");
        assert!(echoed == data, "echoed bytes differ from what was sent");
        settle_clean(&server);
        stop(server);
    }

    pub fn concurrent_clients_are_each_verified(v: Variant) {
        let server = start(v, |_| {});
        let report = tls_clients(server.addr, good_client(), CONCURRENT, 20, 1000);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.conns_established, CONCURRENT);
        assert_eq!(report.messages, CONCURRENT as u64 * 20);
        let s = settle_clean(&server);
        assert_eq!(s.accepted, CONCURRENT as u64);
        stop(server);
    }

    /// TLS half-close: the client's `close_notify` after its data ends its input; it gets
    /// everything back, then the server's `close_notify`, then the end of the TCP stream.
    pub fn close_notify_after_the_data_gets_everything_back_then_close_notify(v: Variant) {
        let server = start(v, |_| {});
        let data = Rng(7).bytes(100_000);
        let mut s = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        s.write_all(&data).expect("send");
        s.close_notify().expect("send close_notify");
        let echoed = s
            .read_to_close_notify()
            .expect("everything back, then the server's close_notify");
        check_echo(&echoed, &data);
        let (after, end) = read_raw_to_end(s.sock());
        assert!(
            after.is_empty(),
            "{} bytes after the server's close_notify",
            after.len()
        );
        end.expect("the server ends the TCP stream after its close_notify");
        settle_clean(&server);
        stop(server);
    }

    /// An end of stream without a `close_notify` is a truncation: counted, and the client still
    /// gets its echo and the server's `close_notify` (the handshake was complete).
    pub fn eof_without_close_notify_is_counted_as_truncation_and_still_answered(v: Variant) {
        let server = start(v, |_| {});
        let data = Rng(8).bytes(50_000);
        let mut s = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        s.write_all(&data).expect("send");
        s.sock()
            .shutdown(Shutdown::Write)
            .expect("shut the write side");
        let echoed = s
            .read_to_close_notify()
            .expect("everything back, then the server's close_notify");
        check_echo(&echoed, &data);
        let st = wait_for(&server, SETTLE, "the truncation to be counted", |s| {
            s.active == 0 && s.tls_truncated == 1
        });
        assert_eq!(st.tls_failures, 0, "{st:?}");
        assert_eq!(st.errors, 0, "{st:?}");
        stop(server);
    }

    /// Shutdown: a client still connected when the drain runs out gets the server's
    /// `close_notify` before the close, so it can tell a close from a truncation. Not the
    /// thread-per-client model: its drain shuts each socket down to wake the thread blocked in
    /// recv, so that client sees a bare end of stream (checked: it ends, it does not hang).
    pub fn a_drain_that_runs_out_ends_open_clients_with_close_notify(v: Variant) {
        let server = start(v, |c| c.drain_timeout = Duration::from_millis(300));
        let mut s = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        s.write_all(b"still here").expect("send");
        let mut back = [0u8; 10];
        s.read_exact(&mut back).expect("the echo");
        assert_eq!(&back, b"still here");
        stop(server);
        let end = s.read_to_close_notify();
        if v.model == Model::Blocking {
            if let Err(e) = &end {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the client was left hanging: {e}"
                );
            }
        } else {
            let rest = end.expect("the server's close_notify before the close");
            assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
        }
    }

    /// Unsent output is counted in ciphertext against the high-water mark; a record completed
    /// by a read may take it over by one record at most.
    pub fn a_client_that_never_reads_is_held_to_the_high_water_mark(v: Variant) {
        const HIGH_WATER: usize = 256 * 1024;
        const FLOOD: usize = 64 << 20;
        let server = start(v, |c| c.max_pending = HIGH_WATER);
        let flooder = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        flooder
            .sock()
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // The reader half is kept (its socket stays open) and never read.
        let (mut writer, never_read) = flooder.split().unwrap();
        let flood = std::thread::spawn(move || {
            let chunk = vec![0x5a; 64 * 1024];
            let mut sent = 0;
            while sent < FLOOD {
                match writer.write_all(&chunk) {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => break, // the write timed out: backpressure reached us
                }
            }
            (sent, writer)
        });
        // While the flood is stuck, other clients are served.
        let report = tls_clients(server.addr, good_client(), 10, 100, 4096);
        assert!(report.is_clean(), "other clients starved: {report:?}");
        let (sent, writer) = flood.join().unwrap();
        assert!(
            sent < FLOOD,
            "all {FLOOD} bytes were accepted from a client that never reads: no backpressure"
        );
        // Closing the flooder ends its connection; the peak is read after that, since a model
        // that sends on a blocking socket (`blocking`) publishes its pending bytes only when
        // its send returns.
        drop((writer, never_read));
        let stats = wait_for(&server, SETTLE, "the flooder's connection to close", |s| {
            s.active == 0
        });
        let bound = HIGH_WATER + MAX_RECORD_WIRE_LEN;
        assert!(
            stats.peak_conn_pending > 0,
            "no output was ever pending: the flood did not reach the server"
        );
        assert!(
            stats.peak_conn_pending <= bound,
            "one connection held {} unsent bytes, above the high-water mark {HIGH_WATER} \
             plus one record ({bound})",
            stats.peak_conn_pending
        );
        stop(server);
    }

    pub fn discard_reads_everything_and_sends_nothing(v: Variant) {
        let server = start(v, |c| c.service = ServiceKind::Discard);
        let data = Rng(3).bytes(1 << 20);
        let mut s = TlsClient::connect(server.addr, good_client()).expect("TLS connect");
        s.write_all(&data).expect("send");
        s.close_notify().expect("send close_notify");
        let got = s
            .read_to_close_notify()
            .expect("the server's close_notify, and nothing before it");
        assert!(got.is_empty(), "discard sent {} bytes", got.len());
        let st = settle_clean(&server);
        // Counted on the wire: the records' overhead and the handshake come on top.
        assert!(
            st.bytes_in > data.len() as u64,
            "only {} bytes in for {} of plaintext",
            st.bytes_in,
            data.len()
        );
        stop(server);
    }

    /// A client offering only `versions` negotiates `expected` and is echoed a message longer
    /// than one record.
    fn negotiates(
        v: Variant,
        versions: &[&'static rustls::SupportedProtocolVersion],
        expected: ProtocolVersion,
    ) {
        let server = start(v, |_| {});
        let mut s = TlsClient::connect(server.addr, client_tls(versions, Identity::Anonymous))
            .expect("TLS connect");
        assert_eq!(s.conn().protocol_version(), Some(expected));
        let data = Rng(9).bytes(40_000);
        s.write_all(&data).expect("send");
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).expect("read the echo");
        check_echo(&back, &data);
        s.close_notify().expect("send close_notify");
        assert!(s
            .read_to_close_notify()
            .expect("the server's close_notify")
            .is_empty());
        settle_clean(&server);
        stop(server);
    }

    pub fn tls12_is_negotiated_when_the_client_offers_only_it(v: Variant) {
        negotiates(v, TLS12, ProtocolVersion::TLSv1_2);
    }

    pub fn tls13_is_negotiated_when_the_client_offers_only_it(v: Variant) {
        negotiates(v, TLS13, ProtocolVersion::TLSv1_3);
    }

    pub fn mutual_tls_serves_a_client_with_a_certificate_from_its_ca(v: Variant) {
        let server = start(v, |c| c.tls = Some(server_tls(true)));
        for versions in [TLS12, TLS13] {
            tls_ping(
                server.addr,
                client_tls(versions, Identity::Trusted),
                b"a client with papers",
            );
        }
        settle_clean(&server);
        stop(server);
    }

    /// Without a certificate the client is refused with a `certificate_required` alert: at
    /// the handshake (TLS 1.2), or at its first read after a handshake that looked complete
    /// from its side (TLS 1.3, where the client finishes first).
    pub fn mutual_tls_refuses_a_client_without_a_certificate(v: Variant) {
        let server = start(v, |c| c.tls = Some(server_tls(true)));
        for versions in [TLS12, TLS13] {
            let config = client_tls(versions, Identity::Anonymous);
            let refusal = TlsClient::connect(server.addr, config).and_then(|mut s| {
                let mut byte = [0u8; 1];
                s.read(&mut byte)
            });
            let e = refusal.expect_err("a client without a certificate was served");
            assert_eq!(
                rustls_error(&e),
                Some(&rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                )),
                "refused, but not with certificate_required: {e}"
            );
        }
        let st = wait_for(&server, SETTLE, "both refusals to be counted", |s| {
            s.active == 0 && s.tls_failures == 2
        });
        assert_eq!(st.tls_truncated, 0, "{st:?}");
        assert_eq!(st.errors, 0, "{st:?}");
        // And one with a certificate is still served.
        tls_ping(server.addr, client_tls(TLS13, Identity::Trusted), b"next");
        stop(server);
    }
}

/// Under a `tls` module, so that every test's name says TLS (`tls::select::small_echo`) and
/// `cargo test tls` picks this file's tests out of the server's.
mod tls {
    use super::*;

    model_suite! {
        check: every_available_model_runs_the_tls_suite, "the TLS conformance suite";
        cases: [
            small_echo,
            a_4_mib_message_in_random_chunks_comes_back_byte_identical,
            concurrent_clients_are_each_verified,
            close_notify_after_the_data_gets_everything_back_then_close_notify,
            eof_without_close_notify_is_counted_as_truncation_and_still_answered,
            a_drain_that_runs_out_ends_open_clients_with_close_notify,
            a_client_that_never_reads_is_held_to_the_high_water_mark,
            discard_reads_everything_and_sends_nothing,
            tls12_is_negotiated_when_the_client_offers_only_it,
            tls13_is_negotiated_when_the_client_offers_only_it,
            mutual_tls_serves_a_client_with_a_certificate_from_its_ca,
            mutual_tls_refuses_a_client_without_a_certificate,
        ];
        every_model
    }
}
