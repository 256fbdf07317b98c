//! No operation waits for a descheduled thread (C-CONC-4): a thread blocked inside the page
//! source, in the middle of a refill or of a flush that gives slabs back, holds up no other
//! thread on its CPU, and does not keep the CPU slot while the page source runs.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use object_alloc::{AllocFlags, CacheConfig, PageSource};
use sheaf::{Cache, SlotStrategy};

use crate::common::*;

/// Pins the calling thread to `cpu` (where the machine allows it).
fn pin(cpu: usize) {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu);
    let _ = sched_setaffinity(None, &set);
}

/// A thread blocks in the page source during `first` (an operation that needs a new slab
/// for an empty cache); another thread on the same CPU allocates, frees, prefills and returns
/// meanwhile. Every one of those completes while the first thread is still blocked, and the
/// allocation and free find the CPU slot free (the first thread released it before calling
/// the page source). `first` returns an object it allocated, which is freed here.
fn blocked_in_the_page_source<S: SlotStrategy>(first: impl FnOnce(&Cache<S>) -> usize + Send) {
    blocked_in_the_page_source_with::<S>(CacheConfig::new(64), GatedPages::arm, |cache, _| {
        first(cache)
    });
}

/// [`blocked_in_the_page_source`] with a config (its page source replaced) and the gate
/// armed by `arm`; `first` gets the gate too, to arm it itself when it is ready.
fn blocked_in_the_page_source_with<S: SlotStrategy>(
    config: CacheConfig,
    arm: fn(&GatedPages),
    first: impl FnOnce(&Cache<S>, &GatedPages) -> usize + Send,
) {
    let pages = Arc::new(GatedPages::default());
    let config = config
        .with_sheaf_capacity(8)
        .with_page_source(pages.clone() as Arc<dyn PageSource>);
    let cache: Cache<S> = Cache::new(&config).unwrap();
    let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
    pin(cpu);
    std::thread::scope(|s| {
        arm(&pages);
        let blocked = s.spawn(|| {
            pin(cpu);
            first(&cache, &pages)
        });
        assert!(
            pages.wait_blocked(),
            "the first thread never reached the page source"
        );
        // A fork made by another test of this process holds every slot of every cache for a
        // moment (`slab::fork`): tried a few times, a slot that the blocked thread held would
        // be busy every time.
        let mut slot_busy = 0;
        for _ in 0..20 {
            let before = counter(&cache, "cpu_slot_busy");
            let object = cache.alloc(AllocFlags::empty()).expect("memory");
            // SAFETY: allocated just above, freed once.
            unsafe { cache.free(object) };
            slot_busy = counter(&cache, "cpu_slot_busy") - before;
            if slot_busy == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut sheaf = cache.prefill(AllocFlags::empty(), 5).expect("memory");
        let object = sheaf.alloc(AllocFlags::empty()).expect("reserved");
        drop(sheaf);
        // SAFETY: allocated from the prefilled sheaf, freed once.
        unsafe { cache.free(object) };
        let still_blocked = !blocked.is_finished();
        pages.open();
        let object = blocked.join().unwrap();
        assert!(
            still_blocked,
            "the page source's gate timed out: something waited"
        );
        assert_eq!(
            slot_busy, 0,
            "the CPU slot stayed held through the page source call"
        );
        // SAFETY: allocated by the other thread, handed over, freed once.
        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
    });
    cache.barrier();
    cache.shrink();
    assert!(cache.check_invariants());
    assert_eq!(live(&cache), 0);
    assert_eq!(pages.stats().held_bytes, 0);
}

both_strategies! {
    /// The first thread blocks in its allocation's refill (C-CONC-4).
    fn c_conc_4_a_thread_blocked_in_an_allocation_refill_holds_up_no_one<S>() {
        blocked_in_the_page_source::<S>(|cache| {
            cache.alloc(AllocFlags::empty()).expect("memory").as_ptr() as usize
        });
    }
}

both_strategies! {
    /// The first thread blocks in its prefill's top-up (C-CONC-4).
    fn c_conc_4_a_thread_blocked_in_a_prefill_top_up_holds_up_no_one<S>() {
        blocked_in_the_page_source::<S>(|cache| {
            let mut sheaf = cache.prefill(AllocFlags::empty(), 5).expect("memory");
            sheaf.alloc(AllocFlags::empty()).expect("reserved").as_ptr() as usize
        });
    }
}

both_strategies! {
    /// The first thread blocks in a bulk allocation that goes past what its slot caches and
    /// takes the rest from new slabs (C-CONC-4).
    fn c_conc_4_a_thread_blocked_in_a_bulk_allocation_holds_up_no_one<S>() {
        blocked_in_the_page_source::<S>(|cache| {
            let mut out = [std::mem::MaybeUninit::uninit(); 40];
            cache
                .alloc_bulk(AllocFlags::empty(), &mut out)
                .expect("memory");
            // SAFETY: every entry was written by the successful `alloc_bulk`.
            let objects: Vec<NonNull<u8>> =
                out.iter().map(|o| unsafe { o.assume_init() }).collect();
            // SAFETY: allocated just above, each freed once; the first is handed back.
            unsafe { cache.free_bulk(&objects[1..]) };
            objects[0].as_ptr() as usize
        });
    }
}

both_strategies! {
    /// The first thread blocks in the page source while a free gives slabs back: its slot's
    /// sheaves are full and the barn takes none, so the free flushes a sheaf, which empties
    /// more slabs than the pool keeps (C-CONC-4).
    fn c_conc_4_a_thread_blocked_releasing_slabs_in_a_free_holds_up_no_one<S>() {
        let config = CacheConfig::new(1024).with_barn_limits(0, 0);
        blocked_in_the_page_source_with::<S>(config, |_| {}, |cache, pages| {
            let objects: Vec<NonNull<u8>> = (0..400)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            pages.arm_free();
            for &object in &objects[1..] {
                // SAFETY: allocated just above, freed once; the first is handed back.
                unsafe { cache.free(object) };
            }
            objects[0].as_ptr() as usize
        });
    }
}
