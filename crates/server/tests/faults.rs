//! The fault suite at the library level (issue #9), generated for every model and variant, on
//! Linux and on Windows (under Wine): the server runs in this process (`RunningServer`), so each
//! case checks its live counters — `active`, `accepted`, `errors`, `pending_bytes`,
//! `peak_conn_pending`, `ops_in_flight` — besides every byte the clients get back.
//! (`tests/faults.rs` at the root runs these faults and a few more against the binary, Linux
//! only, where it can measure the server process alone.)
//!
//! The faults: silent clients (slowloris); connect/close cycles with no data; resets before
//! sending, mid-message and while the server is sending; half-close with 1 MiB in flight; a
//! peer that never reads; stop with many busy connections. Every load loop is bounded in count
//! and in time, and every time bound is generous (seconds, where a failure is a hang).
//!
//! "Nothing left behind" is: `active` and `pending_bytes` back to 0, and `ops_in_flight` less
//! the accept pool (`accepts_posted`, which `completion-port` on Windows grows in a burst of
//! connects) back to its idle baseline ([`idle_ops`]: the completion models keep accepts posted
//! while they run; the others count no operations) — and every gauge 0 once the server
//! stopped.

mod common;

use common::{
    alone, check_echo, check_random_chunks_echo, clients, connect, echo_messages, echo_through,
    ping, reset, shared, wait_for, Rng, Variant, CLIENT_TIMEOUT,
};
use iomodels_server::{Model, RunningServer, ServerConfig, StatsSnapshot};
use iomodels_testkit::{connect_close_cycles, until_still};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The most a server may take to see a fault and let the connection go: a bound, not a
/// measurement.
const SETTLE: Duration = Duration::from_secs(20);

/// What [`idle_ops`]' client sends: every case's first connection.
const WARM_UP: &[u8] = b"warm-up";

/// Descriptors this process has open (`/proc/self/fd`), server and clients together.
#[cfg(target_os = "linux")]
fn open_descriptors() -> Option<usize> {
    Some(
        std::fs::read_dir("/proc/self/fd")
            .expect("read /proc/self/fd")
            .count(),
    )
}

/// Windows has no descriptor table to list: sockets are handles among all the process's
/// others, and the only count of them (`GetProcessHandleCount`) also moves with every handle
/// Wine and the test threads open and close. Not checked there: the server's own gauges
/// (`active`, `accepted` against the connections made) stand for it.
#[cfg(windows)]
fn open_descriptors() -> Option<usize> {
    None
}

/// The operations, other than the accept pool (`accepts_posted`: the `AcceptEx` that
/// `completion-port` and `overlapped-event` keep posted on Windows), that the server keeps
/// posted while it holds no connection: the Linux completion models' accepts and waker; none
/// for the others (`overlapped-routine` accepts with `accept` on Windows). With connections
/// open, a Winsock overlapped model holds that plus one zero-byte receive per idle connection.
fn resting_ops(s: &StatsSnapshot) -> i64 {
    s.ops_in_flight - s.accepts_posted
}

/// [`resting_ops`] after one client ([`WARM_UP`]) was served and left, read once the count has
/// held still for 300 ms.
fn idle_ops(server: &RunningServer) -> i64 {
    ping(&mut connect(server.addr), WARM_UP);
    wait_for(server, SETTLE, "the warm-up client gone", |s| s.active == 0);
    let (idle, held) = until_still(SETTLE, Duration::from_millis(300), || {
        resting_ops(&server.stats.snapshot())
    });
    assert!(held, "the operations at rest never held still: {idle} last");
    idle
}

/// Waits until the server holds nothing: no connection, no unsent byte, no receive buffer
/// posted, no operation but its idle ones.
fn settled(server: &RunningServer, idle: i64, what: &str) -> StatsSnapshot {
    wait_for(server, SETTLE, what, |s| {
        s.active == 0
            && s.pending_bytes == 0
            && s.recv_buffer_bytes_posted == 0
            && resting_ops(s) == idle
    })
}

