//! [`OvOp`]: the operation record every overlapped operation lives in, and [`InFlight`], the
//! name of one that the kernel holds. See the module doc of `models/winio` for the rule.

use crate::stats::Stats;
use std::io;
use std::os::windows::io::{OwnedSocket, RawSocket};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use windows_sys::Win32::Foundation::{RtlNtStatusToDosError, HANDLE, NTSTATUS, STATUS_PENDING};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::IO::{CancelIoEx, OVERLAPPED};

/// A completion routine as `WSARecv` / `WSASend` take it: `(error, bytes, overlapped, flags)`.
/// It runs as an APC on the thread that posted the operation, inside an alertable wait.
pub(crate) type CompletionRoutine = unsafe extern "system" fn(u32, u32, *mut OVERLAPPED, u32);

/// How the completion of an operation is announced: what goes in `OVERLAPPED.hEvent` and
/// `lpCompletionRoutine` when it is posted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Notify {
    /// `hEvent` = this event (manual reset), signalled when the operation completes; the
    /// poster finds the completed record with [`InFlight::is_complete`] and reclaims it.
    #[allow(dead_code)] // overlapped-event's
    Event(HANDLE),
    /// `lpCompletionRoutine` = `routine`; `hEvent`, which the system ignores when a routine is
    /// given, carries `context` to the routine (read it with [`routine_context`]).
    Routine {
        routine: CompletionRoutine,
        context: *const std::ffi::c_void,
    },
    /// The socket is associated with a completion port: neither event nor routine; the
    /// completion is dequeued from the port.
    Port,
}

impl Notify {
    /// The `lpCompletionRoutine` argument of a post: the routine, or none.
    pub(super) fn routine(&self) -> Option<CompletionRoutine> {
        match *self {
            Notify::Routine { routine, .. } => Some(routine),
            _ => None,
        }
    }

    /// The `OVERLAPPED.hEvent` of a post: the event, the routine's context, or null.
    pub(super) fn h_event(&self) -> HANDLE {
        match *self {
            Notify::Event(h) => h,
            Notify::Routine { context, .. } => context.cast_mut(),
            Notify::Port => std::ptr::null_mut(),
        }
    }
}

/// What an operation record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `WSARecv` into the record's buffer.
    Recv,
    /// `WSASend` of `buf[off..]`.
    Send,
    /// `AcceptEx` into the record's socket; the buffer holds the two addresses.
    Accept,
}

/// One overlapped operation: its `OVERLAPPED`, its `WSABUF`, and the buffer and socket they
/// point at, in one heap block that does not move.
///
/// `overlapped` is the first field of a `#[repr(C)]` struct, so the `*mut OVERLAPPED` a
/// completion hands back is a pointer to the record itself. An `OvOp` outside the kernel is a
/// plain `Box<OvOp>`; posting turns the box into a raw pointer ([`InFlight`]) and only reaping
/// its completion turns it back ([`reclaim`]). A record whose completion never comes is
/// leaked, never freed.
#[repr(C)]
pub(crate) struct OvOp {
    overlapped: OVERLAPPED,
    wsabuf: ws::WSABUF,
    /// `WSARecv`'s in/out flags; they must stay valid while the receive is pending.
    flags: u32,
    kind: OpKind,
    /// The model's: whose operation this is (a slab key, an index), copied back on completion.
    pub tag: usize,
    /// Recv: the receive buffer; Send: the bytes to send; Accept: the address buffer.
    pub(super) buf: Vec<u8>,
    /// Send: bytes of `buf` sent by earlier (short) sends of the same buffer.
    pub(super) off: usize,
    /// Accept: the socket `AcceptEx` accepts into (closed with the record unless taken).
    pub(super) socket: Option<OwnedSocket>,
}

// SAFETY: a record not in flight is owned data (a Vec, a socket, integers); the raw `hEvent`
// it may hold is a kernel handle or an opaque context value, usable from any thread.
unsafe impl Send for OvOp {}

