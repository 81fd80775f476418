//! One load-generating connection: a small state machine over a non-blocking socket, with an
//! optional TLS session between the socket and the bytes it verifies.
//!
//! Bookkeeping is in stream offsets of the *plaintext*. `target` is how many bytes the started
//! messages add up to, `sent` how many the socket (or, with TLS, rustls' writer) has taken,
//! `verified` how many came back and matched the pattern. Message `k` occupies stream bytes
//! `[k·size, (k+1)·size)`; it is *stamped* when its first byte is written and *complete* when
//! `verified` passes its end. Stamps live in a queue of at most `depth` entries, because at
//! most `depth` messages are ever outstanding.
//!
//! Closed loop, a message starts when an earlier one completes (`depth` outstanding). Under
//! `--rate` ([`Conn::pace`]), a message starts when its [`Schedule`] says it is due, and
//! completes with two times: from its due time (the latency) and from its stamp (the service
//! latency). Both ways go through the same `start_messages`, `flush` and `accept`.
//!
//! With TLS, a connection goes `Connecting` → `Handshaking` → `Active`; the echo is checked
//! exactly as without TLS, on the plaintext rustls decrypts. Closing sends a `close_notify`
//! before the TCP write side is shut.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::time::Instant;

use hdrhistogram::Histogram;
use iomodels_core::rustls::ClientConnection;

use crate::failure::{looks_like_tls, Failure, FailureKind};
use crate::pattern::{Pattern, CHUNK};
use crate::poll::{Event, TcpStream};
use crate::schedule::{micros, Pacing, Schedule};
use crate::tls::{feed, read_once, write_records, Fed, Flushed};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Non-blocking connect issued, not yet known to have succeeded.
    Connecting,
    /// TCP connected; the TLS handshake is under way.
    Handshaking,
    /// Connected (and, with TLS, handshake done) and exchanging messages.
    Active,
    /// Write side being shut down (after a `close_notify` with TLS); reading until the
    /// server's end of stream. `graceful` is true when every message was echoed (then any
    /// further byte is an error by the server).
    Closing {
        /// All started messages completed before the shutdown.
        graceful: bool,
    },
    /// Socket dropped.
    Closed,
}

/// What handling an event did to an active connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still going.
    Continue,
    /// Every message it will ever send has been echoed and verified.
    Finished,
    /// End of stream or a socket error before it was finished.
    IoError,
    /// An echoed byte differed from the one sent (or more came back than was sent).
    Mismatch,
    /// The TLS session failed; [`Conn::failure`] says why.
    TlsError,
}

/// Where a TLS handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Waiting for the server.
    Pending,
    /// Done: the connection is `Active`.
    Done,
    /// Failed: the connection is `Closed` and [`Conn::failure`] says why.
    Failed,
}

/// One connection of the load generator.
pub(crate) struct Conn {
    stream: Option<TcpStream>,
    /// The TLS session, when the run speaks TLS.
    tls: Option<Box<ClientConnection>>,
    /// Current state.
    pub(crate) state: State,
    /// Why the TLS session failed, for the one-line error the CLI prints.
    pub(crate) failure: Option<String>,
    /// Why the connection failed otherwise (connect, I/O, end of stream, mismatch), set where
    /// it failed; the first cause is kept.
    pub(crate) cause: Option<Failure>,
    /// The connection speaks TLS (the session itself is taken out while its plaintext is
    /// checked).
    speaks_tls: bool,
    /// No echo had come back when sending stopped, while the others were served: a cause of
    /// failure if it is served later (see `FailureKind::Unserved`).
    pub(crate) unserved: bool,
    /// While `Closing`: the TCP write side has been shut (after the `close_notify` went out).
    write_shut: bool,
    pattern: Pattern,
    size: u64,
    depth: u64,
    /// Messages this connection may start in total (`u64::MAX` when only the clock limits it).
    limit: u64,
    /// Messages started (their bytes are counted in `target`).
    pub(crate) started: u64,
    /// Messages whose first byte has been written and whose send time is in `stamps`.
    stamped: u64,
    /// Messages completely echoed and verified.
    pub(crate) done: u64,
    target: u64,
    sent: u64,
    /// Bytes echoed back and verified.
    pub(crate) verified: u64,
    /// When each stamped, not yet completed message had its first byte written, oldest first.
    stamps: VecDeque<Instant>,
    /// Under `--rate`: when each message is due.
    schedule: Option<Schedule>,
    /// Under `--rate`: what was sent, held back, left unsent.
    pub(crate) pacing: Pacing,
}

