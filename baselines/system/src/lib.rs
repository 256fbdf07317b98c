//! `system`: the platform allocator (glibc's `malloc` on Linux) behind [`ObjectAlloc`].
//!
//! Every object is one allocation of [`std::alloc::System`] with the cache's layout; there is
//! no cache of our own in between, so the figures are glibc's. The layout's size is the object
//! size rounded up to the alignment. That costs nothing in memory (glibc's chunks are 16-byte
//! multiples anyway, and slab designs round the same way) and it makes `System` take its
//! cheapest path: for an alignment of at most 16 bytes and no larger than the size, `System`
//! calls `malloc`/`calloc` directly, and only larger alignments go through `posix_memalign`.
//! Frees are always `free`.
//!
//! What does not apply, and why:
//! - `NOWAIT` cannot be honoured: `malloc` grows its heap when it needs to, and no call says
//!   "only from memory already held". [`Capabilities::honours_nowait`] is false, so conformance
//!   reports the NOWAIT clauses not applicable.
//! - There is no native prefill: [`BulkPrefill`](object_alloc::BulkPrefill) emulates it with
//!   single allocations.
//! - Live objects are not counted: counting them would put a shared counter (or a per-thread
//!   lookup) on a path that otherwise is exactly glibc's. [`AllocStats::live_objects`] is `None`.
//!
//! [`ObjectAlloc::stats`] reports what glibc can tell through `mallinfo2()`: process-wide
//! figures of glibc's heap, which include every `malloc` in the process (on Linux the Rust
//! global allocator is also glibc), not only this cache's objects.
//!
//! Deferred frees go through [`Deferrer`], one callback per object, as a general-purpose
//! allocator with `kfree_rcu`-style deferral would do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{AllocFlags, AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc};

/// A cache of fixed-size objects served by the platform allocator.
#[derive(Debug)]
pub struct SystemCache {
    /// The layout of every object; kept here (not behind the deferrer's `Arc`) for the hot path.
    layout: Layout,
    object_size: usize,
    sheaf_capacity: usize,
    deferrer: Deferrer<Shared>,
}

/// What a deferred free needs once the cache itself may be gone.
#[derive(Debug)]
struct Shared {
    layout: Layout,
}

impl DeferTarget for Shared {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: `object` was allocated by `System` with `self.layout` (a `SystemCache`
        // defers only its own objects) and its grace period has passed.
        unsafe { System.dealloc(object.as_ptr(), self.layout) };
    }
}

impl SystemCache {
    /// The layout every object is allocated with.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

/// The layout for objects of `config`: the size rounded up to the alignment.
fn object_layout(config: &CacheConfig) -> Result<Layout, ConfigError> {
    let size = config.object_size.next_multiple_of(config.align);
    Layout::from_size_align(size, config.align).map_err(|_| {
        ConfigError::new(
            "object_size",
            config.object_size,
            format!(
                "a size that rounded up to alignment {} fits a layout",
                config.align
            ),
        )
    })
}

impl ObjectAlloc for SystemCache {
    const NAME: &'static str = "system";
    const DESCRIPTION: &'static str =
        "the platform allocator (glibc malloc/free) through std::alloc::System";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: false,
        uses_page_source: false,
        tracks_live_objects: false,
        sheaf_layer: false,
    };

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let layout = object_layout(config)?;
        Ok(Self {
            layout,
            object_size: config.object_size,
            sheaf_capacity: config.effective_sheaf_capacity(),
            deferrer: Deferrer::new(Shared { layout }),
        })
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        // SAFETY: the layout's size is at least 1 (`validate` refuses a zero object size).
        let object = unsafe {
            if flags.zero() {
                System.alloc_zeroed(self.layout)
            } else {
                System.alloc(self.layout)
            }
        };
        NonNull::new(object)
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller guarantees `object` is a live object of this cache, so it was
        // allocated by `System` with `self.layout`.
        unsafe { System.dealloc(object.as_ptr(), self.layout) };
    }

    object_alloc::bulk_by_single_calls!();

    object_alloc::emulated_prefill_and_deferral!(
        deferrer: deferrer,
        object_size: object_size,
        sheaf_capacity: sheaf_capacity
    );

    /// Process-wide figures of glibc's heap, from `mallinfo2()` (see the crate docs):
    /// `process_malloc_in_use_bytes` (arena chunks in use plus mmapped chunks),
    /// `process_malloc_mmapped_bytes`, `process_malloc_arena_bytes` (heap obtained with `sbrk`
    /// and arena mappings) and `process_malloc_free_bytes` (free chunks kept in the arenas).
    /// No gauge of [`AllocStats`] applies; on a platform other than glibc the counters are
    /// absent.
    fn stats(&self) -> AllocStats {
        let mut stats = AllocStats::default();
        glibc::add_heap_figures(&mut stats);
        stats
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use object_alloc::AllocStats;

    /// glibc's `struct mallinfo2` (glibc 2.33 and later): every field a `size_t`.
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }

    unsafe extern "C" {
        /// Summed over all arenas; takes each arena's lock in turn.
        fn mallinfo2() -> Mallinfo2;
    }

    pub(super) fn add_heap_figures(stats: &mut AllocStats) {
        // SAFETY: `mallinfo2` has no preconditions and returns a plain struct by value.
        let info = unsafe { mallinfo2() };
        let figures = [
            ("process_malloc_in_use_bytes", info.uordblks + info.hblkhd),
            ("process_malloc_mmapped_bytes", info.hblkhd),
            ("process_malloc_arena_bytes", info.arena),
            ("process_malloc_free_bytes", info.fordblks),
        ];
        for (name, value) in figures {
            stats.add(name, value as u64);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    use object_alloc::AllocStats;

    /// Not glibc: nothing to report.
    pub(super) fn add_heap_figures(_stats: &mut AllocStats) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rounds_the_size_up_to_the_alignment() {
        let cache = SystemCache::new(&CacheConfig::new(24).with_align(16)).unwrap();
        assert_eq!(cache.layout(), Layout::from_size_align(32, 16).unwrap());
        let cache = SystemCache::new(&CacheConfig::new(8).with_align(4096)).unwrap();
        assert_eq!(cache.layout(), Layout::from_size_align(4096, 4096).unwrap());
        let cache = SystemCache::new(&CacheConfig::new(100).with_align(8)).unwrap();
        assert_eq!(cache.layout(), Layout::from_size_align(104, 8).unwrap());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn stats_see_the_heap_grow() {
        const OBJECTS: usize = 16 * 1024;
        const SIZE: usize = 4096;
        let cache = SystemCache::new(&CacheConfig::new(SIZE)).unwrap();
        let before = cache.stats().counter("process_malloc_in_use_bytes");
        let objects: Vec<_> = (0..OBJECTS)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        let after = cache.stats().counter("process_malloc_in_use_bytes");
        // SAFETY: allocated above, live, each once.
        unsafe { cache.free_bulk(&objects) };
        // Process-wide: other tests allocate and free meanwhile, so ask for half of the 64 MiB.
        assert!(
            after >= before + (OBJECTS * SIZE / 2) as u64,
            "in use {before} -> {after} after allocating {} bytes",
            OBJECTS * SIZE
        );
    }
}
