//! What only the completion models (io_uring) must show: the provided-buffer ring running dry
//! loses nothing (all three receive from one), an echo sent straight from the ring or copied
//! keeps every byte in order, and shutdown with operations in flight reaps every one of them.
#![cfg(target_os = "linux")]

use iomodels_load::LoadConfig;
use iomodels_server::{
    DirectDescriptors, Model, RecvBuffers, RunningServer, Server, ServerConfig, StatsSnapshot,
};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const COMPLETION_MODELS: [Model; 3] = [
    Model::OverlappedEvent,
    Model::OverlappedRoutine,
    Model::CompletionPort,
];

/// A closed-loop echo load against a server started with `config`: `conns` connections,
/// `depth` messages of `size` bytes in flight each, `messages` each (bounded: 30 s), on two
/// threads. Asserts that every message came back byte for byte and that the server, stopped,
/// left no operation or connection behind; returns its counters as they were at the stop.
fn served(
    case: &str,
    config: ServerConfig,
    conns: usize,
    size: usize,
    depth: usize,
    messages: u64,
) -> StatsSnapshot {
    let server = start(config);
    let report = iomodels_load::run(&LoadConfig {
        connect: server.addr,
        conns,
        size,
        depth,
        duration: Duration::from_secs(30),
        messages_per_conn: Some(messages),
        threads: 2,
        ..LoadConfig::default()
    })
    .unwrap();
    let stats = server.stats.clone();
    let at_stop = stats.snapshot();
    server.stop().unwrap();
    assert!(report.is_clean(), "{case}: {report:?}");
    assert_eq!(
        (report.messages, report.mismatches),
        (conns as u64 * messages, 0),
        "{case}"
    );
    let s = stats.snapshot();
    assert_eq!((s.ops_in_flight, s.active), (0, 0), "{case}: {s:?}");
    at_stop
}

/// Every completion model with one worker and a ring of `count` buffers of `size` bytes,
/// consumed incrementally and in whole buffers; each with its name.
fn ring_cases(count: u16, size: usize) -> impl Iterator<Item = (String, ServerConfig)> {
    COMPLETION_MODELS
        .into_iter()
        .flat_map(|model| [(model, true), (model, false)])
        .map(move |(model, incremental)| {
            let config = ServerConfig {
                model,
                workers: Some(1),
                recv_buffers: RecvBuffers { count, size },
                recv_incremental: incremental,
                ..ServerConfig::default()
            };
            (format!("{model}, incremental {incremental}"), config)
        })
}

fn start(config: ServerConfig) -> RunningServer {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .expect("bind")
    .spawn()
    .expect("spawn")
}

#[test]
fn an_exhausted_buffer_ring_is_refilled_and_rearmed_without_losing_or_reordering_a_byte() {
    // Two 64-byte buffers for 64 busy connections: receives (single-shot for the overlapped
    // models, multishot for completion-port) keep running dry. With the ring consumed
    // incrementally or in whole buffers, and with batched waits (which must not hold back the
    // re-arming of starved receives).
    let cases = [
        (true, None),
        (false, None),
        (true, Some(Duration::from_micros(500))),
    ];
    for (model, (incremental, batch_wait)) in COMPLETION_MODELS
        .into_iter()
        .flat_map(|m| cases.map(|c| (m, c)))
    {
        let case = format!("{model}, incremental {incremental}, batch wait {batch_wait:?}");
        let config = ServerConfig {
            model,
            workers: Some(1),
            recv_buffers: RecvBuffers { count: 2, size: 64 },
            recv_incremental: incremental,
            batch_wait,
            ..ServerConfig::default()
        };
        let stats = served(&case, config, 64, 1000, 4, 100);
        assert!(
            stats.recv_buffer_exhausted > 0,
            "{case}: the ring never ran dry, so this test proved nothing: {stats:?}"
        );
        // A receive's buffer is picked at completion: none is ever posted for a connection.
        assert_eq!(stats.recv_buffer_bytes_posted_peak, 0, "{case}: {stats:?}");
    }
}

