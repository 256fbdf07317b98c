//! Read-side sections and deferred frees: the userspace rendering of RCU and `kfree_rcu`.
//!
//! A *reader* enters a read-side section with [`read`] and may dereference objects it finds
//! through shared pointers until the returned [`ReadGuard`] is dropped. A *writer* that
//! unpublishes an object hands it to [`ObjectAlloc::free_deferred`](crate::ObjectAlloc), which
//! must not reuse it until every section that was active at that moment has ended (C-DEFER-1).
//!
//! The grace periods come from a `crossbeam-epoch` [`Collector`] owned by this module: [`read`]
//! pins it, and every design defers on it through a [`Deferrer`]. Workloads written against
//! the trait are therefore correct on every design.
//!
//! # Where a deferred callback waits
//!
//! A callback deferred one at a time ([`Deferrer::defer_free`]) joins the calling thread's
//! *buffer*, which any thread can empty: it is handed to the collector (its grace period
//! starts) when the buffer holds [`BUFFER_CALLBACKS`], when any thread calls
//! [`Deferrer::barrier`], or at the latest one [`HANDOVER_TICK`] after it was deferred, by
//! the hand-over thread. A design that batches deferred objects itself (in sheaves) arms its
//! [`Deferrer`] ([`Deferrer::arm`]); while armed, the hand-over thread calls
//! [`DeferTarget::hand_over`] every tick. No callback waits for its own thread to run again.
//!
//! The hand-over thread is started by the first deferral of the process (a process that
//! never defers has none) and sleeps while nothing is buffered, armed, or waiting for its
//! grace period; while deferrals go on it wakes once per [`HANDOVER_TICK`]. It also runs
//! callbacks whose grace period has passed, so that memory deferred by threads that then go
//! idle is reused. Its cost: one thread with a 256 KiB stack, and while deferrals go on, 100
//! wake-ups a second, each taking every thread's buffer lock and, for each armed sheaf cache,
//! each CPU slot once.
//!
//! # Fork
//!
//! A child of a multithreaded process gets a fresh collector (a `pthread_atfork` handler,
//! installed with the first collector): in the child the parent's other threads no longer
//! exist, and one of them pinned at the fork would stop every grace period for ever. The
//! parent's collector, buffers and hand-over thread are abandoned in the child, never
//! touched again; callbacks pending at the fork are lost to the child (their objects stay
//! counted as live, and are never reused) and no longer count in [`Deferrer::pending`].
//!
//! # Pending count
//!
//! A [`Deferrer`] owns a design's shared state in an `Arc`; each deferred callback holds a
//! clone, so the state outlives every pending callback even if the cache is dropped first, and
//! the number of pending callbacks (counting those announced by a [`Reservation`]) is the
//! `Arc`'s count less the owner's, less the clones a fork left behind in callbacks that never
//! run in the child (counted once, by the first use of the deferrer in the child).

use std::cell::{RefCell, UnsafeCell};
use std::mem::{self, ManuallyDrop};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_epoch::{self as epoch, Collector, LocalHandle};

/// The longest a deferred callback waits before its grace period starts, when neither its
/// buffer fills nor a barrier comes first (plus the time the hand-over thread takes to be
/// scheduled and, for a design that batches in sheaves, to take each CPU slot, which an
/// operation holds only for its own length).
pub const HANDOVER_TICK: Duration = Duration::from_millis(10);

/// Callbacks a thread's buffer holds before the thread hands them to the collector itself.
pub const BUFFER_CALLBACKS: usize = 64;

/// Collector hand-overs driven per tick of the hand-over thread (each runs at most a few
/// expired batches).
const COLLECTS_PER_TICK: usize = 4;

// ----- the collector and its generations ------------------------------------------------------

