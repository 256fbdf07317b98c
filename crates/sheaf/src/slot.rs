//! CPU slots: where each CPU (or, in the per-thread strategy, each thread) keeps its `main`,
//! `spare` and `rcu_free` sheaves, and how an operation finds and holds its slot.
//!
//! # Per-CPU slots ([`PerCpu`], the kernel's design)
//!
//! One slot per possible CPU, found by the CPU number read from glibc's rseq area (see
//! `slab::cpu`), and held with a try-lock: one atomic compare-exchange to take it, one plain release store to
//! give it back. The lock never spins. A thread that finds its slot held (another thread was
//! preempted on this CPU while holding it, or migrated here) takes the slow path straight to
//! the slabs, as the kernel's `local_trylock` users do. This is the userspace analog of
//! disabling preemption; restartable sequences would remove even the swap, and the slot code
//! is kept so that a future rseq critical section can replace `try_lock`/`unlock` alone.
//!
//! # Per-thread slots ([`PerThread`], for comparison)
//!
//! One slot per (thread, cache), created on the thread's first operation. Only its thread
//! ever touches it while the thread lives, so "holding" it is a plain load and store of a
//! busy flag that guards against re-entry on the same thread (a deferred callback run by the
//! epoch collector from inside an operation frees into the same cache). The slot is found
//! through a one-entry thread-local cache (cache id, slot pointer) with no destructor, so the
//! fast path is one thread-local load and a compare. When the thread exits, its slot is marked
//! orphaned; the cache adopts orphaned slots (flushes their sheaves) on its next slow path
//! that looks for objects, at `shrink`, at `barrier` and at drop (C-CONC-2). `shrink` and
//! `barrier` reach the calling thread's slot and orphaned slots only: another live thread's
//! sheaves belong to that thread until it exits. For the same reason a deferred free that
//! completes (the epoch collector runs it on whichever thread pins next) goes straight to the
//! slabs under this strategy instead of into a foreign thread's slot.
//!
//! # Invariants
//!
//! - A slot's sheaves are read or written only by the holder of its lock (per-CPU), or by its
//!   own thread with the busy flag set (per-thread), or by whoever adopts an orphaned slot (its
//!   thread has exited; adoption happens under the registry's mutex), or with exclusive access
//!   to the whole cache (drop).
//! - A slot's counters are written by the same parties only, and read by anyone (relaxed).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_utils::CachePadded;

use crate::sheaf::OwnedSheaf;
use crate::stats::Counters;
use crate::sync::AtomicBool;
use slab::cpu::{self, CpuSource};

mod sealed {
    pub trait Sealed {}
}

/// How an operation finds its CPU-local sheaves: a type parameter of
/// [`Cache`](crate::Cache), so both strategies share every line of the allocator and each
/// is compiled with its own fast path.
pub trait SlotStrategy: sealed::Sealed + Send + Sync + Sized + 'static + fmt::Debug {
    /// The allocator name of caches using this strategy (`"sheaf"`, `"sheaf-thread"`).
    const NAME: &'static str;
    /// One line that says what the strategy is.
    const DESCRIPTION: &'static str;
    #[doc(hidden)]
    const PER_CPU: bool;
}

/// One slot per CPU, found through rseq's `cpu_id` and held with a non-spinning try-lock:
/// the kernel's design (allocator name `sheaf`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerCpu;

/// One slot per thread, flushed when the thread exits (allocator name `sheaf-thread`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerThread;

impl sealed::Sealed for PerCpu {}
impl sealed::Sealed for PerThread {}

impl SlotStrategy for PerCpu {
    const NAME: &'static str = "sheaf";
    const DESCRIPTION: &'static str = "SLUB percpu sheaves: per-CPU main/spare/rcu_free sheaves (rseq cpu_id, try-lock), per-node barn, slabs";
    const PER_CPU: bool = true;
}

impl SlotStrategy for PerThread {
    const NAME: &'static str = "sheaf-thread";
    const DESCRIPTION: &'static str =
        "sheaves with per-thread slots instead of per-CPU ones (flushed when a thread exits)";
    const PER_CPU: bool = false;
}

/// The sheaves of one slot.
#[derive(Debug)]
pub(crate) struct SlotSheaves {
    /// Allocations pop from and frees push to this sheaf; the sentinel until first needed.
    pub(crate) main: OwnedSheaf,
    /// A second sheaf swapped with `main` when it runs empty or full.
    pub(crate) spare: Option<OwnedSheaf>,
    /// Collects `free_deferred` objects until it is full and submitted to a grace period.
    pub(crate) rcu_free: Option<OwnedSheaf>,
}

