//! The sans-I/O TLS layer: a rustls [`ServerConnection`] between the socket's bytes and the
//! service, inside [`Connection`](crate::Connection), so that no I/O model has a TLS path of its
//! own.
//!
//! With TLS, [`Connection::on_received`](crate::Connection::on_received) takes *ciphertext*: it
//! goes to rustls (`read_tls`, `process_new_packets`), the decrypted plaintext goes to the
//! service, the service's reply goes to rustls' writer, and the records rustls wants to send
//! (`write_tls`) are appended to the connection's output buffer. The model sends that buffer as
//! before; it never sees plaintext.
//!
//! ## Backpressure
//! Pending output is counted in ciphertext bytes, against the same high-water mark. An echoed
//! record costs the same overhead going out as it did coming in (same cipher suite both ways;
//! rustls never writes more records than the plaintext needs), so ciphertext read within the
//! budget produces at most as much ciphertext out, except for:
//! * a record that was only partly received by an earlier read and is completed now (at most
//!   one record: [`MAX_RECORD_WIRE_LEN`]),
//! * handshake flights, session tickets, key updates and the closing alert.
//!
//! So unsent output stays at or below `high_water + MAX_RECORD_WIRE_LEN` once the handshake
//! is done (plus the server's first flight during it).
//!
//! ## Close
//! * The peer's `close_notify`: input is over; our `close_notify` is queued after everything
//!   owed, and the write side is shut once it is sent.
//! * The socket's end of stream without a `close_notify` first: reported as truncation
//!   ([`Connection::tls_truncated`](crate::Connection::tls_truncated)), not as a clean end; if
//!   the handshake had completed, our `close_notify` still follows the owed output.
//! * A TLS error (garbage, plaintext, a bad handshake, a missing client certificate): the alert
//!   rustls queues is sent, input is over, and the connection finishes once the alert is out.
//!   [`Connection::tls_error`](crate::Connection::tls_error) says why, for a one-line log.

use crate::outbuf::OutBuf;
use crate::service::Service;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The largest TLS record on the wire: 5 header bytes and 16 KiB of plaintext plus the most
/// expansion any version allows (2048 bytes, RFC 5246 §6.2.3).
pub const MAX_RECORD_WIRE_LEN: usize = 5 + 16 * 1024 + 2048;

/// The crypto provider every TLS configuration here is built with: rustls' `ring` provider.
///
/// Chosen over aws-lc-rs because it builds with a plain C compiler for every target we need,
/// including `x86_64-pc-windows-gnu` with mingw (aws-lc-rs needs cmake and more).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration with the [`provider`], TLS 1.2 and 1.3, the certificate `chain`
/// (leaf first) and its `key`; with `client_roots`, clients must present a certificate that
/// chains to one of those roots (mutual TLS).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_single_cert(chain, key)?))
}

/// `io::Write` into an [`OutBuf`], for `write_tls`.
struct Sink<'a>(&'a mut OutBuf);

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of plaintext read from rustls per step.
const PLAIN_CHUNK: usize = 16 * 1024;

/// One connection's TLS session and what became of it.
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// Decrypted bytes on their way to the service.
    plain_in: Vec<u8>,
    /// The service's reply on its way to rustls' writer.
    plain_out: OutBuf,
    error: Option<String>,
    /// The peer's close_notify was received.
    peer_closed: bool,
    /// The socket's end of stream came without a close_notify.
    truncated: bool,
    /// Our close_notify is queued.
    close_sent: bool,
    /// Any ciphertext at all was received.
    received_any: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("error", &self.error)
            .field("peer_closed", &self.peer_closed)
            .field("truncated", &self.truncated)
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The connection's own high-water mark bounds the output; rustls' buffers are drained
        // into it after every step, so rustls must never refuse (short-write) plaintext.
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn,
            plain_in: Vec::new(),
            plain_out: OutBuf::new(),
            error: None,
            peer_closed: false,
            truncated: false,
            close_sent: false,
            received_any: false,
        })
    }

    /// No more input will be processed: the peer closed, or the session failed.
    pub fn input_done(&self) -> bool {
        self.peer_closed || self.error.is_some()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    pub fn handshake_complete(&self) -> bool {
        !self.conn.is_handshaking()
    }

    pub fn conn(&self) -> &ServerConnection {
        &self.conn
    }

    /// Ciphertext from the socket: decrypt, run the service, encrypt its reply into `out`.
    pub fn on_received(&mut self, mut data: &[u8], service: &mut Service, out: &mut OutBuf) {
        if !data.is_empty() {
            self.received_any = true;
        }
        while !data.is_empty() && !self.input_done() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => {
                    // Cannot happen with bytes left, but must not loop forever if it does.
                    self.fail("rustls accepted no bytes".to_string(), out);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail(format!("read_tls: {e}"), out);
                    break;
                }
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    self.pump_plaintext(service);
                    if state.peer_has_closed() {
                        self.peer_closed = true;
                        self.send_close_notify();
                    }
                }
                Err(e) => self.fail(e.to_string(), out),
            }
            self.flush(out);
        }
        self.flush(out);
    }

    /// The socket's end of stream.
    pub fn on_peer_eof(&mut self, out: &mut OutBuf) {
        if self.input_done() {
            return;
        }
        self.truncated = self.received_any;
        if self.handshake_complete() {
            self.send_close_notify();
            self.flush(out);
        }
    }

    /// Moves decrypted bytes through the service and its reply into rustls' writer.
    fn pump_plaintext(&mut self, service: &mut Service) {
        if self.plain_in.len() < PLAIN_CHUNK {
            self.plain_in.resize(PLAIN_CHUNK, 0);
        }
        loop {
            match self.conn.reader().read(&mut self.plain_in) {
                Ok(0) => break,
                Ok(n) => service.on_input(&self.plain_in[..n], &mut self.plain_out),
                // WouldBlock: nothing more decrypted yet. UnexpectedEof cannot come before the
                // socket's EOF is given to rustls, which never happens here.
                Err(_) => break,
            }
        }
        if !self.plain_out.is_empty() {
            // With no buffer limit the writer takes everything; a failure means the session is
            // closing, and the reply is dropped with it.
            let n = self.plain_out.len();
            let _ = self.conn.writer().write_all(self.plain_out.as_slice());
            self.plain_out.consume(n);
        }
    }

    /// The server ends the session on its own (shutdown): queue our `close_notify` after the
    /// output owed, if the handshake is done and the session has neither failed nor already
    /// said goodbye. Returns whether it was queued.
    pub fn close(&mut self, out: &mut OutBuf) -> bool {
        if self.close_sent || self.error.is_some() || !self.handshake_complete() {
            return false;
        }
        self.send_close_notify();
        self.flush(out);
        true
    }

    fn send_close_notify(&mut self) {
        if !self.close_sent {
            self.close_sent = true;
            self.conn.send_close_notify();
        }
    }

    fn fail(&mut self, error: String, out: &mut OutBuf) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.flush(out);
    }

    /// Appends every record rustls wants to send to `out`.
    fn flush(&mut self, out: &mut OutBuf) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Sink(out)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Reads every certificate in PEM text (`-----BEGIN CERTIFICATE-----` blocks), leaf first for
