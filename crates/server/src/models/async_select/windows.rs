//! `WSAAsyncSelect` with message-only windows: socket events arrive as window messages, and
//! each window's thread serves its own sockets from its own message queue.
//!
//! The listener is registered for `FD_ACCEPT`, each client for `FD_READ | FD_WRITE | FD_CLOSE`,
//! the shutdown waker's UDP socket for `FD_READ` (so a wake-up is one more message), the
//! server's UDP socket (`--udp`) for `FD_READ`. Window 0 (the thread that called `run`) has
//! the listener and the UDP socket and serves up to `--sockets-per-window` clients itself;
//! past that it starts window 1, 2, ... — each a thread with its own message-only window and
//! message loop — and hands each new socket to the first window with a free slot, which
//! registers it with itself. Every window's procedure ([`WindowProc::window_proc`] below)
//! serves the socket a message names. Each loop blocks in `GetMessageW`, then dispatches what
//! is queued (a bounded batch), then looks at shutdown and at the clock; a window timer wakes
//! it for the drain deadline, for the end of an accept pause and for its next sweep of the
//! idle and write timeouts.
//!
//! **Why the bound** (`super` has the arithmetic): a thread's message queue holds 10,000 posted
//! messages, and a socket has at most 8 in it at once, so a window of at most 1,000 sockets
//! (2,000 messages kept for the rest) cannot lose a notification to a full queue. A post of
//! our own that fails anyway is counted ([`crate::Stats::notification_overflows`]), logged,
//! and answered with a rescan of that window's sockets.
//!
//! Limits (`crate::limits`): at the connection cap an `FD_ACCEPT` is not answered with an
//! accept, so Winsock posts no further one (it re-enables `FD_ACCEPT` only with an accept
//! call); window 0 accepts again on its first turn below the cap, and a window that closes a
//! connection while window 0 waits at the cap wakes it ([`RoomSignal`], its socket selected
//! for `FD_READ` as `WM_ROOM`). The timeouts are each window's sweep over its own clients.

