//! Another process seen from outside, for `iomodels bench` on Windows: what the Linux bench
//! reads from `/proc` (`src/bench/procfs.rs`), through the Win32 process API, and the
//! placement it gives its served child (processor affinity, priority class).
//!
//! What stands for what (Linux, then Windows):
//! - `utime + stime` of `/proc/PID/stat`: `GetProcessTimes`, kernel + user time;
//! - the voluntary + involuntary `ctxt_switches` of every task: the threads' `ContextSwitches`
//!   summed, from `NtQuerySystemInformation(SystemProcessInformation)`;
//! - `VmRSS`: `GetProcessMemoryInfo`'s `WorkingSetSize`; and, Windows only, `PrivateUsage`
//!   (private bytes);
//! - the entries of `/proc/PID/fd`: `GetProcessHandleCount` (every kernel handle, not only
//!   sockets), or under Wine `SystemProcessInformation`'s `HandleCount`;
//! - the busy jiffies of `/proc/stat`: `GetSystemTimes`, kernel + user − idle;
//! - `sched_setaffinity` (inherited by a child): `SetProcessAffinityMask` (a child inherits
//!   its parent's process mask);
//! - `SCHED_RR`: `HIGH_PRIORITY_CLASS` (`REALTIME_PRIORITY_CLASS` would starve the system's
//!   own threads, and needs the increase-priority privilege).
//!
//! Pitfalls: `NtQuerySystemInformation` is ntdll's, not a documented Win32 call (it is what
//! Task Manager and `Get-Process` use); it is looked up at run time, and a total of 0 switches
//! — what Wine 8 reports, it leaves the field at 0 — reads as "not known", not as none.
//! Wine 8 also leaves `PrivateUsage` at 0 and `GetProcessHandleCount` at 0 (a stub that
//! succeeds); the handle count is then taken from `SystemProcessInformation`, which Wine fills
//! from wineserver's handle table.

use super::event::Handle;
use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle};
use windows_sys::Win32::Foundation::{FILETIME, HANDLE};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::ProcessStatus::{
    K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS, PROCESS_MEMORY_COUNTERS_EX,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetPriorityClass, GetProcessAffinityMask, GetProcessHandleCount,
    GetProcessTimes, GetSystemTimes, OpenProcess, SetPriorityClass, SetProcessAffinityMask,
    HIGH_PRIORITY_CLASS, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_VM_READ,
};

/// A FILETIME span (100 ns units) in seconds.
fn seconds(t: FILETIME) -> f64 {
    ((u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime)) as f64 / 1e7
}

/// A process opened for reading its times, memory and handle count.
#[derive(Debug)]
pub struct ProcessProbe {
    handle: Handle,
    pid: u32,
}

