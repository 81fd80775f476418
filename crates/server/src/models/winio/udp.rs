//! [`OvUdpEcho`]: RFC 862 over UDP with overlapped `WSARecvMsg` / `WSASendMsg`, for the three
//! completion models — the Winsock twin of `models/uring/engine/udp.rs` (`IORING_OP_RECVMSG`
//! / `IORING_OP_SENDMSG`).
//!
//! [`UDP_RECVS`] receives stay posted, each an [`OvDatagram`] record: its `OVERLAPPED` (first),
//! its `WSABUF`, its `WSAMSG`, a buffer of `udp_max_datagram` bytes, the `SOCKADDR_STORAGE`
//! for the sender's address and a `crate::sys::PacketInfo` control buffer — the message
//! points at the others, and the kernel writes them (and the message's `namelen`,
//! `Control.len`, `dwFlags`) after the call has returned, so they all live in the record until
//! its completion is reaped. When a receive completes whole, the same record is posted as a
//! `WSASendMsg` of those bytes to that address, and a spare (or new) record takes its place
//! as a receive; when the send completes, the record goes back to the spares. At most
//! [`UDP_SENDS`] sends are in flight: past that a datagram's answer is dropped and counted, so
//! a peer that does not read can neither pile up records nor stall the receives.
//!
//! **From the address the datagram was sent to.** On a wildcard socket (which asked for
//! `IP_PKTINFO` / `IPV6_PKTINFO`, `crate::sys::want_arrival`) each receive comes back with an
//! `IN_PKTINFO` / `IN6_PKTINFO` control message; the answer's `WSASendMsg` carries one naming
//! the source `crate::sys::reply_source` picks from it, so a datagram sent to 127.0.0.2 is
//! answered from 127.0.0.2. The control data is encoded and decoded in one place,
//! `sys/windows/datagram.rs`, which says the pitfalls: `WSARecvMsg` only through its extension
//! pointer (looked up in [`OvUdpEcho::new`]; if the provider refuses it, a logged fallback to
//! `WSARecvFrom`, answers then leaving from the route's pick), the control buffer's size, and
//! Wine, whose `WSASendMsg` ignores the control data (there the answer leaves from the route's
//! pick whatever is asked).
//!
//! **Truncation.** A datagram larger than the buffer completes the receive with an error, in
//! one of three forms depending on who reports it: `WSAEMSGSIZE` (a completion routine's
//! error, `WSAGetOverlappedResult`), `STATUS_BUFFER_OVERFLOW` in `OVERLAPPED.Internal` (what a
//! completion port or an event waiter finds; [`OvDatagram::result`] maps it to
//! `ERROR_MORE_DATA`), or `ERROR_MORE_DATA` itself. Every form is counted in
//! `Stats::udp_truncated`, and the record is received over, never echoed.
//!
//! **Never block on a send.** A `WSASendMsg` that fails at once (`WSAEWOULDBLOCK` on the
//! non-blocking socket, `WSAENOBUFS`, ...) or completes with an error or short is counted in
//! `Stats::udp_send_dropped`; nothing waits for room.
//!
//! **`WSAECONNRESET`.** Windows reports an ICMP port-unreachable (the answer to an earlier
//! send to a port nobody listens on) as `WSAECONNRESET` on the next receive of the UDP socket.
//! [`OvUdpEcho::new`] turns that off (`SIO_UDP_CONNRESET` = FALSE); if the system refuses the
//! ioctl, such an error is a non-event anyway: the receive is re-posted.
//!
//! **Shutdown.** [`OvUdpEcho::stop`] stops re-posting and cancels the socket's pending
//! operations (`CancelIoEx`: the socket is the server's, `ctx.udp`, and stays open); they
//! complete with `ERROR_OPERATION_ABORTED` and are reaped like any other completion. The
//! model goes on reaping until [`OvUdpEcho::in_flight`] is 0 (and so `Stats::ops_in_flight`).
//!
//! **Echo loops.** A whole datagram is first put to `crate::udp::LoopGuard`, the rule every
//! model shares: one from source port 0, the server's own port or address, or a reflecting
//! service's port (7, 13, 17, 19, 37, `--udp-drop-ports`) is counted in `udp_loop_dropped`
//! and never answered.
//!
//! The accounting is `udp.rs`'s: every datagram received is counted once in
//! `udp_datagrams_in` and once more in exactly one of `udp_datagrams_out`, `udp_send_dropped`,
//! `udp_truncated` and `udp_loop_dropped`.

