//! Groups of 64 handles: how the two models that wait in `WSAWaitForMultipleEvents`
//! (`event-select`, `overlapped-event`) serve more sockets than one wait can hold.
//!
//! One wait takes at most 64 handles (`WSA_MAXIMUM_WAIT_EVENTS`). So connections are served in
//! *groups*, one thread each, and every group's wait holds:
//!
//! | slot | handle |
//! |---|---|
//! | 0 | the shutdown waker's event (shared by every thread of the model, see below) |
//! | 1 | the group's hand-off event: new connections are waiting in its channel |
//! | 2.. | `M::HANDLES` events per connection |
//!
//! which leaves 62 handles for connections, so a group holds `62 / M::HANDLES` of them
//! ([`capacity`]):
//!
//! | model | events per connection | connections per group |
//! |---|---|---|
//! | `event-select` | 1: the socket is selected on it (`WSAEventSelect`) | 62 |
//! | `overlapped-event` | 2: its receive's and its send's, each in its own record's `hEvent` | 31 |
//!
//! **Accepting.** The thread that calls [`serve_with`] or [`serve_accept_ex`] only accepts.
//! Each accepted socket becomes a member (`adopt`, on the accepting thread) and goes to the
//! first group with room; when every group is full a new group thread starts with it. Hand-off
//! is a channel plus the group's event, set after the send; the group resets the event before
//! it empties the channel, so no hand-off is missed. A group's `load` counts its members plus
//! the ones on their way: the acceptor reserves a slot (compare-and-swap below capacity) before
//! it sends, so a group never receives more than it can wait on. It accepts in one of two ways:
//! - **readiness** ([`serve_with`], `event-select`): its listener is selected for `FD_ACCEPT`
//!   on an event of its own, and it waits on that and the waker, then calls `accept`. Wine
//!   re-enables `FD_ACCEPT` only with an accept that succeeds (Windows: with any accept call)
//!   and can signal it stale, for a connection already taken; after a wake-up that accepted
//!   nothing the acceptor therefore waits in `select` on the listener and the waker's socket
//!   until an accept succeeds again (see `accept_loop`). An accepted socket inherits the
//!   listener's selection; the model's `adopt` deals with it.
//! - **completion** ([`serve_accept_ex`], `overlapped-event`): it keeps [`ACCEPTS_POSTED`]
//!   `AcceptEx` posted, each record with an event of its own in its `hEvent` (the book's
//!   sample: one event per `AcceptEx`), and waits on those events, the waker and the room
//!   signal. A completed accept's socket is finished (`SO_UPDATE_ACCEPT_CONTEXT`), handed to a
//!   group and the record posted again; the socket never had a `WSAEventSelect`. Never more
//!   accepts are posted than places left below `--max-conns` (none at the cap); out of
//!   sockets, posting pauses for the usual back-off. At shutdown `CancelIoEx` aborts the
//!   posted accepts, the listener is closed, and every record (each holds a socket) is reaped
//!   before the thread returns (see `accept_ex_loop`). Each posted accept counts in
//!   `Stats::ops_in_flight`, as `completion-port`'s do: at rest the model holds its posted
//!   accepts plus one zero-byte receive per idle connection.
//!
//! **Beside accepting.** A model may give the accepting thread one socket to serve itself
//! ([`Beside`], through [`serve_with`]): `event-select`'s UDP socket. Its event joins the
//! waker's and the listener's in that thread's wait (and its socket the `select` fallback), and
//! the handles above the one the wait names are probed, as a group does. Without a listener
//! (`--no-tcp`) the thread waits on the waker and that socket only.
//!
//! **Serving.** `WSAWaitForMultipleEvents` reports only the *lowest* signalled index. A group
//! that served only that one would starve its higher slots under load, so after every wake-up
//! it probes the handles above the one reported with a zero timeout, again and again, until none
//! is signalled: each turn serves every signalled handle once, in slot order. A member can also
//! ask to be served again without a signal ([`Flow::Again`]; the next wait then does not block).
//!
//! **Limits** (`crate::limits`). The accepting thread keeps the connection cap (a member
//! counts from `adopt` on, as its session is made there). Readiness: at the cap the
//! listener's event leaves the accepting thread's wait — `FD_ACCEPT` is not taken, nothing is
//! accepted and dropped, clients wait in the backlog — and a [`RoomSignal`] joins it, armed
//! before the cap is looked at again; a group that drops a member tells it, so the acceptor
//! wakes on the first close and accepts (falling back to `select` if the `FD_ACCEPT` seen at
//! the cap is not signalled again). Completion: no `AcceptEx` is posted past the places left,
//! and with fewer places than [`ACCEPTS_POSTED`] the room signal is armed, so a close wakes
//! the acceptor to post again. Each group sweeps its own members for the idle and write
//! timeouts ([`Member::expired`]), its wait bounded by the next sweep, and closes an expired
//! one as the drain does ([`Member::close`]: at once, or once its operations are reaped).
//!
//! **Retiring.** A group left without members for [`IDLE_LINGER`] retires: it swaps its load
//! from 0 to [`RETIRED`] (failing, and staying, if the acceptor has just reserved a slot) and
//! its thread ends; the acceptor joins it on its next turn. The linger keeps a server with a
//! single connection coming and going from starting a thread per connection. A group thread
//! never ends while a member has an operation in flight: Windows cancels the pending I/O a
//! thread issued (on a handle not bound to a completion port) when that thread exits.
//!
//! **Shutdown.** One [`Waker`] is registered for the whole model: its event is manual-reset, so
//! one `wake` releases every thread waiting on it. Nobody resets it; a thread that sees shutdown
//! requested stops including it in its wait (or it would spin). (A waker per group thread
//! would pile up: `Shutdown` keeps every waker it ever registered, and groups come and go.)
//! The acceptor then closes the listener and joins the groups; each group drains (serves its
//! connections until they end or the drain timeout passes), then asks every member to close
//! ([`Member::close`]) and waits, up to [`CLOSE_WAIT`], until each says it is done — a member
//! with overlapped operations in flight is done only when their completions have been reaped.