use super::SOCKETS_PER_WINDOW;
use crate::accept::{Acceptor, RoomSignal};
use crate::ctx::Ctx;
use crate::limits::Sweep;
use crate::log_every::log_every;
use crate::models::Turn;
use crate::session::{Session, Status, READ_CHUNK};
use crate::stats::Stats;
use crate::sys::window::{self, Poster, Window, WindowClass, WindowProc};
use crate::sys::{last_wsa_error, wsa_startup, Waker};
use crate::threads::lock;
use crate::trace::trace_event;
use crate::udp::{self, Drained, ReadinessUdpEcho};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::{AsRawSocket, RawSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::UI::WindowsAndMessaging::{WM_QUIT, WM_TIMER, WM_USER};

pub(crate) const MECHANISM: &str = "WSAAsyncSelect (message-only windows)";

pub(crate) fn availability() -> Result<(), String> {
    Ok(())
}

/// Winsock's notification for the listener, every client and the UDP socket: `wParam` is the
/// socket, `lParam` the event (low word) and an error code (high word).
const WM_SOCKET: u32 = WM_USER + 1;
/// Winsock's notification for the window's shutdown waker's socket (`FD_READ`: a wake-up).
const WM_WAKE: u32 = WM_USER + 2;
/// Our own message: read on from socket `wParam`, whose peer closed with data still unread.
const WM_READ_ON: u32 = WM_USER + 3;
/// Our own message: answer on from the UDP socket, whose last turn ran out of budget with
/// datagrams perhaps still waiting.
const WM_UDP_ON: u32 = WM_USER + 4;
/// Posted by window 0 to another window: sockets wait in its inbox.
const WM_HANDOFF: u32 = WM_USER + 5;
/// Our own message, posted after a client of this window closed: every message Winsock posted
/// for it is behind us now, so its slot is free.
const WM_RELEASE: u32 = WM_USER + 6;
/// Winsock's notification for the room signal's socket (window 0, `FD_READ`): a connection
/// closed on another window while window 0 waited at the connection cap.
const WM_ROOM: u32 = WM_USER + 7;
/// The window's one timer: the drain deadline, the end of an accept pause, or the next sweep.
const TIMER: usize = 1;
/// The events a client socket is registered for.
const CLIENT_EVENTS: u32 = ws::FD_READ | ws::FD_WRITE | ws::FD_CLOSE;
/// Most connections accepted per `FD_ACCEPT`. Every accept call re-enables `FD_ACCEPT`, and
/// Winsock posts another at once while connections wait, so a plain batch of N accepts could
/// leave N messages in the queue: the listener is deregistered for the batch and registered
/// again after it, which posts one `FD_ACCEPT` if connections still wait (`super`, the
/// arithmetic: at most two queued).
const ACCEPT_BATCH: usize = 64;
/// Most messages dispatched per wake-up before the loop checks shutdown and the clock again.
const MESSAGES_PER_TURN: usize = 1024;

pub(crate) fn run(listener: Option<TcpListener>, ctx: &Ctx) -> io::Result<()> {
    wsa_startup();
    if let Some(l) = &listener {
        l.set_nonblocking(true)?;
    }
    let per_window = ctx.sockets_per_window.unwrap_or(SOCKETS_PER_WINDOW);
    let room = Arc::new(RoomSignal::new()?);
    ctx.stats.message_windows.store(1, Relaxed);
    std::thread::scope(|scope| {
        let threads: RefCell<Vec<ScopedJoinHandle<'_, io::Result<()>>>> = RefCell::default();
        // Starts window `index` on a thread of its own; returns once its window exists.
        let spawn = |index: usize| -> io::Result<Peer> {
            let share = Arc::new(Share::default());
            let (ready, started) = mpsc::channel();
            let (theirs, room) = (Arc::clone(&share), Arc::clone(&room));
            let thread = std::thread::Builder::new()
                .name(format!("async-select-{index}"))
                .spawn_scoped(scope, move || {
                    let served = serve_window(
                        ctx,
                        index,
                        per_window,
                        theirs,
                        room,
                        None,
                        None,
                        Some(ready),
                    );
                    if let Err(e) = &served {
                        log::error!("async-select: window {index} failed: {e}; stopping");
                        ctx.shutdown.trigger();
                    }
                    served
                })?;
            threads.borrow_mut().push(thread);
            let (poster, waker) = started.recv().map_err(|_| {
                io::Error::other(format!(
                    "window {index} could not start (its error follows)"
                ))
            })?;
            Ok(Peer {
                index,
                poster,
                waker,
                share,
            })
        };
        let share = Arc::new(Share::default());
        let served = serve_window(
            ctx,
            0,
            per_window,
            share,
            Arc::clone(&room),
            listener,
            Some(&spawn),
            None,
        );
        if served.is_err() {
            // The other windows stop by their drain.
            ctx.shutdown.trigger();
        }
        let mut result = served;
        for thread in threads.take() {
            let served = thread
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            if result.is_ok() {
                result = served;
            }
        }
        result
    })
}

/// What starts another window (window 0 only): its index in, the window out.
type Spawn<'c> = &'c (dyn Fn(usize) -> io::Result<Peer> + 'c);

/// Creates window `index` on this thread and runs its message loop until the drain is over.
/// Window 0 gets the listener and the UDP socket, and `spawn`; another window tells `ready`
/// where to post once its window exists.
#[allow(clippy::too_many_arguments)]
fn serve_window<'c>(
    ctx: &'c Ctx,
    index: usize,
    per_window: usize,
    share: Arc<Share>,
    room: Arc<RoomSignal>,
    listener: Option<TcpListener>,
    spawn: Option<Spawn<'c>>,
    ready: Option<mpsc::Sender<(Poster, Arc<Waker>)>>,
) -> io::Result<()> {
    let waker = ctx.shutdown.register()?;
    let theirs = Arc::clone(&waker);
    let class = WindowClass::<AsyncSelect>::register("iomodels-async-select")?;
    let udp = ctx.udp.as_ref().filter(|_| index == 0);
    let model = AsyncSelect {
        state: RefCell::new(State {
            ctx,
            index,
            waker,
            acceptor: listener.map(|l| Acceptor::new(l, ctx)),
            udp: udp.map(|u| (u, ReadinessUdpEcho::new(ctx))),
            // The first turn answers what came before the registration (announced or not).
            udp_on_queued: false,
            udp_on_backlog: udp.is_some(),
            accept_after_pause: false,
            clients: HashMap::new(),
            scratch: vec![0u8; READ_CHUNK],
            read_on_backlog: Vec::new(),
            failed: None,
            share,
            per_window,
            peers: Vec::new(),
            spawn,
            room,
            rescan: false,
        }),
    };
    class.with_window(&model, |window| {
        if let Some(ready) = ready {
            let _ = ready.send((window.poster(), theirs));
        }
        message_loop(&model, window)
    })?
}

/// A window's slots and inbox, shared by its thread and window 0.
#[derive(Default)]
struct Share {
    /// Slots taken: clients served, sockets on their way in the inbox, and clients closed
    /// whose `WM_RELEASE` has not come yet (Winsock's messages for them may still be queued).
    load: AtomicUsize,
    /// Sockets window 0 accepted for this window, not registered yet (each counted in
    /// `Stats::handoffs_in_flight` until it is).
    inbox: Mutex<Vec<TcpStream>>,
    /// A post to this window failed (a full queue): its thread rescans its sockets.
    rescan: AtomicBool,
}

impl Share {
    /// Takes a slot if fewer than `max` are taken; the fullest window is counted in
    /// `Stats::window_sockets_peak`.
    fn try_reserve(&self, max: usize, stats: &Stats) -> bool {
        let mut load = self.load.load(Relaxed);
        loop {
            if load >= max {
                return false;
            }
            match self
                .load
                .compare_exchange_weak(load, load + 1, Relaxed, Relaxed)
            {
                Ok(_) => {
                    stats.window_sockets.fetch_add(1, Relaxed);
                    stats
                        .window_sockets_peak
                        .fetch_max(load as u64 + 1, Relaxed);
                    return true;
                }
                Err(now) => load = now,
            }
        }
    }

    fn release(&self, stats: &Stats) {
        self.load.fetch_sub(1, Relaxed);
        stats.window_sockets.fetch_sub(1, Relaxed);
    }

    fn take_inbox(&self) -> Vec<TcpStream> {
        std::mem::take(&mut *lock(&self.inbox))
    }
}

/// Another window, as window 0 knows it.
struct Peer {
    index: usize,
    poster: Poster,
    /// Its shutdown waker: a wake-up makes its loop turn (and look at its inbox) when a
    /// `WM_HANDOFF` could not be posted.
    waker: Arc<Waker>,
    share: Arc<Share>,
}

/// The model: everything the window procedure serves. Borrowed mutably for one message at a
/// time, and by the loop between batches, never across a dispatch.
struct AsyncSelect<'c> {
    state: RefCell<State<'c>>,
}

