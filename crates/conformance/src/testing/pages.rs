//! Checks that need the design to take its pages from the page source, honour `NOWAIT` and
//! count live objects: failures under exhaustion and injected faults, `NOWAIT` without pages,
//! and poisoning.

use std::collections::HashSet;

use object_alloc::{
    AllocError, AllocFlags, CacheConfig, DebugOptions, ObjectAlloc, PageSource, Prefill,
};

use super::{bulk, is_zero, new_cache, release_all, require_page_source};

/// C-BULK-1 under an exhausted page source and under injected faults: failures allocate
/// nothing and leak nothing.
pub fn bulk_all_or_nothing<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    // Exhaustion: a budget of a few slabs, a request larger than it.
    let first = bulk(cache, AllocFlags::empty(), 10).unwrap();
    let held = pages.stats().held_bytes;
    pages.set_limit(held + 2 * slab::PAGE_SIZE);
    let before = cache.stats().live_objects;
    let error = bulk(cache, AllocFlags::empty(), 5000).unwrap_err();
    assert_eq!(error, AllocError::OutOfMemory);
    assert_eq!(
        cache.stats().live_objects,
        before,
        "a failed bulk allocation left objects live"
    );
    // What the failed request took is free again: the same budget serves a smaller request.
    let again = bulk(cache, AllocFlags::empty(), 64).unwrap();
    let distinct: HashSet<_> = first.iter().chain(&again).collect();
    assert_eq!(
        distinct.len(),
        first.len() + again.len(),
        "bulk handed out an object twice"
    );
    pages.set_limit(usize::MAX);
    let mut held_objects = first;
    held_objects.extend(again);
    release_all(&fixture, &held_objects);

    // Injected faults: each bulk request either fully succeeds or changes nothing.
    let fixture = new_cache::<A>(CacheConfig::new(128));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    pages.fail_with_probability(0.3, 42);
    let mut live = Vec::new();
    let mut failures = 0;
    for round in 0..200usize {
        let n = 1 + (round * 37) % 150;
        let before = cache.stats().live_objects.unwrap();
        match bulk(cache, AllocFlags::empty(), n) {
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
    release_all(&fixture, &live);
}

/// C-PREFILL-1..6 and C-REFILL-3 with the page source exhausted: a prefilled sheaf serves
/// what it holds (even `NOWAIT`) without a page, an empty one does not fall back to the cache,
/// oversize sheaves refill beyond their capacity, and a prefill refused for want of pages
/// leaks nothing.
pub fn prefill_holds_when_pages_run_out<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64).with_sheaf_capacity(16));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
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
    release_all(&fixture, &taken);
}

/// `NOWAIT` never takes a page: not for single, bulk or prefill requests; it is served from
/// the free objects the cache holds.
pub fn nowait_takes_no_page<A: ObjectAlloc>() {
    require_page_source::<A>();
    let fixture = new_cache::<A>(CacheConfig::new(64));
    let (cache, pages) = (&fixture.cache, &fixture.pages);
    assert!(cache.alloc(AllocFlags::NOWAIT).is_none());
    assert_eq!(
        bulk(cache, AllocFlags::NOWAIT, 4).unwrap_err(),
        AllocError::WouldGrow
    );
    assert!(cache.prefill(AllocFlags::NOWAIT, 4).is_err());
    assert_eq!(pages.requests(), 0, "a NOWAIT request took a page");
    // With cached free objects, NOWAIT is served from them, still without a page.
    let objects = bulk(cache, AllocFlags::empty(), 200).unwrap();
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
    release_all(&fixture, &again);
}

/// `debug.poison`: a freed object reads as `slab::POISON_FREE` (the slab layer's poison, which
/// every slab-based design uses), and reuse still works (the slab layer checks the poison of
/// objects it hands out again in debug builds).
pub fn poison_on_free<A: ObjectAlloc>() {
    require_page_source::<A>();
    const SIZE: usize = 96;
    let debug = DebugOptions {
        poison: true,
        check_invariants: true,
    };
    let fixture = new_cache::<A>(CacheConfig::new(SIZE).with_debug(debug));
    let cache = &fixture.cache;
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
    for &object in &again {
        // SAFETY: a live object of `SIZE` bytes that this check owns.
        let zero = unsafe { is_zero(object, SIZE) };
        assert!(zero, "{}: ZERO object {object:p} not zero", A::NAME);
    }
    release_all(&fixture, &again);
}
