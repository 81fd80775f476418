//! What `bench` reads about the server child and the machine on Windows: the twin of
//! `procfs.rs` (same functions, same units), through `iomodels_server::sys::process`
//! (`GetProcessTimes`, `GetProcessMemoryInfo`, the handle count,
//! `NtQuerySystemInformation(SystemProcessInformation)`, `GetSystemTimes`). What Windows — or
//! Wine — cannot give is `None`: `null` in the JSON, `-` in the table, and the report says why.
//!
//! The `procfs.rs` function, then what it reads here:
//! - [`cpu_seconds`] (utime + stime): kernel + user time (`GetProcessTimes`);
//! - [`context_switches`] (voluntary + involuntary, all threads): the threads'
//!   `ContextSwitches` summed (`SystemProcessInformation`); Wine 8 leaves them at 0: `None`;
//! - [`rss_bytes`] (`VmRSS`): the working set (`WorkingSetSize`);
//! - [`private_bytes`] (`None` on Linux): private bytes (`PrivateUsage`); Wine 8: 0, `None`;
//! - [`fd_count`] (entries of `/proc/PID/fd`): kernel handles (`GetProcessHandleCount`, or
//!   `SystemProcessInformation`'s under Wine);
//! - [`machine_busy_seconds`] (`/proc/stat`): kernel + user − idle (`GetSystemTimes`).

use iomodels_server::sys::process::{self, ProcessProbe};

/// A process's CPU time (kernel + user, all its threads) in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    ProcessProbe::open(pid).ok()?.cpu_seconds().ok()
}

/// Context switches of every live thread of a process (`None` under Wine, which does not
/// count them).
pub fn context_switches(pid: u32) -> Option<u64> {
    process::context_switches(pid)
}

/// The working set of a process (what RSS is on Linux), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    Some(ProcessProbe::open(pid).ok()?.memory().ok()?.0)
}

/// Private bytes of a process (committed memory it does not share), when known.
pub fn private_bytes(pid: u32) -> Option<u64> {
    ProcessProbe::open(pid).ok()?.memory().ok()?.1
}

/// Kernel handles a process holds (sockets, events, threads, files): what open descriptors
/// are on Linux.
pub fn fd_count(pid: u32) -> Option<u64> {
    ProcessProbe::open(pid).ok()?.handle_count()
}

/// Busy CPU time of the whole machine so far (all CPUs, everything but idle), in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    process::machine_busy_seconds().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(fd_count(me).unwrap() > 0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        let wine = iomodels_server::sys::wine_version().is_some();
        assert_eq!(context_switches(me).is_some(), !wine);
        assert_eq!(private_bytes(me).is_some(), !wine);
    }
}