impl SlotSheaves {
    fn new() -> Self {
        Self {
            main: OwnedSheaf::none(),
            spare: None,
            rcu_free: None,
        }
    }
}

/// One CPU's (or thread's) slot.
pub(crate) struct CpuSlot {
    /// Per-CPU: the try-lock. Per-thread: the owner's busy flag.
    lock: AtomicBool,
    /// Per-thread: set by the owner when its thread exits.
    orphaned: std::sync::atomic::AtomicBool,
    sheaves: UnsafeCell<SlotSheaves>,
    /// Events counted by the slot's holder.
    pub(crate) counters: Counters,
    /// The memory node whose barn and partial slabs this slot uses.
    pub(crate) node: usize,
}

// SAFETY: `sheaves` is only accessed under the protocol of the module docs (lock holder,
// owner thread, adopter of an orphan, or exclusive owner of the cache); everything else is
// atomic.
unsafe impl Sync for CpuSlot {}
// SAFETY: the sheaves are `Send` (owned heap sheaves of free objects).
unsafe impl Send for CpuSlot {}

impl CpuSlot {
    pub(crate) fn new(node: usize) -> Self {
        Self {
            lock: AtomicBool::new(false),
            orphaned: std::sync::atomic::AtomicBool::new(false),
            sheaves: UnsafeCell::new(SlotSheaves::new()),
            counters: Counters::default(),
            node,
        }
    }

    /// Per-CPU: takes the lock if free; never waits. A compare-exchange rather than a swap:
    /// as cheap when it succeeds (one locked instruction), and a failed attempt writes
    /// nothing, so a thread bouncing off a held slot does not dirty its line.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Per-CPU: releases the lock.
    #[inline(always)]
    pub(crate) fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// Per-thread: sets the busy flag unless already set (re-entry on the owner thread).
    #[inline(always)]
    fn enter_owned(&self) -> bool {
        if self.lock.load(Ordering::Relaxed) {
            return false;
        }
        self.lock.store(true, Ordering::Relaxed);
        true
    }

    /// Per-thread: clears the busy flag.
    #[inline(always)]
    fn leave_owned(&self) {
        self.lock.store(false, Ordering::Relaxed);
    }

    /// The sheaves, for code that has exclusive access by the module's protocol.
    ///
    /// # Safety
    ///
    /// - The caller holds the slot (lock or busy flag), or has adopted it as an orphan, or has
    ///   exclusive access to the whole cache; and no other reference from this call is alive.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity comes from the slot protocol, not from `&mut`
    pub(crate) unsafe fn sheaves_mut(&self) -> &mut SlotSheaves {
        // SAFETY: exclusive by the caller's obligation.
        unsafe { &mut *self.sheaves.get() }
    }
}

impl fmt::Debug for CpuSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuSlot")
            .field("node", &self.node)
            .field("locked", &self.lock.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A held slot; releases it on drop.
pub(crate) struct SlotGuard<'a, S: SlotStrategy> {
    slot: &'a CpuSlot,
    _strategy: PhantomData<S>,
}

impl<'a, S: SlotStrategy> SlotGuard<'a, S> {
    /// The slot's sheaves.
    #[inline(always)]
    pub(crate) fn sheaves(&mut self) -> &mut SlotSheaves {
        // SAFETY: the guard holds the slot, and `&mut self` makes this the only reference
        // handed out through it.
        unsafe { self.slot.sheaves_mut() }
    }

    /// The slot's counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> &'a Counters {
        &self.slot.counters
    }

    /// The slot's node.
    #[inline(always)]
    pub(crate) fn node(&self) -> usize {
        self.slot.node
    }
}

impl<S: SlotStrategy> Drop for SlotGuard<'_, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if S::PER_CPU {
            self.slot.unlock();
        } else {
            self.slot.leave_owned();
        }
    }
}

impl<S: SlotStrategy> fmt::Debug for SlotGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotGuard").field(self.slot).finish()
    }
}

/// Per-thread slots of one cache, and the orphans of exited threads.
#[derive(Debug, Default)]
struct ThreadRegistry {
    slots: Mutex<Vec<Arc<CpuSlot>>>,
    orphans: AtomicUsize,
}

struct ThreadEntry {
    cache_id: u64,
    slot: Arc<CpuSlot>,
    registry: Weak<ThreadRegistry>,
}

