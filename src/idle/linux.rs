//! Linux: a shard dies with its parent (`PR_SET_PDEATHSIG`), besides exiting when its stdin
//! ends.
//!
//! Pitfall: the death signal follows the parent *thread* that forked the child, not the
//! process; [`super::hold`] starts its shards and waits for them on the same thread, so that
//! thread outlives them.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Has the kernel send SIGKILL to the child started by `cmd` when this thread dies; the child
/// refuses to start if its parent is already gone by then (it was reparented).
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure calls only prctl and getppid, which are
    // async-signal-safe, allocate nothing and touch no memory of the parent but the copied
    // pid.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                // ESRCH: the parent is gone (no allocation here, after fork).
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
