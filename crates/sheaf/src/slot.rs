//! CPU slots: where each CPU (or, in the per-thread strategy, each thread) keeps its `main`,
//! `spare` and `rcu_free` sheaves, and how an operation finds and holds its slot.
//!
//! # Per-CPU slots ([`PerCpu`], the kernel's design)
//!
//! One slot per possible CPU, found by the CPU number read from glibc's rseq area (see
//! `slab::cpu`), and held with a try-lock that never spins. A thread that finds its slot
//! held (another thread was preempted on this CPU while holding it, or migrated away holding
//! it) takes the slow path straight to the slabs, as the kernel's `local_trylock` users do.
//! This is the userspace analog of disabling preemption. The lock is taken in one of two
//! ways, chosen once per process ([`LockKind`]):
//!
//! - a restartable sequence on the slot's CPU (`slab::rseq`): a plain load and a plain store
//!   that the kernel aborts if the thread is preempted or migrates in between, so no locked
//!   instruction. Paths that visit every slot (`shrink`, `barrier`) take other CPUs' locks
//!   with a compare-exchange and an rseq membarrier to that CPU, as does a thread that has
//!   no rseq area of its own;
//! - a compare-exchange (one locked instruction), where restartable sequences are not
//!   available (valgrind, kernels before 5.10, other architectures, `SHEAF_RSEQ=0`).
//!
//! Either way the release is a plain release store, and everything between acquisition and
//! release is ordinary code under a lock.
//!
//! A path that visits every CPU slot waits for each one's lock, including one that its own
//! thread holds further up the stack. So `shrink`, `barrier` and `check_invariants` of a
//! per-CPU cache must not be called from code that runs inside an operation of that same
//! cache, such as its page source: they would wait forever. (Per-thread visits skip the
//! held slot. Tracking held CPU slots in a thread-local would lift this; it was tried, and
//! cost 2.8-3.5% more instructions on every bulk allocation and free.)
//!
//! # Per-thread slots ([`PerThread`], for comparison)
//!
//! One slot per (thread, cache), created on the thread's first operation. Only its thread
//! ever touches it while the thread lives. The slot is found through a one-entry
//! thread-local cache `(id, slot)` with no destructor, which doubles as the re-entry guard
//! (code run from inside an operation, such as a page source, may call into a cache again on
//! the same thread):
//!
//! - `id` is a cache's id: `slot` is that cache's slot for this thread, and this thread holds
//!   no slot.
//! - `id` is 0 and `slot` is not null: this thread *holds* `slot`, and every attempt to find
//!   a slot on this thread (of any cache) fails and takes the path that needs no slot, as a
//!   busy per-CPU slot does. Holds therefore never nest.
//! - `id` is 0 and `slot` is null: nothing cached, nothing held.
//! - `id` is [`REVOKED`]: a taker asked for `slot` (see below); the next lookup takes the
//!   slow path.
//!
//! The fast paths (pop or push on `main`, take or give back the spare for a prefill) compare
//! `id` with the cache's id and use the slot without marking it held: they call no code that
//! could re-enter, so nothing can observe the slot in use ([`FastSlot`]). Before anything that
//! may call out (the barn, the slabs, the page source), a path marks the slot held by storing
//! 0 into `id` ([`FastSlot::hold`]), and the release stores the id back: the fast path costs
//! one thread-local load and a compare, and writes no flag. A miss (another cache was used
//! last) looks the slot up in the thread's list, creating it on the cache's first use, and
//! leaves it in the thread-local. When the thread exits, its slot is marked
//! orphaned; the cache adopts orphaned slots (flushes their sheaves) on its next slow path
//! that looks for objects, at `shrink`, at `barrier` and at drop (C-CONC-2).
//!
//! ## Reaching other live threads' slots
//!
//! `shrink`, `barrier` and the accounting check reach every live thread's slot too
//! (C-CONC-4), without waiting for its owner ([`SlotTable::take_remote`]). Since the fast path
//! writes no flag, whether an owner is between operations is decided from outside, and a
//! fourth thread-local state exists: `id` is [`REVOKED`], a value no cache has, stored by a
//! *taker* (another thread) so that the owner's next operation takes the lookup's slow path.
//! A taker:
//!
//! 1. takes the slot's `lock` byte (`REMOTE`; per-thread slots use it for takers only), which
//!    the owner's lookup slow path checks after publishing its id ([`LastSlot::claim`]: a
//!    swap and a load, sequentially consistent against the taker's compare-exchange and
//!    read, so one of the two sees the other) and which the owner's exit waits for;
//! 2. revokes the owner's `id` if it names this cache (a compare-exchange): from then on
//!    the owner's operations find the slot busy and go to the slabs, as with a busy CPU slot;
//!    if `id` marks this slot held, the owner is inside a slow path and is not taken;
//! 3. reads the owner's scheduling state from `/proc/self/task/<tid>/stat`: only a thread
//!    asleep in the kernel (`S`: blocked on a lock, a channel, a sleep, I/O) is taken. Fast
//!    paths make no system call, so such a thread is not inside one. A running, runnable,
//!    stopped (`T`) or uninterruptible (`D`) thread may be, and is not waited for;
//! 4. reads `id` again (an owner that was inside a fast path at step 2 may have gone on to
//!    hold the slot and sleep inside a slow path), and then empties the slot under its lock.
//!
//! An owner that cannot be taken gets a drain request (`drain`) and its `id` revoked; its
//! next operation on the cache (or the release of the slow path it is in, which looks at the
//! request after a swap of `id`) moves the slot's sheaves out to the cache's registry, where
//! the next adoption (a slow path looking for objects, `shrink`, `barrier`, the accounting
//! check) flushes them or submits their `rcu_free` sheaves. So `shrink` and `barrier` reach
//! at once every thread that is asleep, exited or the caller; a thread that is running when
//! they look is reached at its next operation, by the next `shrink` or `barrier`; and
//! neither waits for any thread to run. The accounting check counts every slot it reaches
//! and checks the equation only when it reached them all.
//!
//! Assumption behind step 3: a signal handler that interrupts an operation of a per-thread
//! cache neither calls into that cache (which the one-entry cache already rules out) nor
//! sleeps in the kernel before it returns. A per-thread slot's owner pays nothing on its fast
//! path for any of this: a marker store at the start and the end of each fast path (the
//! alternative, which would let a taker use `membarrier` instead of `/proc`) costs two
//! instructions per operation: an alloc+free pair of 28 instructions in a bare loop under
//! callgrind becomes 32.
//!
//! A deferred free that completes (the epoch collector runs it on whichever thread pins
//! next) goes straight to the slabs under this strategy instead of into a foreign thread's
//! slot.
//!
//! # fork
//!
//! A child process has only the forking thread. Before the fork every CPU slot lock is taken
//! (bounded wait, see `slab::fork`); in the child a slot still held belonged to a thread that
//! is gone and is reset with its sheaves unread, or, when the fork came from inside a page
//! source, marked `ABANDONED` (busy to every operation, skipped by the paths that visit every
//! slot, released only by its holder). Other threads' per-thread slots are abandoned in the
//! child (module `fork`).
//!
//! # Invariants
//!
//! - A slot's sheaves are read or written only by the holder of its lock (per-CPU), or by its
//!   own thread (per-thread) while the thread-local marks it held or, on a fast path that
//!   calls out to nothing, while no slot of the thread is held and the thread-local names the
//!   slot with its cache's id; or by a taker that holds the per-thread slot's lock (`REMOTE`)
//!   after steps 1-4 above; or by whoever adopts an orphaned slot (its thread has exited;
//!   adoption happens under the registry's mutex), or with exclusive access to the whole
//!   cache (drop).
//! - The owner publishes "in use" for a per-thread slot of cache `c` only by `id == c`
//!   (fast path) or `id == 0` with `slot` naming it (held), and it sets either only through
//!   `claim`, which backs off when a taker holds the lock; a taker revokes only `id == c`.
//! - A per-thread slot's owner marks it orphaned only while holding its lock (`LOCAL`), so a
//!   taker that holds the lock and finds it not orphaned may read the owner's thread-local.
//! - A slot's counters are written by the same parties only, and read by anyone (relaxed);
//!   a taker never writes a live slot's counters.

