//! Locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking its data even if a thread panicked while holding it: tierls'
/// critical sections only insert, remove or swap whole values, so a poisoned lock still
/// guards consistent data, and the server must not stop over it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
