//! Console control events (Ctrl-C, Ctrl-Break, the console closing): Windows' counterpart of
//! SIGINT/SIGTERM/SIGUSR1 for a console program, through `SetConsoleCtrlHandler`.
//!
//! (The C runtime's `signal(SIGINT)` emulation is not used: under Wine 8 its dispatch jumps to
//! a bad address when the event arrives.)

use std::io;
use std::sync::OnceLock;
use windows_sys::Win32::Foundation::BOOL;
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_SHUTDOWN_EVENT,
};

/// A console control event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlEvent {
    /// Ctrl-C (what SIGINT is on Unix; Wine also turns a SIGINT to the process into it).
    CtrlC,
    /// Ctrl-Break.
    Break,
    /// The console is closing, or the system is shutting down.
    Close,
}

type Callback = Box<dyn Fn(CtrlEvent) + Send + Sync>;

static CALLBACK: OnceLock<Callback> = OnceLock::new();

/// Runs `f` (on a thread Windows creates for it) for every console control event, instead of
/// the default (ending the process). Only the first call installs a handler.
pub fn on_console_ctrl(f: impl Fn(CtrlEvent) + Send + Sync + 'static) -> io::Result<()> {
    if CALLBACK.set(Box::new(f)).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a console control handler is already installed",
        ));
    }
    // SAFETY: `handler` is an `extern "system"` function with the PHANDLER_ROUTINE signature
    // that lives for the whole program; it only reads CALLBACK, which is set before this call.
    if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

extern "system" fn handler(event: u32) -> BOOL {
    let event = match event {
        CTRL_C_EVENT => CtrlEvent::CtrlC,
        CTRL_BREAK_EVENT => CtrlEvent::Break,
        CTRL_CLOSE_EVENT | CTRL_SHUTDOWN_EVENT => CtrlEvent::Close,
        _ => return 0, // not ours: let the next handler (the default) see it
    };
    match CALLBACK.get() {
        Some(f) => {
            f(event);
            1
        }
        None => 0,
    }
}