/// The calling thread's per-thread slots, across caches.
struct ThreadSlots {
    entries: RefCell<Vec<ThreadEntry>>,
}

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        // Later thread-local destructors must not reach a slot through the one-entry cache.
        let _ = LAST_SLOT.try_with(|last| last.set((0, std::ptr::null())));
        for entry in self.entries.get_mut().drain(..) {
            if let Some(registry) = entry.registry.upgrade() {
                // Release: the adopter that sees the flag sees every write this thread made
                // to the slot.
                entry.slot.orphaned.store(true, Ordering::Release);
                registry.orphans.fetch_add(1, Ordering::Release);
            }
        }
    }
}

thread_local! {
    /// The last (cache id, slot) this thread used: the per-thread fast path's lookup. No
    /// destructor, so access is a plain thread-local load.
    static LAST_SLOT: Cell<(u64, *const CpuSlot)> = const { Cell::new((0, std::ptr::null())) };
    static THREAD_SLOTS: ThreadSlots = const { ThreadSlots { entries: RefCell::new(Vec::new()) } };
}

/// Every slot of one cache.
pub(crate) struct SlotTable<S: SlotStrategy> {
    /// Per-CPU slots, each padded to its own cache lines: the slot's lock and counters are
    /// written on every operation by the CPU that owns it, and other CPUs read them (stats)
    /// or take the lock (a thread that migrated, `shrink`); without padding, neighbouring
    /// CPUs' fast paths would bounce one line between them. 128 bytes on x86-64, because the
    /// adjacent-line prefetcher pulls lines in pairs.
    cpus: Box<[CachePadded<CpuSlot>]>,
    threads: Arc<ThreadRegistry>,
    cpu_source: CpuSource,
    cpu_nodes: Box<[usize]>,
    id: u64,
    _strategy: PhantomData<S>,
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Slots for a cache whose CPU `c` belongs to node `cpu_nodes[c]`.
    pub(crate) fn new(id: u64, cpu_nodes: Box<[usize]>) -> Self {
        let cpus = if S::PER_CPU {
            cpu_nodes
                .iter()
                .map(|&node| CachePadded::new(CpuSlot::new(node)))
                .collect()
        } else {
            Box::default()
        };
        Self {
            cpus,
            threads: Arc::default(),
            cpu_source: cpu::cpu_source(),
            cpu_nodes,
            id,
            _strategy: PhantomData,
        }
    }

    /// The node of the CPU the caller runs on.
    pub(crate) fn current_node(&self) -> usize {
        let cpu = cpu::current_cpu(self.cpu_source);
        self.cpu_nodes[cpu % self.cpu_nodes.len()]
    }