use crate::accept::{Acceptor, Backoff, ConnCap, RoomSignal};
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::log_every::log_every;
use crate::models::winio::{cancel_all, AcceptEx, InFlight, Notify, OvOp};
use crate::models::{min_timeout, Drain};
use crate::stats::Stats;
use crate::sys::event::MAX_WAIT;
use crate::sys::network_events::{event_select, network_events, FD_ACCEPT};
use crate::sys::select::{select, SocketSet};
use crate::sys::{is_out_of_descriptors, wait_any, Event, Wait, Waker};
use crate::trace::trace_event;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;

/// Wait slots every group spends on itself: the waker and the hand-off event.
const FIXED_SLOTS: usize = 2;
/// How long a group without members waits for one before its thread ends.
pub(crate) const IDLE_LINGER: Duration = Duration::from_secs(1);
/// How long a group waits, after the drain, for its members to finish closing (overlapped
/// operations to complete); past it, what is left is leaked rather than freed under the kernel.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// The load of a group whose thread has ended or is ending: no slot can be reserved.
pub(crate) const RETIRED: usize = usize::MAX;
/// Connections accepted per `FD_ACCEPT` before the acceptor looks at its waker again.
const ACCEPT_BATCH: usize = 256;

/// What a member wants after it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Wait for one of its handles to be signalled.
    Wait,
    /// Serve it again next turn ([`Member::again`]) without waiting for a signal.
    Again,
    /// It is over: drop it (its socket closes, its events after it).
    Done,
}

/// One connection of a group, as a model defines it: the event handles it waits on and what
/// it does when one is signalled.
///
/// A member fresh from `adopt` has posted nothing to the kernel: dropping it then is always
/// safe. Its first turn is an [`Member::again`] on its group's thread, which is where a model
/// makes its first call (a first `recv`, a first posted `WSARecv`).
pub(crate) trait Member: Send + Sized + 'static {
    /// Per-thread state the group's members share (a scratch buffer).
    type Local;
    /// How many wait slots one member takes: the handles `handle(0..HANDLES)`.
    const HANDLES: usize;

    /// Creates the per-thread state, once per group thread.
    fn local() -> Self::Local;
    /// The `k`-th event handle this member waits on; open for as long as the member lives.
    fn handle(&self, k: usize) -> HANDLE;
    /// Its `k`-th handle was signalled.
    fn signalled(&mut self, k: usize, local: &mut Self::Local) -> Flow;
    /// Its turn without a signal: after it returned [`Flow::Again`], and once when it joins.
    fn again(&mut self, local: &mut Self::Local) -> Flow;
    /// The sweep of the idle and write timeouts ([`crate::limits`]) at `now`: true (counted)
    /// if it expired; the group then closes it with [`Member::close`].
    fn expired(&mut self, sweep: &Sweep, now: Instant) -> bool;
    /// The drain is over, or it expired: close now. [`Flow::Done`] when the member can be dropped
    /// at once, [`Flow::Wait`] while operations are still in flight (their handles stay in the wait
    /// and later turns return `Done`).
    fn close(&mut self, local: &mut Self::Local) -> Flow;
    /// It joined group `group` (on the group's thread, before its first turn): a model may
    /// name the group in its `--trace` lines.
    fn joined(&mut self, _group: usize) {}
}

/// How many members one group holds: the wait slots left after the group's own two, divided
/// by the member's handles.
pub(crate) const fn capacity<M: Member>() -> usize {
    (MAX_WAIT - FIXED_SLOTS) / M::HANDLES
}

