//! [`Waker`]: what a Windows model's wait includes so that shutdown can wake it.
//!
//! Winsock's waits take different things: `select` and `WSAAsyncSelect` take only sockets,
//! `WSAWaitForMultipleEvents` and `SleepEx` take event handles. So a Windows waker is both: a
//! manual-reset [`Event`] and a UDP socket on loopback connected to itself. [`Waker::wake`]
//! signals the event and sends the socket one datagram, making it readable; each model waits on
//! whichever it can (the completion port model posts a receive on the socket, so the wake-up
//! arrives as one more completion).

use super::event::Event;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use windows_sys::Win32::Foundation::HANDLE;

/// A wake-up signal, as an event handle and as a readable socket.
///
/// [`Waker::wake`] may be called from any thread any number of times; the waiting side sees it
/// signalled until it calls [`Waker::reset`]. Closed on drop.
#[derive(Debug)]
pub struct Waker {
    event: Event,
    socket: UdpSocket,
}

impl Waker {
    /// A new, non-signalled waker.
    pub fn new() -> io::Result<Waker> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.connect(socket.local_addr()?)?;
        socket.set_nonblocking(true)?;
        Ok(Waker {
            event: Event::new()?,
            socket,
        })
    }

    /// Signals the event and makes the socket readable.
    pub fn wake(&self) -> io::Result<()> {
        self.event.set()?;
        match self.socket.send(&[1]) {
            // A full socket buffer already holds wake-ups: the waiter is due to wake.
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Consumes pending wake-ups: the event is reset and the socket drained.
    pub fn reset(&self) {
        self.event.reset();
        let mut buf = [0u8; 16];
        while self.socket.recv(&mut buf).is_ok() {}
    }

    /// The event handle, for `WSAWaitForMultipleEvents` / `SleepEx`-style waits.
    pub fn event_handle(&self) -> HANDLE {
        self.event.handle()
    }

    /// The socket, readable once woken, for `select` and `WSAAsyncSelect`.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl AsRawSocket for Waker {
    fn as_raw_socket(&self) -> RawSocket {
        self.socket.as_raw_socket()
    }
}