impl OvOp {
    /// A new record of `kind` that owns `buf`.
    pub fn new(kind: OpKind, tag: usize, buf: Vec<u8>) -> Box<OvOp> {
        Box::new(OvOp {
            // SAFETY: OVERLAPPED is plain old data; all-zero is its documented initial state.
            overlapped: unsafe { std::mem::zeroed() },
            wsabuf: ws::WSABUF {
                len: 0,
                buf: std::ptr::null_mut(),
            },
            flags: 0,
            kind,
            tag,
            buf,
            off: 0,
            socket: None,
        })
    }

    /// What this record is for.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// Makes a reaped record ready for another operation of `kind`, keeping its buffer.
    pub fn reuse(&mut self, kind: OpKind, tag: usize) {
        self.kind = kind;
        self.tag = tag;
        self.off = 0;
        self.socket = None;
    }

    /// The outcome the kernel stored in the `OVERLAPPED` (its `Internal` status and
    /// `InternalHigh` byte count): what `WSAGetOverlappedResult` would report, also for a
    /// socket that has been closed since. Call only on a reaped record.
    pub fn result(&self) -> io::Result<usize> {
        stored_result(&self.overlapped)
    }

    /// Fills the OVERLAPPED and WSABUF for a new post. `ptr` is the record, already a raw
    /// pointer (so no `&mut Box` aliases what the kernel will hold).
    ///
    /// # Safety
    /// `ptr` must point at a live record that nothing else accesses during the call.
    unsafe fn prepare(ptr: *mut OvOp, notify: Notify, data: *mut u8, len: usize) {
        // SAFETY: the caller gives exclusive access to a live record.
        let op = unsafe { &mut *ptr };
        // SAFETY: all-zero is the OVERLAPPED's initial state (a reused record must not carry
        // the previous operation's status).
        op.overlapped = unsafe { std::mem::zeroed() };
        op.overlapped.hEvent = notify.h_event();
        op.wsabuf = ws::WSABUF {
            len: len.min(u32::MAX as usize) as u32,
            buf: data,
        };
        op.flags = 0;
    }
}

/// The outcome the kernel stored in a reaped `OVERLAPPED`: its `Internal` status, mapped to a
/// Win32 error when it is one (`STATUS_BUFFER_OVERFLOW`, a datagram cut short, becomes
/// `ERROR_MORE_DATA`), and its `InternalHigh` byte count.
pub(super) fn stored_result(overlapped: &OVERLAPPED) -> io::Result<usize> {
    let status = overlapped.Internal as NTSTATUS;
    if status >= 0 {
        Ok(overlapped.InternalHigh)
    } else {
        // SAFETY: a pure function of its argument.
        let code = unsafe { RtlNtStatusToDosError(status) };
        Err(io::Error::from_raw_os_error(code as i32))
    }
}

/// A record the kernel can hold: `#[repr(C)]` with its `OVERLAPPED` first, so the
/// `*mut OVERLAPPED` a completion hands back is a pointer to the record itself.
///
/// # Safety
/// Implement only for such a type ([`OvOp`], the datagram record in `udp.rs`).
pub(crate) unsafe trait Record {
    /// The bytes of a connection's receive buffer this record handed to the kernel, counted in
    /// `Stats::recv_buffer_bytes_posted` from its post until its reclaim; 0 for any other.
    fn posted_recv_len(&self) -> usize {
        0
    }

    /// Whether this is an `AcceptEx` record, counted in `Stats::accepts_posted` from its post
    /// until its reclaim.
    fn is_accept(&self) -> bool {
        false
    }
}

// SAFETY: #[repr(C)], `overlapped` first.
unsafe impl Record for OvOp {
    fn posted_recv_len(&self) -> usize {
        match self.kind {
            OpKind::Recv => self.wsabuf.len as usize,
            _ => 0,
        }
    }

    fn is_accept(&self) -> bool {
        self.kind == OpKind::Accept
    }
}

/// A posted record: the kernel holds it until its completion is reaped. A name, not an owner
/// (it is `Copy`, like the `OVERLAPPED*` it stands for).
pub(crate) struct InFlight<T: Record = OvOp>(NonNull<T>);

