//! Signal-driven I/O: [`SignalQueue`] (signals blocked in the calling thread and read as
//! messages from a `signalfd`), and the `fcntl` calls that make a socket announce its events
//! with a real-time signal sent to one thread ([`notify_thread`], [`stop_notifying`]).

use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

// Not in the `libc` crate for glibc targets; the values are the kernel's (asm-generic/fcntl.h),
// the same on every Linux architecture.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` of `fcntl(F_SETOWN_EX)`.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// One message read from a [`SignalQueue`].
pub type SigInfo = libc::signalfd_siginfo;

/// The real-time signal sockets announce their events with: the first one from `SIGRTMIN + 2`
/// (glibc keeps the two below `SIGRTMIN` for itself; the first two above are left to programs
/// that assume them) whose disposition is still the default, i.e. that nothing in this process
/// handles. Chosen once per process; every server thread uses the same one.
pub fn notification_signal() -> io::Result<libc::c_int> {
    static SIGNAL: OnceLock<Option<libc::c_int>> = OnceLock::new();
    let sig = SIGNAL.get_or_init(|| {
        (libc::SIGRTMIN() + 2..=libc::SIGRTMAX()).find(|&sig| {
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: a null new action only queries; `old` is a live sigaction to write to.
            let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
            // SAFETY: sigaction succeeded, so it filled `old` (zeroed before anyway).
            rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_DFL
        })
    });
    sig.ok_or_else(|| io::Error::other("no real-time signal is free in this process"))
}

/// Signals blocked in the calling thread and read from a `signalfd` instead of being
/// delivered. Dropping it reads (and discards) whatever is still pending, closes the signalfd
/// and restores the thread's previous signal mask, so a signal queued earlier cannot reach the
/// thread's default action (termination) afterwards. Stop every source of the signals
/// ([`stop_notifying`]) before dropping it.
///
/// Tied to the thread that created it (not `Send`): a signal mask belongs to a thread, and a
/// signalfd reads the pending signals of the thread that reads it.
pub struct SignalQueue {
    fd: OwnedFd,
    old_mask: libc::sigset_t,
    _not_send: PhantomData<*const ()>,
}

impl SignalQueue {
    /// Blocks `signals` in the calling thread and opens a non-blocking signalfd for them.
    pub fn new(signals: &[libc::c_int]) -> io::Result<SignalQueue> {
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY (syscall!): sigemptyset initializes the live sigset_t.
        syscall!(sigemptyset(set.as_mut_ptr()))?;
        for &sig in signals {
            // SAFETY (syscall!): adds a signal number to the initialized set.
            syscall!(sigaddset(set.as_mut_ptr(), sig))?;
        }
        // SAFETY: initialized by sigemptyset above.
        let set = unsafe { set.assume_init() };
        let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY: both pointers are to live sigset_t; pthread_sigmask returns an error number
        // instead of setting errno.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded and wrote the previous mask.
        let old_mask = unsafe { old.assume_init() };
        // SAFETY (syscall!): -1 creates a new signalfd for the live, initialized set.
        let fd = match syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: restores the mask just saved; a null old-mask pointer is allowed.
                unsafe {
                    libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut())
                };
                return Err(e);
            }
        };
        // SAFETY: signalfd just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalQueue {
            fd,
            old_mask,
            _not_send: PhantomData,
        })
    }

    /// Reads as many queued signals as fit in `buf`; returns how many (0: none pending).
    pub fn read(&self, buf: &mut [SigInfo]) -> io::Result<usize> {
        // SAFETY (syscall!): the buffer is live, writable and `size_of_val(buf)` bytes long;
        // signalfd writes whole signalfd_siginfo records, any bit pattern of which is valid.
        match syscall!(read(
            self.fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(buf)
        )) {
            Ok(n) => Ok(n as usize / size_of::<SigInfo>()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// An empty message buffer for [`SignalQueue::read`].
    pub fn buffer(len: usize) -> Vec<SigInfo> {
        // SAFETY: signalfd_siginfo is plain integers and padding; all-zero is a valid value.
        vec![unsafe { std::mem::zeroed::<SigInfo>() }; len]
    }
}

impl AsRawFd for SignalQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SignalQueue {
    fn drop(&mut self) {
        let mut buf = SignalQueue::buffer(64);
        let mut discarded = 0;
        while let Ok(n @ 1..) = self.read(&mut buf) {
            discarded += n;
        }
        if discarded > 0 {
            log::debug!("signalfd: discarded {discarded} stale signals");
        }
        // SAFETY: restores the live mask saved in `new`; a null old-mask pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// The calling thread's id (for [`notify_thread`]).
pub fn current_thread_id() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Makes `fd` non-blocking and has the kernel announce its I/O events by queueing signal
/// `sig` to thread `tid` (`F_SETOWN_EX` with `F_OWNER_TID`, `F_SETSIG`, `O_ASYNC`), with
/// `si_fd` and `si_band` saying which descriptor and what happened. When `sig` cannot be
/// queued (the queue is at `RLIMIT_SIGPENDING`) the kernel sends plain `SIGIO` instead.
pub fn notify_thread(fd: RawFd, tid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    let owner = FOwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY (syscall!): F_SETOWN_EX reads a live f_owner_ex.
    syscall!(fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx))?;
    // SAFETY (syscall!): F_SETSIG takes a signal number.
    syscall!(fcntl(fd, F_SETSIG, sig))?;
    // SAFETY (syscall!): F_GETFL takes no argument.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    // SAFETY (syscall!): F_SETFL takes the flags as an int.
    syscall!(fcntl(
        fd,
        libc::F_SETFL,
        flags | libc::O_NONBLOCK | libc::O_ASYNC
    ))
    .map(drop)
}

/// Stops `fd` from sending signals (clears `O_ASYNC`). Call it before closing a socket set
/// up with [`notify_thread`]: a close does not end the notifications while another reference
/// to the open file exists (a child process between fork and exec holds one).
pub fn stop_notifying(fd: RawFd) -> io::Result<()> {
    // SAFETY (syscall!): F_GETFL takes no argument.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    // SAFETY (syscall!): F_SETFL takes the flags as an int.
    syscall!(fcntl(fd, libc::F_SETFL, flags & !libc::O_ASYNC)).map(drop)
}