use super::op::{cancel_all, outcome, reclaim_as, stored_result, InFlight, Notify, Record};
use crate::ctx::Ctx;
use crate::stats::Stats;
use crate::sys::{reply_source, Arrival, PacketInfo, RecvMsg};
use crate::trace::{trace_event, Trace};
use crate::udp::LoopGuard;
use iomodels_core::ServiceKind;
use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use windows_sys::Win32::Foundation::{
    ERROR_HANDLES_CLOSED, ERROR_MORE_DATA, ERROR_OPERATION_ABORTED,
};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::IO::OVERLAPPED;

/// Receives kept posted at once (as the io_uring models keep four `RECVMSG`).
pub(crate) const UDP_RECVS: usize = 4;
/// Sends in flight at most; an answer past that is dropped (and counted).
pub(crate) const UDP_SENDS: usize = 16;

/// One datagram's operation record: `WSARecvMsg` into `buf` (the sender's address into
/// `from`, the packet information into `control`), then `WSASendMsg` of `buf[..len]` back to
/// `from`, from the address the datagram was sent to. The rule of `models/winio` holds: a
/// `Box` turned into a raw pointer when posted, back only when its completion is reaped —
/// and `msg` points into the record itself (name, buffer, control), all of which the kernel
/// writes or reads after the posting call has returned.
#[repr(C)]
pub(crate) struct OvDatagram {
    overlapped: OVERLAPPED,
    wsabuf: ws::WSABUF,
    /// The message `WSARecvMsg` / `WSASendMsg` take: `name` → `from`, `lpBuffers` → `wsabuf`,
    /// `Control` → `control`. The kernel writes `namelen`, `Control.len` and `dwFlags` at a
    /// receive's completion. (`WSARecvFrom`, the fallback, uses `namelen` and `dwFlags` only.)
    msg: ws::WSAMSG,
    /// The sender's address, written by the kernel at completion; the send's destination.
    from: ws::SOCKADDR_STORAGE,
    /// Where the datagram arrived (`IN_PKTINFO` / `IN6_PKTINFO`), then where its answer leaves
    /// from (`crate::sys::PacketInfo`).
    control: PacketInfo,
    /// Posted as a send (else as a receive).
    sending: bool,
    /// Send: the datagram's length.
    len: usize,
    buf: Vec<u8>,
}

// SAFETY: a record not in flight is owned data (a Vec, integers, an address); the raw
// `hEvent` it may hold is a kernel handle or an opaque context value, usable from any thread.
unsafe impl Send for OvDatagram {}

impl OvDatagram {
    /// A new record with a buffer of `size` bytes.
    fn new(size: usize) -> Box<OvDatagram> {
        Box::new(OvDatagram {
            // SAFETY: OVERLAPPED is plain old data; all-zero is its initial state.
            overlapped: unsafe { std::mem::zeroed() },
            wsabuf: ws::WSABUF {
                len: 0,
                buf: std::ptr::null_mut(),
            },
            // SAFETY: WSAMSG is plain old data (integers and null pointers); `post` points it
            // into the record before every use.
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: SOCKADDR_STORAGE is plain old data (a family and bytes).
            from: unsafe { std::mem::zeroed() },
            control: PacketInfo::default(),
            sending: false,
            len: 0,
            buf: vec![0; size],
        })
    }

    /// The outcome the kernel stored in the record's `OVERLAPPED` (a datagram cut short:
    /// `ERROR_MORE_DATA`). Call only on a reaped record.
    pub fn result(&self) -> io::Result<usize> {
        stored_result(&self.overlapped)
    }

    /// A completed receive's `MSG_TRUNC` (Windows may report a cut datagram this way as
    /// well as by an error).
    fn cut(&self) -> bool {
        self.msg.dwFlags & ws::MSG_TRUNC != 0
    }

    /// Where a completed receive's datagram arrived (`None`: not reported — a socket that did
    /// not ask, or the `WSARecvFrom` fallback).
    pub fn arrival(&self) -> Option<Arrival> {
        self.control.arrival(self.msg.Control.len as usize)
    }

