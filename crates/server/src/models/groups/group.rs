//! The group threads: each waits on up to 64 handles (the waker, its hand-off event, its
//! members' events) and serves its members; [`Groups`] is the accepting thread's view of them.

use super::{capacity, Flow, Member, CLOSE_WAIT, FIXED_SLOTS, IDLE_LINGER, RETIRED};
use crate::accept::RoomSignal;
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::log_every::log_every;
use crate::models::{min_timeout, Turn};
use crate::stats::Stats;
use crate::sys::event::MAX_WAIT;
use crate::sys::{wait_any, Event, Wait, Waker};
use crate::threads::join_worker;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;

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
pub(super) struct Groups<'scope, 'env, M> {
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
    /// No group yet; threads named after `name` will start in `scope`.
    pub(super) fn new(
        scope: &'scope Scope<'scope, 'env>,
        ctx: &'env Ctx,
        waker: &'env Waker,
        room: &'env RoomSignal,
        name: &'env str,
    ) -> Self {
        Groups {
            scope,
            ctx,
            waker,
            room,
            name,
            list: Vec::new(),
            next_id: 0,
            first_error: None,
        }
    }

    /// Hands `member` to the first group with room, or to a new group.
    pub(super) fn hand(&mut self, mut member: M) {
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
                let _counted = GroupGauge::up(&ctx.stats);
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
    pub(super) fn reap(&mut self) {
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
        let result = join_worker(g.thread.join(), "a group thread panicked");
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
    pub(super) fn join_all(&mut self) -> io::Result<()> {
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

/// Counts a group thread in [`Stats::wait_groups`] while it runs, however it ends.
struct GroupGauge<'a>(&'a Stats);

impl<'a> GroupGauge<'a> {
    fn up(stats: &'a Stats) -> GroupGauge<'a> {
        stats.wait_groups.fetch_add(1, Ordering::Relaxed);
        GroupGauge(stats)
    }
}

impl Drop for GroupGauge<'_> {
    fn drop(&mut self) {
        self.0.wait_groups.fetch_sub(1, Ordering::Relaxed);
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

/// What a group without members does this turn ([`Group::linger`]).
enum Linger {
    /// It retired: its thread ends.
    Retired,
    /// A slot was reserved as it was retiring: a member is on its way, take the hand-off.
    MemberComing,
    /// Wait at most this long for a member.
    Left(Duration),
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
        let mut turn = Turn::new(self.ctx);
        let mut idle_since: Option<Instant> = None;
        let mut take_handoffs = false;
        loop {
            if take_handoffs {
                take_handoffs = false;
                // Reset first: a hand-off that lands after it sets the event again.
                self.handoff.reset();
                self.intake();
            }
            turn.drain_begins(&self.ctx.shutdown);
            let draining = turn.is_draining();
            if draining {
                self.intake(); // members sent before shutdown are served too
            }
            if turn.drain_is_over(self.slots.len()) {
                break;
            }
            let mut timeout = turn.wait_limit(None);
            if self.slots.is_empty() && !draining {
                match self.linger(&mut idle_since) {
                    Linger::Retired => return Ok(()),
                    Linger::MemberComing => {
                        take_handoffs = true;
                        continue;
                    }
                    Linger::Left(left) => timeout = min_timeout(timeout, Some(left)),
                }
            } else {
                idle_since = None;
            }
            if self.slots.iter().any(|s| s.again) {
                timeout = Some(Duration::ZERO);
            }
            // While draining the waker stays signalled: leave it out of the wait.
            let first = usize::from(draining);
            take_handoffs |= self.turn_once(first, timeout)?;
            if let Some(now) = turn.sweep_due() {
                self.expire(turn.sweep(), now);
            }
            self.sweep();
        }
        self.close_all()
    }

    /// A group without members lingers [`IDLE_LINGER`] (counted from `idle_since`), then
    /// retires, unless a slot was reserved meanwhile.
    fn linger(&self, idle_since: &mut Option<Instant>) -> Linger {
        let since = *idle_since.get_or_insert_with(Instant::now);
        let left = IDLE_LINGER.saturating_sub(since.elapsed());
        if !left.is_zero() {
            return Linger::Left(left);
        }
        // Retire only if no slot was reserved meanwhile.
        if self
            .load
            .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Linger::Retired;
        }
        *idle_since = None;
        Linger::MemberComing
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