/// What one idle connection holds in receive buffers handed to the kernel
/// (`recv_buffer_bytes_posted`): `blocking`'s thread is blocked in recv on its 64 KiB buffer;
/// the readiness models read only when a socket is ready, the io_uring models' receives take a
/// provided buffer only when data arrives, and the Winsock overlapped models post zero-byte
/// `WSARecv`s (no buffer): nothing.
fn idle_recv_buffer_bytes(model: Model) -> i64 {
    let bytes = match model {
        Model::Blocking => 64 * KIB,
        _ => 0,
    };
    bytes as i64
}

/// Stops the server (within 30 s) and checks that it left nothing behind.
fn stop_clean(server: RunningServer) {
    let stats = Arc::clone(&server.stats);
    let t = Instant::now();
    server.stop().expect("the server returns cleanly");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "stop took {:?}",
        t.elapsed()
    );
    let s = stats.snapshot();
    assert_eq!(
        (
            s.active,
            s.pending_bytes,
            s.ops_in_flight,
            s.accepts_posted,
            s.recv_buffer_bytes_posted
        ),
        (0, 0, 0, 0, 0),
        "after stop: {s:?}"
    );
    common::assert_no_server_panic();
}

/// [`common::writing::leave_the_server_writing`] with 8 MiB of seeded bytes, returned once
/// the server's counters show output it holds and cannot send: the server is writing to it.
fn leave_the_server_writing(server: &RunningServer, seed: u64) -> TcpStream {
    let data = Rng::seeded(seed).bytes(8 * MIB);
    let c = common::writing::leave_the_server_writing(server.addr, &data, CLIENT_TIMEOUT);
    wait_for(server, SETTLE, "output the server cannot send", |s| {
        s.pending_bytes > 0
    });
    c
}

/// What a busy client thread of the stop case saw.
#[derive(Debug, Default)]
struct Busy {
    /// 1 KiB exchanges that came back whole (each checked byte for byte).
    exchanges: u64,
    /// Connections the server ended (EOF or reset) after the stop was requested.
    ended: usize,
}

/// One thread's share of the stop case: `conns` connections, each sending 1 KiB and reading it
/// back in rounds, until the server ends every one of them (bounded: 2,000 rounds, 120 s).
/// Ending a connection before `stopping` is set is a failure, as is a read that times out (a
/// hang), or a byte that differs — in a whole exchange or in the part of one cut by the stop.
fn busy_client(
    addr: SocketAddr,
    t: usize,
    conns: usize,
    stopping: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) -> Result<Busy, String> {
    let mut client = BusyClient::connect(addr, t, conns, stopping)?;
    let end = Instant::now() + Duration::from_secs(120);
    let mut round = 0u64;
    while !client.live.is_empty() {
        if round >= 2000 || Instant::now() > end {
            return Err(format!(
                "thread {t}: {} connections still open after {round} rounds",
                client.live.len()
            ));
        }
        client.round(round)?;
        round += 1;
        rounds.fetch_add(1, Relaxed);
    }
    Ok(client.busy)
}

/// A busy client thread of the stop case: its connections still open, and what it saw.
struct BusyClient {
    /// The thread's number, in messages and seeds.
    t: usize,
    /// The connections the server has not ended yet, each with its number in the thread.
    live: Vec<(usize, TcpStream)>,
    /// Set once the stop was requested: from then on the server may end a connection.
    stopping: Arc<AtomicBool>,
    busy: Busy,
}

impl BusyClient {
    /// Opens the thread's `conns` connections (no Nagle delay).
    fn connect(
        addr: SocketAddr,
        t: usize,
        conns: usize,
        stopping: Arc<AtomicBool>,
    ) -> Result<BusyClient, String> {
        let live = (0..conns)
            .map(|k| {
                let s =
                    common::try_connect(addr).map_err(|e| format!("thread {t} conn {k}: {e}"))?;
                s.set_nodelay(true).unwrap();
                Ok((k, s))
            })
            .collect::<Result<_, String>>()?;
        Ok(BusyClient {
            t,
            live,
            stopping,
            busy: Busy::default(),
        })
    }

