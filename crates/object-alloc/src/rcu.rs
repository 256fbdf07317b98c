//! Read-side sections and deferred frees: the userspace rendering of RCU and `kfree_rcu`.
//!
//! A *reader* enters a read-side section with [`read`] and may dereference objects it finds
//! through shared pointers until the returned [`ReadGuard`] is dropped. A *writer* that
//! unpublishes an object hands it to [`ObjectAlloc::free_deferred`](crate::ObjectAlloc), which
//! must not reuse it until every section that was active at that moment has ended (C-DEFER-1).
//!
//! The grace-period mechanism is `crossbeam-epoch`'s default collector: [`read`] pins it, and
//! every design defers on that same collector through a [`Deferrer`]. Workloads written against
//! the trait are therefore correct on every design.
//!
//! A [`Deferrer`] owns a design's shared state in an `Arc`; each deferred closure holds a clone,
//! so the state outlives every pending callback even if the cache is dropped first, and the
//! number of pending callbacks (counting those announced by a [`Reservation`]) is the `Arc`'s
//! count less the owner's. Deferred callbacks queue in the deferring thread's local bag until
//! it fills, the thread flushes ([`flush`]), or the thread exits; [`Deferrer::barrier`]
//! flushes the calling thread and waits for the rest.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;

/// An active read-side section. Objects reached through shared pointers stay valid until it
/// is dropped.
#[derive(Debug)]
#[must_use = "the read-side section ends when the guard is dropped"]
pub struct ReadGuard {
    guard: epoch::Guard,
}

impl ReadGuard {
    /// The underlying epoch guard, for loading `crossbeam_epoch::Atomic` pointers.
    pub fn epoch_guard(&self) -> &epoch::Guard {
        &self.guard
    }
}

/// Enters a read-side section (`rcu_read_lock`). Sections nest.
#[inline]
pub fn read() -> ReadGuard {
    ReadGuard {
        guard: epoch::pin(),
    }
}

/// Pushes the calling thread's queued deferred callbacks to the global queue so that any
/// thread can run them once their grace period has passed.
pub fn flush() {
    epoch::pin().flush();
}

/// A design's shared state that deferred callbacks act on.
pub trait DeferTarget: Send + Sync + 'static {
    /// Frees `object` for real; called once its grace period has passed.
    ///
    /// # Safety
    ///
    /// - `object` was passed to a `defer_free` of a [`Deferrer`] that owns this state.
    /// - Every read-side section that could see it has ended.
    unsafe fn free_now(&self, object: NonNull<u8>);
}

/// Owner of a design's shared state `T`, and the gate through which it defers work.
///
/// Not `Clone`: the pending count is derived from the `Arc`'s strong count, which only the
/// callbacks may raise.
#[derive(Debug)]
pub struct Deferrer<T> {
    shared: Arc<T>,
}

impl<T: DeferTarget> Deferrer<T> {
    /// Takes ownership of `shared`.
    pub fn new(shared: T) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The shared state.
    #[inline]
    pub fn get(&self) -> &T {
        &self.shared
    }

    /// Defers one object: [`DeferTarget::free_now`] runs on it after a grace period.
    ///
    /// # Safety
    ///
    /// - `object` is a live object of this design, and no one uses it after the grace period
    ///   except through `free_now`.
    #[inline]
    pub unsafe fn defer_free(&self, object: NonNull<u8>) {
        // SAFETY: the caller hands `object` over; `free_now`'s contract is the caller's.
        unsafe {
            self.defer_with(
                object.cast(),
                |shared, object| shared.free_now(object.cast()),
                false,
            )
        }
    }

    /// Defers `f(shared, payload)` until a grace period has passed; with `flush`, the calling
    /// thread's queue is pushed at once, so the callback cannot be stranded in an idle thread
    /// (use it for whole batches, where the cost is shared by many objects).
    ///
    /// # Safety
    ///
    /// - `f(shared, payload)` must be sound to run on any thread, at any later time, after every
    ///   read-side section active now has ended.
    #[inline]
    pub unsafe fn defer_with(
        &self,
        payload: NonNull<()>,
        f: unsafe fn(&T, NonNull<()>),
        flush: bool,
    ) {
        // SAFETY: forwarded.
        unsafe { self.defer_reserved(self.reserve(), payload, f, flush) }
    }

