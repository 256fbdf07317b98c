//! [`Cache`]: the untyped, `kmem_cache`-like public face of the allocator.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use object_alloc::rcu::{Deferrer, Reservation};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, CacheConfig, Capabilities, ChangeReport, ConfigError,
    LimitChange, ObjectAlloc,
};

use crate::cache_core::CacheCore;
use crate::cache_core::PrefilledSheaf;
use crate::sheaf::{MAX_CAPACITY, OwnedSheaf};
use crate::slot::{CpuSequences, PerCpu, SlotStrategy};

/// A cache of fixed-size objects: per-CPU (or per-thread) sheaves over a per-node barn over
/// slabs. The Linux SLUB percpu-sheaves design, in userspace.
///
/// `S` picks how an operation finds its CPU-local sheaves: [`PerCpu`] (the default, allocator
/// name `sheaf`) or [`PerThread`](crate::PerThread) (`sheaf-thread`).
///
/// ```
/// use object_alloc::{AllocFlags, CacheConfig};
/// use sheaf::Cache;
///
/// let cache: Cache = Cache::new(&CacheConfig::new(64))?;
/// let object = cache.alloc(AllocFlags::ZERO).expect("memory");
/// // SAFETY: 64 writable bytes that belong to us.
/// unsafe { object.as_ptr().write(7) };
/// // SAFETY: allocated by this cache, live, not used afterwards.
/// unsafe { cache.free(object) };
/// assert_eq!(cache.stats().live_objects, Some(0));
/// # Ok::<(), object_alloc::ConfigError>(())
/// ```
pub struct Cache<S: SlotStrategy = PerCpu> {
    deferrer: Deferrer<CacheCore<S>>,
    /// A copy of the per-CPU table's pop and push sequences (`None` for per-thread slots and
    /// where there are no restartable sequences), which `alloc` and `free` read from here
    /// rather than from the shared state. The shared state holds atomics and locks, so a
    /// compiler must read its fields again after every sequence (an `asm!` block may write
    /// any memory it can reach); this `Cache`'s own fields never change, so a caller's loop
    /// may keep them in registers. In `churn-lifo`'s loop a per-CPU alloc+free pair is 41
    /// instructions with the copy and 53 without (`docs/decisions.md`).
    sequences: Option<CpuSequences>,
}

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl<S: SlotStrategy> Cache<S> {
    /// The allocator name: `"sheaf"` for [`PerCpu`], `"sheaf-thread"` for
    /// [`PerThread`](crate::PerThread).
    pub const NAME: &'static str = S::NAME;

    /// Creates a cache; refuses an invalid configuration with an error naming the field
    /// (C-CONF-1), so that no accepted geometry puts an object outside its slab (C-CONF-3).
    pub fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let capacity = config.effective_sheaf_capacity();
        if capacity > MAX_CAPACITY {
            return Err(ConfigError::new(
                "sheaf_capacity",
                capacity,
                format!("at most {MAX_CAPACITY}"),
            ));
        }
        let id = NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed);
        let deferrer = Deferrer::new(CacheCore::new(config, id)?);
        let sequences = deferrer.get().slots().cpu_sequences();
        let cache = Self {
            deferrer,
            sequences,
        };
        #[cfg(not(loom))]
        // SAFETY: the shared state stays where the deferrer put it (behind an `Arc`) until it
        // is dropped, and its `drop` unregisters it first.
        unsafe {
            slab::fork::register(cache.core())
        };
        Ok(cache)
    }

    #[inline(always)]
    pub(crate) fn core(&self) -> &CacheCore<S> {
        self.deferrer.get()
    }

    /// Objects per sheaf made from now on (0: the cache has no sheaves). After a run-time
    /// change ([`Cache::set_sheaf_capacity`]) sheaves of an earlier capacity may still be in
    /// use for a while.
    pub fn sheaf_capacity(&self) -> usize {
        self.core().capacity()
    }

    /// The barn limits `(max_full, max_empty)`, per node.
    pub fn barn_limits(&self) -> (usize, usize) {
        self.core().barn_limits()
    }

    /// Changes the sheaf capacity while the cache is in use (C-CONF-4): sheaves made or
    /// refilled from now on hold `capacity` objects. `capacity` is `1..=`
    /// [`MAX_SHEAF_CAPACITY`](object_alloc::MAX_SHEAF_CAPACITY); 0 is refused, as is any
    /// change of a cache created with capacity 0: sheaves are not switched off or on while a
    /// cache runs.
    ///
    /// Nothing stops and nothing is flushed: each sheaf keeps the capacity it was made with
    /// (the fast paths read it from the sheaf), an empty sheaf of the old capacity is freed
    /// when a slow path meets it, a non-empty one serves until it runs empty, and a sheaf
    /// out on [`prefill`](Cache::prefill) keeps its capacity, and its guarantee, until it
    /// is returned, when it is resized. The barn may hold full sheaves of both capacities
    /// meanwhile, and hands them out alike. With
    /// [`CacheConfig::resize_by_flush`] the change instead waits for the deferred frees
    /// ([`Cache::barrier`]) and flushes every CPU slot's sheaves and the barns to the slabs
    /// first (the `stats` counter `resize_flushed` counts the objects); a slot that an
    /// operation holds for longer than the flush tries it, as for [`Cache::shrink`], keeps
    /// its sheaves, which are then of the old capacity and dealt with as without the option.
    ///
    /// ```
    /// use object_alloc::{AllocFlags, CacheConfig};
    /// use sheaf::Cache;
    ///
    /// let cache: Cache = Cache::new(&CacheConfig::new(64).with_sheaf_capacity(32))?;
    /// let mut reserve = cache.prefill(AllocFlags::empty(), 20)?;
    /// cache.set_sheaf_capacity(8)?;
    /// assert_eq!(cache.sheaf_capacity(), 8);
    /// // The loan keeps its capacity and its objects.
    /// assert!(reserve.size() >= 20 && reserve.capacity() == 32);
    /// let object = reserve.alloc(AllocFlags::empty()).unwrap();
    /// drop(reserve);
    /// // SAFETY: allocated by this cache, live, not used afterwards.
    /// unsafe { cache.free(object) };
    /// assert!(cache.set_sheaf_capacity(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_sheaf_capacity(&self, capacity: usize) -> Result<ChangeReport, ConfigError> {
        self.change_limits(&LimitChange {
            sheaf_capacity: Some(capacity),
            ..LimitChange::default()
        })
    }

    /// Changes the barn limits while the cache is in use (C-CONF-4), each up to
    /// [`MAX_BARN_LIMIT`](object_alloc::MAX_BARN_LIMIT): they hold at once, and the sheaves
    /// beyond lowered limits are flushed to the slabs and freed (counted in the report and in
    /// `resize_flushed`). Refused for a cache created with capacity 0. With
    /// [`CacheConfig::resize_by_flush`] every sheaf is flushed first, as for
    /// [`Cache::set_sheaf_capacity`].
    pub fn set_barn_limits(
        &self,
        max_full: usize,
        max_empty: usize,
    ) -> Result<ChangeReport, ConfigError> {
        self.change_limits(&LimitChange {
            sheaf_capacity: None,
            barn_max_full: Some(max_full),
            barn_max_empty: Some(max_empty),
        })
    }

    /// [`Cache::set_sheaf_capacity`] and [`Cache::set_barn_limits`] in one change; fields
    /// left `None` keep their value. Changes are serialised; one that is refused changes
    /// nothing.
    pub fn change_limits(&self, change: &LimitChange) -> Result<ChangeReport, ConfigError> {
        change.validate()?;
        let core = self.core();
        let _serial = core.lock_resizing();
        let mut flushed = core.apply_change(change)?;
        if core.resize_by_flush() && change.first_field().is_some() {
            // The kernel RFC's sequence: wait for the deferred frees, flush everything, go on
            // with the new values (already in place, so nothing refilled meanwhile is of the
            // old capacity for long).
            self.barrier();
            flushed += core.flush_everything();
        }
        Ok(crate::cache_core::change_report(flushed))
    }

    /// Bytes of every object.
    pub fn object_size(&self) -> usize {
        self.core().object_size()
    }

    /// The page source the cache's slabs come from.
    pub fn page_source(&self) -> &std::sync::Arc<dyn object_alloc::PageSource> {
        self.core().pool().page_source()
    }

    /// Allocates one object: `None` when memory cannot be had (with `NOWAIT`: without growing
    /// the cache). With `ZERO` the object reads as zeroes.
    #[inline]
    pub fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        // SAFETY: `sequences` is the copy made from this cache's table at `new`.
        unsafe { self.core().alloc_via(self.sequences, flags) }
    }

    /// [`Cache::alloc`]'s fast path alone: an object popped from the calling CPU's `main`
    /// sheaf in one restartable sequence, or `None`, having done nothing, wherever
    /// [`Cache::alloc`] would take a lock or call out (an empty sheaf, a held slot, per-thread
    /// slots, no restartable sequences). It takes no lock, allocates nothing and calls no page
    /// source, so a caller may use it where re-entering the cache's slow paths is not allowed
    /// (an allocator front-end serving its own nested requests), and then go elsewhere.
    #[inline]
    pub fn alloc_fast(&self) -> Option<NonNull<u8>> {
        // SAFETY: `sequences` is the copy made from this cache's table at `new`.
        unsafe { self.core().alloc_fast_via(self.sequences) }
    }

    /// [`Cache::free`]'s fast path alone: pushes `object` onto the calling CPU's `main` sheaf
    /// in one restartable sequence, or gives it back (`Err`), having done nothing, wherever
    /// [`Cache::free`] would take a lock or call out. As [`Cache::alloc_fast`], it takes no
    /// lock, allocates nothing and calls no page source.
    ///
    /// # Safety
    ///
    /// As [`Cache::free`]; on `Err` the object is still the caller's.
    #[inline]
    pub unsafe fn free_fast(&self, object: NonNull<u8>) -> Result<(), NonNull<u8>> {
        // SAFETY: forwarded; `sequences` is the copy made from this cache's table at `new`.
        unsafe { self.core().free_fast_via(self.sequences, object) }
    }

    /// Frees one object, on any thread.
    ///
    /// # Safety
    ///
    /// - `object` was allocated by this cache and is live (not freed since).
    /// - Nothing uses it after this call.
    #[inline]
    pub unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded; `sequences` is the copy made from this cache's table at `new`.
        unsafe { self.core().free_via(self.sequences, object) }
    }

    /// Fills every slot of `out` with a distinct object, or fails having allocated nothing
    /// (C-BULK-1). Served from the CPU's sheaves first.
    pub fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        self.core().alloc_bulk(flags, out)
    }

    /// Frees objects from any mix of slabs and threads (C-BULK-2), into the CPU's sheaves
    /// first.
    ///
    /// # Safety
    ///
    /// - Each object was allocated by this cache, is live, and appears once.
    /// - Nothing uses them after this call.
    pub unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        // SAFETY: forwarded.
        unsafe { self.core().free_bulk(objects) }
    }

    /// Frees `object` once every read-side section ([`object_alloc::rcu::read`]) active now
    /// has ended (C-DEFER-1): `kfree_rcu`.
    ///
    /// With batching on (the default), the object joins the CPU's `rcu_free` sheaf. Full
    /// sheaves wait on the CPU slot until four of them can be handed to one grace period
    /// together (one crossbeam hand-over costs about as much as filling a sheaf); after it
    /// each is recycled into the barn as a full sheaf. [`Cache::barrier`] and
    /// [`Cache::shrink`] hand over the waiting and partly filled ones at once.
    /// When no sheaf can be used (the CPU slot is busy, or the cache has no sheaves, or
    /// [`CacheConfig::deferred_batching`] is off) the object is deferred on its own, one
    /// callback per object.
    ///
    /// The grace period starts at most [`HANDOVER_TICK`] (10 ms) after this call even if
    /// the calling thread and its CPU then go idle (C-DEFER-3): while the cache has
    /// `rcu_free` sheaves in its slots, the process's hand-over thread (started by the
    /// first deferral) takes them every tick, and takes every thread's per-object
    /// callbacks likewise. Add the time that thread needs to be scheduled and to take each
    /// CPU slot's `rcu_free` lock (held for a few instructions at a time, and with
    /// restartable sequences never by the deferring threads, see [`Cache::barrier`]). With
    /// [`PerThread`](crate::PerThread) slots, the sheaves of a live thread are taken while it
    /// sleeps in the kernel; a thread that keeps running hands them over at its next
    /// operation on the cache, or when it exits.
    ///
    /// [`HANDOVER_TICK`]: object_alloc::rcu::HANDOVER_TICK
    ///
    /// # Safety
    ///
    /// - `object` was allocated by this cache and is live.
    /// - No new reference to it is published after this call.
    #[inline]
    pub unsafe fn free_deferred(&self, object: NonNull<u8>) {
        let core = self.core();
        if !core.batching() {
            core.counters()
                .add_shared(crate::stats::Stat::DeferredObjects, 1);
            // SAFETY: the caller hands the live object over.
            unsafe { self.deferrer.defer_free(object) };
            return;
        }
        if let Some(object) = core.push_deferred(object, || self.deferrer.arm()) {
            // SAFETY: the caller hands the live object over.
            unsafe { self.deferrer.defer_free(object) };
        }
    }

    /// Hands `rcu_free` sheaves (what a drop took) to one grace period.
    #[inline(never)]
    fn submit(&self, group: Vec<OwnedSheaf>) {
        submit_rcu_sheaves(&self.deferrer, self.deferrer.reserve(), group);
    }

    /// Borrows a sheaf holding at least `count` objects (C-PREFILL-1..8): the first `count`
    /// allocations from it cannot fail.
    ///
    /// As in the kernel, it takes the CPU's spare sheaf (else a barn sheaf, else a new one)
    /// and tops it up only if it holds fewer than `count`, from the CPU's own objects first.
    /// A `count` above the sheaf capacity gets a dedicated sheaf of `count` objects, never
    /// cached (C-PREFILL-5). On failure nothing is kept (C-PREFILL-6). A top-up that needs a
    /// new slab lets the CPU slot go before it calls the page source, and then takes what is
    /// missing from the slabs alone, so a page source that sleeps holds up no other thread on
    /// that CPU (C-CONC-4); [`PrefilledSheaf::refill`] tops up the same way.
    ///
    /// ```
    /// use object_alloc::{AllocFlags, CacheConfig};
    /// use sheaf::Cache;
    ///
    /// let cache: Cache = Cache::new(&CacheConfig::new(128))?;
    /// // Reserve the worst case before a section that must not fail.
    /// let mut sheaf = cache.prefill(AllocFlags::empty(), 13)?;
    /// assert!(sheaf.size() >= 13);
    /// let mut used = Vec::new();
    /// for _ in 0..3 {
    ///     // Cannot fail: the sheaf holds the objects already.
    ///     used.push(sheaf.alloc(AllocFlags::ZERO).unwrap());
    /// }
    /// // Need more after all? Top up in place.
    /// sheaf.refill(AllocFlags::empty(), 20)?;
    /// assert!(sheaf.size() >= 20);
    /// // Give the rest back (dropping the handle does the same with empty flags).
    /// sheaf.return_with(AllocFlags::NOWAIT);
    /// for object in used {
    ///     // SAFETY: allocated from this cache, live, not used afterwards.
    ///     unsafe { cache.free(object) };
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefill(
        &self,
        flags: AllocFlags,
        count: usize,
    ) -> Result<PrefilledSheaf<'_, S>, AllocError> {
        let sheaf = self.core().prefill(flags, count)?;
        Ok(PrefilledSheaf::new(self.core(), sheaf))
    }

    /// Seals every partly filled `rcu_free` sheaf and waits until every deferred free made
    /// before the call has completed (`rcu_barrier`, C-DEFER-2).
    ///
    /// It waits for read-side sections to end and for nothing else: it hands every slot's
    /// sheaves to a grace period itself, and once a grace period has passed recycles them and
    /// runs every thread's queued per-object callbacks on its own thread, so it returns
    /// whatever the threads that freed the objects are doing (running, idle, blocked, or
    /// waiting for the caller; C-DEFER-3). Deferred frees made after it began are
    /// not waited for: it returns while other threads go on deferring.
    ///
    /// Must not be called inside a read-side section: it would wait for itself.
    ///
    /// Where restartable sequences are in use, a slot's deferred-free sheaves (a CPU's, or
    /// with [`PerThread`](crate::PerThread) a thread's) never leave it before their grace
    /// period has passed: the sheaf being filled is sealed when the next one starts, sealed
    /// sheaves are stamped, and once a stamp has expired the sheaves behind it are recycled by
    /// whoever holds the slot's `detach` lock (the deferring thread, the hand-over thread,
    /// `shrink`, a barrier). The barrier seals the sheaf being filled itself, from afar (its
    /// membarrier aborts a deferred free in flight: on that CPU, or on every CPU for a
    /// thread's slot), stamps every sealed sheaf, waits for a grace period, and recycles
    /// them. So it completes the deferred frees of every thread, running, asleep or exited,
    /// and neither takes a slot's main lock nor waits for a thread descheduled anywhere in a
    /// deferred free or a slow path; it waits only for a `detach` holder, which holds it for
    /// a few list operations, or while it recycles expired sheaves into the barn (never
    /// across a call to the page source). Where no sequence serves (the compare-exchange
    /// lock: valgrind, kernels before 5.10, `SHEAF_RSEQ=0`; or a thread without an rseq area
    /// of its own), deferred frees take no sheaf and no lock: each is deferred on its own, so
    /// nothing there is waited for. With a slot holder, or a deferring thread, parked
    /// indefinitely, barriers returned in microseconds to tens of milliseconds on a loaded
    /// machine, grace period included (`docs/decisions.md`).
    pub fn barrier(&self) {
        if !S::PER_CPU {
            // Exited threads' slots: their chains move to the orphan chain, their `main` and
            // `spare` go back to the slabs.
            self.core().adopt_orphans(false);
        }
        self.core().barrier_chains(|| self.deferrer.barrier());
    }

    /// Returns every cached sheaf (CPU slots, barn) and every empty slab to the page source;
    /// partly filled `rcu_free` sheaves are sealed and handed to a grace period (not waited
    /// for: call [`Cache::barrier`] first to reach a quiescent point). After all objects are
    /// freed, a barrier and a shrink, the cache holds no page (C-OBJ-5).
    ///
    /// The deferred-free sheaves are sealed and stamped first, as [`Cache::barrier`] does,
    /// and those whose grace period has passed recycled; the rest are recycled within a grace
    /// period and a hand-over tick, by the hand-over thread if no one else (a `detach` lock
    /// found held is left to its holder).
    ///
    /// With [`PerThread`](crate::PerThread) slots, the `main` and `spare` sheaves reached are
    /// the calling thread's, those of exited threads and those of live threads asleep in the
    /// kernel (blocked on a lock, a channel, a sleep, I/O), which are then not inside an
    /// operation; a running thread gets a drain request and hands them over at its next
    /// operation on the cache, for the next shrink. An exited thread's slot that another thread (the
    /// hand-over thread included) is adopting has its sheaves on their way to the slabs: the
    /// shrink waits for that adoption for up to 20 ms (shared with the slot visits below),
    /// then leaves them to the adopter, for the next shrink. No thread is waited for beyond
    /// that.
    ///
    /// With [`PerCpu`](crate::PerCpu) slots, the `main` and `spare` sheaves are taken under
    /// each slot's main lock. A slot
    /// whose lock is held (its holder is inside an operation: running, preempted, stopped, or
    /// the calling thread itself, when a page source shrinks the cache that called it) is
    /// tried again for up to 20 ms in all, and then left as it is, for the next shrink: no
    /// thread is waited for beyond that. Inside a page source call a held slot is tried once.
    pub fn shrink(&self) {
        if !S::PER_CPU {
            // Exited threads' slots first, as in `barrier`.
            self.core().adopt_orphans(false);
        }
        // Sealed and stamped, and what has expired completed; the rest completes within a
        // grace period and a tick, by the hand-over thread if no one else.
        let (left, stamped) = self.core().visit_chains(false, true);
        if stamped {
            object_alloc::rcu::request();
        }
        if left {
            self.deferrer.arm();
        }
        self.core().shrink();
    }

    /// A snapshot of the cache's gauges and counters.
    ///
    /// Gauges: `live_objects` (handed out and not freed; objects held in an outstanding
    /// prefilled sheaf and deferred objects waiting for their grace period count as live),
    /// `cached_objects` (free objects in CPU sheaves and the barn), `slab_bytes`.
    ///
    /// Counters, named after the kernel's stat items: `alloc_fastpath`, `alloc_slowpath`,
    /// `free_fastpath`, `free_slowpath` (per object), `free_rcu_sheaf`, `free_rcu_sheaf_fail`,
    /// `sheaf_flush`, `sheaf_refill`, `sheaf_alloc`, `sheaf_free`, `barn_get`,
    /// `barn_get_fail`, `barn_put`, `barn_put_fail`, `barn_lock_contended`,
    /// `sheaf_prefill_fast`, `sheaf_prefill_slow`, `sheaf_prefill_oversize`,
    /// `sheaf_return_fast`, `sheaf_return_slow`, `alloc_slab`, `free_slab`; for deferred frees
    /// `deferred_objects`, `rcu_sheaf_submitted`, `rcu_sheaf_recycled`, `rcu_sheaf_flushed`,
    /// `rcu_objects_completed`, and with [`CacheConfig::rcu_hold_ticks`](object_alloc::CacheConfig)
    /// `rcu_sheaf_held` (recycled sheaves held beyond the barn limit), `rcu_sheaf_held_used`
    /// (those that then served a taker), `rcu_sheaf_held_aged` (those flushed unused, also
    /// counted in `rcu_sheaf_flushed`) and the gauge `barn_held_sheaves`; and `prefill_reserved`, `prefill_unused`, `cpu_slot_busy`; for
    /// run-time changes `sheaf_retired` (sheaves of an earlier capacity freed or resized) and
    /// `resize_flushed` (objects flushed because of a change); with
    /// [`PerThread`](crate::PerThread) slots also `slot_drained` (owners that handed every
    /// sheaf of their slot over because a `shrink` or an accounting check found them running;
    /// a request from `barrier` or the hand-over thread moves only `rcu_free` sheaves and is
    /// not counted).
    ///
    /// Two gauges sit among the counters so that barn limits can be checked (C-RETURN-3):
    /// `barn_full_sheaves` and `barn_empty_sheaves`, the sheaves held by all barns now; and
    /// `slabs`, the slabs held now.
    pub fn stats(&self) -> AllocStats {
        self.core().stats()
    }

    /// Verifies the cache's accounting (see [`implementation`](crate::implementation): every
    /// object the slabs count in use is live or cached in a sheaf) and the slabs' own
    /// invariants; panics with the figures if either fails. Call it at a quiescent point (no
    /// operation in flight, no deferred free pending, e.g. after [`Cache::barrier`]).
    ///
    /// Returns whether the equation was checked: with [`PerThread`](crate::PerThread) slots
    /// the sheaves of other live threads are counted when their threads sleep in the kernel
    /// (blocked on a lock, a channel, a sleep, I/O); while one of them runs, it cannot be
    /// told from outside whether that thread is inside an operation, and only the slabs'
    /// invariants are checked (`false`). With [`PerCpu`](crate::PerCpu) slots, likewise when
    /// a CPU slot stays held (its holder is inside an operation, or descheduled there) for
    /// the 20 ms the check tries it, as [`Cache::shrink`] does; called from the cache's own
    /// page source it returns `false` at once if the calling thread holds a slot. An exited
    /// thread's slot being adopted by another thread (the hand-over thread included) holds
    /// objects that are in no sheaf and not yet in the slabs: the check waits for that
    /// adoption within the same 20 ms, and returns `false` if it has not ended (the adopter
    /// is descheduled, or blocked in the page source). It waits for no thread beyond that. In a child process the objects lost at the fork with
    /// the other threads (counted in the child's fork handler) are a term of the equation; it
    /// is not checked (`false`) in a child forked from inside a page source, where that count
    /// is unknown.
    pub fn check_invariants(&self) -> bool {
        self.core().check_accounting()
    }

    /// Deferred callbacks not yet run.
    pub fn pending_deferred(&self) -> usize {
        self.deferrer.pending()
    }
}

