//! One connection's life, from the first byte to the close, independent of any I/O model.
//!
//! ## Backpressure
//! A server that reads faster than its peer reads the replies must buffer the difference. The
//! [`Connection`] bounds that buffer: while unsent output is at or above the high-water mark it
//! stops asking for input ([`Connection::read_budget`] is 0), and it asks again only once the
//! output has drained to the low-water mark. The kernel's receive buffer then fills, TCP's
//! window closes, and the peer's writes block — the peer is slowed, the server's memory is not
//! spent. The read budget is also capped at the room left below the high-water mark, so an echo
//! connection never holds more than `high_water` unsent bytes.
//!
//! ## Two ways to send
//! Readiness models send from the connection's buffer: [`Connection::pending_output`], then
//! [`Connection::on_sent`]. Completion models must hand a buffer to the kernel and not touch it
//! until the send completes, so they take the output out: [`Connection::take_output`] moves the
//! unsent bytes into an owned buffer, and [`Connection::on_send_complete`] reports what the
//! kernel sent. Bytes handed out still count as unsent for backpressure until then.
//!
//! A completion model that received into a buffer of its own (a provided buffer) can skip the
//! copy when the reply is the input itself: while [`Connection::passes_through`] holds (plain
//! echo, nothing owed ahead), it sends the received bytes from that buffer and reports them
//! with [`Connection::on_passed_through`] instead of [`Connection::on_received`]; they count as
//! handed out, like [`Connection::take_output`]'s, until [`Connection::on_send_complete`].
//!
//! ## Half-close
//! When the peer shuts down its write side (a read returns 0), the connection stops reading,
//! finishes sending what it owes, then asks the model to shut down its own write side; after
//! that it is finished and the model closes the socket.
//!
//! ## TLS
//! [`Connection::with_tls`] puts a rustls session between the socket and the service (see the
//! `tls` module): the calling protocol is unchanged, the bytes in and out are ciphertext, and
//! input also ends at the peer's `close_notify` or at a TLS error, after which the connection
//! sends what it owes (our `close_notify`, or rustls' alert) and asks for the write shutdown.

use crate::outbuf::OutBuf;
use crate::service::{Service, ServiceKind};
use crate::tls::TlsSession;
use std::sync::Arc;

/// The backpressure thresholds of one connection, in bytes of unsent output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At or above this many unsent bytes, reading stops.
    pub high_water: usize,
    /// Reading resumes once unsent bytes drop to this many or fewer.
    pub low_water: usize,
}

impl Limits {
    /// Default high-water mark: 1 MiB of unsent output per connection.
    pub const DEFAULT_HIGH_WATER: usize = 1 << 20;

    /// Limits with the given high-water mark and a low-water mark of a quarter of it.
    ///
    /// A high-water mark of 0 is raised to 1 byte: a connection must be able to make progress.
    pub fn with_high_water(high_water: usize) -> Self {
        let high_water = high_water.max(1);
        Limits {
            high_water,
            low_water: high_water / 4,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::with_high_water(Self::DEFAULT_HIGH_WATER)
    }
}

/// The state machine of one connection: service, unsent output, backpressure and close.
///
/// The I/O model owns the socket; the connection owns the bytes. See the crate docs for the
/// calling protocol.
///
/// Not `Clone`: a TLS session cannot be duplicated.
#[derive(Debug)]
pub struct Connection {
    service: Service,
    out: OutBuf,
    limits: Limits,
    /// Reading is paused by backpressure (hysteresis between high and low water).
    paused: bool,
    /// The peer has shut down its write side; nothing more will be read.
    peer_eof: bool,
    /// Our write side has been shut down; the connection is over.
    write_shut: bool,
    /// Bytes handed to a completion model's send and not yet reported sent.
    in_flight: usize,
    /// The TLS session, when the connection speaks TLS (boxed: rustls' state is large).
    tls: Option<Box<TlsSession>>,
}

impl Connection {
    /// A new connection running `service` with the given backpressure limits.
    pub fn new(service: ServiceKind, limits: Limits) -> Self {
        Connection {
            service: service.new_service(),
            out: OutBuf::new(),
            limits,
            paused: false,
            peer_eof: false,
            write_shut: false,
            in_flight: 0,
            tls: None,
        }
    }

