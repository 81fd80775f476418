//! Linux implementations of the `sys` contract.

/// Calls a libc function (visible to the modules below by textual scope) and turns a `-1` result into `Err(io::Error::last_os_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site documents why its arguments are valid for `$fn`.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub(super) mod datagram;
pub use datagram::PacketInfo;
pub mod epoll;
mod poll;
pub mod select;
pub mod signalfd;
pub mod uring;
mod waker;

pub use poll::wait_readable;
pub use waker::Waker;

/// Sets SO_REUSEPORT, so several listeners can share a port and the kernel spreads incoming
/// connections over them.
pub fn set_reuse_port(socket: &socket2::Socket) -> std::io::Result<()> {
    socket.set_reuse_port(true)
}

/// Restores `SIGPIPE`'s default action (Rust's runtime ignores it before `main`), so a
/// process whose stdout reader has gone (`iomodels models | head -1`) ends quietly, as any Unix
/// tool does, instead of failing the next `print!` with a panic. Only for the commands that
/// report on stdout: `serve` keeps ignoring it (a closed stdout costs it a line, never the
/// server), and sockets are unaffected either way (std's and io_uring's sends carry
/// `MSG_NOSIGNAL`).
pub fn default_sigpipe() {
    // SAFETY: signal() with SIG_DFL installs no handler; it only changes the disposition,
    // which no other code of this process relies on outside `serve`.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Gives the memory the allocator holds free back to the OS (glibc's `malloc_trim(0)`, which
/// also releases free pages inside its heaps, not only at their tops). A thread per client
/// leaves freed memory scattered over glibc's per-thread arenas and its main heap: 20,000
/// connect/close cycles grew the server's RSS by 6–14 MiB, all of it free (one `malloc_trim`
/// gave it back), not a leak. Other C libraries: nothing to do here.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state, under its
    // locks; it may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `SO_OOBINLINE` on an accepted socket: nothing to do on Linux, which copies it from the
/// listener ([`crate::listen`] sets it) to every socket accepted on it — ordinary descriptors
/// and io_uring direct descriptors alike, which have no descriptor to call `setsockopt` on
/// (checked by `accepted_sockets_inherit_oobinline_from_the_listener`).
pub fn set_oob_inline_accepted(_stream: &std::net::TcpStream) {}

/// The Wine version this process runs under: never on Linux (`None`). The Windows twin tells
/// a Wine limit from a failure in the tests shared by both OSes.
pub fn wine_version() -> Option<String> {
    None
}

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit, so a server
/// can hold as many connections as the system lets this process have. Returns the new limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (syscall!): getrlimit writes into a live rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY (syscall!): setrlimit reads a live rlimit.
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    }
    Ok(lim.rlim_cur)
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`) now, if it can be read: where the
/// default connection cap comes from.
pub fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY (syscall!): getrlimit writes into a live rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)).ok()?;
    Some(lim.rlim_cur)
}

/// Pins the calling thread to one CPU. Processes and threads it starts afterwards inherit the
/// pin, which is how `bench` places the server on one CPU and the load generator on another.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is a plain bitmap; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu < CPU_SETSIZE, so the bit is inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY (syscall!): pid 0 is the calling thread; `set` is a live cpu_set_t of the size we
    // pass.
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))
    .map(drop)
}

/// Lets the calling thread (and what it starts afterwards) run anywhere again.
pub fn unpin_current_thread(cpus: usize) -> std::io::Result<()> {
    // SAFETY: as in `pin_current_thread`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..cpus.min(libc::CPU_SETSIZE as usize) {
        // SAFETY: cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY (syscall!): as in `pin_current_thread`.
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))
    .map(drop)
}

/// Puts the calling thread (and what it starts afterwards) in the SCHED_RR real-time class at
/// a middle priority, so other processes cannot preempt a benchmark. Needs root
/// (CAP_SYS_NICE).
pub fn set_realtime() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY (syscall!): pid 0 is the calling thread; `param` is a live sched_param.
    syscall!(sched_setscheduler(0, libc::SCHED_RR, &param)).map(drop)
}

/// Sends signal `sig` to process `pid` (e.g. SIGUSR1 to a served child, for its counters).
pub fn send_signal(pid: u32, sig: i32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY (syscall!): kill takes a pid and a signal number, no pointers.
    syscall!(kill(pid, sig)).map(drop)
}

/// An accept error that concerns one would-be connection (aborted before it was accepted, a
/// firewall's EPERM, a signal), not the listener: accept the next one.
pub fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR)
    ) || e.kind() == std::io::ErrorKind::Interrupted
}

/// An accept error that means the process or system is out of descriptors or memory: pause
/// accepting for a while instead of spinning on a listener that stays readable.
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepted_sockets_inherit_oobinline_from_the_listener() {
        let listener = crate::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(socket2::SockRef::from(&listener)
            .out_of_band_inline()
            .unwrap());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(socket2::SockRef::from(&accepted)
            .out_of_band_inline()
            .unwrap());
        // And a listener without it gives sockets without it: the copy is what we rely on.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        let (a, _) = plain.accept().unwrap();
        assert!(!socket2::SockRef::from(&a).out_of_band_inline().unwrap());
    }
}
