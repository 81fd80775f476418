//! Why a run failed, in words: every connection (UDP socket, handshake cycle) that ends before
//! it is done is classified *where* it fails — the connect's `SO_ERROR`, the read that returned
//! end of stream or `ECONNRESET`, the write that failed, the echo that did not verify, the
//! drain that expired — into one [`Failure`] per cause, the first of each kind kept with its
//! errno. [`explain`] turns the report's list into the one sentence the CLI prints (and puts
//! in the JSON's `error`), the same for every mode.
//!
//! The errno names are the platform's (`iomodels_core::errno`): `ECONNREFUSED`,
//! `ECONNRESET`, `ETIMEDOUT`, ... on Linux, `WSAECONNREFUSED`, `WSAECONNRESET`,
//! `WSAETIMEDOUT`, ... on Windows (Winsock's error codes, which `std` reports as the raw OS
//! error).
//!
//! Pitfalls this module exists for: a server speaking TLS to a plain client answers with a TLS
//! alert record, which used to count as a bare "mismatch"; a discard server accepts and reads
//! but never answers, which used to wait out the whole drain timeout and report
//! "incomplete"; a server that closes connections (a crash) gave "io N" with no errno; a
//! server at its connection cap (`select`'s, bound by `FD_SETSIZE`) that leaves the
//! connections past it in its listen backlog gave a clean report of fewer connections than
//! asked for, only the maximum latency hinting at it (now [`FailureKind::Unserved`]).

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use iomodels_core::errno;
use serde::Serialize;

use crate::report::LoadReport;

/// What ended a connection, by kind; the JSON's `failures[].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `ECONNREFUSED`: nothing listens there (TCP: a RST to the SYN; UDP: an ICMP port
    /// unreachable).
    Refused,
    /// `ECONNRESET`: the server reset the connection.
    Reset,
    /// `ETIMEDOUT`: a connect not answered within the connect timeout (5 s) (or the kernel's).
    TimedOut,
    /// End of stream before every echo came back: the server closed the connection.
    Closed,
    /// A plain connection got TLS records back: the server speaks TLS.
    TlsRecords,
    /// Not one echoed byte by the end of the drain: the server reads but never answers.
    Silent,
    /// Echoes still missing when the drain timeout expired (after some came back).
    Unanswered,
    /// Not one echo while the run lasted, though the other connections were served (ten
    /// messages each on average, at least): answered only in the drain after it — a server
    /// at its connection cap (accepting again once others close), or one that starves some.
    Unserved,
    /// An echoed byte differed from the one sent.
    Mismatch,
    /// The TLS session failed (a certificate refused, an alert).
    Tls,
    /// `--udp`: datagrams went out, not one echo came back (no refusal either).
    NoAnswer,
    /// Any other socket error (its errno says which).
    Io,
}

/// One cause of failure and how many connections (sockets with `--udp`, cycles with
/// `--handshakes`) it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The kind, for a program to match on.
    pub kind: FailureKind,
    /// The cause in words, e.g. `connection refused` (the first of its kind).
    pub cause: String,
    /// The errno name, e.g. `ECONNREFUSED` (`WSAECONNREFUSED` on Windows); `null` when the
    /// failure is no OS error (an end of stream, a mismatch, TLS).
    pub errno: Option<String>,
    /// Connections (sockets, cycles) it ended.
    pub conns: u64,
}

impl Failure {
    /// A failure of `kind` with fixed words and no errno.
    pub(crate) fn of(kind: FailureKind) -> Failure {
        let cause = match kind {
            FailureKind::Refused => "connection refused",
            FailureKind::Reset => "connection reset by peer",
            FailureKind::TimedOut => "timed out",
            FailureKind::Closed => "the server closed the connection",
            FailureKind::TlsRecords => "the server answered with TLS records",
            FailureKind::Silent => "the server sends nothing back",
            FailureKind::Unanswered => "echoes missing when the drain timeout expired",
            FailureKind::Unserved => "no echo while the run lasted",
            FailureKind::Mismatch => "the echo differed from what was sent",
            FailureKind::Tls => "the TLS session failed",
            FailureKind::NoAnswer => "the server did not answer",
            FailureKind::Io => "I/O error",
        };
        Failure {
            kind,
            cause: cause.to_string(),
            errno: None,
            conns: 1,
        }
    }