// Derived, these would ask `T` for the same traits; a name compares and prints as its address.
impl<T: Record> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: Record> Eq for InFlight<T> {}

impl<T: Record> std::fmt::Debug for InFlight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InFlight({:p})", self.0)
    }
}

impl<T: Record> Clone for InFlight<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Record> Copy for InFlight<T> {}

// SAFETY: an InFlight is an address; every access through it is an unsafe call whose contract
// (the record is still in flight) the caller keeps, whatever the thread.
unsafe impl<T: Record> Send for InFlight<T> {}

impl<T: Record> InFlight<T> {
    /// The `OVERLAPPED*` the kernel was given (and will hand back on completion).
    pub fn overlapped(self) -> *mut OVERLAPPED {
        self.0.as_ptr().cast()
    }

    /// `HasOverlappedIoCompleted`: true once the kernel has stored the operation's outcome.
    /// With [`Notify::Event`], check this for each of a connection's operations when its
    /// event is signalled (after resetting the event).
    ///
    /// # Safety
    /// The record must not have been reclaimed yet.
    #[allow(dead_code)] // overlapped-event's
    pub unsafe fn is_complete(self) -> bool {
        // SAFETY: the record is alive (caller's contract) and starts with its OVERLAPPED
        // (`Record`); the kernel may be writing `Internal` concurrently, so it is read as the
        // volatile word it is.
        let status = unsafe { std::ptr::addr_of!((*self.overlapped()).Internal).read_volatile() };
        status as NTSTATUS != STATUS_PENDING
    }

    /// `WSAGetOverlappedResult(socket, overlapped, fWait = FALSE)`: `None` while the operation
    /// is pending. Only for a socket that is still open (after `closesocket` use
    /// [`InFlight::is_complete`], then [`OvOp::result`]).
    ///
    /// # Safety
    /// The record must not have been reclaimed yet, and `socket` must be the open socket the
    /// operation was posted on.
    #[allow(dead_code)] // overlapped-event's
    pub unsafe fn overlapped_result(self, socket: RawSocket) -> Option<io::Result<usize>> {
        let mut bytes = 0u32;
        let mut flags = 0u32;
        // SAFETY: the record (and its OVERLAPPED) is alive per the caller's contract; the out
        // pointers are live locals.
        let ok = unsafe {
            ws::WSAGetOverlappedResult(
                socket as ws::SOCKET,
                self.overlapped(),
                &mut bytes,
                0,
                &mut flags,
            )
        };
        if ok != 0 {
            return Some(Ok(bytes as usize));
        }
        let e = crate::sys::last_wsa_error();
        if e.raw_os_error() == Some(ws::WSA_IO_INCOMPLETE) {
            None
        } else {
            Some(Err(e))
        }
    }

    /// Takes the record back from the kernel once its completion has been reaped.
    ///
    /// # Safety
    /// The operation's completion must have been reaped (dequeued from the port, delivered to
    /// the routine, or seen complete with [`InFlight::is_complete`]), and this must be the
    /// only reclaim of this record.
    pub unsafe fn reclaim(self, stats: &Stats) -> Box<T> {
        stats.ops_in_flight.fetch_sub(1, Relaxed);
        // SAFETY: the pointer came from Box::into_raw in `post`, the kernel is done with it
        // (caller's contract), and nothing else reclaims it.
        let record = unsafe { Box::from_raw(self.0.as_ptr()) };
        stats.recv_buffer_returned(record.posted_recv_len());
        if record.is_accept() {
            stats.accepts_posted.fetch_sub(1, Relaxed);
        }
        record
    }
}

