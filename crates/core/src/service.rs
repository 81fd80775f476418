//! The services a connection can run: RFC 862 echo and RFC 863 discard.

use crate::outbuf::OutBuf;
use std::fmt;
use std::str::FromStr;

/// Which service a server runs on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceKind {
    /// RFC 862: every byte received is sent back, in order, until the client closes.
    #[default]
    Echo,
    /// RFC 863: every byte received is read and thrown away; nothing is ever sent.
    Discard,
}

impl ServiceKind {
    /// Every service, in the order the CLI lists them.
    pub const ALL: [ServiceKind; 2] = [ServiceKind::Echo, ServiceKind::Discard];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Discard => "discard",
        }
    }

    /// A fresh protocol state machine for one connection.
    pub fn new_service(self) -> Service {
        match self {
            ServiceKind::Echo => Service::Echo,
            ServiceKind::Discard => Service::Discard,
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServiceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown service '{s}' (expected echo or discard)"))
    }
}

/// One connection's protocol state machine: it turns received bytes into output bytes.
///
/// Echo and discard keep no state of their own; the enum is where stateful services (and the
/// TLS layer) plug in without any model noticing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// RFC 862 echo.
    Echo,
    /// RFC 863 discard.
    Discard,
}

impl Service {
    /// Consumes `input` (bytes just received) and appends any reply to `out`.
    pub fn on_input(&mut self, input: &[u8], out: &mut OutBuf) {
        match self {
            Service::Echo => out.extend(input),
            Service::Discard => {}
        }
    }
}
