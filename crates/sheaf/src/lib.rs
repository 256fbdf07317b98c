//! `sheaf`: an object-cache allocator built on the Linux SLUB *percpu sheaves* design, with
//! the prefill API for allocations that must not fail.
//!
//! A [`Cache`] hands out fixed-size objects. Each CPU keeps two arrays of free objects, the
//! `main` and `spare` *sheaves*; allocation pops from `main` and free pushes to it, so the
//! common case touches only CPU-local memory. Sheaves that run empty or full are traded at a
//! per-node *barn* of full and empty sheaves, and the barn trades with the *slabs* (crate
//! `slab`) in bulk. A third CPU sheaf, `rcu_free`, batches deferred frees: a full one waits
//! for one grace period and then goes to the barn as a full sheaf, ready to allocate from.
//!
//! The prefill API ([`Cache::prefill`], [`PrefilledSheaf`]) borrows a sheaf guaranteed to hold
//! `n` objects, so that a critical section (a maple-tree write, say) can allocate its worst
//! case without any chance of failure, and gives back what it did not use.
//!
//! ```
//! use object_alloc::{AllocFlags, CacheConfig};
//! use sheaf::Cache;
//!
//! let cache: Cache = Cache::new(&CacheConfig::new(256))?;
//!
//! // Before the critical section: reserve the worst case (may fail, may sleep).
//! let mut reserve = cache.prefill(AllocFlags::empty(), 13)?;
//!
//! // Inside it: allocations from the sheaf cannot fail while it holds objects.
//! let a = reserve.alloc(AllocFlags::ZERO).unwrap();
//! let b = reserve.alloc(AllocFlags::empty()).unwrap();
//! assert!(reserve.size() >= 11);
//!
//! // After it: return the rest (here without growing the cache).
//! reserve.return_with(AllocFlags::NOWAIT);
//! // SAFETY: both objects came from this cache and are no longer used.
//! unsafe {
//!     cache.free(a);
//!     cache.free(b);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layers
//!
//! 1. Public API: [`Cache`], [`TypedCache`] with its owning [`Owned`] handle,
//!    [`PrefilledSheaf`]; [`Cache`] implements [`object_alloc::ObjectAlloc`].
//! 2. CPU-local sheaves (`slot`): per CPU (or per thread, [`PerThread`]) `main`, `spare`,
//!    `rcu_free`, found through rseq's `cpu_id` (`slab::cpu`). Per CPU, where the machine
//!    allows restartable sequences ([`per_cpu_slot_lock`]), an allocation, a free, a
//!    batched deferred free, and the prefill's lend and give-back of the slot's spare are each
//!    one sequence that commits with a single store, without the slot's lock
//!    (`slot::rseq_ops`); the slow paths hold the slot with a non-spinning
//!    try-lock (`slab::rseq`), which those sequences respect. No locked instruction on the
//!    fast paths. A deferred free's other changes to its slot (starting a sheaf, taking a
//!    group of full ones) are sequences too, so a barrier never waits for a deferring thread.
//! 3. Barn (`barn`): per node, full and empty sheaves with limits, one short lock.
//! 4. Slabs and page sources: crate `slab`.
//!
//! A process may `fork` while other threads use its caches: the child can use, shrink and drop
//! every cache, and never gets an object twice; what the other threads held is lost to it
//! (see `slab::fork` for the handlers, and the README's "`fork()`" section).
//!
//! The design note [`implementation`] explains where the ideas come from and which invariant
//! each layer keeps.
//!
//! # Module map
//!
//! What lives where, and the invariants each module states (each is written once, there):
//!
//! - `cache`: [`Cache`], the public face; forwards to the core and hands `rcu_free` sheaves to
//!   grace periods.
//! - `cache_core`: `CacheCore`, the state a cache shares between threads and its deferred
//!   callbacks, with one file per path: `alloc` (alloc and free of one object), `bulk`,
//!   `prefill` (the [`PrefilledSheaf`] handle and prefill, refill, return), `deferred`
//!   (`free_deferred`, grace periods, the hand-over thread), `quiescent` (orphan adoption,
//!   shrink), `accounting` (stats; owns **the accounting equation**), `resize` (run-time
//!   changes of the capacity and the barn limits; owns **what a stale sheaf is and where it is
//!   retired**), `sheaves` (sheaf bookkeeping every path uses), `fork` (the locks a fork takes,
//!   the lost-object count).
//! - `slot`: CPU-local sheaves. `Slot` and `SlotSheaves` (owns **the shape of `main`, `spare`
//!   and `rcu_free`** and **who may touch a slot**), `SlotTable` with `FastSlot` and
//!   `SlotGuard`; `per_cpu` (the try-lock, rseq or compare-exchange), `rseq_ops` (the
//!   lock-free per-CPU fast paths, and how their counts reach `stats`), `per_thread` (the
//!   lookup's slow path, drain requests, reaching live threads' slots), `registry`
//!   (per-thread slots of a cache, orphans), `last_slot` (the thread-local slot cache: the
//!   last slot claimed, which is also the hold marker, then a table of 16 `(cache id, slot)`
//!   entries for a thread that uses several caches; and their states), `fork` (repair in the
//!   child).
//! - `barn`: the per-node store of full and empty sheaves (owns **the barn's limits**).
//! - `sheaf`: `OwnedSheaf` (owns **`size <= capacity`, sole ownership, the sentinel**, and the
//!   header's budget word that counts the restartable sequences' operations).
//! - `stats`: the event counters and **how live objects follow from them**.
//! - `typed`: [`TypedCache`], [`Owned`], [`TypedPrefill`].
//! - `kmalloc`: [`Kmalloc`], the general-purpose front-end (size classes of caches, the page
//!   map that finds an object's class, the bootstrap arena for its own nested requests, large
//!   mappings).
//! - [`implementation`]: the design note (origin, layers, departures from the kernel).
//! - `sync`: std or loom primitives for the slot lock and the barn; `loom_models`: the loom
//!   models; `slowdown`: the fast-path hooks of the `slowdown` feature.
//!
//! # Unsafe code
//!
//! Confined to `sheaf` (the sheaf's memory), `slot` (exclusive access to a slot's sheaves, and
//! the restartable sequences of `slot::rseq_ops`),
//! `slab::cpu` (the rseq read, shared with the per-CPU baselines), `slab::rseq` (the slot
//! lock's restartable sequence), the object pointers handed out (zeroing, typed values), and
//! `kmalloc` (its page map, arena and large mappings, and the pointers of the C interface).

