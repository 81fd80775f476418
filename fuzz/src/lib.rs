//! The fuzz harness for the sans-I/O core: a model and a peer played by the fuzzer's bytes.
//!
//! Two entry points, one per cargo-fuzz target (`fuzz_targets/`):
//!
//! * [`chunked`]: a plaintext echo or discard [`Connection`], fed a byte stream in chunks whose
//!   sizes the input chooses, with output drained in sizes it chooses (readiness sends or
//!   completion sends), and the peer's end of stream at a point it chooses. After every step
//!   the invariants the core documents are checked: echo's output is exactly the input, in
//!   order (every byte fed is sent, in flight or pending, none twice); discard holds and sends
//!   nothing; unsent output never exceeds the high-water mark while the model keeps to the read
//!   budget; the budget is 0 exactly when paused, after end of stream or after the write
//!   shutdown; the write shutdown is asked for exactly when input is over and nothing is owed.
//!   At the end the exchange is finished, and must finish.
//! * [`tls`]: a TLS echo [`Connection`] fed arbitrary bytes as ciphertext — alone, after a real
//!   ClientHello (one byte possibly flipped), or after a whole handshake with a real rustls
//!   client — in chunks the input chooses, within the read budget. It must never panic, keep
//!   its output bounded, and end, once the socket's end of stream comes, in a TLS error or a
//!   clean state whose write side it then asks to shut.
//!
//! The byte stream of [`chunked`] is a function of its position ([`stream_byte`]), not fuzzer
//! input: the input spends itself on chunkings, so a few hundred bytes of it move megabytes,
//! and a byte sent out of place is caught where it is sent.
//!
//! `crates/core/tests/fuzz_harness.rs` includes this file (`#[path]`) and runs both entry points
//! on fixed and random inputs in `cargo test`, so the harness is built, linted and exercised with
//! the workspace even though the fuzz crate is not part of it.

use arbitrary::Unstructured;
use iomodels_core::rustls::pki_types::ServerName;
use iomodels_core::rustls::{self, ClientConnection, RootCertStore, ServerConfig};
use iomodels_core::tls::{client_config, pki, server_config, MAX_RECORD_WIRE_LEN};
use iomodels_core::{Connection, Limits, ServiceKind};
use std::sync::{Arc, OnceLock};

/// Byte `i` of the stream [`chunked`] feeds: position-dependent, so a byte lost, repeated or
/// moved is a mismatch.
pub fn stream_byte(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (i >> 8) as u8
}

/// A chunk size: the input picks a scale, then a size in it, so 1-byte chunks and 1 MiB ones
/// are both easy to reach.
fn size(u: &mut Unstructured<'_>) -> usize {
    let max = match u.arbitrary::<u8>().unwrap_or(0) % 4 {
        0 => 16,
        1 => 1500,
        2 => 64 * 1024,
        _ => 1 << 20,
    };
    u.int_in_range(0..=max).unwrap_or(0)
}

/// Backpressure limits chosen by the input: a high-water mark from 1 byte to 256 KiB, its
/// default quarter as low water or any low water below it.
fn limits(u: &mut Unstructured<'_>) -> Limits {
    let hw = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => u.int_in_range(0..=64).unwrap_or(0),
        1 => u.int_in_range(0..=16 * 1024).unwrap_or(0),
        _ => u.int_in_range(0..=256 * 1024).unwrap_or(0),
    };
    let mut limits = Limits::with_high_water(hw);
    if u.arbitrary::<bool>().unwrap_or(false) {
        limits.low_water = u.int_in_range(0..=limits.high_water - 1).unwrap_or(0);
    }
    limits
}

/// How the model sends: from the connection's buffer, or a buffer taken out for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendMode {
    /// `pending_output` + `on_sent`.
    Readiness,
    /// `take_output` + `on_send_complete`.
    Completion,
}

/// The model's side of one connection: the connection, its send in flight, and the bytes the
/// peer has received.
struct Model {
    conn: Connection,
    mode: SendMode,
    limits: Limits,
    /// Completion mode: the unsent rest of the buffer handed to the "kernel".
    in_flight: Vec<u8>,
    /// Bytes the peer received, in order.
    sent: Vec<u8>,
    /// The model called `on_peer_eof`.
    eof: bool,
    /// The model called `on_write_shutdown`.
    write_shut: bool,
}

