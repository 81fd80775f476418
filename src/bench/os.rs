//! What the bench needs from the OS: CPU pinning, a real-time class, and signals to its
//! servers (SIGUSR1 for counters, SIGTERM to stop). Linux only for now — the bench also reads
//! `/proc` — so elsewhere each call says so.

#[cfg(target_os = "linux")]
pub use iomodels_server::sys::{pin_current_thread, set_realtime, unpin_current_thread};

/// Asks a served child for its counters (it prints them as one JSON line).
#[cfg(target_os = "linux")]
pub fn request_stats(pid: u32) -> std::io::Result<()> {
    iomodels_server::sys::send_signal(pid, libc::SIGUSR1)
}

/// Asks a served child to stop gracefully.
#[cfg(target_os = "linux")]
pub fn request_stop(pid: u32) -> std::io::Result<()> {
    iomodels_server::sys::send_signal(pid, libc::SIGTERM)
}

/// Whether `bench` can run on this OS, or why not.
pub fn supported() -> anyhow::Result<()> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        anyhow::bail!(
            "bench runs on Linux only: it reads server CPU and context switches from /proc, \
             pins server and load to CPUs, and signals its servers (SIGUSR1, SIGTERM)"
        )
    }
}

#[cfg(not(target_os = "linux"))]
mod unsupported {
    use std::io;

    fn no() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "bench runs on Linux only")
    }
    pub fn pin_current_thread(_cpu: usize) -> io::Result<()> {
        Err(no())
    }
    pub fn unpin_current_thread(_cpus: usize) -> io::Result<()> {
        Err(no())
    }
    pub fn set_realtime() -> io::Result<()> {
        Err(no())
    }
    pub fn request_stats(_pid: u32) -> io::Result<()> {
        Err(no())
    }
    pub fn request_stop(_pid: u32) -> io::Result<()> {
        Err(no())
    }
}
#[cfg(not(target_os = "linux"))]
pub use unsupported::*;
