//! The shared core against real sockets, one notification at a time: an event (as
//! `overlapped-event` uses it), a completion routine, and `AcceptEx`. The completion port is
//! exercised by the completion-port model's tests.

use super::*;
use crate::stats::Stats;
use crate::sys::apc::sleep_alertable;
use crate::sys::{wait_any, Event, Wait};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::windows::io::AsRawSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use windows_sys::Win32::System::IO::OVERLAPPED;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    client.set_read_timeout(WAIT).unwrap();
    (client, server)
}

fn in_flight(stats: &Stats) -> i64 {
    stats.ops_in_flight.load(Relaxed)
}

#[test]
fn an_event_announces_a_receive_and_the_record_reports_its_bytes() {
    let stats = Stats::default();
    let (mut client, server) = pair();
    let socket = server.as_raw_socket();
    let event = Event::new().unwrap();
    let op = OvOp::new(OpKind::Recv, 7, Vec::new());
    let f = post_recv(socket, op, 64, Notify::Event(event.handle()), &stats)
        .map_err(|(_, e)| e)
        .unwrap();
    assert_eq!(in_flight(&stats), 1);
    let posted = || stats.recv_buffer_bytes_posted.load(Relaxed);
    assert_eq!(posted(), 64, "the posted receive buffer is counted");
    // SAFETY: `f` is in flight (not reclaimed) and `socket` is open, here and below.
    unsafe {
        assert!(!f.is_complete(), "nothing was sent yet");
        assert!(f.overlapped_result(socket).is_none());
    }
    client.write_all(b"hello").unwrap();
    assert_eq!(
        wait_any(&[event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: as above; reclaimed once, after the completion was seen.
    let op = unsafe {
        assert!(f.is_complete());
        assert_eq!(f.overlapped_result(socket).unwrap().unwrap(), 5);
        f.reclaim(&stats)
    };
    assert_eq!((op.tag, op.kind()), (7, OpKind::Recv));
    assert_eq!(op.result().unwrap(), 5);
    assert_eq!(&op.buf[..5], b"hello");
    assert_eq!(in_flight(&stats), 0);
    assert_eq!(posted(), 0, "uncounted at reclaim");
    assert_eq!(stats.recv_buffer_bytes_posted_peak.load(Relaxed), 64);
}

#[test]
fn closing_the_socket_completes_a_pending_receive_with_an_error_and_frees_nothing_early() {
    let stats = Stats::default();
    let (_client, server) = pair();
    let event = Event::new().unwrap();
    let op = OvOp::new(OpKind::Recv, 1, vec![0; 64]);
    let f = post_recv(
        server.as_raw_socket(),
        op,
        64,
        Notify::Event(event.handle()),
        &stats,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    drop(server); // closesocket with the receive pending
    assert_eq!(
        wait_any(&[event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: in flight until this reclaim, which follows its completion.
    let op = unsafe {
        assert!(f.is_complete());
        f.reclaim(&stats)
    };
    // Windows: ERROR_OPERATION_ABORTED; Wine 8: STATUS_HANDLES_CLOSED (676). An error, anyway.
    assert!(op.result().is_err(), "{:?}", op.result());
    assert_eq!(in_flight(&stats), 0);
}

/// What the test routine saw: (tag, kind, error, bytes).
struct Probe {
    stats: Stats,
    seen: RefCell<Vec<(usize, OpKind, u32, u32)>>,
}

unsafe extern "system" fn probe_routine(error: u32, bytes: u32, ov: *mut OVERLAPPED, _flags: u32) {
    // SAFETY: the records of this test are posted with a `Probe` as context, alive until the
    // test has seen every completion.
    let probe = unsafe { &*routine_context(ov).cast::<Probe>() };
    // SAFETY: called once per completed record.
    let op = unsafe { reclaim(ov, &probe.stats) };
    probe
        .seen
        .borrow_mut()
        .push((op.tag, op.kind(), error, bytes));
}

#[test]
fn a_completion_routine_runs_in_the_alertable_wait_also_for_a_send_done_at_once() {
    let probe = Probe {
        stats: Stats::default(),
        seen: RefCell::new(Vec::new()),
    };
    let notify = Notify::Routine {
        routine: probe_routine,
        context: (&probe as *const Probe).cast(),
    };
    let (mut client, server) = pair();
    let socket = server.as_raw_socket();
    let mut send = OvOp::new(OpKind::Send, 1, b"0123456789".to_vec());
    send.off = 4; // a re-posted short send: only the rest goes
    post_send(socket, send, notify, &probe.stats)
        .map_err(|(_, e)| e)
        .unwrap();
    post_recv(
        socket,
        OvOp::new(OpKind::Recv, 2, Vec::new()),
        16,
        notify,
        &probe.stats,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    assert!(
        probe.seen.borrow().is_empty(),
        "routines run only in an alertable wait"
    );
    let mut got = [0u8; 6];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"456789");
    client.write_all(b"abc").unwrap();
    let mut waits = 0;
    while probe.seen.borrow().len() < 2 && waits < 50 {
        sleep_alertable(Some(Duration::from_millis(200)));
        waits += 1;
    }
    let mut seen = probe.seen.borrow().clone();
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen, [(1, OpKind::Send, 0, 6), (2, OpKind::Recv, 0, 3)]);
    assert_eq!(in_flight(&probe.stats), 0);
}

#[test]
fn accept_ex_loaded_through_wsaioctl_accepts_a_usable_socket_and_names_its_peer() {
    let stats = Stats::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let accept_ex = AcceptEx::load(&listener).unwrap();
    let event = Event::new().unwrap();
    let routine = Notify::Routine {
        routine: probe_routine,
        context: std::ptr::null(),
    };
    let refused = accept_ex.post(&listener, AcceptEx::new_op(0), routine, &stats);
    assert_eq!(
        refused.map(drop).map_err(|(_, e)| e.kind()),
        Err(io::ErrorKind::InvalidInput),
        "AcceptEx takes no completion routine"
    );
    let f = accept_ex
        .post(
            &listener,
            AcceptEx::new_op(9),
            Notify::Event(event.handle()),
            &stats,
        )
        .map_err(|(_, e)| e)
        .unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(WAIT).unwrap();
    assert_eq!(
        wait_any(&[event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: in flight until this reclaim, which follows its completion.
    let mut op = unsafe {
        assert!(f.is_complete());
        f.reclaim(&stats)
    };
    assert_eq!((op.tag, op.kind()), (9, OpKind::Accept));
    assert_eq!(
        op.result().unwrap(),
        0,
        "no data is received with the connection"
    );
    let (mut accepted, peer) = accept_ex.finish(&listener, &mut op).unwrap();
    assert_eq!(peer, Some(client.local_addr().unwrap()));
    // SO_UPDATE_ACCEPT_CONTEXT makes the socket a full one: getpeername, shutdown work.
    assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    accepted.write_all(b"hi").unwrap();
    accepted.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hi");
    assert_eq!(in_flight(&stats), 0);
}

// ---- UDP: the datagram records -------------------------------------------------------------

mod udp_records {
    use super::super::udp::{classify, Received};
    use super::super::{reclaim_datagram, Notify, OvUdpEcho};
    use super::WAIT;
    use crate::ctx::Ctx;
    use crate::stats::StatsSnapshot;
    use crate::sys::apc::sleep_alertable;
    use crate::sys::iocp::{empty_entry, CompletionPort};
    use crate::sys::{wait_any, Event};
    use crate::{Model, Server, ServerConfig};
    use std::cell::RefCell;
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::windows::io::AsRawSocket;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};
    use windows_sys::Win32::System::IO::OVERLAPPED;

    /// A bound UDP-only server (never run): its `Ctx` holds the socket the records use.
    fn server(max: usize) -> Server {
        server_on("127.0.0.1:0", max)
    }

    /// As [`server`], on `listen` (a wildcard address: the socket asks for packet information).
    fn server_on(listen: &str, max: usize) -> Server {
        Server::bind(ServerConfig {
            model: Model::CompletionPort,
            listen: listen.parse().unwrap(),
            tcp: false,
            udp: true,
            udp_max_datagram: max,
            ..ServerConfig::default()
        })
        .unwrap()
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(WAIT).unwrap();
        c
    }

    fn udp_addr(ctx: &Ctx) -> SocketAddr {
        ctx.udp.as_ref().unwrap().local_addr().unwrap()
    }

    /// Sends an oversized datagram (which must be counted and never echoed) then a small one
    /// (which must be the first thing to come back), then stops, with `turn` reaping the
    /// completions however the notification delivers them; checks the counters and that
    /// every record came back.
    fn oversized_then_small(ctx: &Ctx, udp: &RefCell<OvUdpEcho>, notify: Notify, turn: &dyn Fn()) {
        udp.borrow_mut().new_turn(notify);
        let c = client();
        let to = udp_addr(ctx);
        c.send_to(&[7u8; 1001], to).unwrap();
        c.send_to(b"small", to).unwrap();
        let deadline = Instant::now() + WAIT.unwrap();
        let st = || ctx.stats.snapshot();
        while !(st().udp_truncated == 1 && st().udp_datagrams_out == 1) {
            assert!(Instant::now() < deadline, "{:?}", st());
            turn();
        }
        let mut buf = [0u8; 2048];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"small"[..], to));
        let s: StatsSnapshot = st();
        assert_eq!(
            (s.udp_datagrams_in, s.udp_bytes_in, s.udp_bytes_out),
            (2, 5, 5)
        );
        udp.borrow_mut().stop();
        while udp.borrow().in_flight() > 0 {
            assert!(Instant::now() < deadline, "records still in flight");
            turn();
        }
        assert_eq!(ctx.stats.ops_in_flight.load(Relaxed), 0);
    }

    #[test]
    fn every_form_of_a_cut_datagram_is_truncated_and_abort_is_aborted() {
        for (e, want) in [
            (10040, Received::Truncated), // WSAEMSGSIZE (routine, WSAGetOverlappedResult)
            (234, Received::Truncated),   // ERROR_MORE_DATA (STATUS_BUFFER_OVERFLOW mapped)
            (995, Received::Aborted),     // ERROR_OPERATION_ABORTED
            (676, Received::Aborted),     // ERROR_HANDLES_CLOSED (Wine's abort)
            (10054, Received::Nothing),   // WSAECONNRESET (ICMP port unreachable)
        ] {
            assert_eq!(classify(&Err(io::Error::from_raw_os_error(e))), want, "{e}");
        }
        assert_eq!(classify(&Ok(0)), Received::Whole(0));
    }

    #[test]
    fn with_an_event_an_oversized_datagram_is_counted_and_the_next_echoed() {
        let server = server(1000);
        let ctx = &server.ctx;
        let event = Event::new().unwrap();
        let notify = Notify::Event(event.handle());
        let udp = RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx));
        let turn = || {
            wait_any(&[event.handle()], Some(Duration::from_millis(50)), false).unwrap();
            event.reset();
            while udp.borrow_mut().reap_completed(notify) {}
        };
        oversized_then_small(ctx, &udp, notify, &turn);
    }

    struct RoutineProbe<'a> {
        ctx: &'a Ctx,
        udp: RefCell<OvUdpEcho>,
        notify: std::cell::Cell<Option<Notify>>,
        errors: RefCell<Vec<u32>>,
    }

    unsafe extern "system" fn probe(error: u32, bytes: u32, ov: *mut OVERLAPPED, _flags: u32) {
        // SAFETY: posted with a live `RoutineProbe` as context, alive until every record is
        // back.
        let p = unsafe { &*super::routine_context(ov).cast::<RoutineProbe>() };
        // SAFETY: called once per completed record.
        let d = unsafe { reclaim_datagram(ov, &p.ctx.stats) };
        p.errors.borrow_mut().push(error);
        let result = match error {
            0 => Ok(bytes as usize),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        };
        let notify = p.notify.get().unwrap();
        p.udp.borrow_mut().complete(d, result, notify);
    }

    #[test]
    fn with_a_routine_an_oversized_datagram_is_counted_and_the_next_echoed() {
        let server = server(1000);
        let ctx = &server.ctx;
        let p = RoutineProbe {
            ctx,
            udp: RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx)),
            notify: std::cell::Cell::new(None),
            errors: RefCell::new(Vec::new()),
        };
        let notify = Notify::Routine {
            routine: probe,
            context: (&p as *const RoutineProbe).cast(),
        };
        p.notify.set(Some(notify));
        let turn = || {
            sleep_alertable(Some(Duration::from_millis(50)));
        };
        oversized_then_small(ctx, &p.udp, notify, &turn);
        let errors = p.errors.borrow().clone();
        eprintln!("routine errors seen: {errors:?}");
        // The cut datagram's form (Wine 8: WSAEMSGSIZE), then the small one, its send, and
        // the four cancelled receives.
        assert!(errors.iter().any(
            |&e| classify(&Err(io::Error::from_raw_os_error(e as i32))) == Received::Truncated
        ));
    }

    #[test]
    fn with_a_port_an_oversized_datagram_is_counted_and_the_next_echoed() {
        let server = server(1000);
        let ctx = &server.ctx;
        let port = CompletionPort::new(1).unwrap();
        port.associate(ctx.udp.as_ref().unwrap().as_raw_socket(), 3)
            .unwrap();
        let udp = RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx));
        let seen = RefCell::new(Vec::new());
        let turn = || {
            let mut entries = vec![empty_entry(); 8];
            let n = port
                .wait(&mut entries, Some(Duration::from_millis(50)))
                .unwrap();
            for e in &entries[..n] {
                // SAFETY: every packet on this port is a datagram record's, dequeued once.
                let d = unsafe { reclaim_datagram(e.lpOverlapped, &ctx.stats) };
                let result = d.result();
                seen.borrow_mut()
                    .push(result.as_ref().map_err(|e| e.raw_os_error()).copied());
                udp.borrow_mut().complete(d, result, Notify::Port);
            }
        };
        oversized_then_small(ctx, &udp, Notify::Port, &turn);
        eprintln!("port outcomes seen: {:?}", seen.borrow());
    }

    #[test]
    fn an_icmp_port_unreachable_does_not_stop_the_echo() {
        let server = server(1000);
        let ctx = &server.ctx;
        let event = Event::new().unwrap();
        let notify = Notify::Event(event.handle());
        let udp = RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx));
        udp.borrow_mut().new_turn(notify);
        let turn = || {
            wait_any(&[event.handle()], Some(Duration::from_millis(50)), false).unwrap();
            event.reset();
            while udp.borrow_mut().reap_completed(notify) {}
        };
        let to = udp_addr(ctx);
        // A client that sends, then closes before the echo: the echo meets a closed port.
        let gone = client();
        gone.send_to(b"gone", to).unwrap();
        let deadline = Instant::now() + WAIT.unwrap();
        while ctx.stats.snapshot().udp_datagrams_out + ctx.stats.snapshot().udp_send_dropped < 1 {
            assert!(Instant::now() < deadline);
            turn();
        }
        drop(gone);
        // Echo to a port nobody listens on (the ICMP answer would reset the next receive).
        let closed = client().local_addr().unwrap();
        ctx.udp.as_ref().unwrap().send_to(b"x", closed).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let c = client();
        for i in 0..3u8 {
            c.send_to(&[i], to).unwrap();
            let mut buf = [0u8; 8];
            let got = loop {
                // Reap on this thread while the echo is on its way.
                turn();
                c.set_nonblocking(true).unwrap();
                let r = c.recv_from(&mut buf);
                c.set_nonblocking(false).unwrap();
                match r {
                    Ok((n, _)) => break buf[..n].to_vec(),
                    Err(_) => assert!(Instant::now() < deadline, "no echo of {i}"),
                }
            };
            assert_eq!(got, [i]);
        }
        udp.borrow_mut().stop();
        while udp.borrow().in_flight() > 0 {
            assert!(Instant::now() < deadline);
            turn();
        }
    }

    // ---- Answers leave from the address each datagram was sent to ----------------------

    /// On a wildcard server, a datagram from `client_at` sent to `to_ip` (127.0.0.2: not the
    /// address the route back picks) is received with its arrival reported (`WSARecvMsg`'s
    /// `IN_PKTINFO` / `IN6_PKTINFO`) and echoed from there (`WSASendMsg`), however `turn`
    /// reaps the completions; then everything comes back.
    fn answered_from_the_arrival(
        ctx: &Ctx,
        udp: &RefCell<OvUdpEcho>,
        notify: Notify,
        turn: &dyn Fn(),
        client_at: &str,
        to_ip: &str,
    ) {
        udp.borrow_mut().new_turn(notify);
        let to = SocketAddr::new(to_ip.parse().unwrap(), udp_addr(ctx).port());
        let c = UdpSocket::bind(client_at).unwrap();
        c.set_read_timeout(WAIT).unwrap();
        c.send_to(b"from where?", to).unwrap();
        let deadline = Instant::now() + WAIT.unwrap();
        while ctx.stats.snapshot().udp_datagrams_out < 1 {
            assert!(Instant::now() < deadline, "{:?}", ctx.stats.snapshot());
            turn();
        }
        let arrival = udp.borrow().last_arrival();
        assert_eq!(
            arrival.map(|a| a.addr),
            Some(to.ip()),
            "the receive did not report where the datagram was sent to"
        );
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from where?");
        if from != to && crate::sys::wine_version().is_some() {
            crate::sys::wine_skips(&format!(
                "an overlapped answer to {to} leaves from {to} (it left from {from})"
            ));
        } else {
            assert_eq!(from, to, "the answer left from another address");
        }
        udp.borrow_mut().stop();
        while udp.borrow().in_flight() > 0 {
            assert!(Instant::now() < deadline, "records still in flight");
            turn();
        }
        assert_eq!(ctx.stats.ops_in_flight.load(Relaxed), 0);
    }

    /// The event form, on `listen`.
    fn with_an_event(listen: &str, client_at: &str, to_ip: &str) {
        let server = server_on(listen, 1000);
        let ctx = &server.ctx;
        let event = Event::new().unwrap();
        let notify = Notify::Event(event.handle());
        let udp = RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx));
        let turn = || {
            wait_any(&[event.handle()], Some(Duration::from_millis(50)), false).unwrap();
            event.reset();
            while udp.borrow_mut().reap_completed(notify) {}
        };
        answered_from_the_arrival(ctx, &udp, notify, &turn, client_at, to_ip);
    }

    #[test]
    fn with_an_event_a_wildcard_socket_answers_from_the_address_a_datagram_was_sent_to() {
        with_an_event("0.0.0.0:0", "127.0.0.1:0", "127.0.0.2");
    }

    #[test]
    fn with_an_event_an_ipv6_wildcard_socket_reports_loopback_and_answers_from_it() {
        with_an_event("[::]:0", "[::1]:0", "::1");
    }

    #[test]
    fn with_a_routine_a_wildcard_socket_answers_from_the_address_a_datagram_was_sent_to() {
        let server = server_on("0.0.0.0:0", 1000);
        let ctx = &server.ctx;
        let p = RoutineProbe {
            ctx,
            udp: RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx)),
            notify: std::cell::Cell::new(None),
            errors: RefCell::new(Vec::new()),
        };
        let notify = Notify::Routine {
            routine: probe,
            context: (&p as *const RoutineProbe).cast(),
        };
        p.notify.set(Some(notify));
        let turn = || {
            sleep_alertable(Some(Duration::from_millis(50)));
        };
        answered_from_the_arrival(ctx, &p.udp, notify, &turn, "127.0.0.1:0", "127.0.0.2");
    }

    #[test]
    fn with_a_port_a_wildcard_socket_answers_from_the_address_a_datagram_was_sent_to() {
        let server = server_on("0.0.0.0:0", 1000);
        let ctx = &server.ctx;
        let port = CompletionPort::new(1).unwrap();
        port.associate(ctx.udp.as_ref().unwrap().as_raw_socket(), 3)
            .unwrap();
        let udp = RefCell::new(OvUdpEcho::new(ctx.udp.as_ref().unwrap(), ctx));
        let turn = || {
            let mut entries = vec![empty_entry(); 8];
            let n = port
                .wait(&mut entries, Some(Duration::from_millis(50)))
                .unwrap();
            for e in &entries[..n] {
                // SAFETY: every packet on this port is a datagram record's, dequeued once.
                let d = unsafe { reclaim_datagram(e.lpOverlapped, &ctx.stats) };
                let result = d.result();
                udp.borrow_mut().complete(d, result, Notify::Port);
            }
        };
        answered_from_the_arrival(ctx, &udp, Notify::Port, &turn, "127.0.0.1:0", "127.0.0.2");
    }
}

