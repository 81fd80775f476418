//! The two helpers every multi-threaded model uses: joining a worker thread, and locking
//! state the threads share.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A joined worker's outcome (`handle.join()`, scoped or not): what the thread returned, or,
/// if it panicked, the error `panicked` (a worker's panic ends the model with an error; it
/// does not unwind through the thread that joins it).
pub(crate) fn join_worker<T>(
    joined: std::thread::Result<io::Result<T>>,
    panicked: &str,
) -> io::Result<T> {
    joined.unwrap_or_else(|_| Err(io::Error::other(panicked.to_string())))
}

/// Locks `m`, taking the data even if a thread panicked while holding it: the state the
/// threads share stays usable (each model's own invariants hold between its statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Joins workers in turn after the joining thread's own `result` (each `joined` item is a
/// `handle.join()`): the first error of all, a panic counting as the error `panicked`.
pub(crate) fn join_workers(
    mut result: io::Result<()>,
    joined: impl IntoIterator<Item = std::thread::Result<io::Result<()>>>,
    panicked: &str,
) -> io::Result<()> {
    for joined in joined {
        let r = join_worker(joined, panicked);
        if result.is_ok() {
            result = r;
        }
    }
    result
}
