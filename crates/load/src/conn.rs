//! One load-generating connection: a small state machine over a non-blocking socket.
//!
//! Bookkeeping is in stream offsets. `target` is how many bytes the started messages add up to,
//! `sent` how many the socket has taken, `verified` how many came back and matched the pattern.
//! Message `k` occupies stream bytes `[k·size, (k+1)·size)`; it is *stamped* when its first byte
//! is written and *complete* when `verified` passes its end. Stamps live in a ring of `depth`
//! slots, because at most `depth` messages are ever outstanding.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::net::TcpStream;

use crate::pattern::{Pattern, CHUNK};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Non-blocking connect issued, not yet known to have succeeded.
    Connecting,
    /// Connected and exchanging messages.
    Active,
    /// Write side shut down; reading until the server's end of stream. `graceful` is true when
    /// every message was echoed (then any further byte is an error by the server).
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
}

/// One connection of the load generator.
pub(crate) struct Conn {
    stream: Option<TcpStream>,
    /// Current state.
    pub(crate) state: State,
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
    stamps: Box<[Instant]>,
}

impl Conn {
    /// A connection whose connect is in flight on `stream` (or failed already, if `None`).
    pub(crate) fn new(
        stream: Option<TcpStream>,
        pattern: Pattern,
        size: usize,
        depth: usize,
        limit: Option<u64>,
        epoch: Instant,
    ) -> Conn {
        let state = if stream.is_some() {
            State::Connecting
        } else {
            State::Closed
        };
        Conn {
            stream,
            state,
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
            stamps: vec![epoch; depth].into_boxed_slice(),
        }
    }

    /// Handles a readiness event while connecting. Returns `Some(true)` once connected (the
    /// connection is then `Active`, with TCP_NODELAY set), `Some(false)` if the connect failed
    /// (the connection is then `Closed`), `None` if it is still in progress.
    pub(crate) fn on_connect_event(&mut self, event: &Event) -> Option<bool> {
        let stream = self.stream.as_ref()?;
        let outcome = match stream.take_error() {
            Ok(Some(_)) | Err(_) => Some(false),
            Ok(None) if event.is_error() => Some(false),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Some(stream.set_nodelay(true).is_ok()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                Err(_) => Some(false),
            },
        };
        match outcome {
            Some(true) => self.state = State::Active,
            Some(false) => self.close(),
            None => {}
        }
        outcome
    }

    /// Drops the socket.
    pub(crate) fn close(&mut self) {
        self.stream = None;
        self.state = State::Closed;
    }

    /// Messages started but not (yet) echoed.
    pub(crate) fn outstanding(&self) -> u64 {
        self.started - self.done
    }

    /// Whether the connection has sent everything it will and got all of it back.
    pub(crate) fn is_finished(&self, sending: bool) -> bool {
        (!sending || self.started >= self.limit) && self.done == self.started
    }

    /// Starts messages until `depth` are outstanding (if still `sending` and under the limit).
    #[inline]
    fn start_messages(&mut self, sending: bool) {
        if !sending {
            return;
        }
        while self.started < self.limit && self.started - self.done < self.depth {
            self.started += 1;
            self.target += self.size;
        }
    }

    /// Starts the first `depth` messages and writes them; for a fresh `Active` connection.
    pub(crate) fn begin(&mut self, now: Instant) -> Step {
        self.start_messages(true);
        if self.flush(now).is_err() {
            return Step::IoError;
        }
        if self.is_finished(true) {
            return Step::Finished;
        }
        Step::Continue
    }

    /// Writes as much of the unsent part of the started messages as the socket takes, straight
    /// from the pattern table. Messages whose first byte goes out are stamped with `now`.
    #[inline]
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.sent < self.target {
            let want = (self.target - self.sent).min(CHUNK as u64) as usize;
            match stream.write(self.pattern.window(self.sent, want)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u64;
                    while self.stamped < self.started && self.stamped * self.size < self.sent {
                        self.stamps[(self.stamped % self.depth) as usize] = now;
                        self.stamped += 1;
                    }
                }
                // The socket is full: an edge-triggered writable event will come when it drains.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Handles a readiness event of an `Active` connection: reads and verifies everything
    /// available, records completed messages in `hist`, starts and writes new ones.
    pub(crate) fn on_event(
        &mut self,
        event: &Event,
        buf: &mut [u8],
        sending: bool,
        hist: &mut Histogram<u64>,
    ) -> Step {
        let step = self.read_available(buf, sending, hist);
        if step != Step::Continue {
            return step;
        }
        if event.is_writable() && self.sent < self.target && self.flush(Instant::now()).is_err() {
            return Step::IoError;
        }
        if self.is_finished(sending) {
            return Step::Finished;
        }
        Step::Continue
    }

    fn read_available(&mut self, buf: &mut [u8], sending: bool, hist: &mut Histogram<u64>) -> Step {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Step::IoError;
            };
            let n = match stream.read(buf) {
                Ok(0) => return Step::IoError,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::IoError,
            };
            let data = &buf[..n];
            if self.verified + n as u64 > self.sent || !self.pattern.matches(self.verified, data) {
                return Step::Mismatch;
            }
            self.verified += n as u64;
            let complete = self.verified / self.size;
            if complete > self.done {
                let now = Instant::now();
                while self.done < complete {
                    let sent_at = self.stamps[(self.done % self.depth) as usize];
                    let us = now.saturating_duration_since(sent_at).as_micros();
                    let us = u64::try_from(us).unwrap_or(u64::MAX);
                    if hist.record(us).is_err() {
                        hist.saturating_record(us);
                    }
                    self.done += 1;
                }
                self.start_messages(sending);
                if self.flush(now).is_err() {
                    return Step::IoError;
                }
            }
            // A short read means the receive queue is empty now. Linux signals every later
            // arrival as a new edge, so the usual extra read that returns WouldBlock is skipped.
            if n < buf.len() {
                return Step::Continue;
            }
        }
    }

    /// Shuts down the write side and moves to `Closing`.
    pub(crate) fn begin_close(&mut self, graceful: bool) {
        match self.stream.as_ref() {
            Some(stream) if stream.shutdown(Shutdown::Write).is_ok() => {
                self.state = State::Closing { graceful };
            }
            _ => self.close(),
        }
    }

    /// Reads (and discards) until end of stream while `Closing`. Returns `None` while still
    /// waiting, `Some(true)` at a clean end of stream, `Some(false)` if a graceful connection
    /// received bytes it never sent. The connection is `Closed` whenever `Some` is returned.
    pub(crate) fn on_closing_event(&mut self, buf: &mut [u8]) -> Option<bool> {
        let State::Closing { graceful } = self.state else {
            return None;
        };
        loop {
            let stream = self.stream.as_mut()?;
            match stream.read(buf) {
                Ok(0) => {
                    self.close();
                    return Some(true);
                }
                Ok(_) if graceful => {
                    self.close();
                    return Some(false);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close();
                    return Some(true);
                }
            }
        }
    }
}