/// A socket the accepting thread serves itself, beside accepting: its event is one more handle
/// in the accepting thread's wait (`event-select`'s UDP socket, selected for `FD_READ`). A
/// datagram socket has no connections to hand to a group, and its turns are short (a bounded
/// number of datagrams), so accepting does not wait long behind it.
pub(crate) trait Beside {
    /// The event the accepting thread waits on for it; open for as long as this lives.
    fn handle(&self) -> HANDLE;
    /// Its socket, for the `select` the accepting thread waits in while `FD_ACCEPT` cannot be
    /// waited for (see `accept_loop`).
    fn socket(&self) -> RawSocket;
    /// Its event was signalled, its socket was readable, it asked to go again or it was just
    /// added: serve it. [`Flow::Again`] to be served next turn without waiting for a signal,
    /// [`Flow::Wait`] to wait for one; [`Flow::Done`] is taken as `Wait`. An error stops the
    /// model, as a listener's does.
    fn serve(&mut self) -> io::Result<Flow>;
}

/// Serves until shutdown and drain are over (`event-select`): this thread accepts, with
/// `FD_ACCEPT` and `accept`, groups of [`capacity`] members on threads of their own serve.
/// `adopt` turns an accepted socket into a member on the accepting thread (an error closes
/// the socket); `name` names the threads. With a listener or none (`--no-tcp`), and a socket
/// the accepting thread serves itself ([`Beside`]) or none. Without a listener the accepting
/// thread only waits on the waker and `beside`, and no group is ever started.
pub(crate) fn serve_with<M, A>(
    listener: Option<TcpListener>,
    beside: Option<&mut dyn Beside>,
    ctx: &Ctx,
    name: &str,
    adopt: A,
) -> io::Result<()>
where
    M: Member,
    A: FnMut(TcpStream) -> io::Result<M>,
{
    let listen_event = Event::new()?;
    if let Some(l) = &listener {
        // Also makes the listener (and every socket it accepts) non-blocking.
        event_select(l, &listen_event, FD_ACCEPT)?;
    }
    let intake = Intake::Ready {
        acceptor: listener.map(|l| Acceptor::new(l, ctx)),
        listen_event,
        beside,
    };
    serve_groups(intake, ctx, name, adopt)
}

/// [`serve_with`] accepting the overlapped way (`overlapped-event`): the accepting thread keeps
/// `AcceptEx` posted, each with an event of its own, instead of waiting for `FD_ACCEPT`
/// (see `accept_ex_loop`). The sockets it hands to `adopt` never had a `WSAEventSelect`.
pub(crate) fn serve_accept_ex<M, A>(
    listener: TcpListener,
    ctx: &Ctx,
    name: &str,
    adopt: A,
) -> io::Result<()>
where
    M: Member,
    A: FnMut(TcpStream) -> io::Result<M>,
{
    serve_groups(Intake::AcceptEx(listener), ctx, name, adopt)
}

/// How the accepting thread takes connections in.
enum Intake<'a> {
    /// `FD_ACCEPT` on the listener's event, then `accept` (`event-select`, or no listener),
    /// and maybe a socket served beside.
    Ready {
        acceptor: Option<Acceptor>,
        listen_event: Event,
        beside: Option<&'a mut dyn Beside>,
    },
    /// `AcceptEx` posted ahead, an event each (`overlapped-event`).
    AcceptEx(TcpListener),
}

