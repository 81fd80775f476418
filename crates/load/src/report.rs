//! The result of a run: [`LoadReport`] and its [`Latency`] summary.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::failure::Failure;

/// `value` with `decimals`, or `-` for a figure that does not exist.
fn fig(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The latency line's figures: `min ..  mean ..`, or `-` when nothing completed.
fn latency_figures(l: Option<&Latency>) -> String {
    match l {
        Some(l) => format!(
            "min {}  p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            l.min, l.p50, l.p99, l.p999, l.max, l.mean
        ),
        None => "- (no echo completed)".to_string(),
    }
}

/// Round-trip latency percentiles of the completed messages, in microseconds.
///
/// A message's round trip runs from the write of its first byte to the read that completed
/// its echo. In handshake mode these are the times of the completed *cycles* instead: from
/// issuing the connect to the server's end of stream after our `close_notify`. A report has
/// none (`null` in JSON) when nothing completed.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Fastest round trip (µs).
    pub min: u64,
    /// Median round trip (µs).
    pub p50: u64,
    /// 99th percentile (µs).
    pub p99: u64,
    /// 99.9th percentile (µs).
    pub p999: u64,
    /// Slowest round trip (µs).
    pub max: u64,
    /// Arithmetic mean (µs).
    pub mean: f64,
}

impl Latency {
    /// Summarises a histogram of microsecond values; `None` when it is empty.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        })
    }
}

/// The datagram counts of a `--udp` run (see the `udp` module for the definitions).
///
/// `received` + `lost` + the datagrams that came back corrupted (`mismatches` of the report)
/// is `sent`, except for datagrams still in flight when a socket failed; `late` and
/// `duplicated` are echoes on top of that.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UdpCounts {
    /// Datagrams sent.
    pub sent: u64,
    /// Echoes verified while their datagram was in flight (= the report's `messages`).
    pub received: u64,
    /// Datagrams not echoed within `timeout_ms` (replaced by new ones).
    pub lost: u64,
    /// `100 × lost / sent`; `None` (`null`) when nothing was sent.
    pub loss_percent: Option<f64>,
    /// Verified echoes of datagrams already counted lost (they stay counted in `lost`).
    pub late: u64,
    /// Verified echoes of datagrams already answered.
    pub duplicated: u64,
    /// Sockets closed by `ECONNREFUSED`: an ICMP port unreachable, no server at the address.
    pub refused: u64,
    /// The loss timeout, in milliseconds.
    pub timeout_ms: u64,
}

