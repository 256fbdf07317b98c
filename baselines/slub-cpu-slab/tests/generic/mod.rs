//! Tests every slab-based design of `baselines/` passes, generic over `A: ObjectAlloc`.
//!
//! Each design's integration tests include this module and instantiate
//! [`generic_tests!`](crate::generic_tests) with its type. Every check goes through the
//! public `ObjectAlloc` API and a `LimitedPages` page source, so that page accounting (nothing
//! held after everything is freed and the cache shrunk) is checked everywhere.

#![allow(dead_code)]

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use object_alloc::{
    AllocError, AllocFlags, CacheConfig, DebugOptions, NodeMap, ObjectAlloc, Prefill, rcu,
};
use slab::{LimitedPages, PageSource};

/// A cache of `A` over a fresh, unlimited `LimitedPages`.
pub(crate) fn new_cache<A: ObjectAlloc>(config: CacheConfig) -> (A, Arc<LimitedPages>) {
    let pages = Arc::new(LimitedPages::unlimited());
    let cache = A::new(&config.with_page_source(pages.clone())).expect("valid config");
    (cache, pages)
}

/// Frees `objects`, shrinks, and checks that nothing is live and no page is held.
pub(crate) fn release_all<A: ObjectAlloc>(
    cache: &A,
    pages: &LimitedPages,
    objects: Vec<NonNull<u8>>,
) {
    // SAFETY: the caller hands over live objects of `cache`, each once.
    unsafe { cache.free_bulk(&objects) };
    cache.barrier();
    assert_eq!(cache.stats().live_objects, Some(0), "objects still live");
    cache.shrink();
    assert_eq!(
        pages.stats().held_bytes,
        0,
        "pages still held after every object was freed and the cache shrunk"
    );
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

fn bulk<A: ObjectAlloc>(
    cache: &A,
    flags: AllocFlags,
    n: usize,
) -> Result<Vec<NonNull<u8>>, AllocError> {
    let mut out = vec![MaybeUninit::uninit(); n];
    cache.alloc_bulk(flags, &mut out)?;
    // SAFETY: a successful bulk allocation initialised every slot.
    Ok(out
        .into_iter()
        .map(|o| unsafe { o.assume_init() })
        .collect())
}

/// C-OBJ-1: aligned, sized, all bytes writable, for a spread of sizes and alignments.
pub(crate) fn alignment_and_size<A: ObjectAlloc>() {
    for (size, align) in [
        (1, 1),
        (8, 8),
        (24, 8),
        (64, 8),
        (100, 4),
        (192, 64),
        (256, 256),
        (3000, 16),
        (4096, 4096),
        (65536, 8),
    ] {
        let (cache, pages) = new_cache::<A>(CacheConfig::new(size).with_align(align));
        let mut held = Vec::new();
        for i in 0..300 {
            let object = cache.alloc(AllocFlags::empty()).expect("memory");
            assert_eq!(
                object.as_ptr() as usize % align,
                0,
                "size {size} align {align}: {object:p} misaligned"
            );
            // SAFETY: the object is `size` writable bytes.
            unsafe { object.as_ptr().write_bytes(i as u8, size) };
            held.push(object);
        }
        for (i, object) in held.iter().enumerate() {
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), size) };
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "size {size}: object {i} overwritten"
            );
        }
        release_all(&cache, &pages, held);
    }
}

