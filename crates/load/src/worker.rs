//! One load-generating thread: a `Poll` (see the `poll` module) and its share of the connections.

use std::io;
use std::ops::AddAssign;
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::conn::{Conn, Handshake, Latencies, State, Step};
use crate::cpu::{cpu_time, Who};
use crate::failure::{Failure, FailureKind, Failures};
use crate::live::Publisher;
use crate::pattern::{Pattern, CHUNK};
use crate::poll::{Event, Events, Interest, Poll, TcpStream, Token};
use crate::schedule::{Pacing, Schedule};
use crate::sys::Timer;
use crate::{Live, LoadConfig};

/// The token of the `--rate` timer in a worker's poll (connections are numbered from 0).
pub(crate) const TIMER: Token = Token(usize::MAX);

/// The `--rate` timer of a worker (`None` in the closed loop, or if the OS refused one: the
/// poll's timeout then wakes the worker, to the millisecond).
pub(crate) fn pacing_timer(cfg: &LoadConfig, poll: &Poll) -> Option<Timer> {
    cfg.rate?;
    Timer::new(poll.registry(), TIMER).ok()
}

/// Arms `timer` for `next_due`, if both exist.
pub(crate) fn arm(timer: &mut Option<Timer>, next_due: Option<Instant>) {
    if let (Some(t), Some(at)) = (timer.as_mut(), next_due) {
        // A timer that cannot be armed leaves the poll's timeout to wake the worker.
        let _ = t.arm(at);
    }
}

/// How long to wait for the server's end of stream after the last connection finished.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The drain when not one echoed byte came back during the whole run (a discard server, or
/// one that reads and stalls): waiting the full drain timeout would only delay the answer.
pub(crate) const SILENT_DRAIN: Duration = Duration::from_millis(500);

/// A one-shot gate: workers wait until the spawner says whether all of them exist.
pub(crate) struct Gate {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            state: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Opens the gate; `go` tells the waiters whether to run.
    pub(crate) fn open(&self, go: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(go);
        self.cv.notify_all();
    }

