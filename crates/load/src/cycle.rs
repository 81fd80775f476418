//! `--handshakes`: each connection slot runs whole cycles, one after the other — connect, TLS
//! handshake, one echo of `size` bytes (verified), `close_notify` and close — and the cycle,
//! not the message, is what is counted and timed.
//!
//! A cycle ends when the server's end of stream arrives after our `close_notify`, so its time
//! covers the server's whole part (accept, handshake, echo, close) and no connection is left
//! half-open. Every handshake is a full one: session resumption is off (see
//! [`TlsClient::without_resumption`](crate::TlsClient)).
//!
//! A failed cycle (connect refused or timed out, TLS failure, I/O error, mismatch) is counted
//! and the slot starts the next one — unless the slot has not completed a single cycle yet:
//! then the failure is taken as the answer (no such server, a certificate the client refuses,
//! a client certificate the server wants) and the slot stops, so a misconfigured run ends at
//! once with the reason instead of failing for the whole `--duration`.
//!
//! After `duration` (or `messages_per_conn` cycles per slot) no new cycle starts; cycles in
//! flight get `drain_timeout` to end, and those that do not are counted as incomplete.

use std::io;
use std::sync::Barrier;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::conn::{Conn, Handshake, Latencies, State, Step};
use crate::cpu::{cpu_time, Who};
use crate::failure::{Failure, FailureKind};
use crate::live::Publisher;
use crate::pattern::{Pattern, CHUNK};
use crate::poll::{Event, Events, Interest, Poll, Registry, TcpStream, Token};
use crate::tls::TlsClient;
use crate::worker::{Counters, Measurement, WorkerResult, SILENT_DRAIN};
use crate::{Live, LoadConfig};

/// One connection slot and the cycle it is running.
struct Slot {
    /// This slot's number among all connections of the run.
    index: u64,
    conn: Conn,
    /// When the current cycle started (its connect was issued).
    cycle_start: Instant,
    /// Cycles started so far.
    cycles: u64,
    /// Cycles completed so far.
    completed: u64,
    /// A cycle is in flight.
    busy: bool,
    /// No more cycles: a first cycle failed, or the cycle limit is reached.
    stopped: bool,
}

/// Why a cycle failed (the connection's recorded cause says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    Connect,
    Io,
    Mismatch,
    Tls,
}

/// Runs one `--handshakes` worker over slots `first, first + stride, ...` (below
/// `cfg.conns`): waits at `barrier` for the other workers, then runs cycles until the time or
/// cycle limit, and waits for the cycles in flight.
pub(crate) fn run_cycle_worker(
    poll: Poll,
    first: usize,
    stride: usize,
    cfg: &LoadConfig,
    tls: &TlsClient,
    barrier: &Barrier,
    live: &Live,
) -> WorkerResult {
    let mut measure = Measurement::start(cfg, &poll, barrier, live);
    let mut worker = CycleWorker::new(poll, first, stride, cfg, tls, live, measure.start);
    worker.begin();
    let end = loop {
        if let Some(end) = worker.turn(&mut measure) {
            break end;
        }
    };
    worker.finish(&measure, end)
}

/// One `--handshakes` worker: its poll, its slots and what it counted.
struct CycleWorker<'a> {
    poll: Poll,
    cfg: &'a LoadConfig,
    tls: &'a TlsClient,
    publisher: Publisher<'a>,
    /// The cycle times.
    hist: Histogram<u64>,
    /// The round trip of each cycle's one message, which the report does not show: the cycle
    /// time is the figure.
    echo: Latencies,
    events: Events,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    r: Counters,
    /// Cycles per slot at most (`messages_per_conn`).
    limit: u64,
    slots: Vec<Slot>,
    /// Slots with a cycle in flight.
    busy: usize,
}

