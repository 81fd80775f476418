//! Asynchronous procedure calls: how work reaches a thread that waits alertably.
//!
//! A completion routine is one kind of APC (the system queues it for the thread that posted
//! the operation); [`queue_apc`] queues another kind, a function of our own, to a given
//! thread. Both run only while that thread is in an alertable wait ([`sleep_alertable`], or
//! [`wait_any`](super::wait_any) with `alertable`), one after the other, on that thread.

use super::event::Handle;
use std::io;
use std::time::Duration;
use windows_sys::Win32::Foundation::WAIT_IO_COMPLETION;
use windows_sys::Win32::System::Threading::{
    GetCurrentThreadId, OpenThread, QueueUserAPC, SleepEx, THREAD_SET_CONTEXT,
};

/// A handle to the calling thread that other threads may queue APCs to.
pub fn current_thread() -> io::Result<Handle> {
    // SAFETY: opens the calling thread by id with the one right QueueUserAPC needs.
    let raw = unsafe { OpenThread(THREAD_SET_CONTEXT, 0, GetCurrentThreadId()) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new handle that only the returned value closes.
    Ok(unsafe { Handle::from_raw(raw) })
}

/// Queues `f(data)` to run on `thread` in its next alertable wait.
///
/// # Safety
/// `f` must be sound to call with `data` on that thread, at any later alertable wait of it;
/// if the thread exits first, `f` never runs (whatever `data` owns is then leaked).
pub unsafe fn queue_apc(
    thread: &Handle,
    f: unsafe extern "system" fn(usize),
    data: usize,
) -> io::Result<()> {
    // SAFETY: `thread` is a live thread handle with THREAD_SET_CONTEXT; the caller vouches
    // for `f` and `data`.
    if unsafe { QueueUserAPC(Some(f), thread.raw(), data) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SleepEx(timeout, TRUE)`: sleeps until the timeout passes (`None`: forever) or completion
/// routines / APCs ran on this thread; true in the second case. `Some(ZERO)` only runs what
/// is already queued.
pub fn sleep_alertable(timeout: Option<Duration>) -> bool {
    let ms = timeout.map_or(u32::MAX, |t| {
        t.as_millis().min(u128::from(u32::MAX - 1)) as u32
    });
    // SAFETY: no pointers; runs this thread's queued APCs, which their queuers vouched for.
    unsafe { SleepEx(ms, 1) == WAIT_IO_COMPLETION }
}
