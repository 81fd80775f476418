//! `select(2)`: the sets are bitmaps indexed by descriptor value, so a descriptor at or above
//! `FD_SETSIZE` cannot be waited on at all.

use crate::sys::select::{select, FdSet, FD_SETSIZE};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

pub(crate) const MECHANISM: &str = "select(2)";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// What `--trace` calls a socket's raw name (`fd=7`).
pub(super) const RAW_NAME: &str = "fd";

/// A socket's raw name: its descriptor.
pub(super) type Raw = RawFd;

/// How the loop names a socket.
pub(super) fn raw(s: &impl AsRawFd) -> RawFd {
    s.as_raw_fd()
}

/// `Ok` if the loop can wait on descriptor `fd` (whatever the number of `open` connections).
pub(super) fn admit(fd: RawFd, _open: usize) -> Result<(), String> {
    if FdSet::fits(fd) {
        Ok(())
    } else {
        Err(format!(
            "descriptor {fd} is past what select(2) can wait on (FD_SETSIZE = {FD_SETSIZE})"
        ))
    }
}

/// The read and write sets of one turn; after [`Sets::select`], the ready descriptors.
pub(super) struct Sets {
    read: FdSet,
    write: FdSet,
}

impl Sets {
    pub fn new() -> Sets {
        Sets {
            read: FdSet::new(),
            write: FdSet::new(),
        }
    }

    pub fn clear(&mut self) {
        self.read.clear();
        self.write.clear();
    }

    pub fn want_read(&mut self, fd: RawFd) {
        self.read.insert(fd);
    }

    pub fn want_write(&mut self, fd: RawFd) {
        self.write.insert(fd);
    }

    /// Waits; returns how many descriptors are ready (a descriptor in both sets counts twice).
    pub fn select(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        select(&mut self.read, &mut self.write, timeout)
    }

    pub fn readable(&self, fd: RawFd) -> bool {
        self.read.contains(fd)
    }

    pub fn writable(&self, fd: RawFd) -> bool {
        self.write.contains(fd)
    }
}