use std::cell::{RefCell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::sheaf::OwnedSheaf;
use crate::stats::Counters;
use crate::sync::AtomicU8;
use slab::cpu::{self, CpuSource};
#[cfg(not(loom))]
use slab::rseq;
use slab::rseq::{ABANDONED, FREE, LOCAL, REMOTE};

#[cfg(not(loom))]
mod fork;

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

/// One slot per CPU, found through rseq's `cpu_id` and held with a non-spinning try-lock
/// (taken by a restartable sequence where available): the kernel's design (allocator name
/// `sheaf`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerCpu;

/// One slot per thread, flushed when the thread exits (allocator name `sheaf-thread`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerThread;

impl sealed::Sealed for PerCpu {}
impl sealed::Sealed for PerThread {}

impl SlotStrategy for PerCpu {
    const NAME: &'static str = "sheaf";
    const DESCRIPTION: &'static str = "SLUB percpu sheaves: per-CPU main/spare/rcu_free sheaves (rseq cpu_id, rseq try-lock), per-node barn, slabs";
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
    /// Collects `free_deferred` objects until it is full.
    pub(crate) rcu_free: Option<OwnedSheaf>,
    /// Full `rcu_free` sheaves waiting to be handed to one grace period together, once there
    /// are [`RCU_GROUP`] of them.
    pub(crate) rcu_waiting: Vec<OwnedSheaf>,
}

/// Full `rcu_free` sheaves handed to one grace period together. Each hand-over pushes the
/// thread's crossbeam queue to the global one, which moves and reallocates a whole bag and
/// cost about as much as the deferred frees that fill a sheaf; a group shares that cost.
pub(crate) const RCU_GROUP: usize = 4;

impl SlotSheaves {
    fn new() -> Self {
        Self {
            main: OwnedSheaf::none(),
            spare: None,
            rcu_free: None,
            rcu_waiting: Vec::new(),
        }
    }

    /// Takes the slot's `rcu_free` sheaf (partly filled) and its waiting full ones.
    pub(crate) fn take_rcu(&mut self) -> impl Iterator<Item = OwnedSheaf> + use<> {
        self.rcu_free
            .take()
            .into_iter()
            .chain(mem::take(&mut self.rcu_waiting))
    }
}

/// One slot: a CPU's ([`PerCpu`]) or a thread's ([`PerThread`]) `main`, `spare` and
/// `rcu_free` sheaves with their counters; the per-strategy fields are marked below.
///
/// `repr(C)` keeps the declared order: the lock, the sheaf pointers and the first counters
/// (the fast paths' ones, see `Stat`) share the slot's first cache line, so an allocation or
/// a free touches one line of the slot. The per-thread fields fill the padding after the
/// lock and the last 8 bytes of 256: a padded per-CPU slot stays 256 bytes, so indexing the
/// table stays one shift (384 bytes cost the fast path an instruction per lookup).
#[repr(C)]
pub(crate) struct Slot {
    /// Per-CPU: the try-lock (`slab::rseq`'s `FREE`, `LOCAL` or `REMOTE`). Unused by
    /// per-thread slots (held through the thread-local).
    lock: AtomicU8,
    /// Per-thread: set by the owner when its thread exits.
    orphaned: std::sync::atomic::AtomicBool,
    /// Per-thread: set by a taker that could not reach the slot; the owner hands the slot's
    /// sheaves over to the cache at its next operation on the cache.
    drain: AtomicBool,
    /// Per-thread: the owner's kernel thread id, to read its scheduling state.
    tid: i32,
    sheaves: UnsafeCell<SlotSheaves>,
    /// Events counted by the slot's holder.
    pub(crate) counters: Counters,
    /// The memory node whose barn and partial slabs this slot uses.
    pub(crate) node: usize,
    /// Per-thread: the owner's one-entry cache (its thread-local), read and revoked by takers
    /// while they hold the slot's lock and the slot is not orphaned (the owner's exit waits
    /// for the lock before it marks the slot orphaned, and the thread-local lives until then).
    owner: *const LastSlot,
}

// SAFETY: `sheaves` is only accessed under the protocol of the module docs (lock holder,
// owner thread, adopter of an orphan, or exclusive owner of the cache); everything else is
// atomic.
unsafe impl Sync for Slot {}
// SAFETY: the sheaves are `Send` (owned heap sheaves of free objects).
unsafe impl Send for Slot {}

impl Slot {
    pub(crate) fn new(node: usize) -> Self {
        Self {
            lock: AtomicU8::new(FREE),
            orphaned: std::sync::atomic::AtomicBool::new(false),
            drain: AtomicBool::new(false),
            tid: 0,
            sheaves: UnsafeCell::new(SlotSheaves::new()),
            counters: Counters::default(),
            node,
            owner: std::ptr::null(),
        }
    }

    /// Per-thread: a slot owned by the calling thread.
    fn for_this_thread(node: usize) -> Self {
        Self {
            owner: LAST_SLOT.with(|last| last as *const LastSlot),
            #[cfg(not(loom))]
            tid: rustix::thread::gettid().as_raw_nonzero().get(),
            ..Self::new(node)
        }
    }

    /// Per-CPU, where restartable sequences are not in use: takes the lock if free; never
    /// waits. A compare-exchange rather than a swap: as cheap when it succeeds (one locked
    /// instruction), and a failed attempt writes nothing, so a thread bouncing off a held
    /// slot does not dirty its line.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange(FREE, LOCAL, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Per-CPU: releases the lock, however it was taken.
    #[inline(always)]
    pub(crate) fn unlock(&self) {
        self.lock.store(FREE, Ordering::Release);
    }

    /// The sheaves, for code that has exclusive access by the module's protocol.
    ///
    /// # Safety
    ///
    /// - The caller holds the slot (lock or thread-local hold), or has adopted it as an orphan, or has
    ///   exclusive access to the whole cache; and no other reference from this call is alive.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity comes from the slot protocol, not from `&mut`
    pub(crate) unsafe fn sheaves_mut(&self) -> &mut SlotSheaves {
        // SAFETY: exclusive by the caller's obligation.
        unsafe { &mut *self.sheaves.get() }
    }
}

impl Slot {
    /// Replaces the sheaves with empty ones without reading or dropping the old ones: they
    /// may have been half-updated by a thread that does not exist in this process, and the
    /// objects in them are lost.
    ///
    /// # Safety
    ///
    /// - As for [`Slot::sheaves_mut`].
    pub(crate) unsafe fn forget_sheaves(&self) {
        // SAFETY: exclusive by the caller's obligation; `write` neither reads nor drops the
        // old value.
        unsafe { self.sheaves.get().write(SlotSheaves::new()) };
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("node", &self.node)
            .field("locked", &(self.lock.load(Ordering::Relaxed) != FREE))
            .finish_non_exhaustive()
    }
}

/// A slot found and reserved for a fast path: the operation's own slot, locked (per-CPU),
/// or found through the thread-local but *not* marked held (per-thread).
///
/// While one is alive the code may only touch the slot's sheaves and counters, run no code
/// that could call back into any cache on this thread (no page source, barn, slab, callback
/// or allocation), and then either drop it or turn it into a [`SlotGuard`] with
/// [`FastSlot::hold`] before anything else. For a per-thread slot this makes the hold marker
/// of the thread-local unnecessary on the fast path: nothing can re-enter between the
/// lookup and the release. Every per-thread hold that may call out goes through `hold`.
pub(crate) struct FastSlot<'a, S: SlotStrategy> {
    slot: &'a Slot,
    /// Per-thread: the cache id, stored back into the thread-local when a hold ends.
    cache_id: u64,
    _strategy: PhantomData<S>,
}