    /// One round: a fresh 1 KiB message sent on every live connection, then every echo read
    /// back and checked; the connections the server ended leave the live ones.
    fn round(&mut self, round: u64) -> Result<(), String> {
        let t = self.t;
        let msgs: Vec<Vec<u8>> = self
            .live
            .iter()
            .map(|(k, _)| Rng::seeded((((t * 10_000 + k) as u64) << 20) | round).bytes(KIB))
            .collect();
        let mut ended = self.send(&msgs, round)?;
        for (i, msg) in msgs.iter().enumerate() {
            if !ended[i] {
                ended[i] = self.check_echo(i, msg, round)?;
            }
        }
        let mut i = 0;
        self.live.retain(|_| {
            i += 1;
            !ended[i - 1]
        });
        self.busy.ended += ended.iter().filter(|&&e| e).count();
        Ok(())
    }

    /// Sends each live connection its message; which ones the server had ended (a failed
    /// send, allowed only once the stop was requested).
    fn send(&mut self, msgs: &[Vec<u8>], round: u64) -> Result<Vec<bool>, String> {
        let t = self.t;
        let mut ended = vec![false; self.live.len()];
        for (i, (k, s)) in self.live.iter_mut().enumerate() {
            if let Err(e) = s.write_all(&msgs[i]) {
                if !self.stopping.load(Relaxed) {
                    return Err(format!("thread {t} conn {k} round {round}: send: {e}"));
                }
                ended[i] = true;
            }
        }
        Ok(ended)
    }

    /// Reads live connection `i`'s echo of `msg` and checks it: true if the server ended the
    /// connection before the whole echo came (allowed only once the stop was requested).
    fn check_echo(&mut self, i: usize, msg: &[u8], round: u64) -> Result<bool, String> {
        let t = self.t;
        let (k, s) = &mut self.live[i];
        let mut back = vec![0u8; KIB];
        let Some(got) = read_until_end(s, &mut back) else {
            return Err(format!(
                "thread {t} conn {k} round {round}: no echo, no end in {CLIENT_TIMEOUT:?} \
                 (stopping: {}): a hang",
                self.stopping.load(Relaxed)
            ));
        };
        if back[..got] != msg[..got] {
            return Err(format!(
                "thread {t} conn {k} round {round}: the echo differs"
            ));
        }
        if got == KIB {
            self.busy.exchanges += 1;
            Ok(false)
        } else if !self.stopping.load(Relaxed) {
            Err(format!(
                "thread {t} conn {k} round {round}: ended after {got} bytes, before the stop"
            ))
        } else {
            Ok(true)
        }
    }
}

/// Reads into `buf` until it is full or the connection ends (EOF or a reset): how many bytes
/// came, or `None` if a read timed out (a hang).
fn read_until_end(s: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => break, // reset
        }
    }
    Some(got)
}

/// A peer that never reads: a thread writes `stream` 64 KiB at a time (seeded with `seed`)
/// until `limit` bytes went in, 30 s passed or its writes were blocked for `blocked_for` in
/// all (the stream needs a write timeout); it returns what it sent and how long it was
/// blocked. The flag is set at the first blocked write.
fn flood(
    stream: &TcpStream,
    seed: u64,
    limit: usize,
    blocked_for: Duration,
) -> (thread::JoinHandle<(usize, Duration)>, Arc<AtomicBool>) {
    let blocked_once = Arc::new(AtomicBool::new(false));
    let mut f = stream.try_clone().unwrap();
    f.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let flag = Arc::clone(&blocked_once);
    let handle = thread::spawn(move || {
        let chunk = Rng::seeded(seed).bytes(64 * KIB);
        let (mut sent, mut blocked) = (0usize, Duration::ZERO);
        let started = Instant::now();
        while sent < limit && started.elapsed() < Duration::from_secs(30) && blocked < blocked_for {
            let t = Instant::now();
            match f.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    blocked += t.elapsed();
                    flag.store(true, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("a flood's write failed after {sent} bytes: {e}"),
            }
        }
        (sent, blocked)
    });
    (handle, blocked_once)
}

