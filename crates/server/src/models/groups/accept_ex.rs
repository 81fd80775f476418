//! The accepting thread of [`super::serve_accept_ex`] (`overlapped-event`): `AcceptEx` posted
//! ahead, each record with an event of its own (the book's event per accept).

use super::group::Groups;
use super::{Member, CLOSE_WAIT};
use crate::accept::{Backoff, ConnCap, RoomSignal};
use crate::ctx::Ctx;
use crate::models::winio::{cancel_all, AcceptEx, InFlight, Notify, OvOp};
use crate::stats::Stats;
use crate::sys::{is_out_of_descriptors, wait_any, Event, Wait, Waker};
use crate::trace::trace_event;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::AsRawSocket;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;

/// `AcceptEx` the accepting thread of [`super::serve_accept_ex`] keeps posted (fewer below the
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

/// The accepting thread of [`super::serve_accept_ex`]: keeps up to [`ACCEPTS_POSTED`]
/// `AcceptEx` posted on the listener — never more than the places left below `--max-conns`,
/// none at the cap —, each with its own event; waits on those events, the waker and the room
/// signal; hands each accepted socket (`SO_UPDATE_ACCEPT_CONTEXT` done) to a group and posts
/// again. Out of sockets or buffers (`WSAEMFILE`, `WSAENOBUFS`, from the socket `AcceptEx`
/// needs or its completion), posting pauses for the [`Backoff`]. At shutdown (or on an error)
/// it cancels the posted accepts (`CancelIoEx`), closes the listener and reaps every record
/// (each holds a socket) before it returns — up to [`CLOSE_WAIT`]; past it, records and events
/// are leaked rather than freed under the kernel.
pub(super) struct AcceptExLoop<'a, A> {
    ctx: &'a Ctx,
    listener: TcpListener,
    accept_ex: AcceptEx,
    waker: &'a Waker,
    room: &'a RoomSignal,
    adopt: A,
    slots: Vec<AcceptSlot>,
    cap: ConnCap,
    backoff: Backoff,
    /// The wait's handles, rebuilt every turn.
    handles: Vec<HANDLE>,
}

impl<'a, A> AcceptExLoop<'a, A> {
    /// Loads `AcceptEx` through `listener` and makes the slots' events.
    pub(super) fn new(
        ctx: &'a Ctx,
        listener: TcpListener,
        waker: &'a Waker,
        room: &'a RoomSignal,
        adopt: A,
    ) -> io::Result<Self> {
        let accept_ex = AcceptEx::load(&listener)?;
        let mut slots = Vec::with_capacity(ACCEPTS_POSTED);
        for _ in 0..ACCEPTS_POSTED {
            slots.push(AcceptSlot {
                event: Event::new()?,
                posted: None,
                spare: None,
            });
        }
        Ok(AcceptExLoop {
            ctx,
            listener,
            accept_ex,
            waker,
            room,
            adopt,
            slots,
            cap: ConnCap::new(ctx),
            backoff: Backoff::default(),
            handles: Vec::with_capacity(2 + ACCEPTS_POSTED),
        })
    }

    /// Accepts until shutdown (or an error), handing each connection to `groups`; then
    /// cancels and reaps what is posted.
    pub(super) fn run<M>(mut self, groups: &mut Groups<'_, '_, M>) -> io::Result<()>
    where
        M: Member,
        A: FnMut(TcpStream) -> io::Result<M>,
    {
        let served = loop {
            if self.ctx.shutdown.is_requested() {
                break Ok(());
            }
            groups.reap();
            if !self.backoff.is_paused() {
                self.post_accepts();
            }
            if let Err(e) = self.wait() {
                break Err(e);
            }
            self.take_accepted(groups);
        };
        self.cancel_and_reap();
        served
    }

    /// Posts accepts up to the places left below the cap (a full pool's worth at most).
    fn post_accepts(&mut self) {
        let stats = &self.ctx.stats;
        // Every posted accept becomes a connection: open + posted never passes the cap.
        // Below a full pool's worth of room, a close must wake this thread to post more:
        // arm the signal, then look at the count again.
        let mut places = self.cap.room();
        if places < ACCEPTS_POSTED {
            self.room.arm();
            places = self.cap.room();
        }
        let want = places.min(ACCEPTS_POSTED);
        let mut posted = self.slots.iter().filter(|s| s.posted.is_some()).count();
        for slot in self.slots.iter_mut().filter(|s| s.posted.is_none()) {
            if posted >= want {
                break;
            }
            let op = slot.spare.take().unwrap_or_else(|| AcceptEx::new_op(0));
            let notify = Notify::Event(slot.event.handle());
            match self.accept_ex.post(&self.listener, op, notify, stats) {
                Ok(f) => {
                    slot.posted = Some(f);
                    posted += 1;
                }
                Err((op, e)) => {
                    // Out of sockets or buffers (or anything else): retrying at once
                    // would spin.
                    slot.spare = Some(op);
                    self.backoff.begin(&e, stats);
                    break;
                }
            }
        }
    }

    /// Waits on the waker, the room signal and every posted accept's event.
    fn wait(&mut self) -> io::Result<()> {
        self.handles.clear();
        self.handles.push(self.waker.event_handle());
        self.handles.push(self.room.waker().event_handle());
        self.handles.extend(
            self.slots
                .iter()
                .filter(|s| s.posted.is_some())
                .map(|s| s.event.handle()),
        );
        let wait = wait_any(&self.handles, self.backoff.remaining(), false);
        self.ctx.stats.count_wait();
        if let Wait::Signalled(1) = wait? {
            // A connection closed: below the cap again, post (the top of the loop looks).
            self.room.waker().reset();
        }
        Ok(())
    }

    /// WSAWaitForMultipleEvents names only the lowest signalled event: looks at every posted
    /// accept's record, and takes each that completed.
    fn take_accepted<M>(&mut self, groups: &mut Groups<'_, '_, M>)
    where
        M: Member,
        A: FnMut(TcpStream) -> io::Result<M>,
    {
        let (ctx, stats) = (self.ctx, &self.ctx.stats);
        for slot in &mut self.slots {
            let Some(op) = take_completed(slot, stats) else {
                continue;
            };
            let op = slot.spare.insert(op);
            match op.result() {
                Ok(_) => match self.accept_ex.finish(&self.listener, op) {
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
                        match (self.adopt)(stream) {
                            Ok(member) => groups.hand(member),
                            // Dropping the stream (inside adopt) closed it.
                            Err(e) => log::warn!("cannot take a connection into a group: {e}"),
                        }
                    }
                    Err(e) => log::debug!("accepted socket dropped: {e}"),
                },
                Err(e) if is_out_of_descriptors(&e) => {
                    self.backoff.begin(&e, stats);
                }
                // The client reset or aborted before the accept completed
                // (ERROR_NETNAME_DELETED, WSAECONNRESET, ...): nothing to serve.
                Err(e) => log::debug!("AcceptEx: {e}"),
            }
        }
    }

    /// Aborts what is posted (Wine's closesocket alone can leave a pending operation of a
    /// socket without a completion port queued), closes the listener, reaps every record.
    fn cancel_and_reap(self) {
        let ctx = self.ctx;
        let stats = &ctx.stats;
        let (mut slots, mut handles) = (self.slots, self.handles);
        if slots.iter().any(|s| s.posted.is_some()) {
            cancel_all(self.listener.as_raw_socket(), stats);
        }
        drop(self.listener);
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
    }
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
