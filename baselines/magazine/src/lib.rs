//! `magazine`: Bonwick and Adams' magazine layer and depot (USENIX 2001, as shipped in
//! libumem), over the shared slab layer.
//!
//! # The design
//!
//! Each CPU has a cache of two *magazines* — arrays of free objects ("rounds") — called
//! `loaded` and `previous`, behind the CPU's lock. Allocation pops a round from `loaded`;
//! freeing pushes one. When `loaded` cannot serve:
//!
//! - **alloc**, `loaded` empty: if `previous` is full, swap them; else exchange the empty
//!   `previous` for a full magazine from the *depot* (`previous` goes to the depot's empty
//!   list, `loaded` becomes `previous`); else allocate one object from the slab layer.
//! - **free**, `loaded` full: if `previous` is empty, swap them; else exchange the full
//!   `previous` for an empty magazine from the depot, or a newly allocated one.
//!
//! Invariant (Bonwick's): `previous` is always either full or empty, so a CPU can absorb
//! `magsize` allocations or frees in either direction without touching the depot, and at most
//! one depot exchange is needed per `magsize` operations.
//!
//! The depot holds a list of full and a list of empty magazines behind one lock. An
//! acquisition that finds the lock held is counted (`depot_contended`, libumem's
//! `cache_depot_contention`).
//!
//! # Dynamic magazine size
//!
//! libumem grows the magazine size of a cache whose depot is contended: every update interval,
//! if the depot lock was contended more than `umem_depot_contention` times since the previous
//! update and the buffer size allows it (`chunksize < mt_maxbuf` of the current magazine type),
//! every CPU's magazines are purged to the slabs and the cache moves to the next magazine type
//! (1, 3, 7, 15, 31, 47, 63, 95, 143 rounds). Here the update runs inline, on the depot
//! path, when the interval has passed ([`MagazineTuning`]; libumem runs it from a timer), and
//! the resize is done by the thread that found it due, after releasing its own CPU lock.
//! Bigger magazines mean fewer depot trips per object, hence less contention.
//!
//! # Mapping of the shared configuration
//!
//! - `sheaf_capacity`: the starting rounds per magazine when given (a magazine is the analog
//!   of a sheaf; `Some(0)` disables the magazine layer, as libumem's `UMF_NOMAGAZINE`); when
//!   `None`, libumem's magazine type for the object size (15 rounds for 64-byte objects). It is
//!   also the capacity of [`BulkPrefill`](object_alloc::BulkPrefill) handles.
//! - `barn_max_full` / `barn_max_empty`: hard limits on the depot's full and empty lists.
//!   libumem bounds the depot instead by reaping, each interval, the magazines its working set
//!   did not use; the limits play the same role (bounding memory cached above the slabs) and
//!   match the sheaf barn's, so the two designs cache comparable amounts. A full magazine the
//!   depot refuses has its rounds freed to the slabs; a refused empty one is freed.
//! - `nodes`: libumem has one depot per cache; so does this design. Slabs come from the node of
//!   the allocating CPU.
//! - `deferred_batching` does not apply: deferred frees are per object.
//! - `debug.poison`: objects are poisoned as they enter a magazine.
//!
//! # The CPU lock
//!
//! A test-and-test-and-set lock that yields when held (module `lock`, where the choice is
//! explained): libumem's per-CPU mutex, minus the sleeping.
//!
//! # Modules
//!
//! - `cache`: the CPU magazines, the depot and the alloc and free paths (`cache.rs`); owns
//!   Bonwick's invariant and the depot limits. Beside it: `cache/magazine.rs` (magazine types
//!   and sizes, rounds), `cache/stat.rs` (event counters, bumped only under their CPU's lock),
//!   `cache/bulk.rs`, and `cache/resize.rs` (resize, purge, stats: the paths that lock every
//!   CPU, then the depot).
//! - `lock`: the per-CPU lock and its reset in a forked child.
//!
//! ```
//! use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
//! use magazine::MagazineCache;
//!
//! let cache = MagazineCache::new(&CacheConfig::new(64)).unwrap();
//! let object = cache.alloc(AllocFlags::ZERO).unwrap();
//! // SAFETY: allocated above, freed once.
//! unsafe { cache.free(object) };
//! cache.shrink();
//! assert_eq!(cache.stats().slab_bytes, Some(0));
//! ```

mod cache;
mod lock;

#[cfg(test)]
mod tests;

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc, PageSource};

use crate::cache::Cache;

/// When the magazine size grows (see the crate documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MagazineTuning {
    /// Contended depot acquisitions per interval above which magazines grow
    /// (libumem's `umem_depot_contention`, 2).
    pub contention_threshold: u64,
    /// How often contention is assessed. libumem assesses it every 10 s from a timer; the
    /// default here is 1 s, so that runs of a few seconds can adapt.
    pub update_interval: Duration,
}

impl Default for MagazineTuning {
    fn default() -> Self {
        Self {
            contention_threshold: 2,
            update_interval: Duration::from_secs(1),
        }
    }
}

/// Bonwick's magazines and depot behind [`ObjectAlloc`]. See the crate documentation.
#[derive(Debug)]
pub struct MagazineCache {
    deferrer: Deferrer<Cache>,
    object_size: usize,
    prefill_capacity: usize,
}

impl MagazineCache {
    /// A cache with chosen resize tuning (tests make resizing deterministic with it).
    pub fn with_tuning(config: &CacheConfig, tuning: MagazineTuning) -> Result<Self, ConfigError> {
        let cache = Self {
            deferrer: Deferrer::new(Cache::new(config, tuning)?),
            object_size: config.object_size,
            prefill_capacity: config.effective_sheaf_capacity(),
        };
        // SAFETY: the cache stays behind the deferrer's `Arc` until dropped, and its `drop`
        // unregisters it first.
        unsafe { slab::fork::register(cache.cache()) };
        Ok(cache)
    }

    /// The page source the slabs come from.
    pub fn page_source(&self) -> &Arc<dyn PageSource> {
        self.cache().pool().page_source()
    }

    /// Checks the slab layer's invariants; panics naming the slab.
    pub fn check_invariants(&self) {
        self.cache().pool().check_invariants();
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

impl ObjectAlloc for MagazineCache {
    const NAME: &'static str = "magazine";
    const DESCRIPTION: &'static str = "Bonwick/libumem magazines: per-CPU loaded and previous magazines, a depot, resizing on depot contention";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: true,
        uses_page_source: true,
        tracks_live_objects: true,
        sheaf_layer: false,
    };

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        Self::with_tuning(config, MagazineTuning::default())
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
        stats
    }
}