struct State<'c> {
    ctx: &'c Ctx,
    /// This window's number: 0 for the one with the listener.
    index: usize,
    waker: Arc<Waker>,
    /// The listener; `None` without TCP (`--no-tcp`), and once shutdown began.
    acceptor: Option<Acceptor>,
    /// The UDP socket and its echo buffer; `None` without UDP, and once shutdown began.
    udp: Option<(&'c UdpSocket, ReadinessUdpEcho)>,
    /// A `WM_UDP_ON` is queued.
    udp_on_queued: bool,
    /// The UDP socket is to be served again but its `WM_UDP_ON` could not be posted (a full
    /// message queue), or it was never served yet: the loop serves it without blocking.
    udp_on_backlog: bool,
    /// Accepting paused (out of sockets, or at the connection cap) with connections
    /// waiting. Winsock posts no new `FD_ACCEPT` until `accept` is called, so the loop accepts
    /// when the pause ends or a connection has closed.
    accept_after_pause: bool,
    /// Open connections by socket. A message for a socket not here is stale: ignored.
    clients: HashMap<RawSocket, Client>,
    /// The receive buffer every client reads into.
    scratch: Vec<u8>,
    /// Sockets to read on whose `WM_READ_ON` could not be posted (a full message queue).
    read_on_backlog: Vec<RawSocket>,
    /// A listener failure for the loop to return.
    failed: Option<io::Error>,
    /// This window's slots and inbox.
    share: Arc<Share>,
    /// `--sockets-per-window`.
    per_window: usize,
    /// Window 0: the other windows, in the order they started.
    peers: Vec<Peer>,
    /// Window 0: starts another window.
    spawn: Option<Spawn<'c>>,
    /// Wakes window 0 when a connection closes while it waits at the connection cap.
    room: Arc<RoomSignal>,
    /// A post of ours failed (a full queue): rescan this window's sockets next turn.
    rescan: bool,
}

struct Client {
    session: Session,
    /// `FD_CLOSE` came: the peer's FIN is in, possibly behind unread data, and Winsock
    /// promises no further `FD_READ` for that data: we read on by ourselves until EOF.
    peer_closed: bool,
    /// A `WM_READ_ON` for this socket is queued.
    read_on_queued: bool,
}

fn message_loop(model: &AsyncSelect, window: Window) -> io::Result<()> {
    let ctx = model.state.borrow().ctx;
    let waker = Arc::clone(&model.state.borrow().waker);
    let room = Arc::clone(&model.state.borrow().room);
    let udp = model.state.borrow().udp.as_ref().map(|(u, _)| *u);
    let _attached = attach(model, window, &waker, &room, udp)?;
    let mut turn = Turn::new(ctx);
    // When the armed timer is due, if one is.
    let mut timer: Option<Instant> = None;
    loop {
        let between = model
            .state
            .borrow_mut()
            .between_messages(window, &mut turn, &mut timer)?;
        match between {
            Between::Over => return Ok(()),
            Between::Block => dispatch_messages(ctx, true)?,
            Between::Peek => dispatch_messages(ctx, false)?,
        }
    }
}

/// Registers the window's sockets for their messages: the waker (`WM_WAKE`), window 0's
/// room signal (`WM_ROOM`) and listener (`FD_ACCEPT`), its UDP socket (`FD_READ` only: its
/// answers never wait for room, a full send buffer drops one). The waker, the room signal and
/// the UDP socket outlive the loop (shutdown, `ctx` keep them): each is detached from the
/// window when the guard returned drops, whichever way the loop ends.
fn attach<'a>(
    model: &AsyncSelect,
    window: Window,
    waker: &'a Waker,
    room: &'a RoomSignal,
    udp: Option<&'a UdpSocket>,
) -> io::Result<Vec<Detach<'a, UdpSocket>>> {
    let mut attached = Vec::with_capacity(3);
    async_select(waker.socket(), window, WM_WAKE, ws::FD_READ)?;
    attached.push(Detach(waker.socket(), window));
    if let Some(a) = &model.state.borrow().acceptor {
        async_select(room.waker().socket(), window, WM_ROOM, ws::FD_READ)?;
        attached.push(Detach(room.waker().socket(), window));
        async_select(&a.listener, window, WM_SOCKET, ws::FD_ACCEPT)?;
    }
    if let Some(u) = udp {
        async_select(u, window, WM_SOCKET, ws::FD_READ)?;
        attached.push(Detach(u, window));
    }
    Ok(attached)
}