/// Takes back the record of a completion that names its `OVERLAPPED*` (a completion port's
/// `lpOverlapped`, a completion routine's argument).
///
/// # Safety
/// `overlapped` must be the `OVERLAPPED*` of a `T` posted through this module whose
/// completion is being reaped now, once.
pub(crate) unsafe fn reclaim_as<T: Record>(overlapped: *mut OVERLAPPED, stats: &Stats) -> Box<T> {
    let ptr = NonNull::new(overlapped.cast::<T>()).expect("a completion names its OVERLAPPED");
    // SAFETY: forwarded contract.
    unsafe { InFlight(ptr).reclaim(stats) }
}

/// [`reclaim_as`] for a connection's or an accept's record.
///
/// # Safety
/// As [`reclaim_as`], for an [`OvOp`].
pub(crate) unsafe fn reclaim(overlapped: *mut OVERLAPPED, stats: &Stats) -> Box<OvOp> {
    // SAFETY: forwarded contract.
    unsafe { reclaim_as(overlapped, stats) }
}

/// The `context` of the [`Notify::Routine`] a record was posted with (kept in its `hEvent`):
/// a completion routine's way back to its thread's state, before it reclaims the record.
///
/// # Safety
/// `overlapped` must be the `OVERLAPPED*` of a record in flight (the one the routine got).
pub(crate) unsafe fn routine_context(overlapped: *mut OVERLAPPED) -> *const std::ffi::c_void {
    // SAFETY: the record is alive (caller's contract); the kernel does not write hEvent.
    unsafe { (*overlapped).hEvent.cast_const() }
}

/// `CancelIoEx(socket, NULL)`: every operation pending on the open `socket`, whoever posted
/// it, completes aborted through its usual notification (the records are reaped as any).
/// Before `closesocket` too: Wine's `closesocket` leaves a pending receive or send of a
/// socket without a completion port in its queue (a send to a peer that never reads would
/// keep the socket, and the records, alive), so the models cancel first.
pub(crate) fn cancel_all(socket: RawSocket, stats: &Stats) {
    stats.syscalls.fetch_add(1, Relaxed);
    // SAFETY: plain values; the socket is open (the caller's contract, checked by nothing
    // worse than an error return for a stale one).
    if unsafe { CancelIoEx(socket as HANDLE, std::ptr::null()) } == 0 {
        let e = io::Error::last_os_error();
        log::debug!("CancelIoEx: {e}");
    }
}

/// What posting returned: in flight (a completion will come, also for an operation that
/// completed at once), or refused (no completion will come; the record is back).
pub(crate) type Posted<T = OvOp> = Result<InFlight<T>, (Box<T>, io::Error)>;

/// Posts `op` with `call`, which gets the record's raw pointer, its OVERLAPPED and WSABUF,
/// and returns the Winsock return value (0, or SOCKET_ERROR with the error in
/// `WSAGetLastError`; for `AcceptEx`, TRUE/FALSE mapped by the caller to 0/SOCKET_ERROR).
///
/// # Safety
/// `call` must hand the kernel only pointers into the record (which stays put until reaped),
/// and `data`/`len` must describe memory the record owns.
pub(super) unsafe fn post(
    op: Box<OvOp>,
    notify: Notify,
    data: *mut u8,
    len: usize,
    stats: &Stats,
    call: impl FnOnce(*mut OvOp, *mut OVERLAPPED, *const ws::WSABUF, *mut u32) -> i32,
) -> Posted {
    let accept = op.is_accept();
    let ptr = Box::into_raw(op);
    // SAFETY: `ptr` is the record just released from its box; nothing else holds it.
    unsafe { OvOp::prepare(ptr, notify, data, len) };
    // SAFETY: field pointers of a live record, derived from the raw pointer.
    let (ov, wsabuf, flags) = unsafe {
        (
            std::ptr::addr_of_mut!((*ptr).overlapped),
            std::ptr::addr_of!((*ptr).wsabuf),
            std::ptr::addr_of_mut!((*ptr).flags),
        )
    };
    if accept {
        // Counted before the call: once posted, its completion may be reaped (and counted
        // down) on another thread before this one goes on.
        stats.accepts_posted.fetch_add(1, Relaxed);
    }
    stats.syscalls.fetch_add(1, Relaxed);
    let rc = call(ptr, ov, wsabuf, flags);
    // SAFETY: `ptr` came from Box::into_raw above and `rc` is what the posting call returned.
    let posted = unsafe { outcome(ptr, rc, stats) };
    if accept && posted.is_err() {
        stats.accepts_posted.fetch_sub(1, Relaxed);
    }
    posted
}

