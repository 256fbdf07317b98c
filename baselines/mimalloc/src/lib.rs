//! `mimalloc`: Microsoft's mimalloc behind [`ObjectAlloc`].
//!
//! Every object is one mimalloc allocation; there is no cache of our own in between. The size
//! asked for is the object size rounded up to the alignment. mimalloc already hands out every
//! block of more than 8 bytes aligned to 16 (its size classes are 16-byte multiples) and
//! 8-byte blocks aligned to 8, so for alignments up to 16 no alignment needs asking for. The
//! cheapest correct call is chosen once, at creation ([`MimallocCall`]):
//! - `mi_malloc_small`/`mi_zalloc_small` for sizes up to `MI_SMALL_SIZE_MAX` (1 KiB): it skips
//!   the size test of `mi_malloc` (12 instructions less per 64-byte alloc+free pair, counted
//!   with callgrind);
//! - `mi_malloc`/`mi_zalloc` for larger sizes;
//! - `mi_malloc_aligned`/`mi_zalloc_aligned` for alignments above 16; its first step tries a
//!   naturally aligned block from the same free list.
//!
//! Frees are `mi_free` (in release builds `mi_free_size_aligned` only forwards to it).
//!
//! What does not apply, and why:
//! - `NOWAIT` cannot be honoured: mimalloc takes new pages from the OS when it needs to, and
//!   has no "only from memory already held" call. [`Capabilities::honours_nowait`] is false, so
//!   conformance reports the NOWAIT clauses not applicable.
//! - There is no native prefill: [`BulkPrefill`](object_alloc::BulkPrefill) emulates it with
//!   single allocations.
//! - Live objects are not counted: counting would add a shared counter or a per-thread lookup
//!   to a path that otherwise is exactly mimalloc's. [`AllocStats::live_objects`] is `None`.
//!
//! [`ObjectAlloc::stats`] reports what mimalloc tells without printing, from
//! `mi_process_info`: process-wide figures (all mimalloc memory in the process, and the
//! process's peak resident set), not this cache's alone.
//!
//! Deferred frees go through [`Deferrer`], one callback per object.

use std::ptr::{NonNull, null_mut};

use libmimalloc_sys as mi;
use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{AllocFlags, AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc};

/// The largest alignment every mimalloc block of more than 8 bytes has (`MI_MAX_ALIGN_SIZE`).
const MIMALLOC_NATURAL_ALIGN: usize = 16;

/// The mimalloc entry points a cache allocates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MimallocCall {
    /// `mi_malloc_small`/`mi_zalloc_small`: sizes up to `MI_SMALL_SIZE_MAX`, alignment up to 16.
    Small,
    /// `mi_malloc`/`mi_zalloc`: larger sizes, alignment up to 16.
    Plain,
    /// `mi_malloc_aligned`/`mi_zalloc_aligned`: alignment above 16.
    Aligned,
}

/// A cache of fixed-size objects served by mimalloc.
#[derive(Debug)]
pub struct MimallocCache {
    /// Bytes asked of mimalloc: the object size rounded up to the alignment.
    size: usize,
    align: usize,
    /// The entry points used (chosen at creation).
    call: MimallocCall,
    object_size: usize,
    sheaf_capacity: usize,
    deferrer: Deferrer<Shared>,
}

/// Deferred frees need nothing but `mi_free`.
#[derive(Debug)]
struct Shared;

impl DeferTarget for Shared {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: `object` was allocated by mimalloc (a `MimallocCache` defers only its own
        // objects) and its grace period has passed.
        unsafe { mi::mi_free(object.as_ptr().cast()) };
    }
}

impl MimallocCache {
    /// The mimalloc entry points this cache allocates with.
    pub fn call(&self) -> MimallocCall {
        self.call
    }
}