    /// The sender's address (of a completed receive; a send's destination).
    pub fn peer(&self) -> Option<SocketAddr> {
        let len = usize::try_from(self.msg.namelen).unwrap_or(0);
        match self.from.ss_family {
            ws::AF_INET if len >= size_of::<ws::SOCKADDR_IN>() => {
                // SAFETY: the family says the storage holds a SOCKADDR_IN (which it is large
                // and aligned enough for).
                let a = unsafe { &*std::ptr::addr_of!(self.from).cast::<ws::SOCKADDR_IN>() };
                // SAFETY: every variant of the address union is four bytes of plain data.
                let ip = u32::from_be(unsafe { a.sin_addr.S_un.S_addr });
                Some(SocketAddrV4::new(ip.into(), u16::from_be(a.sin_port)).into())
            }
            ws::AF_INET6 if len >= size_of::<ws::SOCKADDR_IN6>() => {
                // SAFETY: as above, for a SOCKADDR_IN6.
                let a = unsafe { &*std::ptr::addr_of!(self.from).cast::<ws::SOCKADDR_IN6>() };
                // SAFETY: every variant of the address union is sixteen bytes of plain data.
                let ip = unsafe { a.sin6_addr.u.Byte };
                // SAFETY: the scope id union is a u32 either way.
                let scope = unsafe { a.Anonymous.sin6_scope_id };
                Some(
                    SocketAddrV6::new(ip.into(), u16::from_be(a.sin6_port), a.sin6_flowinfo, scope)
                        .into(),
                )
            }
            _ => None,
        }
    }
}

// SAFETY: #[repr(C)], `overlapped` first.
unsafe impl Record for OvDatagram {}

/// Takes back the datagram record a completion names (a port's `lpOverlapped`, a routine's
/// argument).
///
/// # Safety
/// `overlapped` must be the `OVERLAPPED*` of an [`OvDatagram`] posted by an [`OvUdpEcho`], whose
/// completion is being reaped now, once.
pub(crate) unsafe fn reclaim_datagram(
    overlapped: *mut OVERLAPPED,
    stats: &Stats,
) -> Box<OvDatagram> {
    // SAFETY: forwarded contract.
    unsafe { reclaim_as(overlapped, stats) }
}

/// What a receive's outcome means for the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A whole datagram of this many bytes.
    Whole(usize),
    /// The datagram was larger than the buffer (`WSAEMSGSIZE`, `ERROR_MORE_DATA`).
    Truncated,
    /// Cancelled or the socket closed (`ERROR_OPERATION_ABORTED`; Wine:
    /// `ERROR_HANDLES_CLOSED`).
    Aborted,
    /// An ICMP error for an earlier send (`WSAECONNRESET` and kin) or another error that
    /// concerns one datagram: nothing to answer, receive again.
    Nothing,
}

/// Classifies a receive's outcome, in every form the three notifications report it.
pub(crate) fn classify(result: &io::Result<usize>) -> Received {
    let e = match result {
        Ok(n) => return Received::Whole(*n),
        Err(e) => e,
    };
    match e.raw_os_error().map(|c| c as u32) {
        Some(c) if c == ws::WSAEMSGSIZE as u32 || c == ERROR_MORE_DATA => Received::Truncated,
        Some(c)
            if c == ERROR_OPERATION_ABORTED
                || c == ERROR_HANDLES_CLOSED
                || c == ws::WSA_OPERATION_ABORTED as u32
                || c == ws::WSAEINTR as u32 =>
        {
            Received::Aborted
        }
        _ => Received::Nothing,
    }
}

