//! Graceful shutdown: one flag, and a [`Waker`] for every wait that must notice it.

use crate::sys::Waker;
use crate::threads::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A cloneable handle that asks a running server to stop.
///
/// Every model thread that blocks in a wait registers a [`Waker`] with [`Shutdown::register`]
/// and includes it in the wait; [`Shutdown::trigger`] sets the flag and wakes them all. After
/// that the models stop accepting, let connections finish for the drain timeout, close the rest
/// and return.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Shutdown {
    /// A handle nobody has triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the server to stop; safe to call from any thread, any number of times.
    pub fn trigger(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Wakes every registered wait without asking for shutdown: something every thread should
    /// look at again changed (the connection cap was reached: the other workers of a model
    /// must stop their accepts).
    pub(crate) fn wake_all(&self) {
        for w in lock(&self.inner.wakers).iter() {
            if let Err(e) = w.wake() {
                log::warn!("cannot wake a server thread: {e}");
            }
        }
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Creates a waker that [`Shutdown::trigger`] will signal. If shutdown was already
    /// requested, the waker is signalled at once, so no wait can miss it.
    pub fn register(&self) -> std::io::Result<Arc<Waker>> {
        let w = Arc::new(Waker::new()?);
        lock(&self.inner.wakers).push(Arc::clone(&w));
        if self.is_requested() {
            w.wake()?;
        }
        Ok(w)
    }
}