impl ObjectAlloc for MimallocCache {
    const NAME: &'static str = "mimalloc";
    const DESCRIPTION: &'static str = "mimalloc (mi_malloc/mi_malloc_aligned, mi_free)";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: false,
        uses_page_source: false,
        tracks_live_objects: false,
        sheaf_layer: false,
    };

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let size = config.object_size.next_multiple_of(config.align);
        let call = if config.align > MIMALLOC_NATURAL_ALIGN {
            MimallocCall::Aligned
        } else if size <= mi::MI_SMALL_SIZE_MAX {
            MimallocCall::Small
        } else {
            MimallocCall::Plain
        };
        Ok(Self {
            size,
            align: config.align,
            call,
            object_size: config.object_size,
            sheaf_capacity: config.effective_sheaf_capacity(),
            deferrer: Deferrer::new(Shared),
        })
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        // SAFETY: plain calls into mimalloc with a non-zero size and a power-of-two
        // alignment (validated). `Small` and `Plain` are chosen only for a size that is a
        // multiple of an alignment of at most 16, which every mimalloc block of that size has,
        // and `Small` only for sizes up to `MI_SMALL_SIZE_MAX`.
        let object = unsafe {
            match (self.call, flags.zero()) {
                (MimallocCall::Small, false) => mi::mi_malloc_small(self.size),
                (MimallocCall::Small, true) => mi::mi_zalloc_small(self.size),
                (MimallocCall::Plain, false) => mi::mi_malloc(self.size),
                (MimallocCall::Plain, true) => mi::mi_zalloc(self.size),
                (MimallocCall::Aligned, false) => mi::mi_malloc_aligned(self.size, self.align),
                (MimallocCall::Aligned, true) => mi::mi_zalloc_aligned(self.size, self.align),
            }
        };
        NonNull::new(object.cast())
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller guarantees `object` is a live object of this cache, so mimalloc
        // allocated it.
        unsafe { mi::mi_free(object.as_ptr().cast()) };
    }

    object_alloc::bulk_by_single_calls!();

    object_alloc::emulated_prefill_and_deferral!(
        deferrer: deferrer,
        object_size: object_size,
        sheaf_capacity: sheaf_capacity
    );

    /// Process-wide figures from `mi_process_info` (see the crate docs):
    /// `process_mimalloc_committed_bytes` and `process_mimalloc_peak_committed_bytes` (memory
    /// mimalloc holds committed, for every mimalloc allocation in the process),
    /// and `process_peak_rss_bytes` (the whole process; on Linux mimalloc cannot tell the
    /// current resident set, so it is not reported). No gauge of [`AllocStats`] applies.
    fn stats(&self) -> AllocStats {
        let mut peak_rss = 0;
        let mut current_commit = 0;
        let mut peak_commit = 0;
        // SAFETY: every out-pointer is either valid for a `usize` write or null, which
        // `mi_process_info` skips.
        unsafe {
            mi::mi_process_info(
                null_mut(),
                null_mut(),
                null_mut(),
                null_mut(),
                &mut peak_rss,
                &mut current_commit,
                &mut peak_commit,
                null_mut(),
            );
        }
        let mut stats = AllocStats::default();
        stats.add("process_mimalloc_committed_bytes", current_commit as u64);
        stats.add("process_mimalloc_peak_committed_bytes", peak_commit as u64);
        stats.add("process_peak_rss_bytes", peak_rss as u64);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheapest_correct_call_is_chosen() {
        for (size, align, call) in [
            (8, 8, MimallocCall::Small),
            (24, 16, MimallocCall::Small),
            (1024, 8, MimallocCall::Small),
            (1025, 8, MimallocCall::Plain),
            (4096, 16, MimallocCall::Plain),
            (64, 64, MimallocCall::Aligned),
            (8, 4096, MimallocCall::Aligned),
        ] {
            let cache = MimallocCache::new(&CacheConfig::new(size).with_align(align)).unwrap();
            assert_eq!(cache.call(), call, "size {size}, align {align}");
        }
        let cache = MimallocCache::new(&CacheConfig::new(24).with_align(16)).unwrap();
        let objects: Vec<_> = (0..1000)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        for &object in &objects {
            assert_eq!(object.as_ptr() as usize % 16, 0, "{object:p}");
        }
        // SAFETY: allocated above, live, each once.
        unsafe { cache.free_bulk(&objects) };
    }

    #[test]
    fn stats_see_memory_committed() {
        const OBJECTS: usize = 16 * 1024;
        const SIZE: usize = 4096;
        let cache = MimallocCache::new(&CacheConfig::new(SIZE)).unwrap();
        let objects: Vec<_> = (0..OBJECTS)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        let stats = cache.stats();
        // SAFETY: allocated above, live, each once.
        unsafe { cache.free_bulk(&objects) };
        let committed = stats.counter("process_mimalloc_committed_bytes");
        assert!(
            committed >= (OBJECTS * SIZE) as u64,
            "mimalloc reports {committed} bytes committed while {} bytes are live",
            OBJECTS * SIZE
        );
        assert!(stats.counter("process_peak_rss_bytes") > 0);
    }
}
