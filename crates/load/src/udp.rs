//! `--udp`: closed-loop load on a UDP echo server (RFC 862 over UDP).
//!
//! Each of the `conns` *flows* is a UDP socket bound to an ephemeral port and `connect`ed to
//! the server, so the kernel delivers it only datagrams from the server's address, and an ICMP
//! port unreachable comes back as `ECONNREFUSED` on the next `recv` or `send`. A flow keeps
//! `depth` datagrams of `size` bytes in flight, as a TCP connection keeps `depth` messages.
//!
//! ## A datagram
//!
//! ```text
//! bytes 0..8      sequence number n, u64 little-endian (0, 1, 2, ... per flow)
//! bytes 8..size   the flow's pattern stream (see `pattern`) from offset n·size + 8 on
//! ```
//!
//! An echo is *verified* when it is exactly `size` bytes, its sequence number was sent by this
//! flow, and every other byte equals the pattern at that sequence number: the sequence number
//! names the datagram, so echoes are matched in any order, and a datagram of another flow, a
//! shifted or a corrupted one does not verify. A datagram that does not verify counts once in
//! `mismatches` (and, if it named a datagram in flight, frees that slot).
//!
//! ## Loss
//!
//! UDP may drop a datagram anywhere (a full socket buffer on either side, the server's
//! `udp_send_dropped`). A datagram not answered within `udp_timeout` is counted *lost* and its
//! slot is refilled with a new datagram (a new sequence number), so loss never stalls a flow.
//! The verdicts of a verified echo:
//!
//! * **received**: its datagram was in flight: timed (send → receive) and counted in
//!   `messages`;
//! * **late**: its datagram had already been counted lost (it stays counted in `lost`);
//! * **duplicated**: its datagram had already been received (or was late) once.
//!
//! Timeouts are checked every `udp_timeout / 8` (at most 25 ms), so a datagram is declared
//! lost between `udp_timeout` and `udp_timeout` plus that interval after it was sent. When
//! sending stops (`duration` or `messages_per_conn`), a flow waits for its datagrams in flight
//! or their timeout — the drain takes at most that long, whatever `drain_timeout` says. The
//! measured interval ends with the last verified echo.
//!
//! ## Under `--rate`
//!
//! A flow sends datagram `n` when its [`Schedule`] says it is due (with at most `depth` in
//! flight; see the `schedule` module) instead of as soon as one of `depth` comes back: the
//! loss under an offered load. A received echo is timed from its datagram's due time (the latency) and from
//! its actual send (the service latency); the loss timeout counts from the actual send.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::conn::{record, Latencies};
use crate::cpu::{cpu_time, Who};
use crate::failure::{Failure, FailureKind};
use crate::live::Publisher;
use crate::pattern::{Pattern, CHUNK};
use crate::poll::{Events, Interest, Poll, Token, UdpSocket};
use crate::schedule::{micros, Pacing, Schedule};
use crate::worker::{earliest, Counters, Measurement, WorkerResult};
use crate::{Live, LoadConfig};

/// Bytes of the header every datagram starts with: its sequence number.
pub const HEADER: usize = 8;

/// The largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IPv4 header bytes).
pub const MAX_DATAGRAM: usize = 65_507;

/// One socket and the datagrams it has in flight.
struct Flow {
    sock: Option<UdpSocket>,
    pattern: Pattern,
    /// The next sequence number to send (= datagrams sent so far).
    next_seq: u64,
    /// Sequence numbers in flight and when they were sent, oldest (smallest) first.
    in_flight: VecDeque<(u64, Instant)>,
    /// Sequence numbers counted lost whose echo has not arrived (yet).
    lost: HashSet<u64>,
    /// Verified echoes of datagrams in flight.
    received: u64,
    /// An echo of this flow did not verify (counted once per flow as a cause of failure).
    mismatched: bool,
    /// Under `--rate`: when each datagram is due.
    schedule: Option<Schedule>,
    /// Under `--rate`: datagrams held back by the window, left unsent.
    pacing: Pacing,
}

