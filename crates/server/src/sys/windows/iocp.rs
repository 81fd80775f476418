//! [`CompletionPort`]: an owned I/O completion port (`CreateIoCompletionPort`), closed on drop.

use super::event::Handle;
use std::io;
use std::os::windows::io::RawSocket;
use std::time::Duration;
use windows_sys::Win32::Foundation::{GetLastError, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT};
use windows_sys::Win32::System::IO::{
    CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus,
    OVERLAPPED_ENTRY,
};

/// An I/O completion port: sockets associated with it post a packet for every overlapped
/// operation that completes; threads dequeue them with [`CompletionPort::wait`].
#[derive(Debug)]
pub struct CompletionPort {
    handle: Handle,
}

impl CompletionPort {
    /// A new port that lets at most `concurrency` threads run its packets at once (0: one per
    /// CPU).
    pub fn new(concurrency: u32) -> io::Result<CompletionPort> {
        // SAFETY: creating a port associates no file; no pointers.
        let raw = unsafe {
            CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, concurrency)
        };
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new handle that only this value closes.
        let handle = unsafe { Handle::from_raw(raw) };
        Ok(CompletionPort { handle })
    }

    /// Associates `socket` with the port: every overlapped operation on it then completes as
    /// a packet carrying `key`. The association lasts until the socket is closed.
    pub fn associate(&self, socket: RawSocket, key: usize) -> io::Result<()> {
        // SAFETY: `socket` is an open socket (a socket is a file handle); the port is live.
        let rc = unsafe { CreateIoCompletionPort(socket as HANDLE, self.handle.raw(), key, 0) };
        if rc.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Queues a packet of our own (`PostQueuedCompletionStatus`) with no `OVERLAPPED`: `bytes`
    /// and `key` come out of [`CompletionPort::wait`] as given, with a null `lpOverlapped`
    /// (a wake-up or a message the key names, never an operation to reclaim).
    ///
    /// It takes no `OVERLAPPED` pointer: whoever dequeues the packet would take one for an
    /// operation record of theirs and reclaim it, so posting an arbitrary pointer could not be
    /// a safe function (clippy::not_unsafe_ptr_arg_deref).
    pub fn post(&self, bytes: u32, key: usize) -> io::Result<()> {
        // SAFETY: the port is live (owned by `self`); a null `lpOverlapped` is allowed, the
        // kernel only stores it in the packet.
        let posted =
            unsafe { PostQueuedCompletionStatus(self.handle.raw(), bytes, key, std::ptr::null()) };
        if posted == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `GetQueuedCompletionStatusEx`: waits (`None`: forever) for at least one packet and
    /// dequeues up to `entries.len()`; returns how many (0 when the timeout passed). The
    /// status of each operation is in its `OVERLAPPED` (not in the entry).
    pub fn wait(
        &self,
        entries: &mut [OVERLAPPED_ENTRY],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = timeout.map_or(u32::MAX, |t| {
            t.as_millis().min(u128::from(u32::MAX - 1)) as u32
        });
        let mut n = 0u32;
        // SAFETY: `entries` is a live, writable slice of the length given; `n` a live local.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.handle.raw(),
                entries.as_mut_ptr(),
                entries.len().min(u32::MAX as usize) as u32,
                &mut n,
                ms,
                0,
            )
        };
        if ok == 0 {
            // SAFETY: reads this thread's last error; no arguments.
            if unsafe { GetLastError() } == WAIT_TIMEOUT {
                return Ok(0);
            }
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A zeroed entry, to fill a buffer for [`CompletionPort::wait`].
pub fn empty_entry() -> OVERLAPPED_ENTRY {
    OVERLAPPED_ENTRY {
        lpCompletionKey: 0,
        lpOverlapped: std::ptr::null_mut(),
        Internal: 0,
        dwNumberOfBytesTransferred: 0,
    }
}