impl ProcessProbe {
    /// Opens process `pid` (`PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_VM_READ`).
    pub fn open(pid: u32) -> io::Result<ProcessProbe> {
        // SAFETY: no pointers; returns a new handle or null.
        let raw =
            unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_VM_READ, 0, pid) };
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(ProcessProbe {
            // SAFETY: a fresh handle that only this value closes.
            handle: unsafe { Handle::from_raw(raw) },
            pid,
        })
    }

    /// Kernel + user CPU time of every thread of the process so far, in seconds.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        // SAFETY: a live process handle; four live FILETIMEs for the call to fill.
        let ok = unsafe {
            GetProcessTimes(
                self.handle.raw(),
                &mut created,
                &mut exited,
                &mut kernel,
                &mut user,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seconds(kernel) + seconds(user))
    }

    /// The working set (resident bytes, what RSS is on Linux) and the private bytes (committed
    /// memory no other process shares; `None` when reported as 0, as Wine 8 does).
    pub fn memory(&self) -> io::Result<(u64, Option<u64>)> {
        // SAFETY: plain data that the call fills in.
        let mut c: PROCESS_MEMORY_COUNTERS_EX = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<PROCESS_MEMORY_COUNTERS_EX>() as u32;
        c.cb = size;
        // SAFETY: a live process handle; `c` is a live PROCESS_MEMORY_COUNTERS_EX of `size`
        // bytes, which the call accepts in place of the shorter PROCESS_MEMORY_COUNTERS.
        let ok = unsafe {
            K32GetProcessMemoryInfo(
                self.handle.raw(),
                (&mut c as *mut PROCESS_MEMORY_COUNTERS_EX).cast::<PROCESS_MEMORY_COUNTERS>(),
                size,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        let private = c.PrivateUsage as u64;
        Ok((c.WorkingSetSize as u64, (private > 0).then_some(private)))
    }

    /// Kernel handles the process holds open (sockets, events, threads, files, ...):
    /// `GetProcessHandleCount`, or when that says 0 (Wine 8's stub does) the `HandleCount` of
    /// `NtQuerySystemInformation(SystemProcessInformation)`; `None` when both say 0.
    pub fn handle_count(&self) -> Option<u64> {
        let mut n = 0u32;
        // SAFETY: a live process handle; `n` is a live u32 for the call to fill.
        if unsafe { GetProcessHandleCount(self.handle.raw(), &mut n) } == 0 || n == 0 {
            n = process_entry(self.pid)?.handles;
        }
        (n > 0).then_some(u64::from(n))
    }

    /// Context switches of every live thread of the process (see [`context_switches`]).
    pub fn context_switches(&self) -> Option<u64> {
        context_switches(self.pid)
    }
}

/// `SYSTEM_PROCESS_INFORMATION` (winternl.h, 64-bit), as far as this module reads it; the
/// threads' entries follow it.
#[repr(C)]
#[derive(Clone, Copy)]
struct SystemProcessInformation {
    next_entry_offset: u32,
    number_of_threads: u32,
    working_set_private_size: i64,
    hard_fault_count: u32,
    number_of_threads_high_watermark: u32,
    cycle_time: u64,
    create_time: i64,
    user_time: i64,
    kernel_time: i64,
    image_name: [usize; 2], // UNICODE_STRING: two lengths (u16), padding, a pointer
    base_priority: i32,
    unique_process_id: usize,
    inherited_from_unique_process_id: usize,
    handle_count: u32,
    session_id: u32,
    unique_process_key: usize,
    vm_counters: [usize; 12], // VM_COUNTERS_EX
    io_counters: [u64; 6],
}

/// `SYSTEM_THREAD_INFORMATION` (64-bit).
#[repr(C)]
#[derive(Clone, Copy)]
struct SystemThreadInformation {
    kernel_time: i64,
    user_time: i64,
    create_time: i64,
    wait_time: u32,
    start_address: usize,
    client_id: [usize; 2],
    priority: i32,
    base_priority: i32,
    context_switches: u32,
    thread_state: u32,
    wait_reason: u32,
}

/// `SystemProcessInformation`, the class of `NtQuerySystemInformation` that lists processes.
const SYSTEM_PROCESS_INFORMATION: u32 = 5;
/// `STATUS_INFO_LENGTH_MISMATCH`: the buffer was too small.
const STATUS_INFO_LENGTH_MISMATCH: i32 = 0xC000_0004_u32 as i32;

type NtQuerySystemInformation = unsafe extern "system" fn(u32, *mut u8, u32, *mut u32) -> i32;

/// What `NtQuerySystemInformation(SystemProcessInformation)` says of one process.
struct Entry {
    /// `HandleCount`.
    handles: u32,
    /// The sum of its threads' `ContextSwitches`.
    switches: u64,
}

/// Context switches of every live thread of process `pid`: the sum of the threads'
/// `ContextSwitches` in `NtQuerySystemInformation(SystemProcessInformation)` — Windows has no
/// per-process counter. `None` when the call or the process is missing, or when the sum is 0
/// (Wine leaves the field at 0: a process that ran has switched).
pub fn context_switches(pid: u32) -> Option<u64> {
    process_entry(pid).map(|e| e.switches).filter(|&n| n > 0)
}

/// Process `pid`'s entry in `NtQuerySystemInformation(SystemProcessInformation)`.
fn process_entry(pid: u32) -> Option<Entry> {
    // SAFETY: NUL-terminated names; ntdll.dll is loaded in every process and never unloaded.
    let f = unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        if ntdll.is_null() {
            return None;
        }
        GetProcAddress(ntdll, c"NtQuerySystemInformation".as_ptr().cast())?
    };
    // SAFETY: ntdll's NtQuerySystemInformation has this signature (class, buffer, length,
    // returned length).
    let query: NtQuerySystemInformation = unsafe { std::mem::transmute(f) };
    let mut buf: Vec<u64> = vec![0; 64 * 1024]; // 512 KiB, 8-byte aligned; grown if short
    let bytes = loop {
        let len = u32::try_from(buf.len() * 8).ok()?;
        let mut needed = 0u32;
        // SAFETY: `buf` is a live, writable buffer of `len` bytes; `needed` a live u32.
        let status = unsafe {
            query(
                SYSTEM_PROCESS_INFORMATION,
                buf.as_mut_ptr().cast(),
                len,
                &mut needed,
            )
        };
        if status == STATUS_INFO_LENGTH_MISMATCH && buf.len() < 64 * 1024 * 1024 {
            let want = (needed as usize).max(buf.len() * 16).div_ceil(8);
            buf.resize(want, 0);
            continue;
        }
        if status < 0 {
            return None;
        }
        break (len as usize).min(if needed == 0 {
            len as usize
        } else {
            needed as usize
        });
    };
    let base: *const u8 = buf.as_ptr().cast();
    let proc_size = std::mem::size_of::<SystemProcessInformation>();
    let thread_size = std::mem::size_of::<SystemThreadInformation>();
    let mut at = 0usize;
    loop {
        if at + proc_size > bytes {
            return None;
        }
        // SAFETY: `at + proc_size <= bytes`, inside `buf`; unaligned reads of plain data.
        let p: SystemProcessInformation = unsafe { std::ptr::read_unaligned(base.add(at).cast()) };
        if p.unique_process_id == pid as usize {
            let threads = p.number_of_threads as usize;
            let first = at + proc_size;
            if first + threads * thread_size > bytes {
                return None;
            }
            let total: u64 = (0..threads)
                .map(|i| {
                    // SAFETY: checked above: every thread entry lies inside `buf`.
                    let t: SystemThreadInformation = unsafe {
                        std::ptr::read_unaligned(base.add(first + i * thread_size).cast())
                    };
                    u64::from(t.context_switches)
                })
                .sum();
            return Some(Entry {
                handles: p.handle_count,
                switches: total,
            });
        }
        if p.next_entry_offset == 0 {
            return None;
        }
        at += p.next_entry_offset as usize;
    }
}

