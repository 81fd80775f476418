//! CPU time of the load generator itself: `getrusage` on Unix (`RUSAGE_THREAD` on Linux),
//! `GetThreadTimes` / `GetProcessTimes` (kernel + user) on Windows.

use std::time::Duration;

/// Which CPU clock to read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who {
    /// The calling thread only (Linux `RUSAGE_THREAD`, Windows `GetThreadTimes`); `None`
    /// where unsupported.
    Thread,
    /// The whole process (`RUSAGE_SELF`, Windows `GetProcessTimes`).
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

/// User + kernel CPU time consumed so far by `who`, or `None` if Windows cannot say.
/// (Under Wine both come from the Linux thread's and process's own times.)
#[cfg(windows)]
#[allow(unsafe_code)]
pub(crate) fn cpu_time(who: Who) -> Option<Duration> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetCurrentThread, GetProcessTimes, GetThreadTimes,
    };
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the pseudo-handles of the current thread and process need no closing and are
    // valid in the calling thread; the four pointers are to live, writable FILETIMEs.
    let ok = unsafe {
        match who {
            Who::Thread => GetThreadTimes(
                GetCurrentThread(),
                &mut created,
                &mut exited,
                &mut kernel,
                &mut user,
            ),
            Who::Process => GetProcessTimes(
                GetCurrentProcess(),
                &mut created,
                &mut exited,
                &mut kernel,
                &mut user,
            ),
        }
    };
    if ok == 0 {
        return None;
    }
    // FILETIME durations count 100 ns units.
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Some(Duration::from_nanos(
        (ticks(kernel) + ticks(user)).saturating_mul(100),
    ))
}

/// User + system CPU time consumed so far by `who`, or `None` if the platform cannot say.
#[cfg(not(any(unix, windows)))]
pub(crate) fn cpu_time(_who: Who) -> Option<Duration> {
    None
}