    /// Announces a callback before its payload is gathered: from now until the callback that
    /// [`Deferrer::defer_reserved`] makes of it has run (or until it is dropped unused), it
    /// counts in [`Deferrer::pending`], so a concurrent [`Deferrer::barrier`] waits for it.
    /// Take one *before* taking work out of where a barrier would look for it.
    #[inline]
    pub fn reserve(&self) -> Reservation<T> {
        Reservation {
            shared: Arc::clone(&self.shared),
        }
    }

    /// [`Deferrer::defer_with`] for a callback announced by `reservation`.
    ///
    /// # Safety
    ///
    /// As [`Deferrer::defer_with`]; `reservation` came from this deferrer.
    #[inline]
    pub unsafe fn defer_reserved(
        &self,
        reservation: Reservation<T>,
        payload: NonNull<()>,
        f: unsafe fn(&T, NonNull<()>),
        flush: bool,
    ) {
        debug_assert!(Arc::ptr_eq(&reservation.shared, &self.shared));
        let shared = reservation.shared;
        let payload = SendPtr(payload);
        let guard = epoch::pin();
        // SAFETY: the closure owns an `Arc` that keeps the state alive, and the caller promised
        // that running `f` after the grace period is sound; crossbeam runs it only after every
        // guard pinned before this call has been dropped.
        unsafe {
            guard.defer_unchecked(move || {
                let payload = payload;
                f(&shared, payload.0);
            });
        }
        if flush {
            guard.flush();
        }
    }

    /// Deferred callbacks not yet run.
    pub fn pending(&self) -> usize {
        Arc::strong_count(&self.shared) - 1
    }

    /// Whether nothing is pending; when so, what the callbacks did is visible to the caller.
    fn all_run(&self) -> bool {
        if self.pending() != 0 {
            return false;
        }
        // `strong_count` is a relaxed load: the fence pairs with the release decrement of each
        // callback's `Arc`.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        true
    }

    /// Waits until every deferred callback of this design has run (`rcu_barrier`).
    ///
    /// Callbacks queued by another thread that is still running but never reads, defers or
    /// flushes again are reached only when that thread does one of those or exits; use
    /// [`Deferrer::barrier_timeout`] where that may happen.
    pub fn barrier(&self) {
        while self.barrier_timeout(Duration::from_secs(1)).is_err() {}
    }

    /// [`Deferrer::barrier`] bounded by `timeout`; on time-out, the number still pending.
    pub fn barrier_timeout(&self, timeout: Duration) -> Result<(), usize> {
        let start = Instant::now();
        loop {
            if self.all_run() {
                return Ok(());
            }
            // Each pin-and-flush moves our own bag to the global queue and tries to advance the
            // epoch and run whatever has expired.
            epoch::pin().flush();
            if self.all_run() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(self.pending());
            }
            std::thread::yield_now();
        }
    }
}

/// A deferred callback announced ahead of its payload (see [`Deferrer::reserve`]).
#[derive(Debug)]
#[must_use = "a reservation counts as pending until it is used or dropped"]
pub struct Reservation<T> {
    shared: Arc<T>,
}

/// A raw pointer that a deferred callback may carry to another thread.
struct SendPtr(NonNull<()>);

// SAFETY: the pointer is only dereferenced by the callback, whose soundness on any thread is
// the obligation of `Deferrer::defer_with`'s caller.
unsafe impl Send for SendPtr {}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Log(Mutex<Vec<usize>>);

    impl DeferTarget for Log {
        unsafe fn free_now(&self, object: NonNull<u8>) {
            self.0.lock().unwrap().push(object.as_ptr() as usize);
        }
    }

    #[test]
    fn deferred_free_waits_for_an_active_reader() {
        let deferrer = Deferrer::new(Log::default());
        let reader = read();
        let object = NonNull::new(0x1000 as *mut u8).unwrap();
        // SAFETY: the "object" is a token that `Log` only records.
        unsafe { deferrer.defer_free(object) };
        for _ in 0..1000 {
            epoch::pin().flush();
        }
        assert_eq!(
            deferrer.pending(),
            1,
            "ran while a reader was still inside its section"
        );
        assert!(deferrer.get().0.lock().unwrap().is_empty());
        drop(reader);
        deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*deferrer.get().0.lock().unwrap(), vec![0x1000]);
    }

    #[test]
    fn barrier_reaches_callbacks_of_exited_threads() {
        let deferrer = Deferrer::new(Log::default());
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=10 {
                    let object = NonNull::new((i * 16) as *mut u8).unwrap();
                    // SAFETY: tokens only recorded by `Log`.
                    unsafe { deferrer.defer_free(object) };
                }
            });
        });
        deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(deferrer.get().0.lock().unwrap().len(), 10);
    }
}
