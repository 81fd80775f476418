//! The shared context: [`Ctx`], what every model gets (the service, the limits, the counters,
//! the shutdown signal, the UDP socket and the settings of `ServerConfig` a model reads), and
//! the two settings types it holds ([`RecvBuffers`], [`AcceptMode`]; the crate root re-exports
//! them).
//!
//! It depends on nothing above it: the counters (`stats`), the limits (`limits`), the stop flag
//! (`shutdown`), `--trace` (`trace`) and the UDP echo-loop rule (`udp::LoopGuard`), never on
//! `models` or on the crate root's `Server`. `Server::bind` makes it whole, in one step, before
//! any model sees it; what a model makes at bind (its rings, say) is not in it but handed to
//! that model's `run` (`models/mod.rs`).

use crate::limits::Sweep;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::trace::Trace;
use crate::udp::LoopGuard;
use iomodels_core::{Limits, ServiceKind};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

/// What every model gets: the service, the limits, the counters and the shutdown signal.
pub(crate) struct Ctx {
    pub service: ServiceKind,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
    pub drain_timeout: Duration,
    pub workers: usize,
    pub recv_buffers: RecvBuffers,
    pub recv_incremental: bool,
    pub pass_through: bool,
    pub accept_mode: AcceptMode,
    /// [`crate::ServerConfig::batch_wait`], checked; `None`: off.
    pub batch_wait: Option<Duration>,
    /// `--trace`: [`crate::trace::trace_event!`] prints through it.
    pub trace: Trace,
    /// TLS for every connection (checked usable at bind), or plain TCP.
    pub tls: Option<Arc<iomodels_core::rustls::ServerConfig>>,
    /// The UDP socket (non-blocking, bound at bind), when serving UDP. It stays open until the
    /// server is dropped; a model stops reading it when shutdown begins.
    pub udp: Option<UdpSocket>,
    /// Bytes of the buffer a datagram is received into
    /// ([`crate::ServerConfig::udp_max_datagram`]).
    pub udp_max_datagram: usize,
    /// The echo-loop rule every model's UDP path asks before it answers a datagram.
    pub udp_guard: Arc<LoopGuard>,
    /// The connection cap ([`crate::ServerConfig::max_conns`], resolved; `usize::MAX`: none).
    pub max_conns: usize,
    /// [`crate::ServerConfig::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// [`crate::ServerConfig::write_timeout`].
    pub write_timeout: Option<Duration>,
    /// [`crate::ServerConfig::handshake_timeout`].
    pub handshake_timeout: Option<Duration>,
    /// `completion-port` on direct descriptors: the slots of each worker's fixed-file table;
    /// `None`: ordinary descriptors.
    pub direct_table: Option<usize>,
    /// [`crate::ServerConfig::sockets_per_window`], checked; `None`: not set (the default).
    pub sockets_per_window: Option<usize>,
    /// [`crate::ServerConfig::test_fail_posts`].
    #[cfg_attr(not(windows), allow(dead_code))]
    pub test_fail_posts: Option<std::num::NonZeroU32>,
}

impl Ctx {
    /// A fresh sweep for one model loop ([`Sweep`]).
    pub fn sweep(&self) -> Sweep {
        Sweep::new(
            self.idle_timeout,
            self.write_timeout,
            self.tls_handshake_deadline(),
        )
    }

    /// The handshake deadline a new connection gets: `--handshake-timeout` when serving TLS,
    /// else none.
    pub fn tls_handshake_deadline(&self) -> Option<Duration> {
        self.handshake_timeout.filter(|_| self.tls.is_some())
    }
}

/// How the workers of a multi-threaded model get their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptMode {
    /// Each worker has its own listener on the same port (`SO_REUSEPORT`); the kernel spreads
    /// new connections over them by hash. No socket crosses threads.
    #[default]
    ReusePort,
    /// One worker accepts for all and hands each socket to the next worker in turn
    /// (`IORING_OP_MSG_RING`): an exact round-robin, at the cost of a message per connection
    /// and one thread doing every accept.
    Handoff,
}

impl AcceptMode {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AcceptMode::ReusePort => "reuseport",
            AcceptMode::Handoff => "handoff",
        }
    }
}

impl std::str::FromStr for AcceptMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reuseport" => Ok(AcceptMode::ReusePort),
            "handoff" => Ok(AcceptMode::Handoff),
            _ => Err(format!(
                "unknown accept mode '{s}' (expected reuseport or handoff)"
            )),
        }
    }
}

/// The provided-buffer ring an io_uring model receives into (Linux: the one ring of
/// `overlapped-event` and `overlapped-routine`, each `completion-port` worker's ring): `count`
/// buffers of `size` bytes, shared by all of the ring's connections, so an idle connection
/// holds none. Windows has no such ring: each connection posts a zero-byte receive and reads
/// into its thread's 16 KiB buffer once data is there, so an idle connection holds none either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBuffers {
    /// How many buffers (a power of two, at most 32768).
    pub count: u16,
    /// Bytes per buffer.
    pub size: usize,
}

impl RecvBuffers {
    /// The most memory one ring may take (each `completion-port` worker has one): 256 MiB,
    /// 256 times the default; `32768x1MiB` (32 GiB) used to abort the process at allocation.
    pub const MAX_TOTAL: usize = 256 << 20;

    /// `Ok` if the kernel can take this ring and the process can allocate it: a power-of-two
    /// count up to 32768 of buffers of 1 byte to 4 GiB, [`RecvBuffers::MAX_TOTAL`] in all.
    pub fn check(&self) -> Result<(), String> {
        if !self.count.is_power_of_two() || self.count > 32768 {
            return Err(format!(
                "the buffer count must be a power of two up to 32768, not {}",
                self.count
            ));
        }
        if self.size == 0 || self.size > u32::MAX as usize {
            return Err(format!(
                "buffers must hold 1 byte to 4 GiB, not {}",
                self.size
            ));
        }
        let total = usize::from(self.count).saturating_mul(self.size);
        if total > Self::MAX_TOTAL {
            return Err(format!(
                "{} buffers of {} bytes are {} MiB per ring: at most {} MiB",
                self.count,
                self.size,
                total >> 20,
                Self::MAX_TOTAL >> 20
            ));
        }
        Ok(())
    }
}

impl std::str::FromStr for RecvBuffers {
    type Err = String;

    /// Parses `COUNTxSIZE`, e.g. `16x64KiB`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, size) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("'{s}' is not COUNTxSIZE (e.g. 16x64KiB)"))?;
        let count = count
            .trim()
            .parse()
            .map_err(|_| format!("'{count}' is not a buffer count (1 to 32768)"))?;
        let size = iomodels_core::units::parse_bytes(size)?;
        let rb = RecvBuffers { count, size };
        rb.check()?;
        Ok(rb)
    }
}

impl Default for RecvBuffers {
    /// 16 buffers of 64 KiB, consumed incrementally ([`crate::ServerConfig::recv_incremental`]): 1 MiB
    /// of address space per ring, whose pages become resident only as traffic fills them.
    /// A 64 B message takes 64 bytes of a buffer, so 1 MiB holds a burst of 16,384 of them; a
    /// 64 KiB message can arrive in one completion. Fewer, larger buffers also keep the ring's
    /// footprint in the CPU caches: for 64 KiB messages (`pp64k-10`), 16 x 64 KiB measured
    /// as cheap as `event-select` where 256 x 16 KiB cost ~1.2x (ARCHITECTURE.md).
    fn default() -> Self {
        RecvBuffers {
            count: 16,
            size: 64 * 1024,
        }
    }
}
