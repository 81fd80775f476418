//! The Windows poll of the load generator: edge-triggered readiness, mio's contract, emulated
//! over `WSAPoll`.
//!
//! **Winsock original**: `WSAPoll` (Winsock 2, Vista and later), the counterpart of `poll(2)`:
//! an array of `WSAPOLLFD { fd, events, revents }`, level-triggered, O(sockets) per call.
//! **Linux counterpart**: mio over epoll, edge-triggered (`EPOLLET`), which the other systems
//! use (see the parent module).
//!
//! ## The edge emulation
//!
//! Every registered socket has an *armed* set, initially its interest. [`Poll::poll`] asks
//! `WSAPoll` about the armed directions only (`POLLRDNORM`, `POLLWRNORM`) of the sockets that
//! have any, reports each socket that is ready in one of them as one [`Event`], and disarms
//! what it reported. The socket types re-arm a direction when a call in that direction
//! returns `WouldBlock` (`read`/`recv` the readable side, `write`/`send` the writable side) —
//! mio's rule that an interest comes back only after `WouldBlock`. A socket nobody waits on
//! is not in the array at all, so an always-writable socket costs nothing and a readable one
//! that is not read is not reported again and again.
//!
//! ## Re-arming at a short read
//!
//! A TCP `read` that returns less than its buffer (and not the end of stream) re-arms the
//! readable side too: the receive queue was empty after it. That is safe because `WSAPoll` is
//! level-triggered (data that came in between is reported by the next call at once), and it
//! is what the workers' read loop relies on, as on Linux (see the parent module: reading on
//! to `WouldBlock` livelocks a closed loop). UDP `recv` does not: a datagram says nothing of
//! the queue behind it, and the UDP worker reads to `WouldBlock`.
//!
//! `POLLHUP` (the connection is gone) and `POLLERR` (it failed) come whether asked for or not;
//! they are reported as [`Event::is_read_closed`] / [`Event::is_error`] (with both directions
//! ready, so the caller reads the end of stream or the error) and disarm the socket
//! completely: a level-triggered hang-up would otherwise be reported on every call. The caller
//! reads to the end of stream or the error and closes, as it does on Linux.
//!
//! A socket is deregistered when it is dropped (or by [`Registry::deregister`]): it is flagged
//! and left out from the next call on, so a socket value Windows reuses for a new socket is
//! never polled twice.
//!
//! ## Limits
//!
//! * `WSAPoll` is O(sockets) per call, in the kernel (and under Wine in `wineserver`): each
//!   worker thread polls only its own connections (`--threads`), so a call covers
//!   `conns / threads` sockets. Under Wine 8 (a debug build against a Linux `serve`, 2
//!   threads, medians of three runs) 8 connections made 6,900 msg/s, 100 made 9,500 and 2,000
//!   made 10,000, all verified: Wine's cost per call hides the array's. On Windows, for tens of
//!   thousands of connections per thread, an I/O completion port (as the completion-port
//!   model's server uses) would scale better; `--threads` splits the array meanwhile.
//! * The poll's timeout is in whole milliseconds (rounded up, as mio does), and Windows' timer
//!   ticks every 15.6 ms unless a process asks for finer: `--rate` messages can go out late
//!   by up to a tick on Windows (the late part shows in the latency from the schedule). Linux
//!   has a timerfd for that (`sys::Timer`).
//!
//! ## Pitfalls
//!
//! * A non-blocking `connect` that fails: `WSAPoll` reports `POLLHUP | POLLERR` (then
//!   `SO_ERROR` has the reason, which `Conn::on_connect_event` reads on every connect event).
//!   On Windows before 10 version 2004 it reported nothing at all for a refused connect
//!   (Microsoft's documented `WSAPoll` bug); there such a connect ends at `--connect-timeout`,
//!   counted as a connect timeout rather than refused.
//! * `WSAPoll` rejects `POLLPRI` and `POLLRDBAND` in `events` (`WSAEINVAL`): only
//!   `POLLRDNORM` and `POLLWRNORM` are asked for.
//! * `WSAPoll` with no sockets fails (`WSAEINVAL`) instead of sleeping: with nothing armed,
//!   the poll sleeps the timeout itself.
//! * Wine: `WSAPoll` is one synchronous request to `wineserver`, which polls the sockets'
//!   Linux descriptors; seen to report level readiness (again on every call while data
//!   waits) and writability as Windows does (this module's tests check both).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::windows::io::AsRawSocket;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use windows_sys::Win32::Networking::WinSock::{
    POLLERR, POLLHUP, POLLNVAL, POLLRDNORM, POLLWRNORM, WSAPOLLFD, WSAPOLL_EVENT_FLAGS,
};

use crate::sys::wsapoll;

/// Identifies a registered socket in the [`Event`]s (mio's `Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Token(pub(crate) usize);

