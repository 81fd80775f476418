//! CPU time of the load generator itself, from `getrusage`.

use std::time::Duration;

/// Which CPU clock to read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who {
    /// The calling thread only (Linux `RUSAGE_THREAD`); `None` where unsupported.
    Thread,
    /// The whole process (`RUSAGE_SELF`).
    Process,
}

/// User + system CPU time consumed so far by `who`, or `None` if the platform cannot say.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn cpu_time(who: Who) -> Option<Duration> {
    let flag = match who {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Who::Thread => libc::RUSAGE_THREAD,
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Who::Thread => return None,
        Who::Process => libc::RUSAGE_SELF,
    };
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory large enough for a `libc::rusage`, which
    // getrusage fills in completely on success; we only read it after checking for success.
    let usage = unsafe {
        if libc::getrusage(flag, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// User + system CPU time consumed so far by `who`, or `None` if the platform cannot say.
#[cfg(not(unix))]
pub(crate) fn cpu_time(_who: Who) -> Option<Duration> {
    None
}