impl Model {
    fn new(conn: Connection, mode: SendMode, limits: Limits) -> Model {
        Model {
            conn,
            mode,
            limits,
            in_flight: Vec::new(),
            sent: Vec::new(),
            eof: false,
            write_shut: false,
        }
    }

    /// One send of at most `n` bytes: readiness sends from the buffer; completion completes
    /// part of the buffer in flight, or posts one if none is.
    fn send(&mut self, n: usize) {
        match self.mode {
            SendMode::Readiness => {
                let n = n.min(self.conn.pending_output().len());
                self.sent
                    .extend_from_slice(&self.conn.pending_output()[..n]);
                self.conn.on_sent(n);
            }
            SendMode::Completion => {
                if self.in_flight.is_empty() {
                    if self.conn.wants_write() {
                        let spare = Vec::with_capacity(n.min(4096));
                        self.in_flight = self.conn.take_output(spare);
                        assert!(self.conn.send_in_flight());
                        assert!(!self.conn.wants_write(), "everything was handed out");
                    }
                } else {
                    let n = n.min(self.in_flight.len());
                    self.sent.extend_from_slice(&self.in_flight[..n]);
                    self.in_flight.drain(..n);
                    self.conn.on_send_complete(n);
                }
            }
        }
    }

    /// Sends everything owed.
    fn drain(&mut self) {
        while self.conn.pending_len() > 0 {
            self.send(usize::MAX);
        }
        assert!(self.in_flight.is_empty());
    }

    /// What a model does after every turn: shut the write side when the connection asks.
    fn maybe_shutdown(&mut self) {
        if self.conn.should_shutdown_write() {
            self.conn.on_write_shutdown();
            self.write_shut = true;
        }
    }

    fn eof(&mut self) {
        if !self.eof {
            self.conn.on_peer_eof();
            self.eof = true;
        }
    }

    /// The invariants of the calling protocol that hold for plaintext and TLS alike.
    fn check_protocol(&self) {
        let c = &self.conn;
        assert_eq!(
            c.pending_len(),
            c.pending_output().len() + self.in_flight.len(),
            "pending = buffered + in flight"
        );
        assert_eq!(c.wants_write(), !c.pending_output().is_empty());
        assert_eq!(c.send_in_flight(), !self.in_flight.is_empty());
        assert_eq!(c.is_finished(), self.write_shut);
        assert_eq!(c.peer_eof(), self.eof);
        if c.is_backpressured() {
            assert!(
                c.pending_len() > self.limits.low_water,
                "paused with {} pending, at or below low water {}",
                c.pending_len(),
                self.limits.low_water
            );
        }
        let input_done = self.eof || c.tls_error().is_some() || c.tls_close_notify_received();
        if input_done || c.is_backpressured() || self.write_shut {
            assert_eq!(c.read_budget(), 0, "budget after input end or while paused");
        } else {
            assert!(
                c.pending_len() < self.limits.high_water,
                "not paused with {} pending, at or above high water {}",
                c.pending_len(),
                self.limits.high_water
            );
            assert_eq!(c.read_budget(), self.limits.high_water - c.pending_len());
        }
        assert_eq!(c.wants_read(), c.read_budget() > 0);
        assert_eq!(
            c.should_shutdown_write(),
            input_done && c.pending_len() == 0 && !self.write_shut
        );
    }
}

