//! Helpers shared by the server's integration tests (each test file says `mod common;`): a
//! server on a free loopback port, blocking std clients with timeouts, the reproducible byte
//! stream and the bounded waits of `crates/testkit`, and echo clients that check every byte;
//! in `tls.rs`, the test PKI and a TLS client driven by hand; in `writing.rs`, a client that
//! leaves the server writing to it.
//!
//! Std sockets and a thread per client, so the same client code runs on Linux and on Windows
//! under Wine (where the mio-based load generator does not run).

// Each test binary uses a part of this module.
#![allow(dead_code)]

use iomodels_server::{Model, RunningServer, Server, ServerConfig, StatsSnapshot};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A client call (connect, read, write) that takes longer than this means the server is stuck:
/// the call fails instead of hanging the test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `model` on a free loopback port with a 10 s drain timeout, `tweak` applied last.
pub fn start(model: Model, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        model,
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    Server::bind(config)
        .expect("bind a loopback port")
        .spawn()
        .expect("spawn the server thread")
}

/// Connects to `addr`, with [`CLIENT_TIMEOUT`] on the connect and on every read and write.
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(s)
}

/// [`try_connect`], failing the test if it fails.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).expect("connect to the server")
}

/// The seeded byte stream and the bounded wait every test crate shares (`crates/testkit`).
pub use iomodels_testkit::{eventually, Rng};

/// Polls the server's stats until `done` holds and returns them, or fails the test (naming
/// `what`) after `within`.
pub fn wait_for(
    server: &RunningServer,
    within: Duration,
    what: &str,
    done: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let mut last = server.stats.snapshot();
    let held = eventually(within, || {
        last = server.stats.snapshot();
        done(&last)
    });
    assert!(held, "timed out waiting for {what}: {last:?}");
    last
}

/// Sends `messages` messages of `size` bytes from [`Rng::seeded`]`(seed)` one at a time and
/// checks each echo byte for byte.
pub fn echo_messages(s: &mut TcpStream, seed: u64, messages: usize, size: usize) -> io::Result<()> {
    let mut rng = Rng::seeded(seed);
    let mut back = vec![0u8; size];
    for m in 0..messages {
        let msg = rng.bytes(size);
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if back != msg {
            return Err(io::Error::other(format!(
                "client {seed}: message {m} came back different"
            )));
        }
    }
    Ok(())
}

/// Sends `msg` and checks that exactly it comes back.
pub fn ping(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("send");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg, "the echo differs");
}

/// Writes all of `data`, shuts the write side and returns what came back until EOF. Everything
/// is written before anything is read: for data the socket buffers can hold.
pub fn send_and_close(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).expect("send");
    s.shutdown(Shutdown::Write).expect("shut the write side");
    let mut echoed = Vec::new();
    s.read_to_end(&mut echoed).expect("read to EOF");
    echoed
}

/// [`send_and_close`], checking that exactly `data` came back before the EOF.
pub fn check_echo_then_eof(s: &mut TcpStream, data: &[u8]) {
    check_echo(&send_and_close(s, data), data);
}

/// Fails the test unless `echoed` is exactly `data`.
pub fn check_echo(echoed: &[u8], data: &[u8]) {
    assert!(
        echoed == data,
        "{} bytes sent: got {} bytes back{}",
        data.len(),
        echoed.len(),
        if echoed.len() == data.len() {
            ", different"
        } else {
            ""
        }
    );
}

/// Closes `s` with SO_LINGER 0: a reset (RST) instead of a FIN, whatever is unread dropped.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(s);
}

