//! Helpers shared by the server's integration tests (each test file says `mod common;`): a
//! server on a free loopback port, blocking std clients with timeouts, a reproducible byte
//! stream, polling, and echo clients that check every byte.
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

/// TLS for the tests: a PKI made once per test binary, and a TLS client driven by hand over a
/// blocking std socket (rustls' `ClientConnection`, not `StreamOwned`, whose writes also read):
/// reading never writes and writing never reads, so a client that "never reads" really never
/// reads, and a connection can be split between a writer thread and a reader thread.
pub mod tls {
    use super::{try_connect, ClientsReport, Gate, Rng, CLIENT_TIMEOUT};
    use iomodels_core::rustls::pki_types::{CertificateDer, ServerName};
    use iomodels_core::rustls::{
        self, ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedProtocolVersion,
    };
    use iomodels_core::tls::pki::{Ca, Issued, Usage, Validity};
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::thread;

    /// The certificates every TLS test uses.
    pub struct TestPki {
        /// The CA the server and the clients trust.
        pub ca: CertificateDer<'static>,
        /// The server's certificate for `localhost` and `127.0.0.1`, from the CA.
        pub server: Issued,
        /// A client certificate from the CA (mutual TLS).
        pub client: Issued,
        /// A client certificate from a CA nobody here trusts.
        pub stranger: Issued,
        /// A server certificate from the CA for the right names, expired since 2002.
        pub expired_server: Issued,
        /// A current server certificate from the CA, for another host only.
        pub other_host_server: Issued,
    }