/// Where completed messages are timed: `latency` (from the schedule under `--rate`, from the
/// write otherwise) and, under `--rate`, `service` (from the write).
pub(crate) struct Latencies {
    pub(crate) latency: Histogram<u64>,
    pub(crate) service: Histogram<u64>,
}

impl Latencies {
    pub(crate) fn new() -> Latencies {
        Latencies {
            latency: crate::new_histogram(),
            service: crate::new_histogram(),
        }
    }
}

/// Records `us` in `h`, saturating beyond its range.
pub(crate) fn record(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

impl Conn {
    /// A connection whose connect is in flight on `stream` (or failed already, if `None`),
    /// speaking TLS through `tls` if given.
    pub(crate) fn new(
        stream: Option<TcpStream>,
        tls: Option<Box<ClientConnection>>,
        pattern: Pattern,
        size: usize,
        depth: usize,
        limit: Option<u64>,
        _epoch: Instant,
    ) -> Conn {
        let state = if stream.is_some() {
            State::Connecting
        } else {
            State::Closed
        };
        Conn {
            stream,
            speaks_tls: tls.is_some(),
            unserved: false,
            tls,
            state,
            failure: None,
            cause: None,
            write_shut: false,
            pattern,
            size: size as u64,
            depth: depth as u64,
            limit: limit.unwrap_or(u64::MAX),
            started: 0,
            stamped: 0,
            done: 0,
            target: 0,
            sent: 0,
            verified: 0,
            stamps: VecDeque::with_capacity(depth.min(1024)),
            schedule: None,
            pacing: Pacing::default(),
        }
    }

    /// A connection that failed before its connect was issued, with `why`.
    pub(crate) fn failed(why: String, pattern: Pattern, epoch: Instant) -> Conn {
        let mut conn = Conn::new(None, None, pattern, 1, 1, None, epoch);
        conn.failure = Some(why);
        conn
    }

    /// Handles a readiness event while connecting. Returns `Some(true)` once connected (the
    /// connection is then `Active`, or `Handshaking` with TLS; TCP_NODELAY is set),
    /// `Some(false)` if the connect failed (the connection is then `Closed`), `None` if it is
    /// still in progress.
    pub(crate) fn on_connect_event(&mut self, event: &Event) -> Option<bool> {
        let stream = self.stream.as_ref()?;
        let (outcome, cause) = match stream.take_error() {
            Ok(Some(e)) | Err(e) => (Some(false), Some(Failure::os(&e))),
            Ok(None) if event.is_error() => (Some(false), Some(Failure::of(FailureKind::Io))),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => match stream.set_nodelay(true) {
                    Ok(()) => (Some(true), None),
                    Err(e) => (Some(false), Some(Failure::os(&e))),
                },
                Err(e) if e.kind() == io::ErrorKind::NotConnected => (None, None),
                Err(e) => (Some(false), Some(Failure::os(&e))),
            },
        };
        if let Some(cause) = cause {
            self.set_cause(cause);
        }
        match outcome {
            Some(true) if self.tls.is_some() => self.state = State::Handshaking,
            Some(true) => self.state = State::Active,
            Some(false) => self.close(),
            None => {}
        }
        outcome
    }

    /// Drives the TLS handshake of a `Handshaking` connection: writes what rustls has to send
    /// (the ClientHello first), reads and processes the server's flights. `buf` takes
    /// ciphertext, `scratch` plaintext (of which there must be none yet).
    pub(crate) fn drive_handshake(&mut self, buf: &mut [u8], scratch: &mut [u8]) -> Handshake {
        let why = match self.handshake_step(buf, scratch) {
            Ok(None) => return Handshake::Pending,
            Ok(Some(())) => {
                self.state = State::Active;
                return Handshake::Done;
            }
            Err(why) => why,
        };
        // Send the alert rustls queued for the server, if the socket takes it.
        if let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) {
            let _ = write_records(tls, stream);
        }
        self.fail(why);
        Handshake::Failed
    }

    /// One round of the handshake: `Ok(Some(()))` when it is over, `Ok(None)` while the
    /// socket has nothing more to read, `Err(why)` when it failed.
    fn handshake_step(&mut self, buf: &mut [u8], scratch: &mut [u8]) -> Result<Option<()>, String> {
        let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
            return Err("no connection".to_string());
        };
        loop {
            write_records(tls, stream).map_err(|e| format!("cannot send: {e}"))?;
            if !tls.is_handshaking() {
                return Ok(Some(()));
            }
            let n = match read_once(stream, buf) {
                Ok(0) => return Err("the server closed the connection".to_string()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            match feed(tls, &buf[..n], scratch, |_| false) {
                Fed::Done => {}
                Fed::Failed(why) => return Err(why),
                Fed::PeerClosed => return Err("the server closed the TLS session".to_string()),
                Fed::Stopped => {
                    return Err("the server sent data before the handshake was over".to_string())
                }
            }
        }
    }

    /// Records why the connection failed (the first cause stays).
    pub(crate) fn set_cause(&mut self, cause: Failure) {
        if self.cause.is_none() {
            self.cause = Some(cause);
        }
    }

    /// The cause of a failed step: what was recorded, else `kind`'s.
    pub(crate) fn take_cause(&mut self, kind: FailureKind) -> Failure {
        self.cause.take().unwrap_or_else(|| Failure::of(kind))
    }

    /// Records a failed write as the cause, and says `IoError`.
    fn write_failed(&mut self, e: &io::Error) -> Step {
        self.set_cause(Failure::os(e));
        Step::IoError
    }

    /// Records why the connection failed and drops it.
    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
        self.close();
    }

    /// Drops the socket (and the TLS session).
    pub(crate) fn close(&mut self) {
        self.stream = None;
        self.tls = None;
        self.state = State::Closed;
    }

    /// Messages whose first byte has been written.
    pub(crate) fn sent_messages(&self) -> u64 {
        self.stamped
    }

    /// Messages started but not (yet) echoed.
    pub(crate) fn outstanding(&self) -> u64 {
        self.started - self.done
    }

    /// Whether the connection has sent everything it will and got all of it back.
    pub(crate) fn is_finished(&self, sending: bool) -> bool {
        (!sending || self.started >= self.limit) && self.done == self.started
    }

    /// Starts messages (if still `sending` and under the limit): closed loop, until `depth`
    /// are outstanding; under `--rate`, those due at `now`, still at most `depth` outstanding.
    #[inline]
    fn start_messages(&mut self, sending: bool, now: Instant) {
        if !sending {
            return;
        }
        let due = match &self.schedule {
            None => self.limit,
            Some(s) => s.due_by(now).min(self.limit),
        };
        while self.started < due && self.started - self.done < self.depth {
            self.started += 1;
            self.target += self.size;
        }
        if self.schedule.is_some() && self.started < due {
            self.pacing.hold(self.started, due);
        }
    }

    /// Sends under `--rate` from now on, on `schedule`.
    pub(crate) fn pace(&mut self, schedule: Schedule) {
        self.schedule = Some(schedule);
    }

    /// Under `--rate`: when the next message is due, if one can start (under the limit and
    /// the window); `None` otherwise (closed loop, or waiting for echoes).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let s = self.schedule.as_ref()?;
        (self.started < self.limit && self.started - self.done < self.depth)
            .then(|| s.due(self.started))
    }

    /// Starts the messages due at `until` (under `--rate`, on the timer: `now`, or the end of
    /// sending if that came first; closed loop: up to the window) and writes them.
    pub(crate) fn pump(&mut self, until: Instant, now: Instant, sending: bool) -> Step {
        self.start_messages(sending, until);
        if let Err(e) = self.flush(now) {
            return self.write_failed(&e);
        }
        if self.is_finished(sending) {
            return Step::Finished;
        }
        Step::Continue
    }

    /// Under `--rate`, once sending stopped at `at`: counts the messages due by then that
    /// were never written.
    pub(crate) fn settle_pacing(&mut self, at: Instant) {
        if let Some(s) = &self.schedule {
            let due = s.due_by(at).min(self.limit);
            self.pacing.sent = self.stamped;
            self.pacing.unsent = due.saturating_sub(self.stamped);
        }
    }

    /// Starts the first `depth` messages and writes them; for a fresh `Active` connection.
    /// With TLS, first reads whatever arrived since the handshake (a session ticket, or the
    /// alert of a server that refused this client), whose readiness was not waited for.
    pub(crate) fn begin(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        scratch: &mut [u8],
        hist: &mut Latencies,
    ) -> Step {
        if self.tls.is_some() {
            let step = self.read_available(buf, scratch, true, false, hist);
            if step != Step::Continue {
                return step;
            }
        }
        self.pump(now, now, true)
    }

    /// Writes as much of the unsent part of the started messages as the socket takes, straight
    /// from the pattern table. Messages whose first byte goes out are stamped with `now`.
    #[inline]
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls(now);
        }
        while self.sent < self.target {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            let want = (self.target - self.sent).min(CHUNK as u64) as usize;
            match stream.write(self.pattern.window(self.sent, want)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u64;
                    self.stamp(now);
                }
                // The socket is full: an edge-triggered writable event will come when it drains.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The TLS `flush`: plaintext goes to rustls only once every record it made earlier is on
    /// the socket, so rustls holds at most one chunk's records and a message is stamped when
    /// its first record is about to be sent.
    fn flush_tls(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
                return Ok(());
            };
            if write_records(tls, stream)? == Flushed::Blocked || self.sent >= self.target {
                return Ok(());
            }
            let want = (self.target - self.sent).min(CHUNK as u64) as usize;
            // With no records pending, rustls takes up to its 64 KiB buffer limit.
            let n = tls.writer().write(self.pattern.window(self.sent, want))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n as u64;
            self.stamp(now);
        }
    }

    /// Stamps the messages whose first byte is now written.
    #[inline]
    fn stamp(&mut self, now: Instant) {
        while self.stamped < self.started && self.stamped * self.size < self.sent {
            self.stamps.push_back(now);
            self.stamped += 1;
        }
    }

    /// Whether there is something to write when the socket becomes writable.
    fn wants_flush(&self) -> bool {
        self.sent < self.target || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Handles a readiness event of an `Active` connection: reads and verifies everything
    /// available, records completed messages in `hist`, starts and writes new ones. `buf`
    /// takes what the socket delivers, `scratch` the plaintext of a TLS connection.
    pub(crate) fn on_event(
        &mut self,
        event: &Event,
        buf: &mut [u8],
        scratch: &mut [u8],
        sending: bool,
        hist: &mut Latencies,
    ) -> Step {
        let closed = event.is_read_closed() || event.is_error();
        let step = self.read_available(buf, scratch, sending, closed, hist);
        if step != Step::Continue {
            return step;
        }
        if event.is_writable() && self.wants_flush() {
            if let Err(e) = self.flush(Instant::now()) {
                return self.write_failed(&e);
            }
        }
        if self.is_finished(sending) {
            return Step::Finished;
        }
        Step::Continue
    }

    /// Reads and verifies what the socket has; `closed`: the event said the peer closed (or
    /// the socket failed), so the end of stream or the error waits behind the data.
    fn read_available(
        &mut self,
        buf: &mut [u8],
        scratch: &mut [u8],
        sending: bool,
        closed: bool,
        hist: &mut Latencies,
    ) -> Step {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Step::IoError;
            };
            let n = match read_once(stream, buf) {
                Ok(0) => {
                    self.set_cause(Failure::of(FailureKind::Closed));
                    return Step::IoError;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(e) => {
                    self.set_cause(Failure::os(&e));
                    return Step::IoError;
                }
            };
            let completed = match self.tls.take() {
                None => self.accept(&buf[..n], sending, hist),
                Some(mut tls) => {
                    let mut result = Ok(None);
                    let fed = feed(&mut tls, &buf[..n], scratch, |plain| {
                        match self.accept(plain, sending, hist) {
                            Ok(Some(at)) => result = Ok(Some(at)),
                            Ok(None) => {}
                            Err(step) => result = Err(step),
                        }
                        result.is_ok()
                    });
                    self.tls = Some(tls);
                    match fed {
                        Fed::Done | Fed::Stopped => result,
                        // The server closed its side of the session before the echo was over.
                        Fed::PeerClosed => {
                            self.set_cause(Failure::of(FailureKind::Closed));
                            Err(Step::IoError)
                        }
                        Fed::Failed(why) => {
                            self.failure = Some(why);
                            Err(Step::TlsError)
                        }
                    }
                }
            };
            match completed {
                Err(step) => return step,
                Ok(Some(now)) => {
                    if let Err(e) = self.flush(now) {
                        return self.write_failed(&e);
                    }
                }
                Ok(None) => {}
            }
            // A short read means the receive queue is empty now. Linux signals every later
            // arrival as a new edge, so the usual extra read that returns WouldBlock is skipped
            // — unless the event already said the peer closed: then no new edge comes for the
            // end of stream queued behind this data, and the next read must see it. (The
            // Windows poll re-arms the readable side at a short read for this: see
            // `poll/windows.rs`. Reading on to WouldBlock instead would let one connection
            // whose echoes keep arriving hold the worker in this loop forever.)
            if n < buf.len() && !closed {
                return Step::Continue;
            }
        }
    }

    /// Checks `data`, the next bytes of the echo, against the pattern; records the messages it
    /// completes in `hist` and starts new ones. Returns when messages completed (the time to
    /// stamp the new ones with when they are written), or `Err(Step::Mismatch)`.
    #[inline]
    fn accept(
        &mut self,
        data: &[u8],
        sending: bool,
        hist: &mut Latencies,
    ) -> Result<Option<Instant>, Step> {
        let n = data.len() as u64;
        if self.verified + n > self.sent || !self.pattern.matches(self.verified, data) {
            // The first bytes back on a plain connection are a TLS record: a TLS server
            // (its alert, or its handshake), not a corrupting echo.
            self.set_cause(Failure::of(
                if self.verified == 0 && !self.speaks_tls && looks_like_tls(data) {
                    FailureKind::TlsRecords
                } else {
                    FailureKind::Mismatch
                },
            ));
            return Err(Step::Mismatch);
        }
        self.verified += n;
        let complete = self.verified / self.size;
        if complete <= self.done {
            return Ok(None);
        }
        let now = Instant::now();
        while self.done < complete {
            // Every completed message was stamped: its first byte went out before its echo.
            let sent_at = self.stamps.pop_front().unwrap_or(now);
            let service = u64::try_from(now.saturating_duration_since(sent_at).as_micros())
                .unwrap_or(u64::MAX);
            match &self.schedule {
                None => record(&mut hist.latency, service),
                Some(s) => {
                    record(&mut hist.latency, s.latency_us(self.done, now));
                    record(
                        &mut hist.service,
                        micros(now.saturating_duration_since(sent_at)),
                    );
                }
            }
            self.done += 1;
        }
        self.start_messages(sending, now);
        Ok(Some(now))
    }

    /// Sends a `close_notify` (with TLS), shuts down the write side and moves to `Closing`.
    pub(crate) fn begin_close(&mut self, graceful: bool) {
        if self.stream.is_none() {
            return self.close();
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        self.state = State::Closing { graceful };
        self.write_shut = false;
        self.shut_write_side();
    }

    /// Writes what rustls still has to send (the `close_notify` last) and then shuts the TCP
    /// write side; closes the connection if either fails. Waits for a writable event when the
    /// socket is full.
    fn shut_write_side(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let flushed = match self.tls.as_mut() {
            Some(tls) => write_records(tls, stream),
            None => Ok(Flushed::All),
        };
        match flushed {
            Ok(Flushed::Blocked) => {}
            Ok(Flushed::All) if stream.shutdown(Shutdown::Write).is_ok() => self.write_shut = true,
            Ok(Flushed::All) | Err(_) => self.close(),
        }
    }

    /// Reads (and discards) until end of stream while `Closing`. Returns `None` while still
    /// waiting, `Some(true)` at a clean end of stream, `Some(false)` if a graceful connection
    /// received bytes it never sent. The connection is `Closed` whenever `Some` is returned.
    pub(crate) fn on_closing_event(&mut self, buf: &mut [u8], scratch: &mut [u8]) -> Option<bool> {
        let State::Closing { graceful } = self.state else {
            return None;
        };
        if !self.write_shut {
            self.shut_write_side();
        }
        loop {
            let stream = self.stream.as_mut()?;
            let n = match read_once(stream, buf) {
                Ok(0) => {
                    self.close();
                    return Some(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.close();
                    return Some(true);
                }
            };
            let extra = match self.tls.as_mut() {
                None => true,
                Some(tls) => {
                    let mut extra = false;
                    // A TLS error after our close_notify ends nothing that was measured.
                    let _ = feed(tls, &buf[..n], scratch, |_| {
                        extra = true;
                        !graceful
                    });
                    extra
                }
            };
            if extra && graceful {
                self.close();
                return Some(false);
            }
        }
    }
}