impl<'a> CycleWorker<'a> {
    /// A worker whose slots have run no cycle yet.
    fn new(
        poll: Poll,
        first: usize,
        stride: usize,
        cfg: &'a LoadConfig,
        tls: &'a TlsClient,
        live: &'a Live,
        start: Instant,
    ) -> CycleWorker<'a> {
        let slots = (first..cfg.conns)
            .step_by(stride)
            .map(|index| Slot {
                index: index as u64,
                conn: Conn::new(None, None, Pattern::for_connection(0), 1, 1, None, start),
                cycle_start: start,
                cycles: 0,
                completed: 0,
                busy: false,
                stopped: false,
            })
            .collect();
        CycleWorker {
            poll,
            cfg,
            tls,
            publisher: live.publisher(first),
            hist: crate::new_histogram(),
            echo: Latencies::new(),
            events: Events::with_capacity(1024),
            buf: vec![0u8; CHUNK],
            scratch: vec![0u8; CHUNK],
            r: Counters::default(),
            limit: cfg.messages_per_conn.unwrap_or(u64::MAX),
            slots,
            busy: 0,
        }
    }

    /// Every slot starts its first cycle.
    fn begin(&mut self) {
        let (registry, cfg, tls) = (self.poll.registry(), self.cfg, self.tls);
        for (token, slot) in self.slots.iter_mut().enumerate() {
            self.busy += start_cycle(slot, Token(token), registry, cfg, tls, &mut self.r) as usize;
        }
    }

    /// One turn of the loop: deadlines, one poll and its events. Returns when the worker's
    /// measurement ended, once it did.
    fn turn(&mut self, measure: &mut Measurement) -> Option<Instant> {
        let now = Instant::now();
        if self.publisher.due(now) {
            let r = &self.r;
            self.publisher
                .publish(r.messages, r.bytes, r.messages, r, &self.hist);
        }
        if measure.must_stop(now, &self.publisher) {
            measure.stop_sending(now);
            // Not one cycle completed: the cycles in flight wait for a server that does not
            // answer; a short drain says so sooner.
            if self.r.handshakes == 0 {
                measure.drain_deadline = measure.drain_deadline.min(now + SILENT_DRAIN);
            }
        }
        if self.busy > 0 && now >= measure.drain_deadline {
            self.drain_expired();
        }
        if self.busy == 0 {
            return Some(now);
        }
        let wake_at = if measure.sending() {
            measure.send_deadline
        } else {
            measure.drain_deadline
        };
        let timeout = measure.timeout(self.cfg, now, wake_at, &self.publisher);
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return None;
            }
            // The poll itself broke: every cycle in flight fails, and none starts again.
            for slot in self.slots.iter_mut().filter(|s| s.busy) {
                slot.conn.close();
                slot.busy = false;
                self.r.io_errors += 1;
                self.r.failures.add(Failure::os(&e));
                self.r.cycle_failures += 1;
            }
            return Some(Instant::now());
        }
        self.dispatch(measure.sending());
        None
    }

    /// The drain timeout expired: every cycle still in flight is incomplete.
    fn drain_expired(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.busy) {
            self.r.failures.add(Failure::of(
                if slot.conn.state == State::Active && slot.conn.verified == 0 {
                    FailureKind::Silent
                } else {
                    FailureKind::Unanswered
                },
            ));
            slot.conn.close();
            slot.busy = false;
            self.r.incomplete += 1;
            self.r.cycle_failures += 1;
        }
        self.busy = 0;
    }

    /// Moves the cycles along on the events of the last poll; a slot whose cycle ended starts
    /// the next while `sending`.
    fn dispatch(&mut self, sending: bool) {
        let (registry, cfg, tls, r) = (self.poll.registry(), self.cfg, self.tls, &mut self.r);
        for event in self.events.iter() {
            let token = event.token();
            let Some(slot) = self.slots.get_mut(token.0) else {
                continue;
            };
            if !slot.busy {
                continue;
            }
            let histograms = (&mut self.hist, &mut self.echo);
            let outcome = advance(slot, event, &mut self.buf, &mut self.scratch, histograms);
            let Some(outcome) = outcome else {
                continue;
            };
            slot.busy = false;
            self.busy -= 1;
            match outcome {
                Ok(()) => {
                    slot.completed += 1;
                    r.handshakes += 1;
                    r.messages += slot.conn.done;
                    r.bytes += slot.conn.verified;
                }
                Err(failure) => fail(slot, failure, r),
            }
            if sending && slot.cycles >= self.limit {
                slot.stopped = true;
            }
            if sending && !slot.stopped {
                self.busy += start_cycle(slot, token, registry, cfg, tls, r) as usize;
            }
        }
    }

    /// The worker's result, its measurement ended at `end`.
    fn finish(self, measure: &Measurement, end: Instant) -> WorkerResult {
        let r = &self.r;
        self.publisher
            .publish(r.messages, r.bytes, r.messages, r, &self.hist);
        let established = self.slots.iter().filter(|s| s.completed > 0).count();
        let cpu = measure.cpu_until(cpu_time(Who::Thread));
        self.r
            .into_result(self.hist, established, measure.start, Some(end), cpu)
    }
}