impl<'a, S: SlotStrategy> FastSlot<'a, S> {
    /// The slot's sheaves.
    #[inline(always)]
    pub(crate) fn sheaves(&mut self) -> &mut SlotSheaves {
        // SAFETY: per-CPU, we hold the lock. Per-thread, the slot is this thread's, no hold
        // is active on this thread (the lookup checked), and none can start while this value
        // lives (its user calls out to nothing); `&mut self` makes this the only reference.
        unsafe { self.slot.sheaves_mut() }
    }

    /// The slot's counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> &'a Counters {
        &self.slot.counters
    }

    /// Marks the slot held (per-thread: the thread-local's id becomes 0, so that re-entry on
    /// this thread finds every slot busy), for code that may call out.
    #[inline(always)]
    pub(crate) fn hold(self) -> SlotGuard<'a, S> {
        let this = ManuallyDrop::new(self);
        if !S::PER_CPU {
            // The lookup left the thread-local naming this slot with this cache's id. A
            // taker that revoked the id meanwhile finds the slot held when it looks again
            // (see `SlotTable::take_remote`).
            LAST_SLOT.with(|last| last.id.store(0, Ordering::Relaxed));
        }
        SlotGuard {
            slot: this.slot,
            cache_id: this.cache_id,
            _strategy: PhantomData,
        }
    }
}

impl<S: SlotStrategy> Drop for FastSlot<'_, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if S::PER_CPU {
            self.slot.unlock();
        }
    }
}

impl<S: SlotStrategy> fmt::Debug for FastSlot<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FastSlot").field(self.slot).finish()
    }
}

