//! Re-entry from a page source, and the slot's size.

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
    let other: &'static Cache<S> = Box::leak(Box::new(Cache::new(&CacheConfig::new(64)).unwrap()));
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