    /// Waits until the gate is opened and returns its verdict.
    pub(crate) fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *s {
                return go;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What one worker measured.
pub(crate) struct WorkerResult {
    pub(crate) hist: Histogram<u64>,
    pub(crate) established: usize,
    /// What it counted: messages, bytes, errors, handshakes.
    pub(crate) counters: Counters,
    /// Start of this worker's measurement (after every thread finished connecting).
    pub(crate) start: Instant,
    /// When its last connection finished (or the drain expired); `None` with no connections.
    pub(crate) end: Option<Instant>,
    /// This thread's CPU time from `start` to `end`, where the platform can tell.
    pub(crate) cpu: Option<Duration>,
}

/// Runs one worker: connects connections number `first, first + stride, ...` (below
/// `cfg.conns`), waits at `barrier` for the other workers, then drives the load.
pub(crate) fn run_worker(
    poll: Poll,
    first: usize,
    stride: usize,
    cfg: &LoadConfig,
    barrier: &Barrier,
    live: &Live,
) -> WorkerResult {
    let mut worker = TcpWorker::new(poll, first, stride, cfg, live);
    // Phase 1: all connects (and TLS handshakes) in flight at once, bounded by
    // connect_timeout.
    worker.connect_all();
    // Phase 2: measure, from the moment every thread has finished connecting.
    let mut measure = Measurement::start(cfg, &worker.poll, barrier, live);
    worker.begin(&mut measure);
    while worker.turn(&mut measure) {}
    worker.finish(&measure)
}

/// One worker's measurement, the same for the TCP, UDP and cycle workers: when it started,
/// when sending stops and the drain ends, and the `--rate` schedule's timer.
pub(crate) struct Measurement {
    /// Start of the measurement (after every thread finished connecting).
    pub(crate) start: Instant,
    /// This thread's CPU time at `start`, where the platform can tell.
    cpu_start: Option<Duration>,
    /// When no new message starts (`cfg.duration`), and when the drain after it ends.
    pub(crate) send_deadline: Instant,
    pub(crate) drain_deadline: Instant,
    /// When sending stopped (`None` while messages still start), and under --rate the next
    /// time a message falls due.
    send_end: Option<Instant>,
    pub(crate) next_due: Option<Instant>,
    timer: Option<Timer>,
}

impl Measurement {
    /// Waits at `barrier` for the other workers, then starts the measurement.
    pub(crate) fn start(
        cfg: &LoadConfig,
        poll: &Poll,
        barrier: &Barrier,
        live: &Live,
    ) -> Measurement {
        barrier.wait();
        let start = Instant::now();
        live.mark_started(start);
        let cpu_start = cpu_time(Who::Thread);
        let (send_deadline, drain_deadline) = deadlines(cfg, start);
        Measurement {
            start,
            cpu_start,
            send_deadline,
            drain_deadline,
            send_end: None,
            next_due: None,
            timer: pacing_timer(cfg, poll),
        }
    }

    /// Whether messages still start (false once the duration is over or the run was stopped).
    pub(crate) fn sending(&self) -> bool {
        self.send_end.is_none()
    }

    /// When sending stopped, if it did.
    pub(crate) fn send_end(&self) -> Option<Instant> {
        self.send_end
    }

    /// Whether sending must stop at `now`: the duration is over, or the run was stopped.
    pub(crate) fn must_stop(&self, now: Instant, publisher: &Publisher) -> bool {
        self.sending() && (now >= self.send_deadline || publisher.stopped())
    }

    /// Stops sending at `now`. Returns the instant up to which the messages already due still
    /// go out under --rate: due strictly before the deadline, `duration` × `rate` in all.
    pub(crate) fn stop_sending(&mut self, now: Instant) -> Instant {
        let until = now.min(self.send_deadline - Duration::from_nanos(1));
        self.send_end = Some(until);
        self.next_due = None;
        until
    }

    /// Whether, while sending, a message of the --rate schedule has fallen due at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.sending() && self.next_due.is_some_and(|at| now >= at)
    }

    /// Notes that a message falls due at `at` (the earliest such time is kept).
    pub(crate) fn due_at(&mut self, at: Option<Instant>) {
        self.next_due = earliest(self.next_due, at);
    }

    /// The poll timeout that wakes the worker at `wake_at` (or sooner, as `publisher` needs);
    /// while sending, arms the --rate timer for the next due message.
    pub(crate) fn timeout(
        &mut self,
        cfg: &LoadConfig,
        now: Instant,
        wake_at: Instant,
        publisher: &Publisher,
    ) -> Duration {
        let wake_at = publisher.cap(now, wake_at);
        let timeout = wake_at.saturating_duration_since(now) + slack(cfg, self.sending());
        if self.sending() {
            arm(&mut self.timer, self.next_due);
        }
        timeout
    }

    /// Whether `event` is the --rate timer's (it is then acknowledged).
    pub(crate) fn timer_fired(&mut self, event: &Event) -> bool {
        if event.token() != TIMER {
            return false;
        }
        if let Some(t) = self.timer.as_mut() {
            t.fired();
        }
        true
    }

    /// The thread's CPU time from the start to `end` (a reading of `cpu_time`).
    pub(crate) fn cpu_until(&self, end: Option<Duration>) -> Option<Duration> {
        cpu_between(self.cpu_start, end)
    }
}

/// One TCP (or TLS) worker: its poll, its connections and what it counted.
struct TcpWorker<'a> {
    poll: Poll,
    cfg: &'a LoadConfig,
    /// This worker's connections are numbers `first, first + stride, ...` of the run.
    first: usize,
    stride: usize,
    publisher: Publisher<'a>,
    hist: Latencies,
    events: Events,
    buf: Vec<u8>,
    /// Plaintext out of rustls; unused without TLS.
    scratch: Vec<u8>,
    r: Counters,
    conns: Vec<Conn>,
    /// Connections established in phase 1.
    established: usize,
    /// Connections still measuring, and those waiting for the server's end of stream.
    active: usize,
    closing: usize,
    /// When the last connection finished (or the drain expired), and the thread's CPU time then.
    end: Option<Instant>,
    cpu_end: Option<Duration>,
}

