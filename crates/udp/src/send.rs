//! `udp send`: numbered, timestamped datagrams at a steady rate.
//!
//! Pacing is open-loop: datagram `n` is due `n / rate` seconds after the start, whatever
//! happened to the ones before, so a slow moment is caught up with a burst instead of
//! stretching the run (the rate over the run stays the one asked for). Between datagrams the
//! sender sleeps, in slices of at most 50 ms so that Ctrl-C is seen at once.

use crate::error::{usage, Result};
use crate::header::{Header, HEADER_LEN, MAX_PAYLOAD_V4, MAX_PAYLOAD_V6};
use crate::net::{self, SendOptions};
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest a sender or receiver sleeps before it looks at the stop flag again.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(50);

/// What `udp send` does.
#[derive(Clone, Debug)]
pub struct SendConfig {
    /// Destination: unicast, multicast group or broadcast address, with the port.
    pub to: SocketAddr,
    /// TTL, multicast loop and interface, broadcast.
    pub opts: SendOptions,
    /// Stop after this many datagrams.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Datagrams per second; 0 sends as fast as the socket takes them.
    pub rate: f64,
    /// Bytes per datagram (UDP payload), header included.
    pub size: usize,
}

impl SendConfig {
    /// Refuses a size that cannot carry the header or does not fit in one UDP datagram, and
    /// a rate that is not a number of datagrams per second.
    pub fn validate(&self) -> Result<()> {
        let max = if self.to.is_ipv4() {
            MAX_PAYLOAD_V4
        } else {
            MAX_PAYLOAD_V6
        };
        if self.size < HEADER_LEN {
            return usage(format!(
                "--size {}: a datagram carries a {HEADER_LEN}-byte header, so at least \
                 {HEADER_LEN}",
                self.size
            ));
        }
        if self.size > max {
            return usage(format!(
                "--size {}: the largest UDP payload over {} is {max} bytes",
                self.size,
                if self.to.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return usage(format!(
                "--rate {}: datagrams per second, 0 for as fast as possible",
                self.rate
            ));
        }
        Ok(())
    }
}

/// When datagram `n` is due, counted from the start, at `rate` per second (0: at once).
pub fn due(n: u64, rate: f64) -> Duration {
    if rate == 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(n as f64 / rate)
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stopped {
    /// `--count` reached.
    Count,
    /// `--duration` passed (for `discover --probe`: `--timeout`).
    Duration,
    /// Ctrl-C / SIGINT (the stop flag).
    Signal,
}

/// In words, for the tables: `--count reached`, `--duration passed`, `interrupted (...)`.
impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::Count => "--count reached",
            Stopped::Duration => "--duration passed",
            Stopped::Signal => "interrupted (SIGINT, SIGTERM or Ctrl-C)",
        })
    }
}

/// A socket ready to send one run.
pub struct Sender {
    sock: UdpSocket,
    cfg: SendConfig,
    run_id: u64,
}

impl Sender {
    /// Validates the configuration and makes the socket, with every option applied.
    pub fn new(cfg: SendConfig) -> Result<Sender> {
        cfg.validate()?;
        let sock = net::sender_socket(cfg.to, &cfg.opts)?;
        Ok(Sender {
            sock,
            cfg,
            run_id: net::random_u64(),
        })
    }

    /// This run's id, as every header carries it.
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Sends until `--count`, `--duration`, or `stop` turns true.
    ///
    /// `ENOBUFS` and would-block (the interface queue is full) are counted in `send_errors`
    /// and the run goes on: that datagram's number is skipped, so the receivers see it lost.
    /// Any other error ends the run with one line.
    pub fn run(&self, stop: &AtomicBool) -> Result<SendReport> {
        let cfg = &self.cfg;
        let mut buf = vec![0u8; cfg.size];
        // A recognisable filler after the header, the same in every datagram.
        for (i, b) in buf.iter_mut().enumerate().skip(HEADER_LEN) {
            *b = i as u8;
        }
        let start = Instant::now();
        let (mut seq, mut sent, mut errors) = (0u64, 0u64, 0u64);
        let stopped = loop {
            if stop.load(Ordering::Relaxed) {
                break Stopped::Signal;
            }
            if cfg.count.is_some_and(|c| seq >= c) {
                break Stopped::Count;
            }
            let now = Instant::now();
            let elapsed = now - start;
            if cfg.duration.is_some_and(|d| elapsed >= d) {
                break Stopped::Duration;
            }
            let due = due(seq, cfg.rate);
            if due > elapsed {
                std::thread::sleep((due - elapsed).min(STOP_POLL));
                continue;
            }
            Header {
                run_id: self.run_id,
                seq,
                sent_ns: net::realtime_ns(),
            }
            .encode(&mut buf);
            seq += 1;
            match self.sock.send_to(&buf, cfg.to) {
                Ok(_) => sent += 1,
                Err(e) if is_transient(&e) => errors += 1,
                Err(e) => return Err(net::send_error(cfg.to, cfg.opts.broadcast, e)),
            }
        };
        let elapsed = start.elapsed().as_secs_f64();
        Ok(SendReport {
            to: cfg.to.to_string(),
            run_id: format!("{:016x}", self.run_id),
            sent,
            send_errors: errors,
            size: cfg.size,
            bytes: sent * cfg.size as u64,
            elapsed_secs: elapsed,
            msgs_per_sec: (elapsed > 0.0).then(|| sent as f64 / elapsed),
            stopped,
        })
    }
}