/// The well-behaved client of the resets case: one connection echoing 4 messages of 64 KiB a
/// round, each checked, at least one round and at most 400, until `stop`; the rounds it made.
/// A fast model can be through its 400 rounds before the resets are: the connection then
/// stays open, silent, until `stop` (at most a minute), so that the stages still see exactly
/// one client left.
fn well_behaved_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<std::io::Result<u64>> {
    thread::spawn(move || {
        let mut s = connect(addr);
        let mut rounds = 0;
        while rounds == 0 || (!stop.load(Relaxed) && rounds < 400) {
            echo_messages(&mut s, 1000 + rounds, 4, 64 * KIB)?;
            rounds += 1;
        }
        // A wait on the flag, bounded; the connection is held open meanwhile.
        common::eventually(Duration::from_secs(60), || stop.load(Relaxed));
        Ok(rounds)
    })
}

/// The stages of the resets case, run one after the other against `server`, counting the
/// resets made.
struct ResetStages<'a> {
    server: &'a RunningServer,
    resets: u64,
}

impl ResetStages<'_> {
    /// One stage: `count` connections made by `one` and reset, then a new client served after
    /// them, then only the well-behaved client left; each reset costs at most one error
    /// (Linux: exactly one).
    fn run(&mut self, what: &str, count: u64, one: &dyn Fn(u64) -> TcpStream) {
        let server = self.server;
        let before = server.stats.snapshot();
        for i in 0..count {
            reset(one(i));
        }
        self.resets += count;
        ping(&mut connect(server.addr), b"served after the resets");
        let st = wait_for(server, SETTLE, what, |s| {
            // (Wine's accept skips a connection reset before it was accepted.)
            s.active == 1 && (cfg!(windows) || s.accepted > before.accepted + count)
        });
        let errors = st.errors - before.errors;
        assert!(
            errors <= count,
            "{what}: {errors} errors for {count} resets"
        );
        if cfg!(target_os = "linux") {
            // Under Wine a reset sometimes arrives as a plain end of stream (see
            // windows_overlapped.rs), and one before the accept is skipped by it.
            assert_eq!(errors, count, "{what}: each reset one error: {st:?}");
        }
    }
}

mod cases {
    use super::*;

