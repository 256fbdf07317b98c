//! `slub-cpu-slab`: the Linux SLUB allocator as it was before per-CPU sheaves, in user space.
//!
//! # The design
//!
//! Every CPU owns one slab, its *CPU slab*, and a free list of that slab's objects, the *CPU
//! free list*. Allocation pops the head of the CPU free list and freeing an object of the CPU
//! slab pushes it, both without a lock: one double-width compare-and-swap on the pair
//! `(freelist, tid)` (the kernel's `this_cpu_cmpxchg_double`; here `lock cmpxchg16b`, fenced in
//! the `pair` module). Every other case takes a slow path:
//!
//! - **Remote free** (an object of a slab that is not this CPU's slab): a compare-and-swap on
//!   the slab's own free list and counters (`__slab_free`). A slab that goes from full to
//!   partial this way joins the freeing CPU's *per-CPU partial list*; a partial slab that
//!   becomes empty on its node's list is released when the node already keeps `min_partial`
//!   slabs.
//! - **CPU free list empty**: under the CPU's slow-path lock (the kernel's `local_lock`), take
//!   the free list that remote frees built on the CPU slab itself; else the next slab of the
//!   per-CPU partial list; else the first slab of the node's partial list (moving a few more
//!   to the per-CPU list); else, unless the request is `NOWAIT`, a new slab from the page
//!   source.
//! - **Per-CPU partial list full**: drained to the node lists, releasing empty slabs beyond
//!   `min_partial`.
//!
//! `min_partial` and the per-CPU partial budget follow the kernel's formulas
//! (`set_min_partial`, `set_cpu_partial`). Counters use the kernel's stat names.
//!
//! # Why the transaction id makes the lockless paths safe
//!
//! A fast path reads the slot's `tid`, *then* its free-list head (and the CPU slab), computes
//! the new head, and issues `cmpxchg16b(slot, (head, tid) → (new_head, tid + 1))`. Every
//! successful update of the slot, by any path, increments `tid`, and the slow path changes the
//! slot only through such updates: it hides the slab pointer *before* the update that takes
//! the free list away, and publishes a new slab *after* the update that installs its list.
//!
//! So if the compare-and-swap succeeds, no update of the slot happened between the `tid` read
//! and the swap: the head is the head, the link read from it is the link (links of objects on
//! a CPU free list are written only by whoever pushes them, before the update that publishes
//! them), and the slab read after the `tid` is the slab that owns the list. This is what
//! defeats ABA: the classic failure — thread A reads head `X` with next `Y`, others pop `X`,
//! pop `Y`, push `X` back, and A's swap installs the allocated `Y` — needs the head to return
//! to `X`, but the `tid` does not return to its old value (a 64-bit counter does not wrap).
//!
//! A thread may be preempted after reading its CPU number and resume on another CPU, or be
//! preempted between its reads and its swap while other threads run on the CPU. The kernel
//! has to worry about the first case because its swap acts on *whatever CPU runs it*, so its
//! tids encode the CPU. Here the swap names the slot it read: after a migration it still
//! targets that slot, now remotely, and the `lock` prefix makes that atomic across CPUs. If
//! anything touched the slot meanwhile, the `tid` moved and the swap fails; the thread then
//! reads its CPU again and retries on its new slot. If nothing touched it, the operation on
//! the old CPU's slab is simply correct. Counters of the retries: `cmpxchg_double_cpu_fail`.
//!
//! # Memory safety of the speculative reads
//!
//! A fast path reads a link before it knows whether its snapshot is still current. SLUB reads
//! it from inside the object; in user space the slab could meanwhile be released and unmapped.
//! Here links live in type-stable slab metadata that outlives the slab (module `meta`), so a
//! stale read reads valid memory and its swap fails. This is the one deliberate departure
//! from SLUB's layout; it also keeps object contents untouched by the allocator (a `ZERO`
//! allocation or poisoning never clobbers a link).
//!
//! # Configuration
//!
//! Slab geometry comes from [`SlabLayout`], pages from the config's page source. SLUB has no
//! sheaves and no barn: `barn_max_full`/`barn_max_empty` do not apply, `sheaf_capacity` is
//! only the capacity reported by [`BulkPrefill`](object_alloc::BulkPrefill) handles, and
//! deferred frees are always per object (`deferred_batching` does not apply). `debug.poison`
//! fills freed objects.
//!
//! # What is not modelled
//!
//! Debug features (red zones, tracking), slab merging, and `remote_node_defrag_ratio` (a CPU
//! only takes partial slabs of its own node). The CPU slot is found from the rseq `cpu_id`
//! that glibc registers, else `sched_getcpu`.
//!
//! # Modules
//!
//! - `cache`: the cache and its CPU slots (`cache.rs`); owns the slot protocol above (the
//!   slab pointer changes only under the slot's lock, hidden before the tid bump that detaches
//!   the free list, shown after the one that attaches it). One file per path beside it:
//!   `cache/alloc.rs` (fast path, `___slab_alloc`), `cache/free.rs` (fast path,
//!   `__slab_free`, moves between lists), `cache/bulk.rs`, `cache/shrink.rs` (shrink, stats,
//!   invariant check) and `cache/lists.rs` (per-CPU and per-node partial lists, each reached
//!   only under its lock).
//! - `meta`: slab metadata (links, counters, state); owns "metadata is type-stable and
//!   outlives its slab", which makes stale reads safe.
//! - `pair`: the `(freelist, tid)` pair and its double-width compare-and-swap; owns "every
//!   successful update bumps the tid".
//! - `stats`: per-CPU counters with the kernel's names.
//!
//! ```
//! use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
//! use slub_cpu_slab::SlubCpuSlab;
//!
//! let cache = SlubCpuSlab::new(&CacheConfig::new(64)).unwrap();
//! let object = cache.alloc(AllocFlags::ZERO).unwrap();
//! // SAFETY: allocated above, freed once.
//! unsafe { cache.free(object) };
//! cache.shrink();
//! assert_eq!(cache.stats().slab_bytes, Some(0));
//! ```

