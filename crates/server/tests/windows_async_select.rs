#![cfg(windows)]
//! The async-select model on Windows (`WSAAsyncSelect` to a message-only window), through real
//! sockets: its re-enabling notifications (one `FD_READ` per recv, `FD_WRITE` only after a
//! send would block, `FD_CLOSE` ahead of unread data), many clients on one message queue, more
//! sockets than one window may hold (spread over windows on threads of their own), and shutdown
//! with a client still connected. Also what Wine does with a message queue of 10,000 messages.

mod common;

/// Under one module, so `cargo test async_select` picks exactly these.
mod async_select {
    use crate::common::{
        check_echo, check_echo_then_eof, connect, echo_through, eventually, ping, Rng,
    };
    use iomodels_server::{Model, RunningServer, ServerConfig};
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::sync::{mpsc, Arc, Barrier};
    use std::time::{Duration, Instant};

    fn start(tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
        crate::common::start(Model::AsyncSelect, tweak)
    }

    /// 2,000 writes of 1 to 7 bytes with pauses between some: each burst is its own `FD_READ`, or
    /// several run together into one; either way every byte must come back once, in order.
    #[test]
    fn two_thousand_tiny_bursts_come_back_in_order() {
        let server = start(|_| {});
        let mut rng = Rng(0xb0b5);
        let mut data = Vec::new();
        let mut bursts = Vec::new();
        for _ in 0..2000 {
            let n = 1 + rng.next() as usize % 7;
            bursts.push(n);
            data.extend(rng.bytes(n));
        }
        let expected = data.clone();
        let s = connect(server.addr);
        s.set_nodelay(true).unwrap();
        let echoed = echo_through(s, data, move |w, data| {
            let mut off = 0;
            for (i, n) in bursts.into_iter().enumerate() {
                w.write_all(&data[off..off + n]).unwrap();
                off += n;
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                } else if i % 3 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        assert_eq!(echoed.len(), expected.len(), "echoed length");
        assert!(echoed == expected, "echoed bytes differ from what was sent");
        let stats = server.stats.snapshot();
        assert_eq!(stats.bytes_in, expected.len() as u64);
        assert_eq!(stats.errors, 0, "{stats:?}");
        server.stop().unwrap();
    }

    /// More clients than one `WSAWaitForMultipleEvents` takes (64), all open at once on the one
    /// message queue, each with its own byte stream verified.
    #[test]
    fn a_hundred_concurrent_clients_are_each_verified() {
        const CLIENTS: usize = 100;
        const ROUNDS: usize = 20;
        let server = start(|_| {});
        let all_connected = Arc::new(Barrier::new(CLIENTS + 1));
        let checked = Arc::new(Barrier::new(CLIENTS + 1));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let mut s = connect(server.addr);
                let (all_connected, checked) = (all_connected.clone(), checked.clone());
                std::thread::spawn(move || -> Result<(), String> {
                    let mut rng = Rng(1000 + i as u64);
                    // A first echo, so the server has accepted this client before the count.
                    // The barriers are passed whatever it gives, so a failure is reported,
                    // not a deadlock of the others.
                    let first = s.write_all(&[i as u8]).and_then(|()| {
                        let mut one = [0u8; 1];
                        s.read_exact(&mut one)
                    });
                    all_connected.wait();
                    checked.wait();
                    first.map_err(|e| format!("client {i}: first echo: {e}"))?;
                    for round in 0..ROUNDS {
                        let len = 1 + rng.next() as usize % 3000;
                        let msg = rng.bytes(len);
                        s.write_all(&msg).map_err(|e| e.to_string())?;
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back)
                            .map_err(|e| format!("client {i} round {round}: {e}"))?;
                        if back != msg {
                            return Err(format!("client {i} round {round}: echo differs"));
                        }
                    }
                    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
                    if !rest.is_empty() {
                        return Err(format!("client {i}: {} bytes after its echoes", rest.len()));
                    }
                    Ok(())
                })
            })
            .collect();
        all_connected.wait();
        let at_once = server.stats.snapshot();
        checked.wait();
        for (i, c) in clients.into_iter().enumerate() {
            let result = c.join().unwrap_or_else(|_| panic!("client {i} panicked"));
            if let Err(e) = result {
                panic!("{e}; the server when all had connected: {at_once:?}");
            }
        }
        assert_eq!(at_once.active, CLIENTS as i64, "clients open at once");
        assert!(eventually(Duration::from_secs(5), || {
            let s = server.stats.snapshot();
            s.accepted == CLIENTS as u64 && s.active == 0
        }));
        assert_eq!(server.stats.snapshot().errors, 0);
        server.stop().unwrap();
    }

    /// The message each client of [`many_clients_echo`] sends: its number, then a filler that
    /// depends on it.
    fn tag(i: usize, round: u8) -> [u8; 8] {
        let n = (i as u32).to_le_bytes();
        [
            n[0],
            n[1],
            n[2],
            n[3],
            round,
            0x5a ^ n[0],
            0xa5 ^ n[1],
            round ^ n[2],
        ]
    }

    /// Opens `conns` connections at once (one thread, blocking sockets), has each echo its own 8
    /// bytes, checks every echo byte for byte, and returns the server's counters while all are
    /// open; then closes them all and waits until the server has too.
    fn many_clients_echo(
        server: &RunningServer,
        conns: usize,
        round: u8,
    ) -> iomodels_server::StatsSnapshot {
        many_clients_echo_as(server, conns, round, false)
    }

    /// [`many_clients_echo`], with each client's echo done before the next connects when
    /// `one_by_one` (so a new socket's window has nothing else to wake it).
    fn many_clients_echo_as(
        server: &RunningServer,
        conns: usize,
        round: u8,
        one_by_one: bool,
    ) -> iomodels_server::StatsSnapshot {
        let echo = |i: usize, s: &mut TcpStream| {
            let mut back = [0u8; 8];
            s.read_exact(&mut back)
                .unwrap_or_else(|e| panic!("client {i} of {conns}: no echo: {e}"));
            assert_eq!(back, tag(i, round), "client {i}: echo differs");
        };
        let mut socks: Vec<TcpStream> = (0..conns)
            .map(|i| {
                let mut s = crate::common::try_connect(server.addr)
                    .unwrap_or_else(|e| panic!("connection {i} of {conns}: {e}"));
                if one_by_one {
                    s.write_all(&tag(i, round)).unwrap();
                    echo(i, &mut s);
                }
                s
            })
            .collect();
        if !one_by_one {
            for (i, s) in socks.iter_mut().enumerate() {
                s.write_all(&tag(i, round))
                    .unwrap_or_else(|e| panic!("client {i}: write: {e}"));
            }
            for (i, s) in socks.iter_mut().enumerate() {
                echo(i, s);
            }
        }
        let open = server.stats.snapshot();
        for s in &socks {
            s.shutdown(Shutdown::Write).unwrap();
        }
        for (i, s) in socks.iter_mut().enumerate() {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)
                .unwrap_or_else(|e| panic!("client {i}: read to EOF: {e}"));
            assert!(
                rest.is_empty(),
                "client {i}: {} bytes after its echo",
                rest.len()
            );
        }
        drop(socks);
        assert!(
            eventually(Duration::from_secs(20), || server.stats.snapshot().active
                == 0),
            "connections left open: {:?}",
            server.stats.snapshot()
        );
        open
    }

    /// 5,000 connections at once, five times what one window may hold with the default bound
    /// (`--sockets-per-window` 1,000: (10,000 queued messages - 2,000) / 8 per socket): window 0
    /// serves 1,000 and hands the rest to four more windows, each on its own thread, and every
    /// connection echoes byte for byte.
    #[test]
    fn five_thousand_connections_spread_over_five_windows_all_echo() {
        const CONNS: usize = 5000;
        let server = start(|_| {});
        let open = many_clients_echo(&server, CONNS, 1);
        assert_eq!(open.active, CONNS as i64, "{open:?}");
        assert_eq!(
            iomodels_server::SOCKETS_PER_WINDOW,
            1000,
            "the default bound changed: update the window count below"
        );
        assert_eq!(
            open.message_windows, 5,
            "windows for 5,000 sockets: {open:?}"
        );
        assert_eq!(open.window_sockets, CONNS as u64, "{open:?}");
        assert_eq!(
            open.window_sockets_peak, 1000,
            "the fullest window: {open:?}"
        );
        assert_eq!(open.notification_overflows, 0, "{open:?}");
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, CONNS as u64, "{s:?}");
        assert_eq!(
            (s.bytes_in, s.bytes_out),
            (8 * CONNS as u64, 8 * CONNS as u64)
        );
        assert_eq!((s.errors, s.refused), (0, 0), "{s:?}");
        server.stop().unwrap();
    }

    /// `--sockets-per-window 300` and 1,000 connections: four windows (300, 300, 300, 100), all
    /// echoed. Once they have closed, every slot is free again (`WM_RELEASE`, behind each closed
    /// socket's last messages), so 1,000 new connections fit in the same four windows.
    #[test]
    fn sockets_per_window_spreads_a_thousand_over_four_windows_and_slots_come_back() {
        let server = start(|c| c.sockets_per_window = Some(300));
        let open = many_clients_echo(&server, 1000, 1);
        assert_eq!(open.active, 1000, "{open:?}");
        assert_eq!(open.message_windows, 4, "{open:?}");
        assert_eq!(open.window_sockets_peak, 300, "{open:?}");
        assert!(
            eventually(Duration::from_secs(20), || {
                server.stats.snapshot().window_sockets == 0
            }),
            "slots still held after every connection closed: {:?}",
            server.stats.snapshot()
        );
        let again = many_clients_echo(&server, 1000, 2);
        assert_eq!(again.active, 1000, "{again:?}");
        assert_eq!(again.message_windows, 4, "no window more: {again:?}");
        assert_eq!(again.window_sockets_peak, 300, "{again:?}");
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, 2000, "{s:?}");
        assert_eq!(
            (s.errors, s.refused, s.notification_overflows),
            (0, 0, 0),
            "{s:?}"
        );
        server.stop().unwrap();
    }

    /// The connection cap holds across windows: at `--max-conns` window 0 stops accepting; a
    /// client closing on another window wakes it, and the one waiting in the backlog is
    /// served.
    #[test]
    fn the_connection_cap_holds_across_windows() {
        let server = start(|c| {
            c.sockets_per_window = Some(2);
            c.max_conns = Some(6);
        });
        let mut socks: Vec<TcpStream> = (0..6).map(|_| connect(server.addr)).collect();
        for s in &mut socks {
            ping(s, b"hello");
        }
        let s = server.stats.snapshot();
        assert_eq!((s.active, s.message_windows), (6, 3), "{s:?}");
        // The seventh waits in the backlog: connected by the kernel, never served.
        let mut seventh = connect(server.addr);
        seventh.write_all(b"late").unwrap();
        seventh
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert!(seventh.read(&mut buf).is_err(), "served past the cap");
        // Close one that window 2 serves (the fifth and sixth went there).
        drop(socks.pop());
        seventh
            .set_read_timeout(Some(crate::common::CLIENT_TIMEOUT))
            .unwrap();
        seventh.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        let s = server.stats.snapshot();
        assert_eq!(s.active, 6, "{s:?}");
        assert!(s.conn_cap_pauses >= 1, "{s:?}");
        drop(socks);
        drop(seventh);
        server.stop().unwrap();
    }

    /// A post of the model's own that fails (as on a full queue: Wine's never fills, so a test
    /// knob fails every third) is counted, and the window recovers instead of stalling: a
    /// `WM_HANDOFF` lost is made up by the window's next turn (its waker turns an idle one), a
    /// `WM_RELEASE` lost frees the slot at once, and the rescan serves every socket. 400
    /// connections over eight windows of 50, twice (first each echoing before the next
    /// connects, then all at once), all echoed: a lost hand-off would leave its window asleep
    /// and its client without an echo.
    #[test]
    fn failed_posts_are_counted_and_rescanned_and_nothing_stalls() {
        let server = start(|c| {
            c.sockets_per_window = Some(50);
            c.test_fail_posts = std::num::NonZeroU32::new(3);
            // No timeouts, so no sweep timer wakes a window: only the recovery can.
            c.write_timeout = None;
        });
        for round in 1..=2 {
            let open = many_clients_echo_as(&server, 400, round, round == 1);
            assert_eq!(open.active, 400, "{open:?}");
            assert_eq!(open.message_windows, 8, "{open:?}");
            assert!(
                eventually(Duration::from_secs(20), || {
                    server.stats.snapshot().window_sockets == 0
                }),
                "slots still held: {:?}",
                server.stats.snapshot()
            );
        }
        let s = server.stats.snapshot();
        assert_eq!(s.accepted, 800, "{s:?}");
        assert_eq!((s.errors, s.refused), (0, 0), "{s:?}");
        assert!(
            s.notification_overflows >= 100,
            "failed posts were not counted: {s:?}"
        );
        server.stop().unwrap();
    }

    /// The UDP socket stays with window 0 when more windows start: datagrams sent after the
    /// third window began are all answered, and TCP keeps echoing on every window.
    #[test]
    fn udp_is_answered_by_window_zero_while_other_windows_serve_tcp() {
        let server = start(|c| {
            c.udp = true;
            c.sockets_per_window = Some(2);
        });
        let mut socks: Vec<TcpStream> = (0..6).map(|_| connect(server.addr)).collect();
        for s in &mut socks {
            ping(s, b"tcp");
        }
        assert_eq!(server.stats.snapshot().message_windows, 3);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(crate::common::CLIENT_TIMEOUT))
            .unwrap();
        udp.connect(server.udp_addr.unwrap()).unwrap();
        for i in 0..20u8 {
            let msg = [i; 100];
            udp.send(&msg).unwrap();
            let mut back = [0u8; 200];
            let n = udp
                .recv(&mut back)
                .unwrap_or_else(|e| panic!("datagram {i}: no answer: {e}"));
            assert_eq!(&back[..n], &msg[..], "datagram {i}");
            ping(&mut socks[i as usize % 6], b"again");
        }
        let s = server.stats.snapshot();
        assert_eq!((s.udp_datagrams_in, s.udp_datagrams_out), (20, 20), "{s:?}");
        drop(socks);
        server.stop().unwrap();
    }

    /// A bad `--sockets-per-window` is refused at bind with one line saying why: 0, or more
    /// than the bound for which a queue cannot overflow.
    #[test]
    fn a_bad_sockets_per_window_is_refused_at_bind_in_one_line() {
        for (n, needle) in [(0, "at least 1"), (1001, "at most 1000")] {
            let config = ServerConfig {
                model: Model::AsyncSelect,
                listen: "127.0.0.1:0".parse().unwrap(),
                sockets_per_window: Some(n),
                ..ServerConfig::default()
            };
            let e = match iomodels_server::Server::bind(config) {
                Ok(_) => panic!("--sockets-per-window {n} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("--sockets-per-window") && e.contains(needle),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e:?}");
        }
    }

    /// Write, shut the write side, read to EOF: everything comes back, then the server's FIN. The
    /// large case sends faster than the server echoes, so `FD_CLOSE` arrives with data unread.
    #[test]
    fn half_close_gets_everything_back_then_eof() {
        let server = start(|_| {});
        let mut rng = Rng(7);
        for len in [1, 1000, 100_000, 4 << 20] {
            let data = rng.bytes(len);
            let echoed = echo_through(connect(server.addr), data.clone(), |w, d| {
                w.write_all(d).unwrap()
            });
            check_echo(&echoed, &data);
        }
        // Sent and shut at once: data and FIN often arrive together, FD_READ and FD_CLOSE posted
        // back to back.
        for _ in 0..50 {
            let len = 1 + rng.next() as usize % 3000;
            let data = rng.bytes(len);
            check_echo_then_eof(&mut connect(server.addr), &data);
        }
        assert!(eventually(Duration::from_secs(5), || {
            server.stats.snapshot().active == 0
        }));
        server.stop().unwrap();
    }

    /// A client that stops reading drives its connection to the high-water mark, where the server
    /// stops calling recv and so consumes an `FD_READ` without answering it. When the client reads
    /// again and the output drains, the server must read on by itself: no new `FD_READ` comes
    /// until it calls recv.
    #[test]
    fn a_reader_that_pauses_gets_everything_when_it_resumes() {
        const HIGH_WATER: usize = 64 * 1024;
        let server = start(|c| c.max_pending = HIGH_WATER);
        let data = Rng(99).bytes(8 << 20);
        let s = connect(server.addr);
        let mut writer = s.try_clone().unwrap();
        let mut reader = s;
        let to_send = data.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&to_send).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        // Wait until the server holds output and has stopped reading: backpressure is on,
        // and the FD_READ that came meanwhile was consumed without a recv.
        let mut last = server.stats.snapshot();
        let held = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let now = server.stats.snapshot();
            let still = now.bytes_in == last.bytes_in && now.pending_bytes > 0;
            last = now;
            still
        });
        assert!(
            held,
            "the server never stopped reading for the paused reader: {last:?}"
        );
        assert!(
            last.bytes_in < data.len() as u64,
            "the server read everything without the client reading: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).unwrap();
        sender.join().unwrap();
        assert_eq!(echoed.len(), data.len(), "echoed length");
        assert!(echoed == data, "echoed bytes differ");
        let stats = server.stats.snapshot();
        assert!(
            stats.peak_conn_pending <= HIGH_WATER,
            "{} unsent bytes held, above the high-water mark {HIGH_WATER}",
            stats.peak_conn_pending
        );
        server.stop().unwrap();
    }

    /// Shutdown with an idle client connected: the server stops accepting, waits out the drain
    /// timeout for the client, closes it and returns.
    #[test]
    fn stop_returns_with_a_client_connected() {
        let drain = Duration::from_millis(500);
        let server = start(|c| c.drain_timeout = drain);
        let addr = server.addr;
        let mut s = connect(server.addr);
        ping(&mut s, b"ping");

        let started = Instant::now();
        let (done, stopped) = mpsc::channel();
        std::thread::spawn(move || done.send(server.stop().map_err(|e| e.to_string())));
        let result = stopped
            .recv_timeout(Duration::from_secs(15))
            .expect("server.stop() did not return within 15 s with a client connected");
        let took = started.elapsed();
        assert!(result.is_ok(), "stop failed: {result:?}");
        assert!(
            took >= drain - Duration::from_millis(50),
            "stop returned after {took:?}, before the drain timeout {drain:?} passed"
        );
        // The client's connection was closed by the server: EOF or a reset, not a timeout.
        let mut buf = [0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{n} unexpected bytes after shutdown"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "the connection is still open after stop: {e}"
            ),
        }
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener is still open after stop"
        );
    }
}