/// The accepting thread and its groups, until shutdown and drain are over.
fn serve_groups<M, A>(intake: Intake<'_>, ctx: &Ctx, name: &str, adopt: A) -> io::Result<()>
where
    M: Member,
    A: FnMut(TcpStream) -> io::Result<M>,
{
    let waker = ctx.shutdown.register()?;
    let room = RoomSignal::new()?;
    std::thread::scope(|scope| {
        let mut groups = Groups {
            scope,
            ctx,
            waker: &waker,
            room: &room,
            name,
            list: Vec::new(),
            next_id: 0,
            first_error: None,
        };
        // If accepting fails (or panics), the groups must still end, or the scope would wait
        // for them forever: shut the whole model down.
        let stop = StopOnExit(ctx);
        let accepted = match intake {
            Intake::Ready {
                acceptor,
                listen_event,
                beside,
            } => accept_loop(
                acceptor,
                &listen_event,
                beside,
                ctx,
                &waker,
                &mut groups,
                adopt,
            ),
            Intake::AcceptEx(listener) => accept_ex_loop(listener, ctx, &waker, &mut groups, adopt),
        };
        drop(stop);
        let groups_result = groups.join_all();
        accepted.and(groups_result)
    })
}

/// What a handle in the accepting thread's wait stands for.
#[derive(Clone, Copy)]
enum Source {
    Waker,
    Beside,
    Listener,
    /// A connection closed while accepting stopped at the cap.
    Room,
}

/// The accepting thread's loop; returns when shutdown is requested (having closed the
/// listener) or the listener (or `beside`) fails.
fn accept_loop<'scope, 'env, M, A>(
    mut acceptor: Option<Acceptor>,
    listen_event: &Event,
    mut beside: Option<&mut dyn Beside>,
    ctx: &'env Ctx,
    waker: &Waker,
    groups: &mut Groups<'scope, 'env, M>,
    mut adopt: A,
) -> io::Result<()>
where
    M: Member,
    A: FnMut(TcpStream) -> io::Result<M>,
{
    let room = groups.room;
    // A client may have connected before the selection: try once without waiting.
    let mut accept_now = true;
    // Whether FD_ACCEPT can be waited for. Windows re-enables it with every accept call; Wine
    // only with an accept that *succeeds*, and it can signal an FD_ACCEPT whose connection an
    // earlier accept already took: the accept that follows finds nothing, and FD_ACCEPT stays
    // disabled while clients queue up. So after a wake-up that accepted nothing, the listener
    // is waited for with `select` (level-triggered) until an accept succeeds again.
    let mut fd_accept_enabled = true;
    // The accepts about to run follow an FD_ACCEPT (or a pause), not the first try.
    let mut woken = false;
    // Serve `beside` now: at first (what came before its selection), after its event, or
    // when it asked to go again.
    let mut beside_now = beside.is_some();
    loop {
        if ctx.shutdown.is_requested() {
            // Dropping the acceptor closes the listener; `beside` is not served any more.
            return Ok(());
        }
        groups.reap();
        if let Some(b) = beside.as_deref_mut().filter(|_| beside_now) {
            beside_now = b.serve()? == Flow::Again;
        }
        let ready = accept_now && acceptor.as_mut().is_some_and(|a| a.is_accepting());
        if let Some(acceptor) = acceptor.as_mut().filter(|_| ready) {
            accept_now = false;
            let n = acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| {
                trace_event!(ctx.trace, "accept s={}", stream.as_raw_socket());
                match adopt(stream) {
                    Ok(member) => groups.hand(member),
                    // Dropping the stream (inside adopt) closed it.
                    Err(e) => log::warn!("cannot take a connection into a group: {e}"),
                }
            })?;
            if n > 0 {
                fd_accept_enabled = true;
            } else if woken {
                fd_accept_enabled = false;
            }
            if n == ACCEPT_BATCH {
                accept_now = true; // more may be waiting: look at the waker, then go on
                continue;
            }
        }
        // At the connection cap the listener's event is left out of the wait (FD_ACCEPT is
        // not taken: nothing is accepted and dropped) and the groups' room signal goes in:
        // a member leaving wakes this thread.
        let accepting = acceptor
            .as_mut()
            .is_some_and(|a| a.is_accepting_armed(room));
        // A `beside` that asked to go again must not wait.
        let hurry = beside_now.then_some(Duration::ZERO);
        if let Some(acceptor) = acceptor
            .as_ref()
            .filter(|_| !fd_accept_enabled && accepting)
        {
            // The waker's socket is readable once shutdown is requested (never drained).
            let mut read = SocketSet::with_capacity(3);
            read.insert(acceptor.listener.as_raw_socket());
            read.insert(waker.as_raw_socket());
            if let Some(b) = &beside {
                read.insert(b.socket());
            }
            select(&mut read, &mut SocketSet::with_capacity(0), hurry)?;
            ctx.stats.count_wait();
            accept_now = read.contains(acceptor.listener.as_raw_socket());
            beside_now |= beside.as_ref().is_some_and(|b| read.contains(b.socket()));
            woken = true;
            continue;
        }
        // While accepting is paused (out of sockets), leave the listener's event out: a failed
        // accept re-enables FD_ACCEPT, so it would be signalled again at once.
        let mut handles = [waker.event_handle(); 4];
        let mut sources = [Source::Waker; 4];
        let mut n = 1;
        if let Some(b) = &beside {
            (handles[n], sources[n]) = (b.handle(), Source::Beside);
            n += 1;
        }
        if accepting {
            (handles[n], sources[n]) = (listen_event.handle(), Source::Listener);
            n += 1;
        } else if acceptor.is_some() {
            (handles[n], sources[n]) = (room.waker().event_handle(), Source::Room);
            n += 1;
        }
        let pause = acceptor.as_ref().and_then(|a| a.pause_remaining());
        let mut wait = wait_any(&handles[..n], min_timeout(hurry, pause), false)?;
        ctx.stats.count_wait();
        if matches!(wait, Wait::TimedOut) && pause.is_some() {
            // The pause is over: the event was consumed by the accept that failed, so try.
            accept_now = true;
            woken = true;
        }
        // WSAWaitForMultipleEvents names only the lowest signalled handle: probe the ones above
        // it, so a busy UDP socket cannot keep FD_ACCEPT from being seen (nor the reverse).
        let mut base = 0;
        while let Wait::Signalled(i) = wait {
            let slot = base + i;
            match sources[slot] {
                // Shutdown, seen at the top.
                Source::Waker => {}
                Source::Beside => beside_now = true,
                Source::Room => {
                    // Below the cap again: accept what waits (`select` finds out, if the
                    // FD_ACCEPT that came at the cap is not signalled again).
                    room.waker().reset();
                    accept_now = true;
                    woken = true;
                }
                Source::Listener => {
                    if let Some(acceptor) = &acceptor {
                        // Reads and clears the record (and resets the event); FD_ACCEPT is
                        // re-enabled by the accepts that follow.
                        let ne = network_events(&acceptor.listener, listen_event)?;
                        ctx.stats.syscalls.fetch_add(1, Ordering::Relaxed);
                        trace_event!(
                            ctx.trace,
                            "FD_ACCEPT s={}",
                            acceptor.listener.as_raw_socket()
                        );
                        if let Some(e) = ne.error(FD_ACCEPT) {
                            log::debug!("FD_ACCEPT carried an error: {e}");
                        }
                        accept_now = true;
                        woken = true;
                    }
                }
            }
            base = slot + 1;
            if base >= n {
                break;
            }
            wait = wait_any(&handles[base..n], Some(Duration::ZERO), false)?;
            ctx.stats.syscalls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `AcceptEx` the accepting thread of [`serve_accept_ex`] keeps posted (fewer below the
/// connection cap).
pub(crate) const ACCEPTS_POSTED: usize = 16;

/// One posted `AcceptEx` and the event in its `hEvent` (the book's event per accept).
struct AcceptSlot {
    event: Event,
    /// The accept posted with this event, while the kernel holds it.
    posted: Option<InFlight>,
    /// Its record between posts (keeps its address buffer).
    spare: Option<Box<OvOp>>,
}

/// The accepting thread of [`serve_accept_ex`]: keeps up to [`ACCEPTS_POSTED`] `AcceptEx`
/// posted on `listener` — never more than the places left below `--max-conns`, none at the
/// cap —, each with its own event; waits on those events, the waker and the room signal; hands
/// each accepted socket (`SO_UPDATE_ACCEPT_CONTEXT` done) to a group and posts again. Out of
/// sockets or buffers (`WSAEMFILE`, `WSAENOBUFS`, from the socket `AcceptEx` needs or its
/// completion), posting pauses for the [`Backoff`]. At shutdown (or on an error) it cancels
/// the posted accepts (`CancelIoEx`), closes the listener and reaps every record (each holds
/// a socket) before it returns — up to [`CLOSE_WAIT`]; past it, records and events are leaked
/// rather than freed under the kernel.
fn accept_ex_loop<'scope, 'env, M, A>(
    listener: TcpListener,
    ctx: &'env Ctx,
    waker: &Waker,
    groups: &mut Groups<'scope, 'env, M>,
    mut adopt: A,
) -> io::Result<()>
where
    M: Member,
    A: FnMut(TcpStream) -> io::Result<M>,
{
    let stats = &ctx.stats;
    let room = groups.room;
    let accept_ex = AcceptEx::load(&listener)?;
    let mut slots = Vec::with_capacity(ACCEPTS_POSTED);
    for _ in 0..ACCEPTS_POSTED {
        slots.push(AcceptSlot {
            event: Event::new()?,
            posted: None,
            spare: None,
        });
    }
    let mut cap = ConnCap::new(ctx);
    let mut backoff = Backoff::default();
    let mut handles = Vec::with_capacity(2 + ACCEPTS_POSTED);
    let served = loop {
        if ctx.shutdown.is_requested() {
            break Ok(());
        }
        groups.reap();
        if !backoff.is_paused() {
            // Every posted accept becomes a connection: open + posted never passes the cap.
            // Below a full pool's worth of room, a close must wake this thread to post more:
            // arm the signal, then look at the count again.
            let mut places = cap.room();
            if places < ACCEPTS_POSTED {
                room.arm();
                places = cap.room();
            }
            let want = places.min(ACCEPTS_POSTED);
            let mut posted = slots.iter().filter(|s| s.posted.is_some()).count();
            for slot in slots.iter_mut().filter(|s| s.posted.is_none()) {
                if posted >= want {
                    break;
                }
                let op = slot.spare.take().unwrap_or_else(|| AcceptEx::new_op(0));
                let notify = Notify::Event(slot.event.handle());
                match accept_ex.post(&listener, op, notify, stats) {
                    Ok(f) => {
                        slot.posted = Some(f);
                        posted += 1;
                    }
                    Err((op, e)) => {
                        // Out of sockets or buffers (or anything else): retrying at once
                        // would spin.
                        slot.spare = Some(op);
                        backoff.begin(&e, stats);
                        break;
                    }
                }
            }
        }
        handles.clear();
        handles.push(waker.event_handle());
        handles.push(room.waker().event_handle());
        handles.extend(
            slots
                .iter()
                .filter(|s| s.posted.is_some())
                .map(|s| s.event.handle()),
        );
        let wait = wait_any(&handles, backoff.remaining(), false);
        ctx.stats.count_wait();
        match wait {
            Err(e) => break Err(e),
            // A connection closed: below the cap again, post (the top of the loop looks).
            Ok(Wait::Signalled(1)) => room.waker().reset(),
            Ok(_) => {}
        }
        // WSAWaitForMultipleEvents names only the lowest signalled event: look at every posted
        // accept's record, and take each that completed.
        for slot in &mut slots {
            let Some(op) = take_completed(slot, stats) else {
                continue;
            };
            let op = slot.spare.insert(op);
            match op.result() {
                Ok(_) => match accept_ex.finish(&listener, op) {
                    Ok((stream, peer)) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
                        }
                        crate::sys::set_oob_inline_accepted(&stream);
                        trace_event!(
                            ctx.trace,
                            "accept s={} peer={} (AcceptEx)",
                            stream.as_raw_socket(),
                            peer.map_or("?".to_string(), |p| p.to_string())
                        );
                        match adopt(stream) {
                            Ok(member) => groups.hand(member),
                            // Dropping the stream (inside adopt) closed it.
                            Err(e) => log::warn!("cannot take a connection into a group: {e}"),
                        }
                    }
                    Err(e) => log::debug!("accepted socket dropped: {e}"),
                },
                Err(e) if is_out_of_descriptors(&e) => {
                    backoff.begin(&e, stats);
                }
                // The client reset or aborted before the accept completed
                // (ERROR_NETNAME_DELETED, WSAECONNRESET, ...): nothing to serve.
                Err(e) => log::debug!("AcceptEx: {e}"),
            }
        }
    };
    // Abort what is posted (Wine's closesocket alone can leave a pending operation of a
    // socket without a completion port queued), close the listener, reap every record.
    if slots.iter().any(|s| s.posted.is_some()) {
        cancel_all(listener.as_raw_socket(), stats);
    }
    drop(listener);
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        for slot in &mut slots {
            // Accepted or aborted: its socket is closed with the record.
            drop(take_completed(slot, stats));
        }
        handles.clear();
        handles.extend(
            slots
                .iter()
                .filter(|s| s.posted.is_some())
                .map(|s| s.event.handle()),
        );
        let left = deadline.saturating_duration_since(Instant::now());
        if handles.is_empty() {
            break;
        }
        if left.is_zero() {
            log::error!(
                "{} AcceptEx never completed: leaking their records",
                handles.len()
            );
            // Records the kernel may still write, and the events it may still signal.
            for slot in slots.drain(..).filter(|s| s.posted.is_some()) {
                std::mem::forget(slot);
            }
            break;
        }
        if let Err(e) = wait_any(&handles, Some(left), false) {
            log::error!("waiting for the aborted accepts: {e}");
            std::thread::sleep(Duration::from_millis(10).min(left));
        }
    }
    served
}

/// Takes back the slot's posted accept if it has completed (its event is reset first: its
/// only other signal would come from the next post, which resets it anyway).
fn take_completed(slot: &mut AcceptSlot, stats: &Stats) -> Option<Box<OvOp>> {
    let f = slot.posted?;
    // SAFETY: a record in flight (posted, not reclaimed); only its status word is read.
    if !unsafe { f.is_complete() } {
        return None;
    }
    slot.event.reset();
    slot.posted = None;
    // SAFETY: its outcome is stored (complete), and this is its only reclaim (`posted` is
    // cleared above).
    Some(unsafe { f.reclaim(stats) })
}

/// Triggers shutdown when dropped, unless it already was: the groups end with the acceptor.
struct StopOnExit<'a>(&'a Ctx);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        if !self.0.shutdown.is_requested() {
            log::error!("the accepting thread ended before shutdown: stopping every group");
            self.0.shutdown.trigger();
        }
    }
}