    /// The test PKI, made on first use.
    pub fn pki() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(|| {
            let names = ["localhost", "127.0.0.1"];
            let ca = Ca::new("iomodels test CA").expect("make the test CA");
            let unknown = Ca::new("a CA nobody trusts").expect("make the other CA");
            let issue = |ca: &Ca, names: &[&str], usage, validity| {
                ca.issue(names, usage, validity)
                    .expect("issue a test certificate")
            };
            TestPki {
                ca: ca.issued().cert.clone(),
                server: issue(&ca, &names, Usage::Server, Validity::Current),
                client: issue(&ca, &["client"], Usage::Client, Validity::Current),
                stranger: issue(&unknown, &["stranger"], Usage::Client, Validity::Current),
                expired_server: issue(&ca, &names, Usage::Server, Validity::Expired),
                other_host_server: issue(&ca, &["other.example"], Usage::Server, Validity::Current),
            }
        })
    }

    /// The test CA as a trust store.
    pub fn roots() -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(pki().ca.clone()).expect("the test CA is usable");
        roots
    }

    /// The server's TLS configuration: the test server certificate; with `mutual`, clients must
    /// present a certificate from the test CA.
    pub fn server_tls(mutual: bool) -> Arc<ServerConfig> {
        static PLAIN: OnceLock<Arc<ServerConfig>> = OnceLock::new();
        static MUTUAL: OnceLock<Arc<ServerConfig>> = OnceLock::new();
        let cell = if mutual { &MUTUAL } else { &PLAIN };
        Arc::clone(cell.get_or_init(|| server_tls_with(&pki().server, mutual.then(roots))))
    }

    /// A server configuration presenting `cert` (for the certificates a client must refuse).
    pub fn server_tls_with(
        cert: &Issued,
        client_roots: Option<RootCertStore>,
    ) -> Arc<ServerConfig> {
        iomodels_core::tls::server_config(cert.chain(), cert.key(), client_roots)
            .expect("a usable server configuration")
    }

    /// Which certificate a client presents.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Identity {
        /// None.
        Anonymous,
        /// The test client certificate, from the CA the server trusts.
        Trusted,
        /// A certificate from a CA the server does not know.
        Stranger,
    }

    /// Both TLS versions.
    pub const BOTH: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    /// TLS 1.2 only.
    pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
    /// TLS 1.3 only.
    pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

    /// A client configuration trusting the test CA, offering `versions`, presenting `identity`.
    pub fn client_tls(
        versions: &[&'static SupportedProtocolVersion],
        identity: Identity,
    ) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(iomodels_core::tls::provider())
            .with_protocol_versions(versions)
            .expect("the provider supports these versions")
            .with_root_certificates(roots());
        let cert = match identity {
            Identity::Anonymous => return Arc::new(builder.with_no_client_auth()),
            Identity::Trusted => &pki().client,
            Identity::Stranger => &pki().stranger,
        };
        Arc::new(
            builder
                .with_client_auth_cert(cert.chain(), cert.key())
                .expect("a usable client certificate"),
        )
    }

    /// A clock stopped in June 2001, when the expired test certificate was still valid.
    #[derive(Debug)]
    struct In2001;

    impl rustls::time_provider::TimeProvider for In2001 {
        fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
            Some(rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(991_353_600),
            ))
        }
    }

    /// A client like [`good_client`] whose clock says 2001: it accepts the expired test server
    /// certificate (the good client of a server presenting that one).
    pub fn client_in_2001() -> Arc<ClientConfig> {
        let provider = iomodels_core::tls::provider();
        let cert = &pki().client;
        Arc::new(
            ClientConfig::builder_with_details(provider, Arc::new(In2001))
                .with_protocol_versions(BOTH)
                .expect("the provider supports these versions")
                .with_root_certificates(roots())
                .with_client_auth_cert(cert.chain(), cert.key())
                .expect("a usable client certificate"),
        )
    }

    /// The usual client: both versions, the trusted client certificate (which a server that
    /// does not ask for one never sees).
    pub fn good_client() -> Arc<ClientConfig> {
        static GOOD: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        Arc::clone(GOOD.get_or_init(|| client_tls(BOTH, Identity::Trusted)))
    }

    /// The rustls error inside an I/O error from this module, if that is what it is.
    pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
        e.get_ref()?.downcast_ref::<rustls::Error>()
    }

    fn tls_io_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// True for the errors of a connection the peer reset or aborted.
    pub fn is_reset(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    }

    /// True for a read or write that ran into [`CLIENT_TIMEOUT`] (or a shorter timeout).
    pub fn is_timeout(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    }

    /// How the peer ended what it sent.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum End {
        /// Its `close_notify`.
        CloseNotify,
        /// The socket's end of stream with no `close_notify` first.
        Truncated,
    }

    /// Decrypted bytes waiting for the reader, and how the stream ended.
    #[derive(Default)]
    struct Received {
        plain: Vec<u8>,
        pos: usize,
        end: Option<End>,
    }

    impl Received {
        /// Moves everything rustls decrypted into `plain`.
        fn drain(&mut self, conn: &mut ClientConnection) -> io::Result<()> {
            if self.pos == self.plain.len() {
                self.plain.clear();
                self.pos = 0;
            }
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match conn.reader().read(&mut chunk) {
                    Ok(0) => {
                        self.end = Some(End::CloseNotify);
                        return Ok(());
                    }
                    Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.end = Some(End::Truncated);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        /// Gives ciphertext just read from the socket to rustls (`data` empty: the socket's
        /// end of stream) and keeps what it decrypts. A TLS error is returned as an
        /// `InvalidData` I/O error carrying the `rustls::Error`.
        fn feed(&mut self, conn: &mut ClientConnection, mut data: &[u8]) -> io::Result<()> {
            let eof = data.is_empty();
            loop {
                let n = conn.read_tls(&mut data)?;
                conn.process_new_packets().map_err(tls_io_error)?;
                self.drain(conn)?;
                // 0: the end of stream, or a close_notify after which rustls reads no more.
                if n == 0 || data.is_empty() {
                    break;
                }
            }
            if eof && self.end.is_none() {
                self.end = Some(End::Truncated);
            }
            Ok(())
        }

        /// Copies decrypted bytes into `buf`: `Some(n)` if there were some or the stream ended
        /// (`Some(0)` at `close_notify`), `None` if more must be read.
        fn take(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
            let ready = &self.plain[self.pos..];
            if !ready.is_empty() {
                let n = ready.len().min(buf.len());
                buf[..n].copy_from_slice(&ready[..n]);
                self.pos += n;
                return Some(Ok(n));
            }
            match self.end {
                Some(End::CloseNotify) => Some(Ok(0)),
                Some(End::Truncated) => Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server ended the stream without a close_notify",
                ))),
                None => None,
            }
        }
    }

    /// Everything rustls wants to send, encrypted, for one socket write.
    fn take_records(conn: &mut ClientConnection) -> io::Result<Vec<u8>> {
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire)?;
        }
        Ok(wire)
    }

    /// A TLS client connection on a blocking std socket with [`CLIENT_TIMEOUT`]s.
    pub struct TlsClient {
        conn: ClientConnection,
        sock: TcpStream,
        rx: Received,
    }

    impl TlsClient {
        /// Connects and completes the handshake, as `localhost`.
        pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
            let mut c = TlsClient::start(addr, config, "localhost")?;
            c.handshake()?;
            Ok(c)
        }

        /// Connects and completes the handshake, expecting the server to be `server_name`.
        pub fn connect_as(
            addr: SocketAddr,
            config: Arc<ClientConfig>,
            server_name: &str,
        ) -> io::Result<TlsClient> {
            let mut c = TlsClient::start(addr, config, server_name)?;
            c.handshake()?;
            Ok(c)
        }

        /// Connects without handshaking yet; the server is expected to be `server_name`.
        pub fn start(
            addr: SocketAddr,
            config: Arc<ClientConfig>,
            server_name: &str,
        ) -> io::Result<TlsClient> {
            let name = ServerName::try_from(server_name.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut conn = ClientConnection::new(config, name).map_err(tls_io_error)?;
            // Everything written is encrypted and sent at once: rustls must never short-write.
            conn.set_buffer_limit(None);
            Ok(TlsClient {
                conn,
                sock: try_connect(addr)?,
                rx: Received::default(),
            })
        }

        /// Runs the handshake to its end; a TLS error (ours or the server's alert) comes back
        /// as an `InvalidData` error carrying the `rustls::Error`, after our alert was sent.
        pub fn handshake(&mut self) -> io::Result<()> {
            // Each round sends a flight or reads one (or fails): a handshake has a few.
            for _ in 0..64 {
                if !self.conn.is_handshaking() {
                    return Ok(());
                }
                let wire = take_records(&mut self.conn)?;
                if !wire.is_empty() {
                    self.sock.write_all(&wire)?;
                    continue;
                }
                self.read_some()?;
                if self.rx.end.is_some() && self.conn.is_handshaking() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed during the handshake",
                    ));
                }
            }
            Err(io::Error::other(
                "the handshake did not finish in 64 rounds",
            ))
        }

        /// One socket read given to rustls. On a TLS error, rustls' alert is sent (last
        /// gasp) before the error is returned.
        fn read_some(&mut self) -> io::Result<()> {
            let mut buf = [0u8; 32 * 1024];
            let n = read_retrying(&mut self.sock, &mut buf)?;
            if let Err(e) = self.rx.feed(&mut self.conn, &buf[..n]) {
                if let Ok(alert) = take_records(&mut self.conn) {
                    let _ = self.sock.write_all(&alert);
                }
                return Err(e);
            }
            // Anything the handshake still owes (our Finished after the server's flight).
            let wire = take_records(&mut self.conn)?;
            if !wire.is_empty() {
                self.sock.write_all(&wire)?;
            }
            Ok(())
        }

        /// The rustls connection (negotiated version, cipher suite...).
        pub fn conn(&self) -> &ClientConnection {
            &self.conn
        }

        /// The socket.
        pub fn sock(&self) -> &TcpStream {
            &self.sock
        }

        /// Sends our `close_notify`: we will send no more.
        pub fn close_notify(&mut self) -> io::Result<()> {
            self.conn.send_close_notify();
            let wire = take_records(&mut self.conn)?;
            self.sock.write_all(&wire)
        }

        /// Reads until the server's `close_notify`: what came before it; an error if the
        /// stream ended without one.
        pub fn read_to_close_notify(&mut self) -> io::Result<Vec<u8>> {
            let mut all = Vec::new();
            self.read_to_end(&mut all)?;
            Ok(all)
        }

        /// Splits the connection into a writer and a reader that can run on two threads.
        pub fn split(self) -> io::Result<(TlsWriter, TlsReader)> {
            let shared = Arc::new(Mutex::new(self.conn));
            Ok((
                TlsWriter {
                    conn: Arc::clone(&shared),
                    sock: self.sock.try_clone()?,
                },
                TlsReader {
                    conn: shared,
                    sock: self.sock,
                    rx: self.rx,
                },
            ))
        }
    }

    impl Read for TlsClient {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.rx.drain(&mut self.conn)?;
            // Each round reads the socket: it makes progress, times out or ends.
            loop {
                if let Some(r) = self.rx.take(buf) {
                    return r;
                }
                self.read_some()?;
            }
        }
    }

    impl Write for TlsClient {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.conn.writer().write_all(buf)?;
            let wire = take_records(&mut self.conn)?;
            self.sock.write_all(&wire)?;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The writing half of a split [`TlsClient`].
    pub struct TlsWriter {
        conn: Arc<Mutex<ClientConnection>>,
        sock: TcpStream,
    }

    impl TlsWriter {
        /// Sends our `close_notify`.
        pub fn close_notify(&mut self) -> io::Result<()> {
            let wire = {
                let mut conn = self.conn.lock().unwrap();
                conn.send_close_notify();
                take_records(&mut conn)?
            };
            self.sock.write_all(&wire)
        }

        /// The socket (for timeouts, shutdown).
        pub fn sock(&self) -> &TcpStream {
            &self.sock
        }
    }

    impl Write for TlsWriter {
        /// Encrypts under the lock, sends outside it: only this half writes to the socket, so
        /// records go out in the order they were made.
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let wire = {
                let mut conn = self.conn.lock().unwrap();
                conn.writer().write_all(buf)?;
                take_records(&mut conn)?
            };
            self.sock.write_all(&wire)?;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The reading half of a split [`TlsClient`].
    pub struct TlsReader {
        conn: Arc<Mutex<ClientConnection>>,
        sock: TcpStream,
        rx: Received,
    }

    /// A socket read that retries when a signal interrupts it (EINTR says "call again", as
    /// `read_exact` treats it; a CI run once saw it on a client thread of this process).
    fn read_retrying(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match sock.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    impl Read for TlsReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut wire = [0u8; 32 * 1024];
            self.rx.drain(&mut self.conn.lock().unwrap())?;
            loop {
                if let Some(r) = self.rx.take(buf) {
                    return r;
                }
                // Blocking read outside the lock: the writer keeps writing meanwhile.
                let n = read_retrying(&mut self.sock, &mut wire)?;
                self.rx.feed(&mut self.conn.lock().unwrap(), &wire[..n])?;
            }
        }
    }

    /// Echoes `data` through a TLS connection, written by a thread of its own in chunks of 1
    /// to `max_chunk` bytes (sizes from `Rng(chunk_seed)`) and ended with our `close_notify`
    /// while this one reads; returns what came back before the server's `close_notify`.
    pub fn tls_echo_through(
        client: TlsClient,
        data: Vec<u8>,
        chunk_seed: u64,
        max_chunk: usize,
    ) -> io::Result<Vec<u8>> {
        let (mut writer, mut reader) = client.split()?;
        let sender = thread::spawn(move || -> io::Result<()> {
            let mut rng = Rng(chunk_seed);
            let mut off = 0;
            while off < data.len() {
                let n = (1 + rng.next() as usize % max_chunk).min(data.len() - off);
                writer.write_all(&data[off..off + n])?;
                off += n;
            }
            writer.close_notify()
        });
        let mut echoed = Vec::new();
        let read = reader.read_to_end(&mut echoed);
        sender
            .join()
            .map_err(|_| io::Error::other("the writer panicked"))??;
        read?;
        Ok(echoed)
    }

    /// `conns` TLS clients, a thread each: all connect and finish their handshakes, meet at a
    /// gate (so all are open at once; a client that failed still arrives), then each echoes
    /// `messages` messages of `size` bytes two deep checking every byte, sends its
    /// `close_notify` and must get the server's, with nothing after its echoes.
    pub fn tls_clients(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        conns: usize,
        messages: u64,
        size: usize,
    ) -> ClientsReport {
        let gate = Arc::new(Gate::new(conns));
        let threads: Vec<_> = (0..conns)
            .map(|i| {
                let gate = Arc::clone(&gate);
                let config = Arc::clone(&config);
                thread::Builder::new()
                    .stack_size(1 << 20)
                    .spawn(move || -> Result<(u64, u64), String> {
                        let client = TlsClient::connect(addr, config)
                            .map_err(|e| format!("client {i}: connect and handshake: {e}"));
                        gate.arrive_and_wait(CLIENT_TIMEOUT * 3);
                        let mut s = client?;
                        s.sock().set_nodelay(true).unwrap();
                        let (done, mismatches) = super::echo_two_deep(&mut s, i, messages, size)?;
                        s.close_notify()
                            .map_err(|e| format!("client {i}: close_notify: {e}"))?;
                        let rest = s
                            .read_to_close_notify()
                            .map_err(|e| format!("client {i}: read to close_notify: {e}"))?;
                        if !rest.is_empty() {
                            return Err(format!(
                                "client {i}: {} bytes after its echoes",
                                rest.len()
                            ));
                        }
                        Ok((done, mismatches))
                    })
                    .expect("spawn a client thread")
            })
            .collect();
        ClientsReport::collect(threads)
    }

    /// A good TLS client echoing on a thread of its own, 512-byte messages with a short pause
    /// between them, from before a bad input or an attack until [`Bystander::finish`]; bounded
    /// to two minutes whatever happens.
    pub struct Bystander {
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: thread::JoinHandle<Result<u64, String>>,
    }

    impl Bystander {
        /// Connects and handshakes as a client of `server_name` (waiting for that), then
        /// echoes in the background.
        pub fn start(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> Bystander {
            use std::sync::atomic::{AtomicBool, Ordering};
            let stop = Arc::new(AtomicBool::new(false));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (name, flag) = (server_name.to_string(), Arc::clone(&stop));
            let thread = thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || -> Result<u64, String> {
                    let client = TlsClient::connect_as(addr, config, &name);
                    let _ = ready_tx.send(client.is_ok());
                    let mut s = client.map_err(|e| format!("bystander: connect: {e}"))?;
                    let mut rng = Rng::seeded(77);
                    let mut back = [0u8; 512];
                    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
                    let mut echoed = 0u64;
                    while std::time::Instant::now() < end
                        && !(flag.load(Ordering::SeqCst) && echoed > 0)
                    {
                        let msg = rng.bytes(back.len());
                        s.write_all(&msg)
                            .map_err(|e| format!("bystander: send #{echoed}: {e}"))?;
                        s.read_exact(&mut back)
                            .map_err(|e| format!("bystander: recv #{echoed}: {e}"))?;
                        if back[..] != msg[..] {
                            return Err(format!("bystander: echo #{echoed} differs"));
                        }
                        echoed += 1;
                        thread::sleep(std::time::Duration::from_millis(5));
                    }
                    s.close_notify()
                        .map_err(|e| format!("bystander: close_notify: {e}"))?;
                    let rest = s
                        .read_to_close_notify()
                        .map_err(|e| format!("bystander: read to close_notify: {e}"))?;
                    if !rest.is_empty() {
                        return Err(format!("bystander: {} bytes after its echoes", rest.len()));
                    }
                    Ok(echoed)
                })
                .expect("spawn the bystander");
            let ready = ready_rx.recv_timeout(CLIENT_TIMEOUT * 2);
            assert!(
                ready == Ok(true),
                "the bystander could not connect: {:?}",
                thread.join()
            );
            Bystander { stop, thread }
        }

        /// Stops it after one more echo at least and returns how many it echoed; fails the
        /// test if it was not served throughout.
        pub fn finish(self) -> u64 {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let echoed = self
                .thread
                .join()
                .expect("the bystander panicked")
                .unwrap_or_else(|e| {
                    panic!("the good client beside the bad input was disturbed: {e}")
                });
            assert!(echoed > 0);
            echoed
        }
    }

    /// One TLS client that echoes `msg`, closes with `close_notify` and checks the server's;
    /// fails the test otherwise.
    pub fn tls_ping(addr: SocketAddr, config: Arc<ClientConfig>, msg: &[u8]) {
        tls_ping_as(addr, config, "localhost", msg)
    }

    /// [`tls_ping`] to a server expected to be `server_name`.
    pub fn tls_ping_as(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str, msg: &[u8]) {
        let mut s =
            TlsClient::connect_as(addr, config, server_name).expect("TLS connect and handshake");
        s.write_all(msg).expect("send");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("read the echo");
        assert_eq!(back, msg, "the echo differs");
        s.close_notify().expect("send close_notify");
        let rest = s
            .read_to_close_notify()
            .expect("read to the server's close_notify");
        assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    }

    /// Reads raw bytes until the end of stream, a reset or an error: what came, and how it
    /// ended (`Ok(())` for a clean end of stream). More than 1 MiB is an error too.
    pub fn read_raw_to_end(mut s: impl Read) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if got.len() > 1 << 20 {
                return (got, Err(io::Error::other("more than 1 MiB, and no end")));
            }
            match s.read(&mut buf) {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (got, Err(e)),
            }
        }
    }

    /// Splits raw bytes into TLS records `(content type, body)`; `Err` if they are not whole
    /// records.
    pub fn records(mut wire: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            if wire.len() < 5 {
                return Err(format!("{} bytes, not a record header", wire.len()));
            }
            let len = u16::from_be_bytes([wire[3], wire[4]]) as usize;
            if wire.len() < 5 + len {
                return Err(format!("a record of {len} bytes cut at {}", wire.len() - 5));
            }
            out.push((wire[0], wire[5..5 + len].to_vec()));
            wire = &wire[5 + len..];
        }
        Ok(out)
    }

    /// The first flight of a client (its ClientHello records), as bytes to send by hand.
    pub fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).expect("a client connection");
        take_records(&mut conn).expect("write the ClientHello")
    }

    /// Shuts the write side of `s` and reads what is left until it ends (bounded by the
    /// socket's read timeout), so that closing `s` afterwards sends a FIN, not a reset.
    pub fn finish_raw(mut s: TcpStream) -> Vec<u8> {
        let _ = s.shutdown(Shutdown::Write);
        read_raw_to_end(&mut s).0
    }
}

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
/// `every_model` in place of the list runs the suite on every model (and, on Linux,
/// completion-port's hand-off mode, and completion-port on ordinary descriptors: its default
/// is direct descriptors where the kernel has them).
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
    // Every model, completion-port's hand-off accept mode and its fallback to ordinary
    // descriptors on Linux: what each suite runs.
    (check: $check:ident, $suite:literal; cases: $cases:tt; every_model) => {
        $crate::model_suite! {
            check: $check, $suite;
            cases: $cases;
            blocking => iomodels_server::Model::Blocking;
            select => iomodels_server::Model::Select;
            event_select => iomodels_server::Model::EventSelect;
            overlapped_event => iomodels_server::Model::OverlappedEvent;
            overlapped_routine => iomodels_server::Model::OverlappedRoutine;
            async_select => iomodels_server::Model::AsyncSelect;
            completion_port => iomodels_server::Model::CompletionPort;
            #[cfg(target_os = "linux")]
            completion_port_handoff => iomodels_server::Model::CompletionPort, |c| {
                c.workers = Some(2);
                c.accept_mode = iomodels_server::AcceptMode::Handoff;
            };
            #[cfg(target_os = "linux")]
            completion_port_ordinary => iomodels_server::Model::CompletionPort, |c| {
                c.direct_descriptors = iomodels_server::DirectDescriptors::Off;
            };
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
