//! `udp discover`: find peers before connecting. A prober sends a probe to a broadcast
//! address, a multicast group or one host; every responder that gets it answers, to the
//! probe's source address, with the TCP address of its service. The prober lists the answers
//! with their round trip.
//!
//! The exchange is one datagram each way ([`Discovery`]); a lost probe or answer is simply
//! not listed, so `--probes N` sends N probes (a quarter of the timeout apart) and answers
//! are listed once per responder — per source address and service — with the first one's
//! round trip.

use crate::error::{Result, UdpError};
use crate::header::Discovery;
use crate::net::{self, ListenOptions, SendOptions};
use crate::recv::Receiver;
use crate::send::Stopped;
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A bound responder: a [`Receiver`] that answers.
pub struct Responder {
    rx: Receiver,
    service: SocketAddr,
}

impl Responder {
    /// Binds (and joins the group, if any) to answer probes with `service`.
    pub fn bind(opts: &ListenOptions, service: SocketAddr) -> Result<Responder> {
        Ok(Responder {
            rx: Receiver::bind(opts)?,
            service,
        })
    }

    /// What it listens to.
    pub fn description(&self) -> &str {
        self.rx.description()
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.rx.local_addr()
    }

    /// Answers probes until `count` answers, `duration`, or `stop`; calls `answered` with each
    /// prober's address. Returns how many it answered and why it stopped. Anything that is
    /// not a probe is ignored.
    pub fn run(
        &self,
        count: Option<u64>,
        duration: Option<Duration>,
        stop: &AtomicBool,
        mut answered: impl FnMut(SocketAddr),
    ) -> Result<(u64, Stopped)> {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        let mut answers = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok((answers, Stopped::Signal));
            }
            if count.is_some_and(|c| answers >= c) {
                return Ok((answers, Stopped::Count));
            }
            if duration.is_some_and(|d| start.elapsed() >= d) {
                return Ok((answers, Stopped::Duration));
            }
            let (n, from) = match self.rx.sock.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if quiet(&e) => continue,
                Err(e) => return Err(UdpError::io("receive a probe")(e)),
            };
            let Some(Discovery::Probe { nonce }) = Discovery::decode(&buf[..n]) else {
                continue;
            };
            let answer = Discovery::Answer {
                nonce,
                service: self.service,
            };
            // One prober gone or unreachable must not stop the responder: a failed answer is
            // not counted, and the next probe is served.
            if self.rx.sock.send_to(&answer.encode(), from).is_ok() {
                answers += 1;
                answered(from);
            }
        }
    }
}

/// What `discover --probe` does.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Where probes go: broadcast address, multicast group or a host, with the port.
    pub to: SocketAddr,
    /// TTL, loop, interface, broadcast (as for `udp send`).
    pub opts: SendOptions,
    /// How long to wait for answers after the first probe.
    pub timeout: Duration,
    /// How many probes to send, spread over the first half of the timeout.
    pub probes: u32,
}

/// One responder that answered.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Answer {
    /// The address the answer came from.
    pub from: String,
    /// Its TCP service address; an unspecified IP in the answer is replaced by `from`'s.
    pub service: String,
    /// Round trip in microseconds, from the most recent probe sent before the answer arrived
    /// (with several probes, an answer to an earlier one can look faster than it was).
    pub rtt_us: f64,
}

/// The responders that answered.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// Where the probes went.
    pub to: String,
    /// Probes sent.
    pub probes: u32,
    /// One entry per responder, in the order they first answered.
    pub answers: Vec<Answer>,
    /// Why it stopped (`duration`: the timeout passed; `signal`).
    pub stopped: Stopped,
}

impl ProbeReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One line per responder.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{:<40} {:<40} {:>10}", "FROM", "SERVICE", "RTT (us)");
        for a in &self.answers {
            let _ = writeln!(s, "{:<40} {:<40} {:>10.1}", a.from, a.service, a.rtt_us);
        }
        s
    }
}

/// The service address an answer announces, made concrete: 0.0.0.0 or :: means "where the
/// answer came from".
pub fn service_seen_from(service: SocketAddr, from: SocketAddr) -> SocketAddr {
    if service.ip().is_unspecified() {
        SocketAddr::new(from.ip(), service.port())
    } else {
        service
    }
}

/// Sends the probes and collects answers until the timeout (or `stop`).
pub fn probe(cfg: &ProbeConfig, stop: &AtomicBool) -> Result<ProbeReport> {
    let sock = net::sender_socket(cfg.to, &cfg.opts)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(UdpError::io("set SO_RCVTIMEO"))?;
    let nonce = net::random_u64();
    let msg = Discovery::Probe { nonce }.encode();
    let probes = cfg.probes.max(1);
    let spacing = cfg.timeout / 2 / probes;
    let start = Instant::now();
    let mut sent = 0u32;
    let mut last_sent = start;
    let mut answers: Vec<Answer> = Vec::new();
    let mut seen: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut buf = [0u8; 512];
    let stopped = loop {
        if stop.load(Ordering::Relaxed) {
            break Stopped::Signal;
        }
        if start.elapsed() >= cfg.timeout {
            break Stopped::Duration;
        }
        if sent < probes && start.elapsed() >= spacing * sent {
            // The clock starts before the send: on loopback the answer can be on its way
            // before send_to returns.
            last_sent = Instant::now();
            sock.send_to(&msg, cfg.to)
                .map_err(|e| net::send_error(cfg.to, cfg.opts.broadcast, e))?;
            sent += 1;
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if quiet(&e) => continue,
            // An ICMP port unreachable from a unicast target, reported on the next call.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(UdpError::io("receive an answer")(e)),
        };
        let rtt = last_sent.elapsed();
        if let Some(Discovery::Answer { nonce: n2, service }) = Discovery::decode(&buf[..n]) {
            // Two responders on one host can share a port: one entry per source and service.
            if n2 == nonce && !seen.contains(&(from, service)) {
                seen.push((from, service));
                answers.push(Answer {
                    from: from.to_string(),
                    service: service_seen_from(service, from).to_string(),
                    rtt_us: (rtt.as_nanos() as f64 / 100.0).round() / 10.0,
                });
            }
        }
    };
    Ok(ProbeReport {
        to: cfg.to.to_string(),
        probes: sent,
        answers,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_service_address_becomes_the_answers_source() {
        let from: SocketAddr = "10.0.0.7:40000".parse().unwrap();
        assert_eq!(
            service_seen_from("0.0.0.0:9990".parse().unwrap(), from),
            "10.0.0.7:9990".parse().unwrap()
        );
        assert_eq!(
            service_seen_from("192.0.2.1:80".parse().unwrap(), from),
            "192.0.2.1:80".parse().unwrap()
        );
    }
}
