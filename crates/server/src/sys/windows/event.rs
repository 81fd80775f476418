//! [`Event`]: a manual-reset Winsock event object (`WSACreateEvent`); [`Handle`]: any other
//! kernel handle; [`wait_any`]: `WSAWaitForMultipleEvents` over up to 64 of them.

use std::io;
use std::time::Duration;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_IO_COMPLETION, WAIT_TIMEOUT};
use windows_sys::Win32::Networking::WinSock as ws;

/// The most handles one wait takes (`WSA_MAXIMUM_WAIT_EVENTS`, = `MAXIMUM_WAIT_OBJECTS`).
pub const MAX_WAIT: usize = ws::WSA_MAXIMUM_WAIT_EVENTS as usize;

/// A manual-reset, initially non-signalled event object, closed on drop.
#[derive(Debug)]
pub struct Event {
    handle: HANDLE,
}

// SAFETY: an event handle may be signalled, reset, waited on and closed from any thread.
unsafe impl Send for Event {}
// SAFETY: as above; every method takes &self and calls thread-safe kernel functions.
unsafe impl Sync for Event {}

impl Event {
    /// `WSACreateEvent`: manual reset, not signalled.
    pub fn new() -> io::Result<Event> {
        super::wsa_startup();
        // SAFETY: no arguments; returns a new handle or WSA_INVALID_EVENT (null).
        // (windows-sys types WSAEVENT as an integer and HANDLE as a pointer: the same value.)
        let handle = unsafe { ws::WSACreateEvent() } as HANDLE;
        if handle.is_null() {
            return Err(super::last_wsa_error());
        }
        Ok(Event { handle })
    }

    /// The raw handle, for a wait or an `OVERLAPPED.hEvent`. Valid while `self` lives.
    pub fn handle(&self) -> HANDLE {
        self.handle
    }

    /// Signals the event (`WSASetEvent`).
    pub fn set(&self) -> io::Result<()> {
        // SAFETY: `self.handle` is a live event handle owned by `self`.
        if unsafe { ws::WSASetEvent(self.handle) } == 0 {
            return Err(super::last_wsa_error());
        }
        Ok(())
    }

    /// Returns the event to non-signalled (`WSAResetEvent`).
    pub fn reset(&self) {
        // SAFETY: `self.handle` is a live event handle owned by `self`. Failure would mean the
        // handle is invalid, which ownership rules out.
        unsafe { ws::WSAResetEvent(self.handle) };
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: we own the handle and nothing uses it after drop.
        unsafe { ws::WSACloseEvent(self.handle as ws::WSAEVENT) };
    }
}

/// Any kernel handle closed with `CloseHandle` (a completion port, a thread), closed on drop.
#[derive(Debug)]
pub struct Handle(HANDLE);

// SAFETY: kernel handles are process-wide and usable from any thread.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    /// Takes ownership of `raw`, which must be a valid handle nothing else closes.
    ///
    /// # Safety
    /// `raw` must be a live handle that only this value will close.
    pub unsafe fn from_raw(raw: HANDLE) -> Handle {
        Handle(raw)
    }

    /// The raw handle, valid while `self` lives.
    pub fn raw(&self) -> HANDLE {
        self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: we own the handle and nothing uses it after drop.
        unsafe { CloseHandle(self.0) };
    }
}

/// What [`wait_any`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The handle at this index (the lowest signalled one) is signalled.
    Signalled(usize),
    /// The timeout passed.
    TimedOut,
    /// An alertable wait ran queued completion routines or APCs instead.
    IoCompletion,
}

/// `WSAWaitForMultipleEvents(handles, wait_all = FALSE, timeout, alertable)`: blocks until one
/// of at most [`MAX_WAIT`] handles is signalled, the timeout passes (`None`: never), or — when
/// `alertable` — a completion routine or APC ran on this thread.
pub fn wait_any(
    handles: &[HANDLE],
    timeout: Option<Duration>,
    alertable: bool,
) -> io::Result<Wait> {
    if handles.is_empty() || handles.len() > MAX_WAIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a wait takes 1 to {MAX_WAIT} handles, not {}",
                handles.len()
            ),
        ));
    }
    let ms = timeout.map_or(ws::WSA_INFINITE, |t| {
        // Round up, so a 0.5 ms deadline does not become a busy 0 ms poll.
        t.as_nanos().div_ceil(1_000_000).min(u32::MAX as u128 - 1) as u32
    });
    // SAFETY: `handles` is a live slice of 1..=64 handles the caller keeps open for the call.
    let rc = unsafe {
        ws::WSAWaitForMultipleEvents(
            handles.len() as u32,
            handles.as_ptr(),
            0,
            ms,
            alertable as i32,
        )
    };
    match rc {
        rc if rc == WAIT_TIMEOUT => Ok(Wait::TimedOut),
        rc if rc == WAIT_IO_COMPLETION => Ok(Wait::IoCompletion),
        rc if rc == ws::WSA_WAIT_FAILED => Err(super::last_wsa_error()),
        rc => {
            let i = rc.wrapping_sub(ws::WSA_WAIT_EVENT_0 as u32) as usize;
            if i < handles.len() {
                Ok(Wait::Signalled(i))
            } else {
                Err(io::Error::other(format!(
                    "WSAWaitForMultipleEvents returned {rc:#x}"
                )))
            }
        }
    }
}