/// Writes `data` from a thread of its own with `write`, then shuts the write side; returns what
/// came back until EOF. Reading and writing at once, so neither side's buffers can deadlock the
/// test.
pub fn echo_through(
    s: TcpStream,
    data: Vec<u8>,
    write: impl FnOnce(&mut TcpStream, &[u8]) + Send + 'static,
) -> Vec<u8> {
    let mut writer = s.try_clone().unwrap();
    let mut reader = s;
    let sender = thread::spawn(move || {
        write(&mut writer, &data);
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let read = reader.read_to_end(&mut echoed);
    sender.join().expect("the writer failed");
    read.expect("read the echo to EOF");
    echoed
}

/// Writes `data` in chunks of 1 to `max_chunk` bytes, their sizes drawn from `Rng(seed)`.
pub fn write_in_random_chunks(w: &mut TcpStream, data: &[u8], seed: u64, max_chunk: usize) {
    let mut rng = Rng(seed);
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.next() as usize % max_chunk).min(data.len() - off);
        w.write_all(&data[off..off + n]).expect("write a chunk");
        off += n;
    }
}

/// Echoes `data` through `s`, written by a thread of its own in chunks of 1 to `max_chunk`
/// bytes (their sizes from `Rng(chunk_seed)`) while this one reads, and checks that every byte
/// came back, in order.
pub fn check_random_chunks_echo(s: TcpStream, data: &[u8], chunk_seed: u64, max_chunk: usize) {
    let echoed = echo_through(s, data.to_vec(), move |w, d| {
        write_in_random_chunks(w, d, chunk_seed, max_chunk)
    });
    assert_eq!(echoed.len(), data.len(), "echoed length");
    assert!(echoed == data, "echoed bytes differ from what was sent");
}

/// A case that more than one file runs: 4 MiB written in random chunks of 1 byte to 64 KiB by
/// one thread while another reads comes back byte for byte. Stops the server.
pub fn check_4_mib_echo_in_random_chunks(server: RunningServer) {
    let data = Rng(0x1234_5678).bytes(4 << 20);
    check_random_chunks_echo(connect(server.addr), &data, 42, 65536);
    server.stop().unwrap();
}

/// What a group of [`clients`] saw.
#[derive(Debug, Default)]
pub struct ClientsReport {
    pub conns_established: usize,
    pub messages: u64,
    pub mismatches: u64,
    pub errors: Vec<String>,
}

impl ClientsReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.errors.is_empty()
    }

    /// Joins client threads that each returned (messages, mismatches) or an error.
    pub fn collect(threads: Vec<thread::JoinHandle<Result<(u64, u64), String>>>) -> ClientsReport {
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
}

/// `conns` clients, a thread each, each echoing `messages` messages of `size` bytes two deep
/// (the next message is sent before the previous echo is read) and checking every byte, then
/// shutting its write side: the server must answer with EOF, nothing after the echoes.
pub fn clients(addr: SocketAddr, conns: usize, messages: u64, size: usize) -> ClientsReport {
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(u64, u64), String> {
                    let mut s =
                        try_connect(addr).map_err(|e| format!("client {i}: connect: {e}"))?;
                    s.set_nodelay(true).unwrap();
                    let (done, mismatches) = echo_two_deep(&mut s, i, messages, size)?;
                    s.shutdown(Shutdown::Write)
                        .map_err(|e| format!("client {i}: shutdown: {e}"))?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest)
                        .map_err(|e| format!("client {i}: read to EOF: {e}"))?;
                    if !rest.is_empty() {
                        return Err(format!("client {i}: {} bytes after its echoes", rest.len()));
                    }
                    Ok((done, mismatches))
                })
                .expect("spawn a client thread")
        })
        .collect();
    ClientsReport::collect(threads)
}

/// One client's exchange for [`clients`] and the TLS clients: `messages` messages of `size`
/// bytes from client `i`'s own stream, two deep, every echo checked. Returns the messages
/// echoed and how many came back different.
pub fn echo_two_deep(
    s: &mut (impl Read + Write),
    i: usize,
    messages: u64,
    size: usize,
) -> Result<(u64, u64), String> {
    let mut rng = Rng(0x9e37_79b9 ^ (i as u64 + 1));
    let sent: Vec<Vec<u8>> = (0..messages).map(|_| rng.bytes(size)).collect();
    let (mut done, mut mismatches) = (0u64, 0u64);
    let mut buf = vec![0u8; size];
    for m in sent.iter().take(2) {
        s.write_all(m)
            .map_err(|e| format!("client {i}: send: {e}"))?;
    }
    for k in 0..sent.len() {
        s.read_exact(&mut buf)
            .map_err(|e| format!("client {i}: recv #{k}: {e}"))?;
        if buf != sent[k] {
            mismatches += 1;
        }
        done += 1;
        if let Some(next) = sent.get(k + 2) {
            s.write_all(next)
                .map_err(|e| format!("client {i}: send: {e}"))?;
        }
    }
    Ok((done, mismatches))
}

