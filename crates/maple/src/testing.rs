//! A plain allocator for tests of code built on the tree: every object is one
//! [`System`] allocation, counted, with deferred frees through [`Deferrer`] and prefill
//! emulated by [`BulkPrefill`]. It is a test double, not a design under measurement.
//!
//! Knobs let a test provoke the failures the tree must handle: [`TestAlloc::fail_allocs`]
//! makes every allocation fail, [`TestAlloc::short_prefill`] makes prefills hold fewer
//! objects than asked (a contract violation the tree must detect, not suffer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, BulkPrefill, CacheConfig, Capabilities, ConfigError,
    ObjectAlloc,
};

/// The byte freed objects are filled with before they go back to [`System`].
pub const POISON: u8 = 0xa5;

/// A counting, [`System`]-backed object cache.
#[derive(Debug)]
pub struct TestAlloc {
    object_size: usize,
    sheaf_capacity: usize,
    fail: AtomicBool,
    short: AtomicUsize,
    deferrer: Deferrer<Counted>,
}

#[derive(Debug)]
struct Counted {
    layout: Layout,
    live: AtomicU64,
    allocs: AtomicU64,
    deferred: AtomicU64,
}

impl Counted {
    /// # Safety
    ///
    /// - `object` came from `alloc_one` of this state and is not used after this call.
    unsafe fn free_one(&self, object: NonNull<u8>) {
        // SAFETY: the caller passes an object allocated with `self.layout` by `System`, which
        // no one uses any more: poisoning it makes a late reader see garbage, not old data.
        unsafe {
            object.as_ptr().write_bytes(POISON, self.layout.size());
            System.dealloc(object.as_ptr(), self.layout);
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DeferTarget for Counted {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: deferred objects came from this cache and their grace period is over.
        unsafe { self.free_one(object) };
    }
}

impl TestAlloc {
    /// Objects allocated and not yet freed (deferred frees count until they run).
    pub fn live(&self) -> u64 {
        self.deferrer.get().live.load(Ordering::Relaxed)
    }

    /// Objects allocated so far.
    pub fn allocs(&self) -> u64 {
        self.deferrer.get().allocs.load(Ordering::Relaxed)
    }

    /// Deferred frees requested so far.
    pub fn deferred(&self) -> u64 {
        self.deferrer.get().deferred.load(Ordering::Relaxed)
    }

    /// From now on every allocation (single, bulk, prefill) fails while `fail` is set.
    pub fn fail_allocs(&self, fail: bool) {
        self.fail.store(fail, Ordering::Relaxed);
    }

    /// From now on a prefill of `n` holds only `n - short` objects (a broken allocator).
    pub fn short_prefill(&self, short: usize) {
        self.short.store(short, Ordering::Relaxed);
    }

    fn alloc_one(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        if self.fail.load(Ordering::Relaxed) {
            return None;
        }
        let shared = self.deferrer.get();
        // SAFETY: the layout has a non-zero size (validated config).
        let raw = unsafe {
            if flags.zero() {
                System.alloc_zeroed(shared.layout)
            } else {
                System.alloc(shared.layout)
            }
        };
        let object = NonNull::new(raw)?;
        shared.live.fetch_add(1, Ordering::Relaxed);
        shared.allocs.fetch_add(1, Ordering::Relaxed);
        Some(object)
    }
}

impl ObjectAlloc for TestAlloc {
    const NAME: &'static str = "test-system";
    const DESCRIPTION: &'static str = "System allocations, counted; for tests";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: false,
        uses_page_source: false,
        tracks_live_objects: true,
        sheaf_layer: false,
    };

    type Prefill<'a> = BulkPrefill<'a, Self>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let size = config.object_size.next_multiple_of(config.align);
        let layout = Layout::from_size_align(size, config.align).map_err(|_| ConfigError {
            field: "object_size",
            value: config.object_size.to_string(),
            expected: "a size that rounded to the alignment fits in isize".into(),
        })?;
        Ok(Self {
            object_size: config.object_size,
            sheaf_capacity: config.effective_sheaf_capacity(),
            fail: AtomicBool::new(false),
            short: AtomicUsize::new(0),
            deferrer: Deferrer::new(Counted {
                layout,
                live: AtomicU64::new(0),
                allocs: AtomicU64::new(0),
                deferred: AtomicU64::new(0),
            }),
        })
    }

    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        self.alloc_one(flags)
    }

    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller passes a live object of this cache.
        unsafe { self.deferrer.get().free_one(object) };
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        for i in 0..out.len() {
            match self.alloc_one(flags) {
                Some(object) => {
                    out[i].write(object);
                }
                None => {
                    for slot in &out[..i] {
                        // SAFETY: slots before `i` were written above with live objects.
                        unsafe { self.deferrer.get().free_one(slot.assume_init()) };
                    }
                    return Err(AllocError::OutOfMemory);
                }
            }
        }
        Ok(())
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        for &object in objects {
            // SAFETY: the caller passes live objects of this cache, each once.
            unsafe { self.deferrer.get().free_one(object) };
        }
    }

    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        self.deferrer.get().deferred.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller hands over a live object that is no longer published.
        unsafe { self.deferrer.defer_free(object) };
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        let count = count.saturating_sub(self.short.load(Ordering::Relaxed));
        BulkPrefill::new(self, self.object_size, self.sheaf_capacity, flags, count)
    }

    fn barrier(&self) {
        self.deferrer.barrier();
    }

    fn stats(&self) -> AllocStats {
        AllocStats {
            live_objects: Some(self.live()),
            ..AllocStats::default()
        }
    }
}