fn is_transient(e: &io::Error) -> bool {
    // ENOBUFS (105 on Linux): the device queue is full, the datagram was dropped here.
    e.kind() == io::ErrorKind::WouldBlock
        || (cfg!(target_os = "linux") && e.raw_os_error() == Some(105))
}

/// What a send run did.
#[derive(Clone, Debug, Serialize)]
pub struct SendReport {
    /// The destination.
    pub to: String,
    /// The run id in every header, as 16 hex digits.
    pub run_id: String,
    /// Datagrams the socket accepted.
    pub sent: u64,
    /// Datagrams dropped at the sender (`ENOBUFS`, would-block): their numbers are skipped.
    pub send_errors: u64,
    /// Bytes per datagram (`size_bytes` in JSON).
    #[serde(rename = "size_bytes")]
    pub size: usize,
    /// `sent * size`.
    pub bytes: u64,
    /// From the first datagram's due time to the end, in seconds.
    pub elapsed_secs: f64,
    /// Datagrams per second, `sent / elapsed_secs`; `None` (`null`) when no time passed.
    pub msgs_per_sec: Option<f64>,
    /// Why the run ended.
    pub stopped: Stopped,
}

impl SendReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A few aligned lines for a terminal.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{:<13} {}  run {}", "to", self.to, self.run_id);
        let _ = writeln!(
            s,
            "{:<13} {} datagrams of {} B in {:.3} s ({}/s)",
            "sent",
            self.sent,
            self.size,
            self.elapsed_secs,
            self.msgs_per_sec.map_or("-".into(), |r| format!("{r:.0}"))
        );
        let _ = writeln!(
            s,
            "{:<13} {} dropped by this host (ENOBUFS)",
            "send errors", self.send_errors
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(to: &str, size: usize) -> SendConfig {
        SendConfig {
            to: to.parse().unwrap(),
            opts: SendOptions::default(),
            count: Some(1),
            duration: None,
            rate: 1000.0,
            size,
        }
    }

    #[test]
    fn due_times_follow_the_rate() {
        assert_eq!(due(0, 1000.0), Duration::ZERO);
        assert_eq!(due(1000, 1000.0), Duration::from_secs(1));
        assert_eq!(due(5, 2.0), Duration::from_millis(2500));
        assert_eq!(due(u64::MAX, 0.0), Duration::ZERO);
    }

    #[test]
    fn sizes_outside_one_datagram_are_refused() {
        assert!(cfg("127.0.0.1:9", HEADER_LEN).validate().is_ok());
        assert!(cfg("127.0.0.1:9", MAX_PAYLOAD_V4).validate().is_ok());
        let e = cfg("127.0.0.1:9", HEADER_LEN - 1).validate().unwrap_err();
        assert!(e.to_string().contains("at least 28"), "{e}");
        let e = cfg("127.0.0.1:9", MAX_PAYLOAD_V4 + 1)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--size 65508: the largest UDP payload over IPv4 is 65507 bytes"
        );
        assert!(cfg("[::1]:9", MAX_PAYLOAD_V4 + 1).validate().is_ok());
        assert!(cfg("[::1]:9", MAX_PAYLOAD_V6 + 1).validate().is_err());
    }

    #[test]
    fn negative_or_nan_rates_are_refused() {
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            let mut c = cfg("127.0.0.1:9", 64);
            c.rate = rate;
            assert!(c.validate().is_err(), "{rate}");
        }
    }
}
