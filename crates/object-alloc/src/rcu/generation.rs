//! The collector and its generations: one per process lifetime between forks, and each
//! thread's registration (handle and buffer) in the current one.

use std::cell::RefCell;
use std::mem::{self, ManuallyDrop};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_epoch::{Collector, LocalHandle};

use super::buffer::{Buffer, hand_over_batch};
use super::handover::Monitor;

/// One collector's lifetime: from the first use (or a fork) to the next fork. Never freed: the
/// parent's threads registered in it may have died mid-operation in a child, so it must never
/// be dropped, only abandoned.
pub(super) struct Generation {
    pub(super) id: u32,
    pub(super) collector: Collector,
    /// Every live thread's buffer.
    pub(super) buffers: Mutex<Vec<Arc<Buffer>>>,
    /// Batches handed to the collector whose callbacks have not run yet.
    pub(super) in_flight: AtomicUsize,
    pub(super) monitor: Monitor,
}

/// The current generation (null until first used, and again in a child until it is used).
static CURRENT: AtomicPtr<Generation> = AtomicPtr::new(ptr::null_mut());
/// The next generation's id; ids start at 1 (0 means "none" in the tags).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);
/// Whether the fork handler is installed (a flag, not a `Once`: a fork in the middle of a
/// `Once` would leave the child waiting for it for ever).
static ATFORK: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_child() {
    // The only thread of the child; allocating here is not safe, so the next use creates the
    // new generation.
    CURRENT.store(ptr::null_mut(), Ordering::Release);
}

#[inline]
pub(super) fn current() -> &'static Generation {
    let generation = CURRENT.load(Ordering::Acquire);
    if generation.is_null() {
        return new_generation();
    }
    // SAFETY: generations are leaked, never freed.
    unsafe { &*generation }
}

#[cold]
fn new_generation() -> &'static Generation {
    if !ATFORK.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler with no prepare or parent part; the child handler only
        // stores an atomic. If registration fails, a child keeps the parent's collector.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child as unsafe extern "C" fn())) };
    }
    let fresh = Box::into_raw(Box::new(Generation {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        collector: Collector::new(),
        buffers: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        monitor: Monitor::default(),
    }));
    match CURRENT.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just leaked; from now on never freed.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: ours was never published, so it is still uniquely owned; the winner is
            // leaked like every published generation.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above.
            unsafe { &*winner }
        }
    }
}

/// A thread's registration in one generation.
struct ThreadState {
    generation: &'static Generation,
    handle: ManuallyDrop<LocalHandle>,
    buffer: Arc<Buffer>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if !ptr::eq(self.generation, current()) {
            // Abandoned at a fork: its collector and buffers must not be touched (leaked).
            return;
        }
        let batch = self.buffer.take();
        if !batch.is_empty() {
            hand_over_batch(self.generation, &self.handle, batch);
        }
        self.generation
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|buffer| !Arc::ptr_eq(buffer, &self.buffer));
        // SAFETY: dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.handle) };
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

/// Runs `f` with the current generation, a handle registered in it, and the calling
/// thread's buffer (none while the thread's locals are being destroyed).
#[inline]
pub(super) fn with_thread<R>(
    f: impl FnOnce(&'static Generation, &LocalHandle, Option<&Buffer>) -> R,
) -> R {
    let generation = current();
    let mut f = Some(f);
    let done = THREAD.try_with(|state| {
        if let Ok(state) = state.try_borrow()
            && let Some(state) = &*state
            && ptr::eq(state.generation, generation)
        {
            let f = f.take().expect("called once");
            return Some(f(generation, &state.handle, Some(&state.buffer)));
        }
        None
    });
    match done {
        Ok(Some(result)) => result,
        _ => with_thread_slow(generation, f.take().expect("not called yet")),
    }
}

#[cold]
fn with_thread_slow<R>(
    generation: &'static Generation,
    f: impl FnOnce(&'static Generation, &LocalHandle, Option<&Buffer>) -> R,
) -> R {
    let registered = THREAD.try_with(|cell| {
        let mut state = cell.try_borrow_mut().ok()?;
        if let Some(old) = state.take() {
            if ptr::eq(old.generation, generation) {
                *state = Some(old);
                return Some(());
            }
            // A parent's registration: never touched again.
            mem::forget(old);
        }
        let buffer = Arc::new(Buffer::default());
        generation
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&buffer));
        *state = Some(ThreadState {
            generation,
            handle: ManuallyDrop::new(generation.collector.register()),
            buffer,
        });
        Some(())
    });
    if let Ok(Some(())) = registered {
        return with_thread(f);
    }
    // Thread-local storage is being torn down (or the caller is inside a registration): a
    // handle for this call only, and no buffer.
    let handle = generation.collector.register();
    f(generation, &handle, None)
}