/// What the loop does after its work between messages.
enum Between {
    /// The drain is over: return.
    Over,
    /// Wait for the next message.
    Block,
    /// Work is left that no message announces: look at the queue without waiting.
    Peek,
}

/// Dispatches up to [`MESSAGES_PER_TURN`] messages: the first waited for (`block`) or peeked,
/// the rest of the queue without waiting. `WM_QUIT` asks for shutdown.
fn dispatch_messages(ctx: &Ctx, block: bool) -> io::Result<()> {
    let first = if block {
        match window::get_message()? {
            Some(msg) => Some(msg),
            None => {
                // WM_QUIT: somebody asked this thread's message loop to end.
                log::info!("async-select: WM_QUIT received; shutting down");
                ctx.shutdown.trigger();
                return Ok(());
            }
        }
    } else {
        window::peek_message()
    };
    ctx.stats.count_wait();
    let Some(first) = first else { return Ok(()) };
    window::dispatch(&first);
    // The rest of the queue, without waiting: each PeekMessageW is a call into the kernel
    // (win32k) like a recv, so it is counted as one.
    let mut peeks = 0;
    while peeks + 1 < MESSAGES_PER_TURN {
        peeks += 1;
        match window::peek_message() {
            Some(msg) if msg.message == WM_QUIT => {
                log::info!("async-select: WM_QUIT received; shutting down");
                ctx.shutdown.trigger();
                break;
            }
            Some(msg) => window::dispatch(&msg),
            None => break,
        }
    }
    ctx.stats.syscalls.fetch_add(peeks as u64, Relaxed);
    Ok(())
}

/// Keeps the window's timer due at `wanted` from now (`None`: no timer). Re-arms only when the
/// due time moves earlier or has passed, not on every turn.
fn arm_timer(
    window: Window,
    timer: &mut Option<Instant>,
    wanted: Option<Duration>,
) -> io::Result<()> {
    let now = Instant::now();
    match wanted {
        None => {
            if timer.take().is_some() {
                window.kill_timer(TIMER);
            }
        }
        Some(d) => {
            let due = now + d;
            let rearm = match *timer {
                None => true,
                Some(t) => t <= now || due + Duration::from_millis(1) < t,
            };
            if rearm {
                window.set_timer(TIMER, d)?;
                *timer = Some(due);
            }
        }
    }
    Ok(())
}

impl WindowProc for AsyncSelect<'_> {
    fn window_proc(
        &self,
        window: Window,
        msg: u32,
        wparam: WPARAM,
        lparam: LPARAM,
    ) -> Option<LRESULT> {
        if !matches!(
            msg,
            WM_SOCKET
                | WM_WAKE
                | WM_READ_ON
                | WM_UDP_ON
                | WM_HANDOFF
                | WM_RELEASE
                | WM_ROOM
                | WM_TIMER
        ) {
            return None;
        }
        let Ok(mut st) = self.state.try_borrow_mut() else {
            // Re-entered while serving a message (nothing called here delivers messages, so
            // this is not expected): queue the message again rather than lose it.
            if msg != WM_TIMER {
                let _ = window.post(msg, wparam, lparam);
            }
            return Some(0);
        };
        let socket = wparam as RawSocket;
        match msg {
            WM_SOCKET => st.on_socket_event(window, socket, lparam),
            // The loop sees the shutdown flag next, or its inbox (a WM_HANDOFF not posted).
            WM_WAKE => st.waker.reset(),
            WM_READ_ON => st.read_on(window, socket),
            WM_UDP_ON => {
                st.udp_on_queued = false;
                st.serve_udp(window); // after shutdown began: nothing to serve, ignored
            }
            WM_HANDOFF => st.adopt(window),
            WM_RELEASE => st.share.release(&st.ctx.stats),
            WM_ROOM => st.room.waker().reset(), // the loop accepts next, if below the cap
            _ => {} // WM_TIMER: waking the loop was the point; it looks at the clock
        }
        Some(0)
    }
}