mod cache;
mod meta;
mod pair;
mod stats;

#[cfg(test)]
mod tests;

use std::ptr::NonNull;
use std::sync::Arc;

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc, PageSource};
use slab::SlabLayout;

use crate::cache::Cache;

/// The pre-sheaves SLUB design behind [`ObjectAlloc`]. See the crate documentation.
#[derive(Debug)]
pub struct SlubCpuSlab {
    deferrer: Deferrer<Cache>,
    object_size: usize,
    prefill_capacity: usize,
}

impl SlubCpuSlab {
    /// The page source the slabs come from.
    pub fn page_source(&self) -> &Arc<dyn PageSource> {
        self.cache().page_source()
    }

    /// The geometry of every slab.
    pub fn slab_layout(&self) -> &SlabLayout {
        self.cache().layout()
    }

    /// Checks `inuse + free == objects` for every slab and the node lists' counts; meant for
    /// quiescent points. Panics with a message naming the slab.
    pub fn check_invariants(&self) {
        self.cache().check_invariants();
    }

    #[inline]
    fn cache(&self) -> &Cache {
        self.deferrer.get()
    }
}

impl DeferTarget for Cache {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: `free_deferred`'s caller handed over a live object of this cache.
        unsafe { self.free(object) };
    }
}

impl ObjectAlloc for SlubCpuSlab {
    const NAME: &'static str = "slub-cpu-slab";
    const DESCRIPTION: &'static str = "SLUB before sheaves: per-CPU slab, lockless (freelist, tid) cmpxchg16b, CPU and node partial lists";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: true,
        uses_page_source: true,
        tracks_live_objects: true,
        sheaf_layer: false,
    };

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        if !pair::supported() {
            return Err(ConfigError::new(
                "object_size",
                config.object_size,
                "a CPU with the cmpxchg16b instruction (every x86-64 CPU since 2006)",
            ));
        }
        let cache = Self {
            deferrer: Deferrer::new(Cache::new(config)?),
            object_size: config.object_size,
            prefill_capacity: config.effective_sheaf_capacity(),
        };
        // SAFETY: the cache stays behind the deferrer's `Arc` until dropped, and its `drop`
        // unregisters it first.
        unsafe { slab::fork::register(cache.cache()) };
        Ok(cache)
    }

    object_alloc::object_ops_via!(cache);

    object_alloc::emulated_prefill_and_deferral!(
        deferrer: deferrer,
        object_size: object_size,
        sheaf_capacity: prefill_capacity
    );

    fn stats(&self) -> AllocStats {
        let mut stats = self.cache().stats();
        stats.add("deferred_pending", self.deferrer.pending() as u64);
        stats.add("slab_metadata", self.cache().metadata_created() as u64);
        stats
    }
}
