//! C-PREFILL-1..8.

use std::collections::HashSet;
use std::sync::Arc;

use object_alloc::{AllocError, AllocFlags, CacheConfig, PageSource};
use sheaf::Cache;
use slab::LimitedPages;

use crate::common::*;

both_strategies! {
    /// C-PREFILL-1: `prefill(n)` returns a sheaf with `size() >= n`, for n up to twice the
    /// capacity and across repeated prefills that reuse spare and barn sheaves.
    fn c_prefill_1_size_at_least_n<S>() {
        let (pages, cache) = cache_with::<S>(16);
        for round in 0..3 {
            for n in [0, 1, 5, 15, 16, 17, 32] {
                let sheaf = cache.prefill(AllocFlags::empty(), n).expect("prefill");
                assert!(sheaf.size() >= n, "round {round}: prefill({n}) gave size {}", sheaf.size());
                assert!(sheaf.capacity() >= n);
            }
        }
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-PREFILL-2: the first n allocations never fail, even when the page source is
    /// exhausted right after the prefill and another thread drains the cache.
    fn c_prefill_2_n_allocs_never_fail_when_exhausted<S>() {
        let (pages, config) = limited_config(1 << 20);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(32)).unwrap();
        let mut sheaf = cache.prefill(AllocFlags::empty(), 20).unwrap();
        pages.set_limit(0);
        // Another thread takes everything the cache can still hand out.
        let stolen = std::thread::scope(|s| {
            s.spawn(|| {
                let mut taken = Vec::new();
                while let Some(object) = cache.alloc(AllocFlags::empty()) {
                    taken.push(object.as_ptr() as usize);
                }
                taken
            })
            .join()
            .unwrap()
        });
        let mut mine = Vec::new();
        for i in 0..20 {
            let object = sheaf
                .alloc(if i % 2 == 0 { AllocFlags::NOWAIT } else { AllocFlags::ZERO })
                .unwrap_or_else(|| panic!("allocation {i} of 20 from a prefilled sheaf failed"));
            mine.push(object);
        }
        let stolen: HashSet<usize> = stolen.into_iter().collect();
        assert!(mine.iter().all(|o| !stolen.contains(&(o.as_ptr() as usize))), "overlap");
        drop(sheaf);
        pages.set_limit(usize::MAX / 2);
        let stolen: Vec<_> = stolen
            .into_iter()
            .map(|a| std::ptr::NonNull::new(a as *mut u8).unwrap())
            .collect();
        free_all_and_check_empty(&pages, &cache, mine.into_iter().chain(stolen));
    }
}

both_strategies! {
    /// C-PREFILL-3: `alloc` on an empty prefilled sheaf returns `None` and never falls back
    /// to the cache (the cache's counters do not move).
    fn c_prefill_3_empty_sheaf_never_falls_back<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 3).unwrap();
        let mut objects = Vec::new();
        while let Some(object) = sheaf.alloc(AllocFlags::empty()) {
            objects.push(object);
        }
        assert_eq!(sheaf.size(), 0);
        let before = cache.stats();
        for _ in 0..10 {
            assert_eq!(sheaf.alloc(AllocFlags::empty()), None);
            assert_eq!(sheaf.alloc(AllocFlags::ZERO), None);
        }
        assert_eq!(cache.stats(), before, "an empty sheaf's alloc touched the cache");
        drop(sheaf);
        free_all_and_check_empty(&pages, &cache, objects);
    }
}

both_strategies! {
    /// C-PREFILL-4: each successful `alloc` lowers `size()` by exactly one, and objects are
    /// distinct.
    fn c_prefill_4_alloc_lowers_size_by_one<S>() {
        let (pages, cache) = cache_with::<S>(16);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 10).unwrap();
        let mut seen = HashSet::new();
        let mut objects = Vec::new();
        while sheaf.size() > 0 {
            let before = sheaf.size();
            let object = sheaf.alloc(AllocFlags::empty()).unwrap();
            assert_eq!(sheaf.size(), before - 1);
            assert!(seen.insert(object), "object handed out twice");
            objects.push(object);
        }
        drop(sheaf);
        free_all_and_check_empty(&pages, &cache, objects);
    }
}

