//! Measures the load generator against a minimal, fast echo server.
//!
//! The server is this same program re-run as a child process (`echo_bench --server`): a
//! single-threaded, edge-triggered mio echo loop pinned to CPU 0. The load generator runs in the
//! parent, pinned to CPU 1 (so `threads = 0` resolves to one thread). Keeping the server in its
//! own process keeps its CPU time out of the generator's own figure; the server's CPU use is
//! read from `/proc/<pid>/schedstat`.
//!
//! ```text
//! cargo run --release -p iomodels-load --example echo_bench -- \
//!     [--duration SECS] [--conns 1,100,1000] [--size 64] [--depth 1] [--threads 0] \
//!     [--server-cpu 0] [--client-cpu 1] [--json]
//! ```
//!
//! Linux only (it pins CPUs with `sched_setaffinity` and reads `/proc/<pid>/schedstat`): on
//! other OSes it builds to a `main` that says so and exits with status 2, so that
//! `cargo clippy --all-targets` and `cargo build --examples` work for every target.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!(
        "echo_bench: Linux only (sched_setaffinity, /proc/<pid>/schedstat); nothing measured"
    );
    std::process::exit(2);
}

/// The benchmark itself.
#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use iomodels_load::{run, LoadConfig, LoadReport};
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};

    const LISTENER: Token = Token(usize::MAX);
    const BUF: usize = 16 * 1024;
    /// The server gives up after this long, whatever happens.
    const SERVER_LIFETIME: Duration = Duration::from_secs(600);

    pub(crate) fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--server") {
            let cpu = opt(&args, "--server-cpu").map_or(0, |v| v.parse().expect("--server-cpu N"));
            if let Err(e) = serve(cpu) {
                eprintln!("echo server: {e}");
                std::process::exit(1);
            }
            return;
        }
        let o = Options::parse(&args);
        let (mut child, addr) = start_server(o.server_cpu);
        if let Err(e) = pin_to_cpu(o.client_cpu) {
            let cpu = o.client_cpu;
            eprintln!("warning: cannot pin the load generator to CPU {cpu}: {e}");
        }
        println!(
            "echo server pid {} on CPU {}, {addr}; load generator on CPU {}",
            child.id(),
            o.server_cpu,
            o.client_cpu
        );
        let mut summary = Vec::new();
        for &n in &o.conns {
            let (report, server_pct) = measure(&o, addr, child.id(), n);
            summary.push((n, report, server_pct));
            std::thread::sleep(Duration::from_millis(300));
        }
        print_summary(&summary);
        // The child is ours: stop it by its id and reap it.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The value after flag `name`, if given.
    fn opt(args: &[String], name: &str) -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    }

    /// The benchmark's flags (see the module doc).
    struct Options {
        secs: f64,
        conns: Vec<usize>,
        size: usize,
        depth: usize,
        threads: usize,
        server_cpu: usize,
        client_cpu: usize,
        json: bool,
    }

    impl Options {
        /// Reads the flags from `args`; a malformed value panics with the flag's usage.
        fn parse(args: &[String]) -> Options {
            let opt = |name: &str| opt(args, name);
            Options {
                secs: opt("--duration").map_or(3.0, |v| v.parse().expect("--duration SECS")),
                conns: opt("--conns")
                    .unwrap_or_else(|| "1,100,1000".into())
                    .split(',')
                    .map(|v| v.trim().parse().expect("--conns N,N,..."))
                    .collect(),
                size: opt("--size").map_or(64, |v| v.parse().expect("--size N")),
                depth: opt("--depth").map_or(1, |v| v.parse().expect("--depth N")),
                threads: opt("--threads").map_or(0, |v| v.parse().expect("--threads N")),
                server_cpu: opt("--server-cpu").map_or(0, |v| v.parse().expect("--server-cpu N")),
                client_cpu: opt("--client-cpu").map_or(1, |v| v.parse().expect("--client-cpu N")),
                json: args.iter().any(|a| a == "--json"),
            }
        }
    }

    /// Starts this program as the echo server on `cpu`; returns it and the address it
    /// announced.
    fn start_server(cpu: usize) -> (Child, SocketAddr) {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(["--server", "--server-cpu", &cpu.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the echo server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("server announces its port");
        let addr: SocketAddr = line.trim().parse().expect("server address");
        (child, addr)
    }

    /// One run of `n` connections against the server (process `pid`) at `addr`, printed;
    /// returns its report and the server's CPU use over it.
    fn measure(o: &Options, addr: SocketAddr, pid: u32, n: usize) -> (LoadReport, f64) {
        let (size, depth, secs) = (o.size, o.depth, o.secs);
        let cfg = LoadConfig {
            connect: addr,
            conns: n,
            size,
            depth,
            duration: Duration::from_secs_f64(secs),
            messages_per_conn: None,
            threads: o.threads,
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            tls: None,
            handshakes: false,
            ..LoadConfig::default()
        };
        let cpu0 = task_cpu(pid);
        let t0 = Instant::now();
        let report = run(&cfg).expect("load run");
        let wall = t0.elapsed();
        let server_pct = match (cpu0, task_cpu(pid)) {
            (Some(a), Some(b)) => (b - a).as_secs_f64() / wall.as_secs_f64() * 100.0,
            _ => f64::NAN,
        };
        println!("\n== {n} conns, {size} B, depth {depth}, {secs} s ==");
        println!("{}", report.to_table());
        println!(
            "{:<13} {server_pct:.1} % of one core (over the whole run call, {:.2} s)",
            "server cpu",
            wall.as_secs_f64()
        );
        if o.json {
            println!("{}", report.to_json());
        }
        (report, server_pct)
    }

    /// The table of every run: connections, rate, latencies, CPU, clean.
    fn print_summary(summary: &[(usize, LoadReport, f64)]) {
        println!(
            "\n{:>6} {:>10} {:>6} {:>6} {:>7} {:>9} {:>9} {:>6}",
            "conns", "msg/s", "p50us", "p99us", "p999us", "clientcpu", "servercpu", "clean"
        );
        for (n, r, s) in summary {
            let l = r.latency_us.clone().unwrap_or(iomodels_load::Latency {
                min: 0,
                p50: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
            });
            println!(
                "{:>6} {:>10.0} {:>6} {:>6} {:>7} {:>8.1}% {:>8.1}% {:>6}",
                n,
                r.msgs_per_sec.unwrap_or(0.0),
                l.p50,
                l.p99,
                l.p999,
                r.client_cpu_percent.unwrap_or(0.0),
                s,
                r.is_clean()
            );
        }
    }

    /// CPU time of process `pid`'s main thread (the whole single-threaded server).
    fn task_cpu(pid: u32) -> Option<Duration> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }

    /// Pins the calling thread (and threads it spawns later) to one CPU.
    #[allow(unsafe_code)]
    fn pin_to_cpu(cpu: usize) -> io::Result<()> {
        // SAFETY: `set` is a plain bit set owned by this frame; CPU_ZERO/CPU_SET only write inside
        // it (CPU_SET ignores out-of-range CPUs), and sched_setaffinity only reads `size_of` bytes.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    struct Peer {
        stream: TcpStream,
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    }

    /// The echo server: prints its address, then echoes until the parent goes away.
    fn serve(cpu: usize) -> io::Result<()> {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("warning: cannot pin the echo server to CPU {cpu}: {e}");
        }
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(4096)?;
        socket.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(socket.into());
        println!("{}", listener.local_addr()?);
        io::stdout().flush()?;

        let parent = std::os::unix::process::parent_id();
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(1024);
        let mut peers: Vec<Option<Peer>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let died = Instant::now() + SERVER_LIFETIME;
        while Instant::now() < died {
            poll.poll(&mut events, Some(Duration::from_millis(200)))?;
            if events.is_empty() && std::os::unix::process::parent_id() != parent {
                return Ok(());
            }
            for event in events.iter() {
                if event.token() == LISTENER {
                    loop {
                        match listener.accept() {
                            Ok((mut stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                let slot = free.pop().unwrap_or_else(|| {
                                    peers.push(None);
                                    peers.len() - 1
                                });
                                poll.registry().register(
                                    &mut stream,
                                    Token(slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                let buf = vec![0u8; BUF].into_boxed_slice();
                                peers[slot] = Some(Peer {
                                    stream,
                                    buf,
                                    start: 0,
                                    end: 0,
                                });
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                let slot = event.token().0;
                let keep = match peers.get_mut(slot).and_then(Option::as_mut) {
                    Some(peer) => echo(peer),
                    None => continue,
                };
                if !keep {
                    peers[slot] = None;
                    free.push(slot);
                }
            }
        }
        Ok(())
    }

    /// Echoes what is readable; returns false when the connection is over.
    fn echo(p: &mut Peer) -> bool {
        let mut drained = false;
        loop {
            while p.start < p.end {
                match p.stream.write(&p.buf[p.start..p.end]) {
                    Ok(n) => p.start += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if drained {
                return true;
            }
            match p.stream.read(&mut p.buf) {
                Ok(0) => return false,
                Ok(n) => {
                    p.start = 0;
                    p.end = n;
                    // Short read: the queue is empty, the next arrival raises a new edge.
                    drained = n < p.buf.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}