    /// A socket error, classified by its kind and named by its errno.
    pub(crate) fn os(e: &io::Error) -> Failure {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::ConnectionReset => FailureKind::Reset,
            io::ErrorKind::TimedOut => FailureKind::TimedOut,
            _ => FailureKind::Io,
        };
        let cause = match kind {
            FailureKind::Io => errno::words(e),
            _ => Failure::of(kind).cause,
        };
        Failure {
            kind,
            cause,
            errno: errno::name(e).map(str::to_string),
            conns: 1,
        }
    }

    /// A connect still pending when the connect timeout ran out.
    pub(crate) fn connect_timeout(timeout: Duration) -> Failure {
        Failure {
            kind: FailureKind::TimedOut,
            cause: format!(
                "connect timed out (no answer within {timeout:?}: a full accept queue, or the \
                 packets dropped)"
            ),
            errno: Some(errno::timed_out().to_string()),
            conns: 1,
        }
    }

    /// A TLS failure, as rustls words it.
    pub(crate) fn tls(why: &str) -> Failure {
        Failure {
            cause: why.to_string(),
            ..Failure::of(FailureKind::Tls)
        }
    }
}

/// The failures of a run, one entry per kind and errno, in the order first met.
#[derive(Debug, Clone, Default)]
pub(crate) struct Failures(Vec<Failure>);

impl Failures {
    /// Counts `f` (its `conns` added to the entry of the same kind and errno).
    pub(crate) fn add(&mut self, f: Failure) {
        match self
            .0
            .iter_mut()
            .find(|e| e.kind == f.kind && e.errno == f.errno)
        {
            Some(e) => e.conns += f.conns,
            None => self.0.push(f),
        }
    }

    /// Adds every entry of `other`.
    pub(crate) fn merge(&mut self, other: &Failures) {
        for f in &other.0 {
            self.add(f.clone());
        }
    }

    /// The entries, most frequent first.
    pub(crate) fn into_list(self) -> Vec<Failure> {
        let mut v = self.0;
        v.sort_by_key(|f| std::cmp::Reverse(f.conns));
        v
    }
}

