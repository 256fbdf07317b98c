//! `jemalloc`: jemalloc 5.3 behind [`ObjectAlloc`], linked with prefixed symbols.
//!
//! jemalloc is built from the source bundled with `tikv-jemalloc-sys`, with its symbols
//! prefixed (`_rjem_malloc`, ...), so it serves only the objects of these caches and does not
//! replace the process allocator. Every object is one jemalloc allocation; there is no cache of
//! our own in between. The size asked for is the object size rounded up to the alignment.
//!
//! The calls are the ones jemalloc serves fastest. Only `malloc` and `sdallocx` without flags
//! have jemalloc's inlined thread-cache fast path (`mallocx` always takes the general path), so:
//! - for alignments up to 16, objects come from `malloc(size)`: jemalloc's size classes of
//!   16 bytes and more are 16-byte multiples (its quantum), and the 8-byte class serves
//!   alignments up to 8, so the alignment holds without asking for it;
//! - larger alignments use `mallocx(size, MALLOCX_ALIGN(align))`;
//! - `ZERO` uses `mallocx` with `MALLOCX_ZERO` (and the alignment flag where needed);
//! - frees are sized, `sdallocx(object, size, flags)`, with the same alignment flag as the
//!   allocation (none for the `malloc` case, which keeps the fast path);
//! - bulk allocation uses jemalloc's own batch path, `experimental.batch_alloc` (through
//!   `mallctlbymib`, its name resolved once): it takes whole fresh slabs from the arena for
//!   batches of a slab or more and drains the thread cache for the rest. It may hand out fewer
//!   objects than asked; then the ones it gave are freed and the request fails, so bulk
//!   allocation stays all or nothing (C-BULK-1). Where jemalloc does not know the control, the
//!   cache falls back to one allocation at a time.
//!
//! The flags and the control's MIB are computed once, at creation.
//!
//! What does not apply, and why:
//! - `NOWAIT` cannot be honoured: jemalloc maps new extents when it needs to, and has no "only
//!   from memory already held" call. [`Capabilities::honours_nowait`] is false, so
//!   conformance reports the NOWAIT clauses not applicable.
//! - There is no native prefill: [`BulkPrefill`](object_alloc::BulkPrefill) emulates it with
//!   single allocations.
//! - Live objects are not counted: counting would add a shared counter or a per-thread lookup
//!   to a path that otherwise is exactly jemalloc's. [`AllocStats::live_objects`] is `None`.
//!
//! [`ObjectAlloc::stats`] reports jemalloc's own statistics (built with `--enable-stats`),
//! read with `mallctl` after an `epoch` refresh. They are process-wide: they cover every
//! object of every jemalloc cache in the process, not this cache's alone. Since jemalloc is not
//! the process allocator here, nothing else in the process is counted in them.
//!
//! Deferred frees go through [`Deferrer`], one callback per object.

use std::ffi::{CStr, c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr::{NonNull, null_mut};

use object_alloc::bulk::{alloc_each, free_each};
use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc,
};
use tikv_jemalloc_sys as je;

/// The alignment every `malloc` result of a size that is a multiple of it has (up to
/// jemalloc's quantum, 16 bytes on every 64-bit target it supports).
const JEMALLOC_QUANTUM: usize = 16;

/// Components of the name `experimental.batch_alloc`.
const BATCH_ALLOC_MIB_LEN: usize = 2;

/// The argument of `experimental.batch_alloc` (jemalloc's `batch_alloc_packet_t`).
#[repr(C)]
struct BatchAllocPacket {
    ptrs: *mut *mut c_void,
    num: usize,
    size: usize,
    flags: c_int,
}

/// Resolves `experimental.batch_alloc` to its MIB; `None` if this jemalloc lacks it.
fn batch_alloc_mib() -> Option<[usize; BATCH_ALLOC_MIB_LEN]> {
    let mut mib = [0usize; BATCH_ALLOC_MIB_LEN];
    let mut len = BATCH_ALLOC_MIB_LEN;
    // SAFETY: `mib` has room for `len` components and the name is NUL-terminated.
    let rc = unsafe {
        je::mallctlnametomib(
            c"experimental.batch_alloc".as_ptr(),
            mib.as_mut_ptr(),
            &mut len,
        )
    };
    (rc == 0 && len == BATCH_ALLOC_MIB_LEN).then_some(mib)
}

/// A cache of fixed-size objects served by jemalloc.
#[derive(Debug)]
pub struct JemallocCache {
    /// Bytes asked of jemalloc: the object size rounded up to the alignment.
    size: usize,
    /// `MALLOCX_ALIGN(align)`, or 0 when `malloc` already gives the alignment.
    align_flags: c_int,
    /// The MIB of `experimental.batch_alloc`, if this jemalloc has it.
    batch_alloc: Option<[usize; BATCH_ALLOC_MIB_LEN]>,
    object_size: usize,
    sheaf_capacity: usize,
    deferrer: Deferrer<Shared>,
}