/// Hands `rcu_free` sheaves (what a dropped cache's slots held) to one grace period;
/// afterwards each is recycled or flushed. `reservation` was taken before the sheaves were
/// taken out of the slots, as `Deferrer::reserve` asks of any design that takes a batch out
/// of where a barrier looks (with `&mut` access here, no barrier can run meanwhile).
fn submit_rcu_sheaves<S: SlotStrategy>(
    deferrer: &Deferrer<CacheCore<S>>,
    reservation: Reservation<CacheCore<S>>,
    group: Vec<OwnedSheaf>,
) {
    if group.is_empty() {
        return;
    }
    unsafe fn after_grace_period<S: SlotStrategy>(core: &CacheCore<S>, payload: NonNull<()>) {
        // SAFETY: `payload` is the boxed group passed to `defer_reserved` below, owned by
        // this callback alone, and the grace period has passed.
        let group = unsafe { Box::from_raw(payload.cast::<Vec<OwnedSheaf>>().as_ptr()) };
        for sheaf in *group {
            core.recycle_rcu_sheaf(sheaf);
        }
    }
    let payload = NonNull::from(Box::leak(Box::new(group))).cast::<()>();
    // SAFETY: the callback takes sole ownership of the group and its sheaves; their objects
    // are deferred frees of this cache, reusable once every reader active now has left, which
    // is when the callback runs. The `Deferrer` keeps the shared state alive until then.
    unsafe { deferrer.defer_reserved(reservation, payload, after_grace_period::<S>, true) };
}

