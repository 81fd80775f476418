//! [`Acceptor`]: the listening socket and the accept loop every model shares.
//!
//! It accepts in batches until `WouldBlock`, skips connections the peer aborted before they
//! were accepted (ECONNABORTED), and when the process is out of descriptors (EMFILE/ENFILE)
//! pauses accepting for a short back-off instead of spinning on a listener that stays
//! readable, logging once per pause (as nginx and HAProxy do). Existing connections keep being
//! served meanwhile.

use crate::stats::Stats;
use crate::sys;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How long accepting pauses after EMFILE/ENFILE.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket with its accept loop.
pub(crate) struct Acceptor {
    pub listener: TcpListener,
    paused_until: Option<Instant>,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener,
            paused_until: None,
        }
    }

    /// True if the model should wait for the listener to become readable now.
    pub fn is_accepting(&mut self) -> bool {
        match self.paused_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                self.paused_until = None;
                true
            }
            None => true,
        }
    }

    /// How long until a pause ends, if accepting is paused: the most a model may wait.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.paused_until
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Accepts up to `max` pending connections and hands each to `serve`. Returns how many were
    /// accepted. Errors on the listener itself are returned; per-connection ones are absorbed.
    pub fn accept_batch(
        &mut self,
        max: usize,
        stats: &Stats,
        mut serve: impl FnMut(TcpStream),
    ) -> io::Result<usize> {
        let mut accepted = 0;
        while accepted < max {
            stats.syscalls.fetch_add(1, Relaxed);
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("TCP_NODELAY on an accepted socket failed: {e}");
                    }
                    accepted += 1;
                    serve(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if sys::is_transient_accept_error(&e) => continue,
                Err(e) if sys::is_out_of_descriptors(&e) => {
                    stats.accept_pauses.fetch_add(1, Relaxed);
                    log::warn!(
                        "accept: {e}; pausing accepts for {} ms, serving existing connections",
                        EMFILE_BACKOFF.as_millis()
                    );
                    self.paused_until = Some(Instant::now() + EMFILE_BACKOFF);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(accepted)
    }
}