    /// A new TLS connection: the bytes received and sent are TLS records, the service sees the
    /// plaintext. Fails only if rustls rejects the configuration.
    pub fn with_tls(
        service: ServiceKind,
        limits: Limits,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Self, rustls::Error> {
        let mut c = Connection::new(service, limits);
        c.tls = Some(Box::new(TlsSession::new(config)?));
        Ok(c)
    }

    /// True when this connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Why the TLS session failed (garbage, plaintext, a bad handshake, a missing client
    /// certificate...), for a one-line log; `None` if it has not failed or is not TLS.
    pub fn tls_error(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.error())
    }

    /// True when the peer's end of stream came without a TLS `close_notify` (after at least one
    /// byte): a truncation to log, not a clean end.
    pub fn tls_truncated(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.truncated())
    }

    /// True once the peer's TLS `close_notify` was received.
    pub fn tls_close_notify_received(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.peer_closed())
    }

    /// The server is closing this connection on its own (a shutdown's drain is over): with TLS,
    /// queues our `close_notify` after the owed output, so a peer can tell the close from a
    /// truncation. Returns whether it was queued (false without TLS, before the handshake
    /// completed, after a TLS error, or when it was already sent). The model sends what it can
    /// of [`Connection::pending_output`] before it closes the socket.
    pub fn close_notify_now(&mut self) -> bool {
        match &mut self.tls {
            Some(tls) => tls.close(&mut self.out),
            None => false,
        }
    }

    /// True once the TLS handshake is complete (false for a plaintext connection).
    pub fn tls_handshake_complete(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.handshake_complete())
    }

    /// The rustls session, for what was negotiated (version, cipher suite, SNI, the client's
    /// certificates); `None` for a plaintext connection.
    pub fn tls_session(&self) -> Option<&rustls::ServerConnection> {
        self.tls.as_ref().map(|t| t.conn())
    }

    /// No more input will be used: the socket's end of stream, or (TLS) the peer's
    /// `close_notify` or a TLS error.
    fn input_done(&self) -> bool {
        self.peer_eof || self.tls.as_ref().is_some_and(|t| t.input_done())
    }

    /// How many bytes the model may read from the socket now; 0 means "do not read".
    ///
    /// Zero after the peer's end of stream and while backpressure is on; otherwise the room left
    /// below the high-water mark.
    pub fn read_budget(&self) -> usize {
        if self.input_done() || self.paused || self.write_shut {
            0
        } else {
            self.limits.high_water.saturating_sub(self.pending_len())
        }
    }

    /// True when the model should read (or keep a read posted).
    pub fn wants_read(&self) -> bool {
        self.read_budget() > 0
    }

    /// True when reading is paused by backpressure (not by end of stream).
    pub fn is_backpressured(&self) -> bool {
        self.paused
    }

    /// Feeds bytes just read from the socket to the service.
    ///
    /// A model should not pass more than [`Connection::read_budget`] bytes; if it does, they are
    /// still processed (nothing is dropped), and reading pauses.
    pub fn on_received(&mut self, data: &[u8]) {
        debug_assert!(!self.peer_eof, "bytes received after end of stream");
        match &mut self.tls {
            None => self.service.on_input(data, &mut self.out),
            Some(tls) => tls.on_received(data, &mut self.service, &mut self.out),
        }
        if self.pending_len() >= self.limits.high_water {
            self.paused = true;
        }
    }

    /// True when the reply to the next input is that input, byte for byte, with nothing owed
    /// ahead of it: a plaintext echo connection whose output buffer is empty. A completion
    /// model may then send received bytes from the buffer they arrived in
    /// ([`Connection::on_passed_through`]) instead of copying them in with
    /// [`Connection::on_received`].
    pub fn passes_through(&self) -> bool {
        self.tls.is_none() && self.service == Service::Echo && self.out.is_empty()
    }

    /// Completion models: `n` bytes just received (while [`Connection::passes_through`] held)
    /// go out as they are from the model's own buffer, after any bytes handed out before. They
    /// count as handed out, like [`Connection::take_output`]'s, until
    /// [`Connection::on_send_complete`] reports them sent; the read budget and backpressure
    /// see them as unsent output.
    pub fn on_passed_through(&mut self, n: usize) {
        debug_assert!(
            self.passes_through(),
            "bytes passed through a connection that transforms them"
        );
        debug_assert!(!self.peer_eof, "bytes received after end of stream");
        self.in_flight += n;
        if self.pending_len() >= self.limits.high_water {
            self.paused = true;
        }
    }

    /// The peer shut down its write side (a read returned 0).
    ///
    /// With TLS, an end of stream without the peer's `close_notify` is flagged
    /// ([`Connection::tls_truncated`]), and our `close_notify` follows the owed output.
    pub fn on_peer_eof(&mut self) {
        self.peer_eof = true;
        if let Some(tls) = &mut self.tls {
            tls.on_peer_eof(&mut self.out);
        }
    }

    /// True once the peer's end of stream was seen.
    pub fn peer_eof(&self) -> bool {
        self.peer_eof
    }

    /// The bytes to send next, oldest first (empty when there is nothing to send).
    pub fn pending_output(&self) -> &[u8] {
        self.out.as_slice()
    }

    /// How many bytes are waiting to be sent, including those handed out by
    /// [`Connection::take_output`] and not yet reported sent.
    pub fn pending_len(&self) -> usize {
        self.out.len() + self.in_flight
    }

    /// Completion models: a buffer from [`Connection::take_output`] is still with the kernel.
    pub fn send_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// True when there is output to send (not yet handed out).
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// The socket took the first `n` bytes of [`Connection::pending_output`].
    pub fn on_sent(&mut self, n: usize) {
        self.out.consume(n);
        self.maybe_resume();
    }

    /// Completion models: moves every unsent byte into an owned buffer for one send operation
    /// and keeps `spare` (cleared) as the storage for new output. The bytes count as pending
    /// until [`Connection::on_send_complete`] reports them sent.
    pub fn take_output(&mut self, spare: Vec<u8>) -> Vec<u8> {
        let buf = self.out.take(spare);
        self.in_flight += buf.len();
        buf
    }

    /// Completion models: the kernel sent `n` bytes of a buffer from
    /// [`Connection::take_output`].
    ///
    /// # Panics
    /// If `n` is more than the bytes handed out and not yet reported.
    pub fn on_send_complete(&mut self, n: usize) {
        assert!(
            n <= self.in_flight,
            "sent {n} of {} bytes in flight",
            self.in_flight
        );
        self.in_flight -= n;
        self.maybe_resume();
    }

    fn maybe_resume(&mut self) {
        if self.paused && self.pending_len() <= self.limits.low_water {
            self.paused = false;
        }
    }

    /// True when the model should shut down the socket's write side now: the peer has finished
    /// sending (or, with TLS, sent its `close_notify` or failed) and everything owed has been
    /// sent.
    pub fn should_shutdown_write(&self) -> bool {
        self.input_done() && self.pending_len() == 0 && !self.write_shut
    }

    /// The model shut down the socket's write side.
    pub fn on_write_shutdown(&mut self) {
        self.write_shut = true;
    }

    /// True when the connection is over and the socket can be closed.
    pub fn is_finished(&self) -> bool {
        self.write_shut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a connection the way a model would, with a peer that sends `input` in chunks of
    /// `chunk` and reads `drain` bytes of output per step; returns the output seen by the peer.
    fn run(kind: ServiceKind, limits: Limits, input: &[u8], chunk: usize, drain: usize) -> Vec<u8> {
        let mut c = Connection::new(kind, limits);
        let mut sent = 0;
        let mut got = Vec::new();
        while !c.is_finished() {
            let budget = c.read_budget();
            if budget > 0 {
                if sent == input.len() {
                    c.on_peer_eof();
                } else {
                    let n = chunk.min(budget).min(input.len() - sent);
                    c.on_received(&input[sent..sent + n]);
                    sent += n;
                }
            }
            assert!(c.pending_len() <= limits.high_water);
            let n = drain.min(c.pending_len());
            got.extend_from_slice(&c.pending_output()[..n]);
            c.on_sent(n);
            if c.should_shutdown_write() {
                c.on_write_shutdown();
            }
        }
        got
    }

    /// `len` bytes of the tests' seeded stream (`crates/testkit`).
    fn pattern(len: usize) -> Vec<u8> {
        iomodels_testkit::Rng(0x9e37_79b9).bytes(len)
    }

    #[test]
    fn echo_returns_every_byte_in_order_whatever_the_chunking() {
        let input = pattern(100_000);
        for (chunk, drain) in [(1, 1), (7, 3), (4096, 1), (1, 4096), (65536, 65536)] {
            let limits = Limits::with_high_water(1000);
            assert_eq!(run(ServiceKind::Echo, limits, &input, chunk, drain), input);
        }
    }

    #[test]
    fn discard_sends_nothing_and_finishes_at_eof() {
        let input = pattern(10_000);
        assert!(run(ServiceKind::Discard, Limits::default(), &input, 333, 100).is_empty());
    }

    #[test]
    fn reading_pauses_at_high_water_and_resumes_at_low_water() {
        let limits = Limits {
            high_water: 100,
            low_water: 25,
        };
        let mut c = Connection::new(ServiceKind::Echo, limits);
        assert_eq!(c.read_budget(), 100);
        c.on_received(&[1; 60]);
        assert_eq!(c.read_budget(), 40, "budget is the room below high water");
        c.on_received(&[2; 40]);
        assert!(c.is_backpressured());
        assert_eq!(c.read_budget(), 0);
        c.on_sent(50);
        assert_eq!(c.read_budget(), 0, "still above low water: stays paused");
        c.on_sent(25);
        assert!(!c.is_backpressured());
        assert_eq!(c.read_budget(), 75);
    }

    #[test]
    fn half_close_finishes_sending_before_shutting_down() {
        let mut c = Connection::new(ServiceKind::Echo, Limits::default());
        c.on_received(b"hello");
        c.on_peer_eof();
        assert_eq!(c.read_budget(), 0);
        assert!(!c.should_shutdown_write(), "five bytes still owed");
        assert_eq!(c.pending_output(), b"hello");
        c.on_sent(5);
        assert!(c.should_shutdown_write());
        c.on_write_shutdown();
        assert!(c.is_finished());
        assert!(!c.should_shutdown_write());
    }

    #[test]
    fn output_taken_for_a_completion_send_counts_until_reported() {
        let limits = Limits {
            high_water: 100,
            low_water: 10,
        };
        let mut c = Connection::new(ServiceKind::Echo, limits);
        c.on_received(&[1; 100]);
        assert!(c.is_backpressured());
        let buf = c.take_output(Vec::new());
        assert_eq!(buf.len(), 100);
        assert!(!c.wants_write(), "everything is handed out");
        assert_eq!(c.pending_len(), 100, "still in flight: still pending");
        assert_eq!(c.read_budget(), 0);
        c.on_send_complete(60);
        assert!(c.is_backpressured(), "40 left in flight, above low water");
        c.on_send_complete(35);
        assert!(!c.is_backpressured());
        assert_eq!(c.read_budget(), 95);
        c.on_peer_eof();
        assert!(!c.should_shutdown_write(), "5 bytes still in flight");
        c.on_send_complete(5);
        assert!(c.should_shutdown_write());
    }

    #[test]
    fn a_zero_high_water_still_makes_progress() {
        let limits = Limits::with_high_water(0);
        let input = pattern(1000);
        assert_eq!(run(ServiceKind::Echo, limits, &input, 10, 10), input);
    }

    #[test]
    fn received_bytes_pass_through_only_when_the_reply_is_the_input_with_nothing_ahead() {
        let limits = Limits {
            high_water: 100,
            low_water: 10,
        };
        assert!(!Connection::new(ServiceKind::Discard, limits).passes_through());
        let mut c = Connection::new(ServiceKind::Echo, limits);
        assert!(c.passes_through());
        c.on_passed_through(60);
        assert!(
            c.passes_through(),
            "nothing copied in: still nothing owed ahead"
        );
        assert!(
            !c.wants_write(),
            "passed-through bytes are the model's to send"
        );
        assert_eq!(c.pending_len(), 60);
        assert_eq!(c.read_budget(), 40, "they count against the read budget");
        c.on_received(&[7; 10]);
        assert!(
            !c.passes_through(),
            "copied bytes are owed: later input must follow them"
        );
        let copied = c.take_output(Vec::new());
        assert_eq!(copied, [7; 10]);
        assert!(
            c.passes_through(),
            "handed out in order: nothing owed ahead any more"
        );
        assert_eq!(c.pending_len(), 70);
    }

    #[test]
    fn passed_through_bytes_pause_reading_at_high_water_until_sent() {
        let limits = Limits {
            high_water: 100,
            low_water: 10,
        };
        let mut c = Connection::new(ServiceKind::Echo, limits);
        c.on_passed_through(100);
        assert!(c.is_backpressured());
        assert_eq!(c.read_budget(), 0);
        c.on_send_complete(80);
        assert!(c.is_backpressured(), "20 unsent, above low water");
        c.on_send_complete(15);
        assert!(!c.is_backpressured());
        c.on_peer_eof();
        assert!(!c.should_shutdown_write(), "5 bytes still to go out");
        c.on_send_complete(5);
        assert!(c.should_shutdown_write());
    }
}