/// Echo or discard, over a chunking of input and output the fuzzer chooses; panics on a broken
/// invariant (see the crate docs).
pub fn chunked(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let kind = if u.arbitrary::<bool>().unwrap_or(false) {
        ServiceKind::Discard
    } else {
        ServiceKind::Echo
    };
    let mode = if u.arbitrary::<bool>().unwrap_or(false) {
        SendMode::Completion
    } else {
        SendMode::Readiness
    };
    let limits = limits(&mut u);
    let mut m = Model::new(Connection::new(kind, limits), mode, limits);
    let mut fed = 0usize;
    let mut checked = 0usize;
    let mut chunk = Vec::new();
    // Feeds `n` more bytes of the stream.
    let mut feed = |m: &mut Model, fed: &mut usize, n: usize| {
        chunk.clear();
        chunk.extend((*fed..*fed + n).map(stream_byte));
        m.conn.on_received(&chunk);
        *fed += n;
    };
    // At most 4,096 steps and 8 MiB, so one input cannot run for long.
    for _ in 0..4096 {
        if u.is_empty() || fed >= 8 << 20 {
            break;
        }
        let before = m.conn.pending_len();
        match u.arbitrary::<u8>().unwrap_or(0) % 8 {
            // A read within the budget (the usual case, hence weighted).
            0..=2 => {
                let n = size(&mut u).min(m.conn.read_budget());
                if n > 0 {
                    feed(&mut m, &mut fed, n);
                    assert!(
                        m.conn.pending_len() <= limits.high_water.max(before),
                        "{} pending after a read within the budget, high water {}",
                        m.conn.pending_len(),
                        limits.high_water
                    );
                }
            }
            3..=5 => m.send(size(&mut u)),
            6 => m.eof(),
            // A model that reads past the budget (none should): nothing is dropped, and
            // reading pauses once the mark is reached.
            _ => {
                let n = size(&mut u).min(64 * 1024);
                if !m.eof && !m.write_shut && n > 0 {
                    feed(&mut m, &mut fed, n);
                    if kind == ServiceKind::Echo {
                        assert_eq!(m.conn.pending_len(), before + n, "nothing dropped");
                    }
                    if m.conn.pending_len() >= limits.high_water {
                        assert!(m.conn.is_backpressured());
                    }
                }
            }
        }
        m.maybe_shutdown();
        m.check_protocol();
        check_stream(&m, kind, fed, &mut checked);
    }
    // The peer stops sending and reads everything: the connection must finish.
    m.eof();
    m.check_protocol();
    m.drain();
    m.check_protocol();
    if !m.write_shut {
        assert!(m.conn.should_shutdown_write(), "input over, nothing owed");
        m.maybe_shutdown();
    }
    assert!(m.conn.is_finished());
    assert!(!m.conn.should_shutdown_write());
    assert_eq!(m.conn.read_budget(), 0);
    check_stream(&m, kind, fed, &mut checked);
    if kind == ServiceKind::Echo {
        assert_eq!(m.sent.len(), fed, "every byte echoed");
    }
}

/// Echo: every byte fed is sent, in flight or buffered, once, in order, and what was sent
/// (checked from `checked` on) is the stream. Discard: nothing anywhere.
fn check_stream(m: &Model, kind: ServiceKind, fed: usize, checked: &mut usize) {
    match kind {
        ServiceKind::Echo => {
            assert_eq!(m.sent.len() + m.conn.pending_len(), fed, "bytes conserved");
            for (i, &b) in m.sent.iter().enumerate().skip(*checked) {
                assert_eq!(b, stream_byte(i), "byte {i} of the echo");
            }
            *checked = m.sent.len();
        }
        ServiceKind::Discard => {
            assert!(m.sent.is_empty(), "discard sent bytes");
            assert_eq!(m.conn.pending_len(), 0, "discard holds output");
        }
    }
}

/// The server's certificate (self-signed, for "localhost") and a client that trusts it, made
/// once per process.
fn configs() -> &'static (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<rustls::ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = pki::self_signed(&["localhost"]).expect("a self-signed certificate");
        let server = server_config(cert.chain(), cert.key(), None).expect("a server config");
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.clone()).expect("trust the certificate");
        let client = client_config(roots, None).expect("a client config");
        (server, client)
    })
}

fn client() -> ClientConnection {
    let name = ServerName::try_from("localhost").expect("a server name");
    ClientConnection::new(Arc::clone(&configs().1), name).expect("a client")
}

/// Everything the client wants to send now.
fn client_records(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        if client.write_tls(&mut out).is_err() {
            break;
        }
    }
    out
}

/// Extra unsent output the handshake may leave above the high-water mark: the server's first
/// flight, its session tickets, an alert. A self-signed ECDSA certificate keeps the flight
/// near 1 KiB; this is generous.
const FLIGHT: usize = 16 * 1024;

/// Runs a real handshake between `client` and the model's connection, the model reading within
/// its budget and everything the server sends delivered to the client. False if it failed.
fn handshake(client: &mut ClientConnection, m: &mut Model) -> bool {
    for _ in 0..64 {
        let mut c2s = client_records(client);
        let mut at = 0;
        let mut guard = 0;
        while at < c2s.len() && m.conn.read_budget() > 0 && guard < 1 << 16 {
            let n = m.conn.read_budget().min(c2s.len() - at);
            m.conn.on_received(&c2s[at..at + n]);
            at += n;
            guard += 1;
            let from = m.sent.len();
            m.drain();
            let mut s2c = &m.sent[from..];
            while !s2c.is_empty() {
                if client.read_tls(&mut s2c).is_err() || client.process_new_packets().is_err() {
                    return false;
                }
            }
            c2s.extend(client_records(client));
        }
        if at < c2s.len() {
            return false;
        }
        if !client.is_handshaking() && m.conn.tls_handshake_complete() && !client.wants_write() {
            return true;
        }
    }
    false
}