both_strategies! {
    /// C-PREFILL-5: `n > capacity` gives an oversize sheaf holding n; on return its unused
    /// objects go back and the sheaf is not cached.
    fn c_prefill_5_oversize_is_supported_and_not_cached<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 50).unwrap();
        assert!(sheaf.size() >= 50);
        assert_eq!(sheaf.capacity(), 50);
        let used: Vec<_> = (0..7).map(|_| sheaf.alloc(AllocFlags::empty()).unwrap()).collect();
        assert_eq!(live(&cache), 50, "reserved objects count as live while out");
        drop(sheaf);
        let stats = cache.stats();
        assert_eq!(stats.counter("sheaf_prefill_oversize"), 1);
        assert_eq!(stats.live_objects, Some(7));
        assert_eq!(stats.counter("sheaf_return_fast"), 0, "oversize sheaf kept as spare");
        assert_eq!(stats.counter("barn_full_sheaves"), 0);
        cache.check_invariants();
        free_all_and_check_empty(&pages, &cache, used);
    }
}

both_strategies! {
    /// C-PREFILL-6: a failed prefill (exhausted source, or NOWAIT with nothing cached)
    /// returns an error and leaks nothing.
    fn c_prefill_6_failure_leaks_nothing<S>() {
        let (pages, config) = limited_config(0);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(16)).unwrap();
        assert_eq!(cache.prefill(AllocFlags::empty(), 4).unwrap_err(), AllocError::OutOfMemory);
        assert_eq!(cache.prefill(AllocFlags::empty(), 40).unwrap_err(), AllocError::OutOfMemory);
        assert_eq!(cache.prefill(AllocFlags::NOWAIT, 4).unwrap_err(), AllocError::WouldGrow);
        cache.check_invariants();
        assert_eq!(live(&cache), 0);
        // A partly stocked cache: some objects cached, not enough for the request.
        pages.set_limit(usize::MAX / 2);
        let objects = bulk(&cache, AllocFlags::empty(), 5);
        pages.set_limit(held(&pages));
        let before = cache.stats();
        let err = cache.prefill(AllocFlags::empty(), 2000).unwrap_err();
        assert_eq!(err, AllocError::OutOfMemory);
        let in_use = before.live_objects.unwrap() + before.cached_objects.unwrap();
        let after = cache.stats();
        assert_eq!(after.live_objects, before.live_objects, "failed prefill changed live count");
        assert_eq!(after.live_objects.unwrap() + after.cached_objects.unwrap(), in_use);
        cache.check_invariants();
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, objects);
    }
}

both_strategies! {
    /// C-PREFILL-6 with injected faults: whatever request fails, accounting holds after it.
    fn c_prefill_6_injected_faults_keep_accounting<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(8)).unwrap();
        pages.fail_with_probability(0.3, 42);
        let mut failures = 0;
        for n in (0..60).map(|i| i % 23) {
            match cache.prefill(AllocFlags::empty(), n) {
                Ok(sheaf) => assert!(sheaf.size() >= n),
                Err(_) => failures += 1,
            }
            cache.check_invariants();
            assert_eq!(live(&cache), 0);
            // Give the pages back so that the next prefill must ask for new ones.
            cache.shrink();
        }
        assert!(failures > 0, "no fault was injected");
        pages.fail_with_probability(0.0, 0);
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-PREFILL-7: `prefill(0)` succeeds, with any size.
    fn c_prefill_7_zero_succeeds<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let sheaf = cache.prefill(AllocFlags::empty(), 0).unwrap();
        drop(sheaf);
        // Also with nothing to grow from.
        pages.set_limit(0);
        let sheaf = cache.prefill(AllocFlags::NOWAIT, 0).unwrap();
        assert!(sheaf.size() <= sheaf.capacity());
        drop(sheaf);
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-PREFILL-8: objects from a prefilled sheaf are ordinary objects: freed with `free`,
    /// `free_bulk` and `free_deferred`, on another thread too.
    fn c_prefill_8_objects_are_ordinary<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 30).unwrap();
        let objects: Vec<_> = (0..30).map(|_| sheaf.alloc(AllocFlags::ZERO).unwrap()).collect();
        drop(sheaf);
        for &o in &objects {
            assert!(is_zero(o, 64));
        }
        // SAFETY: live objects of `cache`, each freed once below.
        unsafe {
            cache.free(objects[0]);
            cache.free_bulk(&objects[1..10]);
            for &o in &objects[10..20] {
                cache.free_deferred(o);
            }
        }
        let rest: Vec<usize> = objects[20..].iter().map(|o| o.as_ptr() as usize).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for &o in &rest {
                    // SAFETY: live objects of `cache`, freed once.
                    unsafe { cache.free(std::ptr::NonNull::new(o as *mut u8).unwrap()) };
                }
            })
            .join()
            .unwrap();
        });
        free_all_and_check_empty(&pages, &cache, []);
    }
}