/// C-OBJ-2, C-OBJ-4, C-CONC-1: threads (more than CPUs) allocate, stamp, hand objects to each
/// other and free them remotely; no stamp is ever overwritten, and at the end the live set has
/// no two overlapping objects.
pub(crate) fn no_overlap_across_threads<A: ObjectAlloc>() {
    const SIZE: usize = 48;
    let (cache, pages) = new_cache::<A>(CacheConfig::new(SIZE));
    let threads = 4;
    let failed = AtomicBool::new(false);
    let mut survivors = Vec::new();
    std::thread::scope(|s| {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel::<(usize, u8)>()).unzip();
        let mut handles = Vec::new();
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % threads].clone();
            let cache = &cache;
            let failed = &failed;
            handles.push(s.spawn(move || {
                let mut held: Vec<(usize, u8)> = Vec::new();
                for round in 0..3000usize {
                    let stamp = (t * 61 + round) as u8;
                    let object = cache.alloc(AllocFlags::empty()).expect("memory");
                    // SAFETY: `SIZE` writable bytes, ours.
                    unsafe { object.as_ptr().write_bytes(stamp, SIZE) };
                    held.push((object.as_ptr() as usize, stamp));
                    if round % 4 == 0 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        next.send((object, stamp))
                            .expect("the next thread drains its channel");
                    }
                    while let Ok(item) = receiver.try_recv() {
                        held.push(item);
                    }
                    if held.len() > 64 {
                        let (object, stamp) = held.swap_remove(round % held.len());
                        // SAFETY: live, ours.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
                        if bytes.iter().any(|&b| b != stamp) {
                            failed.store(true, Ordering::Relaxed);
                        }
                        // SAFETY: live object of `cache`, freed once (maybe remotely).
                        unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                    }
                }
                // Objects still in flight to this thread arrive until the previous thread is
                // done sending.
                drop(next);
                held.extend(receiver.iter());
                held
            }));
        }
        drop(senders);
        for handle in handles {
            survivors.extend(handle.join().unwrap());
        }
    });
    assert!(
        !failed.load(Ordering::Relaxed),
        "an object's contents were overwritten: overlap"
    );
    let mut spans: Vec<usize> = survivors.iter().map(|&(o, _)| o).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0] + SIZE <= pair[1],
            "{:#x} and {:#x} overlap",
            pair[0],
            pair[1]
        );
    }
    for &(object, stamp) in &survivors {
        // SAFETY: live, ours.
        let bytes = unsafe { std::slice::from_raw_parts(object as *const u8, SIZE) };
        assert!(bytes.iter().all(|&b| b == stamp), "{object:#x} overwritten");
    }
    assert_eq!(cache.stats().live_objects, Some(survivors.len() as u64));
    let objects = survivors
        .into_iter()
        .map(|(o, _)| NonNull::new(o as *mut u8).unwrap())
        .collect();
    release_all(&cache, &pages, objects);
}

/// C-OBJ-3: `ZERO` zeroes memory that was written and freed before.
pub(crate) fn zero_on_reuse<A: ObjectAlloc>() {
    const SIZE: usize = 200;
    let (cache, pages) = new_cache::<A>(CacheConfig::new(SIZE));
    let dirty: Vec<_> = (0..500)
        .map(|_| {
            let object = cache.alloc(AllocFlags::empty()).unwrap();
            // SAFETY: ours.
            unsafe { object.as_ptr().write_bytes(0xa5, SIZE) };
            object
        })
        .collect();
    let addresses: HashSet<usize> = dirty.iter().map(|o| o.as_ptr() as usize).collect();
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&dirty) };
    let mut reused = 0;
    let mut held = Vec::new();
    for _ in 0..500 {
        let object = cache.alloc(AllocFlags::ZERO).unwrap();
        reused += usize::from(addresses.contains(&(object.as_ptr() as usize)));
        // SAFETY: ours.
        let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), SIZE) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "ZERO object {object:p} not zero"
        );
        held.push(object);
    }
    assert!(
        reused > 0,
        "the test never reused memory, so it proves nothing"
    );
    let bulk_zero = bulk(&cache, AllocFlags::ZERO, 300).unwrap();
    for object in &bulk_zero {
        // SAFETY: ours.
        let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), SIZE) };
        assert!(bytes.iter().all(|&b| b == 0), "bulk ZERO object not zero");
    }
    held.extend(bulk_zero);
    release_all(&cache, &pages, held);
}

