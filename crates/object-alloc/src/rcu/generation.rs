//! The collector and its generations: one per process lifetime between forks, and each
//! thread's registration (handle and queue) in the current one; the clock that stamps
//! deferred callbacks, the collections that mark them expired, and who runs them.

use std::cell::RefCell;
use std::mem::{self, ManuallyDrop};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_epoch::{Collector, LocalHandle};

use super::handover::Monitor;
use super::queue::{Callback, Queue, QueueList};

/// One collector's lifetime: from the first use (or a fork) to the next fork. Never freed: the
/// parent's threads registered in it may have died mid-operation in a child, so it must never
/// be dropped, only abandoned.
pub(super) struct Generation {
    pub(super) id: u32,
    pub(super) collector: Collector,
    /// The clock: deferred callbacks are stamped with its value, and those stamped `c` or
    /// before may run once a grace period requested after the clock moved past `c` has
    /// passed.
    clock: AtomicU64,
    /// The highest clock value whose grace period has passed: callbacks stamped at or before
    /// it may run. Raised by each collection; a queue's owner runs its own expired callbacks
    /// at its next request, and the hand-over thread runs those the owner has left for a
    /// tick (see [`Generation::run_expired`]).
    safe: AtomicU64,
    /// Every thread's queue (live threads' and released ones).
    pub(super) queues: QueueList,
    /// Collections requested whose grace period has not passed yet (or that are running).
    pub(super) in_flight: AtomicUsize,
    pub(super) monitor: Monitor,
}

/// The current generation (null until first used, and again in a child until it is used).
static CURRENT: AtomicPtr<Generation> = AtomicPtr::new(ptr::null_mut());
/// The last generation published (not cleared at a fork): a child's clock starts past its
/// clock, so that stamps read in the parent expire at the child's first grace period.
static LAST: AtomicPtr<Generation> = AtomicPtr::new(ptr::null_mut());
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
    let last = LAST.load(Ordering::Acquire);
    // SAFETY: generations are leaked, never freed; the parent's may be read in a child.
    let start = unsafe { last.as_ref() }.map_or(1, |last| last.clock.load(Ordering::Relaxed) + 1);
    let fresh = Box::into_raw(Box::new(Generation {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        collector: Collector::new(),
        clock: AtomicU64::new(start),
        safe: AtomicU64::new(0),
        queues: QueueList::default(),
        in_flight: AtomicUsize::new(0),
        monitor: Monitor::default(),
    }));
    match CURRENT.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            LAST.store(fresh, Ordering::Release);
            // SAFETY: just leaked; from now on never freed.
            unsafe { &*fresh }
        }
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
    queue: &'static Queue,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if !ptr::eq(self.generation, current()) {
            // Abandoned at a fork: its collector and queues must not be touched (leaked).
            return;
        }
        // What is left in the queue stays there for collections; one is asked for now, so
        // that nothing waits for the hand-over thread's next tick.
        if self.queue.take_unrequested() {
            self.generation.request(&self.handle);
        }
        self.generation.run_own(self.queue);
        QueueList::release(self.queue);
        // SAFETY: dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.handle) };
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