impl<'a> TcpWorker<'a> {
    /// A worker with no connection yet.
    fn new(
        poll: Poll,
        first: usize,
        stride: usize,
        cfg: &'a LoadConfig,
        live: &'a Live,
    ) -> TcpWorker<'a> {
        TcpWorker {
            poll,
            cfg,
            first,
            stride,
            publisher: live.publisher(first),
            hist: Latencies::new(),
            events: Events::with_capacity(1024),
            buf: vec![0u8; CHUNK],
            scratch: vec![0u8; if cfg.tls.is_some() { CHUNK } else { 0 }],
            r: Counters::default(),
            conns: Vec::new(),
            established: 0,
            active: 0,
            closing: 0,
            end: None,
            cpu_end: None,
        }
    }

    /// Phase 1: issues every connect at once, drives the connects and TLS handshakes until all
    /// are done or `connect_timeout` passed, and counts the established connections.
    fn connect_all(&mut self) {
        let epoch = Instant::now();
        let mut pending = 0usize;
        for index in (self.first..self.cfg.conns).step_by(self.stride) {
            pending += self.open(index, epoch) as usize;
        }
        self.await_connects(pending, epoch + self.cfg.connect_timeout);
        self.time_out_connects();
        self.established = self
            .conns
            .iter()
            .filter(|c| c.state == State::Active)
            .count();
    }

    /// Opens connection number `index` (a TLS session, a non-blocking connect); returns
    /// whether its connect is in flight.
    fn open(&mut self, index: usize, epoch: Instant) -> bool {
        let (cfg, r) = (self.cfg, &mut self.r);
        let token = Token(self.conns.len());
        let pattern = Pattern::for_connection(index as u64);
        let session = match cfg.tls.as_ref().map(|t| t.connect()).transpose() {
            Ok(session) => session,
            Err(why) => {
                let mut conn = Conn::failed(why, pattern, epoch);
                r.tls_failed(&mut conn);
                self.conns.push(conn);
                return false;
            }
        };
        let stream = TcpStream::connect(cfg.connect).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        let stream = match stream {
            Ok(s) => Some(s),
            Err(e) => {
                r.connect_errors += 1;
                r.failures.add(Failure::os(&e));
                None
            }
        };
        let in_flight = stream.is_some();
        let (size, depth, limit) = (cfg.size, cfg.depth, cfg.messages_per_conn);
        let conn = Conn::new(stream, session, pattern, size, depth, limit, epoch);
        self.conns.push(conn);
        in_flight
    }

    /// Polls until the `pending` connects (and handshakes) are over or `deadline` passed.
    fn await_connects(&mut self, mut pending: usize, deadline: Instant) {
        while pending > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.poll.poll(&mut self.events, Some(deadline - now)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for event in self.events.iter() {
                let Some(conn) = self.conns.get_mut(event.token().0) else {
                    continue;
                };
                pending -= self
                    .r
                    .connecting(conn, event, &mut self.buf, &mut self.scratch);
            }
        }
    }

    /// Counts the connects and handshakes still unfinished at the connect timeout as failed.
    fn time_out_connects(&mut self) {
        let timeout = self.cfg.connect_timeout;
        for conn in self.conns.iter_mut() {
            match conn.state {
                State::Connecting => {
                    conn.close();
                    self.r.connect_errors += 1;
                    self.r.failures.add(Failure::connect_timeout(timeout));
                }
                State::Handshaking => {
                    conn.failure = Some(format!(
                        "no answer within the connect timeout ({timeout:?})"
                    ));
                    conn.close();
                    self.r.tls_failed(conn);
                }
                _ => {}
            }
        }
    }

    /// Phase 2 begins: every established connection gets its --rate schedule and starts.
    fn begin(&mut self, measure: &mut Measurement) {
        let (first, stride, cfg) = (self.first, self.stride, self.cfg);
        for (j, conn) in self.conns.iter_mut().enumerate() {
            if conn.state != State::Active {
                continue;
            }
            if let Some(rate) = cfg.rate {
                conn.pace(Schedule::new(
                    measure.start,
                    first + j * stride,
                    cfg.conns,
                    rate,
                ));
            }
            self.active += 1;
            let step = conn.begin(
                measure.start,
                &mut self.buf,
                &mut self.scratch,
                &mut self.hist,
            );
            self.r
                .settle(conn, step, &mut self.active, &mut self.closing);
            measure.due_at(conn.next_due());
        }
    }

    /// One turn of the measuring loop: deadlines, due messages, one poll and its events.
    /// Returns false when the worker is done.
    fn turn(&mut self, measure: &mut Measurement) -> bool {
        let now = Instant::now();
        if self.publisher.due(now) {
            self.publish();
        }
        if measure.must_stop(now, &self.publisher) {
            self.stop_sending(measure, now);
        }
        if self.active > 0 && now >= measure.drain_deadline {
            self.drain_expired();
        }
        // Under --rate: the timer. Every connection with a message due starts and writes it.
        if measure.due(now) {
            self.pump_due(measure, now);
        }
        if self.active == 0 && self.end.is_none() {
            // With no connections there is nothing to measure: leave `end` unset.
            if self.established > 0 {
                self.end = Some(now);
            }
            self.cpu_end = cpu_time(Who::Thread);
        }
        let Some(wake_at) = self.wake_at(measure, now) else {
            return false;
        };
        let timeout = measure.timeout(self.cfg, now, wake_at, &self.publisher);
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                self.poll_broke(&e);
            }
            return true;
        }
        let active_before = self.active;
        self.dispatch(measure);
        if self.active == 0 && active_before > 0 && self.end.is_none() {
            self.end = Some(Instant::now());
            self.cpu_end = cpu_time(Who::Thread);
        }
        true
    }

    /// Publishes the running totals (see `Live`).
    fn publish(&self) {
        let done = self.conns.iter().map(|c| c.done).sum();
        let verified = self.conns.iter().map(|c| c.verified).sum();
        let sent = self.conns.iter().map(|c| c.sent_messages()).sum();
        let latency = &self.hist.latency;
        self.publisher
            .publish(done, verified, sent, &self.r, latency);
    }

    /// The duration is over (or the run was stopped): the due messages go out under --rate,
    /// a silent server gets a short drain, connections never served are marked, and those
    /// with nothing left in flight close.
    fn stop_sending(&mut self, measure: &mut Measurement, now: Instant) {
        let until = measure.stop_sending(now);
        let (r, active, closing) = (&mut self.r, &mut self.active, &mut self.closing);
        if self.cfg.rate.is_some() {
            for conn in self.conns.iter_mut().filter(|c| c.state == State::Active) {
                let step = conn.pump(until, now, true);
                r.settle(conn, step, active, closing);
            }
        }
        // Not one echoed byte on any connection: a server that reads and never answers
        // will not start now; a short drain says so sooner.
        if *active > 0 && self.conns.iter().all(|c| c.verified == 0) {
            measure.drain_deadline = measure.drain_deadline.min(now + SILENT_DRAIN);
        }
        // Connections not served at all while the others were (ten echoes each on
        // average): a server at its connection cap leaves them in its listen backlog.
        let served: u64 = self.conns.iter().map(|c| c.done).sum();
        if self.established > 1 && served >= 10 * self.established as u64 {
            for conn in self.conns.iter_mut().filter(|c| c.state == State::Active) {
                conn.unserved = conn.verified == 0;
            }
        }
        for conn in self.conns.iter_mut().filter(|c| c.state == State::Active) {
            if conn.is_finished(false) {
                r.settle(conn, Step::Finished, active, closing);
            }
        }
    }

    /// The drain timeout expired: what is still in flight is counted, and every connection
    /// still measuring closes.
    fn drain_expired(&mut self) {
        for conn in self.conns.iter_mut().filter(|c| c.state == State::Active) {
            self.r.incomplete += conn.outstanding();
            // Under --rate, echoes missing at the end are measured (rate_unanswered), not a
            // failure; a server that never answered at all still is one.
            if conn.verified == 0 {
                self.r.failures.add(Failure::of(FailureKind::Silent));
            } else if self.cfg.rate.is_none() {
                self.r.failures.add(Failure::of(FailureKind::Unanswered));
            }
            conn.begin_close(false);
            if matches!(conn.state, State::Closing { .. }) {
                self.closing += 1;
            }
        }
        self.active = 0;
    }

    /// Under --rate: every connection writes the messages due at `now`.
    fn pump_due(&mut self, measure: &mut Measurement, now: Instant) {
        measure.next_due = None;
        for conn in self.conns.iter_mut().filter(|c| c.state == State::Active) {
            let step = conn.pump(now, now, measure.sending());
            self.r
                .settle(conn, step, &mut self.active, &mut self.closing);
            if conn.state == State::Active {
                measure.due_at(conn.next_due());
            }
        }
    }

    /// When to wake next, or `None` when the worker is done: no connection measuring, and
    /// none closing (or the grace for the server's end of stream is over).
    fn wake_at(&self, measure: &Measurement, now: Instant) -> Option<Instant> {
        if self.active > 0 {
            return Some(if measure.sending() {
                earliest(Some(measure.send_deadline), measure.next_due)
                    .unwrap_or(measure.send_deadline)
            } else {
                measure.drain_deadline
            });
        }
        let close_deadline = self.end.unwrap_or(now) + CLOSE_GRACE;
        (self.closing > 0 && now < close_deadline).then_some(close_deadline)
    }

    /// The poll itself broke: every remaining connection fails.
    fn poll_broke(&mut self, e: &io::Error) {
        for conn in self.conns.iter_mut() {
            if conn.state == State::Active {
                self.r.io_errors += 1;
                self.r.failures.add(Failure::os(e));
            }
            conn.close();
        }
        self.active = 0;
        self.closing = 0;
    }

    /// Serves the events of the last poll: the --rate timer, measuring and closing connections.
    fn dispatch(&mut self, measure: &mut Measurement) {
        for event in self.events.iter() {
            if measure.timer_fired(event) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(event.token().0) else {
                continue;
            };
            match conn.state {
                State::Active => {
                    let (buf, scratch) = (&mut self.buf, &mut self.scratch);
                    let step =
                        conn.on_event(event, buf, scratch, measure.sending(), &mut self.hist);
                    self.r
                        .settle(conn, step, &mut self.active, &mut self.closing);
                    // Echoes may have opened a full window: its due messages wake the timer.
                    if measure.sending() && conn.state == State::Active {
                        measure.due_at(conn.next_due());
                    }
                }
                State::Closing { .. } => {
                    if let Some(clean) = conn.on_closing_event(&mut self.buf, &mut self.scratch) {
                        self.closing -= 1;
                        if !clean {
                            self.r.mismatches += 1;
                            self.r.failures.add(Failure::of(FailureKind::Mismatch));
                        }
                    }
                }
                State::Connecting | State::Handshaking | State::Closed => {}
            }
        }
    }

    /// The worker's result: every connection's counts summed, the last totals published.
    fn finish(mut self, measure: &Measurement) -> WorkerResult {
        let send_end = measure.send_end().unwrap_or_else(Instant::now);
        let r = &mut self.r;
        for conn in self.conns.iter_mut() {
            r.messages += conn.done;
            r.bytes += conn.verified;
            // Served in the drain only (one never served is counted silent or unanswered).
            if conn.unserved && conn.done > 0 {
                r.failures.add(Failure::of(FailureKind::Unserved));
            }
            conn.settle_pacing(send_end);
            r.pacing.add(&conn.pacing);
        }
        let sent = self.conns.iter().map(|c| c.sent_messages()).sum();
        let latency = &self.hist.latency;
        self.publisher
            .publish(r.messages, r.bytes, sent, r, latency);
        if self.cfg.rate.is_some() {
            r.send_end = Some(send_end);
            r.service = Some(self.hist.service);
        }
        let cpu = measure.cpu_until(self.cpu_end);
        let end = self.end;
        self.r
            .into_result(self.hist.latency, self.established, measure.start, end, cpu)
    }
}