/// C-OBJ-4, C-OBJ-5: objects allocated on one thread and freed on another; accounting holds.
pub(crate) fn remote_free<A: ObjectAlloc>() {
    let (cache, pages) = new_cache::<A>(CacheConfig::new(64));
    let (sender, receiver) = mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        let cache = &cache;
        s.spawn(move || {
            for _ in 0..50 {
                let batch = (0..100)
                    .map(|_| cache.alloc(AllocFlags::empty()).unwrap().as_ptr() as usize)
                    .collect();
                sender.send(batch).unwrap();
            }
        });
        s.spawn(move || {
            for batch in receiver {
                for object in batch {
                    // SAFETY: live objects sent once each.
                    unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                }
            }
        });
    });
    assert_eq!(cache.stats().live_objects, Some(0));
    release_all(&cache, &pages, Vec::new());
}

/// C-BULK-1 under an exhausted page source and under injected faults: failures allocate
/// nothing and leak nothing.
pub(crate) fn bulk_all_or_nothing<A: ObjectAlloc>() {
    let (cache, pages) = new_cache::<A>(CacheConfig::new(64));
    // Exhaustion: a budget of a few slabs, a request larger than it.
    let first = bulk(&cache, AllocFlags::empty(), 10).unwrap();
    let held = pages.stats().held_bytes;
    pages.set_limit(held + 2 * slab::PAGE_SIZE);
    let before = cache.stats().live_objects;
    let error = bulk(&cache, AllocFlags::empty(), 5000).unwrap_err();
    assert_eq!(error, AllocError::OutOfMemory);
    assert_eq!(
        cache.stats().live_objects,
        before,
        "a failed bulk allocation left objects live"
    );
    // What the failed request took is free again: the same budget serves a smaller request.
    let again = bulk(&cache, AllocFlags::empty(), 64).unwrap();
    let distinct: HashSet<_> = first.iter().chain(&again).collect();
    assert_eq!(
        distinct.len(),
        first.len() + again.len(),
        "bulk handed out an object twice"
    );
    pages.set_limit(usize::MAX);
    let mut held_objects = first;
    held_objects.extend(again);
    release_all(&cache, &pages, held_objects);

    // Injected faults: each bulk request either fully succeeds or changes nothing.
    let (cache, pages) = new_cache::<A>(CacheConfig::new(128));
    pages.fail_with_probability(0.3, 42);
    let mut live = Vec::new();
    let mut failures = 0;
    for round in 0..200usize {
        let n = 1 + (round * 37) % 150;
        let before = cache.stats().live_objects.unwrap();
        match bulk(&cache, AllocFlags::empty(), n) {
            Ok(objects) => {
                assert_eq!(objects.len(), n);
                live.extend(objects);
            }
            Err(error) => {
                assert_eq!(error, AllocError::OutOfMemory);
                assert_eq!(cache.stats().live_objects.unwrap(), before);
                failures += 1;
            }
        }
        if round % 7 == 0 {
            let keep = live.len() / 2;
            let freed: Vec<_> = live.drain(keep..).collect();
            // SAFETY: live objects, each once.
            unsafe { cache.free_bulk(&freed) };
        }
    }
    assert!(
        failures > 0,
        "no fault was injected, so the test proves nothing"
    );
    assert_eq!(cache.stats().live_objects, Some(live.len() as u64));
    let distinct: HashSet<_> = live.iter().collect();
    assert_eq!(distinct.len(), live.len());
    pages.fail_with_probability(0.0, 0);
    release_all(&cache, &pages, live);
}