impl Flow {
    fn open(cfg: &LoadConfig, poll: &Poll, token: Token, index: usize) -> io::Result<Flow> {
        let local: SocketAddr = if cfg.connect.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut sock = UdpSocket::bind(local)?;
        sock.connect(cfg.connect)?;
        poll.registry()
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Flow {
            sock: Some(sock),
            pattern: Pattern::for_connection(index as u64),
            next_seq: 0,
            in_flight: VecDeque::with_capacity(cfg.depth.min(1024)),
            lost: HashSet::new(),
            received: 0,
            mismatched: false,
            schedule: None,
            pacing: Pacing::default(),
        })
    }

    /// Whether this flow still starts new datagrams.
    fn may_send(&self, cfg: &LoadConfig, sending: bool) -> bool {
        sending && cfg.messages_per_conn.is_none_or(|m| self.next_seq < m)
    }

    /// Whether the flow has nothing more to do.
    fn is_finished(&self, cfg: &LoadConfig, sending: bool) -> bool {
        self.sock.is_none() || (self.in_flight.is_empty() && !self.may_send(cfg, sending))
    }

    /// Writes datagram `seq` of this flow into `out` (`out.len()` is the datagram size).
    fn compose(&self, seq: u64, out: &mut [u8]) {
        out[..HEADER].copy_from_slice(&seq.to_le_bytes());
        let size = out.len();
        out[HEADER..].copy_from_slice(self.pattern.window(body_offset(seq, size), size - HEADER));
    }

    /// Sends new datagrams until `depth` are in flight (or the socket buffer is full); under
    /// `--rate`, those due at `now` (still at most `depth` in flight). A socket error is
    /// counted and closes the flow.
    fn fill(
        &mut self,
        cfg: &LoadConfig,
        sending: bool,
        now: Instant,
        out: &mut [u8],
        r: &mut Counters,
        poll: &Poll,
    ) {
        let due = self.schedule.as_ref().map_or(u64::MAX, |s| s.due_by(now));
        while self.in_flight.len() < cfg.depth && self.next_seq < due && self.may_send(cfg, sending)
        {
            let Some(sock) = &self.sock else {
                return;
            };
            let seq = self.next_seq;
            self.compose(seq, out);
            match sock.send(out) {
                Ok(_) => {
                    self.in_flight.push_back((seq, Instant::now()));
                    self.next_seq += 1;
                    r.udp_sent += 1;
                }
                // The socket buffer is full: the writable event resumes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    count_error(&e, r);
                    self.close(poll);
                    return;
                }
            }
        }
        if self.schedule.is_some() && self.next_seq < due && self.may_send(cfg, sending) {
            // The window is full: these wait for echoes (or timeouts).
            self.pacing.hold(self.next_seq, due);
        }
    }

    /// Counts the datagrams in flight longer than `timeout` as lost.
    fn expire(&mut self, now: Instant, timeout: Duration, r: &mut Counters) {
        while let Some(&(seq, sent)) = self.in_flight.front() {
            if now.saturating_duration_since(sent) < timeout {
                break;
            }
            self.in_flight.pop_front();
            self.lost.insert(seq);
            r.udp_lost += 1;
        }
    }

    /// Reads and judges the echoes waiting on the socket, to `WouldBlock` (the readiness is
    /// edge-triggered; at most `depth` echoes plus duplicates wait); returns the time of the
    /// last verified echo, if any.
    fn read(
        &mut self,
        size: usize,
        buf: &mut [u8],
        hist: &mut Latencies,
        r: &mut Counters,
    ) -> io::Result<Option<Instant>> {
        let mut last = None;
        while let Some(sock) = &self.sock {
            let n = match sock.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            match self.judge(&buf[..n], size) {
                Verdict::Received(sent) => {
                    let service = micros(now.saturating_duration_since(sent));
                    match &self.schedule {
                        None => record(&mut hist.latency, service),
                        Some(s) => {
                            let seq = u64::from_le_bytes(buf[..HEADER].try_into().expect("8"));
                            record(&mut hist.latency, s.latency_us(seq, now));
                            record(&mut hist.service, service);
                        }
                    }
                    self.received += 1;
                    last = Some(now);
                }
                Verdict::Late => r.udp_late += 1,
                Verdict::Duplicated => r.udp_duplicated += 1,
                Verdict::Mismatch => {
                    r.mismatches += 1;
                    self.mismatched = true;
                }
            }
        }
        Ok(last)
    }

    /// What an echo of `data` means for this flow (see the module doc).
    fn judge(&mut self, data: &[u8], size: usize) -> Verdict {
        if data.len() != size {
            return Verdict::Mismatch;
        }
        let seq = u64::from_le_bytes(data[..HEADER].try_into().expect("8 bytes"));
        if seq >= self.next_seq {
            return Verdict::Mismatch;
        }
        let slot = self.in_flight.binary_search_by_key(&seq, |&(s, _)| s).ok();
        if !self
            .pattern
            .matches(body_offset(seq, size), &data[HEADER..])
        {
            // The header named a datagram in flight, the body is wrong: that datagram's
            // echo has come and failed; free its slot rather than wait for its timeout.
            if let Some(i) = slot {
                self.in_flight.remove(i);
            }
            return Verdict::Mismatch;
        }
        if let Some(i) = slot {
            let (_, sent) = self.in_flight.remove(i).expect("found");
            Verdict::Received(sent)
        } else if self.lost.remove(&seq) {
            Verdict::Late
        } else {
            Verdict::Duplicated
        }
    }

    /// Under `--rate`: when the next datagram is due, if one can be sent (under the limit and
    /// the window); `None` otherwise.
    fn next_due(&self, cfg: &LoadConfig, sending: bool) -> Option<Instant> {
        let s = self.schedule.as_ref()?;
        (self.sock.is_some() && self.may_send(cfg, sending) && self.in_flight.len() < cfg.depth)
            .then(|| s.due(self.next_seq))
    }

    /// Closes the socket (its datagrams in flight are no longer waited for).
    fn close(&mut self, poll: &Poll) {
        if let Some(mut sock) = self.sock.take() {
            let _ = poll.registry().deregister(&mut sock);
        }
        self.in_flight.clear();
    }
}