/// What a posting call's return code `rc` (0, or SOCKET_ERROR with the error in
/// `WSAGetLastError`) means for the record `ptr`: in flight (counted in `ops_in_flight`), or
/// back in its box.
///
/// # Safety
/// `ptr` must come from `Box::into_raw`, and `rc` be what the call that was given it returned,
/// with nothing in between that could change the thread's last Winsock error.
pub(super) unsafe fn outcome<T: Record>(ptr: *mut T, rc: i32, stats: &Stats) -> Posted<T> {
    let error = if rc == 0 {
        None
    } else {
        let e = crate::sys::last_wsa_error();
        (e.raw_os_error() != Some(ws::WSA_IO_PENDING)).then_some(e)
    };
    match error {
        None => {
            // Pending, or done at once: either way a completion is on its way (no
            // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS here), and the record waits for it.
            stats.ops_in_flight.fetch_add(1, Relaxed);
            // SAFETY: Box::into_raw never returns null.
            Ok(InFlight(unsafe { NonNull::new_unchecked(ptr) }))
        }
        // SAFETY: the call failed outright: the kernel took nothing, the record is ours again.
        Some(e) => Err((unsafe { Box::from_raw(ptr) }, e)),
    }
}

/// `WSARecv` of up to `len` bytes into the record's buffer (grown to `len` if smaller). The
/// `len` bytes count in `Stats::recv_buffer_bytes_posted` until the record is reclaimed.
pub(crate) fn post_recv(
    socket: RawSocket,
    mut op: Box<OvOp>,
    len: usize,
    notify: Notify,
    stats: &Stats,
) -> Posted {
    debug_assert_eq!(op.kind, OpKind::Recv, "a receive record");
    if op.buf.len() < len {
        op.buf.resize(len, 0);
    }
    let data = op.buf.as_mut_ptr();
    let routine = notify.routine();
    let call = |_, ov, wsabuf, flags| {
        // SAFETY: every pointer is into the live record, which stays put until its completion
        // is reaped; no byte count pointer, as documented for overlapped calls.
        unsafe {
            ws::WSARecv(
                socket as ws::SOCKET,
                wsabuf,
                1,
                std::ptr::null_mut(),
                flags,
                ov,
                routine,
            )
        }
    };
    // Counted before the post: once posted, another thread (a completion port's worker) may
    // reclaim the record, and uncount it, before `post` returns.
    let counted = len.min(u32::MAX as usize);
    stats.recv_buffer_posted(counted);
    // SAFETY: the buffer pointer is into the record's own Vec (a heap block that does not
    // move while the record is in flight); `call` passes only the record's fields.
    let posted = unsafe { post(op, notify, data, len, stats, call) };
    if posted.is_err() {
        stats.recv_buffer_returned(counted); // refused: the kernel holds nothing
    }
    posted
}

/// `WSASend` of the record's `buf[off..]`.
pub(crate) fn post_send(
    socket: RawSocket,
    mut op: Box<OvOp>,
    notify: Notify,
    stats: &Stats,
) -> Posted {
    let off = op.off;
    let len = op.buf.len() - off;
    // SAFETY: `off <= len` of the Vec, so the pointer is within (or one past) its block.
    let data = unsafe { op.buf.as_mut_ptr().add(off) };
    let routine = notify.routine();
    let call = |_, ov, wsabuf, _| {
        // SAFETY: as in `post_recv`.
        unsafe {
            ws::WSASend(
                socket as ws::SOCKET,
                wsabuf,
                1,
                std::ptr::null_mut(),
                0,
                ov,
                routine,
            )
        }
    };
    // SAFETY: as in `post_recv`.
    unsafe { post(op, notify, data, len, stats, call) }
}