/// C-PREFILL-1..5 through `BulkPrefill`: sizes, no failure under exhaustion, oversize.
pub(crate) fn prefill_via_bulk<A: ObjectAlloc>() {
    let (cache, pages) = new_cache::<A>(CacheConfig::new(64).with_sheaf_capacity(16));
    let mut sheaf = cache.prefill(AllocFlags::empty(), 12).unwrap();
    assert!(sheaf.size() >= 12);
    assert!(sheaf.capacity() >= 12);
    pages.set_limit(0);
    let mut taken = Vec::new();
    for _ in 0..12 {
        let before = sheaf.size();
        taken.push(
            sheaf
                .alloc(AllocFlags::NOWAIT)
                .expect("a prefilled sheaf cannot fail"),
        );
        assert_eq!(sheaf.size(), before - 1);
    }
    while sheaf.size() > 0 {
        taken.push(sheaf.alloc(AllocFlags::empty()).unwrap());
    }
    assert!(
        sheaf.alloc(AllocFlags::empty()).is_none(),
        "an empty sheaf fell back to the cache"
    );
    drop(sheaf);
    pages.set_limit(usize::MAX);
    // Oversize: more than the capacity.
    let mut big = cache.prefill(AllocFlags::empty(), 100).unwrap();
    assert!(big.size() >= 100 && big.capacity() >= 100);
    taken.push(big.alloc(AllocFlags::ZERO).unwrap());
    big.refill(AllocFlags::empty(), 150).unwrap();
    assert!(big.size() >= 150);
    big.return_with(AllocFlags::empty());
    // A failed prefill leaks nothing.
    let live = cache.stats().live_objects;
    pages.set_limit(pages.stats().held_bytes);
    assert!(cache.prefill(AllocFlags::empty(), 5000).is_err());
    assert_eq!(cache.stats().live_objects, live);
    pages.set_limit(usize::MAX);
    let distinct: HashSet<_> = taken.iter().collect();
    assert_eq!(distinct.len(), taken.len());
    release_all(&cache, &pages, taken);
}

/// `NOWAIT` never takes a page: not for single, bulk or prefill requests.
pub(crate) fn nowait_takes_no_page<A: ObjectAlloc>() {
    let (cache, pages) = new_cache::<A>(CacheConfig::new(64));
    assert!(cache.alloc(AllocFlags::NOWAIT).is_none());
    assert_eq!(
        bulk(&cache, AllocFlags::NOWAIT, 4).unwrap_err(),
        AllocError::WouldGrow
    );
    assert!(cache.prefill(AllocFlags::NOWAIT, 4).is_err());
    assert_eq!(pages.requests(), 0, "a NOWAIT request took a page");
    // With cached free objects, NOWAIT is served from them, still without a page.
    let objects = bulk(&cache, AllocFlags::empty(), 200).unwrap();
    let requests = pages.requests();
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&objects) };
    let mut again = Vec::new();
    while let Some(object) = cache.alloc(AllocFlags::NOWAIT) {
        again.push(object);
        assert!(again.len() <= 100_000, "NOWAIT allocations never ran out");
    }
    assert!(
        again.len() >= 100,
        "NOWAIT did not use the free objects at hand"
    );
    assert_eq!(pages.requests(), requests, "a NOWAIT request took a page");
    release_all(&cache, &pages, again);
}

/// C-DEFER-1, C-DEFER-2: a deferred object is not reused while a reader that could see it is
/// inside its section, and is reusable after.
pub(crate) fn deferred_free_waits_for_a_reader<A: ObjectAlloc>() {
    let (cache, pages) = new_cache::<A>(CacheConfig::new(64));
    let object = cache.alloc(AllocFlags::empty()).unwrap();
    let reader = rcu::read();
    // SAFETY: live object, freed once.
    unsafe { cache.free_deferred(object) };
    assert_eq!(
        cache.stats().live_objects,
        Some(1),
        "a deferred object counts as live"
    );
    let mut held = Vec::new();
    for _ in 0..2000 {
        let other = cache.alloc(AllocFlags::empty()).unwrap();
        assert_ne!(other, object, "reused while a reader was in its section");
        held.push(other);
        rcu::flush();
    }
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&held) };
    drop(reader);
    cache.barrier();
    assert_eq!(cache.stats().live_objects, Some(0));
    release_all(&cache, &pages, Vec::new());
}

