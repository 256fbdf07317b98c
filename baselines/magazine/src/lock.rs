//! The per-CPU cache lock: test-and-test-and-set, yielding when held.
//!
//! libumem protects each CPU cache with a mutex (`cc_lock`) that is nearly always free: only
//! threads on that CPU take it. In user space a second thread reaches the same CPU cache
//! when the holder was preempted (the new thread runs on the holder's CPU) or migrated
//! mid-operation. A try-lock that falls back to the depot on failure (as the sheaf design
//! does with its CPU slots) would change the algorithm being measured; a sleeping mutex
//! would put a futex call behind every such collision and costs a locked instruction on
//! release. This lock takes one compare-and-swap to acquire and a plain release store to
//! release; when held it spins briefly (the holder is running on another CPU) and then
//! yields, which hands the CPU to the holder when the holder was preempted on this one.
//! Collisions are counted (`cpu_lock_contended`).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A lock around one CPU's magazines.
#[derive(Debug, Default)]
pub(crate) struct CpuLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
    /// Threads that entered the contended path (tests observe a waiter with it).
    #[cfg(test)]
    waiters: std::sync::atomic::AtomicUsize,
}

// SAFETY: the value is only reached through a guard, and a guard exists for one thread at a
// time (the `locked` flag, acquired and released with acquire/release ordering).
unsafe impl<T: Send> Sync for CpuLock<T> {}

impl<T> CpuLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
            #[cfg(test)]
            waiters: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The lock's flag, for a fork's prepare handler to take (see `slab::fork`).
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.locked
    }

    /// In a child process, for a lock that a thread which is gone held at the fork: replaces
    /// the value without reading or dropping the old one (it may be half-updated) and
    /// releases the lock.
    ///
    /// # Safety
    ///
    /// - No thread of this process holds the lock or uses the value.
    pub(crate) unsafe fn reset_after_fork(&self, value: T) {
        // SAFETY: exclusive by the caller's obligation; `write` neither reads nor drops.
        unsafe { self.value.get().write(value) };
        self.locked.store(false, Ordering::Release);
    }

    /// Takes the lock; the flag says whether it had to wait.
    #[inline]
    pub(crate) fn lock(&self) -> (CpuGuard<'_, T>, bool) {
        let contended = self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err();
        if contended {
            self.lock_slow();
        }
        (CpuGuard { lock: self }, contended)
    }

    #[cold]
    fn lock_slow(&self) {
        #[cfg(test)]
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Exclusive access to a CPU's magazines; released on drop.
#[derive(Debug)]
pub(crate) struct CpuGuard<'a, T> {
    lock: &'a CpuLock<T>,
}

impl<T> Deref for CpuGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for CpuGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes this the only borrow of the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for CpuGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_counts_collisions() {
        let lock = CpuLock::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let (mut guard, _) = lock.lock();
                        let value = *guard;
                        std::hint::black_box(());
                        *guard = value + 1;
                    }
                });
            }
        });
        assert_eq!(*lock.lock().0, 40_000);
        lock.waiters.store(0, Ordering::Relaxed);
        let (held, first) = lock.lock();
        assert!(!first);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| lock.lock().1);
            while lock.waiters.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            drop(held);
            assert!(
                waiter.join().unwrap(),
                "a wait on a held lock was not reported"
            );
        });
    }
}