impl State<'_> {
    /// The loop's work between batches of messages: a listener failure, the drain, the sweep,
    /// what no message announces; arms the timer for the next deadline.
    fn between_messages(
        &mut self,
        window: Window,
        turn: &mut Turn,
        timer: &mut Option<Instant>,
    ) -> io::Result<Between> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if turn.drain_begins(&self.ctx.shutdown) {
            self.stop_taking_in(window);
        }
        // Sockets handed over but not adopted yet are connections too.
        let inbox = self.share.inbox.lock().map_or(0, |i| i.len());
        if turn.drain_is_over(self.clients.len() + inbox) {
            self.leave();
            return Ok(Between::Over);
        }
        if let Some(now) = turn.sweep_due() {
            self.expire(window, turn.sweep(), now);
        }
        self.catch_up(window, inbox);
        let pause = self.acceptor.as_ref().and_then(|a| a.pause_remaining());
        arm_timer(window, timer, turn.wait_limit(pause))?;
        Ok(
            match self.read_on_backlog.is_empty() && !self.udp_on_backlog {
                true => Between::Block,
                false => Between::Peek,
            },
        )
    }

    /// The drain began: closes the listener (new clients are refused) and stops reading the
    /// UDP socket (datagrams have nothing to drain; messages already queued for it find no
    /// `udp` and are ignored).
    fn stop_taking_in(&mut self, window: Window) {
        self.acceptor = None;
        self.accept_after_pause = false;
        if let Some((u, _)) = self.udp.take() {
            if let Err(e) = async_select(u, window, 0, 0) {
                log::debug!("async-select: cannot detach the UDP socket: {e}");
            }
        }
        self.udp_on_backlog = false;
    }

    /// The drain is over: closes the inbox's sockets and gives up this window's slots. (A
    /// socket handed over after this is closed with the inbox, as a client accepted during
    /// shutdown; the clients close as the state drops: the window holds no socket any more.)
    fn leave(&mut self) {
        for _ in self.share.take_inbox() {
            self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
        }
        let held = self.share.load.swap(0, Relaxed);
        self.ctx
            .stats
            .window_sockets
            .fetch_sub(held as u64, Relaxed);
    }

    /// The sweep at `now`: closes the clients that expired (dropping a session closes its
    /// socket; its queued messages become stale), then retries the sends that waited.
    fn expire(&mut self, window: Window, sweep: &Sweep, now: Instant) {
        let expired: Vec<RawSocket> = self
            .clients
            .iter_mut()
            .filter_map(|(&s, c)| c.session.expired(sweep, now).map(|_| s))
            .collect();
        for socket in expired {
            self.close(window, socket);
        }
        self.retry_blocked_sends(window);
    }

    /// What no message announced: accepts after a pause, adopts what the inbox holds
    /// (`inbox` sockets), rescans after a failed post, reads on and serves UDP where a post
    /// could not be queued.
    fn catch_up(&mut self, window: Window, inbox: usize) {
        let room = Arc::clone(&self.room);
        if self.accept_after_pause
            && self
                .acceptor
                .as_mut()
                .is_some_and(|a| a.is_accepting_armed(&room))
        {
            self.accept_after_pause = false;
            self.accept(window);
        }
        if inbox > 0 {
            // Normally WM_HANDOFF says so; this also covers one that could not be posted.
            self.adopt(window);
        }
        if std::mem::take(&mut self.rescan) || self.share.rescan.swap(false, Relaxed) {
            self.rescan(window);
        }
        for socket in std::mem::take(&mut self.read_on_backlog) {
            self.read_on(window, socket);
        }
        if std::mem::take(&mut self.udp_on_backlog) {
            self.serve_udp(window);
        }
    }

    /// A `WM_SOCKET` message: `WSAGETSELECTEVENT(lParam)` is the low word,
    /// `WSAGETSELECTERROR(lParam)` the high word.
    fn on_socket_event(&mut self, window: Window, socket: RawSocket, lparam: LPARAM) {
        let event = (lparam & 0xffff) as u32;
        let error = ((lparam >> 16) & 0xffff) as i32;
        if self
            .udp
            .as_ref()
            .is_some_and(|(u, _)| u.as_raw_socket() == socket)
        {
            trace_event!(self.ctx.trace, "FD_READ udp s={socket}");
            if self.udp_on_queued {
                // Our own WM_UDP_ON is queued and answers what waits. Every recvfrom
                // re-enables FD_READ, and Winsock posts one more while datagrams remain, so a
                // turn of 64 recvfrom calls leaves up to 64 FD_READ behind it: serving each
                // with 64 more would multiply the messages in the queue (seen under Wine: a
                // flood of datagrams kept the loop in one batch of messages for 30 s).
                return;
            }
            if error != 0 {
                // Whatever it is, the recvfrom that follows reports it (and it concerns one
                // datagram at most).
                log::debug!(
                    "async-select: udp event {event:#x} with {}",
                    io::Error::from_raw_os_error(error)
                );
            }
            self.serve_udp(window);
            return;
        }
        if let Some(a) = &self.acceptor {
            if a.listener.as_raw_socket() == socket {
                if error != 0 {
                    // accept itself reports whatever is wrong with the listener.
                    log::debug!(
                        "async-select: FD_ACCEPT with {}",
                        io::Error::from_raw_os_error(error)
                    );
                }
                self.accept(window);
                return;
            }
        }
        let Some(client) = self.clients.get_mut(&socket) else {
            return; // closed already: its last messages outlive it in the queue
        };
        let s = &mut client.session;
        if error != 0 {
            // A reset, an abort, the network down. Let the next recv or send report it, so the
            // error is counted where every model counts it; and a stale message whose socket
            // handle was reused by a new client only costs that client a WouldBlock.
            log::debug!(
                "async-select: event {event:#x} with {}",
                io::Error::from_raw_os_error(error)
            );
            s.readable = true;
            s.writable = true;
        }
        if error == 0 && event == ws::FD_READ && client.peer_closed {
            // After FD_CLOSE our own WM_READ_ON reads on, one recv each: a recv for this
            // message too would re-enable FD_READ once more, and each such recv can leave one
            // more FD_READ in the queue (the bound of `super` counts on at most two).
            return;
        }
        if event & ws::FD_READ != 0 {
            s.readable = true;
        }
        if event & ws::FD_WRITE != 0 {
            s.writable = true;
        }
        if event & ws::FD_CLOSE != 0 {
            s.readable = true;
            client.peer_closed = true;
        }
        if error == 0 && event & CLIENT_EVENTS == 0 {
            // FD_ACCEPT, inherited from the listener before the client was registered.
            return;
        }
        self.serve(window, socket);
    }

    /// Accepts a batch ([`ACCEPT_BATCH`]) with the listener deregistered, and gives each
    /// connection a window.
    fn accept(&mut self, window: Window) {
        let Some(acceptor) = self.acceptor.as_mut() else {
            return;
        };
        if !acceptor.is_accepting() {
            self.accept_after_pause = true;
            return;
        }
        let ctx = self.ctx;
        // Quiet while it accepts: no FD_ACCEPT per accept call (see ACCEPT_BATCH). Messages
        // already queued stay queued; the sockets it accepts inherit no registration.
        ctx.stats.syscalls.fetch_add(2, Relaxed);
        if let Err(e) = async_select(&acceptor.listener, window, 0, 0) {
            self.failed = Some(e);
            return;
        }
        let mut new = Vec::new();
        let result = acceptor.accept_batch(ACCEPT_BATCH, &ctx.stats, |stream| new.push(stream));
        // Registered again: Windows and Wine post FD_ACCEPT at once if a client waits (this
        // also re-enables it on Wine, which re-enables it only with an accept that succeeds
        // and can post an FD_ACCEPT whose connection an earlier accept already took: seen, 51
        // clients never accepted before the model registered again after an empty accept).
        // At the cap or in a pause, that FD_ACCEPT finds the model not accepting, is used up
        // without an accept, and the loop accepts when the pause ends or a connection closes.
        if let Err(e) = async_select(&acceptor.listener, window, WM_SOCKET, ws::FD_ACCEPT) {
            self.failed = Some(e);
        }
        match result {
            Ok(_) if acceptor.pause_remaining().is_some() => self.accept_after_pause = true,
            Ok(_) => {}
            Err(e) => self.failed = Some(e),
        }
        for stream in new {
            self.place(window, stream);
        }
    }

    /// Gives a new connection a slot: in this window (0) while it has one, else in the first
    /// other window with one, else in a new window.
    fn place(&mut self, window: Window, stream: TcpStream) {
        let ctx = self.ctx;
        if self.share.try_reserve(self.per_window, &ctx.stats) {
            self.register(window, stream);
            return;
        }
        let per_window = self.per_window;
        let found = self
            .peers
            .iter()
            .position(|p| p.share.try_reserve(per_window, &ctx.stats));
        let Some(i) = found.or_else(|| self.start_window()) else {
            ctx.stats.refused.fetch_add(1, Relaxed);
            return; // dropped: the client sees its connection closed
        };
        let peer = &self.peers[i];
        trace_event!(
            ctx.trace,
            "handoff s={} -> window {}",
            stream.as_raw_socket(),
            peer.index
        );
        ctx.stats.handoffs_in_flight.fetch_add(1, Relaxed);
        let was_empty = {
            let mut inbox = lock(&peer.share.inbox);
            inbox.push(stream);
            inbox.len() == 1
        };
        if was_empty {
            if let Err(e) = post(ctx, peer.poster, WM_HANDOFF, 0) {
                // Its loop looks at its inbox every turn: a full queue turns soon, and the
                // waker's datagram (one more message, WM_WAKE) turns an idle one.
                peer.share.rescan.store(true, Relaxed);
                if let Err(e) = peer.waker.wake() {
                    log::debug!("async-select: cannot wake window {}: {e}", peer.index);
                }
                let index = peer.index;
                post_failed(ctx, index, "WM_HANDOFF", &e);
            }
        }
    }

    /// Starts the next window (window 0 only, at most one per `--sockets-per-window` sockets
    /// beyond its own); its slot in `peers`, or `None` (logged) if it cannot start.
    fn start_window(&mut self) -> Option<usize> {
        let spawn = self.spawn?;
        let index = self.peers.len() + 1;
        match spawn(index) {
            Ok(peer) => {
                let ctx = self.ctx;
                if !peer.share.try_reserve(self.per_window, &ctx.stats) {
                    return None; // (a fresh window has every slot free)
                }
                self.peers.push(peer);
                ctx.stats.message_windows.store(index as u64 + 1, Relaxed);
                log_every!(
                    info,
                    "async-select: window {index} started on a thread of its own ({} windows now, at \
                     most {} sockets each: --sockets-per-window, so that no message queue can \
                     overflow)",
                    index + 1,
                    self.per_window
                );
                Some(index - 1)
            }
            Err(e) => {
                log_every!(
                    error,
                    "async-select: cannot start window {index}: {e}; a new connection is closed"
                );
                None
            }
        }
    }

    /// Registers the sockets window 0 handed to this window.
    fn adopt(&mut self, window: Window) {
        for stream in self.share.take_inbox() {
            self.ctx.stats.handoffs_in_flight.fetch_sub(1, Relaxed);
            self.register(window, stream);
        }
    }

    /// Makes a client of a socket whose slot in this window is taken: selects it for its
    /// events with this window, reads once, and serves it.
    fn register(&mut self, window: Window, stream: TcpStream) {
        let ctx = self.ctx;
        // The new socket inherited the listener's registration (FD_ACCEPT to window 0; such a
        // message for a client is ignored); this replaces it, so from here on Winsock posts
        // its events to this window only.
        match async_select(&stream, window, WM_SOCKET, CLIENT_EVENTS) {
            Ok(()) => {
                let mut client = Client {
                    session: Session::new(stream, ctx),
                    peer_closed: false,
                    read_on_queued: false,
                };
                // Data that came between accept and WSAAsyncSelect may never be announced:
                // Windows posts FD_READ for it, Wine does not always (a client's first
                // bytes were seen to wait forever). One recv now costs a WouldBlock at
                // worst, and the recv re-enables FD_READ either way.
                client.session.readable = true;
                let socket = client.session.stream.as_raw_socket();
                self.clients.insert(socket, client);
                self.serve(window, socket);
            }
            Err(e) => {
                ctx.stats.refused.fetch_add(1, Relaxed);
                log_every!(
                    warn,
                    "async-select: WSAAsyncSelect on a new client failed: {e}"
                );
                // Nothing was posted for it here: its slot is free at once.
                self.share.release(&self.ctx.stats);
            }
        }
    }

    /// Closes a client (drops its session): its slot is freed by a `WM_RELEASE` posted behind
    /// the messages Winsock may still have queued for it (none come after `closesocket`).
    fn close(&mut self, window: Window, socket: RawSocket) {
        if self.clients.remove(&socket).is_none() {
            return;
        }
        self.room.freed();
        if let Err(e) = post(self.ctx, window.poster(), WM_RELEASE, 0) {
            self.share.release(&self.ctx.stats);
            self.post_failed("WM_RELEASE", &e);
        }
    }

    /// A post of ours failed: counted, logged, and this window rescans next turn.
    fn post_failed(&mut self, what: &str, e: &io::Error) {
        post_failed(self.ctx, self.index, what, e);
        self.rescan = true;
    }

    /// Notifications may have been lost (a post failed, so Winsock's may have too): every
    /// client is served as if readable and writable (one recv each, which re-enables
    /// `FD_READ`), window 0 accepts, and the UDP socket is answered.
    fn rescan(&mut self, window: Window) {
        let sockets: Vec<RawSocket> = self.clients.keys().copied().collect();
        trace_event!(
            self.ctx.trace,
            "overflow: rescanning {} sockets (window {})",
            sockets.len(),
            self.index
        );
        for socket in sockets {
            if let Some(c) = self.clients.get_mut(&socket) {
                c.session.readable = true;
                c.session.writable = true;
            }
            self.serve(window, socket);
        }
        if self.acceptor.is_some() {
            self.accept(window);
        }
        if self.udp.is_some() {
            self.udp_on_backlog = true;
        }
    }

    /// Answers up to [`udp::BUDGET`] datagrams. When the budget ran out first the model posts
    /// itself `WM_UDP_ON`, so the rest is answered after the messages already queued, and
    /// the `FD_READ` messages Winsock posts meanwhile are ignored. Otherwise the last recvfrom
    /// said `WSAEWOULDBLOCK`, and even that call re-enables `FD_READ`: the next datagram
    /// announces itself. Either way one of the two messages is always due.
    fn serve_udp(&mut self, window: Window) {
        let ctx = self.ctx;
        let Some((u, echo)) = self.udp.as_mut() else {
            return; // shutdown began: a stale message
        };
        if echo.serve(u, ctx, udp::BUDGET) == Drained::More && !self.udp_on_queued {
            self.udp_on_queued = true;
            if let Err(e) = post(ctx, window.poster(), WM_UDP_ON, 0) {
                self.udp_on_queued = false;
                self.udp_on_backlog = true;
                self.post_failed("WM_UDP_ON", &e);
            }
        }
    }

    /// A `WM_READ_ON` (or one that could not be posted): one more read of a client whose peer
    /// closed.
    fn read_on(&mut self, window: Window, socket: RawSocket) {
        if let Some(client) = self.clients.get_mut(&socket) {
            client.read_on_queued = false;
            self.serve(window, socket);
        }
    }

    /// Pumps a client once: at most one recv, as many sends as the socket takes.
    /// Tries the send again, once a sweep, for every client whose output waits for
    /// `FD_WRITE`. Under Wine a peer that resets while the server waits to write can be
    /// announced by neither `FD_WRITE` nor `FD_CLOSE` (seen: a reset in the middle of a large
    /// reply kept its connection until the write timeout). A send still blocked costs one
    /// `WSAEWOULDBLOCK` per sweep; a reset one closes the connection, counted as an error
    /// like any other.
    fn retry_blocked_sends(&mut self, window: Window) {
        let blocked: Vec<RawSocket> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.session.writable && c.session.conn.wants_write())
            .map(|(&socket, _)| socket)
            .collect();
        for socket in blocked {
            if let Some(c) = self.clients.get_mut(&socket) {
                c.session.writable = true;
            }
            self.serve(window, socket);
        }
    }

    fn serve(&mut self, window: Window, socket: RawSocket) {
        let Some(client) = self.clients.get_mut(&socket) else {
            return;
        };
        match client.session.pump(&mut self.scratch, 1) {
            Status::Open => {
                // A recv said WSAEWOULDBLOCK before the end of stream: no FIN is in, so that
                // FD_CLOSE was a stale one for an earlier socket with the same handle.
                let s = &client.session;
                if client.peer_closed && !s.readable && !s.conn.peer_eof() {
                    client.peer_closed = false;
                }
            }
            Status::Closed => self.close(window, socket),
            Status::MoreToRead if client.peer_closed => {
                // After FD_CLOSE nothing promises another FD_READ: keep reading by messages
                // of our own, one recv each, queued behind everyone else's.
                if !client.read_on_queued {
                    client.read_on_queued = true;
                    if let Err(e) = post(self.ctx, window.poster(), WM_READ_ON, socket as WPARAM) {
                        self.read_on_backlog.push(socket);
                        self.post_failed("WM_READ_ON", &e);
                    }
                }
            }
            Status::MoreToRead => {
                // The recv re-enabled FD_READ: Winsock posts another if data remains, queued
                // behind everyone else's. Until then the socket is not known to be readable.
                client.session.readable = false;
            }
        }
    }
}

