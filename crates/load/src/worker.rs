//! One load-generating thread: a `Poll` (see the `poll` module) and its share of the connections.

use std::io;
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::conn::{Conn, Handshake, Latencies, State, Step};
use crate::cpu::{cpu_time, Who};
use crate::failure::{Failure, FailureKind, Failures};
use crate::pattern::{Pattern, CHUNK};
use crate::poll::{Events, Interest, Poll, TcpStream, Token};
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
    mut poll: Poll,
    first: usize,
    stride: usize,
    cfg: &LoadConfig,
    barrier: &Barrier,
    live: &Live,
) -> WorkerResult {
    let mut publisher = live.publisher(first);
    let mut hist = Latencies::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; CHUNK];
    // Plaintext out of rustls; unused without TLS.
    let mut scratch = vec![0u8; if cfg.tls.is_some() { CHUNK } else { 0 }];
    let mut r = Counters::default();

    // Phase 1: all connects (and TLS handshakes) in flight at once, bounded by
    // connect_timeout.
    let epoch = Instant::now();
    let connect_deadline = epoch + cfg.connect_timeout;
    let mut conns: Vec<Conn> = Vec::new();
    let mut pending = 0usize;
    for index in (first..cfg.conns).step_by(stride) {
        let token = Token(conns.len());
        let pattern = Pattern::for_connection(index as u64);
        let session = match cfg.tls.as_ref().map(|t| t.connect()).transpose() {
            Ok(session) => session,
            Err(why) => {
                let mut conn = Conn::failed(why, pattern, epoch);
                r.tls_failed(&mut conn);
                conns.push(conn);
                continue;
            }
        };
        let stream = TcpStream::connect(cfg.connect).and_then(|mut s| {
            poll.registry()
                .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        let stream = match stream {
            Ok(s) => {
                pending += 1;
                Some(s)
            }
            Err(e) => {
                r.connect_errors += 1;
                r.failures.add(Failure::os(&e));
                None
            }
        };
        conns.push(Conn::new(
            stream,
            session,
            pattern,
            cfg.size,
            cfg.depth,
            cfg.messages_per_conn,
            epoch,
        ));
    }
    while pending > 0 {
        let now = Instant::now();
        if now >= connect_deadline {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(connect_deadline - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            if conn.state == State::Connecting {
                match conn.on_connect_event(event) {
                    Some(true) => {}
                    Some(false) => {
                        pending -= 1;
                        r.connect_errors += 1;
                        r.failures.add(conn.take_cause(FailureKind::Io));
                    }
                    None => {}
                }
                if conn.state == State::Active {
                    pending -= 1;
                }
            }
            if conn.state == State::Handshaking {
                match conn.drive_handshake(&mut buf, &mut scratch) {
                    Handshake::Pending => {}
                    Handshake::Done => {
                        pending -= 1;
                        r.handshakes += 1;
                    }
                    Handshake::Failed => {
                        pending -= 1;
                        r.tls_failed(conn);
                    }
                }
            }
        }
    }
    for conn in conns.iter_mut() {
        match conn.state {
            State::Connecting => {
                conn.close();
                r.connect_errors += 1;
                r.failures
                    .add(Failure::connect_timeout(cfg.connect_timeout));
            }
            State::Handshaking => {
                conn.failure = Some(format!(
                    "no answer within the connect timeout ({:?})",
                    cfg.connect_timeout
                ));
                conn.close();
                r.tls_failed(conn);
            }
            _ => {}
        }
    }
    let established = conns.iter().filter(|c| c.state == State::Active).count();

    // Phase 2: measure, from the moment every thread has finished connecting.
    barrier.wait();
    let start = Instant::now();
    live.mark_started(start);
    let cpu_start = cpu_time(Who::Thread);
    let (send_deadline, mut drain_deadline) = deadlines(cfg, start);
    let mut sending = true;
    let mut active = 0usize;
    let mut closing = 0usize;
    let mut end: Option<Instant> = None;
    let mut cpu_end = None;
    // Under --rate: when sending stopped, and the next time a message falls due.
    let mut send_end = None;
    let mut next_due: Option<Instant> = None;
    let mut timer = pacing_timer(cfg, &poll);

    for (j, conn) in conns.iter_mut().enumerate() {
        if conn.state != State::Active {
            continue;
        }
        if let Some(rate) = cfg.rate {
            conn.pace(Schedule::new(start, first + j * stride, cfg.conns, rate));
        }
        active += 1;
        let step = conn.begin(start, &mut buf, &mut scratch, &mut hist);
        r.settle(conn, step, &mut active, &mut closing);
        next_due = earliest(next_due, conn.next_due());
    }

    loop {
        let now = Instant::now();
        if publisher.due(now) {
            let done = conns.iter().map(|c| c.done).sum();
            let verified = conns.iter().map(|c| c.verified).sum();
            let sent = conns.iter().map(|c| c.sent_messages()).sum();
            publisher.publish(done, verified, sent, &r, &hist.latency);
        }
        if sending && (now >= send_deadline || publisher.stopped()) {
            // Under --rate, the messages that fell due before the deadline go out first.
            // (Due strictly before it: `duration` × `rate` messages in all.)
            let until = now.min(send_deadline - Duration::from_nanos(1));
            if cfg.rate.is_some() {
                for conn in conns.iter_mut().filter(|c| c.state == State::Active) {
                    let step = conn.pump(until, now, true);
                    r.settle(conn, step, &mut active, &mut closing);
                }
            }
            sending = false;
            // Not one echoed byte on any connection: a server that reads and never answers
            // will not start now; a short drain says so sooner.
            if active > 0 && conns.iter().all(|c| c.verified == 0) {
                drain_deadline = drain_deadline.min(now + SILENT_DRAIN);
            }
            // Connections not served at all while the others were (ten echoes each on
            // average): a server at its connection cap leaves them in its listen backlog.
            let served: u64 = conns.iter().map(|c| c.done).sum();
            if established > 1 && served >= 10 * established as u64 {
                for conn in conns.iter_mut().filter(|c| c.state == State::Active) {
                    conn.unserved = conn.verified == 0;
                }
            }
            send_end = Some(until);
            next_due = None;
            for conn in conns.iter_mut().filter(|c| c.state == State::Active) {
                if conn.is_finished(false) {
                    r.settle(conn, Step::Finished, &mut active, &mut closing);
                }
            }
        }
        if active > 0 && now >= drain_deadline {
            for conn in conns.iter_mut().filter(|c| c.state == State::Active) {
                r.incomplete += conn.outstanding();
                // Under --rate, echoes missing at the end are measured (rate_unanswered), not a
                // failure; a server that never answered at all still is one.
                if conn.verified == 0 {
                    r.failures.add(Failure::of(FailureKind::Silent));
                } else if cfg.rate.is_none() {
                    r.failures.add(Failure::of(FailureKind::Unanswered));
                }
                conn.begin_close(false);
                if matches!(conn.state, State::Closing { .. }) {
                    closing += 1;
                }
            }
            active = 0;
        }
        // Under --rate: the timer. Every connection with a message due starts and writes it.
        if sending && next_due.is_some_and(|at| now >= at) {
            next_due = None;
            for conn in conns.iter_mut().filter(|c| c.state == State::Active) {
                let step = conn.pump(now, now, sending);
                r.settle(conn, step, &mut active, &mut closing);
                if conn.state == State::Active {
                    next_due = earliest(next_due, conn.next_due());
                }
            }
        }
        if active == 0 && end.is_none() {
            // With no connections there is nothing to measure: leave `end` unset.
            if established > 0 {
                end = Some(now);
            }
            cpu_end = cpu_time(Who::Thread);
        }
        let wake_at = if active > 0 {
            if sending {
                earliest(Some(send_deadline), next_due).unwrap_or(send_deadline)
            } else {
                drain_deadline
            }
        } else {
            let close_deadline = end.unwrap_or(now) + CLOSE_GRACE;
            if closing == 0 || now >= close_deadline {
                break;
            }
            close_deadline
        };
        let wake_at = publisher.cap(now, wake_at);
        let timeout = wake_at.saturating_duration_since(now) + slack(cfg, sending);
        if sending {
            arm(&mut timer, next_due);
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The poll itself broke: treat every remaining connection as failed.
            for conn in conns.iter_mut() {
                if conn.state == State::Active {
                    r.io_errors += 1;
                    r.failures.add(Failure::os(&e));
                }
                conn.close();
            }
            active = 0;
            closing = 0;
            continue;
        }
        let active_before = active;
        for event in events.iter() {
            if event.token() == TIMER {
                if let Some(t) = timer.as_mut() {
                    t.fired();
                }
                continue;
            }
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            match conn.state {
                State::Active => {
                    let step = conn.on_event(event, &mut buf, &mut scratch, sending, &mut hist);
                    r.settle(conn, step, &mut active, &mut closing);
                    // Echoes may have opened a full window: its due messages wake the timer.
                    if sending && conn.state == State::Active {
                        next_due = earliest(next_due, conn.next_due());
                    }
                }
                State::Closing { .. } => {
                    if let Some(clean) = conn.on_closing_event(&mut buf, &mut scratch) {
                        closing -= 1;
                        if !clean {
                            r.mismatches += 1;
                            r.failures.add(Failure::of(FailureKind::Mismatch));
                        }
                    }
                }
                State::Connecting | State::Handshaking | State::Closed => {}
            }
        }
        if active == 0 && active_before > 0 && end.is_none() {
            end = Some(Instant::now());
            cpu_end = cpu_time(Who::Thread);
        }
    }

    let send_end = send_end.unwrap_or_else(Instant::now);
    for conn in conns.iter_mut() {
        r.messages += conn.done;
        r.bytes += conn.verified;
        // Served in the drain only (one never served is counted silent or unanswered).
        if conn.unserved && conn.done > 0 {
            r.failures.add(Failure::of(FailureKind::Unserved));
        }
        conn.settle_pacing(send_end);
        r.pacing.add(&conn.pacing);
    }
    let sent = conns.iter().map(|c| c.sent_messages()).sum();
    publisher.publish(r.messages, r.bytes, sent, &r, &hist.latency);
    if cfg.rate.is_some() {
        r.send_end = Some(send_end);
        r.service = Some(hist.service);
    }
    r.into_result(
        hist.latency,
        established,
        start,
        end,
        cpu_between(cpu_start, cpu_end),
    )
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
