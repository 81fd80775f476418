//! [`UdpError`]: every failure of the tools as one line that says what to do about it.

use std::fmt;
use std::io;

/// Why a UDP tool could not run.
#[derive(Debug)]
pub enum UdpError {
    /// The arguments do not make sense together (a unicast group, a size too large, ...).
    Usage(String),
    /// A system call failed; `what` says which step, in the user's terms.
    Io {
        /// The step that failed, e.g. "join 239.1.2.3 on 127.0.0.1".
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
}

impl UdpError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> UdpError {
        let what = what.into();
        move |source| UdpError::Io { what, source }
    }
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Usage(msg) => f.write_str(msg),
            // The OS error in words with its errno name: `connection refused (ECONNREFUSED)`.
            UdpError::Io { what, source } => {
                write!(f, "{what}: {}", iomodels_core::errno::describe(source))
            }
        }
    }
}

/// No source: the message already says the OS error (in words, with its errno name), so a
/// chain of causes printed after it would only repeat it as `std` words it.
impl std::error::Error for UdpError {}

/// Shorthand for the tools' results.
pub type Result<T> = std::result::Result<T, UdpError>;

pub(crate) fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(UdpError::Usage(msg.into()))
}
