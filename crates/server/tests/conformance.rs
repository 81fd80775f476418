//! The conformance suite: every behaviour a server model promises, checked through real
//! sockets against the real server, generated for every available model.
//!
//! Each case starts its own server on `127.0.0.1:0` (so cases run in parallel), drives it with
//! plain std sockets (a thread per client: the same client code on Linux and on Windows under
//! Wine, where the mio-based load generator does not run), and stops it.

use iomodels_core::ServiceKind;
use iomodels_server::{Model, RunningServer, Server, ServerConfig};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A model with its configuration: what one generated module of the suite runs.
#[derive(Clone, Copy)]
struct Variant {
    model: Model,
    configure: fn(&mut ServerConfig),
}

/// Starts the variant on a free loopback port, with `tweak` applied after its own settings.
fn start(v: Variant, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        model: v.model,
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    (v.configure)(&mut config);
    tweak(&mut config);
    Server::bind(config)
        .expect("bind a loopback port")
        .spawn()
        .expect("spawn the server thread")
}

fn connect(server: &RunningServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A deterministic pseudo-random byte stream (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Polls `cond` for up to `limit`; true if it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a group of [`clients`] saw.
#[derive(Debug, Default)]
struct ClientsReport {
    conns_established: usize,
    messages: u64,
    mismatches: u64,
    errors: Vec<String>,
}

impl ClientsReport {
    fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.errors.is_empty()
    }
}

/// `conns` clients, a thread each, each echoing `messages` messages of `size` bytes two deep
/// (the next message is sent before the previous echo is read) and checking every byte.
fn clients(addr: SocketAddr, conns: usize, messages: u64, size: usize) -> ClientsReport {
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_nodelay(true).unwrap();
                let mut rng = Rng(0x9e37_79b9 ^ (i as u64 + 1));
                let sent: Vec<Vec<u8>> = (0..messages).map(|_| rng.bytes(size)).collect();
                let (mut done, mut mismatches) = (0u64, 0u64);
                let mut buf = vec![0u8; size];
                for m in sent.iter().take(2) {
                    s.write_all(m).map_err(|e| format!("send: {e}"))?;
                }
                for k in 0..sent.len() {
                    s.read_exact(&mut buf)
                        .map_err(|e| format!("recv #{k}: {e}"))?;
                    if buf != sent[k] {
                        mismatches += 1;
                    }
                    done += 1;
                    if let Some(next) = sent.get(k + 2) {
                        s.write_all(next).map_err(|e| format!("send: {e}"))?;
                    }
                }
                Ok((done, mismatches))
            })
        })
        .collect();
    let mut report = ClientsReport::default();
    for t in threads {
        match t.join().expect("a client thread panicked") {
            Ok((done, bad)) => {
                report.conns_established += 1;
                report.messages += done;
                report.mismatches += bad;
            }
            Err(e) => report.errors.push(e),
        }
    }
    report
}

mod cases {
    use super::*;

    pub fn small_echo(v: Variant) {
        let server = start(v, |_| {});
        let mut s = connect(&server);
        s.write_all(b"hello, world\n").unwrap();
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello, world\n");
        drop(s);
        server.stop().unwrap();
    }

    pub fn a_4_mib_message_in_random_chunks_comes_back_byte_identical(v: Variant) {
        let server = start(v, |_| {});
        let data = Rng(0x1234_5678).bytes(4 << 20);
        let mut writer = connect(&server);
        let mut reader = writer.try_clone().unwrap();
        let to_send = data.clone();
        let sender = std::thread::spawn(move || {
            let mut rng = Rng(42);
            let mut off = 0;
            while off < to_send.len() {
                let n = (1 + rng.next() as usize % 65536).min(to_send.len() - off);
                writer.write_all(&to_send[off..off + n]).unwrap();
                off += n;
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut echoed = Vec::with_capacity(data.len());
        reader.read_to_end(&mut echoed).unwrap();
        sender.join().unwrap();
        assert_eq!(echoed.len(), data.len(), "echoed length");
        assert!(echoed == data, "echoed bytes differ from what was sent");
        server.stop().unwrap();
    }

    pub fn two_hundred_concurrent_clients_are_each_verified(v: Variant) {
        let server = start(v, |_| {});
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
        let server = start(v, |_| {});
        let data = Rng(7).bytes(100_000);
        let mut s = connect(&server);
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        // read_to_end returns only at EOF: the server shut down its side after echoing.
        s.read_to_end(&mut echoed).unwrap();
        assert!(
            echoed == data,
            "got {} of {} bytes back",
            echoed.len(),
            data.len()
        );
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().active == 0
        }));
        server.stop().unwrap();
    }

