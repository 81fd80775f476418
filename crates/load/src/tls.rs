//! TLS for the load generator: what a connection needs to open a session ([`TlsClient`]), and
//! the sans-I/O plumbing between a rustls [`ClientConnection`] and a non-blocking socket.
//!
//! rustls does no I/O, so the poll loop stays the same: ciphertext read from the socket goes to
//! `read_tls` and `process_new_packets`, the plaintext comes out of `reader()` and is verified
//! exactly like the bytes of a plain connection; plaintext to send goes into `writer()` and the
//! records rustls makes are written to the socket with `write_tls`.
//!
//! The socket is read into the worker's own buffer (one `read` per 64 KiB, as for plain TCP,
//! so a short read still means the receive queue is empty) and that buffer is fed to rustls in
//! the pieces it takes. Plaintext is handed to rustls only when its outgoing records have all
//! been written, so a message is stamped when its first record is about to go out, and rustls
//! never holds more than one `write`'s worth of ciphertext.

use std::io::{self, Read, Write};
use std::sync::Arc;

use iomodels_core::rustls::client::Resumption;
use iomodels_core::rustls::pki_types::ServerName;
use iomodels_core::rustls::{ClientConfig, ClientConnection};

/// How every connection of a run speaks TLS: the rustls client configuration (trusted roots,
/// optional client certificate) and the name the server's certificate must be valid for.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// The rustls configuration (see `iomodels_core::tls::client_config`).
    pub config: Arc<ClientConfig>,
    /// The DNS name or IP address the server's certificate must name.
    pub server_name: ServerName<'static>,
}

impl PartialEq for TlsClient {
    /// Two settings are equal when they share one configuration and name the same server (a
    /// rustls configuration has no equality of its own).
    fn eq(&self, other: &TlsClient) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// `config` for a server whose certificate names `server_name` (a DNS name or an IP
    /// address, e.g. `localhost` or `127.0.0.1`); the error says why the name is unusable.
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<TlsClient, String> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| format!("'{server_name}' is not a DNS name or an IP address"))?;
        Ok(TlsClient {
            config,
            server_name,
        })
    }

    /// The same settings without session resumption, so that every handshake is a full one
    /// (certificate, signature, key exchange): what `--handshakes` measures.
    pub(crate) fn without_resumption(&self) -> TlsClient {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::disabled();
        TlsClient {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        }
    }

    /// A new client session, boxed: a `ClientConnection` is large and moves with its `Conn`.
    pub(crate) fn connect(&self) -> Result<Box<ClientConnection>, String> {
        ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map(Box::new)
            .map_err(|e| e.to_string())
    }
}

/// What writing a session's pending records to the socket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Every record rustls had is on the socket.
    All,
    /// The socket is full; a writable event will come when it drains.
    Blocked,
}

/// Writes the records rustls wants to send to `sock` until there are none left or the socket
/// is full.
pub(crate) fn write_records(
    tls: &mut ClientConnection,
    sock: &mut impl Write,
) -> io::Result<Flushed> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Flushed::All)
}

/// What feeding ciphertext to rustls produced.
#[derive(Debug)]
pub(crate) enum Fed {
    /// All of it was taken; any plaintext has been passed on.
    Done,
    /// The peer's `close_notify` arrived: its plaintext stream is over.
    PeerClosed,
    /// The session failed (a bad certificate, an alert, garbage): rustls' reason.
    Failed(String),
    /// The plaintext callback stopped the feeding.
    Stopped,
}

/// Feeds `data` (ciphertext just read from the socket) to the session, and every piece of
/// plaintext it decrypts, in order, to `plain`, through `scratch`. `plain` returns `false` to
/// stop (the rest of `data` is then dropped: the connection is being closed).
pub(crate) fn feed(
    tls: &mut ClientConnection,
    mut data: &[u8],
    scratch: &mut [u8],
    mut plain: impl FnMut(&[u8]) -> bool,
) -> Fed {
    while !data.is_empty() {
        match tls.read_tls(&mut data) {
            // rustls takes nothing more after the peer's close_notify.
            Ok(0) => return Fed::PeerClosed,
            Ok(_) => {}
            Err(e) => return Fed::Failed(e.to_string()),
        }
        if let Err(e) = tls.process_new_packets() {
            return Fed::Failed(e.to_string());
        }
        loop {
            match tls.reader().read(scratch) {
                Ok(0) => return Fed::PeerClosed,
                Ok(n) => {
                    if !plain(&scratch[..n]) {
                        return Fed::Stopped;
                    }
                }
                // Nothing more decrypted yet.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Only after the socket's end of stream, which is never fed here.
                Err(e) => return Fed::Failed(e.to_string()),
            }
        }
    }
    Fed::Done
}

/// Reads `sock` into `buf` once: `Ok(0)` at the end of stream, `WouldBlock` when empty.
pub(crate) fn read_once(sock: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