/// What the message queue of a thread does past 10,000 posted messages: Windows fails the post
/// (`ERROR_NOT_ENOUGH_QUOTA`, `USERPostMessageLimit`); Wine 8 queued all 20,000 (this test
/// records what it finds, and fails if a post fails with anything but that error or if a
/// posted message is lost).
mod window_queue {
    use iomodels_server::sys::window::{self, Window, WindowClass, WindowProc};
    use std::cell::Cell;
    use windows_sys::Win32::Foundation::{LPARAM, LRESULT, WPARAM};
    use windows_sys::Win32::UI::WindowsAndMessaging::WM_USER;

    struct Count(Cell<usize>);

    impl WindowProc for Count {
        fn window_proc(&self, _: Window, msg: u32, _: WPARAM, _: LPARAM) -> Option<LRESULT> {
            (msg == WM_USER + 9).then(|| {
                self.0.set(self.0.get() + 1);
                0
            })
        }
    }

    #[test]
    fn a_message_queue_past_ten_thousand_posts() {
        const POSTS: usize = 20_000;
        let class = WindowClass::<Count>::register("iomodels-queue-test").unwrap();
        let count = Count(Cell::new(0));
        let (posted, full) = class
            .with_window(&count, |w| {
                let (mut posted, mut full) = (0, 0);
                for i in 0..POSTS {
                    match w.post(WM_USER + 9, i, 0) {
                        Ok(()) => posted += 1,
                        Err(e) if window::is_queue_full(&e) => full += 1,
                        Err(e) => panic!("post {i} failed otherwise: {e}"),
                    }
                }
                while let Some(msg) = window::peek_message() {
                    window::dispatch(&msg);
                }
                (posted, full)
            })
            .unwrap();
        println!("message queue: {posted} of {POSTS} posts queued, {full} refused as full");
        assert_eq!(posted + full, POSTS);
        assert_eq!(count.0.get(), posted, "a queued message was lost");
        // Windows stops at its limit (10,000 by default, the window's own messages included).
        assert!(
            posted <= 10_000 || full == 0,
            "{posted} queued and {full} refused"
        );
    }
}