/// The acceptor's view of one group thread.
struct GroupHandle<'scope, M> {
    id: usize,
    tx: Sender<M>,
    handoff: Arc<Event>,
    load: Arc<AtomicUsize>,
    thread: ScopedJoinHandle<'scope, io::Result<()>>,
}

impl<M> GroupHandle<'_, M> {
    /// Reserves a slot if the group has room and is not retiring.
    fn reserve(&self, capacity: usize) -> bool {
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                // Not `then_some(n + 1)`: that adds first, and a retired group's load is
                // `RETIRED` (usize::MAX): the overflow panics the accepting thread.
                if n < capacity {
                    Some(n + 1)
                } else {
                    None
                }
            })
            .is_ok()
    }
}

/// Every group thread, as the accepting thread manages them.
struct Groups<'scope, 'env, M> {
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env Ctx,
    waker: &'env Waker,
    room: &'env RoomSignal,
    name: &'env str,
    list: Vec<GroupHandle<'scope, M>>,
    next_id: usize,
    first_error: Option<io::Error>,
}

impl<'scope, 'env, M: Member> Groups<'scope, 'env, M> {
    /// Hands `member` to the first group with room, or to a new group.
    fn hand(&mut self, mut member: M) {
        for g in &self.list {
            if !g.reserve(capacity::<M>()) {
                continue;
            }
            match g.tx.send(member) {
                Ok(()) => {
                    if let Err(e) = g.handoff.set() {
                        // Cannot happen with a live event; the member waits for the group's
                        // next wake-up meanwhile.
                        log::error!("cannot signal a group's hand-off event: {e}");
                    }
                    return;
                }
                // The group ended (shutdown) after the reservation: try the others.
                Err(mpsc::SendError(m)) => member = m,
            }
        }
        if let Err(e) = self.spawn(member) {
            // The member (and its socket) was dropped: the connection is closed.
            self.ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            log_every!(warn, "cannot start a group thread, connection closed: {e}");
        }
    }