/// Runs `f` with the current generation, a handle registered in it, and the calling
/// thread's queue (none while the thread's locals are being destroyed, or while it is
/// registering).
#[inline]
pub(super) fn with_thread<R>(
    f: impl FnOnce(&'static Generation, &LocalHandle, Option<&'static Queue>) -> R,
) -> R {
    let generation = current();
    let mut f = Some(f);
    let done = THREAD.try_with(|state| {
        if let Ok(state) = state.try_borrow()
            && let Some(state) = &*state
            && ptr::eq(state.generation, generation)
        {
            let f = f.take().expect("called once");
            return Some(f(generation, &state.handle, Some(state.queue)));
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
    f: impl FnOnce(&'static Generation, &LocalHandle, Option<&'static Queue>) -> R,
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
        *state = Some(ThreadState {
            generation,
            handle: ManuallyDrop::new(generation.collector.register()),
            queue: generation.queues.claim(),
        });
        Some(())
    });
    if let Ok(Some(())) = registered {
        return with_thread(f);
    }
    // Thread-local storage is being torn down (or the caller is inside a registration): a
    // handle for this call only, and no queue.
    let handle = generation.collector.register();
    f(generation, &handle, None)
}

impl Generation {
    /// A stamp for a callback whose deferral began before this call: the clock now. The
    /// fence orders the caller's earlier stores (unpublishing the object) before the clock's
    /// load, so a collection for a value at or past the stamp is requested, and its grace
    /// period starts, after every reader that could reach the object had pinned.
    #[inline]
    pub(super) fn stamp(&self) -> u64 {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.clock.load(Ordering::SeqCst)
    }

    /// Appends `callback` to `queue` (the caller's own, or one claimed for this call only)
    /// and asks for a grace period when `request` is set or the queue holds
    /// [`BUFFER_CALLBACKS`](super::BUFFER_CALLBACKS) entries not yet covered by one.
    pub(super) fn push(
        &'static self,
        handle: &LocalHandle,
        queue: Option<&'static Queue>,
        callback: Callback,
        request: bool,
    ) {
        let stamp = self.stamp();
        let (queue, own) = match queue {
            Some(queue) => (queue, true),
            None => (self.queues.claim(), false),
        };
        // SAFETY: the calling thread owns `queue` (its own, or claimed just above).
        let unrequested = unsafe { queue.push(callback, stamp) };
        if !own {
            QueueList::release(queue);
            self.request(handle);
        } else if request || unrequested >= super::BUFFER_CALLBACKS {
            queue.requested();
            self.request(handle);
            self.run_own(queue);
        } else if unrequested == 1 {
            // A first entry: the hand-over thread asks for its grace period within a tick.
            self.kick();
        }
    }

    /// Moves the clock on and asks for a grace period; once it has passed, a collection marks
    /// every callback stamped before the move as expired (`safe`). Expired callbacks run on
    /// their own thread, at its next request, or on the hand-over thread when their thread
    /// leaves them for a tick ([`Generation::run_expired`]).
    pub(super) fn request(&'static self, handle: &LocalHandle) {
        let stamp = self.clock.fetch_add(1, Ordering::SeqCst);
        self.after_grace_period(handle, move |generation| {
            // Release: a thread that reads a value at or past `stamp` (acquire) runs the
            // callbacks after the grace period.
            generation.safe.fetch_max(stamp, Ordering::AcqRel);
        });
    }

    /// Whether a grace period requested after the clock moved past `stamp` has passed.
    #[inline]
    pub(super) fn expired(&self, stamp: u64) -> bool {
        self.safe.load(Ordering::Acquire) >= stamp
    }

    /// Runs the expired callbacks of `queue`, the calling thread's own: objects go back on
    /// the thread that freed them, as they would with no deferral. Skipped while the
    /// hand-over thread or a barrier runs the queue.
    #[inline]
    pub(super) fn run_own(&self, queue: &Queue) {
        if !queue.is_empty() {
            queue.consume(self.safe.load(Ordering::Acquire));
        }
    }

    /// The hand-over thread's share: runs every released queue's expired callbacks, and each
    /// owned queue's callbacks that were already expired at the previous tick (`stale`, the
    /// value of `safe` then), which the owner has left for a whole tick; returns `safe` now,
    /// for the next tick.
    pub(super) fn run_expired(&self, stale: u64) -> u64 {
        let safe = self.safe.load(Ordering::Acquire);
        for queue in self.queues.iter() {
            if !queue.is_empty() {
                queue.consume(if queue.is_owned() { stale } else { safe });
            }
        }
        safe
    }

    /// Runs `job` once a grace period that starts now has passed, counted in `in_flight`
    /// until then.
    fn after_grace_period(
        &'static self,
        handle: &LocalHandle,
        job: impl FnOnce(&'static Generation) + Send + 'static,
    ) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.kick();
        }
        let guard = handle.pin();
        // SAFETY: `job` is sound on any thread once the grace period has passed (each
        // callback's obligation), and the generation it touches is never freed.
        unsafe {
            guard.defer_unchecked(move || {
                job(self);
                self.in_flight.fetch_sub(1, Ordering::Release);
            });
        }
        guard.flush();
    }

    /// Runs every callback stamped `stamp` or before, in every queue but those another
    /// consumer is running (the barrier tries again until none is skipped); whether every
    /// queue was collected, and no callback of another consumer was still running.
    fn collect(&self, stamp: u64) -> bool {
        let mut all = true;
        for queue in self.queues.iter() {
            if !queue.is_settled() {
                all &= queue.consume(stamp);
            }
        }
        all
    }

    /// Whether a queue holds callbacks not yet run.
    pub(super) fn has_queued(&self) -> bool {
        self.queues.iter().any(|queue| !queue.is_empty())
    }

    /// Every callback deferred before this call has run when it returns `true`: it moves the
    /// clock on, waits (running expired callbacks) until a grace period requested then has
    /// passed, and runs the callbacks stamped before the move itself, on this thread. It
    /// waits for readers and for collections already running (which run callbacks), never
    /// for a thread that deferred, whatever that thread does. `false` if `deadline` passed
    /// first, or if this thread is inside a collection of a queue (a barrier called from a
    /// callback).
    pub(super) fn collect_all(&'static self, handle: &LocalHandle, deadline: Instant) -> bool {
        let stamp = self.clock.fetch_add(1, Ordering::SeqCst);
        let passed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&passed);
        self.after_grace_period(handle, move |generation| {
            generation.safe.fetch_max(stamp, Ordering::AcqRel);
            flag.store(true, Ordering::Release);
        });
        let expired = super::wait_until(deadline, || {
            passed.load(Ordering::Acquire) || {
                // Tries to advance the epoch and runs whatever has expired.
                handle.pin().flush();
                passed.load(Ordering::Acquire)
            }
        });
        // Again until every queue is reached: one is skipped while another collection runs
        // callbacks from it.
        #[cfg(test)]
        let _barrier = InBarrier::enter();
        expired && super::wait_until(deadline, || self.collect(stamp))
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: set while this thread runs a barrier's collection.
    static IN_BARRIER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Tests: set on the hand-over thread.
    pub(super) static IS_HANDOVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: whether the calling thread is the hand-over thread.
#[cfg(test)]
pub(super) fn is_handover() -> bool {
    IS_HANDOVER.with(std::cell::Cell::get)
}

/// Tests: marks the calling thread as running a barrier's collection until dropped.
#[cfg(test)]
struct InBarrier;

#[cfg(test)]
impl InBarrier {
    fn enter() -> Self {
        IN_BARRIER.with(|flag| flag.set(true));
        InBarrier
    }
}

#[cfg(test)]
impl Drop for InBarrier {
    fn drop(&mut self) {
        IN_BARRIER.with(|flag| flag.set(false));
    }
}

/// Tests: whether the calling thread is running a barrier's collection (which may run any
/// thread's callbacks).
#[cfg(test)]
pub(super) fn in_barrier() -> bool {
    IN_BARRIER.with(std::cell::Cell::get)
}
