//! Winsock `select` over a socket set of our own size.
//!
//! Winsock's `fd_set` is not a bitmap indexed by descriptor value, as on Unix, but a count and
//! an array of `SOCKET` handles: `{ u_int fd_count; SOCKET fd_array[FD_SETSIZE]; }` with
//! `FD_SETSIZE` = 64 unless the program defines it larger before including `winsock2.h`.
//! `select` reads `fd_count` entries, whatever the array's declared size, so a program may hand
//! it a larger array with the same layout. [`SocketSet`] is that: a growable buffer laid out as
//! an `fd_set` (the count in the first 8-byte word — 4 bytes and padding — then the handles),
//! limited only by [`SocketSet::capacity`], a count chosen by its owner.

use std::io;
use std::os::windows::io::RawSocket;
use std::time::Duration;
use windows_sys::Win32::Networking::WinSock as ws;

/// A Winsock `fd_set` with room for `capacity` sockets.
#[derive(Debug, Clone)]
pub struct SocketSet {
    /// Word 0: `fd_count` (low 32 bits; the high half is the padding before `fd_array` on
    /// 64-bit Windows). Words 1..: `fd_array`.
    words: Vec<u64>,
    capacity: usize,
}

impl SocketSet {
    /// An empty set that holds at most `capacity` sockets.
    pub fn with_capacity(capacity: usize) -> SocketSet {
        let mut words = Vec::with_capacity(1 + capacity.min(1024));
        words.push(0);
        SocketSet { words, capacity }
    }

    /// The most sockets this set holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many sockets are in the set.
    pub fn len(&self) -> usize {
        self.words.len() - 1
    }

    /// True if the set holds no socket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.truncate(1);
        self.words[0] = 0;
    }

    /// Adds `s`; `false` (and no change) if the set is full. Does not check for duplicates.
    pub fn insert(&mut self, s: RawSocket) -> bool {
        if self.len() >= self.capacity {
            return false;
        }
        self.words.push(s);
        self.words[0] = self.len() as u64;
        true
    }

    /// True if `s` is in the set: after [`select`], true if `s` is ready. O(n): a caller that
    /// tests every socket should walk [`SocketSet::iter`] instead.
    pub fn contains(&self, s: RawSocket) -> bool {
        self.words[1..].contains(&s)
    }

    /// The sockets in the set (after [`select`], the ready ones).
    pub fn iter(&self) -> impl Iterator<Item = RawSocket> + '_ {
        self.words[1..].iter().copied()
    }

    fn as_fd_set(&mut self) -> *mut ws::FD_SET {
        // The count word's high half is padding; select reads the low half as fd_count.
        self.words[0] = self.len() as u64;
        self.words.as_mut_ptr().cast()
    }

    /// After `select` rewrote the count, drops the entries past it.
    fn sync_after_select(&mut self) {
        let n = (self.words[0] & 0xffff_ffff) as usize;
        self.words.truncate(1 + n.min(self.words.len() - 1));
        self.words[0] = self.len() as u64;
    }
}

/// `select(0, read, write, NULL, timeout)`: blocks until a socket in `read` is readable (or has
/// a connection to accept, or was closed) or one in `write` is writable, or the timeout passes
/// (`None`: forever). Both sets are rewritten to hold only the ready sockets; the count is
/// returned. Winsock's `select` fails with `WSAEINVAL` when both sets are empty, so pass at
/// least a wake-up socket.
pub fn select(
    read: &mut SocketSet,
    write: &mut SocketSet,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let tv = timeout.map(|t| ws::TIMEVAL {
        tv_sec: t.as_secs().min(i32::MAX as u64) as i32,
        // Round up, so a deadline under a microsecond does not become a busy zero wait.
        tv_usec: (t.subsec_nanos().div_ceil(1000)) as i32,
    });
    let tv_ptr = tv
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const ws::TIMEVAL);
    let write_ptr = if write.is_empty() {
        std::ptr::null_mut()
    } else {
        write.as_fd_set()
    };
    // SAFETY: both sets are live buffers laid out as fd_set with fd_count entries; select
    // reads and rewrites at most fd_count entries of each; `tv_ptr` is null or a live TIMEVAL.
    let n = unsafe { ws::select(0, read.as_fd_set(), write_ptr, std::ptr::null_mut(), tv_ptr) };
    if n == ws::SOCKET_ERROR {
        return Err(super::last_wsa_error());
    }
    read.sync_after_select();
    if !write.is_empty() {
        write.sync_after_select();
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::windows::io::AsRawSocket;

    #[test]
    fn a_set_larger_than_64_sockets_reports_exactly_the_ready_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..100 {
            clients.push(TcpStream::connect(addr).unwrap());
            served.push(listener.accept().unwrap().0);
        }
        use std::io::Write;
        // Make every seventh server-side socket readable.
        for c in clients.iter_mut().step_by(7) {
            c.write_all(b"x").unwrap();
        }
        let mut read = SocketSet::with_capacity(200);
        for s in &served {
            assert!(read.insert(s.as_raw_socket()));
        }
        assert_eq!(read.len(), 100);
        let mut write = SocketSet::with_capacity(1);
        std::thread::sleep(Duration::from_millis(100));
        let n = select(&mut read, &mut write, Some(Duration::from_secs(5))).unwrap();
        let want: Vec<_> = served
            .iter()
            .step_by(7)
            .map(|s| s.as_raw_socket())
            .collect();
        assert_eq!(n, want.len());
        assert_eq!(read.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn a_full_set_refuses_more() {
        let mut set = SocketSet::with_capacity(2);
        assert!(set.insert(1) && set.insert(2));
        assert!(!set.insert(3));
        assert_eq!(set.len(), 2);
    }
}