/// A held slot; releases it on drop.
pub(crate) struct SlotGuard<'a, S: SlotStrategy> {
    slot: &'a Slot,
    /// Per-thread: the cache id to store back into the thread-local on release.
    cache_id: u64,
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
            // The thread-local still names this slot: while it is held no other hold (which
            // would overwrite it) can succeed on this thread. Storing the id back releases it
            // and leaves it cached for the next operation, unless a taker asked for the slot
            // while it was held: then the next operation takes the lookup's slow path, which
            // hands the sheaves over. The swap orders the release before the load of the
            // request, against the taker's store of the request and its read of the id.
            LAST_SLOT.with(|last| {
                last.id.swap(self.cache_id, Ordering::SeqCst);
                if self.slot.drain.load(Ordering::SeqCst) {
                    last.id.store(REVOKED, Ordering::Relaxed);
                }
            });
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
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Orphaned slots and handed-over sheaves waiting to be adopted.
    orphans: AtomicUsize,
    /// Sheaves that live threads handed over on a drain request, with their slot's node.
    handed: Mutex<Vec<(SlotSheaves, usize)>>,
}

struct ThreadEntry {
    cache_id: u64,
    slot: Arc<Slot>,
    registry: Weak<ThreadRegistry>,
}

/// The calling thread's per-thread slots, across caches.
struct ThreadSlots {
    entries: RefCell<Vec<ThreadEntry>>,
}

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        // Later thread-local destructors must not reach a slot through the one-entry cache.
        let _ = LAST_SLOT.try_with(|last| {
            last.id.store(0, Ordering::Relaxed);
            last.slot.store(std::ptr::null_mut(), Ordering::Relaxed);
        });
        for entry in self.entries.get_mut().drain(..) {
            if let Some(registry) = entry.registry.upgrade() {
                // A taker reads this thread's thread-local while it holds the slot's lock and
                // finds the slot not orphaned: wait out the one at work (a short section that
                // runs no operation of ours) before the thread-local can go away.
                while entry
                    .slot
                    .lock
                    .compare_exchange(FREE, LOCAL, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    std::thread::yield_now();
                }
                // Release: the adopter that sees the flag sees every write this thread made
                // to the slot.
                entry.slot.orphaned.store(true, Ordering::Release);
                entry.slot.unlock();
                registry.orphans.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// The per-thread one-entry cache and hold marker (see the module docs for its states).
///
/// Atomics so that a taker on another thread may revoke `id`; the owner's accesses are
/// relaxed loads and stores, the same plain moves as a `Cell`'s.
struct LastSlot {
    /// The id of the cache whose slot `slot` is, 0 while `slot` is held (or absent), or
    /// [`REVOKED`].
    id: AtomicU64,
    /// The slot last used by this thread, or null.
    slot: AtomicPtr<Slot>,
}

/// A thread-local id that no cache has: a taker stored it to send the owner's next operation
/// through the lookup's slow path.
const REVOKED: u64 = u64::MAX;

impl LastSlot {
    /// Whether this thread holds a slot now (an operation is in progress below us).
    #[inline]
    fn holds_a_slot(&self) -> bool {
        self.id.load(Ordering::Relaxed) == 0 && !self.slot.load(Ordering::Relaxed).is_null()
    }

    /// Makes `slot` this thread's cached slot under `id` (a cache id, or 0 to hold it),
    /// unless a taker holds it: then the thread-local is left revoked and `false` returned.
    ///
    /// The swap and the load are ordered (sequentially consistent) against the taker's
    /// compare-exchange of the lock and its read of `id`: either the taker reads `id` after
    /// the swap and sees the slot in use, or this load sees the taker's lock.
    fn claim(&self, id: u64, slot: &Slot) -> bool {
        self.slot
            .store(slot as *const Slot as *mut Slot, Ordering::Relaxed);
        self.id.swap(id, Ordering::SeqCst);
        if slot.lock.load(Ordering::SeqCst) != FREE {
            self.id.store(REVOKED, Ordering::Relaxed);
            return false;
        }
        true
    }
}

thread_local! {
    /// The last slot this thread used, and whether it is held: the per-thread fast path's
    /// lookup. No destructor, so access is a plain thread-local load.
    static LAST_SLOT: LastSlot = const {
        LastSlot { id: AtomicU64::new(0), slot: AtomicPtr::new(std::ptr::null_mut()) }
    };
    static THREAD_SLOTS: ThreadSlots = const { ThreadSlots { entries: RefCell::new(Vec::new()) } };
}

/// The outcome of one inlined attempt at the slot of the CPU the caller runs on (per-CPU,
/// restartable sequences); [`slab::rseq::LocalOutcome`] is that of the sequence itself.
#[cfg(not(loom))]
enum OwnCpuOutcome<T> {
    /// The caller holds this slot.
    Locked(T),
    /// Another thread holds it.
    Busy,
    /// Migrated or preempted inside the sequence: the slow path retries.
    Retry,
}

/// How a table's per-CPU slot locks are taken, fixed for its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// A compare-exchange ([`Slot::try_lock`]): per-thread tables (which do not use the
    /// lock), and per-CPU ones where restartable sequences are unsupported.
    Atomic,
    /// A restartable sequence on the slot's CPU (`slab::rseq`), with the rseq area at this
    /// offset from the thread pointer.
    #[cfg(not(loom))]
    Rseq {
        /// glibc's `__rseq_offset`.
        offset: isize,
    },
}

impl LockKind {
    fn detect(per_cpu: bool) -> Self {
        #[cfg(not(loom))]
        if per_cpu && let rseq::Support::Rseq { offset } = rseq::support() {
            return LockKind::Rseq { offset };
        }
        let _ = per_cpu;
        LockKind::Atomic
    }
}

/// Every slot of one cache.
pub(crate) struct SlotTable<S: SlotStrategy> {
    /// Per-CPU slots, each padded to its own cache lines: the slot's lock and counters are
    /// written on every operation by the CPU that owns it, and other CPUs read them (stats)
    /// or take the lock (a thread that migrated, `shrink`); without padding, neighbouring
    /// CPUs' fast paths would bounce one line between them. 128 bytes on x86-64, because the
    /// adjacent-line prefetcher pulls lines in pairs.
    cpus: Box<[CachePadded<Slot>]>,
    threads: Arc<ThreadRegistry>,
    cpu_source: CpuSource,
    lock_kind: LockKind,
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
                .map(|&node| CachePadded::new(Slot::new(node)))
                .collect()
        } else {
            Box::default()
        };
        Self {
            cpus,
            threads: Arc::default(),
            cpu_source: cpu::cpu_source(),
            lock_kind: LockKind::detect(S::PER_CPU),
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
        self.acquire_fast().map(FastSlot::hold)
    }

    /// Finds the caller's slot for a fast path (see [`FastSlot`]); `None` when it is busy.
    #[inline(always)]
    pub(crate) fn acquire_fast(&self) -> Option<FastSlot<'_, S>> {
        let slot = if S::PER_CPU {
            match self.lock_kind {
                #[cfg(not(loom))]
                LockKind::Rseq { offset } => match self.try_lock_rseq_once(offset) {
                    Some(OwnCpuOutcome::Locked(slot)) => slot,
                    Some(OwnCpuOutcome::Busy) => return None,
                    _ => self.try_lock_rseq(offset)?,
                },
                LockKind::Atomic => {
                    let cpu = cpu::current_cpu(self.cpu_source);
                    let slot = match self.cpus.get(cpu) {
                        Some(slot) => slot,
                        None => &self.cpus[cpu % self.cpus.len()],
                    };
                    if !slot.try_lock() {
                        return None;
                    }
                    &**slot
                }
            }
        } else {
            let (id, slot) = LAST_SLOT.with(|last| {
                (
                    last.id.load(Ordering::Relaxed),
                    last.slot.load(Ordering::Relaxed),
                )
            });
            if id == self.id {
                // SAFETY: the thread-local named this slot together with this cache's id, so
                // it is a slot of this cache registered by this thread, and no hold is active
                // on this thread (a hold sets the id to 0); the registry keeps the slot alive
                // until the thread has exited (then the thread-local is reset) or the cache is
                // dropped (which `&self` rules out).
                unsafe { &*slot }
            } else {
                self.thread_slot_slow(true)?
            }
        };
        Some(FastSlot {
            slot,
            cache_id: self.id,
            _strategy: PhantomData,
        })
    }

    /// Per-CPU with restartable sequences, the common case inlined: one attempt at the slot
    /// of the CPU the caller runs on; `None` when the thread has no rseq area or runs on a
    /// CPU beyond the table (then [`SlotTable::try_lock_rseq`] deals with it).
    #[cfg(not(loom))]
    #[inline(always)]
    fn try_lock_rseq_once(&self, offset: isize) -> Option<OwnCpuOutcome<&Slot>> {
        let cpu = cpu::rseq_cpu(offset)?;
        let slot = self.cpus.get(cpu as usize)?;
        // SAFETY: `offset` is the one `rseq::support` reported; per-CPU slot locks are only
        // taken through `slab::rseq` while this table's kind is `Rseq` (the kind is fixed for
        // the table's life, and `rseq::support` for the process's), and released with a
        // release store of `FREE`.
        Some(
            match unsafe { rseq::try_lock_local(&slot.lock, cpu, offset) } {
                rseq::LocalOutcome::Locked => OwnCpuOutcome::Locked(slot),
                rseq::LocalOutcome::Busy => OwnCpuOutcome::Busy,
                // Migrated since the CPU was read, or preempted inside.
                rseq::LocalOutcome::Moved | rseq::LocalOutcome::Aborted => OwnCpuOutcome::Retry,
            },
        )
    }

    /// Per-CPU with restartable sequences: takes the slot of the CPU the caller runs on
    /// without a locked instruction, retrying after migrations and aborts; `None` when it is
    /// held.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn try_lock_rseq(&self, offset: isize) -> Option<&Slot> {
        loop {
            match self.try_lock_rseq_once(offset) {
                Some(OwnCpuOutcome::Locked(slot)) => return Some(slot),
                Some(OwnCpuOutcome::Busy) => return None,
                Some(OwnCpuOutcome::Retry) => {}
                // No rseq area of its own (the kernel would not abort this thread's
                // sequences), or a CPU beyond the table: lock as a remote thread does.
                None => {
                    let cpu = match cpu::rseq_cpu(offset) {
                        Some(cpu) => cpu as usize,
                        None => cpu::current_cpu(CpuSource::SchedGetcpu),
                    };
                    return self.try_lock_from_afar(cpu);
                }
            }
        }
    }

    /// Per-CPU with restartable sequences, for a thread that cannot lock its CPU's slot from
    /// that CPU (no rseq area, or a CPU number beyond the table's): one attempt on the slot
    /// it maps to, from afar (a system call).
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn try_lock_from_afar(&self, cpu: usize) -> Option<&Slot> {
        let index = cpu % self.cpus.len();
        let slot = &self.cpus[index];
        // SAFETY: as in `try_lock_rseq`; `index` is the CPU the slot belongs to.
        unsafe { rseq::try_lock_remote(&slot.lock, index as u32) }.then_some(&**slot)
    }

    /// Per-CPU: takes CPU `cpu`'s slot, waiting (yielding) while it is held; for paths that
    /// visit every slot. `None` for a slot abandoned at a fork (`slab::rseq::ABANDONED`): its
    /// holder may not exist in this process, and its sheaves are out of reach.
    fn lock_waiting(&self, cpu: usize) -> Option<&Slot> {
        let slot = &self.cpus[cpu];
        loop {
            if slot.lock.load(Ordering::Relaxed) == ABANDONED {
                return None;
            }
            let locked = match self.lock_kind {
                #[cfg(not(loom))]
                // SAFETY: as in `try_lock_rseq`; `cpu` is the CPU the slot belongs to.
                LockKind::Rseq { .. } => unsafe { rseq::try_lock_remote(&slot.lock, cpu as u32) },
                LockKind::Atomic => slot.try_lock(),
            };
            if locked {
                return Some(slot);
            }
            std::thread::yield_now();
        }
    }

    /// Per-thread: the calling thread's slot, found in the thread's list (created and
    /// registered when `create` is set and there is none) and left in the thread-local with
    /// this cache's id. `None` when the thread holds a slot (re-entry), has no slot and may
    /// not create one, or is exiting.
    #[cold]
    #[inline(never)]
    fn thread_slot_slow(&self, create: bool) -> Option<&Slot> {
        if LAST_SLOT.with(LastSlot::holds_a_slot) {
            return None;
        }
        // SAFETY: the registry holds the slot alive as long as the cache (`&self`).
        let slot = unsafe { &*self.thread_slot_lookup(create)? };
        if slot.drain.load(Ordering::Acquire) && !self.hand_over(slot) {
            return None;
        }
        LAST_SLOT
            .with(|last| last.claim(self.id, slot))
            .then_some(slot)
    }

    /// Per-thread: a taker asked for the calling thread's `slot`; moves its sheaves out to the
    /// registry, where the cache's next adoption of orphans (any slow path that looks for
    /// objects, `shrink`, `barrier`, the accounting check) takes them. `false` when a taker
    /// holds the slot now (it empties the slot itself).
    #[cold]
    fn hand_over(&self, slot: &Slot) -> bool {
        if !LAST_SLOT.with(|last| last.claim(0, slot)) {
            return false;
        }
        slot.drain.store(false, Ordering::Relaxed);
        // SAFETY: this thread holds its slot (the thread-local marks it held and no taker
        // holds its lock, see `LastSlot::claim`).
        let sheaves = mem::replace(unsafe { slot.sheaves_mut() }, SlotSheaves::new());
        let empty = sheaves.main.is_none()
            && sheaves.spare.is_none()
            && sheaves.rcu_free.is_none()
            && sheaves.rcu_waiting.is_empty();
        if !empty {
            self.threads
                .handed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((sheaves, slot.node));
            self.threads.orphans.fetch_add(1, Ordering::Release);
        }
        LAST_SLOT.with(|last| last.id.store(REVOKED, Ordering::Relaxed));
        true
    }

    /// Per-thread: holds the calling thread's slot if it has one (never creates it), and
    /// withdraws any drain request: the caller empties what it needs itself.
    fn hold_own_slot(&self) -> Option<SlotGuard<'_, S>> {
        if LAST_SLOT.with(LastSlot::holds_a_slot) {
            return None;
        }
        // SAFETY: the registry holds the slot alive as long as the cache (`&self`).
        let slot = unsafe { &*self.thread_slot_lookup(false)? };
        if !LAST_SLOT.with(|last| last.claim(0, slot)) {
            return None;
        }
        slot.drain.store(false, Ordering::Relaxed);
        Some(SlotGuard {
            slot,
            cache_id: self.id,
            _strategy: PhantomData,
        })
    }

    /// Per-thread: the calling thread's slot, from its list (created and registered when
    /// `create` is set and there is none).
    fn thread_slot_lookup(&self, create: bool) -> Option<*const Slot> {
        THREAD_SLOTS
            .try_with(|slots| {
                let mut entries = slots.entries.try_borrow_mut().ok()?;
                entries.retain(|entry| entry.registry.strong_count() > 0);
                if let Some(entry) = entries.iter().find(|entry| entry.cache_id == self.id) {
                    return Some(Arc::as_ptr(&entry.slot));
                }
                if !create {
                    return None;
                }
                let slot = Arc::new(Slot::for_this_thread(self.current_node()));
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
            .flatten()
    }

    /// Runs `f` on every slot of a CPU or of a live thread that the caller can take now, and
    /// returns how many it could not.
    ///
    /// Per-CPU: every CPU slot, waiting (yielding) for each lock; none is left out.
    ///
    /// Per-thread: the calling thread's own slot (held, unless this thread is inside an
    /// operation already), and every other live thread's slot that
    /// [`SlotTable::take_remote`] can take: its owner is asleep in the kernel, so not inside
    /// an operation. A slot whose owner is running (or runnable, or stopped) is not waited
    /// for: it gets a drain request, and its owner hands its sheaves over at its next
    /// operation on the cache. Each such slot is tried again, yielding between tries, until
    /// `patience` has passed (at least once), and then counted as not reached: a thread that
    /// is about to block is caught asleep, and one that computes for long is not waited for.
    ///
    /// Orphaned per-thread slots are not visited: they are adopted whole, by
    /// [`SlotTable::adopt_orphans`] with a callback that empties every sheaf and folds the
    /// counters. Adopting them here, with a callback meant for live slots, would unregister a
    /// slot whose thread exited during the call with part of its contents still in it.
    pub(crate) fn for_each_reachable(
        &self,
        patience: Duration,
        mut f: impl FnMut(&mut SlotSheaves, &Counters, usize),
    ) -> usize {
        if S::PER_CPU {
            for cpu in 0..self.cpus.len() {
                let Some(slot) = self.lock_waiting(cpu) else {
                    continue;
                };
                // SAFETY: we hold the slot's lock.
                f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
                slot.unlock();
            }
            return 0;
        }
        let start = Instant::now();
        let mut own_unreached = 0;
        let own = loop {
            if let Some(mut own) = self.hold_own_slot() {
                let (counters, node) = (own.counters(), own.node());
                f(own.sheaves(), counters, node);
                break own.slot as *const Slot;
            }
            let Some(own) = self.thread_slot_lookup(false) else {
                break std::ptr::null();
            };
            // The caller's own slot exists but cannot be held: this thread is inside an
            // operation (re-entry), or another thread (a shrink, a barrier, the hand-over
            // thread) is emptying it from outside, which takes a moment.
            if LAST_SLOT.with(LastSlot::holds_a_slot) || start.elapsed() >= patience {
                own_unreached = 1;
                break own;
            }
            std::thread::yield_now();
        };
        // A snapshot, so that `f` (which may call the page source, and so this cache) runs
        // without the registry's lock; the `Arc`s keep the slots alive meanwhile.
        let mut others: Vec<Arc<Slot>> = self
            .threads
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|slot| !std::ptr::eq(Arc::as_ptr(slot), own))
            .cloned()
            .collect();
        for attempt in 0.. {
            if attempt > 0 {
                if start.elapsed() >= patience {
                    break;
                }
                std::thread::yield_now();
            }
            others.retain(|slot| match self.take_remote(slot) {
                Take::Taken => {
                    // SAFETY: `take_remote` took the slot: its owner is outside every
                    // operation and cannot start one on it until we release the lock.
                    f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node);
                    slot.unlock();
                    false
                }
                Take::Gone => false,
                Take::Requested => true,
            });
            if others.is_empty() {
                break;
            }
        }
        others.len() + own_unreached
    }

    /// Per-thread: tries to take another live thread's `slot` without waiting for its owner.
    ///
    /// The owner's fast paths write no flag (they only compare the thread-local's id with
    /// the cache's), so whether the owner is between operations is decided from outside:
    ///
    /// 1. the slot's lock is taken (`REMOTE`), which the owner's lookup slow path checks
    ///    (see [`LastSlot::claim`]) and the owner's exit waits for;
    /// 2. the owner's thread-local id, if it names this cache, is revoked: any operation the
    ///    owner starts from now on takes the lookup's slow path, finds the lock and goes
    ///    to the slabs directly, as with a busy CPU slot. If the thread-local marks this
    ///    slot held, the owner is inside a slow path: no take;
    /// 3. the owner's scheduling state is read from `/proc`: only a thread asleep in the
    ///    kernel (`S`) is taken. Fast paths make no system calls, so a sleeping owner is not
    ///    inside one; a running, runnable, stopped or uninterruptible one may be;
    /// 4. the thread-local is read again: an owner that was inside a fast path when the id
    ///    was revoked, then held the slot and slept inside a slow path, shows it held.
    ///
    /// Otherwise a drain request is left on the slot and the lock released: the owner's next
    /// operation (its id is revoked, or its current slow path revokes it on release) hands
    /// the sheaves over.
    fn take_remote(&self, slot: &Slot) -> Take {
        match slot
            .lock
            .compare_exchange(FREE, REMOTE, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => {}
            // The exiting owner, which orphans it for adoption.
            Err(LOCAL) => return Take::Gone,
            // Another taker (a shrink, a barrier, an accounting check), which may take only
            // part of it (the `rcu_free` sheaves): not reached, tried again.
            Err(_) => return Take::Requested,
        }
        if slot.orphaned.load(Ordering::Acquire) {
            slot.unlock();
            return Take::Gone;
        }
        // SAFETY: the slot is not orphaned and we hold its lock, so its owner has not passed
        // the point of its exit that waits for the lock: its thread-local is alive.
        let owner = unsafe { &*slot.owner };
        let in_use = |id: u64| {
            id == self.id || (id == 0 && std::ptr::eq(owner.slot.load(Ordering::Relaxed), slot))
        };
        let _ = owner
            .id
            .compare_exchange(self.id, REVOKED, Ordering::SeqCst, Ordering::Relaxed);
        if !in_use(owner.id.load(Ordering::SeqCst))
            && thread_sleeps(slot.tid)
            && !in_use(owner.id.load(Ordering::SeqCst))
        {
            return Take::Taken;
        }
        // The request before the revocation: an owner that releases a hold after the
        // compare-exchange failed on it sees the request (see `SlotGuard`'s drop).
        slot.drain.store(true, Ordering::SeqCst);
        let _ = owner
            .id
            .compare_exchange(self.id, REVOKED, Ordering::SeqCst, Ordering::Relaxed);
        slot.unlock();
        Take::Requested
    }

    /// Whether exited threads left slots to adopt (one load).
    #[inline]
    pub(crate) fn has_orphans(&self) -> bool {
        // Acquire, paired with the adopter's release: one that finds no orphans left sees
        // what their adopter put in the cache's `orphan_rcu`.
        !S::PER_CPU && self.threads.orphans.load(Ordering::Acquire) != 0
    }

    /// Per-thread: runs `f` on each orphaned slot, then unregisters it. Its counters are
    /// passed to `f` so the caller can fold them into the shared block.
    /// Sheaves that live threads handed over on a drain request are passed too, with an
    /// empty counter block (their counters stay in the live slot).
    pub(crate) fn adopt_orphans(&self, f: &mut impl FnMut(&mut SlotSheaves, &Counters, usize)) {
        if !self.has_orphans() {
            return;
        }
        let mut slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        let handed = mem::take(
            &mut *self
                .threads
                .handed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut adopted = handed.len();
        let none = Counters::default();
        for (mut sheaves, node) in handed {
            f(&mut sheaves, &none, node);
        }
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
        self.threads.orphans.fetch_sub(adopted, Ordering::Release);
    }

    /// Runs `f` on every slot of every CPU or thread.
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, and none will start one during the
    ///   call (the cache is being dropped).
    pub(crate) unsafe fn for_each_exclusive(&self, mut f: impl FnMut(&mut SlotSheaves)) {
        for slot in self.cpus.iter() {
            if slot.lock.load(Ordering::Relaxed) == ABANDONED {
                // Abandoned at a fork by a thread that is gone (no operation is in flight, so
                // the forking thread would have released it): its sheaves may be half-updated.
                // SAFETY: exclusive access by the caller's obligation.
                unsafe { slot.forget_sheaves() };
                continue;
            }
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

    /// Adds every slot's counters and the cache's `shared` block to `totals`.
    pub(crate) fn sum_counters(
        &self,
        shared: &Counters,
        totals: &mut [u64; crate::stats::Stat::ALL.len()],
    ) {
        for slot in self.cpus.iter() {
            slot.counters.sum_into(totals);
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The shared block under the registry lock: an adoption folds a slot's counters into
        // it and unregisters the slot under this lock, so each slot's counts are seen once,
        // in the slot or in the shared block.
        shared.sum_into(totals);
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
}

/// Per-thread: how long `shrink`, `barrier` and the accounting check keep trying a live
/// thread's slot that they could not take (its owner was running), before they leave the drain
/// request.
pub(crate) const REACH_PATIENCE: Duration = Duration::from_millis(20);

/// The outcome of [`SlotTable::take_remote`].
enum Take {
    /// The caller holds the slot (`REMOTE`) and may empty it; it releases the lock.
    Taken,
    /// Orphaned, or being orphaned by its exiting owner: adoption deals with it.
    Gone,
    /// The owner may be inside an operation (a drain request was left), or another taker
    /// holds the slot: not reached now.
    Requested,
}

/// Whether thread `tid` of this process is asleep in the kernel (state `S` in `/proc`), and
/// so not inside a fast path, which makes no system call. `false` when it cannot be told.
#[cfg(not(loom))]
fn thread_sleeps(tid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the command may contain spaces and parentheses.
    let Some(close) = stat.iter().rposition(|&byte| byte == b')') else {
        return false;
    };
    stat.get(close + 2) == Some(&b'S')
}

#[cfg(loom)]
fn thread_sleeps(_tid: i32) -> bool {
    false
}

impl<S: SlotStrategy> fmt::Debug for SlotTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("strategy", &S::NAME)
            .field("slots", &self.len())
            .field("cpu_source", &self.cpu_source)
            .field("lock_kind", &self.lock_kind)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::Cell;
    use std::ptr::NonNull;
    use std::sync::{Arc, OnceLock};

    use object_alloc::{AllocFlags, CacheConfig, PageError, PageSource, PageSourceStats};

    use crate::{Cache, PerCpu, PerThread, SlotStrategy};

    type Hook = Box<dyn Fn() + Send + Sync>;

    /// Pages that run a hook (which calls back into caches) before handing out a chunk, as
    /// a user's page source may: the hook runs while the caller's slot is held.
    #[derive(Default)]
    struct ReenteringPages {
        inner: slab::MmapPages,
        hook: OnceLock<Hook>,
    }

    impl std::fmt::Debug for ReenteringPages {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("ReenteringPages")
        }
    }

    thread_local! {
        static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    }

    // SAFETY: every chunk comes from `inner` and goes back to it.
    unsafe impl PageSource for ReenteringPages {
        fn name(&self) -> &'static str {
            "reentering"
        }

        fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
            if let Some(hook) = self.hook.get()
                && !IN_HOOK.with(|flag| flag.replace(true))
            {
                hook();
                IN_HOOK.with(|flag| flag.set(false));
            }
            self.inner.alloc_chunk(bytes)
        }

        unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
            // SAFETY: forwarded: the chunk came from `inner` through `alloc_chunk`.
            unsafe { self.inner.free_chunk(chunk, bytes) }
        }

        fn stats(&self) -> PageSourceStats {
            self.inner.stats()
        }
    }

    fn counter(cache: &Cache<impl SlotStrategy>, name: &str) -> u64 {
        cache.stats().counters.get(name).copied().unwrap_or(0)
    }

    /// While a slow path calls the page source, the page source allocates and frees on the
    /// same cache and on another one: the operations are served (the allocation paths release
    /// the slot around the page source, and a slot still held would be found busy), and every
    /// object stays accounted.
    fn reentry_is_served_without_the_held_slot<S: SlotStrategy>() {
        let pages = Arc::new(ReenteringPages::default());
        let config = CacheConfig::new(64).with_page_source(pages.clone());
        let outer: &'static Cache<S> = Box::leak(Box::new(Cache::new(&config).unwrap()));
        let other: &'static Cache<S> =
            Box::leak(Box::new(Cache::new(&CacheConfig::new(64)).unwrap()));
        let reentered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = reentered.clone();
        let hook: Hook = Box::new(move || {
            let a = outer.alloc(AllocFlags::ZERO).expect("memory");
            let b = other.alloc(AllocFlags::empty()).expect("memory");
            // SAFETY: allocated just above from these caches, freed once.
            unsafe {
                outer.free(a);
                other.free(b);
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(pages.hook.set(hook).is_ok());

        // Touch `other` first so that its slot exists and is the thread's cached one.
        let warm = other.alloc(AllocFlags::empty()).unwrap();
        // SAFETY: allocated just above, freed once.
        unsafe { other.free(warm) };
        // The first bulk allocation of `outer` takes new slabs (with its slot released, as
        // every allocation path now calls the page source): the hook runs.
        let mut bulk = [std::mem::MaybeUninit::uninit(); 10];
        outer.alloc_bulk(AllocFlags::empty(), &mut bulk).unwrap();
        assert!(reentered.load(std::sync::atomic::Ordering::Relaxed) > 0);
        // SAFETY: every entry was written by the successful `alloc_bulk`; freed once.
        unsafe { outer.free_bulk(&bulk.map(|o| o.assume_init())) };
        let objects: Vec<_> = (0..200)
            .map(|_| outer.alloc(AllocFlags::empty()).unwrap())
            .collect();
        assert!(reentered.load(std::sync::atomic::Ordering::Relaxed) > 0);
        for object in objects {
            // SAFETY: allocated above from `outer`, freed once.
            unsafe { outer.free(object) };
        }
        assert_eq!(outer.stats().live_objects, Some(0));
        assert_eq!(other.stats().live_objects, Some(0));
        outer.check_invariants();
        other.check_invariants();
        // After the re-entry the fast path is usable again.
        let again = outer.alloc(AllocFlags::empty()).unwrap();
        let before = counter(outer, "alloc_fastpath");
        // SAFETY: allocated just above, freed once.
        unsafe { outer.free(again) };
        let next = outer.alloc(AllocFlags::empty()).unwrap();
        assert_eq!(counter(outer, "alloc_fastpath"), before + 1);
        // SAFETY: as above.
        unsafe { outer.free(next) };
    }

    /// A padded per-CPU slot is 256 bytes: the fast path finds it with one shift.
    #[test]
    fn a_padded_slot_is_256_bytes() {
        assert_eq!(
            std::mem::size_of::<crossbeam_utils::CachePadded<crate::slot::Slot>>(),
            256
        );
    }

    #[test]
    fn per_thread_reentry_is_served_without_the_held_slot() {
        reentry_is_served_without_the_held_slot::<PerThread>();
    }

    #[test]
    fn per_cpu_reentry_is_served_without_the_held_slot() {
        reentry_is_served_without_the_held_slot::<PerCpu>();
    }
}
