#![cfg(windows)]
//! The async-select model on Windows (`WSAAsyncSelect` to a message-only window), through real
//! sockets: its re-enabling notifications (one `FD_READ` per recv, `FD_WRITE` only after a
//! send would block, `FD_CLOSE` ahead of unread data), many clients on one message queue, and
//! shutdown with a client still connected.

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