mod barn;
mod cache;
mod cache_core;
pub mod implementation;
mod kmalloc;
mod sheaf;
mod slot;
#[cfg(feature = "slowdown")]
mod slowdown;
/// Without the `slowdown` feature the fast paths' delay hooks are the identity.
#[cfg(not(feature = "slowdown"))]
mod slowdown {
    use std::ptr::NonNull;

    #[inline(always)]
    pub(crate) fn on_alloc(object: NonNull<u8>) -> NonNull<u8> {
        object
    }

    #[inline(always)]
    pub(crate) fn on_free(object: NonNull<u8>) -> NonNull<u8> {
        object
    }
}
mod stats;
mod sync;
mod typed;

#[cfg(all(loom, test))]
mod loom_models;

pub use cache::Cache;
pub use cache_core::PrefilledSheaf;
pub use kmalloc::Kmalloc;
pub use slot::{PerCpu, PerThread, SlotStrategy};
pub use typed::{Owned, TypedCache, TypedPrefill};

/// How [`PerCpu`] caches take their CPU slot's lock in this process: `"rseq critical
/// section"` (no locked instruction), or `"atomic compare-exchange"` followed by the reason
/// restartable sequences are not used here (valgrind, an old kernel, another architecture,
/// or `SHEAF_RSEQ=0` in the environment).
pub fn per_cpu_slot_lock() -> String {
    match slab::rseq::support() {
        support @ slab::rseq::Support::Rseq { .. } => support.describe().to_owned(),
        support @ slab::rseq::Support::Unsupported(why) => {
            format!("{} ({why})", support.describe())
        }
    }
}