/// a chain. An error names what is wrong; no certificate at all is an error too.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in it".to_string());
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in PEM text.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY in it".to_string(),
        e => format!("bad PEM: {e}"),
    })
}

/// The certificates in PEM text as a trust store (for verifying peers).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// A client configuration with the [`provider`], TLS 1.2 and 1.3, that trusts `roots` and,
/// with `identity` (chain and key), presents a client certificate (mutual TLS).
pub fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
    };
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of a certificate, as `openssl x509 -fingerprint -sha256` prints it
/// (`AB:CD:...`).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Certificates made on the spot (rcgen): the self-signed one `serve --tls-self-signed` uses,
/// and a small PKI for tests (a CA, server and client certificates it signed, and the bad
/// ones a client must refuse).
pub mod pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A certificate with its key, in DER and PEM.
    pub struct Issued {
        /// The certificate.
        pub cert: CertificateDer<'static>,
        /// The certificate as PEM text.
        pub cert_pem: String,
        /// The private key (PKCS#8) as PEM text.
        pub key_pem: String,
        key_der: Vec<u8>,
    }

    impl Issued {
        fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
            Issued {
                cert_pem: cert.pem(),
                cert: cert.der().clone(),
                key_pem: key.serialize_pem(),
                key_der: key.serialize_der(),
            }
        }

        /// The private key.
        pub fn key(&self) -> PrivateKeyDer<'static> {
            PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
        }

        /// The chain to present: this certificate alone.
        pub fn chain(&self) -> Vec<CertificateDer<'static>> {
            vec![self.cert.clone()]
        }
    }

    /// What a leaf certificate is for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Usage {
        /// A server's (`serverAuth`).
        Server,
        /// A client's (`clientAuth`).
        Client,
    }

    /// How long a leaf certificate is valid.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Validity {
        /// From 2020 to 2100.
        Current,
        /// 2001 to 2002: expired.
        Expired,
    }

    fn params(names: &[&str]) -> Result<CertificateParams, String> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(|e| e.to_string())?;
        let cn = names.first().map_or("iomodels", String::as_str);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        Ok(params)
    }

    /// A self-signed server certificate for `names` (DNS names or IP addresses), e.g.
    /// `["localhost", "127.0.0.1", "::1"]`: a client trusts it by trusting the certificate
    /// itself.
    pub fn self_signed(names: &[&str]) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params(names)?
            .self_signed(&key)
            .map_err(|e| e.to_string())?;
        Ok(Issued::new(&cert, &key))
    }

    /// A certificate authority that signs leaf certificates.
    pub struct Ca {
        issued: Issued,
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl Ca {
        /// A new CA named `name`.
        pub fn new(name: &str) -> Result<Ca, String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::CrlSign,
            ];
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            Ok(Ca {
                issued: Issued::new(&cert, &key),
                cert,
                key,
            })
        }

        /// The CA's own certificate (what peers trust).
        pub fn issued(&self) -> &Issued {
            &self.issued
        }

        /// A leaf certificate for `names`, signed by this CA.
        pub fn issue(
            &self,
            names: &[&str],
            usage: Usage,
            validity: Validity,
        ) -> Result<Issued, String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params = params(names)?;
            params.extended_key_usages = vec![match usage {
                Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            }];
            if validity == Validity::Expired {
                params.not_before = rcgen::date_time_ymd(2001, 1, 1);
                params.not_after = rcgen::date_time_ymd(2002, 1, 1);
            }
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .map_err(|e| e.to_string())?;
            Ok(Issued::new(&cert, &key))
        }
    }
}