/// The directions a socket is polled for (mio's `Interest`): readable, writable or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest(u8);

const READ: u8 = 1;
const WRITE: u8 = 2;

impl Interest {
    /// Readable: data (or the end of stream, or an error) to read.
    pub(crate) const READABLE: Interest = Interest(READ);
    /// Writable: room to write (or a connect that completed or failed).
    pub(crate) const WRITABLE: Interest = Interest(WRITE);
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }
}

/// One socket's readiness, as one [`Poll::poll`] saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    token: Token,
    readable: bool,
    writable: bool,
    closed: bool,
    error: bool,
}

impl Event {
    /// The token the socket was registered with.
    pub(crate) fn token(&self) -> Token {
        self.token
    }
    /// Something to read (data, the end of stream or an error). (The workers read on any
    /// event, as on Linux; this module's tests ask.)
    #[allow(dead_code)]
    pub(crate) fn is_readable(&self) -> bool {
        self.readable
    }
    /// Room to write (or the connect is over).
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }
    /// The connection is gone (`POLLHUP`): the end of stream waits behind any data.
    pub(crate) fn is_read_closed(&self) -> bool {
        self.closed
    }
    /// The socket failed (`POLLERR`, `POLLNVAL`): `SO_ERROR` or the next call says why.
    pub(crate) fn is_error(&self) -> bool {
        self.error
    }
}

/// The events of one [`Poll::poll`] call.
pub(crate) struct Events {
    list: Vec<Event>,
    capacity: usize,
}

impl Events {
    /// Room for `capacity` events per call; more ready sockets wait for the next call.
    pub(crate) fn with_capacity(capacity: usize) -> Events {
        Events {
            list: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// The events of the last call.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }
}

/// What the poll and a registered socket share.
struct Registration {
    socket: u64,
    token: Token,
    interest: u8,
    /// The directions to poll for: reported ones are cleared, `WouldBlock` sets them again.
    armed: AtomicU8,
    /// The socket was dropped or deregistered: never poll it again.
    gone: AtomicBool,
}

/// A socket's link to its poll: re-arms a direction after `WouldBlock`, deregisters on drop.
#[derive(Default)]
pub(crate) struct Link(Option<Arc<Registration>>);

impl Link {
    /// Re-arms `dir` if `result` says the call would have blocked; passes `result` on.
    #[inline]
    fn note<T>(&self, dir: u8, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if e.kind() == io::ErrorKind::WouldBlock {
                self.arm(dir);
            }
        }
        result
    }

    /// Re-arms `dir` (within the registered interest).
    #[inline]
    fn arm(&self, dir: u8) {
        if let Some(reg) = &self.0 {
            reg.armed.fetch_or(dir & reg.interest, Ordering::Relaxed);
        }
    }

    fn unlink(&mut self) {
        if let Some(reg) = self.0.take() {
            reg.gone.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// A socket that can be registered.
pub(crate) trait Source {
    /// The socket and its link.
    fn parts(&mut self) -> (u64, &mut Link);
}

/// Registers sockets with a [`Poll`] (mio's `Registry`).
pub(crate) struct Registry {
    sockets: Mutex<Vec<Arc<Registration>>>,
}

impl Registry {
    /// Polls `source` for `interest` under `token`, armed at once.
    pub(crate) fn register(
        &self,
        source: &mut impl Source,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let (socket, link) = source.parts();
        if link.0.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the socket is registered already",
            ));
        }
        let reg = Arc::new(Registration {
            socket,
            token,
            interest: interest.0,
            armed: AtomicU8::new(interest.0),
            gone: AtomicBool::new(false),
        });
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&reg));
        link.0 = Some(reg);
        Ok(())
    }

    /// Stops polling `source` (dropping it does the same).
    pub(crate) fn deregister(&self, source: &mut impl Source) -> io::Result<()> {
        source.parts().1.unlink();
        Ok(())
    }
}

/// An edge-triggered readiness poll over `WSAPoll` (mio's `Poll`). One per worker thread.
pub(crate) struct Poll {
    registry: Registry,
    /// The array handed to `WSAPoll`, and which registration each entry is.
    fds: Vec<WSAPOLLFD>,
    polled: Vec<Arc<Registration>>,
}

impl Poll {
    /// An empty poll.
    pub(crate) fn new() -> io::Result<Poll> {
        Ok(Poll {
            registry: Registry {
                sockets: Mutex::new(Vec::new()),
            },
            fds: Vec::new(),
            polled: Vec::new(),
        })
    }

