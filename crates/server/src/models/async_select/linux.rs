//! Signal-driven I/O: every socket queues a real-time signal to the serving thread, which reads
//! them as messages from a signalfd.

use crate::accept::Acceptor;
use crate::ctx::Ctx;
use crate::models::Turn;
use crate::session::{Session, Status, READ_CHUNK};
use crate::sys::signalfd::{self, SigInfo, SignalQueue};
use crate::sys::wait_readable;
use crate::trace::trace_event;
use crate::udp::{self, Drained, ReadinessUdpEcho};
use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub(crate) const MECHANISM: &str = "signal-driven I/O (F_SETSIG + signalfd)";

pub(crate) fn availability() -> Result<(), String> {
    signalfd::notification_signal()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Reads one session may do per turn before yielding to the others.
const READS_PER_TURN: usize = 16;
/// Connections accepted per turn.
const ACCEPT_BATCH: usize = 256;
/// Signals read from the signalfd per read (the message loop's batch).
const SIGNAL_BATCH: usize = 64;
/// An overflow is logged the first time and then once per this many.
const OVERFLOW_LOG_EVERY: u64 = 1000;

// `si_band` bits: the kernel's POLL_IN is POLLIN | POLLRDNORM | POLLMSG, POLL_OUT is
// POLLOUT | POLLWRNORM | POLLWRBAND, POLL_ERR is POLLERR, POLL_HUP is POLLHUP | POLLERR.
const BAND_IN: i64 = (libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM) as i64;
const BAND_OUT: i64 = (libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND) as i64;
const BAND_CLOSE: i64 = (libc::POLLERR | libc::POLLHUP) as i64;

/// A socket that announces its events with signals; dropping it first stops the signals
/// (`O_ASYNC` off), then closes the socket.
struct Notifying<T> {
    fd: RawFd,
    inner: T,
}

impl<T> Notifying<T> {
    fn new(fd: RawFd, inner: T, tid: libc::pid_t, sig: libc::c_int) -> io::Result<Self> {
        signalfd::notify_thread(fd, tid, sig)?;
        Ok(Notifying { fd, inner })
    }
}

impl<T> Deref for Notifying<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Notifying<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T> Drop for Notifying<T> {
    fn drop(&mut self) {
        if let Err(e) = signalfd::stop_notifying(self.fd) {
            log::debug!("async-select: cannot clear O_ASYNC on fd {}: {e}", self.fd);
        }
    }
}

type Client = Notifying<Session>;

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    if let Some(n) = ctx.sockets_per_window {
        log::warn!(
            "--sockets-per-window {n} is Windows-only (a window's message queue is per thread; \
             the real-time signal queue here is per user, whatever the thread): ignored"
        );
    }
    let sig = signalfd::notification_signal()?;
    let tid = signalfd::current_thread_id();
    let waker = ctx.shutdown.register()?;
    // Declared before the sockets, so dropped after them: by then no socket can send a signal,
    // and the queue's drop discards what is still pending and restores the thread's mask.
    let queue = SignalQueue::new(&[sig, libc::SIGIO])?;
    let listener_fd = listener.as_ref().map_or(-1, |l| l.as_raw_fd());
    let mut acceptor = match listener {
        Some(l) => Some(Notifying::new(
            listener_fd,
            Acceptor::new(l, ctx),
            tid,
            sig,
        )?),
        None => None,
    };
    let mut model = Loop::new(ctx, sig, tid, listener_fd)?;
    let mut signals = SignalQueue::buffer(SIGNAL_BATCH);
    let mut touched: Vec<RawFd> = Vec::new();
    let mut turn = Turn::new(ctx);

    loop {
        if turn.drain_begins(&ctx.shutdown) {
            acceptor = None;
            model.udp = None;
            model.udp_ready = false;
        }
        if turn.drain_is_over(model.clients.len()) {
            // Messages still queued name sockets that are gone: show them to a tracer anyway,
            // since each is a notification that arrived.
            if ctx.trace.is_on() {
                let _ = model.take_messages(&queue, &mut signals, &mut touched);
            }
            return Ok(());
        }
        if let Some(now) = turn.sweep_due() {
            // An fd left in `ready` may be reused by a later accept: serving it is harmless.
            let sweep = turn.sweep();
            model.clients.retain(|_, c| c.expired(sweep, now).is_none());
        }
        if let Some(a) = acceptor.as_mut() {
            if model.listener_ready && a.is_accepting() {
                model.accept(a)?;
            }
        }
        let timeout = model.wait_limit(acceptor.as_deref_mut(), &turn);
        let (queued, woken) = wait_readable(queue.as_raw_fd(), waker.as_raw_fd(), timeout)?;
        ctx.stats.count_wait();
        if woken {
            waker.reset();
        }
        model.serve_turn(queued.then_some(&queue), &mut signals, &mut touched)?;
    }
}