/// What a deferred free needs once the cache itself may be gone.
#[derive(Debug)]
struct Shared {
    size: usize,
    align_flags: c_int,
}

impl DeferTarget for Shared {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: `object` was allocated by jemalloc with this size and alignment flags (a
        // `JemallocCache` defers only its own objects) and its grace period has passed.
        unsafe { je::sdallocx(object.as_ptr().cast(), self.size, self.align_flags) };
    }
}

impl JemallocCache {
    /// Whether objects come from plain `malloc` (true) or `mallocx` with an alignment (false).
    pub fn uses_plain_malloc(&self) -> bool {
        self.align_flags == 0
    }

    /// Bulk allocation through `experimental.batch_alloc`; all or nothing.
    fn batch_alloc(
        &self,
        mib: &[usize; BATCH_ALLOC_MIB_LEN],
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        let zero = if flags.zero() { je::MALLOCX_ZERO } else { 0 };
        let packet = BatchAllocPacket {
            ptrs: out.as_mut_ptr().cast(),
            num: out.len(),
            size: self.size,
            flags: self.align_flags | zero,
        };
        let mut filled: usize = 0;
        let mut filled_len = size_of::<usize>();
        let filled_ptr: *mut usize = &mut filled;
        let packet_ptr: *const BatchAllocPacket = &packet;
        // SAFETY: the control reads a `batch_alloc_packet_t` (layout of `BatchAllocPacket`)
        // whose `ptrs` has room for `num` pointers, and writes the count filled, a `size_t`,
        // to `filled_ptr`; it only reads the packet.
        let rc = unsafe {
            je::mallctlbymib(
                mib.as_ptr(),
                mib.len(),
                filled_ptr.cast::<c_void>(),
                &mut filled_len,
                packet_ptr.cast_mut().cast::<c_void>(),
                size_of::<BatchAllocPacket>(),
            )
        };
        if rc == 0 && filled == out.len() {
            return Ok(());
        }
        // The control checks its arguments before allocating: an error means nothing was.
        let filled = if rc == 0 { filled.min(out.len()) } else { 0 };
        self.give_back(&out[..filled]);
        Err(AllocError::OutOfMemory)
    }

    /// Frees the objects a partial batch handed out.
    #[cold]
    fn give_back(&self, gathered: &[MaybeUninit<NonNull<u8>>]) {
        for slot in gathered {
            // SAFETY: jemalloc wrote this slot with an object allocated with this cache's
            // size and flags, handed out to no one.
            unsafe { self.free(slot.assume_init()) };
        }
    }
}

impl ObjectAlloc for JemallocCache {
    const NAME: &'static str = "jemalloc";
    const DESCRIPTION: &'static str =
        "jemalloc 5.3 (malloc/mallocx, sized sdallocx; prefixed, not the process allocator)";
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
        let align_flags = if config.align <= JEMALLOC_QUANTUM {
            0
        } else {
            je::MALLOCX_ALIGN(config.align)
        };
        Ok(Self {
            size,
            align_flags,
            batch_alloc: batch_alloc_mib(),
            object_size: config.object_size,
            sheaf_capacity: config.effective_sheaf_capacity(),
            deferrer: Deferrer::new(Shared { size, align_flags }),
        })
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        // SAFETY: plain calls into jemalloc with a non-zero size; with `align_flags == 0` the
        // size is a multiple of an alignment of at most the quantum, which `malloc` gives.
        let object = unsafe {
            if flags.zero() {
                je::mallocx(self.size, self.align_flags | je::MALLOCX_ZERO)
            } else if self.align_flags == 0 {
                je::malloc(self.size)
            } else {
                je::mallocx(self.size, self.align_flags)
            }
        };
        NonNull::new(object.cast())
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller guarantees `object` is a live object of this cache, so jemalloc
        // allocated it with this size and alignment flags (`MALLOCX_ZERO` does not matter to
        // `sdallocx`).
        unsafe { je::sdallocx(object.as_ptr().cast(), self.size, self.align_flags) };
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        if let Some(mib) = &self.batch_alloc
            && out.len() > 1
        {
            return self.batch_alloc(mib, flags, out);
        }
        alloc_each(self, flags, out)
    }

    #[inline]
    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        // SAFETY: the caller's contract of `free_bulk` is `free_each`'s.
        unsafe { free_each(self, objects) };
    }

    object_alloc::emulated_prefill_and_deferral!(
        deferrer: deferrer,
        object_size: object_size,
        sheaf_capacity: sheaf_capacity
    );

    /// Flushes the calling thread's tcache (`thread.tcache.flush`): the objects it caches go
    /// back to their slabs, where the batch path can hand them out again. jemalloc returns
    /// empty pages to the system on its own schedule (decay), not here.
    fn shrink(&self) {
        // SAFETY: `thread.tcache.flush` takes no input and writes no output; it is a valid
        // control name, and a failure (tcache disabled) leaves nothing to flush.
        unsafe {
            je::mallctl(
                c"thread.tcache.flush".as_ptr(),
                null_mut(),
                null_mut(),
                null_mut(),
                0,
            );
        }
    }

    /// jemalloc's process-wide statistics (see the crate docs), refreshed with `epoch`:
    /// `process_jemalloc_allocated_bytes` (`stats.allocated`: bytes in objects handed out),
    /// `process_jemalloc_active_bytes` (`stats.active`: bytes in active pages),
    /// `process_jemalloc_resident_bytes` (`stats.resident`) and
    /// `process_jemalloc_mapped_bytes` (`stats.mapped`). A figure jemalloc refuses to give is
    /// left out. No gauge of [`AllocStats`] applies.
    fn stats(&self) -> AllocStats {
        let mut stats = AllocStats::default();
        if !refresh_epoch() {
            return stats;
        }
        let figures = [
            ("process_jemalloc_allocated_bytes", c"stats.allocated"),
            ("process_jemalloc_active_bytes", c"stats.active"),
            ("process_jemalloc_resident_bytes", c"stats.resident"),
            ("process_jemalloc_mapped_bytes", c"stats.mapped"),
        ];
        for (name, control) in figures {
            if let Some(value) = read_size(control) {
                stats.add(name, value as u64);
            }
        }
        stats
    }
}