/// Starts the slot's next cycle: a new TLS session and a non-blocking connect. Returns whether
/// a cycle is now in flight (a connect that fails at once is a failed cycle).
fn start_cycle(
    slot: &mut Slot,
    token: Token,
    registry: &Registry,
    cfg: &LoadConfig,
    tls: &TlsClient,
    r: &mut Counters,
) -> bool {
    let now = Instant::now();
    slot.cycles += 1;
    slot.cycle_start = now;
    // Each cycle gets a stream of its own, so a reply from an earlier connection cannot pass.
    let pattern = Pattern::for_connection(slot.index + (slot.cycles - 1) * cfg.conns as u64);
    let session = match tls.connect() {
        Ok(session) => session,
        Err(why) => {
            slot.conn = Conn::failed(why, pattern, now);
            fail(slot, Failed::Tls, r);
            return false;
        }
    };
    let stream = TcpStream::connect(cfg.connect).and_then(|mut s| {
        registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(s)
    });
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            slot.conn = Conn::new(None, None, pattern, 1, 1, None, now);
            slot.conn.set_cause(Failure::os(&e));
            fail(slot, Failed::Connect, r);
            return false;
        }
    };
    slot.conn = Conn::new(
        Some(stream),
        Some(session),
        pattern,
        cfg.size,
        1,
        Some(1),
        now,
    );
    slot.busy = true;
    true
}

/// Counts a failed cycle; a slot that has never completed one stops.
fn fail(slot: &mut Slot, failure: Failed, r: &mut Counters) {
    match failure {
        Failed::Connect => r.connect_errors += 1,
        Failed::Io => r.io_errors += 1,
        Failed::Mismatch => r.mismatches += 1,
        Failed::Tls => r.tls_failed(&mut slot.conn),
    }
    match failure {
        Failed::Connect => r.failures.add(slot.conn.take_cause(FailureKind::Io)),
        Failed::Io => r.failures.add(slot.conn.take_cause(FailureKind::Closed)),
        Failed::Mismatch => r.failures.add(slot.conn.take_cause(FailureKind::Mismatch)),
        Failed::Tls => {}
    }
    r.cycle_failures += 1;
    slot.conn.close();
    if slot.completed == 0 {
        slot.stopped = true;
    }
}

/// Moves the slot's cycle along after a readiness event: `None` while it goes on,
/// `Some(Ok(()))` when it completed (the server's end of stream after our close; its time is
/// recorded in `cycles`), or why it failed. The message's own round trip goes to `echo`.
fn advance(
    slot: &mut Slot,
    event: &Event,
    buf: &mut [u8],
    scratch: &mut [u8],
    (cycles, echo): (&mut Histogram<u64>, &mut Latencies),
) -> Option<Result<(), Failed>> {
    let conn = &mut slot.conn;
    if conn.state == State::Connecting {
        match conn.on_connect_event(event)? {
            true => {}
            false => return Some(Err(Failed::Connect)),
        }
    }
    if conn.state == State::Handshaking {
        match conn.drive_handshake(buf, scratch) {
            Handshake::Pending => return None,
            Handshake::Failed => return Some(Err(Failed::Tls)),
            // The cycle's one message goes out at once.
            Handshake::Done => match conn.begin(Instant::now(), buf, scratch, echo) {
                Step::Continue => return None,
                step => return step_outcome(conn, step),
            },
        }
    }
    match conn.state {
        State::Active => {
            let step = conn.on_event(event, buf, scratch, true, echo);
            if step == Step::Continue {
                return None;
            }
            step_outcome(conn, step)
        }
        State::Closing { .. } => match conn.on_closing_event(buf, scratch)? {
            true => {
                let us = slot.cycle_start.elapsed().as_micros();
                let us = u64::try_from(us).unwrap_or(u64::MAX);
                if cycles.record(us).is_err() {
                    cycles.saturating_record(us);
                }
                Some(Ok(()))
            }
            false => Some(Err(Failed::Mismatch)),
        },
        State::Connecting | State::Handshaking | State::Closed => None,
    }
}

/// What a step other than `Continue` means for the cycle: `Finished` closes (the cycle goes
/// on until the server's end of stream), anything else fails it.
fn step_outcome(conn: &mut Conn, step: Step) -> Option<Result<(), Failed>> {
    match step {
        Step::Continue => None,
        Step::Finished => {
            conn.begin_close(true);
            match conn.state {
                State::Closing { .. } => None,
                _ => Some(Err(Failed::Io)),
            }
        }
        Step::IoError => Some(Err(Failed::Io)),
        Step::Mismatch => Some(Err(Failed::Mismatch)),
        Step::TlsError => Some(Err(Failed::Tls)),
    }
}
