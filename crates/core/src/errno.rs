//! Socket errors by name: [`name`] gives the errno of an [`io::Error`] as the platform spells
//! it — `ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, ... on Linux; Winsock's `WSAECONNREFUSED`,
//! `WSAECONNRESET`, `WSAETIMEDOUT`, ... on Windows (the raw OS error `std` keeps) — and
//! [`describe`] the error in words with that name, for the tools' one-line errors (`load`'s
//! causes of failure, the UDP tools' errors). Pure lookup tables: no system call.

use std::io;

/// Errno names by number (Linux's values).
#[cfg(target_os = "linux")]
const NAMES: &[(i32, &str)] = &[
    (1, "EPERM"),
    (4, "EINTR"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (32, "EPIPE"),
    (90, "EMSGSIZE"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (102, "ENETRESET"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (107, "ENOTCONN"),
    (108, "ESHUTDOWN"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
];

/// Winsock error names by number.
#[cfg(windows)]
const NAMES: &[(i32, &str)] = &[
    (10004, "WSAEINTR"),
    (10013, "WSAEACCES"),
    (10022, "WSAEINVAL"),
    (10024, "WSAEMFILE"),
    (10035, "WSAEWOULDBLOCK"),
    (10040, "WSAEMSGSIZE"),
    (10048, "WSAEADDRINUSE"),
    (10049, "WSAEADDRNOTAVAIL"),
    (10050, "WSAENETDOWN"),
    (10051, "WSAENETUNREACH"),
    (10052, "WSAENETRESET"),
    (10053, "WSAECONNABORTED"),
    (10054, "WSAECONNRESET"),
    (10055, "WSAENOBUFS"),
    (10057, "WSAENOTCONN"),
    (10058, "WSAESHUTDOWN"),
    (10060, "WSAETIMEDOUT"),
    (10061, "WSAECONNREFUSED"),
    (10064, "WSAEHOSTDOWN"),
    (10065, "WSAEHOSTUNREACH"),
];

/// Elsewhere: no names (the words alone are said).
#[cfg(not(any(target_os = "linux", windows)))]
const NAMES: &[(i32, &str)] = &[];

/// The errno name of `e`, if it carries an OS error this table knows.
pub fn name(e: &io::Error) -> Option<&'static str> {
    let raw = e.raw_os_error()?;
    NAMES.iter().find(|(n, _)| *n == raw).map(|(_, name)| *name)
}

/// The name of "timed out" on this platform: `ETIMEDOUT` (`WSAETIMEDOUT` on Windows).
pub fn timed_out() -> &'static str {
    if cfg!(windows) {
        "WSAETIMEDOUT"
    } else {
        "ETIMEDOUT"
    }
}

/// `e`'s message without std's ` (os error N)` tail, with a lower-case first letter:
/// `connection refused`.
pub fn words(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => "I/O error".to_string(),
    }
}

/// `e` in words with its errno name: `connection refused (ECONNREFUSED)`; an OS error this
/// table does not know keeps its number (`... (os error 71)`), any other error is its words.
pub fn describe(e: &io::Error) -> String {
    match (name(e), e.raw_os_error()) {
        (Some(n), _) => format!("{} ({n})", words(e)),
        (None, Some(raw)) => format!("{} (os error {raw})", words(e)),
        (None, None) => words(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn linux_errors_are_named() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(name(&e), Some("ECONNREFUSED"));
        assert_eq!(describe(&e), "connection refused (ECONNREFUSED)");
        assert_eq!(
            describe(&io::Error::from_raw_os_error(104)),
            "connection reset by peer (ECONNRESET)"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(71)),
            "protocol error (os error 71)"
        );
    }

    #[test]
    #[cfg(windows)]
    fn winsock_errors_are_named() {
        assert_eq!(
            name(&io::Error::from_raw_os_error(10061)),
            Some("WSAECONNREFUSED")
        );
        assert_eq!(
            name(&io::Error::from_raw_os_error(10054)),
            Some("WSAECONNRESET")
        );
    }

    #[test]
    fn errors_without_an_os_code_are_their_words() {
        let e = io::Error::other("Something broke");
        assert_eq!(name(&e), None);
        assert_eq!(describe(&e), "something broke");
    }
}