    /// Where sockets are registered.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Waits up to `timeout` (`None`: without limit) until an armed direction of a socket is
    /// ready, and fills `events` with what is (at most its capacity; the rest stays armed for
    /// the next call).
    pub(crate) fn poll(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        events.list.clear();
        self.gather();
        // Whole milliseconds, rounded up (a timeout of 0.1 ms must not spin at 0).
        let ms = match timeout {
            None => -1,
            Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
        if self.fds.is_empty() {
            // WSAPoll fails with no sockets; nothing can become ready but by time.
            if let Some(d) = timeout {
                std::thread::sleep(d);
            }
            return Ok(());
        }
        if wsapoll(&mut self.fds, ms)? == 0 {
            return Ok(());
        }
        for (fd, reg) in self.fds.iter().zip(&self.polled) {
            if events.list.len() == events.capacity {
                break;
            }
            if let Some(event) = reg.take_ready(fd.revents) {
                events.list.push(event);
            }
        }
        Ok(())
    }

    /// Fills the `WSAPoll` array with every registered socket that has an armed direction
    /// (and forgets the registrations of sockets gone).
    fn gather(&mut self) {
        self.fds.clear();
        self.polled.clear();
        let mut sockets = self
            .registry
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sockets.retain(|reg| !reg.gone.load(Ordering::Relaxed));
        for reg in sockets.iter() {
            let armed = reg.armed.load(Ordering::Relaxed);
            if armed == 0 {
                continue;
            }
            let mut asked = 0;
            if armed & READ != 0 {
                asked |= POLLRDNORM;
            }
            if armed & WRITE != 0 {
                asked |= POLLWRNORM;
            }
            self.fds.push(WSAPOLLFD {
                fd: reg.socket as usize,
                events: asked,
                revents: 0,
            });
            self.polled.push(Arc::clone(reg));
        }
    }
}

impl Registration {
    /// The event of what `WSAPoll` returned for this socket (`got`, its `revents`), if any;
    /// the directions reported are disarmed (all of them on a hang-up or an error).
    fn take_ready(&self, got: WSAPOLL_EVENT_FLAGS) -> Option<Event> {
        if got == 0 {
            return None;
        }
        let closed = got & POLLHUP != 0;
        let error = got & (POLLERR | POLLNVAL) != 0;
        let armed = self.armed.load(Ordering::Relaxed);
        let mut readable = got & POLLRDNORM != 0 && armed & READ != 0;
        let mut writable = got & POLLWRNORM != 0 && armed & WRITE != 0;
        if closed || error {
            // Level-triggered and unasked: report what is armed, and disarm it all.
            readable |= armed & READ != 0;
            writable |= armed & WRITE != 0;
            self.armed.store(0, Ordering::Relaxed);
        } else {
            let mut fired = 0;
            if readable {
                fired |= READ;
            }
            if writable {
                fired |= WRITE;
            }
            self.armed.fetch_and(!fired, Ordering::Relaxed);
        }
        (readable || writable || closed || error).then_some(Event {
            token: self.token,
            readable,
            writable,
            closed,
            error,
        })
    }
}

/// A non-blocking TCP connection whose `WouldBlock`s re-arm its poll (mio's `TcpStream`).
pub(crate) struct TcpStream {
    inner: std::net::TcpStream,
    link: Link,
}

impl TcpStream {
    /// Starts a non-blocking connect to `addr`; the connection is usable once it reports
    /// writable and `peer_addr` succeeds (or failed: `take_error`).
    pub(crate) fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            // WSAEWOULDBLOCK: the connect is under way.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream {
            inner: socket.into(),
            link: Link::default(),
        })
    }

    /// The pending error of the socket (`SO_ERROR`), taken.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// The server's address; `NotConnected` while the connect is under way.
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on)
    }

    /// Shuts down one or both directions.
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
}

impl Read for TcpStream {
    /// Reads; `WouldBlock` re-arms the readable side, and so does a short read (less than
    /// `buf`, not the end of stream): the receive queue was empty after it (see the module
    /// doc, "Re-arming at a short read").
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        if let Ok(n) = result {
            if n > 0 && n < buf.len() {
                self.link.arm(READ);
            }
        }
        self.link.note(READ, result)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.link.note(WRITE, result)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for TcpStream {
    fn parts(&mut self) -> (u64, &mut Link) {
        (self.inner.as_raw_socket(), &mut self.link)
    }
}

/// A non-blocking UDP socket whose `WouldBlock`s re-arm its poll (mio's `UdpSocket`).
pub(crate) struct UdpSocket {
    inner: std::net::UdpSocket,
    link: Link,
}

impl UdpSocket {
    /// A non-blocking socket bound to `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let inner = std::net::UdpSocket::bind(addr)?;
        inner.set_nonblocking(true)?;
        Ok(UdpSocket {
            inner,
            link: Link::default(),
        })
    }

    /// Sends to and receives from `addr` only.
    pub(crate) fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.inner.connect(addr)
    }

    /// Sends one datagram to the connected address.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.link.note(WRITE, self.inner.send(buf))
    }

    /// Receives one datagram from the connected address.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.link.note(READ, self.inner.recv(buf))
    }
}