/// A measurement that starts at `start`: when to stop sending (`cfg.duration`) and when to
/// stop waiting for what is in flight (`cfg.drain_timeout` more); a year for "no limit".
pub(crate) fn deadlines(cfg: &LoadConfig, start: Instant) -> (Instant, Instant) {
    let send = start
        .checked_add(cfg.duration)
        .unwrap_or(start + Duration::from_secs(86_400 * 365));
    (send, send.checked_add(cfg.drain_timeout).unwrap_or(send))
}

/// What a worker adds to its poll timeout: 500 µs, so that a deadline is never polled with a
/// zero timeout in a spin; none while sending under `--rate`, where every µs of timer lateness
/// counts in the latency (the poll rounds a timeout up to whole milliseconds anyway).
pub(crate) fn slack(cfg: &LoadConfig, sending: bool) -> Duration {
    if cfg.rate.is_some() && sending {
        Duration::ZERO
    } else {
        Duration::from_micros(500)
    }
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The later of two optional instants.
pub(crate) fn latest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The thread CPU time between two readings, where the platform gives both.
pub(crate) fn cpu_between(start: Option<Duration>, end: Option<Duration>) -> Option<Duration> {
    match (start, end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    }
}

/// Error and progress counters of one worker.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connect_errors: u64,
    pub(crate) io_errors: u64,
    pub(crate) mismatches: u64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) incomplete: u64,
    pub(crate) tls_errors: u64,
    pub(crate) tls_error: Option<String>,
    pub(crate) handshakes: u64,
    pub(crate) cycle_failures: u64,
    /// `--udp`: datagrams sent, counted lost, echoed late, echoed twice; sockets refused.
    pub(crate) udp_sent: u64,
    pub(crate) udp_lost: u64,
    pub(crate) udp_late: u64,
    pub(crate) udp_duplicated: u64,
    pub(crate) udp_refused: u64,
    /// Why connections (sockets, cycles) failed, by cause.
    pub(crate) failures: Failures,
    /// `--rate`: messages (datagrams) sent, held back by the window, left unsent.
    pub(crate) pacing: Pacing,
    /// `--rate`: when sending stopped.
    pub(crate) send_end: Option<Instant>,
    /// `--rate`: the service latency (from the actual write), µs.
    pub(crate) service: Option<Histogram<u64>>,
}

