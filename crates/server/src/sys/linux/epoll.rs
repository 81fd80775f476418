//! An owned epoll instance.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use libc::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP};

/// An epoll instance; closed on drop. Registered descriptors are identified by a `u64` token.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness event: the token given at registration and the `EPOLL*` bits.
pub type Event = libc::epoll_event;

/// The buffer `epoll_wait` fills.
pub struct Events {
    buf: Vec<Event>,
    len: usize,
}

impl Events {
    /// A buffer for up to `capacity` events per wait.
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }

    /// The events of the last wait, as `(token, bits)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.buf[..self.len].iter().map(|e| (e.u64, e.events))
    }
}

impl Epoll {
    /// Creates a close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY (syscall!): flags only.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        Ok(Epoll {
            // SAFETY: epoll_create1 just returned this descriptor and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: i32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY (syscall!): `ev` is a live epoll_event; the kernel copies it.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev)).map(|_| ())
    }

    /// Registers `fd` for `events` (`EPOLLIN | ...`) under `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: i32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Removes `fd`. (Closing a descriptor also removes it, once no duplicate remains.)
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events or `timeout` (`None`: forever); EINTR counts as zero events.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ms = timeout.map_or(-1, |t| {
            // Round up so a 0.3 ms timeout does not spin as 0 ms.
            let ms = t.as_micros().div_ceil(1000);
            ms.min(i32::MAX as u128) as libc::c_int
        });
        // SAFETY (syscall!): the buffer is live and we pass its true length.
        let n = syscall!(epoll_wait(
            self.fd.as_raw_fd(),
            events.buf.as_mut_ptr(),
            events.buf.len() as libc::c_int,
            ms
        ));
        events.len = match n {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(events.len)
    }
}
