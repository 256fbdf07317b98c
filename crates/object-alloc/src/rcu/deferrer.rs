//! Deferrers: a design's gate to deferred callbacks, and the pending count a barrier waits on.

use std::mem;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::generation::{Generation, current, with_thread};
use super::handover::Armed;
use super::queue::Callback;

/// A design's shared state that deferred callbacks act on.
pub trait DeferTarget: Send + Sync + 'static {
    /// Frees `object` for real; called once its grace period has passed.
    ///
    /// # Safety
    ///
    /// - `object` was passed to a `defer_free` of a [`Deferrer`] that owns this state.
    /// - Every read-side section that could see it has ended.
    unsafe fn free_now(&self, object: NonNull<u8>);

    /// For a design that gathers deferred objects in batches of its own: hands every batch
    /// it holds to a grace period through `deferrer`, and says whether there was any. Called
    /// by the hand-over thread once per [`HANDOVER_TICK`](super::HANDOVER_TICK) while the
    /// deferrer is armed ([`Deferrer::arm`]), never after [`Deferrer::close`]. The default
    /// holds no batches.
    fn hand_over(&self, deferrer: &Deferrer<Self>) -> bool
    where
        Self: Sized,
    {
        let _ = deferrer;
        false
    }
}

/// A count tagged with the generation it counts in: a count of an older generation reads as
/// zero, and callbacks of an older generation do not change the current one.
#[derive(Debug, Default)]
struct GenCount(AtomicU64);

impl GenCount {
    /// Adds one in `generation`; whether the count was zero there before.
    #[inline]
    fn add(&self, generation: u32) -> bool {
        let current = self.0.load(Ordering::Relaxed);
        if (current >> 32) as u32 == generation {
            // Within one process the tag never leaves the current generation.
            let before = self.0.fetch_add(1, Ordering::SeqCst);
            return before & u64::from(u32::MAX) == 0;
        }
        self.add_retagged(generation)
    }

    #[cold]
    fn add_retagged(&self, generation: u32) -> bool {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (next, was_zero) = if (current >> 32) as u32 == generation {
                (current + 1, current & u64::from(u32::MAX) == 0)
            } else {
                ((u64::from(generation) << 32) | 1, true)
            };
            match self
                .0
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return was_zero,
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes `n` away from a count that holds at least `n` in the current generation;
    /// whether it reached zero.
    #[inline]
    fn sub_current(&self, n: usize) -> bool {
        // Release: a reader of zero (with an acquire fence) sees what the callbacks did.
        let before = self.0.fetch_sub(n as u64, Ordering::Release);
        before & u64::from(u32::MAX) == n as u64
    }

    /// Undoes an `add(generation)`; `current` is the current generation's id.
    #[inline]
    fn sub(&self, generation: u32, current: u32) {
        if generation == current {
            // Release: a reader of zero (with an acquire fence) sees what the callback did.
            self.0.fetch_sub(1, Ordering::Release);
        }
    }

    #[inline]
    fn get(&self, current: u32) -> usize {
        let value = self.0.load(Ordering::SeqCst);
        if (value >> 32) as u32 == current {
            (value & u64::from(u32::MAX)) as usize
        } else {
            0
        }
    }
}

/// What a [`Deferrer`] shares with its callbacks and the hand-over thread.
///
/// Callbacks not yet run are counted in `queued`, and reservations in `reserved`: both are
/// tagged with the generation, so those a fork left behind (which never run in the child)
/// read as zero there. While `queued` is above zero in the current generation, the callbacks
/// together hold one reference to the `Arc` (taken by the deferral that raised it from zero,
/// given back by the release that brings it there), so the state outlives every pending
/// callback even if its owner is dropped first; a consumer gives back the counts of a run of
/// one design's callbacks with one atomic operation.
#[derive(Debug)]
struct Inner<T> {
    target: T,
    /// The generation this deferrer is armed in (0: none).
    armed: AtomicU32,
    /// Set by [`Deferrer::close`]: the hand-over thread calls it no more.
    closed: AtomicBool,
    /// Hand-over thread calls in progress.
    busy: GenCount,
    /// Reservations taken and not yet turned into a queued callback (or dropped).
    reserved: GenCount,
    /// Callbacks queued and not yet run (and released).
    queued: GenCount,
}

impl<T: DeferTarget> Armed for Inner<T> {
    fn tick(self: Arc<Self>, generation: u32) -> bool {
        self.busy.add(generation);
        if self.closed.load(Ordering::SeqCst) {
            self.busy.sub(generation, generation);
            return false;
        }
        let deferrer = Deferrer {
            inner: self,
            owner: false,
        };
        let target = &deferrer.inner.target;
        let keep = target.hand_over(&deferrer) || {
            // Disarmed before one more look: a batch started after this look re-arms.
            deferrer.inner.armed.store(0, Ordering::SeqCst);
            target.hand_over(&deferrer);
            false
        };
        deferrer.inner.busy.sub(generation, generation);
        keep
    }
}

/// Owner of a design's shared state `T`, and the gate through which it defers work.
#[derive(Debug)]
pub struct Deferrer<T: DeferTarget> {
    inner: Arc<Inner<T>>,
    /// False for the hand-over thread's temporary views.
    owner: bool,
}

impl<T: DeferTarget> Deferrer<T> {
    /// Takes ownership of `shared`.
    pub fn new(shared: T) -> Self {
        Self {
            inner: Arc::new(Inner {
                target: shared,
                armed: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                busy: GenCount::default(),
                reserved: GenCount::default(),
                queued: GenCount::default(),
            }),
            owner: true,
        }
    }