    /// Slowloris: 200 clients connect and send nothing. Meanwhile another client's 256 KiB
    /// come back byte for byte, twice; the silent ones are held open and sent nothing, and hold
    /// the model's receive buffers for idle connections ([`idle_recv_buffer_bytes`]: none but
    /// `blocking`'s); once they leave, the server holds nothing and serves on.
    pub fn silent_clients_do_not_stop_another_being_served_and_leave_nothing_behind(v: Variant) {
        const SILENT: usize = 200;
        let _process = shared();
        let server = v.start(|_| {});
        let idle = idle_ops(&server);
        let silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(server.addr)).collect();
        wait_for(&server, SETTLE, "every silent client accepted", |s| {
            s.active == SILENT as i64
        });
        let mut st = server.stats.snapshot();
        for seed in 1..=2 {
            let data = Rng::seeded(seed).bytes(256 * KIB);
            check_random_chunks_echo(connect(server.addr), &data, seed, 64 * KIB);
            st = wait_for(&server, SETTLE, "the served client gone", |s| {
                s.active == SILENT as i64
            });
        }
        assert_eq!((st.accepted, st.errors), (SILENT as u64 + 3, 0), "{st:?}");
        let pinned = SILENT as i64 * idle_recv_buffer_bytes(v.model);
        let st = wait_for(
            &server,
            SETTLE,
            "the silent clients' receives posted",
            |s| s.recv_buffer_bytes_posted == pinned,
        );
        assert!(st.recv_buffer_bytes_posted_peak >= pinned, "{st:?}");
        for (i, s) in silent.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            let got = (&*s).read(&mut [0u8; 16]);
            assert!(
                matches!(&got, Err(e) if e.kind() == ErrorKind::WouldBlock),
                "silent client {i}: {got:?} where nothing was due"
            );
        }
        drop(silent);
        let st = settled(&server, idle, "every silent client gone");
        assert_eq!(st.accepted, SILENT as u64 + 3, "{st:?}");
        ping(&mut connect(server.addr), b"still serving");
        stop_clean(server);
    }

    /// Connections opened and closed with no data (Linux 5,000 in at most 60 s; Windows under
    /// Wine, slower, 2,000 in at most 120 s; 4 threads): every one is accepted and closed
    /// (`accepted` counts them all, `active` is back to 0), no operation is left posted, the
    /// process's descriptors come back to their count (Linux), and the server serves on.
    pub fn connect_close_cycles_with_no_data_leave_no_connection_descriptor_or_operation_behind(
        v: Variant,
    ) {
        let (cycles, limit) = if cfg!(windows) {
            (2_000, Duration::from_secs(120))
        } else {
            (5_000, Duration::from_secs(60))
        };
        let _process = alone();
        let server = v.start(|_| {});
        let idle = idle_ops(&server);
        let fds_before = open_descriptors();

        let started = Instant::now();
        let made = connect_close_cycles(server.addr, cycles, limit);
        eprintln!(
            "{}: {made} connect/close cycles in {:.1} s",
            v.model,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(made, cycles, "the cycles did not finish within {limit:?}");
        let st = wait_for(&server, SETTLE, "every cycle accepted and closed", |s| {
            s.active == 0 && s.accepted + s.refused > cycles as u64
        });
        assert_eq!(
            (st.accepted, st.refused, st.pending_bytes),
            (cycles as u64 + 1, 0, 0),
            "accepted must be every connection made, and closed every one accepted: {st:?}"
        );
        settled(&server, idle, "no operation left but the idle ones");
        if let Some(before) = fds_before {
            // Slack for descriptors this process's other threads (the test harness) may hold.
            let mut after = 0;
            let back = common::eventually(SETTLE, || {
                after = open_descriptors().unwrap();
                after <= before + 4
            });
            assert!(back, "descriptors before {before}, after {after}: a leak");
        }
        ping(&mut connect(server.addr), b"still serving");
        stop_clean(server);
    }

    /// Resets (SO_LINGER 0, then close) at every stage of an exchange: 20 before sending
    /// anything, 20 in the middle of a message (half of 256 KiB sent), 3 while the server is
    /// sending a large echo (8 MiB sent, 16 KiB read). Each loses only its own connection: a
    /// well-behaved client echoing 64 KiB messages on one connection all along gets every
    /// byte, no reset costs more than one error (Linux: each costs exactly one), and once
    /// they are over the server holds nothing and serves on.
    pub fn resets_before_sending_mid_message_and_mid_reply_lose_only_their_own_connection(
        v: Variant,
    ) {
        let _process = shared();
        let server = v.start(|_| {});
        let addr = server.addr;
        let idle = idle_ops(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let witness = well_behaved_client(addr, Arc::clone(&stop));
        wait_for(&server, SETTLE, "the well-behaved client accepted", |s| {
            s.active == 1
        });
        let errors_at_start = server.stats.snapshot().errors;
        let mut stages = ResetStages {
            server: &server,
            resets: 0,
        };
        stages.run("the resets before sending gone", 20, &|_| connect(addr));
        stages.run("the resets mid-message gone", 20, &|i| {
            let mut s = connect(addr);
            // The server has the connection; then half of a 256 KiB message.
            ping(&mut s, b"accepted");
            s.write_all(&Rng::seeded(10 + i).bytes(128 * KIB)).unwrap();
            s
        });
        stages.run("the resets mid-reply gone", 3, &|i| {
            leave_the_server_writing(&server, 100 + i)
        });
        let resets = stages.resets;
        stop.store(true, Relaxed);
        let rounds = witness
            .join()
            .unwrap()
            .expect("the well-behaved client gets every byte");
        assert!(rounds >= 1);
        let st = settled(&server, idle, "every connection gone");
        assert!(
            st.errors - errors_at_start <= resets,
            "more errors than resets: {st:?}"
        );
        ping(&mut connect(addr), b"still serving");
        stop_clean(server);
    }

    /// Half-close with 1 MiB in flight, four clients at once: each writes 1 MiB, shuts its
    /// write side and reads to EOF: exactly its 1 MiB comes back, then EOF, and the server
    /// counts no error.
    pub fn half_close_with_1_mib_in_flight_gets_exactly_1_mib_back_then_eof(v: Variant) {
        const CLIENTS: u64 = 4;
        let _process = shared();
        let server = v.start(|_| {});
        let addr = server.addr;
        let idle = idle_ops(&server);
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                thread::spawn(move || {
                    let data = Rng::seeded(20 + i).bytes(MIB);
                    let echoed = echo_through(connect(addr), data.clone(), |w, d| {
                        w.write_all(d).expect("send 1 MiB")
                    });
                    check_echo(&echoed, &data);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a half-closing client");
        }
        let st = settled(&server, idle, "the four clients gone");
        let total = CLIENTS * MIB as u64 + WARM_UP.len() as u64;
        assert_eq!(
            (st.accepted, st.errors, st.bytes_in, st.bytes_out),
            (CLIENTS + 1, 0, total, total),
            "{st:?}"
        );
        stop_clean(server);
    }

    /// A peer that sends up to 64 MiB and never reads (bounded: 30 s, or 2 s of its writes
    /// blocked): its writes block (backpressure reaches it), the server holds at most its
    /// high-water mark of the flooder's bytes (plus one receive buffer), five other clients are
    /// served meanwhile, and when the flooder closes, nothing is left behind.
    pub fn a_peer_that_never_reads_is_held_at_the_high_water_mark_while_others_are_served(
        v: Variant,
    ) {
        const FLOOD: usize = 64 * MIB;
        // A receive buffer or so past the mark: the completion models read ahead once.
        const SLACK: usize = 64 * KIB;
        let _process = shared();
        let high_water = {
            let mut c = ServerConfig::default();
            (v.configure)(&mut c);
            c.max_pending
        };
        let server = v.start(|_| {});
        let idle = idle_ops(&server);
        let flooder = connect(server.addr);
        let (flood, blocked_once) = flood(&flooder, 5, FLOOD, Duration::from_secs(2));
        let held = common::eventually(SETTLE, || blocked_once.load(Relaxed));
        assert!(held, "the flooder's writes never blocked: no backpressure");
        let report = clients(server.addr, 5, 50, 4096);
        assert!(report.is_clean(), "others starved: {report:?}");
        let (sent, blocked) = flood.join().expect("the flooder");
        assert!(
            sent < FLOOD,
            "all {FLOOD} bytes went in from a peer that never reads (blocked {blocked:?})"
        );
        let st = wait_for(&server, SETTLE, "the five others gone", |s| s.active == 1);
        let held = st.bytes_in - st.bytes_out;
        assert!(
            held <= (high_water + SLACK) as u64,
            "the server read {held} bytes of the flooder's {sent} it could not send: \
             above the mark {high_water}: {st:?}"
        );
        assert!(
            st.peak_conn_pending > 0 && st.peak_conn_pending <= high_water + SLACK,
            "one connection held {} unsent bytes (mark {high_water}): {st:?}",
            st.peak_conn_pending
        );
        assert!(st.pending_bytes <= (high_water + SLACK) as i64, "{st:?}");
        drop(flooder);
        settled(&server, idle, "the flooder released");
        ping(&mut connect(server.addr), b"still serving");
        stop_clean(server);
    }

    /// Many peers that send and never read — 32 of them, twice an io_uring model's 16 provided
    /// buffers, each writing up to 32 MiB until its writes were blocked for 1 s: each is held
    /// at its own high-water mark, and together they take no other client's receive buffers
    /// (an io_uring model holds a provided buffer for bytes it sends as they are, or parks,
    /// only while half the ring stays free): five other clients are served meanwhile, and
    /// when the flooders close, nothing is left behind.
    pub fn many_peers_that_never_read_do_not_starve_the_others(v: Variant) {
        const FLOODERS: usize = 32;
        let _process = shared();
        let server = v.start(|_| {});
        let idle = idle_ops(&server);
        let flooders: Vec<TcpStream> = (0..FLOODERS).map(|_| connect(server.addr)).collect();
        let floods: Vec<_> = flooders
            .iter()
            .enumerate()
            .map(|(i, s)| flood(s, 100 + i as u64, 32 * MIB, Duration::from_secs(1)))
            .collect();
        let held = common::eventually(Duration::from_secs(30), || {
            floods.iter().all(|(_, blocked)| blocked.load(Relaxed))
        });
        assert!(held, "not every flooder's writes blocked: no backpressure");
        let report = clients(server.addr, 5, 50, 4096);
        assert!(report.is_clean(), "others starved: {report:?}");
        for (f, _) in floods {
            f.join().expect("a flooder");
        }
        drop(flooders);
        settled(&server, idle, "the flooders released");
        ping(&mut connect(server.addr), b"still serving");
        stop_clean(server);
    }

    /// Stop (the running server's `stop`, a 2 s drain) with many busy connections (Linux 1,000 —
    /// select 400 —, Windows under Wine 200; 4 client threads, 1 KiB exchanges in rounds): `stop`
    /// returns within 30 s and leaves no connection, byte or operation; every exchange that
    /// completed came back byte for byte (and the part of one the stop cut is a true prefix); every
    /// connection then sees an end or a reset, none a hang.
    pub fn stop_with_many_busy_connections_returns_and_no_completed_exchange_loses_a_byte(
        v: Variant,
    ) {
        const THREADS: usize = 4;
        let conns = if cfg!(windows) {
            200
        } else if v.model == Model::Select {
            // Linux select refuses descriptors >= FD_SETSIZE (1,024), and here the clients'
            // descriptors share the process's table with the server's.
            400
        } else {
            1_000
        };
        let _process = alone();
        // This process holds both ends of every connection.
        let _ = iomodels_server::sys::raise_nofile_limit();
        let server = v.start(|c| c.drain_timeout = Duration::from_secs(2));
        let addr = server.addr;
        let stopping = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (stopping, rounds) = (Arc::clone(&stopping), Arc::clone(&rounds));
                thread::spawn(move || busy_client(addr, t, conns / THREADS, stopping, rounds))
            })
            .collect();
        wait_for(
            &server,
            Duration::from_secs(60),
            "every connection accepted",
            |s| s.accepted >= conns as u64,
        );
        let busy = common::eventually(Duration::from_secs(60), || {
            rounds.load(Relaxed) >= 2 * THREADS
        });
        assert!(busy, "the clients never got going");
        stopping.store(true, Relaxed);
        stop_clean(server);
        let mut exchanges = 0;
        for t in threads {
            let b = t
                .join()
                .expect("a client thread")
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(b.ended, conns / THREADS, "{b:?}");
            exchanges += b.exchanges;
        }
        assert!(exchanges >= 2 * conns as u64, "{exchanges} exchanges");
    }
}

model_suite! {
    check: every_available_model_runs_the_fault_suite, "the fault suite";
    cases: [
        silent_clients_do_not_stop_another_being_served_and_leave_nothing_behind,
        connect_close_cycles_with_no_data_leave_no_connection_descriptor_or_operation_behind,
        resets_before_sending_mid_message_and_mid_reply_lose_only_their_own_connection,
        half_close_with_1_mib_in_flight_gets_exactly_1_mib_back_then_eof,
        a_peer_that_never_reads_is_held_at_the_high_water_mark_while_others_are_served,
        many_peers_that_never_read_do_not_starve_the_others,
        stop_with_many_busy_connections_returns_and_no_completed_exchange_loses_a_byte,
    ];
    every_model
}