/// The stream offset the body of datagram `seq` starts at.
fn body_offset(seq: u64, size: usize) -> u64 {
    seq.wrapping_mul(size as u64).wrapping_add(HEADER as u64)
}

/// The judgement of one echo.
enum Verdict {
    /// Verified, of a datagram in flight sent at this instant.
    Received(Instant),
    /// Verified, of a datagram already counted lost.
    Late,
    /// Verified, of a datagram already answered.
    Duplicated,
    /// Wrong length, unknown sequence number or wrong bytes.
    Mismatch,
}

/// Counts a socket error: `ECONNREFUSED` (an ICMP port unreachable: no server there) apart
/// from the rest; either is the socket's cause of failure. Winsock reports the ICMP port
/// unreachable on a UDP socket as `WSAECONNRESET`: counted as refused too, named as it is.
fn count_error(e: &io::Error, r: &mut Counters) {
    let unreachable = e.kind() == io::ErrorKind::ConnectionRefused
        || (cfg!(windows) && e.kind() == io::ErrorKind::ConnectionReset);
    if unreachable {
        r.udp_refused += 1;
        r.failures.add(Failure {
            kind: FailureKind::Refused,
            ..Failure::os(e)
        });
    } else {
        r.io_errors += 1;
        r.failures.add(Failure::os(e));
    }
}

/// Runs one UDP worker: opens flows number `first, first + stride, ...` (below `cfg.conns`),
/// waits at `barrier` for the other workers, then drives the load.
pub(crate) fn run_udp_worker(
    poll: Poll,
    first: usize,
    stride: usize,
    cfg: &LoadConfig,
    barrier: &Barrier,
    live: &Live,
) -> WorkerResult {
    let mut worker = UdpWorker::open(poll, first, stride, cfg, live);
    let mut measure = Measurement::start(cfg, &worker.poll, barrier, live);
    worker.begin(&mut measure);
    while worker.turn(&mut measure) {}
    worker.finish(&measure)
}

/// One UDP worker: its poll, its flows and what it counted.
struct UdpWorker<'a> {
    poll: Poll,
    cfg: &'a LoadConfig,
    publisher: Publisher<'a>,
    hist: Latencies,
    events: Events,
    buf: Vec<u8>,
    /// The datagram being sent.
    out: Vec<u8>,
    r: Counters,
    flows: Vec<Flow>,
    /// Each flow's index in the run (its place in the stagger of --rate).
    indices: Vec<usize>,
    /// How often, and when next, the datagrams in flight are checked for their timeout.
    scan_every: Duration,
    next_scan: Instant,
    /// When the last verified echo came.
    last_echo: Option<Instant>,
}