/// What a [`run`](crate::run) measured.
///
/// Counters are totals over all connections and threads. Rates are over `elapsed_secs`, the
/// measured interval: from the moment every connection had finished connecting to the moment
/// the last connection finished (its last echo verified) or the drain timeout expired. In
/// handshake mode (`mode` is `"handshakes"`) the interval starts when the first cycles start,
/// and ends when the last cycle ended.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The server address, as given.
    pub connect: String,
    /// Connections asked for.
    pub conns_requested: usize,
    /// Connections that connected within the connect timeout.
    pub conns_established: usize,
    /// Bytes per message (`size_bytes` in JSON).
    #[serde(rename = "size_bytes")]
    pub size: usize,
    /// Messages kept in flight per connection.
    pub depth: usize,
    /// Threads that drove the connections.
    pub threads: usize,
    /// Connects that failed or timed out (never retried).
    pub connect_errors: u64,
    /// Connections that met an end of stream or a socket error before they were done.
    pub io_errors: u64,
    /// Connections on which an echoed byte differed from the byte sent (each counted once;
    /// such a connection is closed at once).
    pub mismatches: u64,
    /// Complete, verified round trips.
    pub messages: u64,
    /// Payload bytes echoed back and verified.
    pub bytes: u64,
    /// Length of the measured interval, in seconds.
    pub elapsed_secs: f64,
    /// `messages / elapsed_secs`; `None` (`null`) when nothing was measured (`elapsed_secs`
    /// 0).
    pub msgs_per_sec: Option<f64>,
    /// `bytes / elapsed_secs / 1e6` (echoed payload, MB = 10⁶ bytes); `None` as
    /// `msgs_per_sec`.
    pub mb_per_sec: Option<f64>,
    /// Round-trip time per message; `None` (`null`) when no message completed.
    pub latency_us: Option<Latency>,
    /// CPU time (user + system) the load generator spent over the measured interval, in % of
    /// one core (may exceed 100 with several threads). Near `100 × threads` means the load
    /// generator, not the server, was the bottleneck. On Linux this is the sum over the load
    /// threads (`RUSAGE_THREAD`), so a server running in the same process is not counted;
    /// elsewhere it is the whole process (`RUSAGE_SELF`). `None` when nothing was measured
    /// or the platform cannot tell.
    pub client_cpu_percent: Option<f64>,
    /// Messages sent but not echoed when the drain timeout expired (in handshake mode: cycles
    /// still in flight then); `incomplete_messages` in JSON.
    #[serde(rename = "incomplete_messages")]
    pub incomplete: u64,
    /// Whether the connections spoke TLS.
    pub tls: bool,
    /// `"echo"`: connections kept open, messages counted; `"handshakes"`: cycles of connect,
    /// TLS handshake, one echo, close, counted in `handshakes`; `"udp"`: UDP sockets, echoed
    /// datagrams counted in `messages` (and `msgs_per_sec` is datagrams/s), the rest in `udp`.
    pub mode: String,
    /// TLS handshakes completed. In handshake mode: complete cycles (handshake, verified echo
    /// and clean close), each also counted once in `messages`.
    pub handshakes: u64,
    /// Handshake mode: `handshakes / elapsed_secs`; `None` otherwise (and when nothing was
    /// measured).
    pub handshakes_per_sec: Option<f64>,
    /// Handshake mode: cycles that failed, for whatever reason (each also counted in
    /// `connect_errors`, `io_errors`, `mismatches`, `tls_errors` or `incomplete`); 0 otherwise.
    pub handshake_failures: u64,
    /// Connections (in handshake mode: cycles) ended by a TLS failure: a certificate the
    /// client refuses (expired, another host's, an unknown issuer), a client certificate the
    /// server wants, an alert, the server closing during the handshake.
    pub tls_errors: u64,
    /// The first TLS failure, as rustls words it (e.g. `invalid peer certificate: Expired`);
    /// `null` when there was none.
    pub tls_error: Option<String>,
    /// Why the run failed, in one sentence (what the CLI prints as its error line): the
    /// causes, with their errno names and how many connections each ended (see
    /// [`Failure`]); `None` (`null`) for a clean run.
    pub error: Option<String>,
    /// Every cause of failure, one entry per kind and errno, most frequent first; empty for a
    /// clean run.
    pub failures: Vec<Failure>,
    /// `--udp`: datagrams sent, received, lost, late, duplicated; `null` over TCP. In this
    /// mode `conns_*` count sockets, `messages` the verified echoes, and `mismatches` the
    /// echoes that did not verify (each datagram once; the socket goes on).
    pub udp: Option<UdpCounts>,
    /// `--rate`: the offered load asked for, messages (datagrams) per second in total. `null`
    /// in the closed loop, as every `rate_*` key and `service_latency_us`. Under `--rate`,
    /// `latency_us` is timed from each message's due time (corrected for coordinated
    /// omission), and messages unanswered at the end do not make the run unclean: they are
    /// measured (a server that answers nothing at all still fails the run, `Silent`).
    pub rate_requested_per_sec: Option<f64>,
    /// `--rate`: messages sent (first byte written) per second of the sending span (from the
    /// start to the end of `duration`, or the stop).
    pub rate_sent_per_sec: Option<f64>,
    /// `--rate`: echoes verified per second (`msgs_per_sec`: over `elapsed_secs`).
    pub rate_received_per_sec: Option<f64>,
    /// `--rate`: messages sent.
    pub rate_sent: Option<u64>,
    /// `--rate`: messages sent and never echoed back verified (in the drain timeout; with
    /// `--udp`, lost or mismatched).
    pub rate_unanswered: Option<u64>,
    /// `--rate`: messages due before sending stopped that were never sent (the generator or
    /// the socket was behind, or the window held them back).
    pub rate_unsent: Option<u64>,
    /// `--rate`: messages that fell due while their connection had `depth` unanswered; they
    /// waited for echoes, and were timed from their due time when they went.
    pub rate_held_back: Option<u64>,
    /// `--rate`: the round trip from each message's actual write (the closed loop's
    /// `latency_us`), to set beside `latency_us` (from the schedule).
    pub service_latency_us: Option<Latency>,
}

impl LoadReport {
    /// Whether this is a handshake-mode report.
    pub fn is_handshakes(&self) -> bool {
        self.mode == "handshakes"
    }

