//! Tests of the lockless protocol itself, driving chosen CPU slots directly so that the
//! interleavings are deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::CacheConfig;
use slab::{LimitedPages, PageSource};

use crate::cache::{Attempt, Cache};

fn cache() -> (Cache, Arc<LimitedPages>) {
    let pages = Arc::new(LimitedPages::unlimited());
    let config = CacheConfig::new(64).with_page_source(pages.clone());
    (Cache::new(&config).unwrap(), pages)
}

/// The ABA scenario that breaks a free list updated by a single-word compare-and-swap: a
/// thread reads head A with next B, others pop A, pop B and push A back, then the stale swap
/// would install B, an object now in use. The tid makes that swap fail.
#[test]
fn a_stale_snapshot_fails_even_when_the_head_is_back() {
    let (cache, pages) = cache();
    let slot = cache.slot_of(0);
    // Give slot 0 a CPU slab with plenty of free objects.
    let first = cache.alloc_on(slot);

    // The "preempted" thread's snapshot.
    let tid = slot.pair.tid();
    let a = slot.pair.freelist();
    let b = cache.next_free(a);
    assert!(a != 0 && b != 0);

    // Other threads run on the CPU meanwhile.
    let Attempt::Done(popped_a) = cache.try_alloc_fast(slot) else {
        panic!("pop A")
    };
    let Attempt::Done(popped_b) = cache.try_alloc_fast(slot) else {
        panic!("pop B")
    };
    assert_eq!((popped_a, popped_b), (a, b));
    // SAFETY: `a` was allocated just above and is freed once.
    unsafe { cache.free_on(slot, a) };
    assert_eq!(slot.pair.freelist(), a, "A is the head again");
    assert_ne!(cache.next_free(a), b, "but its next is no longer B");

    // The stale swap would hand out B a second time: it must fail, on the tid alone.
    assert!(!slot.pair.compare_exchange(a, tid, b));
    assert_eq!(slot.pair.freelist(), a);
    assert_eq!(
        slot.pair.tid(),
        tid + 3,
        "three updates happened since the snapshot"
    );

    // The retried operation sees the current state and hands out A, not B.
    let Attempt::Done(again) = cache.try_alloc_fast(slot) else {
        panic!("retry")
    };
    assert_eq!(again, a);
    // SAFETY: every object here was allocated above and is freed once.
    unsafe {
        cache.free_on(slot, again);
        cache.free_on(slot, b);
        cache.free_on(slot, first);
    }
    cache.check_invariants();
    cache.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

/// A thread that read CPU 0's slot and then runs on CPU 1: if nothing touched slot 0, its
/// operation on slot 0 is simply valid (done remotely); if something did, it fails.
#[test]
fn a_migrated_operation_succeeds_only_on_an_untouched_slot() {
    let (cache, _pages) = cache();
    let slot = cache.slot_of(0);
    let first = cache.alloc_on(slot);
    let tid = slot.pair.tid();
    let head = slot.pair.freelist();
    let next = cache.next_free(head);
    let ran_remotely = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.last().copied()) {
                core_affinity::set_for_current(core);
            }
            // Untouched since the snapshot: the swap on the old CPU's slot goes through.
            slot.pair.compare_exchange(head, tid, next)
        })
        .join()
        .unwrap()
    });
    assert!(ran_remotely);
    // The snapshot is now stale: replaying it fails.
    assert!(!slot.pair.compare_exchange(next, tid, cache.next_free(next)));
    // SAFETY: both objects are owned here and freed once.
    unsafe {
        cache.free_on(slot, head);
        cache.free_on(slot, first);
    }
    cache.check_invariants();
}

/// Several threads hammer the *same* CPU slot (as threads sharing a CPU, or migrated ones,
/// do), each keeping a few objects stamped with its id; any double hand-out shows up as a
/// stamp overwritten by another thread.
#[test]
fn one_slot_under_contention_never_hands_out_an_object_twice() {
    let (cache, pages) = cache();
    let threads = 4;
    let rounds = 20_000;
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..threads {
            let cache = &cache;
            let failed = &failed;
            s.spawn(move || {
                let slot = cache.slot_of(0);
                let stamp = 0x5100 + t as u64;
                let mut held = Vec::new();
                for round in 0..rounds {
                    if held.len() < 8 && (round % 3 != 0 || held.is_empty()) {
                        let object = cache.alloc_on(slot);
                        // SAFETY: the object is ours: 64 writable bytes.
                        unsafe { (object as *mut u64).write(stamp) };
                        held.push(object);
                    } else {
                        let object = held.swap_remove(round % held.len());
                        // SAFETY: ours until freed.
                        if unsafe { (object as *const u64).read() } != stamp {
                            failed.store(true, Ordering::Relaxed);
                        }
                        // SAFETY: allocated by this thread, freed once.
                        unsafe { cache.free_on(slot, object) };
                    }
                }
                for object in held {
                    // SAFETY: as above.
                    unsafe { cache.free_on(slot, object) };
                }
            });
        }
    });
    assert!(
        !failed.load(Ordering::Relaxed),
        "an object was handed out twice"
    );
    cache.check_invariants();
    let stats = cache.stats();
    assert_eq!(stats.live_objects, Some(0));
    cache.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}