/// `debug.poison`: a freed object reads as poison, and reuse still works (the slab layer
/// checks the poison of objects it hands out again in debug builds).
pub(crate) fn poison_on_free<A: ObjectAlloc>() {
    const SIZE: usize = 96;
    let debug = DebugOptions {
        poison: true,
        check_invariants: true,
    };
    let (cache, pages) = new_cache::<A>(CacheConfig::new(SIZE).with_debug(debug));
    let objects: Vec<_> = (0..300)
        .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
        .collect();
    for object in &objects {
        // SAFETY: ours.
        unsafe { object.as_ptr().write_bytes(0x11, SIZE) };
    }
    let probe = objects[150];
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&objects) };
    // SAFETY: the cache still holds the object's slab (nothing was shrunk), and no other
    // thread runs; the bytes are read only to check the poison.
    let bytes = unsafe { std::slice::from_raw_parts(probe.as_ptr(), SIZE) };
    // The first word may hold a free-list link in some designs' slab layer.
    assert!(
        bytes[8..].iter().all(|&b| b == slab::POISON_FREE),
        "a freed object was not poisoned"
    );
    let again: Vec<_> = (0..600)
        .map(|_| cache.alloc(AllocFlags::ZERO).unwrap())
        .collect();
    for object in &again {
        // SAFETY: ours.
        let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), SIZE) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
    release_all(&cache, &pages, again);
}

/// Simulated nodes: threads on different CPUs (hence nodes) allocate and free each other's
/// objects; every node's slabs are released in the end.
pub(crate) fn simulated_nodes<A: ObjectAlloc>() {
    let config = CacheConfig::new(64).with_nodes(NodeMap::Simulated { nodes: 2 });
    let (cache, pages) = new_cache::<A>(config);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (to_second, from_first) = mpsc::channel::<Vec<usize>>();
    let (to_first, from_second) = mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        for (index, (sender, receiver)) in [(to_second, from_second), (to_first, from_first)]
            .into_iter()
            .enumerate()
        {
            let (cache, cores) = (&cache, &cores);
            s.spawn(move || {
                if let Some(&core) = cores.get(index % cores.len().max(1)) {
                    core_affinity::set_for_current(core);
                }
                for _ in 0..40 {
                    let batch = (0..150)
                        .map(|_| cache.alloc(AllocFlags::empty()).unwrap().as_ptr() as usize)
                        .collect();
                    sender.send(batch).unwrap();
                    if let Ok(batch) = receiver.recv() {
                        for object in batch {
                            // SAFETY: live objects received once each.
                            unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
                        }
                    }
                }
            });
        }
    });
    release_all(&cache, &pages, Vec::new());
}

/// Instantiates every generic test for a design.
#[macro_export]
macro_rules! generic_tests {
    ($design:ty) => {
        #[test]
        fn alignment_and_size() {
            generic::alignment_and_size::<$design>();
        }
        #[test]
        fn no_overlap_across_threads() {
            generic::no_overlap_across_threads::<$design>();
        }
        #[test]
        fn zero_on_reuse() {
            generic::zero_on_reuse::<$design>();
        }
        #[test]
        fn remote_free() {
            generic::remote_free::<$design>();
        }
        #[test]
        fn bulk_all_or_nothing() {
            generic::bulk_all_or_nothing::<$design>();
        }
        #[test]
        fn prefill_via_bulk() {
            generic::prefill_via_bulk::<$design>();
        }
        #[test]
        fn nowait_takes_no_page() {
            generic::nowait_takes_no_page::<$design>();
        }
        #[test]
        fn poison_on_free() {
            generic::poison_on_free::<$design>();
        }
        #[test]
        fn simulated_nodes() {
            generic::simulated_nodes::<$design>();
        }
        #[test]
        fn deferred_free_waits_for_a_reader() {
            generic::deferred_free_waits_for_a_reader::<$design>();
        }
    };
}
