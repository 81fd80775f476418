//! The select model and descriptors past `FD_SETSIZE`: refused cleanly, counted, never UB.
//!
//! This is its own test binary (its own process) because it fills the descriptor table up to
//! 1024, which would disturb any test running beside it.
#![cfg(target_os = "linux")]

use iomodels_server::{Model, Server, ServerConfig};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn select_closes_a_connection_whose_descriptor_is_past_fd_setsize_and_keeps_serving() {
    // Room for 1024 descriptors plus the test's own.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= 1200,
            "RLIMIT_NOFILE hard limit {} too low for this test",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_max.min(4096);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let server = Server::bind(ServerConfig {
        model: Model::Select,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();

    // Take every free descriptor up to 1023, so the next ones handed out (the client's socket
    // and the server's accepted socket) are at or above FD_SETSIZE (1024).
    let mut fillers = Vec::new();
    loop {
        let f = File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        fillers.push(f);
        if fd >= 1023 {
            break;
        }
    }
    let mut client = TcpStream::connect(server.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats.snapshot().refused == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.stats.snapshot().refused,
        1,
        "the connection past FD_SETSIZE was not refused"
    );
    let mut buf = [0u8; 1];
    let closed = match client.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "the refused connection was not closed");
    drop(client);

    // With descriptors free again, the server serves as before.
    fillers.truncate(fillers.len() / 2);
    let mut ok = TcpStream::connect(server.addr).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ok.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    ok.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(server.stats.snapshot().refused, 1);
    drop(ok);
    server.stop().unwrap();
}
