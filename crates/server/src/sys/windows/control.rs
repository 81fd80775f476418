//! `iomodels serve`'s control events: how another process asks a running server on Windows
//! for its counters or to stop, where Linux sends SIGUSR1 and SIGTERM (`iomodels bench` does
//! this to the servers it starts).
//!
//! The server creates two auto-reset named events, `Local\iomodels-<pid>-stats` and
//! `Local\iomodels-<pid>-stop` (`<pid>` its process id; `Local\`: the caller's session), and a
//! thread of its own waits on both: setting `-stats` prints the counters JSON line, setting
//! `-stop` stops it as Ctrl-C does (a second time: at once). Any program of the same user can
//! set them; from PowerShell:
//! `[Threading.EventWaitHandle]::OpenExisting("Local\iomodels-1234-stop").Set()`.
//!
//! Why not console control events: `GenerateConsoleCtrlEvent` sends Ctrl-C to every process
//! attached to the console (it cannot be aimed at one process group), and Ctrl-Break to one
//! group only when the child was started with `CREATE_NEW_PROCESS_GROUP` (which also turns
//! Ctrl-C off in it); both need the two processes to share a console. A named event reaches
//! exactly one process, console or not, and Wine implements named events as Windows does.

use std::io;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{
    CreateEventW, OpenEventW, SetEvent, WaitForMultipleObjects, EVENT_MODIFY_STATE, INFINITE,
};

/// What a control event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Print the counters (SIGUSR1 on Linux).
    Stats,
    /// Stop gracefully (SIGTERM on Linux).
    Stop,
}

impl Control {
    fn suffix(self) -> &'static str {
        match self {
            Control::Stats => "stats",
            Control::Stop => "stop",
        }
    }
}

/// The event name for `what` of process `pid`, e.g. `Local\iomodels-1234-stop`.
pub fn control_event_name(pid: u32, what: Control) -> String {
    format!("Local\\iomodels-{pid}-{}", what.suffix())
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// An owned event handle, closed on drop.
struct Owned(HANDLE);

// SAFETY: kernel handles are process-wide and usable from any thread.
unsafe impl Send for Owned {}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we own the handle and nothing uses it after drop.
        unsafe { CloseHandle(self.0) };
    }
}

/// This process's two control events, created and waited on by the server.
pub struct ControlEvents {
    events: [Owned; 2],
}

impl ControlEvents {
    /// Creates `Local\iomodels-<this pid>-stats` and `-stop` (auto-reset, not signalled).
    pub fn create() -> io::Result<ControlEvents> {
        let pid = std::process::id();
        let make = |what| {
            let name = wide(&control_event_name(pid, what));
            // SAFETY: default security, auto-reset, not signalled; `name` is NUL-terminated
            // UTF-16 that lives for the call.
            let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
            if h.is_null() {
                Err(io::Error::last_os_error())
            } else {
                Ok(Owned(h))
            }
        };
        Ok(ControlEvents {
            events: [make(Control::Stats)?, make(Control::Stop)?],
        })
    }

    /// Blocks until one of the events is set; says which.
    pub fn wait(&self) -> io::Result<Control> {
        let handles = [self.events[0].0, self.events[1].0];
        // SAFETY: two live event handles owned by `self`, which outlives the call.
        let rc = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, INFINITE) };
        match rc.wrapping_sub(WAIT_OBJECT_0) {
            0 => Ok(Control::Stats),
            1 => Ok(Control::Stop),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// Sets process `pid`'s control event for `what` (see the module doc). Fails with
/// `NotFound` when no such server runs (or it has not created its events yet).
pub fn send_control(pid: u32, what: Control) -> io::Result<()> {
    let name = wide(&control_event_name(pid, what));
    // SAFETY: `name` is NUL-terminated UTF-16 that lives for the call.
    let h = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    let h = Owned(h);
    // SAFETY: a live event handle opened with EVENT_MODIFY_STATE.
    if unsafe { SetEvent(h.0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_event_wakes_the_waiter_with_its_kind() {
        assert_eq!(
            control_event_name(42, Control::Stop),
            "Local\\iomodels-42-stop"
        );
        let events = ControlEvents::create().unwrap();
        let me = std::process::id();
        send_control(me, Control::Stats).unwrap();
        assert_eq!(events.wait().unwrap(), Control::Stats);
        send_control(me, Control::Stop).unwrap();
        assert_eq!(events.wait().unwrap(), Control::Stop);
        // Auto-reset: both are clear again; a pid with no server has no events.
        assert!(send_control(u32::MAX - 3, Control::Stop).is_err());
    }
}