/// Busy CPU time of the whole machine so far (all CPUs, everything but idle), in seconds
/// (`GetSystemTimes`: its kernel time includes the idle time).
pub fn machine_busy_seconds() -> io::Result<f64> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut idle, mut kernel, mut user) = (zero, zero, zero);
    // SAFETY: three live FILETIMEs for the call to fill.
    if unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((seconds(kernel) + seconds(user) - seconds(idle)).max(0.0))
}

/// A processor mask of the CPUs in `cpus` (those past 63 cannot be named in one group).
fn mask(cpus: impl IntoIterator<Item = usize>) -> io::Result<usize> {
    let mut m = 0usize;
    for cpu in cpus {
        if cpu >= usize::BITS as usize {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        m |= 1 << cpu;
    }
    Ok(m)
}

fn set_affinity(process: HANDLE, mask: usize) -> io::Result<()> {
    // SAFETY: a live process handle (the pseudo-handle of this process, or a borrowed one).
    if unsafe { SetProcessAffinityMask(process, mask) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins this whole process (every thread, and the processes it starts afterwards, which
/// inherit the mask) to one CPU: how `bench` places its load generator. (Windows gives a new
/// thread its process's mask, not its creator's: a thread's pin would not reach the load
/// generator's threads, as `sched_setaffinity` does on Linux.)
pub fn pin_current_process(cpu: usize) -> io::Result<()> {
    // SAFETY: GetCurrentProcess returns a pseudo-handle; no arguments.
    set_affinity(unsafe { GetCurrentProcess() }, mask([cpu])?)
}

/// Lets this process run on its first `cpus` CPUs again.
pub fn unpin_current_process(cpus: usize) -> io::Result<()> {
    // SAFETY: as in `pin_current_process`.
    set_affinity(unsafe { GetCurrentProcess() }, mask(0..cpus.min(64))?)
}

/// Pins `process` (a child this process started, with the rights `CreateProcess` gives) to
/// one CPU.
pub fn pin_process(process: BorrowedHandle<'_>, cpu: usize) -> io::Result<()> {
    set_affinity(process.as_raw_handle(), mask([cpu])?)
}

/// The processor mask `process` runs on.
pub fn process_affinity(process: BorrowedHandle<'_>) -> io::Result<usize> {
    let (mut mine, mut system) = (0usize, 0usize);
    // SAFETY: a live process handle; two live usizes for the call to fill.
    if unsafe { GetProcessAffinityMask(process.as_raw_handle(), &mut mine, &mut system) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mine)
}

/// Raises `process` to `HIGH_PRIORITY_CLASS` (`None`: this process): the Windows stand-in for
/// the Linux bench's `SCHED_RR`. Not `REALTIME_PRIORITY_CLASS`, which preempts the system's
/// own threads (input, disk flushing) and, without the increase-priority privilege, is
/// silently lowered to high anyway.
pub fn raise_priority(process: Option<BorrowedHandle<'_>>) -> io::Result<()> {
    // SAFETY: GetCurrentProcess returns a pseudo-handle; no arguments.
    let h = process.map_or_else(|| unsafe { GetCurrentProcess() }, |p| p.as_raw_handle());
    // SAFETY: a live process handle.
    if unsafe { SetPriorityClass(h, HIGH_PRIORITY_CLASS) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `process` runs in `HIGH_PRIORITY_CLASS`.
pub fn is_high_priority(process: BorrowedHandle<'_>) -> bool {
    // SAFETY: a live process handle.
    unsafe { GetPriorityClass(process.as_raw_handle()) == HIGH_PRIORITY_CLASS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layouts_are_the_64_bit_ones() {
        assert_eq!(std::mem::size_of::<SystemProcessInformation>(), 256);
        assert_eq!(std::mem::size_of::<SystemThreadInformation>(), 80);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcessProbe::open(std::process::id()).unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(me.cpu_seconds().unwrap() > 0.0);
        let (ws, private) = me.memory().unwrap();
        assert!(ws > 1024 * 1024, "{ws}");
        let wine = super::super::wine_version().is_some();
        // Windows counts private bytes and switches; Wine leaves both at 0 (read as unknown).
        assert_eq!(private.is_some(), !wine, "{private:?}");
        assert_eq!(me.context_switches().is_some(), !wine);
        assert!(me.handle_count().unwrap() > 0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(ProcessProbe::open(u32::MAX - 3).is_err());
    }
}
