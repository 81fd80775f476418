//! io_uring: an owned ring ([`Ring`]), a provided-buffer ring ([`BufRing`]), [`probe`],
//! which says once per process whether this kernel (and this sandbox) can run the completion
//! models, and [`probe_direct`], whether `completion-port` can keep its connections as direct
//! descriptors (sockets that live only in a ring's fixed-file table).
//!
//! The `io-uring` crate builds the submission entries; this file owns the ring and the
//! memory the kernel writes into, and is where their `unsafe` lives.

use io_uring::{cqueue, types, IoUring, Probe};
use std::alloc::{self, Layout};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

pub use io_uring::{opcode, squeue, types::CancelBuilder, types::Fd};

/// Environment variable that makes every ring setup fail with the named error (`EPERM`,
/// `ENOSYS` or `ENOMEM`), as in a container that blocks io_uring or on an old kernel: how the
/// fallback to the readiness models is tested.
pub const FAKE_ERROR_ENV: &str = "IOMODELS_FAKE_URING_ERROR";

/// One completion: the operation's user data, its result (bytes, a descriptor, or `-errno`),
/// and the `IORING_CQE_F_*` flags.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    /// The submission's user data: which operation record this completion belongs to.
    pub user_data: u64,
    /// The result: non-negative on success, `-errno` on failure.
    pub result: i32,
    /// `IORING_CQE_F_*` flags (more completions to come, buffer id, ...).
    pub flags: u32,
}

impl Cqe {
    /// False on the final completion of an operation: its record may be freed now.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer the kernel filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// An io_uring instance; unmapped and closed on drop.
///
/// Dropping a ring with operations in flight would let the kernel finish them into memory that
/// may be gone: the models drain every operation first (see `models/uring`).
pub struct Ring {
    /// The provided-buffer ring registered with this ring, if any. Declared before `ring`
    /// only for clarity: `Drop for Ring` unregisters it explicitly before either is freed.
    bufs: Option<BufRing>,
    ring: IoUring,
    /// Made disabled ([`Ring::for_another_thread`]) and not yet [`Ring::enable`]d.
    disabled: bool,
}

fn fake_error() -> Option<io::Error> {
    let name = std::env::var(FAKE_ERROR_ENV).ok()?;
    let errno = match name.as_str() {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "ENOMEM" => libc::ENOMEM,
        _ => libc::EINVAL,
    };
    Some(io::Error::from_raw_os_error(errno))
}

impl Ring {
    /// Creates a ring with `entries` submission slots (and twice as many completion slots).
    ///
    /// It asks for `SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs only when the owning
    /// thread waits, in batches; 6.1+) and falls back to a plain ring where the kernel refuses
    /// them. Must be called on the thread that will use the ring.
    pub fn new(entries: u32) -> io::Result<Ring> {
        Ring::build(entries, false)
    }

    /// Creates a ring, as [`Ring::new`] does, for a thread that does not run yet: it is made
    /// disabled (`IORING_SETUP_R_DISABLED`), and the thread that will use it calls
    /// [`Ring::enable`] first, which makes that thread its single issuer. Buffers may be
    /// registered before. So a server can make every worker's ring (and find out that it
    /// cannot) before any worker runs.
    pub fn for_another_thread(entries: u32) -> io::Result<Ring> {
        Ring::build(entries, true)
    }

    fn build(entries: u32, disabled: bool) -> io::Result<Ring> {
        if let Some(e) = fake_error() {
            return Err(e);
        }
        let builder = |tuned: bool| {
            let mut b = IoUring::builder();
            if tuned {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            if disabled {
                b.setup_r_disabled();
            }
            b.setup_cqsize(entries * 2);
            b
        };
        let ring = match builder(true).build(entries) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::info!("io_uring: DEFER_TASKRUN not supported here; using a plain ring");
                builder(false).build(entries)?
            }
            Err(e) => return Err(e),
        };
        Ok(Ring {
            bufs: None,
            ring,
            disabled,
        })
    }

    /// Enables a ring made by [`Ring::for_another_thread`]: call on the thread that will use
    /// it, before anything is submitted. Does nothing to a ring made enabled.
    pub fn enable(&mut self) -> io::Result<()> {
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        Ok(())
    }