    /// A short message and the FIN often arrive in one go: the end of stream must not be missed
    /// behind the data (a model that stopped reading after a short read would hang here).
    pub fn data_and_fin_arriving_together_are_both_seen(v: Variant) {
        let server = start(v, |_| {});
        let mut rng = Rng(5);
        for _ in 0..100 {
            let len = 1 + rng.next() as usize % 3000;
            let data = rng.bytes(len);
            let mut s = connect(&server);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&data).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut echoed = Vec::new();
            s.read_to_end(&mut echoed).expect("EOF after the echo");
            assert!(echoed == data);
        }
        server.stop().unwrap();
    }

    pub fn a_client_that_resets_mid_stream_does_not_disturb_others(v: Variant) {
        let server = start(v, |_| {});
        let addr = server.addr;
        let others = std::thread::spawn(move || clients(addr, 20, 200, 512));
        for i in 0..20 {
            let s = connect(&server);
            (&s).write_all(&Rng(i + 1).bytes(50_000)).unwrap();
            let sock = socket2::SockRef::from(&s);
            sock.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s); // close with SO_LINGER 0: an RST, with echo data unread
        }
        let report = others.join().unwrap();
        assert!(
            report.is_clean(),
            "the other clients were disturbed: {report:?}"
        );
        assert_eq!(report.messages, 20 * 200);
        // The reset connections are gone from the server, and it still serves.
        assert!(
            eventually(Duration::from_secs(5), || server.stats.snapshot().active
                == 0),
            "reset connections leaked: {:?}",
            server.stats.snapshot()
        );
        let mut s = connect(&server);
        s.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
        drop(s);
        server.stop().unwrap();
    }

    pub fn a_client_that_never_reads_is_held_to_the_high_water_mark(v: Variant) {
        const HIGH_WATER: usize = 256 * 1024;
        const FLOOD: usize = 64 << 20;
        let server = start(v, |c| c.max_pending = HIGH_WATER);
        let flooder = connect(&server);
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
            stats.peak_conn_pending <= HIGH_WATER,
            "one connection held {} unsent bytes, above the high-water mark {HIGH_WATER}",
            stats.peak_conn_pending
        );
        drop(flooder);
        server.stop().unwrap();
    }

    pub fn discard_reads_everything_and_sends_nothing(v: Variant) {
        let server = start(v, |c| c.service = ServiceKind::Discard);
        let data = Rng(3).bytes(1 << 20);
        let mut s = connect(&server);
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "discard sent {} bytes", got.len());
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().bytes_in == data.len() as u64
        }));
        assert_eq!(server.stats.snapshot().bytes_out, 0);
        server.stop().unwrap();
    }

    pub fn shutdown_lets_an_in_flight_echo_finish_then_refuses_new_clients(v: Variant) {
        let server = start(v, |_| {});
        let addr = server.addr;
        let data = Rng(11).bytes(2 << 20);
        let mut s = connect(&server);
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

macro_rules! conformance {
    ($($(#[$attr:meta])* $name:ident => $model:expr $(, $configure:expr)?;)*) => {
        $(
            $(#[$attr])*
            mod $name {
                use super::*;
                #[allow(unused_mut, unused_assignments)]
                const MODEL: Variant = {
                    let mut v = Variant { model: $model, configure: |_| {} };
                    $(v.configure = $configure;)?
                    v
                };
                #[test] fn small_echo() { cases::small_echo(MODEL) }
                #[test] fn a_4_mib_message_in_random_chunks_comes_back_byte_identical() {
                    cases::a_4_mib_message_in_random_chunks_comes_back_byte_identical(MODEL)
                }
                #[test] fn two_hundred_concurrent_clients_are_each_verified() {
                    cases::two_hundred_concurrent_clients_are_each_verified(MODEL)
                }
                #[test] fn half_close_gets_everything_back_then_eof() {
                    cases::half_close_gets_everything_back_then_eof(MODEL)
                }
                #[test] fn data_and_fin_arriving_together_are_both_seen() {
                    cases::data_and_fin_arriving_together_are_both_seen(MODEL)
                }
                #[test] fn a_client_that_resets_mid_stream_does_not_disturb_others() {
                    cases::a_client_that_resets_mid_stream_does_not_disturb_others(MODEL)
                }
                #[test] fn a_client_that_never_reads_is_held_to_the_high_water_mark() {
                    cases::a_client_that_never_reads_is_held_to_the_high_water_mark(MODEL)
                }
                #[test] fn discard_reads_everything_and_sends_nothing() {
                    cases::discard_reads_everything_and_sends_nothing(MODEL)
                }
                #[test] fn shutdown_lets_an_in_flight_echo_finish_then_refuses_new_clients() {
                    cases::shutdown_lets_an_in_flight_echo_finish_then_refuses_new_clients(MODEL)
                }
            }
        )*

        /// A model that becomes available without a line above would go untested: fail instead.
        #[test]
        fn every_available_model_runs_the_suite() {
            let covered = [$($(#[$attr])* $model),*];
            for m in Model::available() {
                assert!(covered.contains(&m), "model {m} is available but not in the conformance suite");
            }
            for m in covered {
                assert!(m.is_available(), "model {m} is in the suite but not available: {:?}", m.availability());
            }
        }
    };
}

conformance! {
    blocking => Model::Blocking;
    select => Model::Select;
    event_select => Model::EventSelect;
    overlapped_event => Model::OverlappedEvent;
    overlapped_routine => Model::OverlappedRoutine;
    #[cfg(windows)]
    async_select => Model::AsyncSelect;
    completion_port => Model::CompletionPort;
    #[cfg(target_os = "linux")]
    completion_port_handoff => Model::CompletionPort, |c| {
        c.workers = Some(2);
        c.accept_mode = iomodels_server::AcceptMode::Handoff;
    };
}
