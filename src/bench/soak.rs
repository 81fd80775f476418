//! The soak scenario: does a server stay flat under long mixed load with faults?
//!
//! For one model, bench starts `iomodels serve` and runs, all at once and for the whole soak,
//! steady verified echo clients (the load generator, 16 connections of 1 KiB messages) beside
//! one thread per fault, each a bounded loop: connect/close churn, a client that resets
//! (SO_LINGER 0) while the server is echoing to it, a slow reader that stops reading while it
//! sends, and a half-close client that sends a stream, shuts its side down and checks the
//! echo to the end. After a warm-up it samples the server's RSS (`/proc/PID/status`; Windows:
//! the working set) and open descriptors (`/proc/PID/fd`; Windows: its kernel handles) at a
//! fixed interval and fits a least-squares slope to each:
//! a leak shows as a slope that does not go to zero as the soak gets longer. At the end a
//! fresh connection must still echo (the server is alive), and the descriptors after every
//! client closed are compared with those of the idle server before the load.
//!
//! The fault clients' errors are expected (resets, timeouts) and only counted; a byte that
//! comes back wrong is a mismatch, which fails the run.

use super::process;
use super::results::{slope, FaultCount, Soak, SoakSample, Span};
use super::{Participant, Plan, Sample, Server};
use anyhow::Result;
use iomodels_load::LoadConfig;
use socket2::SockRef;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Timeout of every blocking call a fault client makes: each loop stays bounded.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Warm-up before the first sample: a tenth of the soak, at most 5 s.
pub(super) fn warmup(duration: Duration) -> Duration {
    (duration / 10).min(Duration::from_secs(5))
}