/// The UDP echo of one overlapped model, on posted receives and sends: the socket, the
/// records in flight, the spare ones (the readiness models' is `crate::udp::ReadinessUdpEcho`).
///
/// Not thread-safe by itself: the completion-port model keeps it behind a mutex; the other
/// two use it from one thread (the one that posts, so that its exit cannot cancel anything).
pub(crate) struct OvUdpEcho {
    socket: RawSocket,
    /// `WSARecvMsg` (`None`: the provider refused it; receives fall back to `WSARecvFrom`,
    /// and answers leave from wherever the route picks).
    recv_msg: Option<RecvMsg>,
    stats: Arc<Stats>,
    /// The echo-loop rule (`crate::udp::LoopGuard`), asked before every answer.
    guard: Arc<LoopGuard>,
    trace: Trace,
    echo: bool,
    size: usize,
    recvs: usize,
    sends: usize,
    in_flight: Vec<InFlight<OvDatagram>>,
    // Boxed on purpose (clippy::vec_box): a record is posted with `Box::into_raw` (its address
    // is the OVERLAPPED the kernel writes) and reclaimed as a Box; a spare keeps its
    // allocation, so re-posting it allocates nothing.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<OvDatagram>>,
    stopped: bool,
    /// Where the last whole datagram arrived, as its receive reported it.
    last_arrival: Option<Arrival>,
    /// Receives completed this turn, and how many a turn may re-post (`None`: no limit).
    this_turn: usize,
    budget: Option<usize>,
    /// Who reaps the completions (`("worker", 1)`), named in `--trace` lines.
    pub via: Option<(&'static str, usize)>,
}

impl OvUdpEcho {
    /// Serves `socket` (the server's, `ctx.udp`, which outlives the model). Turns
    /// `SIO_UDP_CONNRESET` off. Nothing is posted until [`OvUdpEcho::arm`].
    pub fn new(socket: &UdpSocket, ctx: &Ctx) -> OvUdpEcho {
        let raw = socket.as_raw_socket();
        if let Err(e) = disable_connreset(raw) {
            log::debug!("udp: SIO_UDP_CONNRESET refused ({e}): WSAECONNRESET is re-posted over");
        }
        let recv_msg = match RecvMsg::load(raw) {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!(
                    "udp: WSARecvMsg unavailable ({e}): receiving with WSARecvFrom, answers leave \
                     from the address the route picks"
                );
                None
            }
        };
        OvUdpEcho {
            socket: raw,
            recv_msg,
            stats: Arc::clone(&ctx.stats),
            guard: Arc::clone(&ctx.udp_guard),
            trace: ctx.trace.clone(),
            echo: ctx.service == ServiceKind::Echo,
            size: ctx.udp_max_datagram,
            recvs: 0,
            sends: 0,
            in_flight: Vec::with_capacity(UDP_RECVS + UDP_SENDS),
            spare: Vec::new(),
            stopped: false,
            last_arrival: None,
            this_turn: 0,
            budget: None,
            via: None,
        }
    }

    /// Re-posts receives for at most `budget` completed ones per turn ([`OvUdpEcho::new_turn`]).
    /// A thread that reaps inside its wait (routines) or loops until nothing is complete
    /// (events) needs it: under a flood every re-posted receive completes at once, and the
    /// thread would never get back to its loop (to see shutdown, to serve its other sockets).
    pub fn with_turn_budget(mut self, budget: usize) -> OvUdpEcho {
        self.budget = Some(budget);
        self
    }

    /// The model's loop began a turn: the budget is whole again; post the receives it held back.
    pub fn new_turn(&mut self, notify: Notify) {
        self.this_turn = 0;
        self.arm(notify);
    }

    /// The budget ran out with receives held back: the model should start a new turn without
    /// waiting (a zero timeout), or the socket would go unread.
    pub fn wants_turn(&self) -> bool {
        !self.stopped && self.recvs < UDP_RECVS && self.budget.is_some_and(|b| self.this_turn >= b)
    }

    /// After a completion: keep receiving, unless this turn's budget is spent.
    fn rearm(&mut self, notify: Notify) {
        if self.budget.is_none_or(|b| self.this_turn < b) {
            self.arm(notify);
        }
    }

    /// Where the last whole datagram received arrived (`None`: not reported, or none yet).
    #[allow(dead_code)] // the tests'
    pub fn last_arrival(&self) -> Option<Arrival> {
        self.last_arrival
    }

    /// Records the kernel holds (receives and sends).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Keeps [`UDP_RECVS`] receives posted (none once stopped).
    pub fn arm(&mut self, notify: Notify) {
        while !self.stopped && self.recvs < UDP_RECVS {
            let mut d = self
                .spare
                .pop()
                .unwrap_or_else(|| OvDatagram::new(self.size));
            d.sending = false;
            let len = d.buf.len();
            match self.post(d, notify, len, PacketInfo::LEN) {
                Ok(()) => self.recvs += 1,
                Err((d, e)) => {
                    log::error!("udp: cannot post a receive: {e}");
                    self.spare.push(d);
                    break;
                }
            }
        }
    }

