//! What the bench needs from the OS: CPU pinning, a raised scheduling class, and a way to ask
//! its servers for their counters and to stop. Linux and Windows; elsewhere each call says it
//! cannot.
//!
//! - server and load generator on two CPUs: Linux pins the spawning thread
//!   (`sched_setaffinity`, which the child inherits); Windows sets this process's affinity
//!   mask around the spawn (the child inherits it), then the child's own
//!   (`SetProcessAffinityMask`);
//! - `--realtime`: `SCHED_RR` (inherited by the child); Windows: `HIGH_PRIORITY_CLASS`, set on
//!   this process and on each child (a child starts at normal);
//! - the server's counters: SIGUSR1; Windows: the event `Local\iomodels-<pid>-stats`;
//! - stopping the server: SIGTERM; Windows: the event `Local\iomodels-<pid>-stop`.

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::process::Child;

    /// Pins the load generator (this thread, and what it starts afterwards) to `cpu`.
    pub fn pin_self(cpu: usize) -> io::Result<()> {
        iomodels_server::sys::pin_current_thread(cpu)
    }
    /// Lets this thread run on any of the `cpus` CPUs again.
    pub fn unpin_self(cpus: usize) -> io::Result<()> {
        iomodels_server::sys::unpin_current_thread(cpus)
    }
    /// SCHED_RR for this thread (inherited by the servers it starts).
    pub fn set_realtime() -> io::Result<()> {
        iomodels_server::sys::set_realtime()
    }
    /// Nothing to do: the child inherited the spawning thread's CPU and class.
    pub fn place_child(_child: &Child, _cpu: Option<usize>, _raise: bool) -> io::Result<()> {
        Ok(())
    }
    /// Asks a served child for its counters (it prints them as one JSON line): SIGUSR1.
    pub fn request_stats(pid: u32) -> io::Result<()> {
        iomodels_server::sys::send_signal(pid, libc::SIGUSR1)
    }
    /// Asks a served child to stop gracefully: SIGTERM.
    pub fn request_stop(pid: u32) -> io::Result<()> {
        iomodels_server::sys::send_signal(pid, libc::SIGTERM)
    }
}

#[cfg(windows)]
mod imp {
    use iomodels_server::sys::{process, send_control, Control};
    use std::io;
    use std::os::windows::io::AsHandle;
    use std::process::Child;

    /// Pins this process (every thread of the load generator, and the processes it starts
    /// afterwards) to `cpu`: Windows gives a new thread its process's mask.
    pub fn pin_self(cpu: usize) -> io::Result<()> {
        process::pin_current_process(cpu)
    }
    /// Lets this process run on any of the `cpus` CPUs again.
    pub fn unpin_self(cpus: usize) -> io::Result<()> {
        process::unpin_current_process(cpus)
    }
    /// `HIGH_PRIORITY_CLASS` for this process (not inherited: see [`place_child`]).
    pub fn set_realtime() -> io::Result<()> {
        process::raise_priority(None)
    }
    /// Pins the child to `cpu` (it inherited the mask already; this makes sure) and, with
    /// `raise`, gives it `HIGH_PRIORITY_CLASS` (a child of a high-priority process starts at
    /// normal).
    pub fn place_child(child: &Child, cpu: Option<usize>, raise: bool) -> io::Result<()> {
        if let Some(cpu) = cpu {
            process::pin_process(child.as_handle(), cpu)?;
        }
        if raise {
            process::raise_priority(Some(child.as_handle()))?;
        }
        Ok(())
    }
    /// Asks a served child for its counters: sets `Local\iomodels-<pid>-stats`.
    pub fn request_stats(pid: u32) -> io::Result<()> {
        send_control(pid, Control::Stats)
    }
    /// Asks a served child to stop gracefully: sets `Local\iomodels-<pid>-stop`.
    pub fn request_stop(pid: u32) -> io::Result<()> {
        send_control(pid, Control::Stop)
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod imp {
    use std::io;
    use std::process::Child;

    fn no() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "bench runs on Linux and Windows only",
        )
    }
    pub fn pin_self(_cpu: usize) -> io::Result<()> {
        Err(no())
    }
    pub fn unpin_self(_cpus: usize) -> io::Result<()> {
        Err(no())
    }
    pub fn set_realtime() -> io::Result<()> {
        Err(no())
    }
    pub fn place_child(_child: &Child, _cpu: Option<usize>, _raise: bool) -> io::Result<()> {
        Err(no())
    }
    pub fn request_stats(_pid: u32) -> io::Result<()> {
        Err(no())
    }
    pub fn request_stop(_pid: u32) -> io::Result<()> {
        Err(no())
    }
}

pub use imp::*;

/// Whether `bench` can run on this OS, or why not.
pub fn supported() -> anyhow::Result<()> {
    if cfg!(any(target_os = "linux", windows)) {
        Ok(())
    } else {
        anyhow::bail!(
            "bench runs on Linux and Windows only: it reads the server's CPU time and memory \
             from the OS (/proc; the Win32 process API), pins server and load to CPUs, and asks \
             its servers for counters (SIGUSR1; a named event)"
        )
    }
}
