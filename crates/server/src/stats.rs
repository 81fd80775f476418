//! Counters a running server keeps, readable from any thread while it runs.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Live counters of one server. All are monotonic except the gauges: `active`,
/// `pending_bytes`, `ops_in_flight` and `recv_buffer_bytes_posted`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections accepted and closed at once because the model cannot serve them: a
    /// descriptor at or above `FD_SETSIZE` for `select`, a thread that could not be spawned for
    /// `blocking`.
    pub refused: AtomicU64,
    /// Connections open now (gauge).
    pub active: AtomicI64,
    /// Connections closed after an I/O error (reset by peer, broken pipe, ...).
    pub errors: AtomicU64,
    /// Payload bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Payload bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Unsent output bytes held by all connections now (gauge).
    pub pending_bytes: AtomicI64,
    /// The most unsent output bytes any one connection has held (the backpressure bound).
    pub peak_conn_pending: AtomicUsize,
    /// `accept` failed for lack of descriptors (EMFILE/ENFILE) and accepting paused.
    pub accept_pauses: AtomicU64,
    /// Times accepting stopped because the server held `--max-conns` connections (each pause
    /// counts once; it ends when a connection closes).
    pub conn_cap_pauses: AtomicU64,
    /// Times a `completion-port` worker's direct-descriptor table filled up (it stops
    /// accepting; the others accept on its listener for it until it has room again).
    pub direct_table_full: AtomicU64,
    /// Connections a `completion-port` worker accepted on another worker's listener because
    /// that worker's direct-descriptor table was full.
    pub direct_accepted_for_others: AtomicU64,
    /// `completion-port` on Windows: times its `AcceptEx` pool grew (doubled, from
    /// `max(2 × workers, 8)` up to 256) because a worker's turn found every posted accept taken.
    pub accept_pool_grown: AtomicU64,
    /// Winsock models: `AcceptEx` operations posted whose completion has not been reaped yet
    /// (gauge; also counted in `ops_in_flight`). The part of the operations at rest that is
    /// the accept pool, which `completion-port` grows in a connect storm. 0 on Linux.
    pub accepts_posted: AtomicI64,
    /// `completion-port` on Windows: acquisitions of a lock every thread of the server shares
    /// (the connection table, the accepting state, the UDP echo). A connection's receive and
    /// send completions take none: only its own lock. Accepts and closes take a few each, so
    /// this grows with connections and datagrams, not with TCP messages. 0 elsewhere.
    pub shared_locks: AtomicU64,
    /// Connections closed by `--idle-timeout`: no byte moved either way for that long.
    pub idle_closed: AtomicU64,
    /// Connections closed by `--write-timeout`: the peer left its output unread at the
    /// high-water mark (reading from it paused) for that long.
    pub slow_reader_closed: AtomicU64,
    /// `completion-port --accept handoff`: accepted sockets on their way to another worker's
    /// ring; `async-select` on Windows: in another window's inbox. Not yet counted in `active`
    /// (gauge, for the connection cap; not in snapshots).
    pub(crate) handoffs_in_flight: AtomicI64,
    /// Completion models: operations posted to the kernel whose final completion has not
    /// arrived yet (gauge). Zero after a clean shutdown: nothing leaked.
    pub ops_in_flight: AtomicI64,
    /// Completion models on Linux: receives that ended because the provided-buffer ring was
    /// empty (ENOBUFS) and were re-armed once buffers came back.
    pub recv_buffer_exhausted: AtomicU64,
    /// Completion models on Linux: received bytes echoed straight from the provided buffer
    /// they arrived in, without a copy (plain echo while half the ring is free; the rest is
    /// copied into the connection's output).
    pub bytes_passed_through: AtomicU64,
    /// Bytes of receive buffers handed to the kernel now for specific connections (gauge):
    /// memory an idle connection pins, by model.
    /// - `select`, `async-select`, `event-select` (and epoll, signal-driven I/O on Linux): 0.
    ///   They read into a per-thread scratch buffer, and only when a socket is ready.
    /// - `blocking`: the length of each client thread's read buffer while the thread is
    ///   blocked in `recv` on it (an idle connection's thread is).
    /// - `overlapped-event`, `overlapped-routine`, `completion-port` on Linux (io_uring): 0.
    ///   Their receives take a buffer from a provided-buffer ring when data arrives, so no
    ///   buffer is tied to a connection before the completion (the ring itself, shared, is
    ///   `--recv-buffers`).
    /// - The same models on Windows: 0 too. A waiting connection has a zero-byte `WSARecv`
    ///   posted (no buffer: the book's answer to page locking), and reads with non-blocking
    ///   `recv`s once it completes (`models/winio`); a posted `WSARecv` with a buffer would
    ///   count its length from the post until its completion is reaped.
    ///
    /// UDP datagram buffers are not counted: they belong to the socket, not to a connection.
    pub recv_buffer_bytes_posted: AtomicI64,
    /// The highest [`Stats::recv_buffer_bytes_posted`] has been.
    pub recv_buffer_bytes_posted_peak: AtomicI64,
    /// `async-select`: times notifications may have been lost and the model rescanned.
    /// Linux: the real-time signal queue overflowed (the kernel sent plain `SIGIO` instead of
    /// a queued notification) and the model rescanned every socket. Windows: a message the
    /// model posts itself (`PostMessageW`) failed — a full message queue, where Winsock's own
    /// posts fail silently too — and the model rescanned that window's sockets.
    pub notification_overflows: AtomicU64,
    /// `async-select` on Windows: message-only windows serving sockets, each a thread with its
    /// own message queue (gauge; they stay until the server stops): one, plus one per
    /// `--sockets-per-window` sockets beyond the first window's.
    pub message_windows: AtomicU64,
    /// `async-select` on Windows: the sockets every window holds now (gauge), a closed one
    /// counted until the messages Winsock may have queued for it are behind its window
    /// (`WM_RELEASE`): the slots in use.
    pub window_sockets: AtomicU64,
    /// `async-select` on Windows: the most sockets one window has held at once (its fullest
    /// moment, counted as [`Stats::window_sockets`]; at most `--sockets-per-window`).
    pub window_sockets_peak: AtomicU64,
    /// `event-select` and `overlapped-event` on Windows: the groups serving connections now,
    /// each a thread waiting on up to 64 handles (gauge): a group is started when the others
    /// are full and retires after a second without members.
    pub wait_groups: AtomicU64,
    /// TLS: connections that ended on a TLS error (a bad handshake, garbage, plaintext, a
    /// missing client certificate); rustls sent the peer an alert.
    pub tls_failures: AtomicU64,
    /// TLS: connections whose peer ended the stream without a `close_notify` (truncation).
    pub tls_truncated: AtomicU64,
    /// TLS: connections closed because their handshake was not complete at
    /// `--handshake-timeout` after accept.
    pub tls_handshake_timeouts: AtomicU64,
    /// UDP: datagrams received (zero-length and oversized ones included). Every one of them
    /// ends counted once more: in `udp_datagrams_out`, `udp_send_dropped`, `udp_truncated` or
    /// `udp_loop_dropped`.
    pub udp_datagrams_in: AtomicU64,
    /// UDP: datagrams echoed (sent back whole to their sender).
    pub udp_datagrams_out: AtomicU64,
    /// UDP: datagrams larger than the receive buffer (`MSG_TRUNC`), dropped unanswered.
    pub udp_truncated: AtomicU64,
    /// UDP: datagrams received whole but not answered: the socket's send buffer was full
    /// (the send would have blocked), the send failed, shutdown began first, or the service
    /// is discard.
    pub udp_send_dropped: AtomicU64,
    /// UDP: datagrams received whole but never answered because the answer could start an
    /// echo loop: source port 0, the server's own port, a reflecting service's port (7, 13,
    /// 17, 19, 37, `--udp-drop-ports`), or the server's own address and port (`udp.rs`).
    pub udp_loop_dropped: AtomicU64,
    /// UDP: payload bytes of the datagrams received whole.
    pub udp_bytes_in: AtomicU64,
    /// UDP: payload bytes echoed.
    pub udp_bytes_out: AtomicU64,
    /// Times the model's wait call returned (select, poll, epoll_wait, io_uring_enter; for the
    /// thread-per-client model, each blocking recv): wake-ups.
    pub waits: AtomicU64,
    /// System calls on the data path: socket calls (accept, recv, send, shutdown) and wait
    /// calls; for the io_uring models, `io_uring_enter` (the socket work rides in the ring).
    pub syscalls: AtomicU64,
    /// Waits of the io_uring models that asked for several completions with a bound on the
    /// delay (`--batch-wait`, io_uring's min-wait); the rest of `waits` returned at the first.
    pub batched_waits: AtomicU64,
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::refused`].
    pub refused: u64,
    /// See [`Stats::active`].
    pub active: i64,
    /// See [`Stats::errors`].
    pub errors: u64,
    /// See [`Stats::bytes_in`].
    pub bytes_in: u64,
    /// See [`Stats::bytes_out`].
    pub bytes_out: u64,
    /// See [`Stats::pending_bytes`].
    pub pending_bytes: i64,
    /// See [`Stats::peak_conn_pending`].
    pub peak_conn_pending: usize,
    /// See [`Stats::accept_pauses`].
    pub accept_pauses: u64,
    /// See [`Stats::conn_cap_pauses`].
    pub conn_cap_pauses: u64,
    /// See [`Stats::direct_table_full`].
    pub direct_table_full: u64,
    /// See [`Stats::direct_accepted_for_others`].
    pub direct_accepted_for_others: u64,
    /// See [`Stats::accept_pool_grown`].
    pub accept_pool_grown: u64,
    /// See [`Stats::accepts_posted`].
    pub accepts_posted: i64,
    /// See [`Stats::shared_locks`].
    pub shared_locks: u64,
    /// See [`Stats::idle_closed`].
    pub idle_closed: u64,
    /// See [`Stats::slow_reader_closed`].
    pub slow_reader_closed: u64,
    /// See [`Stats::ops_in_flight`].
    pub ops_in_flight: i64,
    /// See [`Stats::recv_buffer_exhausted`].
    pub recv_buffer_exhausted: u64,
    /// See [`Stats::bytes_passed_through`].
    pub bytes_passed_through: u64,
    /// See [`Stats::recv_buffer_bytes_posted`].
    pub recv_buffer_bytes_posted: i64,
    /// See [`Stats::recv_buffer_bytes_posted_peak`].
    pub recv_buffer_bytes_posted_peak: i64,
    /// See [`Stats::notification_overflows`].
    pub notification_overflows: u64,
    /// See [`Stats::message_windows`].
    pub message_windows: u64,
    /// See [`Stats::window_sockets`].
    pub window_sockets: u64,
    /// See [`Stats::window_sockets_peak`].
    pub window_sockets_peak: u64,
    /// See [`Stats::wait_groups`].
    pub wait_groups: u64,
    /// See [`Stats::tls_failures`].
    pub tls_failures: u64,
    /// See [`Stats::tls_truncated`].
    pub tls_truncated: u64,
    /// See [`Stats::tls_handshake_timeouts`].
    pub tls_handshake_timeouts: u64,
    /// See [`Stats::udp_datagrams_in`].
    pub udp_datagrams_in: u64,
    /// See [`Stats::udp_datagrams_out`].
    pub udp_datagrams_out: u64,
    /// See [`Stats::udp_truncated`].
    pub udp_truncated: u64,
    /// See [`Stats::udp_send_dropped`].
    pub udp_send_dropped: u64,
    /// See [`Stats::udp_loop_dropped`].
    pub udp_loop_dropped: u64,
    /// See [`Stats::udp_bytes_in`].
    pub udp_bytes_in: u64,
    /// See [`Stats::udp_bytes_out`].
    pub udp_bytes_out: u64,
    /// See [`Stats::waits`].
    pub waits: u64,
    /// See [`Stats::syscalls`].
    pub syscalls: u64,
    /// See [`Stats::batched_waits`].
    pub batched_waits: u64,
}

impl Stats {
    /// Counts one return of a model's wait call (itself a system call).
    pub(crate) fn count_wait(&self) {
        self.waits.fetch_add(1, Relaxed);
        self.syscalls.fetch_add(1, Relaxed);
    }

    /// A receive buffer of `len` bytes was handed to the kernel for one connection.
    pub(crate) fn recv_buffer_posted(&self, len: usize) {
        let now = self.recv_buffer_bytes_posted.fetch_add(len as i64, Relaxed) + len as i64;
        self.recv_buffer_bytes_posted_peak.fetch_max(now, Relaxed);
    }

    /// The kernel gave back a receive buffer of `len` bytes counted by
    /// [`Stats::recv_buffer_posted`].
    pub(crate) fn recv_buffer_returned(&self, len: usize) {
        self.recv_buffer_bytes_posted.fetch_sub(len as i64, Relaxed);
    }

    /// Counts a datagram received: `len` bytes, or cut short (`truncated`: counted, dropped).
    pub(crate) fn count_datagram_in(&self, len: usize, truncated: bool) {
        self.udp_datagrams_in.fetch_add(1, Relaxed);
        if truncated {
            self.udp_truncated.fetch_add(1, Relaxed);
        } else {
            self.udp_bytes_in.fetch_add(len as u64, Relaxed);
        }
    }

    /// Counts the fate of a datagram received whole: echoed (`Some(len)`) or dropped.
    /// Counts the outcome of sending an answer of `len` bytes: echoed if the whole datagram
    /// went, else dropped (a short send or an error, logged at debug level).
    pub(crate) fn count_answer(&self, len: usize, result: std::io::Result<usize>) {
        let sent = match result {
            Ok(n) if n == len => Some(n),
            Ok(n) => {
                log::debug!("udp: sent {n} of {len} bytes");
                None
            }
            Err(e) => {
                log::debug!("udp: answer dropped: {e}");
                None
            }
        };
        self.count_datagram_out(sent);
    }

    pub(crate) fn count_datagram_out(&self, sent: Option<usize>) {
        match sent {
            Some(len) => {
                self.udp_datagrams_out.fetch_add(1, Relaxed);
                self.udp_bytes_out.fetch_add(len as u64, Relaxed);
            }
            None => {
                self.udp_send_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Reads every counter (each atomically; the set is not one atomic snapshot).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            active: self.active.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            pending_bytes: self.pending_bytes.load(Relaxed),
            peak_conn_pending: self.peak_conn_pending.load(Relaxed),
            accept_pauses: self.accept_pauses.load(Relaxed),
            conn_cap_pauses: self.conn_cap_pauses.load(Relaxed),
            direct_table_full: self.direct_table_full.load(Relaxed),
            direct_accepted_for_others: self.direct_accepted_for_others.load(Relaxed),
            accept_pool_grown: self.accept_pool_grown.load(Relaxed),
            accepts_posted: self.accepts_posted.load(Relaxed),
            shared_locks: self.shared_locks.load(Relaxed),
            idle_closed: self.idle_closed.load(Relaxed),
            slow_reader_closed: self.slow_reader_closed.load(Relaxed),
            ops_in_flight: self.ops_in_flight.load(Relaxed),
            recv_buffer_exhausted: self.recv_buffer_exhausted.load(Relaxed),
            bytes_passed_through: self.bytes_passed_through.load(Relaxed),
            recv_buffer_bytes_posted: self.recv_buffer_bytes_posted.load(Relaxed),
            recv_buffer_bytes_posted_peak: self.recv_buffer_bytes_posted_peak.load(Relaxed),
            notification_overflows: self.notification_overflows.load(Relaxed),
            message_windows: self.message_windows.load(Relaxed),
            window_sockets: self.window_sockets.load(Relaxed),
            window_sockets_peak: self.window_sockets_peak.load(Relaxed),
            wait_groups: self.wait_groups.load(Relaxed),
            tls_failures: self.tls_failures.load(Relaxed),
            tls_truncated: self.tls_truncated.load(Relaxed),
            tls_handshake_timeouts: self.tls_handshake_timeouts.load(Relaxed),
            udp_datagrams_in: self.udp_datagrams_in.load(Relaxed),
            udp_datagrams_out: self.udp_datagrams_out.load(Relaxed),
            udp_truncated: self.udp_truncated.load(Relaxed),
            udp_send_dropped: self.udp_send_dropped.load(Relaxed),
            udp_loop_dropped: self.udp_loop_dropped.load(Relaxed),
            udp_bytes_in: self.udp_bytes_in.load(Relaxed),
            udp_bytes_out: self.udp_bytes_out.load(Relaxed),
            waits: self.waits.load(Relaxed),
            syscalls: self.syscalls.load(Relaxed),
            batched_waits: self.batched_waits.load(Relaxed),
        }
    }
}