/// What the message loop keeps between turns.
struct Loop<'a> {
    ctx: &'a Ctx,
    sig: libc::c_int,
    tid: libc::pid_t,
    listener_fd: RawFd,
    /// The UDP socket, signalling this thread until shutdown begins.
    udp: Option<Notifying<&'a UdpSocket>>,
    udp_fd: RawFd,
    udp_echo: Option<ReadinessUdpEcho>,
    /// The UDP socket announced datagrams not all answered yet (no new signal comes for them).
    udp_ready: bool,
    clients: HashMap<RawFd, Client>,
    scratch: Vec<u8>,
    /// Sessions that used their read budget with data still waiting: no new signal will come
    /// for those bytes.
    ready: Vec<RawFd>,
    /// The listener announced connections not all accepted yet.
    listener_ready: bool,
}

impl<'a> Loop<'a> {
    /// The loop's state before the first turn, the UDP socket signalling this thread.
    fn new(
        ctx: &'a Ctx,
        sig: libc::c_int,
        tid: libc::pid_t,
        listener_fd: RawFd,
    ) -> io::Result<Loop<'a>> {
        // The UDP socket announces datagrams with the same signal (FD_READ only: its sends
        // never wait for room); dropped (O_ASYNC off) when shutdown begins.
        let udp = match &ctx.udp {
            Some(u) => Some(Notifying::new(u.as_raw_fd(), u, tid, sig)?),
            None => None,
        };
        Ok(Loop {
            ctx,
            sig,
            tid,
            listener_fd,
            udp_fd: udp.as_ref().map_or(-1, |u| u.fd),
            udp,
            udp_echo: ctx.udp.as_ref().map(|_| ReadinessUdpEcho::new(ctx)),
            // Datagrams that came before O_ASYNC was set announced nothing.
            udp_ready: ctx.udp.is_some(),
            clients: HashMap::new(),
            scratch: vec![0u8; READ_CHUNK],
            ready: Vec::new(),
            // Connections queued before O_ASYNC was set announced nothing: accept at once.
            listener_ready: true,
        })
    }

    /// The most the wait may block: not at all while something is left to do at once
    /// (sessions with bytes to read, connections to accept, datagrams), else [`Turn`]'s limit
    /// with the accept pause.
    fn wait_limit(&self, acceptor: Option<&mut Acceptor>, turn: &Turn) -> Option<Duration> {
        // At the cap nothing is accepted until a connection closes (this thread closes them
        // all, so the next turn sees it): no zero timeout meanwhile.
        let (accept_now, pause) = match acceptor.filter(|_| self.listener_ready) {
            Some(a) => {
                let pause = a.pause_remaining();
                (pause.is_none() && !a.at_cap(), pause)
            }
            None => (false, None),
        };
        if !self.ready.is_empty() || accept_now || self.udp_ready {
            Some(Duration::ZERO)
        } else {
            turn.wait_limit(pause)
        }
    }

    /// After the wait: the sessions that used their read budget last turn first, then the
    /// messages of `queue` (when the wait found some), then the UDP socket.
    fn serve_turn(
        &mut self,
        queue: Option<&SignalQueue>,
        signals: &mut [SigInfo],
        touched: &mut Vec<RawFd>,
    ) -> io::Result<()> {
        for fd in std::mem::take(&mut self.ready) {
            self.serve(fd);
        }
        if let Some(queue) = queue {
            if self.take_messages(queue, signals, touched)? {
                self.rescan();
            }
            touched.sort_unstable();
            touched.dedup();
            for fd in touched.drain(..) {
                self.serve(fd);
            }
        }
        self.serve_udp();
        Ok(())
    }

    /// Reads every queued message, batch by batch, and takes each ([`Loop::note`]); true if
    /// one was the overflow `SIGIO`.
    fn take_messages(
        &mut self,
        queue: &SignalQueue,
        signals: &mut [SigInfo],
        touched: &mut Vec<RawFd>,
    ) -> io::Result<bool> {
        let mut overflow = false;
        loop {
            let n = queue.read(signals)?;
            self.ctx.stats.syscalls.fetch_add(1, Relaxed);
            for info in &signals[..n] {
                if info.ssi_signo == libc::SIGIO as u32 {
                    overflow = true;
                } else if info.ssi_signo == self.sig as u32 {
                    self.note(info, touched);
                }
            }
            if n < signals.len() {
                return Ok(overflow);
            }
        }
    }

    /// Takes one message: sets the flags of the socket it names and lists the socket to serve.
    fn note(&mut self, info: &SigInfo, touched: &mut Vec<RawFd>) {
        let fd = info.ssi_fd;
        let band = info.ssi_band as i64;
        let trace = &self.ctx.trace;
        if fd == self.listener_fd {
            trace_event!(trace, "FD_ACCEPT fd={fd}");
            self.listener_ready = true;
            return;
        }
        if fd == self.udp_fd {
            if band & BAND_IN != 0 {
                trace_event!(trace, "FD_READ fd={fd} (udp)");
                self.udp_ready = self.udp.is_some();
            }
            return;
        }
        // Every message is traced as it arrives, also one for a socket already served to its
        // end (its bytes were read while the message sat in the queue).
        let known = self.clients.contains_key(&fd);
        let gone = if known {
            ""
        } else {
            " (socket already closed)"
        };
        if band & BAND_IN != 0 {
            trace_event!(trace, "FD_READ fd={fd}{gone}");
        }
        if band & BAND_OUT != 0 {
            trace_event!(trace, "FD_WRITE fd={fd}{gone}");
        }
        if band & BAND_CLOSE != 0 {
            trace_event!(trace, "FD_CLOSE fd={fd}{gone}");
        }
        // A signal for a socket closed since (or for a descriptor now reused by a new client)
        // is ignored or costs the new client a call that says EAGAIN.
        let Some(s) = self.clients.get_mut(&fd) else {
            return;
        };
        if band & (BAND_IN | BAND_CLOSE) != 0 {
            s.readable = true;
        }
        if band & (BAND_OUT | BAND_CLOSE) != 0 {
            s.writable = true;
        }
        touched.push(fd);
    }

    /// The signal queue overflowed, so notifications were lost: act as if every socket had
    /// announced everything.
    fn rescan(&mut self) {
        let n = self.ctx.stats.notification_overflows.fetch_add(1, Relaxed) + 1;
        if n == 1 || n % OVERFLOW_LOG_EVERY == 0 {
            log::warn!(
                "async-select: the real-time signal queue overflowed ({n} times so far; \
                 RLIMIT_SIGPENDING); rescanning every socket"
            );
        }
        trace_event!(
            self.ctx.trace,
            "overflow: rescanning {} sockets",
            self.clients.len() + 1
        );
        self.listener_ready = true;
        self.udp_ready = self.udp.is_some();
        let fds: Vec<RawFd> = self.clients.keys().copied().collect();
        for fd in fds {
            if let Some(s) = self.clients.get_mut(&fd) {
                s.readable = true;
                s.writable = true;
            }
            self.serve(fd);
        }
    }

    /// Accepts until `EAGAIN` (or a batch), sets every new socket up to signal this thread.
    fn accept(&mut self, acceptor: &mut Acceptor) -> io::Result<()> {
        let mut fresh = Vec::new();
        let n = acceptor.accept_batch(ACCEPT_BATCH, &self.ctx.stats, |stream| {
            let fd = stream.as_raw_fd();
            trace_event!(self.ctx.trace, "accept fd={fd}");
            if let Err(e) = signalfd::notify_thread(fd, self.tid, self.sig) {
                log::warn!("async-select: cannot set up signal-driven I/O on a socket: {e}");
                self.ctx.stats.refused.fetch_add(1, Relaxed);
                return;
            }
            let mut s = Notifying {
                fd,
                inner: Session::new(stream, self.ctx),
            };
            s.edge_triggered = true;
            // Signals announce the FIN as POLL_IN, like data: a short read never proves the
            // socket drained, so read until EAGAIN.
            s.peer_closing = true;
            // Data that came before O_ASYNC was set announced nothing.
            s.readable = true;
            self.clients.insert(fd, s);
            fresh.push(fd);
        })?;
        // Fewer than a batch: the backlog is empty (or accepting paused or at the cap: keep the
        // flag, the connections still waiting will announce nothing new).
        if n < ACCEPT_BATCH && acceptor.pause_remaining().is_none() && !acceptor.at_cap() {
            self.listener_ready = false;
        }
        for fd in fresh {
            self.serve(fd);
        }
        Ok(())
    }

    /// Answers waiting datagrams, up to the budget; stays ready if it ran out.
    fn serve_udp(&mut self) {
        let (Some(u), Some(echo)) = (&self.udp, &mut self.udp_echo) else {
            return;
        };
        if self.udp_ready {
            self.udp_ready = echo.serve(u, self.ctx, udp::BUDGET) == Drained::More;
        }
    }

    /// Pumps one session; closes it when it is over, lists it when it has more to read.
    fn serve(&mut self, fd: RawFd) {
        let Some(s) = self.clients.get_mut(&fd) else {
            return;
        };
        match s.pump(&mut self.scratch, READS_PER_TURN) {
            Status::Open => {}
            Status::MoreToRead => self.ready.push(fd),
            Status::Closed => drop(self.clients.remove(&fd)),
        }
    }
}