    /// Allocates `count` (a power of two, at most 32768) buffers of `size` bytes, hands them
    /// all to the kernel and registers them as buffer group `group`, owned by this ring.
    pub fn add_buf_ring(&mut self, group: u16, count: u16, size: usize) -> io::Result<()> {
        assert!(self.bufs.is_none(), "one buffer ring per Ring");
        let br = BufRing::new(group, count, size)?;
        // SAFETY: `entries` is a page-aligned array of `count` entries owned by `br`, which
        // this ring keeps until Drop has unregistered the group.
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                br.entries as u64,
                count,
                group,
                0,
            )?;
        }
        self.bufs = Some(br);
        Ok(())
    }

    /// Registers a sparse fixed-file table of `slots` empty slots (`IORING_REGISTER_FILES_SPARSE`)
    /// for direct descriptors: accepts allocate into it, operations name a slot
    /// (`IOSQE_FIXED_FILE`), `IORING_OP_CLOSE` empties one. The kernel refuses a table larger
    /// than `RLIMIT_NOFILE` (per table; nothing sums the tables of several rings). Dropping the
    /// ring closes whatever the table still holds.
    pub fn register_direct_table(&mut self, slots: u32) -> io::Result<()> {
        self.ring.submitter().register_files_sparse(slots)
    }

    /// The provided-buffer ring, if one was added.
    pub fn bufs(&self) -> Option<&BufRing> {
        self.bufs.as_ref()
    }

    /// The provided-buffer ring, mutably (to recycle buffers).
    pub fn bufs_mut(&mut self) -> Option<&mut BufRing> {
        self.bufs.as_mut()
    }

    /// Queues one submission, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Every buffer and descriptor `entry` points at must stay valid until the operation's
    /// final completion has been reaped (for multishot operations: the completion without
    /// `IORING_CQE_F_MORE`).
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..3 {
            // SAFETY: the caller guarantees what `entry` points at outlives the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
        // The kernel took nothing (its completion queue is backed up): fail this one operation
        // rather than spin; the caller closes the connection it was for.
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "io_uring submission queue full",
        ))
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if is_retry(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued and waits for at least one completion, or `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_retry(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<Cqe>) {
        out.clear();
        out.extend(self.ring.completion().map(|c| Cqe {
            user_data: c.user_data(),
            result: c.result(),
            flags: c.flags(),
        }));
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(br) = &self.bufs {
            // After this the kernel no longer reads the entries or picks the buffers; the
            // fields (buffers, then the ring itself) are freed after this returns.
            let _ = self.ring.submitter().unregister_buf_ring(br.group);
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// A provided-buffer ring: `count` buffers of `size` bytes that the kernel picks from for
/// multishot receives, so a connection holds a buffer only while data is in it.
///
/// The application hands buffers to the kernel by writing ring entries and publishing the
/// tail; the kernel hands one back in each receive completion (its id in the flags); the
/// application returns it with [`BufRing::recycle`] once the bytes are consumed.
pub struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: Layout,
    bufs: Box<[u8]>,
    size: usize,
    count: u16,
    tail: u16,
    group: u16,
}

// SAFETY: the raw entries pointer is owned memory like a Box; nothing is shared across threads.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocates the entries and buffers, every buffer handed to the kernel (the tail
    /// published); [`Ring::add_buf_ring`] registers them.
    fn new(group: u16, count: u16, size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a buffer ring needs a power-of-two count <= 32768 (got {count}) of non-empty buffers"),
            ));
        }
        let layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut br = BufRing {
            entries,
            layout,
            // Zeroed allocation: pages are only backed (and counted in RSS) once used.
            bufs: vec![0u8; usize::from(count) * size].into_boxed_slice(),
            size,
            count,
            tail: 0,
            group,
        };
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The buffer group id to put in receive submissions.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// How many buffers the ring has.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Bytes per buffer.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size;
        &self.bufs[start..start + len.min(self.size)]
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = usize::from(self.tail & mask);
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: idx < count, inside the entries array we allocated; the kernel only reads
        // entries between its head and our published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.entries.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail field overlays the first entry's reserved field of our live array;
        // the release store makes the entries written before it visible to the kernel.
        unsafe {
            let tail =
                types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once; the owning Ring has
        // unregistered the group, so the kernel no longer reads it.
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) };
    }
}

/// Whether the completion models can run here: a ring can be created, a provided-buffer ring
/// registered (5.19+), and the operations they use are supported. Checked once per process.
pub fn probe() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(probe_now).clone()
}

fn probe_now() -> Result<(), String> {
    let mut ring = Ring::new(8).map_err(|e| {
        let name = match e.raw_os_error() {
            Some(libc::EPERM) => " (EPERM: blocked, e.g. by a container's seccomp policy or kernel.io_uring_disabled)",
            Some(libc::ENOSYS) => " (ENOSYS: this kernel has no io_uring)",
            Some(libc::ENOMEM) => " (ENOMEM: locked-memory limit too low)",
            _ => "",
        };
        format!("io_uring unavailable: io_uring_setup failed: {e}{name}")
    })?;
    let mut p = Probe::new();
    ring.ring
        .submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring unavailable: cannot probe opcodes: {e}"))?;
    for (code, name) in [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ] {
        if !p.is_supported(code) {
            return Err(format!(
                "io_uring unavailable: this kernel lacks IORING_OP_{name}"
            ));
        }
    }
    ring.add_buf_ring(0, 1, 64).map_err(|e| {
        format!(
            "io_uring unavailable: cannot register a provided-buffer ring (needs Linux 5.19+): {e}"
        )
    })
}

/// `IORING_ACCEPT_DONTWAIT` (Linux 6.10+) set on an accept submission: with nothing to accept
/// it completes at once with `-EAGAIN` instead of waiting (the `io-uring` crate's builder has
/// no setter for the accept flags it goes in).
pub fn accept_dontwait(entry: squeue::Entry) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    const DONTWAIT: u16 = 1 << 1; // IORING_ACCEPT_DONTWAIT, in the submission's ioprio field
                                  // SAFETY: `Entry` is `#[repr(C)]` around the 64-byte `io_uring_sqe` (size checked above),
                                  // whose `ioprio` (u16) is at byte 2; any bit pattern is a valid `[u8; 64]` and the result
                                  // differs from a valid entry only in the accept flags the kernel reads there.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    let ioprio = u16::from_ne_bytes([raw[2], raw[3]]) | DONTWAIT;
    raw[2..4].copy_from_slice(&ioprio.to_ne_bytes());
    // SAFETY: as above: the bytes of an entry with one more accept flag.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Whether `completion-port` can keep its connections as direct descriptors here: the
/// completion models run ([`probe`]), a sparse fixed-file table can be registered, and the
/// kernel has the operations they need on a fixed file (`CLOSE` on a slot, `SHUTDOWN`,
/// `MSG_RING` to pass a slot between rings, `FIXED_FD_INSTALL` — Linux 6.8 — for the peer
/// address of a TLS connection, and accepts that do not wait (`IORING_ACCEPT_DONTWAIT`, 6.10: a
/// flag no probe lists, so this asks for `IORING_OP_BIND`, 6.11); multishot accept with `IORING_FILE_INDEX_ALLOC` is 5.19, older
/// than all of them). Checked once per process.
pub fn probe_direct() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(probe_direct_now).clone()
}

fn probe_direct_now() -> Result<(), String> {
    probe()?;
    let mut ring = Ring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut p = Probe::new();
    ring.ring
        .submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("cannot probe opcodes: {e}"))?;
    for (code, name) in [
        (opcode::Close::CODE, "CLOSE"),
        (opcode::Shutdown::CODE, "SHUTDOWN"),
        (opcode::MsgRingSendFd::CODE, "MSG_RING"),
        (
            opcode::FixedFdInstall::CODE,
            "FIXED_FD_INSTALL (Linux 6.8+)",
        ),
    ] {
        if !p.is_supported(code) {
            return Err(format!("this kernel lacks IORING_OP_{name}"));
        }
    }
    ring.register_direct_table(8)
        .map_err(|e| format!("cannot register a sparse fixed-file table: {e}"))
}
