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
    let op = Op::new(OpKind::Recv, 7, Vec::new());
    let f = post_recv(socket, op, 64, Notify::Event(event.handle()), &stats)
        .map_err(|(_, e)| e)
        .unwrap();
    assert_eq!(in_flight(&stats), 1);
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
}

#[test]
fn closing_the_socket_completes_a_pending_receive_with_an_error_and_frees_nothing_early() {
    let stats = Stats::default();
    let (_client, server) = pair();
    let event = Event::new().unwrap();
    let op = Op::new(OpKind::Recv, 1, vec![0; 64]);
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
    let mut send = Op::new(OpKind::Send, 1, b"0123456789".to_vec());
    send.off = 4; // a re-posted short send: only the rest goes
    post_send(socket, send, notify, &probe.stats)
        .map_err(|(_, e)| e)
        .unwrap();
    post_recv(
        socket,
        Op::new(OpKind::Recv, 2, Vec::new()),
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
