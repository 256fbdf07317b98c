//! The synchronisation primitives of the concurrency-critical structures (the CPU-slot
//! try-lock and the barn), swapped for `loom`'s model-checked versions when the crate is built
//! with `RUSTFLAGS="--cfg loom"`, so the same code runs under the model checker.
//!
//! Only the slot lock and the barn lock go through this module. Statistics counters use `std`
//! atomics unconditionally: they carry no synchronisation duty (relaxed loads and stores by
//! the slot's holder, relaxed reads by `stats()`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU8;
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU8;
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the data if a panicking thread poisoned it: the structures
/// guarded here are lists whose every update is a single push or pop, so a panic elsewhere
/// cannot leave them half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Tries to lock `mutex` without waiting; `None` when another thread holds it.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    use std::sync::TryLockError;
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}