/// A barrier that cannot deadlock: [`Gate::arrive_and_wait`] returns once `n` threads have
/// arrived or after a time limit, whichever comes first. A client that fails still arrives, so
/// the others are not kept waiting for it.
pub struct Gate {
    arrived: Mutex<usize>,
    all_in: Condvar,
    n: usize,
}

impl Gate {
    pub fn new(n: usize) -> Gate {
        Gate {
            arrived: Mutex::new(0),
            all_in: Condvar::new(),
            n,
        }
    }

    /// Arrives and waits for the others, at most `limit`; true if all arrived.
    pub fn arrive_and_wait(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        if *arrived >= self.n {
            self.all_in.notify_all();
            return true;
        }
        while *arrived < self.n {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            arrived = self.all_in.wait_timeout(arrived, end - now).unwrap().0;
        }
        true
    }
}

/// Server threads, by the names the models give them.
fn is_server_thread(name: &str) -> bool {
    [
        "iomodels-",
        "cp-worker-",
        "iocp-worker-",
        "routine-acceptor",
        "client-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name.contains("-group-")
}

/// The process's resources, shared by the cases of a test binary running in parallel: most
/// cases take it [`shared`]; a case that counts the process's descriptors, or holds thousands
/// of sockets, runs [`alone`]. Either also starts counting panics of server threads (checked
/// at stop).
static PROCESS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    watch_server_panics();
    // A case that failed while holding it poisons it; the others still run.
    PROCESS.read().unwrap_or_else(|e| e.into_inner())
}

/// [`shared`]'s other side, with the descriptor limit raised to the hard one: both ends of
/// every connection a heavy case opens are in this process.
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    watch_server_panics();
    let guard = PROCESS.write().unwrap_or_else(|e| e.into_inner());
    let _ = iomodels_server::sys::raise_nofile_limit();
    guard
}

/// How many connections past the cap the variant may admit in a race: `completion-port` with
/// a listener per worker (`SO_REUSEPORT`) keeps one accept posted per worker within the room
/// each sees, so two workers can both take the last place.
pub fn cap_slack(v: Variant) -> usize {
    let mut c = ServerConfig {
        model: v.model,
        ..ServerConfig::default()
    };
    (v.configure)(&mut c);
    if cfg!(target_os = "linux")
        && c.model == Model::CompletionPort
        && c.accept_mode == iomodels_server::AcceptMode::ReusePort
    {
        let workers = c
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        workers.saturating_sub(1)
    } else {
        0
    }
}

static SERVER_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts counting panics on server threads (once per test binary). A panic on a thread the
/// server spawned for a client (the `blocking` model's) would otherwise go unnoticed: the
/// server's own thread, whose panic `RunningServer::stop` reports, lives on.
pub fn watch_server_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if thread::current().name().is_some_and(is_server_thread) {
                SERVER_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            default(info)
        }));
    });
}

/// Fails the test if any server thread panicked since [`watch_server_panics`] (in any test of
/// this binary: they share the process).
pub fn assert_no_server_panic() {
    let n = SERVER_PANICS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        n, 0,
        "{n} server thread(s) panicked (see the panic messages above)"
    );
}

// Each test binary uses a part of this module.
#[allow(unused_imports)]
pub use self::tls::*;

pub mod writing;

pub mod tls;

/// A model with its configuration: what one generated module of a suite runs.
#[derive(Clone, Copy)]
pub struct Variant {
    pub model: Model,
    pub configure: fn(&mut ServerConfig),
}