    /// The shared state.
    #[inline]
    pub fn get(&self) -> &T {
        &self.inner.target
    }

    /// Defers one object: [`DeferTarget::free_now`] runs on it after a grace period. The
    /// callback waits in the calling thread's queue at most
    /// [`HANDOVER_TICK`](super::HANDOVER_TICK) before its grace period starts.
    ///
    /// # Safety
    ///
    /// - `object` is a live object of this design, and no one uses it after the grace period
    ///   except through `free_now`.
    #[inline]
    pub unsafe fn defer_free(&self, object: NonNull<u8>) {
        unsafe fn free<T: DeferTarget>(shared: &T, object: NonNull<()>) {
            // SAFETY: forwarded from `defer_free`'s caller.
            unsafe { shared.free_now(object.cast()) }
        }
        // SAFETY: the caller hands `object` over; `free_now`'s contract is the caller's.
        unsafe { self.defer_with(object.cast(), free::<T>, false) }
    }

    /// Defers `f(shared, payload)` until a grace period has passed. Without `flush`, the
    /// callback joins the calling thread's queue and its grace period starts when the queue
    /// holds [`BUFFER_CALLBACKS`](super::BUFFER_CALLBACKS) callbacks not yet covered by one,
    /// at a barrier, or at the hand-over thread's next tick; with it, its grace period starts
    /// at once (use it for whole batches, where the cost of asking for a grace period is
    /// shared by many objects).
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
        let callback = make_callback(&self.inner, payload, f);
        with_thread(|generation, handle, queue| generation.push(handle, queue, callback, flush));
    }

