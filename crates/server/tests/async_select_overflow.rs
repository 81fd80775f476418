//! `async-select` on Linux when the real-time signal queue overflows: the kernel then sends
//! plain `SIGIO` instead of the lost notifications, and the model must rescan every socket and
//! lose no byte.
//!
//! This is its own test binary (its own process) because it lowers `RLIMIT_SIGPENDING` for the
//! whole process, which would starve any other server running beside it of notifications.
#![cfg(target_os = "linux")]

mod common;

use common::{clients, eventually};
use iomodels_server::Model;
use std::time::Duration;

/// Queued signals allowed per user under the lowered limit: far fewer than hundreds of clients
/// send notifications for at once.
const SIGPENDING: libc::rlim_t = 16;

#[test]
fn async_select_rescans_every_socket_when_the_signal_queue_overflows_and_loses_no_byte() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut lim), 0);
        lim.rlim_cur = SIGPENDING.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_SIGPENDING, &lim), 0);
    }

    let server = common::start(Model::AsyncSelect, |_| {});
    let report = clients(server.addr, 300, 20, 1000);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.conns_established, 300);
    assert_eq!(report.messages, 300 * 20);
    assert_eq!(report.mismatches, 0);
    assert!(eventually(Duration::from_secs(5), || {
        let s = server.stats.snapshot();
        s.accepted == 300 && s.active == 0
    }));
    let stats = server.stats.snapshot();
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    assert_eq!(stats.bytes_in, 300 * 20 * 1000, "{stats:?}");
    assert_eq!(stats.bytes_out, 300 * 20 * 1000, "{stats:?}");
    assert!(
        stats.notification_overflows > 0,
        "the signal queue never overflowed, so the rescan went untested: {stats:?}"
    );
    server.stop().unwrap();
}
