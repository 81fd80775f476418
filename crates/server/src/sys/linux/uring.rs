//! io_uring: an owned ring ([`Ring`]), a provided-buffer ring ([`BufRing`]), [`probe`],
//! which says once per process whether this kernel (and this sandbox) can run the completion
//! models, and [`probe_direct`], whether `completion-port` can keep its connections as direct
//! descriptors (sockets that live only in a ring's fixed-file table).
//!
//! Two features of recent kernels are used where present, each probed with a fallback and a
//! log line: incrementally consumed buffer rings (`IOU_PBUF_RING_INC`, 6.12+; see
//! [`BufRing`]: pieces of a buffer, recycled after the last), and the min-wait of a wait for
//! several completions (`IORING_FEAT_MIN_TIMEOUT`, 6.12+; [`Ring::submit_and_wait_batch`]).
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

/// `IOU_PBUF_RING_INC` (uapi `io_uring.h`): register a buffer ring incrementally consumed.
const IOU_PBUF_RING_INC: u16 = 2;

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

    /// The kernel keeps filling the rest of this completion's provided buffer
    /// (`IORING_CQE_F_BUF_MORE`, incrementally consumed rings only): it is not ours yet.
    pub fn buffer_more(&self) -> bool {
        cqueue::buffer_more(self.flags)
    }

    /// The socket still held data after this receive (`IORING_CQE_F_SOCK_NONEMPTY`).
    pub fn sock_nonempty(&self) -> bool {
        cqueue::sock_nonempty(self.flags)
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
    /// The kernel takes a minimum batch wait (`IORING_FEAT_MIN_TIMEOUT`, 6.12+).
    min_wait: bool,
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
        let min_wait = ring.params().is_feature_min_timeout();
        Ok(Ring {
            bufs: None,
            ring,
            disabled,
            min_wait,
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
    ///
    /// With `incremental`, the ring is registered incrementally consumed (`IOU_PBUF_RING_INC`,
    /// Linux 6.12+), where the kernel has that: see [`BufRing`]. Where it has not (the
    /// registration fails with `EINVAL`), each receive takes a whole buffer, said in one log
    /// line per process.
    pub fn add_buf_ring(
        &mut self,
        group: u16,
        count: u16,
        size: usize,
        incremental: bool,
    ) -> io::Result<()> {
        assert!(self.bufs.is_none(), "one buffer ring per Ring");
        let mut br = BufRing::new(group, count, size)?;
        let register = |br: &BufRing, flags: u16| {
            // SAFETY: `entries` is a page-aligned array of `count` entries owned by `br`, which
            // this ring keeps until Drop has unregistered the group.
            unsafe {
                self.ring.submitter().register_buf_ring_with_flags(
                    br.entries as u64,
                    count,
                    group,
                    flags,
                )
            }
        };
        match register(&br, if incremental { IOU_PBUF_RING_INC } else { 0 }) {
            Ok(()) => br.incremental = incremental,
            Err(e) if incremental && e.raw_os_error() == Some(libc::EINVAL) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    log::info!(
                        "io_uring: no incrementally consumed buffer rings here (IOU_PBUF_RING_INC, \
                         Linux 6.12+): each receive takes a whole provided buffer (with few large \
                         buffers many connections may wait for one: consider --recv-buffers 256x16KiB)"
                    );
                });
                register(&br, 0)?;
            }
            Err(e) => return Err(e),
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

    /// Whether [`Ring::submit_and_wait_batch`] can batch here: the kernel has min-wait
    /// (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.12+).
    pub fn can_batch(&self) -> bool {
        self.min_wait
    }

    /// Submits what is queued and waits for `want` completions, but no longer than
    /// `min_wait` once at least one has arrived; with none, until the first one or `timeout`.
    ///
    /// This is io_uring's min-wait (`io_uring_getevents_arg.min_wait_usec`, Linux 6.12+; in
    /// the kernel, `io_cqring_min_timer_wakeup`): when `min_wait` expires the wait ends if
    /// any completion (or completion work, with `DEFER_TASKRUN`) arrived since it began;
    /// otherwise it goes on as an ordinary wait that the next completion ends. The kernel
    /// treats a min-wait *without* an overall timeout as the whole timeout (it would return
    /// empty every `min_wait`), so an overall timeout is always passed: `timeout`, or an hour
    /// standing for none. Where the kernel has no min-wait ([`Ring::can_batch`] false), or
    /// `want` is 1, this is [`Ring::submit_and_wait`].
    pub fn submit_and_wait_batch(
        &mut self,
        want: usize,
        min_wait: Duration,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        if want <= 1 || !self.min_wait || min_wait.is_zero() {
            return self.submit_and_wait(timeout);
        }
        let t = timeout.unwrap_or(Duration::from_secs(3600));
        let ts = types::Timespec::new()
            .sec(t.as_secs())
            .nsec(t.subsec_nanos());
        let usec = u32::try_from(min_wait.as_micros())
            .unwrap_or(u32::MAX)
            .max(1);
        let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(usec);
        match self.ring.submitter().submit_with_args(want, &args) {
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

impl Ring {
    /// `Err` naming the first of `ops` (opcode, name) this kernel lacks, or why it could not
    /// be asked.
    fn lacks_none_of(&mut self, ops: &[(u8, &str)]) -> Result<(), String> {
        let mut p = Probe::new();
        self.ring
            .submitter()
            .register_probe(&mut p)
            .map_err(|e| format!("cannot probe opcodes: {e}"))?;
        match ops.iter().find(|(code, _)| !p.is_supported(*code)) {
            Some((_, name)) => Err(format!("this kernel lacks IORING_OP_{name}")),
            None => Ok(()),
        }
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
/// receives with `IOSQE_BUFFER_SELECT` (multishot or single-shot), so a connection holds a
/// buffer only while data is in it.
///
/// The application hands buffers to the kernel by writing ring entries and publishing the
/// tail; the kernel names one in each receive completion (its id in the flags); what it
/// delivered is taken with [`BufRing::take`] as a [`Piece`], read with [`BufRing::bytes`],
/// and given back with [`BufRing::release`] once consumed.
///
/// **Incrementally consumed** (`IOU_PBUF_RING_INC`, Linux 6.12+; see [`Ring::add_buf_ring`]):
/// a receive uses only as much of the buffer at the ring's head as it needs, and the next
/// receive — for any connection — goes on in the same buffer after it, so a 64-byte message
/// takes 64 bytes, not a whole buffer, and buffers can be large enough for a 64 KiB message
/// to arrive in one completion. A completion with `IORING_CQE_F_BUF_MORE` says the kernel
/// keeps the rest of its buffer; the buffer is ours only after a completion without it, and
/// goes back to the kernel only when every piece of it has been released as well. The
/// kernel writes the consumed position into the ring entry itself; the pieces' offsets are
/// counted here, in completion order (the order the kernel consumed them in). A completion
/// of 0 bytes consumes nothing, whatever its flags say (kernels before the fix of
/// `io_kbuf_inc_commit` for 0-length transfers report such a buffer as done while still
/// using it): its buffer is left as it is.
pub struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: Layout,
    bufs: Box<[u8]>,
    size: usize,
    count: u16,
    tail: u16,
    group: u16,
    /// Registered incrementally consumed.
    incremental: bool,
    /// Per buffer: where the next piece starts (bytes the kernel has consumed).
    consumed: Box<[u32]>,
    /// Per buffer: pieces taken and not yet released.
    pieces: Box<[u32]>,
    /// Per buffer: the kernel is done with it (it is out of the ring until recycled).
    done: Box<[bool]>,
    /// Buffers out of the ring (done and not yet recycled).
    out: usize,
}

/// Bytes a receive delivered into a provided buffer: part of it (incrementally consumed
/// rings) or all of it. Taken with [`BufRing::take`], given back with [`BufRing::release`];
/// the buffer is recycled when the kernel is done with it and its last piece is released.
#[derive(Debug)]
pub struct Piece {
    bid: u16,
    off: u32,
    len: u32,
}

impl Piece {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer it is in.
    pub fn bid(&self) -> u16 {
        self.bid
    }
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
        let n = usize::from(count);
        let mut br = BufRing {
            entries,
            layout,
            // Zeroed allocation: pages are only backed (and counted in RSS) once used.
            bufs: vec![0u8; n * size].into_boxed_slice(),
            size,
            count,
            tail: 0,
            group,
            incremental: false,
            consumed: vec![0; n].into_boxed_slice(),
            pieces: vec![0; n].into_boxed_slice(),
            done: vec![false; n].into_boxed_slice(),
            out: 0,
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

    /// Bytes per buffer: the most one receive can take (incrementally consumed: what is left
    /// of the buffer at the ring's head, which may be less).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the kernel consumes the buffers incrementally (`IOU_PBUF_RING_INC`).
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    /// Buffers the kernel can pick from now (not taken out by a finished buffer that waits
    /// for its pieces' release).
    pub fn available(&self) -> usize {
        usize::from(self.count) - self.out
    }

    /// Whether one more buffer may be held out of the ring for a while (bytes sent straight
    /// from it, `--pass-through`) with at least half the ring still the kernel's: what peers
    /// that never read can hold stays bounded, whatever their number.
    pub fn can_hold_one(&self) -> bool {
        2 * self.available().saturating_sub(1) >= usize::from(self.count)
    }

    /// What a receive completion delivered into a provided buffer: `Some` piece of
    /// `cqe.result` bytes when it carries a buffer and bytes; `None` otherwise (an error, or
    /// 0 bytes: an end of stream; a whole buffer named with 0 bytes goes back at once).
    pub fn take(&mut self, cqe: &Cqe) -> Option<Piece> {
        let bid = cqe.buffer_id()?;
        let i = usize::from(bid);
        if i >= self.done.len() {
            log::error!("completion names provided buffer {bid} of {}", self.count);
            return None;
        }
        if cqe.result <= 0 {
            if !self.incremental {
                // The kernel handed the whole buffer back unused.
                self.done[i] = true;
                self.out += 1;
                self.recycle_if_free(bid);
            }
            return None;
        }
        let len = (cqe.result as u32).min(self.size as u32 - self.consumed[i]);
        let piece = Piece {
            bid,
            off: self.consumed[i],
            len,
        };
        self.pieces[i] += 1;
        if self.incremental && cqe.buffer_more() {
            self.consumed[i] += len;
        } else {
            self.done[i] = true;
            self.out += 1;
        }
        Some(piece)
    }

    /// The bytes of `piece`, as the kernel wrote them.
    pub fn bytes(&self, piece: &Piece) -> &[u8] {
        let start = usize::from(piece.bid) * self.size + piece.off as usize;
        &self.bufs[start..start + piece.len as usize]
    }

    /// Makes `next` part of `head` when it follows it in the same buffer (the kernel consumed
    /// them one after the other), so both go out in one send and come back in one release;
    /// otherwise gives `next` back untouched.
    pub fn join(&mut self, head: &mut Piece, next: Piece) -> Result<(), Piece> {
        if next.bid != head.bid || next.off != head.off + head.len {
            return Err(next);
        }
        head.len += next.len;
        let i = usize::from(next.bid);
        debug_assert!(self.pieces[i] > 1, "two pieces of one buffer are out");
        self.pieces[i] -= 1;
        Ok(())
    }

    /// Gives a piece back: its buffer returns to the kernel once the kernel is done with it
    /// and this was its last piece out.
    pub fn release(&mut self, piece: Piece) {
        let i = usize::from(piece.bid);
        debug_assert!(self.pieces[i] > 0);
        self.pieces[i] -= 1;
        self.recycle_if_free(piece.bid);
    }

    fn recycle_if_free(&mut self, bid: u16) {
        let i = usize::from(bid);
        if self.done[i] && self.pieces[i] == 0 {
            self.done[i] = false;
            self.consumed[i] = 0;
            self.out -= 1;
            self.push(bid);
            self.publish();
        }
    }

    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = usize::from(self.tail & mask);
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: idx < count, inside the entries array we allocated; the kernel only reads
        // (and, incrementally consumed, writes) entries between its head and our published
        // tail, and this slot is past the tail.
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
    ring.lacks_none_of(&[
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ])
    .map_err(|e| format!("io_uring unavailable: {e}"))?;
    ring.add_buf_ring(0, 1, 64, false).map_err(|e| {
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
    ring.lacks_none_of(&[
        (opcode::Close::CODE, "CLOSE"),
        (opcode::Shutdown::CODE, "SHUTDOWN"),
        (opcode::MsgRingSendFd::CODE, "MSG_RING"),
        (
            opcode::FixedFdInstall::CODE,
            "FIXED_FD_INSTALL (Linux 6.8+)",
        ),
        // IORING_ACCEPT_DONTWAIT (6.10) is a flag no probe lists; BIND (6.11) stands for it.
        (
            opcode::Bind::CODE,
            "BIND (Linux 6.11+, for IORING_ACCEPT_DONTWAIT)",
        ),
    ])?;
    ring.register_direct_table(8)
        .map_err(|e| format!("cannot register a sparse fixed-file table: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receive completion into buffer `bid` of `len` bytes, `more`: the kernel keeps the
    /// rest of the buffer (`IORING_CQE_F_BUF_MORE`).
    fn cqe(bid: u16, len: i32, more: bool) -> Cqe {
        // IORING_CQE_F_BUFFER, and the buffer id above IORING_CQE_BUFFER_SHIFT (16).
        let mut flags = 1 | (u32::from(bid) << 16);
        if more {
            flags |= BUF_MORE;
        }
        Cqe {
            user_data: 0,
            result: len,
            flags,
        }
    }

    /// `IORING_CQE_F_BUF_MORE`.
    const BUF_MORE: u32 = 1 << 4;

    #[test]
    fn an_incremental_buffer_is_recycled_only_when_the_kernel_is_done_and_every_piece_is_back() {
        let mut br = BufRing::new(0, 2, 100).unwrap();
        br.incremental = true;
        br.bufs[..100].copy_from_slice(&[7u8; 100]);
        br.bufs[10..30].copy_from_slice(&[1u8; 20]);
        let tail = br.tail;
        let a = br.take(&cqe(0, 10, true)).unwrap();
        let b = br.take(&cqe(0, 20, true)).unwrap();
        assert_eq!(
            br.bytes(&b),
            &[1u8; 20][..],
            "the second piece starts after the first"
        );
        assert_eq!(br.available(), 2, "the kernel still fills buffer 0");
        // A 0-byte completion (end of stream) consumes nothing, whatever its flags.
        assert!(br.take(&cqe(0, 0, false)).is_none());
        let c = br.take(&cqe(0, 70, false)).unwrap();
        assert_eq!((c.len(), c.off), (70, 30));
        assert_eq!(br.available(), 1, "the kernel is done with buffer 0");
        br.release(b);
        br.release(c);
        assert_eq!(br.tail, tail, "a piece is still out: not recycled");
        br.release(a);
        assert_eq!(br.tail, tail.wrapping_add(1), "recycled once");
        assert_eq!(br.available(), 2);
        let d = br.take(&cqe(0, 5, true)).unwrap();
        assert_eq!(d.off, 0, "a recycled buffer starts over");
    }

    #[test]
    fn a_whole_buffer_ring_recycles_each_buffer_at_its_one_piece() {
        let mut br = BufRing::new(0, 2, 100).unwrap();
        let tail = br.tail;
        // Without IOU_PBUF_RING_INC a completion's buffer is ours, whatever the flags say.
        let a = br.take(&cqe(1, 60, true)).unwrap();
        assert_eq!((a.bid(), a.off, br.available()), (1, 0, 1));
        br.release(a);
        assert_eq!((br.tail, br.available()), (tail.wrapping_add(1), 2));
        // A buffer named with 0 bytes goes straight back.
        assert!(br.take(&cqe(0, 0, false)).is_none());
        assert_eq!((br.tail, br.available()), (tail.wrapping_add(2), 2));
    }

    #[test]
    fn pieces_that_follow_each_other_join_and_come_back_as_one() {
        let mut br = BufRing::new(0, 2, 100).unwrap();
        br.incremental = true;
        for (i, b) in br.bufs[..100].iter_mut().enumerate() {
            *b = i as u8;
        }
        let tail = br.tail;
        let mut a = br.take(&cqe(0, 10, true)).unwrap();
        let b = br.take(&cqe(0, 20, true)).unwrap();
        let c = br.take(&cqe(1, 5, true)).unwrap();
        br.join(&mut a, b).unwrap();
        assert_eq!(
            br.bytes(&a),
            &(0..30).collect::<Vec<u8>>()[..],
            "one run of 30 bytes"
        );
        let c = br.join(&mut a, c).unwrap_err();
        assert_eq!(c.bid(), 1, "another buffer's piece is given back untouched");
        br.release(c);
        let d = br.take(&cqe(0, 70, false)).unwrap();
        let mut gap = br.take(&cqe(1, 5, true)).unwrap();
        let d = br.join(&mut gap, d).unwrap_err();
        assert_eq!(d.off, 30, "a piece of another buffer does not join");
        br.release(gap);
        br.release(d);
        assert_eq!(br.tail, tail, "the joined piece is still out");
        br.release(a);
        assert_eq!(
            br.tail,
            tail.wrapping_add(1),
            "one release of the joined piece recycles buffer 0"
        );
    }
}