/// Whether `data`, the first bytes a plain connection got back, starts like a TLS record:
/// content type 20..23 (change cipher spec, alert, handshake, application data), then
/// version 3.x (SSL 3.0 .. TLS 1.3 all write 0x03 0x00..0x04).
pub(crate) fn looks_like_tls(data: &[u8]) -> bool {
    matches!(data, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

/// The one sentence that says why `report`'s run failed, or `None` for a clean run (UDP loss
/// alone is no failure: UDP allows it, the figures say it).
pub(crate) fn explain(report: &LoadReport) -> Option<String> {
    let udp_failed = report
        .udp
        .as_ref()
        .is_some_and(|u| u.received == 0 && u.sent > 0);
    if report.is_clean() && !udp_failed {
        return None;
    }
    let addr = &report.connect;
    let nothing = report.messages == 0;
    if report.failures.is_empty() {
        // Unclean with no cause recorded: say the counters (should not happen).
        return Some(format!(
            "the run against {addr} was not clean: {} connect errors, {} I/O errors, {} \
             mismatches, {} incomplete",
            report.connect_errors, report.io_errors, report.mismatches, report.incomplete
        ));
    }
    // Nothing got through TLS: the reason (a refused certificate, a missing client
    // certificate) is the whole answer.
    if let (true, Some(why)) = (nothing, &report.tls_error) {
        // A plain echo server sends our ClientHello back.
        let hint = if why.contains("got ClientHello") {
            " (the server echoed the ClientHello: it speaks no TLS; drop --tls)"
        } else {
            ""
        };
        return Some(format!("TLS handshake with {addr} failed: {why}{hint}"));
    }
    let mut s = opening(report, nothing);
    let counted = counted(report);
    let mut see_log = false;
    for (i, f) in report.failures.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        see_log |= matches!(
            f.kind,
            FailureKind::Closed | FailureKind::Reset | FailureKind::Unserved
        );
        describe(&mut s, f, report, counted);
    }
    if see_log {
        s.push_str("; see the server's log");
    }
    Some(s)
}

/// What the failures are counted out of: the connections asked for (sockets with `--udp`),
/// or the cycles run with `--handshakes`; and the word for them.
fn counted(report: &LoadReport) -> (u64, &'static str) {
    let total = if report.is_handshakes() {
        report.handshakes + report.handshake_failures
    } else {
        report.conns_requested as u64
    };
    let unit = match (report.udp.is_some(), report.is_handshakes(), total == 1) {
        (true, _, false) => "sockets",
        (true, _, true) => "socket",
        (_, true, false) => "cycles",
        (_, true, true) => "cycle",
        (_, _, false) => "connections",
        (_, _, true) => "connection",
    };
    (total, unit)
}

/// The sentence's beginning: a run that echoed something was not clean; one that echoed
/// nothing found no server, no connection, or no echo.
fn opening(report: &LoadReport, nothing: bool) -> String {
    let addr = &report.connect;
    if !nothing {
        format!("the run against {addr} was not clean: ")
    } else if report.udp.as_ref().is_some_and(|u| u.refused > 0) {
        format!("no UDP echo server at {addr}: ")
    } else if report.udp.is_none() && report.conns_established == 0 && !report.is_handshakes() {
        format!("no connection to {addr} could be established: ")
    } else {
        format!("load against {addr} got no echo: ")
    }
}

/// Appends the words for one cause of failure `f`, on `n` of `total` `unit`.
fn describe(s: &mut String, f: &Failure, report: &LoadReport, (total, unit): (u64, &str)) {
    let n = f.conns;
    let errno = f
        .errno
        .as_deref()
        .map_or(String::new(), |e| format!(" ({e})"));
    let _ = match f.kind {
        FailureKind::Refused if report.udp.is_some() => write!(
            s,
            "{}{errno} on {n} of {total} {unit} (an ICMP port unreachable: nothing listens \
             there)",
            f.cause
        ),
        FailureKind::Refused => write!(
            s,
            "{}{errno} on {n} of {total} {unit} (nothing listens on that port)",
            f.cause
        ),
        FailureKind::TimedOut | FailureKind::Io => {
            write!(s, "{}{errno} on {n} of {total} {unit}", f.cause)
        }
        FailureKind::Reset => write!(
            s,
            "the server reset {n} of {total} {unit} ({}{})",
            f.cause,
            f.errno
                .as_deref()
                .map_or(String::new(), |e| format!(", {e}"))
        ),
        FailureKind::Closed => write!(
            s,
            "the server closed {n} of {total} {unit} before their echoes were done"
        ),
        FailureKind::TlsRecords => write!(
            s,
            "the server answered with TLS records: add --tls ({n} of {total} {unit})"
        ),
        FailureKind::Silent => write!(
            s,
            "the server sends nothing back (a discard server?): not one byte echoed on {n} \
             of {total} {unit}"
        ),
        FailureKind::Unanswered => write!(
            s,
            "{} messages not echoed when the drain timeout expired, on {n} of {total} \
             {unit} (a stalled or overloaded server)",
            report.incomplete
        ),
        FailureKind::Unserved => write!(
            s,
            "the server left {n} of {total} {unit} without an echo while the run lasted \
             (served only after it: at its connection cap?)"
        ),
        FailureKind::Mismatch => write!(
            s,
            "the echo differed from what was sent on {n} of {total} {unit} (not an echo \
             server, or it corrupts)"
        ),
        FailureKind::Tls => write!(s, "TLS failed on {n} of {total} {unit}: {}", f.cause),
        FailureKind::NoAnswer => {
            let u = report.udp.as_ref();
            write!(
                s,
                "the server did not answer: none of {} datagrams came back within \
                 --udp-timeout {} ms (is a UDP echo server there?)",
                u.map_or(0, |u| u.sent),
                u.map_or(0, |u| u.timeout_ms)
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_echo_bytes() {
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(&[0x15, 0x03]));
        assert!(!looks_like_tls(&[0x15, 0x04, 0x03]));
        assert!(!looks_like_tls(&[0x18, 0x03, 0x03]));
        assert!(!looks_like_tls(b"hello"));
    }

    #[test]
    fn os_errors_are_classified_and_named() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::os(&refused).kind, FailureKind::Refused);
        assert_eq!(Failure::os(&refused).errno, None);
        #[cfg(target_os = "linux")]
        {
            let f = Failure::os(&io::Error::from_raw_os_error(libc::ECONNRESET));
            assert_eq!(f.kind, FailureKind::Reset);
            assert_eq!(f.cause, "connection reset by peer");
            assert_eq!(f.errno.as_deref(), Some("ECONNRESET"));
            let f = Failure::os(&io::Error::from_raw_os_error(libc::EPIPE));
            assert_eq!(f.kind, FailureKind::Io);
            assert_eq!(f.cause, "broken pipe");
            assert_eq!(f.errno.as_deref(), Some("EPIPE"));
        }
    }

    #[test]
    fn failures_add_up_per_kind_and_errno_most_frequent_first() {
        let mut a = Failures::default();
        a.add(Failure::of(FailureKind::Closed));
        a.add(Failure::connect_timeout(Duration::from_secs(5)));
        let mut b = Failures::default();
        b.add(Failure::connect_timeout(Duration::from_secs(5)));
        a.merge(&b);
        let list = a.into_list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].kind, list[0].conns), (FailureKind::TimedOut, 2));
        assert_eq!((list[1].kind, list[1].conns), (FailureKind::Closed, 1));
    }
}