/// Arbitrary ciphertext into a TLS echo connection, in chunks the input chooses; panics on a
/// broken invariant (see the crate docs).
pub fn tls(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let limits = limits(&mut u);
    let mode = if u.arbitrary::<bool>().unwrap_or(false) {
        SendMode::Completion
    } else {
        SendMode::Readiness
    };
    let conn = Connection::with_tls(ServiceKind::Echo, limits, Arc::clone(&configs().0))
        .expect("rustls takes the configuration");
    let mut m = Model::new(conn, mode, limits);
    let mut input = Vec::new();
    match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        // Bytes alone.
        0 => {}
        // A real ClientHello, maybe with one byte changed, then the bytes.
        1 => {
            input = client_records(&mut client());
            let at = u.choose_index(input.len()).unwrap_or(0);
            input[at] ^= u.arbitrary::<u8>().unwrap_or(0);
        }
        // A whole handshake, then (maybe) a real application-data record, then the bytes.
        _ => {
            let mut c = client();
            if !handshake(&mut c, &mut m) {
                panic!("a real handshake failed: {:?}", m.conn.tls_error());
            }
            let n = u.int_in_range(0..=64).unwrap_or(0).min(u.len());
            let plain = u.bytes(n).unwrap_or(&[]);
            if !plain.is_empty() {
                use std::io::Write;
                c.writer().write_all(plain).expect("the client encrypts");
                input = client_records(&mut c);
            }
            m.sent.clear();
        }
    }
    // Chunk and drain sizes first, then the bytes: whatever is left of the input.
    let steps: Vec<(usize, usize)> = (0..u.int_in_range(0..=32).unwrap_or(0))
        .map(|_| (size(&mut u).max(1), size(&mut u)))
        .collect();
    let eof_early = u.arbitrary::<bool>().unwrap_or(false);
    input.extend_from_slice(u.take_rest());
    let bound = limits.high_water + MAX_RECORD_WIRE_LEN + FLIGHT;
    let mut at = 0;
    let mut k = 0;
    // Every step reads or sends: bounded by the input's length and what it produces.
    while at < input.len() && m.conn.tls_error().is_none() && k < 1 << 20 {
        let (chunk, drain) = steps
            .get(k % steps.len().max(1))
            .copied()
            .unwrap_or((usize::MAX, usize::MAX));
        k += 1;
        let budget = m.conn.read_budget();
        if budget > 0 {
            let n = chunk.min(budget).min(input.len() - at);
            m.conn.on_received(&input[at..at + n]);
            at += n;
        } else if m.conn.pending_len() == 0 {
            // Nothing owed and nothing to read: input is over (close_notify).
            break;
        }
        assert!(
            m.conn.pending_len() <= bound,
            "{} pending, above high water {} + a record + a flight",
            m.conn.pending_len(),
            limits.high_water
        );
        // The peer reads: at least one byte when reading is paused, so the loop goes on.
        let drain = if m.conn.read_budget() == 0 {
            drain.max(1)
        } else {
            drain
        };
        m.send(drain);
        m.maybe_shutdown();
        m.check_protocol();
        if eof_early && k == steps.len() {
            break;
        }
    }
    if let Some(e) = m.conn.tls_error() {
        assert!(!e.is_empty());
        assert_eq!(m.conn.read_budget(), 0, "no reading after a TLS error");
    }
    // The socket's end of stream, then the peer reads everything: the connection must finish.
    if !m.write_shut {
        m.eof();
    }
    m.check_protocol();
    m.drain();
    m.check_protocol();
    m.maybe_shutdown();
    assert!(m.conn.is_finished(), "ended: {:?}", m.conn.tls_error());
    assert!(
        m.conn.tls_error().is_some()
            || m.conn.tls_close_notify_received()
            || m.conn.tls_truncated()
            || input.is_empty(),
        "ended neither in an error nor cleanly"
    );
}
