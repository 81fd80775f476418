//! TLS for the tests: a PKI made once per test binary, and a TLS client driven by hand over a
//! blocking std socket (rustls' `ClientConnection`, not `StreamOwned`, whose writes also read):
//! reading never writes and writing never reads, so a client that "never reads" really never
//! reads, and a connection can be split between a writer thread and a reader thread.

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
pub fn server_tls_with(cert: &Issued, client_roots: Option<RootCertStore>) -> Arc<ServerConfig> {
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
pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
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
                        return Err(format!("client {i}: {} bytes after its echoes", rest.len()));
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
            .unwrap_or_else(|e| panic!("the good client beside the bad input was disturbed: {e}"));
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
