//! `select(2)` and a descriptor set that cannot overflow.
//!
//! An `fd_set` is a bitmap of `FD_SETSIZE` (1024) bits indexed by descriptor *value*. `FD_SET`
//! with a descriptor of 1024 or more writes past the end of the bitmap: undefined behaviour
//! that glibc's fortify checks turn into an abort. [`FdSet::insert`] refuses such descriptors
//! instead, so the select model can close them cleanly.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The largest descriptor value plus one that an `fd_set` can hold.
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// A set of descriptors for `select(2)`, bounds-checked.
pub struct FdSet {
    raw: libc::fd_set,
    /// One more than the largest descriptor inserted (select's `nfds`).
    nfds: RawFd,
}

impl FdSet {
    /// An empty set.
    pub fn new() -> FdSet {
        // SAFETY: fd_set is a plain bitmap for which all-zero bits is a valid value; FD_ZERO
        // then clears it the official way.
        let mut raw: libc::fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: `raw` is a live, initialised fd_set.
        unsafe { libc::FD_ZERO(&mut raw) };
        FdSet { raw, nfds: 0 }
    }

    /// True if `fd` can be put in an `fd_set`.
    pub fn fits(fd: RawFd) -> bool {
        fd >= 0 && (fd as usize) < FD_SETSIZE
    }

    /// Adds `fd`; returns false (and changes nothing) if it does not fit.
    pub fn insert(&mut self, fd: RawFd) -> bool {
        if !Self::fits(fd) {
            return false;
        }
        // SAFETY: 0 <= fd < FD_SETSIZE, so the bit is inside the bitmap.
        unsafe { libc::FD_SET(fd, &mut self.raw) };
        self.nfds = self.nfds.max(fd + 1);
        true
    }

    /// True if `fd` is in the set (after `select`: if it is ready).
    pub fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: the bounds check keeps FD_ISSET inside the bitmap.
        Self::fits(fd) && unsafe { libc::FD_ISSET(fd, &self.raw) }
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        // SAFETY: `raw` is a live, initialised fd_set.
        unsafe { libc::FD_ZERO(&mut self.raw) };
        self.nfds = 0;
    }
}

impl Default for FdSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits until a descriptor in `read` is readable or one in `write` is writable, or `timeout`
/// passes (`None`: forever). On return the sets hold only the ready descriptors. Returns how
/// many are ready; an interrupted wait (EINTR) returns 0 with both sets emptied.
pub fn select(read: &mut FdSet, write: &mut FdSet, timeout: Option<Duration>) -> io::Result<usize> {
    let nfds = read.nfds.max(write.nfds);
    let mut tv = timeout.map(|t| libc::timeval {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    });
    let tv_ptr = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
    // SAFETY (syscall!): both sets are live fd_sets holding only descriptors < nfds <=
    // FD_SETSIZE; the timeval pointer is null or points at a live timeval.
    let n = syscall!(select(
        nfds,
        &mut read.raw,
        &mut write.raw,
        std::ptr::null_mut(),
        tv_ptr
    ));
    match n {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            read.clear();
            write.clear();
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_past_fd_setsize_are_refused_not_written() {
        let mut s = FdSet::new();
        assert!(s.insert(3));
        assert!(s.insert(FD_SETSIZE as RawFd - 1));
        assert!(!s.insert(FD_SETSIZE as RawFd));
        assert!(!s.insert(-1));
        assert!(s.contains(3));
        assert!(!s.contains(4));
        assert!(!s.contains(FD_SETSIZE as RawFd));
        assert_eq!(s.nfds, FD_SETSIZE as RawFd);
        s.clear();
        assert!(!s.contains(3));
    }
}