#[test]
fn shutdown_with_operations_in_flight_reaps_every_one() {
    // completion-port on direct descriptors (its default here) and on ordinary ones.
    let variants = COMPLETION_MODELS
        .into_iter()
        .map(|m| (m, DirectDescriptors::Auto))
        .chain([(Model::CompletionPort, DirectDescriptors::Off)]);
    for (model, direct_descriptors) in variants {
        let server = start(ServerConfig {
            model,
            drain_timeout: Duration::from_millis(300),
            max_pending: 64 * 1024,
            direct_descriptors,
            ..ServerConfig::default()
        });
        // Idle clients: a receive posted for each.
        let idle: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        // A client that floods and never reads: a send stuck in flight.
        let flooder = TcpStream::connect(server.addr).unwrap();
        flooder
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let chunk = vec![1u8; 64 * 1024];
        while (&flooder).write(&chunk).is_ok() {}
        let stats = server.stats.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.snapshot().active < 51 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            stats.snapshot().ops_in_flight > 50,
            "{model}: {:?}",
            stats.snapshot()
        );
        let t = Instant::now();
        server.stop().unwrap();
        let s = stats.snapshot();
        assert_eq!(s.ops_in_flight, 0, "{model}: operations leaked: {s:?}");
        assert_eq!(s.active, 0, "{model}: connections leaked: {s:?}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{model}: shutdown took {:?}",
            t.elapsed()
        );
        drop((idle, flooder));
    }
}

#[test]
fn messages_larger_than_a_buffer_arrive_byte_exact_under_backpressure_incremental_or_not() {
    // 4 KiB buffers for 64 KiB messages: each arrives in many pieces (incrementally consumed:
    // pieces of buffers shared with other connections), and a 16 KiB high-water mark parks
    // bytes while the echo waits for the client to read.
    for (case, config) in ring_cases(16, 4096) {
        let config = ServerConfig {
            max_pending: 16 * 1024,
            ..config
        };
        let s = served(&case, config, 16, 64 * 1024, 2, 20);
        assert_eq!(s.bytes_in, 16 * 20 * 64 * 1024, "{case}");
    }
}

#[test]
fn a_served_echo_under_batched_waits_completes_every_message() {
    for model in COMPLETION_MODELS {
        let config = ServerConfig {
            model,
            workers: Some(1),
            batch_wait: Some(Duration::from_millis(1)),
            ..ServerConfig::default()
        };
        let s = served(&model.to_string(), config, 64, 64, 1, 50);
        assert!(
            s.batched_waits > 0,
            "{model}: no wait was batched, so this test proved nothing: {s:?}"
        );
    }
}

#[test]
fn echoed_bytes_go_out_from_their_provided_buffer_or_copied_in_order_never_when_off_or_for_discard()
{
    // 64 connections, 4 messages in flight each, a ring of 4 buffers: bytes pass through
    // while half the ring is free and are copied otherwise, so a connection's output mixes
    // both; and a connection's next piece often follows another connection's in the ring (it
    // cannot join the bytes already waiting to go out, so it is copied behind them). Both
    // ways must give back every byte in order. Discard has nothing to echo.
    for (case, config) in ring_cases(4, 16 * 1024) {
        let s = served(&case, config, 64, 3000, 4, 200);
        assert_eq!(s.bytes_out, 64 * 200 * 3000, "{case}: {s:?}");
        assert!(
            s.bytes_passed_through > 0 && s.bytes_passed_through < s.bytes_in,
            "{case}: both ways were not taken ({} of {} bytes passed through)",
            s.bytes_passed_through,
            s.bytes_in
        );
    }
    // --pass-through off: every byte copied, none passed through, all echoed.
    for model in COMPLETION_MODELS {
        let case = format!("{model}, pass-through off");
        let config = ServerConfig {
            model,
            pass_through: false,
            ..ServerConfig::default()
        };
        let s = served(&case, config, 8, 3000, 1, 100);
        assert_eq!(
            (s.bytes_out, s.bytes_passed_through),
            (8 * 100 * 3000, 0),
            "{case}: {s:?}"
        );
    }
    let server = start(ServerConfig {
        model: Model::CompletionPort,
        service: iomodels_core::ServiceKind::Discard,
        ..ServerConfig::default()
    });
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.write_all(&[7u8; 100_000]).unwrap();
    drop(c);
    let stats = server.stats.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.snapshot().bytes_in < 100_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop().unwrap();
    let s = stats.snapshot();
    assert_eq!((s.bytes_in, s.bytes_passed_through), (100_000, 0), "{s:?}");
}