    /// Finds and holds the caller's slot; `None` when it is busy.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Option<SlotGuard<'_, S>> {
        let slot = if S::PER_CPU {
            let cpu = cpu::current_cpu(self.cpu_source);
            let slot = match self.cpus.get(cpu) {
                Some(slot) => slot,
                None => &self.cpus[cpu % self.cpus.len()],
            };
            if !slot.try_lock() {
                return None;
            }
            &**slot
        } else {
            let (id, slot) = LAST_SLOT.with(Cell::get);
            let slot = if id == self.id {
                // SAFETY: `LAST_SLOT` names a slot of this cache registered by this thread;
                // the registry keeps it alive until the thread has exited (then it is reset
                // above) or the cache is dropped (which `&self` rules out).
                unsafe { &*slot }
            } else {
                self.thread_slot_slow()?
            };
            if !slot.enter_owned() {
                return None;
            }
            slot
        };
        Some(SlotGuard {
            slot,
            _strategy: PhantomData,
        })
    }

    /// Per-thread: finds (or creates and registers) the calling thread's slot.
    #[cold]
    #[inline(never)]
    fn thread_slot_slow(&self) -> Option<&CpuSlot> {
        let slot = THREAD_SLOTS
            .try_with(|slots| {
                let mut entries = slots.entries.try_borrow_mut().ok()?;
                entries.retain(|entry| entry.registry.strong_count() > 0);
                if let Some(entry) = entries.iter().find(|entry| entry.cache_id == self.id) {
                    return Some(Arc::as_ptr(&entry.slot));
                }
                let slot = Arc::new(CpuSlot::new(self.current_node()));
                self.threads
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::clone(&slot));
                let raw = Arc::as_ptr(&slot);
                entries.push(ThreadEntry {
                    cache_id: self.id,
                    slot,
                    registry: Arc::downgrade(&self.threads),
                });
                Some(raw)
            })
            .ok()
            .flatten()?;
        LAST_SLOT.with(|last| last.set((self.id, slot)));
        // SAFETY: the registry holds the slot alive as long as the cache (`&self`).
        Some(unsafe { &*slot })
    }

    /// Runs `f` on every slot the caller can reach and hold: every CPU slot (waiting for
    /// each, yielding, since this is not a fast path), or the calling thread's slot and every
    /// orphaned one (adopting them).
    pub(crate) fn for_each_reachable(&self, mut f: impl FnMut(&mut SlotSheaves, &Counters, usize)) {
        if S::PER_CPU {
            for slot in self.cpus.iter() {
                while !slot.try_lock() {
                    std::thread::yield_now();
                }
                // SAFETY: we hold the slot's lock.
                f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
                slot.unlock();
            }
        } else {
            let own = LAST_SLOT.with(Cell::get);
            let own = if own.0 == self.id {
                Some(own.1)
            } else {
                THREAD_SLOTS
                    .try_with(|slots| {
                        let entries = slots.entries.try_borrow().ok()?;
                        let entry = entries.iter().find(|entry| entry.cache_id == self.id)?;
                        Some(Arc::as_ptr(&entry.slot))
                    })
                    .ok()
                    .flatten()
            };
            if let Some(own) = own {
                // SAFETY: the calling thread's own slot, alive while the cache is.
                let slot = unsafe { &*own };
                if slot.enter_owned() {
                    // SAFETY: we are its owner and set the busy flag.
                    f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
                    slot.leave_owned();
                }
            }
            self.adopt_orphans(&mut f);
        }
    }

    /// Whether exited threads left slots to adopt (one relaxed load).
    #[inline]
    pub(crate) fn has_orphans(&self) -> bool {
        !S::PER_CPU && self.threads.orphans.load(Ordering::Relaxed) != 0
    }

    /// Per-thread: runs `f` on each orphaned slot, then unregisters it. Its counters are
    /// passed to `f` so the caller can fold them into the shared block.
    pub(crate) fn adopt_orphans(&self, f: &mut impl FnMut(&mut SlotSheaves, &Counters, usize)) {
        if !self.has_orphans() {
            return;
        }
        let mut slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut adopted = 0;
        slots.retain(|slot| {
            if !slot.orphaned.load(Ordering::Acquire) {
                return true;
            }
            // SAFETY: the owner thread has exited (Acquire pairs with its Release store), and
            // adoption runs under the registry mutex, so no one else touches the slot.
            f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
            adopted += 1;
            false
        });
        self.threads.orphans.fetch_sub(adopted, Ordering::Relaxed);
    }

    /// Runs `f` on every slot of every CPU or thread.
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, and none will start one during the
    ///   call (the cache is being dropped).
    pub(crate) unsafe fn for_each_exclusive(&self, mut f: impl FnMut(&mut SlotSheaves)) {
        for slot in self.cpus.iter() {
            // SAFETY: exclusive access by the caller's obligation.
            f(unsafe { slot.sheaves_mut() });
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.iter() {
            // SAFETY: as above; a live thread that once used the cache keeps only an `Arc`
            // to the slot and never touches its sheaves again.
            f(unsafe { slot.sheaves_mut() });
        }
    }

    /// Adds every slot's counters to `totals`.
    pub(crate) fn sum_counters(&self, totals: &mut [u64; crate::stats::Stat::ALL.len()]) {
        for slot in self.cpus.iter() {
            slot.counters.sum_into(totals);
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.iter() {
            slot.counters.sum_into(totals);
        }
    }

    /// Number of slots (CPUs, or threads registered and not yet adopted).
    pub(crate) fn len(&self) -> usize {
        if S::PER_CPU {
            self.cpus.len()
        } else {
            self.threads.slots.lock().map_or(0, |slots| slots.len())
        }
    }

    /// Per-thread: whether every registered slot is the caller's or an orphan, so that
    /// [`SlotTable::for_each_reachable`] sees every cached object.
    pub(crate) fn all_reachable(&self) -> bool {
        if S::PER_CPU {
            return true;
        }
        let own = LAST_SLOT.with(Cell::get);
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().all(|slot| {
            slot.orphaned.load(Ordering::Acquire)
                || (own.0 == self.id && std::ptr::eq(Arc::as_ptr(slot), own.1))
        })
    }
}

impl<S: SlotStrategy> fmt::Debug for SlotTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("strategy", &S::NAME)
            .field("slots", &self.len())
            .field("cpu_source", &self.cpu_source)
            .finish()
    }
}
