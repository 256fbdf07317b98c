//! Per-thread callback buffers and the hand-over of callbacks to the collector.

use std::cell::UnsafeCell;
use std::mem;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_epoch::LocalHandle;

use super::generation::Generation;

/// A deferred callback, type-erased: `run(self)` calls the design's function and releases
/// the state and the pending count.
pub(super) struct Callback {
    pub(super) run: unsafe fn(Callback),
    pub(super) inner: *const (),
    pub(super) payload: NonNull<()>,
    pub(super) f: *const (),
}

// SAFETY: the pointers are only used by `run`, whose soundness on any thread is the obligation
// of `Deferrer::defer_with`'s caller, and the state behind `inner` is `Send + Sync`.
unsafe impl Send for Callback {}

/// A thread's deferred callbacks not yet handed to the collector; any thread may empty it.
///
/// Guarded by a flag rather than a mutex: taking it is one locked instruction and releasing
/// it a plain store, and the owner only ever tries it (a deferral never waits); a thread that
/// empties the buffer waits for at most the owner's push.
#[derive(Default)]
pub(super) struct Buffer {
    locked: AtomicBool,
    callbacks: UnsafeCell<Vec<Callback>>,
}

// SAFETY: `callbacks` is only reached through a `BufferGuard`, of which there is one at a
// time (the `locked` flag, acquired and released with the matching orderings).
unsafe impl Sync for Buffer {}

/// Exclusive access to a [`Buffer`]'s callbacks.
pub(super) struct BufferGuard<'a>(&'a Buffer);

impl Buffer {
    #[inline]
    pub(super) fn try_lock(&self) -> Option<BufferGuard<'_>> {
        // Not `then_some`: a guard made while another holds the flag would release it.
        (!self.locked.swap(true, Ordering::Acquire)).then(|| BufferGuard(self))
    }

    fn lock(&self) -> BufferGuard<'_> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            std::thread::yield_now();
        }
    }

    pub(super) fn take(&self) -> Vec<Callback> {
        mem::take(&mut *self.lock())
    }
}

impl std::ops::Deref for BufferGuard<'_> {
    type Target = Vec<Callback>;

    fn deref(&self) -> &Vec<Callback> {
        // SAFETY: the guard holds the buffer's flag.
        unsafe { &*self.0.callbacks.get() }
    }
}

impl std::ops::DerefMut for BufferGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<Callback> {
        // SAFETY: the guard holds the buffer's flag, and this is its only borrow.
        unsafe { &mut *self.0.callbacks.get() }
    }
}

impl Drop for BufferGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

/// Hands `batch` to the collector: its grace period starts now.
pub(super) fn hand_over_batch(
    generation: &'static Generation,
    handle: &LocalHandle,
    batch: Vec<Callback>,
) {
    hand_over(generation, handle, move || {
        for callback in batch {
            // SAFETY: each callback runs once, after its grace period.
            unsafe { (callback.run)(callback) };
        }
    });
}

pub(super) fn hand_over(
    generation: &'static Generation,
    handle: &LocalHandle,
    job: impl FnOnce() + Send + 'static,
) {
    if generation.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
        generation.kick();
    }
    let guard = handle.pin();
    // SAFETY: `job` is sound to run on any thread after the grace period (each callback's
    // obligation); the generation it touches is never freed.
    unsafe {
        guard.defer_unchecked(move || {
            job();
            generation.in_flight.fetch_sub(1, Ordering::Release);
        });
    }
    guard.flush();
}

impl Generation {
    /// Hands every thread's buffered callbacks to the collector; whether there were any.
    pub(super) fn hand_over_buffers(&'static self, handle: &LocalHandle) -> bool {
        let buffers: Vec<Arc<Buffer>> = self
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut any = false;
        for buffer in buffers {
            let batch = buffer.take();
            if !batch.is_empty() {
                any = true;
                hand_over_batch(self, handle, batch);
            }
        }
        any
    }
}