impl AddAssign<&Counters> for Counters {
    /// Adds another worker's counters: the counts summed, the causes of failure merged, the
    /// first TLS reason kept, the later end of sending, the service latencies added.
    fn add_assign(&mut self, other: &Counters) {
        // Taken apart field by field: a new counter must be added here, or this does not
        // compile.
        let Counters {
            connect_errors,
            io_errors,
            mismatches,
            messages,
            bytes,
            incomplete,
            tls_errors,
            tls_error,
            handshakes,
            cycle_failures,
            udp_sent,
            udp_lost,
            udp_late,
            udp_duplicated,
            udp_refused,
            failures,
            pacing,
            send_end,
            service,
        } = other;
        self.connect_errors += connect_errors;
        self.io_errors += io_errors;
        self.mismatches += mismatches;
        self.messages += messages;
        self.bytes += bytes;
        self.incomplete += incomplete;
        self.tls_errors += tls_errors;
        if self.tls_error.is_none() {
            self.tls_error.clone_from(tls_error);
        }
        self.handshakes += handshakes;
        self.cycle_failures += cycle_failures;
        self.udp_sent += udp_sent;
        self.udp_lost += udp_lost;
        self.udp_late += udp_late;
        self.udp_duplicated += udp_duplicated;
        self.udp_refused += udp_refused;
        self.failures.merge(failures);
        self.pacing.add(pacing);
        self.send_end = latest(self.send_end, *send_end);
        match (&mut self.service, service) {
            // Auto-resizing histograms cannot fail to add.
            (Some(sum), Some(h)) => {
                let _ = sum.add(h);
            }
            (None, Some(h)) => self.service = Some(h.clone()),
            (_, None) => {}
        }
    }
}