impl Source for UdpSocket {
    fn parts(&mut self) -> (u64, &mut Link) {
        (self.inner.as_raw_socket(), &mut self.link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair: ours (registered for both directions) and the server's end.
    fn pair(poll: &Poll) -> (TcpStream, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        poll.registry()
            .register(&mut ours, Token(7), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (ours, theirs)
    }

    fn wait(poll: &mut Poll, events: &mut Events) -> Vec<Event> {
        poll.poll(events, Some(Duration::from_millis(200))).unwrap();
        events.iter().copied().collect()
    }

    #[test]
    fn wsapoll_itself_is_level_triggered_for_data_and_room() {
        let poll = Poll::new().unwrap();
        let (mut ours, mut theirs) = pair(&poll);
        theirs.write_all(b"hello").unwrap();
        let sock = ours.inner.as_raw_socket() as usize;
        for round in 0..3 {
            let mut fds = [WSAPOLLFD {
                fd: sock,
                events: POLLRDNORM | POLLWRNORM,
                revents: 0,
            }];
            assert_eq!(wsapoll(&mut fds, 1000).unwrap(), 1, "round {round}");
            assert_eq!(
                fds[0].revents & (POLLRDNORM | POLLWRNORM),
                POLLRDNORM | POLLWRNORM,
                "round {round}: {:#x}",
                fds[0].revents
            );
        }
        let mut buf = [0u8; 16];
        assert_eq!(ours.read(&mut buf).unwrap(), 5);
        let mut fds = [WSAPOLLFD {
            fd: sock,
            events: POLLRDNORM,
            revents: 0,
        }];
        assert_eq!(
            wsapoll(&mut fds, 0).unwrap(),
            0,
            "read out: no longer readable"
        );
    }

    #[test]
    fn an_interest_is_reported_once_and_rearmed_by_would_block() {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(16);
        let (mut ours, mut theirs) = pair(&poll);
        // The connect completes: writable, once.
        let seen = wait(&mut poll, &mut events);
        assert!(
            seen.len() == 1 && seen[0].token() == Token(7) && seen[0].is_writable(),
            "{seen:?}"
        );
        assert!(wait(&mut poll, &mut events).is_empty(), "writable twice");
        // Data: readable once, even while it waits unread.
        theirs.write_all(b"one").unwrap();
        let seen = wait(&mut poll, &mut events);
        assert!(seen.len() == 1 && seen[0].is_readable(), "{seen:?}");
        assert!(wait(&mut poll, &mut events).is_empty(), "readable twice");
        // Read it out to WouldBlock: the next data is a new edge.
        let mut buf = [0u8; 16];
        assert_eq!(ours.read(&mut buf).unwrap(), 3);
        let e = ours.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(wait(&mut poll, &mut events).is_empty(), "nothing new yet");
        theirs.write_all(b"two").unwrap();
        let seen = wait(&mut poll, &mut events);
        assert!(seen.len() == 1 && seen[0].is_readable(), "{seen:?}");
        // A short read re-arms (the queue was empty after it): the next data is an edge.
        assert_eq!(ours.read(&mut buf).unwrap(), 3);
        theirs.write_all(b"three").unwrap();
        let seen = wait(&mut poll, &mut events);
        assert!(seen.len() == 1 && seen[0].is_readable(), "{seen:?}");
        // A full read does not: two bytes wait, unreported, until a short read or WouldBlock.
        let mut three = [0u8; 3];
        assert_eq!(ours.read(&mut three).unwrap(), 3);
        assert!(
            wait(&mut poll, &mut events).is_empty(),
            "re-armed by a full read"
        );
        assert_eq!(ours.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ee");
        // The peer's close: reported (the socket is armed again), then the end of stream.
        drop(theirs);
        let seen = wait(&mut poll, &mut events);
        assert!(seen.len() == 1 && seen[0].is_readable(), "{seen:?}");
        assert_eq!(ours.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_refused_connect_is_reported_with_its_error() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(4);
        let mut s = TcpStream::connect(addr).unwrap();
        poll.registry()
            .register(&mut s, Token(1), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = wait(&mut poll, &mut events);
            if !seen.is_empty() {
                break;
            }
        }
        assert!(seen.len() == 1 && seen[0].token() == Token(1), "{seen:?}");
        let failed = s.take_error().unwrap().is_some() || s.peer_addr().is_err();
        assert!(failed, "{seen:?}");
    }

    #[test]
    fn a_dropped_socket_is_polled_no_more() {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(4);
        let (ours, mut theirs) = pair(&poll);
        drop(ours);
        let _ = theirs.write_all(b"x");
        assert!(wait(&mut poll, &mut events).is_empty());
        assert!(poll.registry.sockets.lock().unwrap().is_empty());
    }
}