/// Time between samples: a sixtieth of the soak, between 100 ms and 1 s.
pub(super) fn interval(duration: Duration) -> Duration {
    (duration / 60).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Runs the soak for `p` for `plan.soak` (after the warm-up).
pub(super) fn soak(p: &Participant, plan: &Plan) -> Result<Sample> {
    let duration = plan.soak;
    let (warm, every) = (warmup(duration), interval(duration));
    let mut server = Server::start(p, plan)?;
    let (pid, addr) = (server.pid, server.addr);
    thread::sleep(Duration::from_millis(200));
    let fds_before = process::fd_count(pid).unwrap_or(0);
    let rss_before = process::rss_bytes(pid).unwrap_or(0);

    let Loaded {
        steady,
        faults,
        samples,
        died,
        mismatches,
        half_close_echoes,
    } = load_and_sample(addr, pid, warm, duration, every);

    let running = matches!(server.child.try_wait(), Ok(None));
    let alive = !died && running && echo_once(addr).is_ok();
    thread::sleep(Duration::from_millis(500));
    let fds_after = process::fd_count(pid).unwrap_or(0);
    let rss_after = process::rss_bytes(pid).unwrap_or(0);
    server.stop();

    let mut sample = Sample::default();
    let mut echoes = half_close_echoes;
    sample.mismatches = mismatches;
    match steady {
        Ok(r) => {
            echoes += r.messages;
            sample.mismatches += r.mismatches;
            sample.errors = r.connect_errors + r.io_errors + r.incomplete;
            sample.msgs_per_sec = r.msgs_per_sec;
        }
        Err(_) => sample.errors += 1,
    }
    let minutes = |pts: Vec<(f64, f64)>| slope(&pts) * 60.0;
    sample.soak = Some(Soak {
        duration_secs: duration.as_secs_f64(),
        warmup_secs: warm.as_secs_f64(),
        interval_secs: every.as_secs_f64(),
        fds_before,
        fds_after,
        rss_before,
        rss_after,
        rss: Span::of(samples.iter().map(|s| s.rss)),
        fds: Span::of(samples.iter().map(|s| s.fds)),
        rss_mib_per_min: minutes(
            samples
                .iter()
                .map(|s| (s.t, s.rss as f64 / (1024.0 * 1024.0)))
                .collect(),
        ),
        fds_per_min: minutes(samples.iter().map(|s| (s.t, s.fds as f64)).collect()),
        samples,
        echoes,
        faults,
        alive,
    });
    Ok(sample)
}

/// What the soak's clients did and what sampling the server saw.
struct Loaded {
    /// The steady echo clients' report.
    steady: std::io::Result<iomodels_load::LoadReport>,
    faults: Vec<FaultCount>,
    samples: Vec<SoakSample>,
    /// The server could no longer be read.
    died: bool,
    /// Wrong bytes the fault clients got back, and the half-close client's verified echoes.
    mismatches: u64,
    half_close_echoes: u64,
}

/// Runs the steady clients and one thread per fault against the server at `addr` for `warm`
/// + `duration`, sampling the server (process `pid`) every `every` after the warm-up.
fn load_and_sample(
    addr: SocketAddr,
    pid: u32,
    warm: Duration,
    duration: Duration,
    every: Duration,
) -> Loaded {
    let stop = AtomicBool::new(false);
    let mismatches = AtomicU64::new(0);
    let half_close_echoes = AtomicU64::new(0);
    let (steady, faults, samples, died) = thread::scope(|s| {
        let steady = s.spawn(|| {
            iomodels_load::run(&LoadConfig {
                connect: addr,
                conns: 16,
                size: 1024,
                duration: warm + duration,
                ..LoadConfig::default()
            })
        });
        let faults: Vec<_> = [
            ("connect/close churn", churn as Fault),
            ("reset mid-echo (SO_LINGER 0)", reset_mid_echo),
            ("slow reader", slow_reader),
            ("half-close, echo checked", half_close),
        ]
        .into_iter()
        .map(|(name, f)| {
            let ctx = FaultCtx {
                addr,
                stop: &stop,
                mismatches: &mismatches,
                echoes: &half_close_echoes,
            };
            s.spawn(move || run_fault(name, f, &ctx))
        })
        .collect();

        thread::sleep(warm);
        let (samples, died) = sample_server(pid, duration, every);
        stop.store(true, Ordering::Relaxed);
        let faults: Vec<FaultCount> = faults
            .into_iter()
            .map(|h| h.join().expect("a fault client panicked"))
            .collect();
        let steady = steady.join().expect("the load generator panicked");
        (steady, faults, samples, died)
    });

    Loaded {
        steady,
        faults,
        samples,
        died,
        mismatches: mismatches.load(Ordering::Relaxed),
        half_close_echoes: half_close_echoes.load(Ordering::Relaxed),
    }
}

/// One fault client's thread: runs `f` until `ctx.stop`, counting its cycles and errors.
fn run_fault(name: &str, f: Fault, ctx: &FaultCtx) -> FaultCount {
    let (mut cycles, mut errors, mut first_error) = (0, 0, None);
    while !ctx.stop.load(Ordering::Relaxed) {
        match f(ctx) {
            Ok(()) => cycles += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                // A refused connect returns at once: do not spin on it.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    FaultCount {
        fault: name.to_string(),
        cycles,
        errors,
        first_error,
    }
}

/// Samples the server's (process `pid`) memory and descriptors every `every` for `duration`;
/// returns the samples and whether the server died (could no longer be read).
fn sample_server(pid: u32, duration: Duration, every: Duration) -> (Vec<SoakSample>, bool) {
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut next = start;
    loop {
        let t = start.elapsed();
        match (process::rss_bytes(pid), process::fd_count(pid)) {
            (Some(rss), Some(fds)) => samples.push(SoakSample {
                t: t.as_secs_f64(),
                rss,
                fds,
            }),
            _ => return (samples, true),
        }
        if t >= duration {
            return (samples, false);
        }
        next += every;
        let next_at = next.min(start + duration);
        thread::sleep(next_at.saturating_duration_since(Instant::now()));
    }
}

/// What a fault client needs: where to connect, when to stop, where to count.
#[derive(Clone, Copy)]
struct FaultCtx<'a> {
    addr: SocketAddr,
    stop: &'a AtomicBool,
    mismatches: &'a AtomicU64,
    echoes: &'a AtomicU64,
}

/// One cycle of a fault; an error is counted, not fatal.
type Fault = fn(&FaultCtx) -> std::io::Result<()>;

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// The byte at offset `i` of a checked stream.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Connect and close at once, with no data. Paced (200 a second at most) so the client's
/// TIME_WAIT sockets do not exhaust the ephemeral ports over a long soak.
fn churn(ctx: &FaultCtx) -> std::io::Result<()> {
    drop(connect(ctx.addr)?);
    thread::sleep(Duration::from_millis(5));
    Ok(())
}

/// Send 64 KiB, wait for the echo to start, then close with SO_LINGER 0: an RST while the
/// server still has bytes to send.
fn reset_mid_echo(ctx: &FaultCtx) -> std::io::Result<()> {
    let mut s = connect(ctx.addr)?;
    let msg: Vec<u8> = (0..64 * 1024).map(pattern).collect();
    s.write_all(&msg)?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    drop(s);
    thread::sleep(Duration::from_millis(5));
    Ok(())
}

/// Send until the server's writes back are blocked on us (up to 8 MiB), read a trickle for a
/// while, then close with the echo unread.
fn slow_reader(ctx: &FaultCtx) -> std::io::Result<()> {
    let mut s = connect(ctx.addr)?;
    s.set_write_timeout(Some(Duration::from_millis(200)))?;
    let chunk = vec![0x5a; 64 * 1024];
    let mut sent = 0;
    while sent < 8 << 20 && !ctx.stop.load(Ordering::Relaxed) {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e),
        }
    }
    let mut trickle = [0u8; 512];
    for _ in 0..5 {
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        let _ = s.read(&mut trickle)?;
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Send a stream of 1 byte to 256 KiB, shut the sending side down, and read the echo to the
/// end of stream: every byte must come back, in order.
fn half_close(ctx: &FaultCtx) -> std::io::Result<()> {
    let mut s = connect(ctx.addr)?;
    // A size that varies from cycle to cycle without a random-number generator.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let len = 1 + nanos as usize % (256 * 1024);
    let msg: Vec<u8> = (0..len).map(pattern).collect();
    // Write and read at once: the echo of a large stream must be drained while sending.
    let mut reader = s.try_clone()?;
    let got = thread::scope(|sc| {
        let r = sc.spawn(move || {
            let mut got = Vec::with_capacity(len);
            reader.read_to_end(&mut got).map(|_| got)
        });
        let w = s.write_all(&msg).and_then(|()| s.shutdown(Shutdown::Write));
        let got = r.join().expect("reader panicked");
        w.and(got)
    })?;
    if got == msg {
        ctx.echoes.fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.mismatches.fetch_add(1, Ordering::Relaxed);
    }
    thread::sleep(Duration::from_millis(5));
    Ok(())
}

/// One fresh 1 KiB echo: is the server still serving?
fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    let msg: Vec<u8> = (0..1024).map(pattern).collect();
    s.write_all(&msg)?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got)?;
    if got == msg {
        Ok(())
    } else {
        Err(std::io::Error::other("the echo differed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_and_interval_scale_with_the_soak() {
        assert_eq!(warmup(Duration::from_secs(3)), Duration::from_millis(300));
        assert_eq!(warmup(Duration::from_secs(600)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_secs(3)), Duration::from_millis(100));
        assert_eq!(
            interval(Duration::from_secs(30)),
            Duration::from_millis(500)
        );
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(1));
    }
}