/// Asks jemalloc to refresh the statistics that `mallctl` reads; false if it refused.
fn refresh_epoch() -> bool {
    let mut epoch: u64 = 1;
    let mut len = size_of::<u64>();
    let epoch_ptr: *mut u64 = &mut epoch;
    // SAFETY: "epoch" reads and writes a `uint64_t`: `epoch_ptr` is valid for both, and `len`
    // holds its size.
    let rc = unsafe {
        je::mallctl(
            c"epoch".as_ptr(),
            epoch_ptr.cast::<c_void>(),
            &mut len,
            epoch_ptr.cast::<c_void>(),
            size_of::<u64>(),
        )
    };
    rc == 0
}

/// Reads a `size_t` statistic.
fn read_size(control: &CStr) -> Option<usize> {
    let mut value: usize = 0;
    let mut len = size_of::<usize>();
    let value_ptr: *mut usize = &mut value;
    // SAFETY: the statistics read here are `size_t`: `value_ptr` is valid for that write and
    // `len` holds its size; nothing is written to jemalloc.
    let rc = unsafe {
        je::mallctl(
            control.as_ptr(),
            value_ptr.cast::<c_void>(),
            &mut len,
            null_mut(),
            0,
        )
    };
    (rc == 0 && len == size_of::<usize>()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_malloc_is_chosen_up_to_the_quantum() {
        for (size, align, plain) in [
            (8, 8, true),
            (24, 16, true),
            (64, 64, false),
            (8, 4096, false),
        ] {
            let cache = JemallocCache::new(&CacheConfig::new(size).with_align(align)).unwrap();
            assert_eq!(
                cache.uses_plain_malloc(),
                plain,
                "size {size}, align {align}"
            );
        }
        let cache = JemallocCache::new(&CacheConfig::new(24).with_align(16)).unwrap();
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
    fn bulk_allocation_uses_the_batch_control() {
        let cache = JemallocCache::new(&CacheConfig::new(64)).unwrap();
        assert!(
            cache.batch_alloc.is_some(),
            "experimental.batch_alloc not found: bulk allocation would loop"
        );
    }

    #[test]
    fn stats_see_allocated_bytes_grow() {
        const OBJECTS: usize = 16 * 1024;
        const SIZE: usize = 4096;
        let cache = JemallocCache::new(&CacheConfig::new(SIZE)).unwrap();
        let before = cache.stats();
        assert!(
            before
                .counters
                .contains_key("process_jemalloc_allocated_bytes"),
            "jemalloc was built without statistics: {before:?}"
        );
        let objects: Vec<_> = (0..OBJECTS)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        let after = cache.stats();
        // SAFETY: allocated above, live, each once.
        unsafe { cache.free_bulk(&objects) };
        let (before, after) = (
            before.counter("process_jemalloc_allocated_bytes"),
            after.counter("process_jemalloc_allocated_bytes"),
        );
        // Process-wide: other tests allocate and free meanwhile, so ask for half of the 64 MiB.
        assert!(
            after >= before + (OBJECTS * SIZE / 2) as u64,
            "allocated {before} -> {after} after allocating {} bytes",
            OBJECTS * SIZE
        );
    }
}