    /// Feeds back a reaped record: echo a whole datagram, count the rest, keep receiving.
    pub fn complete(&mut self, d: Box<OvDatagram>, result: io::Result<usize>, notify: Notify) {
        let ptr = std::ptr::addr_of!(*d).cast_mut().cast::<OVERLAPPED>();
        match self.in_flight.iter().position(|f| f.overlapped() == ptr) {
            Some(i) => {
                self.in_flight.swap_remove(i);
            }
            None => debug_assert!(false, "a datagram record that was not in flight"),
        }
        let via = self
            .via
            .map_or(String::new(), |(what, n)| format!(" ({what} {n})"));
        if d.sending {
            self.sends -= 1;
            trace_event!(
                self.trace,
                "completion sendmsg s={} {}{via}",
                self.socket,
                match &result {
                    Ok(n) => format!("bytes={n}"),
                    Err(e) => format!("error={e}"),
                }
            );
            self.stats.count_answer(d.len, result);
            self.spare.push(d);
            return self.rearm(notify);
        }
        self.recvs -= 1;
        self.this_turn += 1;
        let outcome = match classify(&result) {
            Received::Whole(_) if d.cut() => Received::Truncated,
            o => o,
        };
        trace_event!(
            self.trace,
            "completion recvmsg s={} {} from={} to={}{via}",
            self.socket,
            match (&result, outcome) {
                (_, Received::Truncated) => "truncated".to_string(),
                (Ok(n), _) => format!("bytes={n}"),
                (Err(e), _) => format!("error={e}"),
            },
            d.peer().map_or("?".to_string(), |p| p.to_string()),
            d.arrival().map_or("?".to_string(), |a| a.addr.to_string())
        );
        match outcome {
            Received::Whole(n) => {
                self.stats.count_datagram_in(n, false);
                self.last_arrival = d.arrival();
                if self.guard.drops(d.peer(), &self.stats) {
                    self.spare.push(d);
                    return self.rearm(notify);
                }
                self.answer(d, n, notify);
                return self.rearm(notify);
            }
            Received::Truncated => {
                self.stats.count_datagram_in(0, true);
                log::debug!(
                    "udp: a datagram from {:?} is larger than {} bytes: dropped",
                    d.peer(),
                    d.buf.len()
                );
            }
            Received::Aborted => {}
            Received::Nothing => {
                if let Err(e) = &result {
                    log::debug!("udp: receive failed, receiving again: {e}");
                }
            }
        }
        self.spare.push(d);
        self.rearm(notify);
    }

    /// Sends the `n` bytes a receive put in `d` back to their sender, from the address they
    /// were sent to when [`reply_source`] allows it, or counts the answer dropped (stopped,
    /// discard service, too many sends in flight, a send refused at once).
    fn answer(&mut self, mut d: Box<OvDatagram>, n: usize, notify: Notify) {
        if self.stopped || !self.echo || self.sends >= UDP_SENDS {
            self.stats.count_datagram_out(None);
            self.spare.push(d);
            return;
        }
        d.sending = true;
        d.len = n;
        let control_len = match d.arrival().and_then(reply_source) {
            Some(from) => d.control.source(from),
            None => 0,
        };
        match self.post(d, notify, n, control_len) {
            Ok(()) => self.sends += 1,
            Err((d, e)) => {
                log::debug!("udp: answer dropped: {e}");
                self.stats.count_datagram_out(None);
                self.spare.push(d);
            }
        }
    }

    /// Reaps every record whose completion is stored, for the event model (after its event
    /// fired and was reset); true if any was. Posting resets the event, so call again after
    /// a pass that reaped (and so posted) something, until one reaps nothing.
    pub fn reap_completed(&mut self, notify: Notify) -> bool {
        let mut reaped = false;
        for f in self.in_flight.clone() {
            // SAFETY: `f` is in flight: listed in `in_flight`, which `complete` (the only
            // path to a reclaim) updates.
            if !unsafe { f.is_complete() } {
                continue;
            }
            // SAFETY: its outcome is stored, and this is its only reclaim (`complete` takes
            // it off the list).
            let d = unsafe { f.reclaim(&self.stats) };
            let result = d.result();
            self.complete(d, result, notify);
            reaped = true;
        }
        reaped
    }