/// Posts one of the model's own messages. With `ServerConfig::test_fail_posts` = N (tests
/// only), every Nth fails as a post to a full queue does, unposted.
fn post(ctx: &Ctx, to: Poster, msg: u32, wparam: WPARAM) -> io::Result<()> {
    if let Some(every) = ctx.test_fail_posts {
        static POSTS: AtomicU64 = AtomicU64::new(0);
        if POSTS.fetch_add(1, Relaxed) % u64::from(every.get()) == 0 {
            return Err(io::Error::from_raw_os_error(window::ERROR_NOT_ENOUGH_QUOTA));
        }
    }
    to.post(msg, wparam, 0)
}

/// A post to window `index` failed: counted in `Stats::notification_overflows` and logged
/// (at most about once a second); the window rescans.
fn post_failed(ctx: &Ctx, index: usize, what: &str, e: &io::Error) {
    let n = ctx.stats.notification_overflows.fetch_add(1, Relaxed) + 1;
    let why = if window::is_queue_full(e) {
        "its message queue is full"
    } else {
        "the post failed"
    };
    log_every!(
        warn,
        "async-select: cannot post {what} to window {index} ({e}): {why}, so Winsock's \
         notifications may be lost too; rescanning its sockets ({n} so far)"
    );
}

/// `WSAAsyncSelect(socket, window, msg, events)`: makes the socket non-blocking and has Winsock
/// post `msg` to the window for each of `events`; replaces any earlier registration of the
/// socket. `events == 0` cancels (messages already queued stay queued).
fn async_select(
    socket: &impl AsRawSocket,
    window: Window,
    msg: u32,
    events: u32,
) -> io::Result<()> {
    // SAFETY: plain values. The socket is open (the caller borrows its owner for the call);
    // a window that is gone is reported as an error, not a fault.
    let rc = unsafe {
        ws::WSAAsyncSelect(
            socket.as_raw_socket() as ws::SOCKET,
            window.hwnd(),
            msg,
            events as i32,
        )
    };
    if rc == ws::SOCKET_ERROR {
        return Err(last_wsa_error());
    }
    Ok(())
}

/// Cancels a socket's registration with the window when dropped.
struct Detach<'a, S: AsRawSocket>(&'a S, Window);

impl<S: AsRawSocket> Drop for Detach<'_, S> {
    fn drop(&mut self) {
        if let Err(e) = async_select(self.0, self.1, 0, 0) {
            log::debug!("async-select: cannot detach a socket from its window: {e}");
        }
    }
}
