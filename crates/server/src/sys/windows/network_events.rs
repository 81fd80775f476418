//! `WSAEventSelect` and `WSAEnumNetworkEvents`: a socket's network events signal an [`Event`],
//! and the waiting thread asks which ones fired.
//!
//! Winsock keeps, per socket, a record of the network events that happened since the last
//! `WSAEnumNetworkEvents`. An event enters the record (and signals the event object) only once
//! until the call that *re-enables* it: `recv` for `FD_READ` (posted again at once if data
//! remains), `send` failing with `WSAEWOULDBLOCK` for `FD_WRITE`, `accept` for `FD_ACCEPT`;
//! `FD_CLOSE` is never re-posted. [`network_events`] reads and clears the record and resets the
//! event object in one call.

use super::event::Event;
use std::io;
use std::os::windows::io::AsRawSocket;
use windows_sys::Win32::Networking::WinSock as ws;

/// `FD_READ`: data to read (re-enabled by `recv`).
pub const FD_READ: u32 = ws::FD_READ;
/// `FD_WRITE`: room to send (re-enabled only by a send that failed with `WSAEWOULDBLOCK`).
pub const FD_WRITE: u32 = ws::FD_WRITE;
/// `FD_ACCEPT`: a connection to accept (re-enabled by `accept`).
pub const FD_ACCEPT: u32 = ws::FD_ACCEPT;
/// `FD_CLOSE`: the peer closed or reset the connection; unread data may remain. Never re-posted.
pub const FD_CLOSE: u32 = ws::FD_CLOSE;

/// `WSAEventSelect(socket, event, mask)`: from now on the network events in `mask` are recorded
/// for `socket` and signal `event`. Replaces any earlier selection on the socket (an accepted
/// socket inherits its listener's), and makes the socket non-blocking for good. An event whose
/// condition already holds (data waiting, room to send) is recorded at once.
///
/// The caller must keep `event` open for as long as the selection lasts: close the socket
/// before the event.
pub fn event_select(socket: &impl AsRawSocket, event: &Event, mask: u32) -> io::Result<()> {
    // SAFETY: the socket and the event are live handles borrowed for the call; the selection
    // that outlives the call refers to the event, which the caller keeps open (see above).
    let rc = unsafe {
        ws::WSAEventSelect(
            socket.as_raw_socket() as ws::SOCKET,
            event.handle() as ws::WSAEVENT,
            mask as i32,
        )
    };
    if rc == ws::SOCKET_ERROR {
        return Err(super::last_wsa_error());
    }
    Ok(())
}

/// What [`network_events`] read: the events that fired, and an error code for each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkEvents {
    /// `FD_*` bits.
    pub events: u32,
    codes: [i32; 10],
}

impl NetworkEvents {
    /// True if `event` (one `FD_*` bit) fired.
    pub fn has(&self, event: u32) -> bool {
        self.events & event != 0
    }

    /// The error Winsock attached to `event` (one `FD_*` bit), if it fired with one: for
    /// `FD_CLOSE`, `WSAECONNRESET` or `WSAECONNABORTED` after a reset; 0 for a graceful close.
    pub fn error(&self, event: u32) -> Option<io::Error> {
        if !self.has(event) {
            return None;
        }
        let bit = event.trailing_zeros() as usize;
        match self.codes.get(bit) {
            Some(&code) if code != 0 => Some(io::Error::from_raw_os_error(code)),
            _ => None,
        }
    }
}

/// `WSAEnumNetworkEvents(socket, event)`: reads and clears the socket's record of network
/// events and resets `event`, atomically.
pub fn network_events(socket: &impl AsRawSocket, event: &Event) -> io::Result<NetworkEvents> {
    let mut ne = ws::WSANETWORKEVENTS {
        lNetworkEvents: 0,
        iErrorCode: [0; 10],
    };
    // SAFETY: the socket and the event are live handles borrowed for the call; `ne` is a live
    // WSANETWORKEVENTS the call fills in.
    let rc = unsafe {
        ws::WSAEnumNetworkEvents(
            socket.as_raw_socket() as ws::SOCKET,
            event.handle() as ws::WSAEVENT,
            &mut ne,
        )
    };
    if rc == ws::SOCKET_ERROR {
        return Err(super::last_wsa_error());
    }
    Ok(NetworkEvents {
        events: ne.lNetworkEvents as u32,
        codes: ne.iErrorCode,
    })
}

/// `WSAEventSelect(socket, NULL, 0)`: ends any selection on `socket` (such as the one an
/// accepted socket inherits from its listener). The socket stays non-blocking.
pub fn clear_event_select(socket: &impl AsRawSocket) -> io::Result<()> {
    // SAFETY: the socket is a live handle borrowed for the call; a zero mask takes no event.
    let rc = unsafe { ws::WSAEventSelect(socket.as_raw_socket() as ws::SOCKET, 0, 0) };
    if rc == ws::SOCKET_ERROR {
        return Err(super::last_wsa_error());
    }
    Ok(())
}