impl Variant {
    /// Starts the variant with [`start`], `tweak` applied after the variant's own settings.
    pub fn start(self, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
        start(self.model, |c| {
            (self.configure)(c);
            tweak(c);
        })
    }

    /// [`Variant::start`] serving UDP beside TCP.
    pub fn start_udp(self, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
        self.start(|c| {
            c.udp = true;
            tweak(c);
        })
    }
}

/// A suite run for every model: for each variant listed, a module (`blocking`, `select`, ...)
/// with one `#[test]` per case, each calling `cases::CASE(MODEL)`; and a test named `$check`
/// that fails if a model available here is missing from the list (so a new model cannot go
/// untested) or one listed is not available.
///
/// A case may carry attributes (`#[cfg(target_os = "linux")] case`): a case for one OS only.
///
/// `every_model` in place of the list runs the suite on every model of the table
/// (`iomodels_server::for_each_model!`, a module each named after the model's module) and, on
/// Linux, completion-port's hand-off mode and completion-port on ordinary descriptors (its
/// default is direct descriptors where the kernel has them); `every_model; VARIANTS` adds
/// variants of its own, listed as above.
///
/// ```ignore
/// model_suite! {
///     check: every_available_model_runs_the_suite, "the conformance suite";
///     cases: [small_echo, discard_reads_everything_and_sends_nothing];
///     blocking => Model::Blocking;
///     #[cfg(target_os = "linux")]
///     completion_port_handoff => Model::CompletionPort, |c| c.workers = Some(2);
/// }
/// ```
#[macro_export]
macro_rules! model_suite {
    (check: $check:ident, $suite:literal; cases: $cases:tt; every_model $(; $($extra:tt)*)?) => {
        iomodels_server::for_each_model!($crate::model_suite! {
            @every_model check: $check, $suite; cases: $cases; extra: { $($($extra)*)? };
        });
    };
    // Every model of the table, completion-port's hand-off accept mode and its fallback to
    // ordinary descriptors on Linux: what each suite runs; then the suite's own variants.
    (
        @every_model check: $check:ident, $suite:literal; cases: $cases:tt;
        extra: { $($extra:tt)* };
        models: [$($(#[$doc:meta])* $variant:ident, $name:literal, $module:ident;)*]
    ) => {
        $crate::model_suite! {
            check: $check, $suite;
            cases: $cases;
            $($module => iomodels_server::Model::$variant;)*
            #[cfg(target_os = "linux")]
            completion_port_handoff => iomodels_server::Model::CompletionPort, |c| {
                c.workers = Some(2);
                c.accept_mode = iomodels_server::AcceptMode::Handoff;
            };
            #[cfg(target_os = "linux")]
            completion_port_ordinary => iomodels_server::Model::CompletionPort, |c| {
                c.direct_descriptors = iomodels_server::DirectDescriptors::Off;
            };
            $($extra)*
        }
    };
    (
        check: $check:ident, $suite:literal;
        cases: $cases:tt;
        $($(#[$attr:meta])* $name:ident => $model:expr $(, $configure:expr)?;)*
    ) => {
        $(
            $(#[$attr])*
            mod $name {
                use super::*;
                #[allow(unused_mut, unused_assignments)]
                const MODEL: $crate::common::Variant = {
                    let mut v = $crate::common::Variant { model: $model, configure: |_| {} };
                    $(v.configure = $configure;)?
                    v
                };
                $crate::model_suite!(@cases $cases);
            }
        )*

        /// A model that becomes available without a line above would go untested: fail instead.
        #[test]
        fn $check() {
            let covered = [$($(#[$attr])* $model),*];
            for m in iomodels_server::Model::available() {
                assert!(covered.contains(&m), "model {m} is available but not in {}", $suite);
            }
            for m in covered {
                assert!(m.is_available(), "model {m} is in {} but not available: {:?}", $suite, m.availability());
            }
        }
    };
    (@cases [$($(#[$case_attr:meta])* $case:ident),* $(,)?]) => {
        $($(#[$case_attr])* #[test] fn $case() { cases::$case(MODEL) })*
    };
}