impl Counters {
    /// Counts a connection whose TLS session failed, keeping the first reason.
    pub(crate) fn tls_failed(&mut self, conn: &mut Conn) {
        self.tls_errors += 1;
        let why = conn.failure.take();
        self.failures.add(Failure::tls(
            why.as_deref().unwrap_or("the TLS session failed"),
        ));
        if self.tls_error.is_none() {
            self.tls_error = why;
        }
    }

    /// The worker's result, with these counters.
    pub(crate) fn into_result(
        self,
        hist: Histogram<u64>,
        established: usize,
        start: Instant,
        end: Option<Instant>,
        cpu: Option<Duration>,
    ) -> WorkerResult {
        WorkerResult {
            hist,
            established,
            counters: self,
            start,
            end,
            cpu,
        }
    }

    /// Drives a connection of phase 1 on `event` (its connect, then its TLS handshake);
    /// returns 1 when it stopped being pending (established or failed), else 0.
    fn connecting(
        &mut self,
        conn: &mut Conn,
        event: &Event,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> usize {
        let mut finished = 0;
        if conn.state == State::Connecting {
            if conn.on_connect_event(event) == Some(false) {
                finished += 1;
                self.connect_errors += 1;
                self.failures.add(conn.take_cause(FailureKind::Io));
            }
            if conn.state == State::Active {
                finished += 1;
            }
        }
        if conn.state == State::Handshaking {
            match conn.drive_handshake(buf, scratch) {
                Handshake::Pending => {}
                Handshake::Done => {
                    finished += 1;
                    self.handshakes += 1;
                }
                Handshake::Failed => {
                    finished += 1;
                    self.tls_failed(conn);
                }
            }
        }
        finished
    }

    /// Applies the outcome of a step of an `Active` connection.
    fn settle(&mut self, conn: &mut Conn, step: Step, active: &mut usize, closing: &mut usize) {
        match step {
            Step::Continue => return,
            Step::Finished => {
                conn.begin_close(true);
                if matches!(conn.state, State::Closing { .. }) {
                    *closing += 1;
                }
            }
            Step::IoError => {
                self.io_errors += 1;
                self.failures.add(conn.take_cause(FailureKind::Closed));
                conn.close();
            }
            Step::Mismatch => {
                self.mismatches += 1;
                self.failures.add(conn.take_cause(FailureKind::Mismatch));
                conn.close();
            }
            Step::TlsError => {
                conn.close();
                self.tls_failed(conn);
            }
        }
        *active -= 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Counters with every field set, each to its own value derived from `n`: counts `n`,
    /// `n + 1`, ... `n + 13` in the order of the fields, pacing `n + 16` .. `n + 18`, one
    /// failure on `n` connections, TLS reason `tls n`, sending ended `n` ms after `at`, one
    /// service latency of `n` µs.
    pub(crate) fn every_field_set(n: u64, at: Instant) -> Counters {
        let mut failures = Failures::default();
        failures.add(Failure {
            conns: n,
            ..Failure::of(FailureKind::Silent)
        });
        let mut pacing = Pacing::default();
        pacing.sent = n + 16;
        pacing.held_back = n + 17;
        pacing.unsent = n + 18;
        let mut service = crate::new_histogram();
        service.record(n).unwrap();
        Counters {
            connect_errors: n,
            io_errors: n + 1,
            mismatches: n + 2,
            messages: n + 3,
            bytes: n + 4,
            incomplete: n + 5,
            tls_errors: n + 6,
            tls_error: Some(format!("tls {n}")),
            handshakes: n + 7,
            cycle_failures: n + 8,
            udp_sent: n + 9,
            udp_lost: n + 10,
            udp_late: n + 11,
            udp_duplicated: n + 12,
            udp_refused: n + 13,
            failures,
            pacing,
            send_end: Some(at + Duration::from_millis(n)),
            service: Some(service),
        }
    }

    #[test]
    fn adding_counters_sums_every_field() {
        let t0 = Instant::now();
        let mut sum = every_field_set(100, t0);
        sum += &every_field_set(1000, t0);
        let counts = [
            sum.connect_errors,
            sum.io_errors,
            sum.mismatches,
            sum.messages,
            sum.bytes,
            sum.incomplete,
            sum.tls_errors,
            sum.handshakes,
            sum.cycle_failures,
            sum.udp_sent,
            sum.udp_lost,
            sum.udp_late,
            sum.udp_duplicated,
            sum.udp_refused,
        ];
        let want: Vec<u64> = (0..14).map(|i| 1100 + 2 * i).collect();
        assert_eq!(counts.to_vec(), want);
        let pacing = (sum.pacing.sent, sum.pacing.held_back, sum.pacing.unsent);
        assert_eq!(pacing, (1132, 1134, 1136));
        let failures = sum.failures.into_list();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].conns, 1100);
        // The first TLS reason is kept; sending ended when the later worker stopped.
        assert_eq!(sum.tls_error.as_deref(), Some("tls 100"));
        assert_eq!(sum.send_end, Some(t0 + Duration::from_millis(1000)));
        let service = sum.service.expect("both had service latencies");
        assert_eq!(
            (service.len(), service.min(), service.max()),
            (2, 100, 1000)
        );
    }

    #[test]
    fn adding_to_empty_counters_takes_the_other_whole() {
        let t0 = Instant::now();
        let mut sum = Counters::default();
        sum += &every_field_set(5, t0);
        assert_eq!((sum.connect_errors, sum.udp_refused), (5, 18));
        assert_eq!(sum.tls_error.as_deref(), Some("tls 5"));
        assert_eq!(sum.send_end, Some(t0 + Duration::from_millis(5)));
        assert_eq!(sum.service.map(|h| h.len()), Some(1));
    }
}