impl<'a> UdpWorker<'a> {
    /// Opens this worker's flows (a socket that cannot be opened is a connect error).
    fn open(
        poll: Poll,
        first: usize,
        stride: usize,
        cfg: &'a LoadConfig,
        live: &'a Live,
    ) -> UdpWorker<'a> {
        let mut r = Counters::default();
        let mut flows: Vec<Flow> = Vec::new();
        let mut indices: Vec<usize> = Vec::new();
        for index in (first..cfg.conns).step_by(stride) {
            match Flow::open(cfg, &poll, Token(flows.len()), index) {
                Ok(flow) => {
                    flows.push(flow);
                    indices.push(index);
                }
                Err(e) => {
                    r.connect_errors += 1;
                    r.failures.add(Failure::os(&e));
                }
            }
        }
        let scan_every =
            (cfg.udp_timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(25));
        UdpWorker {
            poll,
            cfg,
            publisher: live.publisher(first),
            hist: Latencies::new(),
            events: Events::with_capacity(1024),
            buf: vec![0u8; CHUNK],
            out: vec![0u8; cfg.size],
            r,
            flows,
            indices,
            scan_every,
            next_scan: Instant::now(),
            last_echo: None,
        }
    }

    /// The measurement begins: every flow gets its --rate schedule and sends.
    fn begin(&mut self, measure: &mut Measurement) {
        let (cfg, start) = (self.cfg, measure.start);
        self.next_scan = start + self.scan_every;
        for (flow, &index) in self.flows.iter_mut().zip(&self.indices) {
            if let Some(rate) = cfg.rate {
                flow.schedule = Some(Schedule::new(start, index, cfg.conns, rate));
            }
            let (out, r) = (&mut self.out, &mut self.r);
            flow.fill(cfg, measure.sending(), start, out, r, &self.poll);
            measure.due_at(flow.next_due(cfg, measure.sending()));
        }
    }

    /// One turn of the loop: deadlines, timeouts and due datagrams, one poll and its events.
    /// Returns false when the worker is done.
    fn turn(&mut self, measure: &mut Measurement) -> bool {
        let cfg = self.cfg;
        let now = Instant::now();
        if self.publisher.due(now) {
            let received: u64 = self.flows.iter().map(|f| f.received).sum();
            let bytes = received * cfg.size as u64;
            let latency = &self.hist.latency;
            let r = &self.r;
            self.publisher
                .publish(received, bytes, r.udp_sent, r, latency);
        }
        if measure.must_stop(now, &self.publisher) {
            let until = measure.stop_sending(now);
            // Under --rate, the datagrams that fell due before the deadline go out first.
            if cfg.rate.is_some() {
                self.fill_open(true, until);
            }
        }
        if now >= self.next_scan || measure.due(now) {
            self.scan(measure, now);
        }
        if self
            .flows
            .iter()
            .all(|f| f.is_finished(cfg, measure.sending()))
        {
            return false;
        }
        let wake_at = if measure.sending() {
            let at = self.next_scan.min(measure.send_deadline);
            earliest(Some(at), measure.next_due).unwrap_or(self.next_scan)
        } else {
            self.next_scan
        };
        let timeout = measure.timeout(cfg, now, wake_at, &self.publisher);
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return true;
            }
            // The poll itself broke: every flow still open fails.
            for flow in self.flows.iter_mut().filter(|f| f.sock.is_some()) {
                self.r.io_errors += 1;
                self.r.failures.add(Failure::os(&e));
                flow.close(&self.poll);
            }
            return false;
        }
        self.dispatch(measure);
        true
    }

    /// Every open flow sends what it may at `now`.
    fn fill_open(&mut self, sending: bool, now: Instant) {
        for flow in self.flows.iter_mut().filter(|f| f.sock.is_some()) {
            let (out, r) = (&mut self.out, &mut self.r);
            flow.fill(self.cfg, sending, now, out, r, &self.poll);
        }
    }

    /// At a scan, counts the datagrams past their timeout as lost; then every open flow
    /// sends what it may (its replacements, and under --rate the datagrams due).
    fn scan(&mut self, measure: &mut Measurement, now: Instant) {
        let (cfg, scanning) = (self.cfg, now >= self.next_scan);
        measure.next_due = None;
        for flow in self.flows.iter_mut().filter(|f| f.sock.is_some()) {
            if scanning {
                flow.expire(now, cfg.udp_timeout, &mut self.r);
            }
            let (out, r) = (&mut self.out, &mut self.r);
            flow.fill(cfg, measure.sending(), now, out, r, &self.poll);
            measure.due_at(flow.next_due(cfg, measure.sending()));
        }
        if scanning {
            self.next_scan = now + self.scan_every;
        }
    }

    /// Serves the events of the last poll: the --rate timer, echoes to read and flows that
    /// may send again.
    fn dispatch(&mut self, measure: &mut Measurement) {
        let cfg = self.cfg;
        for event in self.events.iter() {
            if measure.timer_fired(event) {
                continue;
            }
            let Some(flow) = self.flows.get_mut(event.token().0) else {
                continue;
            };
            if flow.sock.is_none() {
                continue;
            }
            let r = &mut self.r;
            match flow.read(cfg.size, &mut self.buf, &mut self.hist, r) {
                Ok(last) => {
                    if last.is_some() {
                        self.last_echo = last;
                    }
                    let (sending, now) = (measure.sending(), Instant::now());
                    flow.fill(cfg, sending, now, &mut self.out, r, &self.poll);
                }
                Err(e) => {
                    count_error(&e, r);
                    flow.close(&self.poll);
                }
            }
            measure.due_at(flow.next_due(cfg, measure.sending()));
        }
    }

    /// The worker's result: every flow's counts summed, the last totals published.
    fn finish(mut self, measure: &Measurement) -> WorkerResult {
        let (cfg, r) = (self.cfg, &mut self.r);
        let cpu_end = cpu_time(Who::Thread);
        let established = self.flows.len();
        let end = (established > 0).then(|| self.last_echo.unwrap_or_else(Instant::now));
        let send_end = measure.send_end().unwrap_or_else(Instant::now);
        for flow in self.flows.iter_mut() {
            r.messages += flow.received;
            r.bytes += flow.received * cfg.size as u64;
            if flow.mismatched {
                r.failures.add(Failure::of(FailureKind::Mismatch));
            }
            if let Some(s) = &flow.schedule {
                let limit = cfg.messages_per_conn.unwrap_or(u64::MAX);
                flow.pacing.unsent = s.due_by(send_end).min(limit).saturating_sub(flow.next_seq);
                r.pacing.add(&flow.pacing);
            }
        }
        let latency = &self.hist.latency;
        self.publisher
            .publish(r.messages, r.bytes, r.udp_sent, r, latency);
        if cfg.rate.is_some() {
            r.pacing.sent = r.udp_sent;
            r.send_end = Some(send_end);
            r.service = Some(self.hist.service);
        }
        let cpu = measure.cpu_until(cpu_end);
        self.r
            .into_result(self.hist.latency, established, measure.start, end, cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            sock: None,
            pattern: Pattern::for_connection(5),
            next_seq: 0,
            in_flight: VecDeque::new(),
            lost: HashSet::new(),
            received: 0,
            mismatched: false,
            schedule: None,
            pacing: Pacing::default(),
        }
    }

    /// Puts datagram `seq` in flight and returns its bytes.
    fn sent(f: &mut Flow, size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        let seq = f.next_seq;
        f.compose(seq, &mut d);
        f.in_flight.push_back((seq, Instant::now()));
        f.next_seq += 1;
        d
    }

    #[test]
    fn echoes_verify_in_any_order_and_late_and_duplicate_are_told_apart() {
        let mut f = flow();
        let a = sent(&mut f, 64);
        let b = sent(&mut f, 64);
        let c = sent(&mut f, 64);
        assert!(matches!(f.judge(&b, 64), Verdict::Received(_)));
        assert!(matches!(f.judge(&a, 64), Verdict::Received(_)));
        assert!(matches!(f.judge(&a, 64), Verdict::Duplicated));
        let mut r = Counters::default();
        f.expire(
            Instant::now() + Duration::from_secs(1),
            Duration::from_millis(200),
            &mut r,
        );
        assert_eq!(r.udp_lost, 1);
        assert!(matches!(f.judge(&c, 64), Verdict::Late));
        assert!(matches!(f.judge(&c, 64), Verdict::Duplicated));
    }

    #[test]
    fn wrong_bytes_length_or_sequence_are_mismatches() {
        let mut f = flow();
        let a = sent(&mut f, 100);
        for at in [0, 7, 8, 50, 99] {
            let mut bad = a.clone();
            bad[at] ^= 0x40;
            assert!(
                matches!(f.judge(&bad, 100), Verdict::Mismatch),
                "flip at {at}"
            );
        }
        assert!(matches!(f.judge(&a[..99], 100), Verdict::Mismatch));
        // Another flow's datagram with the same sequence number.
        let mut other = flow();
        other.pattern = Pattern::for_connection(6);
        let o = sent(&mut other, 100);
        assert!(matches!(f.judge(&o, 100), Verdict::Mismatch));
        // The flip at byte 50 named datagram 0 and freed its slot.
        assert!(f.in_flight.is_empty());
    }

    #[test]
    fn the_smallest_datagram_is_the_header_alone() {
        let mut f = flow();
        let a = sent(&mut f, HEADER);
        assert_eq!(a, 0u64.to_le_bytes());
        assert!(matches!(f.judge(&a, HEADER), Verdict::Received(_)));
    }
}