    /// Shutdown began: post nothing more and cancel what is pending (`CancelIoEx`); the
    /// aborted records still come back through the model's notification.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.in_flight.is_empty() {
            return;
        }
        // The socket is the server's, open.
        cancel_all(self.socket, &self.stats);
    }

    /// Posts `d`: a receive of up to `len` bytes with room for `control_len` bytes of packet
    /// information, or a send of `buf[..len]` to `from` with the `control_len` bytes of
    /// `control` that [`OvUdpEcho::answer`] wrote (0: none, the route picks the source).
    fn post(
        &mut self,
        d: Box<OvDatagram>,
        notify: Notify,
        len: usize,
        control_len: usize,
    ) -> Result<(), (Box<OvDatagram>, io::Error)> {
        let ptr = Box::into_raw(d);
        // SAFETY: `ptr` is the record just released from its box; nothing else holds it
        // until the call below hands it to the kernel, and every pointer the message holds
        // is into the record (which stays where it is until its completion is reaped).
        let rc = unsafe {
            let d = &mut *ptr;
            d.overlapped = std::mem::zeroed();
            d.overlapped.hEvent = notify.h_event();
            d.wsabuf = ws::WSABUF {
                len: len.min(d.buf.len()) as u32,
                buf: d.buf.as_mut_ptr(),
            };
            if !d.sending {
                d.msg.namelen = size_of::<ws::SOCKADDR_STORAGE>() as i32;
            }
            let control = d.control.wsabuf(control_len);
            d.msg = ws::WSAMSG {
                name: std::ptr::addr_of_mut!((*ptr).from).cast(),
                namelen: d.msg.namelen,
                lpBuffers: std::ptr::addr_of_mut!((*ptr).wsabuf),
                dwBufferCount: 1,
                Control: control,
                dwFlags: 0,
            };
            let msg = std::ptr::addr_of_mut!((*ptr).msg);
            let ov = std::ptr::addr_of_mut!((*ptr).overlapped);
            self.stats.syscalls.fetch_add(1, Relaxed);
            match (d.sending, self.recv_msg) {
                (true, _) => ws::WSASendMsg(
                    self.socket as ws::SOCKET,
                    msg,
                    0,
                    std::ptr::null_mut(),
                    ov,
                    notify.routine(),
                ),
                (false, Some(recv_msg)) => {
                    recv_msg.call(self.socket, msg, std::ptr::null_mut(), ov, notify.routine())
                }
                (false, None) => {
                    // The fallback: no packet information comes back.
                    d.msg.Control.len = 0;
                    ws::WSARecvFrom(
                        self.socket as ws::SOCKET,
                        std::ptr::addr_of!((*ptr).wsabuf),
                        1,
                        std::ptr::null_mut(),
                        std::ptr::addr_of_mut!((*ptr).msg.dwFlags),
                        std::ptr::addr_of_mut!((*ptr).from).cast(),
                        std::ptr::addr_of_mut!((*ptr).msg.namelen),
                        ov,
                        notify.routine(),
                    )
                }
            }
        };
        // SAFETY: `ptr` came from Box::into_raw above and `rc` is the posting call's.
        let f = unsafe { outcome(ptr, rc, &self.stats) }?;
        self.in_flight.push(f);
        Ok(())
    }
}

impl Drop for OvUdpEcho {
    fn drop(&mut self) {
        if !self.in_flight.is_empty() {
            // The records are leaked (never freed under the kernel); say so.
            log::error!(
                "udp: {} datagram operations never completed: leaking their records",
                self.in_flight.len()
            );
        }
    }
}

/// `WSAIoctl(SIO_UDP_CONNRESET, FALSE)`: no `WSAECONNRESET` on receives for ICMP
/// port-unreachable answers to earlier sends.
fn disable_connreset(socket: RawSocket) -> io::Result<()> {
    let off: u32 = 0;
    let mut returned = 0u32;
    // SAFETY: the input is a live 4-byte BOOL, there is no output buffer, and the call is
    // synchronous (no OVERLAPPED).
    let rc = unsafe {
        ws::WSAIoctl(
            socket as ws::SOCKET,
            ws::SIO_UDP_CONNRESET,
            std::ptr::addr_of!(off).cast(),
            size_of::<u32>() as u32,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(crate::sys::last_wsa_error());
    }
    Ok(())
}
