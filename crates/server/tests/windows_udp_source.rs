#![cfg(windows)]
//! Every Winsock model on a wildcard UDP socket (`--listen 0.0.0.0:P --udp`): a datagram sent
//! to 127.0.0.2 is answered from 127.0.0.2, so a client whose socket is connected to
//! 127.0.0.2:P (which drops datagrams from any other source) gets its echo; and an IPv6
//! wildcard server answers a `::1` client through the same `WSARecvMsg` / `WSASendMsg` path.
//! (`sys/windows/datagram.rs`, `models/winio/udp.rs`.)
//!
//! Under Wine the answer's source cannot be shown: Wine's `WSASendMsg` drops the control data
//! (`dlls/ws2_32/socket.c`: it passes only the buffers and the name to `WS2_sendto`), so the
//! answer leaves from 127.0.0.1, the address Linux's route picks. There each test checks what
//! Wine can (the echo comes back to an unconnected client) and prints a `windows skipped:`
//! line with the reason on its stderr, which the harness does not capture and
//! `scripts/test-windows.sh` counts. That a receive reports 127.0.0.2 (which Wine does) is
//! checked by the unit tests of both files, under Wine too.

mod common;

use common::{start, wait_for};
use iomodels_server::Model;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints, past the test harness's capture, the check Wine cannot pass and why.
fn wine_skips(check: &str) {
    let why = "Wine's WSASendMsg drops the control data (dlls/ws2_32/socket.c: WSASendMsg \
               passes only the buffers and the name to WS2_sendto)";
    let _ = std::io::stderr()
        .write_all(format!("\nwindows skipped: 1 check under Wine: {check}: {why}\n").as_bytes());
}

/// A UDP-only `model` server on the wildcard `listen`; a client bound to `client_at` sends to
/// `to_ip` on the server's port. The echo must come back from `to_ip` (to an unconnected
/// socket first, where any source is seen; then to one connected to `to_ip`:P).
fn answers_from_the_address_sent_to(model: Model, listen: &str, client_at: &str, to_ip: &str) {
    let server = start(model, |c| {
        c.listen = listen.parse().unwrap();
        c.tcp = false;
        c.udp = true;
    });
    let to = SocketAddr::new(to_ip.parse().unwrap(), server.udp_addr.unwrap().port());
    let c = UdpSocket::bind(client_at).unwrap();
    c.set_read_timeout(Some(ECHO_TIMEOUT)).unwrap();
    c.send_to(b"unconnected", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).expect("no echo at all");
    assert_eq!(&buf[..n], b"unconnected");
    if from != to && iomodels_server::sys::wine_version().is_some() {
        wine_skips(&format!(
            "{model:?}: an answer to {to} leaves from {to} (it left from {from}), and a client \
             connected to {to} gets it"
        ));
        server.stop().unwrap();
        return;
    }
    assert_eq!(from, to, "the answer left from another address");
    c.connect(to).unwrap();
    c.send(b"connected").unwrap();
    let n = c.recv(&mut buf).expect("the connected client got no echo");
    assert_eq!(&buf[..n], b"connected");
    // (A completion model counts an answer when its send completes, maybe after it arrived.)
    let st = wait_for(&server, ECHO_TIMEOUT, "two answers counted", |s| {
        s.udp_datagrams_out == 2
    });
    assert_eq!(st.udp_datagrams_in, 2, "{st:?}");
    server.stop().unwrap();
}

macro_rules! every_windows_model {
    ($($name:ident => $model:expr;)*) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn a_wildcard_socket_answers_a_datagram_for_127_0_0_2_from_127_0_0_2() {
                    answers_from_the_address_sent_to($model, "0.0.0.0:0", "127.0.0.1:0", "127.0.0.2");
                }
                #[test]
                fn an_ipv6_wildcard_socket_answers_a_loopback_client_from_loopback() {
                    answers_from_the_address_sent_to($model, "[::]:0", "[::1]:0", "::1");
                }
            }
        )*

        /// Every model this build has is listed above.
        #[test]
        fn every_available_model_is_tested() {
            let listed = [$($model),*];
            for m in Model::ALL {
                assert_eq!(m.is_available(), listed.contains(&m), "{m:?}");
            }
        }
    };
}

/// Named after the file, so `scripts/test-windows.sh windows_udp_source` selects these tests.
mod windows_udp_source {
    use super::*;

    every_windows_model! {
        blocking => Model::Blocking;
        select => Model::Select;
        async_select => Model::AsyncSelect;
        event_select => Model::EventSelect;
        overlapped_event => Model::OverlappedEvent;
        overlapped_routine => Model::OverlappedRoutine;
        completion_port => Model::CompletionPort;
    }
}
