//! `udp recv`: bind (and join), then feed every datagram to a [`Tracker`] until `--count`,
//! `--duration` or Ctrl-C.
//!
//! The receiver follows one sender's run: the first run id it sees. Datagrams with another
//! run id are counted in `other_runs`; datagrams without our header (an iperf or socat peer)
//! in `foreign` — counted, never parsed. `--count` counts the followed run's arrivals only.

use crate::error::{Result, UdpError};
use crate::header::Header;
use crate::net::{self, ListenOptions};
use crate::send::{Stopped, STOP_POLL};
use crate::tracker::{Tracker, TrackerStats};
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A bound (and joined) receiving socket.
pub struct Receiver {
    pub(crate) sock: UdpSocket,
    description: String,
}

impl Receiver {
    /// Binds and joins as `opts` says; every refusal is one line.
    pub fn bind(opts: &ListenOptions) -> Result<Receiver> {
        let (sock, description) = net::receiver_socket(opts)?;
        sock.set_read_timeout(Some(STOP_POLL))
            .map_err(UdpError::io("set SO_RCVTIMEO"))?;
        Ok(Receiver { sock, description })
    }

    /// What it listens to, e.g. "listening on 0.0.0.0:9991, joined 239.1.2.3 on lo".
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The bound address (the port, when `--listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(UdpError::io("local address"))
    }

    /// Receives until `count` arrivals of the followed run, `duration`, or `stop`.
    pub fn run(
        &self,
        count: Option<u64>,
        duration: Option<Duration>,
        stop: &AtomicBool,
    ) -> Result<RecvReport> {
        let mut buf = vec![0u8; 65_536];
        let mut tracker = Tracker::new();
        let mut run: Option<(u64, SocketAddr)> = None;
        let (mut foreign, mut other_runs, mut bytes) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        let stopped = loop {
            if stop.load(Ordering::Relaxed) {
                break Stopped::Signal;
            }
            if count.is_some_and(|c| tracker.received() >= c) {
                break Stopped::Count;
            }
            if duration.is_some_and(|d| start.elapsed() >= d) {
                break Stopped::Duration;
            }
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(UdpError::Io {
                        what: "receive".into(),
                        source: e,
                    })
                }
            };
            let now_ns = net::realtime_ns();
            match Header::decode(&buf[..n]) {
                None => foreign += 1,
                Some(h) => {
                    let (id, _) = *run.get_or_insert((h.run_id, from));
                    if h.run_id == id {
                        tracker.record(h.seq, h.sent_ns, now_ns);
                        bytes += n as u64;
                    } else {
                        other_runs += 1;
                    }
                }
            }
        };
        Ok(RecvReport {
            listen: self.description.clone(),
            run_id: run.map(|(id, _)| format!("{id:016x}")),
            sender: run.map(|(_, from)| from.to_string()),
            stats: tracker.stats(),
            foreign,
            other_runs,
            bytes,
            elapsed_secs: start.elapsed().as_secs_f64(),
            stopped,
        })
    }
}

/// What a receiver saw. In JSON the tracker's counters are top-level fields: `received`,
/// `unique`, `lost`, `duplicated`, `reordered`, `highest_seq`, `out_of_range`,
/// `clock_skewed`, `latency_us` (`min`, `p50`, `p99`, `max`, `mean`, or null).
#[derive(Clone, Debug, Serialize)]
pub struct RecvReport {
    /// What the socket listened to.
    pub listen: String,
    /// The followed run's id (16 hex digits), if any datagram of ours arrived.
    pub run_id: Option<String>,
    /// Where the followed run's first datagram came from.
    pub sender: Option<String>,
    /// The followed run's counters and latency (see [`crate::tracker`]).
    #[serde(flatten)]
    pub stats: TrackerStats,
    /// Datagrams without our header (not counted anywhere else).
    pub foreign: u64,
    /// Datagrams of ours from another run than the followed one.
    pub other_runs: u64,
    /// Payload bytes of the followed run.
    pub bytes: u64,
    /// How long the receiver ran, in seconds.
    pub elapsed_secs: f64,
    /// Why it stopped.
    pub stopped: Stopped,
}

impl RecvReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A few aligned lines for a terminal.
    pub fn to_table(&self) -> String {
        let st = &self.stats;
        let mut s = String::new();
        let _ = writeln!(s, "{:<13} {}", "socket", self.listen);
        let _ = writeln!(
            s,
            "{:<13} {}",
            "run",
            match (&self.run_id, &self.sender) {
                (Some(id), Some(from)) => format!("{id} from {from}"),
                _ => "none of ours arrived".into(),
            }
        );
        let _ = writeln!(
            s,
            "{:<13} {} datagrams ({} distinct, {} B) in {:.3} s; stopped: {}",
            "received", st.received, st.unique, self.bytes, self.elapsed_secs, self.stopped
        );
        let _ = writeln!(
            s,
            "{:<13} lost {}  duplicated {}  reordered {}",
            "sequence", st.lost, st.duplicated, st.reordered
        );
        let _ = writeln!(
            s,
            "{:<13} foreign {}  other runs {}  out of range {}",
            "not counted", self.foreign, self.other_runs, st.out_of_range
        );
        match &st.latency_us {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "{:<13} min {:.1}  p50 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}{}",
                    "latency (us)",
                    l.min,
                    l.p50,
                    l.p99,
                    l.max,
                    l.mean,
                    if st.clock_skewed > 0 {
                        format!("  ({} clock-skewed)", st.clock_skewed)
                    } else {
                        String::new()
                    }
                );
            }
            None => {
                let _ = writeln!(s, "{:<13} -", "latency (us)");
            }
        }
        s
    }
}
