//! Random byte streams through every model: proptest draws a stream of 0 to 256 KiB, the sizes
//! of the client's writes and of its reads, sends the stream through a real server of the model
//! over loopback (a writer thread, then the write side shut; a reader meanwhile) and checks
//! every byte of the echo and the EOF after it; and the same streams into discard, which must
//! send nothing and count every byte. A failure shrinks to the smallest stream and chunking
//! that still fails, and proptest prints it.
//!
//! Cases are few per model (each one is a whole connection through a real server) so the file
//! runs in seconds; `PROPTEST_CASES` raises them for a longer hunt.

mod common;

use common::{connect, eventually, Rng, Variant};
use iomodels_core::ServiceKind;
use iomodels_server::RunningServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

/// The largest stream: 256 KiB.
const MAX_LEN: usize = 256 * 1024;

/// One stream and how the client cuts it.
#[derive(Debug, Clone)]
struct Stream {
    len: usize,
    seed: u64,
    /// Sizes of the client's writes, used in turn.
    writes: Vec<usize>,
    /// Sizes of the client's reads, used in turn.
    reads: Vec<usize>,
}

/// A write or read size: often tiny, often a segment, sometimes a large buffer.
fn io_size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=16, 1usize..=4096, 1usize..=65536]
}

fn stream() -> impl Strategy<Value = Stream> {
    (
        0usize..=MAX_LEN,
        any::<u64>(),
        proptest::collection::vec(io_size(), 1..8),
        proptest::collection::vec(io_size(), 1..8),
    )
        .prop_map(|(len, seed, writes, reads)| Stream {
            len,
            seed,
            writes,
            reads,
        })
}

/// `cases` streams (unless `PROPTEST_CASES` says otherwise), no persistence file: the failing
/// case is printed, and a model's suite is one function.
fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Sends `s` through a new connection to `server`, written in its write sizes by a thread of
/// its own and then the write side shut, while this thread reads in its read sizes until EOF;
/// returns what came back.
fn exchange(server: &RunningServer, s: &Stream) -> Result<(Vec<u8>, Vec<u8>), TestCaseError> {
    let data = Rng::seeded(s.seed).bytes(s.len);
    let mut reader = connect(server.addr);
    let mut writer = reader
        .try_clone()
        .map_err(|e| TestCaseError::fail(format!("clone the socket: {e}")))?;
    let (to_send, writes) = (data.clone(), s.writes.clone());
    let sender = thread::spawn(move || -> std::io::Result<()> {
        let mut off = 0;
        for &n in writes.iter().cycle() {
            if off == to_send.len() {
                break;
            }
            let n = n.min(to_send.len() - off);
            writer.write_all(&to_send[off..off + n])?;
            off += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut read_error = None;
    for &n in s.reads.iter().cycle() {
        match reader.read(&mut buf[..n]) {
            Ok(0) => break,
            Ok(got) => back.extend_from_slice(&buf[..got]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        // More than was sent: the server invents bytes; stop before the read times out.
        if back.len() > data.len() {
            break;
        }
    }
    let sent = sender
        .join()
        .map_err(|_| TestCaseError::fail("the writer panicked"))?;
    if let Err(e) = sent {
        return Err(TestCaseError::fail(format!("write: {e}")));
    }
    if let Some(e) = read_error {
        return Err(TestCaseError::fail(format!(
            "read after {} of {} bytes: {e}",
            back.len(),
            data.len()
        )));
    }
    Ok((data, back))
}

/// Where two byte strings first differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

mod cases {
    use super::*;

    /// Echo: every byte back, in order, then EOF, whatever the stream and its chunkings.
    pub fn random_streams_in_random_chunkings_echo_byte_for_byte(v: Variant) {
        common::watch_server_panics();
        let server = common::start(v.model, v.configure);
        let result = runner(32).run(&stream(), |s| {
            let (data, back) = exchange(&server, &s)?;
            prop_assert!(
                back == data,
                "{} bytes sent, {} back, first difference at byte {}",
                data.len(),
                back.len(),
                first_difference(&data, &back)
            );
            Ok(())
        });
        common::assert_no_server_panic();
        server.stop().unwrap();
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Discard: nothing back but the EOF, and the server counts every byte it read.
    pub fn random_streams_into_discard_get_nothing_back_and_are_all_read(v: Variant) {
        common::watch_server_panics();
        let server = common::start(v.model, |c| {
            (v.configure)(c);
            c.service = ServiceKind::Discard;
        });
        let result = runner(16).run(&stream(), |s| {
            // The previous case's bytes are all counted (or it failed, and this one is its
            // shrinking: counted from here either way).
            let before = server.stats.snapshot().bytes_in;
            let (data, back) = exchange(&server, &s)?;
            prop_assert!(back.is_empty(), "discard sent {} bytes", back.len());
            let read = || server.stats.snapshot().bytes_in - before;
            prop_assert!(
                eventually(Duration::from_secs(10), || read() == data.len() as u64),
                "the server read {} of {} bytes",
                read(),
                data.len()
            );
            Ok(())
        });
        common::assert_no_server_panic();
        server.stop().unwrap();
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

model_suite! {
    check: every_available_model_runs_random_streams, "the random stream suite";
    cases: [
        random_streams_in_random_chunkings_echo_byte_for_byte,
        random_streams_into_discard_get_nothing_back_and_are_all_read,
    ];
    every_model
}