/// C-PREFILL-2 across configurations: a prefill through `ObjectAlloc`, generic code.
#[test]
fn c_prefill_2_through_the_object_alloc_trait() {
    use object_alloc::{ObjectAlloc, Prefill};
    fn reserve<A: ObjectAlloc>(cache: &A, n: usize) -> usize {
        let mut sheaf = cache.prefill(AllocFlags::empty(), n).unwrap();
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(sheaf.alloc(AllocFlags::empty()).unwrap());
        }
        sheaf.return_with(AllocFlags::empty());
        // SAFETY: objects of `cache`, freed once.
        unsafe { cache.free_bulk(&got) };
        got.len()
    }
    let pages = Arc::new(LimitedPages::unlimited());
    let config = CacheConfig::new(48).with_page_source(pages.clone() as Arc<dyn PageSource>);
    let cache = <Cache as ObjectAlloc>::new(&config).unwrap();
    assert_eq!(reserve(&cache, 13), 13);
    assert_eq!(reserve(&cache, 200), 200);
}

/// A prefill whose spare is short while `main` is empty trades `main` for a full barn sheaf
/// before it goes to the slabs, so that objects freed back into the barn (recycled `rcu_free`
/// sheaves among them) stay in circulation. Per-thread slots, so that no migration between
/// calls changes which slot is used.
#[test]
fn short_spare_with_empty_main_tops_up_from_a_barn_sheaf() {
    const CAPACITY: usize = 8;
    let (pages, cache) = cache_with::<sheaf::PerThread>(CAPACITY);
    let counter = |name: &str| cache.stats().counters.get(name).copied().unwrap_or(0);
    // Fill `main`, the spare and at least one barn sheaf.
    let objects: Vec<_> = (0..4 * CAPACITY)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
        .collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    assert!(counter("barn_full_sheaves") >= 1, "{:?}", cache.stats());
    // Empty `main` (the spare stays full), then leave the spare one short of CAPACITY.
    let held: Vec<_> = (0..CAPACITY)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
        .collect();
    let mut reserve = cache
        .prefill(AllocFlags::empty(), CAPACITY)
        .expect("prefill");
    let used = reserve
        .alloc(AllocFlags::empty())
        .expect("from the reserve");
    reserve.return_with(AllocFlags::empty());

    let (barn_gets, slab_refills) = (counter("barn_get"), counter("sheaf_refill"));
    let reserve = cache
        .prefill(AllocFlags::empty(), CAPACITY)
        .expect("prefill");
    assert!(reserve.size() >= CAPACITY);
    assert_eq!(
        counter("barn_get"),
        barn_gets + 1,
        "one full sheaf from the barn"
    );
    assert_eq!(
        counter("sheaf_refill"),
        slab_refills,
        "nothing from the slabs"
    );
    reserve.return_with(AllocFlags::empty());
    free_all_and_check_empty(&pages, &cache, held.into_iter().chain([used]));
}