    /// Starts a group thread with `first` as its first member.
    fn spawn(&mut self, first: M) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let handoff = Arc::new(Event::new()?);
        let load = Arc::new(AtomicUsize::new(1));
        let id = self.next_id;
        let (ctx, waker, room) = (self.ctx, self.waker, self.room);
        let (h, l) = (Arc::clone(&handoff), Arc::clone(&load));
        let thread = std::thread::Builder::new()
            .name(format!("{}-group-{id}", self.name))
            .spawn_scoped(self.scope, move || {
                let _retired = RetireOnExit(&l);
                Group::new(id, ctx, waker, room, &h, &l, rx).run(first)
            })?;
        self.next_id += 1;
        log::debug!("{}: group {id} started", self.name);
        self.list.push(GroupHandle {
            id,
            tx,
            handoff,
            load,
            thread,
        });
        Ok(())
    }

    /// Joins the groups that retired.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.list.len() {
            if self.list[i].load.load(Ordering::Acquire) == RETIRED {
                let g = self.list.swap_remove(i);
                self.join(g);
            } else {
                i += 1;
            }
        }
    }

    fn join(&mut self, g: GroupHandle<'scope, M>) {
        let id = g.id;
        let result = g
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a group thread panicked")));
        match result {
            Ok(()) => log::debug!("{}: group {id} ended", self.name),
            Err(e) => {
                log::error!(
                    "{}: group {id} failed, its connections closed: {e}",
                    self.name
                );
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Waits for every group to end (after shutdown); the first error any group had.
    fn join_all(&mut self) -> io::Result<()> {
        for g in std::mem::take(&mut self.list) {
            self.join(g);
        }
        match self.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Marks the group retired however its thread ends (return, error, panic), so the acceptor
/// reserves no slot in it and joins it.
struct RetireOnExit<'a>(&'a AtomicUsize);

impl Drop for RetireOnExit<'_> {
    fn drop(&mut self) {
        self.0.store(RETIRED, Ordering::Release);
    }
}

/// A member and its bookkeeping in the group.
struct Slot<M> {
    member: M,
    /// Serve it next turn without a signal.
    again: bool,
    /// It returned [`Flow::Done`]: dropped at the end of the turn.
    done: bool,
    /// The turn that last served it, so a signal and an `again` do not both run in one turn.
    served: u64,
}

impl<M> Slot<M> {
    fn new(member: M) -> Slot<M> {
        Slot {
            member,
            again: true,
            done: false,
            served: 0,
        }
    }

    fn apply(&mut self, flow: Flow, turn: u64) {
        self.served = turn;
        self.again = flow == Flow::Again;
        self.done = flow == Flow::Done;
    }
}

/// One group thread.
struct Group<'a, M: Member> {
    /// The group's number (as in its thread's name), for `--trace`.
    id: usize,
    ctx: &'a Ctx,
    waker: &'a Waker,
    /// Told when a member leaves: the acceptor may be waiting at the connection cap.
    room: &'a RoomSignal,
    handoff: &'a Event,
    load: &'a AtomicUsize,
    rx: Receiver<M>,
    slots: Vec<Slot<M>>,
    local: M::Local,
    handles: Vec<HANDLE>,
    turn: u64,
}

impl<'a, M: Member> Group<'a, M> {
    fn new(
        id: usize,
        ctx: &'a Ctx,
        waker: &'a Waker,
        room: &'a RoomSignal,
        handoff: &'a Event,
        load: &'a AtomicUsize,
        rx: Receiver<M>,
    ) -> Group<'a, M> {
        Group {
            id,
            ctx,
            waker,
            room,
            handoff,
            load,
            rx,
            slots: Vec::with_capacity(capacity::<M>()),
            local: M::local(),
            handles: Vec::with_capacity(MAX_WAIT),
            turn: 0,
        }
    }

    /// Serves until the group retires idle or the drain is over, then closes its members.
    fn run(mut self, mut first: M) -> io::Result<()> {
        first.joined(self.id);
        self.slots.push(Slot::new(first));
        let mut drain = Drain::new(self.ctx.drain_timeout);
        let mut timeouts = self.ctx.sweep();
        let mut idle_since: Option<Instant> = None;
        let mut take_handoffs = false;
        loop {
            if take_handoffs {
                take_handoffs = false;
                // Reset first: a hand-off that lands after it sets the event again.
                self.handoff.reset();
                self.intake();
            }
            drain.begins(&self.ctx.shutdown);
            let draining = drain.wait_limit().is_some();
            if draining {
                self.intake(); // members sent before shutdown are served too
            }
            if drain.is_over(self.slots.len()) {
                break;
            }
            let mut timeout = min_timeout(drain.wait_limit(), timeouts.wait_limit());
            if self.slots.is_empty() && !draining {
                let since = *idle_since.get_or_insert_with(Instant::now);
                let left = IDLE_LINGER.saturating_sub(since.elapsed());
                if left.is_zero() {
                    // Retire only if no slot was reserved meanwhile.
                    if self
                        .load
                        .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok(());
                    }
                    take_handoffs = true; // a member is on its way
                    idle_since = None;
                    continue;
                }
                timeout = min_timeout(timeout, Some(left));
            } else {
                idle_since = None;
            }
            if self.slots.iter().any(|s| s.again) {
                timeout = Some(Duration::ZERO);
            }
            // While draining the waker stays signalled: leave it out of the wait.
            let first = usize::from(draining);
            take_handoffs |= self.turn_once(first, timeout)?;
            if let Some(now) = timeouts.due() {
                self.expire(&timeouts, now);
            }
            self.sweep();
        }
        self.close_all()
    }

    /// Takes every member waiting in the channel.
    fn intake(&mut self) {
        while let Ok(mut m) = self.rx.try_recv() {
            m.joined(self.id);
            self.slots.push(Slot::new(m));
        }
    }

    /// Rebuilds the wait array: waker, hand-off, then every member's handles.
    fn build_handles(&mut self) {
        self.handles.clear();
        self.handles.push(self.waker.event_handle());
        self.handles.push(self.handoff.handle());
        for s in &self.slots {
            for k in 0..M::HANDLES {
                self.handles.push(s.member.handle(k));
            }
        }
    }

    /// One wait over `handles[first..]`, then every signalled handle served in slot order,
    /// then the members that asked to go again. Returns true if the hand-off event was
    /// signalled.
    fn turn_once(&mut self, first: usize, timeout: Option<Duration>) -> io::Result<bool> {
        self.turn += 1;
        let turn = self.turn;
        self.build_handles();
        let mut handoff = false;
        let mut base = first;
        let mut wait = wait_any(&self.handles[base..], timeout, false)?;
        self.ctx.stats.count_wait();
        // WSAWaitForMultipleEvents names only the lowest signalled handle: probe the ones
        // above it with a zero timeout until none is left, so every signalled one is served.
        while let Wait::Signalled(i) = wait {
            let slot = base + i;
            match slot {
                0 => {} // the waker: shutdown (seen at the top of the loop); never reset
                1 => handoff = true,
                _ => {
                    let k = slot - FIXED_SLOTS;
                    let s = &mut self.slots[k / M::HANDLES];
                    if !s.done {
                        let flow = s.member.signalled(k % M::HANDLES, &mut self.local);
                        s.apply(flow, turn);
                    }
                }
            }
            base = slot + 1;
            if base >= self.handles.len() {
                break;
            }
            wait = wait_any(&self.handles[base..], Some(Duration::ZERO), false)?;
            self.ctx.stats.syscalls.fetch_add(1, Ordering::Relaxed);
        }
        for s in &mut self.slots {
            if s.again && !s.done && s.served != turn {
                let flow = s.member.again(&mut self.local);
                s.apply(flow, turn);
            }
        }
        Ok(handoff)
    }

    /// Closes the members whose idle or write timeout expired at `now` ([`crate::limits`]),
    /// as the drain does: [`Member::close`], then they are dropped once done.
    fn expire(&mut self, timeouts: &Sweep, now: Instant) {
        let turn = self.turn;
        for s in &mut self.slots {
            if !s.done && s.member.expired(timeouts, now) {
                let flow = s.member.close(&mut self.local);
                s.apply(flow, turn);
            }
        }
    }

    /// Drops the members that are done, freeing their slots (and telling an acceptor that
    /// waits at the connection cap).
    fn sweep(&mut self) {
        let before = self.slots.len();
        self.slots.retain(|s| !s.done);
        let freed = before - self.slots.len();
        if freed > 0 {
            self.load.fetch_sub(freed, Ordering::AcqRel);
            self.room.freed();
        }
    }

    /// After the drain: every member closes; wait until each is done, up to [`CLOSE_WAIT`].
    fn close_all(mut self) -> io::Result<()> {
        // Nothing new is taken from now on: members still in the channel (never started)
        // are dropped with it.
        self.load.store(RETIRED, Ordering::Release);
        self.intake();
        let turn = self.turn;
        for s in &mut self.slots {
            let flow = s.member.close(&mut self.local);
            s.apply(flow, turn);
        }
        self.sweep_closing();
        let deadline = Instant::now() + CLOSE_WAIT;
        while !self.slots.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let n = self.slots.len();
                log::error!("{n} connections still had operations in flight: leaking them");
                for s in self.slots.drain(..) {
                    std::mem::forget(s);
                }
                break;
            }
            let timeout = if self.slots.iter().any(|s| s.again) {
                Duration::ZERO
            } else {
                left
            };
            // Only the members' handles: the waker stays signalled, hand-offs are over.
            self.turn_once(FIXED_SLOTS, Some(timeout))?;
            self.sweep_closing();
        }
        Ok(())
    }

    /// Like [`Group::sweep`], for the closing phase (no load to keep).
    fn sweep_closing(&mut self) {
        self.slots.retain(|s| !s.done);
    }
}