/// The book's zero-byte receive: a `WSARecv` of no bytes stays pending while the socket holds
/// nothing (and hands the kernel no buffer: the gauge stays 0), completes with 0 bytes once
/// data is there, and leaves the data for a non-blocking `recv`; at the peer's end of stream
/// it completes with 0 bytes too, and the `recv` then returns 0.
#[test]
fn a_zero_byte_receive_waits_for_data_and_leaves_it_in_the_socket() {
    let stats = Stats::default();
    let (mut client, server) = pair();
    server.set_nonblocking(true).unwrap();
    let socket = server.as_raw_socket();
    let event = Event::new().unwrap();
    let post = |stats: &Stats| {
        post_recv(
            socket,
            OvOp::new(OpKind::Recv, 3, Vec::new()),
            0,
            Notify::Event(event.handle()),
            stats,
        )
        .map_err(|(_, e)| e)
        .unwrap()
    };
    let f = post(&stats);
    assert_eq!(stats.recv_buffer_bytes_posted_peak.load(Relaxed), 0);
    assert_eq!(
        wait_any(&[event.handle()], Some(Duration::from_millis(200)), false).unwrap(),
        Wait::TimedOut,
        "a zero-byte receive completed with nothing to read"
    );
    // SAFETY: in flight, on the open socket.
    assert!(unsafe { !f.is_complete() });
    client.write_all(b"hello").unwrap();
    assert_eq!(
        wait_any(&[event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: complete (its event fired and its status is stored); reclaimed once.
    let op = unsafe {
        assert_eq!(f.overlapped_result(socket).unwrap().unwrap(), 0);
        f.reclaim(&stats)
    };
    assert_eq!(op.result().unwrap(), 0);
    let mut buf = [0u8; 64];
    assert_eq!((&server).read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    let e = (&server).read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    // End of stream: completes with 0 too; the recv says which.
    event.reset();
    let f = post(&stats);
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        wait_any(&[event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: as above.
    let op = unsafe { f.reclaim(&stats) };
    assert_eq!(op.result().unwrap(), 0);
    assert_eq!((&server).read(&mut buf).unwrap(), 0, "end of stream");
    assert_eq!(in_flight(&stats), 0);
    assert_eq!(stats.recv_buffer_bytes_posted_peak.load(Relaxed), 0);
}

/// What `overlapped-event`'s event per operation rests on: posting an operation resets the
/// event in its own `hEvent` (Wine's server does it when it queues the request), and that
/// event only. So with one event shared by a connection's receive and send, posting the
/// receive wipes the signal of a send that has completed; with an event each, the send's
/// signal stays.
#[test]
fn posting_resets_the_event_of_its_own_record_and_no_other() {
    let stats = Stats::default();
    let (mut client, server) = pair();
    let socket = server.as_raw_socket();
    let (shared, send_event, recv_event) = (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Event::new().unwrap(),
    );
    let signalled = |e: &Event| {
        wait_any(&[e.handle()], Some(Duration::ZERO), false).unwrap() == Wait::Signalled(0)
    };
    let send = |event: &Event| {
        let mut op = OvOp::new(OpKind::Send, 1, Vec::new());
        op.buf = b"sent".to_vec();
        let f = post_send(socket, op, Notify::Event(event.handle()), &stats)
            .map_err(|(_, e)| e)
            .unwrap();
        // A send of 4 bytes to an idle peer is done at once; its completion sets the event.
        assert_eq!(
            wait_any(&[event.handle()], WAIT, false).unwrap(),
            Wait::Signalled(0)
        );
        // SAFETY: complete (its event fired); reclaimed once.
        unsafe {
            assert!(f.is_complete());
            f.reclaim(&stats);
        }
    };
    let recv = |event: &Event| {
        post_recv(
            socket,
            OvOp::new(OpKind::Recv, 2, Vec::new()),
            0,
            Notify::Event(event.handle()),
            &stats,
        )
        .map_err(|(_, e)| e)
        .unwrap()
    };
    // One event for both: the receive's post resets the signal the send's completion left.
    send(&shared);
    let r = recv(&shared);
    assert!(
        !signalled(&shared),
        "posting the receive did not reset the shared event"
    );
    client.write_all(b"x").unwrap();
    assert_eq!(
        wait_any(&[shared.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: complete (its event fired); reclaimed once.
    unsafe { r.reclaim(&stats) };
    let mut buf = [0u8; 8];
    assert_eq!((&server).read(&mut buf).unwrap(), 1);
    // An event each: the send's signal survives the receive's post, which resets only its own.
    recv_event.set().unwrap();
    send(&send_event);
    let r = recv(&recv_event);
    assert!(
        signalled(&send_event),
        "posting the receive reset the send's event"
    );
    assert!(
        !signalled(&recv_event),
        "posting the receive did not reset its own event"
    );
    client.write_all(b"y").unwrap();
    assert_eq!(
        wait_any(&[recv_event.handle()], WAIT, false).unwrap(),
        Wait::Signalled(0)
    );
    // SAFETY: as above.
    unsafe { r.reclaim(&stats) };
    let mut got = [0u8; 8];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"sentsent");
    assert_eq!(in_flight(&stats), 0);
}
