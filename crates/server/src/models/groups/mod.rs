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
//!   until an accept succeeds again (see `accept.rs`). An accepted socket inherits the
//!   listener's selection; the model's `adopt` deals with it.
//! - **completion** ([`serve_accept_ex`], `overlapped-event`): it keeps [`ACCEPTS_POSTED`]
//!   `AcceptEx` posted, each record with an event of its own in its `hEvent` (the book's
//!   sample: one event per `AcceptEx`), and waits on those events, the waker and the room
//!   signal. A completed accept's socket is finished (`SO_UPDATE_ACCEPT_CONTEXT`), handed to a
//!   group and the record posted again; the socket never had a `WSAEventSelect`. Never more
//!   accepts are posted than places left below `--max-conns` (none at the cap); out of
//!   sockets, posting pauses for the usual back-off. At shutdown `CancelIoEx` aborts the
//!   posted accepts, the listener is closed, and every record (each holds a socket) is reaped
//!   before the thread returns (see `accept_ex.rs`). Each posted accept counts in
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
//! **Shutdown.** One [`Waker`](crate::sys::Waker) is registered for the whole model: its event
//! is manual-reset, so one `wake` releases every thread waiting on it. Nobody resets it; a thread that sees shutdown
//! requested stops including it in its wait (or it would spin). (A waker per group thread
//! would pile up: `Shutdown` keeps every waker it ever registered, and groups come and go.)
//! The acceptor then closes the listener and joins the groups; each group drains (serves its
//! connections until they end or the drain timeout passes), then asks every member to close
//! ([`Member::close`]) and waits, up to [`CLOSE_WAIT`], until each says it is done — a member
//! with overlapped operations in flight is done only when their completions have been reaped.
//!
//! [`ACCEPTS_POSTED`]: accept_ex::ACCEPTS_POSTED

mod accept;
mod accept_ex;
mod group;

use crate::accept::{Acceptor, RoomSignal};
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::sys::event::MAX_WAIT;
use crate::sys::network_events::{event_select, FD_ACCEPT};
use crate::sys::Event;
use accept::ReadyAccept;
use accept_ex::AcceptExLoop;
use group::Groups;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::RawSocket;
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
    /// waited for (see `accept.rs`).
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
/// (see `accept_ex.rs`). The sockets it hands to `adopt` never had a `WSAEventSelect`.
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
        let mut groups = Groups::new(scope, ctx, &waker, &room, name);
        // If accepting fails (or panics), the groups must still end, or the scope would wait
        // for them forever: shut the whole model down.
        let stop = StopOnExit(ctx);
        let accepted = match intake {
            Intake::Ready {
                acceptor,
                listen_event,
                beside,
            } => ReadyAccept::new(ctx, acceptor, &listen_event, beside, &waker, &room, adopt)
                .run(&mut groups),
            Intake::AcceptEx(listener) => AcceptExLoop::new(ctx, listener, &waker, &room, adopt)
                .and_then(|accepting| accepting.run(&mut groups)),
        };
        drop(stop);
        let groups_result = groups.join_all();
        accepted.and(groups_result)
    })
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