    /// A short human-readable table, one aspect per line, labels aligned.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.udp {
            return self.udp_table(u);
        }
        let shape = if self.is_handshakes() {
            "cycles".to_string()
        } else {
            format!("depth {}", self.depth)
        };
        let _ = writeln!(
            s,
            "{:<13} {}{}  conns {}/{}  size {} B  {shape}  threads {}",
            "target",
            self.connect,
            if self.tls { " (TLS)" } else { "" },
            self.conns_established,
            self.conns_requested,
            self.size,
            self.threads
        );
        s.push_str(&self.completed_lines());
        let _ = writeln!(
            s,
            "{:<13} {}",
            if self.is_handshakes() {
                "cycle (us)"
            } else {
                "latency (us)"
            },
            latency_figures(self.latency_us.as_ref())
        );
        s.push_str(&self.rate_lines());
        s.push_str(&self.errors_line());
        if let Some(why) = &self.tls_error {
            let _ = writeln!(s, "{:<13} {why}", "tls error");
        }
        s.push_str(&self.cpu_line());
        s
    }

    /// What completed, and the throughput: handshakes, or messages and bytes.
    fn completed_lines(&self) -> String {
        let mut s = String::new();
        if self.is_handshakes() {
            let _ = writeln!(
                s,
                "{:<13} {} handshakes (connect, TLS handshake, {} B echo, close) in {:.3} s",
                "completed", self.handshakes, self.size, self.elapsed_secs
            );
            let _ = writeln!(
                s,
                "{:<13} {} handshakes/s",
                "throughput",
                fig(self.handshakes_per_sec, 0)
            );
        } else {
            let _ = writeln!(
                s,
                "{:<13} {} msgs, {} B in {:.3} s",
                "completed", self.messages, self.bytes, self.elapsed_secs
            );
            let _ = writeln!(
                s,
                "{:<13} {} msg/s  {} MB/s",
                "throughput",
                fig(self.msgs_per_sec, 0),
                fig(self.mb_per_sec, 2)
            );
        }
        s
    }

    /// The errors line of a TCP or TLS run (and whether it was clean).
    fn errors_line(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<13} {}connect {}  io {}  mismatches {}  {}incomplete {}{}",
            "errors",
            if self.is_handshakes() {
                format!("failed cycles {}: ", self.handshake_failures)
            } else {
                String::new()
            },
            self.connect_errors,
            self.io_errors,
            self.mismatches,
            if self.tls {
                format!("tls {}  ", self.tls_errors)
            } else {
                String::new()
            },
            self.incomplete,
            if self.is_clean() { "  (clean)" } else { "" }
        );
        s
    }

    /// The load generator's own CPU use.
    fn cpu_line(&self) -> String {
        format!(
            "{:<13} {} % of one core (this load generator)\n",
            "client cpu",
            fig(self.client_cpu_percent, 1)
        )
    }

    /// Under `--rate`: the rates and the service latency (nothing in the closed loop).
    fn rate_lines(&self) -> String {
        let mut s = String::new();
        let Some(requested) = self.rate_requested_per_sec else {
            return s;
        };
        let _ = writeln!(
            s,
            "{:<13} requested {requested:.0}/s  sent {:.0}/s  received {:.0}/s  \
             (unanswered {}, unsent {}, held back {})",
            "rate",
            self.rate_sent_per_sec.unwrap_or(0.0),
            self.rate_received_per_sec.unwrap_or(0.0),
            self.rate_unanswered.unwrap_or(0),
            self.rate_unsent.unwrap_or(0),
            self.rate_held_back.unwrap_or(0),
        );
        if let Some(l) = &self.service_latency_us {
            let _ = writeln!(
                s,
                "{:<13} min {}  p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}  (from the write; \
                 the latency above: from the schedule)",
                "service (us)", l.min, l.p50, l.p99, l.p999, l.max, l.mean
            );
        }
        s
    }

    /// The table of a `--udp` run.
    fn udp_table(&self, u: &UdpCounts) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<13} {} (UDP)  sockets {}/{}  size {} B  depth {}  threads {}",
            "target",
            self.connect,
            self.conns_established,
            self.conns_requested,
            self.size,
            self.depth,
            self.threads
        );
        let _ = writeln!(
            s,
            "{:<13} {} echoes, {} B in {:.3} s",
            "completed", self.messages, self.bytes, self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "{:<13} {} datagrams/s  {} MB/s",
            "throughput",
            fig(self.msgs_per_sec, 0),
            fig(self.mb_per_sec, 2)
        );
        let _ = writeln!(
            s,
            "{:<13} {}",
            "latency (us)",
            latency_figures(self.latency_us.as_ref())
        );
        s.push_str(&self.rate_lines());
        let _ =
            writeln!(
            s,
            "{:<13} sent {}  received {}  lost {} ({} %, timeout {} ms)  late {}  duplicated {}",
            "datagrams", u.sent, u.received, u.lost, fig(u.loss_percent, 3), u.timeout_ms, u.late,
            u.duplicated
        );
        let _ = writeln!(
            s,
            "{:<13} socket {}  refused {}  io {}  mismatches {}{}",
            "errors",
            self.connect_errors,
            u.refused,
            self.io_errors,
            self.mismatches,
            if self.is_clean() { "  (clean)" } else { "" }
        );
        s.push_str(&self.cpu_line());
        s
    }

    /// The report as one JSON object on one line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// True when every requested connection was established (in handshake mode: completed a
    /// cycle) and nothing went wrong: no connect errors, I/O errors, mismatches, TLS failures
    /// or incomplete messages, no connection left unserved while the run lasted, no cause of
    /// failure at all (`failures` empty). With UDP, also no socket refused and not every
    /// datagram lost; loss, late and duplicated echoes do not make a run unclean otherwise
    /// (UDP allows them; they are reported).
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
            && self.udp.as_ref().is_none_or(|u| u.refused == 0)
            && self.conns_established == self.conns_requested
            && self.connect_errors == 0
            && self.io_errors == 0
            && self.mismatches == 0
            && self.tls_errors == 0
            && (self.incomplete == 0 || self.rate_requested_per_sec.is_some())
    }
}
