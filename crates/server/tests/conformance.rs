//! The conformance suite: every behaviour a server model promises, checked through real
//! sockets against the real server, generated for every available model.
//!
//! Each case starts its own server on `127.0.0.1:0` (so cases run in parallel), drives it with
//! plain std sockets (a thread per client: the same client code on Linux and on Windows under
//! Wine, where the mio-based load generator does not run), and stops it.

mod common;

use common::Variant;

use common::{
    check_echo_then_eof, clients, connect, eventually, ping, reset, send_and_close, wait_for, Rng,
};
use iomodels_core::ServiceKind;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

mod cases {
    use super::*;

    pub fn small_echo(v: Variant) {
        let server = v.start(|_| {});
        let mut s = connect(server.addr);
        ping(&mut s, b"hello, world\n");
        drop(s);
        server.stop().unwrap();
    }

    pub fn a_4_mib_message_in_random_chunks_comes_back_byte_identical(v: Variant) {
        common::check_4_mib_echo_in_random_chunks(v.start(|_| {}));
    }

    pub fn two_hundred_concurrent_clients_are_each_verified(v: Variant) {
        let server = v.start(|_| {});
        let report = clients(server.addr, 200, 20, 1000);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.conns_established, 200);
        assert_eq!(report.messages, 200 * 20);
        assert_eq!(report.mismatches, 0);
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().accepted == 200
        }));
        server.stop().unwrap();
    }

    pub fn half_close_gets_everything_back_then_eof(v: Variant) {
        let server = v.start(|_| {});
        let data = Rng(7).bytes(100_000);
        // Returns only at EOF: the server shut down its side after echoing.
        check_echo_then_eof(&mut connect(server.addr), &data);
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().active == 0
        }));
        server.stop().unwrap();
    }

    /// A short message and the FIN often arrive in one go: the end of stream must not be missed
    /// behind the data (a model that stopped reading after a short read would hang here).
    pub fn data_and_fin_arriving_together_are_both_seen(v: Variant) {
        let server = v.start(|_| {});
        let mut rng = Rng(5);
        for _ in 0..100 {
            let len = 1 + rng.next() as usize % 3000;
            let data = rng.bytes(len);
            let mut s = connect(server.addr);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            check_echo_then_eof(&mut s, &data);
        }
        server.stop().unwrap();
    }

    pub fn a_client_that_resets_mid_stream_does_not_disturb_others(v: Variant) {
        let server = v.start(|_| {});
        let addr = server.addr;
        let others = std::thread::spawn(move || clients(addr, 20, 200, 512));
        for i in 0..20 {
            let s = connect(server.addr);
            (&s).write_all(&Rng(i + 1).bytes(50_000)).unwrap();
            reset(s); // an RST, with echo data unread
        }
        let report = others.join().unwrap();
        assert!(
            report.is_clean(),
            "the other clients were disturbed: {report:?}"
        );
        assert_eq!(report.messages, 20 * 200);
        // The reset connections are gone from the server, and it still serves.
        wait_for(
            &server,
            Duration::from_secs(5),
            "the reset connections to close",
            |s| s.active == 0,
        );
        let mut s = connect(server.addr);
        ping(&mut s, b"still here");
        drop(s);
        server.stop().unwrap();
    }

    pub fn a_client_that_never_reads_is_held_to_the_high_water_mark(v: Variant) {
        const HIGH_WATER: usize = 256 * 1024;
        const FLOOD: usize = 64 << 20;
        let server = v.start(|c| c.max_pending = HIGH_WATER);
        let flooder = connect(server.addr);
        flooder
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut f = flooder.try_clone().unwrap();
        let flood = std::thread::spawn(move || {
            let chunk = vec![0x5a; 64 * 1024];
            let mut sent = 0;
            while sent < FLOOD {
                match f.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break, // the write timed out: backpressure reached us
                }
            }
            sent
        });
        // While the flood is stuck, other clients are served.
        let report = clients(server.addr, 10, 100, 4096);
        assert!(report.is_clean(), "other clients starved: {report:?}");
        let sent = flood.join().unwrap();
        let stats = server.stats.snapshot();
        assert!(
            sent < FLOOD,
            "all {FLOOD} bytes were accepted from a client that never reads: no backpressure"
        );
        assert!(
            stats.peak_conn_pending > 0,
            "the server never reported unsent bytes for a client that never reads"
        );
        assert!(
            stats.peak_conn_pending <= HIGH_WATER,
            "one connection held {} unsent bytes, above the high-water mark {HIGH_WATER}",
            stats.peak_conn_pending
        );
        drop(flooder);
        server.stop().unwrap();
    }

    pub fn discard_reads_everything_and_sends_nothing(v: Variant) {
        let server = v.start(|c| c.service = ServiceKind::Discard);
        let data = Rng(3).bytes(1 << 20);
        let got = send_and_close(&mut connect(server.addr), &data);
        assert!(got.is_empty(), "discard sent {} bytes", got.len());
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().bytes_in == data.len() as u64
        }));
        assert_eq!(server.stats.snapshot().bytes_out, 0);
        server.stop().unwrap();
    }

    pub fn shutdown_lets_an_in_flight_echo_finish_then_refuses_new_clients(v: Variant) {
        let server = v.start(|_| {});
        let addr = server.addr;
        let data = Rng(11).bytes(2 << 20);
        let mut s = connect(server.addr);
        // Make sure the connection is accepted before shutdown starts.
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        let mut reader = s.try_clone().unwrap();
        let to_send = data.clone();
        let sender = std::thread::spawn(move || {
            s.write_all(&to_send).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        });
        let shutdown = server.shutdown.clone();
        std::thread::sleep(Duration::from_millis(20));
        shutdown.trigger();
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).unwrap();
        sender.join().unwrap();
        assert!(
            echoed == data,
            "in-flight echo cut: {} of {} bytes",
            echoed.len(),
            data.len()
        );
        server.stop().unwrap();
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener is still open after shutdown"
        );
    }
}

model_suite! {
    check: every_available_model_runs_the_suite, "the conformance suite";
    cases: [
        small_echo,
        a_4_mib_message_in_random_chunks_comes_back_byte_identical,
        two_hundred_concurrent_clients_are_each_verified,
        half_close_gets_everything_back_then_eof,
        data_and_fin_arriving_together_are_both_seen,
        a_client_that_resets_mid_stream_does_not_disturb_others,
        a_client_that_never_reads_is_held_to_the_high_water_mark,
        discard_reads_everything_and_sends_nothing,
        shutdown_lets_an_in_flight_echo_finish_then_refuses_new_clients,
    ];
    every_model
}