/// One collector's lifetime: from the first use (or a fork) to the next fork. Never freed: the
/// parent's threads registered in it may have died mid-operation in a child, so it must never
/// be dropped, only abandoned.
struct Generation {
    id: u32,
    collector: Collector,
    /// Every live thread's buffer.
    buffers: Mutex<Vec<Arc<Buffer>>>,
    /// Batches handed to the collector whose callbacks have not run yet.
    in_flight: AtomicUsize,
    monitor: Monitor,
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
fn current() -> &'static Generation {
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
fn with_thread<R>(f: impl FnOnce(&'static Generation, &LocalHandle, Option<&Buffer>) -> R) -> R {
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

// ----- buffers ---------------------------------------------------------------------------------

/// A deferred callback, type-erased: `run(self)` calls the design's function and releases
/// the state and the pending count.
struct Callback {
    run: unsafe fn(Callback),
    inner: *const (),
    payload: NonNull<()>,
    f: *const (),
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
struct Buffer {
    locked: AtomicBool,
    callbacks: UnsafeCell<Vec<Callback>>,
}

// SAFETY: `callbacks` is only reached through a `BufferGuard`, of which there is one at a
// time (the `locked` flag, acquired and released with the matching orderings).
unsafe impl Sync for Buffer {}

/// Exclusive access to a [`Buffer`]'s callbacks.
struct BufferGuard<'a>(&'a Buffer);

impl Buffer {
    #[inline]
    fn try_lock(&self) -> Option<BufferGuard<'_>> {
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

    fn take(&self) -> Vec<Callback> {
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
fn hand_over_batch(generation: &'static Generation, handle: &LocalHandle, batch: Vec<Callback>) {
    hand_over(generation, handle, move || {
        for callback in batch {
            // SAFETY: each callback runs once, after its grace period.
            unsafe { (callback.run)(callback) };
        }
    });
}

fn hand_over(
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
    fn hand_over_buffers(&'static self, handle: &LocalHandle) -> bool {
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

// ----- the hand-over thread --------------------------------------------------------------------

#[derive(Default)]
struct Monitor {
    state: Mutex<MonitorState>,
    wake: Condvar,
    /// Set while the thread is between ticks (it will tick again); read by deferrals to
    /// decide whether to wake it.
    awake: AtomicBool,
}

#[derive(Default)]
struct MonitorState {
    started: bool,
    work: bool,
    armed: Vec<Weak<dyn Armed>>,
}

impl Generation {
    fn monitor_state(&self) -> MutexGuard<'_, MonitorState> {
        self.monitor.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something was buffered, armed or handed over: wakes (or starts) the hand-over thread
    /// unless it is awake.
    fn kick(&'static self) {
        // Pairs with the fence of a thread going idle: either it sees what the caller did,
        // or the caller sees it idle.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.monitor.awake.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.monitor_state();
        state.work = true;
        if state.started {
            self.monitor.wake.notify_one();
            return;
        }
        state.started = true;
        self.monitor.awake.store(true, Ordering::SeqCst);
        // If the thread cannot be started, callbacks still start their grace period when a
        // buffer fills or a barrier runs.
        let _ = std::thread::Builder::new()
            .name("rcu-hand-over".into())
            // It runs deferred callbacks (design code, page sources), nothing deeper.
            .stack_size(256 << 10)
            .spawn(move || self.monitor_loop());
    }

    fn monitor_loop(&'static self) {
        let handle = self.collector.register();
        loop {
            {
                let mut state = self.monitor_state();
                while !state.work {
                    state = self
                        .monitor
                        .wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                state.work = false;
                self.monitor.awake.store(true, Ordering::SeqCst);
            }
            loop {
                std::thread::sleep(HANDOVER_TICK);
                if self.tick(&handle) {
                    continue;
                }
                // Going idle: deferrals from now on see it and wake the thread; one more look
                // catches those that did not.
                self.monitor.awake.store(false, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if !self.tick(&handle) {
                    break;
                }
                self.monitor.awake.store(true, Ordering::SeqCst);
            }
        }
    }

    /// One tick: hands every buffer and every armed deferrer's batches to the collector and
    /// runs expired callbacks; whether anything is left to do.
    fn tick(&'static self, handle: &LocalHandle) -> bool {
        let mut busy = self.hand_over_buffers(handle);
        let armed = mem::take(&mut self.monitor_state().armed);
        let mut keep = Vec::with_capacity(armed.len());
        for entry in armed {
            if let Some(deferrer) = entry.upgrade()
                && deferrer.tick(self.id)
            {
                keep.push(entry);
            }
        }
        if !keep.is_empty() {
            busy = true;
            self.monitor_state().armed.extend(keep);
        }
        for _ in 0..COLLECTS_PER_TICK {
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            handle.pin().flush();
        }
        busy || self.in_flight.load(Ordering::Acquire) != 0
    }
}

/// A deferrer the hand-over thread calls every tick while it is armed.
trait Armed: Send + Sync {
    /// Hands the design's batches over; whether it stays armed.
    fn tick(self: Arc<Self>, generation: u32) -> bool;
}

// ----- readers -----------------------------------------------------------------------------------

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
        guard: with_thread(|_, handle, _| handle.pin()),
    }
}

/// Hands the calling thread's buffered callbacks to the collector (their grace period
/// starts), and runs those whose grace period has passed.
pub fn flush() {
    with_thread(|generation, handle, buffer| {
        if let Some(buffer) = buffer {
            let batch = buffer.take();
            if !batch.is_empty() {
                hand_over_batch(generation, handle, batch);
            }
        }
        handle.pin().flush();
    });
}

// ----- deferrers ---------------------------------------------------------------------------------

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
    /// by the hand-over thread once per [`HANDOVER_TICK`] while the deferrer is armed
    /// ([`Deferrer::arm`]), never after [`Deferrer::close`]. The default holds no batches.
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
    #[inline]
    fn add(&self, generation: u32) {
        let current = self.0.load(Ordering::Relaxed);
        if (current >> 32) as u32 == generation {
            // Within one process the tag never leaves the current generation.
            self.0.fetch_add(1, Ordering::SeqCst);
            return;
        }
        self.add_retagged(generation);
    }

    #[cold]
    fn add_retagged(&self, generation: u32) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = if (current >> 32) as u32 == generation {
                current + 1
            } else {
                (u64::from(generation) << 32) | 1
            };
            match self
                .0
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
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
/// Callbacks not yet run are counted by the `Arc`'s strong count (each holds a clone, as
/// does each reservation), less the owner's and less `lost`: the clones held by callbacks
/// that a fork left behind, which never run in this process.
#[derive(Debug)]
struct Inner<T> {
    target: T,
    /// Clones of the `Arc` that will never be dropped in this process (see `seen`).
    lost: AtomicUsize,
    /// The generation `lost` is valid for, shifted left by one; the low bit is set while a
    /// thread of that generation sets `lost`.
    seen: AtomicU64,
    /// The generation this deferrer is armed in (0: none).
    armed: AtomicU32,
    /// Set by [`Deferrer::close`]: the hand-over thread calls it no more.
    closed: AtomicBool,
    /// Hand-over thread calls in progress.
    busy: GenCount,
}

impl<T> Inner<T> {
    /// Brings `lost` up to date with `generation`: before any callback or reservation is
    /// made in a generation, and before the pending count is read.
    #[inline]
    fn sync(self: &Arc<Self>, generation: u32) {
        if self.seen.load(Ordering::Acquire) != u64::from(generation) << 1 {
            self.sync_slow(generation);
        }
    }

    #[cold]
    fn sync_slow(self: &Arc<Self>, generation: u32) {
        let done = u64::from(generation) << 1;
        loop {
            let seen = self.seen.load(Ordering::Acquire);
            if seen == done {
                return;
            }
            // An update marked by an older generation was cut short by a fork: taken over.
            if seen != done | 1
                && self
                    .seen
                    .compare_exchange(seen, done | 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // First in this generation (a child after a fork): every clone but the
                // owner's is held by a callback or reservation of the parent, which never
                // runs or is dropped here. No new one is made until `seen` is stored.
                self.lost
                    .store(Arc::strong_count(self) - 1, Ordering::Relaxed);
                self.seen.store(done, Ordering::Release);
                return;
            }
            std::thread::yield_now();
        }
    }
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
                lost: AtomicUsize::new(0),
                seen: AtomicU64::new(u64::from(current().id) << 1),
                armed: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                busy: GenCount::default(),
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
    /// callback waits in the calling thread's buffer at most [`HANDOVER_TICK`] before its
    /// grace period starts.
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
    /// callback joins the calling thread's buffer (see [`Deferrer::defer_free`]); with it,
    /// its grace period starts at once (use it for whole batches, where the cost of a
    /// hand-over is shared by many objects).
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
        self.inner.sync(current().id);
        Reservation {
            inner: Arc::clone(&self.inner),
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
        let callback = reservation.into_callback(payload, f);
        // Without a buffer, when handing over at once, or while another thread empties the
        // buffer: a hand-over of its own.
        with_thread(|generation, handle, buffer| {
            match buffer.filter(|_| !flush).and_then(Buffer::try_lock) {
                Some(mut callbacks) => {
                    let was_empty = callbacks.is_empty();
                    callbacks.push(callback);
                    if callbacks.len() >= BUFFER_CALLBACKS {
                        let batch =
                            mem::replace(&mut *callbacks, Vec::with_capacity(BUFFER_CALLBACKS));
                        drop(callbacks);
                        hand_over_batch(generation, handle, batch);
                    } else {
                        drop(callbacks);
                        if was_empty {
                            generation.kick();
                        }
                    }
                }
                _ => hand_over(generation, handle, move || {
                    // SAFETY: runs once, after the grace period.
                    unsafe { (callback.run)(callback) }
                }),
            }
        });
    }

    /// Arms this deferrer: the hand-over thread calls [`DeferTarget::hand_over`] every
    /// [`HANDOVER_TICK`] until a call finds nothing. Call it when a batch is started (its
    /// first object gathered); cheap when already armed.
    #[inline]
    pub fn arm(&self) {
        let generation = current();
        if self.inner.armed.load(Ordering::Relaxed) != generation.id {
            self.arm_slow(generation);
        }
    }

    #[cold]
    fn arm_slow(&self, generation: &'static Generation) {
        // Before the hand-over thread can hold a clone in this generation.
        self.inner.sync(generation.id);
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

    /// Deferred callbacks not yet run (in this process: those pending at a fork are lost to
    /// the child and not counted there).
    pub fn pending(&self) -> usize {
        self.inner.sync(current().id);
        // The hand-over thread's calls hold a clone for their length; they do not count.
        let views = self.inner.busy.get(current().id);
        (Arc::strong_count(&self.inner) - 1)
            .saturating_sub(self.inner.lost.load(Ordering::Relaxed) + views)
    }

    /// Whether nothing is pending; when so, what the callbacks did is visible to the caller.
    fn all_run(&self) -> bool {
        if self.pending() != 0 {
            return false;
        }
        // `strong_count` is a relaxed load: the fence pairs with the release decrement of each
        // callback's `Arc`.
        std::sync::atomic::fence(Ordering::Acquire);
        true
    }

    /// Waits until every deferred callback of this design has run (`rcu_barrier`).
    ///
    /// It hands every thread's buffered callbacks to the collector itself, so it waits only
    /// for read-side sections to end, never for another thread to defer, flush or exit
    /// (C-DEFER-3). Callbacks deferred while it waits are waited for too.
    pub fn barrier(&self) {
        while self.barrier_timeout(Duration::from_secs(1)).is_err() {}
    }

    /// [`Deferrer::barrier`] bounded by `timeout`; on time-out, the number still pending.
    pub fn barrier_timeout(&self, timeout: Duration) -> Result<(), usize> {
        let start = Instant::now();
        let mut handed_over: Option<Instant> = None;
        loop {
            if self.all_run() {
                return Ok(());
            }
            with_thread(|generation, handle, _| {
                // Every buffer, at the start and then once a millisecond: emptying them takes
                // each thread's buffer lock.
                if handed_over.is_none_or(|at| at.elapsed() >= Duration::from_millis(1)) {
                    generation.hand_over_buffers(handle);
                    handed_over = Some(Instant::now());
                }
                // Tries to advance the epoch and runs whatever has expired.
                handle.pin().flush();
            });
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
pub struct Reservation<T> {
    inner: Arc<Inner<T>>,
}

impl<T: DeferTarget> Reservation<T> {
    fn into_callback(self, payload: NonNull<()>, f: unsafe fn(&T, NonNull<()>)) -> Callback {
        unsafe fn run<T: DeferTarget>(callback: Callback) {
            // SAFETY: `inner` came from `Arc::into_raw` of an `Arc<Inner<T>>` in
            // `into_callback`, and `f` from an `unsafe fn(&T, NonNull<()>)`; each callback
            // runs once.
            let (inner, f) = unsafe {
                (
                    Arc::from_raw(callback.inner.cast::<Inner<T>>()),
                    mem::transmute::<*const (), unsafe fn(&T, NonNull<()>)>(callback.f),
                )
            };
            // SAFETY: the grace period has passed; the rest is `defer_with`'s caller's
            // obligation.
            unsafe { f(&inner.target, callback.payload) };
            // Dropping `inner` (a release decrement) ends the callback's count.
        }
        let inner = self.inner;
        Callback {
            run: run::<T>,
            inner: Arc::into_raw(inner).cast(),
            payload,
            f: f as *const (),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

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
            flush();
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

    /// A thread that defers and then blocks until the barrier returns: the barrier must not
    /// need it to run again (C-DEFER-3).
    fn barrier_with_a_blocked_deferrer(count: usize) -> Duration {
        let deferrer = Deferrer::new(Log::default());
        let (deferred_tx, deferred_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=count {
                    let object = NonNull::new((i * 16) as *mut u8).unwrap();
                    // SAFETY: tokens only recorded by `Log`.
                    unsafe { deferrer.defer_free(object) };
                }
                deferred_tx.send(()).unwrap();
                let release_rx = release_rx;
                // Blocked until the barrier has returned (or given up).
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
            });
            deferred_rx.recv().unwrap();
            let start = Instant::now();
            let result = deferrer.barrier_timeout(Duration::from_secs(2));
            let waited = start.elapsed();
            release_tx.send(()).unwrap();
            assert_eq!(result, Ok(()), "the barrier waited for a blocked thread");
            assert_eq!(deferrer.get().0.lock().unwrap().len(), count);
            waited
        })
    }

    #[test]
    fn barrier_does_not_wait_for_a_blocked_deferring_thread() {
        // Fewer callbacks than fill a buffer, and more.
        for count in [5, BUFFER_CALLBACKS + 5] {
            let waited = barrier_with_a_blocked_deferrer(count);
            eprintln!("barrier with {count} callbacks of a blocked thread: {waited:?}");
        }
    }

    #[test]
    fn callbacks_of_an_idle_thread_run_without_anyone_calling_in() {
        let deferrer = Deferrer::new(Log::default());
        let (deferred_tx, deferred_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=5 {
                    let object = NonNull::new((i * 16) as *mut u8).unwrap();
                    // SAFETY: tokens only recorded by `Log`.
                    unsafe { deferrer.defer_free(object) };
                }
                deferred_tx.send(Instant::now()).unwrap();
                let release_rx = release_rx;
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
            });
            let deferred_at = deferred_rx.recv().unwrap();
            // Nobody reads, defers, flushes or waits: only the hand-over thread acts.
            while deferrer.pending() != 0 && deferred_at.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let took = deferred_at.elapsed();
            release_tx.send(()).unwrap();
            eprintln!("callbacks of an idle thread ran after {took:?}");
            assert_eq!(deferrer.pending(), 0, "stranded in an idle thread's buffer");
            assert_eq!(deferrer.get().0.lock().unwrap().len(), 5);
        });
    }

    #[test]
    fn hand_over_thread_ticks_an_armed_deferrer_until_it_has_nothing() {
        #[derive(Default)]
        struct Batches {
            calls: AtomicUsize,
            left: AtomicUsize,
        }
        impl DeferTarget for Batches {
            unsafe fn free_now(&self, _: NonNull<u8>) {}
            fn hand_over(&self, _: &Deferrer<Self>) -> bool {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            }
        }
        let deferrer = Deferrer::new(Batches::default());
        deferrer.get().left.store(3, Ordering::SeqCst);
        deferrer.arm();
        let start = Instant::now();
        while deferrer.get().left.load(Ordering::SeqCst) != 0
            && start.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(deferrer.get().left.load(Ordering::SeqCst), 0);
        deferrer.close();
        let calls = deferrer.get().calls.load(Ordering::SeqCst);
        std::thread::sleep(HANDOVER_TICK * 5);
        assert_eq!(
            deferrer.get().calls.load(Ordering::SeqCst),
            calls,
            "called after close"
        );
    }

    /// Waits for `child` for up to `limit`; kills it after that. Its exit status, or `None`.
    fn wait_or_kill(child: libc::pid_t, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: `child` is our child process; `status` is a valid out-pointer.
            let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if done == child {
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if start.elapsed() > limit {
                // SAFETY: as above; the child is reaped after the kill.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, &mut status, 0);
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Counts its callbacks without a lock: a lock held by a parent thread at a fork would stay
    /// held in the child.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl DeferTarget for Count {
        unsafe fn free_now(&self, _: NonNull<u8>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn buffers_emptied_by_barriers_while_their_owners_defer_lose_and_repeat_nothing() {
        const PER_THREAD: usize = 20_000;
        let deferrer = Deferrer::new(Count::default());
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for i in 1..=PER_THREAD {
                        let object = NonNull::new((i * 16) as *mut u8).unwrap();
                        // SAFETY: tokens only counted by `Count`.
                        unsafe { deferrer.defer_free(object) };
                    }
                    done.fetch_add(1, Ordering::Release);
                });
            }
            // Empties both buffers again and again while their owners push.
            while done.load(Ordering::Acquire) < 2 {
                let _ = deferrer.barrier_timeout(Duration::from_millis(1));
            }
        });
        deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(deferrer.get().0.load(Ordering::Relaxed), 2 * PER_THREAD);
    }

    #[test]
    fn a_buffer_is_held_by_one_side_at_a_time() {
        const PUSHES: usize = 200_000;
        unsafe fn never(_: Callback) {}
        let buffer = Buffer::default();
        let (pushed, taken) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let owner_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..PUSHES {
                    if let Some(mut callbacks) = buffer.try_lock() {
                        callbacks.push(Callback {
                            run: never,
                            inner: ptr::null(),
                            payload: NonNull::dangling(),
                            f: ptr::null(),
                        });
                        pushed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                owner_done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                while !owner_done.load(Ordering::Acquire) {
                    taken.fetch_add(buffer.take().len(), Ordering::Relaxed);
                }
            });
        });
        let left = buffer.take().len();
        assert_eq!(
            taken.load(Ordering::Relaxed) + left,
            pushed.load(Ordering::Relaxed),
            "a push was lost or taken twice"
        );
    }

    #[test]
    fn a_forked_child_defers_and_barriers_while_parent_threads_were_pinned() {
        let deferrer = Deferrer::new(Count::default());
        let stop = AtomicBool::new(false);
        let (pinned_tx, pinned_rx) = mpsc::channel();
        std::thread::scope(|s| {
            // A reader pinned across the fork: it does not exist in the child.
            s.spawn(|| {
                let _reader = read();
                pinned_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            // Deferrers busy at the fork, in the middle of hand-overs.
            for t in 0..2_usize {
                let (deferrer, stop) = (&deferrer, &stop);
                s.spawn(move || {
                    let mut i = 1;
                    while !stop.load(Ordering::Relaxed) {
                        let object = NonNull::new(((t << 40) | (i * 16)) as *mut u8).unwrap();
                        // SAFETY: tokens only recorded by `Log`.
                        unsafe { deferrer.defer_free(object) };
                        i += 1;
                    }
                });
            }
            pinned_rx.recv().unwrap();
            // The forking thread has used the collector too.
            drop(read());
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..5 {
                // SAFETY: the child only runs the code below and leaves with `_exit`.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    let ok = std::panic::catch_unwind(|| {
                        let before = deferrer.get().0.load(Ordering::Relaxed);
                        for i in 1..=100 {
                            let object = NonNull::new((i * 16) as *mut u8).unwrap();
                            // SAFETY: tokens only recorded by `Log`.
                            unsafe { deferrer.defer_free(object) };
                        }
                        deferrer.barrier();
                        deferrer.pending() == 0
                            && deferrer.get().0.load(Ordering::Relaxed) == before + 100
                    });
                    // SAFETY: leaves the child at once, running nothing of the parent's.
                    unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
                }
                assert!(child > 0, "fork failed");
                let status = wait_or_kill(child, Duration::from_secs(5));
                assert_eq!(status, Some(0), "the child hung or failed after the fork");
            }
            stop.store(true, Ordering::Relaxed);
        });
        deferrer.barrier_timeout(Duration::from_secs(10)).unwrap();
    }
}