impl<S: SlotStrategy> Drop for Cache<S> {
    fn drop(&mut self) {
        // Deferred objects must outlive their readers: submit what the slots still hold; the
        // shared state (and its pages) lives on until the last callback has run.
        // The hand-over thread takes sheaves out of the slots too: stopped first.
        self.deferrer.close();
        // SAFETY: `&mut self` means no thread is inside an operation on this cache, and the
        // hand-over thread no longer calls in.
        let rcu = unsafe { self.core().take_rcu_sheaves_exclusive() };
        self.submit(rcu);
    }
}

impl<S: SlotStrategy> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &S::NAME)
            .field("core", self.core())
            .finish()
    }
}

impl<S: SlotStrategy> ObjectAlloc for Cache<S> {
    const NAME: &'static str = S::NAME;
    const DESCRIPTION: &'static str = S::DESCRIPTION;
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: true,
        honours_nowait: true,
        uses_page_source: true,
        tracks_live_objects: true,
        sheaf_layer: true,
    };

    type Prefill<'a> = PrefilledSheaf<'a, S>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        Cache::new(config)
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        Cache::alloc(self, flags)
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe { Cache::free(self, object) }
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        Cache::alloc_bulk(self, flags, out)
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        // SAFETY: forwarded.
        unsafe { Cache::free_bulk(self, objects) }
    }

    #[inline]
    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe { Cache::free_deferred(self, object) }
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        Cache::prefill(self, flags, count)
    }

    fn barrier(&self) {
        Cache::barrier(self)
    }

    fn shrink(&self) {
        Cache::shrink(self)
    }

    fn stats(&self) -> AllocStats {
        Cache::stats(self)
    }

    const LIMIT_CHANGES: bool = true;

    fn change_limits(&self, change: &LimitChange) -> Result<ChangeReport, ConfigError> {
        Cache::change_limits(self, change)
    }
}
