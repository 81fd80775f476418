//! Winsock `select`: the sets are arrays of socket handles with a count, so the limit is how
//! many sockets one set holds, not their values.

use crate::sys::select::{select, SocketSet};
use std::collections::HashSet;
use std::io;
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::time::Duration;

pub(crate) const MECHANISM: &str = "select() over a sized fd_set";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// How many sockets one `fd_set` of ours holds: the listener, the waker and the connections.
/// Winsock has no limit on descriptor values, only this count, which bounds the O(n) cost of
/// every turn (the kernel copies and scans the whole array each call).
pub(crate) const SET_CAPACITY: usize = 16_384;

/// What `--trace` calls a socket's raw name (`s=412`).
pub(super) const RAW_NAME: &str = "s";

/// A socket's raw name: its handle.
pub(super) type Raw = RawSocket;

/// How the loop names a socket.
pub(super) fn raw(s: &impl AsRawSocket) -> RawSocket {
    s.as_raw_socket()
}

/// `Ok` if the set has room for one more connection besides the `open` ones (the listener and
/// the waker take two places).
pub(super) fn admit(_s: RawSocket, open: usize) -> Result<(), String> {
    if open + 2 < SET_CAPACITY {
        Ok(())
    } else {
        Err(format!("the socket set holds {SET_CAPACITY} sockets"))
    }
}

/// The read and write sets of one turn; after [`Sets::select`], the ready sockets.
pub(super) struct Sets {
    read: SocketSet,
    write: SocketSet,
    /// The ready sockets, hashed: `select` leaves few in the arrays, and the loop asks about
    /// every connection, so a lookup beats scanning the arrays per connection.
    readable: HashSet<RawSocket>,
    writable: HashSet<RawSocket>,
}

impl Sets {
    pub fn new() -> Sets {
        Sets {
            read: SocketSet::with_capacity(SET_CAPACITY),
            write: SocketSet::with_capacity(SET_CAPACITY),
            readable: HashSet::new(),
            writable: HashSet::new(),
        }
    }

    pub fn clear(&mut self) {
        self.read.clear();
        self.write.clear();
    }

    pub fn want_read(&mut self, s: RawSocket) {
        self.read.insert(s);
    }

    pub fn want_write(&mut self, s: RawSocket) {
        self.write.insert(s);
    }

    /// Waits; returns how many sockets are ready (a socket in both sets counts twice).
    pub fn select(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let ready = select(&mut self.read, &mut self.write, timeout)?;
        self.readable.clear();
        self.readable.extend(self.read.iter());
        self.writable.clear();
        self.writable.extend(self.write.iter());
        Ok(ready)
    }

    pub fn readable(&self, s: RawSocket) -> bool {
        self.readable.contains(&s)
    }

    pub fn writable(&self, s: RawSocket) -> bool {
        self.writable.contains(&s)
    }
}