    /// Announces a callback before its payload is gathered: from now until the callback that
    /// [`Deferrer::defer_reserved`] makes of it has run (or until it is dropped unused), it
    /// counts in [`Deferrer::pending`], and a concurrent [`Deferrer::barrier`] waits until
    /// the callback is queued (then it runs it like any other).
    /// Take one *before* taking work out of where a barrier would look for it.
    #[inline]
    pub fn reserve(&self) -> Reservation<T> {
        let generation = current().id;
        self.inner.reserved.add(generation);
        Reservation {
            inner: Arc::clone(&self.inner),
            generation,
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
        debug_assert!(Arc::ptr_eq(&reservation.inner, &self.inner));
        let generation = reservation.generation;
        let callback = make_callback(&reservation.into_inner(), payload, f);
        with_thread(|current, handle, queue| current.push(handle, queue, callback, flush));
        // Queued (stamped before this): a barrier that reads no reservation after this finds
        // the callback with a stamp it collects.
        self.inner.reserved.sub(generation, current().id);
    }

    /// Arms this deferrer: the hand-over thread calls [`DeferTarget::hand_over`] every
    /// [`HANDOVER_TICK`](super::HANDOVER_TICK) until a call finds nothing. Call it when a
    /// batch is started (its first object gathered); cheap when already armed.
    #[inline]
    pub fn arm(&self) {
        let generation = current();
        if self.inner.armed.load(Ordering::Relaxed) != generation.id {
            self.arm_slow(generation);
        }
    }

    #[cold]
    fn arm_slow(&self, generation: &'static Generation) {
        if self.inner.armed.swap(generation.id, Ordering::SeqCst) == generation.id {
            return;
        }
        let weak: Weak<dyn Armed> = Arc::downgrade(&self.inner) as Weak<Inner<T>>;
        generation.monitor_state().armed.push(weak);
        generation.kick();
    }

    /// Stops the hand-over thread from calling [`DeferTarget::hand_over`], waiting for a
    /// call in progress. The owner calls it before tearing its batches down; dropping the
    /// deferrer does it too.
    pub fn close(&self) {
        let generation = current().id;
        self.inner.closed.store(true, Ordering::SeqCst);
        while self.inner.busy.get(generation) != 0 {
            std::thread::yield_now();
        }
    }

    /// Deferred callbacks not yet run, and reservations not yet used (in this process: those
    /// pending at a fork are lost to the child and not counted there).
    pub fn pending(&self) -> usize {
        let generation = current().id;
        self.inner.queued.get(generation) + self.inner.reserved.get(generation)
    }

    /// Whether nothing is pending; when so, what the callbacks did is visible to the caller.
    fn all_run(&self) -> bool {
        if self.pending() != 0 {
            return false;
        }
        // The fence pairs with the release decrement of each callback's count.
        std::sync::atomic::fence(Ordering::Acquire);
        true
    }

    /// Waits until every callback of this design deferred before the call has run
    /// (`rcu_barrier`).
    ///
    /// It moves the stamping clock on, waits for a grace period, and runs every queued
    /// callback stamped before the move itself, whichever thread queued it: it waits for
    /// read-side sections to end and for collections already running callbacks, never for
    /// another thread to defer, flush, run or exit (C-DEFER-3). Callbacks deferred while it
    /// waits are not waited for, so it returns while other threads go on deferring. What it
    /// still waits for: a [`Reservation`] taken before it, until the reserving thread queues
    /// its callback.
    ///
    /// Must not be called inside a read-side section (it would wait for itself), nor from a
    /// deferred callback (the collection running that callback holds its queue).
    pub fn barrier(&self) {
        while self.barrier_timeout(Duration::from_secs(1)).is_err() {}
    }

    /// [`Deferrer::barrier`] bounded by `timeout`; on time-out, the number still pending.
    pub fn barrier_timeout(&self, timeout: Duration) -> Result<(), usize> {
        let deadline = Instant::now() + timeout;
        let done = super::wait_until(deadline, || {
            if self.all_run() {
                return true;
            }
            // Read before the clock moves: reservations not seen here were queued before it,
            // with a stamp that the collection below covers.
            let reserved = self.inner.reserved.get(current().id);
            let collected =
                with_thread(|generation, handle, _| generation.collect_all(handle, deadline));
            collected && reserved == 0
        });
        if !done {
            return Err(self.pending());
        }
        // Pairs with the release of the queue flags, of the grace period's flag and of each
        // callback's `Arc`: what the callbacks did is visible to the caller.
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }
}

/// A type-erased callback that runs `f(&inner.target, payload)`, counted in `queued` until
/// its consumer releases it.
fn make_callback<T: DeferTarget>(
    inner: &Arc<Inner<T>>,
    payload: NonNull<()>,
    f: unsafe fn(&T, NonNull<()>),
) -> Callback {
    unsafe fn run<T: DeferTarget>(callback: &Callback) {
        // SAFETY: `inner` is an `Inner<T>` that this callback's count keeps alive until it is
        // released (after this call), and `f` came from an `unsafe fn(&T, NonNull<()>)`;
        // each callback runs once.
        let (inner, f) = unsafe {
            (
                &*callback.inner.cast::<Inner<T>>(),
                mem::transmute::<*const (), unsafe fn(&T, NonNull<()>)>(callback.f),
            )
        };
        // SAFETY: the grace period has passed; the rest is `defer_with`'s caller's
        // obligation.
        unsafe { f(&inner.target, callback.payload) };
    }
    unsafe fn release<T: DeferTarget>(inner: *const (), n: usize) {
        // SAFETY: the consumer releases `n` callbacks of this `Inner<T>`, each counted once in
        // `queued`, which keeps the state alive while above zero.
        let state = unsafe { &*inner.cast::<Inner<T>>() };
        if state.queued.sub_current(n) {
            // SAFETY: the reference taken when `queued` left zero (`make_callback`); the
            // count of the deferral that raises it again takes its own.
            unsafe { Arc::decrement_strong_count(inner.cast::<Inner<T>>()) };
        }
    }
    if inner.queued.add(current().id) {
        // The callbacks' reference. The caller holds one (the owner's, a view's or a
        // reservation's), so the state is alive while it is taken.
        // SAFETY: `inner` is a live `Arc`.
        unsafe { Arc::increment_strong_count(Arc::as_ptr(inner)) };
    }
    Callback {
        run: run::<T>,
        release: release::<T>,
        inner: Arc::as_ptr(inner).cast(),
        payload,
        f: f as *const (),
    }
}

impl<T: DeferTarget> Drop for Deferrer<T> {
    fn drop(&mut self) {
        if self.owner {
            self.close();
        }
    }
}

/// A deferred callback announced ahead of its payload (see [`Deferrer::reserve`]).
#[derive(Debug)]
#[must_use = "a reservation counts as pending until it is used or dropped"]
pub struct Reservation<T: DeferTarget> {
    inner: Arc<Inner<T>>,
    /// The generation its count was taken in.
    generation: u32,
}

impl<T: DeferTarget> Reservation<T> {
    /// The state, for the callback; the count in `reserved` is the caller's to undo.
    fn into_inner(self) -> Arc<Inner<T>> {
        let this = mem::ManuallyDrop::new(self);
        // SAFETY: read once from a value that is never dropped.
        unsafe { std::ptr::read(&this.inner) }
    }
}

impl<T: DeferTarget> Drop for Reservation<T> {
    fn drop(&mut self) {
        // Unused: nothing will be queued for it.
        self.inner.reserved.sub(self.generation, current().id);
    }
}
